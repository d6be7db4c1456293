package datapath

import (
	"github.com/l2shim/l2shim/conntrack"
	"github.com/l2shim/l2shim/rewrite"
)

// innerKey returns the tuple of the packet an ICMP error quotes, seen from its receiver: the
// quote is a packet that went the other way.
func innerKey(f *rewrite.Frame) (conntrack.Key, bool) {
	switch f.InnerProto {
	case rewrite.ProtoTCP, rewrite.ProtoUDP, rewrite.ProtoICMP:
	default:
		return conntrack.Key{}, false
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
	if !fl.Replied && fl.Origin == conntrack.Outbound && fl.Gateway >= 0 && e.health != nil && conntrack.Addr4(f.Src) == fl.Orig.Dst {
		// An unreachable from the destination itself proves the path works.
		e.health.Success(int(fl.Gateway), healthDst(fl.Orig.Dst), e.lastNow)
	}
	if fl.NAT {
		f.SetInnerSrc(conntrack.As4(fl.Orig.Src), fl.Orig.SrcPort)
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
	if !g.hasMAC {
		return e.pass(in)
	}
	if fl.NAT {
		wireSrc := conntrack.As4(fl.Reply.Dst)
		f.SetSrc(wireSrc, 0)
		f.SetInnerDst(wireSrc, fl.Reply.DstPort)
		e.c.Add(NATed, 1)
	}
	f.SetMACs(e.ifaces[fl.WireIf].MAC, g.mac)
	return verdict{to: ToWire, iface: int(fl.WireIf)}
}
