package test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/tcpops/tcpops/daemon/daemontest"
	"github.com/tcpops/tcpops/internal/testcert"
	"github.com/tcpops/tcpops/internal/testutil"
	"github.com/tcpops/tcpops/rpc"
	rpcclient "github.com/tcpops/tcpops/rpc/client"
)

// buildVariant builds tcpops again with -ldflags -X settings: the "new
// version" of an upgrade, or one made to fail it.
func buildVariant(t *testing.T, name string, x ...string) string {
	t.Helper()
	out := filepath.Join(binDir, name)
	if _, err := os.Stat(out); err == nil {
		return out
	}
	flags := ""
	for _, kv := range x {
		flags += " -X " + kv
	}
	cmd := exec.Command("go", "build", "-ldflags", strings.TrimSpace(flags), "-o", out, "../cmd/tcpops")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building %s: %v\n%s", name, err, b)
	}
	return out
}

// counterStream sends uint32 counters on a connection and checks that
// what comes back is the same sequence, byte for byte, with no gap,
// duplicate or reordering. Each write is one 1 KiB block.
type counterStream struct {
	name    string
	c       net.Conn
	sent    uint32
	got     atomic.Uint32
	mu      sync.Mutex
	maxGap  time.Duration // longest wait between two reads that returned data
	err     error
	stop    chan struct{}
	stopped chan struct{}
}

const countersPerBlock = 256

const endMark = 0xffffffff

func startCounterStream(name string, c net.Conn) *counterStream {
	s := &counterStream{name: name, c: c, stop: make(chan struct{}), stopped: make(chan struct{})}
	var wg sync.WaitGroup
	wg.Go(func() {
		buf := make([]byte, 4*countersPerBlock)
		tick := time.NewTicker(3 * time.Millisecond)
		defer tick.Stop()
		for n := 0; n < 200000; n++ { // bounded: about 10 minutes at the tick
			select {
			case <-s.stop:
				// The end mark: a value the sequence never reaches.
				c.Write([]byte{0xff, 0xff, 0xff, 0xff})
				return
			case <-tick.C:
			}
			for i := range countersPerBlock {
				binary.BigEndian.PutUint32(buf[4*i:], s.sent+uint32(i))
			}
			c.SetWriteDeadline(time.Now().Add(10 * time.Second))
			if _, err := c.Write(buf); err != nil {
				s.fail(fmt.Errorf("write: %w", err))
				return
			}
			s.mu.Lock()
			s.sent += countersPerBlock
			s.mu.Unlock()
		}
	})
	go func() {
		defer close(s.stopped)
		r := bufio.NewReader(c)
		var b [4]byte
		last := time.Now()
		for {
			c.SetReadDeadline(time.Now().Add(15 * time.Second))
			if _, err := io.ReadFull(r, b[:]); err != nil {
				s.fail(fmt.Errorf("read after %d counters: %w", s.got.Load(), err))
				wg.Wait()
				return
			}
			if v := binary.BigEndian.Uint32(b[:]); v == endMark {
				wg.Wait()
				if s.got.Load() != s.sentNow() {
					s.fail(fmt.Errorf("end mark after %d counters, %d sent", s.got.Load(), s.sentNow()))
				}
				return
			}
			if now := time.Now(); r.Buffered() == 0 || s.got.Load()%countersPerBlock == 0 {
				s.mu.Lock()
				s.maxGap = max(s.maxGap, now.Sub(last))
				s.mu.Unlock()
				last = now
			}
			if v := binary.BigEndian.Uint32(b[:]); v != s.got.Load() {
				s.fail(fmt.Errorf("counter %d where %d was due", v, s.got.Load()))
				wg.Wait()
				return
			}
			s.got.Add(1)
		}
	}()
	return s
}

func (s *counterStream) sentNow() uint32 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.sent
}

func (s *counterStream) fail(err error) {
	s.mu.Lock()
	if s.err == nil {
		s.err = fmt.Errorf("%s: %w", s.name, err)
	}
	s.mu.Unlock()
}

// progress waits until the stream has echoed n more counters.
func (s *counterStream) progress(t *testing.T, n uint32) {
	t.Helper()
	s.mu.Lock()
	from := s.got.Load()
	s.mu.Unlock()
	testutil.WaitFor(t, s.name+" moving", func() bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		return s.got.Load() >= from+n || s.err != nil
	})
}

