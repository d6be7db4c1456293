package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"
	"unicode/utf8"

	"golang.org/x/sys/unix"

	"github.com/l2shim/l2shim/conf"
	"github.com/l2shim/l2shim/control"
	"github.com/l2shim/l2shim/metrics"
)

// topData is what one frame of `l2shim top` shows.
type topData struct {
	status  *control.Status
	history []control.Sample // the last minute
	flows   []control.Flow   // the busiest, busiest first
	// prev holds each listed flow's total bytes at the previous frame, for its rate now.
	prev    map[string]uint64
	elapsed time.Duration
}

// fetchTop asks for everything one frame shows: the status, a minute of history and the
// busiest flows.
func fetchTop(sock string, nflows int) (*topData, error) {
	resp, err := control.Call(sock, control.Request{Command: "status"}, callTimeout)
	if err != nil {
		return nil, err
	}
	d := &topData{status: resp.Status}
	if resp, err = control.Call(sock, control.Request{Command: "history", Seconds: 61}, callTimeout); err != nil {
		return nil, err
	}
	d.history = resp.History
	q := control.FlowQuery{Sort: "bytes", Limit: max(nflows, 1)}
	if resp, err = control.Call(sock, control.Request{Command: "flows", Flows: &q}, callTimeout); err != nil {
		return nil, err
	}
	if resp.Flows != nil {
		d.flows = resp.Flows.Flows
	}
	return d, nil
}

func flowKey(f *control.Flow) string { return f.Proto + " " + f.HostSrc + " " + f.HostDst }

// sparkBlocks are the eight heights of a sparkline; sparkASCII is for terminals without UTF-8.
const (
	sparkBlocks = "▁▂▃▄▅▆▇█"
	sparkASCII  = "_.-:=+*#"
)

// sparkline draws v in width cells, the newest on the right: each cell the largest value of
// the samples it covers, scaled to the largest of all. A zero is the lowest block.
func sparkline(v []float64, width int, ascii bool) string {
	blocks := []rune(sparkBlocks)
	if ascii {
		blocks = []rune(sparkASCII)
	}
	if width <= 0 {
		return ""
	}
	cells := make([]float64, 0, width)
	if len(v) <= width {
		cells = append(cells, v...)
	} else {
		for c := range width {
			lo, hi := c*len(v)/width, (c+1)*len(v)/width
			m := 0.0
			for _, x := range v[lo:hi] {
				m = max(m, x)
			}
			cells = append(cells, m)
		}
	}
	top := 0.0
	for _, x := range cells {
		top = max(top, x)
	}
	var b strings.Builder
	for range width - len(cells) {
		b.WriteByte(' ')
	}
	for _, x := range cells {
		i := 0
		if top > 0 && x > 0 {
			i = min(int(x/top*float64(len(blocks)-1)+0.999), len(blocks)-1)
		}
		b.WriteRune(blocks[i])
	}
	return b.String()
}

// fit cuts s to width cells (runes) or pads it with spaces.
func fit(s string, width int) string {
	n := utf8.RuneCountInString(s)
	if n > width {
		r := []rune(s)
		if width <= 1 {
			return string(r[:width])
		}
		return string(r[:width-1]) + "…"
	}
	return s + strings.Repeat(" ", width-n)
}

func rfit(s string, width int) string {
	n := utf8.RuneCountInString(s)
	if n >= width {
		return fit(s, width)
	}
	return strings.Repeat(" ", width-n) + s
}

