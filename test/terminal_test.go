package test

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/tcpops/tcpops/internal/testutil"
	"github.com/tcpops/tcpops/rpc"
	rpcclient "github.com/tcpops/tcpops/rpc/client"
)

// term is a real terminal: a tmux session running sh, typed into with
// send-keys and read with capture-pane, as a person types and reads.
type term struct {
	t    *testing.T
	tmux string
	sock string
}

// newTerm starts sh in a detached tmux session of the given size, with
// the test binaries first on PATH and env added to its environment.
func newTerm(t *testing.T, width, height int, env ...string) *term {
	t.Helper()
	m := &term{t: t, tmux: tool(t, "tmux", "tmux")}
	dir, err := os.MkdirTemp("", "tm")
	if err != nil {
		t.Fatal(err)
	}
	m.sock = filepath.Join(dir, "s")
	args := []string{"-f", "/dev/null", "-S", m.sock, "new-session", "-d", "-s", "t",
		"-x", fmt.Sprint(width), "-y", fmt.Sprint(height), "--", "env",
		"PATH=" + binDir + string(os.PathListSeparator) + os.Getenv("PATH"), "PS1=$ ", "TERM=xterm-256color"}
	args = append(args, env...)
	args = append(args, "sh")
	if out, err := exec.Command(m.tmux, args...).CombinedOutput(); err != nil {
		t.Fatalf("tmux new-session: %v: %s", err, out)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("screen at the end:\n%s", m.screen())
		}
		exec.Command(m.tmux, "-S", m.sock, "kill-server").Run()
		os.RemoveAll(dir)
	})
	return m
}

// keys sends keys by tmux's names (Enter, Tab, C-d, Down) or as text.
func (m *term) keys(keys ...string) {
	m.t.Helper()
	if out, err := exec.Command(m.tmux, append([]string{"-S", m.sock, "send-keys", "-t", "t"}, keys...)...).CombinedOutput(); err != nil {
		m.t.Fatalf("tmux send-keys %q: %v: %s", keys, err, out)
	}
}

// text types s literally.
func (m *term) text(s string) { m.keys("-l", s) }

// screen is what the terminal shows now, without the blank lines below
// and the blanks at the end of each line (tmux drops those), so that the
// line of the cursor ends it: \n\z in a pattern.
func (m *term) screen() string {
	out, err := exec.Command(m.tmux, "-S", m.sock, "capture-pane", "-p", "-t", "t").Output()
	if err != nil {
		m.t.Fatalf("tmux capture-pane: %v", err)
	}
	return strings.TrimRight(string(out), "\n ") + "\n"
}

// wait polls the screen until re matches it, and returns the screen.
func (m *term) wait(what string, re *regexp.Regexp) string {
	m.t.Helper()
	var s string
	if !testutil.Until(func() bool { s = m.screen(); return re.MatchString(s) }) {
		m.t.Fatalf("after %v the screen shows no %s (%s):\n%s", testutil.Timeout, what, re, s)
	}
	return s
}

// startServing is startDaemon that also waits for the daemon to answer
// a call: its control socket accepts before its listeners are bound, and
// answers only after.
func startServing(t testing.TB, socket string, args ...string) *daemonProc {
	t.Helper()
	d := startDaemon(t, socket, args...)
	waitStats(t, socket, func(rpc.Stats) bool { return true })
	return d
}

// echoConns opens n connections to an echo listener, each used once so
// that it is in state ok.
func echoConns(t *testing.T, addr string, n int) []net.Conn {
	t.Helper()
	var cs []net.Conn
	for range n {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		c.SetDeadline(time.Now().Add(10 * time.Second))
		c.Write([]byte("x"))
		if _, err := c.Read(make([]byte, 1)); err != nil {
			t.Fatal(err)
		}
		cs = append(cs, c)
	}
	return cs
}

