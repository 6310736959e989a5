package daemon

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tcpops/tcpops/conn"
	"github.com/tcpops/tcpops/relay"
	"github.com/tcpops/tcpops/rpc"
	"github.com/tcpops/tcpops/sock"
)

// An upgrade hands this process's sockets to a new one without dropping
// a connection (tcpops.upgrade, SIGUSR2, systemctl reload):
//
//  1. The old process starts the new binary with the same arguments and
//     one end of a socket pair (link.go) as descriptor 3, named by
//     TCPOPS_UPGRADE_FD. The new one parses its configuration and says
//     hello.
//  2. The old one stops accepting (listeners and control socket stay open:
//     clients wait in the backlog) and, while it still relays them, sends
//     every descriptor (listeners, control socket, metrics socket, plain
//     TCP connections) with the state document of that moment
//     (relay.Prepare). The new one checks it all (format, counts, each
//     descriptor against what the document says it is, its own
//     certificates) and builds what it needs to serve.
//  3. Then the pause: the old one freezes every plain TCP connection
//     (relay.Freeze), seals its event ring (later events are numbered by
//     the new process) and sends what changed since the first part: the
//     connections still handed, the entries that changed, the bytes in
//     flight, the table and its newer events, the connections that stay.
//     The new one merges it and says ready, or refuses. Until the old one
//     answers go, nothing is touched: on a refusal, a crash, or a timeout
//     the old process resumes everything. A connection the old process
//     closes between the two parts sends its FIN or RST when the new one
//     lets go of its copy of the descriptor, at the second part.
//  4. After go, the new one serves; the old one drops what it handed,
//     ends its control clients (they reconnect), keeps its TLS and
//     WebSocket connections until they end or the drain timeout, and
//     sends each closed event over the link for the new one to publish.

// handoverFormat is the version of the state document; a new process
// takes over only its own. A string, so that a test build can set it with
// -ldflags -X.
var handoverFormat = "2"

// handoverFault makes a test build misbehave on purpose during a
// handover (set with -ldflags -X): "crash" exits after the state arrived;
// "hold" waits, before it checks the first part (the old process still
// relaying), while the file named by TCPOPS_TEST_HOLD with .waiting
// appended, which it creates, exists (30 s at most); "hold-final" does so
// before it says ready (the old process's plain TCP connections frozen);
// "refuse-final" refuses the final part.
var handoverFault = ""

// holdForTest is the "hold" fault.
func holdForTest() {
	path := os.Getenv("TCPOPS_TEST_HOLD") + ".waiting"
	if os.WriteFile(path, nil, 0o600) != nil {
		return
	}
	for end := time.Now().Add(30 * time.Second); time.Now().Before(end); time.Sleep(5 * time.Millisecond) {
		if _, err := os.Stat(path); err != nil {
			return
		}
	}
}

// upgradeEnv names the link's descriptor in a new process.
const upgradeEnv = "TCPOPS_UPGRADE_FD"

// DefaultDrainTimeout bounds how long an old process keeps its TLS and
// WebSocket connections after an upgrade.
const DefaultDrainTimeout = 10 * time.Minute

// handoverDoc is the state document.
type handoverDoc struct {
	Format    int              `json:"format"`
	Version   string           `json:"version"`
	PID       int              `json:"pid"`
	Table     conn.TableState  `json:"table"`
	Listeners []handedSocket   `json:"listeners"`
	Control   *handedSocket    `json:"control,omitempty"`
	Metrics   *handedSocket    `json:"metrics,omitempty"`
	Conns     []handedConn     `json:"conns"`
	Draining  []conn.ConnState `json:"draining"`
	Counts    handoverCounts   `json:"counts"`
}

// handedSocket is a listening socket: what it is and its descriptor's
// index.
type handedSocket struct {
	URL  string `json:"url,omitempty"`
	Addr string `json:"addr"`
	FD   int    `json:"fd"`
}

// handedConn is a plain TCP connection with its descriptors' indexes.
type handedConn struct {
	relay.Handed
	FDs []int `json:"fds"`
}

// handoverCounts are checked against what arrived.
type handoverCounts struct {
	FDs       int `json:"fds"`
	Listeners int `json:"listeners"`
	Units     int `json:"units"`
	Entries   int `json:"entries"`
	Draining  int `json:"draining"`
}

func formatNumber() int {
	n, _ := strconv.Atoi(handoverFormat)
	return n
}

// upgradeState is the Daemon's part in upgrades, old side and new.
type upgradeState struct {
	mu        sync.Mutex    // one upgrade at a time
	handedOff chan struct{} // closed once a new process took over

	// A stop (SIGTERM) aborts an upgrade that has not sent go: it closes
	// the link, and the upgrade rolls back.
	pmu     sync.Mutex
	pending *link // the link of the upgrade in progress
	goSent  bool
	stopped bool // no upgrade starts any more
	drain   time.Duration
	link    *link
	fwd     *forwarder

	// Of a new process: the old one's link and who waits for the close
	// of a draining connection it asked for.
	oldPID   int
	waitMu   sync.Mutex
	waiters  map[uint64]chan conn.Event
	oldEnded chan struct{}
}

// forwarder queues the events of an old process, sealed, until they go
// over the link (or back into the ring if the handover fails).
type forwarder struct {
	mu   sync.Mutex
	q    []conn.Event
	wake chan struct{}
}

func newForwarder() *forwarder { return &forwarder{wake: make(chan struct{}, 1)} }

func (f *forwarder) add(e conn.Event) {
	f.mu.Lock()
	f.q = append(f.q, e)
	f.mu.Unlock()
	select {
	case f.wake <- struct{}{}:
	default:
	}
}

func (f *forwarder) take() []conn.Event {
	f.mu.Lock()
	defer f.mu.Unlock()
	q := f.q
	f.q = nil
	return q
}

