package control_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/tcpops/tcpops/conn"
	"github.com/tcpops/tcpops/daemon/daemontest"
	"github.com/tcpops/tcpops/internal/testutil"
	"github.com/tcpops/tcpops/rpc"
	"github.com/tcpops/tcpops/rpc/client"
	"github.com/tcpops/tcpops/sock"
)

// echoServer is a backend outside the daemon that echoes.
func echoServer(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	t.Cleanup(func() { ln.Close(); <-done })
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { io.Copy(c, c); c.Close() }()
		}
	}()
	return ln.Addr().String()
}

// fleet is a daemon with connections of every kind, from several source
// addresses, on four listeners.
type fleet struct {
	d                 *daemontest.D
	a                 []uint64 // listener a, from 127.0.0.2, silent (accepting)
	b                 []uint64 // listener a, from 127.0.0.3, have talked (ok)
	bAddr             string   // the client address of b[0]
	c                 uint64   // listener b, from 127.0.0.4, silent
	relayIn, relayOut uint64   // listener relay, from 127.0.0.5, both legs
	ws                uint64   // listener w (WebSocket), from 127.0.0.6
	tcp               map[uint64]*net.TCPConn
}

func (f *fleet) all() []uint64 {
	out := slices.Concat(f.a, f.b, []uint64{f.c, f.relayIn, f.relayOut, f.ws})
	slices.Sort(out)
	return out
}

func newFleet(t *testing.T, args ...string) *fleet {
	t.Helper()
	be := echoServer(t)
	d := daemontest.Start(t, append([]string{
		"--listen", "tcp://127.0.0.1:0?backend=echo&name=a",
		"--listen", "tcp://127.0.0.1:0?backend=echo&name=b",
		"--listen", "tcp://127.0.0.1:0?name=relay&backend=" + be,
		"--listen", "ws://127.0.0.1:0/w?backend=echo&name=w",
	}, args...)...)
	f := &fleet{d: d, tcp: map[uint64]*net.TCPConn{}}
	add := func(i int, src string) uint64 {
		c, id := d.DialFrom(t, i, src)
		f.tcp[id] = c
		return id
	}
	talk := func(id uint64) {
		c := f.tcp[id]
		if _, err := c.Write([]byte("x")); err != nil {
			t.Fatal(err)
		}
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.ReadFull(c, make([]byte, 1)); err != nil {
			t.Fatal(err)
		}
	}
	for range 3 {
		f.a = append(f.a, add(0, "127.0.0.2"))
	}
	for range 2 {
		id := add(0, "127.0.0.3")
		talk(id)
		f.b = append(f.b, id)
	}
	f.bAddr = f.tcp[f.b[0]].LocalAddr().String()
	f.c = add(1, "127.0.0.4")
	f.relayIn = add(2, "127.0.0.5")
	talk(f.relayIn)
	testutil.WaitFor(t, "the relayed connection's backend leg", func() bool {
		f.relayOut = 0
		if c, ok := d.Table.Get(f.relayIn); ok {
			if p := c.Peer(); p != nil {
				f.relayOut = p.ID
			}
		}
		return f.relayOut != 0
	})
	dl := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.6")}}
	hc := &http.Client{Transport: &http.Transport{DialContext: dl.DialContext}}
	ws, _, err := websocket.Dial(t.Context(), "ws://"+d.Addr(3)+"/w", &websocket.DialOptions{HTTPClient: hc})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ws.CloseNow() })
	testutil.WaitFor(t, "the WebSocket connection in state ok", func() bool {
		infos, _ := d.Table.List(filterProto("ws"))
		if len(infos) == 1 && infos[0].State == 1 {
			f.ws = infos[0].ID
		}
		return f.ws != 0
	})
	return f
}

func filterRemote(s string) conn.Filter {
	p, port, _ := conn.ParseRemote(s)
	return conn.Filter{Remote: p, Port: port}
}

func filterProto(p string) conn.Filter { return conn.Filter{Proto: conn.Proto(p)} }

func filterAll() conn.Filter { return conn.Filter{} }

// bulkCall calls method with params and returns the bulk result.
func bulkCall(t *testing.T, c *client.Client, method string, params map[string]any) (rpc.BulkResult, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	return c.Bulk(ctx, method, params)
}

func conids(cs []rpc.Conn) []uint64 {
	var out []uint64
	for _, c := range cs {
		out = append(out, c.ConnID)
	}
	return out
}

