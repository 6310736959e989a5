package conn

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/tcpops/tcpops/sock"
)

// closes records what the table asked a transport to do.
type closes struct {
	mu     sync.Mutex
	resets map[uint64]bool
}

func (c *closes) closer(conn *Conn, reset bool) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.resets == nil {
		c.resets = map[uint64]bool{}
	}
	c.resets[conn.ID] = reset
	return nil
}

func (c *closes) closed(id uint64) (reset, ok bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	reset, ok = c.resets[id]
	return
}

func addIn(t *testing.T, tb *Table, cl *closes, remote string) *Conn {
	t.Helper()
	c, err := tb.Add(Spec{Proto: "tcp", Direction: DirIn, Listener: "tcp://127.0.0.1:5060",
		Remote: netip.MustParseAddrPort(remote), State: StateAccepting, Close: cl.closer})
	if err != nil {
		t.Fatalf("Add: %v", err)
	}
	return c
}

func TestLifecycle(t *testing.T) {
	tb := NewTable(Config{})
	cl := &closes{}
	c := addIn(t, tb, cl, "127.0.0.1:40000")
	if c.ID != 1 {
		t.Fatalf("first conid = %d, want 1", c.ID)
	}
	if got := c.State(); got != StateAccepting {
		t.Fatalf("state after accept = %v, want accepting", got)
	}
	c.Touch(0, 10)
	if got := c.State(); got != StateAccepting {
		t.Fatalf("state after a write only = %v, want accepting (2 until the first byte is read)", got)
	}
	c.Touch(5, 0)
	if got := c.State(); got != StateOK {
		t.Fatalf("state after first read = %v, want ok", got)
	}
	if !c.Close(ReasonEOF, nil) {
		t.Fatal("first Close returned false")
	}
	if c.Close(ReasonLocal, nil) {
		t.Fatal("second Close returned true; the first reason must win")
	}
	if _, ok := tb.Get(1); ok {
		t.Fatal("closed connection still in table")
	}
	st, r := tb.State(1)
	if st != StateNotFound || r != ReasonEOF {
		t.Fatalf("State(1) = %v, %q; want not_found, eof", st, r)
	}
	if reset, ok := cl.closed(1); !ok || reset {
		t.Fatalf("transport closed=%v reset=%v; want closed with FIN", ok, reset)
	}
	evs, last := tb.Events().Since(0)
	if len(evs) != 1 || last != 1 {
		t.Fatalf("events = %d (last %d), want 1", len(evs), last)
	}
	e := evs[0]
	if e.Seq != 1 || e.Reason != ReasonEOF || e.Name() != "tcp:closed" || e.ConnID != 1 || e.BytesIn != 5 || e.BytesOut != 10 || e.Remote != "127.0.0.1:40000" {
		t.Fatalf("event = %+v", e)
	}
	d := addIn(t, tb, cl, "127.0.0.1:40001")
	if d.ID != 2 {
		t.Fatalf("second conid = %d, want 2 (never reused)", d.ID)
	}
	d.Reset(ReasonLocal)
	if reset, _ := cl.closed(2); !reset {
		t.Fatal("Reset did not ask the transport for an RST")
	}
	s := tb.Stats()
	if s.Closed != 2 || s.ByReason[ReasonEOF] != 1 || s.ByReason[ReasonLocal] != 1 || s.Accepted != 2 || s.Conns != 0 {
		t.Fatalf("stats = %+v", s)
	}
}

func TestReasonEvents(t *testing.T) {
	tests := []struct {
		r     Reason
		event string
		state State
	}{
		{ReasonEOF, "tcp:closed", StateEOF},
		{ReasonReset, "tcp:reset", StateError},
		{ReasonTimeout, "tcp:timeout", StateError},
		{ReasonLifetime, "tcp:timeout", StateBad},
		{ReasonLocal, "tcp:closed", StateBad},
		{ReasonPeer, "tcp:closed", StateBad},
		{ReasonShutdown, "tcp:closed", StateBad},
		{ReasonError, "tcp:closed", StateError},
	}
	for _, tt := range tests {
		t.Run(string(tt.r), func(t *testing.T) {
			if got := tt.r.Event(); got != tt.event {
				t.Errorf("event = %q, want %q", got, tt.event)
			}
			if got := tt.r.teardown(); got != tt.state {
				t.Errorf("teardown state = %v, want %v", got, tt.state)
			}
		})
	}
}