// send sends what is queued.
func (f *forwarder) send(l *link) error {
	for _, e := range f.take() {
		if err := l.sendJSON(eventMsg{Type: "event", Event: e}); err != nil {
			return err
		}
	}
	return nil
}

type eventMsg struct {
	Type  string     `json:"type"`
	Event conn.Event `json:"event"`
}

type helloMsg struct {
	Type    string `json:"type"`
	PID     int    `json:"pid"`
	Version string `json:"version"`
	Format  int    `json:"format"`
}

type stateMsg struct {
	Type     string `json:"type"`
	Format   int    `json:"format"`
	FDs      int    `json:"fds"`
	DocBytes int    `json:"doc_bytes"`
}

type closeMsg struct {
	Type  string `json:"type"`
	ID    uint64 `json:"conid"`
	Reset bool   `json:"reset"`
}

// paused are the listening sockets of a process that stopped accepting:
// duplicates that keep each socket, and its backlog, open.
type paused struct {
	listeners []pausedListener
	control   *os.File
	metrics   *os.File
}

type pausedListener struct {
	r *running
	f *os.File
}

// Upgrade hands everything over to a new process running binary (default:
// this executable's path, read again from disk). On success the old
// process drains its TLS and WebSocket connections for at most drain and
// then exits (Run returns); on error it serves on as before.
func (d *Daemon) Upgrade(binary string, drain time.Duration) (rpc.UpgradeResult, error) {
	if !d.up.mu.TryLock() {
		return rpc.UpgradeResult{}, errors.New("an upgrade or a reload is already running")
	}
	defer d.up.mu.Unlock()
	select {
	case <-d.up.handedOff:
		return rpc.UpgradeResult{}, errors.New("this process has handed over already and is draining")
	default:
	}
	if drain <= 0 {
		drain = DefaultDrainTimeout
	}
	if binary == "" {
		exe, err := os.Executable()
		if err != nil {
			return rpc.UpgradeResult{}, fmt.Errorf("finding this executable: %w", err)
		}
		binary = exe
	}
	if err := unix.Access(binary, unix.X_OK); err != nil {
		return rpc.UpgradeResult{}, fmt.Errorf("binary %s: %w", binary, err)
	}
	started := time.Now()
	l, childEnd, err := newLinkPair()
	if err != nil {
		return rpc.UpgradeResult{}, err
	}
	d.up.pmu.Lock()
	if d.up.stopped {
		d.up.pmu.Unlock()
		l.Close()
		childEnd.Close()
		return rpc.UpgradeResult{}, errors.New("the daemon is stopping")
	}
	d.up.pending, d.up.goSent = l, false
	d.up.pmu.Unlock()
	defer func() {
		d.up.pmu.Lock()
		d.up.pending = nil
		d.up.pmu.Unlock()
	}()
	cmd := exec.Command(binary, os.Args[1:]...)
	cmd.ExtraFiles = []*os.File{childEnd}
	cmd.Env = append(childEnv(), upgradeEnv+"=3")
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	err = cmd.Start()
	childEnd.Close()
	if err != nil {
		l.Close()
		return rpc.UpgradeResult{}, fmt.Errorf("starting %s: %w", binary, err)
	}
	exited := make(chan struct{})
	go func() {
		cmd.Wait()
		close(exited)
	}()
	fail := func(err error) (rpc.UpgradeResult, error) {
		l.Close()
		select {
		case <-exited:
		case <-time.After(2 * time.Second):
			cmd.Process.Kill()
			<-exited
		}
		var re *refusedError
		if !errors.As(err, &re) && cmd.ProcessState != nil && !cmd.ProcessState.Success() {
			err = fmt.Errorf("the new process (pid %d) ended during the handover (%s): %w", cmd.Process.Pid, cmd.ProcessState, err)
		}
		d.log.Error("upgrade failed; this process serves on", "binary", binary, "err", err)
		return rpc.UpgradeResult{}, fmt.Errorf("upgrade to %s failed, pid %d serves on: %w", binary, os.Getpid(), err)
	}
	var hello helloMsg
	if err := l.expect(time.Now().Add(10*time.Second), "hello", &hello); err != nil {
		return fail(fmt.Errorf("no hello from the new process: %w", err))
	}
	d.log.Info("upgrade: new process started", "pid", hello.PID, "version", hello.Version, "binary", binary)
	notify("RELOADING=1")
	p, err := d.pause()
	if err != nil {
		notify("READY=1")
		return fail(err)
	}
	phases := []any{"new_process", time.Since(started).Round(time.Millisecond)}
	mark := func(name string, since time.Time) time.Time {
		now := time.Now()
		phases = append(phases, name, now.Sub(since).Round(time.Millisecond))
		return now
	}
	// First the sockets and their state while this process still relays
	// them: the new one checks them at leisure.
	t0 := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), d.Relay.Config().DialTimeout+time.Second)
	pr, err := d.Relay.Prepare(ctx)
	cancel()
	if err != nil {
		d.unpause(p)
		notify("READY=1")
		return fail(err)
	}
	t0 = mark("prepare", t0)
	doc, fds := d.buildDoc(p, pr.Handed)
	doc.Table.Events, doc.Table.NextSeq = d.Table.Events().Since(0)
	doc.Table.NextSeq++
	b, err := json.Marshal(doc)
	if err == nil {
		err = d.sendState(l, "state", b, fds)
	}
	if err == nil {
		err = l.expect(time.Now().Add(20*time.Second), "checked", nil)
	}
	if err != nil {
		d.unpause(p)
		notify("READY=1")
		return fail(err)
	}
	t0 = mark("sent_until_checked", t0)
	// Then the pause: every plain TCP connection frozen, and what changed
	// since handed over.
	ctx, cancel = context.WithTimeout(context.Background(), d.Relay.Config().DialTimeout+time.Second)
	fr, err := d.Relay.Freeze(ctx, pr)
	cancel()
	if err != nil {
		d.unpause(p)
		notify("READY=1")
		return fail(err)
	}
	t0 = mark("freeze", t0)
	fw := newForwarder()
	nextSeq, kept := d.Table.Events().Seal(fw.add)
	rollback := func(err error) (rpc.UpgradeResult, error) {
		fr.Resume()
		d.Table.Events().Unseal(fw.take)
		d.unpause(p)
		notify("READY=1")
		return fail(err)
	}
	fin := d.finalDoc(fr, doc.Table.NextSeq, nextSeq, kept, time.Now().Add(drain))
	b, err = json.Marshal(fin)
	if err != nil {
		return rollback(err)
	}
	t0 = mark("final_built", t0)
	if err := d.sendState(l, "final", b, nil); err != nil {
		return rollback(err)
	}
	if err := l.expect(time.Now().Add(20*time.Second), "ready", nil); err != nil {
		return rollback(err)
	}
	t0 = mark("final_sent_until_ready", t0)
	// The point of no return: once go is sent the new process owns it all.
	d.up.pmu.Lock()
	if d.up.stopped {
		d.up.pmu.Unlock()
		return rollback(errors.New("the daemon is stopping (SIGTERM)"))
	}
	err = l.sendJSON(map[string]string{"type": "go"})
	d.up.goSent = err == nil
	d.up.pmu.Unlock()
	if err != nil {
		return rollback(err)
	}
	mark("go_sent", t0)
	d.commitSockets(p)
	for _, c := range d.Table.Open() {
		c.KeepClosedEvent()
	}
	// Followers read to the last seq numbered here and are disconnected:
	// they go on with the new process (tcpopsctl events -f reconnects).
	d.Table.Events().Close()
	d.up.link, d.up.fwd, d.up.drain = l, fw, drain
	go d.forwardEvents()
	t0 = time.Now()
	var running helloMsg
	if err := l.expect(time.Now().Add(20*time.Second), "running", &running); err != nil {
		d.log.Error("upgrade: the new process took over but did not report running", "pid", hello.PID, "err", err)
	}
	mark("go_until_relaying", t0)
	// Only now, not to compete with the new process's start: the handed
	// connections leave this process (they stayed frozen meanwhile).
	fr.Commit()
	go d.serveOldLink()
	close(d.up.handedOff)
	res := rpc.UpgradeResult{OldPID: os.Getpid(), NewPID: hello.PID, HandedOver: fin.Counts.Entries, Draining: len(fin.Draining)}
	d.log.Info("upgrade: handed over", append([]any{"new_pid", hello.PID, "connections", res.HandedOver, "draining", res.Draining,
		"took", time.Since(started).Round(time.Millisecond), "drain_timeout", drain}, phases...)...)
	return res, nil
}

