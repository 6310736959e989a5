// Package client is a typed client of the tcpops control socket, in the
// wire types of package rpc: what tcpopsctl, the tests and the tools use.
package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/tcpops/tcpops/rpc"
)

// DialError says the daemon could not be reached: at Path, for Err, and
// at each of the sockets tried before it (Earlier).
type DialError struct {
	Path    string
	Err     error
	Earlier []Attempt
}

// Attempt is a socket tried and why it could not be reached.
type Attempt struct {
	Path string
	Err  error
}

func (e *DialError) Error() string {
	var b strings.Builder
	b.WriteString("cannot reach tcpops at ")
	for _, a := range e.Earlier {
		fmt.Fprintf(&b, "%s: %s, nor at ", a.Path, describe(a.Err))
	}
	fmt.Fprintf(&b, "%s: %s (is the daemon running? set --socket or TCPOPS_SOCKET)", e.Path, describe(e.Err))
	return b.String()
}

func (e *DialError) Unwrap() error { return e.Err }

func describe(err error) string {
	switch {
	case errors.Is(err, syscall.ENOENT):
		return "no such file"
	case errors.Is(err, syscall.ECONNREFUSED):
		return "connection refused"
	case errors.Is(err, syscall.EACCES):
		return "permission denied"
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return "timed out"
	}
	return err.Error()
}

// ErrDisconnected is returned when the daemon closes the connection.
var ErrDisconnected = errors.New("connection to tcpops closed")

// Transport carries one request to a daemon by some other way than its
// control socket (NATS, in package fleet) and brings back the result as
// JSON; an error from the daemon is an *rpc.Error.
type Transport interface {
	RoundTrip(ctx context.Context, method string, params json.RawMessage) (json.RawMessage, error)
	Close() error
}

// ErrNoFollow is Follow's error on a client over a Transport: following
// events needs the control socket.
var ErrNoFollow = errors.New("following events needs the control socket")

// Client is a typed client of the control socket. It frames requests and
// matches responses itself: the library's client decodes every message
// into interface{} to tell requests from responses, which for a list of
// 10,000 connections cost more than the daemon's whole answer. Calls may
// be made from several goroutines.
type Client struct {
	t    Transport // instead of the socket, when set
	path string
	conn net.Conn
	r    lineReader
	done chan struct{} // closed when the read loop ends
	// onProgress gets tcpops.progress notifications (dropped while nil).
	onProgress atomic.Pointer[func(rpc.Progress)]

	wmu sync.Mutex // wmu keeps each request's line whole

	// mu guards the fields below.
	mu      sync.Mutex
	nextID  uint64
	pending map[uint64]chan *reply
	notes   chan notification // made when the first notification comes or Follow starts
}

type notification struct {
	method string
	params json.RawMessage
}

// reply is a response (or, with Method set, a notification) as read.
type reply struct {
	ID     *uint64         `json:"id"`
	Result json.RawMessage `json:"result"`
	Error  *rpc.Error      `json:"error"`
	Method string          `json:"method"`
	Params json.RawMessage `json:"params"`
}

// DialFirst connects to the first of paths where a daemon answers, trying
// them in order; the error names every path tried and why it failed.
func DialFirst(ctx context.Context, paths []string) (*Client, error) {
	if len(paths) == 0 {
		return nil, errors.New("no control socket to try")
	}
	var earlier []Attempt
	last := len(paths) - 1
	for _, p := range paths[:last] {
		c, err := Dial(ctx, p)
		if err == nil {
			return c, nil
		}
		earlier = append(earlier, Attempt{Path: p, Err: errors.Unwrap(err)})
	}
	c, err := Dial(ctx, paths[last])
	if err != nil {
		de := err.(*DialError)
		de.Earlier = earlier
		return nil, de
	}
	return c, nil
}

// Dial connects to the control socket at path.
func Dial(ctx context.Context, path string) (*Client, error) {
	nc, err := dialRetry(ctx, path)
	if err != nil {
		return nil, &DialError{Path: path, Err: err}
	}
	c := &Client{path: path, conn: nc, r: lineReader{rd: nc}, done: make(chan struct{}), pending: map[uint64]chan *reply{}}
	go c.read()
	return c, nil
}

// New makes a client whose calls go through t rather than a control
// socket; name is what errors call the daemon.
func New(t Transport, name string) *Client {
	return &Client{t: t, path: name}
}

// read delivers responses to their callers and notifications, in order,
// to the notes queue; a full queue stops reading, so the daemon's write
// deadline, not our memory, bounds a slow reader.
func (c *Client) read() {
	defer close(c.done)
	for {
		line, err := c.r.readLine() // no cap: a list of 10,000 connections is megabytes
		if err != nil {
			return
		}
		var r reply
		if err := json.Unmarshal(line, &r); err != nil {
			return
		}
		if r.ID == nil {
			if r.Method == rpc.NotifyProgress {
				c.progress(r.Params)
				continue
			}
			if r.Method != "" {
				c.notesChan() <- notification{r.Method, r.Params}
			}
			continue
		}
		c.mu.Lock()
		ch := c.pending[*r.ID]
		delete(c.pending, *r.ID)
		c.mu.Unlock()
		if ch != nil {
			ch <- &r
		}
	}
}

