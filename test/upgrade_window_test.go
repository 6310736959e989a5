package test

import (
	"bufio"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/tcpops/tcpops/internal/testutil"
	"github.com/tcpops/tcpops/rpc"
)

// TestUpgradeChangesBetweenTheParts: an upgrade sends the sockets and
// their state while the old process still relays them, and freezes them
// only for what changed since. Connections that end (one reset, so that
// its socket has no peer address left when the new process checks it),
// half-close or move bytes in between (here while the new process holds
// before its check) reach the new process as they are at the freeze: the
// ended ones are not handed, their peers get their FIN, each has one
// closed event; the others lose and repeat nothing. Metrics are the old
// process's until the new one has taken over.
func TestUpgradeChangesBetweenTheParts(t *testing.T) {
	mport, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	metricsURL := "http://127.0.0.1:" + mport + "/metrics"
	h := startHeld(t, "hold", "--lifetime", "10m", "--metrics", "127.0.0.1:"+mport)
	holdBin, marker, backend, relayAddr, socket, evlog := h.bin, h.marker, h.backend, h.relayAddr, h.socket, h.evlog
	var newPID int
	t.Cleanup(func() {
		if newPID > 0 {
			syscall.Kill(newPID, syscall.SIGKILL)
		}
	})

	dial := func(mode string) net.Conn {
		c, err := net.Dial("tcp", relayAddr)
		if err != nil {
			t.Fatal(err)
		}
		c.Write([]byte(mode))
		return c
	}
	echoing := func() net.Conn {
		c := dial("e")
		c.Write([]byte("ping"))
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.ReadFull(c, make([]byte, 4)); err != nil {
			t.Fatal(err)
		}
		c.SetReadDeadline(time.Time{})
		return c
	}
	closer := echoing()   // the client closes it in between
	expiring := echoing() // its lifetime runs out in between
	idle := echoing()
	busy := startCounterStream("relayed", dial("e"))
	half := dial("h") // the client half-closes it in between; the backend then streams
	halfGot := make(chan error, 1)
	var halfN atomic.Uint32
	go func() {
		r := bufio.NewReader(half)
		var b [4]byte
		for {
			half.SetReadDeadline(time.Now().Add(60 * time.Second))
			if _, err := io.ReadFull(r, b[:]); err != nil {
				if errors.Is(err, io.EOF) {
					err = nil
				}
				halfGot <- err
				return
			}
			if v := binary.BigEndian.Uint32(b[:]); v != halfN.Load() {
				halfGot <- fmt.Errorf("half-closed client: counter %d where %d was due", v, halfN.Load())
				return
			}
			halfN.Add(1)
		}
	}()
	busy.progress(t, 500)
	testutil.WaitFor(t, "every connection in the table", func() bool { return len(listConns(t, socket)) == 5*2 })
	before := listConns(t, socket)
	idOf := func(c net.Conn) (in, out uint64) {
		for id, cn := range before {
			if cn.Direction == "in" && cn.Remote == c.LocalAddr().String() && cn.Local == c.RemoteAddr().String() {
				return id, cn.Peer
			}
		}
		t.Fatalf("%s not listed", c.LocalAddr())
		return 0, 0
	}
	closerIn, closerOut := idOf(closer)
	expIn, expOut := idOf(expiring)
	callDaemon(t, socket, rpc.MethodLifetime, map[string]any{"conid": expIn, "lifetime": 1}, nil)
	callDaemon(t, socket, rpc.MethodLifetime, map[string]any{"conid": expOut, "lifetime": 1}, nil)

	// The upgrade, held by the new process once it has every socket.
	type result struct {
		out []byte
		err error
	}
	done := make(chan result, 1)
	go func() {
		out, err := exec.Command(filepath.Join(binDir, "tcpopsctl"), "-s", socket, "-o", "json", "upgrade", "--binary", holdBin).Output()
		done <- result{out, err}
	}()
	testutil.WaitFor(t, "the new process to hold", func() bool {
		_, err := os.Stat(marker + ".waiting")
		return err == nil
	})
	scrapeAccepted(t, metricsURL, 5)
	closer.(*net.TCPConn).SetLinger(0)
	closer.Close() // a reset
	half.(*net.TCPConn).CloseWrite()
	// The old process still relays: it passes the half-close on (the
	// backend starts streaming), relays the busy stream, ends the closed
	// pair and the expired one; its event log says so.
	busy.progress(t, 300)
	testutil.WaitFor(t, "the half-closed client to receive", func() bool { return halfN.Load() > 50 })
	testutil.WaitFor(t, "the old process to end two pairs", func() bool {
		_, byConid := readEventLog(t, evlog)
		return byConid[closerIn] == 1 && byConid[closerOut] == 1 && byConid[expIn] == 1 && byConid[expOut] == 1
	})
	if err := os.Remove(marker + ".waiting"); err != nil {
		t.Fatal(err)
	}
	var r result
	select {
	case r = <-done:
	case <-time.After(60 * time.Second):
		t.Fatal("upgrade: no answer within 60 s")
	}
	if r.err != nil {
		t.Fatalf("upgrade: %v %s", r.err, r.out)
	}
	var res rpc.UpgradeResult
	if err := json.Unmarshal(r.out, &res); err != nil {
		t.Fatalf("upgrade result %s: %v", r.out, err)
	}
	newPID = res.NewPID
	if res.HandedOver != len(before)-4 {
		t.Errorf("handed over %d entries, want %d: the two pairs that ended in between stay out", res.HandedOver, len(before)-4)
	}

	// The expired pair's client gets its FIN from the old process's
	// close, now that the new one has let go of its copy of the socket.
	expiring.SetReadDeadline(time.Now().Add(10 * time.Second))
	if n, err := expiring.Read(make([]byte, 1)); !errors.Is(err, io.EOF) {
		t.Errorf("client of the expired pair: read %d, %v; want EOF", n, err)
	}
	after := listConns(t, socket)
	for _, id := range []uint64{closerIn, closerOut, expIn, expOut} {
		if _, ok := after[id]; ok {
			t.Errorf("conid %d ended before the freeze but is in the new table", id)
		}
	}
	for id, b := range before {
		if id == closerIn || id == closerOut || id == expIn || id == expOut {
			continue
		}
		a, ok := after[id]
		if !ok {
			t.Errorf("conid %d missing after the upgrade", id)
			continue
		}
		if a.BytesIn < b.BytesIn || a.BytesOut < b.BytesOut || a.Peer != b.Peer {
			t.Errorf("conid %d: before %+v, after %+v", id, b, a)
		}
	}
	// The half-closed pair: the client's FIN stays passed on, the
	// backend's counters go on through the new process until it closes.
	var halfState string
	for _, cn := range after {
		if cn.Direction == "in" && cn.Remote == half.LocalAddr().String() && cn.Local == half.RemoteAddr().String() {
			halfState = cn.StateName
		}
	}
	if halfState == "" || !strings.Contains(halfState, "eof") {
		t.Errorf("half-closed client's leg after the upgrade: state %q, want eof", halfState)
	}
	n0 := halfN.Load()
	testutil.WaitFor(t, "counters through the new process", func() bool { return halfN.Load() > n0+50 })
	close(backend.stopHalf)
	select {
	case err := <-halfGot:
		if err != nil {
			t.Error(err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("half-closed client: no EOF from the backend")
	}
	idle.SetDeadline(time.Now().Add(5 * time.Second))
	idle.Write([]byte("pong"))
	if b := make([]byte, 4); func() error { _, err := io.ReadFull(idle, b); return err }() != nil || string(b) != "pong" {
		t.Errorf("idle client after the upgrade: %q", b)
	}
	busy.finish(t)
	idle.Close()
	testutil.WaitFor(t, "the table to empty", func() bool { return len(listConns(t, socket)) == 0 })

	// One event per conid, gap-free, in the ring and in the event log.
	seen, _ := ringEvents(t, socket)
	for id := range before {
		if seen[id] != 1 {
			t.Errorf("conid %d has %d closed events, want 1", id, seen[id])
		}
	}
	_, byConid := readEventLog(t, evlog)
	for id := range before {
		if byConid[id] != 1 {
			t.Errorf("event log has conid %d %d times, want 1", id, byConid[id])
		}
	}
}

// TestSIGTERMDuringAnUpgrade: a stop that comes while an upgrade has not
// sent go aborts it and stops as usual: every connection closes with
// reason shutdown and one event, the peers get their FIN, and no new
// process serves. Both while the new process checks the sockets (it holds
// copies of them) and while the old one has them frozen; metrics are the
// old process's meanwhile.
func TestSIGTERMDuringAnUpgrade(t *testing.T) {
	for _, fault := range []string{"hold", "hold-final"} {
		t.Run(fault, func(t *testing.T) { testSIGTERMDuringAnUpgrade(t, fault) })
	}
}

func testSIGTERMDuringAnUpgrade(t *testing.T, fault string) {
	mport, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	h := startHeld(t, fault, "--metrics", "127.0.0.1:"+mport)
	holdBin, marker, relayAddr, socket, evlog, d := h.bin, h.marker, h.relayAddr, h.socket, h.evlog, h.d
	var clients []net.Conn
	for range 5 {
		c, err := net.Dial("tcp", relayAddr)
		if err != nil {
			t.Fatal(err)
		}
		c.Write([]byte("eping"))
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.ReadFull(c, make([]byte, 4)); err != nil {
			t.Fatal(err)
		}
		clients = append(clients, c)
	}
	before := listConns(t, socket)
	done := make(chan error, 1)
	go func() {
		done <- exec.Command(filepath.Join(binDir, "tcpopsctl"), "-s", socket, "upgrade", "--binary", holdBin).Run()
	}()
	testutil.WaitFor(t, "the new process to hold", func() bool {
		_, err := os.Stat(marker + ".waiting")
		return err == nil
	})
	// With hold-final the new process has built all it serves but for
	// the handed state: it must not answer metrics yet.
	scrapeAccepted(t, "http://127.0.0.1:"+mport+"/metrics", 5)
	d.cmd.Process.Signal(syscall.SIGTERM)
	os.Remove(marker + ".waiting")
	exited := make(chan error, 1)
	go func() { exited <- d.cmd.Wait() }()
	select {
	case err := <-exited:
		if err != nil {
			t.Errorf("daemon stopped with %v, want status 0", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the daemon did not stop within 30 s of SIGTERM during an upgrade")
	}
	select {
	case err := <-done:
		var ee *exec.ExitError
		if !errors.As(err, &ee) {
			t.Errorf("upgrade during a stop: %v, want a failure", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("upgrade: no answer within 30 s")
	}
	for i, c := range clients {
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		if n, err := c.Read(make([]byte, 1)); !errors.Is(err, io.EOF) {
			t.Errorf("client %d: read %d, %v; want EOF", i, n, err)
		}
	}
	// Nobody took over.
	testutil.WaitFor(t, "the relay port to refuse", func() bool {
		c, err := net.DialTimeout("tcp", relayAddr, time.Second)
		if err == nil {
			c.Close()
		}
		return err != nil
	})
	_, byConid := readEventLog(t, evlog)
	for id := range before {
		if byConid[id] != 1 {
			t.Errorf("event log has conid %d %d times, want 1", id, byConid[id])
		}
	}
}

// scrapeAccepted scrapes url 10 times while both processes of an upgrade
// hold the metrics socket: each answer must be the old process's table
// (want connections accepted), never the new one's, empty before go.
func scrapeAccepted(t *testing.T, url string, want int) {
	t.Helper()
	line := fmt.Sprintf("\ntcpops_connections_accepted_total %d\n", want)
	for i := range 10 {
		resp, err := http.Get(url)
		if err != nil {
			t.Fatalf("scrape %d during the upgrade: %v", i, err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if !strings.Contains(string(body), line) {
			t.Fatalf("scrape %d during the upgrade: accepted total is not %d:\n%s", i, want, grepLines(string(body), "accepted_total"))
		}
	}
}

// grepLines returns the lines of s that contain sub.
func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// held is a daemon relaying to an upgrade backend, with an event log, and
// a build of tcpops made to hold (handoverFault) for upgrading it to.
type held struct {
	bin, marker, relayAddr, socket, evlog string
	backend                               *upgradeBackend
	d                                     *daemonProc
}

// startHeld builds the fault variant and starts the daemon (with args
// besides its relay listener and event log); the new process's hold is
// released by removing marker+".waiting".
func startHeld(t *testing.T, fault string, args ...string) *held {
	t.Helper()
	h := &held{bin: buildVariant(t, "tcpops-"+fault, "github.com/tcpops/tcpops/rpc.BuildVersion=9.9.9-"+fault,
		"github.com/tcpops/tcpops/daemon.handoverFault="+fault)}
	dir, _ := os.MkdirTemp("", "tcpops")
	t.Cleanup(func() { os.RemoveAll(dir) })
	h.marker = filepath.Join(dir, "hold")
	t.Setenv("TCPOPS_TEST_HOLD", h.marker)
	h.backend = startUpgradeBackend(t)
	port, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	h.relayAddr = "127.0.0.1:" + port
	h.socket, h.evlog = filepath.Join(dir, "s"), filepath.Join(dir, "events.log")
	h.d = startDaemon(t, h.socket, append([]string{"--listen", "tcp://" + h.relayAddr + "?backend=" + h.backend.ln.Addr().String() + "&name=relay",
		"--event-log", h.evlog}, args...)...)
	return h
}

// ringEvents reads the daemon's event ring, fails the test on a gap in
// seq from 1, and counts the events of each conid.
func ringEvents(t *testing.T, socket string) (byConid map[uint64]int, last uint64) {
	t.Helper()
	var all rpc.EventsResult
	callDaemon(t, socket, rpc.MethodEvents, nil, &all)
	byConid = map[uint64]int{}
	for i, e := range all.Events {
		if e.Seq != uint64(i+1) {
			t.Fatalf("event %d has seq %d: the ring has a gap", i, e.Seq)
		}
		byConid[e.ConnID]++
		last = e.Seq
	}
	return byConid, last
}
