package test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tcpops/tcpops/internal/testutil"
	"github.com/tcpops/tcpops/rpc"
	rpcclient "github.com/tcpops/tcpops/rpc/client"
)

// daemonProc runs the real tcpops binary.
type daemonProc struct {
	cmd    *exec.Cmd
	socket string
	addr   string
}

func startDaemon(t testing.TB, socket string, args ...string) *daemonProc {
	t.Helper()
	port, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	addr := "127.0.0.1:" + port
	cmd := exec.Command(filepath.Join(binDir, "tcpops"), append([]string{"--socket", socket, "--listen", "tcp://" + addr}, args...)...)
	var logs bytes.Buffer
	cmd.Stderr = &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		if t.Failed() {
			t.Logf("daemon log:\n%s", logs.String())
		}
	})
	waitSocket(t, socket)
	return &daemonProc{cmd: cmd, socket: socket, addr: addr}
}

func TestSIGTERMDeliversEveryShutdownEvent(t *testing.T) {
	dir, _ := os.MkdirTemp("", "tcpops")
	defer os.RemoveAll(dir)
	d := startDaemon(t, filepath.Join(dir, "s"))
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	c, err := rpcclient.Dial(ctx, d.socket)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	const n = 500
	// One event before following: the follower gets it first, in the
	// answer to its call, which shows that it is subscribed.
	first, err := net.Dial("tcp", d.addr)
	if err != nil {
		t.Fatal(err)
	}
	first.Close()
	waitStats(t, d.socket, func(s rpc.Stats) bool { return s.EventSeq == 1 })
	reasons := map[string]int{}
	subscribed := make(chan struct{})
	followed := make(chan error, 1)
	go func() {
		followed <- c.Follow(ctx, ctx, rpc.EventsParams{}, func(e rpc.Event) error {
			if e.Seq == 1 {
				close(subscribed)
			}
			reasons[e.Reason]++
			return nil
		}, func(l rpc.EventsLost) error { return errors.New("events lost") })
	}()
	select {
	case <-subscribed:
	case err := <-followed:
		t.Fatalf("follow ended before its first event: %v", err)
	}
	var conns []net.Conn
	for range n {
		tc, err := net.Dial("tcp", d.addr)
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, tc)
		defer tc.Close()
	}
	waitStats(t, d.socket, func(s rpc.Stats) bool { return s.Connections == n })
	if err := d.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := d.cmd.Wait(); err != nil {
		t.Fatalf("daemon exit after SIGTERM: %v, want 0", err)
	}
	if err := <-followed; !errors.Is(err, rpcclient.ErrDisconnected) {
		t.Fatalf("follower ended with %v, want the daemon gone", err)
	}
	if reasons["shutdown"] != n || reasons["eof"] != 1 || len(reasons) != 2 {
		t.Fatalf("follower got %v, want the first eof and %d shutdown events", reasons, n)
	}
	if _, err := os.Stat(d.socket); !os.IsNotExist(err) {
		t.Fatalf("socket left after SIGTERM: %v", err)
	}
	// Every client saw its connection closed.
	for _, tc := range conns {
		tc.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := tc.Read(make([]byte, 1)); err == nil {
			t.Fatal("a client connection survived shutdown")
		}
	}
}

func TestKill9ThenRestart(t *testing.T) {
	dir, _ := os.MkdirTemp("", "tcpops")
	defer os.RemoveAll(dir)
	sock := filepath.Join(dir, "s")
	d := startDaemon(t, sock)
	d.cmd.Process.Kill()
	d.cmd.Wait()
	if _, err := os.Stat(sock); err != nil {
		t.Fatalf("expected a stale socket after kill -9: %v", err)
	}
	d2 := startDaemon(t, sock)
	// A third daemon cannot take the live socket.
	out, err := exec.Command(filepath.Join(binDir, "tcpops"), "--socket", sock, "--listen", "tcp://127.0.0.1:0").CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 1 {
		t.Fatalf("second daemon on a live socket: %v, want exit 1\n%s", err, out)
	}
	if st := mustStats(t, d2.socket); st.UptimeS < 0 {
		t.Fatal("restarted daemon not answering")
	}
}

