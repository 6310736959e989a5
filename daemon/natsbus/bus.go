// Package natsbus links a tcpops daemon to a fleet on NATS: it stores
// every closed event in JetStream, in order and once, and serves the
// control methods as a NATS micro service.
package natsbus

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nats.go/micro"

	"github.com/tcpops/tcpops/conn"
	"github.com/tcpops/tcpops/daemon/control"
	"github.com/tcpops/tcpops/fleet"
	"github.com/tcpops/tcpops/rpc"
)

// Config configures a Bus.
type Config struct {
	// NATS says how to reach the servers.
	NATS fleet.Options
	// Host names this daemon in subjects (tcpops.events.HOST, ...).
	Host string
	// Limits of the events stream, applied when the bus creates it.
	MaxAge   time.Duration
	MaxBytes int64 // 0: no limit
	Replicas int
	// Events is the ring the bus stores from; Server answers requests.
	Events *conn.Events
	Server *control.Server
	Log    *slog.Logger
}

// Bus is a daemon's link to NATS.
type Bus struct {
	cfg  Config
	log  *slog.Logger
	boot string // this run of the daemon, in every message id
	// subject and recordHead are the events' subject and the start of
	// each record: {"host":HOST,"boot":BOOT (the event follows).
	subject    string
	recordHead []byte
	nc         *nats.Conn
	js         jetstream.JetStream
	svc        micro.Service
	sub        *conn.Subscription

	ctx     context.Context // ends the publisher and the setup loop at once
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	pubDone chan struct{} // closed when the publisher has stored all it will
	setup   chan struct{} // (re)connected: streams and registration to do
	ready   chan struct{} // setup done; wakes a publisher waiting to retry
	// ensured is closed once the streams exist: nothing is published
	// before (a first event refused for want of a stream while the next
	// one is stored would be out of order).
	ensured     chan struct{}
	ensuredOnce sync.Once
	sem         chan struct{} // requests being served

	// reqMu guards the field below and reqs.Add.
	reqMu    sync.Mutex
	stopping bool
	reqs     sync.WaitGroup

	reconnects  atomic.Uint64
	requests    atomic.Uint64
	published   atomic.Uint64
	publishedTo atomic.Uint64 // seq of the newest event stored
	lost        atomic.Uint64
	outOfOrder  atomic.Uint64
	lastErr     atomic.Pointer[string]
	setupOnce   sync.Once
	streamNoted sync.Once
}

// window is how many events are on their way to JetStream at once.
const window = 256

// ackTimeout is how long a publish may wait for its acknowledgement.
const ackTimeout = 5 * time.Second

// Start subscribes to the ring (so the bus misses no event from now on),
// connects, and serves. NATS need not be up: the bus connects when it
// comes, and events wait in the ring until then.
func Start(cfg Config) (*Bus, error) {
	if err := fleet.CheckHost(cfg.Host); err != nil {
		return nil, fmt.Errorf("--host-name: %w", err)
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.Replicas < 1 {
		cfg.Replicas = 1
	}
	b := &Bus{cfg: cfg, log: cfg.Log.With("nats_host", cfg.Host), boot: strconv.FormatInt(time.Now().UnixMilli(), 10),
		pubDone: make(chan struct{}), setup: make(chan struct{}, 1), ready: make(chan struct{}, 1), sem: make(chan struct{}, 32),
		ensured: make(chan struct{})}
	b.ctx, b.cancel = context.WithCancel(context.Background())
	b.name()
	b.sub = cfg.Events.Subscribe(cfg.Events.LastSeq())
	if cfg.NATS.Name == "" {
		cfg.NATS.Name = "tcpops " + cfg.Host
	}
	opts := append(cfg.NATS.NATSOptions(),
		nats.RetryOnFailedConnect(true),
		nats.MaxReconnects(-1),
		nats.CustomReconnectDelay(backoff),
		// A publish while disconnected fails at once rather than waiting
		// in a buffer: the ring is the buffer, and the publisher knows
		// exactly what was stored.
		nats.ReconnectBufSize(-1),
		nats.ConnectHandler(func(nc *nats.Conn) {
			b.log.Info("nats connected", "server", nc.ConnectedUrlRedacted())
			b.kick(b.setup)
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			b.reconnects.Add(1)
			b.log.Info("nats reconnected", "server", nc.ConnectedUrlRedacted())
			b.kick(b.setup)
		}),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if b.ctx.Err() != nil {
				return // Close closed it
			}
			if err != nil {
				b.setErr(err)
			}
			b.log.Warn("nats disconnected; events wait in the ring", "err", err)
		}),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			b.setErr(err)
			b.log.Warn("nats error", "err", err)
		}),
	)
	nc, err := nats.Connect(cfg.NATS.URL, opts...)
	if err != nil {
		b.cancel()
		return nil, fmt.Errorf("--nats %s: %w", fleet.Redact(cfg.NATS.URL), err)
	}
	b.nc = nc
	if nc.IsConnected() {
		b.kick(b.setup)
	} else {
		b.log.Warn("nats not reachable yet; closed events wait in the ring until it is", "url", fleet.Redact(cfg.NATS.URL))
	}
	b.js, err = jetstream.New(nc, jetstream.WithPublishAsyncTimeout(ackTimeout), jetstream.WithPublishAsyncMaxPending(4*window))
	if err == nil {
		err = b.serve()
	}
	if err == nil && nc.IsConnected() {
		// The service's subscriptions reach the server before Start
		// returns, so a request made once the daemon is up finds them.
		if ferr := nc.FlushTimeout(2 * time.Second); ferr != nil {
			b.log.Warn("nats: service subscriptions not confirmed", "err", ferr)
		}
	}
	if err != nil {
		nc.Close()
		b.cancel()
		return nil, fmt.Errorf("nats: %w", err)
	}
	b.wg.Add(2)
	go func() {
		defer b.wg.Done()
		b.setupLoop()
	}()
	go func() {
		defer b.wg.Done()
		defer close(b.pubDone)
		b.publish()
	}()
	b.log.Info("nats link started", "url", fleet.Redact(cfg.NATS.URL), "stream", fleet.EventsStream,
		"subject", fleet.EventsSubject(cfg.Host), "rpc", fleet.RPCSubject(cfg.Host), "admin", fleet.AdminSubject(cfg.Host))
	return b, nil
}

