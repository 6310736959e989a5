package test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tcpops/tcpops/internal/testutil"
	"github.com/tcpops/tcpops/rpc"
)

// ctlExit runs tcpopsctl with stdin and returns its exit code and output.
func ctlExit(t *testing.T, socket, stdin string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	cmd := exec.Command(filepath.Join(binDir, "tcpopsctl"), append([]string{"-s", socket}, args...)...)
	cmd.Stdin = strings.NewReader(stdin)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		code = ee.ExitCode()
	case err != nil:
		t.Fatalf("tcpopsctl %v: %v", args, err)
	}
	return code, out.String(), errb.String()
}

// dialFrom opens n connections to addr from the source address src.
func dialFrom(t *testing.T, addr, src string, n int) []*net.TCPConn {
	t.Helper()
	var out []*net.TCPConn
	for range n {
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
		c, err := d.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		out = append(out, c.(*net.TCPConn))
	}
	return out
}

var ssTimer = regexp.MustCompile(`timer:\(keepalive,([^,]+),`)

// keepaliveTimers reads, with ss, the keepalive timers of the daemon's
// sockets on port from peer, in seconds (-1 for a socket without one).
func keepaliveTimers(t *testing.T, ss, port, peer string) []float64 {
	t.Helper()
	out, err := exec.Command(ss, "-tnoi", "state", "established", "( sport = :"+port+" and dst "+peer+" )").CombinedOutput()
	if err != nil {
		t.Fatalf("ss: %v\n%s", err, out)
	}
	var timers []float64
	for line := range strings.Lines(string(out)) {
		if !strings.Contains(line, peer+":") {
			continue
		}
		m := ssTimer.FindStringSubmatch(line)
		if m == nil {
			timers = append(timers, -1)
			continue
		}
		d, err := time.ParseDuration(strings.NewReplacer("min", "m", "sec", "s").Replace(m[1]))
		if err != nil {
			t.Fatalf("ss timer %q: %v", m[1], err)
		}
		timers = append(timers, d.Seconds())
	}
	return timers
}

func allWithin(ts []float64, lo, hi float64) bool {
	for _, v := range ts {
		if v < lo || v > hi {
			return false
		}
	}
	return len(ts) > 0
}

