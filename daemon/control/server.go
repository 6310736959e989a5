// Package control is the control socket's JSON-RPC 2.0 server: it answers
// the methods of package rpc over the connection table, lets each caller do
// what its SO_PEERCRED allows, and streams closed events to followers.
package control

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"net/netip"
	"os"
	"os/user"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sourcegraph/jsonrpc2"

	"github.com/tcpops/tcpops/conn"
	"github.com/tcpops/tcpops/rpc"
	"github.com/tcpops/tcpops/sock"
)

// RelayStats is what the relay adds to tcpops.stats.
type RelayStats interface {
	AcceptErrors() uint64
}

// Config configures a Server.
type Config struct {
	Table        *conn.Table
	Relay        RelayStats // may be nil
	AdminGroup   string     // group name whose members may change connections
	Log          *slog.Logger
	WriteTimeout time.Duration // per write to a client; default 10s
	IdleTimeout  time.Duration // a client with no request for this long is closed (followers excepted); default 5m
	MaxClients   int           // control connections at once; default 1024
	// OnRequest, if set, is told of every request answered: its method
	// ("" when the line never named one) and code (0: success).
	OnRequest func(method string, code int)
	// NATS, if set, reports the NATS link for tcpops.stats.
	NATS func() *rpc.NATSStats
	// Upgrade, if set, answers tcpops.upgrade.
	Upgrade func(binary string, drain time.Duration) (rpc.UpgradeResult, error)
	// Listeners, if set, lists the listeners serving now (tcpops.stats).
	Listeners func() []rpc.Listener
}

// MethodNames lists every method the server answers.
func MethodNames() []string {
	var out []string
	for _, m := range (&Server{}).table() {
		out = append(out, m.name)
	}
	return out
}

// Server answers JSON-RPC on the control socket.
type Server struct {
	cfg      Config
	t        *conn.Table
	log      *slog.Logger
	adminGID int // -1: no admin group
	methods  map[string]*method

	clients       atomic.Int64  // control connections open
	writeTimeouts atomic.Uint64 // clients cut off for not reading
	idleTimeouts  atomic.Uint64 // clients closed for sending no request
	badRequests   atomic.Uint64 // lines answered by the stream itself
	refused       atomic.Uint64 // clients refused past MaxClients

	followers sync.WaitGroup
	followMu  sync.Mutex      // orders followers.Add before Wait's followers.Wait
	stopping  bool            // Wait has begun: no new follower
	connCtx   context.Context // ends every client connection
	endConns  context.CancelFunc
}

// method is one entry of the handler table.
type method struct {
	name     string
	params   string // for system.methodHelp and error messages
	help     string
	readOnly bool
	fn       func(*call) (any, error)
}

// call is one request being handled.
type call struct {
	s      *Server
	m      *method
	conn   *jsonrpc2.Conn
	st     *stream
	cred   sock.Cred
	params *json.RawMessage
	after  func()     // runs once the reply is written
	audit  *bulkAudit // set by a call with a selector, for its log line
}

// NewServer builds the server over the table.
func NewServer(cfg Config) (*Server, error) {
	if cfg.WriteTimeout <= 0 {
		cfg.WriteTimeout = 10 * time.Second
	}
	if cfg.IdleTimeout <= 0 {
		cfg.IdleTimeout = 5 * time.Minute
	}
	if cfg.MaxClients <= 0 {
		cfg.MaxClients = 1024
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	s := &Server{cfg: cfg, t: cfg.Table, log: cfg.Log, adminGID: -1}
	if cfg.AdminGroup != "" {
		g, err := user.LookupGroup(cfg.AdminGroup)
		if err != nil {
			return nil, fmt.Errorf("--admin-group %q: %w", cfg.AdminGroup, err)
		}
		s.adminGID, _ = strconv.Atoi(g.Gid)
	}
	s.connCtx, s.endConns = context.WithCancel(context.Background())
	s.methods = map[string]*method{}
	for _, m := range s.table() {
		s.methods[m.name] = m
	}
	return s, nil
}

// Serve accepts control connections until ctx ends, then closes ln.
// Connections already open stay until Wait.
func (s *Server) Serve(ctx context.Context, ln *net.UnixListener) {
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()
	var backoff time.Duration
	for {
		c, err := ln.AcceptUnix()
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			s.log.Warn("control accept failed; backing off", "err", err, "backoff", backoff)
			time.Sleep(backoff)
			continue
		}
		backoff = 0
		s.ServeConn(c)
	}
}

