package conn

import (
	"math"
	"net/netip"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/tcpops/tcpops/sock"
)

// Closer ends the transport of a connection; reset asks for an RST instead
// of a FIN where the transport can send one.
type Closer func(c *Conn, reset bool) error

// Spec describes a connection being added to the table.
type Spec struct {
	Proto     Proto
	Direction Direction
	Listener  string
	Local     netip.AddrPort
	Remote    netip.AddrPort
	State     State // StateAccepting or StateConnecting
	// TCP is the kernel socket (a *net.TCPConn, under TLS or WebSocket
	// too, or a *sock.FD); nil while an outbound leg is still dialling.
	TCP syscall.Conn
	// Close ends the transport. While dialling it cancels the dial.
	Close Closer
	// Handshake says the connection becomes usable by Established (a TLS
	// handshake or WebSocket upgrade), not by its first byte read.
	Handshake bool
	// Lifetime, if set, replaces the table's default idle lifetime.
	Lifetime *time.Duration
	// MaxConns limits the inbound connections of this Listener (0: none).
	MaxConns int
	// AwaitClient says Remote is a balancer's: the client's address comes
	// later (a PROXY protocol header) through SetClient, and the
	// max-conns-per-ip limit waits for it.
	AwaitClient bool
	// Keepalive, if set, is applied to TCP once the connection is admitted
	// and before it is visible in the table, so that none is ever seen
	// without it (and a connection refused by a limit costs no socket
	// option). If that fails the connection is closed with reason error.
	// Nothing is read back: the kernel's values are read the first time a
	// snapshot (List, Info) asks for them.
	Keepalive *sock.KeepaliveConfig
	// KeepaliveNow, if set, is the keepalive TCP has now (inherited from
	// its listening socket, or a new socket's): only what differs from it
	// is set (sock.SetKeepaliveOver).
	KeepaliveNow *sock.Keepalive
}

// Conn is one connection in the table. Its methods are safe for concurrent use.
// Its fields are ordered to leave no padding: every idle connection
// carries one.
type Conn struct {
	ID        uint64
	Proto     Proto
	Listener  string
	created   int64 // table clock (ns since its epoch, monotonic): Created
	Direction Direction

	handshake bool // set at Add: Established, not the first read, makes it usable
	// Guarded by mu (below), here for the layout.
	timed    bool // the table's lifetimes time it (or will again: Release)
	closing  bool
	reset    bool // closed by an RST of ours
	kaUnread bool // keepalive was set without reading it back: keepaliveLocked
	// hidx is c's place in the heap of the table's lifetimes + 1 (0: not
	// in it), guarded by lifetimes.mu, as due is.
	hidx int32

	t *Table

	state       atomic.Int32
	closedEvent atomic.Bool
	bytesIn     atomic.Uint64
	bytesOut    atomic.Uint64
	lastActive  atomic.Int64 // table clock, ns
	due         int64        // table clock when the lifetimes look at it

	// mu guards the fields below.
	mu       sync.Mutex
	local    netip.AddrPort
	remote   netip.AddrPort
	tcp      syscall.Conn
	closer   Closer
	peer     *Conn
	lifetime time.Duration
	anchor   int64 // table clock when the lifetime was last set
	reason   Reason
	ka       *sock.Keepalive // last read back from the kernel
	// countedIP is the address counted for max-conns-per-ip (invalid
	// while none is).
	countedIP netip.Addr
	// x holds what few connections have (nil: none of it); x() reads it.
	x *connExt

	rate rateSample // bytes per second, for views that ask
}

// Created is when the connection was accepted or dialled.
func (c *Conn) Created() time.Time {
	if c.created == noCreated {
		return time.Time{}
	}
	return c.t.epoch.Add(time.Duration(c.created))
}

const noCreated = math.MinInt64

// connExt is what few connections have, apart so that the others do not
// carry it (an idle connection's memory is mostly its Conn).
type connExt struct {
	// via is the balancer that named remote in a PROXY protocol header.
	via      netip.AddrPort
	tls      *TLSInfo
	ws       *WSInfo
	ov       *overrides // settings changed for a while (nil: none yet)
	drain    *Draining  // served by the old process after an upgrade
	errText  string
	wsCode   int
	wsReason string
}

var noExt connExt

// ext is c.x for reading: an empty one when there is none; c.mu held.
func (c *Conn) ext() *connExt {
	if c.x == nil {
		return &noExt
	}
	return c.x
}

// extW is c.x for writing, made when there is none; c.mu held.
func (c *Conn) extW() *connExt {
	if c.x == nil {
		c.x = &connExt{}
	}
	return c.x
}

// State returns the current state.
func (c *Conn) State() State { return State(c.state.Load()) }