func mustStats(t *testing.T, socket string) rpc.Stats {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := rpcclient.Dial(ctx, socket)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	st, err := c.Stats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// TestEventLogRotation: closed events go to --event-log as NDJSON; after
// the file is moved away, SIGUSR1 makes the daemon write a new one; the
// shutdown events land too.
func TestEventLogRotation(t *testing.T) {
	dir, _ := os.MkdirTemp("", "tcpops")
	defer os.RemoveAll(dir)
	logPath := filepath.Join(dir, "events.ndjson")
	d := startDaemon(t, filepath.Join(dir, "s"), "--event-log", logPath)
	closeOne := func() {
		c, err := net.Dial("tcp", d.addr)
		if err != nil {
			t.Fatal(err)
		}
		c.Close()
	}
	// lines waits for n events in the file p and returns what it holds
	// then (fewer if they never come: the caller says what is missing).
	lines := func(p string, n int) []rpc.Event {
		var evs []rpc.Event
		testutil.Until(func() bool {
			b, _ := os.ReadFile(p)
			evs = nil
			for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
				var e rpc.Event
				if json.Unmarshal([]byte(l), &e) == nil && e.Seq > 0 {
					evs = append(evs, e)
				}
			}
			return len(evs) >= n
		})
		return evs
	}
	closeOne()
	closeOne()
	if evs := lines(logPath, 2); len(evs) != 2 || evs[0].Seq != 1 || evs[1].Seq != 2 || evs[0].Reason != "eof" {
		t.Fatalf("event log before rotation: %+v", evs)
	}
	if err := os.Rename(logPath, logPath+".1"); err != nil {
		t.Fatal(err)
	}
	d.cmd.Process.Signal(syscall.SIGUSR1)
	testutil.WaitFor(t, "SIGUSR1 to make a new event log", func() bool {
		_, err := os.Stat(logPath)
		return err == nil
	})
	closeOne()
	keep, err := net.Dial("tcp", d.addr) // open at shutdown
	if err != nil {
		t.Fatal(err)
	}
	defer keep.Close()
	waitStats(t, d.socket, func(s rpc.Stats) bool { return s.EventSeq == 3 && s.Connections == 1 })
	d.cmd.Process.Signal(syscall.SIGTERM)
	if err := d.cmd.Wait(); err != nil {
		t.Fatalf("daemon exit: %v", err)
	}
	evs := lines(logPath, 2)
	if len(evs) != 2 || evs[0].Seq != 3 || evs[1].Reason != "shutdown" {
		t.Fatalf("event log after rotation: %+v, want seq 3 and a shutdown", evs)
	}
	if old := lines(logPath+".1", 2); len(old) != 2 {
		t.Fatalf("rotated file has %d events, want the 2 written before", len(old))
	}
}

// TestSdNotify: under a service manager (NOTIFY_SOCKET) the daemon says
// READY=1 once it serves and STOPPING=1 when it shuts down.
func TestSdNotify(t *testing.T) {
	dir, _ := os.MkdirTemp("", "tcpops")
	defer os.RemoveAll(dir)
	ns := filepath.Join(dir, "notify")
	pc, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: ns, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	t.Setenv("NOTIFY_SOCKET", ns)
	d := startDaemon(t, filepath.Join(dir, "s"))
	read := func() string {
		buf := make([]byte, 512)
		pc.SetReadDeadline(time.Now().Add(10 * time.Second))
		n, err := pc.Read(buf)
		if err != nil {
			t.Fatalf("no notification: %v", err)
		}
		return string(buf[:n])
	}
	if got := read(); !strings.HasPrefix(got, "READY=1\n") {
		t.Fatalf("first notification %q, want READY=1", got)
	}
	d.cmd.Process.Signal(syscall.SIGHUP)
	if got := read(); got != "RELOADING=1" {
		t.Fatalf("notification at SIGHUP %q, want RELOADING=1", got)
	}
	if got := read(); got != "READY=1" {
		t.Fatalf("notification after the reload %q, want READY=1", got)
	}
	d.cmd.Process.Signal(syscall.SIGTERM)
	if got := read(); got != "STOPPING=1" {
		t.Fatalf("notification at SIGTERM %q, want STOPPING=1", got)
	}
	d.cmd.Wait()
}

