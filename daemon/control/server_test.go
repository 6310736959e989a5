package control_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/tcpops/tcpops/daemon"
	"github.com/tcpops/tcpops/daemon/control"
	"github.com/tcpops/tcpops/daemon/daemontest"
	"github.com/tcpops/tcpops/internal/testutil"
	"github.com/tcpops/tcpops/rpc"
	"github.com/tcpops/tcpops/rpc/client"
	"github.com/tcpops/tcpops/sock"
)

// line is a raw control connection, as socat gives a person.
type line struct {
	t *testing.T
	c net.Conn
	r *bufio.Reader
}

func rawConn(t *testing.T, path string) *line {
	t.Helper()
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &line{t: t, c: c, r: bufio.NewReaderSize(c, 1<<20)}
}

func (l *line) send(s string) {
	l.t.Helper()
	if _, err := io.WriteString(l.c, s+"\n"); err != nil {
		l.t.Fatal(err)
	}
}

type reply struct {
	ID     any             `json:"id"`
	Result json.RawMessage `json:"result"`
	Error  *struct {
		Code    int    `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
	Method string          `json:"method"`
	Params json.RawMessage `json:"params"`
}

func (l *line) recv() reply {
	l.t.Helper()
	l.c.SetReadDeadline(time.Now().Add(10 * time.Second))
	s, err := l.r.ReadString('\n')
	if err != nil {
		l.t.Fatalf("reading reply: %v", err)
	}
	var r reply
	if err := json.Unmarshal([]byte(s), &r); err != nil {
		l.t.Fatalf("reply %q: %v", s, err)
	}
	return r
}

func (l *line) call(s string) reply {
	l.t.Helper()
	l.send(s)
	return l.recv()
}

// code returns the JSON-RPC error code of err (0 if none).
func code(err error) int {
	var je *rpc.Error
	if errors.As(err, &je) {
		return int(je.Code)
	}
	return 0
}

func TestAliveAndState(t *testing.T) {
	d := daemontest.Start(t)
	c := d.Client(t)
	ctx := t.Context()
	tc, id := d.Dial(t, 0)
	st, err := c.State(ctx, id)
	if err != nil || st.State != 2 || st.StateName != "accepting" {
		t.Fatalf("state before any byte = %+v, %v; want 2 accepting", st, err)
	}
	tc.Write([]byte("x"))
	io.ReadFull(tc, make([]byte, 1))
	al, err := c.Alive(ctx, id)
	if err != nil || !al.Alive || al.Code != 1 {
		t.Fatalf("alive = %+v, %v", al, err)
	}
	st, _ = c.State(ctx, id)
	if st.State != 1 || st.StateName != "ok" {
		t.Fatalf("state = %+v, want 1 ok", st)
	}
	// Unknown conid: a result, not an error.
	al, err = c.Alive(ctx, 999)
	if err != nil || al.Alive || al.Code != -1 {
		t.Fatalf("alive(999) = %+v, %v; want false -1", al, err)
	}
	st, err = c.State(ctx, 999)
	if err != nil || st.State != -1 || st.StateName != "not_found" || st.Reason != "" {
		t.Fatalf("state(999) = %+v, %v", st, err)
	}
	// Recently closed: not_found with the reason.
	tc.SetLinger(0)
	tc.Close()
	// Until the close shows; the check below says what it saw.
	testutil.Until(func() bool {
		st, _ = c.State(ctx, id)
		return st.Reason != ""
	})
	if st.State != -1 || st.Reason != "reset" {
		t.Fatalf("state after RST = %+v, want -1 with reason reset", st)
	}
}

func TestKeepalive(t *testing.T) {
	d := daemontest.Start(t, "--keepalive", "60,5,5")
	c := d.Client(t)
	ctx := t.Context()
	_, id := d.Dial(t, 0)
	ip := func(v int) *int { return &v }
	r, err := c.Keepalive(ctx, rpc.KeepaliveParams{ConnID: &id, Enable: new(true), Idle: ip(11), Count: ip(3), Interval: ip(2), UserTimeoutMs: ip(7000)})
	if err != nil {
		t.Fatal(err)
	}
	want := rpc.Keepalive{Enabled: true, IdleS: 11, Count: 3, IntervalS: 2, UserTimeoutMs: 7000}
	if r.Keepalive != want {
		t.Fatalf("keepalive result = %+v, want %+v", r.Keepalive, want)
	}
	// Read it back from the kernel ourselves.
	cn, _ := d.Table.Get(id)
	got, err := sock.GetKeepalive(cn.TCP())
	if err != nil || got != (sock.Keepalive{Enabled: true, Idle: 11, Count: 3, Interval: 2, UserTimeoutMs: 7000}) {
		t.Fatalf("getsockopt = %+v, %v; want %+v", got, err, want)
	}
	r, err = c.Keepalive(ctx, rpc.KeepaliveParams{ConnID: &id, Enable: new(false)})
	if err != nil || r.Keepalive.Enabled {
		t.Fatalf("disable = %+v, %v", r, err)
	}
	if got, _ := sock.GetKeepalive(cn.TCP()); got.Enabled {
		t.Fatal("kernel still has SO_KEEPALIVE after disable")
	}

	raw := rawConn(t, d.Socket)
	tests := []struct {
		params string
		code   int
		msg    string
	}{
		{`{"conid":%d,"idle":10,"count":3}`, rpc.CodeInvalidParams, "missing param interval"},
		{`{"conid":%d,"idle":0,"count":3,"interval":1}`, rpc.CodeInvalidParams, "idle 0 out of range (want 1..32767)"},
		{`{"conid":%d,"idle":10,"count":128,"interval":1}`, rpc.CodeInvalidParams, "count 128 out of range (want 1..127)"},
		{`{"conid":%d,"idle":10,"count":3,"interval":32768}`, rpc.CodeInvalidParams, "interval 32768 out of range"},
		{`{"conid":%d,"idle":"10","count":3,"interval":1}`, rpc.CodeInvalidParams, "param idle of tcpops.keepalive: want an integer, got string"},
		{`{"conid":%d,"enable":false,"idle":10}`, rpc.CodeInvalidParams, "param idle of tcpops.keepalive: only with enable true"},
		{`{"conid":%d,"idle":1,"count":1,"interval":1,"user_timeout_ms":-5}`, rpc.CodeInvalidParams, "user_timeout_ms -5 out of range"},
		{`{"conid":%d,"idle":1,"count":1,"interval":1,"bogus":1}`, rpc.CodeInvalidParams, `unknown param "bogus"`},
		{`{"idle":1,"count":1,"interval":1}`, rpc.CodeInvalidParams, "missing param conid"},
	}
	for _, tt := range tests {
		p := tt.params
		if strings.Contains(p, "%d") {
			p = fmt.Sprintf(p, id)
		}
		rep := raw.call(`{"jsonrpc":"2.0","id":1,"method":"tcpops.keepalive","params":` + p + `}`)
		if rep.Error == nil || rep.Error.Code != tt.code || !strings.Contains(rep.Error.Message, tt.msg) {
			t.Errorf("params %s: got %+v, want code %d with %q", p, rep.Error, tt.code, tt.msg)
		}
	}
	rep := raw.call(`{"id":2,"method":"tcpops.keepalive","params":{"conid":424242,"idle":1,"count":1,"interval":1}}`)
	if rep.Error == nil || rep.Error.Code != rpc.CodeNotFound || !strings.Contains(rep.Error.Message, "conid 424242") {
		t.Errorf("unknown conid: got %+v, want -32001 naming the conid", rep.Error)
	}
}

func TestLifetimeAndClose(t *testing.T) {
	d := daemontest.Start(t, "--lifetime", "0")
	c := d.Client(t)
	ctx := t.Context()
	tc, id := d.Dial(t, 0)
	r, err := c.Lifetime(ctx, id, 300*time.Millisecond)
	if err != nil || r.LifetimeS != 0.3 || r.ExpiresInS <= 0 || r.ExpiresInS > 0.3 {
		t.Fatalf("lifetime = %+v, %v", r, err)
	}
	tc.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := tc.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("read after lifetime = %v, want EOF", err)
	}
	ev := daemontest.WaitEvents(t, c, rpc.EventsParams{ConnID: id}, 1)
	if ev[0].Reason != "lifetime" || ev[0].Event != "tcp:timeout" {
		t.Fatalf("events = %+v", ev)
	}
	_, err = c.Lifetime(ctx, id, time.Second)
	if code(err) != rpc.CodeNotFound {
		t.Fatalf("lifetime of closed conid: err = %v, want -32001", err)
	}
	_, id2 := d.Dial(t, 0)
	if err := c.Call(ctx, rpc.MethodLifetime, map[string]any{"conid": id2, "lifetime": -1}, nil); code(err) != rpc.CodeInvalidParams {
		t.Fatalf("negative lifetime: err = %v, want -32602", err)
	}
	if err := c.Call(ctx, rpc.MethodLifetime, map[string]any{"conid": id2}, nil); code(err) != rpc.CodeInvalidParams || !strings.Contains(err.Error(), "missing param lifetime") {
		t.Fatalf("missing lifetime: err = %v", err)
	}
	cr, err := c.CloseConn(ctx, id2, true)
	if err != nil || !cr.Closed {
		t.Fatalf("close = %+v, %v", cr, err)
	}
	if _, err := c.CloseConn(ctx, id2, false); code(err) != rpc.CodeNotFound {
		t.Fatalf("second close: err = %v, want -32001", err)
	}
	st, _ := c.State(ctx, id2)
	if st.Reason != "local" {
		t.Fatalf("state after API close = %+v, want reason local", st)
	}
}

func TestClosedEventManual(t *testing.T) {
	d := daemontest.Start(t, "--closed-event", "manual")
	c := d.Client(t)
	ctx := t.Context()
	a, ida := d.Dial(t, 0)
	b, idb := d.Dial(t, 0)
	r, err := c.ClosedEvent(ctx, idb, true)
	if err != nil || !r.ClosedEvent {
		t.Fatalf("closed_event = %+v, %v", r, err)
	}
	a.Close()
	b.Close()
	testutil.WaitFor(t, "both connections to close", func() bool { return d.Table.Stats().Closed == 2 })
	ev, _ := c.Events(ctx, rpc.EventsParams{})
	if len(ev.Events) != 1 || ev.Events[0].ConnID != idb {
		t.Fatalf("events = %+v, want only conid %d (not %d)", ev.Events, idb, ida)
	}
	st, _ := c.Stats(ctx)
	if st.Closed != 2 {
		t.Fatalf("closed counter = %d, want 2 whatever the mode", st.Closed)
	}
	off := daemontest.Start(t, "--closed-event", "off")
	_, id := off.Dial(t, 0)
	if _, err := off.Client(t).ClosedEvent(ctx, id, true); code(err) != rpc.CodeInvalidParams {
		t.Fatalf("closed_event in off mode: err = %v, want -32602", err)
	}
}

func TestListAndInfo(t *testing.T) {
	d := daemontest.Start(t)
	c := d.Client(t)
	ctx := t.Context()
	var ids []uint64
	for range 5 {
		_, id := d.Dial(t, 0)
		ids = append(ids, id)
	}
	tc, _ := d.Dial(t, 0)
	tc.Write([]byte("hi"))
	io.ReadFull(tc, make([]byte, 2))
	all, err := c.List(ctx, rpc.ListParams{})
	if err != nil || len(all.Connections) != 6 || all.Next != 0 {
		t.Fatalf("list = %d conns next %d, %v", len(all.Connections), all.Next, err)
	}
	p1, _ := c.List(ctx, rpc.ListParams{Limit: 4})
	p2, _ := c.List(ctx, rpc.ListParams{Limit: 4, After: p1.Next})
	if len(p1.Connections) != 4 || p1.Next != p1.Connections[3].ConnID || len(p2.Connections) != 2 || p2.Next != 0 {
		t.Fatalf("pages: %d next %d, %d next %d", len(p1.Connections), p1.Next, len(p2.Connections), p2.Next)
	}
	ok, _ := c.List(ctx, rpc.ListParams{State: "ok"})
	if len(ok.Connections) != 1 || ok.Connections[0].BytesIn != 2 {
		t.Fatalf("state=ok: %+v", ok.Connections)
	}
	k := all.Connections[0].Keepalive
	if k == nil || !k.Enabled {
		t.Fatalf("list keepalive = %+v", k)
	}
	// Set without reading back, read when list first asks: what the
	// kernel holds, for every connection.
	for _, lc := range all.Connections {
		cn, ok := d.Table.Get(lc.ConnID)
		if !ok {
			t.Fatalf("conid %d not in the table", lc.ConnID)
		}
		kk, err := sock.GetKeepalive(cn.TCP())
		want := rpc.Keepalive{Enabled: kk.Enabled, IdleS: kk.Idle, Count: kk.Count, IntervalS: kk.Interval, UserTimeoutMs: kk.UserTimeoutMs}
		if err != nil || lc.Keepalive == nil || *lc.Keepalive != want {
			t.Fatalf("conid %d: list keepalive %+v, the kernel %+v (%v)", lc.ConnID, lc.Keepalive, kk, err)
		}
	}
	raw := rawConn(t, d.Socket)
	for _, tt := range []struct{ params, msg string }{
		{`{"state":"sleeping"}`, `unknown state "sleeping"`},
		{`{"remote":"nohost"}`, `remote "nohost"`},
		{`{"proto":"udp"}`, `proto "udp"`},
		{`{"limit":-1}`, "limit -1"},
		{`{"limit":"ten"}`, "param limit of tcpops.list: want an integer"},
	} {
		rep := raw.call(`{"id":1,"method":"tcpops.list","params":` + tt.params + `}`)
		if rep.Error == nil || rep.Error.Code != rpc.CodeInvalidParams || !strings.Contains(rep.Error.Message, tt.msg) {
			t.Errorf("list %s: got %+v, want -32602 with %q", tt.params, rep.Error, tt.msg)
		}
	}
	in, err := c.Info(ctx, ids[0])
	if err != nil || in.TCPInfo == nil || in.TCPInfo.StateName != "ESTABLISHED" || in.Keepalive == nil {
		t.Fatalf("info = %+v, %v", in, err)
	}
	if _, err := c.Info(ctx, 777); code(err) != rpc.CodeNotFound {
		t.Fatalf("info(777) err = %v, want -32001", err)
	}
}

func TestEventsFollow(t *testing.T) {
	d := daemontest.Start(t)
	c := d.Client(t)
	ctx := t.Context()
	var conns []*net.TCPConn
	for range 4 {
		tc, _ := d.Dial(t, 0)
		conns = append(conns, tc)
	}
	conns[0].Close() // seq 1, before following
	testutil.WaitFor(t, "event seq 1", func() bool { return d.Table.Events().LastSeq() == 1 })
	got := make(chan rpc.Event, 10)
	fctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		done <- c.Follow(fctx, ctx, rpc.EventsParams{Reason: []string{"eof", "reset"}},
			func(e rpc.Event) error { got <- e; return nil },
			func(l rpc.EventsLost) error { return fmt.Errorf("lost %+v", l) })
	}()
	e := recvEvent(t, got)
	if e.Seq != 1 || e.Reason != "eof" {
		t.Fatalf("replayed = %+v", e)
	}
	conns[1].SetLinger(0)
	conns[1].Close()
	e = recvEvent(t, got)
	if e.Seq != 2 || e.Reason != "reset" || e.Event != "tcp:reset" {
		t.Fatalf("followed = %+v", e)
	}
	// A reason outside the filter is not sent.
	_, id3 := d.Dial(t, 0)
	if _, err := d.Client(t).CloseConn(ctx, id3, false); err != nil {
		t.Fatal(err)
	}
	conns[2].Close()
	e = recvEvent(t, got)
	if e.Reason != "eof" || e.Seq != 4 {
		t.Fatalf("after a filtered event got %+v, want seq 4 eof", e)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	raw := rawConn(t, d.Socket)
	rep := raw.call(`{"id":1,"method":"tcpops.events","params":{"reason":["nope"]}}`)
	if rep.Error == nil || rep.Error.Code != rpc.CodeInvalidParams {
		t.Fatalf("bad reason: %+v", rep.Error)
	}
	rep = raw.call(`{"id":1,"method":"tcpops.events","params":{"since":2}}`)
	var er rpc.EventsResult
	json.Unmarshal(rep.Result, &er)
	if len(er.Events) != 2 || er.Events[0].Seq != 3 || er.NextSeq != 5 {
		t.Fatalf("since 2: %+v", er)
	}
}

// recvEvent returns the next event a follower got.
func recvEvent(t *testing.T, got <-chan rpc.Event) rpc.Event {
	t.Helper()
	select {
	case e := <-got:
		return e
	case <-time.After(testutil.Timeout):
		t.Fatalf("no event within %v", testutil.Timeout)
		return rpc.Event{}
	}
}

func TestFollowerThatNeverReads(t *testing.T) {
	d := daemontest.StartWith(t, func(c *daemon.Config) { c.RPCWriteTimeout = 300 * time.Millisecond })
	raw := rawConn(t, d.Socket)
	// Its answer says the follower is subscribed ...
	if rep := raw.call(`{"id":1,"method":"tcpops.events","params":{"follow":true}}`); rep.Error != nil {
		t.Fatalf("follow: %+v", rep.Error)
	}
	// ... and it never reads again. Close many connections: the stuck
	// follower must be cut off while others are served.
	c := d.Client(t)
	ctx := t.Context()
	const n = 3000
	for i := 0; i < n; i += 500 {
		var cs []net.Conn
		for range 500 {
			tc, err := net.Dial("tcp", d.Addr(0))
			if err != nil {
				t.Fatal(err)
			}
			cs = append(cs, tc)
		}
		for _, tc := range cs {
			tc.Close()
		}
	}
	if !testutil.Until(func() bool { return d.Table.Events().LastSeq() == n }) {
		t.Fatalf("event seq = %d, want %d: events were lost or the close path stalled", d.Table.Events().LastSeq(), n)
	}
	start := time.Now()
	if _, err := c.Stats(ctx); err != nil {
		t.Fatal(err)
	}
	t.Logf("stats answered in %v while a follower is stuck", time.Since(start))
	var st rpc.Stats
	if !testutil.Until(func() bool {
		var err error
		if st, err = c.Stats(ctx); err != nil {
			t.Fatal(err)
		}
		return st.RPC.WriteTimeouts == 1
	}) {
		t.Fatalf("stuck follower not cut off: stats %+v", st.RPC)
	}
	// The stuck follower's connection is closed by the write deadline:
	// draining it ends in EOF (or reset), not in a hang.
	raw.c.SetReadDeadline(time.Now().Add(20 * time.Second))
	_, err := io.Copy(io.Discard, raw.c)
	if err != nil && !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("stuck follower's connection: %v, want closed by the daemon", err)
	}
}

func TestLaggingFollowerGetsLost(t *testing.T) {
	d := daemontest.Start(t, "--event-buffer", "8")
	c := d.Client(t)
	ctx := t.Context()
	// One event before following: the follower gets it first, in the
	// answer to its call, which shows that it is subscribed.
	tc, err := net.Dial("tcp", d.Addr(0))
	if err != nil {
		t.Fatal(err)
	}
	tc.Close()
	testutil.WaitFor(t, "event seq 1", func() bool { return d.Table.Events().LastSeq() == 1 })
	// Subscribe, then stall the client's own reading by blocking onEvent
	// on that first event until 2000 events exist: the ring (8) overflows
	// for this follower only.
	subscribed := make(chan struct{})
	release := make(chan struct{})
	unblock := sync.OnceFunc(func() { close(release) })
	defer unblock()
	var got []uint64
	var lost []rpc.EventsLost
	var mu sync.Mutex
	fctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	var first sync.Once
	go func() {
		done <- c.Follow(fctx, ctx, rpc.EventsParams{}, func(e rpc.Event) error {
			first.Do(func() { close(subscribed); <-release })
			mu.Lock()
			got = append(got, e.Seq)
			mu.Unlock()
			return nil
		}, func(l rpc.EventsLost) error {
			mu.Lock()
			lost = append(lost, l)
			mu.Unlock()
			return nil
		})
	}()
	select {
	case <-subscribed:
	case err := <-done:
		t.Fatalf("follow ended before its first event: %v", err)
	case <-time.After(testutil.Timeout):
		t.Fatalf("follower not subscribed within %v", testutil.Timeout)
	}
	for range 1999 {
		tc, err := net.Dial("tcp", d.Addr(0))
		if err != nil {
			t.Fatal(err)
		}
		tc.Close()
	}
	reached := testutil.Until(func() bool { return d.Table.Events().LastSeq() == 2000 })
	unblock()
	if !reached {
		t.Fatalf("event seq = %d, want 2000", d.Table.Events().LastSeq())
	}
	// The accounting below says what is missing if the last never comes.
	testutil.Until(func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(got) > 0 && got[len(got)-1] == 2000
	})
	cancel()
	<-done
	mu.Lock()
	defer mu.Unlock()
	// Every seq 1..2000 is either delivered or inside a lost range, in order.
	next := uint64(1)
	li := 0
	for _, s := range got {
		for li < len(lost) && lost[li].FromSeq == next {
			next = lost[li].ToSeq + 1
			li++
		}
		if s != next {
			t.Fatalf("seq %d delivered where %d was expected (lost %+v)", s, next, lost)
		}
		next++
	}
	if next != 2001 {
		t.Fatalf("accounted up to %d, want 2000 (got %d events, lost %+v)", next-1, len(got), lost)
	}
	if len(lost) == 0 {
		t.Fatal("a follower stalled past a ring of 8 was never told of lost events")
	}
}

func TestProtocolErrors(t *testing.T) {
	d := daemontest.Start(t)
	raw := rawConn(t, d.Socket)
	tests := []struct {
		name, line string
		code       int
		msg        string
	}{
		{"garbage", `hello`, rpc.CodeParseError, "parse error"},
		{"truncated", `{"id":1,"method":`, rpc.CodeParseError, "parse error"},
		{"batch", `[{"id":1,"method":"tcpops.stats"}]`, rpc.CodeInvalidRequest, "batch"},
		{"not an object", `42`, rpc.CodeInvalidRequest, "JSON object"},
		{"method not a string", `{"id":1,"method":5}`, rpc.CodeInvalidRequest, "method must be a string"},
		{"no method", `{"id":1}`, rpc.CodeInvalidRequest, "method is missing"},
		{"object id", `{"id":{},"method":"tcpops.stats"}`, rpc.CodeInvalidRequest, "id must be"},
		{"negative id", `{"id":-1,"method":"tcpops.stats"}`, rpc.CodeInvalidRequest, "id must be"},
		{"wrong version", `{"jsonrpc":"1.0","id":1,"method":"tcpops.stats"}`, rpc.CodeInvalidRequest, `jsonrpc must be "2.0"`},
		{"positional params", `{"id":1,"method":"tcpops.state","params":[1]}`, rpc.CodeInvalidParams, "named params"},
		{"unknown method", `{"id":1,"method":"tcpops.nope"}`, rpc.CodeMethodNotFound, `unknown method "tcpops.nope"`},
		{"stats takes nothing", `{"id":1,"method":"tcpops.stats","params":{"x":1}}`, rpc.CodeInvalidParams, `unknown param "x"`},
		{"conid zero", `{"id":1,"method":"tcpops.state","params":{"conid":0}}`, rpc.CodeInvalidParams, "conids start at 1"},
		{"conid negative", `{"id":1,"method":"tcpops.state","params":{"conid":-3}}`, rpc.CodeInvalidParams, "non-negative integer"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rep := raw.call(tt.line)
			if rep.Error == nil || rep.Error.Code != tt.code || !strings.Contains(rep.Error.Message, tt.msg) {
				t.Fatalf("got %+v, want %d with %q", rep.Error, tt.code, tt.msg)
			}
			// The connection stays usable.
			rep = raw.call(`{"id":"after","method":"core.version"}`)
			if rep.Error != nil || rep.ID != "after" {
				t.Fatalf("next request after %s: %+v", tt.name, rep)
			}
		})
	}
	// Requests on one connection are answered in order.
	for i := range 50 {
		raw.send(fmt.Sprintf(`{"id":%d,"method":"tcpops.state","params":{"conid":%d}}`, i, i+1))
	}
	for i := range 50 {
		if rep := raw.recv(); rep.ID != float64(i) {
			t.Fatalf("reply %d has id %v: out of order", i, rep.ID)
		}
	}
	// A notification (no id) gets no reply.
	raw.send(`{"method":"tcpops.stats"}`)
	if rep := raw.call(`{"id":"x","method":"core.version"}`); rep.ID != "x" {
		t.Fatalf("a notification was answered: %+v", rep)
	}
}

func TestOversizeLine(t *testing.T) {
	d := daemontest.Start(t)
	raw := rawConn(t, d.Socket)
	var before runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	chunk := strings.Repeat("a", 1<<20)
	go func() {
		io.WriteString(raw.c, `{"id":1,"method":"tcpops.stats","params":{"x":"`)
		for range 32 {
			if _, err := io.WriteString(raw.c, chunk); err != nil {
				return
			}
		}
	}()
	rep := raw.recv()
	if rep.Error == nil || rep.Error.Code != rpc.CodeInvalidRequest || !strings.Contains(rep.Error.Message, "over 1048576 bytes") {
		t.Fatalf("oversize line: %+v", rep.Error)
	}
	raw.c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := raw.r.ReadString('\n'); err == nil {
		t.Fatal("connection still open after an oversize line")
	}
	var after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&after)
	if grown := int64(after.HeapInuse) - int64(before.HeapInuse); grown > 8<<20 {
		t.Fatalf("heap grew by %d bytes for a 32 MiB line", grown)
	}
	// Others are served.
	if _, err := d.Client(t).Stats(t.Context()); err != nil {
		t.Fatal(err)
	}
}

func TestConcurrentClients(t *testing.T) {
	d := daemontest.Start(t)
	_, id := d.Dial(t, 0)
	d.Clients(t, 64, func(ctx context.Context, c *client.Client) error {
		for range 50 {
			if st, err := c.State(ctx, id); err != nil || st.State != 2 {
				return fmt.Errorf("state = %+v, %v", st, err)
			}
		}
		return nil
	})
}

func TestSystemMethods(t *testing.T) {
	d := daemontest.Start(t)
	c := d.Client(t)
	ctx := t.Context()
	ms, err := c.Methods(ctx)
	if err != nil || len(ms) != len(control.MethodNames()) || ms[0] != "core.version" {
		t.Fatalf("methods = %v, %v", ms, err)
	}
	var help string
	if err := c.Call(ctx, rpc.MethodHelp, map[string]any{"method": "tcpops.keepalive"}, &help); err != nil || !strings.Contains(help, "idle, count, interval") {
		t.Fatalf("help = %q, %v", help, err)
	}
	if err := c.Call(ctx, rpc.MethodHelp, map[string]any{"method": "x"}, &help); code(err) != rpc.CodeInvalidParams {
		t.Fatalf("help of unknown: %v", err)
	}
	v, err := c.Version(ctx)
	if err != nil || v.Go != runtime.Version() || v.Version == "" {
		t.Fatalf("version = %+v, %v", v, err)
	}
	st, err := c.Stats(ctx)
	if err != nil || st.Limits.EventBuffer != 65536 || st.Limits.LifetimeS != 120 || st.Limits.ClosedEvent != "all" {
		t.Fatalf("stats = %+v, %v", st, err)
	}
}

func TestSocketFile(t *testing.T) {
	d := daemontest.Start(t, "--socket-mode", "0640")
	fi, err := os.Stat(d.Socket)
	if err != nil || fi.Mode().Perm() != 0o640 || fi.Mode().Type() != os.ModeSocket {
		t.Fatalf("socket file: %v %v", fi.Mode(), err)
	}
	// A live daemon's socket is never taken over.
	cfg, _ := daemon.ParseArgs([]string{"--socket", d.Socket, "--listen", "tcp://127.0.0.1:0"})
	if _, err := daemon.Start(t.Context(), cfg, d.Daemon.Log()); !errors.Is(err, sock.ErrInUse) {
		t.Fatalf("second daemon on a live socket: err = %v, want ErrInUse", err)
	}
	d.Stop()
	if _, err := os.Stat(d.Socket); !os.IsNotExist(err) {
		t.Fatalf("socket left behind after shutdown: %v", err)
	}
	// A stale socket (nobody listening) is replaced.
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: d.Socket, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	ln.SetUnlinkOnClose(false)
	ln.Close()
	d2 := daemontest.Start(t, "--socket", d.Socket)
	if _, err := d2.Client(t).Stats(t.Context()); err != nil {
		t.Fatalf("daemon on a replaced stale socket: %v", err)
	}
	// A path that is not a socket is left alone.
	f := d.Socket + "x"
	os.WriteFile(f, []byte("keep"), 0o600)
	cfg, _ = daemon.ParseArgs([]string{"--socket", f, "--listen", "tcp://127.0.0.1:0"})
	if _, err := daemon.Start(t.Context(), cfg, d.Daemon.Log()); err == nil || !strings.Contains(err.Error(), "not a socket") {
		t.Fatalf("regular file at socket path: err = %v", err)
	}
}

// TestReadOnlyCaller runs a client under another uid: it may read but not
// change anything.
func TestReadOnlyCaller(t *testing.T) {
	if sockPath := os.Getenv("TCPOPS_TEST_RO_SOCKET"); sockPath != "" {
		readOnlyChild(sockPath)
		return
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root to run a client under another uid")
	}
	d := daemontest.Start(t, "--socket-mode", "0666")
	dir := filepath.Dir(d.Socket)
	os.Chmod(dir, 0o755)
	// The test binary's own directory is private: copy it where uid 65534
	// can run it.
	bin := filepath.Join(dir, "rpc.test")
	if err := copyFile(os.Args[0], bin); err != nil {
		t.Fatal(err)
	}
	_, id := d.Dial(t, 0)
	cmd := exec.Command(bin, "-test.run", "^TestReadOnlyCaller$")
	cmd.Env = append(os.Environ(), "TCPOPS_TEST_RO_SOCKET="+d.Socket, fmt.Sprintf("TCPOPS_TEST_RO_CONID=%d", id))
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("child: %v\n%s", err, out)
	}
	results := map[string]int{}
	for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		var method string
		var c int
		if n, _ := fmt.Sscanf(l, "RESULT %s %d", &method, &c); n == 2 {
			results[method] = c
		}
	}
	for _, m := range []string{rpc.MethodAlive, rpc.MethodState, rpc.MethodList, rpc.MethodInfo, rpc.MethodEvents, rpc.MethodStats, rpc.MethodVersion, rpc.MethodListMethods} {
		if c, ok := results[m]; !ok || c != 0 {
			t.Errorf("read-only caller: %s gave code %d (present %v), want allowed", m, c, ok)
		}
	}
	for _, m := range []string{rpc.MethodKeepalive, rpc.MethodLifetime, rpc.MethodClosedEvent, rpc.MethodClose} {
		if c := results[m]; c != rpc.CodeDenied {
			t.Errorf("read-only caller: %s gave code %d, want -32003", m, c)
		}
	}
	if _, ok := d.Table.Get(id); !ok {
		t.Fatal("a read-only caller closed a connection")
	}
	if !strings.Contains(d.Logs(), "rpc denied") || !strings.Contains(d.Logs(), "uid=65534") {
		t.Errorf("denied calls not logged with uid:\n%s", d.Logs())
	}
}

