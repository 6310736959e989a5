package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/tcpops/tcpops/rpc"
	"github.com/tcpops/tcpops/rpc/client"
)

func newEventsCmd(o *Options) *cobra.Command {
	var p rpc.EventsParams
	var follow bool
	var since string
	cmd := &cobra.Command{
		Use:   "events",
		Short: "Print closed events; -f follows them live",
		Long: `Print the closed events the daemon keeps (one line each, logfmt; with -o json one
JSON object per line), then with -f follow new ones as they happen, like
Kamailio's event_route[tcp:closed]. seq is gap-free: a follower too slow for
the daemon's ring gets a line saying which seqs it lost instead of a silent
gap. Across an upgrade (tcpopsctl upgrade) -f reconnects by itself and goes
on from the last seq it printed; when the daemon goes away (its socket is
removed or nobody answers within 2 s), -f says so on stderr and exits 3.

Reasons: eof, reset, timeout, lifetime, local, peer, shutdown, error.

With --nats the events come from JetStream, the TCPOPS_EVENTS stream the
daemons publish to: every host's, or those of --host, each line led by
host= (with -o json, host, boot and stream_seq added). --since is then a
stream sequence, a time (RFC 3339) or a duration ago (10m); without it,
everything the stream keeps. Without -f it stops at the end of the stream.`,
		Example: `  tcpopsctl events
  tcpopsctl events -f --reason reset --reason timeout
  tcpopsctl events --since 1200
  tcpopsctl -o json events -f | jq -c 'select(.reason == "lifetime")'
  tcpopsctl --nats nats://nats1:4222 events -f --since 1h
  tcpopsctl --nats nats://nats1:4222 --host web1 events --reason reset`,
		Args: args(0, 0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			for _, r := range p.Reason {
				if !slices.Contains(rpc.Reasons(), r) {
					return usageErr("--reason %q: want one of %v", r, rpc.Reasons())
				}
			}
			if o.NATS != "" {
				return o.fleetEvents(cmd, p, since, follow)
			}
			if since != "" {
				n, err := strconv.ParseUint(since, 10, 64)
				if err != nil {
					// A time or a duration ago only with --nats.
					return usageErr("--since %s: want a whole number >= 0 (see '%s --help')", since, cmd.CommandPath())
				}
				p.Since = n
			}
			print := func(e rpc.Event) error { return printEvent(o, e) }
			if !follow {
				return o.call(cmd, func(ctx context.Context, c *client.Client) error {
					r, err := c.Events(ctx, p)
					if err != nil {
						return err
					}
					for _, e := range r.Events {
						if err := print(e); err != nil {
							return err
						}
					}
					return nil
				})
			}
			if o.shared != nil {
				return usageErr("events -f never ends: run it on its own, not in a batch")
			}
			ctx := cmd.Context()
			if o.keep == nil { // in the shell, Ctrl-C cancels the command's context
				var stop context.CancelFunc
				ctx, stop = signal.NotifyContext(ctx, syscall.SIGINT, syscall.SIGTERM)
				defer stop()
			}
			last := p.Since
			onEvent := func(e rpc.Event) error {
				if e.Seq <= last {
					return nil // seen before a reconnection
				}
				last = e.Seq
				return print(e)
			}
			onLost := func(l rpc.EventsLost) error {
				fmt.Fprintf(o.Stderr, "tcpopsctl: events %d..%d lost: this follower fell behind the daemon's ring\n", l.FromSeq, l.ToSeq)
				last = max(last, l.ToSeq)
				if o.Output == "json" {
					return printJSONLine(o.Stdout, map[string]any{"event": rpc.NotifyEventsLost, "from_seq": l.FromSeq, "to_seq": l.ToSeq})
				}
				return nil
			}
			// A daemon that hands over to a new process (tcpopsctl upgrade)
			// disconnects its followers; the socket stays, and the new one
			// goes on from the last seq seen.
			// again is false only for the first connection: a dial error
			// after that means the daemon went away, however many events
			// came in between.
			for attempt, seen, again := 0, last, false; ; attempt, again = attempt+1, true {
				if last != seen {
					attempt, seen = 0, last
				}
				err := followOnce(ctx, o, p, last, again, onEvent, onLost)
				if !errors.Is(err, client.ErrDisconnected) || ctx.Err() != nil {
					return err
				}
				if attempt >= maxReconnects {
					return &exitError{code: ExitUnreachable, err: fmt.Errorf("tcpops at %s went away; last event seen: seq %d", o.socketPath(), last)}
				}
				if _, err := os.Stat(o.socketPath()); err != nil {
					// Stopped: its socket is gone.
					return &exitError{code: ExitUnreachable, err: fmt.Errorf("tcpops at %s went away; last event seen: seq %d", o.socketPath(), last)}
				}
			}
		},
	}
	f := cmd.Flags()
	f.BoolVarP(&follow, "follow", "f", false, "keep printing new events until interrupted")
	f.StringVar(&since, "since", "", "only events with a seq above this one (with --nats: from this stream sequence, time or duration ago)")
	f.StringArrayVar(&p.Reason, "reason", nil, "only these reasons (repeatable)")
	f.Uint64Var(&p.ConnID, "conid", 0, "only events of this connection")
	cmd.RegisterFlagCompletionFunc("reason", func(_ *cobra.Command, _ []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
		var out []cobra.Completion
		for _, r := range rpc.Reasons() {
			if strings.HasPrefix(r, toComplete) {
				out = append(out, cobra.CompletionWithDesc(r, rpc.EventName(r)))
			}
		}
		return out, cobra.ShellCompDirectiveNoFileComp
	})
	return cmd
}

