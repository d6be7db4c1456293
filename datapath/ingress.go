package datapath

import (
	"github.com/l2shim/l2shim/conntrack"
	"github.com/l2shim/l2shim/rewrite"
)

// ingress handles a frame from the wire addressed to interface in: replies to the shim's
// probes are consumed, frames of a flow go to the host the way the flow came (translated back
// when NATed), a new connection from the wire is remembered with where it arrived, and the rest
// goes to the host untouched.
func (e *Engine) ingress(in int, f *rewrite.Frame, b *Batch, now int64) verdict {
	if e.consumeProbe(f, now) {
		e.c.Add(ProbeReplies, 1)
		return verdict{to: Consumed}
	}
	var key conntrack.Key
	tracked := flowKey(f, &key)
	if !tracked {
		switch {
		case f.FragOff != 0:
			if fl := e.fragmentFlow(f, conntrack.DirReply, now); fl != nil {
				return e.toHostFor(in, f, fl)
			}
		case f.IsICMPError():
			return e.ingressICMPError(in, f)
		}
		return toHost(in)
	}
	fl := e.table.LookupReply(key)
	if fl != nil && f.MoreFrags {
		e.rememberFragment(f, conntrack.DirReply, fl.Orig, now)
	}
	opened := false
	if fl == nil {
		if v, late := e.lateAnswer(in, f, key, b, now); late {
			return v
		}
		if !opensFlow(f) || e.table.LookupOrig(key.Reverse()) != nil {
			return toHost(in)
		}
		var failClosed bool
		if fl, failClosed = e.newInbound(in, f, key, now); fl == nil {
			if failClosed {
				return verdict{to: Drop, reason: DropRule}
			}
			return toHost(in)
		}
		opened = true
	}
	if fl.Reset {
		return verdict{to: Drop, reason: DropReset}
	}
	flags, counts := f.TCPFlags, true
	if f.Proto == rewrite.ProtoTCP {
		e.refreshFromKernel(fl)
		flags, counts = wireTCP(f, fl, opened)
	}
	if counts {
		if !fl.Replied && fl.Origin == conntrack.Outbound && fl.Gateway >= 0 && e.health != nil {
			// The first answer (a SYN-ACK, an RST, a datagram) proves the path through the
			// gateway.
			e.health.Success(int(fl.Gateway), healthDst(fl.Orig.Dst), now)
		}
		e.table.Seen(fl, conntrack.DirReply, len(f.Buf), flags, now)
		if fl.Fast != fastWant(fl) {
			e.markFast(fl)
		}
	}
	return e.toHostFor(in, f, fl)
}

func toHost(in int) verdict { return verdict{to: ToHost, iface: in} }

// newInbound records a flow opened from the wire: where it arrived, so the host's replies are
// recognised as belonging to it and never placed like a new outgoing flow, and (source-aware,
// or by an inbound rule) which gateway the host's side leaves through. It returns nil when the
// flow is over the wire's share of the table or the table has no room, with failClosed when a
// rule forbids the host to see it untracked.
func (e *Engine) newInbound(in int, f *rewrite.Frame, key conntrack.Key, now int64) (*conntrack.Flow, bool) {
	nf := conntrack.Flow{
		Orig:           key.Reverse(),
		Reply:          key,
		Origin:         conntrack.Inbound,
		HostIf:         int16(in),
		WireIf:         int16(in),
		Gateway:        -1,
		HostGatewayMAC: f.SrcMAC(),
		Rule:           -1,
		Created:        now,
		LastSeen:       now,
	}
	// An inbound rule, else source-aware: the host's side leaves through the gateway the
	// flow came in from, whatever the host's routes say (a flow from a LAN neighbour, no
	// gateway's MAC, stays with the host's routing). explain runs the same decision.
	nf.Gateway = int16(e.decideInbound(&nf, in, f, nil))
	if nf.Rule >= 0 {
		e.rules.CountFlow(int(nf.Rule))
	}
	if nf.Gateway >= 0 {
		nf.WireIf = int16(e.gws[nf.Gateway].Iface)
	}
	if !e.inbound.admit(&nf) {
		e.c.Add(InboundRefused, 1)
		e.inbound.refuse(nf.Orig.Hash(e.opts.Seed), nf.Gateway)
		return nil, e.rules.FailsClosed(int(nf.Rule))
	}
	p := e.insert(nf)
	if p == nil {
		return nil, e.rules.FailsClosed(int(nf.Rule))
	}
	e.inbound.add(p)
	return p, false
}

// toHostFor delivers a wire frame of flow fl to the host: reverse-translated when the flow is
// NATed, and on the interface the host used for it.
func (e *Engine) toHostFor(in int, f *rewrite.Frame, fl *conntrack.Flow) verdict {
	if v, stop := e.ruleGate(fl, f); stop {
		return v
	}
	if fl.Gateway >= 0 {
		st := e.gws[fl.Gateway].stats
		st.PacketsIn.Add(1)
		st.BytesIn.Add(uint64(len(f.Buf)))
	}
	if !fl.NAT && int(fl.HostIf) == in {
		return toHost(in)
	}
	host := int(fl.HostIf)
	if fl.Gateway >= 0 && f.HasTCPFlag(rewrite.TCPSyn) {
		// The SYN-ACK's MSS tells the host how large its segments may be: clamp it to the
		// path the flow is placed on.
		if mtu := e.pathMTU(e.gws[fl.Gateway]); mtu > 0 && mtu < e.ifaces[host].MTU {
			f.ClampMSS(uint16(mtu - tcpHdrLen(f)))
		}
	}
	if fl.NAT {
		setDst(f, fl.Orig.Src, fl.Orig.SrcPort)
		e.c.Add(NATed, 1)
	}
	f.SetMACs(fl.HostGatewayMAC, e.ifaces[host].MAC)
	return verdict{to: ToHost, iface: host}
}
