package test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tcpops/tcpops/daemon"
	"github.com/tcpops/tcpops/daemon/daemontest"
	"github.com/tcpops/tcpops/internal/proc"
	"github.com/tcpops/tcpops/internal/testutil"
	"github.com/tcpops/tcpops/rpc"
	rpcclient "github.com/tcpops/tcpops/rpc/client"
)

// fullBacklog returns the address of a listener whose accept queue is full,
// so that a new connect gets no answer: a backend slow to accept.
func fullBacklog(t *testing.T) string {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	if err := unix.Bind(fd, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	if err := unix.Listen(fd, 0); err != nil {
		t.Fatal(err)
	}
	sa, _ := unix.Getsockname(fd)
	addr := fmt.Sprintf("127.0.0.1:%d", sa.(*unix.SockaddrInet4).Port)
	for range 3 {
		d := net.Dialer{Timeout: 200 * time.Millisecond}
		if c, err := d.Dial("tcp", addr); err == nil {
			t.Cleanup(func() { c.Close() })
		}
	}
	return addr
}

func TestBackendSlowToAccept(t *testing.T) {
	be := fullBacklog(t)
	d := daemontest.Start(t, "--listen", "tcp://127.0.0.1:0?backend="+be, "--backend-timeout", "300ms")
	c := d.Client(t)
	tc, id := d.Dial(t, 0)
	tc.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := tc.Read(make([]byte, 1)); err == nil {
		t.Fatal("client got data from a backend that never answered")
	}
	evs := daemontest.WaitEvents(t, c, rpc.EventsParams{}, 2)
	for _, e := range evs {
		switch e.Direction {
		case "out":
			if e.Reason != "error" || !strings.Contains(e.Error, "no answer within 300ms") {
				t.Errorf("outbound leg: %s %q, want error naming the timeout", e.Reason, e.Error)
			}
		case "in":
			if e.ConnID != id || e.Reason != "peer" {
				t.Errorf("inbound leg: %+v, want peer", e)
			}
		}
	}
	if _, err := c.Stats(t.Context()); err != nil {
		t.Fatalf("daemon not healthy: %v", err)
	}
}

// TestClientStopsReading: a client that reads nothing while its backend
// sends without pause holds only what the socket buffers hold; memory
// stays flat and other connections are served.
func TestClientStopsReading(t *testing.T) {
	blast, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer blast.Close()
	go func() {
		for {
			c, err := blast.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				buf := make([]byte, 64<<10)
				c.SetWriteDeadline(time.Now().Add(30 * time.Second))
				for i := 0; i < 4096; i++ { // at most 256 MiB
					if _, err := c.Write(buf); err != nil {
						return
					}
				}
			}()
		}
	}()
	d := daemontest.Start(t, "--listen", "tcp://127.0.0.1:0?backend="+blast.Addr().String(), "--listen", "tcp://127.0.0.1:0?backend=echo")
	var before runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	_, in := d.Dial(t, 0) // never read
	cn, ok := d.Table.Get(in)
	if !ok {
		t.Fatal("no inbound leg")
	}
	// Wait until the flow stalls: what the outbound leg has read stays
	// the same over 50 ms.
	var last uint64
	testutil.WaitFor(t, "the flow from the backend to stall", func() bool {
		time.Sleep(50 * time.Millisecond)
		out, ok := d.Table.Get(cn.Peer().ID)
		if !ok {
			t.Fatal("outbound leg gone")
		}
		n := out.Info().BytesIn
		stalled := n == last && n > 0
		last = n
		return stalled
	})
	if last > 64<<20 {
		t.Fatalf("daemon read %d bytes from the backend for a client reading nothing: no backpressure", last)
	}
	t.Logf("flow stalled after %d bytes read from the backend (socket buffers)", last)
	var after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&after)
	if grown := int64(after.HeapInuse) - int64(before.HeapInuse); grown > 16<<20 {
		t.Fatalf("heap grew %d bytes while a client does not read", grown)
	}
	// Someone else is served meanwhile.
	e, _ := d.Dial(t, 1)
	e.SetDeadline(time.Now().Add(5 * time.Second))
	e.Write([]byte("ping\n"))
	if l, err := bufio.NewReader(e).ReadString('\n'); err != nil || l != "ping\n" {
		t.Fatalf("echo while another client stalls: %q, %v", l, err)
	}
}

