package integration

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// newTopo6 builds a topology with options o (its Logf is the test's) and,
// when the test ends, closes it (twice: idempotent) and checks, as
// TestTopologyCleanup does, that no namespace of it is left and that the
// root namespace's links are unchanged.
func newTopo6(t *testing.T, o Options) *Topology {
	t.Helper()
	requireRoot(t)
	rootBefore := rootLinks(t)
	o.Logf = t.Logf
	topo, err := NewTopology(o)
	if err != nil {
		t.Fatalf("topology: %v", err)
	}
	t.Cleanup(func() {
		names := topo.Namespaces()
		if err := topo.Close(); err != nil {
			t.Errorf("topology cleanup: %v", err)
		}
		if err := topo.Close(); err != nil {
			t.Errorf("second close: %v", err)
		}
		for _, n := range names {
			if _, err := os.Stat(filepath.Join("/run/netns", n.Name)); err == nil {
				t.Errorf("netns %s still exists after cleanup", n.Name)
			}
		}
		if after := rootLinks(t); strings.Join(after, ",") != strings.Join(rootBefore, ",") {
			t.Errorf("root namespace links changed: before %v after %v", rootBefore, after)
		}
	})
	return topo
}

// wantSysctls checks sysctls: {ns, key, value} (value "a|b": either).
func wantSysctls(t *testing.T, checks []sysctlCheck) {
	t.Helper()
	for _, c := range checks {
		got, err := c.ns.ReadSysctl(c.key)
		if err != nil || !slices.Contains(strings.Split(c.val, "|"), got) {
			t.Errorf("%s: %s = %q (%v), want %s", c.ns.Name, c.key, got, err, c.val)
		}
	}
}

type sysctlCheck struct {
	ns       *NS
	key, val string
}

// topoLinks lists every (namespace, link) of the topology.
func topoLinks(t *testing.T, topo *Topology) map[*NS][]string {
	t.Helper()
	m := map[*NS][]string{}
	for _, ns := range []*NS{topo.Host, topo.GW0, topo.GW1, topo.Server} {
		names, err := ns.LinkNames()
		if err != nil {
			t.Fatal(err)
		}
		m[ns] = names
	}
	return m
}

