package conn

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"
	"syscall"
	"time"

	"github.com/tcpops/tcpops/sock"
)

// A connection handed to another process (an upgrade, or a restart
// through systemd's file-descriptor store) leaves this table without a
// closed event and enters the other one with everything it had: conid,
// partner, times, lifetime deadline, closed-event flag and counters.
// Times cross as wall-clock instants, since each process has a monotonic
// clock of its own.

// ConnState is one connection as handed over.
type ConnState struct {
	ID          uint64          `json:"conid"`
	Peer        uint64          `json:"peer,omitempty"`
	Proto       Proto           `json:"proto"`
	Direction   Direction       `json:"direction"`
	Listener    string          `json:"listener"`
	Local       netip.AddrPort  `json:"local"`
	Remote      netip.AddrPort  `json:"remote"`
	Via         netip.AddrPort  `json:"via"`
	State       State           `json:"state"`
	Handshake   bool            `json:"handshake,omitempty"`
	Created     time.Time       `json:"created"`
	LastActive  time.Time       `json:"last_active"`
	Lifetime    time.Duration   `json:"lifetime_ns"`
	Anchor      time.Time       `json:"anchor"`
	ClosedEvent bool            `json:"closed_event"`
	BytesIn     uint64          `json:"bytes_in"`
	BytesOut    uint64          `json:"bytes_out"`
	Keepalive   *sock.Keepalive `json:"keepalive,omitempty"`
	TLS         *TLSInfo        `json:"tls,omitempty"`
	WS          *WSInfo         `json:"ws,omitempty"`
	// Draining is set on a connection that stays with the old process
	// (TLS, WebSocket): the new one lists it, marked, until its close
	// event arrives from there.
	Draining *Draining `json:"draining,omitempty"`
	// Overrides are settings changed for a while: each comes back at its
	// instant in the new process as it would have in the old.
	Overrides []OverrideState `json:"overrides,omitempty"`
}

// Draining marks a connection served by the old process after an
// upgrade, until it ends or the drain timeout closes it.
type Draining struct {
	PID   int       `json:"pid"`
	Until time.Time `json:"until"`
	// Peer is the partner's conid: draining entries are not paired here,
	// each one's close comes from the old process.
	Peer uint64 `json:"peer,omitempty"`
}

// ErrDraining is returned for a change to a connection that another
// process still serves.
var ErrDraining = fmt.Errorf("connection is draining in the old process after an upgrade: only close and closed_event apply")

// TableState is the rest of what a table hands over: the conid counter,
// the counters of tcpops.stats, the recently closed conids and the
// event ring.
type TableState struct {
	NextID   uint64            `json:"next_conid"`
	Accepted uint64            `json:"accepted"`
	Dialled  uint64            `json:"dialled"`
	Rejected uint64            `json:"rejected"`
	Closed   map[Reason]uint64 `json:"closed"`
	BytesIn  uint64            `json:"bytes_in"`
	BytesOut uint64            `json:"bytes_out"`
	Recent   []RecentClose     `json:"recent"`
	NextSeq  uint64            `json:"next_seq"`
	Events   []Event           `json:"events"`
}

// RecentClose is a conid that closed lately, with its reason (tcpops.state).
type RecentClose struct {
	ID     uint64 `json:"conid"`
	Reason Reason `json:"reason"`
}

// Hold stops the connections of one pair (or one echo connection) from
// changing while they are handed over: no close, no lifetime expiry. It
// takes all or none, and reports false when one is already closing (that
// pair then ends here as usual). Release undoes it, Drop completes it.
func (t *Table) Hold(cs ...*Conn) bool {
	for i := range cs {
		cs[i].mu.Lock()
	}
	defer func() {
		for i := range cs {
			cs[i].mu.Unlock()
		}
	}()
	for _, c := range cs {
		if c.closing {
			return false
		}
	}
	for _, c := range cs {
		// A hold is a close without a reason: every close path stops at
		// closing, and Release can tell it from a real one.
		c.closing = true
		if c.timed {
			c.untimeLocked(true)
		}
	}
	return true
}

