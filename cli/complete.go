package cli

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/tcpops/tcpops/rpc"
	"github.com/tcpops/tcpops/rpc/client"
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

// complete asks the daemon for completions within a short time; when the
// daemon is not there the shell simply offers nothing.
func (o *Options) complete(list func(ctx context.Context, c *client.Client) ([]cobra.Completion, error)) ([]cobra.Completion, cobra.ShellCompDirective) {
	ctx, cancel := context.WithTimeout(context.Background(), min(o.Timeout, completionTimeout))
	defer cancel()
	c, release, err := o.dial(ctx)
	if err != nil {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	defer release()
	out, err := list(ctx, c)
	if err != nil {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	return out, cobra.ShellCompDirectiveNoFileComp
}

// conidCompletion completes a command's first argument with the live
// conids, described by protocol, direction, remote address and state.
func conidCompletion(o *Options) cobra.CompletionFunc {
	return func(cmd *cobra.Command, args []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
		if len(args) != 0 {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		return o.complete(func(ctx context.Context, c *client.Client) ([]cobra.Completion, error) {
			var out []cobra.Completion
			var after uint64
			for {
				r, err := c.List(ctx, rpc.ListParams{After: after, Limit: 5000})
				if err != nil {
					return nil, err
				}
				for _, cn := range r.Connections {
					id := strconv.FormatUint(cn.ConnID, 10)
					if strings.HasPrefix(id, toComplete) {
						out = append(out, cobra.CompletionWithDesc(id, fmt.Sprintf("%s %s %s %s", cn.Proto, cn.Direction, orDashS(cn.Remote), cn.StateName)))
					}
				}
				if r.Next == 0 {
					return out, nil
				}
				after = r.Next
			}
		})
	}
}

// methodCompletion completes call's METHOD from the live daemon.
func methodCompletion(o *Options) cobra.CompletionFunc {
	return func(cmd *cobra.Command, args []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
		if len(args) != 0 {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		return o.complete(func(ctx context.Context, c *client.Client) ([]cobra.Completion, error) {
			ms, err := c.Methods(ctx)
			var out []cobra.Completion
			for _, m := range ms {
				if strings.HasPrefix(m, toComplete) {
					out = append(out, m)
				}
			}
			return out, err
		})
	}
}
