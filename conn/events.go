package conn

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"
)

// Event is one closed event. Seq is gap-free over the daemon's life.
type Event struct {
	Seq           uint64
	Time          time.Time
	Reason        Reason
	ConnID        uint64
	Peer          uint64
	Proto         Proto
	Direction     Direction
	Listener      string
	Local         string
	Remote        string
	Via           string // the balancer, when a PROXY protocol header named Remote
	Duration      time.Duration
	BytesIn       uint64
	BytesOut      uint64
	Error         string
	WSCloseCode   int
	WSCloseReason string
	Reset         bool // tcpops closed it with an RST (close --reset), not a FIN
}

// Name is the Kamailio event route of the event.
func (e *Event) Name() string { return e.Reason.Event() }

// Lost tells a subscriber that events From..To (inclusive) were overwritten
// in the ring before it read them.
type Lost struct {
	From, To uint64
}

// ErrEventsClosed is returned by Subscription.Next once the ring is closed
// and the subscriber has read everything in it.
var ErrEventsClosed = errors.New("event stream closed")

// Events is the ring of recent closed events. Publishing never waits: a
// subscriber reads the ring at its own cursor, so the ring is every
// subscriber's bounded queue, and one that falls more than the ring's size
// behind is told exactly which seqs it lost.
type Events struct {
	dropped atomic.Uint64 // events subscribers lost to lag

	// mu guards the fields below.
	mu      sync.Mutex
	size    uint64            // events kept
	chunks  [][]record        // the ring, in chunks made as the first events reach them
	extras  map[uint64]*extra // what records leave out, by position
	names   []string          // listener names of the records; 0 is ""
	nameIdx map[string]uint32
	next    uint64        // seq the next event gets; the first is 1
	wake    chan struct{} // closed on publish when someone waits
	waiting bool
	closed  bool
	forward func(Event) // set by Seal: events go to another process
}

// NewEvents makes a ring that keeps size events (at least 1).
func NewEvents(size int) *Events {
	if size < 1 {
		size = 1
	}
	n := (size + ringChunk - 1) / ringChunk
	return &Events{size: uint64(size), chunks: make([][]record, n), next: 1, wake: make(chan struct{})}
}

// ringChunk is how many events a chunk of the ring holds. A daemon that
// has closed few connections holds few chunks; once the ring has wrapped
// all of them stay.
const ringChunk = 1024

// rec is where seq lives in the ring; r.mu held.
func (r *Events) rec(seq uint64) *record {
	i := seq % r.size
	c := r.chunks[i/ringChunk]
	if c == nil {
		c = make([]record, min(ringChunk, r.size-i/ringChunk*ringChunk))
		r.chunks[i/ringChunk] = c
	}
	return &c[i%ringChunk]
}

// Publish assigns e the next seq and stores it.
func (r *Events) Publish(e Event) uint64 { return r.publish(&e, parseAddrs(&e)) }

// publish is Publish of an event whose addresses are in a (a connection's:
// no strings made for the ring).
func (r *Events) publish(e *Event, a evAddrs) uint64 {
	r.mu.Lock()
	if r.forward != nil {
		if e.Local == "" {
			e.Local = addrString(a.local)
		}
		if e.Remote == "" {
			e.Remote = addrString(a.remote)
		}
		r.forward(*e)
		r.mu.Unlock()
		return 0
	}
	e.Seq = r.next
	r.next++
	r.put(e.Seq, e, a)
	if r.waiting {
		close(r.wake)
		r.wake = make(chan struct{})
		r.waiting = false
	}
	r.mu.Unlock()
	return e.Seq
}

// oldestLocked is the seq of the oldest event still kept.
func (r *Events) oldestLocked() uint64 {
	if n := r.size; r.next > n {
		return r.next - n
	}
	return 1
}

// LastSeq is the seq of the newest event (0 if none yet).
func (r *Events) LastSeq() uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.next - 1
}

// Dropped counts events that subscribers lost because they lagged.
func (r *Events) Dropped() uint64 { return r.dropped.Load() }

// Size is the ring's capacity.
func (r *Events) Size() int { return int(r.size) }

// Since returns the kept events with seq > since, oldest first, and the seq
// of the newest event.
func (r *Events) Since(since uint64) ([]Event, uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	from := max(since+1, r.oldestLocked())
	out := make([]Event, 0, r.next-min(from, r.next))
	for s := from; s < r.next; s++ {
		out = append(out, r.get(s))
	}
	return out, r.next - 1
}

// Close ends every subscription once it has read what is in the ring.
func (r *Events) Close() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return
	}
	r.closed = true
	close(r.wake)
	r.waiting = false
}

// Subscription reads the ring from a cursor.
type Subscription struct {
	r      *Events
	cursor uint64 // seq of the last event handed out
}

// Subscribe starts reading after seq since (0: everything kept, which may
// begin with a Lost if older events have already left the ring).
func (r *Events) Subscribe(since uint64) *Subscription {
	return &Subscription{r: r, cursor: since}
}

// Next waits for events after the cursor and returns up to max of them,
// or a Lost for the seqs that left the ring before they could be read.
// It returns ErrEventsClosed after Close once the ring is drained, and
// ctx.Err() when ctx ends.
func (s *Subscription) Next(ctx context.Context, max int) ([]Event, *Lost, error) {
	r := s.r
	for {
		r.mu.Lock()
		if old := r.oldestLocked(); s.cursor+1 < old && s.cursor+1 < r.next {
			lost := &Lost{From: s.cursor + 1, To: old - 1}
			s.cursor = old - 1
			r.mu.Unlock()
			r.dropped.Add(lost.To - lost.From + 1)
			return nil, lost, nil
		}
		if s.cursor+1 < r.next {
			n := min(uint64(max), r.next-(s.cursor+1))
			out := make([]Event, n)
			for i := range out {
				s.cursor++
				out[i] = r.get(s.cursor)
			}
			r.mu.Unlock()
			return out, nil, nil
		}
		if r.closed {
			r.mu.Unlock()
			return nil, nil, ErrEventsClosed
		}
		r.waiting = true
		wake := r.wake
		r.mu.Unlock()
		select {
		case <-wake:
		case <-ctx.Done():
			return nil, nil, ctx.Err()
		}
	}
}
