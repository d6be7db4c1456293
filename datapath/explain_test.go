package datapath

import (
	"net/netip"
	"slices"
	"testing"

	"github.com/l2shim/l2shim/conntrack"
	"github.com/l2shim/l2shim/failover"
	"github.com/l2shim/l2shim/filters"
)

const explainRules = `
[[rule]]
name = "mail via b"
protocol = "tcp"
dst_port = 25
action = "route-to"
gateway = "isp-b"
[[rule]]
name = "strict b"
protocol = "tcp"
dst_port = 26
action = "route-to"
gateway = "isp-b"
strict = true
[[rule]]
name = "no telnet"
protocol = "tcp"
dst_port = 23
action = "drop"
[[rule]]
name = "dns as the host wants"
protocol = "udp"
dst_port = 53
action = "pass"
[[rule]]
name = "bank"
dst = "198.51.100.0/24"
action = "balance"
affinity = "host-pair"
[[rule]]
name = "ssh in via a"
direction = "in"
protocol = "tcp"
dst_port = 22
action = "route-to"
gateway = "eth0"
`

// TestExplainAgreesWithDatapath explains a hypothetical flow, then sends its real first frame
// through the datapath: the flow it creates has exactly the gateway, reason, rule, drop, NAT
// and wire tuple explain announced; explain itself changed nothing.
func TestExplainAgreesWithDatapath(t *testing.T) {
	out := func(dst [4]byte, proto uint8, sport, dport uint16) Hypothetical {
		return Hypothetical{Key: conntrack.Key4(addr0, dst, sport, dport, proto), Dir: filters.Out, Iface: 0, Via: -1}
	}
	bank := [4]byte{198, 51, 100, 7}
	for _, tc := range []struct {
		name    string
		h       Hypothetical
		drain   int // a gateway drained first, -1 none
		noRules bool
		steps   []StepKind
		why     Reason
	}{
		{name: "balanced", h: out(server, 6, 4000, 443), drain: -1, steps: []StepKind{StepNoRule, StepPick}, why: ReasonBalanced},
		{name: "balanced, no rules", h: out(server, 6, 4001, 443), drain: -1, noRules: true, steps: []StepKind{StepNoRule, StepPick}, why: ReasonBalanced},
		{name: "udp balanced", h: out(server, 17, 4002, 443), drain: -1, steps: []StepKind{StepNoRule, StepPick}, why: ReasonBalanced},
		{name: "icmp echo", h: out(server, 1, 77, 77), drain: -1, steps: []StepKind{StepNoRule, StepPick}, why: ReasonBalanced},
		{name: "route-to", h: out(server, 6, 4003, 25), drain: -1, steps: []StepKind{StepRule}, why: ReasonRule},
		{name: "route-to drained: falls back", h: out(server, 6, 4004, 25), drain: 1, steps: []StepKind{StepRuleFallback, StepPick}, why: ReasonBalanced},
		{name: "strict route-to drained: dropped", h: out(server, 6, 4005, 26), drain: 1, steps: []StepKind{StepRuleFallback}, why: ReasonRule},
		{name: "drop", h: out(server, 6, 4006, 23), drain: -1, steps: []StepKind{StepRule}, why: ReasonRule},
		{name: "pass", h: out(server, 17, 4007, 53), drain: -1, steps: []StepKind{StepRule}, why: ReasonRule},
		{name: "balance rule, host-pair", h: out(bank, 6, 4008, 443), drain: -1, steps: []StepKind{StepRuleBalance, StepPick}, why: ReasonAffinity},
		{name: "per-source", h: Hypothetical{Key: conntrack.Key4(addr1, server, 4009, 443, 6), Dir: filters.Out, Iface: 0, Via: -1}, drain: -1, steps: []StepKind{StepNoRule, StepPerSource}, why: ReasonPerSource},
		{name: "every gateway drained", h: out(server, 6, 4010, 443), drain: 2, steps: []StepKind{StepNoRule, StepPick}, why: ReasonHostRouting},
		{name: "inbound, source-aware", h: Hypothetical{Key: conntrack.Key4(server, addr1, 5000, 80, 6), Dir: filters.In, Iface: 1, Via: 1}, drain: -1, steps: []StepKind{StepNoRule, StepSourceAware}, why: ReasonSourceAware},
		{name: "inbound, rule", h: Hypothetical{Key: conntrack.Key4(server, addr1, 5001, 22, 6), Dir: filters.In, Iface: 1, Via: 1}, drain: -1, steps: []StepKind{StepRule}, why: ReasonRule},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := testDatapath(t, failover.LoadBalance, 1, 1)
			if !tc.noRules {
				rules := compileRules(t, explainRules)
				reconfigure(t, d, func(p *Plan) { p.Rules = rules })
			}
			x, kinds := explainTraceless(t, d, tc.h, tc.drain)
			if !equalKinds(kinds, tc.steps) || x.Why != tc.why {
				t.Fatalf("steps %v why %v, want %v %v (%+v)", kinds, x.Why, tc.steps, tc.why, x)
			}
			if len(x.Gateways) != 2 {
				t.Fatalf("gateways %+v", x.Gateways)
			}
			if last := x.Rules; !tc.noRules && len(last) > 0 && last[len(last)-1].Matched != (x.Rule >= 0) {
				t.Fatalf("rule checks %+v for rule %d", x.Rules, x.Rule)
			}
			if x.Ranking != nil && (len(x.Ranking) == 0 || x.Ranking[0] != firstNonRetry(x)) {
				t.Fatalf("ranking %v, choice %d", x.Ranking, x.Gateway)
			}

			// The real frame.
			k := tc.h.Key
			var fl *conntrack.Flow
			if tc.h.Dir == filters.Out {
				srcMAC, dstMAC := mac0, gwMAC0
				p := pkt{srcMAC: srcMAC, dstMAC: dstMAC, src: conntrack.As4(k.Src), dst: conntrack.As4(k.Dst), proto: k.Proto, sport: k.SrcPort, dport: k.DstPort, syn: true, icmpType: 8}
				process(d, tc.h.Iface, p.build(t))
				fl = d.table.LookupOrig(k)
			} else {
				p := pkt{srcMAC: gwMAC1, dstMAC: mac1, src: conntrack.As4(k.Src), dst: conntrack.As4(k.Dst), proto: k.Proto, sport: k.SrcPort, dport: k.DstPort, syn: true}
				process(d, tc.h.Iface, p.build(t))
				fl = d.table.LookupReply(k)
			}
			if fl == nil {
				t.Fatal("the real frame made no flow")
			}
			if int(fl.Gateway) != x.Gateway || Reason(fl.Why) != x.Why || int(fl.Rule) != x.Rule || fl.Drop != x.Drop || fl.NAT != x.NAT || fl.Reply != x.Wire || int(fl.WireIf) != x.WireIf {
				t.Fatalf("datapath: gateway %d why %v rule %d drop %v nat %v wire %v if %d\nexplain:  gateway %d why %v rule %d drop %v nat %v wire %v if %d",
					fl.Gateway, Reason(fl.Why), fl.Rule, fl.Drop, fl.NAT, fl.Reply, fl.WireIf, x.Gateway, x.Why, x.Rule, x.Drop, x.NAT, x.Wire, x.WireIf)
			}
			// Explained again, the tuple is an existing flow's.
			y, _ := d.Explain(tc.h, 2)
			if y.Existing == nil || y.Existing.Gateway != x.Gateway {
				t.Fatalf("existing flow not reported: %+v", y.Existing)
			}
		})
	}
}

