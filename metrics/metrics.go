// Package metrics exposes the connection table, the relay and the control
// socket to Prometheus. No label carries a conid or a client address.
package metrics

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/tcpops/tcpops/conn"
	"github.com/tcpops/tcpops/rpc"
)

// Metrics is the daemon's registry.
type Metrics struct {
	reg      *prometheus.Registry
	duration *prometheus.HistogramVec
	requests *prometheus.CounterVec
	methods  map[string]bool
}

// AcceptErrors is what the relay tells about accept failures.
type AcceptErrors interface{ AcceptErrors() uint64 }

// New registers everything; t must not have connections yet (the
// duration histogram hooks its closes).
func New(t *conn.Table, relay AcceptErrors, methods []string) *Metrics {
	m := &Metrics{
		reg: prometheus.NewRegistry(),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "tcpops_connection_duration_seconds",
			Help:    "How long connections lived, observed when they closed.",
			Buckets: []float64{0.01, 0.1, 1, 10, 60, 300, 1800, 3600, 4 * 3600, 24 * 3600},
		}, []string{"proto", "direction"}),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tcpops_rpc_requests_total",
			Help: "Control socket requests by method and JSON-RPC code (0: success).",
		}, []string{"method", "code"}),
		methods: map[string]bool{},
	}
	for _, n := range methods {
		m.methods[n] = true
	}
	t.OnClose(func(c conn.Closed) {
		m.duration.WithLabelValues(string(c.Proto), c.Direction.String()).Observe(c.Duration.Seconds())
	})
	build := rpc.Build()
	bi := prometheus.NewGauge(prometheus.GaugeOpts{
		Name:        "tcpops_build_info",
		Help:        "Always 1; the labels say which build runs.",
		ConstLabels: prometheus.Labels{"version": build.Version, "commit": build.Commit, "goversion": build.Go},
	})
	bi.Set(1)
	m.reg.MustRegister(m.duration, m.requests, bi, &tableCollector{t: t, relay: relay},
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// Request counts one control-socket request; unknown method names count
// as "other" so that garbage cannot grow the label set.
func (m *Metrics) Request(method string, code int) {
	if !m.methods[method] {
		method = "other"
	}
	m.requests.WithLabelValues(method, strconv.Itoa(code)).Inc()
}

// Serve serves /metrics on ln until ctx ends.
func (m *Metrics) Serve(ctx context.Context, ln net.Listener) error {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{}))
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	stop := context.AfterFunc(ctx, func() { srv.Close() })
	defer stop()
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("metrics: %w", err)
	}
	return nil
}

var (
	descConns    = prometheus.NewDesc("tcpops_connections", "Connections in the table now, by state, proto and listener.", []string{"state", "proto", "listener"}, nil)
	descAccepted = prometheus.NewDesc("tcpops_connections_accepted_total", "Inbound connections accepted into the table.", nil, nil)
	descDialled  = prometheus.NewDesc("tcpops_connections_dialled_total", "Outbound legs to backends added to the table.", nil, nil)
	descRejected = prometheus.NewDesc("tcpops_connections_rejected_total", "Inbound connections refused by --max-conns or --max-conns-per-ip.", nil, nil)
	descClosed   = prometheus.NewDesc("tcpops_connections_closed_total", "Connections that left the table, by close reason.", []string{"reason"}, nil)
	descAcceptE  = prometheus.NewDesc("tcpops_accept_errors_total", "Accept calls that failed (EMFILE and the like).", nil, nil)
	descBytes    = prometheus.NewDesc("tcpops_bytes_total", "Bytes read from (in) and written to (out) connection sockets.", []string{"direction"}, nil)
	descEvents   = prometheus.NewDesc("tcpops_events_published_total", "Closed events published.", nil, nil)
	descLost     = prometheus.NewDesc("tcpops_events_lost_total", "Closed events followers lost by lagging more than the ring.", nil, nil)
)

// tableCollector reads the table at scrape time.
type tableCollector struct {
	t     *conn.Table
	relay AcceptErrors
}

func (c *tableCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descConns, descAccepted, descDialled, descRejected, descClosed, descAcceptE, descBytes, descEvents, descLost} {
		ch <- d
	}
}

func (c *tableCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.t.Stats()
	for k, n := range s.ByKind {
		ch <- prometheus.MustNewConstMetric(descConns, prometheus.GaugeValue, float64(n), k.State.String(), string(k.Proto), k.Listener)
	}
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	counter(descAccepted, s.Accepted)
	counter(descDialled, s.Dialled)
	counter(descRejected, s.Rejected)
	for r, n := range s.ByReason {
		counter(descClosed, n, string(r))
	}
	if c.relay != nil {
		counter(descAcceptE, c.relay.AcceptErrors())
	}
	counter(descBytes, s.BytesIn, "in")
	counter(descBytes, s.BytesOut, "out")
	counter(descEvents, s.EventSeq)
	counter(descLost, s.EventDrop)
}
