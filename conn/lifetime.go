package conn

import (
	"sync"
	"time"
)

// lifetimes times out every connection of a table with one timer: a heap
// of connections by the earliest moment each may expire, and a timer set
// for the first. A connection costs its place in the heap (8 bytes and
// two fields) instead of a timer of its own (about 150 bytes), and adding
// or closing one is a heap operation. As with a timer of its own, traffic
// only pushes the expiry on: the connection is looked at when its first
// possible expiry comes, and put back for what is left if it was active.
//
// Lock order: a Conn's mu, then mu.
type lifetimes struct {
	t     *Table
	mu    sync.Mutex
	heap  []*Conn
	timer *time.Timer
	at    int64 // table clock the timer is set for; 0: not set
}

// schedule puts c in the heap to be looked at when the table clock reaches
// due (moving it if it is there already).
func (l *lifetimes) schedule(c *Conn, due int64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	c.due = due
	if c.hidx > 0 {
		l.fix(int(c.hidx) - 1)
	} else {
		l.heap = append(l.heap, c)
		c.hidx = int32(len(l.heap))
		l.up(len(l.heap) - 1)
	}
	if first := l.heap[0].due; l.at == 0 || first < l.at {
		l.arm(first)
	}
}

// unschedule takes c out of the heap.
func (l *lifetimes) unschedule(c *Conn) {
	l.mu.Lock()
	defer l.mu.Unlock()
	i := int(c.hidx) - 1
	if i < 0 {
		return
	}
	last := len(l.heap) - 1
	if i != last {
		l.swap(i, last)
	}
	l.heap[last] = nil
	l.heap = l.heap[:last]
	c.hidx = 0
	if i != last {
		l.fix(i)
	}
	if len(l.heap) == 0 {
		l.heap = nil // a burst's backing array goes with it
	}
}

// arm sets the timer for table clock due; l.mu held.
func (l *lifetimes) arm(due int64) {
	l.at = due
	d := time.Duration(due - l.t.clock())
	if l.timer == nil {
		l.timer = time.AfterFunc(max(d, 0), l.fire)
		return
	}
	l.timer.Reset(max(d, 0))
}

// fire looks at every connection whose moment has come: it expires, or
// goes back in the heap for what is left.
func (l *lifetimes) fire() {
	l.mu.Lock()
	now := l.t.clock()
	var due []*Conn
	for len(l.heap) > 0 && l.heap[0].due <= now {
		c := l.heap[0]
		last := len(l.heap) - 1
		l.swap(0, last)
		l.heap[last] = nil
		l.heap = l.heap[:last]
		c.hidx = 0
		if last > 0 {
			l.down(0)
		}
		due = append(due, c)
	}
	l.at = 0
	if len(l.heap) > 0 {
		l.arm(l.heap[0].due)
	}
	l.mu.Unlock()
	for _, c := range due {
		c.lifetimeDue()
	}
}

func (l *lifetimes) swap(i, j int) {
	l.heap[i], l.heap[j] = l.heap[j], l.heap[i]
	l.heap[i].hidx, l.heap[j].hidx = int32(i+1), int32(j+1)
}

func (l *lifetimes) fix(i int) {
	if !l.up(i) {
		l.down(i)
	}
}

func (l *lifetimes) up(i int) bool {
	moved := false
	for i > 0 {
		p := (i - 1) / 2
		if l.heap[p].due <= l.heap[i].due {
			break
		}
		l.swap(i, p)
		i, moved = p, true
	}
	return moved
}

func (l *lifetimes) down(i int) {
	n := len(l.heap)
	for {
		m := i
		if a := 2*i + 1; a < n && l.heap[a].due < l.heap[m].due {
			m = a
		}
		if b := 2*i + 2; b < n && l.heap[b].due < l.heap[m].due {
			m = b
		}
		if m == i {
			return
		}
		l.swap(i, m)
		i = m
	}
}

// lifetimeDue runs when c's earliest possible expiry has come; traffic
// since then only pushed it on, so an active connection costs one look
// per lifetime, not per packet.
func (c *Conn) lifetimeDue() {
	c.mu.Lock()
	if c.closing || c.lifetime == 0 || !c.timed {
		c.mu.Unlock()
		return
	}
	now := c.t.clock()
	if left := c.expiresInLocked(now); left > 0 {
		c.t.life.schedule(c, now+int64(left))
		c.mu.Unlock()
		return
	}
	c.mu.Unlock()
	c.Close(ReasonLifetime, nil)
}

// timeLocked starts timing c's lifetime from now (c.mu held): its first
// possible expiry is in left.
func (c *Conn) timeLocked(left time.Duration) {
	c.timed = true
	c.t.life.schedule(c, c.t.clock()+int64(max(left, 0)))
}

// untimeLocked stops timing c's lifetime (c.mu held); keep says it is
// timed again by Release.
func (c *Conn) untimeLocked(keep bool) {
	c.timed = c.timed && keep
	c.t.life.unschedule(c)
}