func firstNonRetry(x Explanation) int {
	for _, s := range x.Steps {
		if s.Kind == StepPick {
			return s.Gateway
		}
	}
	return -1
}

func equalKinds(a, b []StepKind) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// TestExplainOnLinkAndErrors: a directly attached destination is never steered; bad input is
// refused.
func TestExplainOnLinkAndErrors(t *testing.T) {
	d := testDatapath(t, failover.Failover, 1, 1)
	x, err := d.Explain(Hypothetical{Key: conntrack.Key4(addr0, [4]byte{10, 2, 0, 9}, 1, 2, 6), Dir: filters.Out, Iface: 0, Via: -1}, 1)
	if err != nil || !x.OnLink || x.Gateway != -1 || len(x.Steps) != 0 {
		t.Fatalf("on-link: %+v, %v", x, err)
	}
	if _, err := d.Explain(Hypothetical{Dir: filters.Out, Iface: 5}, 1); err == nil {
		t.Fatal("interface 5 accepted")
	}
	if _, err := d.Explain(Hypothetical{Dir: 0, Iface: 0}, 1); err == nil {
		t.Fatal("direction 0 accepted")
	}
	mixed := conntrack.Key{Src: conntrack.Addr4(addr0), Dst: netip.MustParseAddr("2001:db8:1::10").As16(), SrcPort: 1, DstPort: 2, Proto: 6}
	if _, err := d.Explain(Hypothetical{Key: mixed, Dir: filters.Out, Iface: 0, Via: -1}, 1); err == nil {
		t.Fatal("an IPv4 source with an IPv6 destination explained")
	}
	if _, err := d.Explain(Hypothetical{Key: conntrack.Key4(addr0, server, 7, 7, 58), Dir: filters.Out, Iface: 0, Via: -1}, 1); err == nil {
		t.Fatal("ICMPv6 in an IPv4 flow explained")
	}
	// Failover: the ranking is the usable gateways in file order.
	x, _ = d.Explain(Hypothetical{Key: conntrack.Key4(addr0, server, 1, 2, 6), Dir: filters.Out, Iface: 0, Via: -1}, 1)
	if x.Gateway != 0 || x.Why != ReasonFailover || len(x.Ranking) != 2 || x.Ranking[0] != 0 || x.Ranking[1] != 1 {
		t.Fatalf("failover: %+v", x)
	}
}

