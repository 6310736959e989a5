package conn

import (
	"math/rand/v2"
	"testing"
	"time"

	"github.com/tcpops/tcpops/internal/testutil"
)

// TestLifetimeHeap: connections with lifetimes in a random order each
// expire once their own lifetime has passed without traffic, none
// earlier; one kept active outlives its first expiry; ones closed or
// given no lifetime leave the heap; and the heap is empty at the end.
func TestLifetimeHeap(t *testing.T) {
	tb := NewTable(Config{})
	const n = 300
	type tc struct {
		c     *Conn
		life  time.Duration
		added time.Time
	}
	var cs []tc
	for i := range n {
		life := time.Duration(50+rand.IntN(200)) * time.Millisecond
		c, err := tb.Add(Spec{Proto: ProtoTCP, Direction: DirIn, State: StateAccepting, Lifetime: &life})
		if err != nil {
			t.Fatal(err)
		}
		cs = append(cs, tc{c, life, time.Now()})
		switch i % 10 {
		case 1:
			c.Close(ReasonLocal, nil)
		case 2:
			c.SetLifetime(0)
		}
	}
	active := cs[3].c
	stop := time.After(400 * time.Millisecond)
touch:
	for {
		select {
		case <-stop:
			break touch
		case <-time.After(10 * time.Millisecond):
			active.Touch(1, 0)
		}
	}
	if active.Closing() {
		t.Fatal("a connection kept active expired")
	}
	for i, x := range cs {
		switch i % 10 {
		case 1, 3:
			continue
		case 2:
			if x.c.Closing() {
				t.Fatalf("conid %d without a lifetime closed", x.c.ID)
			}
			continue
		}
		if !testutil.Until(x.c.Closing) {
			t.Fatalf("conid %d (lifetime %s) still open", x.c.ID, x.life)
		}
		if r := x.c.Reason(); r != ReasonLifetime {
			t.Fatalf("conid %d closed with %s", x.c.ID, r)
		}
	}
	evs, _ := tb.Events().Since(0)
	for _, e := range evs {
		x := cs[e.ConnID-1]
		if e.Reason == ReasonLifetime && e.Duration < x.life {
			t.Fatalf("conid %d expired after %s, its lifetime is %s", e.ConnID, e.Duration, x.life)
		}
	}
	active.Close(ReasonLocal, nil)
	for i := range cs {
		if i%10 == 2 {
			cs[i].c.Close(ReasonLocal, nil)
		}
	}
	tb.life.mu.Lock()
	left := len(tb.life.heap)
	tb.life.mu.Unlock()
	if left != 0 {
		t.Fatalf("%d connections left in the heap", left)
	}
}