// stopUpgrades refuses upgrades from now on and aborts the one in
// progress unless it has sent go; then it waits for that one to end. It
// reports whether a new process has taken over.
func (d *Daemon) stopUpgrades() bool {
	d.up.pmu.Lock()
	d.up.stopped = true
	if d.up.pending != nil && !d.up.goSent {
		d.up.pending.Close()
	}
	d.up.pmu.Unlock()
	d.up.mu.Lock()
	d.up.mu.Unlock()
	select {
	case <-d.up.handedOff:
		return true
	default:
		return false
	}
}

// childEnv is this process's environment for the new one, without what
// systemd gave this process alone.
func childEnv() []string {
	var out []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "LISTEN_") || strings.HasPrefix(kv, upgradeEnv+"=") {
			continue
		}
		out = append(out, kv)
	}
	return out
}

// pause stops every accept loop, keeping the sockets open.
func (d *Daemon) pause() (*paused, error) {
	p := &paused{}
	d.mu.Lock()
	rs := make([]*running, 0, len(d.running))
	for _, r := range d.running {
		rs = append(rs, r)
	}
	d.mu.Unlock()
	for _, r := range rs {
		f, err := r.bound.File()
		if err != nil {
			p.close()
			return nil, fmt.Errorf("listener %s: %w", r.Name, err)
		}
		p.listeners = append(p.listeners, pausedListener{r: r, f: f})
	}
	if d.metricsLn != nil {
		f, err := d.metricsLn.(*net.TCPListener).File()
		if err != nil {
			p.close()
			return nil, fmt.Errorf("metrics socket: %w", err)
		}
		p.metrics = f
	}
	f, err := d.ctl.File()
	if err != nil {
		p.close()
		return nil, fmt.Errorf("control socket: %w", err)
	}
	p.control = f
	d.ctl.SetUnlinkOnClose(false)
	d.stopCtl()
	<-d.ctlDone
	for _, pl := range p.listeners {
		pl.r.stop()
		<-pl.r.done
	}
	return p, nil
}

func (p *paused) close() {
	for _, pl := range p.listeners {
		pl.f.Close()
	}
	if p.control != nil {
		p.control.Close()
	}
	if p.metrics != nil {
		p.metrics.Close()
	}
}

// unpause accepts again on the paused sockets.
func (d *Daemon) unpause(p *paused) {
	for _, pl := range p.listeners {
		d.mu.Lock()
		delete(d.running, pl.r.URL)
		d.mu.Unlock()
		b, err := d.Relay.ListenFile(pl.r.Listener, pl.f)
		if err == nil {
			err = d.serveListener(pl.r.Listener, b)
		}
		if err != nil {
			d.log.Error("listener lost while resuming after a failed upgrade", "listener", pl.r.Name, "err", err)
		}
	}
	ln, err := net.FileListener(p.control)
	if err != nil {
		d.log.Error("control socket lost while resuming after a failed upgrade", "err", err)
	} else {
		ul := ln.(*net.UnixListener)
		ul.SetUnlinkOnClose(true)
		d.serveControl(ul)
	}
	p.close()
}

