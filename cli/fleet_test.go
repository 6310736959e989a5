package cli_test

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tcpops/tcpops/daemon/daemontest"
	"github.com/tcpops/tcpops/fleet"
	"github.com/tcpops/tcpops/internal/natstest"
	"github.com/tcpops/tcpops/internal/testutil"
)

// fleetOf starts NATS and one in-process daemon per host, each with two
// connections, and waits until all are registered.
func fleetOf(t *testing.T, hosts ...string) (*natstest.Server, map[string]*daemontest.D) {
	t.Helper()
	ns := natstest.Start(t, nil)
	ds := map[string]*daemontest.D{}
	for _, h := range hosts {
		d := daemontest.Start(t, "--nats", ns.URL(), "--host-name", h)
		d.Dial(t, 0)
		d.Dial(t, 0)
		ds[h] = d
	}
	code, out, errs := 0, "", ""
	if !testutil.Until(func() bool {
		code, out, errs = run(t, "--nats", ns.URL(), "--all-hosts", "-o", "json", "stats")
		return code == 0 && strings.Count(out, "\n") == len(hosts)
	}) {
		t.Fatalf("the fleet did not come up: exit %d\n%s%s", code, out, errs)
	}
	return ns, ds
}

func TestFleetCommands(t *testing.T) {
	ns, ds := fleetOf(t, "a", "b", "c")
	nats := []string{"--nats", ns.URL()}
	ida := fmt.Sprint(ds["a"].Table.Stats().Accepted)
	tests := []struct {
		name   string
		args   []string
		code   int
		stdout []string // substrings
		stderr []string
		lines  int // of stdout, when > 0
	}{
		{name: "list, all hosts", args: []string{"--all-hosts", "list"}, code: 0, lines: 7,
			stdout: []string{"HOST  CONID  PEER  PROTO", "\na     1 ", "\nb     2 ", "\nc     1 "}},
		{name: "list, two hosts", args: []string{"--host", "a,c", "list"}, code: 0, lines: 5, stdout: []string{"\na ", "\nc "}},
		{name: "list, one host: as from its socket", args: []string{"--host", "b", "list"}, code: 0, lines: 3, stdout: []string{"CONID  PEER  PROTO"}},
		{name: "state, one host", args: []string{"--host", "a", "state", ida}, code: 0, stdout: []string{"conid " + ida + ": 2 accepting"}},
		{name: "stats, merged", args: []string{"--all-hosts", "stats"}, code: 0, stdout: []string{"HOST\n", "\na     connections        2", "\nc     nats               host c, connected to nats://127.0.0.1"}},
		{name: "state, text lines", args: []string{"--all-hosts", "state", "1"}, code: 0, lines: 3, stdout: []string{"a  conid 1: 2 accepting\nb  conid 1: 2 accepting\n"}},
		{name: "not found everywhere", args: []string{"--all-hosts", "close", "99"}, code: 1,
			stderr: []string{"tcpopsctl: a: tcpops says: conid 99", "tcpopsctl: c: tcpops says: conid 99"}},
		{name: "selector dry run on every host", args: []string{"--all-hosts", "close", "--remote", "127.0.0.0/8", "--dry-run"}, code: 0,
			stdout: []string{"a  dry run: 2 connection(s) match", "c  dry run: 2 connection(s) match"}},
		{name: "selector over two hosts, -o json", args: []string{"--host", "a,b", "-o", "json", "lifetime", "--all", "300", "--dry-run"}, code: 0, lines: 2,
			stdout: []string{`{"host":"a","result":{"matched":2,`}},
		{name: "json, one object per host", args: []string{"--all-hosts", "-o", "json", "alive", "2"}, code: 0, lines: 3,
			stdout: []string{`{"host":"a","result":{"conid":2,"alive":true,"code":1}}`, `{"host":"c","result":`}},
		{name: "pretty, one indented object per host", args: []string{"--all-hosts", "--pretty", "alive", "2"}, code: 0,
			stdout: []string{"{\n  \"host\": \"a\",\n  \"result\": {\n    \"conid\": 2,"}},
		{name: "json errors", args: []string{"--host", "a,b", "-o", "json", "info", "99"}, code: 1, lines: 2,
			stdout: []string{`{"host":"a","error":{"code":-32001,"message":"conid 99: no such connection (see tcpops.list)","exit":1}}`}},
		{name: "host not there", args: []string{"--host", "a,zz", "stats"}, code: 4,
			stderr: []string{"tcpopsctl: zz: host zz did not answer: nothing serves tcpops.rpc.zz", "1 of 2 hosts did not answer: zz"}},
		{name: "no host chosen: every host", args: []string{"state", "1"}, code: 0, lines: 3, stdout: []string{"a  conid 1: 2 accepting\nb  conid 1: 2 accepting\n"}},
		{name: "bad host", args: []string{"--host", "a.b", "list"}, code: 2, stderr: []string{"--host"}},
		{name: "socket and nats", args: []string{"-s", "/tmp/x", "--host", "a", "list"}, code: 2, stderr: []string{"--socket and --nats"}},
		{name: "usage checked once", args: []string{"--all-hosts", "list", "--state", "bogus"}, code: 2, stderr: []string{`unknown state "bogus"`}},
		{name: "events from JetStream", args: []string{"--host", "b", "events"}, code: 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, out, errs := run(t, append(nats, tt.args...)...)
			if code != tt.code {
				t.Fatalf("exit %d, want %d\nstdout:\n%s\nstderr:\n%s", code, tt.code, out, errs)
			}
			for _, s := range tt.stdout {
				if !strings.Contains(out, s) {
					t.Errorf("stdout lacks %q:\n%s", s, out)
				}
			}
			for _, s := range tt.stderr {
				if !strings.Contains(errs, s) {
					t.Errorf("stderr lacks %q:\n%s", s, errs)
				}
			}
			if n := strings.Count(out, "\n"); tt.lines > 0 && n != tt.lines {
				t.Errorf("%d lines, want %d:\n%s", n, tt.lines, out)
			}
		})
	}
	if code, _, errs := run(t, "--host", "a", "list"); code != 2 || !strings.Contains(errs, "--host: only with --nats") {
		t.Errorf("--host without --nats: exit %d, %s", code, errs)
	}
	if code, _, errs := run(t, "--nats", "nats://127.0.0.1:1", "--host", "a", "list"); code != 3 || !strings.Contains(errs, "cannot reach NATS at nats://127.0.0.1:1") {
		t.Errorf("NATS away: exit %d, %s", code, errs)
	}
}

