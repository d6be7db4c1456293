package datapath

import (
	"errors"

	"github.com/l2shim/l2shim/conntrack"
	"github.com/l2shim/l2shim/failover"
	"github.com/l2shim/l2shim/filters"
	"github.com/l2shim/l2shim/rewrite"
)

// Hypothetical is a new flow for Explain: its first frame as the host would send it (Dir Out,
// Key.Src the local end) or as it would arrive from the wire (Dir In, Key.Src the remote end).
type Hypothetical struct {
	Key conntrack.Key
	Dir filters.Direction
	// Iface is the interface (an index of the engine's) the host sends the frame on (Out) or
	// the frame arrives on (In).
	Iface int
	// Via is, for In, the gateway the frame arrives through, as its source MAC would say; -1
	// for a neighbour on the link that is no gateway.
	Via int
}

// GatewayView is a gateway's state as a decision sees it.
type GatewayView struct {
	Usable bool // takes new flows
	Status failover.Status
}

// Explanation is what Explain decided, and how.
type Explanation struct {
	// OnLink: the destination is on a directly attached network; l2shim never steers it.
	// LinkScoped: an IPv6 flow with a link-local address (fe80::/10) at either end or a
	// multicast destination, which the datapath hands on untouched; OnLink is set too.
	OnLink, LinkScoped bool
	// Existing is set when a flow already holds the tuple: its frames follow that flow.
	Existing *FlowInfo
	Rules    []filters.RuleCheck // the rules compared, up to the one that matched
	Steps    []Step              // every step of the decision
	Gateways []GatewayView       // by gateway index
	// The outcome, as the flow would hold it.
	Gateway int // -1: the host's routing
	Why     Reason
	Rule    int // -1: no rule matched
	Drop    bool
	NAT     bool
	WireIf  int
	Wire    conntrack.Key // the flow's key as the wire would return it (its Reply key)
	NoTuple bool          // no free wire tuple: the flow would be left to the host
	// Hash and Affinity are the mode's choice's (when it was made); Ranking lists the usable
	// gateways in the order that choice would take them: the rendezvous order of Hash in
	// load-balance (the first is the choice, the next one takes over when it becomes
	// unusable), file order in failover.
	Hash     uint64
	Affinity filters.Affinity
	Ranking  []int
}