// TestFdExhaustion runs the real daemon with 64 file descriptors and
// connects 150 clients: accept fails with EMFILE, the accept loop backs off
// (little CPU), the failures are counted, and service resumes when
// clients leave.
func TestFdExhaustion(t *testing.T) {
	prlimit, err := exec.LookPath("prlimit")
	if err != nil {
		t.Skip("prlimit (util-linux) not installed")
	}
	dir, _ := os.MkdirTemp("", "tcpops")
	defer os.RemoveAll(dir)
	sock := filepath.Join(dir, "s")
	port, _ := freePort()
	addr := "127.0.0.1:" + port
	cmd := exec.Command(prlimit, "--nofile=64:64", filepath.Join(binDir, "tcpops"), "--socket", sock, "--listen", "tcp://"+addr, "--log-level", "error")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	waitSocket(t, sock)
	var conns []net.Conn
	for range 150 {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			t.Fatalf("connect: %v", err) // the kernel's backlog takes them all
		}
		conns = append(conns, c)
	}
	cpu0 := cpuTime(t, cmd.Process.Pid)
	time.Sleep(time.Second)
	spent := cpuTime(t, cmd.Process.Pid) - cpu0
	t.Logf("daemon CPU during 1 s out of file descriptors: %v", spent)
	if spent > 300*time.Millisecond {
		t.Errorf("daemon used %v of CPU in 1 s out of fds: the accept loop spins", spent)
	}
	for _, c := range conns {
		c.Close()
	}
	st := waitStats(t, sock, func(s rpc.Stats) bool { return s.AcceptErrors > 0 && s.Connections == 0 && s.Accepted == 150 })
	t.Logf("accept errors %d, accepted %d", st.AcceptErrors, st.Accepted)
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	c.Write([]byte("back\n"))
	if l, err := bufio.NewReader(c).ReadString('\n'); err != nil || l != "back\n" {
		t.Fatalf("after the flood: %q, %v", l, err)
	}
}

func cpuTime(t *testing.T, pid int) time.Duration {
	d, err := proc.CPU(pid)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func waitSocket(t testing.TB, sock string) {
	waitStats(t, sock, func(rpc.Stats) bool { return true })
}

func waitStats(t testing.TB, sock string, ok func(rpc.Stats) bool) rpc.Stats {
	t.Helper()
	var st rpc.Stats
	var err error
	if !testutil.Until(func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		var c *rpcclient.Client
		if c, err = rpcclient.Dial(ctx, sock); err != nil {
			return false
		}
		defer c.Close()
		st, err = c.Stats(ctx)
		return err == nil && ok(st)
	}) {
		t.Fatalf("stats %+v, %v: condition not reached", st, err)
	}
	return st
}