// TestBulkEndToEnd drives the real binaries: a dry run and a refusal by
// --max change nothing (ss reads the kernel's keepalive timers), a change
// with --for comes undone by itself, a bulk close by CIDR reaches a
// follower as closed events with reason local, and batch reads stdin.
func TestBulkEndToEnd(t *testing.T) {
	ss := tool(t, "ss", "iproute2", "/usr/sbin/ss", "/usr/bin/ss")
	dir, _ := os.MkdirTemp("", "tb")
	defer os.RemoveAll(dir)
	d := startDaemon(t, filepath.Join(dir, "s"), "--keepalive", "60,5,5")
	_, port, _ := net.SplitHostPort(d.addr)
	two := dialFrom(t, d.addr, "127.0.0.2", 4)
	three := dialFrom(t, d.addr, "127.0.0.3", 3)
	waitStats(t, d.socket, func(st rpc.Stats) bool { return st.Connections == 7 })

	follower := exec.Command(filepath.Join(binDir, "tcpopsctl"), "-s", d.socket, "-o", "json", "events", "-f")
	fout, err := follower.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := follower.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { follower.Process.Kill(); follower.Wait() })
	events := make(chan rpc.Event, 100)
	go func() {
		sc := bufio.NewScanner(fout)
		for sc.Scan() {
			var e rpc.Event
			if json.Unmarshal(sc.Bytes(), &e) == nil {
				events <- e
			}
		}
		close(events)
	}()
	waitStats(t, d.socket, func(st rpc.Stats) bool { return st.RPC.Clients >= 1 })

	// Dry run and --max: the kernel keeps 60 s (timers above 40 s).
	code, out, errOut := ctlExit(t, d.socket, "", "keepalive", "enable", "20", "3", "5", "--remote", "127.0.0.2", "--dry-run")
	if code != 0 || !strings.Contains(out, "dry run: 4 connection(s) match") || strings.Count(out, "127.0.0.2:") != 4 {
		t.Fatalf("dry run: exit %d\n%s%s", code, out, errOut)
	}
	code, _, errOut = ctlExit(t, d.socket, "", "keepalive", "enable", "20", "3", "5", "--remote", "127.0.0.2", "--max", "3")
	if code != 4 || !strings.Contains(errOut, "4 connections match, more than max 3") {
		t.Fatalf("--max 3: exit %d, %s", code, errOut)
	}
	if ts := keepaliveTimers(t, ss, port, "127.0.0.2"); len(ts) != 4 || !allWithin(ts, 40, 60) {
		t.Fatalf("after a dry run and a refusal, ss shows keepalive timers %v, want four of 60 s", ts)
	}

	// For 3 s: 20 s keepalive on 127.0.0.2, lifetime 300 s on 127.0.0.3.
	code, out, errOut = ctlExit(t, d.socket, "", "keepalive", "enable", "20", "3", "5", "--remote", "127.0.0.2", "--for", "3s")
	if code != 0 || !strings.Contains(out, "4 of 4 matched connection(s) given keepalive 20/3/5 for 3s") {
		t.Fatalf("keepalive --for: exit %d\n%s%s", code, out, errOut)
	}
	code, _, errOut = ctlExit(t, d.socket, "", "lifetime", "300", "--remote", "127.0.0.3", "--for", "3s")
	if code != 0 {
		t.Fatalf("lifetime --for: exit %d, %s", code, errOut)
	}
	start := time.Now()
	if ts := keepaliveTimers(t, ss, port, "127.0.0.2"); len(ts) != 4 || !allWithin(ts, 0, 20) {
		t.Fatalf("ss shows keepalive timers %v on 127.0.0.2, want four of at most 20 s", ts)
	}
	if ts := keepaliveTimers(t, ss, port, "127.0.0.3"); len(ts) != 3 || !allWithin(ts, 40, 60) {
		t.Fatalf("ss shows keepalive timers %v on 127.0.0.3, want three of 60 s (not selected)", ts)
	}
	var l listedFull
	json.Unmarshal(ctl(t, d.socket, "-o", "json", "list", "--remote", "127.0.0.3"), &l)
	if len(l.Connections) != 3 || l.Connections[0].LifetimeS != 300 || len(l.Connections[0].Overrides) != 1 || l.Connections[0].Overrides[0].What != "lifetime" {
		t.Fatalf("list during the override: %+v", l)
	}
	if !testutil.Until(func() bool {
		restored := allWithin(keepaliveTimers(t, ss, port, "127.0.0.2"), 40, 60)
		l = listedFull{}
		json.Unmarshal(ctl(t, d.socket, "-o", "json", "list"), &l)
		for _, c := range l.Connections {
			if c.Keepalive.IdleS != 60 || c.LifetimeS != 120 || len(c.Overrides) != 0 {
				restored = false
			}
		}
		return restored
	}) {
		t.Fatalf("settings not restored %v after a ttl of 3 s: %+v", testutil.Timeout, l)
	}
	if el := time.Since(start); el < 2500*time.Millisecond {
		t.Fatalf("restored after %v, before the 3 s were up", el)
	}

	// Close 127.0.0.2/31 (all seven) in one call; the follower gets seven
	// closed events with reason local; every client sees its FIN.
	code, out, errOut = ctlExit(t, d.socket, "", "close", "--remote", "127.0.0.2/31", "--direction", "in")
	if code != 0 || !strings.Contains(out, "7 of 7 matched connection(s) closed (FIN)") {
		t.Fatalf("bulk close: exit %d\n%s%s", code, out, errOut)
	}
	var closed []string
	timeout := time.After(10 * time.Second)
	for len(closed) < 7 {
		select {
		case e := <-events:
			if e.Reason != "local" {
				t.Fatalf("event %+v: want reason local", e)
			}
			closed = append(closed, e.Remote)
		case <-timeout:
			t.Fatalf("follower got %d closed events in 10 s, want 7", len(closed))
		}
	}
	for _, c := range slices.Concat(two, three) {
		if !slices.Contains(closed, c.LocalAddr().String()) {
			t.Fatalf("no closed event for the client %s", c.LocalAddr())
		}
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := c.Read(make([]byte, 1)); err != io.EOF {
			t.Fatalf("client %s: read %v, want EOF", c.LocalAddr(), err)
		}
	}

	// batch from stdin, -o json: one line per command, exit the worst.
	more := dialFrom(t, d.addr, "127.0.0.4", 1)
	waitStats(t, d.socket, func(st rpc.Stats) bool { return st.Connections == 1 })
	var lr listedFull
	json.Unmarshal(ctl(t, d.socket, "-o", "json", "list"), &lr)
	id := lr.Connections[0].ConnID
	code, out, errOut = ctlExit(t, d.socket, fmt.Sprintf("state %d\n# check\nclose --remote 127.0.0.4 --dry-run\nstate 424242\n", id), "-o", "json", "batch", "-")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if code != 1 || len(lines) != 3 || !strings.HasPrefix(lines[0], fmt.Sprintf(`{"line":1,"command":"state %d","exit":0,"result":{"conid":%d,"state":2`, id, id)) ||
		!strings.HasPrefix(lines[1], `{"line":3,"command":"close --remote 127.0.0.4 --dry-run","exit":0,"result":{"matched":1,`) ||
		!strings.HasPrefix(lines[2], `{"line":4,"command":"state 424242","exit":1,`) {
		t.Fatalf("batch: exit %d\n%s%s", code, out, errOut)
	}
	more[0].SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	if _, err := more[0].Read(make([]byte, 1)); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("the dry run in a batch closed the connection: %v", err)
	}
}

// listedFull is what the bulk test reads of `tcpopsctl -o json list`.
type listedFull struct {
	Connections []struct {
		ConnID    uint64  `json:"conid"`
		Remote    string  `json:"remote"`
		LifetimeS float64 `json:"lifetime_s"`
		Keepalive struct {
			IdleS int `json:"idle_s"`
		} `json:"keepalive"`
		Overrides []rpc.Override `json:"overrides"`
	} `json:"connections"`
}
