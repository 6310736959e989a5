package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/tcpops/tcpops/rpc"
	"github.com/tcpops/tcpops/rpc/client"
)

// selection holds the selector flags of a changing command: which
// connections (instead of CONID), and how safely.
type selection struct {
	sel     rpc.Selector
	idleMin time.Duration
	conids  string
	dryRun  bool
	max     int
	rate    float64
	ttl     time.Duration // --for
}

// selectorFlags are the flags that pick connections.
var selectorFlags = []string{"all", "conids", "state", "proto", "direction", "listener", "remote", "idle-min"}

// selectorHelp is the part of a changing command's help about selectors.
const selectorHelp = `
Instead of CONID, selector flags pick a set of connections, taken once when
the command starts (connections that appear later are not touched):
--remote (IP, IP:port or CIDR), --state, --proto, --direction, --listener,
--idle-min and --conids 1,2,3 combine with AND; --all takes every connection.
Three flags keep a bulk change safe: --dry-run prints the table of what would
change and changes nothing; --max N refuses the whole change (exit 4, nothing
changed) when more than N connections match; --rate N makes at most N changes
a second, with a progress bar on a terminal, and stops cleanly if interrupted
(what was done stays done, and the daemon's log says how far it got);
with --rate, --timeout bounds the silence between the daemon's progress
reports instead of the whole run.
Exit codes with a selector: 0 all changed, 1 nothing matched, 4 some failed
or refused by --max, 2 usage.`

// addSelection adds the selector flags to cmd; withTTL adds --for.
func addSelection(o *Options, cmd *cobra.Command, s *selection, withTTL bool) {
	f := cmd.Flags()
	f.BoolVar(&s.sel.All, "all", false, "every connection (instead of CONID)")
	f.StringVar(&s.conids, "conids", "", "these conids, comma-separated (instead of CONID)")
	f.StringVar((*string)(&s.sel.State), "state", "", "connections in this state: "+strings.Join(rpc.StateNames(), ", ")+" (or its number)")
	f.StringVar(&s.sel.Proto, "proto", "", "connections of this protocol: tcp, tls, ws, wss")
	f.StringVar(&s.sel.Direction, "direction", "", "in (from clients) or out (to backends)")
	f.StringVar(&s.sel.Listener, "listener", "", "connections of this listener (its name or URL)")
	f.StringVar(&s.sel.Remote, "remote", "", "connections from this remote: IP, IP:port or CIDR")
	f.DurationVar(&s.idleMin, "idle-min", 0, "connections idle at least this long (e.g. 30s, 10m)")
	f.BoolVar(&s.dryRun, "dry-run", false, "print what would change; change nothing")
	f.IntVar(&s.max, "max", 0, "refuse the whole change if more connections than this match")
	f.Float64Var(&s.rate, "rate", 0, "at most this many changes a second")
	if withTTL {
		f.DurationVar(&s.ttl, "for", 0, "only for this long (e.g. 1h); then the previous setting comes back")
	}
	cmd.RegisterFlagCompletionFunc("state", fixed(rpc.StateNames()...))
	cmd.RegisterFlagCompletionFunc("proto", fixed("tcp", "tls", "ws", "wss"))
	cmd.RegisterFlagCompletionFunc("direction", fixed("in", "out"))
	cmd.RegisterFlagCompletionFunc("listener", listenerCompletion(o))
	cmd.RegisterFlagCompletionFunc("conids", conidsCompletion(o))
}

// selecting reports whether a selector flag was given.
func selecting(cmd *cobra.Command) bool {
	for _, n := range selectorFlags {
		if cmd.Flags().Changed(n) {
			return true
		}
	}
	return false
}

// single checks a command given a CONID: no flag meant for a selector.
func (s *selection) single(cmd *cobra.Command) error {
	for _, n := range []string{"dry-run", "max", "rate"} {
		if cmd.Flags().Changed(n) {
			return usageErr("--%s works with selector flags, not a CONID (e.g. --conids 42 --%s)", n, n)
		}
	}
	return s.ttlParam(cmd, nil)
}

// ttlParam sets *dst from --for (nil: only checks it).
func (s *selection) ttlParam(cmd *cobra.Command, dst **float64) error {
	if cmd.Flags().Lookup("for") == nil || !cmd.Flags().Changed("for") {
		return nil
	}
	if s.ttl <= 0 {
		return usageErr("--for %s: must be > 0 (how long the change lasts)", s.ttl)
	}
	if dst != nil {
		*dst = new(s.ttl.Seconds())
	}
	return nil
}

