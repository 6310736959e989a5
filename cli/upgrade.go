package cli

import (
	"context"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/tcpops/tcpops/rpc"
)

func newUpgradeCmd(o *Options) *cobra.Command {
	var binary string
	var drain time.Duration
	cmd := &cobra.Command{
		Use:   "upgrade",
		Short: "Hand the daemon's sockets and connections to a new daemon process",
		Long: `Start a new tcpops process (the daemon's own executable as it is on disk now, or
--binary) with the same flags and configuration, and hand it the listening
sockets, the control socket and every plain TCP connection with its table
state (conid, partner, lifetime deadline, keepalive, closed-event flag,
counters) and the bytes in flight. No connection is dropped and no byte lost;
conids and event seqs go on. TLS and WebSocket connections stay with the old
process until they end or --drain-timeout closes them (reason shutdown); the
new daemon lists them with "draining" and publishes their closed events.

If anything fails before the new process takes over (it does not start, its
checks refuse the state, it crashes, it times out) the old process serves on
with everything and this command exits 4 saying why. Same as SIGUSR2 to the
daemon, and what systemctl reload runs with the shipped unit.`,
		Example: `  tcpopsctl upgrade
  tcpopsctl upgrade --binary /usr/local/bin/tcpops.new --drain-timeout 1h
  tcpopsctl -o json upgrade`,
		Args: args(0, 0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			p := rpc.UpgradeParams{Binary: binary}
			if cmd.Flags().Changed("drain-timeout") {
				if drain <= 0 {
					return usageErr("--drain-timeout %s: must be > 0", drain)
				}
				s := drain.Seconds()
				p.DrainTimeout = &s
			}
			// The handover itself takes a moment: the call is given at
			// least 30 s whatever --timeout says.
			ctx, cancel := context.WithTimeout(cmd.Context(), max(o.Timeout, 30*time.Second))
			defer cancel()
			c, release, err := o.dial(ctx)
			if err != nil {
				return err
			}
			defer release()
			r, err := c.Upgrade(ctx, p)
			if err != nil {
				return err
			}
			if o.Output == "json" {
				return printJSON(o.Stdout, r)
			}
			_, err = fmt.Fprintf(o.Stdout, "upgraded: pid %d -> %d, %d connection(s) handed over, %d draining in pid %d\n",
				r.OldPID, r.NewPID, r.HandedOver, r.Draining, r.OldPID)
			return err
		},
	}
	f := cmd.Flags()
	f.StringVar(&binary, "binary", "", "the new daemon executable (default: the running daemon's path, read again from disk)")
	f.DurationVar(&drain, "drain-timeout", 10*time.Minute, "how long the old process keeps its TLS and WebSocket connections")
	return cmd
}
