package cli_test

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tcpops/tcpops/daemon/daemontest"
	"github.com/tcpops/tcpops/rpc"
)

// TestBulkCommands: the changing commands with selector flags, their
// output and exit codes (0 all changed, 1 nothing matched, 4 refused or
// some failed, 2 usage).
func TestBulkCommands(t *testing.T) {
	d := daemontest.Start(t, "--listen", "tcp://127.0.0.1:0?backend=echo&name=sip", "--keepalive", "60,5,5")
	var two, three []uint64
	for range 3 {
		_, id := d.DialFrom(t, 0, "127.0.0.2")
		two = append(two, id)
	}
	for range 2 {
		_, id := d.DialFrom(t, 0, "127.0.0.3")
		three = append(three, id)
	}
	s := d.Socket
	id3 := fmt.Sprint(three[0])
	tests := []struct {
		args   []string
		code   int
		stdout string // substring
		stderr string // substring
	}{
		{[]string{"close", "--remote", "127.0.0.2", "--dry-run"}, 0, "dry run: 3 connection(s) match and would be closed (FIN); nothing was changed", ""},
		{[]string{"close", "--remote", "127.0.0.2/31", "--dry-run"}, 0, "CONID  PEER  PROTO  DIR  STATE", ""},
		{[]string{"close", "--remote", "10.0.0.0/8"}, 1, "no connection matches; nothing changed", ""},
		{[]string{"close", "--remote", "10.0.0.0/8", "--dry-run"}, 1, "dry run: no connection matches", ""},
		{[]string{"close", "--remote", "127.0.0.2/31", "--max", "4"}, 4, "", "5 connections match, more than max 4; nothing was changed (narrow the selector or raise max) (code -32004)"},
		{[]string{"close"}, 2, "", "takes a CONID and 0 more argument(s), or selector flags"},
		{[]string{"close", "5", "--remote", "127.0.0.2"}, 2, "", "with selector flags takes 0 argument(s) and no CONID"},
		{[]string{"close", "--remote", "bogus"}, 2, "", `param select.remote "bogus"`},
		{[]string{"close", "--all", "--remote", "127.0.0.2"}, 2, "", "--all takes no other selector flag"},
		{[]string{"close", "--all=false"}, 2, "", "--all=false selects nothing"},
		{[]string{"close", id3, "--dry-run"}, 2, "", "--dry-run works with selector flags, not a CONID"},
		{[]string{"close", "--conids", "1,x"}, 2, "", `--conids "1,x"`},
		{[]string{"close", "--remote", "127.0.0.2", "--max", "0"}, 2, "", "--max 0"},
		{[]string{"close", "--remote", "127.0.0.2", "--rate", "0"}, 2, "", "--rate 0"},
		{[]string{"close", "--idle-min", "-1s"}, 2, "", "--idle-min -1s"},
		{[]string{"keepalive", "enable", "30", "3", "10", "--remote", "127.0.0.3", "--for", "1h"}, 0, "2 of 2 matched connection(s) given keepalive 30/3/10 for 1h0m0s", ""},
		{[]string{"keepalive", "enable", "30", "3", "--remote", "127.0.0.3"}, 2, "", "takes 3 argument(s) and no CONID, got 2"},
		{[]string{"keepalive", "enable", "0", "3", "10", "--remote", "127.0.0.3"}, 2, "", "idle 0 out of range"},
		{[]string{"keepalive", "enable", id3, "31", "3", "10", "--for", "1h"}, 0, "idle 31s, 3 probes every 10s (read back from the kernel); until ", ""},
		{[]string{"keepalive", "disable", "--remote", "127.0.0.3", "--dry-run"}, 0, "would be given keepalive off", ""},
		{[]string{"lifetime", "10m", "--remote", "127.0.0.3", "--state", "accepting"}, 0, "2 of 2 matched connection(s) given lifetime 10m00s", ""},
		{[]string{"lifetime", "--remote", "127.0.0.3"}, 2, "", "takes 1 argument(s) and no CONID, got 0"},
		{[]string{"lifetime", id3, "90", "--for", "1h"}, 0, "lifetime 1m30s, closes in 1m30s unless there is traffic; until", ""},
		{[]string{"closed-event", "--off", "--remote", "127.0.0.3", "--for", "0s"}, 2, "", "--for 0s: must be > 0"},
		{[]string{"closed-event", "--off", "--conids", id3 + ",99999", "--for", "1h"}, 0, "1 of 1 matched connection(s) given closed event off for 1h0m0s", ""},
		{[]string{"info", id3}, 0, "keepalive until", ""},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			code, out, errOut := run(t, append([]string{"-s", s}, tt.args...)...)
			if code != tt.code || !strings.Contains(out, tt.stdout) || !strings.Contains(errOut, tt.stderr) {
				t.Fatalf("exit %d, want %d\nstdout: %s\nstderr: %s\nwant stdout with %q, stderr with %q", code, tt.code, out, errOut, tt.stdout, tt.stderr)
			}
		})
	}
	if n := d.Table.Len(); n != 5 {
		t.Fatalf("%d connections left, want all 5 (nothing above closes)", n)
	}
	// A rated close, with a --timeout shorter than the call: the
	// daemon's progress keeps it going; no progress bar off a terminal.
	start := time.Now()
	code, out, errOut := run(t, "-s", s, "--timeout", "300ms", "-o", "json", "close", "--remote", "127.0.0.2", "--rate", "2")
	var r rpc.BulkResult
	if code != 0 || json.Unmarshal([]byte(out), &r) != nil || !slices.Equal(r.Applied, two) || errOut != "" {
		t.Fatalf("rated close: exit %d, %q, %q", code, out, errOut)
	}
	if el := time.Since(start); el < 900*time.Millisecond {
		t.Fatalf("3 closes at 2 a second took %v, want 1 s", el)
	}
	if n := d.Table.Len(); n != 2 {
		t.Fatalf("%d connections left, want 2", n)
	}
}

