package cli_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spf13/cobra"

	"github.com/tcpops/tcpops/cli"
	"github.com/tcpops/tcpops/daemon/daemontest"
	"github.com/tcpops/tcpops/internal/testutil"
	"github.com/tcpops/tcpops/rpc"
	"github.com/tcpops/tcpops/rpc/client"
)

// run runs tcpopsctl in-process and returns exit code, stdout, stderr.
func run(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	code := cli.Run(t.Context(), args, &out, &errb)
	return code, out.String(), errb.String()
}

func TestExitCodes(t *testing.T) {
	d := daemontest.Start(t, "--closed-event", "all")
	live, id := d.Dial(t, 0)
	live.Write([]byte("x"))
	live.Read(make([]byte, 1))
	_, id2 := d.Dial(t, 0)
	s := d.Socket
	ids, ids2 := fmt.Sprint(id), fmt.Sprint(id2)
	tests := []struct {
		args    []string
		code    int
		stdout  string // substring
		stderr  string // substring
		noStdin bool
	}{
		{args: []string{"list"}, code: 0, stdout: "CONID  PEER  PROTO"},
		{args: []string{"ls", "--state", "ok"}, code: 0, stdout: "\n" + ids + " "},
		{args: []string{"list", "--state", "bogus"}, code: 2, stderr: `unknown state "bogus"`},
		{args: []string{"list", "--limit", "-1"}, code: 2, stderr: "--limit -1"},
		{args: []string{"list", "--remote", "nohost"}, code: 2, stderr: "remote"},
		{args: []string{"list", "extra"}, code: 2, stderr: "takes 0 argument"},
		{args: []string{"info", ids}, code: 0, stdout: "ESTABLISHED"},
		{args: []string{"info", "999"}, code: 1, stderr: "conid 999"},
		{args: []string{"info", "abc"}, code: 2, stderr: `CONID "abc"`},
		{args: []string{"alive", ids}, code: 0, stdout: "alive (1)"},
		{args: []string{"alive", "999"}, code: 1, stdout: "not alive (-1)"},
		{args: []string{"state", ids2}, code: 0, stdout: "2 accepting"},
		{args: []string{"state", "999"}, code: 1, stdout: "-1 not_found"},
		{args: []string{"state"}, code: 2, stderr: "takes 1 argument"},
		{args: []string{"keepalive", "enable", ids, "60", "5", "5"}, code: 0, stdout: "idle 60s, 5 probes every 5s (read back from the kernel)"},
		{args: []string{"keepalive", "enable", ids, "61", "6", "7", "--user-timeout", "9s"}, code: 0, stdout: "user timeout 9000ms"},
		{args: []string{"keepalive", "enable", ids, "0", "5", "5"}, code: 2, stderr: "idle 0 out of range"},
		{args: []string{"keepalive", "enable", ids, "x", "5", "5"}, code: 2, stderr: `IDLE "x"`},
		{args: []string{"keepalive", "enable", "999", "1", "1", "1"}, code: 1, stderr: "conid 999"},
		{args: []string{"keepalive"}, code: 2, stderr: "enable or disable"},
		{args: []string{"keepalive", "disable", ids}, code: 0, stdout: "keepalive off"},
		{args: []string{"lifetime", ids, "300"}, code: 0, stdout: "lifetime 5m00s"},
		{args: []string{"lifetime", ids, "10m"}, code: 0, stdout: "lifetime 10m00s"},
		{args: []string{"lifetime", ids, "--", "-5"}, code: 2, stderr: "SECONDS"},
		{args: []string{"lifetime", ids, "soon"}, code: 2, stderr: "SECONDS"},
		{args: []string{"lifetime", "999", "10"}, code: 1},
		{args: []string{"closed-event", ids}, code: 0, stdout: "closed event on"},
		{args: []string{"closed-event", ids, "--off"}, code: 0, stdout: "closed event off"},
		{args: []string{"close", ids2}, code: 0, stdout: "closed (FIN)"},
		{args: []string{"close", ids2}, code: 1, stderr: "conid " + ids2},
		{args: []string{"events"}, code: 0},
		{args: []string{"events", "--reason", "nope"}, code: 2, stderr: `--reason "nope"`},
		{args: []string{"stats"}, code: 0, stdout: "closed by reason"},
		{args: []string{"call", "tcpops.state", "conid=" + ids}, code: 0, stdout: `"state_name":"ok"`},
		{args: []string{"call", "tcpops.state", `{"conid":` + ids + `}`}, code: 0, stdout: `"state":1,`},
		{args: []string{"call", "tcpops.nope"}, code: 2, stderr: `unknown method "tcpops.nope"`},
		{args: []string{"call", "tcpops.state", "conid=abc"}, code: 2, stderr: "param conid"},
		{args: []string{"call", "tcpops.state", "conid"}, code: 2, stderr: "KEY=VALUE"},
		{args: []string{"call"}, code: 2},
		{args: []string{"methods"}, code: 0, stdout: "tcpops.keepalive\n"},
		{args: []string{"version"}, code: 0, stdout: "tcpops    "},
		{args: []string{"-o", "yaml", "list"}, code: 2, stderr: "--output"},
		{args: []string{"--timeout", "0s", "list"}, code: 2, stderr: "--timeout"},
		{args: []string{"--bogus"}, code: 2, stderr: "unknown flag"},
		{args: []string{"bogus"}, code: 2, stderr: "unknown command"},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			code, out, errOut := run(t, append([]string{"-s", s}, tt.args...)...)
			if code != tt.code {
				t.Fatalf("exit %d, want %d\nstdout: %s\nstderr: %s", code, tt.code, out, errOut)
			}
			if !strings.Contains(out, tt.stdout) {
				t.Errorf("stdout %q lacks %q", out, tt.stdout)
			}
			if !strings.Contains(errOut, tt.stderr) {
				t.Errorf("stderr %q lacks %q", errOut, tt.stderr)
			}
		})
	}
	// Every command that talks to the daemon says exit 3 when it is absent.
	for _, args := range [][]string{{"list"}, {"info", "1"}, {"alive", "1"}, {"state", "1"}, {"keepalive", "enable", "1", "1", "1", "1"},
		{"keepalive", "disable", "1"}, {"lifetime", "1", "1"}, {"closed-event", "1"}, {"close", "1"}, {"events"}, {"events", "-f"},
		{"stats"}, {"call", "core.version"}, {"methods"}, {"version"}} {
		code, _, errOut := run(t, append([]string{"-s", filepath.Join(t.TempDir(), "none")}, args...)...)
		if code != 3 || !strings.Contains(errOut, "cannot reach tcpops at") || !strings.Contains(errOut, "is the daemon running?") {
			t.Errorf("%v without a daemon: exit %d, stderr %q; want 3 with a hint", args, code, errOut)
		}
	}
}