// renderTop lays one frame out in w×h cells: the header, one line a gateway (state, flows,
// rates now, the last minute as a sparkline) with the reason of each one not up, then the
// busiest flows with their gateway.
func renderTop(d *topData, now time.Time, w, h int, ascii bool) []string {
	w, h = max(w, 40), max(h, 8)
	st := d.status
	var lines []string
	add := func(s string) { lines = append(lines, fit(s, w)) }
	arrow := "→"
	if ascii {
		arrow = ">"
	}
	add(fmt.Sprintf("l2shim top: mode %s, up %s, %d flows (max %d)", st.Mode, now.Sub(st.Started).Round(time.Second), st.Conntrack.Flows, st.Conntrack.Max))
	add("")
	const nameW, stateW, flowsW, rateW = 10, 12, 6, 10
	spark := w - (nameW + 1 + stateW + 1 + flowsW + 1 + rateW + 1 + rateW + 2)
	add(fit("GATEWAY", nameW) + " " + fit("STATE", stateW) + " " + rfit("FLOWS", flowsW) + " " + rfit("IN/s", rateW) + " " + rfit("OUT/s", rateW) + "  " + fit("LAST MINUTE (in+out)", max(spark, 0)))
	var reasons []string
	for _, g := range st.Gateways {
		rates := metrics.Rates(d.history, g.Name)
		var in, out float64
		series := make([]float64, 0, len(rates))
		for _, r := range rates {
			series = append(series, r.BitsIn+r.BitsOut)
		}
		if len(rates) > 0 {
			in, out = rates[len(rates)-1].BitsIn, rates[len(rates)-1].BitsOut
		}
		state := g.State
		if g.Drained {
			state += ",drained"
		}
		add(fit(g.Name, nameW) + " " + fit(state, stateW) + " " + rfit(fmt.Sprint(g.Flows), flowsW) + " " +
			rfit(metrics.BitRate(in), rateW) + " " + rfit(metrics.BitRate(out), rateW) + "  " + sparkline(series, spark, ascii))
		if g.Reason != "" {
			reasons = append(reasons, "  "+g.Name+": "+g.Reason)
		}
	}
	for _, r := range reasons {
		add(r)
	}
	add("")
	const gwW, totalW, idleW = 10, 9, 6
	flowW := w - (1 + gwW + 1 + rateW + 1 + totalW + 1 + idleW)
	add(fit("BUSIEST FLOWS", flowW) + " " + fit("GATEWAY", gwW) + " " + rfit("NOW/s", rateW) + " " + rfit("TOTAL", totalW) + " " + rfit("IDLE", idleW))
	room := h - len(lines) - 1
	for i := range d.flows {
		if room <= 0 {
			break
		}
		f := &d.flows[i]
		total := f.BytesIn + f.BytesOut
		rate := "-"
		if p, ok := d.prev[flowKey(f)]; ok && d.elapsed > 0 && total >= p {
			rate = metrics.BitRate(8 * float64(total-p) / d.elapsed.Seconds())
		}
		gw := f.Gateway
		if gw == "" {
			gw = "(host)"
		}
		add(fit(fmt.Sprintf("%s %s%s%s", f.Proto, f.HostSrc, arrow, f.HostDst), flowW) + " " + fit(gw, gwW) + " " + rfit(rate, rateW) + " " +
			rfit(control.BytesText(total), totalW) + " " + rfit(control.Seconds(f.Idle), idleW))
		room--
	}
	if len(d.flows) == 0 {
		add("  (no flows)")
	}
	for len(lines) < h-1 {
		add("")
	}
	add(fmt.Sprintf("%s  q or Ctrl-C: quit", now.Format("15:04:05")))
	return lines
}

