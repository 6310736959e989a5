package conn

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tcpops/tcpops/sock"
)

// Errors of the table; the RPC layer maps them to error codes.
var (
	ErrNotFound    = errors.New("no such connection")
	ErrClosed      = errors.New("connection is closing")
	ErrNoSocket    = errors.New("connection has no socket yet (dial in progress)")
	ErrLimit       = errors.New("connection limit reached")
	ErrBadLifetime = errors.New("lifetime must be >= 0")
	ErrEventsOff   = errors.New("closed events are off in this daemon (--closed-event off)")
	ErrShutdown    = errors.New("the daemon is shutting down")
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
	cfg    atomic.Pointer[Config] // replaced whole by SetLimits
	epoch  time.Time
	events *Events
	nextID atomic.Uint64
	life   lifetimes

	shards [shards]shard

	shutdown atomic.Bool  // set once by Shutdown: Add refuses from then on
	open     atomic.Int64 // tabled and not yet through remove

	accepted atomic.Uint64 // inbound connections tabled
	dialled  atomic.Uint64 // outbound legs tabled
	rejected atomic.Uint64 // inbound refused by a limit
	closed   [8]atomic.Uint64
	bytesIn  atomic.Uint64 // every byte read, all connections
	bytesOut atomic.Uint64 // every byte written

	onClose   func(Closed)   // set before use; may be nil
	onRestore func(Restored) // set before use; may be nil

	// limMu guards the fields below. It may be taken while a Conn's mu is
	// held (SetClient), never the other way round.
	limMu       sync.Mutex
	inbound     int
	perIP       map[netip.Addr]int
	perListener map[string]int

	// rateMu guards rateAt, when rates were last sampled (table clock).
	rateMu sync.Mutex
	rateAt int64

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
		epoch:       time.Now(),
		events:      NewEvents(cfg.EventBuffer),
		perIP:       make(map[netip.Addr]int),
		perListener: make(map[string]int),
		recent:      make(map[uint64]Reason, cfg.RecentClosed),
		recentIDs:   make([]uint64, 0, cfg.RecentClosed),
	}
	for i := range t.shards {
		t.shards[i].m = make(map[uint64]*Conn)
	}
	t.life.t = t
	t.cfg.Store(&cfg)
	return t
}

// SetLimits changes the default lifetime and the limits for connections
// added from now on (a configuration reload); live connections keep what
// they have. The closed-event mode and the ring size stay as they were.
func (t *Table) SetLimits(lifetime time.Duration, maxConns, maxConnsPerIP int) {
	c := *t.cfg.Load()
	c.Lifetime, c.MaxConns, c.MaxConnsPerIP = lifetime, maxConns, maxConnsPerIP
	t.cfg.Store(&c)
}

// Closed describes a connection that left the table, for OnClose.
type Closed struct {
	Proto     Proto
	Direction Direction
	Reason    Reason
	Duration  time.Duration
	BytesIn   uint64
	BytesOut  uint64
}

// OnClose sets a function told of every connection that leaves the table
// (metrics). Set it before connections are added; it must not block.
func (t *Table) OnClose(fn func(Closed)) { t.onClose = fn }

// Config returns the table's configuration.
func (t *Table) Config() Config { return *t.cfg.Load() }

// Events returns the closed-event ring.
func (t *Table) Events() *Events { return t.events }

// clock is the table's monotonic clock in ns.
func (t *Table) clock() int64 { return int64(time.Since(t.epoch)) }

func (t *Table) shard(id uint64) *shard { return &t.shards[id%shards] }

