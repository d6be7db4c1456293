package datapath

import (
	"testing"

	"github.com/l2shim/l2shim/conntrack"
	"github.com/l2shim/l2shim/failover"
	"github.com/l2shim/l2shim/rewrite"
)

// TestDecideAllocs: the decision for a new flow, as the datapath runs it (no trace), allocates
// nothing.
func TestDecideAllocs(t *testing.T) {
	for name, rules := range map[string]string{
		"no rules":           "",
		"host-pair by rule":  "[[rule]]\nname = \"all\"\naction = \"balance\"\naffinity = \"host-pair\"\n",
		"host-pair by shim":  "[shim]\naffinity = \"host-pair\"\n[[rule]]\nname = \"dns\"\nprotocol = \"udp\"\naction = \"pass\"\n",
		"route-to, no match": "[[rule]]\nname = \"mail\"\nprotocol = \"tcp\"\ndst_port = 25\naction = \"route-to\"\ngateway = \"isp-b\"\n",
	} {
		d := testDatapath(t, failover.LoadBalance, 1, 1)
		if rules != "" {
			set := compileRules(t, rules)
			reconfigure(t, d, func(p *Plan) { p.Rules = set })
		}
		f := rewrite.Frame{Proto: rewrite.ProtoTCP, Src: addr0, Dst: server, SrcPort: 4000, DstPort: 80}
		allocs := testing.AllocsPerRun(1000, func() {
			fl := conntrack.Flow{Orig: conntrack.Key4(f.Src, f.Dst, f.SrcPort, f.DstPort, f.Proto), Rule: -1, Gateway: -1}
			f.SrcPort++
			fl.Gateway = int16(d.place(&fl, 0, &f))
		})
		if allocs != 0 {
			t.Fatalf("%s: %v allocations per decision, want 0", name, allocs)
		}
	}
}

// TestDecideHasNoSideEffects: decide leaves the rule counters alone; place counts the flow
// once for its rule.
func TestDecideHasNoSideEffects(t *testing.T) {
	d := ruleDatapath(t, `
[[rule]]
name = "web"
protocol = "tcp"
dst_port = 80
action = "route-to"
gateway = "isp-b"
`)
	f := rewrite.Frame{Proto: rewrite.ProtoTCP, Src: addr0, Dst: server, SrcPort: 4000, DstPort: 80}
	fl := conntrack.Flow{Orig: conntrack.Key4(f.Src, f.Dst, 4000, 80, 6), Rule: -1, Gateway: -1}
	var tr Trace
	if g := d.decide(&fl, 0, &f, &tr); g != 1 || fl.Rule != 0 || Reason(fl.Why) != ReasonRule {
		t.Fatalf("decide: gateway %d rule %d why %v, want 1, 0, rule", g, fl.Rule, Reason(fl.Why))
	}
	if n := d.rules.Stats()[0].Flows; n != 0 {
		t.Fatalf("decide counted %d flows for the rule, want 0", n)
	}
	if len(tr.Steps) != 1 || tr.Steps[0].Kind != StepRule || tr.Steps[0].Gateway != 1 {
		t.Fatalf("trace %+v", tr.Steps)
	}
	fl = conntrack.Flow{Orig: fl.Orig, Rule: -1, Gateway: -1}
	if g := d.place(&fl, 0, &f); g != 1 {
		t.Fatalf("place: gateway %d, want 1", g)
	}
	if n := d.rules.Stats()[0].Flows; n != 1 {
		t.Fatalf("place counted %d flows for the rule, want 1", n)
	}
}

// ruleDatapath is the two-gateway engine (load-balance) with the rules of src.
func ruleDatapath(t *testing.T, src string) *Engine {
	t.Helper()
	d := testDatapath(t, failover.LoadBalance, 1, 1)
	rules := compileRules(t, src)
	reconfigure(t, d, func(p *Plan) { p.Rules = rules })
	return d
}
