package client

import (
	"context"
	"errors"
	"net"
	"syscall"
	"time"

	"github.com/tcpops/tcpops/rpc"
)

// RetryFor is how long Dial keeps trying a socket that refuses or whose
// backlog is full: the moment between two daemons of an upgrade or a
// restart through systemd's file-descriptor store.
const RetryFor = 2 * time.Second

// dialRetry connects to path, again every 20 ms for up to RetryFor (and
// within ctx) while the socket refuses (ECONNREFUSED) or is full
// (EAGAIN). A missing socket file is not retried: no daemon is there.
func dialRetry(ctx context.Context, path string) (net.Conn, error) {
	var d net.Dialer
	deadline := time.Now().Add(RetryFor)
	for {
		nc, err := d.DialContext(ctx, "unix", path)
		if err == nil {
			return nc, nil
		}
		if !errors.Is(err, syscall.ECONNREFUSED) && !errors.Is(err, syscall.EAGAIN) || time.Now().After(deadline) {
			return nil, err
		}
		select {
		case <-ctx.Done():
			return nil, err
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// Upgrade calls tcpops.upgrade.
func (c *Client) Upgrade(ctx context.Context, p rpc.UpgradeParams) (rpc.UpgradeResult, error) {
	var r rpc.UpgradeResult
	err := c.Call(ctx, rpc.MethodUpgrade, p, &r)
	return r, err
}
