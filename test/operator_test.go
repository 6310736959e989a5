package test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/santhosh-tekuri/jsonschema/v6"

	"github.com/tcpops/tcpops/daemon/daemontest"
	"github.com/tcpops/tcpops/internal/testutil"
	"github.com/tcpops/tcpops/rpc"
)

// What an operator sees in the first minutes: logs, messages, versions.

// startLogged starts the tcpops binary with args and returns it with its
// log (stderr and stdout), which the test can watch while it runs; it is
// stopped by SIGTERM at the end of the test.
func startLogged(t *testing.T, args ...string) (*exec.Cmd, *daemontest.Buffer) {
	t.Helper()
	return startLoggedBin(t, filepath.Join(binDir, "tcpops"), args...)
}

// startLoggedBin is startLogged with another tcpops binary.
func startLoggedBin(t *testing.T, bin string, args ...string) (*exec.Cmd, *daemontest.Buffer) {
	t.Helper()
	cmd := exec.Command(bin, args...)
	out := &daemontest.Buffer{}
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
func waitLog(t *testing.T, log *daemontest.Buffer, re string) []string {
	t.Helper()
	rx := regexp.MustCompile(re)
	var m []string
	testutil.WaitFor(t, "a log line matching "+re, func() bool {
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
	// It loads what the start would load: a certificate that cannot be
	// read fails the check as it would fail the start.
	out, err = exec.Command(filepath.Join(binDir, "tcpops"), "--listen", "tls://127.0.0.1:0?cert=/nonexistent.pem&key=/nonexistent.key", "--socket", "/run/x.sock", "--check-config").CombinedOutput()
	if err == nil || !strings.Contains(string(out), "certificate /nonexistent.pem, key /nonexistent.key: open /nonexistent.pem: no such file or directory") {
		t.Fatalf("--check-config of a tls listener without its certificate: %v, %s; want a failure naming the file", err, out)
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

// needRoot fails the test unless it runs as root: it makes namespaces or
// runs programs under another uid. ./test.sh runs as root in CI.
func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("this test needs root (mount namespaces, another uid): run ./test.sh as root, as .ci/run does")
	}
}

// sharedBinaries lets other users run the built binaries.
func sharedBinaries(t *testing.T) {
	t.Helper()
	if err := os.Chmod(binDir, 0o755); err != nil {
		t.Fatal(err)
	}
}

// privateRun starts the tcpops binary with args in a mount namespace of
// its own with an empty /run, as on a fresh boot: no --socket, no
// TCPOPS_SOCKET, so it is a system daemon on /run/tcpops/tcpops.sock.
// It returns a function that runs a command in that namespace as uid
// (0 or another), with the environment a login of that user would have.
func privateRun(t *testing.T, args ...string) (run func(uid int, name string, args ...string) (string, int)) {
	t.Helper()
	needRoot(t)
	unshare := tool(t, "unshare", "util-linux")
	nsenter := tool(t, "nsenter", "util-linux")
	cmdArgs := append([]string{"--mount", "--propagation", "private", "sh", "-c",
		`mount -t tmpfs -o mode=0755 tmpfs /run && exec "$0" "$@"`, filepath.Join(binDir, "tcpops")}, args...)
	daemon := exec.Command(unshare, cmdArgs...)
	daemon.Env = envWithout("TCPOPS_SOCKET")
	log := &daemontest.Buffer{}
	daemon.Stdout, daemon.Stderr = log, log
	if err := daemon.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { daemon.Wait(); close(done) }()
	t.Cleanup(func() {
		daemon.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			daemon.Process.Kill()
			<-done
		}
		if t.Failed() {
			t.Logf("tcpops log:\n%s", log.String())
		}
	})
	// Until the daemon says it started, the process may not be in its
	// namespace yet.
	waitLog(t, log, `msg="tcpops started"`)
	pid := strconv.Itoa(daemon.Process.Pid)
	return func(uid int, name string, args ...string) (string, int) {
		t.Helper()
		ns := []string{"-t", pid, "-m"}
		env := envWithout("TCPOPS_SOCKET", "XDG_RUNTIME_DIR", "HOME")
		if uid != 0 {
			u := strconv.Itoa(uid)
			ns = append(ns, "-S", u, "-G", u)
			env = append(env, "XDG_RUNTIME_DIR=/run/user/"+u, "HOME=/")
		} else {
			env = append(env, "HOME=/root")
		}
		c := exec.Command(nsenter, append(append(ns, "--", name), args...)...)
		c.Env = env
		out, err := c.CombinedOutput()
		code := 0
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatalf("%s %v: %v", name, args, err)
		}
		return string(out), code
	}
}

// envWithout is this process's environment less the named variables.
func envWithout(names ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if !slices.Contains(names, k) {
			env = append(env, kv)
		}
	}
	return env
}