// Release gives held connections back to this table: the connections of
// one pair (or one echo connection) together, so that a timer that fires
// at once on one cannot find its partner still held and leave it alone.
// Their lifetime timers run again for what was left, and the restores of
// their overrides (one that came due while held did nothing then).
func (t *Table) Release(cs ...*Conn) {
	cs = slices.Clone(cs)
	slices.SortFunc(cs, func(a, b *Conn) int { return cmp.Compare(a.ID, b.ID) })
	for _, c := range cs {
		c.mu.Lock()
	}
	defer func() {
		for _, c := range cs {
			c.mu.Unlock()
		}
	}()
	now := t.clock()
	for _, c := range cs {
		if !c.closing || c.reason != "" {
			continue
		}
		c.closing = false
		if c.lifetime > 0 && c.timed {
			c.timeLocked(c.expiresInLocked(now))
		}
		if ov := c.ext().ov; ov != nil {
			for _, o := range ov {
				if o != nil {
					o.timer.Reset(max(time.Until(o.until), 0))
				}
			}
		}
	}
}

// PairHeld joins two entries adopted held (Pair refuses them: a hold
// counts as closing).
func PairHeld(a, b *Conn) bool { return pair(a, b, true) }

// Readopt brings a held entry adopted from another process up to date
// with what that process says of it now (a later ConnState of the same
// connection): state, counters, activity, lifetime, flags, keepalive as
// read back there, and its overrides, armed here. Release starts its
// lifetime timer.
func (c *Conn) Readopt(s ConnState) {
	clock, _ := c.t.fromWall()
	c.mu.Lock()
	defer c.mu.Unlock()
	c.state.Store(int32(s.State))
	c.bytesIn.Store(s.BytesIn)
	c.bytesOut.Store(s.BytesOut)
	c.lastActive.Store(clock(s.LastActive))
	c.closedEvent.Store(s.ClosedEvent && c.t.cfg.Load().ClosedEvent != ModeOff)
	c.lifetime, c.anchor = s.Lifetime, clock(s.Anchor)
	c.timed = c.lifetime > 0 // timed from Release
	c.ka, c.kaUnread = s.Keepalive, false
	c.stopOverridesLocked()
	if c.x != nil {
		c.x.ov = nil
	}
	c.adoptOverridesLocked(s.Overrides)
}

// Drop takes a held connection out of the table for good, with no closed
// event and no close counted: another process has it now.
func (t *Table) Drop(c *Conn) {
	c.mu.Lock()
	ip := c.countedIP
	c.mu.Unlock()
	if t.unlist(c, ip) {
		t.open.Add(-1)
	}
}

// Stamp is what of a connection can change while it is relayed, in a
// form cheap to take and compare: an upgrade takes one when it sends the
// connection's state ahead of the handover and another when it freezes
// it, and sends the state again only when they differ.
type Stamp struct {
	state              int32
	closedEvent        bool
	bytesIn, bytesOut  uint64
	lastActive, anchor int64
	lifetime           time.Duration
	peer               uint64
	ka                 sock.Keepalive
	kaSet              bool
	ov                 overrides
	tls, ws, drain     bool
}

// Stamp takes c's stamp.
func (c *Conn) Stamp() Stamp {
	c.mu.Lock()
	defer c.mu.Unlock()
	x := c.ext()
	s := Stamp{state: c.state.Load(), closedEvent: c.closedEvent.Load(), bytesIn: c.bytesIn.Load(),
		bytesOut: c.bytesOut.Load(), lastActive: c.lastActive.Load(), anchor: c.anchor, lifetime: c.lifetime,
		tls: x.tls != nil, ws: x.ws != nil, drain: x.drain != nil}
	if c.peer != nil {
		s.peer = c.peer.ID
	}
	// As Export reports it: read from the kernel the first time (so the
	// stamp Prepare takes and the one taken at the freeze agree).
	if ka := c.keepaliveLocked(); ka != nil {
		s.ka, s.kaSet = *ka, true
	}
	if ov := c.ext().ov; ov != nil {
		s.ov = *ov
	}
	return s
}

// fromWall returns a conversion of another process's wall-clock instants
// to this table's clock (a zero instant is now), and now.
func (t *Table) fromWall() (clock func(time.Time) int64, now int64) {
	now, wall := t.clock(), time.Now()
	return func(at time.Time) int64 {
		if at.IsZero() {
			return now
		}
		return now - int64(wall.Sub(at))
	}, now
}

// Export describes c for another process.
func (c *Conn) Export() ConnState {
	c.mu.Lock()
	defer c.mu.Unlock()
	now, wall := c.t.clock(), time.Now()
	at := func(clock int64) time.Time { return wall.Add(time.Duration(clock - now)) }
	s := ConnState{
		ID: c.ID, Proto: c.Proto, Direction: c.Direction, Listener: c.Listener,
		Local: c.local, Remote: c.remote, Via: c.ext().via, State: c.State(), Handshake: c.handshake,
		Created: c.Created(), LastActive: at(c.lastActive.Load()), Lifetime: c.lifetime, Anchor: at(c.anchor),
		ClosedEvent: c.closedEvent.Load(), BytesIn: c.bytesIn.Load(), BytesOut: c.bytesOut.Load(),
		Keepalive: c.keepaliveLocked(), TLS: c.ext().tls, WS: c.ext().ws, Draining: c.ext().drain,
		Overrides: c.exportOverridesLocked(),
	}
	if c.peer != nil {
		s.Peer = c.peer.ID
	}
	return s
}