// ServeConn serves one control connection.
func (s *Server) ServeConn(c *net.UnixConn) {
	cred, err := sock.PeerCred(c)
	if err != nil {
		s.log.Warn("control connection without peer credentials; closing it", "err", err)
		c.Close()
		return
	}
	st := newStream(c, s.cfg.WriteTimeout)
	if n := s.clients.Load(); n >= int64(s.cfg.MaxClients) {
		s.refused.Add(1)
		s.log.Warn("control client refused: too many", "uid", cred.UID, "pid", cred.PID, "max", s.cfg.MaxClients)
		st.reject(nil, rpc.CodeInternal, fmt.Sprintf("too many control clients (%d); try again later", s.cfg.MaxClients))
		c.Close()
		return
	}
	st.idleTimeout = s.cfg.IdleTimeout
	st.onIdle = func() { s.idleTimeouts.Add(1) }
	st.onBad = func(code int) {
		s.badRequests.Add(1)
		if s.cfg.OnRequest != nil {
			s.cfg.OnRequest("", code)
		}
	}
	st.onTimeout = func() {
		s.writeTimeouts.Add(1)
		s.log.Warn("control client stopped reading; cut off", "uid", cred.UID, "pid", cred.PID)
	}
	h := &handler{s: s, cred: cred, st: st}
	s.clients.Add(1)
	jc := jsonrpc2.NewConn(s.connCtx, st, h, jsonrpc2.SetLogger(discardLogger{}))
	go func() {
		<-jc.DisconnectNotify()
		s.clients.Add(-1)
	}()
}

// Clients is the number of control connections open.
func (s *Server) Clients() int64 { return s.clients.Load() }

// addFollower counts a new follower, unless Wait has begun.
func (s *Server) addFollower() bool {
	s.followMu.Lock()
	defer s.followMu.Unlock()
	if s.stopping {
		return false
	}
	s.followers.Add(1)
	return true
}

// Wait waits for events followers to deliver what is left in the ring (the
// ring must be closed first), then closes every client connection.
func (s *Server) Wait() {
	s.followMu.Lock()
	s.stopping = true
	s.followMu.Unlock()
	s.followers.Wait()
	s.endConns()
}

type discardLogger struct{}

func (discardLogger) Printf(string, ...any) {}

type handler struct {
	s    *Server
	cred sock.Cred
	st   *stream
}

// Handle runs one request in order on the connection's read goroutine.
func (h *handler) Handle(ctx context.Context, c *jsonrpc2.Conn, req *jsonrpc2.Request) {
	s := h.s
	var res any
	var err error
	cl := &call{s: s, conn: c, st: h.st, cred: h.cred, params: req.Params}
	m, ok := s.methods[req.Method]
	switch {
	case !ok:
		err = &jsonrpc2.Error{Code: rpc.CodeMethodNotFound, Message: fmt.Sprintf("unknown method %q (system.listMethods lists them)", req.Method)}
	case !m.readOnly && !s.admin(h.cred):
		err = &jsonrpc2.Error{Code: rpc.CodeDenied, Message: fmt.Sprintf("permission denied: %s changes connections; uid %d may only read (allowed: root, uid %d%s)",
			m.name, h.cred.UID, os.Geteuid(), s.groupHint())}
		s.log.Warn("rpc denied", "uid", h.cred.UID, "pid", h.cred.PID, "method", m.name)
	default:
		cl.m = m
		bulk := !m.readOnly && isBulk(req.Params)
		if !m.readOnly && !bulk {
			s.log.Info("rpc", "uid", h.cred.UID, "pid", h.cred.PID, "method", m.name, "params", rawString(req.Params))
		}
		res, err = m.fn(cl)
		if bulk {
			// One line for the whole set, once its outcome is known.
			defer s.logBulk(h.cred, m.name, req.Params, cl.audit, err)
		}
	}
	rerr := s.answered(req.Method, err)
	if req.Notif {
		return
	}
	if rerr != nil {
		c.ReplyWithError(ctx, req.ID, rerr)
		return
	}
	if err := h.st.writeResult(req.ID, res); err != nil {
		c.Close()
		return
	}
	if cl.after != nil {
		cl.after()
	}
}