// explainRules6 are explainRules for IPv6 flows: a route-to by an IPv6 dst prefix, a strict
// one, an ICMP (ICMPv6 here) drop, a pass, a host-pair balance by prefix, an inbound route-to.
const explainRules6 = `
[[rule]]
name = "v6 servers via b"
dst = "2001:db8:ffff::/48"
action = "route-to"
gateway = "isp-b"
[[rule]]
name = "d strictly via b"
dst = "2001:db8:d::/48"
action = "route-to"
gateway = "isp-b"
strict = true
[[rule]]
name = "no pings to c"
protocol = "icmp"
dst = "2001:db8:c::/48"
action = "drop"
[[rule]]
name = "dns as the host wants"
protocol = "udp"
dst_port = 53
action = "pass"
[[rule]]
name = "bank"
dst = "2001:db8:ba::/48"
action = "balance"
affinity = "host-pair"
[[rule]]
name = "ssh in via a"
direction = "in"
protocol = "tcp"
dst_port = 22
action = "route-to"
gateway = "eth0"
`

// TestExplainAgreesWithDatapath6 is TestExplainAgreesWithDatapath for IPv6 flows: usability
// per family (an IPv6 router to know), NAT66, rules with IPv6 prefixes, ICMPv6 echo, the
// inbound case through a gateway's IPv6 router.
func TestExplainAgreesWithDatapath6(t *testing.T) {
	a6 := func(s string) [16]byte { return netip.MustParseAddr(s).As16() }
	other := a6("2001:db8:fffe::10") // matched by no prefix rule
	out := func(dst [16]byte, proto uint8, sport, dport uint16) Hypothetical {
		return Hypothetical{Key: conntrack.Key{Src: host6, Dst: dst, SrcPort: sport, DstPort: dport, Proto: proto}, Dir: filters.Out, Iface: 0, Via: -1}
	}
	in := func(dport uint16, via int) Hypothetical {
		return Hypothetical{Key: conntrack.Key{Src: other, Dst: host6b, SrcPort: 5000 + dport, DstPort: dport, Proto: 6}, Dir: filters.In, Iface: 1, Via: via}
	}
	for _, tc := range []struct {
		name    string
		h       Hypothetical
		drain   int  // a gateway drained first (2: both), -1 none
		no6     bool // isp-b's IPv6 router is not known (its IPv4 gateway is)
		steps   []StepKind
		why     Reason
		gateway int
		nat     bool // NAT66ed to host6b
	}{
		{name: "balanced", h: out(other, 6, 4000, 443), drain: -1, steps: []StepKind{StepNoRule, StepPick}, why: ReasonBalanced, gateway: -2},
		{name: "udp balanced", h: out(other, 17, 4001, 443), drain: -1, steps: []StepKind{StepNoRule, StepPick}, why: ReasonBalanced, gateway: -2},
		{name: "icmpv6 echo", h: out(other, 58, 77, 77), drain: -1, steps: []StepKind{StepNoRule, StepPick}, why: ReasonBalanced, gateway: -2},
		{name: "route-to by IPv6 prefix, NAT66", h: out(server6, 6, 4002, 443), drain: -1, steps: []StepKind{StepRule}, why: ReasonRule, gateway: 1, nat: true},
		{name: "route-to drained: falls back", h: out(server6, 6, 4003, 443), drain: 1, steps: []StepKind{StepRuleFallback, StepPick}, why: ReasonBalanced, gateway: 0},
		{name: "route-to without an IPv6 router: falls back", h: out(server6, 6, 4004, 443), drain: -1, no6: true, steps: []StepKind{StepRuleFallback, StepPick}, why: ReasonBalanced, gateway: 0},
		{name: "strict route-to without an IPv6 router: dropped", h: out(a6("2001:db8:d::1"), 6, 4005, 443), drain: -1, no6: true, steps: []StepKind{StepRuleFallback}, why: ReasonRule, gateway: -1},
		{name: "icmp rule drops ICMPv6 echo", h: out(a6("2001:db8:c::1"), 58, 78, 78), drain: -1, steps: []StepKind{StepRule}, why: ReasonRule, gateway: -1},
		{name: "pass", h: out(other, 17, 4006, 53), drain: -1, steps: []StepKind{StepRule}, why: ReasonRule, gateway: -1},
		{name: "balance rule, host-pair", h: out(a6("2001:db8:ba::7"), 6, 4007, 443), drain: -1, steps: []StepKind{StepRuleBalance, StepPick}, why: ReasonAffinity, gateway: -2},
		{name: "per-source", h: Hypothetical{Key: conntrack.Key{Src: host6b, Dst: other, SrcPort: 4008, DstPort: 443, Proto: 6}, Dir: filters.Out, Iface: 0, Via: -1}, drain: -1, steps: []StepKind{StepNoRule, StepPerSource}, why: ReasonPerSource, gateway: 1},
		{name: "per-source, temporary address in the prefix", h: Hypothetical{Key: conntrack.Key{Src: a6("2001:db8:b::abcd"), Dst: other, SrcPort: 4009, DstPort: 443, Proto: 6}, Dir: filters.Out, Iface: 0, Via: -1}, drain: -1, steps: []StepKind{StepNoRule, StepPerSource}, why: ReasonPerSource, gateway: 1},
		{name: "only isp-a has an IPv6 router", h: out(other, 6, 4010, 443), drain: -1, no6: true, steps: []StepKind{StepNoRule, StepPick}, why: ReasonBalanced, gateway: 0},
		{name: "every gateway drained", h: out(other, 6, 4011, 443), drain: 2, steps: []StepKind{StepNoRule, StepPick}, why: ReasonHostRouting, gateway: -1},
		{name: "inbound, source-aware", h: in(80, 1), drain: -1, steps: []StepKind{StepNoRule, StepSourceAware}, why: ReasonSourceAware, gateway: 1},
		{name: "inbound, from a neighbour", h: in(81, -1), drain: -1, steps: []StepKind{StepNoRule, StepSourceAware}, why: ReasonHostRouting, gateway: -1},
		{name: "inbound, rule", h: in(22, 1), drain: -1, steps: []StepKind{StepRule}, why: ReasonRule, gateway: 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := New(testIfaces6(), testPlan(failover.LoadBalance, 1, 1), Options{Seed: 42})
			d.ResolvedMAC6(0, gw6MAC0)
			if !tc.no6 {
				d.ResolvedMAC6(1, gw6MAC1)
			}
			rules := compileRules(t, explainRules6)
			reconfigure(t, d, func(p *Plan) { p.Rules = rules })
			x, kinds := explainTraceless(t, d, tc.h, tc.drain)
			if !equalKinds(kinds, tc.steps) || x.Why != tc.why || tc.gateway != -2 && x.Gateway != tc.gateway {
				t.Fatalf("steps %v why %v gateway %d, want %v %v %d (%+v)", kinds, x.Why, x.Gateway, tc.steps, tc.why, tc.gateway, x)
			}
			if x.OnLink || x.LinkScoped || len(x.Gateways) != 2 {
				t.Fatalf("on-link %v link-scoped %v gateways %+v", x.OnLink, x.LinkScoped, x.Gateways)
			}
			// The views are the IPv6 ones: without its IPv6 router isp-b takes no IPv6
			// flow, though its IPv4 gateway is known.
			if tc.no6 && (x.Gateways[1].Usable || x.Gateways[1].Status.Reason == "" || slices.Contains(x.Ranking, 1)) {
				t.Fatalf("isp-b without an IPv6 router: %+v ranking %v", x.Gateways[1], x.Ranking)
			}
			if tc.nat && (!x.NAT || x.Wire.Dst != host6b || x.Wire.DstPort != tc.h.Key.SrcPort || x.WireIf != 1) {
				t.Fatalf("NAT66: nat %v wire %v on %d", x.NAT, x.Wire, x.WireIf)
			}
			if x.Ranking != nil && (len(x.Ranking) == 0 || x.Ranking[0] != firstNonRetry(x)) {
				t.Fatalf("ranking %v, choice %d", x.Ranking, x.Gateway)
			}

			// The real frame.
			k := tc.h.Key
			var fl *conntrack.Flow
			if tc.h.Dir == filters.Out {
				p := pkt6{srcMAC: mac0, dstMAC: gw6MAC0, src: k.Src, dst: k.Dst, proto: k.Proto, sport: k.SrcPort, dport: k.DstPort, syn: true, icmpType: 128}
				process(d, tc.h.Iface, p.build(t))
				fl = d.table.LookupOrig(k)
			} else {
				src := [6]byte{0x02, 0, 0, 0, 0, 0x99} // a neighbour's
				if tc.h.Via >= 0 {
					src = gw6MAC1
				}
				p := pkt6{srcMAC: src, dstMAC: mac1, src: k.Src, dst: k.Dst, proto: k.Proto, sport: k.SrcPort, dport: k.DstPort, syn: true}
				process(d, tc.h.Iface, p.build(t))
				fl = d.table.LookupReply(k)
			}
			if fl == nil {
				t.Fatal("the real frame made no flow")
			}
			if int(fl.Gateway) != x.Gateway || Reason(fl.Why) != x.Why || int(fl.Rule) != x.Rule || fl.Drop != x.Drop || fl.NAT != x.NAT || fl.Reply != x.Wire || int(fl.WireIf) != x.WireIf {
				t.Fatalf("datapath: gateway %d why %v rule %d drop %v nat %v wire %v if %d\nexplain:  gateway %d why %v rule %d drop %v nat %v wire %v if %d",
					fl.Gateway, Reason(fl.Why), fl.Rule, fl.Drop, fl.NAT, fl.Reply, fl.WireIf, x.Gateway, x.Why, x.Rule, x.Drop, x.NAT, x.Wire, x.WireIf)
			}
			y, _ := d.Explain(tc.h, 2)
			if y.Existing == nil || y.Existing.Gateway != x.Gateway {
				t.Fatalf("existing flow not reported: %+v", y.Existing)
			}
		})
	}
}

