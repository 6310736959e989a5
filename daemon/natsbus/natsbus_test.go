package natsbus_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tcpops/tcpops/daemon/daemontest"
	"github.com/tcpops/tcpops/fleet"
	"github.com/tcpops/tcpops/internal/natstest"
	"github.com/tcpops/tcpops/internal/testutil"
	"github.com/tcpops/tcpops/rpc"
)

func connect(t *testing.T, url string) *fleet.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	c, err := fleet.Connect(ctx, fleet.Options{URL: url, Name: "test"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

// stored reads the host's records in the events stream, in order.
func stored(t *testing.T, c *fleet.Conn, host string) []*fleet.StreamRecord {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	var out []*fleet.StreamRecord
	err := c.Events(ctx, fleet.EventsOptions{Hosts: []string{host}}, func(r *fleet.StreamRecord) error {
		out = append(out, r)
		return nil
	})
	if err != nil && !strings.Contains(err.Error(), "no stream") {
		t.Fatal(err)
	}
	return out
}

// natsStats reads the daemon's NATS state from tcpops.stats.
func natsStats(t *testing.T, d *daemontest.D) rpc.NATSStats {
	t.Helper()
	s, err := d.Client(t).Stats(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if s.NATS == nil {
		t.Fatal("tcpops.stats has no nats")
	}
	return *s.NATS
}

// closeN opens n connections to the daemon and closes them by FIN, one
// after the other.
func closeN(t *testing.T, d *daemontest.D, n int) {
	t.Helper()
	for range n {
		c, _ := d.Dial(t, 0)
		c.Close()
	}
}

// checkOnceInOrder fails unless recs are this boot's seqs 1..n, each once,
// in order.
func checkOnceInOrder(t *testing.T, recs []*fleet.StreamRecord, n int) {
	t.Helper()
	if len(recs) != n {
		t.Fatalf("%d records stored, want %d", len(recs), n)
	}
	for i, r := range recs {
		if r.Seq != uint64(i+1) || r.Lost() {
			t.Fatalf("record %d is seq %d (%s), want seq %d", i, r.Seq, r.Event.Event, i+1)
		}
		if r.Boot != recs[0].Boot {
			t.Fatalf("record %d has boot %s, want %s", i, r.Boot, recs[0].Boot)
		}
	}
}

func TestEventsStoredInOrder(t *testing.T) {
	ns := natstest.Start(t, nil)
	d := daemontest.Start(t, "--nats", ns.URL(), "--host-name", "web1")
	c := connect(t, ns.URL())
	closeN(t, d, 50)
	testutil.WaitFor(t, "50 events stored", func() bool { return natsStats(t, d).PublishedSeq == 50 })
	recs := stored(t, c, "web1")
	checkOnceInOrder(t, recs, 50)
	r := recs[0]
	if r.Host != "web1" || r.Event.Event != "tcp:closed" || r.Reason != "eof" || r.ConnID == 0 || r.Proto != "tcp" {
		t.Errorf("first record %+v: want host web1, tcp:closed, eof, a conid, tcp", r.Record)
	}
	// The message carries its dedup id and seq.
	js, _ := jetstream.New(c.NATS())
	s, err := js.Stream(t.Context(), fleet.EventsStream)
	if err != nil {
		t.Fatal(err)
	}
	m, err := s.GetMsg(t.Context(), recs[49].StreamSeq)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := m.Header.Get("Nats-Msg-Id"), "web1:"+r.Boot+":50"; got != want {
		t.Errorf("Nats-Msg-Id %q, want %q", got, want)
	}
	if st := natsStats(t, d); !st.Connected || st.Published != 50 || st.Pending != 0 || st.Host != "web1" {
		t.Errorf("stats %+v: want connected, 50 published, none pending, host web1", st)
	}
	// The stream was created with the flags' limits.
	info, err := s.Info(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if info.Config.MaxAge != 7*24*time.Hour || info.Config.MaxBytes != 1<<30 || info.Config.Subjects[0] != "tcpops.events.>" {
		t.Errorf("stream config %+v", info.Config)
	}
}

// TestServerRestart stops NATS while connections close: the events wait
// in the ring, and once NATS is back each is stored once, in order.
func TestServerRestart(t *testing.T) {
	ns := natstest.Start(t, nil)
	d := daemontest.Start(t, "--nats", ns.URL(), "--host-name", "web1")
	closeN(t, d, 20)
	testutil.WaitFor(t, "20 events stored", func() bool { return natsStats(t, d).PublishedSeq == 20 })
	ns.Stop()
	testutil.WaitFor(t, "the daemon to see NATS gone", func() bool { return !natsStats(t, d).Connected })
	closeN(t, d, 30)
	testutil.WaitFor(t, "30 events pending while NATS is away", func() bool { return natsStats(t, d).Pending == 30 })
	ns.Restart()
	testutil.WaitFor(t, "50 events stored", func() bool { return natsStats(t, d).PublishedSeq == 50 })
	checkOnceInOrder(t, stored(t, connect(t, ns.URL()), "web1"), 50)
	if st := natsStats(t, d); st.Reconnects == 0 || st.LastError != "" {
		t.Errorf("stats %+v: want a reconnect and no error left", st)
	}
}

// TestStreamDeleted: a stream deleted under a connected daemon is made
// again, and the events go on to it.
func TestStreamDeleted(t *testing.T) {
	ns := natstest.Start(t, nil)
	d := daemontest.Start(t, "--nats", ns.URL(), "--host-name", "web1")
	closeN(t, d, 3)
	testutil.WaitFor(t, "3 events stored", func() bool { return natsStats(t, d).PublishedSeq == 3 })
	c := connect(t, ns.URL())
	js, _ := jetstream.New(c.NATS())
	if err := js.DeleteStream(t.Context(), fleet.EventsStream); err != nil {
		t.Fatal(err)
	}
	closeN(t, d, 2)
	testutil.WaitFor(t, "5 events stored", func() bool { return natsStats(t, d).PublishedSeq == 5 })
	var seqs []uint64
	for _, r := range stored(t, c, "web1") {
		seqs = append(seqs, r.Seq)
	}
	if fmt.Sprint(seqs) != "[4 5]" {
		t.Errorf("stored after the stream was deleted: %v, want [4 5]", seqs)
	}
}

// TestNATSAwayAtStart: a daemon starts without NATS, and stores its
// events once NATS comes.
func TestNATSAwayAtStart(t *testing.T) {
	ns := natstest.Start(t, nil)
	url := ns.URL()
	ns.Stop()
	d := daemontest.Start(t, "--nats", url, "--host-name", "web1")
	closeN(t, d, 2)
	testutil.WaitFor(t, "2 events waiting", func() bool { return natsStats(t, d).Pending == 2 })
	if !strings.Contains(d.Logs(), "nats not reachable yet") {
		t.Errorf("no word of NATS being away at start:\n%s", d.Logs())
	}
	ns.Restart()
	testutil.WaitFor(t, "2 events stored", func() bool { return natsStats(t, d).PublishedSeq == 2 })
	checkOnceInOrder(t, stored(t, connect(t, url), "web1"), 2)
}

// TestRingOverwrites: events the ring overwrote while NATS was away are
// stored as one tcpops.events_lost record with their range, in place.
func TestRingOverwrites(t *testing.T) {
	ns := natstest.Start(t, nil)
	d := daemontest.Start(t, "--nats", ns.URL(), "--host-name", "web1", "--event-buffer", "4")
	closeN(t, d, 2)
	testutil.WaitFor(t, "2 events stored", func() bool { return natsStats(t, d).PublishedSeq == 2 })
	ns.Stop()
	testutil.WaitFor(t, "the daemon to see NATS gone", func() bool { return !natsStats(t, d).Connected })
	closeN(t, d, 10) // seqs 3..12; the ring keeps 9..12
	ns.Restart()
	testutil.WaitFor(t, "12 events stored", func() bool { return natsStats(t, d).PublishedSeq == 12 })
	recs := stored(t, connect(t, ns.URL()), "web1")
	var got []string
	for _, r := range recs {
		if r.Lost() {
			got = append(got, fmt.Sprintf("lost %d-%d", r.FromSeq, r.ToSeq))
		} else {
			got = append(got, fmt.Sprint(r.Seq))
		}
	}
	// The publisher may hold events 3.. when NATS goes away; the ring
	// overwrote what it held beyond them.
	s := strings.Join(got, " ")
	if !strings.HasPrefix(s, "1 2 ") || !strings.HasSuffix(s, " 9 10 11 12") || !strings.Contains(s, "lost ") {
		t.Fatalf("stored %s: want 1 2, a lost range, then 9..12", s)
	}
	next := uint64(1)
	for _, r := range recs {
		from := r.Seq
		if r.Lost() {
			from = r.FromSeq
		}
		if from != next {
			t.Fatalf("stored %s: seq %d missing", s, next)
		}
		next = max(r.Seq, r.ToSeq) + 1
	}
	if st := natsStats(t, d); st.Lost == 0 || st.Lost+st.Published != 12 {
		t.Errorf("stats %+v: want lost + published = 12", st)
	}
}

// TestShutdownEventsStored: the events of the connections the shutdown
// closes reach JetStream before the daemon stops.
func TestShutdownEventsStored(t *testing.T) {
	ns := natstest.Start(t, nil)
	d := daemontest.Start(t, "--nats", ns.URL(), "--host-name", "web1")
	for range 5 {
		d.Dial(t, 0)
	}
	d.Stop()
	recs := stored(t, connect(t, ns.URL()), "web1")
	checkOnceInOrder(t, recs, 5)
	for _, r := range recs {
		if r.Reason != "shutdown" {
			t.Errorf("seq %d reason %q, want shutdown", r.Seq, r.Reason)
		}
	}
	// And the host left the registry (or had not got to it yet).
	names, err := connect(t, ns.URL()).Registered(t.Context())
	if err != nil && !strings.Contains(err.Error(), "stream not found") || len(names) != 0 {
		t.Errorf("registered after shutdown: %v, %v; want none", names, err)
	}
}

func call(t *testing.T, c *fleet.Conn, host, method string, params any) (json.RawMessage, error) {
	t.Helper()
	p, _ := json.Marshal(params)
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	return c.Call(ctx, host, method, p)
}

func TestMethodsOverNATS(t *testing.T) {
	ns := natstest.Start(t, nil)
	d := daemontest.Start(t, "--nats", ns.URL(), "--host-name", "web1")
	_, id := d.Dial(t, 0)
	c := connect(t, ns.URL())

	raw, err := call(t, c, "web1", rpc.MethodState, map[string]any{"conid": id})
	if err != nil {
		t.Fatal(err)
	}
	var st rpc.StateResult
	json.Unmarshal(raw, &st)
	if st.ConnID != id || st.StateName != "accepting" {
		t.Errorf("state %s, want conid %d accepting", raw, id)
	}
	// A changing method is sent on to the admin subject, and audited.
	raw, err = call(t, c, "web1", rpc.MethodClose, map[string]any{"conid": id})
	if err != nil || !strings.Contains(string(raw), `"closed":true`) {
		t.Fatalf("close: %s, %v", raw, err)
	}
	if !strings.Contains(d.Logs(), "msg=rpc via=nats") || !strings.Contains(d.Logs(), "subject=tcpops.admin.web1 method=tcpops.close") {
		t.Errorf("no audit line for the close over NATS:\n%s", d.Logs())
	}
	// The daemon's errors come back as they are.
	_, err = call(t, c, "web1", rpc.MethodClose, map[string]any{"conid": 999})
	var je *rpc.Error
	if !errors.As(err, &je) || je.Code != rpc.CodeNotFound {
		t.Errorf("close 999: %v, want -32001", err)
	}
	_, err = call(t, c, "web1", "tcpops.nope", nil)
	if !errors.As(err, &je) || je.Code != rpc.CodeMethodNotFound {
		t.Errorf("tcpops.nope: %v, want -32601", err)
	}
	_, err = call(t, c, "web1", rpc.MethodEvents, map[string]any{"follow": true})
	if !errors.As(err, &je) || je.Code != rpc.CodeInvalidParams || !strings.Contains(je.Message, "JetStream") {
		t.Errorf("events follow: %v, want -32602 naming JetStream", err)
	}
	// Params reach the method as they were sent, whatever they are: the
	// daemon itself names the one it does not take.
	_, err = call(t, c, "web1", rpc.MethodClose, map[string]any{"probe_param": map[string]any{"remote": "203.0.113.0/24"}})
	if !errors.As(err, &je) || je.Code != rpc.CodeInvalidParams || !strings.Contains(je.Message, `unknown param "probe_param"`) {
		t.Errorf("close with probe_param: %v, want the daemon's own answer naming it", err)
	}
	// A host that is not there is told at once.
	start := time.Now()
	_, err = call(t, c, "nohost", rpc.MethodStats, nil)
	var na *fleet.NoAnswerError
	if !errors.As(err, &na) || time.Since(start) > 2*time.Second {
		t.Errorf("nohost: %v after %s, want a NoAnswerError at once", err, time.Since(start))
	}
	// Raw requests as `nats req` sends them.
	m, err := c.NATS().Request(fleet.RPCSubject("web1"), []byte(`{"method":"tcpops.stats"}`), 5*time.Second)
	if err != nil || !strings.Contains(string(m.Data), `"jsonrpc":"2.0","id":null,"result":{"connections"`) {
		t.Errorf("raw request: %s, %v", m.Data, err)
	}
	m, err = c.NATS().Request(fleet.AdminSubject("web1"), []byte(`not json`), 5*time.Second)
	if err != nil || !strings.Contains(string(m.Data), `"code":-32700`) {
		t.Errorf("raw garbage: %s, %v", m.Data, err)
	}
	// The micro service describes itself as nats micro info shows it.
	m, err = c.NATS().Request("$SRV.INFO.tcpops", nil, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	var info struct {
		Name      string            `json:"name"`
		Metadata  map[string]string `json:"metadata"`
		Endpoints []struct {
			Name    string `json:"name"`
			Subject string `json:"subject"`
		} `json:"endpoints"`
	}
	json.Unmarshal(m.Data, &info)
	if got := fmt.Sprintf("%s %s %+v", info.Name, info.Metadata["host"], info.Endpoints); got != "tcpops web1 [{Name:rpc Subject:tcpops.rpc.web1} {Name:admin Subject:tcpops.admin.web1}]" {
		t.Errorf("$SRV.INFO.tcpops: %s", got)
	}
	if st := natsStats(t, d); st.Requests < 6 {
		t.Errorf("%d requests counted, want 6 or more", st.Requests)
	}
}

// TestLargeReplyCut: a reply over the server's max_payload, even
// compressed, arrives whole in several messages.
func TestLargeReplyCut(t *testing.T) {
	ns := natstest.Start(t, func(o *server.Options) { o.MaxPayload = 8 << 10 })
	d := daemontest.Start(t, "--nats", ns.URL(), "--host-name", "web1")
	var conns []net.Conn
	for range 300 {
		c, _ := d.Dial(t, 0)
		conns = append(conns, c)
	}
	c := connect(t, ns.URL())
	raw, err := call(t, c, "web1", rpc.MethodList, nil)
	if err != nil {
		t.Fatal(err)
	}
	var l rpc.ListResult
	if err := json.Unmarshal(raw, &l); err != nil || len(l.Connections) != 300 {
		t.Fatalf("list: %d connections, %v; want 300", len(l.Connections), err)
	}
	if len(raw) < 3*(8<<10) {
		t.Fatalf("list is %d bytes: too small to need cutting", len(raw))
	}
}

// TestReadOnlyUser: nats-server's permissions decide who may call what;
// a read-only user is refused an admin call at once.
func TestReadOnlyUser(t *testing.T) {
	ns := natstest.Start(t, func(o *server.Options) {
		inbox := &server.SubjectPermission{Allow: []string{"_INBOX.>"}}
		o.Users = []*server.User{
			{Username: "tcpops", Password: "d", Permissions: &server.Permissions{
				Publish:   &server.SubjectPermission{Allow: []string{"tcpops.events.>", "tcpops.hosts.>", "$JS.API.>", "$SRV.>", "_INBOX.>"}},
				Subscribe: &server.SubjectPermission{Allow: []string{"tcpops.rpc.>", "tcpops.admin.>", "$SRV.>", "_INBOX.>"}}}},
			{Username: "ops", Password: "r", Permissions: &server.Permissions{
				Publish: &server.SubjectPermission{Allow: []string{"tcpops.rpc.>", "$SRV.>"}}, Subscribe: inbox}},
			{Username: "admin", Password: "a", Permissions: &server.Permissions{
				Publish: &server.SubjectPermission{Allow: []string{"tcpops.rpc.>", "tcpops.admin.>", "$SRV.>"}}, Subscribe: inbox}},
		}
	})
	d := daemontest.Start(t, "--nats", ns.UserURL("tcpops", "d"), "--host-name", "web1")
	_, id := d.Dial(t, 0)
	testutil.WaitFor(t, "the daemon to connect", func() bool { return natsStats(t, d).Connected })
	ops := connect(t, ns.UserURL("ops", "r"))
	if _, err := call(t, ops, "web1", rpc.MethodStats, nil); err != nil {
		t.Fatalf("read-only user, stats: %v", err)
	}
	start := time.Now()
	_, err := call(t, ops, "web1", rpc.MethodClose, map[string]any{"conid": id})
	var de *fleet.DeniedError
	if !errors.As(err, &de) || de.Subject != "tcpops.admin.web1" || time.Since(start) > 2*time.Second {
		t.Fatalf("read-only user, close: %v after %s; want nats-server's refusal of tcpops.admin.web1 at once", err, time.Since(start))
	}
	if st, _ := d.Table.State(id); st != 2 {
		t.Errorf("conid %d state %d after a refused close, want 2", id, st)
	}
	// This ops may not read TCPOPS_HOSTS: discovery says so at once and
	// goes by the ping.
	start = time.Now()
	hosts, err := ops.Hosts(t.Context())
	if !errors.As(err, &de) || len(hosts) != 1 || hosts[0].Name != "web1" || !hosts[0].Answered || time.Since(start) > 900*time.Millisecond {
		t.Errorf("hosts %+v, %v after %s; want web1 by ping and the registry refused at once", hosts, err, time.Since(start))
	}
	admin := connect(t, ns.UserURL("admin", "a"))
	if _, err := call(t, admin, "web1", rpc.MethodClose, map[string]any{"conid": id}); err != nil {
		t.Fatalf("admin user, close: %v", err)
	}
	if !strings.Contains(d.Logs(), "nats_user=admin") {
		t.Errorf("the audit log does not name the NATS user admin:\n%s", d.Logs())
	}
}

func TestHosts(t *testing.T) {
	ns := natstest.Start(t, nil)
	daemontest.Start(t, "--nats", ns.URL(), "--host-name", "a")
	b := daemontest.Start(t, "--nats", ns.URL(), "--host-name", "b")
	c := connect(t, ns.URL())
	testutil.WaitFor(t, "a and b registered", func() bool {
		names, _ := c.Registered(t.Context())
		return len(names) == 2
	})
	// A host that registered and went away without a word (killed).
	reg, _ := json.Marshal(fleet.Registration{Host: "gone", Boot: "1"})
	if err := c.NATS().Publish(fleet.HostSubject("gone"), reg); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, "gone registered", func() bool {
		names, _ := c.Registered(t.Context())
		return len(names) == 3
	})
	start := time.Now()
	hosts, err := c.Hosts(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	took := time.Since(start)
	got := fmt.Sprintf("%+v", hosts)
	v := "0.0.0-devel" // a test binary's version, as micro wants it
	want := "[{Name:a Registered:true Answered:true Version:" + v + "} {Name:b Registered:true Answered:true Version:" + v + "} {Name:gone Registered:true Answered:false Version:}]"
	if got != want {
		t.Errorf("hosts %s, want %s", got, want)
	}
	if took > 3*time.Second {
		t.Errorf("discovery took %s with a host down, want about 1s", took)
	}
	// Clean stop: b leaves the registry; with every registered host
	// answering, discovery does not wait.
	b.Stop()
	js, _ := jetstream.New(c.NATS())
	s, _ := js.Stream(t.Context(), fleet.HostsStream)
	s.Purge(t.Context(), jetstream.WithPurgeSubject(fleet.HostSubject("gone")))
	start = time.Now()
	hosts, err = c.Hosts(t.Context())
	if err != nil || len(hosts) != 1 || hosts[0].Name != "a" {
		t.Errorf("hosts after b stopped: %+v, %v; want a", hosts, err)
	}
	if took := time.Since(start); took > 500*time.Millisecond {
		t.Errorf("discovery took %s with every host answering, want at once", took)
	}
}

// TestBulkOverNATS: a selector, a rate and a ttl travel over NATS as they
// are; a rated change goes on without the progress a socket would get.
func TestBulkOverNATS(t *testing.T) {
	ns := natstest.Start(t, nil)
	d := daemontest.Start(t, "--nats", ns.URL(), "--host-name", "web1")
	for range 3 {
		d.Dial(t, 0)
	}
	c := connect(t, ns.URL())
	raw, err := call(t, c, "web1", rpc.MethodLifetime, map[string]any{"select": map[string]any{"all": true}, "lifetime": 600, "ttl": 60})
	var r rpc.BulkResult
	if err != nil || json.Unmarshal(raw, &r) != nil || r.Matched != 3 || len(r.Applied) != 3 {
		t.Fatalf("lifetime, all, ttl: %s, %v; want 3 applied", raw, err)
	}
	raw, err = call(t, c, "web1", rpc.MethodClose, map[string]any{"select": map[string]any{"remote": "127.0.0.0/8"}, "rate": 100})
	if err != nil || json.Unmarshal(raw, &r) != nil || r.Matched != 3 || len(r.Applied) != 3 {
		t.Fatalf("rated close: %s, %v; want 3 applied", raw, err)
	}
	if n := d.Table.Stats().Conns; n != 0 {
		t.Errorf("%d connections left after the close, want 0", n)
	}
}

// TestTwoRunsOneHost: as during an upgrade, a second daemon of the host
// registers; the first one's stop leaves that registration alone.
func TestTwoRunsOneHost(t *testing.T) {
	ns := natstest.Start(t, nil)
	c := connect(t, ns.URL())
	registered := func() []string {
		names, _ := c.Registered(t.Context())
		return names
	}
	old := daemontest.Start(t, "--nats", ns.URL(), "--host-name", "web1")
	testutil.WaitFor(t, "the first run registered", func() bool { return len(registered()) == 1 })
	js, _ := jetstream.New(c.NATS())
	s, _ := js.Stream(t.Context(), fleet.HostsStream)
	first, err := s.GetLastMsgForSubject(t.Context(), fleet.HostSubject("web1"))
	if err != nil {
		t.Fatal(err)
	}
	daemontest.Start(t, "--nats", ns.URL(), "--host-name", "web1")
	testutil.WaitFor(t, "the second run registered", func() bool {
		m, err := s.GetLastMsgForSubject(t.Context(), fleet.HostSubject("web1"))
		return err == nil && m.Sequence > first.Sequence
	})
	old.Stop()
	if got := registered(); fmt.Sprint(got) != "[web1]" {
		t.Errorf("registered after the first run stopped: %v, want [web1]", got)
	}
}