func rawString(r *json.RawMessage) string {
	if r == nil {
		return "{}"
	}
	return string(*r)
}

func (s *Server) groupHint() string {
	if s.cfg.AdminGroup == "" {
		return ""
	}
	return ", group " + s.cfg.AdminGroup
}

// admin reports whether the caller may change connections.
func (s *Server) admin(c sock.Cred) bool {
	ok, _ := s.adminWhy(c)
	return ok
}

// adminWhy is admin with the rule that decided, for people.
func (s *Server) adminWhy(c sock.Cred) (bool, string) {
	switch {
	case c.UID == 0:
		return true, "uid 0 is root"
	case int(c.UID) == os.Geteuid():
		return true, fmt.Sprintf("uid %d is the daemon's own", c.UID)
	}
	no := fmt.Sprintf("uid %d is not root, not the daemon's uid %d", c.UID, os.Geteuid())
	if s.adminGID < 0 {
		return false, no + ", and the daemon has no --admin-group"
	}
	no += ", not in --admin-group " + s.cfg.AdminGroup
	if int(c.GID) == s.adminGID {
		return true, fmt.Sprintf("gid %d is --admin-group %s", c.GID, s.cfg.AdminGroup)
	}
	u, err := user.LookupId(strconv.Itoa(int(c.UID)))
	if err != nil {
		return false, no
	}
	gids, err := u.GroupIds()
	if err == nil && slices.Contains(gids, strconv.Itoa(s.adminGID)) {
		return true, fmt.Sprintf("uid %d is a member of --admin-group %s", c.UID, s.cfg.AdminGroup)
	}
	return false, no
}

// rpcError turns any error of a handler into its JSON-RPC error.
func (s *Server) rpcError(err error) *jsonrpc2.Error {
	var je *jsonrpc2.Error
	var pe *ParamError
	var se *sock.ParamError
	var oe *sock.OpError
	var ue *upgradeError
	var re *RefusedError
	switch {
	case errors.As(err, &ue):
		return &jsonrpc2.Error{Code: rpc.CodeInternal, Message: ue.Error()}
	case errors.As(err, &je):
		return je
	case errors.As(err, &re):
		return refusedError(re)
	case errors.As(err, &pe):
		return &jsonrpc2.Error{Code: rpc.CodeInvalidParams, Message: pe.Msg}
	case errors.As(err, &se):
		return &jsonrpc2.Error{Code: rpc.CodeInvalidParams, Message: "param " + se.Error()}
	case errors.Is(err, conn.ErrNotFound), errors.Is(err, conn.ErrClosed):
		return &jsonrpc2.Error{Code: rpc.CodeNotFound, Message: err.Error()}
	case errors.Is(err, conn.ErrEventsOff), errors.Is(err, conn.ErrBadLifetime):
		return &jsonrpc2.Error{Code: rpc.CodeInvalidParams, Message: err.Error()}
	case errors.As(err, &oe), errors.Is(err, conn.ErrNoSocket), errors.Is(err, conn.ErrDraining):
		return &jsonrpc2.Error{Code: rpc.CodeSocket, Message: err.Error()}
	}
	s.log.Error("rpc internal error", "err", err)
	return &jsonrpc2.Error{Code: rpc.CodeInternal, Message: "internal error: " + err.Error()}
}

