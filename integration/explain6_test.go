package integration

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/l2shim/l2shim/control"
)

// TestExplain6: explain decides IPv6 flows on the dual-stack topology as the datapath then does:
// a route-to rule by an IPv6 dst prefix (NAT66 to eth1's address, shown in brackets), the mode's
// choice by the host's IPv6 route (eth0, no NAT), ICMPv6 echo as "icmp", an inbound connection
// answered through the gateway it came from, an on-link and a link-local destination; a
// mixed-family query is refused. A real connection then takes the announced uplink and source.
func TestExplain6(t *testing.T) {
	topo := newTopoWith(t, Options{IPv6: true})
	srvEcho, _ := echoServices(t, topo.Server, netip.AddrPortFrom(topo.ServerAddr6, EchoPort))
	eth0, eth1 := topo.HostIf0, topo.HostIf1
	rule := fmt.Sprintf("[[rule]]\nname = \"v6 echo via eth1\"\nprotocol = \"tcp\"\ndst = \"2001:db8:ff::/48\"\ndst_port = %d\naction = \"route-to\"\ngateway = %q\n", EchoPort, eth1)
	s := startShimCfg(t, topo, ConfigOptions{
		Mode:         "failover",
		GatewayExtra: [2]string{`address6 = "fe80::1"`, `address6 = "fe80::1"`},
		Extra:        failoverTable(`probe_interval = "0s"`) + "\n\n" + rule,
	})
	defer stopShim(t, s)
	waitSource6(t, s, 5*time.Second, "2001:db8:1::/64", "2001:db8:2::/64")
	// Both IPv6 routers resolved: both gateways take IPv6 flows.
	for start := time.Now(); ; time.Sleep(100 * time.Millisecond) {
		st := s.status(t)
		if st.Gateways[0].State6 == "up" && st.Gateways[1].State6 == "up" {
			break
		}
		if time.Since(start) > 5*time.Second {
			t.Fatalf("IPv6 state of the gateways not up within 5s: %+v", st.Gateways)
		}
	}
	h0, h1, srv := topo.HostAddr6_0, topo.HostAddr6_1, topo.ServerAddr6
	bracket := func(a netip.Addr, port uint16) string { return netip.AddrPortFrom(a, port).String() }

	// The rule's flow: route-to eth1 by the IPv6 prefix, NAT66 to eth1's address. No
	// --interface: the host's IPv6 route (default via fe80::1 dev eth0) says eth0.
	var x control.Explanation
	s.cliJSON(t, &x, "explain", "tcp", bracket(h0, 40000), bracket(srv, EchoPort))
	if x.Gateway != eth1 || x.Interface != eth1 || x.Reason != "rule" || x.Rule != "v6 echo via eth1" || !x.NAT ||
		x.WireSrc != bracket(h1, 40000) || x.HostSrc != bracket(h0, 40000) || x.WireDst != bracket(srv, EchoPort) {
		t.Errorf("explain IPv6 echo: %+v", x)
	}
	if len(x.Rules) != 1 || !x.Rules[0].Matched || len(x.Gateways) != 2 || !x.Gateways[0].Usable || !x.Gateways[1].Usable {
		t.Errorf("explain IPv6 echo, rules and gateways: %+v %+v", x.Rules, x.Gateways)
	}
	out, errs, code := s.cli(t, "explain", "tcp", bracket(h0, 40000), bracket(srv, EchoPort))
	t.Logf("l2shim explain (exit %d):\n%s", code, out)
	if code != 0 || !strings.Contains(out, `rule "v6 echo via eth1" matches: route-to `+eth1) || !strings.Contains(out, "NATed to "+bracket(h1, 40000)) {
		t.Errorf("explain's text (exit %d): %s%s", code, out, errs)
	}

	// Another port: the rule does not match, failover order puts it on eth0, untranslated.
	s.cliJSON(t, &x, "explain", "tcp", bracket(h0, 40001), bracket(srv, BulkPort))
	if x.Gateway != eth0 || x.Reason != "failover-order" || x.NAT || x.Interface != eth0 || len(x.Ranking) != 2 || x.Ranking[0] != eth0 ||
		len(x.Rules) != 1 || x.Rules[0].Matched || x.Rules[0].Mismatch != "dst_port" {
		t.Errorf("explain IPv6 bulk: %+v", x)
	}
	// ICMPv6 echo, asked as icmp, with a bare address.
	s.cliJSON(t, &x, "explain", "icmp", bracket(h0, 7), srv.String())
	if x.Gateway != eth0 || x.Reason != "failover-order" || !strings.HasPrefix(x.Summary, "A new icmp "+bracket(h0, 7)+" → "+bracket(srv, 7)) {
		t.Errorf("explain ICMPv6 echo: %+v", x)
	}
	// Inbound to eth1's address: answered through eth1's gateway (source-aware).
	s.cliJSON(t, &x, "explain", "--in", "tcp", bracket(srv, 50000), bracket(h1, 22))
	if x.Gateway != eth1 || x.Reason != "source-aware" || x.Interface != eth1 {
		t.Errorf("explain IPv6 inbound: %+v", x)
	}
	// On-link and link-local destinations are never steered.
	s.cliJSON(t, &x, "explain", "udp", bracket(h0, 5353), bracket(topo.GW1Addr6, 53))
	if !x.OnLink || x.Gateway != "" {
		t.Errorf("explain IPv6 on-link: %+v", x)
	}
	s.cliJSON(t, &x, "explain", "--interface", eth0, "tcp", bracket(h0, 40002), "[fe80::1]:22")
	if !x.OnLink || x.Gateway != "" || !strings.Contains(x.Summary, "link-local") {
		t.Errorf("explain IPv6 link-local: %+v", x)
	}
	// Mixed families: a usage error, and the shim refuses them too.
	if _, errs, code := s.cli(t, "explain", "tcp", topo.HostAddr0.String()+":1", bracket(srv, 80)); code != 2 || !strings.Contains(errs, "different families") {
		t.Errorf("explain IPv4 → IPv6: exit %d: %s", code, errs)
	}
	resp, err := control.Call(s.sock, control.Request{Command: "explain", Explain: &control.ExplainQuery{Proto: "tcp", Src: h0.String(), Dst: topo.ServerAddr.String()}}, 5*time.Second)
	if err == nil && resp.OK {
		t.Errorf("the shim explained IPv6 → IPv4: %+v", resp.Explain)
	}

	// What the datapath does: the rule's connection leaves eth1 NATed to eth1's address, as
	// explain said; explained again, its tuple is that flow's.
	srvEcho.Seen.Reset()
	conn, err := DialTCP(context.Background(), topo.Host, netip.AddrPortFrom(srv, EchoPort))
	if err != nil {
		t.Fatalf("IPv6 connection to the echo port: %v", err)
	}
	defer conn.Close()
	echoBytes(t, conn, 1000)
	local := conn.LocalAddr().String()
	var fl control.FlowList
	s.cliJSON(t, &fl, "flows")
	f := flowFrom(t, "IPv6 connection", &fl, conn.LocalAddr())
	port := netip.MustParseAddrPort(local).Port()
	if f.Gateway != eth1 || !f.NAT || f.WireSrc != bracket(h1, port) || f.Reason != "rule" || f.Rule != "v6 echo via eth1" {
		t.Errorf("the IPv6 connection the rule routes: %+v", f)
	}
	requireOnly(t, "the IPv6 connection the rule routes", srvEcho.Seen.Counts(), h1, 1)
	s.cliJSON(t, &x, "explain", "tcp", local, bracket(srv, EchoPort))
	if x.Existing == nil || x.Existing.Gateway != eth1 || x.Existing.WireSrc != f.WireSrc {
		t.Errorf("explain of the open connection's tuple: existing %+v", x.Existing)
	}
}