// TestSignalsOnceServing: a SIGUSR1 or SIGHUP sent as soon as the daemon
// answers on its socket is acted on, not ignored (SIGUSR1) nor fatal
// (SIGHUP). To send it in that moment every time, the daemon is held just
// after it: its READY=1 waits for room at a service manager whose queue
// the test has filled.
func TestSignalsOnceServing(t *testing.T) {
	tests := []struct {
		name  string
		sig   syscall.Signal
		check func(t *testing.T, logPath string, next func() string)
	}{
		{"SIGUSR1 reopens the event log", syscall.SIGUSR1, func(t *testing.T, logPath string, next func() string) {
			testutil.WaitFor(t, "a new event log", func() bool {
				_, err := os.Stat(logPath)
				return err == nil
			})
		}},
		{"SIGHUP reloads", syscall.SIGHUP, func(t *testing.T, logPath string, next func() string) {
			if got := next(); got != "RELOADING=1" {
				t.Fatalf("notification after SIGHUP %q, want RELOADING=1", got)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir, _ := os.MkdirTemp("", "tcpops")
			defer os.RemoveAll(dir)
			ns := filepath.Join(dir, "notify")
			pc, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: ns, Net: "unixgram"})
			if err != nil {
				t.Fatal(err)
			}
			defer pc.Close()
			fill, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: ns, Net: "unixgram"})
			if err != nil {
				t.Fatal(err)
			}
			defer fill.Close()
			queued := 0
			fill.SetWriteDeadline(time.Now().Add(200 * time.Millisecond))
			for {
				if _, err := fill.Write([]byte("x")); err != nil {
					break
				}
				queued++
			}
			// next returns the next notification from the daemon.
			next := func() string {
				buf := make([]byte, 512)
				for {
					pc.SetReadDeadline(time.Now().Add(testutil.Timeout))
					n, err := pc.Read(buf)
					if err != nil {
						t.Fatalf("no notification: %v", err)
					}
					if got := string(buf[:n]); got != "x" {
						return got
					}
				}
			}
			t.Setenv("NOTIFY_SOCKET", ns)
			logPath := filepath.Join(dir, "events.ndjson")
			d := startDaemon(t, filepath.Join(dir, "s"), "--event-log", logPath)
			if err := os.Rename(logPath, logPath+".1"); err != nil {
				t.Fatal(err)
			}
			if err := d.cmd.Process.Signal(tt.sig); err != nil {
				t.Fatal(err)
			}
			// Let the daemon go on only once a thread of it has taken the
			// signal (it is no longer pending), so that it meets the
			// daemon held there.
			testutil.WaitFor(t, "the daemon to take the signal", func() bool { return !signalPending(t, d.cmd.Process.Pid, tt.sig) })
			if got := next(); !strings.HasPrefix(got, "READY=1\n") {
				t.Fatalf("first notification %q, want READY=1 (after %d queued)", got, queued)
			}
			tt.check(t, logPath, next)
			if err := d.cmd.Process.Signal(syscall.SIGTERM); err != nil {
				t.Fatal(err)
			}
			if err := d.cmd.Wait(); err != nil {
				t.Fatalf("daemon exit after %v then SIGTERM: %v, want 0", tt.sig, err)
			}
		})
	}
}

// signalPending reports whether sig is pending for process pid or any of
// its threads, as /proc shows it.
func signalPending(t *testing.T, pid int, sig syscall.Signal) bool {
	t.Helper()
	bit := uint64(1) << (sig - 1)
	files, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/status", pid))
	files = append(files, fmt.Sprintf("/proc/%d/status", pid))
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			continue // a thread that has just ended
		}
		for _, l := range strings.Split(string(b), "\n") {
			k, v, _ := strings.Cut(l, ":")
			if k != "SigPnd" && k != "ShdPnd" {
				continue
			}
			set, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
			if err != nil {
				t.Fatalf("%s: %q: %v", f, l, err)
			}
			if set&bit != 0 {
				return true
			}
		}
	}
	return false
}

