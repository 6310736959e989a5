package test

import (
	"bytes"
	"context"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/tcpops/tcpops/rpc"
)

// daemonProc runs the real tcpops binary.
type daemonProc struct {
	cmd    *exec.Cmd
	socket string
	addr   string
}

func startDaemon(t *testing.T, socket string, args ...string) *daemonProc {
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
	deadline := time.Now().Add(10 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		c, err := rpc.Dial(ctx, socket)
		cancel()
		if err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("daemon did not come up: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return &daemonProc{cmd: cmd, socket: socket, addr: addr}
}

func TestSIGTERMDeliversEveryShutdownEvent(t *testing.T) {
	dir, _ := os.MkdirTemp("", "tcpops")
	defer os.RemoveAll(dir)
	d := startDaemon(t, filepath.Join(dir, "s"))
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	c, err := rpc.Dial(ctx, d.socket)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	const n = 500
	reasons := map[string]int{}
	followed := make(chan error, 1)
	go func() {
		followed <- c.Follow(ctx, ctx, rpc.EventsParams{}, func(e rpc.Event) error {
			reasons[e.Reason]++
			return nil
		}, func(l rpc.EventsLost) error { return errors.New("events lost") })
	}()
	var conns []net.Conn
	for range n {
		tc, err := net.Dial("tcp", d.addr)
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, tc)
		defer tc.Close()
	}
	st := mustStats(t, d.socket)
	for st.Connections < n {
		time.Sleep(10 * time.Millisecond)
		st = mustStats(t, d.socket)
	}
	if err := d.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := d.cmd.Wait(); err != nil {
		t.Fatalf("daemon exit after SIGTERM: %v, want 0", err)
	}
	if err := <-followed; !errors.Is(err, rpc.ErrDisconnected) {
		t.Fatalf("follower ended with %v, want the daemon gone", err)
	}
	if reasons["shutdown"] != n || len(reasons) != 1 {
		t.Fatalf("follower got %v, want %d shutdown events", reasons, n)
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
	c, err := rpc.Dial(ctx, socket)
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
