package integration

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/l2shim/l2shim/control"
)

// Environment:
//
//	L2SHIM_BIN          use this l2shim binary instead of building ./cmd/l2shim
//	L2SHIM_BULK_MB      size of the bulk transfers in MiB (default 1024)
//	L2SHIM_TEST_ATTACH  [shim] attach of every shim a test starts without one of its own
//	                    ("tc" runs a test's shim with clsact/cls_bpf filters)
var (
	shimOnce     sync.Once
	shimBin      string
	shimBuildErr error
	buildDir     string
	verboseShim  = flag.Bool("shimlog", false, "stream l2shim's output into the test log")
)

func TestMain(m *testing.M) {
	flag.Parse()
	if os.Geteuid() == 0 {
		if gone := CleanupStale("l2t"); len(gone) > 0 {
			fmt.Fprintf(os.Stderr, "integration: removed namespaces left by dead test processes: %v\n", gone)
		}
	}
	code := m.Run()
	if buildDir != "" {
		os.RemoveAll(buildDir)
	}
	os.Exit(code)
}

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("integration tests need root: they create network namespaces, veth pairs and eBPF (TCX) programs; run them as root")
	}
}

// needShim returns the l2shim binary, built once per test run.
func needShim(t *testing.T) string {
	t.Helper()
	shimOnce.Do(func() {
		if b := os.Getenv("L2SHIM_BIN"); b != "" {
			shimBin = b
			return
		}
		buildDir, shimBuildErr = os.MkdirTemp("", "l2shim-it-bin-")
		if shimBuildErr == nil {
			shimBin, shimBuildErr = BuildShim(buildDir)
		}
	})
	if shimBuildErr != nil {
		t.Fatalf("cannot build l2shim: %v", shimBuildErr)
	}
	return shimBin
}

// newTopo builds a fresh topology removed in t.Cleanup, and checks that its
// namespaces are really gone afterwards.
func newTopo(t *testing.T) *Topology {
	t.Helper()
	return newTopoWith(t, Options{})
}

// newTopoWith builds a topology with options o (its Logf is the test's), removed when the
// test ends.
func newTopoWith(t *testing.T, o Options) *Topology {
	t.Helper()
	requireRoot(t)
	o.Logf = t.Logf
	topo, err := NewTopology(o)
	if err != nil {
		t.Fatalf("topology: %v", err)
	}
	t.Cleanup(func() {
		names := []string{}
		for _, n := range topo.Namespaces() {
			names = append(names, n.Name)
		}
		if err := topo.Close(); err != nil {
			t.Errorf("topology cleanup: %v", err)
		}
		for _, n := range names {
			if _, err := os.Stat(filepath.Join("/run/netns", n)); err == nil {
				t.Errorf("netns %s still exists after cleanup", n)
			}
		}
	})
	return topo
}

func startServers(t *testing.T, topo *Topology) servers {
	t.Helper()
	s, err := topo.startServers()
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// testShim is an l2shim a test started, with the binary and the control
// socket to talk to it.
type testShim struct {
	*Shim
	topo *Topology
	bin  string
	sock string
}

// startShim starts l2shim on the topology in the given mode.
func startShim(t *testing.T, topo *Topology, mode string) *testShim {
	t.Helper()
	return startShimCfg(t, topo, ConfigOptions{Mode: mode})
}

// startShimCfg starts l2shim on the topology with a config built from o (the
// control socket in the test's temp dir); its output is logged if the test
// fails and the config is logged always.
func startShimCfg(t *testing.T, topo *Topology, o ConfigOptions) *testShim {
	t.Helper()
	bin := needShim(t)
	if o.Bin != "" {
		bin = o.Bin
	}
	if o.Control == "" {
		o.Control = filepath.Join(t.TempDir(), "l2shim.sock")
	}
	if o.Attach == "" {
		o.Attach = os.Getenv("L2SHIM_TEST_ATTACH")
	}
	cfg := topo.Config(o)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	so := ShimOptions{Args: o.RunArgs, Capabilities: UnitCapabilities()}
	if *verboseShim {
		so.Tee = func(s string) { t.Logf("l2shim: %s", strings.TrimRight(s, "\n")) }
	}
	start := time.Now()
	s, err := topo.StartShimWith(ctx, bin, cfg, so)
	if err != nil {
		t.Fatalf("start l2shim: %v\nconfig:\n%s", err, cfg)
	}
	t.Logf("l2shim pid %d ready in %v", s.Pid(), time.Since(start).Round(time.Millisecond))
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("l2shim config:\n%s", cfg)
			t.Logf("l2shim (pid %d) output:\n%s", s.Pid(), s.Output())
		}
	})
	ts := &testShim{Shim: s, topo: topo, bin: bin, sock: o.Control}
	ts.awaitResolved(t)
	return ts
}