func TestLifetime(t *testing.T) {
	tests := []struct {
		name string
		// at is when (from Add) to do something; nil does nothing.
		steps     []func(c *Conn)
		at        []time.Duration
		wantAlive time.Duration // still in the table just before this
		wantGone  time.Duration // and gone exactly at this
	}{
		{name: "default expires", wantAlive: 10*time.Second - time.Millisecond, wantGone: 10 * time.Second},
		{name: "read refreshes", at: []time.Duration{4 * time.Second},
			steps:     []func(*Conn){func(c *Conn) { c.Touch(1, 0) }},
			wantAlive: 14*time.Second - time.Millisecond, wantGone: 14 * time.Second},
		{name: "write refreshes", at: []time.Duration{6 * time.Second},
			steps:     []func(*Conn){func(c *Conn) { c.Touch(0, 1) }},
			wantAlive: 16*time.Second - time.Millisecond, wantGone: 16 * time.Second},
		{name: "shorten acts at once", at: []time.Duration{5 * time.Second},
			steps:     []func(*Conn){func(c *Conn) { c.SetLifetime(2 * time.Second) }},
			wantAlive: 7*time.Second - time.Millisecond, wantGone: 7 * time.Second},
		{name: "lengthen", at: []time.Duration{time.Second},
			steps:     []func(*Conn){func(c *Conn) { c.SetLifetime(60 * time.Second) }},
			wantAlive: 61*time.Second - time.Millisecond, wantGone: 61 * time.Second},
		{name: "set then traffic", at: []time.Duration{time.Second, 3 * time.Second},
			steps:     []func(*Conn){func(c *Conn) { c.SetLifetime(5 * time.Second) }, func(c *Conn) { c.Touch(1, 0) }},
			wantAlive: 8*time.Second - time.Millisecond, wantGone: 8 * time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				tb := NewTable(Config{Lifetime: 10 * time.Second})
				c := addIn(t, tb, &closes{}, "127.0.0.1:1")
				start := time.Now()
				sleepUntil := func(d time.Duration) {
					time.Sleep(d - time.Since(start))
					synctest.Wait()
				}
				for i, at := range tt.at {
					sleepUntil(at)
					tt.steps[i](c)
				}
				sleepUntil(tt.wantAlive)
				if _, ok := tb.Get(c.ID); !ok {
					t.Fatalf("closed before %v", tt.wantAlive)
				}
				sleepUntil(tt.wantGone)
				if _, ok := tb.Get(c.ID); ok {
					t.Fatalf("still open at %v", tt.wantGone)
				}
				if st, r := tb.State(c.ID); st != StateNotFound || r != ReasonLifetime {
					t.Fatalf("state = %v %q, want not_found lifetime", st, r)
				}
				evs, _ := tb.Events().Since(0)
				if len(evs) != 1 || evs[0].Name() != "tcp:timeout" {
					t.Fatalf("events = %+v, want one tcp:timeout", evs)
				}
			})
		})
	}
}

func TestLifetimeZeroAndNegative(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		tb := NewTable(Config{Lifetime: 10 * time.Second})
		c := addIn(t, tb, &closes{}, "127.0.0.1:1")
		if _, err := c.SetLifetime(-time.Second); !errors.Is(err, ErrBadLifetime) {
			t.Fatalf("SetLifetime(-1s) err = %v, want ErrBadLifetime", err)
		}
		if left, err := c.SetLifetime(0); err != nil || left != 0 {
			t.Fatalf("SetLifetime(0) = %v, %v", left, err)
		}
		time.Sleep(time.Hour)
		synctest.Wait()
		if _, ok := tb.Get(c.ID); !ok {
			t.Fatal("lifetime 0 still expired the connection")
		}
		lt, left := c.Lifetime()
		if lt != 0 || left != 0 {
			t.Fatalf("Lifetime() = %v, %v; want 0, 0", lt, left)
		}
		c.Close(ReasonLocal, nil)
	})
}