// commitSockets gives up the handed listening sockets.
func (d *Daemon) commitSockets(p *paused) {
	p.close()
	d.mu.Lock()
	d.running = map[string]*running{}
	d.Listeners = nil
	d.mu.Unlock()
	if d.stopMetrics != nil {
		d.stopMetrics()
	}
}

// buildDoc writes the state document of the sockets, and of the
// connections handed with their entries, and lists the descriptors it
// names. The table and the draining connections are the caller's to add.
func (d *Daemon) buildDoc(p *paused, handed []*relay.Handed) (*handoverDoc, []int) {
	doc := &handoverDoc{Format: formatNumber(), Version: rpc.Build().Version, PID: os.Getpid()}
	var fds []int
	add := func(fd int) int {
		fds = append(fds, fd)
		return len(fds) - 1
	}
	for _, pl := range p.listeners {
		doc.Listeners = append(doc.Listeners, handedSocket{URL: pl.r.URL, Addr: pl.r.Bound, FD: add(rawFD(pl.f))})
	}
	doc.Control = &handedSocket{Addr: d.socket, FD: add(rawFD(p.control))}
	if p.metrics != nil {
		doc.Metrics = &handedSocket{Addr: d.MetricsAddr, FD: add(rawFD(p.metrics))}
	}
	for _, h := range handed {
		hc := handedConn{Handed: *h}
		for _, f := range h.FDs() {
			hc.FDs = append(hc.FDs, add(f.Sysfd()))
		}
		doc.Conns = append(doc.Conns, hc)
		doc.Counts.Entries += len(h.Conns)
	}
	doc.Counts.FDs, doc.Counts.Listeners, doc.Counts.Units = len(fds), len(doc.Listeners), len(doc.Conns)
	return doc, fds
}

// rawFD is f's descriptor number, for sending. Not f.Fd(): that puts the
// descriptor in blocking mode, and with it the open file this process
// still serves on (the duplicate shares it), so that a metrics socket
// kept after a failed upgrade blocked its accept and its close.
func rawFD(f *os.File) int {
	n := -1
	if rc, err := f.SyscallConn(); err == nil {
		rc.Control(func(fd uintptr) { n = int(fd) })
	}
	return n
}

// drainingStates describes the connections that stay with this process,
// marked as draining until until: those neither closing nor held for
// the new process.
func (d *Daemon) drainingStates(until time.Time) []conn.ConnState {
	var out []conn.ConnState
	for _, c := range d.Table.Open() {
		s := c.Export()
		s.Draining = &conn.Draining{PID: os.Getpid(), Until: until, Peer: s.Peer}
		s.Peer = 0
		out = append(out, s)
	}
	return out
}

// finalDoc is the second part of an upgrade's state, sent once the plain
// TCP connections are frozen: which of the first part's are handed and
// what changed in them since, the table (its events: those numbered after
// the first part's), and the connections that stay here.
type finalDoc struct {
	relay.Final
	Table conn.TableState `json:"table"`
	// OldestSeq is the oldest event the ring keeps: the first part's
	// events before it were overwritten since.
	OldestSeq uint64           `json:"oldest_seq"`
	Draining  []conn.ConnState `json:"draining"`
	Counts    handoverCounts   `json:"counts"`
}

// finalDoc writes the second part: firstNext is the seq the first part's
// events stopped before, nextSeq and kept what sealing the ring gave.
func (d *Daemon) finalDoc(fr *relay.Frozen, firstNext, nextSeq uint64, kept []conn.Event, until time.Time) *finalDoc {
	fin := &finalDoc{Final: fr.Final(), Table: d.Table.Export(), OldestSeq: nextSeq}
	fin.Table.NextSeq = nextSeq
	if len(kept) > 0 {
		fin.OldestSeq = kept[0].Seq
	}
	for _, e := range kept {
		if e.Seq >= firstNext {
			fin.Table.Events = append(fin.Table.Events, e)
		}
	}
	fin.Draining = d.drainingStates(until)
	fin.Counts.Units, fin.Counts.Entries, fin.Counts.Draining = fr.Units(), fr.Entries(), len(fin.Draining)
	return fin
}

// sendState sends a header of type typ, the descriptors, the document and
// its end.
func (d *Daemon) sendState(l *link, typ string, doc []byte, fds []int) error {
	if err := l.sendJSON(stateMsg{Type: typ, Format: formatNumber(), FDs: len(fds), DocBytes: len(doc)}); err != nil {
		return err
	}
	if err := l.sendFDs(fds); err != nil {
		return err
	}
	if err := l.sendDoc(doc); err != nil {
		return err
	}
	return l.sendJSON(map[string]string{"type": "end"})
}

// forwardEvents sends this old process's closed events to the new one.
func (d *Daemon) forwardEvents() {
	for range d.up.fwd.wake {
		if err := d.up.fwd.send(d.up.link); err != nil {
			d.log.Error("upgrade: forwarding a closed event to the new process failed", "err", err)
			return
		}
	}
}

// serveOldLink closes draining connections the new process asks to.
func (d *Daemon) serveOldLink() {
	for {
		m, err := d.up.link.recv(time.Time{})
		if err != nil {
			return
		}
		closeAll(m.fds)
		if m.typ != "close" {
			continue
		}
		var cm closeMsg
		if json.Unmarshal(m.payload, &cm) != nil {
			continue
		}
		if c, ok := d.Table.Get(cm.ID); ok {
			if cm.Reset {
				c.Reset(conn.ReasonLocal)
			} else {
				c.Close(conn.ReasonLocal, nil)
			}
		}
	}
}

