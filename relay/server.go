package relay

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/tcpops/tcpops/conn"
	"github.com/tcpops/tcpops/sock"
)

// Server accepts on listeners and relays each connection.
type Server struct {
	table  *conn.Table
	poller *sock.Poller
	log    *slog.Logger
	conf   atomic.Pointer[Config] // replaced whole by SetConfig

	acceptErrors atomic.Uint64
	wg           sync.WaitGroup // dials queued or in flight
	backends     backendLog     // warnings about failing backends

	// dialMu guards the fields below.
	dialMu  sync.Mutex
	dialQ   []dialJob
	dialers int
}

// Config configures a Server.
type Config struct {
	Keepalive        sock.KeepaliveConfig // applied to every accepted and dialled socket
	DialTimeout      time.Duration        // backend connect timeout (default 5s)
	HandshakeTimeout time.Duration        // TLS handshake, WebSocket upgrade request (default 10s)
	TLSCert, TLSKey  string               // default certificate and key files for tls:// and wss://
}

// NewServer starts a Server over the table. Close stops its poller.
func NewServer(t *conn.Table, cfg Config, log *slog.Logger) (*Server, error) {
	if err := cfg.Keepalive.Validate(); err != nil {
		return nil, err
	}
	if cfg.DialTimeout <= 0 {
		cfg.DialTimeout = 5 * time.Second
	}
	if cfg.HandshakeTimeout <= 0 {
		cfg.HandshakeTimeout = 10 * time.Second
	}
	p, err := sock.NewPoller()
	if err != nil {
		return nil, err
	}
	s := &Server{table: t, poller: p, log: log}
	s.conf.Store(&cfg)
	go func() {
		if err := p.Run(); err != nil {
			log.Error("poller stopped", "err", err)
		}
	}()
	return s, nil
}

// SetConfig replaces the defaults for connections and listeners from now
// on (a configuration reload); live connections keep what they have.
func (s *Server) SetConfig(cfg Config) error {
	if err := cfg.Keepalive.Validate(); err != nil {
		return err
	}
	old := s.conf.Load()
	if cfg.DialTimeout <= 0 {
		cfg.DialTimeout = old.DialTimeout
	}
	if cfg.HandshakeTimeout <= 0 {
		cfg.HandshakeTimeout = old.HandshakeTimeout
	}
	s.conf.Store(&cfg)
	return nil
}

// keepaliveFor is the keepalive of a listener's connections (shared, not
// to be changed: a Config is replaced whole).
func (s *Server) keepaliveFor(l *Listener) *sock.KeepaliveConfig {
	if l.Keepalive != nil {
		return l.Keepalive
	}
	return &s.conf.Load().Keepalive
}

// KeepaliveDefault is the keepalive of listeners that set none: off, on
// (the kernel's defaults) or IDLE,COUNT,INTERVAL.
func (s *Server) KeepaliveDefault() string { return s.conf.Load().Keepalive.String() }

// Close stops the poller after waiting for dials in flight. Close the
// connections (Table.CloseAll) first.
func (s *Server) Close() error {
	s.wg.Wait()
	return s.poller.Close()
}

// AcceptErrors counts accept calls that failed (EMFILE and the like).
func (s *Server) AcceptErrors() uint64 { return s.acceptErrors.Load() }

// Watched counts the plain TCP sockets in the poller.
func (s *Server) Watched() int { return s.poller.Watched() }

// Bound is a listener whose socket is open: Serve accepts on it.
type Bound struct {
	s  *Server
	l  Listener
	ln net.Listener
	// Known at Serve, for its connections: the local address when the
	// socket is bound to one address (not a wildcard), and the keepalive
	// every accepted socket inherits from the listening one.
	local  netip.AddrPort
	kaBase *sock.Keepalive
	// noDelay says the listening socket had TCP_NODELAY before it
	// listened, so that every connection accepted from it has it too.
	noDelay bool
}