// name sets what every event message of this run starts with.
func (b *Bus) name() {
	b.subject = fleet.EventsSubject(b.cfg.Host)
	head, _ := json.Marshal(struct {
		Host string `json:"host"`
		Boot string `json:"boot"`
	}{b.cfg.Host, b.boot})
	b.recordHead = head[:len(head)-1]
}

// backoff is the wait before reconnect attempt n: doubling from 100 ms to
// 2 s, with jitter so a fleet does not reconnect in step.
func backoff(n int) time.Duration {
	d := min(100*time.Millisecond<<min(n, 5), 2*time.Second)
	return d/2 + rand.N(d/2+1)
}

func (b *Bus) kick(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

func (b *Bus) setErr(err error) {
	s := err.Error()
	b.lastErr.Store(&s)
}

// setupLoop makes sure, after each (re)connect, that the streams exist and
// the host is registered; a restarted nats-server may have lost both.
func (b *Bus) setupLoop() {
	refresh := time.NewTicker(fleet.HostsMaxAge / 24)
	defer refresh.Stop()
	for {
		select {
		case <-b.setup:
		case <-refresh.C:
		case <-b.ctx.Done():
			return
		}
		for attempt := 0; ; attempt++ {
			err := b.ensure()
			if err == nil {
				b.ensuredOnce.Do(func() { close(b.ensured) })
				b.kick(b.ready)
				break
			}
			b.setErr(err)
			b.log.Warn("nats: setting up streams failed; retrying", "err", err)
			select {
			case <-time.After(backoff(attempt)):
			case <-b.ctx.Done():
				return
			}
			if !b.nc.IsConnected() {
				break // the next connect starts over
			}
		}
	}
}

// ensure creates the streams if missing and registers the host.
func (b *Bus) ensure() error {
	// Not ended by Close: a registration cut short could still be stored
	// after Close took it back. Close waits for this to end instead.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	events := jetstream.StreamConfig{
		Name:        fleet.EventsStream,
		Description: "tcpops closed events, one subject per host",
		Subjects:    []string{fleet.EventsSubjects},
		Storage:     jetstream.FileStorage,
		MaxAge:      b.cfg.MaxAge,
		MaxBytes:    b.cfg.MaxBytes,
		Replicas:    b.cfg.Replicas,
		Discard:     jetstream.DiscardOld,
		Duplicates:  2 * time.Minute,
	}
	if events.MaxBytes == 0 {
		events.MaxBytes = -1
	}
	if err := b.createStream(ctx, events); err != nil {
		return err
	}
	hosts := jetstream.StreamConfig{
		Name:              fleet.HostsStream,
		Description:       "tcpops hosts, the newest registration of each",
		Subjects:          []string{fleet.HostsSubjects},
		Storage:           jetstream.FileStorage,
		MaxAge:            fleet.HostsMaxAge,
		MaxMsgsPerSubject: 1,
		Replicas:          b.cfg.Replicas,
	}
	if err := b.createStream(ctx, hosts); err != nil {
		return err
	}
	reg, _ := json.Marshal(fleet.Registration{Host: b.cfg.Host, Boot: b.boot, Started: time.Now().UTC(), Version: rpc.Build().Version, PID: os.Getpid()})
	if _, err := b.js.Publish(ctx, fleet.HostSubject(b.cfg.Host), reg); err != nil {
		return fmt.Errorf("registering in %s: %w", fleet.HostsStream, err)
	}
	return nil
}

