package dist

import (
	"encoding/json"
	"net/http/httptest"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/l2shim/l2shim/control"
	"github.com/l2shim/l2shim/metrics"
)

type fullStatus struct{}

// Status has something of everything, so every metric family appears in a scrape.
func (fullStatus) Status() *control.Status {
	return &control.Status{
		Started:   time.Unix(1700000000, 0),
		Gateways:  []control.GatewayStatus{{Name: "isp-a", Interface: "eth0", State: "up"}},
		Rules:     []control.RuleStatus{{Name: "mail", Action: "route-to"}},
		Drops:     map[string]uint64{"malformed": 1},
		Datapath:  map[string]uint64{"rotations": 1},
		Conntrack: control.ConntrackStatus{Flows: 1, Max: 1024},
	}
}

// scraped returns the metric names and label names a scrape of l2shim's exporter holds.
func scraped(t *testing.T) (names, labels map[string]bool) {
	t.Helper()
	e := metrics.New(fullStatus{})
	e.ObserveRTT("isp-a", "ipv4", time.Millisecond)
	rec := httptest.NewRecorder()
	e.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(strings.NewReader(rec.Body.String()))
	if err != nil {
		t.Fatal(err)
	}
	names = map[string]bool{}
	labels = map[string]bool{"instance": true, "job": true, "le": true}
	for name, f := range fams {
		names[name] = true
		if f.GetType().String() == "HISTOGRAM" {
			for _, s := range []string{"_bucket", "_sum", "_count"} {
				names[name+s] = true
			}
		}
		for _, m := range f.Metric {
			for _, l := range m.Label {
				labels[l.GetName()] = true
			}
		}
	}
	return names, labels
}

// TestGrafanaDashboard: dist/grafana-dashboard.json is a dashboard whose every query names
// only metrics and labels l2shim's exporter has, with unique panel ids on a 24-column grid,
// and shows every gateway metric.
func TestGrafanaDashboard(t *testing.T) {
	data, err := os.ReadFile("grafana-dashboard.json")
	if err != nil {
		t.Fatal(err)
	}
	var d struct {
		Title      string
		UID        string
		Templating struct{ List []struct{ Name, Type string } }
		Panels     []struct {
			ID      int
			Type    string
			Title   string
			GridPos struct{ X, Y, W, H int }
			Targets []struct{ Expr, RefID string }
		}
	}
	if err := json.Unmarshal(data, &d); err != nil {
		t.Fatalf("grafana-dashboard.json: %v", err)
	}
	if d.Title != "l2shim" || d.UID == "" || len(d.Panels) < 8 {
		t.Fatalf("dashboard %q uid %q with %d panels", d.Title, d.UID, len(d.Panels))
	}
	vars := map[string]bool{}
	for _, v := range d.Templating.List {
		vars[v.Name] = true
	}
	names, labels := scraped(t)
	metric := regexp.MustCompile(`\bl2shim_[a-z0-9_]+`)
	label := regexp.MustCompile(`([a-z_]+)\s*(=~|!=|!~|=)\s*"`)
	by := regexp.MustCompile(`\bby \(([^)]*)\)`)
	varRef := regexp.MustCompile(`\$(\w+)`)
	used := map[string]bool{}
	ids := map[int]bool{}
	for _, p := range d.Panels {
		if ids[p.ID] {
			t.Errorf("panel id %d twice", p.ID)
		}
		ids[p.ID] = true
		if p.GridPos.X < 0 || p.GridPos.W <= 0 || p.GridPos.X+p.GridPos.W > 24 {
			t.Errorf("panel %q: gridPos %+v off the 24-column grid", p.Title, p.GridPos)
		}
		if p.Type == "row" {
			continue
		}
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for _, q := range p.Targets {
			for _, m := range metric.FindAllString(q.Expr, -1) {
				used[m] = true
				if !names[m] {
					t.Errorf("panel %q: %s is not a metric l2shim exports", p.Title, m)
				}
			}
			for _, l := range label.FindAllStringSubmatch(q.Expr, -1) {
				if !labels[l[1]] {
					t.Errorf("panel %q: label %s is not one l2shim's metrics have", p.Title, l[1])
				}
			}
			for _, b := range by.FindAllStringSubmatch(q.Expr, -1) {
				for _, l := range strings.Split(b[1], ",") {
					if l = strings.TrimSpace(l); !labels[l] {
						t.Errorf("panel %q: by %s, not a label of l2shim's metrics", p.Title, l)
					}
				}
			}
			for _, v := range varRef.FindAllStringSubmatch(q.Expr, -1) {
				if !vars[v[1]] && !strings.HasPrefix(v[1], "__") {
					t.Errorf("panel %q: $%s is no variable of the dashboard", p.Title, v[1])
				}
			}
		}
	}
	for n := range names {
		if strings.HasPrefix(n, "l2shim_gateway_") && !used[n] {
			t.Errorf("no panel shows %s", n)
		}
	}
}