// params builds the bulk params from the flags.
func (s *selection) params(cmd *cobra.Command) (rpc.BulkParams, error) {
	sel := s.sel
	f := cmd.Flags()
	if f.Changed("idle-min") {
		if s.idleMin < 0 {
			return rpc.BulkParams{}, usageErr("--idle-min %s: must be >= 0", s.idleMin)
		}
		sel.IdleMin = new(s.idleMin.Seconds())
	}
	if f.Changed("conids") {
		for _, part := range strings.Split(s.conids, ",") {
			id, err := strconv.ParseUint(strings.TrimSpace(part), 10, 64)
			if err != nil || id == 0 {
				return rpc.BulkParams{}, usageErr("--conids %q: want connection ids such as 1,2,3 (see 'tcpopsctl list')", s.conids)
			}
			sel.ConnIDs = append(sel.ConnIDs, id)
		}
	}
	if f.Changed("all") && !sel.All {
		return rpc.BulkParams{}, usageErr("--all=false selects nothing: leave it out and give other selector flags")
	}
	if sel.All && len(selectorFlagsChanged(cmd)) > 1 {
		return rpc.BulkParams{}, usageErr("--all takes no other selector flag (it is every connection): drop --all or the others")
	}
	b := rpc.BulkParams{Select: &sel, DryRun: s.dryRun}
	if f.Changed("max") {
		if s.max < 1 {
			return b, usageErr("--max %d: must be >= 1", s.max)
		}
		b.Max = &s.max
	}
	if f.Changed("rate") {
		if !(s.rate > 0) {
			return b, usageErr("--rate %v: must be > 0 (changes per second)", s.rate)
		}
		b.Rate = &s.rate
	}
	return b, nil
}

func selectorFlagsChanged(cmd *cobra.Command) []string {
	var out []string
	for _, n := range selectorFlags {
		if cmd.Flags().Changed(n) {
			out = append(out, n)
		}
	}
	return out
}

// target checks the arguments of a changing command: with selector flags
// it takes n arguments, without them a CONID and n more.
func target(cmd *cobra.Command, a []string, n int) (bulk bool, err error) {
	if selecting(cmd) {
		if len(a) != n {
			return true, usageErr("%s with selector flags takes %d argument(s) and no CONID, got %d (usage: %s)", cmd.CommandPath(), n, len(a), cmd.UseLine())
		}
		return true, nil
	}
	if len(a) != n+1 {
		return false, usageErr("%s takes a CONID and %d more argument(s), or selector flags (e.g. --remote 10.0.0.0/8, --all), got %d argument(s) (usage: %s)",
			cmd.CommandPath(), n, len(a), cmd.UseLine())
	}
	return false, nil
}

// errNoProgress ends a rated call whose daemon stopped reporting.
var errNoProgress = errors.New("no progress")

// bulk runs a changing method with a selector and prints its result;
// verb says what is done to each connection ("closed (FIN)").
func (o *Options) bulk(cmd *cobra.Command, method string, params any, b rpc.BulkParams, verb string) error {
	c, ctx, done, err := o.client(cmd)
	if err != nil {
		return err
	}
	defer done()
	var bar *progressbar.ProgressBar
	// Over NATS no progress travels: --timeout bounds the whole call.
	if b.Rate != nil && o.NATS == "" {
		// A rated call may take long: the daemon reports at least once a
		// second, and --timeout bounds the silence instead of the call.
		gap := o.Timeout + 2*time.Second
		var cancel context.CancelCauseFunc
		ctx, cancel = context.WithCancelCause(cmd.Context())
		defer cancel(nil)
		watchdog := time.AfterFunc(gap, func() { cancel(errNoProgress) })
		defer watchdog.Stop()
		tty := isTerminal(o.Stderr)
		c.OnProgress(func(p rpc.Progress) {
			watchdog.Reset(gap)
			if !tty {
				return
			}
			if bar == nil {
				bar = progressbar.NewOptions(p.Total, progressbar.OptionSetWriter(o.Stderr), progressbar.OptionSetDescription(method),
					progressbar.OptionShowCount(), progressbar.OptionSetPredictTime(true), progressbar.OptionThrottle(100*time.Millisecond),
					progressbar.OptionClearOnFinish())
			}
			bar.Set(p.Done)
		})
		defer c.OnProgress(nil)
	}
	var raw json.RawMessage
	err = c.Call(ctx, method, params, &raw)
	if bar != nil {
		bar.Finish()
	}
	if errors.Is(context.Cause(ctx), errNoProgress) {
		return &exitError{code: ExitUnreachable, err: fmt.Errorf("%s: no word from tcpops at %s for %s; it stops when this command goes (see its log for how far it got)",
			method, o.socketPath(), o.Timeout+2*time.Second)}
	}
	if err != nil {
		return err
	}
	var r rpc.BulkResult
	if err := json.Unmarshal(raw, &r); err != nil {
		return err
	}
	if o.Output == "json" {
		if err := printRaw(o.Stdout, raw); err != nil {
			return err
		}
	} else if err := o.printBulk(r, verb); err != nil {
		return err
	}
	return bulkExit(r)
}