func TestModes(t *testing.T) {
	tests := []struct {
		mode   Mode
		enable []bool // per connection, nil: leave default
		want   []uint64
	}{
		{ModeAll, []bool{false, false, false}, []uint64{1, 2, 3}},
		{ModeManual, []bool{false, true, false}, []uint64{2}},
		{ModeOff, []bool{false, false, false}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.mode.String(), func(t *testing.T) {
			tb := NewTable(Config{ClosedEvent: tt.mode})
			var cs []*Conn
			for i := range tt.enable {
				c := addIn(t, tb, &closes{}, "127.0.0.1:1")
				if tt.enable[i] {
					if err := c.SetClosedEvent(true); err != nil {
						t.Fatal(err)
					}
				}
				cs = append(cs, c)
			}
			if tt.mode == ModeOff {
				if err := cs[0].SetClosedEvent(true); !errors.Is(err, ErrEventsOff) {
					t.Fatalf("SetClosedEvent in off mode: err = %v, want ErrEventsOff", err)
				}
			}
			for _, c := range cs {
				c.Close(ReasonEOF, nil)
			}
			evs, _ := tb.Events().Since(0)
			var got []uint64
			for i, e := range evs {
				if e.Seq != uint64(i+1) {
					t.Fatalf("seq %d at index %d: not gap-free", e.Seq, i)
				}
				got = append(got, e.ConnID)
			}
			if len(got) != len(tt.want) {
				t.Fatalf("events for %v, want %v", got, tt.want)
			}
			for i := range got {
				if got[i] != tt.want[i] {
					t.Fatalf("events for %v, want %v", got, tt.want)
				}
			}
			if s := tb.Stats(); s.Closed != 3 {
				t.Fatalf("closed counter = %d, want 3 whatever the mode", s.Closed)
			}
		})
	}
}

func TestSubscriberLag(t *testing.T) {
	r := NewEvents(4)
	for i := range 10 {
		r.Publish(Event{ConnID: uint64(i + 1)})
	}
	sub := r.Subscribe(0)
	ctx := t.Context()
	evs, lost, err := sub.Next(ctx, 100)
	if err != nil || lost == nil || lost.From != 1 || lost.To != 6 || evs != nil {
		t.Fatalf("Next = %v, %+v, %v; want lost 1..6", evs, lost, err)
	}
	evs, lost, err = sub.Next(ctx, 100)
	if err != nil || lost != nil || len(evs) != 4 || evs[0].Seq != 7 || evs[3].Seq != 10 {
		t.Fatalf("Next = %+v, %+v, %v; want seqs 7..10", evs, lost, err)
	}
	if r.Dropped() != 6 {
		t.Fatalf("dropped = %d, want 6", r.Dropped())
	}
	// Lagging again mid-stream.
	for range 9 {
		r.Publish(Event{})
	}
	_, lost, _ = sub.Next(ctx, 100)
	if lost == nil || lost.From != 11 || lost.To != 15 {
		t.Fatalf("second lag = %+v, want lost 11..15", lost)
	}
	evs, _, _ = sub.Next(ctx, 2)
	if len(evs) != 2 || evs[0].Seq != 16 {
		t.Fatalf("after lag got %+v, want 16, 17", evs)
	}
}

