package metrics

import (
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/l2shim/l2shim/control"
)

type fixed struct{ s *control.Status }

func (f fixed) Status() *control.Status { return f.s }

// TestScrape checks a scrape parses as the Prometheus text format and carries the status.
func TestScrape(t *testing.T) {
	st := &control.Status{
		Started: time.Unix(1700000000, 0),
		Gateways: []control.GatewayStatus{
			{Name: "isp-a", Interface: "eth0", State: "up", State6: "down", Flows: 7, Placed: 40, BytesOut: 1000, BytesIn: 2000, PacketsOut: 10, PacketsIn: 20, Active: 5, Failed: 1},
			{Name: "isp-b", Interface: "eth1", State: "down", Drained: true},
		},
		Rules:     []control.RuleStatus{{Name: "mail", Action: "route-to", Flows: 3, Packets: 9, Bytes: 900}},
		Drops:     map[string]uint64{"malformed": 2},
		Datapath:  map[string]uint64{"rotations": 4},
		Conntrack: control.ConntrackStatus{Flows: 7, Max: 262144, Evictions: 1},
	}
	e := New(fixed{st})
	e.ObserveRTT("isp-a", "ipv4", 3*time.Millisecond)
	e.ObserveRTT("isp-a", "ipv6", 4*time.Millisecond)
	e.ObserveRTT("isp-a", "ipv6", 5*time.Millisecond)
	rec := httptest.NewRecorder()
	e.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(strings.NewReader(rec.Body.String()))
	if err != nil {
		t.Fatalf("scrape does not parse: %v\n%s", err, rec.Body.String())
	}
	get := func(name string, labels map[string]string) float64 {
		t.Helper()
		f, ok := fams[name]
		if !ok {
			t.Fatalf("no %s in scrape", name)
		}
	next:
		for _, m := range f.Metric {
			for _, lp := range m.Label {
				if v, ok := labels[lp.GetName()]; ok && v != lp.GetValue() {
					continue next
				}
			}
			switch {
			case m.Counter != nil:
				return m.Counter.GetValue()
			case m.Gauge != nil:
				return m.Gauge.GetValue()
			case m.Histogram != nil:
				return float64(m.Histogram.GetSampleCount())
			}
		}
		t.Fatalf("no %s%v in scrape", name, labels)
		return 0
	}
	checks := []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"l2shim_gateway_up", map[string]string{"gateway": "isp-a", "family": "ipv4"}, 1},
		{"l2shim_gateway_up", map[string]string{"gateway": "isp-a", "family": "ipv6"}, 0},
		{"l2shim_gateway_up", map[string]string{"gateway": "isp-b", "family": "ipv4"}, 0},
		{"l2shim_gateway_drained", map[string]string{"gateway": "isp-b"}, 1},
		{"l2shim_gateway_flows", map[string]string{"gateway": "isp-a"}, 7},
		{"l2shim_gateway_bytes_total", map[string]string{"gateway": "isp-a", "direction": "in"}, 2000},
		{"l2shim_gateway_failures", map[string]string{"gateway": "isp-a"}, 1},
		{"l2shim_rule_flows_total", map[string]string{"rule": "mail"}, 3},
		{"l2shim_drops_total", map[string]string{"reason": "malformed"}, 2},
		{"l2shim_datapath_total", map[string]string{"counter": "rotations"}, 4},
		{"l2shim_conntrack_evictions_total", nil, 1},
		{"l2shim_probe_rtt_seconds", map[string]string{"gateway": "isp-a", "family": "ipv4"}, 1},
		{"l2shim_probe_rtt_seconds", map[string]string{"gateway": "isp-a", "family": "ipv6"}, 2},
	}
	for _, c := range checks {
		if got := get(c.name, c.labels); got != c.want {
			t.Errorf("%s%v = %v, want %v", c.name, c.labels, got, c.want)
		}
	}
}
