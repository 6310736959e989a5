package test

import (
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

// What an operator sees in the first minutes: logs, messages, versions.

// startLogged starts the tcpops binary with args and returns it with its
// log (stderr and stdout), which the test can watch while it runs; it is
// stopped by SIGTERM at the end of the test.
func startLogged(t *testing.T, args ...string) (*exec.Cmd, *syncBuffer) {
	t.Helper()
	cmd := exec.Command(filepath.Join(binDir, "tcpops"), args...)
	out := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-done
		}
		if t.Failed() {
			t.Logf("tcpops log:\n%s", out.String())
		}
	})
	return cmd, out
}

// waitLog waits until the log matches re and returns the submatches of
// its last match.
func waitLog(t *testing.T, log *syncBuffer, re string) []string {
	t.Helper()
	rx := regexp.MustCompile(re)
	var m []string
	waitFor(t, "a log line matching "+re, func() bool {
		all := rx.FindAllStringSubmatch(log.String(), -1)
		if len(all) == 0 {
			return false
		}
		m = all[len(all)-1]
		return true
	})
	return m
}

// echoes checks that addr serves: a line sent comes back.
func echoes(t *testing.T, addr string) {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	c.Write([]byte("hi\n"))
	b := make([]byte, 3)
	if _, err := c.Read(b); err != nil || string(b) != "hi\n" {
		t.Fatalf("%s: read %q, %v; want the line echoed", addr, b, err)
	}
}

// TestDaemonSaysWhereItListens: the log names each listener's URL and the
// address it got (a port 0 resolved), at start and again after a reload;
// --check-config lists the listeners it would open.
func TestDaemonSaysWhereItListens(t *testing.T) {
	dir := t.TempDir()
	conf := filepath.Join(dir, "tcpops.yaml")
	os.WriteFile(conf, []byte("listen:\n  - tcp://127.0.0.1:0\n  - url: tcp://127.0.0.2:0\n    name: second\n"), 0o644)
	out, err := exec.Command(filepath.Join(binDir, "tcpops"), "--config", conf, "--socket", "/run/x.sock", "--check-config").CombinedOutput()
	want := "configuration ok: 2 listener(s), socket /run/x.sock\n" +
		"  listener tcp://127.0.0.1:0 on 127.0.0.1:0, backend echo\n" +
		"  listener tcp://127.0.0.2:0?name=second on 127.0.0.2:0, backend echo (name second)\n"
	if err != nil || string(out) != want {
		t.Fatalf("--check-config: %v\n%s\nwant\n%s", err, out, want)
	}

	cmd, log := startLogged(t, "--config", conf, "--socket", filepath.Join(dir, "s"))
	first := waitLog(t, log, `level=INFO msg=listening url=tcp://127.0.0.1:0 address=(127\.0\.0\.1:\d+) backend=echo\n`)
	second := waitLog(t, log, `level=INFO msg=listening url="tcp://127.0.0.2:0\?name=second" address=(127\.0\.0\.2:\d+) backend=echo name=second\n`)
	echoes(t, first[1])
	echoes(t, second[1])

	port, _ := freePort()
	os.WriteFile(conf, []byte("listen:\n  - tcp://127.0.0.1:0\n  - tcp://127.0.0.1:"+port+"\n"), 0o644)
	cmd.Process.Signal(syscall.SIGHUP)
	after := waitLog(t, log, `msg="configuration reloaded"[^\n]*\n`+
		`[^\n]*msg=listening url=tcp://127.0.0.1:0 address=(127\.0\.0\.1:\d+) backend=echo\n`+
		`[^\n]*msg=listening url=tcp://127.0.0.1:`+port+` address=(127\.0\.0\.1:`+port+`) backend=echo\n`)
	if after[1] != first[1] {
		t.Errorf("after reload the kept listener is logged on %s, was %s", after[1], first[1])
	}
	echoes(t, after[2])
	if strings.Count(log.String(), "msg=listening") != 4 {
		t.Errorf("want 4 listening lines (2 at start, 2 after reload):\n%s", log.String())
	}
}