func sorted(ids ...uint64) []uint64 {
	out := slices.Clone(ids)
	slices.Sort(out)
	return out
}

// TestBulkSelectors: each selector picks exactly its set (seen through a
// dry run, which changes nothing), and a bad selector names what is
// wrong.
func TestBulkSelectors(t *testing.T) {
	f := newFleet(t)
	c := f.d.Client(t)
	tests := []struct {
		name string
		sel  map[string]any
		want []uint64
	}{
		{"remote IP", map[string]any{"remote": "127.0.0.2"}, f.a},
		{"remote CIDR", map[string]any{"remote": "127.0.0.2/31"}, slices.Concat(f.a, f.b)},
		{"remote IP:port", map[string]any{"remote": f.bAddr}, f.b[:1]},
		{"state accepting", map[string]any{"state": "accepting"}, slices.Concat(f.a, []uint64{f.c})},
		{"state ok by number", map[string]any{"state": 1}, slices.Concat(f.b, []uint64{f.relayIn, f.relayOut, f.ws})},
		{"proto ws", map[string]any{"proto": "ws"}, []uint64{f.ws}},
		{"direction out", map[string]any{"direction": "out"}, []uint64{f.relayOut}},
		{"listener", map[string]any{"listener": "b"}, []uint64{f.c}},
		{"listener and remote", map[string]any{"listener": "a", "remote": "127.0.0.3"}, f.b},
		{"conids and direction", map[string]any{"conids": []uint64{f.a[0], f.c, f.relayOut, 99999}, "direction": "in"}, []uint64{f.a[0], f.c}},
		{"all", map[string]any{"all": true}, f.all()},
		{"nothing", map[string]any{"remote": "10.0.0.0/8"}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := bulkCall(t, c, rpc.MethodClose, map[string]any{"select": tt.sel, "dry_run": true})
			if err != nil {
				t.Fatal(err)
			}
			if got, want := conids(r.Connections), sorted(tt.want...); !slices.Equal(got, want) || r.Matched != len(want) || !r.DryRun || len(r.Applied) != 0 {
				t.Fatalf("matched %d %v, dry_run %v, applied %v; want %v", r.Matched, got, r.DryRun, r.Applied, want)
			}
		})
	}
	if n := f.d.Table.Len(); n != len(f.all()) {
		t.Fatalf("%d connections after the dry runs, want all %d", n, len(f.all()))
	}
	bad := []struct {
		params map[string]any
		msg    string
	}{
		{map[string]any{"select": map[string]any{}}, "empty select for tcpops.close"},
		{map[string]any{"select": map[string]any{"all": false}}, "empty select"},
		{map[string]any{"select": map[string]any{"all": true, "proto": "tcp"}}, "all takes no filters"},
		{map[string]any{"select": map[string]any{"remote": "10.0.0.0/33"}}, `param select.remote "10.0.0.0/33"`},
		{map[string]any{"select": map[string]any{"state": "gone"}}, "param select.state"},
		{map[string]any{"select": map[string]any{"proto": "udp"}}, `param select.proto "udp"`},
		{map[string]any{"select": map[string]any{"idle_min": -1}}, "param select.idle_min -1"},
		{map[string]any{"select": map[string]any{"conids": []int{0}}}, "select.conids"},
		{map[string]any{"select": map[string]any{"limit": 5}}, `unknown param "limit"`},
		{map[string]any{"select": map[string]any{"all": true}, "conid": f.c}, "give one of them, not both"},
		{map[string]any{"conid": f.c, "dry_run": true}, "param dry_run of tcpops.close: only with select"},
		{map[string]any{"conid": f.c, "max": 3}, "param max of tcpops.close: only with select"},
		{map[string]any{"select": map[string]any{"all": true}, "max": 0}, "param max 0"},
		{map[string]any{"select": map[string]any{"all": true}, "rate": -2}, "param rate -2"},
		{map[string]any{}, "missing param conid for tcpops.close (a connection id from tcpops.list), or select"},
	}
	for _, tt := range bad {
		_, err := bulkCall(t, c, rpc.MethodClose, tt.params)
		var je *rpc.Error
		if !errors.As(err, &je) || je.Code != rpc.CodeInvalidParams || !strings.Contains(je.Message, tt.msg) {
			t.Errorf("%v: %v; want -32602 naming %q", tt.params, err, tt.msg)
		}
	}
	if n := f.d.Table.Len(); n != len(f.all()) {
		t.Fatalf("%d connections after refused calls, want all %d", n, len(f.all()))
	}
}