func TestJSONOutput(t *testing.T) {
	d := daemontest.Start(t)
	_, id := d.Dial(t, 0)
	code, out, _ := run(t, "-s", d.Socket, "-o", "json", "list")
	var lr rpc.ListResult
	if code != 0 || json.Unmarshal([]byte(out), &lr) != nil || len(lr.Connections) != 1 || lr.Connections[0].ConnID != id {
		t.Fatalf("list json: exit %d, %q", code, out)
	}
	code, out, _ = run(t, "-s", d.Socket, "-o", "json", "alive", "77")
	var ar rpc.AliveResult
	if code != 1 || json.Unmarshal([]byte(out), &ar) != nil || ar.Code != -1 {
		t.Fatalf("alive json: exit %d, %q", code, out)
	}
	run(t, "-s", d.Socket, "close", fmt.Sprint(id))
	_, id2 := d.Dial(t, 0)
	run(t, "-s", d.Socket, "close", "--reset", fmt.Sprint(id2))
	code, out, _ = run(t, "-s", d.Socket, "-o", "json", "events")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if code != 0 || len(lines) != 2 {
		t.Fatalf("events json: exit %d, %q", code, out)
	}
	for i, l := range lines {
		var e rpc.Event
		if err := json.Unmarshal([]byte(l), &e); err != nil || e.Seq != uint64(i+1) || e.Reason != "local" {
			t.Fatalf("event line %q: %v", l, err)
		}
	}
}

func TestExitCodeMapping(t *testing.T) {
	tests := []struct {
		err  error
		code int
	}{
		{nil, 0},
		{&rpc.Error{Code: rpc.CodeNotFound}, 1},
		{&rpc.Error{Code: rpc.CodeInvalidParams}, 2},
		{&rpc.Error{Code: rpc.CodeMethodNotFound}, 2},
		{&rpc.Error{Code: rpc.CodeDenied}, 4},
		{&rpc.Error{Code: rpc.CodeSocket}, 4},
		{&rpc.Error{Code: rpc.CodeInternal}, 4},
		{&client.DialError{Path: "x", Err: os.ErrNotExist}, 3},
		{fmt.Errorf("follow: %w", client.ErrDisconnected), 3},
	}
	for _, tt := range tests {
		if got := cli.ExitCode(tt.err); got != tt.code {
			t.Errorf("ExitCode(%v) = %d, want %d", tt.err, got, tt.code)
		}
	}
}

