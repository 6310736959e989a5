package relay

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/coder/websocket"

	"github.com/tcpops/tcpops/conn"
	"github.com/tcpops/tcpops/relay/frame"
)

// A ws:// or wss:// listener hands its tabled (and, for wss, handshaken)
// sockets to an http.Server of its own through chanListener. The handler
// upgrades; after that the connection is relayed like any other, message
// payloads to the backend as bytes, backend bytes back as messages.

// chanListener is a net.Listener fed by our accept loop.
type chanListener struct {
	addr    net.Addr
	conns   chan net.Conn
	done    chan struct{}
	once    sync.Once
	timeout time.Duration // for the upgrade request
}

func newChanListener(addr net.Addr, timeout time.Duration) *chanListener {
	return &chanListener{addr: addr, conns: make(chan net.Conn), done: make(chan struct{}), timeout: timeout}
}

func (l *chanListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return &httpConn{Conn: c, sc: sockConnOf(c), timeout: l.timeout}, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

// push hands c to the HTTP server; false after Close.
func (l *chanListener) push(c net.Conn) bool {
	select {
	case l.conns <- c:
		return true
	case <-l.done:
		return false
	}
}

func (l *chanListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

func (l *chanListener) Addr() net.Addr { return l.addr }

// httpConn is a connection as the HTTP server of a ws:// or wss://
// listener has it. A response the server writes by itself, before the
// handler has the request (one it could not parse, or headers over the
// limit), or a request not complete in time, is recorded as why the
// connection failed.
type httpConn struct {
	net.Conn
	sc      *sockConn
	timeout time.Duration
	handled atomic.Bool // the handler has the request
}

func (c *httpConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	if err != nil && !c.handled.Load() {
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			c.sc.fail("websocket upgrade: no complete request within %s", c.timeout)
		}
	}
	return n, err
}

func (c *httpConn) Write(b []byte) (int, error) {
	if !c.handled.Load() {
		if status, ok := bytes.CutPrefix(b, []byte("HTTP/1.1 ")); ok {
			status, _, _ = bytes.Cut(status[:min(len(status), 200)], []byte("\r\n"))
			c.sc.fail("http request refused (%s)", status)
		}
	}
	return c.Conn.Write(b)
}

type httpConnKey struct{}

// sockConnOf finds our socket under what the HTTP server was given.
func sockConnOf(c net.Conn) *sockConn {
	if nc, ok := c.(interface{ NetConn() net.Conn }); ok {
		c = nc.NetConn()
	}
	sc, _ := c.(*sockConn)
	return sc
}

// wsServer starts the HTTP server of a ws:// or wss:// listener.
func (s *Server) wsServer(ctx context.Context, l Listener, addr net.Addr) *chanListener {
	cl := newChanListener(addr, s.conf.Load().HandshakeTimeout)
	hs := &http.Server{
		Handler:           s.wsHandler(ctx, l),
		ReadHeaderTimeout: s.conf.Load().HandshakeTimeout,
		IdleTimeout:       s.conf.Load().HandshakeTimeout,
		MaxHeaderBytes:    16 << 10,
		ErrorLog:          log.New(io.Discard, "", 0),
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			return context.WithValue(ctx, httpConnKey{}, c)
		},
	}
	go hs.Serve(cl)
	return cl
}

func isUpgrade(r *http.Request) bool {
	return strings.EqualFold(r.Header.Get("Upgrade"), "websocket")
}

func (s *Server) wsHandler(ctx context.Context, l Listener) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hc, _ := r.Context().Value(httpConnKey{}).(*httpConn)
		if hc == nil || hc.sc == nil {
			http.Error(w, "internal error", http.StatusInternalServerError)
			return
		}
		hc.handled.Store(true)
		sc := hc.sc
		w.Header().Set("Connection", "close")
		if r.URL.Path != l.Path {
			sc.fail("http %s %s: no WebSocket endpoint there (404)", r.Method, r.URL.Path)
			http.Error(w, fmt.Sprintf("tcpops: no WebSocket endpoint at %s (it is at %s)", r.URL.Path, l.Path), http.StatusNotFound)
			return
		}
		if !isUpgrade(r) {
			sc.fail("http %s %s: not a WebSocket upgrade (426)", r.Method, r.URL.Path)
			w.Header().Set("Upgrade", "websocket")
			http.Error(w, "tcpops: this is a WebSocket endpoint; send a WebSocket upgrade request", http.StatusUpgradeRequired)
			return
		}
		origin := r.Header.Get("Origin")
		opts := &websocket.AcceptOptions{OriginPatterns: l.Origins, CompressionMode: websocket.CompressionDisabled}
		offers := subprotocolOffers(r)
		if sub := chooseSubprotocol(offers, l.Subprotocols); sub != "" {
			// The library answers the first of its list that the client
			// offers; given only our choice, it answers that.
			opts.Subprotocols = []string{sub}
		} else if l.SubprotocolRequired {
			speaks := strings.Join(l.Subprotocols, ", ")
			sc.fail("websocket upgrade: the client offered subprotocols %s; this listener requires one of %s (400)", listOrNone(offers), speaks)
			http.Error(w, fmt.Sprintf("tcpops: this WebSocket endpoint requires a subprotocol: one of %s in Sec-WebSocket-Protocol (offered: %s)", speaks, listOrNone(offers)), http.StatusBadRequest)
			return
		}
		sw := &statusWriter{ResponseWriter: w}
		ws, err := websocket.Accept(sw, r, opts)
		if err != nil {
			why := strings.TrimPrefix(err.Error(), "failed to accept WebSocket connection: ")
			if sw.code == http.StatusForbidden {
				sc.fail("websocket upgrade: origin %.200q not allowed (403): %s", origin, why)
			} else {
				sc.fail("websocket upgrade: bad request (%d): %s", sw.code, why)
			}
			return
		}
		sc.c.SetWS(conn.WSInfo{Path: r.URL.Path, Subprotocol: ws.Subprotocol(), Origin: origin})
		ws.SetReadLimit(l.MaxMessage)
		// The server's header deadlines stay on a hijacked socket.
		sc.SetDeadline(time.Time{})
		s.serveWS(ctx, sc, ws, l)
	})
}