// Touch records n bytes read from (in) or written to (out) the socket.
// The first byte read makes an accepting connection usable, unless it
// waits for a handshake.
func (c *Conn) Touch(in, out int) {
	if in > 0 {
		c.bytesIn.Add(uint64(in))
		c.t.bytesIn.Add(uint64(in))
		if !c.handshake {
			c.state.CompareAndSwap(int32(StateAccepting), int32(StateOK))
		}
	}
	if out > 0 {
		c.bytesOut.Add(uint64(out))
		c.t.bytesOut.Add(uint64(out))
	}
	c.lastActive.Store(c.t.clock())
}

// Established marks a connection usable: a dial, TLS handshake or
// WebSocket upgrade finished.
// tcp and closer replace the ones given at Add (nil keeps them).
func (c *Conn) Established(tcp syscall.Conn, closer Closer, state State) {
	if (tcp != nil || closer != nil) && !c.Attach(tcp, closer) {
		return
	}
	if !c.state.CompareAndSwap(int32(StateConnecting), int32(state)) {
		c.state.CompareAndSwap(int32(StateAccepting), int32(state))
	}
	c.lastActive.Store(c.t.clock())
}

// Attach gives a dialled connection its socket and closer (nil keeps the
// one given at Add) before Established, so that its options can be set
// while it is not yet usable. If it was closed meanwhile, the new
// transport goes with it and Attach reports false.
func (c *Conn) Attach(tcp syscall.Conn, closer Closer) bool {
	var local, remote netip.AddrPort
	if tcp != nil {
		c.mu.Lock()
		// The address a bare socket was connected to, or a client named by
		// a PROXY protocol header, is kept: no need to ask the kernel.
		keep := c.ext().via.IsValid() || c.remote.IsValid() && isFD(tcp)
		c.mu.Unlock()
		if keep {
			local = sock.LocalAddr(tcp)
		} else {
			local, remote = sock.Addrs(tcp)
		}
	}
	c.mu.Lock()
	if tcp != nil {
		c.tcp, c.local = tcp, local
		if remote.IsValid() {
			c.remote = remote
		}
	}
	if closer != nil {
		c.closer = closer
	}
	closing := c.closing
	c.mu.Unlock()
	if closing && closer != nil {
		closer(c, false)
	}
	return !closing
}

func isFD(tcp syscall.Conn) bool {
	_, ok := tcp.(*sock.FD)
	return ok
}

// Reason is why the connection closed ("" while it is open).
func (c *Conn) Reason() Reason {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.reason
}

// SawEOF marks that the peer sent FIN: the connection is being torn down
// (the other direction may still drain).
func (c *Conn) SawEOF() {
	for {
		s := c.state.Load()
		if s < 0 {
			return
		}
		if c.state.CompareAndSwap(s, int32(StateEOF)) {
			return
		}
	}
}

// Peer returns the partner leg, or nil.
func (c *Conn) Peer() *Conn {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.peer
}

// Pair makes a and b each other's partner: when one closes, so does the
// other. It pairs nothing and reports false if either is already closing
// (its close has run without a partner to take along): the caller then
// closes the other with ClosePeer.
func Pair(a, b *Conn) bool { return pair(a, b, false) }

// pair joins a and b under both locks (in conid order) unless either is
// closing; held, a hold (closing without a reason) does not count.
func pair(a, b *Conn, held bool) bool {
	first, second := a, b
	if b.ID < a.ID {
		first, second = b, a
	}
	first.mu.Lock()
	defer first.mu.Unlock()
	second.mu.Lock()
	defer second.mu.Unlock()
	if a.reason != "" || b.reason != "" || !held && (a.closing || b.closing) {
		return false
	}
	a.peer, b.peer = b, a
	return true
}

// ClosePeer closes c because its partner ended (reason peer, or shutdown
// while the table shuts down); for a leg whose Pair failed.
func (c *Conn) ClosePeer() bool {
	if c.t.shutdown.Load() {
		return c.Close(ReasonShutdown, nil)
	}
	return c.Close(ReasonPeer, nil)
}

// Closing reports whether the connection is being closed by us (Close was
// called). A connection whose peer sent FIN (state eof) and that still
// drains the other way is not closing.
func (c *Conn) Closing() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.closing
}

// SetWSClose records a WebSocket close code and reason for the event.
func (c *Conn) SetWSClose(code int, reason string) {
	c.mu.Lock()
	x := c.extW()
	x.wsCode, x.wsReason = code, reason
	c.mu.Unlock()
}

// syscallConn returns the kernel socket, or ErrNoSocket while dialling.
func (c *Conn) syscallConn() (syscall.Conn, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closing {
		return nil, ErrClosed
	}
	if c.ext().drain != nil {
		return nil, ErrDraining
	}
	if c.tcp == nil {
		return nil, ErrNoSocket
	}
	return c.tcp, nil
}

