package relay

import (
	"io"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tcpops/tcpops/conn"
	"github.com/tcpops/tcpops/internal/testutil"
	"github.com/tcpops/tcpops/sock"
)

// TestKeepaliveKernelTruth: a connection's keepalive is set without being
// read back (only what differs from what the socket has is set), and the
// table still reports what the kernel holds: it reads it when a snapshot
// first asks. Both legs of a relayed pair and an echoed connection, with
// the daemon's keepalive, a listener's own, and off; and a value changed
// behind the table's back before the first snapshot is what it reports.
func TestKeepaliveKernelTruth(t *testing.T) {
	be := backend(t, echoBack)
	idle, count, intvl := 0, 0, 0
	if k, ok := sock.NewSocketKeepalive(); ok {
		idle, count, intvl = k.Idle, k.Count, k.Interval
	}
	for _, tc := range []struct {
		name, url string
		want      sock.Keepalive
	}{
		{"daemon default", "tcp://127.0.0.1:0?backend=" + be, sock.Keepalive{Enabled: true, Idle: 30, Count: 4, Interval: 5}},
		{"listener's own", "tcp://127.0.0.1:0?keepalive=45,3,2&backend=" + be, sock.Keepalive{Enabled: true, Idle: 45, Count: 3, Interval: 2}},
		{"on", "tcp://127.0.0.1:0?keepalive=on&backend=" + be, sock.Keepalive{Enabled: true, Idle: idle, Count: count, Interval: intvl}},
		{"off", "tcp://127.0.0.1:0?keepalive=off&backend=" + be, sock.Keepalive{Idle: idle, Count: count, Interval: intvl}},
		{"echo", "tcp://127.0.0.1:0?keepalive=50,6,7", sock.Keepalive{Enabled: true, Idle: 50, Count: 6, Interval: 7}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := start(t, conn.Config{}, Config{}, tc.url)
			c := e.dial()
			c.Write([]byte("x\n"))
			readLine(t, c)
			n := 2
			if tc.name == "echo" {
				n = 1
			}
			// No snapshot yet: conids 1 and 2 of a new table.
			if !testutil.Until(func() bool { return e.table.Len() == n }) {
				t.Fatalf("table has %d connections, want %d", e.table.Len(), n)
			}
			var first *conn.Conn
			for id := uint64(1); id <= uint64(n); id++ {
				cn := mustConn(t, e, id)
				if first == nil {
					first = cn
				}
				if got, err := sock.GetKeepalive(cn.TCP()); err != nil || got != tc.want {
					t.Fatalf("conid %d: kernel holds %+v (%v), want %+v", id, got, err, tc.want)
				}
			}
			// Changed behind the table's back: the first snapshot reads it.
			changed := sock.KeepaliveConfig{Enable: true, Idle: 77, Count: 8, Interval: 9, UserTimeoutMs: 1234}
			if err := sock.SetKeepalive(first.TCP(), changed); err != nil {
				t.Fatal(err)
			}
			infos, _ := e.table.List(conn.Filter{})
			if len(infos) != n {
				t.Fatalf("list has %d connections, want %d", len(infos), n)
			}
			for _, in := range infos {
				k, err := sock.GetKeepalive(mustConn(t, e, in.ID).TCP())
				if err != nil || in.Keepalive == nil || *in.Keepalive != k {
					t.Fatalf("conid %d (%s): list says %+v, the kernel %+v (%v)", in.ID, in.Direction, in.Keepalive, k, err)
				}
				if in.ID == first.ID && k.Idle != 77 {
					t.Fatalf("conid %d: kernel %+v, want the value set behind the table's back", in.ID, k)
				}
			}
		})
	}
}

// TestBackendSpeaksFirst: a backend that sends its bytes and its FIN as
// soon as it accepts (a banner, a refusal) has both passed on, whether
// they come with the connect's outcome or after it.
func TestBackendSpeaksFirst(t *testing.T) {
	// The hook is set once (relay goroutines read it); what it waits for
	// is per case: nil, nothing.
	var waitFor atomic.Pointer[chan struct{}]
	testHookBeforePair = func(in, out *conn.Conn) {
		if ch := waitFor.Load(); ch != nil {
			select {
			case <-*ch:
			case <-time.After(5 * time.Second):
			}
		}
	}
	t.Cleanup(func() { testHookBeforePair = nil })
	for _, after := range []bool{false, true} {
		// Before: the relay is held before its backend socket is watched
		// until the backend has sent its line and FIN, so it finds them
		// with the connect's outcome. After: the backend sends them once
		// the client's byte reached it through the relay.
		sent := make(chan struct{}, 1)
		if after {
			waitFor.Store(nil)
		} else {
			waitFor.Store(&sent)
		}
		be := backend(t, func(c *net.TCPConn) {
			if after {
				c.SetReadDeadline(time.Now().Add(5 * time.Second))
				c.Read(make([]byte, 1))
			}
			c.Write([]byte("554 go away\r\n"))
			c.Close()
			select {
			case sent <- struct{}{}:
			default:
			}
		})
		e := start(t, conn.Config{}, Config{}, "tcp://127.0.0.1:0?backend="+be)
		for range 20 {
			c := e.dial()
			if after {
				c.Write([]byte("x"))
			}
			c.SetReadDeadline(time.Now().Add(5 * time.Second))
			b, err := io.ReadAll(c)
			if string(b) != "554 go away\r\n" || err != nil {
				t.Fatalf("backend speaking (after the client: %v): read %q, %v; want its line and EOF", after, b, err)
			}
			c.Close()
		}
	}
}
