package cli

import (
	"context"
	"sync"

	"github.com/tcpops/tcpops/rpc/client"
)

// keeper holds the one control connection that every command of a shell
// session uses, so that a prompt costs the daemon one client, not one per
// line and per Tab. A connection the daemon closed (its idle timeout, a
// restart) is dialled again by the next command that needs it.
type keeper struct {
	// mu guards the fields below.
	mu sync.Mutex
	c  *client.Client
}

// get returns the kept connection to path, dialling it if there is none
// or it has ended.
func (k *keeper) get(ctx context.Context, path string) (*client.Client, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.c != nil {
		select {
		case <-k.c.Done():
			k.c = nil
		default:
			if k.c.Path() == path {
				return k.c, nil
			}
			k.c.Close()
			k.c = nil
		}
	}
	c, err := client.Dial(ctx, path)
	if err != nil {
		return nil, err
	}
	k.c = c
	return c, nil
}

// close closes the kept connection, if any.
func (k *keeper) close() {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.c != nil {
		k.c.Close()
		k.c = nil
	}
}

// dial returns a connection to the daemon and what to call when done with
// it: a batch's or the shell's connection (done does nothing), or a new
// one that done closes; with --nats, one over NATS to the host this run
// is for (fleet.go).
func (o *Options) dial(ctx context.Context) (*client.Client, func(), error) {
	if o.shared != nil {
		return o.shared, func() {}, nil
	}
	if o.NATS != "" {
		c, err := o.natsClient(ctx) // errFanOut when it runs on several hosts
		if err != nil {
			return nil, nil, err
		}
		return c, func() { c.Close() }, nil
	}
	if o.keep != nil {
		c, err := o.keep.get(ctx, o.socketPath())
		if err != nil {
			return nil, nil, err
		}
		return c, func() {}, nil
	}
	c, err := client.DialFirst(ctx, o.socketPaths())
	if err != nil {
		return nil, nil, err
	}
	return c, func() { c.Close() }, nil
}