// drainOld runs in an old process after the handover: its TLS and
// WebSocket connections go on until they end, ctx ends (SIGTERM) or the
// drain timeout; what is left is then closed with reason shutdown, the
// last events go to the new process, and the process ends. The control
// socket file stays: it is the new process's.
func (d *Daemon) drainOld(ctx context.Context) error {
	if d.bus != nil {
		// The new process answers for the host over NATS now.
		d.bus.StopServing()
	}
	deadline := time.NewTimer(d.up.drain)
	defer deadline.Stop()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
wait:
	for d.Table.Len() > 0 {
		select {
		case <-ctx.Done():
			break wait
		case <-deadline.C:
			break wait
		case <-tick.C:
		}
	}
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	n, err := d.Table.Shutdown(sctx)
	if err := d.up.fwd.send(d.up.link); err != nil {
		d.log.Error("upgrade: the last closed events could not reach the new process", "err", err)
	}
	d.up.link.sendJSON(map[string]string{"type": "done"})
	d.up.link.Close()
	d.cancel()
	waitGroup(sctx, &d.wg)
	if d.bus != nil {
		// The events numbered here before the handover, to JetStream.
		if err := d.bus.Close(sctx); err != nil {
			d.log.Error("upgrade: closed events of this process not stored in JetStream", "err", err)
		}
	}
	d.Relay.Close()
	// The caller of tcpops.upgrade gets its reply before the control
	// connections end (they end once it is written); this process does
	// not exit under it.
	for end := time.Now().Add(2 * time.Second); d.RPC.Clients() > 0 && time.Now().Before(end); {
		time.Sleep(5 * time.Millisecond)
	}
	d.RPC.EndClients()
	d.log.Info("tcpops (old process) stopped after the upgrade", "closed_at_drain_end", n)
	return err
}

// serveControl accepts on the control socket until stopCtl.
func (d *Daemon) serveControl(ln *net.UnixListener) {
	ctx, stop := context.WithCancel(d.ctx)
	done := make(chan struct{})
	d.ctl, d.stopCtl, d.ctlDone = ln, stop, done
	d.wg.Add(1)
	go func() {
		defer d.wg.Done()
		defer close(done)
		d.RPC.Serve(ctx, ln)
	}()
}

// The new process.

// inherited is what a new process takes over instead of opening it.
type inherited struct {
	doc     *handoverDoc
	fds     []int
	link    *link            // nil when systemd kept the descriptors
	store   bool             // from systemd's file-descriptor store
	units   []*relay.Adopted // of doc.Conns, in order, once adopted
	adopted time.Time        // when go came (or the store was read)
	phases  []any            // how long each step took, for the log
}

// take returns descriptor i, once.
func (h *inherited) take(i int) int {
	fd := h.fds[i]
	h.fds[i] = -1
	return fd
}

// closeRest closes the descriptors nothing took.
func (h *inherited) closeRest() {
	for i, fd := range h.fds {
		if fd >= 0 {
			unix.Close(fd)
			h.fds[i] = -1
		}
	}
}

// file returns descriptor i as a file.
func (h *inherited) file(i int, name string) *os.File {
	return os.NewFile(uintptr(h.take(i)), name)
}

// inherit takes over from an old process when this one was started by an
// upgrade (TCPOPS_UPGRADE_FD) or by systemd with the state kept in its
// file-descriptor store (LISTEN_FDS); nil when neither.
func inherit(cfg *Config, log interface {
	Info(string, ...any)
}) (*inherited, error) {
	if v := os.Getenv(upgradeEnv); v != "" {
		os.Unsetenv(upgradeEnv)
		fd, err := strconv.Atoi(v)
		if err != nil {
			return nil, fmt.Errorf("%s=%q: not a descriptor", upgradeEnv, v)
		}
		l, err := linkFromFD(fd)
		if err != nil {
			return nil, err
		}
		h, err := receiveHandover(l, cfg)
		if err != nil {
			var re *refusedError
			if !errors.As(err, &re) {
				l.sendJSON(map[string]string{"type": "refuse", "error": err.Error()})
			}
			l.Close()
			return nil, fmt.Errorf("upgrade: %w", err)
		}
		log.Info("upgrade: sockets received and checked", "from_pid", h.doc.PID, "from_version", h.doc.Version,
			"connections", h.doc.Counts.Entries)
		return h, nil
	}
	return inheritStore(cfg)
}

// receiveHandover says hello, reads the first part of the state (the
// sockets, sent while the old process still relays them) and checks it.
// The rest comes in final.
func receiveHandover(l *link, cfg *Config) (*inherited, error) {
	if err := l.sendJSON(helloMsg{Type: "hello", PID: os.Getpid(), Version: rpc.Build().Version, Format: formatNumber()}); err != nil {
		return nil, err
	}
	h := &inherited{link: l}
	t0 := time.Now()
	hdr, fds, doc, err := recvState(l, "state", time.Now().Add(30*time.Second))
	t1 := time.Now()
	h.fds = fds
	if err != nil {
		closeAll(h.fds)
		return nil, err
	}
	if handoverFault == "crash" {
		fmt.Fprintln(os.Stderr, "tcpops: crashing during the handover (test build)")
		os.Exit(3)
	}
	if handoverFault == "hold" {
		holdForTest()
	}
	if err := h.check(hdr, doc, cfg); err != nil {
		closeAll(h.fds)
		return nil, err
	}
	h.phases = append(h.phases, "waited_for_state", t1.Sub(t0).Round(time.Millisecond), "checked_in", time.Since(t1).Round(time.Millisecond))
	return h, nil
}

// recvState reads a header of type typ, its descriptors, its document and
// its end.
func recvState(l *link, typ string, deadline time.Time) (hdr stateMsg, fds []int, doc []byte, err error) {
	if err := l.expect(deadline, typ, &hdr); err != nil {
		return hdr, nil, nil, err
	}
	for {
		m, err := l.recv(deadline)
		if err != nil {
			return hdr, fds, nil, err
		}
		if m.kind == 'F' {
			fds = append(fds, m.fds...)
			continue
		}
		closeAll(m.fds)
		if m.kind == 'D' {
			doc = append(doc, m.payload...)
			continue
		}
		if m.typ == "end" {
			break
		}
		return hdr, fds, nil, fmt.Errorf("unexpected %q message in the state", m.typ)
	}
	if len(fds) != hdr.FDs || len(doc) != hdr.DocBytes {
		return hdr, fds, nil, fmt.Errorf("%s incomplete: %d of %d descriptors, %d of %d bytes", typ, len(fds), hdr.FDs, len(doc), hdr.DocBytes)
	}
	return hdr, fds, doc, nil
}

