package metrics_test

import (
	"testing"

	"github.com/tcpops/tcpops/daemon/daemontest"
	"github.com/tcpops/tcpops/internal/natstest"
	"github.com/tcpops/tcpops/internal/testutil"
)

func TestNATSMetrics(t *testing.T) {
	ns := natstest.Start(t, nil)
	d := daemontest.Start(t, "--metrics", "127.0.0.1:0", "--nats", ns.URL(), "--host-name", "m1")
	c, _ := d.Dial(t, 0)
	c.Close()
	testutil.WaitFor(t, "tcpops_nats_events_stored_total 1", func() bool {
		return value(t, scrape(t, d.MetricsAddr), "tcpops_nats_events_stored_total", nil) == 1
	})
	ms := scrape(t, d.MetricsAddr)
	for _, m := range []struct {
		name string
		want float64
	}{{"tcpops_nats_connected", 1}, {"tcpops_nats_events_pending", 0}, {"tcpops_nats_published_seq", 1}} {
		if got := value(t, ms, m.name, nil); got != m.want {
			t.Errorf("%s %v, want %v", m.name, got, m.want)
		}
	}
}
