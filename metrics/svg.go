package metrics

import (
	"fmt"
	"html"
	"math"
	"strings"
	"time"
)

// Series is one line of a plot: values at times.
type Series struct {
	Name  string // legend
	Class string // CSS class of the line: in, out, flows
	T     []time.Time
	V     []float64
}

// Plot is a small time plot rendered on the server as inline SVG: no script, no external
// resource, so the status page works offline and in any browser.
type Plot struct {
	Title   string
	Gateway string // data-gateway, for tests and scripts
	Kind    string // data-kind: traffic, flows
	Unit    func(float64) string
	Window  time.Duration // the x axis ends at End and spans Window
	End     time.Time
	Series  []Series
	W, H    int
}

// SVG renders the plot. The root element carries data-samples (points in the busiest series)
// and data-max (the largest value), so a test can tell an empty plot from a drawn one.
func (p Plot) SVG() string {
	const left, right, top, bottom = 64, 8, 20, 20
	w, h := p.W, p.H
	pw, ph := float64(w-left-right), float64(h-top-bottom)
	maxV, samples := 0.0, 0
	for _, s := range p.Series {
		samples = max(samples, len(s.V))
		for _, v := range s.V {
			maxV = math.Max(maxV, v)
		}
	}
	top5 := niceCeil(maxV)
	start := p.End.Add(-p.Window)
	x := func(t time.Time) float64 {
		return float64(left) + pw*float64(t.Sub(start))/float64(p.Window)
	}
	y := func(v float64) float64 { return float64(top) + ph*(1-v/top5) }

	var b strings.Builder
	fmt.Fprintf(&b, `<svg class="plot" xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" role="img" data-gateway="%s" data-kind="%s" data-samples="%d" data-max="%g">`,
		w, h, w, h, html.EscapeString(p.Gateway), html.EscapeString(p.Kind), samples, maxV)
	fmt.Fprintf(&b, `<title>%s</title>`, html.EscapeString(p.Title))
	fmt.Fprintf(&b, `<text class="title" x="%d" y="14">%s</text>`, left, html.EscapeString(p.Title))
	// Grid: 0, half, top.
	for _, f := range []float64{0, 0.5, 1} {
		yy := y(top5 * f)
		fmt.Fprintf(&b, `<line class="grid" x1="%d" x2="%d" y1="%.1f" y2="%.1f"/>`, left, w-right, yy, yy)
		fmt.Fprintf(&b, `<text class="axis" x="%d" y="%.1f" text-anchor="end">%s</text>`, left-4, yy+4, html.EscapeString(p.Unit(top5*f)))
	}
	fmt.Fprintf(&b, `<text class="axis" x="%d" y="%d">-%s</text>`, left, h-4, shortDuration(p.Window))
	fmt.Fprintf(&b, `<text class="axis" x="%d" y="%d" text-anchor="end">now</text>`, w-right, h-4)
	lx := w - right
	for i := len(p.Series) - 1; i >= 0; i-- {
		s := p.Series[i]
		var pts strings.Builder
		n := 0
		for j := range s.V {
			if s.T[j].Before(start) {
				continue
			}
			fmt.Fprintf(&pts, "%.1f,%.1f ", x(s.T[j]), y(s.V[j]))
			n++
		}
		fmt.Fprintf(&b, `<polyline class="series %s" data-points="%d" points="%s"/>`, html.EscapeString(s.Class), n, strings.TrimSpace(pts.String()))
		label := fmt.Sprintf("%s %s", s.Name, p.Unit(last(s.V)))
		lx -= 8 * len(label)
		fmt.Fprintf(&b, `<text class="legend %s" x="%d" y="14">%s</text>`, html.EscapeString(s.Class), lx, html.EscapeString(label))
		lx -= 12
	}
	b.WriteString(`</svg>`)
	return b.String()
}

func last(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	return v[len(v)-1]
}

// niceCeil rounds v up to 1, 2 or 5 times a power of ten (1 for 0), for the y axis.
func niceCeil(v float64) float64 {
	if v <= 0 || math.IsNaN(v) || math.IsInf(v, 0) {
		return 1
	}
	p := math.Pow(10, math.Floor(math.Log10(v)))
	for _, m := range []float64{1, 2, 5, 10} {
		if m*p >= v {
			return m * p
		}
	}
	return 10 * p
}

func shortDuration(d time.Duration) string {
	if d%time.Minute == 0 {
		return fmt.Sprintf("%d min", int(d.Minutes()))
	}
	return d.String()
}

// BitRate renders bits per second: 0, 950 bit/s, 1.2 kbit/s, 34 Mbit/s.
func BitRate(v float64) string {
	units := []string{"bit/s", "kbit/s", "Mbit/s", "Gbit/s", "Tbit/s"}
	i := 0
	for v >= 1000 && i < len(units)-1 {
		v /= 1000
		i++
	}
	if v == 0 {
		return "0"
	}
	if v < 10 && i > 0 {
		return fmt.Sprintf("%.1f %s", v, units[i])
	}
	return fmt.Sprintf("%.0f %s", v, units[i])
}

// Count renders a count: 0, 950, 1.2k, 34k, 1.5M.
func Count(v float64) string {
	switch {
	case v >= 1e6:
		return fmt.Sprintf("%.1fM", v/1e6)
	case v >= 1e4:
		return fmt.Sprintf("%.0fk", v/1e3)
	case v >= 1e3:
		return fmt.Sprintf("%.1fk", v/1e3)
	case v < 10 && v != math.Trunc(v):
		return fmt.Sprintf("%.1f", v)
	}
	return fmt.Sprintf("%.0f", v)
}