// notFound is the error of a changing method given an unknown conid.
func notFound(id uint64) error {
	return fmt.Errorf("conid %d: %w (see tcpops.list)", id, conn.ErrNotFound)
}

func (cl *call) get(id uint64) (*conn.Conn, error) {
	c, ok := cl.s.t.Get(id)
	if !ok {
		return nil, notFound(id)
	}
	return c, nil
}

func seconds(d time.Duration) float64 { return math.Round(d.Seconds()*1000) / 1000 }

// wireConn converts a snapshot.
func wireConn(in conn.Info) rpc.Conn {
	c := rpc.Conn{
		Identity: rpc.Identity{ConnID: in.ID, Peer: in.Peer, Proto: string(in.Proto), Direction: in.Direction.String(),
			Listener: in.Listener, Local: addrString(in.Local), Remote: addrString(in.Remote), Via: addrString(in.Via)},
		State: int(in.State), StateName: in.State.String(),
		Created: in.Created.UTC(), IdleS: seconds(in.Idle), LifetimeS: seconds(in.Lifetime),
		ExpiresInS: seconds(in.ExpiresIn), Keepalive: wireKeepalive(in.Keepalive), ClosedEvent: in.ClosedEvent,
		BytesIn: in.BytesIn, BytesOut: in.BytesOut,
		TLS: (*rpc.TLS)(in.TLS), WS: (*rpc.WS)(in.WS), Overrides: wireOverrides(in.Overrides), Draining: wireDraining(in.Draining),
		TCPInfo: (*rpc.TCPInfo)(in.TCPInfo),
	}
	if in.Rated {
		c.BytesPerS = new(math.Round(in.Rate))
	}
	for _, s := range in.Suspect {
		c.Suspect = append(c.Suspect, string(s))
	}
	return c
}

// wireOverrides converts a connection's overrides (none stays nil).
func wireOverrides(ovs []conn.Override) []rpc.Override {
	var out []rpc.Override
	for _, o := range ovs {
		out = append(out, rpc.Override{What: o.What.String(), Until: o.Until.UTC()})
	}
	return out
}

// wireKeepalive converts what the kernel reported (nil stays nil).
func wireKeepalive(k *sock.Keepalive) *rpc.Keepalive {
	if k == nil {
		return nil
	}
	return &rpc.Keepalive{Enabled: k.Enabled, IdleS: k.Idle, Count: k.Count, IntervalS: k.Interval, UserTimeoutMs: k.UserTimeoutMs}
}

func addrString(a netip.AddrPort) string {
	if !a.IsValid() {
		return ""
	}
	return a.String()
}

// WireEvent is a closed event as the API and the event log show it.
func WireEvent(e *conn.Event) rpc.Event {
	return rpc.Event{
		Seq: e.Seq, Time: e.Time.UTC(), Event: e.Name(), Reason: string(e.Reason),
		Identity: rpc.Identity{ConnID: e.ConnID, Peer: e.Peer, Proto: string(e.Proto), Direction: e.Direction.String(),
			Listener: e.Listener, Local: e.Local, Remote: e.Remote, Via: e.Via},
		DurationS: seconds(e.Duration), BytesIn: e.BytesIn, BytesOut: e.BytesOut,
		Error: e.Error, WSCloseCode: e.WSCloseCode, WSCloseReason: e.WSCloseReason, Reset: e.Reset,
	}
}

func versionInfo() rpc.Version { return rpc.Build() }

// answered turns a method's error into its JSON-RPC error (nil for none)
// and tells OnRequest (metrics) how the call ended, for the socket and for
// Do alike.
func (s *Server) answered(method string, err error) *jsonrpc2.Error {
	var rerr *jsonrpc2.Error
	if err != nil {
		rerr = s.rpcError(err)
	}
	if s.cfg.OnRequest != nil {
		code := 0
		if rerr != nil {
			code = int(rerr.Code)
		}
		s.cfg.OnRequest(method, code)
	}
	return rerr
}
