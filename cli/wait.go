package cli

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/tcpops/tcpops/rpc"
	"github.com/tcpops/tcpops/rpc/client"
)

// pollEvery is how often wait asks the daemon again.
const pollEvery = 100 * time.Millisecond

func newWaitCmd(o *Options) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "wait",
		Short: "Wait until a connection closes, a count is reached or the daemon is ready",
		Long: `Wait, for automation, until a condition holds: exit 0 as soon as it does, 1 if
--timeout (default 5s) passes first. wait closed and wait count exit 3 when the
daemon cannot be reached; wait ready waits for that too.`,
		Example: `  tcpopsctl wait ready --timeout 30s && tcpopsctl stats
  tcpopsctl close 42 && tcpopsctl wait closed 42
  tcpopsctl wait count --listener sip --eq 0 --timeout 10m   # drained`,
		Args: subcommand,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return usageErr("wait needs a condition: closed, count or ready (see 'tcpopsctl wait --help')")
		},
	}
	closed := &cobra.Command{
		Use:               "closed CONID",
		Short:             "Wait until the connection is closed (state -1)",
		Long:              "Wait until the connection has left the table (its state is -1, not_found). Exit 0 then, 1 on timeout.",
		Example:           "  tcpopsctl wait closed 42 --timeout 30s",
		Args:              args(1, 1),
		ValidArgsFunction: conidCompletion(o),
		RunE: func(cmd *cobra.Command, a []string) error {
			id, err := parseConid(a[0])
			if err != nil {
				return err
			}
			return o.poll(cmd, func(ctx context.Context, c *client.Client) (bool, error) {
				st, err := c.State(ctx, id)
				if err != nil || st.State != -1 {
					return false, err
				}
				if st.Reason != "" {
					return true, o.report(st, "conid %d: closed (%s)", id, st.Reason)
				}
				return true, o.report(st, "conid %d: closed", id)
			}, func() string { return fmt.Sprintf("conid %d still open", id) })
		},
	}
	var p rpc.ListParams
	var eq int
	count := &cobra.Command{
		Use:   "count --eq N [filters]",
		Short: "Wait until the number of connections matching the filters is N",
		Long: `Wait until exactly N connections match the filters (those of list: --state,
--proto, --direction, --listener, --remote). Exit 0 then, 1 on timeout.`,
		Example: "  tcpopsctl wait count --listener sip --direction in --eq 0 --timeout 1h",
		Args:    args(0, 0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if !cmd.Flags().Changed("eq") || eq < 0 {
				return usageErr("wait count needs --eq N (N >= 0)")
			}
			var last int
			return o.poll(cmd, func(ctx context.Context, c *client.Client) (bool, error) {
				n, err := countConns(ctx, c, p)
				last = n
				if err == nil && n == eq {
					return true, o.report(map[string]int{"count": n}, "%d connections", n)
				}
				return false, err
			}, func() string { return fmt.Sprintf("%d connections match, not %d,", last, eq) })
		},
	}
	count.Flags().IntVar(&eq, "eq", 0, "the count to wait for")
	addListFilters(count, &p)
	count.RegisterFlagCompletionFunc("listener", listenerCompletion(o))
	ready := &cobra.Command{
		Use:     "ready",
		Short:   "Wait until the daemon answers on its socket",
		Long:    "Wait until the daemon answers core.version on its control socket. Exit 0 then, 1 on timeout.",
		Example: "  tcpopsctl wait ready --timeout 30s",
		Args:    args(0, 0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			deadline := time.Now().Add(o.Timeout)
			for {
				ctx, cancel := context.WithTimeout(cmd.Context(), min(time.Until(deadline), 2*time.Second))
				c, release, err := o.dial(ctx)
				if errors.Is(err, errFanOut) {
					cancel()
					return err
				}
				var v rpc.Version
				if err == nil {
					v, err = c.Version(ctx)
					release()
				}
				cancel()
				if err == nil {
					return o.report(v, "ready")
				}
				if time.Now().Add(pollEvery).After(deadline) {
					return &exitError{code: ExitNegative, err: fmt.Errorf("tcpops at %s not ready within %s: %v", o.where(), o.Timeout, err)}
				}
				time.Sleep(pollEvery)
			}
		},
	}
	cmd.AddCommand(closed, count, ready)
	return cmd
}

// countConns counts the connections matching p, page by page.
func countConns(ctx context.Context, c *client.Client, p rpc.ListParams) (int, error) {
	n := 0
	p.Limit, p.After = 5000, 0
	for {
		r, err := c.List(ctx, p)
		if err != nil {
			return 0, err
		}
		n += len(r.Connections)
		if r.Next == 0 {
			return n, nil
		}
		p.After = r.Next
	}
}

// poll asks check until it holds (exit 0) or --timeout passes (exit 1).
func (o *Options) poll(cmd *cobra.Command, check func(ctx context.Context, c *client.Client) (bool, error), notYet func() string) error {
	deadline := time.Now().Add(o.Timeout)
	ctx, cancel := context.WithDeadline(cmd.Context(), deadline)
	defer cancel()
	c, release, err := o.dial(ctx)
	if err != nil {
		return err
	}
	defer release()
	for {
		ok, err := check(ctx, c)
		var de *client.DialError
		switch {
		case ok:
			return nil
		case errors.As(err, &de) && time.Now().After(deadline.Add(-pollEvery)):
			return &exitError{code: ExitNegative, err: fmt.Errorf("%s after %s", notYet(), o.Timeout)}
		case err != nil:
			return err
		case time.Now().Add(pollEvery).After(deadline):
			return &exitError{code: ExitNegative, err: fmt.Errorf("%s after %s", notYet(), o.Timeout)}
		}
		time.Sleep(pollEvery)
	}
}