// TestSystemSocketFoundByOtherUsers: a root daemon with no --socket makes
// /run/tcpops (mode 0755) and listens there; tcpopsctl run by another
// user tries that socket before its own per-user one, and when it cannot
// get in, names every path it tried and why.
func TestSystemSocketFoundByOtherUsers(t *testing.T) {
	sharedBinaries(t)
	port, _ := freePort()
	run := privateRun(t, "--listen", "tcp://127.0.0.1:"+port)
	ctl := filepath.Join(binDir, "tcpopsctl")
	if out, code := run(0, ctl, "wait", "ready", "--timeout", "15s"); code != 0 {
		t.Fatalf("wait ready as root: exit %d: %s", code, out)
	}
	if out, _ := run(0, "stat", "-c", "%a %U %F", "/run/tcpops", "/run/tcpops/tcpops.sock"); out != "755 root directory\n660 root socket\n" {
		t.Fatalf("/run/tcpops and its socket: %q; want a 0755 directory and a 0660 socket", out)
	}
	out, code := run(65534, ctl, "list")
	want := "tcpopsctl: cannot reach tcpops at /run/tcpops/tcpops.sock: permission denied, nor at /run/user/65534/tcpops.sock: no such file (is the daemon running? set --socket or TCPOPS_SOCKET)\n"
	if code != 3 || out != want {
		t.Fatalf("list as uid 65534 with the socket mode 0660: exit %d, %q; want 3, %q", code, out, want)
	}
	// A directory closed to others (the unit's RuntimeDirectoryMode=0750)
	// hides the socket: it is tried all the same, and the message says so.
	run(0, "chmod", "0750", "/run/tcpops")
	out, code = run(65534, ctl, "list")
	if code != 3 || out != want {
		t.Fatalf("list as uid 65534 with /run/tcpops 0750: exit %d, %q; want 3, %q", code, out, want)
	}
	run(0, "chmod", "0755", "/run/tcpops")
	run(0, "chmod", "0666", "/run/tcpops/tcpops.sock")
	out, code = run(65534, ctl, "list")
	if code != 0 || !strings.HasPrefix(out, "CONID  PEER  PROTO") {
		t.Fatalf("list as uid 65534 with the socket open to all: exit %d, %q", code, out)
	}
	out, code = run(65534, ctl, "-o", "json", "stats")
	if code != 0 || !strings.Contains(out, `{"connections":0,`) {
		t.Fatalf("stats as uid 65534: exit %d, %q", code, out)
	}
}

// TestSocketDirectoryNotCreated: a --socket in a directory that does not
// exist is an error naming it, and nothing is created.
func TestSocketDirectoryNotCreated(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "nonexistent", "dir")
	out, err := exec.Command(filepath.Join(binDir, "tcpops"), "--socket", filepath.Join(missing, "t.sock"), "--listen", "tcp://127.0.0.1:0").CombinedOutput()
	want := "tcpops: control socket " + missing + "/t.sock: directory " + missing + " does not exist (create it, or choose another --socket)\n"
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 || string(out) != want {
		t.Fatalf("tcpops --socket in a missing directory: %v, %q; want exit 1, %q", err, out, want)
	}
	if _, err := os.Stat(filepath.Dir(missing)); !os.IsNotExist(err) {
		t.Fatalf("%s was created", filepath.Dir(missing))
	}
}

// repoRoot is the root of the repository under test.
func repoRoot(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	return root
}