// final reads the second part of the state, sent once the old process
// froze its plain TCP connections, merges it into the first, says ready
// and waits for go. A new process calls it when all it needs to serve is
// built, so that what remains between the freeze and relaying again is
// short: taking the connections into the table and the Poller.
func (h *inherited) final() error {
	if h == nil || h.link == nil {
		return nil
	}
	l := h.link
	if err := l.sendJSON(map[string]string{"type": "checked"}); err != nil {
		return fmt.Errorf("upgrade: %w", err)
	}
	t0 := time.Now()
	_, fds, raw, err := recvState(l, "final", time.Now().Add(30*time.Second))
	t1 := time.Now()
	closeAll(fds)
	if err == nil && len(fds) > 0 {
		err = errors.New("final state: descriptors where none belong")
	}
	fin := &finalDoc{}
	if err == nil {
		if err = json.Unmarshal(raw, fin); err != nil {
			err = fmt.Errorf("final state document: %w", err)
		}
	}
	if err == nil {
		err = h.merge(fin)
	}
	if err == nil && handoverFault == "refuse-final" {
		err = errors.New("refusing the final part (test build)")
	}
	if err != nil {
		l.sendJSON(map[string]string{"type": "refuse", "error": err.Error()})
		return fmt.Errorf("upgrade: %w", err)
	}
	h.phases = append(h.phases, "waited_for_final", t1.Sub(t0).Round(time.Millisecond), "merged_in", time.Since(t1).Round(time.Millisecond))
	if handoverFault == "hold-final" {
		holdForTest()
	}
	if err := l.sendJSON(map[string]string{"type": "ready"}); err != nil {
		return fmt.Errorf("upgrade: %w", err)
	}
	if err := l.expect(time.Now().Add(20*time.Second), "go", nil); err != nil {
		return fmt.Errorf("upgrade: no go from the old process: %w", err)
	}
	return nil
}

// merge applies the second part of the state to the first: the units
// gone (they ended in the old process meanwhile, which reports their
// close: this process lets go of its descriptors), the entries that
// changed, the bytes in flight and
// half-closes, the table and its events, the draining connections.
func (h *inherited) merge(fin *finalDoc) error {
	doc := h.doc
	first := make(map[uint64]int, len(doc.Conns))
	for i, hc := range doc.Conns {
		first[hc.Conns[0].ID] = i
	}
	changed := make(map[uint64]conn.ConnState, len(fin.Changed))
	for _, cs := range fin.Changed {
		changed[cs.ID] = cs
	}
	pipes := make(map[uint64][]relay.HandedPipe, len(fin.Pipes))
	for _, hp := range fin.Pipes {
		pipes[hp.Src] = append(pipes[hp.Src], hp)
	}
	gone := make([]bool, len(doc.Conns))
	for _, id := range fin.Gone {
		i, ok := first[id]
		if !ok || gone[i] {
			return fmt.Errorf("final state: connection %d not in the first part, or gone twice", id)
		}
		gone[i] = true
	}
	conns := make([]handedConn, 0, len(doc.Conns)-len(fin.Gone))
	units := make([]*relay.Adopted, 0, len(doc.Conns)-len(fin.Gone))
	entries := 0
	for i := range doc.Conns {
		if gone[i] {
			continue
		}
		hc := doc.Conns[i]
		var hps []relay.HandedPipe
		for j := range hc.Conns {
			was := hc.Conns[j]
			if cs, ok := changed[was.ID]; ok {
				if cs.Local != was.Local || cs.Remote != was.Remote {
					return fmt.Errorf("final state: conid %d changed address", was.ID)
				}
				hc.Conns[j] = cs
			}
			hps = append(hps, pipes[was.ID]...)
			delete(pipes, was.ID)
		}
		h.units[i].Update(changed, hps)
		for _, cs := range hc.Conns {
			delete(changed, cs.ID)
		}
		entries += len(hc.Conns)
		conns = append(conns, hc)
		units = append(units, h.units[i])
	}
	if len(changed) > 0 || len(pipes) > 0 {
		return fmt.Errorf("final state: %d changed entries and %d directions of no connection handed", len(changed), len(pipes))
	}
	c := fin.Counts
	if c.Units != len(conns) || c.Entries != entries || c.Draining != len(fin.Draining) {
		return fmt.Errorf("final state counts do not match: %+v against %d connections (%d entries), %d draining",
			c, len(conns), entries, len(fin.Draining))
	}
	ids := map[uint64]bool{}
	for _, hc := range conns {
		for _, cs := range hc.Conns {
			ids[cs.ID] = true
		}
	}
	for _, cs := range fin.Draining {
		if ids[cs.ID] || cs.Draining == nil {
			return fmt.Errorf("draining conid %d: listed twice or unmarked", cs.ID)
		}
		ids[cs.ID] = true
	}
	for i := range doc.Conns {
		if gone[i] {
			h.units[i].Abandon()
		}
	}
	var evs []conn.Event
	for _, e := range doc.Table.Events {
		if e.Seq >= fin.OldestSeq {
			evs = append(evs, e)
		}
	}
	doc.Table = fin.Table
	doc.Table.Events = append(evs, fin.Table.Events...)
	doc.Conns, doc.Draining, h.units = conns, fin.Draining, units
	doc.Counts.Units, doc.Counts.Entries, doc.Counts.Draining = c.Units, c.Entries, c.Draining
	return nil
}

