package conn

import (
	"context"
	"fmt"
	"net/netip"
	"testing"
)

func benchSpec() Spec {
	return Spec{Proto: "tcp", Direction: DirIn, Remote: netip.MustParseAddrPort("10.0.0.1:5060"), State: StateOK,
		Close: func(*Conn, bool) error { return nil }}
}

// BenchmarkAddClose is a connection's whole life in the table (add,
// lifetime timer, close with its event) from every P at once.
func BenchmarkAddClose(b *testing.B) {
	t := NewTable(Config{Lifetime: 120e9})
	b.RunParallel(func(pb *testing.PB) {
		s := benchSpec()
		for pb.Next() {
			c, err := t.Add(s)
			if err != nil {
				b.Fatal(err)
			}
			c.Close(ReasonEOF, nil)
		}
	})
}

// BenchmarkGet looks conids up in a table of 10,000 from every P at once.
func BenchmarkGet(b *testing.B) {
	t := NewTable(Config{})
	for range 10000 {
		t.Add(benchSpec())
	}
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		id := uint64(1)
		for pb.Next() {
			if _, ok := t.Get(id); !ok {
				b.Fatal("missing")
			}
			id = id%10000 + 1
		}
	})
	t.CloseAll(ReasonShutdown)
}

// BenchmarkTouch is the per-read bookkeeping of the data path.
func BenchmarkTouch(b *testing.B) {
	t := NewTable(Config{Lifetime: 120e9})
	c, _ := t.Add(benchSpec())
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			c.Touch(100, 0)
		}
	})
	c.Close(ReasonEOF, nil)
}

// BenchmarkPublish publishes closed events with 0, 1 and 16 followers
// reading the ring.
func BenchmarkPublish(b *testing.B) {
	for _, subs := range []int{0, 1, 16} {
		b.Run(fmt.Sprintf("followers=%d", subs), func(b *testing.B) {
			r := NewEvents(65536)
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan struct{}, subs)
			for range subs {
				s := r.Subscribe(0)
				go func() {
					defer func() { done <- struct{}{} }()
					for {
						if _, _, err := s.Next(ctx, 256); err != nil {
							return
						}
					}
				}()
			}
			e := Event{Reason: ReasonEOF, Proto: "tcp"}
			b.ResetTimer()
			for b.Loop() {
				r.Publish(e)
			}
			b.StopTimer()
			cancel()
			for range subs {
				<-done
			}
		})
	}
}

// BenchmarkList10000 is the table's part of tcpops.list for 10,000.
func BenchmarkList10000(b *testing.B) {
	t := NewTable(Config{Lifetime: 120e9})
	for range 10000 {
		t.Add(benchSpec())
	}
	for b.Loop() {
		if infos, _ := t.List(Filter{}); len(infos) != 10000 {
			b.Fatal(len(infos))
		}
	}
	t.CloseAll(ReasonShutdown)
}
