package metrics

import (
	"bytes"
	"html/template"
	"net/http"
	"os"
	"time"

	"github.com/l2shim/l2shim/control"
)

// PageSource is a Source that also remembers state changes and traffic history: with one, the
// exporter serves the status page at /.
type PageSource interface {
	Source
	control.EventsHandler
	control.HistoryHandler
}

// pageWindow is how much history the page plots; pageRefresh how often it reloads itself.
const (
	pageWindow  = 10 * time.Minute
	pageRefresh = 5
	pageEvents  = 20
)

type pageGateway struct {
	control.GatewayStatus
	StateClass       string
	Since, RTT       string
	Out, In          string
	Traffic, FlowSVG template.HTML
}

type pageData struct {
	Host     string
	Now      string
	Refresh  int
	Status   *control.Status
	Uptime   string
	Gateways []pageGateway
	Events   []control.Event
	Window   string
}

// Page writes the status page for src at now: the gateway table of `l2shim status`, the last
// state changes, and each gateway's traffic and flows over the last 10 minutes as SVG plots.
// The page is self-contained (no script, font or stylesheet from elsewhere) and reloads itself
// every few seconds.
func Page(src PageSource, now time.Time) ([]byte, error) {
	st := src.Status()
	if st == nil {
		return nil, control.ErrStarting
	}
	host, _ := os.Hostname()
	d := pageData{Host: host, Now: now.Format("2006-01-02 15:04:05"), Refresh: pageRefresh, Status: st,
		Uptime: now.Sub(st.Started).Round(time.Second).String(), Window: shortDuration(pageWindow)}
	samples := src.History(int(pageWindow / time.Second))
	for _, g := range st.Gateways {
		pg := pageGateway{GatewayStatus: g, StateClass: g.State, RTT: "-", Since: "-",
			Out: control.BytesText(g.BytesOut), In: control.BytesText(g.BytesIn)}
		if g.Drained {
			pg.State += ",drained"
		}
		if g.RTTMillis > 0 {
			pg.RTT = time.Duration(g.RTTMillis * float64(time.Millisecond)).Round(10 * time.Microsecond).String()
		}
		if !g.LastChange.IsZero() {
			pg.Since = now.Sub(g.LastChange).Round(time.Second).String()
		}
		rates := Rates(samples, g.Name)
		in, out, flows := Series{Name: "in", Class: "in"}, Series{Name: "out", Class: "out"}, Series{Name: "flows", Class: "flows"}
		for _, r := range rates {
			in.T, in.V = append(in.T, r.Time), append(in.V, r.BitsIn)
			out.T, out.V = append(out.T, r.Time), append(out.V, r.BitsOut)
			flows.T, flows.V = append(flows.T, r.Time), append(flows.V, float64(r.Flows))
		}
		pg.Traffic = template.HTML(Plot{Title: "traffic", Gateway: g.Name, Kind: "traffic", Unit: BitRate, Window: pageWindow, End: now, Series: []Series{in, out}, W: 520, H: 150}.SVG())
		pg.FlowSVG = template.HTML(Plot{Title: "flows", Gateway: g.Name, Kind: "flows", Unit: Count, Window: pageWindow, End: now, Series: []Series{flows}, W: 360, H: 150}.SVG())
		d.Gateways = append(d.Gateways, pg)
	}
	ev := src.Events(0, 0)
	if len(ev) > pageEvents {
		ev = ev[len(ev)-pageEvents:]
	}
	for i := len(ev) - 1; i >= 0; i-- { // newest first
		d.Events = append(d.Events, ev[i])
	}
	var b bytes.Buffer
	if err := pageTemplate.Execute(&b, d); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

// pageHandler serves the status page at / (and 404 elsewhere).
func pageHandler(src PageSource) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/" {
			http.NotFound(w, r)
			return
		}
		body, err := Page(src, time.Now())
		if err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		// Nothing on the page comes from elsewhere, and nothing may.
		w.Header().Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; img-src data:")
		_, _ = w.Write(body)
	})
}