// Export describes the table's counters and recent closes for another
// process. The events come from Events.Seal.
func (t *Table) Export() TableState {
	s := TableState{NextID: t.nextID.Load(), Accepted: t.accepted.Load(), Dialled: t.dialled.Load(),
		Rejected: t.rejected.Load(), Closed: map[Reason]uint64{}, BytesIn: t.bytesIn.Load(), BytesOut: t.bytesOut.Load()}
	for i, r := range Reasons {
		s.Closed[r] = t.closed[i].Load()
	}
	t.recentMu.Lock()
	n := len(t.recentIDs)
	for i := range n {
		id := t.recentIDs[(t.recentPos+i)%n] // oldest first
		s.Recent = append(s.Recent, RecentClose{ID: id, Reason: t.recent[id]})
	}
	t.recentMu.Unlock()
	return s
}

// Restore continues another process's table in this new, empty one:
// conids after its highest, its counters, its recent closes and its
// event ring, so that seq goes on without a gap.
func (t *Table) Restore(s TableState) {
	if s.NextID > t.nextID.Load() {
		t.nextID.Store(s.NextID)
	}
	t.accepted.Add(s.Accepted)
	t.dialled.Add(s.Dialled)
	t.rejected.Add(s.Rejected)
	t.bytesIn.Add(s.BytesIn)
	t.bytesOut.Add(s.BytesOut)
	for i, r := range Reasons {
		t.closed[i].Add(s.Closed[r])
	}
	for _, rc := range s.Recent {
		t.remember(rc.ID, rc.Reason)
	}
	t.events.Restore(s.NextSeq, s.Events)
}

// Adopt puts a connection handed over by another process in the table
// under its own conid, with its deadline, counters and flags; tcp and
// closer are its transport here (both nil for a draining entry). Partners
// are joined afterwards with Pair. The inbound limits count it without
// refusing it: it is already there.
func (t *Table) Adopt(s ConnState, tcp syscall.Conn, closer Closer) (*Conn, error) {
	return t.adopt(s, tcp, closer, false)
}

// AdoptHeld is Adopt for an entry held (see Hold) until Release, so that
// nothing of it runs here before the other process lets go: no lifetime
// timer, no close, and no override armed (Readopt arms them).
func (t *Table) AdoptHeld(s ConnState, tcp syscall.Conn, closer Closer) (*Conn, error) {
	return t.adopt(s, tcp, closer, true)
}

func (t *Table) adopt(s ConnState, tcp syscall.Conn, closer Closer, held bool) (*Conn, error) {
	if s.ID == 0 {
		return nil, fmt.Errorf("adopt: conid 0")
	}
	if _, ok := t.Get(s.ID); ok {
		return nil, fmt.Errorf("adopt: conid %d is in the table already", s.ID)
	}
	clock, now := t.fromWall()
	c := &Conn{
		ID: s.ID, Proto: s.Proto, Direction: s.Direction, Listener: s.Listener, created: noCreated,
		t: t, handshake: s.Handshake, local: s.Local, remote: s.Remote,
		tcp: tcp, closer: closer, ka: s.Keepalive,
	}
	if s.Via.IsValid() || s.TLS != nil || s.WS != nil || s.Draining != nil {
		c.x = &connExt{via: s.Via, tls: s.TLS, ws: s.WS, drain: s.Draining}
	}
	if !s.Created.IsZero() {
		c.created = int64(s.Created.Sub(t.epoch))
	}
	c.state.Store(int32(s.State))
	c.bytesIn.Store(s.BytesIn)
	c.bytesOut.Store(s.BytesOut)
	c.lastActive.Store(clock(s.LastActive))
	c.closedEvent.Store(s.ClosedEvent && t.cfg.Load().ClosedEvent != ModeOff)
	if s.Direction == DirIn {
		ip := s.Remote.Addr().Unmap()
		t.limMu.Lock()
		t.inbound++
		t.perListener[s.Listener]++
		if ip.IsValid() {
			t.perIP[ip]++
			c.countedIP = ip
		}
		t.limMu.Unlock()
	}
	for {
		n := t.nextID.Load()
		if n >= s.ID || t.nextID.CompareAndSwap(n, s.ID) {
			break
		}
	}
	t.open.Add(1)
	sh := t.shard(c.ID)
	sh.mu.Lock()
	sh.m[c.ID] = c
	sh.mu.Unlock()
	if held {
		c.mu.Lock()
		c.closing = true
		c.lifetime, c.anchor = s.Lifetime, clock(s.Anchor)
		c.timed = c.lifetime > 0 // timed from Release
		c.mu.Unlock()
		return c, nil
	}
	if s.Lifetime > 0 {
		c.mu.Lock()
		c.lifetime, c.anchor = s.Lifetime, clock(s.Anchor)
		if s.Draining == nil { // the old process times it out
			c.timeLocked(c.expiresInLocked(now))
		}
		c.mu.Unlock()
	}
	if len(s.Overrides) > 0 && s.Draining == nil { // else the old process restores them
		c.mu.Lock()
		c.adoptOverridesLocked(s.Overrides)
		c.mu.Unlock()
	}
	return c, nil
}