// Keepalive reads the socket's keepalive state from the kernel.
func (c *Conn) Keepalive() (sock.Keepalive, error) {
	s, err := c.syscallConn()
	if err != nil {
		return sock.Keepalive{}, err
	}
	return sock.GetKeepalive(s)
}

// SetKeepalive applies k to the socket and returns what the kernel holds
// afterwards.
func (c *Conn) SetKeepalive(k sock.KeepaliveConfig) (sock.Keepalive, error) {
	s, err := c.syscallConn()
	if err != nil {
		return sock.Keepalive{}, err
	}
	ka, err := sock.ApplyKeepalive(s, k)
	if err != nil {
		return sock.Keepalive{}, err
	}
	c.mu.Lock()
	c.ka, c.kaUnread = &ka, false
	c.mu.Unlock()
	return ka, nil
}

// ApplyKeepalive applies k to the socket as Add does, setting only what
// differs from now when now is known (sock.SetKeepaliveOver), without
// reading it back: the next snapshot reads what the kernel holds.
func (c *Conn) ApplyKeepalive(k sock.KeepaliveConfig, now *sock.Keepalive) error {
	s, err := c.syscallConn()
	if err != nil {
		return err
	}
	if err := sock.SetKeepaliveOver(s, k, now); err != nil {
		return err
	}
	c.mu.Lock()
	c.ka, c.kaUnread = nil, true
	c.mu.Unlock()
	return nil
}

// keepaliveLocked is the keepalive the kernel holds, as last read; when it
// was set without reading it back (Add, ApplyKeepalive) it is read now
// and kept: it changes only through this package. c.mu is held.
func (c *Conn) keepaliveLocked() *sock.Keepalive {
	if c.kaUnread && c.tcp != nil && !c.closing && c.ext().drain == nil {
		if ka, err := sock.GetKeepalive(c.tcp); err == nil {
			c.ka, c.kaUnread = &ka, false
		}
	}
	return c.ka
}

// Addrs returns the local and remote addresses.
func (c *Conn) Addrs() (local, remote netip.AddrPort) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.local, c.remote
}

// TCPInfo reads the kernel's TCP_INFO of the socket.
func (c *Conn) TCPInfo() (sock.TCPInfo, error) {
	s, err := c.syscallConn()
	if err != nil {
		return sock.TCPInfo{}, err
	}
	return sock.GetTCPInfo(s)
}

// SetClosedEvent turns the closed event of this connection on or off.
func (c *Conn) SetClosedEvent(on bool) error {
	if on && c.t.cfg.Load().ClosedEvent == ModeOff {
		return ErrEventsOff
	}
	c.closedEvent.Store(on)
	return nil
}

// ClosedEvent reports whether this connection's close will be published.
func (c *Conn) ClosedEvent() bool { return c.closedEvent.Load() }

// Lifetime returns the idle lifetime (0: none) and the time left until the
// connection expires if it stays idle.
func (c *Conn) Lifetime() (lifetime, expiresIn time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.lifetime, c.expiresInLocked(c.t.clock())
}

func (c *Conn) expiresInLocked(now int64) time.Duration {
	if c.lifetime == 0 {
		return 0
	}
	base := max(c.anchor, c.lastActive.Load())
	return max(time.Duration(base+int64(c.lifetime)-now), 0)
}