// awaitResolved waits up to 1.5 s for l2shim to have resolved every gateway whose link is up
// (its ARP answer): "ready" means the hooks are attached, and a flow placed before a gateway
// is resolved cannot go to it, which a test expecting both uplinks in use would take for a
// fault. A gateway that never answers (a test's dead one) just costs the wait. IPv6 routers
// are left to the IPv6 tests' own waits: on a fresh veth the host's link-local address is
// still in duplicate address detection, and the kernel asks the router only after it.
func (s *testShim) awaitResolved(t *testing.T) {
	t.Helper()
	unresolved := func(st *control.Status) []string {
		var names []string
		for _, g := range st.Gateways {
			if strings.Contains(g.Reason, "MAC not resolved") {
				names = append(names, g.Name)
			}
		}
		return names
	}
	start := time.Now()
	for {
		st, err := s.queryStatus()
		if err != nil || s.Exited() {
			return
		}
		names := unresolved(st)
		if len(names) == 0 {
			return
		}
		if time.Since(start) > 1500*time.Millisecond {
			t.Logf("gateways still unresolved 1.5 s after start: %s", strings.Join(names, ", "))
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// stopShim stops the shim (an error unless it exits 0), logs its warnings
// and errors (at most 20 lines) and its totals line, and returns its totals
// (nil when it logged none).
func stopShim(t *testing.T, s *testShim) map[string]string {
	t.Helper()
	if err := s.Stop(); err != nil {
		t.Errorf("stop l2shim: %v", err)
	}
	var noisy []string
	for _, l := range s.LogLines(0) {
		if strings.Contains(l, "level=WARN") || strings.Contains(l, "level=ERROR") {
			noisy = append(noisy, l)
		}
	}
	if len(noisy) > 20 {
		noisy = append(noisy[:20], fmt.Sprintf("... and %d more", len(noisy)-20))
	}
	if len(noisy) > 0 {
		t.Logf("l2shim warnings/errors:\n  %s", strings.Join(noisy, "\n  "))
	}
	if l := s.LogLines(0, "msg=totals"); len(l) > 0 {
		t.Logf("l2shim %s", l[len(l)-1])
	}
	return s.Totals()
}

// queryStatus asks the shim for its status over the control socket.
func (s *testShim) queryStatus() (*control.Status, error) {
	resp, err := control.Call(s.sock, control.Request{Command: "status"}, 5*time.Second)
	if err != nil {
		return nil, fmt.Errorf("status: %w", err)
	}
	if resp.Status == nil {
		return nil, fmt.Errorf("status: answer without a status: %+v", resp)
	}
	return resp.Status, nil
}

// status is queryStatus, failing the test on error.
func (s *testShim) status(t *testing.T) *control.Status {
	t.Helper()
	st, err := s.queryStatus()
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// runShimCommand writes config to a file and runs `l2shim CMD -c FILE` in
// the host namespace; it returns the combined output and the exit code.
func runShimCommand(t *testing.T, topo *Topology, cmd, config string) (string, int) {
	t.Helper()
	f := filepath.Join(t.TempDir(), "l2shim.toml")
	if err := os.WriteFile(f, []byte(config), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	out, err := topo.Host.Command(ctx, needShim(t), cmd, "-c", f).CombinedOutput()
	return string(out), exitCode(t, err)
}

// exitCode is the exit code of a command that ended with err; the test
// fails when the command did not run or exit.
func exitCode(t *testing.T, err error) int {
	t.Helper()
	if err == nil {
		return 0
	}
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		t.Fatal(err)
	}
	return ee.ExitCode()
}

// mustRun runs a command in ns (bounded by 10 s), fails the test when it
// fails, and returns its output.
func mustRun(t *testing.T, ns *NS, name string, args ...string) string {
	t.Helper()
	out, err := ns.Run(nil, name, args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// nftCounters installs table `table` in ns with one chain at hook (at a
// priority before anything else there) holding one counting rule per entry
// of rules ("name" → "nft expression [=> verdict]"), and returns a reader
// of those counters (packets).
func nftCounters(t *testing.T, ns *NS, table, hook string, rules [][2]string) func(name string) int64 {
	t.Helper()
	var b strings.Builder
	fmt.Fprintf(&b, "table ip %s {\n\tchain c {\n\t\ttype filter hook %s priority -300; policy accept;\n", table, hook)
	for _, r := range rules {
		expr, verdict := r[1], ""
		if i := strings.LastIndex(expr, " => "); i >= 0 {
			expr, verdict = expr[:i], expr[i+4:]
		}
		fmt.Fprintf(&b, "\t\t%s counter %s comment %q\n", expr, verdict, r[0])
	}
	b.WriteString("\t}\n}\n")
	if err := Nft(ns, b.String()); err != nil {
		t.Fatal(err)
	}
	return func(name string) int64 {
		n, err := NftCounter(ns, "ip", table, "c", name)
		if err != nil {
			t.Errorf("%v", err)
		}
		return n
	}
}

// routeToRule is a [[rule]] table placing flows of proto to dst_port port
// on gateway.
func routeToRule(name, proto string, port int, gateway string) string {
	return fmt.Sprintf("[[rule]]\nname = %q\nprotocol = %q\ndst_port = %d\naction = \"route-to\"\ngateway = %q\n", name, proto, port, gateway)
}

// splitOK asserts that the server saw exactly the two host addresses, each at
// least once, and logs the split.
func splitOK(t *testing.T, what string, topo *Topology, counts map[netip.Addr]int, total int) {
	t.Helper()
	a, b := counts[topo.HostAddr0], counts[topo.HostAddr1]
	pct := func(n int) float64 {
		if total == 0 {
			return 0
		}
		return 100 * float64(n) / float64(total)
	}
	t.Logf("%s: server saw %s (eth0/gw0 %.0f%%, eth1/gw1 %.0f%%)", what, FormatCounts(counts), pct(a), pct(b))
	if a+b != total {
		t.Errorf("%s: server saw unexpected client addresses: %s (want only %s and %s, %d in all)", what, FormatCounts(counts), topo.HostAddr0, topo.HostAddr1, total)
	}
	if a == 0 || b == 0 {
		t.Errorf("%s: flows did not spread over both uplinks: %s", what, FormatCounts(counts))
	}
}

// requireOnly fails the test unless the server saw every one of n flows
// from want and nothing else.
func requireOnly(t *testing.T, what string, counts map[netip.Addr]int, want netip.Addr, n int) {
	t.Helper()
	if counts[want] != n || len(counts) != 1 {
		t.Errorf("%s: server saw %s, want %s=%d only", what, FormatCounts(counts), want, n)
	}
}

// spreadOK makes n new echo connections from the host, workers at a time,
// and checks that every one succeeds and that they spread over both uplinks
// (splitOK).
func spreadOK(t *testing.T, what string, topo *Topology, srv servers, n, workers int) {
	t.Helper()
	srv.echo.Seen.Reset()
	ok, errs := TCPEchoMany(context.Background(), topo.Host, srv.echoAddr(), n, workers, 3*time.Second)
	if ok != n {
		t.Errorf("%s: %d/%d connections succeeded:%s", what, ok, n, firstErrs(errs, 5))
	}
	splitOK(t, what, topo, srv.echo.Seen.Counts(), srv.echo.Seen.Total())
}

func firstErrs(errs []error, n int) string {
	var b strings.Builder
	for i, e := range errs {
		if i == n {
			fmt.Fprintf(&b, "\n  ... and %d more", len(errs)-n)
			break
		}
		fmt.Fprintf(&b, "\n  %v", e)
	}
	return b.String()
}

// TestTopologyCleanup checks that a topology builds, holds what it should,
// and leaves nothing behind (no namespace, nothing in the root namespace).
func TestTopologyCleanup(t *testing.T) {
	requireRoot(t)
	rootBefore := rootLinks(t)
	topo, err := NewTopology(Options{Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	names := topo.Namespaces()
	for _, c := range []struct {
		ns  *NS
		key string
		val string
	}{
		{topo.Host, "net.ipv4.conf.eth0.rp_filter", "2"},
		{topo.Host, "net.ipv4.conf.eth1.rp_filter", "2"},
		{topo.GW0, "net.ipv4.conf.lan.rp_filter", "1"},
		{topo.GW0, "net.ipv4.conf.all.rp_filter", "1"},
		{topo.GW1, "net.ipv4.conf.lan.rp_filter", "1"},
		{topo.GW0, "net.ipv4.ip_forward", "1"},
		{topo.Host, "net.ipv6.conf.eth0.disable_ipv6", "1"},
	} {
		got, err := c.ns.ReadSysctl(c.key)
		if err != nil || got != c.val {
			t.Errorf("%s: %s = %q (%v), want %s", c.ns.Name, c.key, got, err, c.val)
		}
	}
	// Root namespace sysctls must be untouched by our writes.
	if v, err := os.ReadFile("/proc/sys/net/ipv4/conf/all/rp_filter"); err == nil {
		t.Logf("root ns rp_filter (untouched): %s", strings.TrimSpace(string(v)))
	}
	hl, _ := topo.Host.LinkNames()
	sort.Strings(hl)
	if strings.Join(hl, ",") != "eth0,eth1,lo" {
		t.Errorf("host links = %v, want eth0, eth1, lo", hl)
	}
	if mv, err := topo.AddMacvlan("mv", "eth0", netip.MustParsePrefix("10.1.0.50/24"), topo.GW0Addr); err != nil {
		t.Errorf("macvlan: %v", err)
	} else if n, _, err := Ping(context.Background(), mv, topo.GW0Addr, 1, time.Second); n != 1 {
		t.Errorf("macvlan ping gw0: %d replies (%v)", n, err)
	}
	if err := SetGRO(topo.Host, "eth0", true); err != nil {
		t.Errorf("GRO on: %v", err)
	}
	if err := topo.Close(); err != nil {
		t.Errorf("close: %v", err)
	}
	if err := topo.Close(); err != nil {
		t.Errorf("second close: %v", err)
	}
	for _, n := range names {
		if _, err := os.Stat(filepath.Join("/run/netns", n.Name)); err == nil {
			t.Errorf("netns %s still exists", n.Name)
		}
	}
	if after := rootLinks(t); strings.Join(after, ",") != strings.Join(rootBefore, ",") {
		t.Errorf("root namespace links changed: before %v after %v", rootBefore, after)
	}
}

func rootLinks(t *testing.T) []string {
	links, err := netlink.LinkList()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, l := range links {
		names = append(names, l.Attrs().Name)
	}
	sort.Strings(names)
	return names
}

// TestBaselineWithoutShim proves the topology proves something: without
// l2shim every flow leaves through eth0, and a packet with eth1's source
// address sent through gw0 is dropped by gw0's strict rp_filter.
func TestBaselineWithoutShim(t *testing.T) {
	topo := newTopo(t)
	srv := startServers(t, topo)
	ctx := context.Background()

	if n, rtts, err := Ping(ctx, topo.Host, topo.ServerAddr, 3, time.Second); n != 3 {
		t.Errorf("ping server: %d/3 replies (%v)", n, err)
	} else {
		t.Logf("ping server: 3/3, rtt %v", rtts)
	}

	ok, errs := TCPEchoMany(ctx, topo.Host, srv.echoAddr(), 20, 2, 2*time.Second)
	if ok != 20 {
		t.Errorf("TCP: %d/20 connections succeeded:%s", ok, firstErrs(errs, 5))
	}
	requireOnly(t, "TCP without l2shim (plain routing via eth0)", srv.echo.Seen.Counts(), topo.HostAddr0, 20)

	res := UDPExchange(ctx, topo.Host, srv.udpAddr(), 10, 1, time.Second)
	if res.Answered != 10 {
		t.Errorf("UDP: %d/10 answered:%s", res.Answered, firstErrs(res.Errors, 5))
	}
	requireOnly(t, "UDP without l2shim (plain routing via eth0)", srv.udp.Seen.Counts(), topo.HostAddr0, 10)

	// eth1's address through the default route (eth0 → gw0): gw0 drops it.
	srv.udp.Seen.Reset()
	if err := UDPSendFrom(topo.Host, topo.HostAddr1, srv.udpAddr(), []byte("spoofed?"), 5); err != nil {
		t.Fatalf("send from %s: %v", topo.HostAddr1, err)
	}
	// Positive control on the other side: gw1 itself sending from its LAN
	// address 10.2.0.1 reaches the server and the server's route back works.
	if err := UDPSendFrom(topo.GW1, topo.GW1Addr, srv.udpAddr(), []byte("from gw1 lan address"), 1); err != nil {
		t.Fatalf("send from gw1: %v", err)
	}
	srv.udp.Seen.waitCount(topo.GW1Addr, 2*time.Second)
	time.Sleep(300 * time.Millisecond)
	counts := srv.udp.Seen.Counts()
	if counts[topo.HostAddr1] != 0 {
		t.Errorf("a datagram from %s sent via gw0 reached the server (%s): gw0's rp_filter does not drop wrong sources, the topology proves nothing", topo.HostAddr1, FormatCounts(counts))
	}
	if counts[topo.GW1Addr] != 1 {
		t.Errorf("control datagram from gw1 (%s) did not reach the server: %s", topo.GW1Addr, FormatCounts(counts))
	}
	t.Logf("from %s via gw0: dropped (server saw %s)", topo.HostAddr1, FormatCounts(counts))

	// And it is gw0's rp_filter that drops it: loosened, the same datagram
	// gets through; restored, it is dropped again.
	setRP := func(v string) {
		for _, k := range []string{"net.ipv4.conf.all.rp_filter", "net.ipv4.conf.lan.rp_filter"} {
			if err := topo.GW0.Sysctl(k, v); err != nil {
				t.Fatal(err)
			}
		}
	}
	setRP("0")
	srv.udp.Seen.Reset()
	UDPSendFrom(topo.Host, topo.HostAddr1, srv.udpAddr(), []byte("spoofed, rp_filter off"), 1)
	srv.udp.Seen.waitCount(topo.HostAddr1, 2*time.Second)
	setRP("1")
	if srv.udp.Seen.Count(topo.HostAddr1) != 1 {
		t.Errorf("with gw0's rp_filter off the datagram from %s still did not arrive: something else drops it", topo.HostAddr1)
	}
	srv.udp.Seen.Reset()
	UDPSendFrom(topo.Host, topo.HostAddr1, srv.udpAddr(), []byte("spoofed again"), 3)
	time.Sleep(300 * time.Millisecond)
	if n := srv.udp.Seen.Count(topo.HostAddr1); n != 0 {
		t.Errorf("rp_filter restored but %d datagrams from %s arrived", n, topo.HostAddr1)
	}
}

// TestShimSpreadsFlows: ICMP echo, 200 short TCP connections and 100 UDP
// request/reply flows through l2shim in load-balance mode.
func TestShimSpreadsFlows(t *testing.T) { spreadFlows(t, "") }

// spreadFlows is TestShimSpreadsFlows with l2shim's [shim] attach ("": the default).
func spreadFlows(t *testing.T, attach string) {
	topo := newTopo(t)
	srv := startServers(t, topo)
	s := startShimCfg(t, topo, ConfigOptions{Mode: "load-balance", Attach: attach})
	checkAttached(t, s, attach)
	ctx := context.Background()

	n, rtts, err := Ping(ctx, topo.Host, topo.ServerAddr, 5, time.Second)
	if n != 5 {
		t.Errorf("ICMP echo to server through l2shim: %d/5 replies (%v)", n, err)
	} else {
		t.Logf("ICMP echo: 5/5, rtt %v", rtts)
	}

	start := time.Now()
	ok, errs := TCPEchoMany(ctx, topo.Host, srv.echoAddr(), 200, 4, 3*time.Second)
	t.Logf("TCP: %d/200 short connections in %v", ok, time.Since(start).Round(time.Millisecond))
	if ok != 200 {
		t.Errorf("TCP: %d/200 connections succeeded:%s", ok, firstErrs(errs, 10))
	}
	splitOK(t, "TCP", topo, srv.echo.Seen.Counts(), srv.echo.Seen.Total())

	start = time.Now()
	res := UDPExchange(ctx, topo.Host, srv.udpAddr(), 100, 2, time.Second)
	t.Logf("UDP: %d/100 answered (%d resends) in %v", res.Answered, res.Retried, time.Since(start).Round(time.Millisecond))
	if res.Answered != 100 {
		t.Errorf("UDP: %d/100 requests answered:%s", res.Answered, firstErrs(res.Errors, 10))
	}
	splitOK(t, "UDP", topo, srv.udp.Seen.Counts(), srv.udp.Seen.Total())

	stopShim(t, s)
}

func bulkSize() int64 {
	mb := int64(1024)
	if v, err := strconv.ParseInt(os.Getenv("L2SHIM_BULK_MB"), 10, 64); err == nil && v > 0 {
		mb = v
	}
	return mb << 20
}

// TestShimBulkTransfer moves 1 GiB each way, byte-exact, over the NATed
// uplink (eth1: source rewritten, checksums updated) and a smaller upload
// over the direct one, with veth defaults and with GRO on the host's
// external veths (as real NICs have it).
func TestShimBulkTransfer(t *testing.T) {
	requireRoot(t)
	for _, gro := range []bool{false, true} {
		name := "veth-defaults"
		if gro {
			name = "gro-on"
		}
		t.Run(name, func(t *testing.T) { shimBulk(t, gro, "", bulkSize()) })
	}
}

// shimBulk is a TestShimBulkTransfer subtest: size bytes each way over the NATed uplink
// and a quarter of it up the direct one, GRO on the host's veths or not, l2shim attached as
// attach says ("": the default); the fast path must have carried the transfers.
func shimBulk(t *testing.T, gro bool, attach string, size int64) {
	topo := newTopo(t)
	if gro {
		for _, ifn := range []string{topo.HostIf0, topo.HostIf1} {
			if err := SetGRO(topo.Host, ifn, true); err != nil {
				t.Fatal(err)
			}
		}
	}
	srv := startServers(t, topo)
	s := startShimCfg(t, topo, ConfigOptions{Mode: "load-balance", Attach: attach})
	checkAttached(t, s, attach)
	type job struct {
		name string
		up   bool
		via  netip.Addr
		size int64
	}
	jobs := []job{
		{"upload via eth1 (NAT)", true, topo.HostAddr1, size},
		{"download via eth1 (NAT)", false, topo.HostAddr1, size},
		{"upload via eth0 (direct)", true, topo.HostAddr0, size / 4},
	}
	for i, j := range jobs {
		ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
		f := Download
		if j.up {
			f = Upload
		}
		res, err := f(ctx, topo.Host, srv.bulkAddr(), j.size, uint64(1000+i), From(j.via))
		cancel()
		if err != nil {
			t.Errorf("%s, %d MiB: %v (moved %d bytes in %v, server saw %s)", j.name, j.size>>20, err, res.Bytes, res.Elapsed.Round(time.Millisecond), res.Seen)
			if s.Exited() {
				t.Fatalf("l2shim exited: %v", s.ExitCode())
			}
			continue
		}
		t.Logf("%s: %d MiB byte-exact in %v (%.2f Gbit/s), sha256 %s…, connection %d", j.name, j.size>>20, res.Elapsed.Round(time.Millisecond), res.Gbps(), res.SHA256[:16], res.Tries)
	}
	if gro {
		for _, ifn := range []string{topo.HostIf0, topo.HostIf1} {
			if on, err := GRO(topo.Host, ifn); err != nil || !on {
				t.Errorf("GRO on %s is %v after the transfers (%v): the measurement did not run with GRO", ifn, on, err)
			}
		}
	}
	// The transfers' frames were the kernel's: established flows never cross user
	// space, only their handshakes and ends do.
	tot := stopShim(t, s)
	fast := atoiAttr(tot, "fast_out") + atoiAttr(tot, "fast_in")
	slow := atoiAttr(tot, "frames_out") + atoiAttr(tot, "frames_in")
	t.Logf("MEASURED fast path: %d frames in the kernel, %d through user space", fast, slow)
	if fast < 1000*max(slow, 1)/10 || slow > 1000 {
		t.Errorf("the fast path carried %d frames and user space %d: the transfers did not run in the kernel", fast, slow)
	}
}

// TestMacvlanUntouched: a macvlan child of eth0 in its own namespace, with
// its own address on the LAN, keeps full IPv4 connectivity while l2shim runs
// (its frames pass eth0's hooks but are not the host's: not diverted).
func TestMacvlanUntouched(t *testing.T) {
	topo := newTopo(t)
	mvAddr := netip.MustParsePrefix("10.1.0.50/24")
	mv, err := topo.AddMacvlan("mv", topo.HostIf0, mvAddr, topo.GW0Addr)
	if err != nil {
		t.Fatal(err)
	}
	srv := startServers(t, topo)
	ctx := context.Background()
	check := func(phase string) {
		if n, _, err := Ping(ctx, mv, topo.GW0Addr, 3, time.Second); n != 3 {
			t.Errorf("%s: macvlan ping %s: %d/3 (%v)", phase, topo.GW0Addr, n, err)
		}
		if n, _, err := Ping(ctx, mv, topo.ServerAddr, 3, time.Second); n != 3 {
			t.Errorf("%s: macvlan ping server: %d/3 (%v)", phase, n, err)
		}
		srv.echo.Seen.Reset()
		ok, errs := TCPEchoMany(ctx, mv, srv.echoAddr(), 20, 2, 3*time.Second)
		if ok != 20 {
			t.Errorf("%s: macvlan TCP to server: %d/20:%s", phase, ok, firstErrs(errs, 5))
		}
		requireOnly(t, phase+": macvlan TCP", srv.echo.Seen.Counts(), mvAddr.Addr(), 20)
		srv.udp.Seen.Reset()
		res := UDPExchange(ctx, mv, srv.udpAddr(), 10, 1, time.Second)
		if res.Answered != 10 {
			t.Errorf("%s: macvlan UDP: %d/10:%s", phase, res.Answered, firstErrs(res.Errors, 5))
		}
		requireOnly(t, phase+": macvlan UDP", srv.udp.Seen.Counts(), mvAddr.Addr(), 10)
	}
	check("without l2shim")
	s := startShim(t, topo, "load-balance")
	check("with l2shim")
	// The host itself is still steered meanwhile.
	spreadOK(t, "host TCP next to the macvlan", topo, srv, 40, 2)
	stopShim(t, s)
}

// requireSteering checks that l2shim is really diverting (both uplinks in
// use) before a fail-open measurement, which would prove nothing otherwise.
func requireSteering(t *testing.T, topo *Topology, srv servers) {
	t.Helper()
	srv.echo.Seen.Reset()
	ok, errs := TCPEchoMany(context.Background(), topo.Host, srv.echoAddr(), 40, 2, 3*time.Second)
	c := srv.echo.Seen.Counts()
	if ok != 40 || c[topo.HostAddr1] == 0 {
		t.Fatalf("precondition: l2shim is not steering (%d/40 ok, server saw %s):%s", ok, FormatCounts(c), firstErrs(errs, 5))
	}
	t.Logf("precondition: l2shim steering, server saw %s", FormatCounts(c))
}

// plainRouting checks that n new connections all succeed via eth0 with the
// host's own address.
func plainRouting(t *testing.T, what string, topo *Topology, srv servers, n int) {
	t.Helper()
	srv.echo.Seen.Reset()
	ok, errs := TCPEchoMany(context.Background(), topo.Host, srv.echoAddr(), n, 1, 2*time.Second)
	if ok != n {
		t.Errorf("%s: %d/%d connections:%s", what, ok, n, firstErrs(errs, 5))
	}
	requireOnly(t, what+" (plain routing via eth0)", srv.echo.Seen.Counts(), topo.HostAddr0, ok)
}

// tcxCounts counts the TCX programs on the host's eth0 and eth1 and
// describes them; a failed query fails the test.
func tcxCounts(t *testing.T, topo *Topology) (total int, desc string) {
	t.Helper()
	total, desc, err := topo.hostTCXPrograms()
	if err != nil {
		t.Errorf("TCX query: %v", err)
	}
	return total, desc
}

// TestFailOpenKill: after SIGKILL the kernel detaches the hooks and new
// connections route plainly within 1 s; a fresh start afterwards works.
func TestFailOpenKill(t *testing.T) {
	topo := newTopo(t)
	srv := startServers(t, topo)
	s := startShim(t, topo, "load-balance")
	requireSteering(t, topo, srv)
	if n, d := tcxCounts(t, topo); n == 0 {
		t.Errorf("no TCX programs attached while l2shim runs (%s)", d)
	}

	// Watch the hooks disappear while measuring connectivity.
	detached := make(chan time.Duration, 1)
	t0 := time.Now()
	if err := s.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	go func() {
		for time.Since(t0) < 3*time.Second {
			if n, _, err := topo.hostTCXPrograms(); err == nil && n == 0 {
				detached <- time.Since(t0)
				return
			}
			time.Sleep(5 * time.Millisecond)
		}
		detached <- -1
	}()
	ctx := context.Background()
	el, tries, err := FirstSuccess(ctx, topo.Host, srv.echoAddr(), t0, 150*time.Millisecond, 3*time.Second)
	if err != nil {
		t.Errorf("after SIGKILL: %v", err)
	} else {
		t.Logf("after SIGKILL: first new connection succeeded %v after the kill (attempt %d)", el.Round(time.Millisecond), tries)
		if el > time.Second {
			t.Errorf("after SIGKILL: plain routing took %v, want <= 1s", el)
		}
	}
	if d := <-detached; d < 0 {
		_, desc := tcxCounts(t, topo)
		t.Errorf("TCX programs still attached 3 s after SIGKILL: %s", desc)
	} else {
		t.Logf("TCX programs gone %v after SIGKILL", d.Round(time.Millisecond))
		if d > time.Second {
			t.Errorf("TCX programs detached only %v after SIGKILL, want <= 1s", d)
		}
	}
	if err := s.Wait(10 * time.Second); err != nil {
		t.Fatal(err)
	}
	plainRouting(t, "after SIGKILL", topo, srv, 20)
	if l, _ := topo.ShimLinks(); len(l) > 0 {
		t.Logf("leftover shim links after SIGKILL (expected, cleaned at next start): %v", l)
	}

	// A fresh start cleans up or reuses what the killed one left.
	s2 := startShim(t, topo, "load-balance")
	spreadOK(t, "restart after SIGKILL", topo, srv, 60, 2)
	stopShim(t, s2)
	if l, _ := topo.ShimLinks(); len(l) > 0 {
		t.Errorf("shim links left after clean stop of the restarted shim: %v", l)
	}
}

// TestFailOpenStop: a hung shim (SIGSTOP) stops diverting within 2 s thanks
// to the heartbeat; after SIGCONT it works again and stops cleanly.
func TestFailOpenStop(t *testing.T) { failOpenStop(t, "") }

// failOpenStop is TestFailOpenStop with l2shim's [shim] attach ("": the default).
func failOpenStop(t *testing.T, attach string) {
	topo := newTopo(t)
	srv := startServers(t, topo)
	s := startShimCfg(t, topo, ConfigOptions{Mode: "load-balance", Attach: attach})
	checkAttached(t, s, attach)
	requireSteering(t, topo, srv)

	t0 := time.Now()
	if err := s.Pause(); err != nil {
		t.Fatal(err)
	}
	resumed := false
	defer func() {
		if !resumed {
			s.Resume()
		}
	}()
	ctx := context.Background()
	el, tries, err := FirstSuccess(ctx, topo.Host, srv.echoAddr(), t0, 150*time.Millisecond, 4*time.Second)
	if err != nil {
		t.Errorf("after SIGSTOP: %v", err)
	} else {
		t.Logf("after SIGSTOP: first new connection succeeded %v after the stop (attempt %d)", el.Round(time.Millisecond), tries)
		if el > 2*time.Second {
			t.Errorf("after SIGSTOP: plain routing took %v, want <= 2s", el)
		}
	}
	plainRouting(t, "while l2shim is stopped", topo, srv, 20)

	if err := s.Resume(); err != nil {
		t.Fatal(err)
	}
	resumed = true
	// Give it a heartbeat or two.
	time.Sleep(500 * time.Millisecond)
	srv.echo.Seen.Reset()
	ok, errs := TCPEchoMany(ctx, topo.Host, srv.echoAddr(), 40, 2, 3*time.Second)
	if ok != 40 {
		t.Errorf("after SIGCONT: %d/40 connections:%s", ok, firstErrs(errs, 5))
	}
	t.Logf("after SIGCONT: server saw %s", srv.echo.Seen.String())
	stopShim(t, s)
}

type hostState struct{ routes, addrs string }

func snapshotHost(t *testing.T, topo *Topology) hostState {
	t.Helper()
	h := topo.Host.Netlink()
	routes, err := h.RouteList(nil, netlink.FAMILY_V4)
	if err != nil {
		t.Fatal(err)
	}
	var rs []string
	for _, r := range routes {
		rs = append(rs, r.String())
	}
	sort.Strings(rs)
	var as []string
	for _, ifn := range []string{topo.HostIf0, topo.HostIf1} {
		l, err := h.LinkByName(ifn)
		if err != nil {
			t.Fatal(err)
		}
		addrs, err := h.AddrList(l, netlink.FAMILY_V4)
		if err != nil {
			t.Fatal(err)
		}
		for _, a := range addrs {
			as = append(as, ifn+" "+a.IPNet.String())
		}
		as = append(as, fmt.Sprintf("%s mtu=%d up=%v", ifn, l.Attrs().MTU, l.Attrs().Flags&(1<<0) != 0))
	}
	return hostState{strings.Join(rs, "\n"), strings.Join(as, "\n")}
}

// TestCleanStop: SIGINT and SIGTERM each detach every hook and delete the
// shim's veths; the host's routes and addresses are never touched.
func TestCleanStop(t *testing.T) {
	topo := newTopo(t)
	srv := startServers(t, topo)
	before := snapshotHost(t, topo)
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGINT} {
		s := startShim(t, topo, "load-balance")
		links, _ := topo.ShimLinks()
		n, d := tcxCounts(t, topo)
		t.Logf("running: shim links %v; TCX %s", links, d)
		if len(links) == 0 {
			t.Errorf("no l2s* links while l2shim runs")
		}
		if n == 0 {
			t.Errorf("no TCX programs while l2shim runs")
		}
		if during := snapshotHost(t, topo); during != before {
			t.Errorf("host routes/addresses changed while l2shim runs:\nbefore:\n%s\n%s\nduring:\n%s\n%s", before.routes, before.addrs, during.routes, during.addrs)
		}
		if err := s.Signal(sig); err != nil {
			t.Fatal(err)
		}
		if err := s.Wait(15 * time.Second); err != nil {
			t.Fatalf("%v: %v", sig, err)
		}
		if code := s.ExitCode(); code != 0 {
			t.Errorf("exit code after %v = %d, want 0", sig, code)
		}
		if l, _ := topo.ShimLinks(); len(l) > 0 {
			t.Errorf("after %v: l2s* links remain: %v", sig, l)
		}
		if n, d := tcxCounts(t, topo); n != 0 {
			t.Errorf("after %v: TCX programs remain: %s", sig, d)
		}
		if after := snapshotHost(t, topo); after != before {
			t.Errorf("host routes/addresses changed after %v:\nbefore:\n%s\n%s\nafter:\n%s\n%s", sig, before.routes, before.addrs, after.routes, after.addrs)
		}
		plainRouting(t, fmt.Sprintf("after %v", sig), topo, srv, 5)
		if t.Failed() {
			t.Logf("l2shim output:\n%s", s.Output())
		}
	}
}

// TestBadConfigExit2: a config error makes `l2shim run` exit 2 without
// touching the host.
func TestBadConfigExit2(t *testing.T) {
	topo := newTopo(t)
	cfg := topo.Config(ConfigOptions{Control: filepath.Join(t.TempDir(), "l2shim.sock"), Extra: "[shim2]\nbogus = 1\n"})
	cfg = strings.Replace(cfg, "[shim]\n", "[shim]\nno_such_key = true\n", 1)
	out, code := runShimCommand(t, topo, "run", cfg)
	t.Logf("l2shim run with a bad config: exit %d, output:\n%s", code, out)
	if code != 2 {
		t.Errorf("exit code %d, want 2", code)
	}
	if !strings.Contains(out, "no_such_key") {
		t.Errorf("output does not name the unknown key no_such_key")
	}
	if l, _ := topo.ShimLinks(); len(l) > 0 {
		t.Errorf("links created despite the bad config: %v", l)
	}
	if n, d := tcxCounts(t, topo); n != 0 {
		t.Errorf("TCX programs attached despite the bad config: %s", d)
	}
}
