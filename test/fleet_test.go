package test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tcpops/tcpops/daemon/daemontest"
	"github.com/tcpops/tcpops/internal/testutil"
	"github.com/tcpops/tcpops/rpc"
	rpcclient "github.com/tcpops/tcpops/rpc/client"
)

// The fleet end to end: Debian's nats-server with the configuration of
// README.md's Fleet section, three tcpops daemons, and tcpopsctl --nats.

// natsProc is a nats-server process, stopped and started again by pid.
type natsProc struct {
	t       *testing.T
	bin     string
	conf    string
	port    string
	cmd     *exec.Cmd
	done    chan struct{}
	out     *daemontest.Buffer
	stopped time.Time
}

// readmeNATSConf is the nats-server configuration README.md shows.
func readmeNATSConf(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(b), "```conf\n# tcpops-nats.conf")
	block, _, ok2 := strings.Cut(rest, "```")
	if !ok || !ok2 {
		t.Fatal("README.md has no ```conf block starting # tcpops-nats.conf")
	}
	return "# tcpops-nats.conf" + block
}

// startNATS runs nats-server with README.md's configuration, on a free
// port of 127.0.0.1 with JetStream in a temporary directory.
func startNATS(t *testing.T) *natsProc {
	t.Helper()
	bin := tool(t, "nats-server", "nats-server", "/usr/sbin/nats-server")
	port, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	conf := readmeNATSConf(t)
	for _, r := range [][2]string{{"listen: 127.0.0.1:4222", "listen: 127.0.0.1:" + port}, {"store_dir: /tmp/tcpops-nats", "store_dir: " + filepath.Join(dir, "js")}} {
		if !strings.Contains(conf, r[0]) {
			t.Fatalf("README.md's nats-server configuration has no %q", r[0])
		}
		conf = strings.Replace(conf, r[0], r[1], 1)
	}
	p := &natsProc{t: t, bin: bin, conf: filepath.Join(dir, "tcpops-nats.conf"), port: port, out: &daemontest.Buffer{}}
	if err := os.WriteFile(p.conf, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	p.start()
	t.Cleanup(func() {
		p.stop()
		if t.Failed() {
			t.Logf("nats-server output:\n%s", p.out.String())
		}
	})
	return p
}

func (p *natsProc) start() {
	p.t.Helper()
	p.cmd = exec.Command(p.bin, "-c", p.conf)
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	if err := p.cmd.Start(); err != nil {
		p.t.Fatalf("nats-server: %v", err)
	}
	p.done = make(chan struct{})
	go func(cmd *exec.Cmd, done chan struct{}) { cmd.Wait(); close(done) }(p.cmd, p.done)
	waitListening(p.t, "nats-server", "127.0.0.1:"+p.port)
}

// stop ends nats-server by its pid (SIGTERM, then SIGKILL after 10 s).
func (p *natsProc) stop() {
	if p.cmd == nil {
		return
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		p.cmd.Process.Kill()
		<-p.done
	}
	p.cmd = nil
	p.stopped = time.Now()
}

func (p *natsProc) url(user, pass string) string {
	return fmt.Sprintf("nats://%s:%s@127.0.0.1:%s", user, pass, p.port)
}

// fleetDaemon is a tcpops process of the fleet.
type fleetDaemon struct {
	host, socket, addr string
	cmd                *exec.Cmd
	done               chan struct{}
	logs               *daemontest.Buffer
}

func startFleetDaemon(t *testing.T, dir, host, natsURL string) *fleetDaemon {
	t.Helper()
	port, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	d := &fleetDaemon{host: host, socket: filepath.Join(dir, host+".sock"), addr: "127.0.0.1:" + port, logs: &daemontest.Buffer{}, done: make(chan struct{})}
	d.cmd = exec.Command(filepath.Join(binDir, "tcpops"), "--socket", d.socket, "--listen", "tcp://"+d.addr,
		"--nats", natsURL, "--host-name", host)
	d.cmd.Stderr = d.logs
	if err := d.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { d.cmd.Wait(); close(d.done) }()
	t.Cleanup(func() {
		d.cmd.Process.Kill()
		<-d.done
		if t.Failed() {
			t.Logf("%s log:\n%s", host, d.logs.String())
		}
	})
	// The socket answers once the listeners are open.
	testutil.WaitFor(t, host+" to answer on its socket", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		c, err := rpcclient.Dial(ctx, d.socket)
		if err != nil {
			return false
		}
		defer c.Close()
		_, err = c.Version(ctx)
		return err == nil
	})
	return d
}

// stats asks the daemon over its socket.
func (d *fleetDaemon) stats(t *testing.T) rpc.Stats {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := rpcclient.Dial(ctx, d.socket)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	s, err := c.Stats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if s.NATS == nil {
		t.Fatalf("%s: stats without nats", d.host)
	}
	return s
}