// loadTLS loads the certificate of a tls:// or wss:// listener into l.
func (s *Server) loadTLS(l *Listener) error {
	if !l.isTLS() {
		return nil
	}
	c := s.conf.Load()
	cfg, err := loadTLS(l, c.TLSCert, c.TLSKey)
	if err != nil {
		return err
	}
	l.tlsConfig = cfg
	return nil
}

// Listen opens the listening socket of l, loading its certificate for
// tls:// and wss://. Go's own keepalive default is switched off here:
// every accepted socket gets ours explicitly.
func (s *Server) Listen(ctx context.Context, l Listener) (*Bound, error) {
	if err := s.loadTLS(&l); err != nil {
		return nil, err
	}
	// TCP_NODELAY before listen(2): every connection accepted inherits it.
	lc := net.ListenConfig{KeepAlive: -1, Control: func(_, _ string, rc syscall.RawConn) error {
		var err error
		if cerr := rc.Control(func(fd uintptr) { err = sock.SetNoDelay(fd) }); cerr != nil {
			return cerr
		}
		return err
	}}
	ln, err := lc.Listen(ctx, "tcp", l.Addr)
	if err != nil {
		return nil, fmt.Errorf("listen %s: %w%s", l.Name, err, privilegedPortHint(l.Addr, err))
	}
	return &Bound{s: s, l: l, ln: ln, noDelay: true}, nil
}

// Addr is the address the socket is bound to (a port 0 resolved).
func (b *Bound) Addr() net.Addr { return b.ln.Addr() }

// Listener is the listener b serves.
func (b *Bound) Listener() Listener { return b.l }

// Close closes the socket of a listener that is not served.
func (b *Bound) Close() error { return b.ln.Close() }

// Serve accepts until ctx ends, then closes the socket; it returns once it
// accepts no more, so that a shutdown can then drain the table knowing no
// connection comes in behind it. Temporary accept errors (out of file
// descriptors) back off up to 1 s instead of spinning.
func (b *Bound) Serve(ctx context.Context) error {
	s, l, ln := b.s, b.l, b.ln
	var hand *chanListener
	if l.isWS() {
		// Only new connections stop with the listener: an upgrade in
		// progress goes on (a reload or an upgrade of the daemon keeps it),
		// and a shutdown closes it through the table with its reason.
		cl := s.wsServer(ctx, l, ln.Addr())
		hand = cl
		defer cl.Close()
	}
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()
	// Plain TCP connections are accepted as bare descriptors.
	var fl *sock.Listener
	// (Those of accept_proxy listeners once their header is read.)
	if tl, ok := ln.(*net.TCPListener); ok && l.Scheme == conn.ProtoTCP && l.AcceptProxy == ProxyOff {
		var err error
		if fl, err = sock.NewListener(tl); err != nil {
			ln.Close()
			return fmt.Errorf("accept %s: %w", l.Name, err)
		}
		// Both descriptors hold the listening socket open: this one is
		// closed with ln, however Serve ends.
		defer fl.Close()
		defer context.AfterFunc(ctx, func() { fl.Close() })()
	}
	defer ln.Close()
	if a := sock.AddrPort(ln.Addr()); a.IsValid() && !a.Addr().IsUnspecified() && a.Addr().Zone() == "" {
		b.local = a
	}
	if sc, ok := ln.(syscall.Conn); ok {
		if ka, err := sock.ListeningKeepalive(sc); err == nil {
			b.kaBase = &ka
		}
	}
	var backoff time.Duration
	for {
		var err error
		if fl != nil {
			var fd *sock.FD
			var remote netip.AddrPort
			if fd, remote, err = fl.Accept(); err == nil {
				backoff = 0
				s.acceptFD(ctx, fd, remote, b)
				continue
			}
		} else {
			var c net.Conn
			if c, err = ln.Accept(); err == nil {
				backoff = 0
				s.accept(ctx, c.(*net.TCPConn), b, hand)
				continue
			}
		}
		if ctx.Err() != nil {
			return nil
		}
		if !temporary(err) {
			return fmt.Errorf("accept %s: %w", l.Name, err)
		}
		s.acceptErrors.Add(1)
		backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
		s.log.Warn("accept failed; backing off", "listener", l.Name, "err", err, "backoff", backoff)
		select {
		case <-time.After(backoff):
		case <-ctx.Done():
			return nil
		}
	}
}

