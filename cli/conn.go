package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/tcpops/tcpops/rpc"
	"github.com/tcpops/tcpops/rpc/client"
)

// parseConid reads a CONID argument.
func parseConid(s string) (uint64, error) {
	if n, err := strconv.ParseInt(s, 10, 64); err == nil && n <= 0 {
		return 0, usageErr("CONID %s: %s", s, argRules["CONID"])
	}
	id, err := strconv.ParseUint(s, 10, 64)
	if err != nil || id == 0 {
		return 0, usageErr("CONID %q: want a connection id, a positive integer (see 'tcpopsctl list')", s)
	}
	return id, nil
}

// onConn parses the CONID argument and runs fn with a client.
func (o *Options) onConn(cmd *cobra.Command, arg string, fn func(ctx context.Context, c *client.Client, id uint64) error) error {
	id, err := parseConid(arg)
	if err != nil {
		return err
	}
	return o.call(cmd, func(ctx context.Context, c *client.Client) error { return fn(ctx, c, id) })
}

// report prints a result: one JSON line with -o json, else the line for people.
func (o *Options) report(r any, format string, a ...any) error {
	if o.Output == "json" {
		return printJSONLine(o.Stdout, r)
	}
	_, err := fmt.Fprintf(o.Stdout, format+"\n", a...)
	return err
}

// args checks the number of arguments as a usage error.
func args(min, max int) cobra.PositionalArgs {
	return func(cmd *cobra.Command, a []string) error {
		if len(a) < min || len(a) > max {
			want := fmt.Sprintf("%d", min)
			if max != min {
				want = fmt.Sprintf("%d to %d", min, max)
			}
			return usageErr("%s takes %s argument(s), got %d (usage: %s)", cmd.CommandPath(), want, len(a), cmd.UseLine())
		}
		return nil
	}
}

func newListCmd(o *Options) *cobra.Command {
	var p rpc.ListParams
	var idleMin time.Duration
	cmd := &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "List connections, with filters",
		Long: `List the daemon's connections sorted by conid: both legs of each relayed
connection (direction in and out), their state, addresses, idle time, time left
before the idle lifetime closes them, keepalive (IDLE/COUNT/INTERVAL in seconds,
or off) and bytes in and out.

Filters combine with AND. --remote takes an IP, IP:port or CIDR. With --limit,
one page is printed and the cursor of the next one is given as --after.

--suspect keeps the connections that look half-open or stuck, as the kernel's
TCP_INFO of each shows, and names the rules that picked them (SUSPECT):
  send_stalled      unacknowledged data sent again, no ACK for 5s
  retransmitting    the same data sent 3 times or more without an ACK
  keepalive_probes  keepalive probes sent and not answered
  connecting        an outbound leg still dialling after 3s
  recv_queue        bytes unread in the receive queue, the last arrived 5s ago
  peer_not_reading  bytes wait to be sent, the peer's window shut for 5s
It reads TCP_INFO of every connection the other filters leave.`,
		Example: `  tcpopsctl list
  tcpopsctl ls --state ok --proto tcp --remote 10.1.0.0/16
  tcpopsctl list --idle-min 10m     # idle for 10 minutes or more
  tcpopsctl list --suspect          # half-open or stuck
  tcpopsctl -o json list | jq '.connections[].conid'`,
		Args: args(0, 0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if cmd.Flags().Changed("idle-min") {
				if idleMin < 0 {
					return usageErr("--idle-min %s: must be >= 0", idleMin)
				}
				s := idleMin.Seconds()
				p.IdleMin = &s
			}
			if p.Limit < 0 {
				return usageErr("--limit %d: must be >= 0", p.Limit)
			}
			return o.call(cmd, func(ctx context.Context, c *client.Client) error {
				if o.Output == "json" {
					// Passed through as the daemon wrote it: no decoding of
					// thousands of connections just to encode them again.
					var raw json.RawMessage
					if err := c.Call(ctx, rpc.MethodList, p, &raw); err != nil {
						return err
					}
					return printRaw(o.Stdout, raw)
				}
				r, err := c.List(ctx, p)
				if err != nil {
					return err
				}
				rows := make([][]string, 0, len(r.Connections))
				for _, cn := range r.Connections {
					row := []string{
						strconv.FormatUint(cn.ConnID, 10), orDash(cn.Peer), cn.Proto, cn.Direction, cn.StateName,
						orDashS(cn.Remote), orDashS(cn.Local), secs(cn.IdleS), expiresH(cn.LifetimeS, cn.ExpiresInS),
						keepaliveH(cn.Keepalive, false), bytesH(cn.BytesIn), bytesH(cn.BytesOut),
					}
					if p.Suspect {
						row = append(row, strings.Join(cn.Suspect, ","))
					}
					rows = append(rows, row)
				}
				header := []string{"CONID", "PEER", "PROTO", "DIR", "STATE", "REMOTE", "LOCAL", "IDLE", "EXPIRES", "KEEPALIVE", "IN", "OUT"}
				if p.Suspect {
					header = append(header, "SUSPECT")
				}
				if err := table(o.Stdout, header, rows); err != nil {
					return err
				}
				if r.Next != 0 {
					fmt.Fprintf(o.Stderr, "more connections: add --after %d\n", r.Next)
				}
				return nil
			})
		},
	}
	f := cmd.Flags()
	addListFilters(cmd, &p)
	cmd.RegisterFlagCompletionFunc("listener", listenerCompletion(o))
	f.DurationVar(&idleMin, "idle-min", 0, "only connections idle at least this long (e.g. 30s, 10m)")
	f.IntVar(&p.Limit, "limit", 0, "at most this many (0 = all)")
	f.Uint64Var(&p.After, "after", 0, "only conids after this one (the cursor of the next page)")
	f.BoolVar(&p.Suspect, "suspect", false, "only connections that look half-open or stuck (from TCP_INFO), with the rules that picked them")
	return cmd
}