// Add puts a new connection in the table and returns it, usable by its
// transport. On error the connection is not in the table and its transport
// has been closed through spec.Close: refused by a limit (a *LimitError,
// counted, with an RST and no conid); an outbound leg once the table is
// shutting down (ErrShutdown, no conid: its client leg is closed already);
// or tabled and closed at once with its closed event, an inbound one
// because the table is shutting down (ErrShutdown) or either because its
// keepalive could not be set (reason error).
func (t *Table) Add(s Spec) (*Conn, error) {
	// Open from here on: Shutdown sets its flag and then waits for open to
	// come down to 0, so it either waits for this Add to be through
	// (tabled and, if need be, closed with its event) or is seen by it.
	t.open.Add(1)
	if s.Direction == DirOut && t.shutdown.Load() {
		// Its client leg is closed already, event and all; this one never
		// got a conid.
		t.open.Add(-1)
		if s.Close != nil {
			s.Close(&Conn{t: t, tcp: s.TCP}, false)
		}
		return nil, ErrShutdown
	}
	cfg := t.cfg.Load()
	var ip netip.Addr // counted for max-conns-per-ip
	if s.Direction == DirIn && !s.AwaitClient {
		ip = s.Remote.Addr().Unmap()
	}
	if s.Direction == DirIn {
		if err := t.admit(cfg, ip, s.Listener, s.MaxConns); err != nil {
			t.open.Add(-1)
			t.rejected.Add(1)
			if s.Close != nil {
				s.Close(&Conn{t: t, tcp: s.TCP}, true)
			}
			return nil, err
		}
		t.accepted.Add(1)
	} else {
		t.dialled.Add(1)
	}
	now := t.clock()
	c := &Conn{
		ID: t.nextID.Add(1), Proto: s.Proto, Direction: s.Direction, Listener: s.Listener,
		created: now, t: t, handshake: s.Handshake,
		local: s.Local, remote: s.Remote, tcp: s.TCP, closer: s.Close, countedIP: ip,
	}
	c.state.Store(int32(s.State))
	c.lastActive.Store(now)
	c.closedEvent.Store(cfg.ClosedEvent == ModeAll)
	var kaErr error
	if s.Keepalive != nil && s.TCP != nil {
		if err := sock.SetKeepaliveOver(s.TCP, *s.Keepalive, s.KeepaliveNow); err != nil {
			kaErr = fmt.Errorf("keepalive: %w", err)
		} else {
			c.kaUnread = true
		}
	}
	sh := t.shard(c.ID)
	sh.mu.Lock()
	sh.m[c.ID] = c
	sh.mu.Unlock()
	// Checked after the insert: Shutdown sets the flag before it looks at
	// the table, so a connection is either seen there or sees the flag.
	if t.shutdown.Load() {
		c.Close(ReasonShutdown, nil)
		return nil, ErrShutdown
	}
	if kaErr != nil {
		c.Close(ReasonError, kaErr)
		return nil, kaErr
	}
	lifetime := cfg.Lifetime
	if s.Lifetime != nil {
		lifetime = *s.Lifetime
	}
	if lifetime > 0 {
		c.mu.Lock()
		if !c.closing {
			c.setLifetimeLocked(lifetime)
		}
		c.mu.Unlock()
	}
	return c, nil
}

func (t *Table) admit(cfg *Config, ip netip.Addr, listener string, listenerMax int) error {
	t.limMu.Lock()
	defer t.limMu.Unlock()
	if cfg.MaxConns > 0 && t.inbound >= cfg.MaxConns {
		return &LimitError{Limit: "max-conns", Max: cfg.MaxConns}
	}
	if listenerMax > 0 && t.perListener[listener] >= listenerMax {
		return &LimitError{Limit: "max_conns of listener " + listener, Max: listenerMax}
	}
	if ip.IsValid() {
		if err := t.admitIPLocked(cfg, ip); err != nil {
			return err
		}
	}
	t.inbound++
	t.perListener[listener]++
	return nil
}

// admitIPLocked counts one more connection from ip, or refuses it; limMu
// is held.
func (t *Table) admitIPLocked(cfg *Config, ip netip.Addr) error {
	if cfg.MaxConnsPerIP > 0 && t.perIP[ip] >= cfg.MaxConnsPerIP {
		return &LimitError{Limit: "max-conns-per-ip", Max: cfg.MaxConnsPerIP}
	}
	t.perIP[ip]++
	return nil
}

// release gives back what admit counted; ip is invalid when no per-IP
// count was taken.
func (t *Table) release(ip netip.Addr, listener string) {
	t.limMu.Lock()
	t.inbound--
	if ip.IsValid() {
		if n := t.perIP[ip] - 1; n > 0 {
			t.perIP[ip] = n
		} else {
			delete(t.perIP, ip)
		}
	}
	if n := t.perListener[listener] - 1; n > 0 {
		t.perListener[listener] = n
	} else {
		delete(t.perListener, listener)
	}
	t.limMu.Unlock()
}

// remove takes a closing connection out and publishes its event.
// unlist takes c out of its shard and, for an inbound connection, out of
// the limits' counts (ip is what it was counted under); false when it was
// not in the table.
func (t *Table) unlist(c *Conn, ip netip.Addr) bool {
	sh := t.shard(c.ID)
	sh.mu.Lock()
	_, ok := sh.m[c.ID]
	delete(sh.m, c.ID)
	sh.mu.Unlock()
	if ok && c.Direction == DirIn {
		t.release(ip, c.Listener)
	}
	return ok
}