// check parses the document and checks it before anything is taken over:
// the format, the counts, each descriptor against what the document says
// it is, and what this process needs to serve it.
func (h *inherited) check(hdr stateMsg, raw []byte, cfg *Config) error {
	if hdr.Format != formatNumber() {
		return fmt.Errorf("state format %d, this build reads format %d", hdr.Format, formatNumber())
	}
	doc := &handoverDoc{}
	if err := json.Unmarshal(raw, doc); err != nil {
		return fmt.Errorf("state document: %w", err)
	}
	h.doc = doc
	return h.checkDoc(cfg)
}

// checkDoc checks a parsed document against the descriptors in h.fds.
func (h *inherited) checkDoc(cfg *Config) error {
	doc := h.doc
	if doc.Format != formatNumber() {
		return fmt.Errorf("state format %d, this build reads format %d", doc.Format, formatNumber())
	}
	c := doc.Counts
	entries := 0
	for _, hc := range doc.Conns {
		entries += len(hc.Conns)
	}
	if c.FDs != len(h.fds) || c.Listeners != len(doc.Listeners) || c.Units != len(doc.Conns) || c.Entries != entries || c.Draining != len(doc.Draining) {
		return fmt.Errorf("state counts do not match: %+v against %d descriptors, %d listeners, %d connections (%d entries), %d draining",
			c, len(h.fds), len(doc.Listeners), len(doc.Conns), entries, len(doc.Draining))
	}
	used := make([]bool, len(h.fds))
	use := func(i int, what string) (sock.SocketDesc, error) {
		if i < 0 || i >= len(h.fds) || used[i] {
			return sock.SocketDesc{}, fmt.Errorf("%s: descriptor index %d missing or used twice", what, i)
		}
		used[i] = true
		d, err := sock.Describe(h.fds[i])
		if err != nil {
			return d, fmt.Errorf("%s: %w", what, err)
		}
		return d, nil
	}
	for _, l := range doc.Listeners {
		d, err := use(l.FD, "listener "+l.URL)
		if err != nil {
			return err
		}
		if !d.Listening || d.Local.String() != l.Addr {
			return fmt.Errorf("listener %s: descriptor is %v listening on %s, want %s", l.URL, d.Listening, d.Local, l.Addr)
		}
	}
	for _, s := range []*handedSocket{doc.Control, doc.Metrics} {
		if s == nil {
			continue
		}
		d, err := use(s.FD, "socket "+s.Addr)
		if err != nil {
			return err
		}
		if !d.Listening {
			return fmt.Errorf("socket %s: descriptor is not listening", s.Addr)
		}
	}
	if doc.Control != nil && doc.Control.Addr != cfg.Socket {
		return fmt.Errorf("control socket %s handed over, but this configuration says %s", doc.Control.Addr, cfg.Socket)
	}
	ids := map[uint64]bool{}
	for _, hc := range doc.Conns {
		if len(hc.FDs) != len(hc.Conns) {
			return fmt.Errorf("connection with %d entries and %d descriptors", len(hc.Conns), len(hc.FDs))
		}
		for i, cs := range hc.Conns {
			if ids[cs.ID] {
				return fmt.Errorf("conid %d handed over twice", cs.ID)
			}
			ids[cs.ID] = true
			d, err := use(hc.FDs[i], fmt.Sprintf("conid %d", cs.ID))
			if err != nil {
				return err
			}
			// A connection that ended since has no peer address any more
			// (getpeername fails): its close is the old process's to
			// report, and the final part leaves it out.
			dead := !d.Remote.IsValid()
			if d.Type != unix.SOCK_STREAM || d.Listening || d.Local != cs.Local || (!dead && d.Remote != cs.Remote && d.Remote != cs.Via) {
				return fmt.Errorf("conid %d: descriptor is %s-%s, want %s-%s", cs.ID, d.Local, d.Remote, cs.Local, cs.Remote)
			}
		}
	}
	for _, cs := range doc.Draining {
		if ids[cs.ID] || cs.Draining == nil {
			return fmt.Errorf("draining conid %d: listed twice or unmarked", cs.ID)
		}
		ids[cs.ID] = true
	}
	for i, u := range used {
		if !u {
			return fmt.Errorf("descriptor index %d named by nothing", i)
		}
	}
	for _, l := range cfg.Listeners {
		if err := relay.CheckTLS(l, cfg.Relay.TLSCert, cfg.Relay.TLSKey); err != nil {
			return err
		}
	}
	if cfg.AdminGroup != "" {
		if _, err := user.LookupGroup(cfg.AdminGroup); err != nil {
			return fmt.Errorf("--admin-group %q: %w", cfg.AdminGroup, err)
		}
	}
	if cfg.EventLog != "" {
		f, err := os.OpenFile(cfg.EventLog, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o640)
		if err != nil {
			return fmt.Errorf("--event-log: %w", err)
		}
		f.Close()
	}
	return nil
}

// controlListener is the inherited control socket, or nil.
func (h *inherited) controlListener() (*net.UnixListener, error) {
	if h == nil || h.doc.Control == nil {
		return nil, nil
	}
	f := h.file(h.doc.Control.FD, "control")
	defer f.Close()
	ln, err := net.FileListener(f)
	if err != nil {
		return nil, fmt.Errorf("control socket: %w", err)
	}
	ul, ok := ln.(*net.UnixListener)
	if !ok {
		ln.Close()
		return nil, errors.New("control socket: not a Unix socket")
	}
	// Not removed if this process fails before it takes over: the old one
	// serves on at that path. start sets it once the handover is through.
	ul.SetUnlinkOnClose(false)
	return ul, nil
}

// metricsListener is the inherited metrics socket, or nil.
func (h *inherited) metricsListener() (net.Listener, error) {
	if h == nil || h.doc.Metrics == nil {
		return nil, nil
	}
	f := h.file(h.doc.Metrics.FD, "metrics")
	defer f.Close()
	return net.FileListener(f)
}