func temporary(err error) bool {
	for _, e := range []error{syscall.EMFILE, syscall.ENFILE, syscall.ENOBUFS, syscall.ENOMEM, syscall.ECONNABORTED} {
		if errors.Is(err, e) {
			return true
		}
	}
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// acceptFD puts an accepted plain TCP connection in the table and starts
// relaying it.
func (s *Server) acceptFD(ctx context.Context, fd *sock.FD, remote netip.AddrPort, b *Bound) {
	l := b.l
	local := b.local // the address the listener is bound to, else the kernel's
	if !local.IsValid() {
		var err error
		if local, err = fd.LocalAddr(); err != nil {
			s.acceptErrors.Add(1)
			s.log.Debug("accepted connection already gone", "listener", l.Name, "err", err)
			fd.Close(false)
			return
		}
	}
	if !b.noDelay {
		fd.SetNoDelay() // a listening socket handed over without it
	}
	lg := &fdLeg{fd: fd, s: s}
	in, ok := s.tableIn(l, conn.Spec{Local: local, Remote: remote, TCP: fd, Close: lg.close, KeepaliveNow: b.kaBase})
	if !ok {
		return
	}
	lg.c = in
	s.relayIn(ctx, lg, &b.l)
}

// relayIn relays a plain TCP connection to its listener's backend (l is
// not changed, and may be shared by every connection of the listener).
func (s *Server) relayIn(ctx context.Context, lg *fdLeg, l *Listener) {
	switch ap, literal := netipAddrPort(l.Backend); {
	case l.Backend == Echo:
		s.relayFD(lg, nil)
	case literal:
		s.dialFD(lg, l, ap)
	default: // a host name: resolved and dialled on the dialling goroutines
		s.queueDial(dialJob{ctx: ctx, c: lg.c, fd: lg, l: *l})
	}
}

// accept puts an accepted TLS or WebSocket connection, or any connection
// of an accept_proxy listener, in the table and starts its handshake.
func (s *Server) accept(ctx context.Context, tcp *net.TCPConn, b *Bound, hand *chanListener) {
	l := b.l
	in, ok := s.tableIn(l, conn.Spec{
		Local: sock.AddrPort(tcp.LocalAddr()), Remote: sock.AddrPort(tcp.RemoteAddr()),
		TCP: tcp, Close: closeSocket, Handshake: true, AwaitClient: l.AcceptProxy != ProxyOff,
		KeepaliveNow: b.kaBase,
	})
	if !ok {
		return
	}
	sc := &sockConn{TCPConn: tcp, c: in}
	if l.AcceptProxy != ProxyOff {
		go func() {
			if s.takeProxyHeader(tcp, in, &l) {
				s.handshakeIn(ctx, sc, l, hand)
			}
		}()
		return
	}
	s.handshakeIn(ctx, sc, l, hand)
}

// handshakeIn goes on with an accepted connection: the TLS handshake or
// WebSocket upgrade; a plain TCP one (behind a PROXY protocol header, read
// by now) becomes a bare descriptor and is relayed.
func (s *Server) handshakeIn(ctx context.Context, sc *sockConn, l Listener, hand *chanListener) {
	in := sc.c
	switch l.Scheme {
	case conn.ProtoTCP:
		fd, err := sock.TakeConn(sc.TCPConn)
		if err != nil {
			closeFor(in, err)
			return
		}
		lg := &fdLeg{fd: fd, s: s, c: in}
		in.Established(fd, lg.close, conn.StateOK)
		if in.Closing() {
			return
		}
		s.relayIn(ctx, lg, &l)
	case conn.ProtoTLS:
		go s.serveTLS(ctx, sc, l)
	case conn.ProtoWS:
		if !hand.push(sc) {
			s.listenerGone(in)
		}
	case conn.ProtoWSS:
		go func() {
			if tc, ok := s.handshake(sc, l.tlsConfig); ok && !hand.push(tc) {
				s.listenerGone(in)
			}
		}()
	}
}

// listenerGone closes a WebSocket connection whose listener stopped
// before its upgrade request could be served: for a shutdown, with its
// reason; else (a reload or upgrade removed the listener) as an error that
// says so.
func (s *Server) listenerGone(c *conn.Conn) {
	if s.table.ShuttingDown() {
		c.Close(conn.ReasonShutdown, nil)
		return
	}
	c.Close(conn.ReasonError, errors.New("websocket: the listener stopped before the upgrade request was read"))
}

// tableIn adds an accepted connection of listener l to the table, with
// the listener's protocol, limits, lifetime and keepalive; spec gives its
// addresses and transport. A connection the table refuses has been closed
// by it (see conn.Table.Add).
func (s *Server) tableIn(l Listener, spec conn.Spec) (*conn.Conn, bool) {
	spec.Proto, spec.Direction, spec.Listener = l.Scheme, conn.DirIn, l.Name
	spec.State = conn.StateAccepting
	spec.Lifetime, spec.MaxConns = l.Lifetime, l.MaxConns
	spec.Keepalive = s.keepaliveFor(&l)
	c, err := s.table.Add(spec)
	var le *conn.LimitError
	switch {
	case err == nil:
		return c, true
	case errors.As(err, &le):
		s.log.Debug("connection refused by limit", "listener", l.Name, "remote", spec.Remote.String(), "err", err)
	case errors.Is(err, conn.ErrShutdown):
		s.log.Debug("connection closed: shutting down", "listener", l.Name, "remote", spec.Remote.String())
	default:
		s.log.Error("accepted connection closed at once", "listener", l.Name, "remote", spec.Remote.String(), "err", err)
	}
	return nil, false
}

// tableOut adds the outbound leg of in (dialling its backend) to the table
// and pairs the two. It reports false when either leg is gone: then both
// are closed (in with the table's error if the leg could not be added, the
// survivor of a failed pairing with reason peer).
func (s *Server) tableOut(in *conn.Conn, l Listener, spec conn.Spec) (*conn.Conn, bool) {
	spec.Proto, spec.Direction, spec.Listener = conn.ProtoTCP, conn.DirOut, l.Name
	spec.State, spec.Lifetime = conn.StateConnecting, l.Lifetime
	out, err := s.table.Add(spec)
	if err != nil {
		if errors.Is(err, conn.ErrShutdown) {
			in.Close(conn.ReasonShutdown, nil)
		} else {
			in.Close(conn.ReasonError, err)
		}
		return nil, false
	}
	if testHookBeforePair != nil {
		testHookBeforePair(in, out)
	}
	if !conn.Pair(in, out) {
		// One leg closed before it had a partner to take along.
		in.ClosePeer()
		out.ClosePeer()
		return nil, false
	}
	return out, true
}

// testHookBeforePair, set by tests, runs between adding an outbound leg
// and pairing it, to force what a close at that moment does.
var testHookBeforePair func(in, out *conn.Conn)

// serveLeg relays an established TLS or WebSocket leg: to itself for
// echo, else to a new outbound leg.
func (s *Server) serveLeg(ctx context.Context, in *leg, l Listener) {
	if l.Backend == Echo {
		relayStream(in, nil)
		return
	}
	s.queueDial(dialJob{ctx: ctx, c: in.c, in: in, l: l})
}

// maxDialers bounds the goroutines dialling backends at once. A burst of
// thousands of accepts would otherwise be thousands of goroutines, whose
// grown stacks the runtime gives back to the kernel only slowly: measured
// here, 9,000 relayed connections held 3 KB more each in RSS that way.
const maxDialers = 256

// dialJob is an inbound connection waiting for its backend: a plain TCP
// leg (fd) or a TLS or WebSocket one (in).
type dialJob struct {
	ctx context.Context
	c   *conn.Conn
	fd  *fdLeg
	in  *leg
	l   Listener
}

// queueDial hands a dial to a dialling goroutine, starting one if fewer
// than maxDialers run; they end when the queue is empty.
func (s *Server) queueDial(j dialJob) {
	s.wg.Add(1)
	s.dialMu.Lock()
	s.dialQ = append(s.dialQ, j)
	start := s.dialers < maxDialers
	if start {
		s.dialers++
	}
	s.dialMu.Unlock()
	if start {
		go s.dialer()
	}
}

func (s *Server) dialer() {
	for {
		s.dialMu.Lock()
		if len(s.dialQ) == 0 {
			s.dialers--
			s.dialQ = nil // let a burst's backing array go
			s.dialMu.Unlock()
			return
		}
		j := s.dialQ[0]
		s.dialQ[0] = dialJob{}
		s.dialQ = s.dialQ[1:]
		s.dialMu.Unlock()
		if !j.c.Closing() { // the client may have gone while queued
			s.dial(j)
		}
		s.wg.Done()
	}
}

// dial connects the outbound leg of j and starts relaying.
func (s *Server) dial(j dialJob) {
	in, l := j.c, j.l
	dialTimeout := s.conf.Load().DialTimeout
	// Not ended with the listener: a connection accepted before a reload,
	// an upgrade or a shutdown stopped it goes on (or is closed by the
	// table with its own reason); closing the leg cancels the dial.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(j.ctx), dialTimeout)
	defer cancel()
	remote, _ := netipAddrPort(l.Backend)
	out, ok := s.tableOut(in, l, conn.Spec{Remote: remote, Close: func(*conn.Conn, bool) error { cancel(); return nil }})
	if !ok {
		return
	}
	d := net.Dialer{KeepAlive: -1}
	nc, err := d.DialContext(ctx, "tcp", l.Backend)
	if err != nil {
		var ne net.Error
		if errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout()) {
			err = fmt.Errorf("dial %s: no answer within %s", l.Backend, dialTimeout)
		}
		if !out.Closing() { // not a client gone or a shutdown
			s.backends.failed(s.log, &l, err)
		}
		out.Close(conn.ReasonError, err)
		return
	}
	tcp := nc.(*net.TCPConn)
	if l.ProxyProtocol != 0 {
		tcp.SetWriteDeadline(time.Now().Add(dialTimeout))
		err := writeProxyHeader(in, out, l.ProxyProtocol, tcp)
		tcp.SetWriteDeadline(time.Time{})
		if err != nil {
			tcp.Close()
			s.backends.failed(s.log, &l, err)
			closeFor(out, err)
			return
		}
	}
	if j.fd == nil {
		// To a TLS or WebSocket client: both directions on goroutines.
		if !s.establish(out, tcp, closeSocket, l) {
			return
		}
		wait, err := waitReadable(tcp)
		if err != nil {
			out.Close(conn.ReasonError, err)
			return
		}
		relayStream(j.in, &leg{c: out, r: tcp, w: tcp, closeWrite: tcp.CloseWrite, count: true, wait: wait})
		return
	}
	fd, err := sock.TakeConn(tcp)
	if err != nil {
		out.Close(conn.ReasonError, err)
		return
	}
	lg := &fdLeg{c: out, fd: fd, s: s}
	if !s.establish(out, fd, lg.close, l) {
		return
	}
	s.relayFD(j.fd, lg)
}

// establish gives a dialled leg its socket, the listener's keepalive, and
// then state ok; false when it was closed meanwhile or keepalive failed.
// The socket is a new one: only what differs from a new socket's
// keepalive is set.
func (s *Server) establish(out *conn.Conn, tcp syscall.Conn, closer conn.Closer, l Listener) bool {
	if !out.Attach(tcp, closer) {
		return false
	}
	var now *sock.Keepalive
	if ka, ok := sock.NewSocketKeepalive(); ok {
		now = &ka
	}
	if err := out.ApplyKeepalive(*s.keepaliveFor(&l), now); err != nil {
		out.Close(conn.ReasonError, err)
		return false
	}
	out.Established(nil, nil, conn.StateOK)
	return !out.Closing()
}