// createStream creates a stream unless one of that name exists; an
// existing one is used as it is (its limits are the operator's).
func (b *Bus) createStream(ctx context.Context, cfg jetstream.StreamConfig) error {
	_, err := b.js.CreateStream(ctx, cfg)
	if errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
		if cfg.Name == fleet.EventsStream {
			b.streamNoted.Do(func() {
				b.log.Info("nats: using the existing stream with its own limits", "stream", cfg.Name)
			})
		}
		return nil
	}
	if err != nil {
		return fmt.Errorf("creating stream %s: %w", cfg.Name, err)
	}
	return nil
}

// Stats is the state of the link, for tcpops.stats and metrics.
func (b *Bus) Stats() *rpc.NATSStats {
	s := &rpc.NATSStats{Host: b.cfg.Host, Connected: b.nc.IsConnected(), Reconnects: b.reconnects.Load(),
		Stream: fleet.EventsStream, PublishedSeq: b.publishedTo.Load(), Published: b.published.Load(),
		Lost: b.lost.Load(), Requests: b.requests.Load()}
	if s.Connected {
		s.Server = b.nc.ConnectedUrlRedacted()
	}
	if last := b.cfg.Events.LastSeq(); last > s.PublishedSeq {
		s.Pending = last - s.PublishedSeq
	}
	if e := b.lastErr.Load(); e != nil {
		s.LastError = *e
	}
	return s
}

// StopServing ends the micro service and waits for the requests being
// answered: a process that handed over to a new one stops answering for
// the host at once, while it still stores its last events.
func (b *Bus) StopServing() {
	b.svc.Stop()
	b.reqMu.Lock()
	b.stopping = true
	b.reqMu.Unlock()
	b.reqs.Wait()
}

// closeOffline is how long Close waits for NATS to come back when it is
// away: the events then stay unstored, and the shutdown need not wait
// its whole grace for nothing.
const closeOffline = 2 * time.Second

// Close stops serving requests, waits until the publisher has stored
// what the ring holds (the ring must be closed first; shutdown events
// included) or ctx ends or NATS stays away for closeOffline, takes the
// host's registration back, and closes the connection.
func (b *Bus) Close(ctx context.Context) error {
	b.StopServing()
	var err error
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	var away time.Time
wait:
	for {
		select {
		case <-b.pubDone:
			break wait
		case <-tick.C:
			switch {
			case b.nc.IsConnected():
				away = time.Time{}
				continue
			case away.IsZero():
				away = time.Now()
				continue
			case time.Since(away) < closeOffline:
				continue
			}
		case <-ctx.Done():
		}
		st := b.Stats()
		err = fmt.Errorf("nats: %d closed events not stored in JetStream at shutdown (connected: %v)", st.Pending, st.Connected)
		break
	}
	b.cancel()
	b.wg.Wait()
	if b.nc.IsConnected() {
		uctx, cancel := context.WithTimeout(context.Background(), time.Second)
		b.unregister(uctx)
		cancel()
		b.nc.Flush()
	}
	b.nc.Close()
	return err
}

// unregister removes the host's registration, if it is still this run's
// (a newer daemon on the host, after an upgrade, may have registered).
func (b *Bus) unregister(ctx context.Context) {
	s, err := b.js.Stream(ctx, fleet.HostsStream)
	if err != nil {
		return
	}
	m, err := s.GetLastMsgForSubject(ctx, fleet.HostSubject(b.cfg.Host))
	if err != nil {
		return
	}
	var r fleet.Registration
	if json.Unmarshal(m.Data, &r) != nil || r.Boot != b.boot {
		return
	}
	// Up to this message only: a newer daemon's registration, stored
	// meanwhile, stays.
	if err := s.Purge(ctx, jetstream.WithPurgeSubject(fleet.HostSubject(b.cfg.Host)), jetstream.WithPurgeSequence(m.Sequence+1)); err != nil {
		b.log.Warn("nats: removing the host's registration failed", "err", err)
	}
}