// freshClone clones the repository into a new directory and lays the
// working tree's tracked files over it, so the clone holds what is under
// test, committed or not, and nothing else (no build output, no untracked
// files). It returns the clone's directory, parent/tcpops.
func freshClone(t *testing.T, parent string) string {
	t.Helper()
	git := tool(t, "git", "git")
	root := repoRoot(t)
	dir := filepath.Join(parent, "tcpops")
	if out, err := exec.Command(git, "clone", "--quiet", root, dir).CombinedOutput(); err != nil {
		t.Fatalf("git clone: %v\n%s", err, out)
	}
	out, err := exec.Command(git, "-C", root, "ls-files", "-z").Output()
	if err != nil {
		t.Fatalf("git ls-files: %v", err)
	}
	for _, name := range strings.Split(strings.TrimRight(string(out), "\x00"), "\x00") {
		b, err := os.ReadFile(filepath.Join(root, name))
		dst := filepath.Join(dir, name)
		if os.IsNotExist(err) {
			os.Remove(dst) // deleted in the working tree
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		if old, err := os.ReadFile(dst); err == nil && string(old) == string(b) {
			continue
		}
		fi, err := os.Stat(filepath.Join(root, name))
		if err != nil {
			t.Fatal(err)
		}
		os.MkdirAll(filepath.Dir(dst), 0o755)
		if err := os.WriteFile(dst, b, fi.Mode().Perm()); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// goBuild builds the two binaries from the module in dir into out with
// the extra go build flags.
func goBuild(t *testing.T, dir, out string, flags ...string) {
	t.Helper()
	args := append([]string{"build", "-o", out + "/"}, flags...)
	cmd := exec.Command("go", append(args, "./cmd/tcpops", "./cmd/tcpopsctl")...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build %v: %v\n%s", flags, err, b)
	}
}

// TestVersion: tcpops --version and tcpopsctl version say the version,
// commit and Go release: from -ldflags when given, else from what Go
// stamped into a build from a clone (the commit, a pseudo-version of it,
// and whether the tree was modified).
func TestVersion(t *testing.T) {
	root := repoRoot(t)
	bin := t.TempDir()
	goBuild(t, root, bin, "-ldflags", "-X github.com/tcpops/tcpops/rpc.BuildVersion=v9.8.7 -X github.com/tcpops/tcpops/rpc.BuildCommit=0123456789abcdef0123456789abcdef01234567")
	out, err := exec.Command(filepath.Join(bin, "tcpops"), "--version").CombinedOutput()
	goVer := runtime.Version()
	if want := "tcpops v9.8.7 (commit 0123456789ab, " + goVer + ")\n"; err != nil || string(out) != want {
		t.Fatalf("tcpops --version: %v, %q; want %q", err, out, want)
	}
	sock := filepath.Join(t.TempDir(), "s")
	_, log := startLoggedBin(t, filepath.Join(bin, "tcpops"), "--socket", sock, "--listen", "tcp://127.0.0.1:0")
	waitLog(t, log, "msg=listening")
	mine, err := exec.Command(filepath.Join(binDir, "tcpopsctl"), "--version").Output()
	if err != nil || !strings.HasPrefix(string(mine), "tcpopsctl ") {
		t.Fatalf("tcpopsctl --version: %v, %q", err, mine)
	}
	out, err = exec.Command(filepath.Join(binDir, "tcpopsctl"), "-s", sock, "version").CombinedOutput()
	if want := string(mine) + "tcpops    v9.8.7 (commit 0123456789ab, " + goVer + ")\n"; err != nil || string(out) != want {
		t.Fatalf("tcpopsctl version: %v, %q; want %q", err, out, want)
	}
	out, err = exec.Command(filepath.Join(binDir, "tcpopsctl"), "-s", sock, "-o", "json", "version").Output()
	var both map[string]rpc.Version
	if err := json.Unmarshal(out, &both); err != nil {
		t.Fatalf("tcpopsctl -o json version: %v, %q", err, out)
	}
	if want := (rpc.Version{Version: "v9.8.7", Commit: "0123456789abcdef0123456789abcdef01234567", Go: goVer}); err != nil || both["tcpops"] != want || both["tcpopsctl"].Go != goVer {
		t.Fatalf("tcpopsctl -o json version: %v, %q; want tcpops %+v", err, out, want)
	}

	// Built from a clone as a user would: the VCS stamp. -trimpath keeps
	// the build cache of the tests' own build useful in another directory.
	clone := freshClone(t, t.TempDir())
	goBuild(t, clone, bin, "-buildvcs=true", "-trimpath")
	head, err := exec.Command("git", "-C", clone, "rev-parse", "HEAD").Output()
	if err != nil {
		t.Fatal(err)
	}
	status, err := exec.Command("git", "-C", clone, "status", "--porcelain", "--untracked-files=no").Output()
	if err != nil {
		t.Fatal(err)
	}
	commit := strings.TrimSpace(string(head))
	want := `^tcpops v\S+ \(commit ` + commit[:12] + `, ` + regexp.QuoteMeta(goVer) + `\)\n$`
	if len(status) > 0 {
		want = `^tcpops v\S+\+dirty \(commit ` + commit[:12] + `, modified, ` + regexp.QuoteMeta(goVer) + `\)\n$`
	}
	out, err = exec.Command(filepath.Join(bin, "tcpops"), "--version").CombinedOutput()
	if err != nil || !regexp.MustCompile(want).Match(out) {
		t.Fatalf("tcpops --version built from a clone: %v, %q; want %s", err, out, want)
	}
}

// TestBackendFailureLogged: a backend that refuses shows in the daemon's
// log at warn with the listener and the error, once for a burst of
// clients, not once per connection; each connection still has its event.
func TestBackendFailureLogged(t *testing.T) {
	dead, _ := freePort() // nothing listens there
	port, _ := freePort()
	sock := filepath.Join(t.TempDir(), "s")
	_, log := startLogged(t, "--socket", sock, "--listen", "tcp://127.0.0.1:"+port+"?backend=127.0.0.1:"+dead+"&name=sip")
	waitLog(t, log, "msg=listening")
	for range 5 {
		c, err := net.Dial("tcp", "127.0.0.1:"+port)
		if err != nil {
			t.Fatal(err)
		}
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		c.Read(make([]byte, 1)) // until tcpops closes it
		c.Close()
	}
	waitStats(t, sock, func(s rpc.Stats) bool { return s.ClosedBy["error"] == 5 })
	line := waitLog(t, log, `level=WARN msg="backend failed" backend=127.0.0.1:`+dead+` listener=sip err="([^"]*)"\n`)
	if want := "dial 127.0.0.1:" + dead + ": connect: connection refused"; line[1] != want {
		t.Errorf("logged error %q, want %q", line[1], want)
	}
	if n := strings.Count(log.String(), "backend failed"); n != 1 {
		t.Errorf("%d backend lines for a burst of 5, want 1:\n%s", n, log.String())
	}
}

// backendEcho is a TCP echo server on 127.0.0.1 for the test's duration.
func backendEcho(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				b := make([]byte, 4096)
				for {
					n, err := c.Read(b)
					if err != nil {
						return
					}
					c.Write(b[:n])
				}
			}()
		}
	}()
	return ln.Addr().String()
}