func TestTimeout(t *testing.T) {
	// A socket that accepts and never answers.
	p := filepath.Join(t.TempDir(), "mute")
	ln, err := net.Listen("unix", p)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			defer c.Close()
		}
	}()
	start := time.Now()
	code, _, errOut := run(t, "-s", p, "--timeout", "200ms", "state", "1")
	if code != 3 || !strings.Contains(errOut, "timed out") {
		t.Fatalf("mute daemon: exit %d, %q; want 3", code, errOut)
	}
	if el := time.Since(start); el > 5*time.Second {
		t.Fatalf("--timeout 200ms took %v", el)
	}
}

func TestEventsFollowDaemonGoesAway(t *testing.T) {
	d := daemontest.Start(t)
	tc, id := d.Dial(t, 0)
	var out, errb daemontest.Buffer
	done := make(chan int, 1)
	go func() { done <- cli.Run(context.Background(), []string{"-s", d.Socket, "events", "-f"}, &out, &errb) }()
	// Once the follower has printed this close (kept events are sent
	// first, so whenever it subscribes) it is subscribed.
	tc.Close()
	testutil.WaitFor(t, "the follower to print the close", func() bool {
		return strings.Contains(out.String(), fmt.Sprintf("conid=%d", id))
	})
	_, id2 := d.Dial(t, 0)
	d.Stop()
	select {
	case code := <-done:
		if code != 3 {
			t.Fatalf("exit %d, want 3", code)
		}
	case <-time.After(testutil.Timeout):
		t.Fatal("events -f did not notice the daemon going away")
	}
	if !strings.Contains(out.String(), "reason=eof") || !strings.Contains(out.String(), fmt.Sprintf("reason=shutdown conid=%d", id2)) {
		t.Fatalf("follower output lacks the eof or the shutdown event:\n%s", out.String())
	}
	if !strings.Contains(errb.String(), "went away") {
		t.Fatalf("stderr %q does not say the daemon went away", errb.String())
	}
}

func TestCompletion(t *testing.T) {
	d := daemontest.Start(t)
	_, id := d.Dial(t, 0)
	for _, args := range [][]string{{"state", ""}, {"keepalive", "enable", ""}, {"close", fmt.Sprint(id)[:1]}} {
		code, out, _ := run(t, append([]string{"-s", d.Socket, "__complete"}, args...)...)
		want := fmt.Sprintf("%d\ttcp in 127.0.0.1:", id)
		if code != 0 || !strings.Contains(out, want) || !strings.Contains(out, "accepting") {
			t.Errorf("complete %v: exit %d, %q; want %q with the state", args, code, out, want)
		}
	}
	code, out, _ := run(t, "-s", d.Socket, "__complete", "state", "9")
	if code != 0 || strings.Contains(out, "\t") {
		t.Errorf("complete with a prefix matching nothing: %q", out)
	}
	_, out, _ = run(t, "-s", d.Socket, "__complete", "call", "tcpops.k")
	if !strings.HasPrefix(out, "tcpops.keepalive\n") {
		t.Errorf("method completion: %q", out)
	}
	_, out, _ = run(t, "__complete", "events", "--reason", "ti")
	if !strings.HasPrefix(out, "timeout\ttcp:timeout\n") {
		t.Errorf("reason completion: %q", out)
	}
	_, out, _ = run(t, "__complete", "list", "--state", "")
	if !strings.Contains(out, "accepting\n") {
		t.Errorf("state completion: %q", out)
	}
	// No daemon: nothing offered, no error.
	code, out, errOut := run(t, "-s", filepath.Join(t.TempDir(), "none"), "__complete", "state", "")
	if code != 0 || strings.Contains(out, "\t") || strings.Contains(errOut, "cannot reach") {
		t.Errorf("completion without daemon: exit %d, %q, %q", code, out, errOut)
	}
}

// tap is a control socket that passes everything on to the daemon's and
// tells, by closing seen, when an answer containing a string went back.
type tap struct {
	path string
	seen chan struct{}
}

