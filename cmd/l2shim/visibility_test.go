package main

import (
	"bytes"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/l2shim/l2shim/control"
)

// TestVisibilityUsage: the new commands' usage errors exit 2, an unreachable instance 1.
func TestVisibilityUsage(t *testing.T) {
	none := filepath.Join(t.TempDir(), "none.sock")
	for _, c := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"flows", "extra", "-s", none}, exitUsage, "unexpected argument"},
		{[]string{"flows", "--limit", "-1", "-s", none}, exitUsage, "--limit"},
		{[]string{"flows", "--bogus"}, exitUsage, "flag provided but not defined"},
		{[]string{"flows", "-s", none}, exitRuntime, "is it running?"},
		{[]string{"explain", "tcp", "10.1.0.2"}, exitUsage, "usage: l2shim explain"},
		{[]string{"explain", "tcp", "10.1.0.2:1", "example.com:80", "-s", none}, exitUsage, "not ADDR or ADDR:PORT"},
		{[]string{"explain", "tcp", "10.1.0.2:1", "203.0.113.1:80", "-s", none}, exitRuntime, "is it running?"},
		{[]string{"explain", "tcp", "[2001:db8:a::2]:1", "[2001:db8::1]:443", "-s", none}, exitRuntime, "is it running?"},
		{[]string{"explain", "tcp", "10.1.0.2:1", "[2001:db8::1]:443", "-s", none}, exitUsage, "different families"},
		{[]string{"events", "x"}, exitUsage, "unexpected argument"},
		{[]string{"events", "-s", none}, exitRuntime, "is it running?"},
		{[]string{"top", "--once", "-s", none}, exitRuntime, "is it running?"},
		{[]string{"top", "--interval", "1ms"}, exitUsage, "at least 100ms"},
		{[]string{"help"}, exitOK, "explain [--json]"},
	} {
		var out, errb bytes.Buffer
		code := run(c.args, &out, &errb)
		if code != c.code || !strings.Contains(out.String()+errb.String(), c.want) {
			t.Errorf("l2shim %v: exit %d, output %q; want exit %d and %q", c.args, code, out.String()+errb.String(), c.code, c.want)
		}
	}
}

func TestHostPort(t *testing.T) {
	for _, c := range []struct {
		in   string
		addr string
		port int
		ok   bool
	}{
		{"10.1.0.2:40000", "10.1.0.2", 40000, true},
		{"10.1.0.2", "10.1.0.2", 0, true},
		{"[2001:db8::1]:443", "2001:db8::1", 443, true},
		{"[2001:db8::1]", "2001:db8::1", 0, true},
		{"2001:db8::1", "2001:db8::1", 0, true},
		{"[fe80::1%eth0]:22", "fe80::1%eth0", 22, true},
		{"2001:db8::1:443", "2001:db8::1:443", 0, true}, // an address: a port needs brackets
		{"[10.0.0.1]:80", "", 0, false},
		{"[2001:db8::1]:70000", "", 0, false},
		{"[2001:db8::1", "", 0, false},
		{"host:80", "", 0, false},
	} {
		a, p, err := hostPort(c.in)
		if (err == nil) != c.ok || a != c.addr || p != c.port {
			t.Errorf("hostPort(%q) = %q, %d, %v", c.in, a, p, err)
		}
	}
}

func TestSparkline(t *testing.T) {
	for _, c := range []struct {
		v     []float64
		width int
		ascii bool
		want  string
	}{
		{nil, 4, false, "    "},
		{[]float64{0, 1, 2, 4, 8}, 5, false, "▁▂▃▅█"},
		{[]float64{0, 0, 0}, 3, true, "___"},
		{[]float64{8, 0, 0, 0, 0, 0, 0, 8}, 4, true, "#__#"}, // each cell the largest of its two
		{[]float64{1, 2}, 4, true, "  =#"},
	} {
		if got := sparkline(c.v, c.width, c.ascii); got != c.want {
			t.Errorf("sparkline(%v, %d) = %q, want %q", c.v, c.width, got, c.want)
		}
	}
}

// TestRenderTop: a frame fills exactly the terminal (80×24, and a small one), no line is
// wider, and it shows each gateway with its rate now and the busiest flows with theirs.
func TestRenderTop(t *testing.T) {
	now := time.Now()
	st := &control.Status{Mode: "load-balance", Started: now.Add(-time.Hour), Conntrack: control.ConntrackStatus{Flows: 3, Max: 262144},
		Gateways: []control.GatewayStatus{
			{Name: "isp-a", State: "up", Flows: 2},
			{Name: "isp-b-with-a-long-name", State: "down", Drained: true, Reason: "drained; probes: 1 of 1 probe target missed 3 rounds in a row (the gateway answers ARP)"},
		}}
	var hist []control.Sample
	var a uint64
	for i := 60; i >= 0; i-- {
		a += 125000 // 1 Mbit/s
		hist = append(hist, control.Sample{Time: now.Add(-time.Duration(i) * time.Second), Gateways: []control.SampleGateway{{Name: "isp-a", BytesIn: a}, {Name: "isp-b-with-a-long-name"}}})
	}
	var flows []control.Flow
	for i := range 40 {
		flows = append(flows, control.Flow{Proto: "tcp", HostSrc: fmt.Sprintf("10.1.0.2:%d", 40000+i), HostDst: "203.0.113.10:443", Gateway: "isp-a", BytesIn: uint64(1e6 - i), Idle: 0.5})
	}
	d := &topData{status: st, history: hist, flows: flows, prev: map[string]uint64{flowKey(&flows[0]): 1e6 - 250000}, elapsed: time.Second}
	for _, size := range [][2]int{{80, 24}, {60, 12}, {132, 50}} {
		lines := renderTop(d, now, size[0], size[1], false)
		if len(lines) != size[1] {
			t.Fatalf("%v: %d lines", size, len(lines))
		}
		for i, l := range lines {
			if n := utf8.RuneCountInString(l); n != size[0] {
				t.Errorf("%v: line %d is %d wide: %q", size, i+1, n, l)
			}
		}
		frame := strings.Join(lines, "\n")
		for _, want := range []string{"isp-a", "1.0 Mbit/s", "down,drained", "BUSIEST FLOWS", "tcp 10.1.0.2:40000→", "2.0 Mbit/s", "q or Ctrl-C"} {
			if !strings.Contains(frame, want) {
				t.Errorf("%v: frame lacks %q:\n%s", size, want, frame)
			}
		}
		if size[0] == 80 {
			t.Logf("80×24:\n%s", frame)
		}
	}
}
