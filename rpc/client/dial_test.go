package client

import (
	"context"
	"errors"
	"net"
	"path/filepath"
	"syscall"
	"testing"
)

// TestDialFirst: the first socket that answers wins; when none does, the
// error names each path tried, in order, with why.
func TestDialFirst(t *testing.T) {
	dir := t.TempDir()
	missing := filepath.Join(dir, "missing")
	// A socket file nobody listens on any more: refused.
	stale := filepath.Join(dir, "stale")
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: stale, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	ln.SetUnlinkOnClose(false)
	ln.Close()
	live := fakeDaemon(t, func(string) string {
		return `{"jsonrpc":"2.0","id":1,"result":{"version":"v1","commit":"","go":"go1"}}`
	})

	_, err = DialFirst(t.Context(), []string{stale, missing})
	want := "cannot reach tcpops at " + stale + ": connection refused, nor at " + missing +
		": no such file (is the daemon running? set --socket or TCPOPS_SOCKET)"
	de, ok := err.(*DialError)
	if !ok || err.Error() != want {
		t.Fatalf("got %v, want %q", err, want)
	}
	if de.Path != missing || len(de.Earlier) != 1 || de.Earlier[0].Path != stale || !errors.Is(de.Earlier[0].Err, syscall.ECONNREFUSED) {
		t.Fatalf("got %+v; want the last path and one earlier attempt", de)
	}

	c, err := DialFirst(t.Context(), []string{missing, stale, live})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if c.Path() != live {
		t.Fatalf("connected to %s, want %s", c.Path(), live)
	}
	v, err := c.Version(context.Background())
	if err != nil || v.Version != "v1" {
		t.Fatalf("version through the socket found: %+v, %v", v, err)
	}
}