// TestBulkSomeFail: a change that fails on connections exits 4 and names
// each one.
func TestBulkSomeFail(t *testing.T) {
	d := daemontest.Start(t, "--closed-event", "off")
	var ids []uint64
	for range 2 {
		_, id := d.DialFrom(t, 0, "127.0.0.4")
		ids = append(ids, id)
	}
	code, out, errOut := run(t, "-s", d.Socket, "closed-event", "--remote", "127.0.0.4")
	if code != 4 || !strings.Contains(out, "0 of 2 matched connection(s) given closed event on; 2 failed") ||
		!strings.Contains(errOut, fmt.Sprintf("conid %d: closed events are off", ids[1])) || !strings.Contains(errOut, "2 of 2 change(s) failed") {
		t.Fatalf("exit %d\nstdout: %s\nstderr: %s", code, out, errOut)
	}
	code, out, _ = run(t, "-s", d.Socket, "-o", "json", "closed-event", "--all")
	var r rpc.BulkResult
	if code != 4 || json.Unmarshal([]byte(out), &r) != nil || len(r.Failed) != 2 || r.Failed[0].Code != rpc.CodeInvalidParams {
		t.Fatalf("json: exit %d, %s", code, out)
	}
}

// TestBulkCompletion: --listener completes with the daemon's listeners.
func TestBulkCompletion(t *testing.T) {
	d := daemontest.Start(t, "--listen", "tcp://127.0.0.1:0?backend=echo&name=sip-edge")
	d.DialFrom(t, 0, "127.0.0.5")
	for _, args := range [][]string{{"close", "--listener", "sip"}, {"list", "--listener", ""}, {"keepalive", "disable", "--listener", "s"}} {
		code, out, _ := run(t, append([]string{"-s", d.Socket, "__complete"}, args...)...)
		if code != 0 || !strings.HasPrefix(out, "sip-edge\t1 connection(s) in\n") {
			t.Errorf("complete %v: exit %d, %q", args, code, out)
		}
	}
	code, out, _ := run(t, "-s", d.Socket, "__complete", "close", "--conids", "7,")
	if code != 0 || !strings.Contains(out, "7,1\ttcp in 127.0.0.5:") {
		t.Errorf("complete --conids 7,: exit %d, %q", code, out)
	}
}
