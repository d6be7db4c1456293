package shim

import (
	"fmt"
	"net"
	"net/netip"
	"strings"

	"github.com/vishvananda/netlink"

	"github.com/l2shim/l2shim/conntrack"
	"github.com/l2shim/l2shim/control"
	"github.com/l2shim/l2shim/datapath"
	"github.com/l2shim/l2shim/filters"
	"github.com/l2shim/l2shim/rewrite"
)

// hostRoute returns the ifindex of the interface the host routes dst through, from src when src
// is one of its addresses (`ip route get DST from SRC`), else as for any source (a forwarded
// client's flow).
func hostRoute(src, dst netip.Addr) (int, error) {
	routes, err := netlink.RouteGetWithOptions(net.IP(dst.AsSlice()), &netlink.RouteGetOptions{SrcAddr: net.IP(src.AsSlice())})
	if err != nil || len(routes) == 0 {
		routes, err = netlink.RouteGet(net.IP(dst.AsSlice()))
	}
	if err != nil {
		return 0, err
	}
	if len(routes) == 0 || routes[0].LinkIndex == 0 {
		return 0, fmt.Errorf("no route")
	}
	return routes[0].LinkIndex, nil
}

// explanation renders what the engine decided, step by step, with the configuration's names.
func (n namer) explanation(h datapath.Hypothetical, x *datapath.Explanation) *control.Explanation {
	k := h.Key
	out := &control.Explanation{
		Gateway:   n.gateway(x.Gateway),
		Interface: n.iface(x.WireIf),
		Reason:    x.Why.String(),
		Drop:      x.Drop,
		NAT:       x.NAT,
		OnLink:    x.OnLink,
	}
	if r := n.rule(x.Rule); r != nil {
		out.Rule = r.Name
	}
	for i, g := range x.Gateways {
		out.Gateways = append(out.Gateways, control.ExplainGateway{Name: n.gateway(i), State: g.Status.State.String(), Reason: g.Status.Reason, Usable: g.Usable})
	}
	for _, c := range x.Rules {
		action := ""
		if r := n.rule(c.Rule); r != nil {
			action = r.Action
		}
		out.Rules = append(out.Rules, control.ExplainRule{Name: c.Name, Action: action, Matched: c.Matched, Mismatch: c.Mismatch})
	}
	proto := protoName(k.Proto)
	if k.Proto == rewrite.ProtoICMPv6 && !conntrack.Is4(k.Src) {
		proto = "icmp" // ICMPv6, as the query and rules name it for IPv6
	}
	flow := fmt.Sprintf("%s %s → %s", proto, endpoint(k.Src, k.SrcPort), endpoint(k.Dst, k.DstPort))
	if h.Dir == filters.In {
		flow = fmt.Sprintf("%s %s → %s arriving on %s", proto, endpoint(k.Src, k.SrcPort), endpoint(k.Dst, k.DstPort), n.iface(h.Iface))
		out.HostSrc, out.HostDst = endpoint(k.Dst, k.DstPort), endpoint(k.Src, k.SrcPort)
		out.WireSrc, out.WireDst = out.HostSrc, out.HostDst
	} else {
		flow += " sent on " + n.iface(h.Iface)
		out.HostSrc, out.HostDst = endpoint(k.Src, k.SrcPort), endpoint(k.Dst, k.DstPort)
		out.WireSrc, out.WireDst = endpoint(x.Wire.Dst, x.Wire.DstPort), endpoint(x.Wire.Src, x.Wire.SrcPort)
	}
	var steps []string
	add := func(format string, a ...any) { steps = append(steps, fmt.Sprintf(format, a...)) }
	if x.Existing != nil {
		e := n.flow(x.Existing)
		out.Existing = &e
		gw := e.Gateway
		if gw == "" {
			gw = "the host's routing"
		}
		add("a flow with this tuple exists already (%s, %s, idle %s): its frames follow it, through %s (%s); the steps below are for a new one",
			e.State, e.Direction, control.Seconds(e.Idle), gw, e.Why)
	}
	if x.LinkScoped {
		out.Summary = fmt.Sprintf("%s: a link-local or multicast IPv6 address never leaves its link; l2shim never steers it and the host's routing carries it.", flow)
		add("%s → %s is link-scoped IPv6 (link-local or multicast): handed on untouched, no flow is tracked", conntrack.Addr(k.Src), conntrack.Addr(k.Dst))
		out.Steps = steps
		return out
	}
	if x.OnLink {
		out.Summary = fmt.Sprintf("%s: %s is on a directly attached network; l2shim never steers it and the host's routing carries it.", flow, conntrack.Addr(k.Dst))
		add("%s is on a network of an external interface: never steered, no flow is tracked", conntrack.Addr(k.Dst))
		out.Steps = steps
		return out
	}
	gwState := func(i int) string {
		if i < 0 || i >= len(x.Gateways) {
			return ""
		}
		g := x.Gateways[i]
		if g.Usable {
			return "usable"
		}
		return "not usable: " + g.Status.State.String() + ", " + g.Status.Reason
	}
	ruleName := func(i int) string {
		if r := n.rule(i); r != nil {
			return fmt.Sprintf("rule %q", r.Name)
		}
		return fmt.Sprintf("rule %d", i+1)
	}
	for _, c := range x.Rules {
		if !c.Matched {
			add("%s does not match: its %s differs", ruleName(c.Rule), c.Mismatch)
		}
	}
	for _, st := range x.Steps {
		switch st.Kind {
		case datapath.StepNoRule:
			if len(x.Rules) == 0 {
				add("rules: there are none")
			} else {
				add("rules: none of the %d matches", len(x.Rules))
			}
		case datapath.StepRule:
			r := n.rule(st.Rule)
			switch {
			case r == nil:
				add("%s matches", ruleName(st.Rule))
			case r.Action == "drop":
				add("%s matches: drop: the flow's frames are dropped", ruleName(st.Rule))
			case r.Action == "pass":
				add("%s matches: pass: the host's routing carries it", ruleName(st.Rule))
			default:
				add("%s matches: route-to %s, which is %s", ruleName(st.Rule), n.gateway(st.Gateway), gwState(st.Gateway))
			}
		case datapath.StepRuleFallback:
			if st.Strict {
				add("%s matches: route-to %s, which is %s; the rule is strict: the flow's frames are dropped", ruleName(st.Rule), n.gateway(st.Gateway), gwState(st.Gateway))
			} else {
				add("%s matches: route-to %s, which is %s; not strict: placed as if no rule had matched", ruleName(st.Rule), n.gateway(st.Gateway), gwState(st.Gateway))
			}
		case datapath.StepRuleBalance:
			add("%s matches: balance, with %s affinity: placed as if no rule had matched", ruleName(st.Rule), st.Affinity)
		case datapath.StepPerSource:
			if st.Gateway >= 0 {
				add("per-source: %s is an address of %s, not of %s where the host sent it: %s, %s's first usable gateway, without NAT",
					conntrack.Addr(k.Src), n.iface(st.From), n.iface(h.Iface), n.gateway(st.Gateway), n.iface(st.From))
			} else {
				add("per-source: %s is an address of %s, but no gateway there is usable: the mode decides", conntrack.Addr(k.Src), n.iface(st.From))
			}
		case datapath.StepPick:
			out.Affinity = st.Affinity.String()
			out.Hash = fmt.Sprintf("%016x", st.Hash)
			for _, g := range x.Ranking {
				out.Ranking = append(out.Ranking, n.gateway(g))
			}
			what := "the flow's 5-tuple (flow affinity)"
			if st.Affinity == filters.AffinityHostPair {
				what = fmt.Sprintf("the address pair %s ↔ %s (host-pair affinity: every connection between them takes the same uplink)", conntrack.Addr(k.Src), conntrack.Addr(k.Dst))
			}
			switch mode := n.cfg.Shim.Mode; {
			case st.Gateway < 0 && mode == "off":
				add("mode off: no placement; the host's routing carries it")
			case st.Gateway < 0:
				add("mode %s: no gateway is usable: the host's routing carries it", mode)
			case mode == "failover":
				add("mode failover: the first usable gateway in file order: %s (order: %s)", n.gateway(st.Gateway), strings.Join(out.Ranking, ", "))
			default:
				next := "no other gateway is usable"
				if len(out.Ranking) > 1 {
					next = "next in its order: " + strings.Join(out.Ranking[1:], ", then ")
				}
				add("mode load-balance: weighted rendezvous hash of %s = %s: %s (%s)", what, out.Hash, n.gateway(st.Gateway), next)
			}
		case datapath.StepRetry:
			add("retry: an attempt from %s to the same service through %s, 0.5 to 10 s ago, is still unanswered: this new attempt goes to %s instead",
				conntrack.Addr(k.Src), n.gateway(st.From), n.gateway(st.Gateway))
		case datapath.StepSourceAware:
			if st.Gateway >= 0 {
				add("source-aware: it arrives through %s, so the host's answers leave through it", n.gateway(st.Gateway))
			} else {
				add("source-aware: it arrives from a neighbour that is no gateway: the host's routing carries the answers")
			}
		}
	}
	if h.Dir == filters.In && x.Why == datapath.ReasonHostRouting && !n.cfg.Shim.SourceAware {
		add("source_aware is off: the host's routing carries the answers")
	}
	switch {
	case x.Drop:
	case x.NoTuple:
		add("no free wire tuple on %s: the flow would be left to the host's routing", n.iface(x.WireIf))
	case x.NAT:
		add("NAT: it leaves %s, not %s where the host sent it: its source becomes %s", n.iface(x.WireIf), n.iface(h.Iface), out.WireSrc)
	case x.Gateway >= 0 && h.Dir == filters.Out:
		add("no NAT: it leaves %s with the host's own source address %s", n.iface(x.WireIf), out.WireSrc)
	}
	out.Steps = steps
	var verdict string
	switch {
	case x.Drop:
		verdict = "would be dropped"
	case x.Gateway < 0:
		verdict = "would be left to the host's routing"
	case x.NAT:
		verdict = fmt.Sprintf("would leave through %s (%s), NATed to %s", out.Gateway, out.Interface, out.WireSrc)
	case h.Dir == filters.In:
		verdict = fmt.Sprintf("would be answered through %s (%s)", out.Gateway, out.Interface)
	default:
		verdict = fmt.Sprintf("would leave through %s (%s)", out.Gateway, out.Interface)
	}
	reason := out.Reason
	if out.Rule != "" {
		reason += fmt.Sprintf(" (rule %q)", out.Rule)
	}
	out.Summary = fmt.Sprintf("A new %s %s; reason: %s.", flow, verdict, reason)
	return out
}
