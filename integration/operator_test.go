package integration

// Operator surface end to end: the status JSON and table after known traffic, a Prometheus scrape, drain and undrain, and
// reloads (good ones during running transfers, bad ones that must change
// nothing).

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/l2shim/l2shim/control"
)

// The gateways get names of their own in these tests, so that status,
// metrics and drain are seen to use the configured name, not the interface.
const (
	opNameA = "ispA" // eth0 via 10.1.0.1 (gw0), direct: the server sees 10.1.0.2
	opNameB = "ispB" // eth1 via 10.2.0.1 (gw1), NATed: the server sees 10.2.0.2

	// opMetricsAddr is where the shim serves /metrics: loopback of the host
	// namespace (each topology has its own, so the port never clashes).
	opMetricsAddr = "127.0.0.1:9464"

	opRulePort = 9000 // a TCP echo server on this port is what rules steer
)

// opOptions is the base config: named gateways, metrics on, and GatewayExtra
// lines per gateway (e.g. weight, on, probe) after the name.
func opOptions(t *testing.T, extraA, extraB, extra string) ConfigOptions {
	return ConfigOptions{
		Mode:      "load-balance",
		Control:   filepath.Join(t.TempDir(), "l2shim.sock"),
		ShimExtra: fmt.Sprintf("metrics = %q", opMetricsAddr),
		GatewayExtra: [2]string{
			fmt.Sprintf("name = %q\n%s", opNameA, extraA),
			fmt.Sprintf("name = %q\n%s", opNameB, extraB),
		},
		Extra: extra,
	}
}

// writeConfig replaces the file the shim was started with (what a reload
// reads) with the config for o.
func (s *testShim) writeConfig(t *testing.T, o ConfigOptions) string {
	t.Helper()
	cfg := s.topo.Config(o)
	s.writeRaw(t, cfg)
	return cfg
}