// srcDrops reads gateway i's IPv6 source-prefix drop counter.
func srcDrops(t *testing.T, topo *Topology, i int) int64 {
	t.Helper()
	n, err := topo.SourceDrops6(i)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// gwLL returns fe80::1 with the zone of the host's interface of uplink i.
func gwLL(topo *Topology, i int) netip.Addr {
	ifname := topo.HostIf0
	if i == 1 {
		ifname = topo.HostIf1
	}
	return GWLinkLocal.WithZone(ifname)
}

// checkDualStack is what every dual-stack topology must do without l2shim,
// whatever its uplinks are made of: IPv6 enabled everywhere with usable
// addresses; ping6, TCP and UDP to the server over uplink 0 by the default
// route (IPv4 too); the server reaching 2001:db8:1::2 but not 2001:db8:2::2
// (its SYN arrives over uplink 1, the answer leaves by the default route and
// gw0's source-prefix filter drops it); a socket bound to 2001:db8:2::2
// failing the same way, and working once a policy route sends it over
// uplink 1.
func checkDualStack(t *testing.T, topo *Topology) {
	ctx := context.Background()
	if !topo.HostAddr6_0.IsValid() || topo.HostAddr6_1 != HostAddr6_1 || topo.ServerAddr6 != ServerAddr6 ||
		topo.GW0Addr6 != GW0Addr6 || topo.GW1Addr6 != GW1Addr6 || topo.GW0LinkLocal != GWLinkLocal || topo.GW1LinkLocal != GWLinkLocal {
		t.Fatalf("IPv6 fields: host %v %v gw %v %v ll %v %v server %v", topo.HostAddr6_0, topo.HostAddr6_1, topo.GW0Addr6, topo.GW1Addr6, topo.GW0LinkLocal, topo.GW1LinkLocal, topo.ServerAddr6)
	}

	// Sysctls and addresses.
	var checks []sysctlCheck
	for ns, links := range topoLinks(t, topo) {
		for _, k := range append([]string{"all", "default"}, links...) {
			checks = append(checks, sysctlCheck{ns, "net.ipv6.conf." + k + ".disable_ipv6", "0"})
		}
		checks = append(checks, sysctlCheck{ns, "net.ipv6.conf.all.accept_dad", "0"}, sysctlCheck{ns, "net.ipv6.conf.default.accept_dad", "0"})
		for _, l := range links {
			if l != "lo" {
				// -1 (no DAD either): what the kernel sets on NOARP
				// devices (tun, WireGuard).
				checks = append(checks, sysctlCheck{ns, "net.ipv6.conf." + l + ".accept_dad", "0|-1"})
			}
		}
	}
	checks = append(checks,
		sysctlCheck{topo.Host, "net.ipv6.conf.all.forwarding", "0"},
		sysctlCheck{topo.Server, "net.ipv6.conf.all.forwarding", "0"},
		sysctlCheck{topo.GW0, "net.ipv6.conf.all.forwarding", "1"},
		sysctlCheck{topo.GW0, "net.ipv6.conf.lan.forwarding", "1"},
		sysctlCheck{topo.GW1, "net.ipv6.conf.all.forwarding", "1"},
		sysctlCheck{topo.GW1, "net.ipv6.conf.wan.forwarding", "1"},
		sysctlCheck{topo.Host, "net.ipv4.conf." + topo.HostIf1 + ".rp_filter", "2"},
		sysctlCheck{topo.GW1, "net.ipv4.conf.lan.rp_filter", "1"},
	)
	wantSysctls(t, checks)
	for ns, links := range topoLinks(t, topo) {
		for _, l := range links {
			addrs, err := addrs6(ns, l)
			if err != nil {
				t.Fatal(err)
			}
			for _, a := range addrs {
				if a.flags&(unix.IFA_F_TENTATIVE|unix.IFA_F_DADFAILED) != 0 {
					t.Errorf("%s: %s: %s not usable when NewTopology returned", ns.Name, l, a)
				}
			}
		}
	}
	for i, gw := range []*NS{topo.GW0, topo.GW1} {
		addrs, err := addrs6(gw, "lan")
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, a := range addrs {
			got = append(got, fmt.Sprintf("%s/%d", a.ip, a.bits))
		}
		_, gwAddr := topo.uplinkAddrs6(i)
		if strings.Join(got, ",") != fmt.Sprintf("%s/64,fe80::1/64", gwAddr) {
			t.Errorf("%s: lan addresses %v, want %s/64 and fe80::1/64 only", gw.Name, got, gwAddr)
		}
	}
	for i := range 2 {
		a, err := topo.HostLinkLocal6(i)
		t.Logf("host uplink %d: link-local %v (%v)", i, a, err)
		if err != nil {
			t.Error(err)
		}
	}
	if out := mustRun(t, topo.Host, "ip", "-6", "route", "show", "default"); !strings.Contains(out, "default via fe80::1 dev "+topo.HostIf0) {
		t.Errorf("host IPv6 default route: %q, want via fe80::1 dev %s", out, topo.HostIf0)
	}

	// Outbound over uplink 0, by the default route.
	srv, err := topo.startServers6()
	if err != nil {
		t.Fatal(err)
	}
	if n, rtts, err := Ping(ctx, topo.Host, topo.ServerAddr6, 3, time.Second); n != 3 {
		t.Errorf("ping6 server: %d/3 replies (%v)", n, err)
	} else {
		t.Logf("ping6 %s: 3/3, rtt %v", topo.ServerAddr6, rtts)
	}
	for i := range 2 {
		if n, _, err := Ping(ctx, topo.Host, gwLL(topo, i), 1, time.Second); n != 1 {
			t.Errorf("ping6 %s: no reply (%v)", gwLL(topo, i), err)
		}
	}
	if n, _, err := Ping(ctx, topo.Host, topo.ServerAddr, 1, time.Second); n != 1 {
		t.Errorf("IPv4 ping server in the dual-stack topology: no reply (%v)", err)
	}
	ok, errs := TCPEchoMany(ctx, topo.Host, srv.echoAddr(), 20, 2, 2*time.Second)
	if ok != 20 {
		t.Errorf("TCP over IPv6: %d/20 connections succeeded:%s", ok, firstErrs(errs, 5))
	}
	requireOnly(t, "TCP over IPv6 (default route, uplink 0)", srv.echo.Seen.Counts(), topo.HostAddr6_0, 20)
	res := UDPExchange(ctx, topo.Host, srv.udpAddr(), 10, 1, time.Second)
	if res.Answered != 10 {
		t.Errorf("UDP over IPv6: %d/10 answered:%s", res.Answered, firstErrs(res.Errors, 5))
	}
	requireOnly(t, "UDP over IPv6 (default route, uplink 0)", srv.udp.Seen.Counts(), topo.HostAddr6_0, 10)
	up, err := Upload(ctx, topo.Host, srv.bulkAddr(), 4<<20, 6, nil)
	if err != nil || up.Seen != topo.HostAddr6_0 {
		t.Errorf("4 MiB upload over IPv6: %v (server saw %v)", err, up.Seen)
	}

	// Inbound: the server connects to each host address.
	host0, err := StartTCPEcho(topo.Host, netip.AddrPortFrom(topo.HostAddr6_0, EchoPort))
	if err != nil {
		t.Fatal(err)
	}
	host1, err := StartTCPEcho(topo.Host, netip.AddrPortFrom(topo.HostAddr6_1, EchoPort))
	if err != nil {
		t.Fatal(err)
	}
	if err := Nft(topo.Host, fmt.Sprintf(`table ip6 l2t_t6in {
	chain c {
		type filter hook prerouting priority -300; policy accept;
		iifname %q ip6 daddr %s tcp dport %d tcp flags & (syn|ack) == syn counter comment "syn-in-1"
	}
}
`, topo.HostIf1, topo.HostAddr6_1, EchoPort)); err != nil {
		t.Fatal(err)
	}
	synIn := func() int64 {
		n, err := NftCounter(topo.Host, "ip6", "l2t_t6in", "c", "syn-in-1")
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	if err := TCPEchoFrom(ctx, topo.Server, topo.ServerAddr6, netip.AddrPortFrom(topo.HostAddr6_0, EchoPort), []byte("inbound to uplink 0"), 2*time.Second); err != nil {
		t.Errorf("server → %s: %v", topo.HostAddr6_0, err)
	}
	drops0, drops1 := srcDrops(t, topo, 0), srcDrops(t, topo, 1)
	err = TCPEchoFrom(ctx, topo.Server, topo.ServerAddr6, netip.AddrPortFrom(topo.HostAddr6_1, EchoPort), []byte("inbound to uplink 1"), 2*time.Second)
	d0, d1, syns := srcDrops(t, topo, 0)-drops0, srcDrops(t, topo, 1)-drops1, synIn()
	t.Logf("server → %s without a policy route: %v; SYNs in on %s %d, gw0 source drops +%d, gw1 +%d", topo.HostAddr6_1, err, topo.HostIf1, syns, d0, d1)
	if err == nil {
		t.Errorf("server → %s succeeded: the host's answer left by its default route through gw0 and was not dropped; the topology proves nothing", topo.HostAddr6_1)
	}
	if syns == 0 {
		t.Errorf("the server's SYN to %s never arrived on %s", topo.HostAddr6_1, topo.HostIf1)
	}
	if d0 == 0 {
		t.Errorf("gw0's source-prefix counter did not move: something else lost the SYN-ACK from %s", topo.HostAddr6_1)
	}
	if d1 != 0 {
		t.Errorf("gw1 dropped %d packets from a wrong source", d1)
	}
	if n := host1.Seen.Total(); n != 0 {
		t.Errorf("host server on %s accepted %d connections", topo.HostAddr6_1, n)
	}

	// Outbound from a socket bound to 2001:db8:2::2: the default route
	// takes it to gw0, which drops it.
	drops0 = srcDrops(t, topo, 0)
	if err := TCPEchoFrom(ctx, topo.Host, topo.HostAddr6_1, srv.echoAddr(), []byte("bound to uplink 1"), 1500*time.Millisecond); err == nil {
		t.Errorf("TCP from %s by the default route succeeded", topo.HostAddr6_1)
	}
	srv.udp.Seen.Reset()
	if err := UDPSendFrom(topo.Host, topo.HostAddr6_1, srv.udpAddr(), []byte("wrong uplink"), 3); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	if n := srv.udp.Seen.Count(topo.HostAddr6_1); n != 0 {
		t.Errorf("%d datagrams from %s reached the server through gw0", n, topo.HostAddr6_1)
	}
	if d := srcDrops(t, topo, 0) - drops0; d < 4 {
		t.Errorf("gw0 dropped %d packets from %s, want at least 4 (SYNs and 3 datagrams)", d, topo.HostAddr6_1)
	} else {
		t.Logf("from %s by the default route: gw0 dropped %d packets", topo.HostAddr6_1, d)
	}

	// A test-local policy route sends 2001:db8:2::2 over uplink 1: both ways
	// work, nothing more is dropped.
	mustRun(t, topo.Host, "ip", "-6", "rule", "add", "from", topo.HostAddr6_1.String(), "lookup", "102", "pref", "1000")
	mustRun(t, topo.Host, "ip", "-6", "route", "add", "default", "via", "fe80::1", "dev", topo.HostIf1, "table", "102")
	drops0, drops1 = srcDrops(t, topo, 0), srcDrops(t, topo, 1)
	srv.echo.Seen.Reset()
	if err := TCPEchoFrom(ctx, topo.Host, topo.HostAddr6_1, srv.echoAddr(), []byte("bound, policy-routed"), 2*time.Second); err != nil {
		t.Errorf("TCP from %s with a policy route via %s: %v", topo.HostAddr6_1, topo.HostIf1, err)
	}
	requireOnly(t, "TCP from the policy-routed source", srv.echo.Seen.Counts(), topo.HostAddr6_1, 1)
	r := UDPExchangeFrom(ctx, topo.Host, topo.HostAddr6_1, srv.udpAddr(), 3, 1, time.Second)
	if r.Answered != 3 {
		t.Errorf("UDP from %s with a policy route: %d/3 answered:%s", topo.HostAddr6_1, r.Answered, firstErrs(r.Errors, 3))
	}
	if err := TCPEchoFrom(ctx, topo.Server, topo.ServerAddr6, netip.AddrPortFrom(topo.HostAddr6_1, EchoPort), []byte("inbound, policy-routed"), 2*time.Second); err != nil {
		t.Errorf("server → %s with the host's policy route: %v", topo.HostAddr6_1, err)
	}
	if d0, d1 := srcDrops(t, topo, 0)-drops0, srcDrops(t, topo, 1)-drops1; d0 != 0 || d1 != 0 {
		t.Errorf("with the policy route the gateways still dropped: gw0 +%d gw1 +%d", d0, d1)
	}
	mustRun(t, topo.Host, "ip", "-6", "rule", "del", "pref", "1000")
	mustRun(t, topo.Host, "ip", "-6", "route", "flush", "table", "102")
	if host0.Seen.Count(topo.ServerAddr6) != 1 || host1.Seen.Count(topo.ServerAddr6) != 1 {
		t.Errorf("host servers saw %s / %s, want the server once each", host0.Seen, host1.Seen)
	}
}

// TestIPv6Topology: the dual-stack standard topology (veth uplinks) without
// l2shim (checkDualStack), the gateways' fixed link-locals and the host's
// EUI-64 ones, the source-prefix filter as what drops (off: the packet from
// 2001:db8:2::2 via gw0 arrives; on again: dropped), and RecreateUplink
// keeping IPv6.
func TestIPv6Topology(t *testing.T) {
	topo := newTopo6(t, Options{IPv6: true})
	checkDualStack(t, topo)
	if t.Failed() {
		return
	}
	ctx := context.Background()
	for i, want := range []string{"fe80::4c:32ff:fe01:2", "fe80::4c:32ff:fe02:2"} {
		if a, err := topo.HostLinkLocal6(i); err != nil || a.String() != want {
			t.Errorf("host eth%d link-local %v (%v), want %s (EUI-64 of its MAC)", i, a, err, want)
		}
	}
	wantSysctls(t, []sysctlCheck{
		{topo.GW0, "net.ipv6.conf.lan.addr_gen_mode", "1"},
		{topo.GW1, "net.ipv6.conf.lan.addr_gen_mode", "1"},
		{topo.Host, "net.ipv6.conf.eth0.addr_gen_mode", "0"},
	})
	nft := mustRun(t, topo.GW0, "nft", "list", "table", "ip6", NftSrc6Table)
	t.Logf("gw0:\n%s", nft)
	if !strings.Contains(nft, "2001:db8:1::/64") || strings.Contains(nft, "2001:db8:2::/64") {
		t.Errorf("gw0's filter does not allow exactly its own /64")
	}

	// It is the filter that drops: off, the datagram gets through (and
	// the server answers through gw1); on again, dropped.
	srv := servers{}
	var err error
	if srv.udp, err = StartUDPEcho(topo.Server, netip.AddrPortFrom(topo.ServerAddr6, 9)); err != nil {
		t.Fatal(err)
	}
	if err := topo.SourceFilter6(0, false); err != nil {
		t.Fatal(err)
	}
	UDPSendFrom(topo.Host, topo.HostAddr6_1, srv.udpAddr(), []byte("filter off"), 1)
	srv.udp.Seen.waitCount(topo.HostAddr6_1, 2*time.Second)
	if err := topo.SourceFilter6(0, true); err != nil {
		t.Fatal(err)
	}
	if n := srv.udp.Seen.Count(topo.HostAddr6_1); n != 1 {
		t.Errorf("with gw0's source filter off the datagram from %s did not arrive (%d): something else drops it", topo.HostAddr6_1, n)
	}
	srv.udp.Seen.Reset()
	UDPSendFrom(topo.Host, topo.HostAddr6_1, srv.udpAddr(), []byte("filter on"), 2)
	time.Sleep(300 * time.Millisecond)
	if n, d := srv.udp.Seen.Count(topo.HostAddr6_1), srcDrops(t, topo, 0); n != 0 || d != 2 {
		t.Errorf("filter back on: %d datagrams arrived, %d dropped (want 0 and 2)", n, d)
	}

	// RecreateUplink keeps IPv6 (addresses, fe80::1, the default route).
	for i := range 2 {
		if _, _, err := topo.RecreateUplink(i); err != nil {
			t.Fatalf("recreate uplink %d: %v", i, err)
		}
	}
	if out := mustRun(t, topo.Host, "ip", "-6", "route", "show", "default"); !strings.Contains(out, "default via fe80::1 dev eth0") {
		t.Errorf("after RecreateUplink: host IPv6 default route %q", out)
	}
	if n, _, err := Ping(ctx, topo.Host, topo.ServerAddr6, 2, time.Second); n != 2 {
		t.Errorf("ping6 server after RecreateUplink: %d/2 (%v)", n, err)
	}
	if n, _, err := Ping(ctx, topo.Host, gwLL(topo, 1), 1, time.Second); n != 1 {
		t.Errorf("ping6 fe80::1%%eth1 after RecreateUplink: %v", err)
	}
}

// TestIPv6TopologyL3: the same dual-stack checks with L3 uplinks, a tun
// (ppp0, the default route) and WireGuard (wg1, the policy route), and
// RecreateUplink of the tun keeping IPv6.
func TestIPv6TopologyL3(t *testing.T) {
	topo := newTopo6(t, Options{IPv6: true, Uplinks: [2]LinkKind{LinkTun, LinkWireGuard}})
	if topo.HostIf0 != "ppp0" || topo.HostIf1 != "wg1" {
		t.Fatalf("host interfaces %s, %s", topo.HostIf0, topo.HostIf1)
	}
	checkDualStack(t, topo)
	if t.Failed() {
		return
	}
	if _, _, err := topo.RecreateUplink(0); err != nil {
		t.Fatal(err)
	}
	if out := mustRun(t, topo.Host, "ip", "-6", "route", "show", "default"); !strings.Contains(out, "default via fe80::1 dev ppp0") {
		t.Errorf("after RecreateUplink: host IPv6 default route %q", out)
	}
	if n, _, err := Ping(context.Background(), topo.Host, topo.ServerAddr6, 2, time.Second); n != 2 {
		t.Errorf("ping6 server after RecreateUplink(0): %d/2 (%v)", n, err)
	}
}

// TestIPv6TopologyRoutes: CutUpstream/RestoreUpstream cut IPv6 as well as
// IPv4; AddDefaultRoute6 adds a second default route in its own metric;
// SendRA makes the host install (lifetime > 0) and remove (0) a default
// route learnt from a real router advertisement.
func TestIPv6TopologyRoutes(t *testing.T) {
	topo := newTopo6(t, Options{IPv6: true})
	ctx := context.Background()
	if err := topo.CutUpstream(0); err != nil {
		t.Fatal(err)
	}
	if n, _, _ := Ping(ctx, topo.Host, topo.ServerAddr6, 1, 500*time.Millisecond); n != 0 {
		t.Errorf("ping6 through a cut gw0 answered")
	}
	if n, _, _ := Ping(ctx, topo.Host, topo.ServerAddr, 1, 500*time.Millisecond); n != 0 {
		t.Errorf("ping through a cut gw0 answered")
	}
	if n, _, err := Ping(ctx, topo.Host, gwLL(topo, 0), 1, time.Second); n != 1 {
		t.Errorf("cut gw0 no longer answers on its link-local: %v", err)
	}
	if err := topo.RestoreUpstream(0); err != nil {
		t.Fatal(err)
	}
	if n, _, err := Ping(ctx, topo.Host, topo.ServerAddr6, 1, time.Second); n != 1 {
		t.Errorf("ping6 after RestoreUpstream: %v", err)
	}

	if err := topo.AddDefaultRoute6(1, 2000); err != nil {
		t.Fatal(err)
	}
	out := mustRun(t, topo.Host, "ip", "-6", "route", "show", "default")
	t.Logf("host IPv6 default routes:\n%s", out)
	if !strings.Contains(out, "default via fe80::1 dev eth1 metric 2000") || !strings.Contains(out, "default via fe80::1 dev eth0 metric 1024") {
		t.Errorf("AddDefaultRoute6(1, 2000): routes %q", out)
	}
	mustRun(t, topo.Host, "ip", "-6", "route", "del", "default", "dev", "eth1", "metric", "2000")

	raRoute := func() *netlink.Route {
		l, err := topo.Host.Netlink().LinkByName("eth1")
		if err != nil {
			t.Fatal(err)
		}
		rs, err := topo.Host.Netlink().RouteList(l, netlink.FAMILY_V6)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range rs {
			if r.Protocol == unix.RTPROT_RA && (r.Dst == nil || r.Dst.IP.IsUnspecified()) {
				return &r
			}
		}
		return nil
	}
	if err := topo.SendRA(1, time.Minute); err != nil {
		t.Fatal(err)
	}
	var r *netlink.Route
	for deadline := time.Now().Add(2 * time.Second); r == nil && time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		r = raRoute()
	}
	if r == nil {
		t.Fatalf("no default route learnt from gw1's router advertisement; host routes:\n%s", mustRun(t, topo.Host, "ip", "-6", "route"))
	}
	if gw, _ := netip.AddrFromSlice(r.Gw); gw != GWLinkLocal {
		t.Errorf("RA default route via %v, want fe80::1", gw)
	}
	t.Logf("after gw1's RA: %s", strings.TrimSpace(mustRun(t, topo.Host, "ip", "-6", "route", "show", "default", "dev", "eth1")))
	if err := topo.SendRA(1, 0); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(2 * time.Second); r != nil && time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		r = raRoute()
	}
	if r != nil {
		t.Errorf("RA with router lifetime 0 did not remove the learnt route")
	}

	// On uplink 0 an RA meets the standard static route (same metric):
	// the static one stays, alone, and a lifetime 0 does not remove it.
	for _, life := range []time.Duration{time.Minute, 0} {
		if err := topo.SendRA(0, life); err != nil {
			t.Fatal(err)
		}
		time.Sleep(200 * time.Millisecond)
		if out := strings.TrimSpace(mustRun(t, topo.Host, "ip", "-6", "route", "show", "default")); out != "default via fe80::1 dev eth0 metric 1024 pref medium" {
			t.Errorf("after gw0's RA (lifetime %v): host IPv6 default routes %q, want the static one only", life, out)
		}
	}
}

