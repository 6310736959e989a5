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