// TestBulkIdleSelector: idle_min picks the connections idle that long,
// not one that has just talked.
func TestBulkIdleSelector(t *testing.T) {
	d := daemontest.Start(t)
	var ids []uint64
	var conns []*net.TCPConn
	for range 4 {
		tc, id := d.DialFrom(t, 0, "127.0.0.7")
		ids, conns = append(ids, id), append(conns, tc)
	}
	c := d.Client(t)
	testutil.WaitFor(t, "every connection idle 1.5s", func() bool {
		infos, _ := d.Table.List(filterRemote("127.0.0.7"))
		for _, in := range infos {
			if in.Idle < 1500*time.Millisecond {
				return false
			}
		}
		return len(infos) == 4
	})
	conns[2].Write([]byte("x"))
	conns[2].SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadFull(conns[2], make([]byte, 1)); err != nil {
		t.Fatal(err)
	}
	r, err := bulkCall(t, c, rpc.MethodLifetime, map[string]any{"select": map[string]any{"idle_min": 1, "remote": "127.0.0.7"}, "lifetime": 60, "dry_run": true})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := conids(r.Connections), []uint64{ids[0], ids[1], ids[3]}; !slices.Equal(got, want) {
		t.Fatalf("idle_min 1 picked %v, want %v (not %d, which just talked)", got, want, ids[2])
	}
}

// keepalives reads each connection's keepalive from the kernel.
func keepalives(t *testing.T, d *daemontest.D, ids []uint64) map[uint64]sock.Keepalive {
	t.Helper()
	out := map[uint64]sock.Keepalive{}
	for _, id := range ids {
		c, ok := d.Table.Get(id)
		if !ok {
			t.Fatalf("conid %d gone", id)
		}
		k, err := c.Keepalive()
		if err != nil {
			t.Fatal(err)
		}
		out[id] = k
	}
	return out
}

// TestBulkDryRunChangesNothing: a dry run of every changing method over
// every connection leaves keepalive (read back from the kernel), lifetime,
// closed events and the table as they were.
func TestBulkDryRunChangesNothing(t *testing.T) {
	f := newFleet(t, "--keepalive", "60,5,5")
	c := f.d.Client(t)
	all := map[string]any{"all": true}
	// The WebSocket's socket is read too: every leg has one.
	before := keepalives(t, f.d, f.all())
	infos, _ := f.d.Table.List(filterAll())
	seq := f.d.Table.Events().LastSeq()
	for _, call := range []struct {
		method string
		params map[string]any
	}{
		{rpc.MethodKeepalive, map[string]any{"idle": 1, "count": 1, "interval": 1, "ttl": 3600}},
		{rpc.MethodKeepalive, map[string]any{"enable": false}},
		{rpc.MethodLifetime, map[string]any{"lifetime": 1}},
		{rpc.MethodClosedEvent, map[string]any{"enable": false}},
		{rpc.MethodClose, map[string]any{"reset": true}},
	} {
		call.params["select"], call.params["dry_run"] = all, true
		r, err := bulkCall(t, c, call.method, call.params)
		if err != nil || r.Matched != len(f.all()) || len(r.Applied) != 0 || len(r.Failed) != 0 {
			t.Fatalf("%s dry run: %+v, %v", call.method, r, err)
		}
	}
	if after := keepalives(t, f.d, f.all()); !mapsEqual(before, after) {
		t.Fatalf("keepalive changed by a dry run:\nbefore %v\nafter  %v", before, after)
	}
	again, _ := f.d.Table.List(filterAll())
	if len(again) != len(infos) {
		t.Fatalf("%d connections after the dry runs, want %d", len(again), len(infos))
	}
	for i := range again {
		if again[i].Lifetime != infos[i].Lifetime || again[i].ClosedEvent != infos[i].ClosedEvent || again[i].Overrides != nil {
			t.Fatalf("conid %d changed by a dry run: %+v, was %+v", again[i].ID, again[i], infos[i])
		}
	}
	if s := f.d.Table.Events().LastSeq(); s != seq {
		t.Fatalf("events published during dry runs: seq %d, was %d", s, seq)
	}
	if !strings.Contains(f.d.Logs(), "dry_run=true") {
		t.Fatalf("dry runs not in the log:\n%s", f.d.Logs())
	}
}