// notesChan is the queue of notifications, made when first needed: a
// client that makes calls only (most) does not pay for it.
func (c *Client) notesChan() chan notification {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.notes == nil {
		c.notes = make(chan notification, 1024)
	}
	return c.notes
}

// lineReader reads lines of any length. Its buffer starts small, as most
// answers are a line of a hundred bytes, and doubles while a line does
// not fit, so that a list of megabytes takes a few large reads; once
// empty it shrinks back.
type lineReader struct {
	rd   io.Reader
	buf  []byte
	r, w int // the unread bytes are buf[r:w]
	scan int // buf[r:scan] has no newline
}

const (
	lineBufMin = 4 << 10
	lineBufMax = 1 << 20 // kept between lines
)

// readLine returns the next line with its newline, valid until the next
// call.
func (l *lineReader) readLine() ([]byte, error) {
	for {
		if i := bytes.IndexByte(l.buf[l.scan:l.w], '\n'); i >= 0 {
			end := l.scan + i + 1
			line := l.buf[l.r:end]
			l.r, l.scan = end, end
			return line, nil
		}
		if l.r == l.w && len(l.buf) > lineBufMax {
			l.buf = nil
		}
		if l.buf == nil {
			l.buf = make([]byte, lineBufMin)
			l.r, l.w = 0, 0
		}
		if l.r > 0 { // the partial line to the front
			l.w = copy(l.buf, l.buf[l.r:l.w])
			l.r = 0
		}
		l.scan = l.w
		if l.w == len(l.buf) {
			b := make([]byte, 2*len(l.buf))
			copy(b, l.buf[:l.w])
			l.buf = b
		}
		n, err := l.rd.Read(l.buf[l.w:])
		l.w += n
		if n == 0 && err != nil {
			return nil, err
		}
	}
}

// write writes parts as one line (writev: the params are not copied).
func (c *Client) write(parts ...[]byte) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	bufs := net.Buffers(parts)
	_, err := bufs.WriteTo(c.conn)
	return err
}

// Done is closed when the connection has ended: closed by Close, or by
// the daemon. A client kept for many commands dials again after it.
func (c *Client) Done() <-chan struct{} { return c.done }

// Path is the socket the client dialled.
func (c *Client) Path() string { return c.path }

// Close closes the connection.
func (c *Client) Close() error {
	if c.t != nil {
		return c.t.Close()
	}
	err := c.conn.Close()
	<-c.done
	return err
}

// Call calls any method; params may be nil. An error from the daemon is a
// *rpc.Error with its code; result may be a *json.RawMessage.
func (c *Client) Call(ctx context.Context, method string, params, result any) error {
	if params == nil {
		params = struct{}{}
	}
	p, err := json.Marshal(params)
	if err != nil {
		return err
	}
	if c.t != nil {
		raw, err := c.t.RoundTrip(ctx, method, p)
		if err != nil {
			return err
		}
		return setResult(raw, result)
	}
	ch := make(chan *reply, 1)
	c.mu.Lock()
	c.nextID++
	id := c.nextID
	c.pending[id] = ch
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		delete(c.pending, id)
		c.mu.Unlock()
	}()
	m, _ := json.Marshal(method)
	head := fmt.Appendf(nil, `{"jsonrpc":"2.0","id":%d,"method":%s,"params":`, id, m)
	if err := c.inTurn(ctx, func() error { return c.write(head, p, []byte("}\n")) }); err != nil {
		if ctx.Err() != nil {
			return c.ctxErr(ctx, method)
		}
		return fmt.Errorf("%s: %w (%v)", method, ErrDisconnected, err)
	}
	select {
	case r := <-ch:
		if r.Error != nil {
			return r.Error
		}
		return setResult(r.Result, result)
	case <-c.done:
		return fmt.Errorf("%s: %w", method, ErrDisconnected)
	case <-ctx.Done():
		return c.ctxErr(ctx, method)
	}
}

// setResult stores a JSON result in result (nil: dropped; a
// *json.RawMessage takes it as it is).
func setResult(r json.RawMessage, result any) error {
	if result == nil {
		return nil
	}
	if raw, ok := result.(*json.RawMessage); ok {
		*raw = r
		return nil
	}
	return json.Unmarshal(r, result)
}

// ctxErr is the error of a call whose ctx ended first.
func (c *Client) ctxErr(ctx context.Context, method string) error {
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return &DialError{Path: c.path, Err: fmt.Errorf("%s: %w", method, timeoutError{})}
	}
	return ctx.Err()
}

type timeoutError struct{}

func (timeoutError) Error() string   { return "no answer in time" }
func (timeoutError) Timeout() bool   { return true }
func (timeoutError) Temporary() bool { return true }