// TestControlClients: 500 at once are served; clients that send nothing
// or half a line are closed after the idle timeout and counted; past
// --max-rpc-clients a client is refused with a message.
func TestControlClients(t *testing.T) {
	// 500 at once are served by a daemon with the default idle timeout:
	// with 300 ms, one of them starved of CPU for that long between
	// connecting and asking would be closed as idle.
	busy := daemontest.StartWith(t, func(c *daemon.Config) { c.MaxRPCClients = 700 })
	busy.Clients(t, 500, func(ctx context.Context, c *rpcclient.Client) error {
		_, err := c.Stats(ctx)
		return err
	})
	d := daemontest.StartWith(t, func(c *daemon.Config) { c.RPCIdleTimeout = 300 * time.Millisecond })
	var idle []net.Conn
	for i := range 200 {
		c, err := net.Dial("unix", d.Socket)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if i%2 == 1 {
			c.Write([]byte(`{"id":1,"method":"tcpops.st`)) // half a line
		}
		idle = append(idle, c)
	}
	for _, c := range idle {
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, err := io.Copy(io.Discard, c); err != nil {
			t.Fatalf("idle control client not closed by the daemon: %v", err)
		}
	}
	st := waitStats(t, d.Socket, func(s rpc.Stats) bool { return s.RPC.IdleTimeouts >= 200 })
	if st.RPC.IdleTimeouts != 200 {
		t.Fatalf("idle timeouts = %d, want 200", st.RPC.IdleTimeouts)
	}
	// A follower that sends nothing after its request is not idle. One
	// closed event, sent in the answer to its call, shows it subscribed;
	// then it stays quiet for over three idle timeouts.
	tc, _ := d.Dial(t, 0)
	tc.Close()
	testutil.WaitFor(t, "a closed event", func() bool { return d.Table.Events().LastSeq() == 1 })
	c := d.Client(t)
	fctx, cancel := context.WithCancel(t.Context())
	subscribed := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		done <- c.Follow(fctx, t.Context(), rpc.EventsParams{}, func(e rpc.Event) error {
			if e.Seq == 1 {
				close(subscribed)
			}
			return nil
		}, func(rpc.EventsLost) error { return nil })
	}()
	select {
	case <-subscribed:
	case err := <-done:
		t.Fatalf("follow ended before its first event: %v", err)
	}
	time.Sleep(time.Second) // what is tested: nothing happens in this time
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("follower closed as idle: %v", err)
	}
}

func TestMaxControlClients(t *testing.T) {
	d := daemontest.StartWith(t, func(c *daemon.Config) { c.MaxRPCClients = 5 })
	for range 5 {
		d.Client(t)
	}
	testutil.WaitFor(t, "5 control clients", func() bool { return d.RPC.Clients() == 5 })
	c, err := net.Dial("unix", d.Socket)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	l, _ := bufio.NewReader(c).ReadString('\n')
	if !strings.Contains(l, "too many control clients (5)") {
		t.Fatalf("refusal = %q", l)
	}
}

// TestCloseWhileConnecting closes, through the API, an outbound leg still
// connecting to a backend that never answers: both legs end at once (local
// and peer), the client sees its connection end, and the dial's timeout,
// when it comes, adds no event.
func TestCloseWhileConnecting(t *testing.T) {
	be := fullBacklog(t)
	d := daemontest.Start(t, "--listen", "tcp://127.0.0.1:0?backend="+be, "--backend-timeout", "500ms")
	c := d.Client(t)
	tc, id := d.Dial(t, 0)
	in, _ := d.Table.Get(id)
	var out uint64
	testutil.WaitFor(t, "the outbound leg", func() bool {
		if p := in.Peer(); p != nil {
			out = p.ID
		}
		return out != 0
	})
	if st, err := c.State(t.Context(), out); err != nil || st.State != 3 {
		t.Fatalf("outbound leg %d: %+v %v, want state 3 (connecting)", out, st, err)
	}
	if _, err := c.CloseConn(t.Context(), out, false); err != nil {
		t.Fatal(err)
	}
	tc.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := tc.Read(make([]byte, 1)); err == nil {
		t.Fatal("client read data from a backend that never answered")
	}
	for _, e := range daemontest.WaitEvents(t, c, rpc.EventsParams{}, 2) {
		if want := map[uint64]string{id: "peer", out: "local"}[e.ConnID]; e.Reason != want {
			t.Errorf("conid %d (%s) closed with %s, want %s", e.ConnID, e.Direction, e.Reason, want)
		}
	}
	time.Sleep(800 * time.Millisecond) // past the dial timeout
	if ev, _ := c.Events(t.Context(), rpc.EventsParams{}); len(ev.Events) != 2 {
		t.Fatalf("%d events after the dial timeout, want the 2 closes only: %+v", len(ev.Events), ev.Events)
	}
	if s, err := c.Stats(t.Context()); err != nil || s.Connections != 0 {
		t.Fatalf("stats %+v %v, want no connection left", s, err)
	}
}