// addListFilters adds the filters that list and wait count share, with
// their completions.
func addListFilters(cmd *cobra.Command, p *rpc.ListParams) {
	f := cmd.Flags()
	f.StringVar((*string)(&p.State), "state", "", "only this state: "+strings.Join(rpc.StateNames(), ", ")+" (or its number)")
	f.StringVar(&p.Proto, "proto", "", "only this protocol: tcp, tls, ws, wss")
	f.StringVar(&p.Direction, "direction", "", "only in (from clients) or out (to backends)")
	f.StringVar(&p.Listener, "listener", "", "only connections of this listener (its name or URL)")
	f.StringVar(&p.Remote, "remote", "", "only this remote: IP, IP:port or CIDR")
	cmd.RegisterFlagCompletionFunc("state", fixed(rpc.StateNames()...))
	cmd.RegisterFlagCompletionFunc("proto", fixed("tcp", "tls", "ws", "wss"))
	cmd.RegisterFlagCompletionFunc("direction", fixed("in", "out"))
}

func orDash(n uint64) string {
	if n == 0 {
		return "-"
	}
	return strconv.FormatUint(n, 10)
}

func orDashS(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func expiresH(lifetime, expiresIn float64) string {
	if lifetime == 0 {
		return "never"
	}
	return secs(expiresIn)
}

func newInfoCmd(o *Options) *cobra.Command {
	return &cobra.Command{
		Use:   "info CONID",
		Short: "Show one connection with its kernel TCP_INFO",
		Long: `Show everything about one connection: addresses, state, idle time and lifetime,
keepalive and the closed-event flag, bytes, and the kernel's TCP_INFO (TCP state,
round-trip time, retransmissions, keepalive probes sent, unacknowledged segments,
time since the last data in each direction). Keepalive and TCP_INFO are read
from the socket when you ask.`,
		Example:           "  tcpopsctl info 42\n  tcpopsctl -o json info 42 | jq .tcp_info.rtt_us",
		Args:              args(1, 1),
		ValidArgsFunction: conidCompletion(o),
		RunE: func(cmd *cobra.Command, a []string) error {
			return o.onConn(cmd, a[0], func(ctx context.Context, c *client.Client, id uint64) error {
				r, err := c.Info(ctx, id)
				if err != nil {
					return err
				}
				if o.Output == "json" {
					return printJSON(o.Stdout, r)
				}
				return keyValues(o.Stdout, infoKV(r))
			})
		},
	}
}

// infoKV is what info shows of a connection, key by key.
func infoKV(r rpc.InfoResult) [][2]string {
	kv := [][2]string{
		{"conid", strconv.FormatUint(r.ConnID, 10)}, {"peer", orDash(r.Peer)},
		{"proto", r.Proto}, {"direction", r.Direction}, {"listener", r.Listener},
		{"local", orDashS(r.Local)}, {"remote", orDashS(r.Remote)},
	}
	if r.Via != "" {
		kv = append(kv, [2]string{"via", r.Via + " (PROXY protocol)"})
	}
	if t := r.TLS; t != nil {
		kv = append(kv, [2]string{"tls", strings.Join(nonEmpty(t.Version, t.Cipher, labelled("sni", t.SNI), labelled("alpn", t.ALPN)), ", ")})
		if t.PeerSubject != "" {
			kv = append(kv, [2]string{"tls peer", t.PeerSubject})
		}
	}
	if w := r.WS; w != nil {
		kv = append(kv, [2]string{"websocket", strings.Join(nonEmpty("path "+w.Path, labelled("subprotocol", w.Subprotocol), labelled("origin", w.Origin)), ", ")})
	}
	kv = append(kv, [][2]string{
		{"state", fmt.Sprintf("%d (%s)", r.State, r.StateName)},
		{"created", r.Created.Format(time.RFC3339)}, {"idle", secs(r.IdleS)},
		{"lifetime", lifetimeH(r.LifetimeS)}, {"expires in", expiresH(r.LifetimeS, r.ExpiresInS)},
		{"keepalive", keepaliveH(r.Keepalive, true)}, {"closed event", strconv.FormatBool(r.ClosedEvent)},
		{"overrides", orDashS(overridesH(r.Overrides))},
		{"bytes in", fmt.Sprintf("%d (%s)", r.BytesIn, bytesH(r.BytesIn))},
		{"bytes out", fmt.Sprintf("%d (%s)", r.BytesOut, bytesH(r.BytesOut))},
	}...)
	if ti := r.TCPInfo; ti != nil {
		kv = append(kv,
			[2]string{"tcp state", ti.StateName},
			[2]string{"rtt", fmt.Sprintf("%.3fms (var %.3fms)", float64(ti.RttUs)/1000, float64(ti.RttvarUs)/1000)},
			[2]string{"rto", fmt.Sprintf("%.0fms", float64(ti.RtoUs)/1000)},
			[2]string{"retransmits", fmt.Sprintf("%d now, %d total", ti.Retransmits, ti.TotalRetrans)},
			[2]string{"keepalive probes", strconv.Itoa(int(ti.Probes))},
			[2]string{"unacked", strconv.Itoa(int(ti.Unacked))},
			[2]string{"last data recv", fmt.Sprintf("%dms ago", ti.LastDataRecvMs)},
			[2]string{"last data sent", fmt.Sprintf("%dms ago", ti.LastDataSentMs)},
			[2]string{"bytes acked", strconv.FormatUint(ti.BytesAcked, 10)},
			[2]string{"bytes received", strconv.FormatUint(ti.BytesReceived, 10)},
			[2]string{"last ack recv", fmt.Sprintf("%dms ago", ti.LastAckRecvMs)},
			[2]string{"queues", fmt.Sprintf("recv %d, send %d bytes (peer window %d)", ti.RecvQ, ti.SendQ, ti.SndWnd)},
		)
	}
	return kv
}

func lifetimeH(l float64) string {
	if l == 0 {
		return "none"
	}
	return secs(l)
}

func newAliveCmd(o *Options) *cobra.Command {
	return &cobra.Command{
		Use:   "alive CONID",
		Short: "Exit 0 if the connection is usable, 1 if not (tcp_conid_alive)",
		Long: `Check whether a connection is usable, as Kamailio's tcp_conid_alive: it prints
"alive" (code 1) and exits 0 when the connection's state is >= 1, and prints
"not alive" (code -1) and exits 1 otherwise, including for an unknown conid.
Any other exit code means the answer could not be had (see tcpopsctl --help).`,
		Example:           "  if tcpopsctl alive 42; then echo still there; fi\n  tcpopsctl -o json alive 42",
		Args:              args(1, 1),
		ValidArgsFunction: conidCompletion(o),
		RunE: func(cmd *cobra.Command, a []string) error {
			return o.onConn(cmd, a[0], func(ctx context.Context, c *client.Client, id uint64) error {
				r, err := c.Alive(ctx, id)
				if err != nil {
					return err
				}
				not := ""
				if !r.Alive {
					not = "not "
				}
				if err := o.report(r, "conid %d: %salive (%d)", id, not, r.Code); err != nil || r.Alive {
					return err
				}
				return negative
			})
		},
	}
}

func newStateCmd(o *Options) *cobra.Command {
	return &cobra.Command{
		Use:   "state CONID",
		Short: "Print the connection's state (tcp_conid_state); exit 1 if it is below 1",
		Long: `Print a connection's state number and name, as Kamailio's tcp_conid_state:
  1 ok          established and usable
  2 accepting   accepted, nothing read yet (or handshake not finished)
  3 connecting  outbound leg, dial in progress
 -1 not_found   no such conid, or closed (with its reason if recent)
 -2 eof         the peer sent FIN, the connection is being torn down
 -3 error       a socket error was seen, the connection will close
 -4 bad         any other bad state, the connection will close
Exit 0 when the state is >= 1, 1 otherwise.`,
		Example:           "  tcpopsctl state 42\n  state=$(tcpopsctl -o json state 42 | jq .state)",
		Args:              args(1, 1),
		ValidArgsFunction: conidCompletion(o),
		RunE: func(cmd *cobra.Command, a []string) error {
			return o.onConn(cmd, a[0], func(ctx context.Context, c *client.Client, id uint64) error {
				r, err := c.State(ctx, id)
				if err != nil {
					return err
				}
				closed := ""
				if r.Reason != "" {
					closed = " (closed: " + r.Reason + ")"
				}
				if err := o.report(r, "conid %d: %d %s%s", id, r.State, r.StateName, closed); err != nil || r.State >= 1 {
					return err
				}
				return negative
			})
		},
	}
}

func newKeepaliveCmd(o *Options) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "keepalive",
		Short: "Turn kernel TCP keepalive of connections on or off",
		Long: `Turn kernel TCP keepalive of one connection, or of a set picked by selector
flags, on (with idle, probe count and interval, as Kamailio's
tcp_keepalive_enable) or off (tcp_keepalive_disable). What is printed is
read back from the socket, not echoed from the request. --for DUR makes the
change last that long: then the keepalive from before comes back.`,
		Example: "  tcpopsctl keepalive enable 42 60 5 5\n  tcpopsctl keepalive disable 42\n  tcpopsctl keepalive enable 30 3 10 --proto ws --for 1h",
		Args:    subcommand,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return usageErr("keepalive needs a subcommand: enable or disable (see 'tcpopsctl keepalive --help')")
		},
	}
	var userTimeout time.Duration
	var es, ds selection
	enable := &cobra.Command{
		Use:   "enable (CONID | SELECTOR) IDLE COUNT INTERVAL",
		Short: "Turn keepalive on: first probe after IDLE s idle, COUNT probes INTERVAL s apart",
		Long: `Turn kernel TCP keepalive on, in the argument order of Kamailio's
tcp_keepalive_enable: IDLE seconds without data before the first probe
(1..32767), COUNT unanswered probes before the connection is dropped
(1..127), INTERVAL seconds between probes (1..32767). A dead peer is then
found within IDLE + COUNT x INTERVAL seconds and the connection closes with
reason timeout. --user-timeout also sets TCP_USER_TIMEOUT: how long sent data
may stay unacknowledged before the connection is dropped. --for DUR: only for
that long, then the keepalive from before (read back from the kernel now)
comes back; setting keepalive again replaces the override.
` + selectorHelp,
		Example: `  tcpopsctl keepalive enable 42 60 5 5
  tcpopsctl keepalive enable 42 30 3 10 --user-timeout 60s
  tcpopsctl keepalive enable 30 3 10 --proto ws --for 1h --dry-run
  tcpopsctl keepalive enable 30 3 10 --proto ws --for 1h --max 5000`,
		Args:              cobra.ArbitraryArgs, // checked by target: with or without a CONID
		ValidArgsFunction: conidCompletion(o),
		RunE: func(cmd *cobra.Command, a []string) error {
			bulk, err := target(cmd, a, 3)
			if err != nil {
				return err
			}
			p := rpc.KeepaliveParams{Enable: new(true)}
			if !bulk {
				id, err := parseConid(a[0])
				if err != nil {
					return err
				}
				p.ConnID, a = &id, a[1:]
				if err := es.single(cmd); err != nil {
					return err
				}
			}
			for i, dst := range []**int{&p.Idle, &p.Count, &p.Interval} {
				n, err := strconv.Atoi(a[i])
				if err != nil {
					return usageErr("%s %q: want a whole number", []string{"IDLE", "COUNT", "INTERVAL"}[i], a[i])
				}
				*dst = &n
			}
			if cmd.Flags().Changed("user-timeout") {
				ms := int(userTimeout.Milliseconds())
				p.UserTimeoutMs = &ms
			}
			if err := es.ttlParam(cmd, &p.TTL); err != nil {
				return err
			}
			if bulk {
				if p.BulkParams, err = es.params(cmd); err != nil {
					return err
				}
				return o.bulk(cmd, rpc.MethodKeepalive, p, p.BulkParams, fmt.Sprintf("given keepalive %s/%s/%s%s", a[0], a[1], a[2], forS(es.ttl)))
			}
			return o.call(cmd, func(ctx context.Context, c *client.Client) error { return o.keepalive(ctx, c, p) })
		},
	}
	enable.Flags().DurationVar(&userTimeout, "user-timeout", 0, "also set TCP_USER_TIMEOUT (e.g. 30s; 0 = kernel default)")
	addSelection(o, enable, &es, true)
	disable := &cobra.Command{
		Use:   "disable (CONID | SELECTOR)",
		Short: "Turn keepalive off (tcp_keepalive_disable)",
		Long: `Turn kernel TCP keepalive off (SO_KEEPALIVE 0), as Kamailio's
tcp_keepalive_disable. --for DUR: only for that long, then the keepalive from
before comes back.
` + selectorHelp,
		Example:           "  tcpopsctl keepalive disable 42\n  tcpopsctl keepalive disable --listener old --dry-run",
		Args:              cobra.ArbitraryArgs, // checked by target: with or without a CONID
		ValidArgsFunction: conidCompletion(o),
		RunE: func(cmd *cobra.Command, a []string) error {
			bulk, err := target(cmd, a, 0)
			if err != nil {
				return err
			}
			p := rpc.KeepaliveParams{Enable: new(false)}
			if err := ds.ttlParam(cmd, &p.TTL); err != nil {
				return err
			}
			if bulk {
				if p.BulkParams, err = ds.params(cmd); err != nil {
					return err
				}
				return o.bulk(cmd, rpc.MethodKeepalive, p, p.BulkParams, "given keepalive off"+forS(ds.ttl))
			}
			if err := ds.single(cmd); err != nil {
				return err
			}
			return o.onConn(cmd, a[0], func(ctx context.Context, c *client.Client, id uint64) error {
				p.ConnID = &id
				return o.keepalive(ctx, c, p)
			})
		},
	}
	addSelection(o, disable, &ds, true)
	cmd.AddCommand(enable, disable)
	return cmd
}

