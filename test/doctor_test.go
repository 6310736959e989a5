package test

import (
	"bytes"
	"encoding/json"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
)

// ctlAs runs tcpopsctl (bin) with args under cred (nil: as the test) and
// extra environment, and returns its output and exit code.
func ctlAs(t *testing.T, bin string, cred *syscall.Credential, env []string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), env...)
	if cred != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	}
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		code = ee.ExitCode()
	case err != nil:
		t.Fatalf("tcpopsctl %s: %v", strings.Join(args, " "), err)
	}
	return out.String(), errb.String(), code
}

func ctlBin() string { return filepath.Join(binDir, "tcpopsctl") }

// doctorJSON is what the tests read of doctor -o json.
type doctorJSON struct {
	Socket string `json:"socket"`
	OK     bool   `json:"ok"`
	Checks []struct {
		Check  string `json:"check"`
		Status string `json:"status"`
		Detail string `json:"detail"`
		Hint   string `json:"hint"`
	} `json:"checks"`
}

func TestDoctorNoDaemon(t *testing.T) {
	dir := t.TempDir()
	missing := filepath.Join(dir, "nothing")
	out, _, code := ctlAs(t, ctlBin(), nil, nil, "-s", missing, "doctor")
	t.Logf("no daemon:\n%s", out)
	if code != 1 || !regexp.MustCompile(`(?m)^FAIL  socket +no socket at `+regexp.QuoteMeta(missing)+` \(chosen by --socket\)\n +-> start the daemon`).MatchString(out) {
		t.Errorf("doctor without a daemon: exit %d, output:\n%s\nwant exit 1 and a FAIL naming the path, the rule and what to do", code, out)
	}
	// A socket file nobody serves (a daemon killed with -9), found through
	// the environment.
	stale := filepath.Join(dir, "stale")
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: stale, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	ln.SetUnlinkOnClose(false)
	ln.Close()
	out, _, code = ctlAs(t, ctlBin(), nil, []string{"TCPOPS_SOCKET=" + stale}, "-o", "json", "doctor")
	var r doctorJSON
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatalf("doctor -o json: %v\n%s", err, out)
	}
	if code != 1 || r.OK || len(r.Checks) != 1 || r.Checks[0].Status != "fail" ||
		!strings.Contains(r.Checks[0].Detail, "(chosen by $TCPOPS_SOCKET) is left over: no daemon answers there") {
		t.Errorf("doctor on a stale socket: exit %d, %+v", code, r)
	}
}

func TestDoctorHealthy(t *testing.T) {
	socket := filepath.Join(t.TempDir(), "s")
	d := startServing(t, socket, "--keepalive", "60,5,5", "--max-conns", "100", "--log-level", "error")
	echoConns(t, d.addr, 2)
	out, _, code := ctlAs(t, ctlBin(), nil, nil, "-s", socket, "doctor")
	t.Logf("healthy:\n%s", out)
	if code != 0 {
		t.Fatalf("doctor exit %d, want 0", code)
	}
	out, _, _ = ctlAs(t, ctlBin(), nil, nil, "-s", socket, "-o", "json", "doctor")
	var r doctorJSON
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatalf("doctor -o json: %v\n%s", err, out)
	}
	var names []string
	for _, c := range r.Checks {
		names = append(names, c.Check)
		if c.Status != "ok" {
			t.Errorf("check %s: %s %q, want ok", c.Check, c.Status, c.Detail)
		}
	}
	want := "socket rights version open-files capacity keepalive listeners events lifetime suspects"
	if got := strings.Join(names, " "); got != want || !r.OK {
		t.Errorf("checks %q ok %v, want %q and ok", got, r.OK, want)
	}
}

// TestDoctorLowFdLimit runs the daemon with 64 descriptors and room for
// 100 connections: doctor fails and says how to fix it.
func TestDoctorLowFdLimit(t *testing.T) {
	prlimit := tool(t, "prlimit", "util-linux")
	socket := filepath.Join(t.TempDir(), "s")
	port, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(prlimit, "--nofile=64:64", filepath.Join(binDir, "tcpops"), "--socket", socket,
		"--listen", "tcp://127.0.0.1:"+port, "--max-conns", "100", "--keepalive", "60,5,5", "--log-level", "error")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	waitSocket(t, socket)
	out, _, code := ctlAs(t, ctlBin(), nil, nil, "-s", socket, "doctor")
	t.Logf("64 open files:\n%s", out)
	if code != 1 || !regexp.MustCompile(`(?m)^FAIL  open-files +open-files limit 64 is below what --max-conns 100 needs: 264 .*\n +-> raise LimitNOFILE= .* to 264 or more\n`).MatchString(out) {
		t.Errorf("doctor with 64 open files for 100 connections: exit %d, want 1 and a FAIL of open-files with the fix", code)
	}
}

// TestReadOnlyCallerSees runs doctor and top as uid 65534 against a
// daemon whose socket anyone may open: doctor says read-only and why, and
// top shows its changing keys off with that reason.
func TestReadOnlyCallerSees(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("this test runs a client under uid 65534 and needs root (as CI runs)")
	}
	dir, err := os.MkdirTemp("", "tcpops-ro")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	os.Chmod(dir, 0o755)
	// The binaries' directory is private: a copy nobody can run.
	bin := filepath.Join(dir, "tcpopsctl")
	b, err := os.ReadFile(ctlBin())
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, b, 0o755); err != nil {
		t.Fatal(err)
	}
	socket := filepath.Join(dir, "s")
	d := startServing(t, socket, "--socket-mode", "0666", "--keepalive", "60,5,5", "--max-conns", "100", "--log-level", "error")
	echoConns(t, d.addr, 1)
	nobody := &syscall.Credential{Uid: 65534, Gid: 65534}
	out, stderr, code := ctlAs(t, bin, nobody, []string{"HOME=/nonexistent"}, "-s", socket, "doctor")
	t.Logf("read-only caller:\n%s%s", out, stderr)
	if code != 0 || !regexp.MustCompile(`(?m)^WARN  rights +read-only: uid 65534 is not root, not the daemon's uid 0, and the daemon has no --admin-group; .*\n +-> to change connections`).MatchString(out) {
		t.Errorf("doctor as uid 65534: exit %d, want 0 and a WARN saying read-only and why", code)
	}
	out, stderr, code = ctlAs(t, bin, nobody, []string{"HOME=/nonexistent", "COLUMNS=200", "LINES=20"}, "-s", socket, "top", "--once", "--interval", "100ms")
	t.Logf("top --once as uid 65534:\n%s%s", out, stderr)
	if code != 0 || !strings.Contains(out, "[c close, k keepalive, l lifetime: off, read-only: uid 65534 is not root") ||
		!regexp.MustCompile(`(?m)^> 1 +- +tcp +in +ok`).MatchString(out) {
		t.Errorf("top --once as uid 65534: exit %d, want 0, the connection and the keys off with the reason", code)
	}
}