// TestFleetDownHost: a host registered but not answering is listed and
// makes the exit code 4, without waiting for it beyond discovery.
func TestFleetDownHost(t *testing.T) {
	ns, _ := fleetOf(t, "a", "b")
	c, err := fleet.Connect(t.Context(), fleet.Options{URL: ns.URL()})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	reg, _ := json.Marshal(fleet.Registration{Host: "gone", Boot: "1"})
	c.NATS().Publish(fleet.HostSubject("gone"), reg)
	c.NATS().Flush()
	start := time.Now()
	code, out, errs := run(t, "--nats", ns.URL(), "--all-hosts", "list")
	if code != 4 || !strings.Contains(errs, "tcpopsctl: 1 of 3 hosts did not answer: gone") || !strings.Contains(out, "\nb ") {
		t.Errorf("exit %d, want 4 with b listed and gone reported\nstdout:\n%s\nstderr:\n%s", code, out, errs)
	}
	if took := time.Since(start); took > 3*time.Second {
		t.Errorf("took %s, want the down host not waited for", took)
	}
}

func TestFleetEvents(t *testing.T) {
	ns, ds := fleetOf(t, "a", "b")
	for _, h := range []string{"a", "b"} {
		c, _ := ds[h].Dial(t, 0)
		c.Close()
	}
	var out string
	testutil.Until(func() bool {
		_, out, _ = run(t, "--nats", ns.URL(), "events")
		return strings.Count(out, "\n") >= 2
	})
	if !strings.Contains(out, "host=a seq=1 ") || !strings.Contains(out, "host=b seq=1 ") || !strings.Contains(out, "reason=eof") {
		t.Fatalf("events of a and b:\n%s", out)
	}
	code, out, errs := run(t, "--nats", ns.URL(), "--host", "b", "-o", "json", "events", "--since", "1h")
	var r struct {
		StreamSeq uint64 `json:"stream_seq"`
		Host      string `json:"host"`
		Seq       uint64 `json:"seq"`
		Reason    string `json:"reason"`
	}
	if code != 0 || json.Unmarshal([]byte(out), &r) != nil || r.Host != "b" || r.Seq != 1 || r.StreamSeq == 0 || r.Reason != "eof" {
		t.Errorf("exit %d, %s %s: want b's one event with its stream_seq", code, out, errs)
	}
	if code, _, errs := run(t, "--nats", ns.URL(), "events", "--since", "yesterday"); code != 2 || !strings.Contains(errs, "--since") {
		t.Errorf("bad --since: exit %d %s", code, errs)
	}
	if code, _, errs := run(t, "events", "--since", "1h"); code != 2 || !strings.Contains(errs, "--since 1h: want a whole number >= 0") {
		t.Errorf("--since 1h on the socket: exit %d %s", code, errs)
	}
}