func mapsEqual[K comparable, V comparable](a, b map[K]V) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

// TestBulkMaxRefuses: more matches than max changes nothing and says how
// many matched; within max, the change is made and each close has its
// event with reason local; the audit log has one line for the call.
func TestBulkMaxRefuses(t *testing.T) {
	f := newFleet(t)
	c := f.d.Client(t)
	sel := map[string]any{"remote": "127.0.0.2/31"}
	_, err := bulkCall(t, c, rpc.MethodClose, map[string]any{"select": sel, "max": 4})
	var je *rpc.Error
	if !errors.As(err, &je) || je.Code != rpc.CodeRefused || !strings.Contains(je.Message, "5 connections match, more than max 4") {
		t.Fatalf("max 4 of 5: %v; want -32004 naming 5 and 4", err)
	}
	var data rpc.RefusedData
	if err := json.Unmarshal(je.Data, &data); err != nil || data != (rpc.RefusedData{Matched: 5, Max: 4}) {
		t.Fatalf("error data %s: %+v, %v", je.Data, data, err)
	}
	if n := f.d.Table.Len(); n != len(f.all()) {
		t.Fatalf("%d connections after a refused close, want %d", n, len(f.all()))
	}
	_, err = bulkCall(t, c, rpc.MethodKeepalive, map[string]any{"select": sel, "max": 1, "enable": false})
	if code(err) != rpc.CodeRefused {
		t.Fatalf("keepalive max 1 of 5: %v", err)
	}
	for id, k := range keepalives(t, f.d, slices.Concat(f.a, f.b)) {
		if !k.Enabled {
			t.Fatalf("conid %d: keepalive turned off by a refused call", id)
		}
	}
	seq := f.d.Table.Events().LastSeq()
	r, err := bulkCall(t, c, rpc.MethodClose, map[string]any{"select": sel, "max": 5})
	if err != nil || r.Matched != 5 || !slices.Equal(sorted(r.Applied...), sorted(slices.Concat(f.a, f.b)...)) || len(r.Failed) != 0 || r.DryRun {
		t.Fatalf("max 5 of 5: %+v, %v", r, err)
	}
	evs := daemontest.WaitEvents(t, c, rpc.EventsParams{Since: seq}, 5)
	for _, e := range evs {
		if e.Reason != "local" || !slices.Contains(r.Applied, e.ConnID) {
			t.Fatalf("event %+v: want reason local for one of %v", e, r.Applied)
		}
	}
	logs := f.d.Logs()
	if n := strings.Count(logs, "rpc bulk"); n != 3 {
		t.Fatalf("%d bulk log lines, want 3 (one per call):\n%s", n, logs)
	}
	for _, want := range []string{`select="{\"remote\":\"127.0.0.2/31\"}"`, "matched=5 applied=5 failed=0", "uid=0", "method=tcpops.close",
		`err="refused: 5 connections match, more than max 4`} {
		if !strings.Contains(logs, want) {
			t.Errorf("log lacks %q:\n%s", want, logs)
		}
	}
	if strings.Contains(logs, `msg=rpc uid`) {
		t.Errorf("a bulk call also logged a line of its own per connection or before it ran:\n%s", logs)
	}
}

// TestBulkClosePairs: closing both legs of a relayed pair closes one
// with reason local and its partner goes with it: not a failure.
func TestBulkClosePairs(t *testing.T) {
	f := newFleet(t)
	c := f.d.Client(t)
	seq := f.d.Table.Events().LastSeq()
	r, err := bulkCall(t, c, rpc.MethodClose, map[string]any{"select": map[string]any{"listener": "relay"}})
	if err != nil || r.Matched != 2 || len(r.Failed) != 0 || !slices.Equal(r.Applied, []uint64{f.relayIn}) || !slices.Equal(r.Gone, []uint64{f.relayOut}) {
		t.Fatalf("close of a pair: %+v, %v; want applied [%d], gone [%d]", r, err, f.relayIn, f.relayOut)
	}
	evs := daemontest.WaitEvents(t, c, rpc.EventsParams{Since: seq}, 2)
	reasons := map[uint64]string{}
	for _, e := range evs {
		reasons[e.ConnID] = e.Reason
	}
	if reasons[f.relayIn] != "local" || reasons[f.relayOut] != "peer" {
		t.Fatalf("reasons %v; want %d local, %d peer", reasons, f.relayIn, f.relayOut)
	}
}