// forS says how long a bulk change lasts ("" for good).
func forS(ttl time.Duration) string {
	if ttl <= 0 {
		return ""
	}
	return " for " + ttl.String()
}

func (o *Options) keepalive(ctx context.Context, c *client.Client, p rpc.KeepaliveParams) error {
	r, err := c.Keepalive(ctx, p)
	if err != nil {
		return err
	}
	return o.report(r, "conid %d: keepalive %s (read back from the kernel)%s", r.ConnID, keepaliveH(&r.Keepalive, true), forH(r.Until))
}

func newLifetimeCmd(o *Options) *cobra.Command {
	var s selection
	cmd := &cobra.Command{
		Use:   "lifetime (CONID | SELECTOR) SECONDS",
		Short: "Set the idle lifetime of connections (tcp_set_connection_lifetime)",
		Long: `Set how long a connection may stay idle (no traffic either way) before it is
closed with reason lifetime, as Kamailio's tcp_set_connection_lifetime. The
deadline moves to now + SECONDS at once, so shortening takes effect
immediately; later traffic moves it to the last activity + SECONDS. SECONDS
may be a duration such as 10m; 0 removes the limit. --for DUR: only for that
long, then the lifetime from before comes back (counted from then).
` + selectorHelp,
		Example: `  tcpopsctl lifetime 42 3600
  tcpopsctl lifetime 42 10m
  tcpopsctl lifetime 42 0      # never close for idleness
  tcpopsctl lifetime 1h --remote 10.1.0.0/16 --direction in --for 8h`,
		Args:              cobra.ArbitraryArgs, // checked by target: with or without a CONID
		ValidArgsFunction: conidCompletion(o),
		RunE: func(cmd *cobra.Command, a []string) error {
			bulk, err := target(cmd, a, 1)
			if err != nil {
				return err
			}
			d, err := rpc.ParseSeconds(a[len(a)-1])
			if err != nil {
				if f, perr := strconv.ParseFloat(a[len(a)-1], 64); perr == nil && f < 0 {
					return usageErr("SECONDS %s: %s", a[len(a)-1], argRules["SECONDS"])
				}
				return usageErr("SECONDS %v", err)
			}
			p := rpc.LifetimeParams{Lifetime: new(d.Seconds())}
			if err := s.ttlParam(cmd, &p.TTL); err != nil {
				return err
			}
			if bulk {
				if p.BulkParams, err = s.params(cmd); err != nil {
					return err
				}
				return o.bulk(cmd, rpc.MethodLifetime, p, p.BulkParams, "given lifetime "+lifetimeH(d.Seconds())+forS(s.ttl))
			}
			if err := s.single(cmd); err != nil {
				return err
			}
			return o.onConn(cmd, a[0], func(ctx context.Context, c *client.Client, id uint64) error {
				p.ConnID = &id
				var r rpc.LifetimeResult
				if err := c.Call(ctx, rpc.MethodLifetime, p, &r); err != nil {
					return err
				}
				if r.LifetimeS == 0 {
					return o.report(r, "conid %d: no idle lifetime%s", id, forH(r.Until))
				}
				return o.report(r, "conid %d: lifetime %s, closes in %s unless there is traffic%s", id, secs(r.LifetimeS), secs(r.ExpiresInS), forH(r.Until))
			})
		},
	}
	addSelection(o, cmd, &s, true)
	return cmd
}

