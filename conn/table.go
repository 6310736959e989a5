package conn

import (
	"cmp"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Errors of the table; the RPC layer maps them to error codes.
var (
	ErrNotFound    = errors.New("no such connection")
	ErrClosed      = errors.New("connection is closing")
	ErrNoSocket    = errors.New("connection has no socket yet (dial in progress)")
	ErrLimit       = errors.New("connection limit reached")
	ErrBadLifetime = errors.New("lifetime must be >= 0")
	ErrEventsOff   = errors.New("closed events are off in this daemon (--closed-event off)")
)

// LimitError says which limit refused a connection.
type LimitError struct {
	Limit string // max-conns or max-conns-per-ip
	Max   int
}

func (e *LimitError) Error() string { return fmt.Sprintf("%s %d reached", e.Limit, e.Max) }
func (e *LimitError) Unwrap() error { return ErrLimit }

// Config sets the table's defaults and limits.
type Config struct {
	Lifetime      time.Duration // default idle lifetime, 0: none
	ClosedEvent   Mode
	EventBuffer   int // ring size
	MaxConns      int // inbound connections, 0: no limit
	MaxConnsPerIP int // inbound connections per remote IP, 0: no limit
	RecentClosed  int // closed conids remembered for State, default 4096
}

const shards = 64

type shard struct {
	mu sync.RWMutex
	m  map[uint64]*Conn
}

// Table holds every live connection under its conid.
type Table struct {
	cfg    Config
	epoch  time.Time
	events *Events
	nextID atomic.Uint64

	shards [shards]shard

	shutdown atomic.Bool

	accepted atomic.Uint64 // inbound connections tabled
	dialled  atomic.Uint64 // outbound legs tabled
	rejected atomic.Uint64 // inbound refused by a limit
	closed   [8]atomic.Uint64

	// limMu guards the fields below.
	limMu   sync.Mutex
	inbound int
	perIP   map[netip.Addr]int

	// recentMu guards the fields below.
	recentMu  sync.Mutex
	recent    map[uint64]Reason
	recentIDs []uint64 // ring of the ids in recent, oldest at recentPos
	recentPos int
}

// NewTable makes an empty table.
func NewTable(cfg Config) *Table {
	if cfg.RecentClosed <= 0 {
		cfg.RecentClosed = 4096
	}
	if cfg.EventBuffer <= 0 {
		cfg.EventBuffer = 65536
	}
	t := &Table{
		cfg:       cfg,
		epoch:     time.Now(),
		events:    NewEvents(cfg.EventBuffer),
		perIP:     make(map[netip.Addr]int),
		recent:    make(map[uint64]Reason, cfg.RecentClosed),
		recentIDs: make([]uint64, 0, cfg.RecentClosed),
	}
	for i := range t.shards {
		t.shards[i].m = make(map[uint64]*Conn)
	}
	return t
}

// Config returns the table's configuration.
func (t *Table) Config() Config { return t.cfg }

// Events returns the closed-event ring.
func (t *Table) Events() *Events { return t.events }

// clock is the table's monotonic clock in ns.
func (t *Table) clock() int64 { return int64(time.Since(t.epoch)) }

func (t *Table) shard(id uint64) *shard { return &t.shards[id%shards] }

// Add puts a new connection in the table. Inbound connections past a limit
// are refused with a *LimitError and counted; the caller closes them.
func (t *Table) Add(s Spec) (*Conn, error) {
	if s.Direction == "in" {
		if err := t.admit(s.Remote.Addr()); err != nil {
			t.rejected.Add(1)
			return nil, err
		}
		t.accepted.Add(1)
	} else {
		t.dialled.Add(1)
	}
	now := t.clock()
	c := &Conn{
		ID: t.nextID.Add(1), Proto: s.Proto, Direction: s.Direction, Listener: s.Listener,
		Created: time.Now(), t: t, handshake: s.Handshake,
		local: s.Local, remote: s.Remote, tcp: s.TCP, closer: s.Close,
	}
	c.state.Store(int32(s.State))
	c.lastActive.Store(now)
	c.closedEvent.Store(t.cfg.ClosedEvent == ModeAll)
	sh := t.shard(c.ID)
	sh.mu.Lock()
	sh.m[c.ID] = c
	sh.mu.Unlock()
	if t.cfg.Lifetime > 0 {
		c.mu.Lock()
		if !c.closing {
			c.setLifetimeLocked(t.cfg.Lifetime)
		}
		c.mu.Unlock()
	}
	return c, nil
}

func (t *Table) admit(ip netip.Addr) error {
	t.limMu.Lock()
	defer t.limMu.Unlock()
	if t.cfg.MaxConns > 0 && t.inbound >= t.cfg.MaxConns {
		return &LimitError{Limit: "max-conns", Max: t.cfg.MaxConns}
	}
	ip = ip.Unmap()
	if t.cfg.MaxConnsPerIP > 0 && t.perIP[ip] >= t.cfg.MaxConnsPerIP {
		return &LimitError{Limit: "max-conns-per-ip", Max: t.cfg.MaxConnsPerIP}
	}
	t.inbound++
	t.perIP[ip]++
	return nil
}

func (t *Table) release(ip netip.Addr) {
	ip = ip.Unmap()
	t.limMu.Lock()
	t.inbound--
	if n := t.perIP[ip] - 1; n > 0 {
		t.perIP[ip] = n
	} else {
		delete(t.perIP, ip)
	}
	t.limMu.Unlock()
}

// remove takes a closing connection out and publishes its event.
func (t *Table) remove(c *Conn) {
	sh := t.shard(c.ID)
	sh.mu.Lock()
	delete(sh.m, c.ID)
	sh.mu.Unlock()
	if c.Direction == "in" {
		t.release(c.RemoteAddr().Addr())
	}
	c.mu.Lock()
	r := c.reason
	c.mu.Unlock()
	t.remember(c.ID, r)
	if t.cfg.ClosedEvent != ModeOff && c.closedEvent.Load() {
		t.events.Publish(c.event(time.Now()))
	}
	// Counted last: a close that shows in the counters has its event out.
	if i := r.index(); i >= 0 {
		t.closed[i].Add(1)
	}
}

func (t *Table) remember(id uint64, r Reason) {
	t.recentMu.Lock()
	defer t.recentMu.Unlock()
	if len(t.recentIDs) < cap(t.recentIDs) {
		t.recentIDs = append(t.recentIDs, id)
	} else {
		delete(t.recent, t.recentIDs[t.recentPos])
		t.recentIDs[t.recentPos] = id
		t.recentPos = (t.recentPos + 1) % len(t.recentIDs)
	}
	t.recent[id] = r
}

// Get returns the live connection with the id.
func (t *Table) Get(id uint64) (*Conn, bool) {
	sh := t.shard(id)
	sh.mu.RLock()
	c, ok := sh.m[id]
	sh.mu.RUnlock()
	return c, ok
}

// State returns the state of a conid; for a connection that closed
// recently it is StateNotFound with the close reason.
func (t *Table) State(id uint64) (State, Reason) {
	if c, ok := t.Get(id); ok {
		return c.State(), ""
	}
	t.recentMu.Lock()
	defer t.recentMu.Unlock()
	return StateNotFound, t.recent[id]
}

// Len returns the number of connections in the table.
func (t *Table) Len() int {
	n := 0
	for i := range t.shards {
		sh := &t.shards[i]
		sh.mu.RLock()
		n += len(sh.m)
		sh.mu.RUnlock()
	}
	return n
}

// conns returns the live connections with id > after, sorted by id.
func (t *Table) conns(after uint64) []*Conn {
	type entry struct {
		id uint64
		c  *Conn
	}
	es := make([]entry, 0, t.Len()+16)
	for i := range t.shards {
		sh := &t.shards[i]
		sh.mu.RLock()
		for id, c := range sh.m {
			if id > after {
				es = append(es, entry{id, c})
			}
		}
		sh.mu.RUnlock()
	}
	// Sorting the ids beside the pointers keeps the compares in cache.
	slices.SortFunc(es, func(a, b entry) int { return cmp.Compare(a.id, b.id) })
	out := make([]*Conn, len(es))
	for i := range es {
		out[i] = es[i].c
	}
	return out
}

// Filter selects connections for List. Zero fields match everything.
type Filter struct {
	State     State
	Proto     string
	Direction string
	Listener  string
	Remote    netip.Prefix // an address is a /32 or /128
	Port      uint16       // remote port, with Remote
	IdleMin   time.Duration
	After     uint64 // conid cursor
	Limit     int
}

// ParseRemote parses an IP, IP:port or CIDR into the Remote filter.
func ParseRemote(s string) (netip.Prefix, uint16, error) {
	if ap, err := netip.ParseAddrPort(s); err == nil {
		a := ap.Addr().Unmap()
		return netip.PrefixFrom(a, a.BitLen()), ap.Port(), nil
	}
	if a, err := netip.ParseAddr(s); err == nil {
		a = a.Unmap()
		return netip.PrefixFrom(a, a.BitLen()), 0, nil
	}
	if strings.Contains(s, "/") {
		if p, err := netip.ParsePrefix(s); err == nil {
			return p.Masked(), 0, nil
		}
	}
	return netip.Prefix{}, 0, fmt.Errorf("remote %q: want an IP, IP:port or CIDR (e.g. 10.0.0.0/8)", s)
}

func (f *Filter) match(in *Info) bool {
	switch {
	case f.State != 0 && in.State != f.State,
		f.Proto != "" && in.Proto != f.Proto,
		f.Direction != "" && in.Direction != f.Direction,
		f.Listener != "" && in.Listener != f.Listener,
		f.IdleMin > 0 && in.Idle < f.IdleMin:
		return false
	}
	if f.Remote.IsValid() {
		if !f.Remote.Contains(in.Remote.Addr().Unmap()) {
			return false
		}
		if f.Port != 0 && in.Remote.Port() != f.Port {
			return false
		}
	}
	return true
}

// List returns snapshots of the connections that match f, sorted by conid.
// With a limit, next is the cursor for the following page (0: no more).
func (t *Table) List(f Filter) (infos []Info, next uint64) {
	cs := t.conns(f.After)
	n := len(cs)
	if f.Limit > 0 {
		n = min(n, f.Limit)
	}
	infos = make([]Info, 0, n)
	now := t.clock()
	for _, c := range cs {
		in := c.info(now)
		if !f.match(&in) {
			continue
		}
		if f.Limit > 0 && len(infos) == f.Limit {
			return infos, infos[len(infos)-1].ID
		}
		infos = append(infos, in)
	}
	return infos, 0
}

// CloseAll closes every connection for reason r; with ReasonShutdown the
// partners of closed legs get ReasonShutdown too, and nothing new should
// be added afterwards.
func (t *Table) CloseAll(r Reason) int {
	if r == ReasonShutdown {
		t.shutdown.Store(true)
	}
	n := 0
	for _, c := range t.conns(0) {
		if c.Close(r, nil) {
			n++
		}
	}
	return n
}

// Stats are the table's counters.
type Stats struct {
	Conns     int
	ByState   map[string]int
	ByProto   map[string]int
	Accepted  uint64
	Dialled   uint64
	Rejected  uint64
	Closed    uint64
	ByReason  map[Reason]uint64
	EventSeq  uint64
	EventDrop uint64
	Uptime    time.Duration
}

// Stats counts the table.
func (t *Table) Stats() Stats {
	s := Stats{ByState: map[string]int{}, ByProto: map[string]int{}, ByReason: map[Reason]uint64{},
		Accepted: t.accepted.Load(), Dialled: t.dialled.Load(), Rejected: t.rejected.Load(),
		EventSeq: t.events.LastSeq(), EventDrop: t.events.Dropped(), Uptime: time.Since(t.epoch)}
	for i := range t.shards {
		sh := &t.shards[i]
		sh.mu.RLock()
		for _, c := range sh.m {
			s.Conns++
			s.ByState[c.State().String()]++
			s.ByProto[c.Proto]++
		}
		sh.mu.RUnlock()
	}
	for i, r := range Reasons {
		n := t.closed[i].Load()
		s.ByReason[r] = n
		s.Closed += n
	}
	return s
}