func TestSubscriberFollowAndClose(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := NewEvents(16)
		sub := r.Subscribe(0)
		got := make(chan uint64, 10)
		done := make(chan error, 1)
		go func() {
			for {
				evs, _, err := sub.Next(context.Background(), 10)
				if err != nil {
					done <- err
					return
				}
				for _, e := range evs {
					got <- e.Seq
				}
			}
		}()
		synctest.Wait()
		if len(got) != 0 {
			t.Fatal("event before any publish")
		}
		r.Publish(Event{})
		r.Publish(Event{})
		synctest.Wait()
		r.Publish(Event{})
		r.Close()
		if err := <-done; !errors.Is(err, ErrEventsClosed) {
			t.Fatalf("err = %v, want ErrEventsClosed", err)
		}
		close(got)
		var seqs []uint64
		for s := range got {
			seqs = append(seqs, s)
		}
		if len(seqs) != 3 || seqs[2] != 3 {
			t.Fatalf("seqs = %v, want 1 2 3 delivered before the close", seqs)
		}
	})
}

func TestSubscriberContext(t *testing.T) {
	r := NewEvents(4)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, _, err := r.Subscribe(0).Next(ctx, 1); !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
}

func TestPair(t *testing.T) {
	tests := []struct {
		name       string
		first      Reason
		bSawEOF    bool
		shutdown   bool
		wantB      Reason
		wantEvents int
	}{
		{name: "reset closes partner with peer", first: ReasonReset, wantB: ReasonPeer},
		{name: "partner that sent FIN keeps eof", first: ReasonEOF, bSawEOF: true, wantB: ReasonEOF},
		{name: "shutdown both", first: ReasonShutdown, shutdown: true, wantB: ReasonShutdown},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tb := NewTable(Config{})
			cl := &closes{}
			a := addIn(t, tb, cl, "127.0.0.1:1")
			b, err := tb.Add(Spec{Proto: "tcp", Direction: DirOut, State: StateConnecting, Close: cl.closer})
			if err != nil {
				t.Fatal(err)
			}
			Pair(a, b)
			if tt.bSawEOF {
				b.SawEOF()
				if b.State() != StateEOF {
					t.Fatalf("state after FIN = %v, want eof", b.State())
				}
			}
			if tt.shutdown {
				tb.Shutdown(context.Background())
			} else {
				a.Close(tt.first, nil)
			}
			if _, r := tb.State(b.ID); r != tt.wantB {
				t.Fatalf("partner reason = %q, want %q", r, tt.wantB)
			}
			evs, _ := tb.Events().Since(0)
			if len(evs) != 2 || evs[0].ConnID != a.ID || evs[0].Peer != b.ID || evs[1].Peer != a.ID {
				t.Fatalf("events = %+v", evs)
			}
			if tb.Len() != 0 {
				t.Fatalf("table has %d left", tb.Len())
			}
		})
	}
}

func TestClosedWhileDialling(t *testing.T) {
	tb := NewTable(Config{})
	cl := &closes{}
	b, _ := tb.Add(Spec{Proto: "tcp", Direction: DirOut, State: StateConnecting, Close: cl.closer})
	b.Close(ReasonLocal, nil)
	late := &closes{}
	b.Established(nil, late.closer, StateOK)
	if _, ok := late.closed(b.ID); !ok {
		t.Fatal("a transport established after Close was not closed")
	}
	if b.State() == StateOK {
		t.Fatal("closed connection became ok")
	}
}