// Alive calls tcpops.alive.
func (c *Client) Alive(ctx context.Context, id uint64) (rpc.AliveResult, error) {
	var r rpc.AliveResult
	return r, c.Call(ctx, rpc.MethodAlive, rpc.ConnParams{ConnID: &id}, &r)
}

// State calls tcpops.state.
func (c *Client) State(ctx context.Context, id uint64) (rpc.StateResult, error) {
	var r rpc.StateResult
	return r, c.Call(ctx, rpc.MethodState, rpc.ConnParams{ConnID: &id}, &r)
}

// Keepalive calls tcpops.keepalive.
func (c *Client) Keepalive(ctx context.Context, p rpc.KeepaliveParams) (rpc.KeepaliveResult, error) {
	var r rpc.KeepaliveResult
	return r, c.Call(ctx, rpc.MethodKeepalive, p, &r)
}

// Lifetime calls tcpops.lifetime.
func (c *Client) Lifetime(ctx context.Context, id uint64, d time.Duration) (rpc.LifetimeResult, error) {
	var r rpc.LifetimeResult
	return r, c.Call(ctx, rpc.MethodLifetime, rpc.LifetimeParams{ConnID: &id, Lifetime: new(d.Seconds())}, &r)
}

// ClosedEvent calls tcpops.closed_event.
func (c *Client) ClosedEvent(ctx context.Context, id uint64, enable bool) (rpc.ClosedEventResult, error) {
	var r rpc.ClosedEventResult
	return r, c.Call(ctx, rpc.MethodClosedEvent, rpc.ClosedEventParams{ConnID: &id, Enable: &enable}, &r)
}

// CloseConn calls tcpops.close.
func (c *Client) CloseConn(ctx context.Context, id uint64, reset bool) (rpc.CloseResult, error) {
	var r rpc.CloseResult
	return r, c.Call(ctx, rpc.MethodClose, rpc.CloseParams{ConnID: &id, Reset: reset}, &r)
}

// List calls tcpops.list.
func (c *Client) List(ctx context.Context, p rpc.ListParams) (rpc.ListResult, error) {
	var r rpc.ListResult
	return r, c.Call(ctx, rpc.MethodList, p, &r)
}

// Info calls tcpops.info.
func (c *Client) Info(ctx context.Context, id uint64) (rpc.InfoResult, error) {
	var r rpc.InfoResult
	return r, c.Call(ctx, rpc.MethodInfo, rpc.ConnParams{ConnID: &id}, &r)
}

// Events calls tcpops.events without follow.
func (c *Client) Events(ctx context.Context, p rpc.EventsParams) (rpc.EventsResult, error) {
	p.Follow = false
	var r rpc.EventsResult
	return r, c.Call(ctx, rpc.MethodEvents, p, &r)
}

// Follow calls tcpops.events with follow: onEvent gets the kept events and
// then every later one in seq order, onLost each gap. It returns when ctx
// ends (nil) or the daemon closes the connection (ErrDisconnected), or with
// the first error of a callback. callCtx bounds the initial call only.
func (c *Client) Follow(ctx, callCtx context.Context, p rpc.EventsParams, onEvent func(rpc.Event) error, onLost func(rpc.EventsLost) error) error {
	if c.t != nil {
		return ErrNoFollow
	}
	p.Follow = true
	notes := c.notesChan()
	var r rpc.EventsResult
	if err := c.Call(callCtx, rpc.MethodEvents, p, &r); err != nil {
		return err
	}
	for _, e := range r.Events {
		if err := onEvent(e); err != nil {
			return err
		}
	}
	handle := func(n notification) error {
		switch n.method {
		case rpc.NotifyEvent:
			var e rpc.Event
			if err := json.Unmarshal(n.params, &e); err != nil {
				return fmt.Errorf("bad %s notification: %w", n.method, err)
			}
			return onEvent(e)
		case rpc.NotifyEventsLost:
			var l rpc.EventsLost
			if err := json.Unmarshal(n.params, &l); err != nil {
				return fmt.Errorf("bad %s notification: %w", n.method, err)
			}
			return onLost(l)
		}
		return nil
	}
	for {
		select {
		case n := <-notes:
			if err := handle(n); err != nil {
				return err
			}
		case <-c.done:
			// Deliver what arrived before the close.
			for {
				select {
				case n := <-notes:
					if err := handle(n); err != nil {
						return err
					}
				default:
					return ErrDisconnected
				}
			}
		case <-ctx.Done():
			return nil
		}
	}
}

// Stats calls tcpops.stats.
func (c *Client) Stats(ctx context.Context) (rpc.Stats, error) {
	var r rpc.Stats
	return r, c.Call(ctx, rpc.MethodStats, nil, &r)
}

// Version calls core.version.
func (c *Client) Version(ctx context.Context) (rpc.Version, error) {
	var r rpc.Version
	return r, c.Call(ctx, rpc.MethodVersion, nil, &r)
}

// Methods calls system.listMethods.
func (c *Client) Methods(ctx context.Context) ([]string, error) {
	var r []string
	return r, c.Call(ctx, rpc.MethodListMethods, nil, &r)
}