// finish stops sending, waits for the echo of everything sent and
// reports the stream's error.
func (s *counterStream) finish(t *testing.T) {
	t.Helper()
	close(s.stop)
	select {
	case <-s.stopped:
	case <-time.After(20 * time.Second):
		t.Errorf("%s: echo of %d counters not back within 20 s (got %d)", s.name, s.sentNow(), s.got.Load())
	}
	if s.err != nil {
		t.Error(s.err)
	}
}

// upgradeBackend is the backend of relayed pairs: it echoes, or, after a
// first byte 'h', reads to EOF (the client's half-close) and then sends
// counters until told to stop, then closes.
type upgradeBackend struct {
	ln       net.Listener
	stopHalf chan struct{}
	wg       sync.WaitGroup
}

func startUpgradeBackend(t *testing.T) *upgradeBackend {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &upgradeBackend{ln: ln, stopHalf: make(chan struct{})}
	b.wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			b.wg.Go(func() { b.serve(c.(*net.TCPConn)) })
		}
	})
	t.Cleanup(func() {
		ln.Close()
		b.wg.Wait()
	})
	return b
}

func (b *upgradeBackend) serve(c *net.TCPConn) {
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Minute))
	var mode [1]byte
	if _, err := io.ReadFull(c, mode[:]); err != nil {
		return
	}
	if mode[0] != 'h' {
		io.Copy(c, c)
		c.CloseWrite()
		return
	}
	if _, err := io.Copy(io.Discard, c); err != nil {
		return
	}
	buf := make([]byte, 4*countersPerBlock)
	var n uint32
	for i := 0; i < 100000; i++ {
		select {
		case <-b.stopHalf:
			return
		case <-time.After(5 * time.Millisecond):
		}
		for j := range countersPerBlock {
			binary.BigEndian.PutUint32(buf[4*j:], n)
			n++
		}
		if _, err := c.Write(buf); err != nil {
			return
		}
	}
}

// halfClosed is a client that sent FIN and reads counters from the
// backend until its EOF.
type halfClosed struct {
	c    *net.TCPConn
	got  atomic.Uint32
	err  error
	done chan struct{}
}

func startHalfClosed(t *testing.T, addr string) *halfClosed {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	h := &halfClosed{c: c.(*net.TCPConn), done: make(chan struct{})}
	if _, err := c.Write([]byte("h")); err != nil {
		t.Fatal(err)
	}
	h.c.CloseWrite()
	go func() {
		defer close(h.done)
		r := bufio.NewReader(c)
		var b [4]byte
		for {
			c.SetReadDeadline(time.Now().Add(30 * time.Second))
			if _, err := io.ReadFull(r, b[:]); err != nil {
				if !errors.Is(err, io.EOF) {
					h.err = fmt.Errorf("half-closed client after %d counters: %w", h.got.Load(), err)
				}
				return
			}
			if v := binary.BigEndian.Uint32(b[:]); v != h.got.Load() {
				h.err = fmt.Errorf("half-closed client: counter %d where %d was due", v, h.got.Load())
				return
			}
			h.got.Add(1)
		}
	}()
	return h
}

// daemonPID finds the pid of the process listening on a TCP port (ss -p).
func socketOwner(t *testing.T, local, remote string) (pid int, ssLine string) {
	t.Helper()
	out, err := exec.Command("ss", "-tnoiepH", "state", "established", "src", local, "dst", remote).CombinedOutput()
	if err != nil {
		t.Fatalf("ss: %v\n%s", err, out)
	}
	s := string(out)
	i := strings.Index(s, "pid=")
	if i < 0 {
		return 0, s
	}
	j := strings.IndexAny(s[i+4:], ",)")
	pid, _ = strconv.Atoi(s[i+4 : i+4+j])
	return pid, s
}

func listConns(t *testing.T, socket string) map[uint64]rpc.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := rpcclient.Dial(ctx, socket)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	r, err := c.List(ctx, rpc.ListParams{})
	if err != nil {
		t.Fatal(err)
	}
	m := map[uint64]rpc.Conn{}
	for _, x := range r.Connections {
		m[x.ConnID] = x
	}
	return m
}

func callDaemon(t *testing.T, socket, method string, params, result any) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := rpcclient.Dial(ctx, socket)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Call(ctx, method, params, result); err != nil {
		t.Fatalf("%s: %v", method, err)
	}
}

