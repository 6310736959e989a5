package relay

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/coder/websocket"

	"github.com/tcpops/tcpops/conn"
)

// A ws:// or wss:// listener hands its tabled (and, for wss, handshaken)
// sockets to an http.Server of its own through chanListener. The handler
// upgrades; after that the connection is relayed like any other, message
// payloads to the backend as bytes, backend bytes back as messages.

// chanListener is a net.Listener fed by our accept loop.
type chanListener struct {
	addr  net.Addr
	conns chan net.Conn
	done  chan struct{}
	once  sync.Once
}

func newChanListener(addr net.Addr) *chanListener {
	return &chanListener{addr: addr, conns: make(chan net.Conn), done: make(chan struct{})}
}

func (l *chanListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
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

type sockConnKey struct{}

// sockConnOf finds our socket under what the HTTP server was given.
func sockConnOf(c net.Conn) *sockConn {
	if nc, ok := c.(interface{ NetConn() net.Conn }); ok {
		c = nc.NetConn()
	}
	sc, _ := c.(*sockConn)
	return sc
}

// wsServer starts the HTTP server of a ws:// or wss:// listener.
func (s *Server) wsServer(ctx context.Context, l Listener, addr net.Addr) (*chanListener, *http.Server) {
	cl := newChanListener(addr)
	hs := &http.Server{
		Handler:           s.wsHandler(ctx, l),
		ReadHeaderTimeout: s.conf.Load().HandshakeTimeout,
		IdleTimeout:       s.conf.Load().HandshakeTimeout,
		MaxHeaderBytes:    16 << 10,
		ErrorLog:          log.New(io.Discard, "", 0),
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			return context.WithValue(ctx, sockConnKey{}, sockConnOf(c))
		},
	}
	go hs.Serve(cl)
	return cl, hs
}

func isUpgrade(r *http.Request) bool {
	return strings.EqualFold(r.Header.Get("Upgrade"), "websocket")
}

func (s *Server) wsHandler(ctx context.Context, l Listener) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sc, _ := r.Context().Value(sockConnKey{}).(*sockConn)
		if sc == nil {
			http.Error(w, "internal error", http.StatusInternalServerError)
			return
		}
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
		ws, err := websocket.Accept(w, r, &websocket.AcceptOptions{OriginPatterns: l.Origins, CompressionMode: websocket.CompressionDisabled})
		if err != nil {
			sc.fail("websocket upgrade from origin %q: %v", r.Header.Get("Origin"), err)
			return
		}
		ws.SetReadLimit(l.MaxMessage)
		// The server's header deadlines stay on a hijacked socket.
		sc.SetDeadline(time.Time{})
		s.serveWS(ctx, sc, ws, l)
	})
}

// wsConn is an upgraded connection.
type wsConn struct {
	ws     *websocket.Conn
	c      *conn.Conn
	ctx    context.Context // ends when the connection is closed
	cancel context.CancelFunc
	typ    websocket.MessageType // of messages sent to the client
}

// serveWS relays an upgraded connection.
func (s *Server) serveWS(ctx context.Context, sc *sockConn, ws *websocket.Conn, l Listener) {
	wctx, cancel := context.WithCancel(context.Background())
	wc := &wsConn{ws: ws, c: sc.c, ctx: wctx, cancel: cancel, typ: websocket.MessageBinary}
	if l.TextFrames {
		wc.typ = websocket.MessageText
	}
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
	in := &leg{c: sc.c, r: &wsReader{wc: wc}, w: wsWriter{wc}, closeWrite: func() error {
		// WebSocket has no half-close: the backend is done, say so.
		go wc.ws.Close(websocket.StatusNormalClosure, "backend closed")
		return nil
	}}
	s.serveLeg(ctx, in, l)
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
	if strings.Contains(err.Error(), "read limited at") {
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

// wsWriter sends each write as one message.
type wsWriter struct{ wc *wsConn }

func (w wsWriter) Write(b []byte) (int, error) {
	if err := w.wc.ws.Write(w.wc.ctx, w.wc.typ, b); err != nil {
		return 0, err
	}
	return len(b), nil
}
