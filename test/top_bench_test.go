package test

import (
	"context"
	"net"
	"path/filepath"
	"testing"
	"time"

	"github.com/tcpops/tcpops/internal/proc"
	"github.com/tcpops/tcpops/rpc"
)

// topRefresh is what tcpopsctl top asks the daemon each refresh: the
// counters, and the one page of connections on screen (40 rows) in the
// chosen order, with rates and each row's TCP_INFO.
func topRefresh(ctx context.Context, b *testing.B, c clientAPI, sort, match string) {
	if _, err := c.Stats(ctx); err != nil {
		b.Fatal(err)
	}
	r, err := c.List(ctx, rpc.ListParams{Sort: sort, Match: match, Limit: 40, Rates: true, TCPInfo: true})
	if err != nil || len(r.Connections) != 40 || r.Total == nil || *r.Total < 10000 {
		b.Fatalf("list: %d connections, %v", len(r.Connections), err)
	}
}

// BenchmarkTopRefresh10000 measures one refresh of top against the real
// daemon holding 10,000 real connections: the time the caller waits and
// the daemon's CPU time (user + system, from /proc) per refresh.
func BenchmarkTopRefresh10000(b *testing.B) {
	for _, sort := range []string{"conid", "idle", "rate"} {
		b.Run(sort, func(b *testing.B) {
			benchRefresh(b, func(ctx context.Context, c *testing.B, cl clientAPI) { topRefresh(ctx, c, cl, sort, "") })
		})
	}
	// Typed filter words match against each connection's addresses and
	// names: the daemon takes every connection's snapshot.
	b.Run("idle-filtered", func(b *testing.B) {
		benchRefresh(b, func(ctx context.Context, c *testing.B, cl clientAPI) { topRefresh(ctx, c, cl, "idle", "127.0.0.1 tcp") })
	})
	// For comparison, what a view that pulled the whole table would cost.
	b.Run("full-list", func(b *testing.B) {
		benchRefresh(b, func(ctx context.Context, b *testing.B, cl clientAPI) {
			if _, err := cl.Stats(ctx); err != nil {
				b.Fatal(err)
			}
			r, err := cl.List(ctx, rpc.ListParams{})
			if err != nil || len(r.Connections) < 10000 {
				b.Fatalf("list: %d connections, %v", len(r.Connections), err)
			}
		})
	})
}

type clientAPI interface {
	Stats(context.Context) (rpc.Stats, error)
	List(context.Context, rpc.ListParams) (rpc.ListResult, error)
}

func benchRefresh(b *testing.B, refresh func(context.Context, *testing.B, clientAPI)) {
	socket := filepath.Join(b.TempDir(), "s")
	d := startDaemon(b, socket, "--log-level", "error")
	conns := make([]net.Conn, 0, 10000)
	b.Cleanup(func() {
		for _, c := range conns {
			c.Close()
		}
	})
	for range 10000 {
		c, err := net.DialTimeout("tcp", d.addr, 5*time.Second)
		if err != nil {
			b.Fatal(err)
		}
		conns = append(conns, c)
	}
	waitStats(b, socket, func(s rpc.Stats) bool { return s.Connections == 10000 })
	ctx := context.Background()
	c := dialRPC(b, socket)
	refresh(ctx, b, c) // warm up, and the first sample of the rates
	cpu0, err := proc.CPU(d.cmd.Process.Pid)
	if err != nil {
		b.Fatal(err)
	}
	n := 0
	for b.Loop() {
		refresh(ctx, b, c)
		n++
	}
	cpu1, _ := proc.CPU(d.cmd.Process.Pid)
	b.ReportMetric(float64((cpu1-cpu0).Microseconds())/1000/float64(n), "daemon-cpu-ms/op")
}