// statusWriter records the status the WebSocket library answers a
// refused upgrade with.
type statusWriter struct {
	http.ResponseWriter
	code int
}

func (w *statusWriter) WriteHeader(code int) {
	w.code = code
	w.ResponseWriter.WriteHeader(code)
}

// Unwrap lets the library find the http.Hijacker underneath.
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// subprotocolOffers lists the subprotocols a client offers, in its order.
func subprotocolOffers(r *http.Request) []string {
	var offers []string
	for _, v := range r.Header.Values("Sec-WebSocket-Protocol") {
		for _, p := range strings.Split(v, ",") {
			if p = strings.TrimSpace(p); p != "" {
				offers = append(offers, p)
			}
		}
	}
	return offers
}

// chooseSubprotocol returns the first offer that the listener speaks (RFC
// 6455 4.2.2: the server picks among the client's offers; the client's
// order is its preference), or "".
func chooseSubprotocol(offers, speaks []string) string {
	for _, o := range offers {
		for _, sp := range speaks {
			if strings.EqualFold(o, sp) {
				return o
			}
		}
	}
	return ""
}

// listOrNone lists a client's offers for a message, within reason.
func listOrNone(l []string) string {
	if len(l) == 0 {
		return "none"
	}
	s := strings.Join(l, ", ")
	if len(s) > 200 {
		s = s[:200] + "..."
	}
	return s
}

// wsConn is an upgraded connection.
type wsConn struct {
	ws     *websocket.Conn
	c      *conn.Conn
	ctx    context.Context // ends when the connection is closed
	cancel context.CancelFunc
	// badStream is the close reason for the client when the backend's
	// bytes could not be cut into messages.
	badStream atomic.Pointer[string]
}

// serveWS relays an upgraded connection.
func (s *Server) serveWS(ctx context.Context, sc *sockConn, ws *websocket.Conn, l Listener) {
	wctx, cancel := context.WithCancel(context.Background())
	wc := &wsConn{ws: ws, c: sc.c, ctx: wctx, cancel: cancel}
	sc.usable.Store(true)
	sc.c.Established(nil, wc.close, conn.StateOK)
	if sc.c.Closing() {
		return
	}
	if l.Ping > 0 {
		go wc.ping(l.Ping)
	}
	if l.Backend == Echo {
		go wc.echo()
		return
	}
	w, flush := wc.writer(l)
	in := &leg{c: sc.c, r: &wsReader{wc: wc}, w: w, closeWrite: func() error {
		if err := flush(); err != nil {
			return err
		}
		// WebSocket has no half-close: the backend is done, say so.
		go wc.ws.Close(websocket.StatusNormalClosure, "backend closed")
		return nil
	}}
	s.serveLeg(ctx, in, l)
}

// writer returns what sends the backend's bytes to the client as the
// listener's frame option says, and what to do when the backend is done.
func (wc *wsConn) writer(l Listener) (io.Writer, func() error) {
	switch l.Frame {
	case FrameText:
		w := &textWriter{wc: wc}
		return w, w.flush
	case FrameSIP:
		w := &sipWriter{wc: wc, split: frame.NewSIP(int(l.MaxMessage))}
		return w, w.flush
	}
	return wsWriter{wc}, func() error { return nil }
}

// close is the Closer of an upgraded connection: a close frame (1001, or
// 1000 when its backend ended it), or an RST with reset. The close
// handshake may take the peer a while; the table does not wait for it.
func (wc *wsConn) close(c *conn.Conn, reset bool) error {
	if reset {
		wc.cancel()
		return closeSocket(c, true)
	}
	code, text := websocket.StatusGoingAway, "going away: "+string(c.Reason())
	if c.Reason() == conn.ReasonPeer {
		code, text = websocket.StatusNormalClosure, "backend closed"
	}
	if why := wc.badStream.Load(); why != nil {
		code, text = websocket.StatusBadGateway, *why
	}
	go func() {
		wc.ws.Close(code, text)
		wc.cancel()
	}()
	return nil
}