// TestFleetNegatives: a negative answer makes the exit code 1 only when
// every host gives one.
func TestFleetNegatives(t *testing.T) {
	ns, _ := fleetOf(t, "a", "b")
	if code, _, errs := run(t, "--nats", ns.URL(), "--host", "a", "close", "1"); code != 0 {
		t.Fatalf("close 1 on a: exit %d %s", code, errs)
	}
	code, out, _ := run(t, "--nats", ns.URL(), "--all-hosts", "alive", "1")
	if code != 0 || !strings.Contains(out, "a  conid 1: not alive (-1)") || !strings.Contains(out, "b  conid 1: alive (1)") {
		t.Errorf("alive 1, alive on b only: exit %d, want 0:\n%s", code, out)
	}
	if code, out, _ := run(t, "--nats", ns.URL(), "--all-hosts", "close", "--remote", "192.0.2.0/24"); code != 1 || strings.Count(out, "no connection matches") != 2 {
		t.Errorf("close of nothing anywhere: exit %d, want 1:\n%s", code, out)
	}
}

// TestFleetBatch: batch over NATS on one host, and from a file on every
// host; stdin cannot feed several hosts.
func TestFleetBatch(t *testing.T) {
	ns, _ := fleetOf(t, "a", "b")
	f := filepath.Join(t.TempDir(), "lines")
	os.WriteFile(f, []byte("state 1\nlifetime 1 10m\nstate 99\n"), 0o644)
	code, out, errs := run(t, "--nats", ns.URL(), "--host", "a", "batch", f)
	if code != 1 || !strings.Contains(out, "conid 1: 2 accepting\nconid 1: lifetime 10m00s") || !strings.Contains(out, "conid 99: -1 not_found") {
		t.Errorf("one host: exit %d, want 1 (state 99):\n%s%s", code, out, errs)
	}
	code, out, errs = run(t, "--nats", ns.URL(), "--all-hosts", "batch", f)
	if code != 1 || strings.Count(out, "conid 1: lifetime 10m00s") != 2 || !strings.Contains(out, "b  conid 99: -1 not_found") {
		t.Errorf("every host: exit %d, want 1:\n%s%s", code, out, errs)
	}
	if code, _, errs := run(t, "--nats", ns.URL(), "--all-hosts", "batch"); code != 2 || !strings.Contains(errs, "reads a FILE, not stdin") {
		t.Errorf("stdin on several hosts: exit %d %s", code, errs)
	}
}

// TestDoctorNATS: doctor shows the NATS link, and fails it when NATS is away.
func TestDoctorNATS(t *testing.T) {
	ns := natstest.Start(t, nil)
	d := daemontest.Start(t, "--nats", ns.URL(), "--host-name", "web1")
	var out string
	testutil.Until(func() bool {
		_, out, _ = run(t, "-s", d.Socket, "doctor")
		return strings.Contains(out, "connected to nats://")
	})
	if !strings.Contains(out, "nats") || !strings.Contains(out, "host web1, connected to nats://127.0.0.1") {
		t.Fatalf("doctor shows no healthy nats line:\n%s", out)
	}
	ns.Stop()
	testutil.Until(func() bool {
		_, out, _ = run(t, "-s", d.Socket, "doctor")
		return strings.Contains(out, "not connected to NATS")
	})
	if !strings.Contains(out, "host web1 is not connected to NATS") {
		t.Errorf("doctor does not fail the nats line with NATS away:\n%s", out)
	}
	if code, _, errs := run(t, "--nats", ns.URL(), "--host", "web1", "doctor"); code != 2 || !strings.Contains(errs, "without --nats") {
		t.Errorf("doctor --nats: exit %d %s", code, errs)
	}
}
