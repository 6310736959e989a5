package cli

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/tcpops/tcpops/rpc"
)

// completionTimeout bounds a daemon round trip made for tab completion.
const completionTimeout = 500 * time.Millisecond

func fixed(vals ...string) cobra.CompletionFunc {
	return func(_ *cobra.Command, _ []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
		var out []cobra.Completion
		for _, v := range vals {
			if strings.HasPrefix(v, toComplete) {
				out = append(out, v)
			}
		}
		return out, cobra.ShellCompDirectiveNoFileComp
	}
}

// completionClient dials quickly; nil when the daemon is not there, so the
// shell simply offers nothing.
func (o *Options) completionClient(cmd *cobra.Command) (*rpc.Client, context.Context, func()) {
	ctx, cancel := context.WithTimeout(context.Background(), min(o.Timeout, completionTimeout))
	c, err := rpc.Dial(ctx, o.socketPath())
	if err != nil {
		cancel()
		return nil, nil, nil
	}
	return c, ctx, func() { c.Close(); cancel() }
}

// conidCompletion completes a command's first argument with the live
// conids, described by protocol, direction, remote address and state.
func conidCompletion(o *Options) cobra.CompletionFunc {
	return func(cmd *cobra.Command, args []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
		if len(args) != 0 {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		c, ctx, done := o.completionClient(cmd)
		if c == nil {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		defer done()
		var out []cobra.Completion
		var after uint64
		for {
			r, err := c.List(ctx, rpc.ListParams{After: after, Limit: 5000})
			if err != nil {
				return nil, cobra.ShellCompDirectiveNoFileComp
			}
			for _, cn := range r.Connections {
				id := strconv.FormatUint(cn.ConnID, 10)
				if strings.HasPrefix(id, toComplete) {
					out = append(out, cobra.CompletionWithDesc(id, fmt.Sprintf("%s %s %s %s", cn.Proto, cn.Direction, orDashS(cn.Remote), cn.StateName)))
				}
			}
			if r.Next == 0 {
				break
			}
			after = r.Next
		}
		return out, cobra.ShellCompDirectiveNoFileComp
	}
}

// methodCompletion completes call's METHOD from the live daemon.
func methodCompletion(o *Options) cobra.CompletionFunc {
	return func(cmd *cobra.Command, args []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
		if len(args) != 0 {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		c, ctx, done := o.completionClient(cmd)
		if c == nil {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		defer done()
		ms, err := c.Methods(ctx)
		if err != nil {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		var out []cobra.Completion
		for _, m := range ms {
			if strings.HasPrefix(m, toComplete) {
				out = append(out, m)
			}
		}
		return out, cobra.ShellCompDirectiveNoFileComp
	}
}