// TestBulkChanges: keepalive, lifetime and closed events set on a set,
// read back; a connection not matched keeps its own.
func TestBulkChanges(t *testing.T) {
	f := newFleet(t, "--keepalive", "60,5,5")
	c := f.d.Client(t)
	sel := map[string]any{"listener": "a"}
	set := slices.Concat(f.a, f.b)
	r, err := bulkCall(t, c, rpc.MethodKeepalive, map[string]any{"select": sel, "idle": 30, "count": 3, "interval": 10})
	if err != nil || !slices.Equal(sorted(r.Applied...), sorted(set...)) {
		t.Fatalf("keepalive: %+v, %v", r, err)
	}
	for id, k := range keepalives(t, f.d, set) {
		if k != (sock.Keepalive{Enabled: true, Idle: 30, Count: 3, Interval: 10}) {
			t.Fatalf("conid %d: kernel says %+v", id, k)
		}
	}
	if k := keepalives(t, f.d, []uint64{f.c})[f.c]; k.Idle != 60 {
		t.Fatalf("unselected conid %d: keepalive %+v, want 60/5/5 kept", f.c, k)
	}
	if r, err = bulkCall(t, c, rpc.MethodLifetime, map[string]any{"select": sel, "lifetime": 600}); err != nil || len(r.Applied) != 5 {
		t.Fatalf("lifetime: %+v, %v", r, err)
	}
	if r, err = bulkCall(t, c, rpc.MethodClosedEvent, map[string]any{"select": sel, "enable": false}); err != nil || len(r.Applied) != 5 {
		t.Fatalf("closed_event: %+v, %v", r, err)
	}
	for _, id := range set {
		cn, _ := f.d.Table.Get(id)
		if lt, _ := cn.Lifetime(); lt != 600*time.Second || cn.ClosedEvent() {
			t.Fatalf("conid %d: lifetime %v, closed event %v", id, lt, cn.ClosedEvent())
		}
	}
}

// TestBulkRate: a rated call holds its pace (20 intervals at 10 a
// second: 2 s, within 20 %) and tells the caller how far it got, in
// order, before its answer.
func TestBulkRate(t *testing.T) {
	d := daemontest.Start(t)
	for range 21 {
		d.DialFrom(t, 0, "127.0.0.8")
	}
	l := rawConn(t, d.Socket)
	start := time.Now()
	l.send(`{"jsonrpc":"2.0","id":1,"method":"tcpops.lifetime","params":{"select":{"remote":"127.0.0.8"},"lifetime":300,"rate":10}}`)
	var notes []rpc.Progress
	var res rpc.BulkResult
	for {
		r := l.recv()
		if r.Method == rpc.NotifyProgress {
			var p rpc.Progress
			json.Unmarshal(r.Params, &p)
			notes = append(notes, p)
			continue
		}
		if r.Error != nil {
			t.Fatalf("error %+v", r.Error)
		}
		json.Unmarshal(r.Result, &res)
		break
	}
	el := time.Since(start)
	if el < 1600*time.Millisecond || el > 2400*time.Millisecond {
		t.Fatalf("21 changes at 10/s took %v, want 2s within 20%%", el)
	}
	if len(res.Applied) != 21 || res.Matched != 21 {
		t.Fatalf("result %+v", res)
	}
	if len(notes) < 5 {
		t.Fatalf("%d progress notifications in 2 s, want several: %v", len(notes), notes)
	}
	for i, p := range notes {
		if p.Total != 21 || (i > 0 && p.Done < notes[i-1].Done) {
			t.Fatalf("progress out of order or wrong total: %v", notes)
		}
	}
	if last := notes[len(notes)-1]; last.Done != 21 {
		t.Fatalf("last progress %+v, want 21 of 21", last)
	}
}

var bulkLine = regexp.MustCompile(`rpc bulk.*applied=(\d+) failed=(\d+) gone=(\d+).*stopped="the caller disconnected after (\d+) of 40"`)