// TestExplainOnLink6: an IPv6 destination on an attached network, and a link-local or
// multicast one, is never steered.
func TestExplainOnLink6(t *testing.T) {
	d := testDatapath6(t, failover.LoadBalance, 1, 1)
	for _, c := range []struct {
		dst    string
		dir    filters.Direction
		scoped bool
	}{
		{"2001:db8:b::9", filters.Out, false},
		{"fe80::1", filters.Out, true},
		{"ff0e::fb", filters.Out, true},
	} {
		k := conntrack.Key{Src: host6, Dst: netip.MustParseAddr(c.dst).As16(), SrcPort: 1, DstPort: 2, Proto: 17}
		x, err := d.Explain(Hypothetical{Key: k, Dir: c.dir, Iface: 0, Via: -1}, 1)
		if err != nil || !x.OnLink || x.LinkScoped != c.scoped || x.Gateway != -1 || len(x.Steps) != 0 {
			t.Errorf("%s: %+v, %v", c.dst, x, err)
		}
	}
	// From a link-local address, inbound too.
	k := conntrack.Key{Src: netip.MustParseAddr("fe80::ff").As16(), Dst: host6b, SrcPort: 1000, DstPort: 22, Proto: 6}
	if x, err := d.Explain(Hypothetical{Key: k, Dir: filters.In, Iface: 1, Via: 1}, 1); err != nil || !x.LinkScoped {
		t.Errorf("inbound from a link-local address: %+v, %v", x, err)
	}
	// ICMP (1) is no IPv6 flow's protocol.
	k = conntrack.Key{Src: host6, Dst: server6, SrcPort: 5, DstPort: 5, Proto: 1}
	if _, err := d.Explain(Hypothetical{Key: k, Dir: filters.Out, Iface: 0, Via: -1}, 1); err == nil {
		t.Error("ICMP (1) in an IPv6 flow explained")
	}
}

// explainTraceless drains gateway drain (0 or 1; 2: both; else none), explains h and checks
// that explaining changed nothing: no flow made, no rule counted. It returns the explanation
// and its steps' kinds.
func explainTraceless(t *testing.T, d *Engine, h Hypothetical, drain int) (Explanation, []StepKind) {
	t.Helper()
	switch drain {
	case 0, 1:
		d.SetDrained(drain, true)
	case 2:
		d.SetDrained(0, true)
		d.SetDrained(1, true)
	}
	before := d.rules.Stats()
	x, err := d.Explain(h, 1)
	if err != nil {
		t.Fatal(err)
	}
	if d.table.Len() != 0 || d.c.Load(FlowsCreated) != 0 {
		t.Fatal("explain created a flow")
	}
	for i, st := range d.rules.Stats() {
		if st != before[i] {
			t.Fatalf("explain counted for rule %d: %+v", i, st)
		}
	}
	var kinds []StepKind
	for _, s := range x.Steps {
		kinds = append(kinds, s.Kind)
	}
	return x, kinds
}