func (t *Table) remove(c *Conn) {
	c.mu.Lock()
	r, ip := c.reason, c.countedIP
	c.mu.Unlock()
	// Remembered first: a conid is always either in the table or among
	// the recently closed, never briefly in neither (State without reason).
	t.remember(c.ID, r)
	t.unlist(c, ip)
	if t.cfg.Load().ClosedEvent != ModeOff && c.closedEvent.Load() {
		e, a := c.event(time.Now())
		t.events.publish(&e, a)
	}
	// Counted last: a close that shows in the counters has its event out.
	in, out := c.bytesIn.Load(), c.bytesOut.Load()
	if i := r.index(); i >= 0 {
		t.closed[i].Add(1)
	}
	if t.onClose != nil {
		t.onClose(Closed{Proto: c.Proto, Direction: c.Direction, Reason: r, Duration: time.Since(c.Created()), BytesIn: in, BytesOut: out})
	}
	t.open.Add(-1)
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

// Open returns the connections in the table that are not closing (or
// held for a handover), in no order.
func (t *Table) Open() []*Conn {
	var out []*Conn
	for i := range t.shards {
		sh := &t.shards[i]
		sh.mu.RLock()
		for _, c := range sh.m {
			out = append(out, c)
		}
		sh.mu.RUnlock()
	}
	return slices.DeleteFunc(out, (*Conn).Closing)
}

// Filter selects connections for List. Zero fields match everything.
type Filter struct {
	State     State
	Proto     Proto
	Direction Direction
	Listener  string
	Remote    netip.Prefix // an address is a /32 or /128
	Port      uint16       // remote port, with Remote
	IdleMin   time.Duration
	After     uint64 // conid cursor
	Limit     int
	View      View // order, page, free text, rates, suspects
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
		f.Direction != 0 && in.Direction != f.Direction,
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
	if f.View.set() {
		infos, next, _ = t.ListView(f)
		return infos, next
	}
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

// CloseAll closes every connection in the table for reason r and returns
// how many it closed. Connections added meanwhile stay open.
func (t *Table) CloseAll(r Reason) int {
	n := 0
	for _, c := range t.conns(0) {
		if c.Close(r, nil) {
			n++
		}
	}
	return n
}

// Shutdown refuses every connection added from now on (Add closes it with
// reason shutdown and returns ErrShutdown), closes every connection with
// reason shutdown (their partners too) and waits until each close begun
// anywhere has published its event, or ctx ends. After it returns the
// table is empty and no event is still to come.
func (t *Table) Shutdown(ctx context.Context) (closed int, err error) {
	t.shutdown.Store(true)
	closed = t.CloseAll(ReasonShutdown)
	// Closes that other goroutines began before the flag was set may still
	// be publishing: wait for the last one.
	for t.open.Load() > 0 {
		select {
		case <-ctx.Done():
			return closed, fmt.Errorf("shutdown: %d connection(s) still closing: %w", t.open.Load(), ctx.Err())
		case <-time.After(time.Millisecond):
		}
	}
	return closed, nil
}

// ShuttingDown reports whether Shutdown has begun.
func (t *Table) ShuttingDown() bool { return t.shutdown.Load() }

// Stats are the table's counters.
type Stats struct {
	Conns     int
	ByState   map[string]int
	ByProto   map[Proto]int
	Accepted  uint64
	Dialled   uint64
	Rejected  uint64
	Closed    uint64
	ByReason  map[Reason]uint64
	EventSeq  uint64
	EventDrop uint64
	Uptime    time.Duration
	// BytesIn and BytesOut count every byte read and written, by open
	// and closed connections alike: they only grow.
	BytesIn  uint64
	BytesOut uint64
	// ByKind counts open connections by state, proto and listener.
	ByKind map[Kind]int
}

// Kind is a connection's state, proto and listener, for counting.
type Kind struct {
	State    State
	Proto    Proto
	Listener string
}

// Stats counts the table.
func (t *Table) Stats() Stats {
	s := Stats{ByState: map[string]int{}, ByProto: map[Proto]int{}, ByReason: map[Reason]uint64{}, ByKind: map[Kind]int{},
		Accepted: t.accepted.Load(), Dialled: t.dialled.Load(), Rejected: t.rejected.Load(),
		EventSeq: t.events.LastSeq(), EventDrop: t.events.Dropped(), Uptime: time.Since(t.epoch),
		BytesIn: t.bytesIn.Load(), BytesOut: t.bytesOut.Load()}
	for i := range t.shards {
		sh := &t.shards[i]
		sh.mu.RLock()
		for _, c := range sh.m {
			st := c.State()
			s.Conns++
			s.ByState[st.String()]++
			s.ByProto[c.Proto]++
			s.ByKind[Kind{st, c.Proto, c.Listener}]++
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