func TestLimits(t *testing.T) {
	tb := NewTable(Config{MaxConns: 3, MaxConnsPerIP: 2})
	cl := &closes{}
	a := addIn(t, tb, cl, "127.0.0.1:1")
	addIn(t, tb, cl, "127.0.0.1:2")
	_, err := tb.Add(Spec{Direction: DirIn, Remote: netip.MustParseAddrPort("127.0.0.1:3"), Close: cl.closer})
	var le *LimitError
	if !errors.As(err, &le) || le.Limit != "max-conns-per-ip" {
		t.Fatalf("third from one IP: err = %v, want max-conns-per-ip", err)
	}
	addIn(t, tb, cl, "127.0.0.2:1")
	_, err = tb.Add(Spec{Direction: DirIn, Remote: netip.MustParseAddrPort("127.0.0.3:1"), Close: cl.closer})
	if !errors.As(err, &le) || le.Limit != "max-conns" {
		t.Fatalf("fourth: err = %v, want max-conns", err)
	}
	// Outbound legs do not count against inbound limits.
	if _, err := tb.Add(Spec{Direction: DirOut, Close: cl.closer}); err != nil {
		t.Fatalf("outbound leg refused: %v", err)
	}
	a.Close(ReasonEOF, nil)
	addIn(t, tb, cl, "127.0.0.3:1")
	if s := tb.Stats(); s.Rejected != 2 {
		t.Fatalf("rejected = %d, want 2", s.Rejected)
	}
}

func TestList(t *testing.T) {
	tb := NewTable(Config{})
	cl := &closes{}
	for i := range 10 {
		addIn(t, tb, cl, netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 0, byte(i % 2), 1}), uint16(1000+i)).String())
	}
	c3, _ := tb.Get(3)
	c3.Touch(1, 0)
	tests := []struct {
		name     string
		f        Filter
		wantIDs  []uint64
		wantNext uint64
	}{
		{"all", Filter{}, []uint64{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}, 0},
		{"page", Filter{Limit: 3}, []uint64{1, 2, 3}, 3},
		{"next page", Filter{Limit: 3, After: 3}, []uint64{4, 5, 6}, 6},
		{"last page", Filter{Limit: 4, After: 6}, []uint64{7, 8, 9, 10}, 0},
		{"state", Filter{State: StateOK}, []uint64{3}, 0},
		{"cidr", Filter{Remote: netip.MustParsePrefix("10.0.1.0/24")}, []uint64{2, 4, 6, 8, 10}, 0},
		{"ip port", Filter{Remote: netip.MustParsePrefix("10.0.0.1/32"), Port: 1004}, []uint64{5}, 0},
		{"proto none", Filter{Proto: "ws"}, nil, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			infos, next := tb.List(tt.f)
			var ids []uint64
			for _, in := range infos {
				ids = append(ids, in.ID)
			}
			if len(ids) != len(tt.wantIDs) || next != tt.wantNext {
				t.Fatalf("got %v next %d, want %v next %d", ids, next, tt.wantIDs, tt.wantNext)
			}
			for i := range ids {
				if ids[i] != tt.wantIDs[i] {
					t.Fatalf("got %v, want %v", ids, tt.wantIDs)
				}
			}
		})
	}
}

func TestParseRemote(t *testing.T) {
	for _, s := range []string{"10.0.0.1", "10.0.0.1:5060", "10.0.0.0/8", "::1", "[::1]:5060"} {
		if _, _, err := ParseRemote(s); err != nil {
			t.Errorf("ParseRemote(%q): %v", s, err)
		}
	}
	for _, s := range []string{"", "host", "10.0.0.1/33", "10.0.0.1:99999"} {
		if _, _, err := ParseRemote(s); err == nil {
			t.Errorf("ParseRemote(%q) accepted", s)
		}
	}
}

// TestRingChunks wraps a ring of several chunks, the last one short: every
// kept event is where its seq says, and a late subscriber hears exactly
// what it lost.
func TestRingChunks(t *testing.T) {
	const size = 2*ringChunk + 452
	r := NewEvents(size)
	for i := range 3 * size {
		r.Publish(Event{ConnID: uint64(i + 1)})
	}
	got, last := r.Since(0)
	if len(got) != size || last != 3*size {
		t.Fatalf("Since(0): %d events, last %d; want %d, %d", len(got), last, size, 3*size)
	}
	for i, e := range got {
		if want := uint64(2*size + i + 1); e.Seq != want || e.ConnID != want {
			t.Fatalf("event %d: seq %d conn %d, want %d", i, e.Seq, e.ConnID, want)
		}
	}
	sub := r.Subscribe(10)
	_, lost, _ := sub.Next(context.Background(), 10)
	if lost == nil || lost.From != 11 || lost.To != 2*size {
		t.Fatalf("lost = %+v, want 11..%d", lost, 2*size)
	}
	evs, _, _ := sub.Next(context.Background(), 10)
	if len(evs) != 10 || evs[0].Seq != 2*size+1 {
		t.Fatalf("after the loss: %d events from %d", len(evs), evs[0].Seq)
	}
}

