package datapath

import (
	"github.com/l2shim/l2shim/conntrack"
	"github.com/l2shim/l2shim/rewrite"
)

// innerKey returns the tuple of the packet an ICMP error quotes, seen from its receiver: the
// quote is a packet that went the other way.
func innerKey(f *rewrite.Frame) (conntrack.Key, bool) {
	switch f.InnerProto {
	case rewrite.ProtoTCP, rewrite.ProtoUDP:
	case rewrite.ProtoICMP:
		if f.IPv6 {
			return conntrack.Key{}, false
		}
	case rewrite.ProtoICMPv6:
		if !f.IPv6 {
			return conntrack.Key{}, false
		}
	default:
		return conntrack.Key{}, false
	}
	if f.IPv6 {
		return conntrack.Key{Src: f.InnerDst6, Dst: f.InnerSrc6, SrcPort: f.InnerDstPort, DstPort: f.InnerSrcPort, Proto: f.InnerProto}, true
	}
	return conntrack.Key4(f.InnerDst, f.InnerSrc, f.InnerDstPort, f.InnerSrcPort, f.InnerProto), true
}

// ingressICMPError translates an ICMP error from the wire about a NATed flow (destination
// unreachable, fragmentation needed, time exceeded): the outer destination and the quoted
// source go back to what the host sent, so its socket learns of the error.
func (e *Engine) ingressICMPError(in int, f *rewrite.Frame) verdict {
	k, ok := innerKey(f)
	if !ok {
		return toHost(in)
	}
	fl := e.table.LookupReply(k)
	if fl == nil {
		return toHost(in)
	}
	if !fl.Replied && fl.Origin == conntrack.Outbound && fl.Gateway >= 0 && e.health != nil && src16(f) == fl.Orig.Dst {
		// An unreachable from the destination itself proves the path works.
		e.health.Success(int(fl.Gateway), healthDst(fl.Orig.Dst), e.lastNow)
	}
	if fl.NAT {
		setInnerSrc(f, fl.Orig.Src, fl.Orig.SrcPort)
	}
	return e.toHostFor(in, f, fl)
}

// egressICMPError sends the host's own ICMP error about a flow (a port unreachable for a NATed
// flow's datagram, say) the way the flow goes, with the flow's external address outside and in
// the quote.
func (e *Engine) egressICMPError(in int, f *rewrite.Frame) verdict {
	k, ok := innerKey(f)
	if !ok {
		return e.pass(in)
	}
	fl := e.table.LookupOrig(k)
	if fl == nil || fl.Gateway < 0 {
		return e.pass(in)
	}
	g := e.gws[fl.Gateway]
	mac, ok := e.macFor(g, fl.Orig.Src)
	if !ok {
		return e.pass(in)
	}
	if fl.NAT {
		wireSrc := fl.Reply.Dst
		setSrc(f, wireSrc, 0)
		setInnerDst(f, wireSrc, fl.Reply.DstPort)
		e.c.Add(NATed, 1)
	}
	f.SetMACs(e.ifaces[fl.WireIf].MAC, mac)
	return verdict{to: ToWire, iface: int(fl.WireIf)}
}