// TestResetEvents: close --reset is marked in its event (reset=true, and
// "reset":true in JSON); a client's RST says "connection reset by peer",
// not which system call saw it.
func TestResetEvents(t *testing.T) {
	backend := backendEcho(t)
	port, _ := freePort()
	sock := filepath.Join(t.TempDir(), "s")
	_, log := startLogged(t, "--socket", sock, "--listen", "tcp://127.0.0.1:"+port+"?backend="+backend)
	waitLog(t, log, "msg=listening")
	ctl := func(args ...string) string {
		t.Helper()
		out, err := exec.Command(filepath.Join(binDir, "tcpopsctl"), append([]string{"-s", sock}, args...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("tcpopsctl %v: %v\n%s", args, err, out)
		}
		return string(out)
	}
	dial := func() (*net.TCPConn, string) {
		c, err := net.Dial("tcp", "127.0.0.1:"+port)
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(10 * time.Second))
		c.Write([]byte("x\n"))
		c.Read(make([]byte, 2))
		var l listed
		if err := json.Unmarshal([]byte(ctl("-o", "json", "list", "--direction", "in", "--remote", c.LocalAddr().String())), &l); err != nil || len(l.Connections) != 1 {
			t.Fatalf("list: %v, %+v", err, l)
		}
		return c.(*net.TCPConn), strconv.FormatUint(l.Connections[0].ConnID, 10)
	}
	a, ida := dial()
	defer a.Close()
	ctl("close", "--reset", ida)
	if _, err := a.Read(make([]byte, 1)); !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("client read after close --reset: %v, want a reset", err)
	}
	ctl("--timeout", "10s", "wait", "closed", ida)
	b, idb := dial()
	b.SetLinger(0)
	b.Close() // RST
	ctl("--timeout", "10s", "wait", "closed", idb)

	events := ctl("events", "--conid", ida) + ctl("events", "--conid", idb)
	for _, want := range []string{
		" event=tcp:closed reason=local conid=" + ida + " ",
		" reset=true\n",
		" event=tcp:reset reason=reset conid=" + idb + " ",
		` error="connection reset by peer"` + "\n",
	} {
		if !strings.Contains(events, want) {
			t.Errorf("events lack %q:\n%s", want, events)
		}
	}
	if strings.Count(events, "reset=true") != 1 {
		t.Errorf("only the connection closed by close --reset is marked reset=true:\n%s", events)
	}
	js := ctl("-o", "json", "events", "--conid", ida)
	if !strings.Contains(js, `"reason":"local"`) || !strings.Contains(js, `"reset":true`) {
		t.Errorf("JSON event of close --reset: %s", js)
	}
}

