package conn

import (
	"net"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/tcpops/tcpops/sock"
)

// restores records what OnRestore was told.
type restores struct {
	mu  sync.Mutex
	got []Restored
}

func (r *restores) add(x Restored) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.got = append(r.got, x)
}

func (r *restores) list() []Restored {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Restored(nil), r.got...)
}

// TestOverrideLifetime: the lifetime before comes back when the ttl runs
// out, and counts from then; a second override moves the end but brings
// back the setting from before the first; a permanent change ends the
// override; a connection that closes first takes its timers with it.
func TestOverrideLifetime(t *testing.T) {
	tests := []struct {
		name  string
		steps func(t *testing.T, c *Conn)
		// at restoreAt the lifetime is restoredTo (from restoreFrom before)
		restoreAt   time.Duration
		restoreFrom time.Duration
		restoredTo  time.Duration
		restored    int // OnRestore calls in all
	}{
		{name: "runs out", steps: func(t *testing.T, c *Conn) {
			if _, until, err := c.SetLifetimeFor(2*time.Hour, time.Hour); err != nil || !until.Equal(time.Now().Add(time.Hour)) {
				t.Fatalf("SetLifetimeFor = %v, %v", until, err)
			}
		}, restoreAt: time.Hour, restoreFrom: 2 * time.Hour, restoredTo: 10 * time.Second, restored: 1},
		{name: "replaced", steps: func(t *testing.T, c *Conn) {
			c.SetLifetimeFor(2*time.Hour, time.Hour)
			time.Sleep(30 * time.Minute)
			c.SetLifetimeFor(3*time.Hour, time.Hour)
		}, restoreAt: 90 * time.Minute, restoreFrom: 3 * time.Hour, restoredTo: 10 * time.Second, restored: 1},
		{name: "made permanent", steps: func(t *testing.T, c *Conn) {
			c.SetLifetimeFor(2*time.Hour, time.Hour)
			c.SetLifetimeFor(5*time.Hour, 0)
			if ov := c.Overrides(); ov != nil {
				t.Fatalf("overrides after a permanent change: %v", ov)
			}
		}, restoreAt: time.Hour, restoreFrom: 5 * time.Hour, restoredTo: 5 * time.Hour, restored: 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				tb := NewTable(Config{Lifetime: 10 * time.Second})
				rs := &restores{}
				tb.OnRestore(rs.add)
				start := time.Now()
				c := addIn(t, tb, &closes{}, "127.0.0.1:1")
				tt.steps(t, c)
				time.Sleep(tt.restoreAt - time.Since(start) - time.Millisecond)
				synctest.Wait()
				if lt, _ := c.Lifetime(); lt != tt.restoreFrom {
					t.Fatalf("lifetime just before %v = %v, want %v", tt.restoreAt, lt, tt.restoreFrom)
				}
				time.Sleep(time.Millisecond)
				synctest.Wait()
				if lt, left := c.Lifetime(); lt != tt.restoredTo || (tt.restored > 0 && left != tt.restoredTo) {
					t.Fatalf("lifetime at %v = %v (expires in %v), want %v counted from now", tt.restoreAt, lt, left, tt.restoredTo)
				}
				if got := rs.list(); len(got) != tt.restored || (tt.restored == 1 && (got[0].What != WhatLifetime || got[0].Value != "10s" || got[0].ConnID != c.ID)) {
					t.Fatalf("OnRestore calls %+v, want %d", got, tt.restored)
				}
				if ov := c.Overrides(); ov != nil {
					t.Fatalf("overrides left: %v", ov)
				}
				c.Close(ReasonLocal, nil)
			})
		})
	}
}

// TestOverrideCloseFirst: a connection that closes before its ttl runs
// out simply goes; nothing is restored, no timer runs later.
func TestOverrideCloseFirst(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		tb := NewTable(Config{Lifetime: 10 * time.Second})
		rs := &restores{}
		tb.OnRestore(rs.add)
		c := addIn(t, tb, &closes{}, "127.0.0.1:1")
		c.SetLifetimeFor(time.Hour, time.Minute)
		c.SetClosedEventFor(false, time.Minute)
		if ov := c.Overrides(); len(ov) != 2 || ov[0].What != WhatLifetime || ov[1].What != WhatClosedEvent {
			t.Fatalf("overrides %v, want lifetime and closed_event", ov)
		}
		c.Close(ReasonLocal, nil)
		time.Sleep(2 * time.Minute)
		synctest.Wait()
		if got := rs.list(); len(got) != 0 {
			t.Fatalf("restored on a closed connection: %+v", got)
		}
		if _, _, err := c.SetLifetimeFor(time.Hour, time.Minute); err != ErrClosed {
			t.Fatalf("override of a closed connection: %v, want ErrClosed", err)
		}
	})
}