// maxReconnects bounds the reconnections of one events -f in a row
// without an event between them.
const maxReconnects = 5

// followOnce follows events after since on one connection to the daemon.
func followOnce(ctx context.Context, o *Options, p rpc.EventsParams, since uint64, again bool, onEvent func(rpc.Event) error, onLost func(rpc.EventsLost) error) error {
	callCtx, cancel := context.WithTimeout(ctx, o.Timeout)
	defer cancel()
	c, release, err := o.dial(callCtx)
	if err != nil {
		var de *client.DialError
		if errors.As(err, &de) && again {
			// Gone after having served this follower: the same ending
			// as a disconnection.
			return fmt.Errorf("%w: %v", client.ErrDisconnected, err)
		}
		return err
	}
	defer release()
	if o.keep != nil {
		// The daemon ends a subscription only with its connection: the
		// shell's is dropped, and its next command dials anew.
		defer o.keep.close()
	}
	p.Since = since
	return c.Follow(ctx, callCtx, p, onEvent, onLost)
}

// printEvent writes one event: JSON, or a logfmt line for people and grep.
func printEvent(o *Options, e rpc.Event) error {
	if o.Output == "json" {
		return printJSONLine(o.Stdout, e)
	}
	return writeEvent(o.Stdout, "", e)
}

// writeEvent writes the logfmt line of an event, led by host= when host
// is set.
func writeEvent(w io.Writer, host string, e rpc.Event) error {
	var b strings.Builder
	kv := func(k, v string) {
		if v == "" {
			return
		}
		if b.Len() > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(k)
		b.WriteByte('=')
		if strings.ContainsAny(v, " \"=") {
			v = strconv.Quote(v)
		}
		b.WriteString(v)
	}
	kv("host", host)
	kv("seq", strconv.FormatUint(e.Seq, 10))
	kv("time", e.Time.Format(time.RFC3339Nano))
	kv("event", e.Event)
	kv("reason", e.Reason)
	kv("conid", strconv.FormatUint(e.ConnID, 10))
	if e.Peer != 0 {
		kv("peer", strconv.FormatUint(e.Peer, 10))
	}
	kv("proto", e.Proto)
	kv("dir", e.Direction)
	kv("listener", e.Listener)
	kv("remote", e.Remote)
	kv("local", e.Local)
	kv("duration", strconv.FormatFloat(e.DurationS, 'f', -1, 64)+"s")
	kv("in", strconv.FormatUint(e.BytesIn, 10))
	kv("out", strconv.FormatUint(e.BytesOut, 10))
	kv("error", e.Error)
	if e.WSCloseCode != 0 {
		kv("ws_code", strconv.Itoa(e.WSCloseCode))
	}
	kv("ws_reason", e.WSCloseReason)
	if e.Reset {
		kv("reset", "true")
	}
	b.WriteByte('\n')
	_, err := io.WriteString(w, b.String())
	return err
}