func dialRPC(t testing.TB, socket string) *rpcclient.Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	c, err := rpcclient.Dial(ctx, socket)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// TestShellThroughTerminal types into tcpopsctl alone on a terminal: the
// shell opens, runs list, completes a conid with Tab from the live daemon,
// changes that connection, follows events until Ctrl-C and leaves with
// Ctrl-D, over one control connection, with its history saved.
func TestShellThroughTerminal(t *testing.T) {
	dir := t.TempDir()
	socket := filepath.Join(dir, "s")
	d := startServing(t, socket, "--log-level", "error")
	echoConns(t, d.addr, 12) // conids 1 to 12
	rc := dialRPC(t, socket)
	// The clients that waited for the daemon are gone once the daemon has
	// seen them close: only this test's is left.
	testutil.WaitFor(t, "one control client (this test's) before the shell", func() bool {
		st, err := rc.Stats(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		return st.RPC.Clients == 1
	})
	state := filepath.Join(dir, "state")
	m := newTerm(t, 160, 40, "XDG_STATE_HOME="+state)
	m.text("tcpopsctl -s " + socket + "; echo SHELL-EXIT=$?")
	m.keys("Enter")
	m.wait("the shell's prompt", regexp.MustCompile(`tcpops \S+ \(admin\)>\n\z`))

	m.text("list")
	m.keys("Enter")
	m.wait("the list", regexp.MustCompile(`(?m)^CONID +PEER +PROTO[^\n]*\n(?:.*\n){11}12 +- +tcp +in +ok`))

	m.text("lifetime 1")
	m.keys("Tab", "Tab") // ambiguous: the second Tab lists the conids
	m.wait("the conids offered", regexp.MustCompile(`(?m)^1 +10 +11 +12\s*$`))
	m.text("1")
	m.keys("Tab") // unique now
	m.wait("the completed conid", regexp.MustCompile(`\(admin\)> lifetime 11\n\z`))
	m.text("300")
	m.keys("Enter")
	m.wait("the change", regexp.MustCompile(`conid 11: lifetime 5m00s`))
	info, err := rc.Info(t.Context(), 11)
	if err != nil || info.LifetimeS != 300 {
		t.Fatalf("conid 11 after the shell's change: lifetime %v, %v; want 300", info.LifetimeS, err)
	}

	m.text("events -f --reason local")
	m.keys("Enter")
	if _, err := rc.CloseConn(t.Context(), 12, false); err != nil {
		t.Fatal(err)
	}
	m.wait("the followed event", regexp.MustCompile(`reason=local conid=12 `))
	clients := func(when string) {
		t.Helper()
		// A connection the shell dropped (events -f ends its own) is gone
		// once the daemon has seen it close.
		var n int64
		if !testutil.Until(func() bool {
			st, err := rc.Stats(t.Context())
			if err != nil {
				t.Fatal(err)
			}
			n = st.RPC.Clients
			return n == 2
		}) {
			t.Errorf("%s: %d control clients, want 2: this test's and the shell's one", when, n)
		}
	}
	clients("following events in the shell after list, Tab and lifetime")
	m.keys("C-c")
	m.wait("the prompt after Ctrl-C", regexp.MustCompile(`reason=local conid=12 [^\n]*\n(?:.*\n)*\^C\ntcpops \S+ \(admin\)>\n\z`))
	m.text("state 1")
	m.keys("Tab", "Tab", "Enter") // 1, 10, 11: the first Tab adds nothing, the second lists
	m.wait("the state", regexp.MustCompile(`conid 1: 1 ok\n`))
	clients("after events -f ended")
	m.keys("C-d")
	m.wait("the shell's exit", regexp.MustCompile(`SHELL-EXIT=0`))
	h, err := os.ReadFile(filepath.Join(state, "tcpops", "history"))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range []string{"list", "lifetime 11 300", "events -f --reason local"} {
		if !strings.Contains(string(h), l+"\n") {
			t.Errorf("history %q lacks %q", h, l)
		}
	}
}

// TestTopThroughTerminal runs top on a terminal: a new connection shows
// within two refreshes, one is closed by key after a confirmation (its
// event says local), and q leaves the screen and the terminal's modes as
// they were.
func TestTopThroughTerminal(t *testing.T) {
	dir := t.TempDir()
	socket := filepath.Join(dir, "s")
	d := startServing(t, socket, "--log-level", "error")
	echoConns(t, d.addr, 1)
	rc := dialRPC(t, socket)
	m := newTerm(t, 160, 30)
	const interval = 500 * time.Millisecond
	m.text(fmt.Sprintf("clear; echo BEFORE-TOP; stty -g > %[1]s/before; tcpopsctl -s %[2]s top --interval %[3]s; echo TOP-EXIT=$?; stty -g > %[1]s/after; cmp -s %[1]s/before %[1]s/after && echo MODES-SAME",
		dir, socket, interval))
	m.keys("Enter")
	m.wait("conid 1 selected", regexp.MustCompile(`(?m)^> 1 +- +tcp +in +ok`))

	// Refreshes follow each other every interval plus a round trip: a
	// connection made now shows in the second at the latest.
	dialled := time.Now()
	echoConns(t, d.addr, 1)
	m.wait("conid 2", regexp.MustCompile(`(?m)^  2 +- +tcp +in +ok`))
	took := time.Since(dialled)
	t.Logf("a new connection showed after %v (refresh every %v)", took.Round(time.Millisecond), interval)
	if limit := 2*interval + 300*time.Millisecond; took > limit {
		t.Errorf("a new connection showed after %v, more than two refreshes (%v)", took, limit)
	}

	m.keys("Down")
	m.wait("conid 2 selected", regexp.MustCompile(`(?m)^> 2 +- +tcp`))
	m.keys("l")
	m.wait("the lifetime prompt", regexp.MustCompile(`lifetime of conid 2: seconds`))
	m.text("10m")
	m.keys("Enter")
	m.wait("the new lifetime", regexp.MustCompile(`conid 2: lifetime 10m00s, closes in`))
	m.keys("k")
	m.wait("the keepalive prompt", regexp.MustCompile(`keepalive of conid 2: IDLE COUNT INTERVAL`))
	m.text("30 3 10")
	m.keys("Enter")
	m.wait("the new keepalive", regexp.MustCompile(`conid 2: keepalive on: idle 30s, 3 probes every 10s \(read back`))
	if info, err := rc.Info(t.Context(), 2); err != nil || info.LifetimeS != 600 || info.Keepalive == nil || info.Keepalive.IdleS != 30 {
		t.Fatalf("conid 2 after top's keys: %+v, %v; want lifetime 600 and keepalive idle 30", info, err)
	}
	m.keys("c")
	m.wait("the confirmation", regexp.MustCompile(`close conid 2 \(tcp in 127\.0\.0\.1:\d+, [^)]+\)\? y: close`))
	if s, _ := rc.State(t.Context(), 2); s.State != 1 {
		t.Fatalf("conid 2 is %s before the confirmation", s.StateName)
	}
	m.keys("y")
	m.wait("the close", regexp.MustCompile(`conid 2 closed \(FIN\)`))
	evs, err := rc.Events(t.Context(), rpc.EventsParams{ConnID: 2})
	if err != nil {
		t.Fatal(err)
	}
	if len(evs.Events) != 1 || evs.Events[0].Reason != "local" {
		t.Fatalf("events of conid 2: %+v, want one with reason local", evs.Events)
	}
	m.wait("conid 2 gone", regexp.MustCompile(`(?m)showing 1-1 of 1\n(?:.*\n)> 1 +- +tcp`))

	m.keys("q")
	s := m.wait("top's exit", regexp.MustCompile(`TOP-EXIT=0\s+MODES-SAME`))
	if !strings.Contains(s, "BEFORE-TOP") || strings.Contains(s, "tcpops top") {
		t.Errorf("after q the screen is not what it was before top:\n%s", s)
	}
}
