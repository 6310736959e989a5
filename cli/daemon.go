package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/tcpops/tcpops/rpc"
	"github.com/tcpops/tcpops/rpc/client"
)

func newStatsCmd(o *Options) *cobra.Command {
	return &cobra.Command{
		Use:   "stats",
		Short: "Show counters: connections by state and proto, closes by reason, limits",
		Long: `Show the daemon's counters: connections now by state and protocol, inbound
connections accepted and outbound legs dialled, closes by reason (counted
whatever the closed-event mode), connections refused by --max-conns or
--max-conns-per-ip, accept errors, the newest event seq and events lost by
slow followers, control clients, uptime and the configured limits.`,
		Example: "  tcpopsctl stats\n  tcpopsctl -o json stats | jq .closed_by_reason",
		Args:    args(0, 0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return o.call(cmd, func(ctx context.Context, c *client.Client) error {
				s, err := c.Stats(ctx)
				if err != nil {
					return err
				}
				if o.Output == "json" {
					return printJSON(o.Stdout, s)
				}
				u := func(n uint64) string { return strconv.FormatUint(n, 10) }
				kv := [][2]string{
					{"connections", strconv.Itoa(s.Connections)},
					{"by state", countsH(s.ByState)},
					{"by proto", countsH(s.ByProto)},
					{"accepted", u(s.Accepted)}, {"dialled", u(s.Dialled)}, {"closed", u(s.Closed)},
					{"closed by reason", countsH(s.ClosedBy)},
					{"rejected by limit", u(s.Rejected)}, {"accept errors", u(s.AcceptErrors)},
					{"event seq", u(s.EventSeq)}, {"events lost", u(s.EventsLost)},
					{"control clients", fmt.Sprintf("%d now, %d cut off for not reading, %d bad requests", s.RPC.Clients, s.RPC.WriteTimeouts, s.RPC.BadRequests)},
					{"uptime", secs(s.UptimeS)},
					{"limits", fmt.Sprintf("max-conns %s, max-conns-per-ip %s, event-buffer %d, lifetime %s, closed-event %s",
						limitH(s.Limits.MaxConns), limitH(s.Limits.MaxConnsPerIP), s.Limits.EventBuffer, lifetimeH(s.Limits.LifetimeS), s.Limits.ClosedEvent)},
				}
				if n := s.NATS; n != nil {
					kv = append(kv, [2]string{"nats", natsH(n)})
				}
				return keyValues(o.Stdout, kv)
			})
		},
	}
}

// natsH describes the NATS link on one line.
func natsH(n *rpc.NATSStats) string {
	conn := "not connected"
	if n.Connected {
		conn = "connected to " + n.Server
	}
	s := fmt.Sprintf("host %s, %s, %d reconnects; events stored up to seq %d, %d waiting, %d lost; %d requests",
		n.Host, conn, n.Reconnects, n.PublishedSeq, n.Pending, n.Lost, n.Requests)
	if n.LastError != "" {
		s += "; last error: " + n.LastError
	}
	return s
}

func limitH(n int) string {
	if n == 0 {
		return "none"
	}
	return strconv.Itoa(n)
}

// countsH writes a map as "a=1 b=2", sorted, zero counts left out.
func countsH[V int | uint64](m map[string]V) string {
	keys := make([]string, 0, len(m))
	for k, v := range m {
		if v != 0 {
			keys = append(keys, k)
		}
	}
	if len(keys) == 0 {
		return "-"
	}
	slices.Sort(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s=%d", k, m[k])
	}
	return strings.Join(parts, " ")
}