func newClosedEventCmd(o *Options) *cobra.Command {
	var off bool
	var s selection
	cmd := &cobra.Command{
		Use:   "closed-event (CONID | SELECTOR)",
		Short: "Publish a closed event when connections end (tcp_enable_closed_event)",
		Long: `Ask for a closed event when a connection ends, as Kamailio's
tcp_enable_closed_event; meant for a daemon run with --closed-event manual,
where only connections enabled this way produce events. --off takes it back.
--for DUR: only for that long, then the setting from before comes back.
` + selectorHelp,
		Example: `  tcpopsctl closed-event 42
  tcpopsctl closed-event 42 --off
  tcpopsctl closed-event --remote 192.0.2.0/24 --for 30m`,
		Args:              cobra.ArbitraryArgs, // checked by target: with or without a CONID
		ValidArgsFunction: conidCompletion(o),
		RunE: func(cmd *cobra.Command, a []string) error {
			bulk, err := target(cmd, a, 0)
			if err != nil {
				return err
			}
			p := rpc.ClosedEventParams{Enable: new(!off)}
			if err := s.ttlParam(cmd, &p.TTL); err != nil {
				return err
			}
			state := "on"
			if off {
				state = "off"
			}
			if bulk {
				if p.BulkParams, err = s.params(cmd); err != nil {
					return err
				}
				return o.bulk(cmd, rpc.MethodClosedEvent, p, p.BulkParams, "given closed event "+state+forS(s.ttl))
			}
			if err := s.single(cmd); err != nil {
				return err
			}
			return o.onConn(cmd, a[0], func(ctx context.Context, c *client.Client, id uint64) error {
				p.ConnID = &id
				var r rpc.ClosedEventResult
				if err := c.Call(ctx, rpc.MethodClosedEvent, p, &r); err != nil {
					return err
				}
				state := "off"
				if r.ClosedEvent {
					state = "on"
				}
				return o.report(r, "conid %d: closed event %s%s", id, state, forH(r.Until))
			})
		},
	}
	cmd.Flags().BoolVar(&off, "off", false, "turn the closed event off")
	addSelection(o, cmd, &s, true)
	return cmd
}