// tapSocket serves one control connection on a new socket, relayed to
// the daemon at target.
func tapSocket(t *testing.T, target, answer string) *tap {
	t.Helper()
	tp := &tap{path: filepath.Join(t.TempDir(), "tap"), seen: make(chan struct{})}
	ln, err := net.Listen("unix", tp.path)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		d, err := net.Dial("unix", target)
		if err != nil {
			return
		}
		defer d.Close()
		wg.Add(1)
		go func() {
			defer wg.Done()
			io.Copy(d, c)
			d.(*net.UnixConn).CloseWrite()
		}()
		r := bufio.NewReader(d)
		once := sync.OnceFunc(func() { close(tp.seen) })
		for {
			line, err := r.ReadBytes('\n')
			if bytes.Contains(line, []byte(answer)) {
				once()
			}
			if _, werr := c.Write(line); werr != nil || err != nil {
				return
			}
		}
	}()
	return tp
}

// TestHelpTeaches walks the tree: every runnable command has Short, Long
// and Example.
func TestHelpTeaches(t *testing.T) {
	root := cli.NewRootCmd(&cli.Options{})
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		if c.Runnable() && (c.Short == "" || c.Long == "" || c.Example == "") {
			t.Errorf("%s lacks Short, Long or Example", c.CommandPath())
		}
		for _, s := range c.Commands() {
			walk(s)
		}
	}
	walk(root)
}

func TestWait(t *testing.T) {
	d := daemontest.Start(t)
	s := d.Socket
	tc, id := d.Dial(t, 0)
	ids := fmt.Sprint(id)
	tests := []struct {
		args []string
		code int
		out  string
		err  string
	}{
		{[]string{"wait", "ready"}, 0, "ready", ""},
		{[]string{"wait", "count", "--eq", "1"}, 0, "1 connections", ""},
		{[]string{"wait", "count", "--eq", "1", "--state", "accepting"}, 0, "1 connections", ""},
		{[]string{"--timeout", "300ms", "wait", "count", "--eq", "2"}, 1, "", "1 connections match, not 2, after 300ms"},
		{[]string{"--timeout", "300ms", "wait", "closed", ids}, 1, "", "conid " + ids + " still open after 300ms"},
		{[]string{"wait", "count"}, 2, "", "needs --eq"},
		{[]string{"wait"}, 2, "", "closed, count or ready"},
	}
	for _, tt := range tests {
		code, out, errOut := run(t, append([]string{"-s", s}, tt.args...)...)
		if code != tt.code || !strings.Contains(out, tt.out) || !strings.Contains(errOut, tt.err) {
			t.Errorf("%v: exit %d, %q, %q; want %d, %q, %q", tt.args, code, out, errOut, tt.code, tt.out, tt.err)
		}
	}
	// The condition comes true while waiting: the connection is closed
	// only once wait has been told it is open, through a tap on its
	// control connection.
	tap := tapSocket(t, s, `"accepting"`)
	type result struct {
		code     int
		out, err string
	}
	waited := make(chan result, 1)
	go func() {
		var out, errb bytes.Buffer
		code := cli.Run(context.Background(), []string{"-s", tap.path, "--timeout", "20s", "wait", "closed", ids}, &out, &errb)
		waited <- result{code, out.String(), errb.String()}
	}()
	select {
	case <-tap.seen:
	case r := <-waited:
		t.Fatalf("wait closed returned before it saw the connection open: exit %d, %q, %q", r.code, r.out, r.err)
	case <-time.After(testutil.Timeout):
		t.Fatal("wait closed never asked for the connection's state")
	}
	select {
	case r := <-waited:
		t.Fatalf("wait closed returned while the connection is open: exit %d, %q, %q", r.code, r.out, r.err)
	default:
	}
	tc.Close()
	if r := <-waited; r.code != 0 || !strings.Contains(r.out, "closed (eof)") {
		t.Fatalf("wait closed: exit %d, %q, %q", r.code, r.out, r.err)
	}
	if code, _, _ := run(t, "-s", s, "wait", "count", "--eq", "0"); code != 0 {
		t.Fatalf("wait count --eq 0 after the close: exit %d", code)
	}
	none := filepath.Join(t.TempDir(), "none")
	if code, _, errOut := run(t, "-s", none, "--timeout", "300ms", "wait", "ready"); code != 1 || !strings.Contains(errOut, "not ready within 300ms") {
		t.Fatalf("wait ready without a daemon: exit %d, %q", code, errOut)
	}
	if code, _, _ := run(t, "-s", none, "wait", "closed", "1"); code != 3 {
		t.Fatalf("wait closed without a daemon: exit %d, want 3", code)
	}
}