// TestUnitFile checks dist/tcpops.service with systemd-analyze where it
// is installed.
func TestUnitFile(t *testing.T) {
	sa, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Skip("systemd-analyze not installed")
	}
	unit, _ := filepath.Abs("../dist/tcpops.service")
	out, _ := exec.Command(sa, "verify", unit).CombinedOutput()
	// verify also wants ExecStart's binary and the man pages installed;
	// on a build machine they are not. Anything else is a finding.
	for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if l != "" && !strings.Contains(l, "/usr/local/bin/tcpops") && !strings.Contains(l, "'man tcpops") {
			t.Errorf("systemd-analyze verify: %s", l)
		}
	}
	t.Logf("systemd-analyze verify:\n%s", out)
}

// TestReloadAndCheckConfig: --check-config explains a bad file with its
// line; SIGHUP swaps listeners and defaults while live connections stay.
func TestReloadAndCheckConfig(t *testing.T) {
	dir, _ := os.MkdirTemp("", "tcpops")
	defer os.RemoveAll(dir)
	bin := filepath.Join(binDir, "tcpops")
	conf := filepath.Join(dir, "tcpops.yaml")
	os.WriteFile(conf, []byte("lifetime: 1m\nkeepalive: 1,2\n"), 0o644)
	out, err := exec.Command(bin, "--config", conf, "--check-config").CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 2 || !strings.Contains(string(out), conf+":2: --keepalive") {
		t.Fatalf("--check-config on a bad file: %v\n%s", err, out)
	}
	pa, _ := freePort()
	pb, _ := freePort()
	a, b := "127.0.0.1:"+pa, "127.0.0.1:"+pb
	os.WriteFile(conf, []byte("listen:\n  - tcp://"+a+"\nlifetime: 1h\n"), 0o644)
	if out, err := exec.Command(bin, "--config", conf, "--check-config").CombinedOutput(); err != nil || !strings.Contains(string(out), "configuration ok: 1 listener") {
		t.Fatalf("--check-config on a good file: %v\n%s", err, out)
	}
	sock := filepath.Join(dir, "s")
	cmd := exec.Command(bin, "--config", conf, "--socket", sock)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	waitSocket(t, sock)
	live, err := net.Dial("tcp", a)
	if err != nil {
		t.Fatal(err)
	}
	defer live.Close()
	waitStats(t, sock, func(s rpc.Stats) bool { return s.Connections == 1 })

	os.WriteFile(conf, []byte("listen:\n  - url: tcp://"+b+"\n    keepalive: 33,3,3\nlifetime: 2m\n"), 0o644)
	cmd.Process.Signal(syscall.SIGHUP)
	var nb net.Conn
	if !testutil.Until(func() bool {
		nb, err = net.Dial("tcp", b)
		return err == nil
	}) {
		t.Fatalf("new listener not opened by SIGHUP: %v", err)
	}
	defer nb.Close()
	if c, err := net.Dial("tcp", a); err == nil {
		c.Close()
		t.Fatal("removed listener still accepts")
	}
	// The live connection on the removed listener is still served.
	live.SetDeadline(time.Now().Add(5 * time.Second))
	live.Write([]byte("x"))
	if _, err := live.Read(make([]byte, 1)); err != nil {
		t.Fatalf("live connection after reload: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := rpcclient.Dial(ctx, sock)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	waitStats(t, sock, func(s rpc.Stats) bool { return s.Connections == 2 })
	r, err := c.List(ctx, rpc.ListParams{})
	if err != nil || len(r.Connections) != 2 {
		t.Fatalf("list: %+v, %v", r, err)
	}
	old, fresh := r.Connections[0], r.Connections[1]
	if old.LifetimeS != 3600 || fresh.LifetimeS != 120 || fresh.Keepalive == nil || fresh.Keepalive.IdleS != 33 {
		t.Fatalf("after reload: old %+v, new %+v; want the old lifetime kept and the new defaults on the new one", old, fresh)
	}
}