// TestBulkCallerDisconnects: a caller that goes away mid-way stops the
// call; what was done stays done, the rest stays as it was, and the log
// line says how far it got.
func TestBulkCallerDisconnects(t *testing.T) {
	d := daemontest.Start(t)
	var ids []uint64
	for range 40 {
		_, id := d.DialFrom(t, 0, "127.0.0.9")
		ids = append(ids, id)
	}
	l := rawConn(t, d.Socket)
	l.send(`{"jsonrpc":"2.0","id":1,"method":"tcpops.close","params":{"select":{"remote":"127.0.0.9"},"rate":20}}`)
	for {
		r := l.recv()
		var p rpc.Progress
		json.Unmarshal(r.Params, &p)
		if r.Method != rpc.NotifyProgress {
			t.Fatalf("answer before the caller left: %+v", r)
		}
		if p.Done >= 5 {
			break
		}
	}
	l.c.Close()
	var m []string
	testutil.WaitFor(t, "the bulk call's log line", func() bool {
		m = bulkLine.FindStringSubmatch(d.Logs())
		if m == nil && strings.Contains(d.Logs(), "rpc bulk") {
			t.Fatalf("log line not as expected:\n%s", d.Logs())
		}
		return m != nil
	})
	applied, _ := strconv.Atoi(m[1])
	if m[1] != m[4] || m[2] != "0" || m[3] != "0" || applied < 5 || applied >= 40 {
		t.Fatalf("log line %q: want applied = done, between 5 and 39", m[0])
	}
	open := 0
	for _, id := range ids {
		if _, ok := d.Table.Get(id); ok {
			open++
		}
	}
	if open != 40-applied {
		t.Fatalf("%d connections open after %d of 40 were closed", open, applied)
	}
	evs := daemontest.WaitEvents(t, d.Client(t), rpc.EventsParams{Reason: []string{"local"}}, applied)
	if len(evs) != applied {
		t.Fatalf("%d local close events, want %d", len(evs), applied)
	}
	for _, e := range evs {
		if i := slices.Index(ids, e.ConnID); i < 0 || i >= applied {
			t.Fatalf("closed conid %d is not among the first %d in conid order", e.ConnID, applied)
		}
	}
}