// Draining returns what marks c as served by the old process, or nil.
func (c *Conn) Draining() *Draining {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.ext().drain
}

// SetCounters sets the byte counters of a draining entry to what the old
// process counted.
func (c *Conn) SetCounters(in, out uint64) {
	c.bytesIn.Store(in)
	c.bytesOut.Store(out)
}

// KeepClosedEvent makes sure the close of c is published whatever its
// flag (short of --closed-event off): the old process after an upgrade
// reports every close of a draining connection, and the new one decides
// by its own entry's flag.
func (c *Conn) KeepClosedEvent() { c.closedEvent.Store(true) }

// EndDraining takes the draining entry of e.ConnID out of the table
// because the old process closed it, and publishes e (given a seq here)
// if the entry's closed-event flag is set. An event of a connection that
// this table never held (it closed in the old process during the
// handover) is published as it is. It reports whether e was published.
func (t *Table) EndDraining(e Event) bool {
	publish := t.cfg.Load().ClosedEvent != ModeOff
	if c, ok := t.Get(e.ConnID); ok {
		c.mu.Lock()
		if c.closing || c.ext().drain == nil {
			c.mu.Unlock()
			return false
		}
		c.closing, c.reason = true, e.Reason
		if e.Error != "" {
			c.extW().errText = e.Error
		}
		ip := c.countedIP
		c.mu.Unlock()
		c.SetCounters(e.BytesIn, e.BytesOut)
		c.state.Store(int32(e.Reason.teardown()))
		t.remember(c.ID, e.Reason)
		t.unlist(c, ip)
		publish = publish && c.closedEvent.Load()
		defer t.open.Add(-1)
	} else {
		t.remember(e.ConnID, e.Reason)
	}
	if publish {
		t.events.Publish(e)
	}
	if i := e.Reason.index(); i >= 0 {
		t.closed[i].Add(1)
	}
	if t.onClose != nil {
		t.onClose(Closed{Proto: e.Proto, Direction: e.Direction, Reason: e.Reason, Duration: e.Duration, BytesIn: e.BytesIn, BytesOut: e.BytesOut})
	}
	return publish
}

// Seal stops the ring from numbering events: from now on each event
// published is given to forward instead (in order, without a seq, under
// the ring's lock: forward must not block), because another process
// numbers them now. It returns the seq the next event would have had and
// the events kept. Unseal undoes it.
func (r *Events) Seal(forward func(Event)) (nextSeq uint64, kept []Event) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.forward = forward
	from := r.oldestLocked()
	for s := from; s < r.next; s++ {
		kept = append(kept, r.get(s))
	}
	return r.next, kept
}

// Unseal numbers and keeps events here again (a handover that failed),
// first those that pending returns (called under the ring's lock, so no
// event can come between them and the ones after).
func (r *Events) Unseal(pending func() []Event) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.forward = nil
	for _, e := range pending() {
		e.Seq = r.next
		r.next++
		r.put(e.Seq, &e, parseAddrs(&e))
	}
	if r.waiting {
		close(r.wake)
		r.wake = make(chan struct{})
		r.waiting = false
	}
}

// Restore continues another process's ring in this empty one: the kept
// events, and next as the seq of the next event.
func (r *Events) Restore(next uint64, kept []Event) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, e := range kept {
		if e.Seq >= r.next && e.Seq < next {
			r.put(e.Seq, &e, parseAddrs(&e))
		}
	}
	if next > r.next {
		r.next = next
	}
}