func newCloseCmd(o *Options) *cobra.Command {
	var reset bool
	var s selection
	cmd := &cobra.Command{
		Use:   "close (CONID | SELECTOR)",
		Short: "Close connections (FIN, or RST with --reset)",
		Long: `Close one connection, or a set picked by selector flags, with reason local;
the partner leg of each (the other side of the relay) closes with reason
peer. By default the close is orderly (FIN); --reset sends an RST instead.
` + selectorHelp,
		Example: `  tcpopsctl close 42
  tcpopsctl close 42 --reset
  tcpopsctl close --remote 203.0.113.0/24 --direction in --dry-run
  tcpopsctl close --remote 203.0.113.0/24 --direction in --max 500
  tcpopsctl close --listener old --idle-min 5m --rate 50`,
		Args:              cobra.ArbitraryArgs, // checked by target: with or without a CONID
		ValidArgsFunction: conidCompletion(o),
		RunE: func(cmd *cobra.Command, a []string) error {
			bulk, err := target(cmd, a, 0)
			if err != nil {
				return err
			}
			how := "FIN"
			if reset {
				how = "RST"
			}
			if bulk {
				p := rpc.CloseParams{Reset: reset}
				if p.BulkParams, err = s.params(cmd); err != nil {
					return err
				}
				return o.bulk(cmd, rpc.MethodClose, p, p.BulkParams, "closed ("+how+")")
			}
			if err := s.single(cmd); err != nil {
				return err
			}
			return o.onConn(cmd, a[0], func(ctx context.Context, c *client.Client, id uint64) error {
				r, err := c.CloseConn(ctx, id, reset)
				if err != nil {
					return err
				}
				return o.report(r, "conid %d: closed (%s)", id, how)
			})
		},
	}
	cmd.Flags().BoolVar(&reset, "reset", false, "reset (RST) instead of closing (FIN)")
	addSelection(o, cmd, &s, false)
	return cmd
}

// labelled is "name value", or "" when value is.
func labelled(name, value string) string {
	if value == "" {
		return ""
	}
	return name + " " + value
}

// nonEmpty drops the empty strings.
func nonEmpty(ss ...string) []string {
	out := ss[:0]
	for _, s := range ss {
		if s != "" {
			out = append(out, s)
		}
	}
	return out
}
