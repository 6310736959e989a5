package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"time"

	"github.com/tcpops/tcpops/rpc"
	"github.com/tcpops/tcpops/rpc/client"
)

// bulk opens n connections from source addresses in 127.0.2.0/24, starts
// a closed-event follower, then closes them all by CIDR in one
// tcpops.close call (paced with -rate) and says how long the call took
// and when the follower had the last closed event.
func bulk(args []string) error {
	fs := flag.NewFlagSet("bulk", flag.ExitOnError)
	addr := fs.String("addr", "127.0.0.1:7001", "tcpops listener to connect to")
	sock := fs.String("socket", "", "tcpops control socket")
	n := fs.Int("n", 9000, "connections to open and close")
	sources := fs.Int("sources", 4, "source addresses 127.0.2.1.. to spread over")
	rate := fs.Float64("rate", 0, "rate of the close (changes per second; 0: at once)")
	fs.Parse(args)
	if *sock == "" {
		return errors.New("-socket is needed")
	}
	conns := make([]*net.TCPConn, 0, *n)
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for i := range *n {
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 2, byte(i%*sources+1))}, Timeout: 10 * time.Second}
		c, err := d.Dial("tcp", *addr)
		if err != nil {
			return fmt.Errorf("connection %d: %w", i, err)
		}
		conns = append(conns, c.(*net.TCPConn))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c, err := client.Dial(ctx, *sock)
	if err != nil {
		return err
	}
	defer c.Close()
	sel := &rpc.Selector{Remote: "127.0.2.0/24", Direction: "in"}
	for {
		r, err := c.Bulk(ctx, rpc.MethodClose, rpc.CloseParams{BulkParams: rpc.BulkParams{Select: sel, DryRun: true}})
		if err != nil {
			return err
		}
		if r.Matched == *n {
			break
		}
		if ctx.Err() != nil {
			return fmt.Errorf("%d of %d connections tabled", r.Matched, *n)
		}
		time.Sleep(50 * time.Millisecond)
	}
	f, err := startFollower(*sock)
	if err != nil {
		return err
	}
	time.Sleep(200 * time.Millisecond) // the follower's subscription is in place
	p := rpc.CloseParams{BulkParams: rpc.BulkParams{Select: sel}}
	if *rate > 0 {
		p.Rate = rate
	}
	start := time.Now()
	r, err := c.Bulk(ctx, rpc.MethodClose, p)
	took := time.Since(start)
	if err != nil {
		return err
	}
	got, last := f.wait(int64(*n), 60*time.Second)
	fmt.Printf("bulk close by CIDR, %d connections, rate %v: call answered in %s (matched %d, applied %d, failed %d); follower got %d of %d closed events, the last %s after the call began, %d lost\n",
		*n, *rate, took.Round(time.Millisecond), r.Matched, len(r.Applied), len(r.Failed), got, *n, last.Sub(start).Round(time.Millisecond), f.lost.Load())
	return nil
}
