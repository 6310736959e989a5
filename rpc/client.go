package rpc

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"syscall"
	"time"

	"github.com/sourcegraph/jsonrpc2"

	"github.com/tcpops/tcpops/sock"
)

// Client is a typed client of the control socket.
type Client struct {
	path  string
	conn  *jsonrpc2.Conn
	notes chan notification
}

type notification struct {
	method string
	params json.RawMessage
}

// DialError says the daemon could not be reached.
type DialError struct {
	Path string
	Err  error
}

func (e *DialError) Error() string {
	return fmt.Sprintf("cannot reach tcpops at %s: %s (is the daemon running? set --socket or TCPOPS_SOCKET)", e.Path, describe(e.Err))
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

// Dial connects to the control socket at path.
func Dial(ctx context.Context, path string) (*Client, error) {
	d := net.Dialer{}
	nc, err := d.DialContext(ctx, "unix", path)
	if err != nil {
		return nil, &DialError{Path: path, Err: err}
	}
	c := &Client{path: path, notes: make(chan notification, 1024)}
	c.conn = jsonrpc2.NewConn(context.Background(), newStream(nc, false, 0), clientHandler{c}, jsonrpc2.SetLogger(discardLogger{}))
	return c, nil
}

type clientHandler struct{ c *Client }

// Handle queues notifications in order; a full queue stops reading, so the
// daemon's write deadline, not our memory, bounds a slow reader.
func (h clientHandler) Handle(ctx context.Context, _ *jsonrpc2.Conn, req *jsonrpc2.Request) {
	if !req.Notif {
		return
	}
	var p json.RawMessage
	if req.Params != nil {
		p = *req.Params
	}
	select {
	case h.c.notes <- notification{req.Method, p}:
	case <-ctx.Done():
	}
}

// Close closes the connection.
func (c *Client) Close() error { return c.conn.Close() }

// Path is the socket path the client talks to.
func (c *Client) Path() string { return c.path }

// Call calls any method; params may be nil. An error from the daemon is a
// *jsonrpc2.Error with its code.
func (c *Client) Call(ctx context.Context, method string, params, result any) error {
	if params == nil {
		params = struct{}{}
	}
	err := c.conn.Call(ctx, method, params, result)
	if errors.Is(err, jsonrpc2.ErrClosed) {
		return fmt.Errorf("%s: %w", method, ErrDisconnected)
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return &DialError{Path: c.path, Err: fmt.Errorf("%s: %w", method, timeoutError{})}
	}
	return err
}

type timeoutError struct{}

func (timeoutError) Error() string   { return "no answer in time" }
func (timeoutError) Timeout() bool   { return true }
func (timeoutError) Temporary() bool { return true }

// Alive calls tcpops.alive.
func (c *Client) Alive(ctx context.Context, id uint64) (AliveResult, error) {
	var r AliveResult
	return r, c.Call(ctx, MethodAlive, map[string]any{"conid": id}, &r)
}

// State calls tcpops.state.
func (c *Client) State(ctx context.Context, id uint64) (StateResult, error) {
	var r StateResult
	return r, c.Call(ctx, MethodState, map[string]any{"conid": id}, &r)
}

// KeepaliveParams are the params of tcpops.keepalive.
type KeepaliveParams struct {
	ConnID        uint64 `json:"conid"`
	Enable        bool   `json:"enable"`
	Idle          *int   `json:"idle,omitempty"`
	Count         *int   `json:"count,omitempty"`
	Interval      *int   `json:"interval,omitempty"`
	UserTimeoutMs *int   `json:"user_timeout_ms,omitempty"`
}

// Keepalive calls tcpops.keepalive.
func (c *Client) Keepalive(ctx context.Context, p KeepaliveParams) (KeepaliveResult, error) {
	var r KeepaliveResult
	return r, c.Call(ctx, MethodKeepalive, p, &r)
}

// Lifetime calls tcpops.lifetime.
func (c *Client) Lifetime(ctx context.Context, id uint64, d time.Duration) (LifetimeResult, error) {
	var r LifetimeResult
	return r, c.Call(ctx, MethodLifetime, map[string]any{"conid": id, "lifetime": d.Seconds()}, &r)
}

// ClosedEvent calls tcpops.closed_event.
func (c *Client) ClosedEvent(ctx context.Context, id uint64, enable bool) (ClosedEventResult, error) {
	var r ClosedEventResult
	return r, c.Call(ctx, MethodClosedEvent, map[string]any{"conid": id, "enable": enable}, &r)
}

// CloseConn calls tcpops.close.
func (c *Client) CloseConn(ctx context.Context, id uint64, reset bool) (CloseResult, error) {
	var r CloseResult
	return r, c.Call(ctx, MethodClose, map[string]any{"conid": id, "reset": reset}, &r)
}

// ListParams are the filters of tcpops.list.
type ListParams struct {
	State     string   `json:"state,omitempty"`
	Proto     string   `json:"proto,omitempty"`
	Direction string   `json:"direction,omitempty"`
	Listener  string   `json:"listener,omitempty"`
	Remote    string   `json:"remote,omitempty"`
	IdleMin   *float64 `json:"idle_min,omitempty"`
	Limit     int      `json:"limit,omitempty"`
	After     uint64   `json:"after,omitempty"`
}

// List calls tcpops.list.
func (c *Client) List(ctx context.Context, p ListParams) (ListResult, error) {
	var r ListResult
	return r, c.Call(ctx, MethodList, p, &r)
}

// Info calls tcpops.info.
func (c *Client) Info(ctx context.Context, id uint64) (InfoResult, error) {
	var r InfoResult
	return r, c.Call(ctx, MethodInfo, map[string]any{"conid": id}, &r)
}

// EventsParams are the params of tcpops.events.
type EventsParams struct {
	Since  uint64   `json:"since,omitempty"`
	Follow bool     `json:"follow,omitempty"`
	Reason []string `json:"reason,omitempty"`
	ConnID uint64   `json:"conid,omitempty"`
}

// Events calls tcpops.events without follow.
func (c *Client) Events(ctx context.Context, p EventsParams) (EventsResult, error) {
	p.Follow = false
	var r EventsResult
	return r, c.Call(ctx, MethodEvents, p, &r)
}

// Follow calls tcpops.events with follow: onEvent gets the kept events and
// then every later one in seq order, onLost each gap. It returns when ctx
// ends (nil) or the daemon closes the connection (ErrDisconnected), or with
// the first error of a callback. callCtx bounds the initial call only.
func (c *Client) Follow(ctx, callCtx context.Context, p EventsParams, onEvent func(Event) error, onLost func(EventsLost) error) error {
	p.Follow = true
	var r EventsResult
	if err := c.Call(callCtx, MethodEvents, p, &r); err != nil {
		return err
	}
	for _, e := range r.Events {
		if err := onEvent(e); err != nil {
			return err
		}
	}
	handle := func(n notification) error {
		switch n.method {
		case NotifyEvent:
			var e Event
			if err := json.Unmarshal(n.params, &e); err != nil {
				return fmt.Errorf("bad %s notification: %w", n.method, err)
			}
			return onEvent(e)
		case NotifyEventsLost:
			var l EventsLost
			if err := json.Unmarshal(n.params, &l); err != nil {
				return fmt.Errorf("bad %s notification: %w", n.method, err)
			}
			return onLost(l)
		}
		return nil
	}
	for {
		select {
		case n := <-c.notes:
			if err := handle(n); err != nil {
				return err
			}
		case <-c.conn.DisconnectNotify():
			// Deliver what arrived before the close.
			for {
				select {
				case n := <-c.notes:
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
func (c *Client) Stats(ctx context.Context) (Stats, error) {
	var r Stats
	return r, c.Call(ctx, MethodStats, nil, &r)
}

// Version calls core.version.
func (c *Client) Version(ctx context.Context) (Version, error) {
	var r Version
	return r, c.Call(ctx, MethodVersion, nil, &r)
}

// Methods calls system.listMethods.
func (c *Client) Methods(ctx context.Context) ([]string, error) {
	var r []string
	return r, c.Call(ctx, MethodListMethods, nil, &r)
}

// DefaultSocketPath is the socket the CLI and daemon use by default.
func DefaultSocketPath() string { return sock.DefaultSocketPath() }