// printBulk prints a bulk result for people.
func (o *Options) printBulk(r rpc.BulkResult, verb string) error {
	if r.DryRun {
		if r.Matched == 0 {
			_, err := fmt.Fprintln(o.Stdout, "dry run: no connection matches; nothing would change")
			return err
		}
		if err := connTable(o, r.Connections); err != nil {
			return err
		}
		_, err := fmt.Fprintf(o.Stdout, "dry run: %d connection(s) match and would be %s; nothing was changed\n", r.Matched, verb)
		return err
	}
	if r.Matched == 0 {
		_, err := fmt.Fprintln(o.Stdout, "no connection matches; nothing changed")
		return err
	}
	line := fmt.Sprintf("%d of %d matched connection(s) %s", len(r.Applied), r.Matched, verb)
	if len(r.Gone) > 0 {
		line += fmt.Sprintf("; %d closed before their turn (a partner leg closed earlier, or the peer)", len(r.Gone))
	}
	if len(r.Failed) > 0 {
		line += fmt.Sprintf("; %d failed", len(r.Failed))
	}
	if r.Stopped != "" {
		line += "; stopped: " + r.Stopped
	}
	if _, err := fmt.Fprintln(o.Stdout, line); err != nil {
		return err
	}
	for _, f := range r.Failed {
		fmt.Fprintf(o.Stderr, "tcpopsctl: %s (code %d)\n", f.Message, f.Code)
	}
	return nil
}

// bulkExit is the exit code of a bulk result: 0 all changed, 1 nothing
// matched, 4 some failed (or the call stopped early).
func bulkExit(r rpc.BulkResult) error {
	switch {
	case len(r.Failed) > 0:
		return &exitError{code: ExitFailed, err: fmt.Errorf("%d of %d change(s) failed", len(r.Failed), r.Matched)}
	case r.Stopped != "":
		return &exitError{code: ExitFailed, err: fmt.Errorf("stopped before the end: %s", r.Stopped)}
	case r.Matched == 0:
		return negative
	}
	return nil
}

// connTable prints connections as list does.
func connTable(o *Options, cs []rpc.Conn) error {
	rows := make([][]string, 0, len(cs))
	for _, cn := range cs {
		rows = append(rows, []string{
			strconv.FormatUint(cn.ConnID, 10), orDash(cn.Peer), cn.Proto, cn.Direction, cn.StateName,
			orDashS(cn.Remote), orDashS(cn.Local), secs(cn.IdleS), expiresH(cn.LifetimeS, cn.ExpiresInS),
			keepaliveH(cn.Keepalive, false), bytesH(cn.BytesIn), bytesH(cn.BytesOut),
		})
	}
	return table(o.Stdout, []string{"CONID", "PEER", "PROTO", "DIR", "STATE", "REMOTE", "LOCAL", "IDLE", "EXPIRES", "KEEPALIVE", "IN", "OUT"}, rows)
}

// isTerminal reports whether w is a terminal (for the progress bar, and
// whether tcpopsctl alone opens the shell).
func isTerminal(w any) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

// forH says how long a change lasts, for the single-conid lines.
func forH(until *time.Time) string {
	if until == nil {
		return ""
	}
	return "; until " + until.Local().Format("15:04:05") + ", then the previous setting comes back"
}

// overridesH lists a connection's overrides for people.
func overridesH(ovs []rpc.Override) string {
	var parts []string
	for _, ov := range ovs {
		parts = append(parts, fmt.Sprintf("%s until %s (in %s)", ov.What, ov.Until.Local().Format("15:04:05"), secs(time.Until(ov.Until).Seconds())))
	}
	return strings.Join(parts, ", ")
}

// listenerCompletion completes --listener with the listeners of the live
// connections.
func listenerCompletion(o *Options) cobra.CompletionFunc {
	return func(_ *cobra.Command, _ []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
		return o.complete(func(ctx context.Context, c *client.Client) ([]cobra.Completion, error) {
			seen := map[string]int{}
			var order []string
			var after uint64
			for {
				r, err := c.List(ctx, rpc.ListParams{After: after, Limit: 5000})
				if err != nil {
					return nil, err
				}
				for _, cn := range r.Connections {
					if cn.Direction == "in" && strings.HasPrefix(cn.Listener, toComplete) {
						if seen[cn.Listener] == 0 {
							order = append(order, cn.Listener)
						}
						seen[cn.Listener]++
					}
				}
				if r.Next == 0 {
					break
				}
				after = r.Next
			}
			var out []cobra.Completion
			for _, l := range order {
				out = append(out, cobra.CompletionWithDesc(l, fmt.Sprintf("%d connection(s) in", seen[l])))
			}
			return out, nil
		})
	}
}

// conidsCompletion completes the last conid of --conids 1,2,3 with the
// live conids.
func conidsCompletion(o *Options) cobra.CompletionFunc {
	return func(cmd *cobra.Command, _ []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
		head, last := "", toComplete
		if i := strings.LastIndexByte(toComplete, ','); i >= 0 {
			head, last = toComplete[:i+1], toComplete[i+1:]
		}
		out, dir := conidCompletion(o)(cmd, nil, last)
		for i := range out {
			out[i] = head + out[i]
		}
		return out, dir | cobra.ShellCompDirectiveNoSpace
	}
}