// cmdTop shows the live view, refreshed every second, until q or Ctrl-C; --once prints one
// frame (80×24 unless the terminal says otherwise) and exits.
func cmdTop(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("l2shim top", flag.ContinueOnError)
	fs.SetOutput(stderr)
	sock := fs.String("s", conf.DefaultControl, "control `SOCKET` of the running l2shim")
	once := fs.Bool("once", false, "print one frame and exit")
	interval := fs.Duration("interval", time.Second, "time between frames")
	ascii := fs.Bool("ascii", !utf8Locale(), "draw with ASCII only (the default without a UTF-8 locale)")
	pos, err := parseInterleaved(fs, args)
	if err != nil {
		return exitUsage
	}
	if len(pos) > 0 {
		fmt.Fprintf(stderr, "l2shim top: unexpected argument %q\n", pos[0])
		return exitUsage
	}
	if *interval < 100*time.Millisecond {
		fmt.Fprintln(stderr, "l2shim top: --interval must be at least 100ms")
		return exitUsage
	}
	w, h := termSize(stdout)
	if *once {
		d, err := fetchTop(*sock, h)
		if err != nil {
			fmt.Fprintf(stderr, "l2shim top: %v\n", err)
			return exitRuntime
		}
		for _, l := range renderTop(d, time.Now(), w, h, *ascii) {
			fmt.Fprintln(stdout, strings.TrimRight(l, " "))
		}
		return exitOK
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	restore := rawTerminal(os.Stdin)
	defer restore()
	quit := make(chan struct{})
	go func() {
		r := bufio.NewReader(os.Stdin)
		for {
			c, err := r.ReadByte()
			if err != nil || c == 'q' || c == 'Q' || c == 3 {
				close(quit)
				return
			}
		}
	}()
	fmt.Fprint(stdout, "\x1b[?1049h\x1b[?25l") // the alternate screen, no cursor
	defer fmt.Fprint(stdout, "\x1b[?25h\x1b[?1049l")
	prev := map[string]uint64{}
	last := time.Time{}
	tick := time.NewTicker(*interval)
	defer tick.Stop()
	for {
		w, h = termSize(stdout)
		d, err := fetchTop(*sock, h)
		now := time.Now()
		var frame []string
		if err != nil {
			frame = []string{fit("l2shim top: "+err.Error(), w)}
		} else {
			d.prev, d.elapsed = prev, now.Sub(last)
			frame = renderTop(d, now, w, h, *ascii)
			prev = map[string]uint64{}
			for i := range d.flows {
				prev[flowKey(&d.flows[i])] = d.flows[i].BytesIn + d.flows[i].BytesOut
			}
			last = now
		}
		var b strings.Builder
		b.WriteString("\x1b[H")
		for i, l := range frame {
			if i > 0 {
				b.WriteString("\r\n")
			}
			b.WriteString(strings.TrimRight(l, " "))
			b.WriteString("\x1b[K")
		}
		b.WriteString("\x1b[J")
		fmt.Fprint(stdout, b.String())
		select {
		case <-ctx.Done():
			return exitOK
		case <-quit:
			return exitOK
		case <-tick.C:
		}
	}
}

// termSize returns the terminal's size when w is one, else 80×24.
func termSize(w io.Writer) (int, int) {
	if f, ok := w.(*os.File); ok {
		if ws, err := unix.IoctlGetWinsize(int(f.Fd()), unix.TIOCGWINSZ); err == nil && ws.Col > 0 && ws.Row > 0 {
			return int(ws.Col), int(ws.Row)
		}
	}
	return 80, 24
}

// rawTerminal turns off line buffering and echo on f when it is a terminal, so one key press
// (q) is read at once; Ctrl-C still raises SIGINT. It returns the function that restores it.
func rawTerminal(f *os.File) func() {
	fd := int(f.Fd())
	old, err := unix.IoctlGetTermios(fd, unix.TCGETS)
	if err != nil {
		return func() {}
	}
	raw := *old
	raw.Lflag &^= unix.ICANON | unix.ECHO
	raw.Cc[unix.VMIN], raw.Cc[unix.VTIME] = 1, 0
	if err := unix.IoctlSetTermios(fd, unix.TCSETS, &raw); err != nil {
		return func() {}
	}
	return func() { _ = unix.IoctlSetTermios(fd, unix.TCSETS, old) }
}

// utf8Locale reports whether the locale asks for UTF-8 (the sparkline's blocks need it).
func utf8Locale() bool {
	for _, k := range []string{"LC_ALL", "LC_CTYPE", "LANG"} {
		if v := os.Getenv(k); v != "" {
			v = strings.ToLower(v)
			return strings.Contains(v, "utf-8") || strings.Contains(v, "utf8")
		}
	}
	return false
}