// TestStateDuringClose polls State while connections close on other
// goroutines: a conid is in the table or among the recently closed with
// its reason, never neither (what `tcpopsctl wait closed` relies on).
func TestStateDuringClose(t *testing.T) {
	tb := NewTable(Config{})
	cl := &closes{}
	const n = 2000
	conns := make([]*Conn, n)
	for i := range conns {
		conns[i] = addIn(t, tb, cl, fmt.Sprintf("10.0.%d.%d:5060", i/250, i%250+1))
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for _, c := range conns {
			c.Close(ReasonEOF, nil)
		}
	}()
	for polling := true; polling; {
		select {
		case <-done:
			polling = false
		default:
		}
		for _, c := range conns {
			if st, r := tb.State(c.ID); st == StateNotFound && r == "" {
				t.Fatalf("conid %d: not in the table and no reason remembered", c.ID)
			}
		}
	}
}

// TestAddKeepalive: a connection added with a keepalive is visible only
// with it set and read back; one whose socket refuses it is refused with
// the error, after its closed event with reason error and the socket error.
func TestAddKeepalive(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	c1, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c1.Close()
	tb := NewTable(Config{})
	cl := &closes{}
	k := sock.KeepaliveConfig{Enable: true, Idle: 37, Count: 4, Interval: 6, UserTimeoutMs: -1}
	c, err := tb.Add(Spec{Proto: "tcp", Direction: DirOut, TCP: c1.(*net.TCPConn), Keepalive: &k, Close: cl.closer})
	if err != nil {
		t.Fatal(err)
	}
	if in := c.Info(); in.Keepalive == nil || in.Keepalive.Idle != 37 || in.Keepalive.Count != 4 || !in.Keepalive.Enabled {
		t.Fatalf("Info().Keepalive = %+v right after Add, want 37,4,6 read back", in.Keepalive)
	}
	if got, _ := sock.GetKeepalive(c1.(*net.TCPConn)); got.Idle != 37 {
		t.Fatalf("kernel holds %+v", got)
	}
	c2, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	c2.Close() // its options cannot be set any more
	sub := tb.Events().Subscribe(0)
	bad, err := tb.Add(Spec{Proto: "tcp", Direction: DirOut, TCP: c2.(*net.TCPConn), Keepalive: &k, Close: cl.closer})
	if err == nil || !strings.Contains(err.Error(), "keepalive") || bad != nil {
		t.Fatalf("Add of a socket that refuses keepalive = %v, %v; want the keepalive error", bad, err)
	}
	if st, r := tb.State(c.ID + 1); st != StateNotFound || r != ReasonError {
		t.Fatalf("state %v %q, want closed with reason error", st, r)
	}
	if _, ok := cl.closed(c.ID + 1); !ok {
		t.Fatal("the refused socket's transport was not closed")
	}
	evs, _, err := sub.Next(context.Background(), 1)
	if err != nil || len(evs) != 1 || evs[0].ConnID != c.ID+1 || !strings.Contains(evs[0].Error, "keepalive") {
		t.Fatalf("event %+v %v, want the keepalive error", evs, err)
	}
}