var pageTemplate = template.Must(template.New("page").Funcs(template.FuncMap{
	"eventTime": func(t time.Time) string { return t.Local().Format("2006-01-02 15:04:05") },
	"yesno": func(b bool) string {
		if b {
			return "yes"
		}
		return "no"
	},
}).Parse(`<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="refresh" content="{{.Refresh}}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>l2shim{{with .Host}} on {{.}}{{end}}</title>
<style>
body { font-family: system-ui, sans-serif; margin: 1.5em; color: #222; background: #fafafa; }
h1 { font-size: 1.3em; margin: 0 0 .2em; }
h2 { font-size: 1.05em; margin: 1.4em 0 .5em; }
.meta { color: #666; font-size: .9em; }
table { border-collapse: collapse; font-size: .9em; background: #fff; }
th, td { padding: .25em .7em; border-bottom: 1px solid #e3e3e3; text-align: left; white-space: nowrap; }
th { background: #f0f0f0; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.up { color: #17813a; font-weight: 600; }
.degraded { color: #a86400; font-weight: 600; }
.down { color: #b3261e; font-weight: 600; }
.reason { color: #666; font-size: .85em; white-space: normal; }
.gw { display: flex; flex-wrap: wrap; gap: 1em; align-items: flex-start; margin-bottom: 1em; }
.gw h3 { width: 100%; margin: .4em 0 0; font-size: 1em; }
svg.plot { background: #fff; border: 1px solid #e3e3e3; }
svg .grid { stroke: #eee; stroke-width: 1; }
svg .axis, svg .legend, svg .title { font-size: 11px; fill: #666; font-family: system-ui, sans-serif; }
svg .title { fill: #222; font-weight: 600; }
svg polyline { fill: none; stroke-width: 1.5; }
svg polyline.in { stroke: #1f6fd1; }
svg polyline.out { stroke: #d1741f; }
svg polyline.flows { stroke: #6a3fb5; }
svg .legend.in { fill: #1f6fd1; } svg .legend.out { fill: #d1741f; } svg .legend.flows { fill: #6a3fb5; }
ul.events { font-size: .9em; padding-left: 1.2em; }
ul.events li { margin: .15em 0; }
.kind { font-weight: 600; }
</style>
</head>
<body>
<h1>l2shim{{with .Host}} on {{.}}{{end}}</h1>
<div class="meta">mode {{.Status.Mode}}{{with .Status.Affinity}}, affinity {{.}}{{end}}, source-aware {{.Status.SourceAware}}, up {{.Uptime}}, config {{.Status.Config}}, reloads {{.Status.Reloads}}; {{.Status.Conntrack.Flows}} flows (max {{.Status.Conntrack.Max}}); as of {{.Now}}, refreshed every {{.Refresh}} s</div>

<h2>Gateways</h2>
<table id="gateways">
<tr><th>interface</th><th>gateway</th><th>address</th><th>MAC</th><th>on</th><th>state</th><th>active</th><th>failed</th><th>flows</th><th>out</th><th>in</th><th>RTT</th><th>since</th><th>comment</th></tr>
{{range .Gateways}}<tr data-gateway="{{.Name}}">
<td>{{.Interface}}</td><td>{{.Name}}</td><td>{{or .Address "-"}}</td><td>{{or .MAC "-"}}</td><td>{{yesno .On}}</td>
<td class="{{.StateClass}}">{{.State}}</td><td class="num">{{.Active}}</td><td class="num">{{.Failed}}</td><td class="num">{{.Flows}}</td>
<td class="num">{{.Out}}/{{.PacketsOut}}</td><td class="num">{{.In}}/{{.PacketsIn}}</td><td class="num">{{.RTT}}</td><td class="num">{{.Since}}</td><td>{{.Comment}}</td>
</tr>{{with .Reason}}
<tr><td></td><td colspan="13" class="reason">{{.}}</td></tr>{{end}}
{{end}}</table>

<h2>Traffic and flows, last {{.Window}}</h2>
{{range .Gateways}}<div class="gw" data-gateway="{{.Name}}">
<h3>{{.Name}} <span class="{{.StateClass}}">{{.State}}</span></h3>
{{.Traffic}}
{{.FlowSVG}}
</div>
{{end}}
<h2>Last state changes</h2>
{{if .Events}}<ul class="events" id="events">
{{range .Events}}<li>{{eventTime .Time}} <span class="kind">{{.Kind}}</span>{{with .Gateway}} {{.}}{{end}}: {{.Message}}</li>
{{end}}</ul>{{else}}<p id="events">none yet</p>{{end}}
{{with .Status.Rules}}
<h2>Rules</h2>
<table id="rules">
<tr><th>rule</th><th>action</th><th>gateway</th><th>flows</th><th>packets</th><th>bytes</th></tr>
{{range .}}<tr><td>{{.Name}}</td><td>{{.Action}}{{if eq .Affinity "host-pair"}} (host-pair){{end}}</td><td>{{or .Gateway "-"}}</td><td class="num">{{.Flows}}</td><td class="num">{{.Packets}}</td><td class="num">{{.Bytes}}</td></tr>
{{end}}</table>
{{end}}
<p class="meta">Prometheus metrics: <a href="/metrics">/metrics</a></p>
</body>
</html>
`))