// TestConfigListenOneString: a configuration file whose listen is one URL,
// not a list, is taken as a list of one.
func TestConfigListenOneString(t *testing.T) {
	conf := filepath.Join(t.TempDir(), "tcpops.yaml")
	os.WriteFile(conf, []byte("listen: tcp://127.0.0.1:5099?backend=echo\nlifetime: 10m\n"), 0o644)
	out, err := exec.Command(filepath.Join(binDir, "tcpops"), "--config", conf, "--socket", "/run/x.sock", "--check-config").CombinedOutput()
	want := "configuration ok: 1 listener(s), socket /run/x.sock\n  listener tcp://127.0.0.1:5099?backend=echo on 127.0.0.1:5099, backend echo\n"
	if err != nil || string(out) != want {
		t.Fatalf("--check-config: %v, %q; want %q", err, out, want)
	}
}

// TestPrivilegedPortHint: refused a port below 1024, tcpops says what
// would let it bind there.
func TestPrivilegedPortHint(t *testing.T) {
	needRoot(t)
	sharedBinaries(t)
	dir, err := os.MkdirTemp("", "tcpops")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	os.Chmod(dir, 0o777)
	cmd := exec.Command(filepath.Join(binDir, "tcpops"), "--socket", filepath.Join(dir, "s"), "--listen", "tcp://127.0.0.1:81")
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	out, err := cmd.CombinedOutput()
	want := "tcpops: listen tcp://127.0.0.1:81: listen tcp 127.0.0.1:81: bind: permission denied (ports below 1024 need root or CAP_NET_BIND_SERVICE: " +
		"AmbientCapabilities=CAP_NET_BIND_SERVICE in the systemd unit, or setcap cap_net_bind_service=+ep on the tcpops binary)\n"
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 || string(out) != want {
		t.Fatalf("tcpops on port 81 as uid 65534: %v, %q; want exit 1, %q", err, out, want)
	}
}

// TestUpgradeResultMatchesSchema: a real upgrade's result, as tcpopsctl
// -o json prints it, matches the schema the new daemon's rpc.discover
// gives for tcpops.upgrade (the other methods are checked in
// daemon/control, on a daemon in the test process, which cannot exec a
// successor).
func TestUpgradeResultMatchesSchema(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "s")
	_, log := startLogged(t, "--socket", sock, "--listen", "tcp://127.0.0.1:0")
	addr := waitLog(t, log, `msg=listening url=tcp://127.0.0.1:0 address=(\S+)`)[1]
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	waitStats(t, sock, func(s rpc.Stats) bool { return s.Connections == 1 })
	ctl := filepath.Join(binDir, "tcpopsctl")
	out, err := exec.Command(ctl, "-s", sock, "-o", "json", "upgrade").Output()
	if err != nil {
		t.Fatalf("tcpopsctl upgrade: %v %s", err, out)
	}
	var res rpc.UpgradeResult
	if err := json.Unmarshal(out, &res); err != nil || res.NewPID == 0 {
		t.Fatalf("upgrade result %q: %v", out, err)
	}
	t.Cleanup(func() {
		syscall.Kill(res.NewPID, syscall.SIGTERM)
		testutil.WaitFor(t, "the new daemon to stop", func() bool {
			_, err := os.Stat(sock)
			return os.IsNotExist(err)
		})
	})
	doc, err := exec.Command(ctl, "-s", sock, "call", rpc.MethodDiscover).Output()
	if err != nil {
		t.Fatalf("rpc.discover after the upgrade: %v", err)
	}
	var methods struct {
		Methods []struct {
			Name string `json:"name"`
		} `json:"methods"`
	}
	json.Unmarshal(doc, &methods)
	i := -1
	for j, m := range methods.Methods {
		if m.Name == rpc.MethodUpgrade {
			i = j
		}
	}
	if i < 0 {
		t.Fatalf("rpc.discover has no %s", rpc.MethodUpgrade)
	}
	inst, err := jsonschema.UnmarshalJSON(bytes.NewReader(doc))
	if err != nil {
		t.Fatal(err)
	}
	comp := jsonschema.NewCompiler()
	comp.DefaultDraft(jsonschema.Draft7)
	if err := comp.AddResource("urn:tcpops:openrpc", inst); err != nil {
		t.Fatal(err)
	}
	schema, err := comp.Compile(fmt.Sprintf("urn:tcpops:openrpc#/methods/%d/result/schema", i))
	if err != nil {
		t.Fatal(err)
	}
	v, err := jsonschema.UnmarshalJSON(bytes.NewReader(out))
	if err != nil {
		t.Fatal(err)
	}
	if err := schema.Validate(v); err != nil {
		t.Errorf("upgrade result %s does not match its schema: %v", out, err)
	}
}