func TestAddAfterShutdown(t *testing.T) {
	tb := NewTable(Config{})
	cl := &closes{}
	early := addIn(t, tb, cl, "127.0.0.1:1")
	if n, err := tb.Shutdown(t.Context()); n != 1 || err != nil {
		t.Fatalf("Shutdown = %d, %v; want 1, nil", n, err)
	}
	// A client the kernel accepted: tabled, closed with its event.
	c, err := tb.Add(Spec{Proto: ProtoTCP, Direction: DirIn, Remote: netip.MustParseAddrPort("127.0.0.1:2"), State: StateAccepting, Close: cl.closer})
	if !errors.Is(err, ErrShutdown) || c != nil {
		t.Fatalf("inbound Add after shutdown = %v, %v; want nil, ErrShutdown", c, err)
	}
	// A backend leg dialled late: its transport closed, no conid, no event
	// (its client leg had its own already).
	var outClosed bool
	c, err = tb.Add(Spec{Proto: ProtoTCP, Direction: DirOut, State: StateConnecting, Close: func(*Conn, bool) error { outClosed = true; return nil }})
	if !errors.Is(err, ErrShutdown) || c != nil || !outClosed {
		t.Fatalf("outbound Add after shutdown = %v, %v (transport closed: %v); want nil, ErrShutdown, closed", c, err, outClosed)
	}
	evs, _ := tb.Events().Since(0)
	if len(evs) != 2 {
		t.Fatalf("%d events, want 2: %+v", len(evs), evs)
	}
	for _, e := range evs {
		if e.Reason != ReasonShutdown || e.Direction != DirIn {
			t.Fatalf("event of conid %d: %v reason %q, want in, shutdown", e.ConnID, e.Direction, e.Reason)
		}
		if _, ok := cl.closed(e.ConnID); !ok {
			t.Fatalf("transport of conid %d not closed", e.ConnID)
		}
	}
	if early.ID != 1 || tb.Len() != 0 || tb.open.Load() != 0 {
		t.Fatalf("table has %d left, %d open", tb.Len(), tb.open.Load())
	}
}

func TestPairRefusesAClosingLeg(t *testing.T) {
	for _, closeFirst := range []string{"in", "out"} {
		t.Run(closeFirst, func(t *testing.T) {
			tb := NewTable(Config{})
			cl := &closes{}
			in := addIn(t, tb, cl, "127.0.0.1:1")
			out, err := tb.Add(Spec{Proto: ProtoTCP, Direction: DirOut, State: StateConnecting, Close: cl.closer})
			if err != nil {
				t.Fatal(err)
			}
			gone, other := in, out
			if closeFirst == "out" {
				gone, other = out, in
			}
			gone.Close(ReasonLocal, nil)
			if Pair(in, out) {
				t.Fatal("Pair of a closed leg reported true")
			}
			if other.Peer() != nil || other.Closing() {
				t.Fatalf("the open leg: peer %v, closing %v; want unpaired and open", other.Peer(), other.Closing())
			}
			other.ClosePeer()
			if _, r := tb.State(other.ID); r != ReasonPeer {
				t.Fatalf("open leg closed with %q, want peer", r)
			}
		})
	}
}

// A close begun elsewhere before Shutdown may still be on its way to the
// event ring: Shutdown returns only after its event is out.
func TestShutdownWaitsForClosesInFlight(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		tb := NewTable(Config{})
		release := make(chan struct{})
		slow, err := tb.Add(Spec{Proto: ProtoTCP, Direction: DirIn, Remote: netip.MustParseAddrPort("127.0.0.1:1"), State: StateOK,
			Close: func(*Conn, bool) error { <-release; return nil }})
		if err != nil {
			t.Fatal(err)
		}
		go slow.Close(ReasonEOF, nil)
		synctest.Wait() // the close is inside its transport's Closer
		done := make(chan struct{})
		go func() {
			tb.Shutdown(context.Background())
			close(done)
		}()
		synctest.Wait()
		select {
		case <-done:
			t.Fatal("Shutdown returned while a close was still publishing")
		default:
		}
		close(release)
		<-done
		evs, _ := tb.Events().Since(0)
		if len(evs) != 1 || evs[0].Reason != ReasonEOF {
			t.Fatalf("events = %+v, want the eof of the slow close", evs)
		}
	})
}