// Explain decides a hypothetical new flow as the datapath would now, with the same code, and
// records every step. It changes nothing: no flow, no counter, no memory of the attempt.
func (e *Engine) Explain(h Hypothetical, now int64) (Explanation, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if h.Iface < 0 || h.Iface >= len(e.ifaces) {
		return Explanation{}, errors.New("explain: no such interface")
	}
	if h.Dir != filters.Out && h.Dir != filters.In {
		return Explanation{}, errors.New("explain: direction must be out or in")
	}
	v4 := conntrack.Is4(h.Key.Src)
	if v4 != conntrack.Is4(h.Key.Dst) {
		return Explanation{}, errors.New("explain: src and dst must be of one family, both IPv4 or both IPv6")
	}
	if v4 && h.Key.Proto == rewrite.ProtoICMPv6 || !v4 && h.Key.Proto == rewrite.ProtoICMP {
		return Explanation{}, errors.New("explain: ICMP is ICMPv6 (58) for IPv6 flows and ICMP (1) for IPv4 ones")
	}
	// Usability is per family: an IPv6 flow needs the gateway's interface to have an IPv6
	// address and its IPv6 router's MAC (cands6, inputs6), as place and newInbound see it.
	like := h.Key.Src
	cands := e.candsFor(like)
	x := Explanation{Gateway: -1, Rule: -1, WireIf: h.Iface, Why: ReasonHostRouting}
	for i := range e.gws {
		in := e.inputs(i, now, true)
		if !v4 {
			in = e.inputs6(i, now, true)
		}
		x.Gateways = append(x.Gateways, GatewayView{Usable: cands[i].Usable, Status: failover.Evaluate(in)})
	}
	f := frameOf(h.Key)
	if f.IPv6 && (f.IsLinkLocal() || f.IsMulticast()) {
		// The datapath hands link-scoped IPv6 frames on untouched (linkScoped6).
		x.OnLink, x.LinkScoped = true, true
		return x, nil
	}
	var tr Trace
	var fl conntrack.Flow
	if h.Dir == filters.Out {
		if e.onLink(h.Key.Dst) {
			x.OnLink = true
			return x, nil
		}
		if ex := e.table.LookupOrig(h.Key); ex != nil {
			fi := e.flowInfo(ex)
			x.Existing = &fi
		}
		fl = conntrack.Flow{Orig: h.Key, Origin: conntrack.Outbound, HostIf: int16(h.Iface), WireIf: int16(h.Iface), Gateway: -1, Rule: -1, Created: now, LastSeen: now}
		fl.Gateway = int16(e.decide(&fl, h.Iface, &f, &tr))
		x.NoTuple = !e.mapOnto(&fl)
	} else {
		ex := e.table.LookupReply(h.Key)
		if ex == nil {
			ex = e.table.LookupOrig(h.Key.Reverse())
		}
		if ex != nil {
			fi := e.flowInfo(ex)
			x.Existing = &fi
		}
		// The frame's source MAC: the router of Via for the flow's family (IPv6: its IPv6
		// router's), as newInbound takes it from the frame.
		var mac [6]byte
		if h.Via >= 0 && h.Via < len(e.gws) {
			if m, ok := e.macFor(e.gws[h.Via], like); ok {
				mac = m
			}
		}
		fl = conntrack.Flow{Orig: h.Key.Reverse(), Reply: h.Key, Origin: conntrack.Inbound, HostIf: int16(h.Iface), WireIf: int16(h.Iface), Gateway: -1, HostGatewayMAC: mac, Rule: -1, Created: now, LastSeen: now}
		fl.Gateway = int16(e.decideInbound(&fl, h.Iface, &f, &tr))
		if fl.Gateway >= 0 {
			fl.WireIf = int16(e.gws[fl.Gateway].Iface)
		}
	}
	x.Rules = e.rules.Explain(rulePacket(h.Dir, h.Iface, &f))
	x.Steps = tr.Steps
	x.Gateway, x.Why, x.Rule, x.Drop = int(fl.Gateway), Reason(fl.Why), int(fl.Rule), fl.Drop
	x.NAT, x.WireIf, x.Wire = fl.NAT, int(fl.WireIf), fl.Reply
	for _, s := range tr.Steps {
		if s.Kind == StepPick {
			x.Hash, x.Affinity = s.Hash, s.Affinity
			x.Ranking = e.ranking(s.Hash, cands)
		}
	}
	return x, nil
}

// ranking returns the gateways usable in cands (the candidates of the flow's family) in the
// order the mode's choice takes them for hash h. e.mu is held.
func (e *Engine) ranking(h uint64, cands []failover.Candidate) []int {
	c := append([]failover.Candidate(nil), cands...)
	var out []int
	for {
		g := failover.Pick(e.cfg.Mode, h, c)
		if g < 0 {
			return out
		}
		out = append(out, g)
		c[g].Usable = false
	}
}

// frameOf is the parsed view of a first frame with key k, IPv4 or IPv6 (a flow key's
// family), as far as a decision looks at it.
func frameOf(k conntrack.Key) rewrite.Frame {
	f := rewrite.Frame{Proto: k.Proto, SrcPort: k.SrcPort, DstPort: k.DstPort, L3: rewrite.EthHdrLen, InnerL3: -1, InnerL4: -1}
	if conntrack.Is4(k.Src) {
		f.Src, f.Dst, f.L4 = conntrack.As4(k.Src), conntrack.As4(k.Dst), rewrite.EthHdrLen+20
	} else {
		f.IPv6, f.Src6, f.Dst6, f.L4, f.DontFrag = true, k.Src, k.Dst, rewrite.EthHdrLen+40, true
	}
	switch k.Proto {
	case rewrite.ProtoICMP:
		f.ICMPType = rewrite.ICMPEchoRequest
	case rewrite.ProtoICMPv6:
		f.ICMPType = rewrite.ICMPv6EchoRequest
	}
	if k.Proto == rewrite.ProtoTCP {
		f.TCPFlags = rewrite.TCPSyn
	}
	return f
}
