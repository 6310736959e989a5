package metrics

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/tcpops/tcpops/rpc"
)

var (
	descNATSUp       = prometheus.NewDesc("tcpops_nats_connected", "1 while the daemon is connected to NATS, else 0.", nil, nil)
	descNATSReconn   = prometheus.NewDesc("tcpops_nats_reconnects_total", "Reconnections to NATS.", nil, nil)
	descNATSStored   = prometheus.NewDesc("tcpops_nats_events_stored_total", "Closed events stored in JetStream.", nil, nil)
	descNATSPending  = prometheus.NewDesc("tcpops_nats_events_pending", "Closed events in the ring not yet stored in JetStream.", nil, nil)
	descNATSLost     = prometheus.NewDesc("tcpops_nats_events_lost_total", "Closed events the ring overwrote before they could be stored (a tcpops.events_lost record stands for them).", nil, nil)
	descNATSRequests = prometheus.NewDesc("tcpops_nats_requests_total", "JSON-RPC requests served over NATS.", nil, nil)
	descNATSLastSeq  = prometheus.NewDesc("tcpops_nats_published_seq", "Seq of the newest closed event stored in JetStream.", nil, nil)
	natsDescriptions = []*prometheus.Desc{descNATSUp, descNATSReconn, descNATSStored, descNATSPending, descNATSLost, descNATSRequests, descNATSLastSeq}
)

// NATS adds the daemon's NATS link, read at scrape time.
func (m *Metrics) NATS(stats func() *rpc.NATSStats) {
	m.reg.MustRegister(natsCollector(stats))
}

type natsCollector func() *rpc.NATSStats

func (c natsCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range natsDescriptions {
		ch <- d
	}
}

func (c natsCollector) Collect(ch chan<- prometheus.Metric) {
	s := c()
	if s == nil {
		return
	}
	up := 0.0
	if s.Connected {
		up = 1
	}
	ch <- prometheus.MustNewConstMetric(descNATSUp, prometheus.GaugeValue, up)
	ch <- prometheus.MustNewConstMetric(descNATSReconn, prometheus.CounterValue, float64(s.Reconnects))
	ch <- prometheus.MustNewConstMetric(descNATSStored, prometheus.CounterValue, float64(s.Published))
	ch <- prometheus.MustNewConstMetric(descNATSPending, prometheus.GaugeValue, float64(s.Pending))
	ch <- prometheus.MustNewConstMetric(descNATSLost, prometheus.CounterValue, float64(s.Lost))
	ch <- prometheus.MustNewConstMetric(descNATSRequests, prometheus.CounterValue, float64(s.Requests))
	ch <- prometheus.MustNewConstMetric(descNATSLastSeq, prometheus.GaugeValue, float64(s.PublishedSeq))
}