// TestOverrideClosedEvent: the closed-event setting before comes back.
func TestOverrideClosedEvent(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		tb := NewTable(Config{ClosedEvent: ModeManual})
		rs := &restores{}
		tb.OnRestore(rs.add)
		c := addIn(t, tb, &closes{}, "127.0.0.1:1")
		if _, err := c.SetClosedEventFor(true, time.Minute); err != nil || !c.ClosedEvent() {
			t.Fatalf("SetClosedEventFor: %v", err)
		}
		time.Sleep(time.Minute)
		synctest.Wait()
		if c.ClosedEvent() {
			t.Fatal("closed event still on after the ttl; manual mode had it off")
		}
		if got := rs.list(); len(got) != 1 || got[0].What != WhatClosedEvent || got[0].Value != "false" {
			t.Fatalf("OnRestore calls %+v", got)
		}
		c.Close(ReasonLocal, nil)
	})
}

// TestOverrideKeepalive: the keepalive read back from the kernel before
// the first override comes back, off included with its values.
func TestOverrideKeepalive(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var socks []*net.TCPConn
	for range 2 {
		nc, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer nc.Close()
		socks = append(socks, nc.(*net.TCPConn))
	}
	start := []sock.KeepaliveConfig{
		{Enable: true, Idle: 61, Count: 6, Interval: 7, UserTimeoutMs: 0},
		{Enable: false, Idle: 71, Count: 8, Interval: 9, UserTimeoutMs: 5000},
	}
	for i, s := range socks {
		// off with values of its own: set them on first, then off
		on := start[i]
		on.Enable = true
		if err := sock.SetKeepalive(s, on); err != nil {
			t.Fatal(err)
		}
		if err := sock.SetKeepalive(s, start[i]); err != nil {
			t.Fatal(err)
		}
	}
	synctest.Test(t, func(t *testing.T) {
		tb := NewTable(Config{})
		rs := &restores{}
		tb.OnRestore(rs.add)
		for i, s := range socks {
			before, _ := sock.GetKeepalive(s)
			c, err := tb.Add(Spec{Proto: "tcp", Direction: DirOut, TCP: s, State: StateOK, Close: (&closes{}).closer})
			if err != nil {
				t.Fatal(err)
			}
			k := sock.KeepaliveConfig{Enable: true, Idle: 30, Count: 3, Interval: 10, UserTimeoutMs: 9000}
			if ka, _, err := c.SetKeepaliveFor(k, time.Hour); err != nil || ka.Idle != 30 || ka.UserTimeoutMs != 9000 {
				t.Fatalf("SetKeepaliveFor = %+v, %v", ka, err)
			}
			time.Sleep(30 * time.Minute)
			// A second override: the end moves, what comes back stays.
			k.Idle = 40
			if _, until, err := c.SetKeepaliveFor(k, time.Hour); err != nil || !until.Equal(time.Now().Add(time.Hour)) {
				t.Fatalf("second SetKeepaliveFor: %v, %v", until, err)
			}
			time.Sleep(59 * time.Minute)
			synctest.Wait()
			if got, _ := sock.GetKeepalive(s); got.Idle != 40 {
				t.Fatalf("socket %d: restored before the second ttl ran out: %+v", i, got)
			}
			time.Sleep(time.Minute)
			synctest.Wait()
			if got, _ := sock.GetKeepalive(s); got != before {
				t.Fatalf("socket %d after the ttl: kernel holds %+v, want %+v as before", i, got, before)
			}
			if in := c.Info(); in.Keepalive == nil || *in.Keepalive != before || in.Overrides != nil {
				t.Fatalf("socket %d: Info %+v", i, in)
			}
			c.Close(ReasonLocal, nil)
		}
		got := rs.list()
		if len(got) != 2 || got[0].Value != "on 61/6/7" || got[1].Value != "off (71/8/9)" {
			t.Fatalf("OnRestore calls %+v", got)
		}
	})
}

// An override handed to another process (an upgrade) comes back there at
// the instant it would have here.
func TestOverrideSurvivesHandover(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		old := NewTable(Config{Lifetime: time.Minute})
		c, err := old.Add(Spec{Proto: ProtoTCP, Direction: DirOut, State: StateOK})
		if err != nil {
			t.Fatal(err)
		}
		if _, _, err := c.SetLifetimeFor(5*time.Second, 30*time.Second); err != nil {
			t.Fatal(err)
		}
		st := c.Export()
		if len(st.Overrides) != 1 || st.Overrides[0].What != WhatLifetime || st.Overrides[0].Lifetime != time.Minute {
			t.Fatalf("exported overrides %+v, want the lifetime one with 1m to come back", st.Overrides)
		}
		st.Lifetime = time.Hour // as if traffic kept it alive; the override still restores 1m
		next := NewTable(Config{})
		nc, err := next.Adopt(st, nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		if ov := nc.Overrides(); len(ov) != 1 || !ov[0].Until.Equal(st.Overrides[0].Until) {
			t.Fatalf("adopted overrides %+v, want one until %v", ov, st.Overrides[0].Until)
		}
		time.Sleep(31 * time.Second)
		synctest.Wait()
		if lt, _ := nc.Lifetime(); lt != time.Minute || len(nc.Overrides()) != 0 {
			t.Fatalf("after the ttl: lifetime %v, overrides %v; want 1m back and none", lt, nc.Overrides())
		}
		nc.Close(ReasonLocal, nil)
		c.Close(ReasonLocal, nil)
	})
}