func copyFile(from, to string) error {
	b, err := os.ReadFile(from)
	if err != nil {
		return err
	}
	return os.WriteFile(to, b, 0o755)
}

func readOnlyChild(path string) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := client.Dial(ctx, path)
	if err != nil {
		fmt.Println("dial:", err)
		os.Exit(1)
	}
	var id uint64
	fmt.Sscan(os.Getenv("TCPOPS_TEST_RO_CONID"), &id)
	calls := map[string]map[string]any{
		rpc.MethodAlive: {"conid": id}, rpc.MethodState: {"conid": id}, rpc.MethodList: nil,
		rpc.MethodInfo: {"conid": id}, rpc.MethodEvents: nil, rpc.MethodStats: nil, rpc.MethodVersion: nil,
		rpc.MethodListMethods: nil, rpc.MethodKeepalive: {"conid": id, "enable": false},
		rpc.MethodLifetime: {"conid": id, "lifetime": 1}, rpc.MethodClosedEvent: {"conid": id}, rpc.MethodClose: {"conid": id},
	}
	for m, p := range calls {
		var params any = p
		if p == nil {
			params = nil
		}
		err := c.Call(ctx, m, params, nil)
		fmt.Printf("RESULT %s %d\n", m, code(err))
	}
	os.Exit(0)
}
