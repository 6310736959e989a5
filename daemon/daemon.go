// Package daemon is the tcpops server process: flags, listeners, control
// socket and the shutdown sequence.
package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/tcpops/tcpops/conn"
	"github.com/tcpops/tcpops/daemon/control"
	"github.com/tcpops/tcpops/daemon/natsbus"
	"github.com/tcpops/tcpops/metrics"
	"github.com/tcpops/tcpops/relay"
	"github.com/tcpops/tcpops/rpc"
	"github.com/tcpops/tcpops/sock"
)

// Run serves until ctx ends, then shuts down: listeners closed, every
// connection closed with reason shutdown, those events delivered to
// followers, the control socket removed. On SIGHUP it calls reload for the
// configuration as it is now and applies it; on SIGUSR1 it reopens the
// event log.
func Run(ctx context.Context, cfg *Config, log *slog.Logger, reload func() (*Config, error)) error {
	// Caught before the sockets serve: a signal sent as soon as they
	// answer would otherwise be ignored (SIGUSR1, SIGUSR2), kill the
	// daemon (SIGHUP) or end it without --fd-store's stash (SIGTERM).
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGUSR1, syscall.SIGHUP, syscall.SIGUSR2)
	defer signal.Stop(sigs)
	// SIGTERM and SIGINT end ctx; which one came decides whether
	// --fd-store keeps the connections.
	term := make(chan os.Signal, 1)
	signal.Notify(term, syscall.SIGTERM)
	defer signal.Stop(term)
	inh, err := inherit(cfg, log)
	if err != nil {
		return err
	}
	// ctx ends at SIGTERM, but the sockets stay open until Shutdown (or
	// stash) is through with them.
	d, err := start(context.WithoutCancel(ctx), cfg, log, inh)
	if err != nil {
		return err
	}
	ready := "READY=1\nSTATUS=serving " + strconv.Itoa(len(d.Listeners)) + " listeners"
	if inh != nil {
		// The old process was the service's main process.
		ready = "MAINPID=" + strconv.Itoa(os.Getpid()) + "\n" + ready
	}
	if err := notify(ready); err != nil {
		log.Warn("sd_notify failed", "err", err)
	}
	memCtx, stopMem := context.WithCancel(ctx)
	defer stopMem()
	go giveBackMemory(memCtx)
	for {
		select {
		case <-d.up.handedOff:
			return d.drainOld(ctx)
		case sig := <-sigs:
			if sig == syscall.SIGUSR2 {
				go func() {
					if _, err := d.Upgrade("", 0); err == nil {
						d.RPC.EndClients()
					}
				}()
				continue
			}
			if sig == syscall.SIGUSR1 {
				if err := d.ReopenEventLog(); err != nil {
					log.Error("reopening the event log failed", "err", err)
				} else if cfg.EventLog != "" {
					log.Info("event log reopened", "path", cfg.EventLog)
				}
				continue
			}
			if reload == nil {
				continue
			}
			notify("RELOADING=1")
			next, err := reload()
			if err == nil {
				err = d.Reload(next)
			}
			if err != nil {
				log.Error("reload failed; the running configuration stays", "err", err)
			}
			notify("READY=1")
		case <-ctx.Done():
			notify("STOPPING=1")
			// An upgrade in progress holds connections frozen: it is
			// aborted (or, past go, has handed them over) before the stop.
			if d.stopUpgrades() {
				return d.drainOld(ctx)
			}
			if cfg.FDStore && gotSignal(term) {
				err := d.stash(10 * time.Second)
				if err == nil {
					return nil
				}
				log.Error("keeping connections in systemd's file-descriptor store failed; closing them", "err", err)
			}
			return d.Shutdown(10 * time.Second)
		}
	}
}

