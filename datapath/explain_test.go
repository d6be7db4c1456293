package datapath

import (
	"net/netip"
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
			switch tc.drain {
			case 0, 1:
				d.SetDrained(tc.drain, true)
			case 2:
				d.SetDrained(0, true)
				d.SetDrained(1, true)
			}
			before := d.rules.Stats()
			x, err := d.Explain(tc.h, 1)
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
	v6 := conntrack.Key{Src: netip.MustParseAddr("2001:db8::2").As16(), Dst: netip.MustParseAddr("2001:db8:1::10").As16(), SrcPort: 1, DstPort: 2, Proto: 6}
	if _, err := d.Explain(Hypothetical{Key: v6, Dir: filters.Out, Iface: 0, Via: -1}, 1); err == nil {
		t.Fatal("an IPv6 flow explained")
	}
	// Failover: the ranking is the usable gateways in file order.
	x, _ = d.Explain(Hypothetical{Key: conntrack.Key4(addr0, server, 1, 2, 6), Dir: filters.Out, Iface: 0, Via: -1}, 1)
	if x.Gateway != 0 || x.Why != ReasonFailover || len(x.Ranking) != 2 || x.Ranking[0] != 0 || x.Ranking[1] != 1 {
		t.Fatalf("failover: %+v", x)
	}
}
