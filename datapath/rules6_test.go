package datapath

import (
	"bytes"
	"net/netip"
	"testing"

	"github.com/gopacket/gopacket/layers"

	"github.com/l2shim/l2shim/failover"
)

// rules6 are the rules of the IPv6 rule tests: IPv4 and IPv6 prefixes, a port-only rule and
// an ICMP one. Unmatched flows go by the mode (failover: eth0).
const rules6 = `
[[rule]]
name = "v4 docs"
dst = "203.0.113.0/24"
action = "drop"
[[rule]]
name = "v6 servers via b"
dst = "2001:db8:ffff::/48"
action = "route-to"
gateway = "isp-b"
[[rule]]
name = "tls-alt via b"
protocol = "tcp"
dst_port = 8443
action = "route-to"
gateway = "isp-b"
[[rule]]
name = "no pings to c"
protocol = "icmp"
dst = "2001:db8:c::/48"
action = "drop"
[[rule]]
name = "d strictly via b"
dst = "2001:db8:d::/48"
action = "route-to"
gateway = "isp-b"
strict = true
`

// syn6 is an IPv6 TCP SYN from the host on eth0 to dst:dport.
func syn6(dst string, sport, dport uint16) pkt6 {
	return pkt6{srcMAC: mac0, dstMAC: gw6MAC0, src: host6, dst: netip.MustParseAddr(dst).As16(), proto: 6, sport: sport, dport: dport, syn: true, payload: []byte("x")}
}

// TestIPv6Rules: an IPv6 flow matching a route-to rule by its IPv6 dst prefix leaves through
// that gateway, NAT66ed to its interface's address and sent to its IPv6 router; a port-only
// rule matches IPv6 flows too, an ICMP rule ICMPv6 echo, and an IPv4 prefix no IPv6 flow.
func TestIPv6Rules(t *testing.T) {
	d := testDatapath6(t, failover.Failover, 1, 1)
	rules := compileRules(t, rules6)
	reconfigure(t, d, func(p *Plan) { p.Rules = rules })

	for port := uint16(41000); port < 41020; port++ {
		b := syn6("2001:db8:ffff::10", port, 443).build(t)
		v := process(d, 0, b)
		if v.To != ToWire || v.Iface != 1 {
			t.Fatalf("route-to by IPv6 dst, port %d: verdict %+v", port, v)
		}
		p := checkFrame6(t, b)
		eth := p.Layer(layers.LayerTypeEthernet).(*layers.Ethernet)
		ip := p.Layer(layers.LayerTypeIPv6).(*layers.IPv6)
		if !bytes.Equal(eth.SrcMAC, mac1[:]) || !bytes.Equal(eth.DstMAC, gw6MAC1[:]) || addr6Of(ip.SrcIP) != host6b || addr6Of(ip.DstIP) != server6 {
			t.Fatalf("route-to by IPv6 dst left as %v→%v from %v to %v", eth.SrcMAC, eth.DstMAC, ip.SrcIP, ip.DstIP)
		}
	}
	// Outside the prefix, the mode decides (eth0), unless the port-only rule matches.
	if v := process(d, 0, syn6("2001:db8:fffe::10", 41100, 443).build(t)); v.To != ToWire || v.Iface != 0 {
		t.Fatalf("unmatched IPv6 flow: %+v", v)
	}
	if v := process(d, 0, syn6("2001:db8:fffe::10", 41101, 8443).build(t)); v.To != ToWire || v.Iface != 1 {
		t.Fatalf("port-only rule, IPv6 flow: %+v", v)
	}
	v4 := syn(41102)
	v4.dst, v4.dport = [4]byte{198, 51, 100, 1}, 8443
	if v := process(d, 0, v4.build(t)); v.To != ToWire || v.Iface != 1 {
		t.Fatalf("port-only rule, IPv4 flow: %+v", v)
	}
	// An ICMP rule with an IPv6 prefix drops ICMPv6 echo; its prefix spares other hosts.
	ping := func(dst string, id uint16) []byte {
		return pkt6{srcMAC: mac0, dstMAC: gw6MAC0, src: host6, dst: netip.MustParseAddr(dst).As16(), proto: 58, icmpType: 128, sport: id, payload: []byte("ping")}.build(t)
	}
	if v := process(d, 0, ping("2001:db8:c::1", 7)); v.To != Drop || v.Reason != DropRule {
		t.Fatalf("ICMPv6 echo to a dropped prefix: %+v", v)
	}
	if v := process(d, 0, ping("2001:db8:e::1", 8)); v.To != ToWire || v.Iface != 0 {
		t.Fatalf("ICMPv6 echo elsewhere: %+v", v)
	}
	// The IPv4 drop rule still drops IPv4 flows to its prefix.
	if v := process(d, 0, syn(41103).build(t)); v.To != Drop || v.Reason != DropRule {
		t.Fatalf("IPv4 drop rule: %+v", v)
	}

	stats := d.Snapshot(1).Rules.Stats()
	if stats[0].Flows != 1 || stats[1].Flows != 20 || stats[2].Flows != 2 || stats[3].Flows != 1 || stats[4].Flows != 0 {
		t.Fatalf("rule counters %+v", stats)
	}
}

// TestIPv6RuleGatewayWithoutIPv6: a route-to is judged by the gateway's usability for the
// flow's family. isp-b's IPv6 router is not known, so an IPv6 flow its rule routes there falls
// back to the mode (eth0), a strict one is dropped, while IPv4 flows still reach isp-b.
func TestIPv6RuleGatewayWithoutIPv6(t *testing.T) {
	d := New(testIfaces6(), testPlan(failover.Failover, 1, 1), Options{Seed: 42})
	d.ResolvedMAC6(0, gw6MAC0)
	rules := compileRules(t, rules6)
	reconfigure(t, d, func(p *Plan) { p.Rules = rules })

	b := syn6("2001:db8:ffff::10", 42000, 443).build(t)
	if v := process(d, 0, b); v.To != ToWire || v.Iface != 0 {
		t.Fatalf("route-to a gateway without IPv6: %+v", v)
	}
	p := checkFrame6(t, b)
	if eth := p.Layer(layers.LayerTypeEthernet).(*layers.Ethernet); !bytes.Equal(eth.DstMAC, gw6MAC0[:]) {
		t.Fatalf("fallback flow sent to %v", eth.DstMAC)
	}
	if v := process(d, 0, syn6("2001:db8:d::1", 42001, 443).build(t)); v.To != Drop || v.Reason != DropRule {
		t.Fatalf("strict route-to a gateway without IPv6: %+v", v)
	}
	v4 := syn(42002)
	v4.dst, v4.dport = [4]byte{198, 51, 100, 1}, 8443
	if v := process(d, 0, v4.build(t)); v.To != ToWire || v.Iface != 1 {
		t.Fatalf("IPv4 route-to: %+v", v)
	}
}