// writeRaw replaces the config file with text as is.
func (s *testShim) writeRaw(t *testing.T, text string) {
	t.Helper()
	if err := os.WriteFile(s.ConfigPath, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
}

// cli runs `l2shim ARGS... -s SOCK` (a Unix socket client: no network, so it
// needs no namespace) and returns stdout, stderr and the exit code.
func (s *testShim) cli(t *testing.T, args ...string) (string, string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, s.bin, append(args, "-s", s.sock)...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	code := exitCode(t, cmd.Run())
	return out.String(), errb.String(), code
}

func opGateway(t *testing.T, st *control.Status, name string) control.GatewayStatus {
	t.Helper()
	for _, g := range st.Gateways {
		if g.Name == name {
			return g
		}
	}
	t.Fatalf("status has no gateway %q: %+v", name, st.Gateways)
	return control.GatewayStatus{}
}

func opRule(st *control.Status, name string) (control.RuleStatus, bool) {
	for _, r := range st.Rules {
		if r.Name == name {
			return r, true
		}
	}
	return control.RuleStatus{}, false
}

// waitStatus polls the status until ok accepts it or timeout passes, and
// returns the last one.
func (s *testShim) waitStatus(t *testing.T, timeout time.Duration, ok func(*control.Status) bool) (*control.Status, bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		st := s.status(t)
		if ok(st) {
			return st, true
		}
		if time.Now().After(deadline) {
			return st, false
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func opPlacedSum(st *control.Status) uint64 {
	var n uint64
	for _, g := range st.Gateways {
		n += g.Placed
	}
	return n
}

// opScrape fetches /metrics from the shim's listener in the host namespace:
// the connection is made on a thread switched into that namespace, so the
// scrape never touches the root namespace.
func opScrape(ns *NS, addr string) (map[string]*dto.MetricFamily, string, error) {
	tr := &http.Transport{
		DisableKeepAlives: true,
		DialContext: func(ctx context.Context, network, a string) (net.Conn, error) {
			return dialIn(ctx, ns, &net.Dialer{}, network, a)
		},
	}
	defer tr.CloseIdleConnections()
	cl := &http.Client{Transport: tr, Timeout: 5 * time.Second}
	resp, err := cl.Get("http://" + addr + "/metrics")
	if err != nil {
		return nil, "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err != nil {
		return nil, "", err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, string(body), fmt.Errorf("GET /metrics: %s", resp.Status)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(bytes.NewReader(body))
	if err != nil {
		return nil, string(body), fmt.Errorf("parse /metrics (%s): %w", resp.Header.Get("Content-Type"), err)
	}
	return fams, string(body), nil
}

// opMetric returns the value of the sample of family name whose labels
// include every one of labels (pairs: name, value); an error unless there
// is exactly one such sample. A histogram's value is its sample count.
func opMetric(fams map[string]*dto.MetricFamily, name string, labels ...string) (float64, error) {
	f, ok := fams[name]
	if !ok {
		return 0, fmt.Errorf("no metric family %s", name)
	}
	var found []float64
next:
	for _, m := range f.GetMetric() {
		have := map[string]string{}
		for _, lp := range m.GetLabel() {
			have[lp.GetName()] = lp.GetValue()
		}
		for i := 0; i+1 < len(labels); i += 2 {
			if have[labels[i]] != labels[i+1] {
				continue next
			}
		}
		switch {
		case m.Counter != nil:
			found = append(found, m.GetCounter().GetValue())
		case m.Gauge != nil:
			found = append(found, m.GetGauge().GetValue())
		case m.Untyped != nil:
			found = append(found, m.GetUntyped().GetValue())
		case m.Histogram != nil:
			found = append(found, float64(m.GetHistogram().GetSampleCount()))
		}
	}
	if len(found) != 1 {
		return 0, fmt.Errorf("%s%v: %d samples, want 1", name, labels, len(found))
	}
	return found[0], nil
}

// opBulk is the size of the transfers that run across reloads: 1 GiB, or
// L2SHIM_BULK_MB when larger. Not smaller: at several Gbit/s a smaller
// transfer may end before the reload it must outlive is done.
func opBulk() int64 { return max(bulkSize(), 1<<30) }

type opTransfer struct {
	res TransferResult
	err error
}

// waitRunning waits until the transfer has moved at least min bytes
// through gateway name (by the status counter for dir, "out" or "in"), and
// fails the test if it ended before that.
func (s *testShim) waitRunning(t *testing.T, name, dir string, min uint64, done <-chan opTransfer) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		g := opGateway(t, s.status(t), name)
		n := g.BytesOut
		if dir == "in" {
			n = g.BytesIn
		}
		if n >= min {
			return
		}
		select {
		case r := <-done:
			t.Fatalf("transfer through %s ended before %d bytes were counted (status %s=%d): %v %+v", name, min, dir, n, r.err, r.res)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("transfer through %s: only %d bytes %s after 20 s", name, n, dir)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// opRuleServer starts the TCP echo server on the server's port opRulePort.
func opRuleServer(t *testing.T, topo *Topology) *TCPEchoServer {
	t.Helper()
	s, err := StartTCPEcho(topo.Server, netip.AddrPortFrom(topo.ServerAddr, opRulePort))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// opRuleEchoes makes n echo connections to the server's port opRulePort and
// returns what the server saw.
func opRuleEchoes(t *testing.T, topo *Topology, srv *TCPEchoServer, n int) map[netip.Addr]int {
	t.Helper()
	srv.Seen.Reset()
	ok, errs := TCPEchoMany(context.Background(), topo.Host, srv.Addr, n, 2, 3*time.Second)
	if ok != n {
		t.Errorf("port %d: %d/%d connections succeeded:%s", opRulePort, ok, n, firstErrs(errs, 5))
	}
	return srv.Seen.Counts()
}

// TestOperatorStatusMetrics: after a known number of TCP connections, UDP
// flows and rule-matched connections, the status (control socket, `status
// --json` and the table) shows each gateway's placed flows exactly as the
// server saw them arrive per uplink, bytes and packets both ways, state up;
// a Prometheus scrape parses and carries the same numbers.
func TestOperatorStatusMetrics(t *testing.T) {
	topo := newTopo(t)
	srv := startServers(t, topo)
	ruleSrv := opRuleServer(t, topo)
	const ruleName = "port 9000 via A"
	probe := probeLine(topo.ServerAddr)
	o := opOptions(t, probe, probe, failoverTable(`probe_interval = "200ms"`)+"\n\n[conntrack]\nmax_flows = 50000\n\n"+
		routeToRule(ruleName, "tcp", opRulePort, opNameA))
	s := startShimCfg(t, topo, o)

	// Before any traffic: both up (probes answered), nothing placed.
	st, ok := s.waitStatus(t, 5*time.Second, func(st *control.Status) bool {
		return len(st.Gateways) == 2 && st.Gateways[0].State == "up" && st.Gateways[1].State == "up"
	})
	if !ok {
		t.Fatalf("gateways not both up 5 s after start: %+v", st.Gateways)
	}
	if n := opPlacedSum(st); n != 0 {
		t.Errorf("before any traffic: %d flows placed, want 0: %+v", n, st.Gateways)
	}
	if st.Mode != "load-balance" || st.Config != s.ConfigPath || st.Reloads != 0 || st.Conntrack.Max != 50000 {
		t.Errorf("status header: mode %q config %q reloads %d max_flows %d; want load-balance, %s, 0, 50000",
			st.Mode, st.Config, st.Reloads, st.Conntrack.Max, s.ConfigPath)
	}
	for i, want := range []struct{ name, ifname, addr string }{
		{opNameA, topo.HostIf0, topo.GW0Addr.String()},
		{opNameB, topo.HostIf1, topo.GW1Addr.String()},
	} {
		g := st.Gateways[i]
		if g.Name != want.name || g.Interface != want.ifname || g.Address != want.addr || !g.On || g.Drained || g.MAC == "" {
			t.Errorf("gateway %d: %+v; want name %s on %s via %s, on, not drained, MAC resolved", i, g, want.name, want.ifname, want.addr)
		}
	}

	// Known traffic. The topology carries nothing else: probes are the
	// shim's own and never placed as flows.
	const nTCP, nUDP, nRule = 60, 40, 10
	ctx := context.Background()
	okN, errs := TCPEchoMany(ctx, topo.Host, srv.echoAddr(), nTCP, 4, 3*time.Second)
	if okN != nTCP {
		t.Fatalf("TCP: %d/%d connections succeeded:%s", okN, nTCP, firstErrs(errs, 5))
	}
	res := UDPExchange(ctx, topo.Host, srv.udpAddr(), nUDP, 2, 2*time.Second)
	if res.Answered != nUDP {
		t.Fatalf("UDP: %d/%d answered:%s", res.Answered, nUDP, firstErrs(res.Errors, 5))
	}
	ruleSeen := opRuleEchoes(t, topo, ruleSrv, nRule)
	if ruleSeen[topo.HostAddr0] != nRule {
		t.Errorf("rule %q: server saw %s, want %s=%d", ruleName, FormatCounts(ruleSeen), topo.HostAddr0, nRule)
	}
	tcpSeen, udpSeen := srv.echo.Seen.Counts(), srv.udp.Seen.Counts()
	t.Logf("server saw: TCP %s, UDP %s (%d resends), port %d %s", FormatCounts(tcpSeen), FormatCounts(udpSeen), res.Retried, opRulePort, FormatCounts(ruleSeen))
	splitOK(t, "TCP", topo, tcpSeen, nTCP)
	splitOK(t, "UDP", topo, udpSeen, srv.udp.Seen.Total())
	if res.Retried > 0 {
		// The UDP server counts datagrams, not flows: a resend is counted twice.
		t.Errorf("UDP: %d requests had to be resent on a loss-free topology; per-uplink UDP flow counts are not exact", res.Retried)
	}

	want := map[string]uint64{
		opNameA: uint64(tcpSeen[topo.HostAddr0] + udpSeen[topo.HostAddr0] + ruleSeen[topo.HostAddr0]),
		opNameB: uint64(tcpSeen[topo.HostAddr1] + udpSeen[topo.HostAddr1] + ruleSeen[topo.HostAddr1]),
	}
	const total = nTCP + nUDP + nRule
	// Counters are read at request time; wait a moment for the last closes
	// to be seen, then make sure nothing more trickles in.
	s.waitStatus(t, 2*time.Second, func(st *control.Status) bool { return opPlacedSum(st) >= total })
	time.Sleep(300 * time.Millisecond)
	st = s.status(t)
	if n := opPlacedSum(st); n != total {
		t.Errorf("placed over all gateways = %d, want %d (%d TCP + %d UDP + %d rule-matched flows the test made, nothing else): %s",
			n, total, nTCP, nUDP, nRule, opGatewaysText(st))
	}
	if n := st.Datapath["flows_created"]; n != total {
		t.Errorf("datapath flows_created = %d, want %d", n, total)
	}
	for _, name := range []string{opNameA, opNameB} {
		g := opGateway(t, st, name)
		t.Logf("status %s: placed %d (server saw %d) live %d out %d B/%d pkts in %d B/%d pkts state %s rtt %.2fms active %d failed %d",
			name, g.Placed, want[name], g.Flows, g.BytesOut, g.PacketsOut, g.BytesIn, g.PacketsIn, g.State, g.RTTMillis, g.Active, g.Failed)
		if g.Placed != want[name] {
			t.Errorf("%s: placed %d, but the server saw %d flows from its uplink", name, g.Placed, want[name])
		}
		if g.State != "up" || g.Reason != "" {
			t.Errorf("%s: state %q reason %q, want up", name, g.State, g.Reason)
		}
		if g.BytesOut == 0 || g.BytesIn == 0 || g.PacketsOut == 0 || g.PacketsIn == 0 {
			t.Errorf("%s: carried flows but bytes out/in %d/%d packets out/in %d/%d", name, g.BytesOut, g.BytesIn, g.PacketsOut, g.PacketsIn)
		}
		// A TCP connection is at least SYN, ACK, data, FIN, ACK out and
		// SYN-ACK, data, FIN in; a UDP exchange one datagram each way.
		if g.PacketsOut < g.Placed || g.PacketsIn < g.Placed {
			t.Errorf("%s: %d flows but only %d packets out, %d in", name, g.Placed, g.PacketsOut, g.PacketsIn)
		}
		if g.BytesOut < 60*g.PacketsOut || g.BytesIn < 60*g.PacketsIn {
			t.Errorf("%s: bytes out/in %d/%d for %d/%d frames: less than a minimal frame each", name, g.BytesOut, g.BytesIn, g.PacketsOut, g.PacketsIn)
		}
		// UDP flows stay in the table (replied: 180 s), closed TCP ones 10 s.
		if g.Flows > g.Placed || g.Flows < uint64(udpSeen[map[string]netip.Addr{opNameA: topo.HostAddr0, opNameB: topo.HostAddr1}[name]]) {
			t.Errorf("%s: %d live flows; want between its UDP flows and the %d placed", name, g.Flows, g.Placed)
		}
		if g.RTTMillis <= 0 {
			t.Errorf("%s: no probe RTT although probes run every 200 ms", name)
		}
	}
	if r, ok := opRule(st, ruleName); !ok {
		t.Errorf("status has no rule %q: %+v", ruleName, st.Rules)
	} else {
		t.Logf("rule %q: %d flows %d packets %d bytes", r.Name, r.Flows, r.Packets, r.Bytes)
		if r.Flows != nRule || r.Packets == 0 || r.Bytes == 0 || r.Action != "route-to" || r.Gateway != opNameA {
			t.Errorf("rule %q: %+v; want %d flows, packets and bytes, route-to %s", ruleName, r, nRule, opNameA)
		}
	}
	if st.Conntrack.Flows <= 0 || st.Conntrack.Flows > total {
		t.Errorf("conntrack flows %d, want 1..%d", st.Conntrack.Flows, total)
	}

	// The CLI: --json carries the same numbers (nothing moves meanwhile), the
	// table names both gateways and the rule.
	out, errOut, code := s.cli(t, "status", "--json")
	if code != 0 {
		t.Fatalf("l2shim status --json: exit %d: %s", code, errOut)
	}
	var js control.Status
	if err := json.Unmarshal([]byte(out), &js); err != nil {
		t.Fatalf("l2shim status --json: %v:\n%s", err, out)
	}
	for _, name := range []string{opNameA, opNameB} {
		a, b := opGateway(t, st, name), opGateway(t, &js, name)
		if a.Placed != b.Placed || a.BytesOut != b.BytesOut || a.BytesIn != b.BytesIn || a.PacketsOut != b.PacketsOut || a.State != b.State {
			t.Errorf("%s: status --json %+v differs from the control socket's %+v", name, b, a)
		}
	}
	for _, k := range []string{`"placed"`, `"bytes_out"`, `"packets_in"`, `"rtt_ms"`, `"conntrack"`, `"drops"`, `"datapath"`} {
		if !strings.Contains(out, k) {
			t.Errorf("status --json has no %s key", k)
		}
	}
	table, errOut, code := s.cli(t, "status")
	if code != 0 {
		t.Fatalf("l2shim status: exit %d: %s", code, errOut)
	}
	t.Logf("l2shim status:\n%s", table)
	for _, w := range []string{opNameA, opNameB, topo.HostIf0, topo.HostIf1, "uplink A (gw0)", ruleName, "conntrack:", "drops:"} {
		if !strings.Contains(table, w) {
			t.Errorf("status table does not show %q", w)
		}
	}

	// Metrics: between a status before and one after the scrape.
	before := s.status(t)
	fams, body, err := opScrape(topo.Host, opMetricsAddr)
	after := s.status(t)
	if err != nil {
		t.Fatalf("scrape: %v\n%s", err, body)
	}
	within := func(what string, v float64, lo, hi uint64) {
		t.Helper()
		if v < float64(lo) || v > float64(hi) {
			t.Errorf("metrics %s = %v, status says %d..%d", what, v, lo, hi)
		}
	}
	metric := func(name string, labels ...string) float64 {
		t.Helper()
		v, err := opMetric(fams, name, labels...)
		if err != nil {
			t.Errorf("metrics: %v", err)
		}
		return v
	}
	for i, name := range []string{opNameA, opNameB} {
		b, a := opGateway(t, before, name), opGateway(t, after, name)
		ifname := []string{topo.HostIf0, topo.HostIf1}[i]
		within(name+" placed", metric("l2shim_gateway_flows_placed_total", "gateway", name), b.Placed, a.Placed)
		within(name+" bytes out", metric("l2shim_gateway_bytes_total", "gateway", name, "direction", "out"), b.BytesOut, a.BytesOut)
		within(name+" bytes in", metric("l2shim_gateway_bytes_total", "gateway", name, "direction", "in"), b.BytesIn, a.BytesIn)
		within(name+" packets out", metric("l2shim_gateway_packets_total", "gateway", name, "direction", "out"), b.PacketsOut, a.PacketsOut)
		within(name+" packets in", metric("l2shim_gateway_packets_total", "gateway", name, "direction", "in"), b.PacketsIn, a.PacketsIn)
		within(name+" live flows", metric("l2shim_gateway_flows", "gateway", name), min(b.Flows, a.Flows), max(b.Flows, a.Flows))
		if v := metric("l2shim_gateway_flows_placed_total", "gateway", name); v != float64(want[name]) {
			t.Errorf("metrics %s placed = %v, the server saw %d", name, v, want[name])
		}
		if v := metric("l2shim_gateway_up", "gateway", name, "interface", ifname); v != 1 {
			t.Errorf("metrics l2shim_gateway_up{%s,%s} = %v, want 1", name, ifname, v)
		}
		if v := metric("l2shim_gateway_state", "gateway", name, "state", "up"); v != 1 {
			t.Errorf("metrics l2shim_gateway_state{%s,up} = %v, want 1", name, v)
		}
		if v := metric("l2shim_gateway_drained", "gateway", name); v != 0 {
			t.Errorf("metrics l2shim_gateway_drained{%s} = %v, want 0", name, v)
		}
		if v := metric("l2shim_probe_rtt_seconds", "gateway", name); v < 1 {
			t.Errorf("metrics l2shim_probe_rtt_seconds{%s}: %v observations, want some (probes every 200 ms)", name, v)
		}
	}
	within("rule flows", metric("l2shim_rule_flows_total", "rule", ruleName, "action", "route-to"), nRule, nRule)
	if v := metric("l2shim_rule_bytes_total", "rule", ruleName, "action", "route-to"); v <= 0 {
		t.Errorf("metrics l2shim_rule_bytes_total{%q} = %v", ruleName, v)
	}
	within("flows_created", metric("l2shim_datapath_total", "counter", "flows_created"), before.Datapath["flows_created"], after.Datapath["flows_created"])
	within("frames_out", metric("l2shim_datapath_total", "counter", "frames_out"), before.Datapath["frames_out"], after.Datapath["frames_out"])
	within("nated", metric("l2shim_datapath_total", "counter", "nated"), before.Datapath["nated"], after.Datapath["nated"])
	if v := metric("l2shim_datapath_total", "counter", "nated"); v <= 0 {
		t.Errorf("metrics: nothing NATed although %s's flows are", opNameB)
	}
	within("conntrack max", metric("l2shim_conntrack_max_flows"), 50000, 50000)
	within("reloads", metric("l2shim_reloads_total"), 0, 0)
	within("evictions", metric("l2shim_conntrack_evictions_total"), 0, 0)
	if v := metric("l2shim_conntrack_flows"); v <= 0 {
		t.Errorf("metrics l2shim_conntrack_flows = %v", v)
	}
	if f, ok := fams["l2shim_drops_total"]; !ok || f.GetType() != dto.MetricType_COUNTER || len(f.GetMetric()) == 0 {
		t.Errorf("metrics: l2shim_drops_total missing or not a counter: %v", f)
	} else {
		for r, n := range before.Drops {
			within("drops "+r, metric("l2shim_drops_total", "reason", r), n, after.Drops[r])
		}
	}
	for _, name := range []string{"l2shim_gateway_flows_placed_total", "l2shim_gateway_bytes_total", "l2shim_rule_flows_total", "l2shim_reloads_total"} {
		if f := fams[name]; f != nil && f.GetType() != dto.MetricType_COUNTER {
			t.Errorf("metrics: %s is a %v, want a counter", name, f.GetType())
		}
	}
	if f := fams["l2shim_probe_rtt_seconds"]; f != nil && f.GetType() != dto.MetricType_HISTOGRAM {
		t.Errorf("metrics: l2shim_probe_rtt_seconds is a %v, want a histogram", f.GetType())
	}

	stopShim(t, s)
}

// opWhoami asks the UDP echo server, over c's flow, which address it sees.
func opWhoami(t *testing.T, c *net.UDPConn) string {
	t.Helper()
	got, err := whoami(c, 3, 700*time.Millisecond)
	if err != nil {
		t.Errorf("UDP %s: %v", c.LocalAddr(), err)
		return ""
	}
	if got == "" {
		return "(no answer)"
	}
	return got
}

// waitUp waits up to 3 s for the named gateways to be up in the status.
func (s *testShim) waitUp(t *testing.T, names ...string) {
	t.Helper()
	st, ok := s.waitStatus(t, 3*time.Second, func(st *control.Status) bool {
		for _, n := range names {
			if opGateway(t, st, n).State != "up" {
				return false
			}
		}
		return true
	})
	if !ok {
		t.Fatalf("gateways not up 3 s after start: %s", opStatesText(st))
	}
}

func opStatesText(st *control.Status) string {
	var parts []string
	for _, g := range st.Gateways {
		parts = append(parts, fmt.Sprintf("%s %s (%s) placed=%d", g.Name, g.State, g.Reason, g.Placed))
	}
	return strings.Join(parts, "; ")
}

func opGatewaysText(st *control.Status) string {
	var parts []string
	for _, g := range st.Gateways {
		parts = append(parts, fmt.Sprintf("%s placed=%d live=%d", g.Name, g.Placed, g.Flows))
	}
	return strings.Join(parts, ", ")
}

// TestOperatorStatusAtStart: from the moment l2shim says it is running, the
// status and the metrics describe what the datapath does: a gateway that takes
// new flows is not reported down (l2shim_gateway_up is documented as "1 when
// the gateway takes new flows"). ARP probing only, every 3 s: the first round
// ends a third of that after start.
func TestOperatorStatusAtStart(t *testing.T) {
	topo := newTopo(t)
	srv := startServers(t, topo)
	s := startShimCfg(t, topo, opOptions(t, "", "", "[failover]\nprobe_interval = \"3s\""))
	ready := time.Now()
	okN, errs := TCPEchoMany(context.Background(), topo.Host, srv.echoAddr(), 20, 4, 3*time.Second)
	if okN != 20 {
		t.Fatalf("TCP: %d/20 connections succeeded:%s", okN, firstErrs(errs, 5))
	}
	seen := srv.echo.Seen.Counts()
	// Past one publication of the status snapshot (every 100 ms), well
	// within the first probe round.
	time.Sleep(150 * time.Millisecond)
	st := s.status(t)
	fams, body, err := opScrape(topo.Host, opMetricsAddr)
	if err != nil {
		t.Fatalf("scrape: %v\n%s", err, body)
	}
	t.Logf("%v after ready: server saw %s; status: %s", time.Since(ready).Round(time.Millisecond), FormatCounts(seen), opStatesText(st))
	for i, name := range []string{opNameA, opNameB} {
		addr := []netip.Addr{topo.HostAddr0, topo.HostAddr1}[i]
		ifname := []string{topo.HostIf0, topo.HostIf1}[i]
		g := opGateway(t, st, name)
		if seen[addr] == 0 {
			continue
		}
		if g.Placed != uint64(seen[addr]) {
			t.Errorf("%s: placed %d, the server saw %d connections from %s", name, g.Placed, seen[addr], addr)
		}
		if g.State == "down" {
			t.Errorf("%s takes new flows (%d placed, the server saw them from %s) but the status says %s: %q", name, g.Placed, addr, g.State, g.Reason)
		}
		if g.MAC == "" {
			t.Errorf("%s: no MAC in the status although it forwards flows", name)
		}
		if v, err := opMetric(fams, "l2shim_gateway_up", "gateway", name, "interface", ifname); err != nil || v != 1 {
			t.Errorf("metrics l2shim_gateway_up{%s} = %v (%v) while it takes new flows, want 1", name, v, err)
		}
	}
	if st, ok := s.waitStatus(t, 3*time.Second, func(st *control.Status) bool {
		return st.Gateways[0].State == "up" && st.Gateways[1].State == "up"
	}); ok {
		t.Logf("MEASURED status shows both gateways up %v after ready", time.Since(ready).Round(10*time.Millisecond))
	} else {
		t.Errorf("gateways not up 3 s after ready: %s", opStatesText(st))
	}
	stopShim(t, s)
}

// TestOperatorReload: a good reload (weights changed, a rule added) during a
// transfer through one gateway keeps it byte-exact and the new rule acts at
// once; bad reloads (unknown key, bad address, a restart-only change) are
// refused with their errors and change nothing; a SIGHUP reload that turns
// the other gateway off keeps a transfer on the surviving gateway byte-exact
// and resets the turned-off gateway's live TCP connection.
func TestOperatorReload(t *testing.T) {
	topo := newTopo(t)
	srv := startServers(t, topo)
	ruleSrv := opRuleServer(t, topo)
	o := opOptions(t, "", "", "")
	s := startShimCfg(t, topo, o)
	s.waitUp(t, opNameA, opNameB)
	size := opBulk()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	// Without a rule, port 9000 is load-balanced like everything else.
	if seen := opRuleEchoes(t, topo, ruleSrv, 20); seen[topo.HostAddr0] == 0 || seen[topo.HostAddr1] == 0 {
		t.Errorf("port %d before the reload: server saw %s, want both uplinks", opRulePort, FormatCounts(seen))
	}

	// Phase 1: an upload through ispA (direct), a good reload in its middle.
	up := make(chan opTransfer, 1)
	go func() {
		r, err := Upload(ctx, topo.Host, srv.bulkAddr(), size, 11, From(topo.HostAddr0))
		up <- opTransfer{r, err}
	}()
	s.waitRunning(t, opNameA, "out", 16<<20, up)

	const ruleName = "port 9000 via B"
	rule := routeToRule(ruleName, "tcp", opRulePort, opNameB)
	good := opOptions(t, "weight = 3", "weight = 1", rule)
	good.Control = o.Control
	s.writeConfig(t, good)
	mark := s.LogMark()
	start := time.Now()
	out, errOut, code := s.cli(t, "reload")
	took := time.Since(start)
	select {
	case r := <-up:
		t.Fatalf("the upload (%d MiB) ended before the reload was done (%v, %v): make L2SHIM_BULK_MB larger", size>>20, r.err, r.res)
	default:
	}
	t.Logf("reload during the upload: exit %d in %v: %s%s", code, took.Round(time.Millisecond), strings.TrimSpace(out), strings.TrimSpace(errOut))
	if code != 0 {
		t.Fatalf("l2shim reload: exit %d: %s", code, errOut)
	}
	if _, _, err := s.WaitLog(mark, 2*time.Second, "reloaded"); err != nil {
		t.Errorf("good reload: %v", err)
	}
	st := s.status(t)
	if st.Reloads != 1 {
		t.Errorf("status reloads = %d after one good reload, want 1", st.Reloads)
	}
	if a, b := opGateway(t, st, opNameA), opGateway(t, st, opNameB); a.Weight != 3 || b.Weight != 1 {
		t.Errorf("weights after reload: %s=%d %s=%d, want 3 and 1", opNameA, a.Weight, opNameB, b.Weight)
	}
	if _, ok := opRule(st, ruleName); !ok {
		t.Errorf("status has no rule %q after the reload: %+v", ruleName, st.Rules)
	}
	if seen := opRuleEchoes(t, topo, ruleSrv, 10); seen[topo.HostAddr1] != 10 {
		t.Errorf("port %d after the reload: server saw %s, want %s=10 (the new rule)", opRulePort, FormatCounts(seen), topo.HostAddr1)
	}
	// Probe state starts afresh with a reload: the gateways must not look
	// down meanwhile (they never stopped taking flows).
	for end := time.Now().Add(1200 * time.Millisecond); time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
		for _, g := range s.status(t).Gateways {
			if g.State != "up" {
				t.Errorf("after the good reload: %s is %s (%s), want up throughout", g.Name, g.State, g.Reason)
				end = time.Time{}
			}
		}
	}

	// Bad reloads: each refused with its error, the good config stays.
	for _, bad := range []struct {
		what, config, wantErr string
	}{
		{"unknown key", strings.Replace(s.topo.Config(good), "[shim]\n", "[shim]\nbogus_knob = 1\n", 1), "bogus_knob"},
		{"bad address", strings.Replace(s.topo.Config(good), `address = "10.2.0.1"`, `address = "10.2.0.999"`, 1), "10.2.0.999"},
		{"restart-only change (metrics)", strings.Replace(s.topo.Config(good), opMetricsAddr, "127.0.0.1:9465", 1), "restart"},
	} {
		// Each bad file would also undo the rule and the weights were it applied.
		cfg := strings.Replace(bad.config, `gateway = "ispB"`, `gateway = "ispA"`, 1)
		cfg = strings.Replace(cfg, "weight = 3", "weight = 1", 1)
		if cfg == s.topo.Config(good) || !strings.Contains(cfg, bad.wantErr) && bad.wantErr != "restart" {
			t.Fatalf("%s: the bad config is not what the test meant:\n%s", bad.what, cfg)
		}
		s.writeRaw(t, cfg)
		mark := s.LogMark()
		out, errOut, code := s.cli(t, "reload")
		t.Logf("bad reload (%s): exit %d: %s%s", bad.what, code, strings.TrimSpace(out), strings.TrimSpace(errOut))
		if code == 0 {
			t.Errorf("bad reload (%s): exit 0, want non-zero", bad.what)
		}
		if !strings.Contains(errOut, bad.wantErr) {
			t.Errorf("bad reload (%s): the error does not name %q: %s", bad.what, bad.wantErr, errOut)
		}
		if _, _, err := s.WaitLog(mark, 2*time.Second, "reload refused"); err != nil {
			t.Errorf("bad reload (%s): %v", bad.what, err)
		}
		st := s.status(t)
		if st.Reloads != 1 {
			t.Errorf("bad reload (%s): status reloads = %d, want still 1", bad.what, st.Reloads)
		}
		if a := opGateway(t, st, opNameA); a.Weight != 3 {
			t.Errorf("bad reload (%s): %s weight %d, want still 3", bad.what, opNameA, a.Weight)
		}
		if r, ok := opRule(st, ruleName); !ok || r.Gateway != opNameB {
			t.Errorf("bad reload (%s): rule %q = %+v (present %v), want still route-to %s", bad.what, ruleName, r, ok, opNameB)
		}
		if seen := opRuleEchoes(t, topo, ruleSrv, 6); seen[topo.HostAddr1] != 6 {
			t.Errorf("bad reload (%s): port %d: server saw %s, want %s=6 (the old rule still in force)", bad.what, opRulePort, FormatCounts(seen), topo.HostAddr1)
		}
	}
	if fams, body, err := opScrape(topo.Host, opMetricsAddr); err != nil {
		t.Errorf("scrape after the bad reloads: %v\n%s", err, body)
	} else if v, err := opMetric(fams, "l2shim_reloads_total"); err != nil || v != 1 {
		t.Errorf("metrics l2shim_reloads_total = %v (%v), want 1", v, err)
	}

	r := <-up
	if r.err != nil {
		t.Errorf("upload through %s across the reloads: %v (%+v)", opNameA, r.err, r.res)
	} else {
		t.Logf("upload %d MiB through %s across 1 good and 3 refused reloads: byte-exact, %.2f Gbit/s, sha256 %s…", size>>20, opNameA, r.res.Gbps(), r.res.SHA256[:16])
	}
	if r.res.Seen != topo.HostAddr0 {
		t.Errorf("upload ran from %s, want %s", r.res.Seen, topo.HostAddr0)
	}

	// Phase 2: an idle connection through ispA, a download through ispB
	// (NATed), and a SIGHUP reload that turns ispA off.
	idle, err := DialUplink(ctx, topo.Host, srv.bulkAddr(), topo.HostAddr0, 32)
	if err != nil {
		t.Fatalf("idle connection through %s: %v", opNameA, err)
	}
	defer idle.Close()
	down := make(chan opTransfer, 1)
	go func() {
		r, err := Download(ctx, topo.Host, srv.bulkAddr(), size, 12, From(topo.HostAddr1))
		down <- opTransfer{r, err}
	}()
	s.waitRunning(t, opNameB, "in", opGateway(t, s.status(t), opNameB).BytesIn+16<<20, down)

	off := opOptions(t, "weight = 3\non = false", "weight = 1", rule)
	off.Control = o.Control
	s.writeConfig(t, off)
	mark = s.LogMark()
	idleErr := make(chan error, 1)
	go func() {
		idle.SetReadDeadline(time.Now().Add(10 * time.Second))
		_, err := idle.Read(make([]byte, 1))
		idleErr <- err
	}()
	hup := time.Now()
	if err := s.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	line, _, err := s.WaitLog(mark, 5*time.Second, "reloaded")
	if err != nil {
		t.Fatalf("SIGHUP: %v", err)
	}
	t.Logf("SIGHUP reload: %s", line)
	select {
	case r := <-down:
		t.Fatalf("the download (%d MiB) ended before the SIGHUP reload was done (%v, %+v): make L2SHIM_BULK_MB larger", size>>20, r.err, r.res)
	default:
	}
	if !strings.Contains(line, "1 TCP reset") {
		t.Errorf("reload turning %s off: log %q, want its 1 live TCP flow reset", opNameA, line)
	}
	select {
	case err := <-idleErr:
		t.Logf("%s's idle connection after %s was turned off: %v after %v", opNameA, opNameA, err, time.Since(hup).Round(time.Millisecond))
		if !errors.Is(err, syscall.ECONNRESET) {
			t.Errorf("%s's idle connection ended with %v, want ECONNRESET (turned off by the reload)", opNameA, err)
		}
	case <-time.After(3 * time.Second):
		t.Errorf("%s's idle connection not reset within 3 s of the reload that turned %s off", opNameA, opNameA)
	}
	st = s.status(t)
	if a := opGateway(t, st, opNameA); a.On || st.Reloads != 2 || a.State != "down" || !strings.Contains(a.Reason, "off in the config") {
		t.Errorf("after turning %s off: on=%v reloads=%d state %s (%s), want on=false reloads=2, down: off in the config", opNameA, a.On, st.Reloads, a.State, a.Reason)
	}
	if b := opGateway(t, st, opNameB); b.State != "up" {
		t.Errorf("after turning %s off: %s is %s (%s), want up", opNameA, opNameB, b.State, b.Reason)
	}
	if fams, body, err := opScrape(topo.Host, opMetricsAddr); err != nil {
		t.Errorf("scrape: %v\n%s", err, body)
	} else {
		for _, c := range []struct {
			name, ifname string
			want         float64
		}{{opNameA, topo.HostIf0, 0}, {opNameB, topo.HostIf1, 1}} {
			if v, err := opMetric(fams, "l2shim_gateway_up", "gateway", c.name, "interface", c.ifname); err != nil || v != c.want {
				t.Errorf("metrics l2shim_gateway_up{%s} = %v (%v), want %v", c.name, v, err, c.want)
			}
		}
		if v, err := opMetric(fams, "l2shim_reloads_total"); err != nil || v != 2 {
			t.Errorf("metrics l2shim_reloads_total = %v (%v), want 2", v, err)
		}
	}
	srv.echo.Seen.Reset()
	if okN, errs := TCPEchoMany(ctx, topo.Host, srv.echoAddr(), 20, 2, 3*time.Second); okN != 20 {
		t.Errorf("with %s off: %d/20 connections succeeded:%s", opNameA, okN, firstErrs(errs, 5))
	}
	if seen := srv.echo.Seen.Counts(); seen[topo.HostAddr1] != 20 {
		t.Errorf("with %s off: server saw %s, want %s=20", opNameA, FormatCounts(seen), topo.HostAddr1)
	}

	r = <-down
	if r.err != nil {
		t.Errorf("download through %s across the reload turning %s off: %v (%+v)", opNameB, opNameA, r.err, r.res)
	} else {
		t.Logf("download %d MiB through %s across the reload turning %s off: byte-exact, %.2f Gbit/s", size>>20, opNameB, opNameA, r.res.Gbps())
	}
	if r.res.Seen != topo.HostAddr1 {
		t.Errorf("download ran from %s, want %s", r.res.Seen, topo.HostAddr1)
	}
	stopShim(t, s)
}

// TestOperatorDrain: `drain` stops new flows on a gateway and keeps its live
// ones; `drain --reset` resets its live TCP connection at once and moves its
// UDP flow; `undrain` brings it back; status and metrics show it.
func TestOperatorDrain(t *testing.T) {
	topo := newTopo(t)
	srv := startServers(t, topo)
	s := startShimCfg(t, topo, opOptions(t, "", "", ""))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	// Both up first (the first probe round ends one probe_interval, 1 s,
	// after start; TestOperatorStatusAtStart is about the time before).
	s.waitUp(t, opNameA, opNameB)

	// Two connections through ispA: one to use once drained, one left idle
	// for drain --reset (the bulk server closes a connection after one
	// transfer).
	usedA, err := DialUplink(ctx, topo.Host, srv.bulkAddr(), topo.HostAddr0, 32)
	if err != nil {
		t.Fatalf("connection through %s: %v", opNameA, err)
	}
	defer usedA.Close()
	liveA, err := DialUplink(ctx, topo.Host, srv.bulkAddr(), topo.HostAddr0, 32)
	if err != nil {
		t.Fatalf("connection through %s: %v", opNameA, err)
	}
	defer liveA.Close()
	liveB, err := DialUplink(ctx, topo.Host, srv.bulkAddr(), topo.HostAddr1, 32)
	if err != nil {
		t.Fatalf("connection through %s: %v", opNameB, err)
	}
	defer liveB.Close()
	udpA, _, err := DialUDPPath(topo.Host, srv.udpAddr(), From(topo.HostAddr0), 32)
	if err != nil {
		t.Fatalf("UDP flow through %s: %v", opNameA, err)
	}
	defer udpA.Close()

	out, errOut, code := s.cli(t, "drain", opNameA)
	t.Logf("l2shim drain %s: exit %d: %s%s", opNameA, code, strings.TrimSpace(out), strings.TrimSpace(errOut))
	if code != 0 {
		t.Fatalf("drain: exit %d: %s", code, errOut)
	}
	st := s.status(t)
	if a, b := opGateway(t, st, opNameA), opGateway(t, st, opNameB); !a.Drained || b.Drained {
		t.Errorf("after drain %s: drained %v/%v, want true/false", opNameA, a.Drained, b.Drained)
	}
	if table, _, _ := s.cli(t, "status"); !strings.Contains(table, "drained") {
		t.Errorf("status table does not show the drain:\n%s", table)
	}
	if fams, body, err := opScrape(topo.Host, opMetricsAddr); err != nil {
		t.Errorf("scrape: %v\n%s", err, body)
	} else if v, err := opMetric(fams, "l2shim_gateway_drained", "gateway", opNameA); err != nil || v != 1 {
		t.Errorf("metrics l2shim_gateway_drained{%s} = %v (%v), want 1", opNameA, v, err)
	}
	placedA := opGateway(t, st, opNameA).Placed

	// No new flows through ispA.
	srv.echo.Seen.Reset()
	srv.udp.Seen.Reset()
	okN, errs := TCPEchoMany(ctx, topo.Host, srv.echoAddr(), 40, 4, 3*time.Second)
	if okN != 40 {
		t.Errorf("drained: %d/40 connections succeeded:%s", okN, firstErrs(errs, 5))
	}
	res := UDPExchange(ctx, topo.Host, srv.udpAddr(), 20, 2, time.Second)
	if res.Answered != 20 {
		t.Errorf("drained: %d/20 UDP answered:%s", res.Answered, firstErrs(res.Errors, 5))
	}
	tcpSeen, udpSeen := srv.echo.Seen.Counts(), srv.udp.Seen.Counts()
	t.Logf("%s drained: server saw TCP %s, UDP %s", opNameA, FormatCounts(tcpSeen), FormatCounts(udpSeen))
	if tcpSeen[topo.HostAddr1] != 40 || udpSeen[topo.HostAddr0] != 0 || udpSeen[topo.HostAddr1] == 0 {
		t.Errorf("%s drained: new flows went through it (server saw TCP %s, UDP %s)", opNameA, FormatCounts(tcpSeen), FormatCounts(udpSeen))
	}
	if p := opGateway(t, s.status(t), opNameA).Placed; p != placedA {
		t.Errorf("%s drained: placed went from %d to %d", opNameA, placedA, p)
	}
	// ... but its live connection keeps working.
	if err := usedA.Upload(256<<10, 21, 5*time.Second); err != nil {
		t.Errorf("%s drained (no reset): its live connection failed: %v", opNameA, err)
	}
	usedA.Close() // the server closed its side: this flow is over
	// ... and so does its UDP flow.
	if got := opWhoami(t, udpA); got != topo.HostAddr0.String() {
		t.Errorf("%s drained (no reset): its UDP flow now arrives from %q, want %s", opNameA, got, topo.HostAddr0)
	}

	// drain --reset: the live TCP connection is reset toward the host at once,
	// the UDP flow moves to ispB.
	readErr := make(chan error, 1)
	go func() {
		liveA.SetReadDeadline(time.Now().Add(10 * time.Second))
		_, err := liveA.Read(make([]byte, 1))
		readErr <- err
	}()
	time.Sleep(50 * time.Millisecond)
	start := time.Now()
	out, errOut, code = s.cli(t, "drain", opNameA, "--reset")
	t.Logf("l2shim drain %s --reset: exit %d: %s%s", opNameA, code, strings.TrimSpace(out), strings.TrimSpace(errOut))
	if code != 0 {
		t.Fatalf("drain --reset: exit %d: %s", code, errOut)
	}
	if m := regexp.MustCompile(`(\d+) TCP flows reset, (\d+) UDP flows moved`).FindStringSubmatch(out); m == nil {
		t.Errorf("drain --reset: message %q does not say what it reset", out)
	} else if n, _ := strconv.Atoi(m[1]); n != 1 {
		t.Errorf("drain --reset: %s TCP flows reset, want 1 (the one live connection through %s)", m[1], opNameA)
	} else if n, _ := strconv.Atoi(m[2]); n != 1 {
		t.Errorf("drain --reset: %s UDP flows moved, want 1", m[2])
	}
	select {
	case err := <-readErr:
		t.Logf("%s's live connection after drain --reset: %v after %v", opNameA, err, time.Since(start).Round(time.Millisecond))
		if !errors.Is(err, syscall.ECONNRESET) {
			t.Errorf("%s's live connection ended with %v, want ECONNRESET", opNameA, err)
		} else if d := time.Since(start); d > time.Second {
			t.Errorf("%s's live connection reset only after %v", opNameA, d)
		}
	case <-time.After(3 * time.Second):
		t.Errorf("%s's live connection not reset within 3 s of drain --reset", opNameA)
	}
	if a := opGateway(t, s.status(t), opNameA); !a.Drained {
		t.Errorf("after drain --reset: %s not drained", opNameA)
	}
	// The moved UDP flow now arrives from ispB's address, and answers come back.
	if got := opWhoami(t, udpA); got != topo.HostAddr1.String() {
		t.Errorf("UDP flow after drain --reset: server sees %q, want %s (moved to %s)", got, topo.HostAddr1, opNameB)
	}
	// ispB's live connection is untouched.
	if err := liveB.Upload(256<<10, 22, 5*time.Second); err != nil {
		t.Errorf("%s's live connection after draining %s: %v", opNameB, opNameA, err)
	}

	// undrain: ispA takes new flows again.
	out, errOut, code = s.cli(t, "undrain", opNameA)
	t.Logf("l2shim undrain %s: exit %d: %s%s", opNameA, code, strings.TrimSpace(out), strings.TrimSpace(errOut))
	if code != 0 {
		t.Fatalf("undrain: exit %d: %s", code, errOut)
	}
	if a := opGateway(t, s.status(t), opNameA); a.Drained || a.State != "up" {
		t.Errorf("after undrain: %s drained=%v state %s reason %q", opNameA, a.Drained, a.State, a.Reason)
	}
	srv.echo.Seen.Reset()
	if okN, errs := TCPEchoMany(ctx, topo.Host, srv.echoAddr(), 40, 4, 3*time.Second); okN != 40 {
		t.Errorf("undrained: %d/40 connections succeeded:%s", okN, firstErrs(errs, 5))
	}
	splitOK(t, "undrained", topo, srv.echo.Seen.Counts(), 40)
	if fams, body, err := opScrape(topo.Host, opMetricsAddr); err != nil {
		t.Errorf("scrape: %v\n%s", err, body)
	} else if v, err := opMetric(fams, "l2shim_gateway_drained", "gateway", opNameA); err != nil || v != 0 {
		t.Errorf("metrics l2shim_gateway_drained{%s} = %v (%v) after undrain, want 0", opNameA, v, err)
	}

	// Names that are no gateway: refused, exit 1.
	_, errOut, code = s.cli(t, "drain", "nosuch")
	if code != 1 || !strings.Contains(errOut, "nosuch") {
		t.Errorf("drain nosuch: exit %d: %q; want exit 1 naming it", code, errOut)
	}
	// A gateway may also be named by its address.
	if out, errOut, code := s.cli(t, "drain", topo.GW1Addr.String()); code != 0 || !strings.Contains(out, opNameB) {
		t.Errorf("drain %s: exit %d: %s%s; want %s drained", topo.GW1Addr, code, out, errOut, opNameB)
	} else if b := opGateway(t, s.status(t), opNameB); !b.Drained {
		t.Errorf("drain %s: %s not drained", topo.GW1Addr, opNameB)
	}
	stopShim(t, s)
}