// Daemon is a running tcpops.
type Daemon struct {
	Table     *conn.Table
	Relay     *relay.Server
	RPC       *control.Server
	Listeners []ListenerAddr
	// MetricsAddr is where /metrics is served ("" without --metrics).
	MetricsAddr string
	log         *slog.Logger
	cancel      context.CancelFunc // ends the control socket, metrics and event log
	wg          sync.WaitGroup     // goroutines ended by cancel
	// listenCtx is the parent of every listener's context; stopListening
	// cancels it, and serving counts the accept loops still running.
	listenCtx     context.Context
	stopListening context.CancelFunc
	serving       sync.WaitGroup
	eventLog      *eventLog    // nil without --event-log
	bus           *natsbus.Bus // nil without --nats
	ctx           context.Context

	// mu guards the fields below and Listeners.
	mu      sync.Mutex
	running map[string]*running // by listener URL

	socket      string             // the control socket's path
	ctl         *net.UnixListener  // the control socket (upgrade.go)
	stopCtl     context.CancelFunc // stops accepting on ctl
	ctlDone     chan struct{}      // closed when accepting on ctl stopped
	metricsLn   net.Listener       // nil without --metrics
	stopMetrics context.CancelFunc
	inh         *inherited // what a new process takes over, until it has
	up          upgradeState
}

// running is a serving listener.
type running struct {
	ListenerAddr
	bound *relay.Bound
	stop  context.CancelFunc
	done  chan struct{}
}

// Reload applies a new configuration: listeners no longer named close
// (their connections stay), new ones open, and the default lifetime,
// keepalive, limits and timeouts apply to connections from now on.
// Settings that need a restart are named in the log and left as they are.
func (d *Daemon) Reload(next *Config) error {
	// Not beside an upgrade: its listeners are paused, and its state
	// names the connections it found.
	if !d.up.mu.TryLock() {
		return errors.New("an upgrade is running; reload once it is through")
	}
	defer d.up.mu.Unlock()
	select {
	case <-d.up.handedOff:
		return errors.New("this process has handed over to a new one and only drains")
	default:
	}
	if err := d.Relay.SetConfig(next.Relay); err != nil {
		return err
	}
	d.Table.SetLimits(next.Table.Lifetime, next.Table.MaxConns, next.Table.MaxConnsPerIP)
	want := map[string]bool{}
	for _, l := range next.Listeners {
		want[l.URL] = true
	}
	d.mu.Lock()
	var gone []*running
	for u, r := range d.running {
		if !want[u] {
			gone = append(gone, r)
			delete(d.running, u)
		}
	}
	d.mu.Unlock()
	for _, r := range gone {
		r.stop()
		<-r.done
		d.log.Info("listener closed by reload; its connections stay", "listener", r.Name)
	}
	var errs []error
	for _, l := range next.Listeners {
		d.mu.Lock()
		_, have := d.running[l.URL]
		d.mu.Unlock()
		if have {
			continue
		}
		if err := d.startListener(l); err != nil {
			errs = append(errs, err)
			continue
		}
		d.log.Info("listener opened by reload", "listener", l.Name)
	}
	d.mu.Lock()
	d.Listeners = d.Listeners[:0]
	for _, r := range d.running {
		d.Listeners = append(d.Listeners, r.ListenerAddr)
	}
	d.mu.Unlock()
	d.log.Info("configuration reloaded", "listeners", len(next.Listeners), "lifetime", next.Table.Lifetime,
		"keepalive", next.Relay.Keepalive.String(), "max_conns", next.Table.MaxConns)
	d.logListeners()
	return errors.Join(errs...)
}

// startListener opens l and serves it until the daemon stops or a reload
// removes it.
func (d *Daemon) startListener(l relay.Listener) error {
	b, err := d.listen(l)
	if err != nil {
		return err
	}
	return d.serveListener(l, b)
}

// serveListener serves b until the daemon stops or a reload removes it.
func (d *Daemon) serveListener(l relay.Listener, b *relay.Bound) error {
	ctx, stop := context.WithCancel(d.listenCtx)
	r := &running{ListenerAddr: ListenerAddr{Listener: l, Bound: b.Addr().String()}, bound: b, stop: stop, done: make(chan struct{})}
	d.mu.Lock()
	d.running[l.URL] = r
	d.Listeners = append(d.Listeners, r.ListenerAddr)
	d.mu.Unlock()
	d.serving.Add(1)
	go func() {
		defer d.serving.Done()
		defer close(r.done)
		if err := b.Serve(ctx); err != nil {
			d.log.Error("listener stopped", "listener", l.Name, "err", err)
		}
	}()
	return nil
}