func newCallCmd(o *Options) *cobra.Command {
	return &cobra.Command{
		Use:   "call METHOD [JSON-PARAMS | KEY=VALUE ...]",
		Short: "Call any RPC method with raw params and print the result as JSON",
		Long: `Call any method of the daemon's JSON-RPC interface and print its result as JSON,
on one line as the daemon sent it (--pretty indents it).
Params are one JSON object, or KEY=VALUE pairs typed as kamcmd does: a whole
number is an integer, a decimal number a float, true and false are booleans,
a value starting with [ or { is JSON, anything else a string. 'tcpopsctl
methods' lists the methods; system.methodHelp explains one.`,
		Example: `  tcpopsctl call tcpops.state conid=42
  tcpopsctl call tcpops.keepalive '{"conid":42,"enable":false}'
  tcpopsctl call tcpops.list remote=10.0.0.0/8 limit=100
  tcpopsctl call system.methodHelp method=tcpops.lifetime`,
		Args:              args(1, 1<<20),
		ValidArgsFunction: methodCompletion(o),
		RunE: func(cmd *cobra.Command, a []string) error {
			params, err := parseParams(a[1:])
			if err != nil {
				return err
			}
			return o.call(cmd, func(ctx context.Context, c *client.Client) error {
				var r json.RawMessage
				if err := c.Call(ctx, a[0], params, &r); err != nil {
					return err
				}
				return printRaw(o.Stdout, r) // in the daemon's order
			})
		},
	}
}

// parseParams reads call params: one JSON object or KEY=VALUE pairs.
func parseParams(a []string) (map[string]any, error) {
	params := map[string]any{}
	if len(a) == 1 && strings.HasPrefix(strings.TrimSpace(a[0]), "{") {
		if err := json.Unmarshal([]byte(a[0]), &params); err != nil {
			return nil, usageErr("JSON-PARAMS: %v", err)
		}
		return params, nil
	}
	for _, kv := range a {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return nil, usageErr("param %q: want KEY=VALUE or one JSON object", kv)
		}
		if _, dup := params[k]; dup {
			return nil, usageErr("param %q given twice", k)
		}
		params[k] = typed(v)
	}
	return params, nil
}

// typed types a KEY=VALUE value as kamcmd does, plus booleans and JSON.
func typed(v string) any {
	if n, err := strconv.ParseInt(v, 10, 64); err == nil {
		return n
	}
	if f, err := strconv.ParseFloat(v, 64); err == nil {
		return f
	}
	switch v {
	case "true":
		return true
	case "false":
		return false
	}
	if strings.HasPrefix(v, "[") || strings.HasPrefix(v, "{") {
		var j any
		if json.Unmarshal([]byte(v), &j) == nil {
			return j
		}
	}
	return v
}

func newMethodsCmd(o *Options) *cobra.Command {
	return &cobra.Command{
		Use:     "methods",
		Short:   "List the daemon's RPC methods (system.listMethods)",
		Long:    "List the names of every JSON-RPC method the daemon serves, for 'tcpopsctl call'.",
		Example: "  tcpopsctl methods\n  tcpopsctl call system.methodHelp method=tcpops.events",
		Args:    args(0, 0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return o.call(cmd, func(ctx context.Context, c *client.Client) error {
				ms, err := c.Methods(ctx)
				if err != nil {
					return err
				}
				if o.Output == "json" {
					return printJSONLine(o.Stdout, ms)
				}
				_, err = fmt.Fprintln(o.Stdout, strings.Join(ms, "\n"))
				return err
			})
		},
	}
}

func newVersionCmd(o *Options) *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the versions of tcpopsctl and the daemon",
		Long: `Print tcpopsctl's own version, then the daemon's (core.version): each with the
commit it was built from, whether that tree had uncommitted changes, and the
Go release. When the daemon cannot be reached, tcpopsctl's own version is
printed and the exit code is 3. With -o json: {"tcpopsctl": {version, commit,
modified, go}, "tcpops": {...}}, without "tcpops" when it cannot be reached.`,
		Example: "  tcpopsctl version\n  tcpopsctl -o json version | jq -r .tcpops.commit",
		Args:    args(0, 0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			mine := rpc.Build()
			var daemon *rpc.Version
			err := o.call(cmd, func(ctx context.Context, c *client.Client) error {
				v, err := c.Version(ctx)
				if err == nil {
					daemon = &v
				}
				return err
			})
			if errors.Is(err, errFanOut) {
				return err // each host's run prints both
			}
			if o.Output == "json" {
				out := map[string]*rpc.Version{"tcpopsctl": &mine}
				if daemon != nil {
					out["tcpops"] = daemon
				}
				if perr := printJSON(o.Stdout, out); perr != nil {
					return perr
				}
				return err
			}
			fmt.Fprintf(o.Stdout, "tcpopsctl %s\n", mine)
			if daemon != nil {
				fmt.Fprintf(o.Stdout, "tcpops    %s\n", *daemon)
			}
			return err
		},
	}
}