// SetLifetime sets the idle lifetime. The deadline moves to now + d at once
// (shortening takes effect immediately); later traffic moves it to last
// activity + d. d = 0 removes the limit.
func (c *Conn) SetLifetime(d time.Duration) (expiresIn time.Duration, err error) {
	if d < 0 {
		return 0, ErrBadLifetime
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closing {
		return 0, ErrClosed
	}
	if c.ext().drain != nil {
		return 0, ErrDraining
	}
	c.setLifetimeLocked(d)
	return c.expiresInLocked(c.t.clock()), nil
}

func (c *Conn) setLifetimeLocked(d time.Duration) {
	c.lifetime = d
	c.anchor = c.t.clock()
	if d == 0 {
		c.untimeLocked(false)
		return
	}
	c.timeLocked(d)
}

// Close closes the connection for reason r (err carries the socket error
// for reason error and friends), removes it from the table, publishes its
// closed event and closes its partner with reason peer. Only the first
// Close counts; it reports whether this call was it.
func (c *Conn) Close(r Reason, err error) bool { return c.close(r, err, false) }

// Reset is Close with an RST instead of a FIN.
func (c *Conn) Reset(r Reason) bool { return c.close(r, nil, true) }

func (c *Conn) close(r Reason, err error, reset bool) bool {
	c.mu.Lock()
	if c.closing {
		c.mu.Unlock()
		return false
	}
	c.closing = true
	c.reason = r
	c.reset = reset
	if err != nil {
		c.extW().errText = err.Error()
	}
	if c.timed {
		c.untimeLocked(false)
	}
	c.stopOverridesLocked()
	closer, peer := c.closer, c.peer
	c.mu.Unlock()

	c.state.Store(int32(r.teardown()))
	if closer != nil {
		closer(c, reset)
	}
	c.t.remove(c)
	if peer != nil {
		pr := ReasonPeer
		if c.t.shutdown.Load() {
			pr = ReasonShutdown
		} else if peer.State() == StateEOF {
			// It had ended by itself (FIN) and was draining the other way.
			pr = ReasonEOF
		}
		peer.Close(pr, nil)
	}
	return true
}

// event builds the closed event, its addresses apart (the ring keeps
// them without making strings); c.mu must not be held.
func (c *Conn) event(now time.Time) (Event, evAddrs) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e := Event{
		Time: now, Reason: c.reason, ConnID: c.ID, Proto: c.Proto, Direction: c.Direction,
		Listener: c.Listener, Via: addrString(c.ext().via),
		Duration: now.Sub(c.Created()), BytesIn: c.bytesIn.Load(), BytesOut: c.bytesOut.Load(),
		Error: c.ext().errText, WSCloseCode: c.ext().wsCode, WSCloseReason: c.ext().wsReason, Reset: c.reset,
	}
	if c.peer != nil {
		e.Peer = c.peer.ID
	}
	return e, evAddrs{local: c.local, remote: c.remote}
}

// RemoteAddr returns the remote address (invalid while an outbound leg to
// a host name is still dialling).
func (c *Conn) RemoteAddr() netip.AddrPort {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.remote
}

func addrString(a netip.AddrPort) string {
	if !a.IsValid() {
		return ""
	}
	return a.String()
}

// Info is a snapshot of a connection.
type Info struct {
	ID          uint64
	Peer        uint64
	Proto       Proto
	Direction   Direction
	Listener    string
	Local       netip.AddrPort
	Remote      netip.AddrPort
	State       State
	Created     time.Time
	Idle        time.Duration
	Lifetime    time.Duration
	ExpiresIn   time.Duration
	ClosedEvent bool
	BytesIn     uint64
	BytesOut    uint64
	// Keepalive is what the kernel holds, read when keepalive was last
	// set through the table or, for what a connection was given when it
	// was tabled, by the first snapshot (nil before any was set);
	// Conn.Keepalive reads it afresh.
	Keepalive *sock.Keepalive
	// Via is the balancer's address when a PROXY protocol header named
	// Remote (invalid otherwise).
	Via netip.AddrPort
	// TLS describes the session once its handshake is done (nil before,
	// and for other protocols).
	TLS *TLSInfo
	// WS is set on an upgraded WebSocket connection.
	WS *WSInfo
	// Overrides are the settings changed for a while (nil: none).
	Overrides []Override
	// Draining is set on a connection the old process still serves
	// after an upgrade.
	Draining *Draining
	// Rate is bytes in + out per second (set when Rated: a View asked).
	Rate  float64
	Rated bool
	// TCPInfo and Suspect are set when a View asked to inspect the
	// connection: the kernel's TCP_INFO (nil without a socket) and the
	// suspect rules it meets.
	TCPInfo *sock.TCPInfo
	Suspect []Suspect
}

// Info takes a snapshot of c (without kernel state: see Keepalive, TCPInfo).
func (c *Conn) Info() Info { return c.info(c.t.clock()) }

func (c *Conn) info(now int64) Info {
	c.mu.Lock()
	defer c.mu.Unlock()
	in := Info{
		ID: c.ID, Proto: c.Proto, Direction: c.Direction, Listener: c.Listener,
		Local: c.local, Remote: c.remote,
		State: c.State(), Created: c.Created(), Idle: time.Duration(now - c.lastActive.Load()),
		Lifetime: c.lifetime, ExpiresIn: c.expiresInLocked(now), ClosedEvent: c.closedEvent.Load(),
		BytesIn: c.bytesIn.Load(), BytesOut: c.bytesOut.Load(), Keepalive: c.keepaliveLocked(),
		Via: c.ext().via, TLS: c.ext().tls, WS: c.ext().ws, Overrides: c.overridesLocked(), Draining: c.ext().drain,
	}
	if c.peer != nil {
		in.Peer = c.peer.ID
	} else if c.ext().drain != nil {
		in.Peer = c.ext().drain.Peer
	}
	return in
}

// TCP returns the kernel socket (nil while dialling).
func (c *Conn) TCP() syscall.Conn {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.tcp
}