// TestOverrideRestores: a ttl brings back the previous keepalive (read
// back from the kernel, off included), lifetime and closed event; the
// connection lists its overrides meanwhile; each restore is logged.
func TestOverrideRestores(t *testing.T) {
	d := daemontest.Start(t, "--keepalive", "60,5,5")
	_, id := d.DialFrom(t, 0, "127.0.0.10")
	_, off := d.DialFrom(t, 0, "127.0.0.10")
	c := d.Client(t)
	ctx := t.Context()
	if _, err := c.Keepalive(ctx, rpc.KeepaliveParams{ConnID: &off, Enable: new(false)}); err != nil {
		t.Fatal(err)
	}
	before := keepalives(t, d, []uint64{id, off})
	start := time.Now()
	r, err := bulkCall(t, c, rpc.MethodKeepalive, map[string]any{"select": map[string]any{"remote": "127.0.0.10"}, "idle": 30, "count": 3, "interval": 10, "ttl": 1.5})
	if err != nil || len(r.Applied) != 2 {
		t.Fatalf("keepalive with ttl: %+v, %v", r, err)
	}
	var lr rpc.LifetimeResult
	if err := c.Call(ctx, rpc.MethodLifetime, map[string]any{"conid": id, "lifetime": 30, "ttl": 1.5}, &lr); err != nil || lr.Until == nil || lr.LifetimeS != 30 {
		t.Fatalf("lifetime with ttl: %+v, %v", lr, err)
	}
	var er rpc.ClosedEventResult
	if err := c.Call(ctx, rpc.MethodClosedEvent, map[string]any{"conid": id, "enable": false, "ttl": 1.5}, &er); err != nil || er.Until == nil || er.ClosedEvent {
		t.Fatalf("closed_event with ttl: %+v, %v", er, err)
	}
	info, err := c.Info(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if time.Since(start) < 1400*time.Millisecond {
		// Still within the ttl: the overrides show, the kernel has the new values.
		var whats []string
		for _, o := range info.Overrides {
			whats = append(whats, o.What)
			if o.Until.Before(start) || o.Until.After(start.Add(5*time.Second)) {
				t.Fatalf("override %+v: until not about 1.5 s from now", o)
			}
		}
		if !slices.Equal(whats, []string{"keepalive", "lifetime", "closed_event"}) || info.Keepalive.IdleS != 30 || info.LifetimeS != 30 || info.ClosedEvent {
			t.Fatalf("during the ttl: overrides %v, %+v", whats, info)
		}
	}
	testutil.WaitFor(t, "the previous settings back", func() bool {
		cn, ok := d.Table.Get(id)
		if !ok {
			t.Fatal("connection closed")
		}
		lt, _ := cn.Lifetime()
		return mapsEqual(keepalives(t, d, []uint64{id, off}), before) && lt == 120*time.Second && cn.ClosedEvent() && cn.Overrides() == nil
	})
	if el := time.Since(start); el < 1500*time.Millisecond {
		t.Fatalf("restored after %v, before the ttl of 1.5 s", el)
	}
	logs := d.Logs()
	for _, want := range []string{
		fmt.Sprintf(`conid=%d what=keepalive now="on 60/5/5"`, id),
		fmt.Sprintf(`conid=%d what=keepalive now="off (60/5/5)"`, off),
		fmt.Sprintf(`conid=%d what=lifetime now=2m0s`, id),
		fmt.Sprintf(`conid=%d what=closed_event now=true`, id),
	} {
		if !strings.Contains(logs, "override ended; previous setting restored") || !strings.Contains(logs, want) {
			t.Errorf("log lacks %q:\n%s", want, logs)
		}
	}
	if i, _ := c.Info(ctx, id); i.Overrides != nil {
		t.Fatalf("overrides left: %+v", i.Overrides)
	}
}

// TestBulkReadOnlyCaller: a caller that may only read gets -32003 for a
// bulk change, and nothing changes.
func TestBulkReadOnlyCaller(t *testing.T) {
	if sockPath := os.Getenv("TCPOPS_TEST_BULK_RO_SOCKET"); sockPath != "" {
		bulkReadOnlyChild(sockPath)
		return
	}
	if os.Geteuid() != 0 {
		t.Fatal("needs root: the caller runs under uid 65534")
	}
	d := daemontest.Start(t, "--socket-mode", "0666", "--keepalive", "60,5,5")
	dir := filepath.Dir(d.Socket)
	os.Chmod(dir, 0o755)
	bin := filepath.Join(dir, "control.test")
	if err := copyFile(os.Args[0], bin); err != nil {
		t.Fatal(err)
	}
	var ids []uint64
	for range 3 {
		_, id := d.DialFrom(t, 0, "127.0.0.11")
		ids = append(ids, id)
	}
	before := keepalives(t, d, ids)
	cmd := exec.Command(bin, "-test.run", "^TestBulkReadOnlyCaller$")
	cmd.Env = append(os.Environ(), "TCPOPS_TEST_BULK_RO_SOCKET="+d.Socket)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("child: %v\n%s", err, out)
	}
	for _, m := range []string{rpc.MethodKeepalive, rpc.MethodLifetime, rpc.MethodClosedEvent, rpc.MethodClose} {
		if !strings.Contains(string(out), fmt.Sprintf("RESULT %s %d\n", m, rpc.CodeDenied)) {
			t.Errorf("read-only bulk %s: want -32003; child said:\n%s", m, out)
		}
	}
	if after := keepalives(t, d, ids); !mapsEqual(before, after) {
		t.Fatalf("keepalive changed by a read-only caller: %v, was %v", after, before)
	}
	for _, id := range ids {
		cn, ok := d.Table.Get(id)
		if !ok {
			t.Fatalf("conid %d closed by a read-only caller", id)
		}
		if lt, _ := cn.Lifetime(); lt != 120*time.Second || !cn.ClosedEvent() {
			t.Fatalf("conid %d changed by a read-only caller", id)
		}
	}
	if !strings.Contains(d.Logs(), "rpc denied") || !strings.Contains(d.Logs(), "uid=65534") {
		t.Errorf("denied calls not logged with uid:\n%s", d.Logs())
	}
}

func bulkReadOnlyChild(path string) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := client.Dial(ctx, path)
	if err != nil {
		fmt.Println("dial:", err)
		os.Exit(1)
	}
	sel := map[string]any{"remote": "127.0.0.11"}
	for _, call := range []struct {
		m string
		p map[string]any
	}{
		{rpc.MethodKeepalive, map[string]any{"select": sel, "enable": false}},
		{rpc.MethodLifetime, map[string]any{"select": sel, "lifetime": 1, "ttl": 60}},
		{rpc.MethodClosedEvent, map[string]any{"select": sel, "enable": false}},
		{rpc.MethodClose, map[string]any{"select": map[string]any{"all": true}, "rate": 100}},
	} {
		_, err := c.Bulk(ctx, call.m, call.p)
		fmt.Printf("RESULT %s %d\n", call.m, code(err))
	}
	os.Exit(0)
}
