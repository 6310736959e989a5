package metrics_test

import (
	"net"
	"net/http"
	"testing"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/tcpops/tcpops/daemon/daemontest"
	"github.com/tcpops/tcpops/internal/testutil"
)

func scrape(t *testing.T, addr string) map[string][]*dto {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("metrics do not parse: %v", err)
	}
	out := map[string][]*dto{}
	for name, f := range fams {
		for _, m := range f.GetMetric() {
			d := &dto{labels: map[string]string{}}
			for _, l := range m.GetLabel() {
				d.labels[l.GetName()] = l.GetValue()
			}
			switch {
			case m.GetCounter() != nil:
				d.value = m.GetCounter().GetValue()
			case m.GetGauge() != nil:
				d.value = m.GetGauge().GetValue()
			case m.GetHistogram() != nil:
				d.value = float64(m.GetHistogram().GetSampleCount())
			}
			out[name] = append(out[name], d)
		}
	}
	return out
}

type dto struct {
	labels map[string]string
	value  float64
}

func value(t *testing.T, ms map[string][]*dto, name string, labels map[string]string) float64 {
	t.Helper()
	var sum float64
	found := false
next:
	for _, m := range ms[name] {
		for k, v := range labels {
			if m.labels[k] != v {
				continue next
			}
		}
		sum += m.value
		found = true
	}
	if !found {
		t.Fatalf("no %s with %v", name, labels)
	}
	return sum
}

func TestScrape(t *testing.T) {
	d := daemontest.Start(t, "--metrics", "127.0.0.1:0", "--listen", "tcp://127.0.0.1:0?backend=echo&name=sip", "--max-conns", "2")
	c := d.Client(t)
	a, _ := d.Dial(t, 0)
	a.Write([]byte("hello"))
	a.Read(make([]byte, 5))
	b, _ := d.Dial(t, 0)
	// A third is over the limit.
	if x, err := net.Dial("tcp", d.Addr(0)); err == nil {
		x.Read(make([]byte, 1))
		x.Close()
	}
	b.Close()
	testutil.WaitFor(t, "the close of b", func() bool { return d.Table.Stats().Closed == 1 })
	c.Stats(t.Context())
	c.Call(t.Context(), "tcpops.nope", nil, nil)
	c.Call(t.Context(), "tcpops.state", map[string]any{"conid": "x"}, nil)
	ms := scrape(t, d.MetricsAddr)
	for _, tt := range []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"tcpops_connections", map[string]string{"state": "ok", "proto": "tcp", "listener": "sip"}, 1},
		{"tcpops_connections_accepted_total", nil, 2},
		{"tcpops_connections_rejected_total", nil, 1},
		{"tcpops_connections_closed_total", map[string]string{"reason": "eof"}, 1},
		{"tcpops_connection_duration_seconds", map[string]string{"proto": "tcp", "direction": "in"}, 1},
		{"tcpops_bytes_total", map[string]string{"direction": "in"}, 5},
		{"tcpops_bytes_total", map[string]string{"direction": "out"}, 5},
		{"tcpops_events_published_total", nil, 1},
		{"tcpops_rpc_requests_total", map[string]string{"method": "tcpops.stats", "code": "0"}, 1},
		{"tcpops_rpc_requests_total", map[string]string{"method": "other", "code": "-32601"}, 1},
		{"tcpops_rpc_requests_total", map[string]string{"method": "tcpops.state", "code": "-32602"}, 1},
		{"tcpops_build_info", nil, 1},
	} {
		if got := value(t, ms, tt.name, tt.labels); got != tt.want {
			t.Errorf("%s%v = %v, want %v", tt.name, tt.labels, got, tt.want)
		}
	}
	for name, fam := range ms {
		for _, m := range fam {
			for k := range m.labels {
				if k == "conid" || k == "remote" || k == "local" {
					t.Errorf("%s has a %s label", name, k)
				}
			}
		}
	}
}