// listenerFile is the inherited socket of the listener with url, or nil.
func (h *inherited) listenerFile(url string) *os.File {
	if h == nil {
		return nil
	}
	for _, l := range h.doc.Listeners {
		if l.URL == url && h.fds[l.FD] >= 0 {
			return h.file(l.FD, "listener")
		}
	}
	return nil
}

// adopt puts the handed connections in the table, held and not relayed
// until tookOver. After an upgrade's first part it then says so and waits
// for the rest of the state (final), which it applies, while the old
// process pauses its plain TCP connections.
func (d *Daemon) adopt(h *inherited) error {
	t0 := time.Now()
	h.units = make([]*relay.Adopted, len(h.doc.Conns))
	for i := range h.doc.Conns {
		hc := &h.doc.Conns[i]
		fds := make([]*sock.FD, len(hc.FDs))
		for j, idx := range hc.FDs {
			fd := h.take(idx)
			unix.SetNonblock(fd, true)
			fds[j] = sock.NewFD(fd)
		}
		a, err := d.Relay.Adopt(&hc.Handed, fds)
		if err != nil {
			return fmt.Errorf("conid %d: %w", hc.Conns[0].ID, err)
		}
		h.units[i] = a
	}
	h.phases = append(h.phases, "adopted_in", time.Since(t0).Round(time.Millisecond))
	if err := h.final(); err != nil {
		return err
	}
	d.Table.Restore(h.doc.Table)
	d.up.oldPID = h.doc.PID
	d.up.waiters = map[uint64]chan conn.Event{}
	for _, cs := range h.doc.Draining {
		if _, err := d.Table.Adopt(cs, nil, d.closeDraining); err != nil {
			return err
		}
	}
	return nil
}

// listen opens l, or takes its inherited socket.
func (d *Daemon) listen(l relay.Listener) (*relay.Bound, error) {
	if f := d.inh.listenerFile(l.URL); f != nil {
		defer f.Close()
		return d.Relay.ListenFile(l, f)
	}
	return d.Relay.Listen(d.ctx, l)
}

// tookOver finishes a new process's start: relaying begins, the old
// process hears it, and its closed events are published here from now on.
func (d *Daemon) tookOver() {
	h := d.inh
	if h == nil {
		return
	}
	for _, a := range h.units {
		a.Start()
	}
	h.units = nil
	if !h.adopted.IsZero() {
		d.log.Info("upgrade: relaying", append(h.phases, "since_go", time.Since(h.adopted).Round(time.Millisecond))...)
	}
	h.closeRest()
	if h.store {
		emptyStore()
	}
	if h.link != nil {
		d.up.link = h.link
		d.up.oldEnded = make(chan struct{})
		h.link.sendJSON(helloMsg{Type: "running", PID: os.Getpid(), Version: rpc.Build().Version, Format: formatNumber()})
		go d.serveNewLink()
	}
	d.inh = nil
}

// serveNewLink publishes the old process's closed events until it is done.
func (d *Daemon) serveNewLink() {
	defer close(d.up.oldEnded)
	defer d.up.link.Close()
	for {
		m, err := d.up.link.recv(time.Time{})
		if err != nil {
			d.endDraining(fmt.Sprintf("the old process (pid %d) ended without reporting this close", d.up.oldPID))
			return
		}
		closeAll(m.fds)
		switch m.typ {
		case "event":
			var em eventMsg
			if json.Unmarshal(m.payload, &em) != nil {
				continue
			}
			d.up.waitMu.Lock()
			ch := d.up.waiters[em.Event.ConnID]
			d.up.waitMu.Unlock()
			if ch != nil {
				ch <- em.Event
				continue
			}
			d.Table.EndDraining(em.Event)
		case "done":
			d.endDraining("")
			d.log.Info("upgrade: the old process has ended", "pid", d.up.oldPID)
			return
		}
	}
}

// endDraining ends the draining entries left when the old process is
// gone; with why set, each gets a closed event with reason error.
func (d *Daemon) endDraining(why string) {
	infos, _ := d.Table.List(conn.Filter{})
	for _, in := range infos {
		if in.Draining == nil {
			continue
		}
		e := conn.Event{Time: time.Now(), Reason: conn.ReasonError, ConnID: in.ID, Peer: in.Peer, Proto: in.Proto,
			Direction: in.Direction, Listener: in.Listener, Local: addrString(in.Local), Remote: addrString(in.Remote),
			Via: addrString(in.Via), Duration: time.Since(in.Created), BytesIn: in.BytesIn, BytesOut: in.BytesOut, Error: why}
		if why == "" {
			e.Reason, e.Error = conn.ReasonShutdown, ""
		}
		d.Table.EndDraining(e)
	}
}

// closeDraining is the Closer of a draining entry: the old process closes
// the connection, and its counters at the end are this entry's.
func (d *Daemon) closeDraining(c *conn.Conn, reset bool) error {
	l := d.up.link
	if l == nil {
		return nil
	}
	ch := make(chan conn.Event, 1)
	d.up.waitMu.Lock()
	d.up.waiters[c.ID] = ch
	d.up.waitMu.Unlock()
	defer func() {
		d.up.waitMu.Lock()
		delete(d.up.waiters, c.ID)
		d.up.waitMu.Unlock()
	}()
	if err := l.sendJSON(closeMsg{Type: "close", ID: c.ID, Reset: reset}); err != nil {
		return err
	}
	select {
	case e := <-ch:
		c.SetCounters(e.BytesIn, e.BytesOut)
	case <-time.After(2 * time.Second):
	}
	return nil
}

func addrString(a interface {
	IsValid() bool
	String() string
}) string {
	if !a.IsValid() {
		return ""
	}
	return a.String()
}
