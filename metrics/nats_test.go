package metrics_test

import (
	"testing"
	"time"

	"github.com/tcpops/tcpops/daemon/daemontest"
	"github.com/tcpops/tcpops/internal/natstest"
)

func TestNATSMetrics(t *testing.T) {
	ns := natstest.Start(t, nil)
	d := daemontest.Start(t, "--metrics", "127.0.0.1:0", "--nats", ns.URL(), "--host-name", "m1")
	c, _ := d.Dial(t, 0)
	c.Close()
	deadline := time.Now().Add(20 * time.Second)
	for {
		ms := scrape(t, d.MetricsAddr)
		if value(t, ms, "tcpops_nats_events_stored_total", nil) == 1 {
			if up := value(t, ms, "tcpops_nats_connected", nil); up != 1 {
				t.Errorf("tcpops_nats_connected %v, want 1", up)
			}
			if p := value(t, ms, "tcpops_nats_events_pending", nil); p != 0 {
				t.Errorf("tcpops_nats_events_pending %v, want 0", p)
			}
			if s := value(t, ms, "tcpops_nats_published_seq", nil); s != 1 {
				t.Errorf("tcpops_nats_published_seq %v, want 1", s)
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("tcpops_nats_events_stored_total never reached 1")
		}
		time.Sleep(10 * time.Millisecond)
	}
}
