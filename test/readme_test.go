package test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tcpops/tcpops/daemon/daemontest"
)

// readmeTry returns, from README.md, the first shell block of its "Try it"
// section and the block after it, what that shell block prints.
func readmeTry(t *testing.T) (script, output string) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(repoRoot(t), "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	_, sec, ok := strings.Cut(string(b), "\n## Try it\n")
	if !ok {
		t.Fatal(`README.md has no "## Try it" section`)
	}
	sec, _, _ = strings.Cut(sec, "\n## ")
	var blocks []string
	for rest := sec; ; {
		_, after, ok := strings.Cut(rest, "```")
		if !ok {
			break
		}
		lang, after, _ := strings.Cut(after, "\n")
		body, tail, ok := strings.Cut(after, "```")
		if !ok {
			t.Fatal("README.md: a code block of Try it is not closed")
		}
		blocks = append(blocks, lang+"\n"+body)
		rest = tail
	}
	if len(blocks) < 2 || !strings.HasPrefix(blocks[0], "sh\n") {
		t.Fatalf("README.md: Try it wants a sh block and its output, has %d blocks", len(blocks))
	}
	return strings.TrimPrefix(blocks[0], "sh\n"), strings.TrimPrefix(blocks[1], "\n")
}

// normal masks what differs from run to run in the Try it output: ports
// other than the listener's, times, durations, the list's idle and expiry
// columns; and the width of the table's columns, which follows them.
func normal(s string) []string {
	for _, r := range []struct{ re, to string }{
		{`127\.0\.0\.1:(\d+)`, "ADDR:$1"},
		{`ADDR:5060\b`, "127.0.0.1:5060"},
		{`ADDR:\d+`, "127.0.0.1:PORT"},
		{`time=\S+`, "time=TIME"},
		{`duration=\S+`, "duration=DURATION"},
		{`(?m)^(1 +- +tcp +in +ok +127\.0\.0\.1:PORT +127\.0\.0\.1:5060) +\S+ +\S+ `, "$1 IDLE EXPIRES "},
		{` +`, " "},
	} {
		s = regexp.MustCompile(r.re).ReplaceAllString(s, r.to)
	}
	return strings.Split(strings.TrimSpace(s), "\n")
}

// TestReadmeTryIt pastes the README's first commands, exactly as written,
// into bash at the top of a fresh clone, and checks that they print what
// the README says they print. It runs in namespaces of its own (network,
// mounts) so that 127.0.0.1:5060 and /tmp/tcpops.sock are its own whatever
// else runs on the machine.
func TestReadmeTryIt(t *testing.T) {
	needRoot(t)
	unshare := tool(t, "unshare", "util-linux")
	tool(t, "ip", "iproute2")
	bash := tool(t, "bash", "bash")
	script, want := readmeTry(t)

	// The private /tmp holds the clone and the script: /tmp/tcpops and
	// /tmp/try.sh inside the namespace.
	tmp := t.TempDir()
	freshClone(t, tmp)
	if err := os.WriteFile(filepath.Join(tmp, "try.sh"), []byte(script), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, unshare, "--mount", "--net", "--propagation", "private", bash, "-c",
		`mount --bind "$0" /tmp && ip link set lo up && cd /tmp/tcpops && exec bash /tmp/try.sh`, tmp)
	// -trimpath keeps the build cache of earlier runs useful from a clone
	// in a new directory; neither it nor CGO_ENABLED changes what runs.
	cmd.Env = append(envWithout("TCPOPS_SOCKET", "GOFLAGS", "CGO_ENABLED"), "GOFLAGS=-trimpath", "CGO_ENABLED=0")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	// The daemon and the follower end after the script (kill %1); their
	// output is waited for, a bounded time.
	cmd.WaitDelay = time.Minute
	var stdout, stderr daemontest.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if cmd.Process != nil {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) // whatever is left of the group
	}
	if err != nil {
		t.Fatalf("the Try it block: %v\nstdout:\n%s\nstderr:\n%s", err, stdout.String(), stderr.String())
	}

	got, exp := normal(stdout.String()), normal(want)
	// The follower prints its event on its own time: anywhere after the
	// connection closed. The other lines come in the README's order.
	isEvent := func(l string) bool { return strings.HasPrefix(l, "seq=") }
	gotEvents := slices.DeleteFunc(slices.Clone(got), func(l string) bool { return !isEvent(l) })
	expEvents := slices.DeleteFunc(slices.Clone(exp), func(l string) bool { return !isEvent(l) })
	if !slices.Equal(slices.DeleteFunc(got, isEvent), slices.DeleteFunc(exp, isEvent)) || !slices.Equal(gotEvents, expEvents) {
		t.Errorf("the Try it block printed\n%s\nnot what the README shows:\n%s", stdout.String(), want)
	}
	for _, w := range []string{
		"msg=listening url=tcp://127.0.0.1:5060 address=127.0.0.1:5060 backend=echo",
		"tcpops at /tmp/tcpops.sock went away; last event seen: seq 1",
	} {
		if !strings.Contains(stderr.String(), w) {
			t.Errorf("stderr lacks %q:\n%s", w, stderr.String())
		}
	}
}
