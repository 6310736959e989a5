package cli

import (
	"context"
	"fmt"
	"os/signal"
	"slices"
	"strconv"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/tcpops/tcpops/fleet"
	"github.com/tcpops/tcpops/rpc"
)

// fleetEvents prints the events of the fleet's JetStream stream.
func (o *Options) fleetEvents(cmd *cobra.Command, p rpc.EventsParams, since string, follow bool) error {
	eo := fleet.EventsOptions{Hosts: o.Hosts, Follow: follow}
	if since != "" {
		if n, err := strconv.ParseUint(since, 10, 64); err == nil {
			eo.StartSeq = max(n, 1)
		} else if t, err := time.Parse(time.RFC3339Nano, since); err == nil {
			eo.StartTime = t
		} else if d, err := time.ParseDuration(since); err == nil && d > 0 {
			eo.StartTime = time.Now().Add(-d)
		} else {
			return usageErr("--since %q: want a stream sequence, a time (2026-11-26T10:00:00Z) or a duration ago (10m)", since)
		}
	}
	if p.ConnID != 0 && len(o.Hosts) != 1 {
		return usageErr("--conid: conids are per host; add --host")
	}
	ctx := cmd.Context()
	if follow {
		var stop context.CancelFunc
		ctx, stop = signal.NotifyContext(ctx, syscall.SIGINT, syscall.SIGTERM)
		defer stop()
	}
	dctx, cancel := context.WithTimeout(ctx, o.Timeout)
	nopts := o.natsOptions()
	nopts.Reconnect = follow
	fc, err := fleet.Connect(dctx, nopts)
	cancel()
	if err != nil {
		return err
	}
	defer fc.Close()
	return fc.Events(ctx, eo, func(r *fleet.StreamRecord) error {
		if r.Lost() {
			fmt.Fprintf(o.Stderr, "tcpopsctl: host %s: events %d..%d lost: its ring overwrote them before NATS took them\n", r.Host, r.FromSeq, r.ToSeq)
			if o.Output == "json" {
				return o.writeRecord(r)
			}
			return nil
		}
		if (p.ConnID != 0 && r.ConnID != p.ConnID) || (len(p.Reason) > 0 && !slices.Contains(p.Reason, r.Reason)) {
			return nil
		}
		if o.Output == "json" {
			return o.writeRecord(r)
		}
		return writeEvent(o.Stdout, r.Host, r.Event)
	})
}

// writeRecord prints a record's JSON as stored, with its stream sequence.
func (o *Options) writeRecord(r *fleet.StreamRecord) error {
	b := make([]byte, 0, len(r.Data)+32)
	b = append(b, `{"stream_seq":`...)
	b = strconv.AppendUint(b, r.StreamSeq, 10)
	if len(r.Data) > 2 {
		b = append(b, ',')
	}
	b = append(b, r.Data[1:]...)
	b = append(b, '\n')
	_, err := o.Stdout.Write(b)
	return err
}
