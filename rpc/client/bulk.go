package client

import (
	"context"
	"encoding/json"

	"github.com/tcpops/tcpops/rpc"
)

// OnProgress sets the function told of the tcpops.progress notifications
// of a rate-limited bulk change (nil: they are dropped). It runs on the
// client's read loop and must not block. Progress never queues behind
// events: a caller that does not watch it loses nothing else.
func (c *Client) OnProgress(fn func(rpc.Progress)) {
	if fn == nil {
		c.onProgress.Store(nil)
		return
	}
	c.onProgress.Store(&fn)
}

func (c *Client) progress(params json.RawMessage) {
	fn := c.onProgress.Load()
	if fn == nil {
		return
	}
	var p rpc.Progress
	if json.Unmarshal(params, &p) == nil {
		(*fn)(p)
	}
}

// Bulk calls a changing method (tcpops.keepalive, tcpops.lifetime,
// tcpops.closed_event, tcpops.close) with params that carry a selector.
func (c *Client) Bulk(ctx context.Context, method string, params any) (rpc.BulkResult, error) {
	var r rpc.BulkResult
	return r, c.Call(ctx, method, params, &r)
}

type orderKey struct{}

// order is the place of a call among others on one connection.
type order struct {
	before <-chan struct{}
	sent   func()
}

// WithOrder returns a context under which Call writes its request only
// once before is closed, and calls sent right after: requests made from
// several goroutines then go out in a set order, and since the daemon
// answers one connection's requests in the order they came, each is
// answered as if the ones before had been made and answered first
// (tcpopsctl batch pipelines its lines this way).
func WithOrder(ctx context.Context, before <-chan struct{}, sent func()) context.Context {
	return context.WithValue(ctx, orderKey{}, &order{before: before, sent: sent})
}

// inTurn runs write in the call's turn, if ctx gives it one.
func (c *Client) inTurn(ctx context.Context, write func() error) error {
	o, _ := ctx.Value(orderKey{}).(*order)
	if o == nil {
		return write()
	}
	select {
	case <-o.before:
	case <-ctx.Done():
		return ctx.Err()
	}
	defer o.sent()
	return write()
}
