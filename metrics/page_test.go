package metrics

import (
	"net/http/httptest"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/l2shim/l2shim/control"
)

// pageSrc is a PageSource with a fixed status, events and history.
type pageSrc struct {
	fixed
	ev []control.Event
	h  *History
}

func (p pageSrc) Events(after uint64, _ time.Duration) []control.Event { return p.ev }
func (p pageSrc) History(seconds int) []control.Sample {
	return p.h.Since(time.Now().Add(-time.Duration(seconds) * time.Second))
}

// twoGateways is a status and a history of 120 s: isp-a carries 1 MB/s in from the start,
// isp-b 50 kB/s out for the last 30 s.
func twoGateways(now time.Time) pageSrc {
	st := &control.Status{
		Started: now.Add(-time.Hour), Mode: "load-balance", Config: "/etc/l2shim/l2shim.toml",
		Gateways: []control.GatewayStatus{
			{Name: "isp-a", Interface: "eth0", Address: "10.1.0.1", State: "up", Flows: 7, On: true, Comment: "<b>A</b>"},
			{Name: "isp-b", Interface: "eth1", Address: "10.2.0.1", State: "down", Reason: "probes: 1 of 1 target missed", On: true},
		},
		Rules: []control.RuleStatus{{Name: "bank", Action: "balance", Affinity: "host-pair", Flows: 2}},
	}
	h := NewHistory(600)
	var a, b uint64
	for i := 120; i >= 0; i-- {
		a += 1 << 20
		if i < 30 {
			b += 50000
		}
		h.Add(control.Sample{Time: now.Add(-time.Duration(i) * time.Second), Gateways: []control.SampleGateway{
			{Name: "isp-a", BytesIn: a, Flows: 7, State: "up"},
			{Name: "isp-b", BytesOut: b, Flows: 1, State: "down"},
		}})
	}
	ev := []control.Event{
		{Seq: 1, Time: now.Add(-time.Hour), Kind: "start", Message: "l2shim started"},
		{Seq: 2, Time: now.Add(-time.Minute), Kind: "gateway", Gateway: "isp-b", Message: "up → down: probes"},
	}
	return pageSrc{fixed: fixed{st}, ev: ev, h: h}
}

// TestPage renders the page and checks the table, the events, and that both gateways' plots
// are drawn, from the HTML alone.
func TestPage(t *testing.T) {
	now := time.Now()
	src := twoGateways(now)
	body, err := Page(src, now)
	if err != nil {
		t.Fatal(err)
	}
	html := string(body)
	for _, want := range []string{
		`<meta http-equiv="refresh" content="5">`,
		`<tr data-gateway="isp-a">`, `<td class="up">up</td>`, `<td class="down">down</td>`,
		"probes: 1 of 1 target missed", "&lt;b&gt;A&lt;/b&gt;", // the comment is escaped
		"up → down: probes", "l2shim started",
		"balance (host-pair)",
	} {
		if !strings.Contains(html, want) {
			t.Errorf("page lacks %q", want)
		}
	}
	// Self-contained: nothing is fetched from anywhere.
	for _, banned := range []string{"<script", "<link", "@import", "url(", "src=", "<img"} {
		if strings.Contains(html, banned) {
			t.Errorf("page contains %q", banned)
		}
	}
	plots := regexp.MustCompile(`<svg class="plot"[^>]*data-gateway="([^"]+)" data-kind="([^"]+)" data-samples="(\d+)" data-max="([^"]+)"`).FindAllStringSubmatch(html, -1)
	if len(plots) != 4 {
		t.Fatalf("%d plots, want 4 (traffic and flows of 2 gateways)", len(plots))
	}
	for _, p := range plots {
		n, _ := strconv.Atoi(p[3])
		mx, _ := strconv.ParseFloat(p[4], 64)
		if n < 100 || mx <= 0 {
			t.Errorf("plot %s %s: %d samples, max %v: empty", p[1], p[2], n, mx)
		}
		if p[2] == "traffic" && p[1] == "isp-a" && (mx < 8e6 || mx > 9e6) {
			t.Errorf("isp-a's traffic peaks at %v bit/s, want 8.39e6", mx)
		}
	}
	if !regexp.MustCompile(`<polyline class="series in" data-points="1[0-9][0-9]" points="[0-9., ]+"/>`).MatchString(html) {
		t.Error("no drawn polyline of the traffic in")
	}

	// Over HTTP: / is the page, anything else 404, and nothing may load from elsewhere.
	rec := httptest.NewRecorder()
	pageHandler(src).ServeHTTP(rec, httptest.NewRequest("GET", "/", nil))
	if rec.Code != 200 || !strings.HasPrefix(rec.Header().Get("Content-Type"), "text/html") || !strings.Contains(rec.Header().Get("Content-Security-Policy"), "default-src 'none'") {
		t.Errorf("GET /: %d %v", rec.Code, rec.Header())
	}
	rec = httptest.NewRecorder()
	pageHandler(src).ServeHTTP(rec, httptest.NewRequest("GET", "/favicon.ico", nil))
	if rec.Code != 404 {
		t.Errorf("GET /favicon.ico: %d", rec.Code)
	}
	if _, err := Page(pageSrc{fixed: fixed{nil}, h: NewHistory(1)}, now); err == nil {
		t.Error("a page without status")
	}
}