// TestIPv6TopologyDisabled: without Options.IPv6 the topology is as before:
// IPv6 disabled in every namespace and on every link, no IPv6 address, no
// ip6 nft table, the IPv6 fields zero and the IPv6 methods refusing.
func TestIPv6TopologyDisabled(t *testing.T) {
	topo := newTopo6(t, Options{})
	var checks []sysctlCheck
	for ns, links := range topoLinks(t, topo) {
		for _, k := range append([]string{"all", "default"}, links...) {
			checks = append(checks, sysctlCheck{ns, "net.ipv6.conf." + k + ".disable_ipv6", "1"})
		}
		for _, l := range links {
			addrs, err := addrs6(ns, l)
			if err != nil {
				t.Fatal(err)
			}
			if len(addrs) != 0 {
				t.Errorf("%s: %s has IPv6 addresses %v", ns.Name, l, addrs)
			}
		}
		if out := mustRun(t, ns, "nft", "list", "tables"); strings.Contains(out, "ip6") {
			t.Errorf("%s: nft tables %q", ns.Name, out)
		}
	}
	wantSysctls(t, checks)
	hl, _ := topo.Host.LinkNames()
	sort.Strings(hl)
	if strings.Join(hl, ",") != "eth0,eth1,lo" {
		t.Errorf("host links %v", hl)
	}
	for _, a := range []netip.Addr{topo.HostAddr6_0, topo.HostAddr6_1, topo.GW0Addr6, topo.GW1Addr6, topo.GW0LinkLocal, topo.GW1LinkLocal, topo.ServerAddr6} {
		if a.IsValid() {
			t.Errorf("IPv6 field set without IPv6: %v", a)
		}
	}
	if _, err := topo.SourceDrops6(0); err == nil {
		t.Errorf("SourceDrops6 without IPv6: no error")
	}
	if err := topo.AddDefaultRoute6(1, 2000); err == nil {
		t.Errorf("AddDefaultRoute6 without IPv6: no error")
	}
	if err := topo.SendRA(0, time.Minute); err == nil {
		t.Errorf("SendRA without IPv6: no error")
	}
	if n, _, err := Ping(context.Background(), topo.Host, topo.ServerAddr, 1, time.Second); n != 1 {
		t.Errorf("ping server: %v", err)
	}
}
