package cli_test

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tcpops/tcpops/daemon/daemontest"
	"github.com/tcpops/tcpops/internal/testutil"
	"github.com/tcpops/tcpops/rpc"
)

// writeBatch writes lines to a file for batch.
func writeBatch(t *testing.T, lines ...string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "batch.txt")
	if err := os.WriteFile(p, []byte(strings.Join(lines, "\n")+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestBatch: one command line per line over one connection, in order
// (a line sees what the lines before it did, though they are pipelined),
// each with its usual output or a JSON line; the exit code is the worst.
func TestBatch(t *testing.T) {
	d := daemontest.Start(t)
	var ids []string
	for range 4 {
		_, id := d.DialFrom(t, 0, "127.0.0.6")
		ids = append(ids, fmt.Sprint(id))
	}
	file := writeBatch(t,
		"state "+ids[0],                      // 1
		"# a comment",                        // 2
		"",                                   // 3
		"state 99999",                        // 4: exit 1
		"close --conids "+ids[1],             // 5
		"state "+ids[1],                      // 6: closed just before: exit 1
		"bogus",                              // 7: exit 2
		`lifetime '`+ids[0]+`' "10m"`,        // 8: quoted
		"close --remote 10.9.0.0/16 --max 1", // 9: nothing matched: exit 1
		"close "+ids[2],                      // 10
		"wait closed "+ids[2],                // 11: runs alone
		"-o json state "+ids[3],              // 12
	)
	code, out, errOut := run(t, "-s", d.Socket, "batch", file)
	want := []string{
		"conid " + ids[0] + ": 2 accepting",
		"conid 99999: -1 not_found",
		"1 of 1 matched connection(s) closed (FIN)",
		"conid " + ids[1] + ": -1 not_found (closed: local)",
		"conid " + ids[0] + ": lifetime 10m00s",
		"no connection matches; nothing changed",
		"conid " + ids[2] + ": closed (FIN)",
		"conid " + ids[2] + ": closed (local)",
		`{"conid":` + ids[3] + `,"state":2,"state_name":"accepting"}`,
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if code != 2 || len(lines) != len(want) {
		t.Fatalf("exit %d (want 2, the worst), %d lines (want %d)\nstdout:\n%s\nstderr:\n%s", code, len(lines), len(want), out, errOut)
	}
	for i, w := range want {
		if !strings.HasPrefix(lines[i], w) {
			t.Errorf("line %d of the output: %q, want %q", i+1, lines[i], w)
		}
	}
	if !strings.Contains(errOut, `tcpopsctl: line 7: unknown command "bogus"`) {
		t.Errorf("stderr %q lacks line 7's error", errOut)
	}

	// -o json: one object per line, with its line number and exit code.
	d2 := daemontest.Start(t)
	_, a := d2.DialFrom(t, 0, "127.0.0.7")
	_, b := d2.DialFrom(t, 0, "127.0.0.7")
	_, c := d2.DialFrom(t, 0, "127.0.0.7")
	file = writeBatch(t, fmt.Sprintf("state %d", a), fmt.Sprintf("close %d", b), fmt.Sprintf("state %d", b), "", "events", "close --all --max 1", "state x")
	code, out, _ = run(t, "-s", d2.Socket, "-o", "json", "batch", file)
	type jl struct {
		Line    int             `json:"line"`
		Command string          `json:"command"`
		Exit    int             `json:"exit"`
		Result  json.RawMessage `json:"result"`
		Error   string          `json:"error"`
	}
	var got []jl
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		var x jl
		if err := json.Unmarshal([]byte(l), &x); err != nil {
			t.Fatalf("not one JSON object per line: %q: %v", l, err)
		}
		got = append(got, x)
	}
	if code != 4 || len(got) != 6 {
		t.Fatalf("json batch: exit %d (want 4), %d lines:\n%s", code, len(got), out)
	}
	var st rpc.StateResult
	var evs []rpc.Event
	if json.Unmarshal(got[2].Result, &st) != nil || st.Reason != "local" || got[2].Line != 3 || got[2].Exit != 1 {
		t.Errorf("line 3: %+v", got[2])
	}
	if got[3].Line != 5 || json.Unmarshal(got[3].Result, &evs) != nil || len(evs) != 1 || evs[0].ConnID != b {
		t.Errorf("line 5 (events, one JSON object a line, as a list): %+v", got[3])
	}
	if got[4].Exit != 4 || !strings.Contains(got[4].Error, "more than max 1") || got[4].Result != nil {
		t.Errorf("line 6: %+v", got[4])
	}
	if got[5].Exit != 2 || !strings.Contains(got[5].Error, `CONID "x"`) || got[5].Command != "state x" {
		t.Errorf("line 7: %+v", got[5])
	}

	// --stop-on-error stops at the first non-zero exit: nothing after it runs.
	file = writeBatch(t, fmt.Sprintf("state %d", a), "state 99999", fmt.Sprintf("close %d", c))
	code, out, errOut = run(t, "-s", d2.Socket, "batch", "--stop-on-error", file)
	if code != 1 || strings.Contains(out, "closed") || !strings.Contains(errOut, "stopped at line 2 (--stop-on-error)") {
		t.Fatalf("--stop-on-error: exit %d\nstdout: %s\nstderr: %s", code, out, errOut)
	}
	if _, ok := d2.Table.Get(c); !ok {
		t.Fatal("a line after the failing one ran under --stop-on-error")
	}

	// Many lines, pipelined: every answer, in order.
	var many []string
	for range 300 {
		many = append(many, fmt.Sprintf("alive %d", a), fmt.Sprintf("state %d", c))
	}
	code, out, _ = run(t, "-s", d2.Socket, "batch", writeBatch(t, many...))
	lines = strings.Split(strings.TrimSpace(out), "\n")
	if code != 0 || len(lines) != 600 {
		t.Fatalf("600 lines: exit %d, %d lines of output", code, len(lines))
	}
	for i, l := range lines {
		if w := []string{fmt.Sprintf("conid %d: alive", a), fmt.Sprintf("conid %d: 2 accepting", c)}[i%2]; !strings.HasPrefix(l, w) {
			t.Fatalf("output line %d: %q, want %q", i+1, l, w)
		}
	}
	// The batches' connections are closed; the daemon counts each close
	// once it has seen it, which may be just after the command returned.
	ctl := d2.Client(t)
	var stats rpc.Stats
	if !testutil.Until(func() bool {
		stats, _ = ctl.Stats(t.Context())
		return stats.RPC.Clients == 1
	}) {
		t.Fatalf("%d control clients after the batches, want 1 (this one)", stats.RPC.Clients)
	}

	for _, tt := range []struct {
		args []string
		code int
		err  string
	}{
		{[]string{"batch", filepath.Join(t.TempDir(), "none")}, 2, "no such file"},
		{[]string{"batch", "a", "b"}, 2, "takes 0 to 1 argument"},
		{[]string{"batch", writeBatch(t, "batch x")}, 2, "line 1: batch cannot run inside a batch"},
		{[]string{"batch", writeBatch(t, "events -f")}, 2, "line 1: events -f never ends"},
		{[]string{"batch", writeBatch(t, `state "1`)}, 2, "line 1: "},
		{[]string{"-s", filepath.Join(t.TempDir(), "none"), "batch", writeBatch(t, "state 1")}, 3, "cannot reach tcpops"},
	} {
		code, _, errOut := run(t, append([]string{"-s", d2.Socket}, tt.args...)...)
		if code != tt.code || !strings.Contains(errOut, tt.err) {
			t.Errorf("%v: exit %d, %q; want %d, %q", tt.args, code, errOut, tt.code, tt.err)
		}
	}
}
