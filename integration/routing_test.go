package integration

import (
	"context"
	"fmt"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// Tests of source-aware routing, per-source placement, port forwarding,
// [[rule]]s and the rp_filter warning.

// echoServices starts a TCP and a UDP echo server on addr in ns.
func echoServices(t *testing.T, ns *NS, addr netip.AddrPort) (*TCPEchoServer, *UDPEchoServer) {
	t.Helper()
	e, err := StartTCPEcho(ns, addr)
	if err != nil {
		t.Fatal(err)
	}
	u, err := StartUDPEcho(ns, addr)
	if err != nil {
		t.Fatal(err)
	}
	return e, u
}

// hostServices starts a TCP and a UDP echo server on addr:port in the host
// namespace (services the host offers on one of its uplinks).
func hostServices(t *testing.T, topo *Topology, addr netip.Addr, port uint16) (*TCPEchoServer, *UDPEchoServer) {
	t.Helper()
	return echoServices(t, topo.Host, netip.AddrPortFrom(addr, port))
}

// nftCount installs, in its own table in ns, a counter for packets matching
// expr at hook (at a priority before anything else there) and returns a
// function that reads it.
func nftCount(t *testing.T, ns *NS, table, hook, expr string) func() int64 {
	t.Helper()
	read := nftCounters(t, ns, table, hook, [][2]string{{"n", expr}})
	return func() int64 { return read("n") }
}

// primeARP makes the host resolve gw0's MAC the way a host using eth0 has
// it: with eth0's own address as the ARP sender. (A first ARP request for
// gw0 sent on behalf of a 10.2.0.2 packet is ignored by gw0's strict
// rp_filter, so without this the host's misrouted answers would die in the
// host itself rather than at gw0.)
func primeARP(t *testing.T, topo *Topology) {
	t.Helper()
	if n, _, err := Ping(context.Background(), topo.Host, topo.GW0Addr, 1, time.Second); n != 1 {
		t.Fatalf("host ping gw0: %v", err)
	}
}

// TestSourceAware: the server opens TCP connections, sends UDP
// requests and pings to the host's second address (through gw1). Without
// l2shim the host answers through its default route, eth0, with source
// 10.2.0.2, and gw0 drops every answer as spoofed; with l2shim every answer
// leaves through gw1, unchanged (no NAT), and nothing from 10.2.0.2 reaches
// gw0.
func TestSourceAware(t *testing.T) { sourceAware(t, "") }

// sourceAware is TestSourceAware with l2shim's [shim] attach ("": the default).
func sourceAware(t *testing.T, attach string) {
	topo := newTopo(t)
	echo, udp := hostServices(t, topo, topo.HostAddr1, EchoPort)
	ctx := context.Background()
	to := netip.AddrPortFrom(topo.HostAddr1, EchoPort)
	primeARP(t, topo)
	atGW0 := nftCount(t, topo.GW0, "l2tc", "prerouting", "ip saddr "+topo.HostAddr1.String())

	// Without l2shim: everything fails, and the answers did reach gw0.
	ts := TimedEchoes(ctx, topo.Server, topo.ServerAddr, to, 3, 3, 1500*time.Millisecond)
	if ok, _, _, _ := TimingStats(ts); ok != 0 {
		t.Fatalf("without l2shim %d/3 inbound connections to %s succeeded: the topology proves nothing", ok, to)
	}
	if r := UDPExchangeFrom(ctx, topo.Server, topo.ServerAddr, to, 3, 0, 500*time.Millisecond); r.Answered != 0 {
		t.Fatalf("without l2shim %d/3 UDP requests to %s were answered", r.Answered, to)
	}
	if n, _, _ := Ping(ctx, topo.Server, topo.HostAddr1, 2, 500*time.Millisecond); n != 0 {
		t.Fatalf("without l2shim %d/2 pings to %s were answered", n, topo.HostAddr1)
	}
	before := atGW0()
	t.Logf("without l2shim: inbound TCP, UDP and ping to %s all unanswered; gw0 received (and dropped) %d answers from %s", topo.HostAddr1, before, topo.HostAddr1)
	if before == 0 || echo.Seen.Count(topo.ServerAddr) != 0 {
		t.Fatalf("without l2shim the answers should die at gw0: gw0 saw %d packets from %s; host accepted %d connections", before, topo.HostAddr1, echo.Seen.Count(topo.ServerAddr))
	}
	// The host did get the requests (the SYNs reached it: its UDP server saw them).
	if udp.Seen.Count(topo.ServerAddr) == 0 {
		t.Fatalf("without l2shim the host's UDP server saw no request from %s: the requests do not even arrive", topo.ServerAddr)
	}

	s := startShimCfg(t, topo, ConfigOptions{Mode: "load-balance", Attach: attach})
	checkAttached(t, s, attach)
	echo.Seen.Reset()
	udp.Seen.Reset()
	ts = TimedEchoes(ctx, topo.Server, topo.ServerAddr, to, 40, 4, 3*time.Second)
	checkTimings(t, "inbound TCP to 10.2.0.2 with l2shim", ts, time.Second)
	requireOnly(t, "inbound TCP (the host sees the client unchanged)", echo.Seen.Counts(), topo.ServerAddr, 40)
	r := UDPExchangeFrom(ctx, topo.Server, topo.ServerAddr, to, 20, 1, time.Second)
	if r.Answered != 20 {
		t.Errorf("inbound UDP with l2shim: %d/20 answered:%s", r.Answered, firstErrs(r.Errors, 5))
	}
	requireOnly(t, "inbound UDP", udp.Seen.Counts(), topo.ServerAddr, 20)
	if n, rtts, err := Ping(ctx, topo.Server, topo.HostAddr1, 5, time.Second); n != 5 {
		t.Errorf("inbound ping to %s with l2shim: %d/5 answered (%v)", topo.HostAddr1, n, err)
	} else {
		t.Logf("inbound ping with l2shim: 5/5, rtt %v", rtts)
	}
	if after := atGW0(); after != before {
		t.Errorf("with l2shim gw0 still received %d packets from %s: answers should leave through gw1", after-before, topo.HostAddr1)
	}
	// Inbound on eth0 keeps working too.
	e0, _ := hostServices(t, topo, topo.HostAddr0, EchoPort)
	ts = TimedEchoes(ctx, topo.Server, topo.ServerAddr, netip.AddrPortFrom(topo.HostAddr0, EchoPort), 20, 4, 3*time.Second)
	checkTimings(t, "inbound TCP to 10.1.0.2 with l2shim", ts, time.Second)
	requireOnly(t, "inbound TCP to 10.1.0.2", e0.Seen.Counts(), topo.ServerAddr, 20)
	stopShim(t, s)
}

// TestPerSource: sockets bound to the host's second address send
// through eth0 (the default route); l2shim sends them through gw1, no NAT.
// Without l2shim gw0 drops them.
func TestPerSource(t *testing.T) {
	topo := newTopo(t)
	srv := startServers(t, topo)
	ctx := context.Background()
	primeARP(t, topo)
	atGW0 := nftCount(t, topo.GW0, "l2tc", "prerouting", "ip saddr "+topo.HostAddr1.String())

	ts := TimedEchoes(ctx, topo.Host, topo.HostAddr1, srv.echoAddr(), 3, 3, 1500*time.Millisecond)
	if ok, _, _, _ := TimingStats(ts); ok != 0 {
		t.Fatalf("without l2shim %d/3 connections bound to %s succeeded: the topology proves nothing", ok, topo.HostAddr1)
	}
	if r := UDPExchangeFrom(ctx, topo.Host, topo.HostAddr1, srv.udpAddr(), 3, 0, 500*time.Millisecond); r.Answered != 0 {
		t.Fatalf("without l2shim %d/3 UDP requests from %s were answered", r.Answered, topo.HostAddr1)
	}
	before := atGW0()
	if before == 0 {
		t.Fatalf("without l2shim nothing from %s reached gw0", topo.HostAddr1)
	}
	t.Logf("without l2shim: TCP and UDP from %s all fail (gw0 received %d packets from it and dropped them)", topo.HostAddr1, before)

	for _, mode := range []string{"load-balance", "failover"} {
		t.Run(mode, func(t *testing.T) {
			s := startShimCfg(t, topo, ConfigOptions{Mode: mode})
			srv.echo.Seen.Reset()
			srv.udp.Seen.Reset()
			ts := TimedEchoes(ctx, topo.Host, topo.HostAddr1, srv.echoAddr(), 30, 4, 3*time.Second)
			checkTimings(t, "TCP bound to 10.2.0.2", ts, time.Second)
			requireOnly(t, "TCP bound to 10.2.0.2", srv.echo.Seen.Counts(), topo.HostAddr1, 30)
			r := UDPExchangeFrom(ctx, topo.Host, topo.HostAddr1, srv.udpAddr(), 20, 1, time.Second)
			if r.Answered != 20 {
				t.Errorf("UDP bound to 10.2.0.2: %d/20:%s", r.Answered, firstErrs(r.Errors, 5))
			}
			requireOnly(t, "UDP bound to 10.2.0.2", srv.udp.Seen.Counts(), topo.HostAddr1, 20)
			if n := atGW0(); n != before {
				t.Errorf("with l2shim gw0 still received %d packets from %s", n-before, topo.HostAddr1)
			}
			stopShim(t, s)
		})
	}
}

// TestPortForward: a LAN server behind the host is reached by
// DNAT on the host's second address; its replies, forwarded by the host
// toward its default route (eth0), leave through gw1 and the client is
// answered.
func TestPortForward(t *testing.T) {
	topo := newTopo(t)
	lanSrv := netip.MustParsePrefix("192.168.50.10/24")
	lan, err := topo.AddLAN("lan", "lan0", netip.MustParsePrefix("192.168.50.1/24"), lanSrv)
	if err != nil {
		t.Fatal(err)
	}
	if err := topo.Host.Sysctl("net.ipv4.ip_forward", "1"); err != nil {
		t.Fatal(err)
	}
	if err := Nft(topo.Host, fmt.Sprintf(`table ip l2tnat {
	chain pre {
		type nat hook prerouting priority dstnat; policy accept;
		ip daddr %[1]s tcp dport 8080 dnat to %[2]s:8080
		ip daddr %[1]s udp dport 8080 dnat to %[2]s:8080
	}
}`, topo.HostAddr1, lanSrv.Addr())); err != nil {
		t.Fatal(err)
	}
	echo, udp := echoServices(t, lan, netip.AddrPortFrom(lanSrv.Addr(), 8080))
	ctx := context.Background()
	to := netip.AddrPortFrom(topo.HostAddr1, 8080)
	primeARP(t, topo)
	syns := nftCount(t, lan, "l2tc", "input", "ip saddr "+topo.ServerAddr.String()+" tcp dport 8080 tcp flags & (syn | ack) == syn")

	ts := TimedEchoes(ctx, topo.Server, topo.ServerAddr, to, 3, 3, 1500*time.Millisecond)
	if ok, _, _, _ := TimingStats(ts); ok != 0 {
		t.Fatalf("without l2shim %d/3 forwarded connections succeeded: the topology proves nothing", ok)
	}
	if n := syns(); n == 0 {
		t.Fatalf("without l2shim no SYN from %s reached the LAN server: DNAT not working, the test proves nothing", topo.ServerAddr)
	} else {
		t.Logf("without l2shim: %d SYNs reached the LAN server, no connection completed (replies leave via eth0 and gw0 drops them)", n)
	}

	s := startShimCfg(t, topo, ConfigOptions{Mode: "load-balance"})
	echo.Seen.Reset()
	ts = TimedEchoes(ctx, topo.Server, topo.ServerAddr, to, 30, 4, 3*time.Second)
	checkTimings(t, "port forward 10.2.0.2:8080 -> 192.168.50.10:8080 (TCP)", ts, time.Second)
	requireOnly(t, "port forward (the LAN server sees the client)", echo.Seen.Counts(), topo.ServerAddr, 30)
	r := UDPExchangeFrom(ctx, topo.Server, topo.ServerAddr, to, 10, 1, time.Second)
	if r.Answered != 10 {
		t.Errorf("port forward (UDP): %d/10:%s", r.Answered, firstErrs(r.Errors, 5))
	}
	requireOnly(t, "port forward (UDP)", udp.Seen.Counts(), topo.ServerAddr, r.Answered)
	stopShim(t, s)
}

// TestRules: route-to by destination port and by
// destination network (gateway by name and by address), pass, drop, an
// inbound-direction rule on one interface, and route-to a gateway that is
// down: non-strict falls over, strict drops.
func TestRules(t *testing.T) {
	topo := newTopo(t)
	srv := startServers(t, topo)
	other := netip.MustParseAddr("203.0.113.20")
	if err := topo.AddServerAddr(other); err != nil {
		t.Fatal(err)
	}
	ports := map[uint16]*TCPEchoServer{}
	for _, p := range []uint16{9000, 9002, 9003, 9010, 9015} {
		e, err := StartTCPEcho(topo.Server, netip.AddrPortFrom(topo.ServerAddr, p))
		if err != nil {
			t.Fatal(err)
		}
		ports[p] = e
	}
	oe, ou := echoServices(t, topo.Server, netip.AddrPortFrom(other, EchoPort))
	h1, _ := hostServices(t, topo, topo.HostAddr1, EchoPort)
	h1ssh, _ := hostServices(t, topo, topo.HostAddr1, 2222)
	h0ssh, _ := hostServices(t, topo, topo.HostAddr0, 2222)

	rules := `
[[rule]]
name = "port 9000 via B"
protocol = "tcp"
dst_port = 9000
action = "route-to"
gateway = "eth1"

[[rule]]
name = "net 203.0.113.20 via B (by address)"
dst = "203.0.113.20/32"
action = "route-to"
gateway = "10.2.0.1"

[[rule]]
name = "strict 9003 via B"
protocol = "tcp"
dst_port = 9003
action = "route-to"
gateway = "eth1"
strict = true

[[rule]]
name = "pass 9010-9019"
protocol = "tcp"
dst_port = "9010-9019"
action = "pass"

[[rule]]
name = "drop 9002"
protocol = "tcp"
dst_port = 9002
action = "drop"

[[rule]]
name = "no 2222 in on B"
interface = "eth1"
direction = "in"
protocol = "tcp"
dst_port = 2222
action = "drop"
`
	s := startShimCfg(t, topo, ConfigOptions{
		Mode:         "load-balance",
		Extra:        fastProbes + "\n" + rules,
		GatewayExtra: probeCfg(topo.ServerAddr),
	})
	if w := s.LogLines(0, "not applied"); len(w) > 0 {
		t.Errorf("l2shim says rules are not applied:\n%s", strings.Join(w, "\n"))
	}
	ctx := context.Background()

	// Control: unmatched traffic is load-balanced.
	spreadOK(t, "port 7 (no rule, load-balanced)", topo, srv, 40, 4)

	viaRule := func(what string, e *TCPEchoServer, to netip.AddrPort, want netip.Addr) {
		t.Helper()
		e.Seen.Reset()
		ts := TimedEchoes(ctx, topo.Host, netip.Addr{}, to, 30, 4, 3*time.Second)
		checkTimings(t, what, ts, time.Second)
		requireOnly(t, what, e.Seen.Counts(), want, 30)
	}
	viaRule("route-to eth1 by dst_port 9000", ports[9000], netip.AddrPortFrom(topo.ServerAddr, 9000), topo.HostAddr1)
	viaRule("route-to 10.2.0.1 by dst 203.0.113.20/32 (TCP)", oe, netip.AddrPortFrom(other, EchoPort), topo.HostAddr1)
	r := UDPExchange(ctx, topo.Host, netip.AddrPortFrom(other, EchoPort), 20, 1, time.Second)
	if r.Answered != 20 {
		t.Errorf("route-to by dst (UDP): %d/20:%s", r.Answered, firstErrs(r.Errors, 5))
	}
	requireOnly(t, "route-to 10.2.0.1 by dst 203.0.113.20/32 (UDP)", ou.Seen.Counts(), topo.HostAddr1, r.Answered)
	viaRule("strict route-to eth1 by dst_port 9003, gw1 up", ports[9003], netip.AddrPortFrom(topo.ServerAddr, 9003), topo.HostAddr1)
	viaRule("pass dst_port 9010 (in 9010-9019)", ports[9010], netip.AddrPortFrom(topo.ServerAddr, 9010), topo.HostAddr0)
	viaRule("pass dst_port 9015 (in 9010-9019)", ports[9015], netip.AddrPortFrom(topo.ServerAddr, 9015), topo.HostAddr0)

	// drop: nothing reaches the server.
	ts := TimedEchoes(ctx, topo.Host, netip.Addr{}, netip.AddrPortFrom(topo.ServerAddr, 9002), 3, 3, 1500*time.Millisecond)
	if ok, _, _, _ := TimingStats(ts); ok != 0 || ports[9002].Seen.Total() != 0 {
		t.Errorf("drop dst_port 9002: %d/3 connections succeeded, server saw %s", ok, ports[9002].Seen.String())
	} else {
		t.Logf("drop dst_port 9002: 3/3 connections failed (%v), server saw none", ts[0].Err)
	}

	// Inbound rule: port 2222 arriving on eth1 dropped; other ports on eth1
	// and port 2222 on eth0 work.
	ts = TimedEchoes(ctx, topo.Server, topo.ServerAddr, netip.AddrPortFrom(topo.HostAddr1, 2222), 3, 3, 1500*time.Millisecond)
	if ok, _, _, _ := TimingStats(ts); ok != 0 || h1ssh.Seen.Total() != 0 {
		t.Errorf("inbound drop tcp/2222 on eth1: %d/3 connections succeeded, host saw %s", ok, h1ssh.Seen.String())
	} else {
		t.Logf("inbound drop tcp/2222 on eth1: 3/3 connections failed (%v), host saw none", ts[0].Err)
	}
	ts = TimedEchoes(ctx, topo.Server, topo.ServerAddr, netip.AddrPortFrom(topo.HostAddr1, EchoPort), 10, 2, 3*time.Second)
	checkTimings(t, "inbound tcp/7 on eth1 (no rule)", ts, time.Second)
	requireOnly(t, "inbound tcp/7 on eth1", h1.Seen.Counts(), topo.ServerAddr, 10)
	ts = TimedEchoes(ctx, topo.Server, topo.ServerAddr, netip.AddrPortFrom(topo.HostAddr0, 2222), 10, 2, 3*time.Second)
	checkTimings(t, "inbound tcp/2222 on eth0 (rule is for eth1)", ts, time.Second)
	requireOnly(t, "inbound tcp/2222 on eth0", h0ssh.Seen.Counts(), topo.ServerAddr, 10)

	// route-to a gateway that is down: gw1's upstream cut, probes notice.
	mark := s.LogMark()
	if err := topo.CutUpstream(1); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.WaitLog(mark, 3*time.Second, "gateway down", "gateway=eth1"); err != nil {
		t.Fatalf("gw1 cut: %v", err)
	}
	viaRule("route-to eth1 (not strict) while gw1 is down: fails over", ports[9000], netip.AddrPortFrom(topo.ServerAddr, 9000), topo.HostAddr0)
	ports[9003].Seen.Reset()
	ts = TimedEchoes(ctx, topo.Host, netip.Addr{}, netip.AddrPortFrom(topo.ServerAddr, 9003), 3, 3, 1500*time.Millisecond)
	if ok, _, _, _ := TimingStats(ts); ok != 0 || ports[9003].Seen.Total() != 0 {
		t.Errorf("strict route-to eth1 while gw1 is down: %d/3 connections succeeded, server saw %s; want them dropped", ok, ports[9003].Seen.String())
	} else {
		t.Logf("strict route-to eth1 while gw1 is down: 3/3 connections failed (%v)", ts[0].Err)
	}
	if err := topo.RestoreUpstream(1); err != nil {
		t.Fatal(err)
	}

	tot := stopShimTotals(t, s)
	t.Logf("totals: drop_rule=%s", tot["drop_rule"])
	// 3 outbound flows to 9002, 3 inbound to 2222 and 3 strict ones, each
	// at least one SYN.
	if atoiAttr(tot, "drop_rule") < 9 {
		t.Errorf("totals: drop_rule=%q, want at least 9 (3 to port 9002, 3 inbound to 2222 on eth1, 3 strict while gw1 was down)", tot["drop_rule"])
	}
}

// TestRPFilterWarning: with strict reverse-path filtering on the
// host's second interface, `l2shim check` and `l2shim run` warn and name the
// fix (2, loose). With the topology's loose setting they do not.
func TestRPFilterWarning(t *testing.T) {
	topo := newTopo(t)
	cfg := topo.Config(ConfigOptions{Control: filepath.Join(t.TempDir(), "l2shim.sock")})
	check := func() (string, int) { return runShimCommand(t, topo, "check", cfg) }
	out, code := check()
	if code != 0 || strings.Contains(out, "rp_filter") {
		t.Errorf("check with loose rp_filter: exit %d, output:\n%s\nwant exit 0 and no rp_filter warning", code, out)
	}
	for _, kv := range [][2]string{{"net.ipv4.conf.all.rp_filter", "1"}, {"net.ipv4.conf.eth1.rp_filter", "1"}} {
		if err := topo.Host.Sysctl(kv[0], kv[1]); err != nil {
			t.Fatal(err)
		}
	}
	out, code = check()
	t.Logf("l2shim check with rp_filter=1 on eth1: exit %d\n%s", code, out)
	if code != 0 {
		t.Errorf("check with strict rp_filter: exit %d, want 0 (a warning, not an error)", code)
	}
	warnOK := func(what, text string) {
		t.Helper()
		var line string
		for _, l := range strings.Split(text, "\n") {
			if strings.Contains(l, "rp_filter") && strings.Contains(l, "eth1") {
				line = l
				break
			}
		}
		if line == "" {
			t.Errorf("%s: no rp_filter warning naming eth1:\n%s", what, text)
			return
		}
		if !strings.Contains(line, "rp_filter=2") && !strings.Contains(line, "loose") {
			t.Errorf("%s: the rp_filter warning does not name the fix (2, loose): %s", what, line)
		}
		for _, l := range strings.Split(text, "\n") {
			if strings.Contains(l, "rp_filter") && strings.Contains(l, "eth0") && !strings.Contains(l, "eth1") {
				t.Errorf("%s: a warning about eth0, whose effective rp_filter is max(all=1, eth0=2) = 2 (loose): %s", what, l)
			}
		}
	}
	warnOK("check", out)

	s := startShimCfg(t, topo, ConfigOptions{Mode: "load-balance"})
	warnOK("run", s.Output())
	stopShim(t, s)
}