// ReopenEventLog reopens the --event-log file (after rotation).
func (d *Daemon) ReopenEventLog() error {
	if d.eventLog == nil {
		return nil
	}
	return d.eventLog.Reopen()
}

// ListenerAddr is a listener and the address it got (port 0 resolved).
type ListenerAddr struct {
	relay.Listener
	Bound string
}

// Start opens the control socket and every listener.
func Start(parent context.Context, cfg *Config, log *slog.Logger) (*Daemon, error) {
	return start(parent, cfg, log, nil)
}

// start is Start, taking over from an old process what inh holds (nil:
// nothing).
func start(parent context.Context, cfg *Config, log *slog.Logger, inh *inherited) (*Daemon, error) {
	ctx, cancel := context.WithCancel(parent)
	t := conn.NewTable(cfg.Table)
	logRestores(t, log)
	rs, err := relay.NewServer(t, cfg.Relay, log)
	if err != nil {
		cancel()
		return nil, err
	}
	d := &Daemon{Table: t, Relay: rs, log: log, cancel: cancel, socket: cfg.Socket, inh: inh,
		up: upgradeState{handedOff: make(chan struct{})}}
	fail := func(err error) (*Daemon, error) {
		if d.metricsLn != nil && d.stopMetrics == nil {
			d.metricsLn.Close() // never served
		}
		cancel()
		d.serving.Wait()
		t.Events().Close()
		d.wg.Wait()
		rs.Close()
		return nil, err
	}
	ctl, err := inh.controlListener()
	if ctl == nil && err == nil {
		ctl, err = sock.Listen(cfg.Socket, cfg.SocketMode)
	}
	if err != nil {
		return fail(err)
	}
	scfg := control.Config{Table: t, Relay: rs, AdminGroup: cfg.AdminGroup, Log: log,
		WriteTimeout: cfg.RPCWriteTimeout, IdleTimeout: cfg.RPCIdleTimeout, MaxClients: cfg.MaxRPCClients,
		Upgrade: d.Upgrade}
	scfg.Listeners = d.listenerInfo
	if cfg.NATS != nil {
		// d.bus is set below, before anything can ask.
		scfg.NATS = func() *rpc.NATSStats { return d.bus.Stats() }
	}
	// Metrics are served once the table holds what it will serve (after
	// an upgrade's handover): until then the old process answers them.
	serveMetrics := func() {}
	if cfg.Metrics != "" {
		m := metrics.New(t, rs, control.MethodNames())
		scfg.OnRequest = m.Request
		if scfg.NATS != nil {
			m.NATS(scfg.NATS)
		}
		mln, err := inh.metricsListener()
		if mln == nil && err == nil {
			var lc net.ListenConfig
			mln, err = lc.Listen(ctx, "tcp", cfg.Metrics)
		}
		if err != nil {
			ctl.Close()
			return fail(fmt.Errorf("--metrics: %w", err))
		}
		d.MetricsAddr = mln.Addr().String()
		d.metricsLn = mln
		serveMetrics = func() {
			mctx, stopMetrics := context.WithCancel(ctx)
			d.stopMetrics = stopMetrics
			d.wg.Add(1)
			go func() {
				defer d.wg.Done()
				if err := m.Serve(mctx, mln); err != nil {
					log.Error("metrics stopped", "err", err)
				}
			}()
		}
	}
	d.RPC, err = control.NewServer(scfg)
	if err != nil {
		ctl.Close()
		return fail(err)
	}
	d.ctx = ctx
	d.listenCtx, d.stopListening = context.WithCancel(ctx)
	d.running = map[string]*running{}
	if inh != nil {
		if err := d.adopt(inh); err != nil {
			ctl.Close()
			return fail(err)
		}
		log.Info("upgrade: taking over", "from_pid", inh.doc.PID, "from_version", inh.doc.Version,
			"connections", inh.doc.Counts.Entries, "draining", inh.doc.Counts.Draining)
		ctl.SetUnlinkOnClose(true) // this process's from now on
		inh.adopted = time.Now()
	}
	if cfg.EventLog != "" {
		// Subscribed before any listener accepts: the log misses no event.
		el, err := openEventLog(cfg.EventLog, log)
		if err != nil {
			ctl.Close()
			return fail(err)
		}
		d.eventLog = el
		sub := t.Events().Subscribe(t.Events().LastSeq())
		d.wg.Add(1)
		go func() {
			defer d.wg.Done()
			el.run(sub)
		}()
	}
	if n := cfg.NATS; n != nil {
		// Subscribed to the ring before any listener accepts, like the
		// event log.
		d.bus, err = natsbus.Start(natsbus.Config{NATS: n.Options, Host: n.Host, MaxAge: n.MaxAge, MaxBytes: n.MaxBytes,
			Replicas: n.Replicas, Events: t.Events(), Server: d.RPC, Log: log})
		if err != nil {
			ctl.Close()
			return fail(err)
		}
	}
	for _, l := range cfg.Listeners {
		if err := d.startListener(l); err != nil {
			ctl.Close()
			if d.bus != nil {
				stopNow, cancel := context.WithCancel(context.Background())
				cancel()
				d.bus.Close(stopNow)
			}
			return fail(err)
		}
	}
	serveMetrics()
	// Relaying starts and the old process hears of it before a control
	// client waiting in the backlog is answered (it may close a draining
	// connection, which the old process serves once it has heard).
	d.tookOver()
	d.serveControl(ctl)
	log.Info("tcpops started", "version", rpc.Build().Version, "socket", cfg.Socket, "listeners", len(cfg.Listeners),
		"lifetime", cfg.Table.Lifetime, "keepalive", cfg.Relay.Keepalive.String(), "closed_event", cfg.Table.ClosedEvent.String())
	d.logListeners()
	return d, nil
}

