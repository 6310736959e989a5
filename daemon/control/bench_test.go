package control_test

import (
	"context"
	"net/netip"
	"testing"

	"github.com/tcpops/tcpops/conn"
	"github.com/tcpops/tcpops/daemon/daemontest"
	"github.com/tcpops/tcpops/rpc"
	"github.com/tcpops/tcpops/rpc/client"
)

// BenchmarkRoundTrip is one tcpops.state call over the Unix socket.
func BenchmarkRoundTrip(b *testing.B) {
	d := daemontest.Start(b)
	_, id := d.Dial(b, 0)
	c := d.Client(b)
	ctx := context.Background()
	for b.Loop() {
		if _, err := c.State(ctx, id); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkCalls16Clients runs tcpops.state from 16 clients at once;
// ns/op is the inverse of the throughput.
func BenchmarkCalls16Clients(b *testing.B) {
	d := daemontest.Start(b)
	_, id := d.Dial(b, 0)
	clients := make(chan *client.Client, 16)
	for range 16 {
		clients <- d.Client(b)
	}
	b.SetParallelism(8) // 2 cores x 8 = 16 goroutines
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		c := <-clients
		for pb.Next() {
			if _, err := c.State(context.Background(), id); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// fill puts n connections in the table without sockets: what list costs
// is the table, the snapshot and the JSON, not the kernel.
func fill(b *testing.B, t *conn.Table, n int) {
	for i := range n {
		ap := netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}), 5060)
		if _, err := t.Add(conn.Spec{Proto: "tcp", Direction: conn.DirIn, Listener: "tcp://127.0.0.1:5060",
			Local: netip.MustParseAddrPort("127.0.0.1:5060"), Remote: ap, State: conn.StateOK,
			Close: func(*conn.Conn, bool) error { return nil }}); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkList10000 is a full tcpops.list of 10,000 connections, round
// trip: server snapshot and encoding, the socket, client decoding.
func BenchmarkList10000(b *testing.B) {
	d := daemontest.Start(b, "--listen", "tcp://127.0.0.1:0")
	fill(b, d.Table, 10000)
	c := d.Client(b)
	for b.Loop() {
		r, err := c.List(context.Background(), rpc.ListParams{})
		if err != nil || len(r.Connections) != 10000 {
			b.Fatal(len(r.Connections), err)
		}
	}
}

// BenchmarkTopRefresh10000 is what one refresh of tcpopsctl top asks of
// a daemon holding 10,000 connections: tcpops.stats, then one page of 40
// in an order, with rates and TCP_INFO (these have no sockets: the
// kernel's part is in test.BenchmarkTopRefresh10000, against the real
// binary).
func BenchmarkTopRefresh10000(b *testing.B) {
	d := daemontest.Start(b, "--listen", "tcp://127.0.0.1:0")
	fill(b, d.Table, 10000)
	c := d.Client(b)
	ctx := context.Background()
	for _, sort := range []string{"conid", "idle", "rate"} {
		b.Run(sort, func(b *testing.B) {
			for b.Loop() {
				if _, err := c.Stats(ctx); err != nil {
					b.Fatal(err)
				}
				r, err := c.List(ctx, rpc.ListParams{Sort: sort, Limit: 40, Rates: true, TCPInfo: true})
				if err != nil || len(r.Connections) != 40 {
					b.Fatal(len(r.Connections), err)
				}
			}
		})
	}
	b.Run("stats", func(b *testing.B) {
		for b.Loop() {
			if _, err := c.Stats(ctx); err != nil {
				b.Fatal(err)
			}
		}
	})
}
