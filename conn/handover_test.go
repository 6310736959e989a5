package conn

import (
	"testing"
	"testing/synctest"
	"time"
)

// heldPair adopts a relayed pair held, as a new process does during an
// upgrade, with lifetime and last activity as given.
func heldPair(t *testing.T, tb *Table, lifetime time.Duration, lastActive time.Time, ov []OverrideState) (in, out *Conn) {
	t.Helper()
	closer := func(*Conn, bool) error { return nil }
	in, err := tb.AdoptHeld(ConnState{ID: 1, Peer: 2, Proto: ProtoTCP, Direction: DirIn, Listener: "relay", State: StateOK,
		Created: lastActive, LastActive: lastActive, Anchor: lastActive, Lifetime: lifetime, ClosedEvent: false, Overrides: ov}, nil, closer)
	if err != nil {
		t.Fatal(err)
	}
	out, err = tb.AdoptHeld(ConnState{ID: 2, Peer: 1, Proto: ProtoTCP, Direction: DirOut, Listener: "relay", State: StateOK,
		Created: lastActive, LastActive: lastActive, Anchor: lastActive, Lifetime: lifetime, ClosedEvent: true}, nil, closer)
	if err != nil {
		t.Fatal(err)
	}
	if !PairHeld(in, out) {
		t.Fatal("PairHeld refused")
	}
	return in, out
}

// TestReleaseExpiredPair: a pair whose lifetime ran out while it was held
// closes whole once released: released together, the first leg's timer
// cannot find its partner still held (it would stay open, alone).
func TestReleaseExpiredPair(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		tb := NewTable(Config{ClosedEvent: ModeAll})
		in, out := heldPair(t, tb, 10*time.Second, time.Now().Add(-time.Minute), nil)
		time.Sleep(time.Second)
		synctest.Wait()
		if tb.Len() != 2 || in.State() < 0 || out.State() < 0 {
			t.Fatalf("held entries changed: %d in the table", tb.Len())
		}
		tb.Release(in, out)
		synctest.Wait()
		if n := tb.Len(); n != 0 {
			t.Fatalf("%d entries left after the released pair's lifetime ran out, want 0", n)
		}
	})
}

// TestReleaseRestoresOverrideDueWhileHeld: an override that came due
// while its connection was held (the restore did nothing then) is
// restored once it is released.
func TestReleaseRestoresOverrideDueWhileHeld(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		tb := NewTable(Config{ClosedEvent: ModeAll})
		now := time.Now()
		ov := []OverrideState{{What: WhatClosedEvent, Until: now.Add(time.Second), ClosedEvent: true}}
		in, out := heldPair(t, tb, 0, now, ov)
		s := in.Export()
		s.Overrides = ov
		in.Readopt(s) // arms the override, due in 1 s
		time.Sleep(2 * time.Second)
		synctest.Wait()
		if in.ClosedEvent() {
			t.Fatal("override restored while held")
		}
		tb.Release(in, out)
		synctest.Wait()
		if !in.ClosedEvent() || len(in.Overrides()) != 0 {
			t.Fatalf("after release: closed_event %v, overrides %v; want true, none", in.ClosedEvent(), in.Overrides())
		}
	})
}