// TestUpgradeKeepsEveryConnection runs the real daemon with plain TCP
// relayed pairs (busy, idle, half-closed), echo connections, TLS and
// WebSocket ones; two upgrades fail (a new binary whose checks refuse the
// state, one that crashes during the handover) and leave everything with
// the old process; then an upgrade to a build with another version
// string hands everything over while every stream goes on.
func TestUpgradeKeepsEveryConnection(t *testing.T) {
	newBin := buildVariant(t, "tcpops-next", "github.com/tcpops/tcpops/rpc.BuildVersion=9.9.9-next")
	refuseBin := buildVariant(t, "tcpops-format99", "github.com/tcpops/tcpops/rpc.BuildVersion=9.9.9-refuse", "github.com/tcpops/tcpops/daemon.handoverFormat=99")
	crashBin := buildVariant(t, "tcpops-crash", "github.com/tcpops/tcpops/rpc.BuildVersion=9.9.9-crash", "github.com/tcpops/tcpops/daemon.handoverFault=crash")
	refuseFinalBin := buildVariant(t, "tcpops-refuse-final", "github.com/tcpops/tcpops/rpc.BuildVersion=9.9.9-refuse-final", "github.com/tcpops/tcpops/daemon.handoverFault=refuse-final")

	dir, _ := os.MkdirTemp("", "tcpops")
	defer os.RemoveAll(dir)
	cert, err := testcert.Write(dir)
	if err != nil {
		t.Fatal(err)
	}
	backend := startUpgradeBackend(t)
	ports := make([]string, 3)
	for i := range ports {
		if ports[i], err = freePort(); err != nil {
			t.Fatal(err)
		}
	}
	relayAddr := "127.0.0.1:" + ports[0]
	tlsAddr := "127.0.0.1:" + ports[1]
	wsURL := "ws://127.0.0.1:" + ports[2] + "/ws"
	socket := filepath.Join(dir, "s")
	evlog := filepath.Join(dir, "events.log")
	d := startDaemon(t, socket,
		"--listen", "tcp://"+relayAddr+"?backend="+backend.ln.Addr().String()+"&name=relay",
		"--listen", "tls://"+tlsAddr+"?name=tls", "--listen", wsURL+"?name=ws",
		"--tls-cert", cert.CertFile, "--tls-key", cert.KeyFile, "--lifetime", "10m", "--keepalive", "7200,9,75",
		"--event-log", evlog)
	echoAddr := d.addr
	var newPID int
	t.Cleanup(func() {
		if newPID > 0 {
			syscall.Kill(newPID, syscall.SIGKILL)
		}
	})

	// The follower: tcpopsctl events -f across everything.
	var evOut, evErr daemontest.Buffer
	follower := exec.Command(filepath.Join(binDir, "tcpopsctl"), "-s", socket, "-o", "json", "events", "-f")
	follower.Stdout, follower.Stderr = &evOut, &evErr
	if err := follower.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		follower.Process.Signal(syscall.SIGINT)
		follower.Wait()
	}()

	// Some connections close before the upgrade, so that the ring has
	// events to carry over.
	for range 3 {
		c, err := net.Dial("tcp", echoAddr)
		if err != nil {
			t.Fatal(err)
		}
		c.Write([]byte("x"))
		c.Read(make([]byte, 1))
		c.Close()
	}

	dial := func(addr string, mode string) net.Conn {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		if mode != "" {
			c.Write([]byte(mode))
		}
		return c
	}
	var busy []*counterStream
	for i := range 10 {
		busy = append(busy, startCounterStream(fmt.Sprintf("relayed %d", i), dial(relayAddr, "e")))
	}
	for i := range 5 {
		busy = append(busy, startCounterStream(fmt.Sprintf("echo %d", i), dial(echoAddr, "")))
	}
	var idle []net.Conn
	for range 20 {
		c := dial(relayAddr, "e")
		c.Write([]byte("ping"))
		io.ReadFull(c, make([]byte, 4))
		idle = append(idle, c)
	}
	var halves []*halfClosed
	for range 3 {
		halves = append(halves, startHalfClosed(t, relayAddr))
	}
	var draining []*counterStream
	for i := range 2 {
		tc, err := tls.Dial("tcp", tlsAddr, cert.Client)
		if err != nil {
			t.Fatal(err)
		}
		draining = append(draining, startCounterStream(fmt.Sprintf("tls %d", i), tc))
	}
	for i := range 2 {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		wc, _, err := websocket.Dial(ctx, wsURL, nil)
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		draining = append(draining, startCounterStream(fmt.Sprintf("ws %d", i), websocket.NetConn(context.Background(), wc, websocket.MessageBinary)))
	}
	for _, s := range append(slices.Clone(busy), draining...) {
		s.progress(t, 1000)
	}
	for _, h := range halves {
		testutil.WaitFor(t, "half-closed clients receiving", func() bool { return h.got.Load() > 100 || h.err != nil })
	}
	testutil.WaitFor(t, "every connection in the table", func() bool { return len(listConns(t, socket)) >= 10*2+5+20*2+3*2+2*2 })

	// Settings to carry over: keepalive on an idle client's leg, a
	// lifetime, a closed-event flag off.
	before := listConns(t, socket)
	var idleIn, idleIn2 rpc.Conn
	for _, c := range before {
		// Both addresses: a client port may be in use towards another
		// listener at the same time.
		if c.Direction == "in" && c.Remote == idle[0].LocalAddr().String() && c.Local == idle[0].RemoteAddr().String() {
			idleIn = c
		}
		if c.Direction == "in" && c.Remote == idle[1].LocalAddr().String() && c.Local == idle[1].RemoteAddr().String() {
			idleIn2 = c
		}
	}
	if idleIn.ConnID == 0 || idleIn2.ConnID == 0 {
		t.Fatalf("idle clients not listed: %v", before)
	}
	var ka rpc.KeepaliveResult
	callDaemon(t, socket, rpc.MethodKeepalive, map[string]any{"conid": idleIn.ConnID, "idle": 61, "count": 4, "interval": 7}, &ka)
	var lt rpc.LifetimeResult
	callDaemon(t, socket, rpc.MethodLifetime, map[string]any{"conid": idleIn2.ConnID, "lifetime": 333}, &lt)
	callDaemon(t, socket, rpc.MethodClosedEvent, map[string]any{"conid": idleIn2.ConnID, "enable": false}, nil)
	before = listConns(t, socket)
	var stats rpc.Stats
	callDaemon(t, socket, rpc.MethodStats, nil, &stats)
	oldPID := d.cmd.Process.Pid
	var oldVersion rpc.Version
	callDaemon(t, socket, rpc.MethodVersion, nil, &oldVersion)

	// Two upgrades that fail: everything stays with the old process.
	for _, bad := range []struct{ bin, want string }{
		{refuseBin, "format 2, this build reads format 99"},
		{crashBin, "ended during the handover (exit status 3)"},
		// Refused with the connections frozen: they resume here, and the
		// control socket stays where it was.
		{refuseFinalBin, "refusing the final part (test build)"},
	} {
		out, err := exec.Command(filepath.Join(binDir, "tcpopsctl"), "-s", socket, "upgrade", "--binary", bad.bin).CombinedOutput()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 4 || !strings.Contains(string(out), bad.want) {
			t.Fatalf("upgrade to %s: %v, %s; want exit 4 saying %q", filepath.Base(bad.bin), err, out, bad.want)
		}
		t.Logf("failed upgrade, as meant: %s", bytes.TrimSpace(out))
		var v rpc.Version
		callDaemon(t, socket, rpc.MethodVersion, nil, &v)
		if v.Version != oldVersion.Version {
			t.Fatalf("after a failed upgrade the daemon is %s, want the old %s", v.Version, oldVersion.Version)
		}
		for _, s := range append(slices.Clone(busy), draining...) {
			s.progress(t, 500)
		}
		if pid, line := socketOwner(t, idleIn.Local, idleIn.Remote); pid != oldPID {
			t.Fatalf("after a failed upgrade the idle socket is held by pid %d, want %d: %s", pid, oldPID, line)
		}
		// A new connection is served by the old process too.
		c := dial(echoAddr, "")
		c.Write([]byte("z"))
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.ReadFull(c, make([]byte, 1)); err != nil {
			t.Fatalf("after a failed upgrade: %v", err)
		}
		gone, to := c.LocalAddr().String(), c.RemoteAddr().String()
		c.Close()
		// Gone from the table before the picture below is taken: else it
		// would be listed there and missed after the upgrade.
		var left rpc.Conn
		if !testutil.Until(func() bool {
			for _, cn := range listConns(t, socket) {
				if cn.Remote == gone && cn.Local == to {
					left = cn
					return false
				}
			}
			return true
		}) {
			t.Fatalf("the probe connection is still listed after %s: %+v", testutil.Timeout, left)
		}
	}
	beforeTaken := time.Now() // before the picture, for the deadlines below
	before = listConns(t, socket)

	// The upgrade.
	start := time.Now()
	out := ctl(t, socket, "-o", "json", "upgrade", "--binary", newBin, "--drain-timeout", "1m")
	took := time.Since(start)
	var res rpc.UpgradeResult
	if err := json.Unmarshal(out, &res); err != nil {
		t.Fatalf("upgrade result %s: %v", out, err)
	}
	newPID = res.NewPID
	t.Logf("upgrade: %+v in %s", res, took)
	if res.OldPID != oldPID || res.NewPID == oldPID || res.NewPID == 0 {
		t.Fatalf("upgrade result %+v, old pid %d", res, oldPID)
	}
	var v rpc.Version
	callDaemon(t, socket, rpc.MethodVersion, nil, &v)
	if v.Version != "9.9.9-next" {
		t.Fatalf("after the upgrade the daemon is %s, want 9.9.9-next", v.Version)
	}
	for _, s := range append(slices.Clone(busy), draining...) {
		s.progress(t, 2000)
	}
	after := listConns(t, socket)
	between := time.Since(beforeTaken) // at least the time between the pictures

	// The table as before, but for counters of busy streams and the
	// draining mark of TLS and WebSocket connections.
	drainingN := 0
	for id, b := range before {
		a, ok := after[id]
		if !ok {
			t.Errorf("conid %d (%s %s %s) missing after the upgrade", id, b.Proto, b.Direction, b.Remote)
			continue
		}
		plain := b.Listener != "tls" && b.Listener != "ws"
		if plain != (a.Draining == nil) {
			t.Errorf("conid %d (%s): draining %+v after the upgrade", id, b.Listener, a.Draining)
		}
		if a.Draining != nil {
			drainingN++
			if a.Draining.PID != oldPID {
				t.Errorf("conid %d draining in pid %d, want %d", id, a.Draining.PID, oldPID)
			}
		}
		if a.Peer != b.Peer || a.Proto != b.Proto || a.Direction != b.Direction || a.Listener != b.Listener ||
			a.Local != b.Local || a.Remote != b.Remote || !a.Created.Equal(b.Created) || a.LifetimeS != b.LifetimeS ||
			a.ClosedEvent != b.ClosedEvent || a.StateName != b.StateName || fmt.Sprint(a.Keepalive) != fmt.Sprint(b.Keepalive) {
			t.Errorf("conid %d changed:\nbefore %+v\nafter  %+v", id, b, a)
		}
		if a.BytesIn < b.BytesIn || a.BytesOut < b.BytesOut {
			t.Errorf("conid %d counters went back: %d/%d after %d/%d", id, a.BytesIn, a.BytesOut, b.BytesIn, b.BytesOut)
		}
		if b.LifetimeS > 0 && plain && b.IdleS > 5 && (a.ExpiresInS > b.ExpiresInS+0.5 || a.ExpiresInS < b.ExpiresInS-between.Seconds()-5) {
			t.Errorf("conid %d deadline moved: expires in %.1f s before, %.1f s after", id, b.ExpiresInS, a.ExpiresInS)
		}
	}
	if res.HandedOver != len(before)-drainingN || res.Draining != drainingN {
		t.Errorf("upgrade result %+v, want %d handed over and %d draining", res, len(before)-drainingN, drainingN)
	}
	if a := after[idleIn2.ConnID]; a.LifetimeS != 333 || a.ClosedEvent {
		t.Errorf("conid %d: lifetime %v, closed_event %v after the upgrade, want 333, false", a.ConnID, a.LifetimeS, a.ClosedEvent)
	}
	// Keepalive as the kernel holds it, read back by the new process,
	// and as ss sees it on a socket the new process holds.
	var info rpc.InfoResult
	callDaemon(t, socket, rpc.MethodInfo, map[string]any{"conid": idleIn.ConnID}, &info)
	if k := info.Keepalive; k == nil || !k.Enabled || k.IdleS != 61 || k.Count != 4 || k.IntervalS != 7 {
		t.Errorf("keepalive read back after the upgrade: %+v, want 61/4/7", info.Keepalive)
	}
	pid, line := socketOwner(t, idleIn.Local, idleIn.Remote)
	if pid != newPID || !strings.Contains(line, "keepalive") {
		t.Errorf("ss after the upgrade: pid %d, want %d, with a keepalive timer: %s", pid, newPID, line)
	}
	// A draining connection cannot be changed here.
	for id, a := range after {
		if a.Draining != nil {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			c, err := rpcclient.Dial(ctx, socket)
			if err != nil {
				t.Fatal(err)
			}
			_, err = c.Lifetime(ctx, id, time.Minute)
			c.Close()
			cancel()
			var re *rpc.Error
			if !errors.As(err, &re) || re.Code != rpc.CodeSocket {
				t.Errorf("lifetime of draining conid %d: %v, want code %d", id, err, rpc.CodeSocket)
			}
			break
		}
	}
	// New conids go on after the highest.
	var maxID uint64
	for id := range before {
		maxID = max(maxID, id)
	}
	nc := dial(echoAddr, "")
	nc.Write([]byte("n"))
	io.ReadFull(nc, make([]byte, 1))
	for id, a := range listConns(t, socket) {
		// Both addresses: a client port may be in use towards another
		// listener at the same time.
		if a.Remote == nc.LocalAddr().String() && a.Local == nc.RemoteAddr().String() && id <= maxID {
			t.Errorf("new connection got conid %d, want above %d", id, maxID)
		}
	}
	nc.Close()

	// Idle clients are served by the new process.
	for i, c := range idle {
		c.SetDeadline(time.Now().Add(5 * time.Second))
		c.Write([]byte("pong"))
		b := make([]byte, 4)
		if _, err := io.ReadFull(c, b); err != nil || string(b) != "pong" {
			t.Errorf("idle client %d after the upgrade: %q, %v", i, b, err)
		}
	}
	for _, s := range busy {
		s.finish(t)
		// The 200 ms goal is the benchmark's (bench/upgrade, BENCHMARKS.md);
		// here a stream only has to go on, on a loaded machine too.
		if s.maxGap > 5*time.Second {
			t.Errorf("%s: a pause of %s in the stream", s.name, s.maxGap)
		}
		t.Logf("%s: %d counters, longest pause %s", s.name, s.got.Load(), s.maxGap)
	}
	close(backend.stopHalf)
	for _, h := range halves {
		select {
		case <-h.done:
		case <-time.After(20 * time.Second):
			t.Fatal("half-closed client: no EOF from the backend")
		}
		if h.err != nil || h.got.Load() < 1000 {
			t.Errorf("half-closed client: %d counters, %v", h.got.Load(), h.err)
		}
	}
	// The draining connections end; their events arrive in the new
	// process's stream, and the old process exits.
	for _, s := range draining {
		s.finish(t)
		s.c.Close()
	}
	for _, c := range idle {
		c.Close()
	}
	testutil.WaitFor(t, "the old process to exit", func() bool { return d.cmd.ProcessState != nil || syscall.Kill(oldPID, 0) != nil || isZombie(oldPID) })
	testutil.WaitFor(t, "the table to empty", func() bool { return len(listConns(t, socket)) == 0 })

	// Events: gap-free from 1, each conid once, the follower saw them all
	// across the upgrade, and so did the event log.
	seen, last := ringEvents(t, socket)
	for id, n := range seen {
		if n > 1 {
			t.Errorf("conid %d closed %d times", id, n)
		}
	}
	for id, b := range before {
		if seen[id] == 0 && id != idleIn2.ConnID {
			t.Errorf("no closed event for conid %d (%s %s)", id, b.Listener, b.Direction)
		}
	}
	if seen[idleIn2.ConnID] > 0 {
		t.Errorf("conid %d had its closed event turned off, but it was published", idleIn2.ConnID)
	}
	testutil.WaitFor(t, "the follower to see every event", func() bool { return strings.Contains(evOut.String(), fmt.Sprintf(`"seq":%d,`, last)) })
	var fseq []uint64
	for _, l := range strings.Split(strings.TrimSpace(evOut.String()), "\n") {
		var e rpc.Event
		if err := json.Unmarshal([]byte(l), &e); err != nil {
			t.Fatalf("follower line %q: %v", l, err)
		}
		fseq = append(fseq, e.Seq)
	}
	for i, s := range fseq {
		if s != uint64(i+1) {
			t.Fatalf("follower: line %d has seq %d (stderr: %s)", i, s, evErr.String())
		}
	}
	_, byConid := readEventLog(t, evlog)
	for id := range seen {
		if byConid[id] != 1 {
			t.Errorf("event log has conid %d %d times", id, byConid[id])
		}
	}
	t.Logf("events seq 1..%d; follower stderr: %q", last, evErr.String())
}

// isZombie reports whether pid has exited but is not yet reaped.
func isZombie(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true
	}
	i := bytes.LastIndexByte(b, ')')
	return i > 0 && i+2 < len(b) && b[i+2] == 'Z'
}