// ended turns a read error into what the relay understands, recording the
// close frame that ended the connection: a close from the peer is io.EOF.
func (wc *wsConn) ended(err error) error {
	var ce websocket.CloseError
	if errors.As(err, &ce) {
		wc.c.SetWSClose(int(ce.Code), ce.Reason)
		return io.EOF
	}
	if errors.Is(err, websocket.ErrMessageTooBig) {
		wc.c.SetWSClose(int(websocket.StatusMessageTooBig), "message too big")
		return fmt.Errorf("websocket message over the limit: %w", err)
	}
	return err
}

// echo sends every message back as it came, one for one.
func (wc *wsConn) echo() {
	for {
		typ, data, err := wc.ws.Read(wc.ctx)
		if err != nil {
			if err = wc.ended(err); errors.Is(err, io.EOF) {
				wc.c.SawEOF()
			}
			closeFor(wc.c, err)
			return
		}
		if err := wc.ws.Write(wc.ctx, typ, data); err != nil {
			closeFor(wc.c, err)
			return
		}
	}
}

// ping sends a ping every interval; a pong missing for an interval closes
// the connection with reason timeout.
func (wc *wsConn) ping(every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-t.C:
		case <-wc.ctx.Done():
			return
		}
		ctx, cancel := context.WithTimeout(wc.ctx, every)
		err := wc.ws.Ping(ctx)
		cancel()
		if err != nil {
			if wc.ctx.Err() == nil {
				wc.c.Close(conn.ReasonTimeout, fmt.Errorf("websocket: no pong within %s", every))
			}
			return
		}
	}
}

// wsReader reads message payloads as one byte stream.
type wsReader struct {
	wc  *wsConn
	cur io.Reader
}

func (r *wsReader) Read(b []byte) (int, error) {
	for {
		if r.cur == nil {
			_, rd, err := r.wc.ws.Reader(r.wc.ctx)
			if err != nil {
				return 0, r.wc.ended(err)
			}
			r.cur = rd
		}
		n, err := r.cur.Read(b)
		if errors.Is(err, io.EOF) {
			r.cur = nil
			if n == 0 {
				continue
			}
			err = nil
		}
		if err != nil {
			err = r.wc.ended(err)
		}
		return n, err
	}
}

// wsWriter sends each write as one binary message (frame=binary).
type wsWriter struct{ wc *wsConn }

func (w wsWriter) Write(b []byte) (int, error) {
	if err := w.wc.send(b, true); err != nil {
		return 0, err
	}
	return len(b), nil
}

// send sends b as one message: text, or binary if binary.
func (wc *wsConn) send(b []byte, binary bool) error {
	typ := websocket.MessageText
	if binary {
		typ = websocket.MessageBinary
	}
	return wc.ws.Write(wc.ctx, typ, b)
}

// textWriter sends each write as one text message, holding back a UTF-8
// sequence cut at its end for the next one; a write that is not UTF-8
// goes as a binary message (frame=text).
type textWriter struct {
	wc  *wsConn
	cut frame.Text
}

func (w *textWriter) Write(b []byte) (int, error) {
	p, binary := w.cut.Cut(b)
	if len(p) > 0 {
		if err := w.wc.send(p, binary); err != nil {
			return 0, err
		}
	}
	return len(b), nil
}

// flush sends what was held back when the backend ends: the start of a
// sequence that never ended, which is not UTF-8.
func (w *textWriter) flush() error {
	if p := w.cut.Flush(); len(p) > 0 {
		return w.wc.send(p, true)
	}
	return nil
}

// sipWriter sends each whole SIP message in what it is given as one
// message: text if it is UTF-8, else binary (frame=sip, RFC 7118 5.2).
// A stream that is not SIP closes the connection with reason error and
// what was wrong; nothing partial is sent.
type sipWriter struct {
	wc    *wsConn
	split *frame.SIP
}

func (w *sipWriter) Write(b []byte) (int, error) {
	w.split.Feed(b)
	for {
		m, err := w.split.Next()
		if err != nil {
			return 0, w.wc.badBackend("backend stream cannot be cut into SIP messages", fmt.Errorf("frame=sip: cannot cut the backend's stream into SIP messages: %w", err))
		}
		if m == nil {
			return len(b), nil
		}
		if err := w.wc.send(m, !utf8.Valid(m)); err != nil {
			w.split.Release()
			return 0, err
		}
	}
}

// flush fails the connection when the backend ended in the middle of a
// message, which is not sent.
func (w *sipWriter) flush() error {
	n := w.split.Buffered()
	w.split.Release()
	if n > 0 {
		return w.wc.badBackend("backend closed mid-message", fmt.Errorf("frame=sip: the backend closed in the middle of a SIP message (%d bytes not sent)", n))
	}
	return nil
}

// badBackend closes the connection with reason error for a backend stream
// that could not be cut into messages; the client gets close code 1014
// (bad gateway) with the short reason.
func (wc *wsConn) badBackend(reason string, err error) error {
	wc.badStream.Store(&reason)
	wc.c.Close(conn.ReasonError, err)
	return err
}
