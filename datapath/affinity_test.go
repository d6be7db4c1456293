package datapath

import (
	"testing"

	"github.com/l2shim/l2shim/conntrack"
	"github.com/l2shim/l2shim/failover"
)

// placeOut sends a SYN from src:sport to dst:443 out of eth0 and returns the gateway its flow
// got and why.
func placeOut(t *testing.T, d *Engine, src, dst [4]byte, sport uint16) (int, Reason) {
	t.Helper()
	p := pkt{srcMAC: mac0, dstMAC: gwMAC0, src: src, dst: dst, proto: 6, sport: sport, dport: 443, syn: true}
	process(d, 0, p.build(t))
	fl := d.table.LookupOrig(conntrack.Key4(src, dst, sport, 443, 6))
	if fl == nil {
		t.Fatalf("no flow for %v:%d → %v", src, sport, dst)
	}
	return int(fl.Gateway), Reason(fl.Why)
}

func remote(i int) [4]byte { return [4]byte{198, 51, byte(100 + i/250), byte(1 + i%250)} }

// TestAffinity: with host-pair affinity (from [shim] or from a balance rule) every connection
// between two addresses takes one uplink, pairs still spread by weight, and a pair moves only
// when its gateway stops being usable; per flow, one pair's connections spread.
func TestAffinity(t *testing.T) {
	for _, tc := range []struct {
		name     string
		rules    string
		pairDst  [4]byte // the remote of the 50 connections
		together bool
		why      Reason
	}{
		{name: "per flow (default)", pairDst: server, together: false, why: ReasonBalanced},
		{name: "[shim] host-pair", rules: "[shim]\naffinity = \"host-pair\"\n", pairDst: server, together: true, why: ReasonAffinity},
		{name: "rule host-pair", rules: "[[rule]]\nname = \"bank\"\ndst = \"198.51.96.0/20\"\naction = \"balance\"\naffinity = \"host-pair\"\n", pairDst: remote(7), together: true, why: ReasonAffinity},
		{name: "rule per flow over [shim] host-pair", rules: "[shim]\naffinity = \"host-pair\"\n[[rule]]\nname = \"cdn\"\ndst = \"198.51.96.0/20\"\naction = \"balance\"\naffinity = \"flow\"\n", pairDst: remote(7), together: false, why: ReasonBalanced},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := testDatapath(t, failover.LoadBalance, 1, 3)
			if tc.rules != "" {
				rules := compileRules(t, tc.rules)
				reconfigure(t, d, func(p *Plan) { p.Rules = rules })
			}
			// 50 connections between one pair.
			seen := map[int]int{}
			for i := range 50 {
				g, why := placeOut(t, d, addr0, tc.pairDst, uint16(20000+i))
				seen[g]++
				if why != tc.why {
					t.Fatalf("connection %d: reason %v, want %v", i, why, tc.why)
				}
			}
			if together := len(seen) == 1; together != tc.together {
				t.Fatalf("50 connections of one pair went %v; together %v, want %v", seen, together, tc.together)
			}
			if !tc.together {
				return
			}
			// 2000 pairs (one connection each, and a second that must follow the first).
			var pairs [2]int
			first := make([]int, 2000)
			for i := range first {
				first[i], _ = placeOut(t, d, addr0, remote(i), 30000)
				pairs[first[i]]++
				if g, _ := placeOut(t, d, addr0, remote(i), 30001); g != first[i] {
					t.Fatalf("pair %d: second connection on %d, first on %d", i, g, first[i])
				}
			}
			if share := float64(pairs[1]) / 2000; share < 0.70 || share > 0.80 {
				t.Fatalf("pairs split %v: weight 3 of 4 should take 75%%", pairs)
			}
			// isp-b stops taking new flows: only its pairs move, all to isp-a.
			d.SetDrained(1, true)
			for i := range 200 {
				if g, _ := placeOut(t, d, addr0, remote(i), 30002); g != 0 {
					t.Fatalf("pair %d (first on %d) placed on %d with isp-b drained", i, first[i], g)
				}
			}
			d.SetDrained(1, false)
			for i := range 200 {
				if g, _ := placeOut(t, d, addr0, remote(i), 30003); g != first[i] {
					t.Fatalf("pair %d back on %d, first on %d", i, g, first[i])
				}
			}
			// isp-a drained: isp-b's pairs stay.
			d.SetDrained(0, true)
			for i := range 200 {
				if g, _ := placeOut(t, d, addr0, remote(i), 30004); first[i] == 1 && g != 1 {
					t.Fatalf("pair %d of isp-b moved to %d when isp-a was drained", i, g)
				}
			}
		})
	}
}

// TestAffinityDecideTrace: explain sees the affinity and the pair's hash.
func TestAffinityDecideTrace(t *testing.T) {
	d := ruleDatapath(t, "[[rule]]\nname = \"bank\"\ndst = \"203.0.113.0/24\"\naction = \"balance\"\naffinity = \"host-pair\"\n")
	fl := conntrack.Flow{Orig: conntrack.Key4(addr0, server, 1, 443, 6), Rule: -1, Gateway: -1}
	var tr Trace
	f := frameOf(fl.Orig)
	g := d.decide(&fl, 0, &f, &tr)
	if len(tr.Steps) != 2 || tr.Steps[0].Kind != StepRuleBalance || tr.Steps[1].Kind != StepPick {
		t.Fatalf("steps %+v", tr.Steps)
	}
	pick := tr.Steps[1]
	if pick.Affinity != 1 || pick.Hash != pairHash(fl.Orig, 42) || pick.Gateway != g || fl.Rule != 0 || Reason(fl.Why) != ReasonAffinity {
		t.Fatalf("pick %+v, gateway %d, flow rule %d why %v", pick, g, fl.Rule, Reason(fl.Why))
	}
}