// Shutdown stops the daemon in the order that loses nothing, as
// net/http's Shutdown does: the listeners are closed and their accept
// loops have returned before the table is drained, so no connection is
// accepted behind the drain's back; the table then refuses new entries
// (an outbound leg dialled late is closed with reason shutdown and its
// event), closes every connection with reason shutdown and waits until
// each closed event is published; the event stream ends, and the control
// socket and the event log stop once their followers have read it all.
// Everything is bounded by grace.
func (d *Daemon) Shutdown(grace time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), grace)
	defer cancel()
	var errs []error
	d.stopListening()
	if !waitGroup(ctx, &d.serving) {
		errs = append(errs, errors.New("shutdown: accept loops still running"))
	}
	n, err := d.Table.Shutdown(ctx)
	if err != nil {
		errs = append(errs, err)
	}
	d.Table.Events().Close()
	d.cancel()
	var rpcDone sync.WaitGroup
	rpcDone.Go(func() {
		d.wg.Wait()
		d.RPC.Wait()
	})
	if !waitGroup(ctx, &rpcDone) {
		errs = append(errs, fmt.Errorf("shutdown: event followers still reading after %s", grace))
	}
	if d.bus != nil {
		// The shutdown events too go to JetStream, within the grace.
		if err := d.bus.Close(ctx); err != nil {
			errs = append(errs, err)
		}
	}
	d.Relay.Close()
	d.log.Info("tcpops stopped", "closed", n, "last_event_seq", d.Table.Events().LastSeq())
	return errors.Join(errs...)
}

// waitGroup waits for wg until ctx ends; false if ctx ended first.
func waitGroup(ctx context.Context, wg *sync.WaitGroup) bool {
	done := make(chan struct{})
	go func() {
		wg.Wait()
		close(done)
	}()
	select {
	case <-done:
		return true
	case <-ctx.Done():
		return false
	}
}

// listenerInfo lists the listeners serving, for tcpops.stats.
func (d *Daemon) listenerInfo() []rpc.Listener {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := make([]rpc.Listener, 0, len(d.Listeners))
	for _, l := range d.Listeners {
		ka := d.Relay.KeepaliveDefault()
		if l.Keepalive != nil {
			ka = l.Keepalive.String()
		}
		out = append(out, rpc.Listener{Name: l.Name, URL: l.URL, Addr: l.Bound, Keepalive: ka})
	}
	slices.SortFunc(out, func(a, b rpc.Listener) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// Log returns the daemon's logger.
func (d *Daemon) Log() *slog.Logger { return d.log }
