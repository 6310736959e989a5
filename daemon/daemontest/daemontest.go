// Package daemontest runs a real tcpops daemon inside a test process, on
// a temporary control socket and listeners on 127.0.0.1.
package daemontest

import (
	"context"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tcpops/tcpops/daemon"
	"github.com/tcpops/tcpops/internal/testutil"
	"github.com/tcpops/tcpops/rpc"
	"github.com/tcpops/tcpops/rpc/client"
)

// D is a running daemon.
type D struct {
	*daemon.Daemon
	Socket string
	log    *Buffer
	stop   context.CancelFunc
}

// Start runs the daemon with the given flags; --socket and, without
// --listen, one echo listener on 127.0.0.1:0 are added. It stops at the
// end of the test.
func Start(t testing.TB, args ...string) *D {
	t.Helper()
	return StartWith(t, nil, args...)
}

// StartWith is Start with a hook to adjust the parsed configuration.
func StartWith(t testing.TB, configure func(*daemon.Config), args ...string) *D {
	t.Helper()
	// sun_path holds 108 bytes: keep the socket path short.
	dir, err := os.MkdirTemp("", "tcpops")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	sockPath := filepath.Join(dir, "s")
	hasListen := false
	for _, a := range args {
		if strings.HasPrefix(a, "--listen") {
			hasListen = true
		}
	}
	if !hasListen {
		args = append(args, "--listen", "tcp://127.0.0.1:0?backend=echo")
	}
	args = append([]string{"--socket", sockPath}, args...)
	cfg, err := daemon.ParseArgs(args)
	if err != nil {
		t.Fatalf("daemon flags %q: %v", args, err)
	}
	if configure != nil {
		configure(cfg)
	}
	lw := &Buffer{}
	log := slog.New(slog.NewTextHandler(lw, &slog.HandlerOptions{Level: slog.LevelDebug}))
	ctx, cancel := context.WithCancel(context.Background())
	d, err := daemon.Start(ctx, cfg, log)
	if err != nil {
		cancel()
		t.Fatalf("daemon start: %v", err)
	}
	td := &D{Daemon: d, Socket: cfg.Socket, log: lw, stop: cancel}
	t.Cleanup(func() { td.Stop() })
	return td
}

// Stop shuts the daemon down (once).
func (d *D) Stop() {
	if d.stop == nil {
		return
	}
	d.stop()
	d.stop = nil
	d.Shutdown(10 * time.Second)
}

// Logs returns what the daemon logged so far.
func (d *D) Logs() string { return d.log.String() }

// Addr is the bound address of listener i.
func (d *D) Addr(i int) string { return d.Listeners[i].Bound }

// Client dials the control socket.
func (d *D) Client(t testing.TB) *client.Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := client.Dial(ctx, d.Socket)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// Dial opens a TCP connection to listener i and waits until the daemon
// has it in its table; it returns the connection and its conid.
func (d *D) Dial(t testing.TB, i int) (*net.TCPConn, uint64) {
	t.Helper()
	before := d.Table.Stats().Accepted
	c, err := net.Dial("tcp", d.Addr(i))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	local := c.LocalAddr().String()
	var id uint64
	testutil.WaitFor(t, "the daemon to table the connection from "+local, func() bool {
		if d.Table.Stats().Accepted <= before {
			return false
		}
		infos, _ := d.Table.List(filterRemote(local))
		if len(infos) != 1 {
			return false
		}
		id = infos[0].ID
		return true
	})
	return c.(*net.TCPConn), id
}

// Clients runs fn on n control clients at once, each with its own
// connection, and fails the test with every error they return.
func (d *D) Clients(t testing.TB, n int, fn func(ctx context.Context, c *client.Client) error) {
	t.Helper()
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			c, err := client.Dial(ctx, d.Socket)
			if err != nil {
				errs <- err
				return
			}
			defer c.Close()
			if err := fn(ctx, c); err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// WaitEvents polls tcpops.events until it returns at least n events
// (testutil.Timeout at most) and returns them.
func WaitEvents(t testing.TB, c *client.Client, p rpc.EventsParams, n int) []rpc.Event {
	t.Helper()
	var evs []rpc.Event
	if !testutil.Until(func() bool {
		r, err := c.Events(t.Context(), p)
		if err != nil {
			t.Fatal(err)
		}
		evs = r.Events
		return len(evs) >= n
	}) {
		t.Fatalf("%d events for %+v, want %d", len(evs), p, n)
	}
	return evs
}
