package integration

import (
	"bytes"
	"context"
	"fmt"
	"image/png"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/l2shim/l2shim/control"
)

// Environment:
//
//	L2SHIM_ARTIFACTS         where TestStatusPageBrowser keeps its screenshot and DOM
//	                         (default: $TMPDIR/l2shim-artifacts)

// chromiumPath finds Debian's Chromium; without one the test fails: it must not pass unseen.
func chromiumPath(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	t.Fatal("no chromium on PATH: the status page's browser test needs Debian's chromium package (apt-get install chromium; .ci/run installs it)")
	return ""
}

// artifactDir is where a test keeps files for a person to look at after it ran.
func artifactDir(t *testing.T) string {
	t.Helper()
	dir := os.Getenv("L2SHIM_ARTIFACTS")
	if dir == "" {
		dir = filepath.Join(os.TempDir(), "l2shim-artifacts")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// headless runs Chromium headless in ns on url with the extra arguments, in a fresh profile,
// and returns its standard output.
func headless(t *testing.T, ns *NS, chromium, url string, extra ...string) []byte {
	t.Helper()
	profile := t.TempDir()
	args := append([]string{
		"--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
		"--disable-component-update", "--disable-sync", "--disable-crash-reporter", "--hide-scrollbars",
		"--user-data-dir=" + profile,
	}, extra...)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	cmd := ns.Command(ctx, chromium, append(args, url)...)
	cmd.Env = append(os.Environ(), "HOME="+profile, "XDG_CONFIG_HOME="+profile, "XDG_CACHE_HOME="+profile)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		t.Fatalf("chromium %s: %v\n%s", strings.Join(extra, " "), err, lastLines(errb.String(), 20))
	}
	return out.Bytes()
}

func lastLines(s string, n int) string {
	l := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(l) > n {
		l = l[len(l)-n:]
	}
	return strings.Join(l, "\n")
}

// steadyEcho keeps a connection to an echo server busy until ctx is done: 32 KiB each way
// every 50 ms (about 5 Mbit/s each way).
func steadyEcho(ctx context.Context, t *testing.T, ns *NS, addr netip.AddrPort, errs chan<- error) {
	c, err := DialTCP(ctx, ns, addr)
	if err != nil {
		errs <- err
		return
	}
	defer c.Close()
	buf := bytes.Repeat([]byte{0xa5}, 32<<10)
	for ctx.Err() == nil {
		c.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := c.Write(buf); err != nil {
			errs <- err
			return
		}
		if _, err := io.ReadFull(c, buf); err != nil {
			errs <- err
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// svgAttrs returns the attributes of every <svg> start tag in dom.
func svgAttrs(dom string) []map[string]string {
	var out []map[string]string
	attr := regexp.MustCompile(`([a-zA-Z-]+)="([^"]*)"`)
	for _, tag := range regexp.MustCompile(`<svg\b[^>]*>`).FindAllString(dom, -1) {
		m := map[string]string{}
		for _, a := range attr.FindAllStringSubmatch(tag, -1) {
			m[a[1]] = a[2]
		}
		out = append(out, m)
	}
	return out
}

// TestStatusPageBrowser: with [shim] metrics set, Chromium (headless) loads / after known
// traffic through both gateways: the DOM holds the gateway table, the state changes, and for
// each gateway a traffic and a flows plot that are drawn (samples, a peak above zero, lines
// with points). The screenshot is kept as an artifact.
func TestStatusPageBrowser(t *testing.T) {
	chromium := chromiumPath(t)
	topo := newTopo(t)
	srv := startServers(t, topo)
	const port2 = 7007
	if _, err := StartTCPEcho(topo.Server, netip.AddrPortFrom(topo.ServerAddr, port2)); err != nil {
		t.Fatal(err)
	}
	const metricsAddr = "127.0.0.1:9617"
	eth0, eth1 := topo.HostIf0, topo.HostIf1
	s := startShimCfg(t, topo, ConfigOptions{
		ShimExtra: fmt.Sprintf("metrics = %q", metricsAddr),
		Extra: failoverTable(`probe_interval = "0s"`) + "\n\n" + routeToRule("echo via eth0", "tcp", EchoPort, eth0) + "\n" +
			routeToRule("echo2 via eth1", "tcp", port2, eth1),
	})
	defer stopShim(t, s)

	// Known traffic: one steady connection through each gateway for 6 seconds.
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Second)
	defer cancel()
	errs := make(chan error, 2)
	var wg sync.WaitGroup
	for _, a := range []netip.AddrPort{srv.echoAddr(), netip.AddrPortFrom(topo.ServerAddr, port2)} {
		wg.Add(1)
		go func() { defer wg.Done(); steadyEcho(ctx, t, topo.Host, a, errs) }()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("traffic: %v", err)
	}
	// The history holds a second's sample: give it one more after the traffic.
	time.Sleep(1200 * time.Millisecond)
	resp, err := control.Call(s.sock, control.Request{Command: "history", Seconds: 60}, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("history: %d samples", len(resp.History))

	url := "http://" + metricsAddr + "/"
	dom := string(headless(t, topo.Host, chromium, url, "--dump-dom"))
	dir := artifactDir(t)
	base := filepath.Join(dir, "statuspage-"+topo.ID)
	if err := os.WriteFile(base+".html", []byte(dom), 0o644); err != nil {
		t.Fatal(err)
	}
	headless(t, topo.Host, chromium, url, "--window-size=1280,1400", "--screenshot="+base+".png")
	t.Logf("ARTIFACT status page screenshot: %s.png (DOM: %s.html)", base, base)

	// The DOM as the browser built it.
	for _, want := range []string{
		`<tr data-gateway="` + eth0 + `">`, `<tr data-gateway="` + eth1 + `">`, `id="events"`, "l2shim started",
		"echo via eth0", "echo2 via eth1", `href="/metrics"`,
	} {
		if !strings.Contains(dom, want) {
			t.Errorf("the page's DOM lacks %q", want)
		}
	}
	for _, banned := range []string{"<script", "<link", "<img", "@import"} {
		if strings.Contains(dom, banned) {
			t.Errorf("the page's DOM holds %q: it must be self-contained", banned)
		}
	}
	plots := map[string]map[string]string{}
	for _, a := range svgAttrs(dom) {
		if a["class"] == "plot" {
			plots[a["data-gateway"]+" "+a["data-kind"]] = a
		}
	}
	for _, gw := range []string{eth0, eth1} {
		for _, kind := range []string{"traffic", "flows"} {
			a, ok := plots[gw+" "+kind]
			if !ok {
				t.Errorf("no %s plot for %s in the DOM", kind, gw)
				continue
			}
			n, _ := strconv.Atoi(a["data-samples"])
			peak, _ := strconv.ParseFloat(a["data-max"], 64)
			t.Logf("%s %s plot: %d samples, peak %g", gw, kind, n, peak)
			if n < 3 || peak <= 0 {
				t.Errorf("%s's %s plot is empty: %d samples, peak %g", gw, kind, n, peak)
			}
			if kind == "traffic" && (peak < 1e6 || peak > 1e9) {
				t.Errorf("%s's traffic peaks at %g bit/s; the test sent about 5 Mbit/s each way", gw, peak)
			}
		}
	}
	lines := regexp.MustCompile(`<polyline class="series (in|out|flows)" data-points="(\d+)" points="([^"]*)"`).FindAllStringSubmatch(dom, -1)
	if len(lines) != 6 {
		t.Errorf("%d plot lines in the DOM, want 6 (in, out, flows for each gateway)", len(lines))
	}
	for _, l := range lines {
		if n, _ := strconv.Atoi(l[2]); n < 3 || len(strings.Fields(l[3])) != n {
			t.Errorf("plot line %s has %s points: %q", l[1], l[2], l[3])
		}
	}

	// The screenshot is a real picture of the page.
	f, err := os.Open(base + ".png")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	img, err := png.Decode(f)
	if err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	b := img.Bounds()
	colours := map[uint32]bool{}
	for y := b.Min.Y; y < b.Max.Y; y += 7 {
		for x := b.Min.X; x < b.Max.X; x += 7 {
			r, g, bb, _ := img.At(x, y).RGBA()
			colours[r>>8<<16|g>>8<<8|bb>>8] = true
		}
	}
	t.Logf("screenshot %dx%d, %d colours sampled", b.Dx(), b.Dy(), len(colours))
	if b.Dx() != 1280 || b.Dy() != 1400 || len(colours) < 8 {
		t.Errorf("screenshot %dx%d with %d colours: not the rendered page", b.Dx(), b.Dy(), len(colours))
	}

	// The metrics endpoint is still there beside the page.
	var body []byte
	err = topo.Host.Do(func() error {
		c, err := net.DialTimeout("tcp", metricsAddr, 2*time.Second)
		if err != nil {
			return err
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		fmt.Fprintf(c, "GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n")
		body, err = io.ReadAll(c)
		return err
	})
	if err != nil || !bytes.Contains(body, []byte("l2shim_gateway_bytes_total")) {
		t.Errorf("GET /metrics: %v\n%.300s", err, body)
	}
}
