package conn

import (
	"net/netip"
	"testing"
	"time"
	"unsafe"
)

// TestRecordRoundTrip: what the ring keeps compactly comes back as it was
// published, rare fields included, and what an overwritten record kept
// beside the ring is given back.
func TestRecordRoundTrip(t *testing.T) {
	if n := unsafe.Sizeof(record{}); n > 96 {
		t.Fatalf("a record is %d bytes", n)
	}
	now := time.Unix(1764500000, 123456789)
	evs := []Event{
		{Time: now, Reason: ReasonEOF, ConnID: 1, Peer: 2, Proto: ProtoTCP, Direction: DirIn, Listener: "sip",
			Local: "127.0.0.1:5060", Remote: "10.1.2.3:40000", Duration: time.Second, BytesIn: 1 << 40, BytesOut: 3},
		{Time: now, Reason: ReasonReset, ConnID: 3, Proto: ProtoWSS, Direction: DirOut, Listener: "wss://[::]:443/",
			Local: "[2001:db8::1]:443", Remote: "[::ffff:192.0.2.1]:5", Via: "192.0.2.9:1234",
			Error: "read: connection reset by peer", WSCloseCode: 1006, WSCloseReason: "gone", Reset: true},
		{Time: now, Reason: "future", ConnID: 4, Proto: "quic", Local: "[fe80::1%eth0]:80", Remote: "not an address"},
		{Time: now, ConnID: 5},
	}
	r := NewEvents(3)
	for _, e := range evs {
		r.Publish(e)
	}
	got, last := r.Since(0)
	if last != 4 || len(got) != 3 {
		t.Fatalf("since 0: %d events, last %d", len(got), last)
	}
	for i, g := range got {
		w := evs[i+1]
		w.Seq = uint64(i + 2)
		if !g.Time.Equal(w.Time) {
			t.Errorf("seq %d: time %v, want %v", g.Seq, g.Time, w.Time)
		}
		g.Time = w.Time
		if g != w {
			t.Errorf("seq %d:\n got %+v\nwant %+v", g.Seq, g, w)
		}
	}
	// Three more plain events overwrite the ring: nothing stays beside it.
	for range 3 {
		r.Publish(Event{Time: now, Reason: ReasonEOF, Local: "127.0.0.1:1", Remote: "127.0.0.1:2"})
	}
	if len(r.extras) != 0 {
		t.Fatalf("%d extras kept for overwritten events", len(r.extras))
	}
	// A connection's addresses reach the ring without strings.
	tb := NewTable(Config{})
	c, err := tb.Add(Spec{Proto: ProtoTCP, Direction: DirIn, Listener: "l", State: StateAccepting,
		Local: netip.MustParseAddrPort("127.0.0.1:7"), Remote: netip.MustParseAddrPort("[::1]:9")})
	if err != nil {
		t.Fatal(err)
	}
	c.Close(ReasonLocal, nil)
	es, _ := tb.Events().Since(0)
	if len(es) != 1 || es[0].Local != "127.0.0.1:7" || es[0].Remote != "[::1]:9" || es[0].Listener != "l" || es[0].Reason != ReasonLocal {
		t.Fatalf("closed event %+v", es)
	}
}

// BenchmarkFullRing is the memory a full ring holds (65,536 events).
func BenchmarkFullRing(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		r := NewEvents(65536)
		for i := range 65536 {
			r.publish(&Event{Time: time.Now(), Reason: ReasonEOF, ConnID: uint64(i), Proto: ProtoTCP, Direction: DirIn, Listener: "tcp://127.0.0.1:5060"},
				evAddrs{local: netip.MustParseAddrPort("127.0.0.1:5060"), remote: netip.AddrPortFrom(netip.MustParseAddr("10.0.0.1"), uint16(i))})
		}
	}
}