func TestHistory(t *testing.T) {
	h := NewHistory(3)
	t0 := time.Unix(1000, 0)
	for i := range 5 {
		h.Add(control.Sample{Time: t0.Add(time.Duration(i) * time.Second)})
	}
	got := h.Since(t0)
	if len(got) != 3 || h.Len() != 3 || !got[0].Time.Equal(t0.Add(2*time.Second)) || !got[2].Time.Equal(t0.Add(4*time.Second)) {
		t.Fatalf("Since = %+v", got)
	}
	if got := h.Since(t0.Add(4 * time.Second)); len(got) != 1 {
		t.Fatalf("Since(last) = %+v", got)
	}
}

func TestRates(t *testing.T) {
	t0 := time.Unix(1000, 0)
	s := func(i int, gws ...control.SampleGateway) control.Sample {
		return control.Sample{Time: t0.Add(time.Duration(i) * time.Second), Gateways: gws}
	}
	samples := []control.Sample{
		s(0, control.SampleGateway{Name: "a", BytesIn: 0, BytesOut: 0}),
		s(1, control.SampleGateway{Name: "a", BytesIn: 1000, BytesOut: 10, PacketsIn: 5, Flows: 3}),
		s(2), // a is gone (a reload)
		s(3, control.SampleGateway{Name: "a", BytesIn: 5}),   // back, counters from zero
		s(5, control.SampleGateway{Name: "a", BytesIn: 205}), // two seconds later
		s(6, control.SampleGateway{Name: "a", BytesIn: 100}), // went backwards
	}
	got := Rates(samples, "a")
	want := []Rate{
		{Time: t0.Add(time.Second), BitsIn: 8000, BitsOut: 80, PktsIn: 5, Flows: 3},
		{Time: t0.Add(5 * time.Second), BitsIn: 800},
		{Time: t0.Add(6 * time.Second)},
	}
	if len(got) != len(want) {
		t.Fatalf("Rates = %+v", got)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("rate %d = %+v, want %+v", i, got[i], want[i])
		}
	}
}

func TestUnits(t *testing.T) {
	for _, tc := range []struct {
		v    float64
		nice float64
		bits string
		n    string
	}{
		{0, 1, "0", "0"},
		{3, 5, "3 bit/s", "3"},
		{999, 1000, "999 bit/s", "999"},
		{1234, 2000, "1.2 kbit/s", "1.2k"},
		{8.39e6, 1e7, "8.4 Mbit/s", "8.4M"},
		{45e3, 5e4, "45 kbit/s", "45k"},
		{2.5, 5, "2 bit/s", "2.5"},
	} {
		if got := niceCeil(tc.v); got != tc.nice {
			t.Errorf("niceCeil(%v) = %v, want %v", tc.v, got, tc.nice)
		}
		if got := BitRate(tc.v); got != tc.bits {
			t.Errorf("BitRate(%v) = %q, want %q", tc.v, got, tc.bits)
		}
		if got := Count(tc.v); got != tc.n {
			t.Errorf("Count(%v) = %q, want %q", tc.v, got, tc.n)
		}
	}
}