// fleetCtl runs tcpopsctl --nats URL args and returns its exit code,
// stdout and stderr.
func fleetCtl(t *testing.T, url string, args ...string) (int, string, string) {
	t.Helper()
	cmd := exec.Command(filepath.Join(binDir, "tcpopsctl"), append([]string{"--nats", url}, args...)...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		t.Fatal(err)
	}
	return cmd.ProcessState.ExitCode(), out.String(), errb.String()
}

// hostLine is one line of tcpopsctl --nats -o json over several hosts.
type hostLine struct {
	Host   string          `json:"host"`
	Result json.RawMessage `json:"result"`
	Error  *struct {
		Code    int    `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
}

func hostLines(t *testing.T, out string) map[string]hostLine {
	t.Helper()
	m := map[string]hostLine{}
	for line := range strings.Lines(out) {
		var h hostLine
		if err := json.Unmarshal([]byte(line), &h); err != nil {
			t.Fatalf("line %q: %v", line, err)
		}
		m[h.Host] = h
	}
	return m
}

// streamRecord is what tests read of tcpopsctl --nats -o json events.
type streamRecord struct {
	StreamSeq uint64 `json:"stream_seq"`
	Host      string `json:"host"`
	Boot      string `json:"boot"`
	Seq       uint64 `json:"seq"`
	Event     string `json:"event"`
	Reason    string `json:"reason"`
	ConnID    uint64 `json:"conid"`
}

// streamByHost reads the events stream as the ops user, by host, in
// stream order.
func streamByHost(t *testing.T, url string) map[string][]streamRecord {
	t.Helper()
	code, out, errs := fleetCtl(t, url, "-o", "json", "events")
	if code != 0 {
		t.Fatalf("events: exit %d: %s", code, errs)
	}
	m := map[string][]streamRecord{}
	for line := range strings.Lines(out) {
		var r streamRecord
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			t.Fatalf("event line %q: %v", line, err)
		}
		m[r.Host] = append(m[r.Host], r)
	}
	return m
}

// checkGapFree fails unless each host's records are seqs 1..n of one
// boot, each once, in order, with n its daemon's event seq.
func checkGapFree(t *testing.T, byHost map[string][]streamRecord, want map[string]uint64) {
	t.Helper()
	for host, n := range want {
		recs := byHost[host]
		var seqs []uint64
		for _, r := range recs {
			seqs = append(seqs, r.Seq)
		}
		if uint64(len(recs)) != n {
			t.Errorf("%s: %d records in JetStream %v, want seqs 1..%d", host, len(recs), seqs, n)
			continue
		}
		for i, r := range recs {
			if r.Seq != uint64(i+1) || r.Event == rpc.NotifyEventsLost || r.Boot != recs[0].Boot {
				t.Errorf("%s: seqs %v, want 1..%d once each, in order, one boot", host, seqs, n)
				break
			}
		}
	}
}

func TestFleetWithNATSServer(t *testing.T) {
	ns := startNATS(t)
	dir, err := os.MkdirTemp("", "fleet")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	daemonURL, ops, admin := ns.url("tcpops", "daemon-secret"), ns.url("ops", "ops-secret"), ns.url("admin", "admin-secret")
	hosts := []string{"h1", "h2", "h3"}
	ds := map[string]*fleetDaemon{}
	clients := map[string][]net.Conn{}
	for _, h := range hosts {
		d := startFleetDaemon(t, dir, h, daemonURL)
		ds[h] = d
		// Two clients from 127.0.0.1, one from 127.0.0.2.
		clients[h] = []net.Conn{dialFrom(t, d.addr, "127.0.0.1", 1)[0], dialFrom(t, d.addr, "127.0.0.1", 1)[0], dialFrom(t, d.addr, "127.0.0.2", 1)[0]}
		testutil.WaitFor(t, h+" to hold 3 connections and be on NATS", func() bool {
			s := d.stats(t)
			return s.Connections == 3 && s.NATS.Connected
		})
	}

	t.Run("list shows every host", func(t *testing.T) {
		code, out, errs := fleetCtl(t, ops, "--all-hosts", "list")
		if code != 0 {
			t.Fatalf("exit %d: %s", code, errs)
		}
		lines := strings.Split(strings.TrimSpace(out), "\n")
		if len(lines) != 10 || !strings.HasPrefix(lines[0], "HOST  CONID  PEER  PROTO  DIR  STATE") {
			t.Fatalf("want a header and 9 rows:\n%s", out)
		}
		for _, h := range hosts {
			if n := strings.Count(out, "\n"+h+"    "); n != 3 {
				t.Errorf("%d rows of %s, want 3:\n%s", n, h, out)
			}
		}
		code, out, _ = fleetCtl(t, ops, "--all-hosts", "-o", "json", "list")
		lines2 := hostLines(t, out)
		for _, h := range hosts {
			var l rpc.ListResult
			if err := json.Unmarshal(lines2[h].Result, &l); err != nil || len(l.Connections) != 3 {
				t.Errorf("-o json: %s has %d connections (%v), want 3", h, len(l.Connections), err)
			}
		}
		if code != 0 {
			t.Errorf("-o json: exit %d", code)
		}
	})

	t.Run("close by CIDR on every host, dry run then for real", func(t *testing.T) {
		// The selector travels to each host as it is: tcpops.close with
		// select {remote} and dry_run.
		code, out, errs := fleetCtl(t, admin, "--all-hosts", "-o", "json", "close", "--remote", "127.0.0.2/32", "--dry-run")
		if code != 0 {
			t.Fatalf("dry run: exit %d: %s%s", code, out, errs)
		}
		for _, h := range hosts {
			var r rpc.BulkResult
			json.Unmarshal(hostLines(t, out)[h].Result, &r)
			if r.Matched != 1 || !r.DryRun || len(r.Applied) != 0 || ds[h].stats(t).Connections != 3 {
				t.Fatalf("dry run on %s: %+v; want one match and nothing closed", h, r)
			}
		}
		code, out, errs = fleetCtl(t, admin, "--all-hosts", "close", "--remote", "127.0.0.2/32")
		if code != 0 {
			t.Fatalf("close: exit %d: %s%s", code, out, errs)
		}
		for _, h := range hosts {
			if !strings.Contains(out, h+"  1 of 1 matched connection(s) closed (FIN)") {
				t.Errorf("close: no line for %s:\n%s", h, out)
			}
			if !strings.Contains(ds[h].logs.String(), "via=nats nats_user=admin") {
				t.Errorf("%s: no audit line naming the NATS user admin:\n%s", h, ds[h].logs.String())
			}
			c := clients[h][2]
			c.SetReadDeadline(time.Now().Add(10 * time.Second))
			if _, err := c.Read(make([]byte, 1)); err == nil {
				t.Errorf("%s: the client from 127.0.0.2 is still open", h)
			}
		}
		code, out, _ = fleetCtl(t, ops, "--all-hosts", "list", "--remote", "127.0.0.2/32")
		if code != 0 || strings.Count(out, "\n") != 1 {
			t.Errorf("after the close, exit %d, want only the header:\n%s", code, out)
		}
	})

	t.Run("read-only user refused an admin call", func(t *testing.T) {
		start := time.Now()
		code, _, errs := fleetCtl(t, ops, "--host", "h1", "close", "1")
		if code != 4 || !strings.Contains(errs, `nats-server refused tcpops.admin.h1`) || !strings.Contains(errs, "Permissions Violation") {
			t.Fatalf("exit %d, want 4 with nats-server's refusal: %s", code, errs)
		}
		if took := time.Since(start); took > 3*time.Second {
			t.Errorf("refusal took %s", took)
		}
		if n := ds["h1"].stats(t).Connections; n != 2 {
			t.Errorf("h1 holds %d connections after a refused close, want 2", n)
		}
	})

	want := func() map[string]uint64 {
		m := map[string]uint64{}
		for h, d := range ds {
			s := d.stats(t)
			if s.NATS.PublishedSeq != s.EventSeq {
				return nil
			}
			m[h] = s.EventSeq
		}
		return m
	}
	var seqs map[string]uint64
	testutil.WaitFor(t, "every event stored", func() bool { seqs = want(); return seqs != nil })

	t.Run("events of every host in JetStream, in order", func(t *testing.T) {
		checkGapFree(t, streamByHost(t, ops), seqs)
	})

	// README.md's durable consumer, as the ops user: the code of
	// fleet/example_test.go.
	t.Run("a shipper's durable consumer", func(t *testing.T) {
		nc, err := nats.Connect(ops)
		if err != nil {
			t.Fatal(err)
		}
		defer nc.Close()
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
		defer cancel()
		js, _ := jetstream.New(nc)
		cons, err := js.CreateOrUpdateConsumer(ctx, "TCPOPS_EVENTS", jetstream.ConsumerConfig{
			Durable: "shipper", AckPolicy: jetstream.AckExplicitPolicy, FilterSubject: "tcpops.events.>"})
		if err != nil {
			t.Fatal(err)
		}
		got := make(chan string, 16)
		cc, err := cons.Consume(func(m jetstream.Msg) {
			got <- m.Headers().Get("Nats-Msg-Id")
			m.Ack()
		})
		if err != nil {
			t.Fatal(err)
		}
		defer cc.Stop()
		var ids []string
		for len(ids) < 3 {
			select {
			case id := <-got:
				ids = append(ids, id)
			case <-ctx.Done():
				t.Fatalf("the shipper got %v, want 3 events", ids)
			}
		}
		slices.Sort(ids)
		if !strings.HasPrefix(ids[0], "h1:") || !strings.HasSuffix(ids[0], ":1") || !strings.HasPrefix(ids[2], "h3:") {
			t.Errorf("Nats-Msg-Id %v, want HOST:BOOT:SEQ of h1, h2, h3", ids)
		}
	})

	t.Run("NATS away for 5s while connections close", func(t *testing.T) {
		ns.stop()
		for _, h := range hosts {
			testutil.WaitFor(t, h+" to see NATS gone", func() bool { return !ds[h].stats(t).NATS.Connected })
		}
		// One client closes, one is closed through the socket, on every host.
		for _, h := range hosts {
			clients[h][0].Close()
			code := 0
			cmd := exec.Command(filepath.Join(binDir, "tcpopsctl"), "-s", ds[h].socket, "close", "2")
			if err := cmd.Run(); err != nil {
				code = cmd.ProcessState.ExitCode()
			}
			if code != 0 {
				t.Fatalf("%s: close 2 over the socket: exit %d", h, code)
			}
			testutil.WaitFor(t, h+" to have 2 events waiting", func() bool { return ds[h].stats(t).NATS.Pending == 2 })
		}
		// The outage lasts 5 s, as a restarted server's would.
		time.Sleep(time.Until(ns.stopped.Add(5 * time.Second)))
		ns.start()
		testutil.WaitFor(t, "every event stored after the restart", func() bool { seqs = want(); return seqs != nil })
		checkGapFree(t, streamByHost(t, ops), seqs)
		for _, h := range hosts {
			if s := ds[h].stats(t); s.NATS.Reconnects == 0 || s.EventSeq != 3 {
				t.Errorf("%s: %+v, want a reconnect and 3 events", h, s.NATS)
			}
		}
	})

	t.Run("a host that is down is reported", func(t *testing.T) {
		ds["h3"].cmd.Process.Kill()
		<-ds["h3"].done
		start := time.Now()
		code, out, errs := fleetCtl(t, ops, "--all-hosts", "list")
		if code != 4 || !strings.Contains(errs, "1 of 3 hosts did not answer: h3") {
			t.Fatalf("exit %d, want 4 naming h3:\n%s%s", code, out, errs)
		}
		if took := time.Since(start); took > 4*time.Second {
			t.Errorf("took %s: the down host was waited for", took)
		}
		code, out, _ = fleetCtl(t, ops, "--all-hosts", "-o", "json", "stats")
		lines := hostLines(t, out)
		if code != 4 || lines["h1"].Result == nil || lines["h2"].Result == nil || lines["h3"].Error == nil ||
			!strings.Contains(lines["h3"].Error.Message, "host h3 did not answer") {
			t.Errorf("-o json: exit %d, want 4 with h1 and h2 answering and h3's error:\n%s", code, out)
		}
		code, _, errs = fleetCtl(t, ops, "--host", "h3", "stats")
		if code != 4 || !strings.Contains(errs, "host h3 did not answer") {
			t.Errorf("--host h3: exit %d: %s", code, errs)
		}
	})

	t.Run("shutdown events reach JetStream; a clean stop leaves the fleet", func(t *testing.T) {
		d := ds["h1"]
		dialFrom(t, d.addr, "127.0.0.1", 1)
		testutil.WaitFor(t, "h1 to hold a connection", func() bool { return d.stats(t).Connections == 1 })
		d.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-d.done:
		case <-time.After(15 * time.Second):
			t.Fatal("h1 did not stop within 15s")
		}
		if code := d.cmd.ProcessState.ExitCode(); code != 0 {
			t.Fatalf("h1 exit %d", code)
		}
		recs := streamByHost(t, ops)["h1"]
		checkGapFree(t, map[string][]streamRecord{"h1": recs}, map[string]uint64{"h1": 4})
		if r := recs[len(recs)-1]; r.Reason != "shutdown" {
			t.Errorf("h1's last event %+v, want reason shutdown", r)
		}
		code, out, errs := fleetCtl(t, ops, "--all-hosts", "-o", "json", "stats")
		got := slices.Sorted(func(yield func(string) bool) {
			for h := range hostLines(t, out) {
				if !yield(h) {
					return
				}
			}
		})
		if code != 4 || !slices.Equal(got, []string{"h2", "h3"}) {
			t.Errorf("after h1 stopped: exit %d, hosts %v, want 4 with h2 and the killed h3: %s", code, got, errs)
		}
	})
}
