package relay

import (
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/tcpops/tcpops/conn"
	"github.com/tcpops/tcpops/sock"
)

// inNetns re-runs the calling test inside a private network namespace
// (unshare -n) and reports whether this process is that child. A parent
// that cannot make a namespace skips the test, saying why.
func inNetns(t *testing.T) bool {
	t.Helper()
	if os.Getenv("TCPOPS_TEST_NETNS") == t.Name() {
		if out, err := exec.Command("ip", "link", "set", "lo", "up").CombinedOutput(); err != nil {
			t.Fatalf("ip link set lo up: %v: %s", err, out)
		}
		return true
	}
	unshare, err := exec.LookPath("unshare")
	if err != nil {
		t.Skip("unshare (util-linux) not installed: cannot make a network namespace")
	}
	if out, err := exec.Command(unshare, "-n", "true").CombinedOutput(); err != nil {
		t.Skipf("network namespaces not permitted here (unshare -n: %v: %s)", err, strings.TrimSpace(string(out)))
	}
	cmd := exec.Command(unshare, "-n", os.Args[0], "-test.run", "^"+t.Name()+"$", "-test.v", "-test.count=1")
	cmd.Env = append(os.Environ(), "TCPOPS_TEST_NETNS="+t.Name())
	out, err := cmd.CombinedOutput()
	t.Logf("in a network namespace:\n%s", out)
	if err != nil {
		t.Fatalf("child in network namespace failed: %v", err)
	}
	return false
}

func TestKeepaliveTimeout(t *testing.T) {
	if !inNetns(t) {
		return
	}
	be := backend(t, upper)
	ka := sock.KeepaliveConfig{Enable: true, Idle: 1, Count: 1, Interval: 1, UserTimeoutMs: -1}
	e := start(t, conn.Config{}, Config{Keepalive: ka}, "tcp://127.0.0.1:0?backend="+be)
	c := e.dial()
	c.Write([]byte("a\n"))
	readLine(t, c)
	e.waitConns(2, conn.StateOK)
	cut := time.Now()
	if out, err := exec.Command("ip", "link", "set", "lo", "down").CombinedOutput(); err != nil {
		t.Fatalf("ip link set lo down: %v: %s", err, out)
	}
	evs := e.events(2)
	took := time.Since(cut)
	var sawTimeout bool
	for _, ev := range evs {
		t.Logf("%s leg: reason %s (%s) error %q after %v", ev.Direction, ev.Reason, ev.Name(), ev.Error, took)
		switch ev.Reason {
		case conn.ReasonTimeout:
			sawTimeout = true
			if ev.Name() != "tcp:timeout" {
				t.Errorf("event name %q, want tcp:timeout", ev.Name())
			}
		case conn.ReasonPeer:
		default:
			t.Errorf("%s leg closed with %q, want timeout (or peer after its partner timed out)", ev.Direction, ev.Reason)
		}
	}
	if !sawTimeout {
		t.Fatal("no leg closed with reason timeout")
	}
	// idle + count x interval, plus 1 s of slack for a shared machine.
	if limit := 3 * time.Second; took > limit+time.Second {
		t.Errorf("closed %v after the cut, want within %v", took, limit+time.Second)
	}
}
