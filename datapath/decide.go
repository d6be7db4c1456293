package datapath

import (
	"github.com/l2shim/l2shim/conntrack"
	"github.com/l2shim/l2shim/failover"
	"github.com/l2shim/l2shim/filters"
	"github.com/l2shim/l2shim/rewrite"
)

// The decision for a new flow lives here once, free of side effects: the datapath (place for
// the host's flows, newInbound for the wire's) calls it and then counts what it decided; `l2shim explain` calls it on a flow that
// never enters the table, with a Trace that records every step.

// StepKind is what one step of a decision did.
type StepKind uint8

// The steps, in the order a decision may take them.
const (
	StepNoRule       StepKind = iota + 1 // no rule matched (or there are none)
	StepRule                             // Rule matched and its verdict decided: route-to a usable Gateway, pass or drop
	StepRuleFallback                     // Rule is a route-to whose Gateway is unusable: Strict drops, else the normal choice follows
	StepRuleBalance                      // Rule is a balance rule: the normal choice follows, with its Affinity
	StepPerSource                        // the source is an address of interface From, not the one the host sent on: Gateway is its first usable gateway (-1: none)
	StepPick                             // the mode's choice among the usable gateways: Gateway (-1: none), by Hash under Affinity
	StepRetry                            // an application retries an attempt unanswered through From: Gateway instead
	StepSourceAware                      // an inbound flow answers through the gateway it came from: Gateway (-1: a LAN neighbour, no gateway)
)

// Step is one step of a decision, for explain.
type Step struct {
	Kind     StepKind
	Rule     int // the rule of StepRule, StepRuleFallback, StepRuleBalance
	Gateway  int // the gateway the step chose, -1 for none
	From     int // StepPerSource: an interface index; StepRetry: a gateway index
	Strict   bool
	Hash     uint64
	Affinity filters.Affinity // StepPick, StepRuleBalance
}

// Trace records the steps of one decision. A nil *Trace records nothing, as on the datapath.
type Trace struct {
	Steps []Step
}

func (t *Trace) add(s Step) {
	if t != nil {
		t.Steps = append(t.Steps, s)
	}
}

// decide is place without its side effects: it sets fl's Why, Rule and Drop and returns the
// gateway, and changes nothing else (the rule's flow counter is the caller's to count).
func (e *Engine) decide(fl *conntrack.Flow, in int, f *rewrite.Frame, tr *Trace) int {
	g, decided := e.matchRule(fl, filters.Out, in, f, tr)
	if decided {
		fl.Why = uint8(ReasonRule)
		return g
	}
	if y := e.ifaceOwning(fl.Orig.Src); y >= 0 && y != in {
		g = e.firstUsableOn(y, fl.Orig.Src)
		tr.add(Step{Kind: StepPerSource, From: y, Gateway: g})
		if g >= 0 {
			fl.Why = uint8(ReasonPerSource)
			return g
		}
	}
	fl.Why = uint8(ReasonBalanced)
	if e.cfg.Mode == failover.Failover {
		fl.Why = uint8(ReasonFailover)
	}
	h, aff := e.placementHash(fl)
	g = failover.Pick(e.cfg.Mode, h, e.candsFor(fl.Orig.Src))
	if aff == filters.AffinityHostPair && e.cfg.Mode == failover.LoadBalance {
		fl.Why = uint8(ReasonAffinity)
	}
	tr.add(Step{Kind: StepPick, Gateway: g, Hash: h, Affinity: aff})
	if alt := e.retryElsewhere(fl.Orig, g, fl.Created); alt != g {
		tr.add(Step{Kind: StepRetry, From: g, Gateway: alt})
		fl.Why = uint8(ReasonRetry)
		g = alt
	}
	if g < 0 {
		fl.Why = uint8(ReasonHostRouting)
	}
	return g
}

// matchRule evaluates the rules for the first frame of a new flow, without side effects but on
// fl: it sets fl's Rule and Drop and returns the gateway the rule places the flow on (-1: the
// host's routing) and whether a rule decided at all (a drop, or a strict route-to whose
// gateway is unusable, marks the flow dropped; a plain route-to whose gateway is unusable falls
// back to the normal choice, decided false). The caller counts the flow for its rule.
func (e *Engine) matchRule(fl *conntrack.Flow, dir filters.Direction, in int, f *rewrite.Frame, tr *Trace) (int, bool) {
	if e.rules.Len() == 0 {
		tr.add(Step{Kind: StepNoRule, Rule: -1, Gateway: -1})
		return -1, false
	}
	p := rulePacket(dir, in, f)
	v, ok := e.rules.Match(p)
	if !ok {
		tr.add(Step{Kind: StepNoRule, Rule: -1, Gateway: -1})
		return -1, false
	}
	fl.Rule = int16(v.Rule)
	switch v.Action {
	case filters.Drop:
		fl.Drop = true
		tr.add(Step{Kind: StepRule, Rule: v.Rule, Gateway: -1})
		return -1, true
	case filters.Pass:
		tr.add(Step{Kind: StepRule, Rule: v.Rule, Gateway: -1})
		return -1, true
	case filters.RouteTo:
		// Usable for the flow's family: an IPv6 flow needs the gateway's IPv6 router.
		if e.candsFor(fl.Orig.Src)[v.Gateway].Usable {
			tr.add(Step{Kind: StepRule, Rule: v.Rule, Gateway: v.Gateway})
			return v.Gateway, true
		}
		tr.add(Step{Kind: StepRuleFallback, Rule: v.Rule, Gateway: v.Gateway, Strict: v.Strict})
		if v.Strict {
			fl.Drop = true
			return -1, true
		}
	case filters.Balance:
		tr.add(Step{Kind: StepRuleBalance, Rule: v.Rule, Gateway: -1, Affinity: v.Affinity})
	}
	return -1, false
}

// rulePacket is what the rules look at of the first frame f of a flow, IPv4 or IPv6.
func rulePacket(dir filters.Direction, in int, f *rewrite.Frame) *filters.Packet {
	p := &filters.Packet{Iface: in, Dir: dir, Src: f.Src, Dst: f.Dst, Proto: f.Proto}
	if f.IPv6 {
		p.IPv6, p.Src6, p.Dst6 = true, f.Src6, f.Dst6
	}
	if f.HasPorts() {
		p.SrcPort, p.DstPort = f.SrcPort, f.DstPort
	}
	return p
}

// decideInbound decides, without side effects, which gateway the host's side of a flow
// opened from the wire leaves through, as newInbound does: an inbound rule first, else (with
// source_aware) the gateway the flow arrived from, found by fl.HostGatewayMAC; else the host's
// routing (-1). It sets fl's Why, Rule and Drop.
func (e *Engine) decideInbound(fl *conntrack.Flow, in int, f *rewrite.Frame, tr *Trace) int {
	g, decided := e.matchRule(fl, filters.In, in, f, tr)
	fl.Why = uint8(ReasonHostRouting)
	switch {
	case decided:
		fl.Why = uint8(ReasonRule)
		return g
	case e.cfg.SourceAware:
		g = e.gatewayByMAC(in, fl.HostGatewayMAC, fl.Orig.Src)
		tr.add(Step{Kind: StepSourceAware, Gateway: g})
		if g >= 0 {
			fl.Why = uint8(ReasonSourceAware)
		}
		return g
	}
	return -1
}
