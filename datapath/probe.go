package datapath

import (
	"math/rand/v2"
	"time"

	"github.com/l2shim/l2shim/conntrack"
	"github.com/l2shim/l2shim/rewrite"
)

// ProbeID names an echo target probed through one gateway, as AddProbe or AddProbe6
// registered it.
type ProbeID int

// probeTarget is the engine's side of one probe target: the replies it consumes are recorded
// here, so the host never sees them.
type probeTarget struct {
	gateway  int
	target   [16]byte // as a flow key holds it: IPv4-mapped for an IPv4 target
	v6       bool     // an IPv6 target: ICMPv6 echoes from the uplink's global IPv6 address
	id       uint16   // echo identifier, unique per target and gateway
	seq      uint16   // sequence number of the last request sent
	roundSeq uint16   // sequence number of the first request of the current round
	sentAt   int64    // when it was sent (monotonic ns)
	replied  bool     // a reply to a request of this round arrived
	rtt      int64    // round-trip time of the last reply (ns)
}

// probeKey identifies a probe reply on the wire: from the target (as a flow key holds it), with
// the probe's identifier.
type probeKey struct {
	target [16]byte
	id     uint16
}

// ProbeFrameLen is the room ProbeFrame needs: the virtio-net header and an echo request (an
// ICMPv6 one, the longer).
const ProbeFrameLen = rewrite.VnetHdrLen + max(rewrite.EchoRequestLen, rewrite.EchoRequest6Len)

// AddProbe registers IPv4 target, probed through gateway gi. Its echo identifier is chosen so
// that no tracked flow and no other probe uses it. A reload forgets every target (the probers
// register theirs again).
func (e *Engine) AddProbe(gi int, target [4]byte) ProbeID {
	return e.addProbe(gi, conntrack.Addr4(target), false)
}

// AddProbe6 registers IPv6 target, probed with ICMPv6 echoes through gateway gi's IPv6 router
// from its uplink's global IPv6 address, as AddProbe does IPv4 targets.
func (e *Engine) AddProbe6(gi int, target [16]byte) ProbeID {
	return e.addProbe(gi, target, true)
}

func (e *Engine) addProbe(gi int, target [16]byte, v6 bool) ProbeID {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.probes == nil {
		e.probes = make(map[probeKey]*probeTarget)
	}
	ifc := &e.ifaces[e.gws[gi].Iface]
	addr, proto := conntrack.Addr4(ifc.Addr), uint8(rewrite.ProtoICMP)
	if v6 {
		addr, proto = ifc.Addr6, rewrite.ProtoICMPv6
	}
	for {
		id := uint16(rand.Uint32())
		k := probeKey{target: target, id: id}
		if _, taken := e.probes[k]; taken || id == 0 {
			continue
		}
		if e.table.ReplyInUse(conntrack.Key{Src: target, Dst: addr, SrcPort: id, DstPort: id, Proto: proto}) {
			continue
		}
		pt := &probeTarget{gateway: gi, target: target, v6: v6, id: id}
		e.probes[k] = pt
		e.probeList = append(e.probeList, pt)
		return ProbeID(len(e.probeList) - 1)
	}
}

// StartProbeRound begins a probe round for targets: a reply to any request sent from now on
// counts for the round.
func (e *Engine) StartProbeRound(targets []ProbeID) {
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, id := range targets {
		pt := e.probeList[id]
		pt.replied = false
		pt.roundSeq = pt.seq + 1
	}
}

// ProbeFrame writes into buf (at least ProbeFrameLen bytes) the next echo request of target id,
// virtio-net header first, from the gateway's interface to the gateway, and returns its length
// and whether it is an IPv6 frame. An IPv6 echo leaves from the uplink's global IPv6 address
// (the one NAT66 uses) to its IPv6 router's MAC. It returns 0 when the target already answered
// this round, the gateway's MAC (IPv6: its router's) is not known yet, or an IPv6 target's
// uplink has no global IPv6 address.
func (e *Engine) ProbeFrame(id ProbeID, buf []byte, now int64) (n int, v6 bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	pt := e.probeList[id]
	g := e.gws[pt.gateway]
	ifc := &e.ifaces[g.Iface]
	mac, ok := e.macFor(g, pt.target)
	if pt.replied || !ok || (pt.v6 && ifc.Addr6 == ([16]byte{})) {
		return 0, pt.v6
	}
	pt.seq++
	pt.sentAt = now
	clear(buf[:rewrite.VnetHdrLen])
	if pt.v6 {
		n = rewrite.BuildEchoRequest6(buf[rewrite.VnetHdrLen:], rewrite.Endpoints6{
			SrcMAC: ifc.MAC, DstMAC: mac, Src: ifc.Addr6, Dst: pt.target,
		}, pt.id, pt.seq)
		return rewrite.VnetHdrLen + n, true
	}
	n = rewrite.BuildEchoRequest(buf[rewrite.VnetHdrLen:], rewrite.Endpoints{
		SrcMAC: ifc.MAC, DstMAC: mac, Src: ifc.Addr, Dst: conntrack.As4(pt.target),
	}, pt.id, pt.seq)
	return rewrite.VnetHdrLen + n, false
}

// ProbeResults reports for each target whether it answered in the current round and its
// latest round-trip time (0 when none), and whether all answered.
func (e *Engine) ProbeResults(targets []ProbeID, replied []bool, rtt []time.Duration) (all bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	all = true
	for i, id := range targets {
		pt := e.probeList[id]
		replied[i] = pt.replied
		rtt[i] = 0
		if pt.replied {
			rtt[i] = time.Duration(pt.rtt)
		}
		all = all && pt.replied
	}
	return all
}

// probeTaken reports whether a wire tuple belongs to a probe.
func (e *Engine) probeTaken(k conntrack.Key) bool {
	if !isEchoProto(k.Proto) || len(e.probes) == 0 {
		return false
	}
	pt, ok := e.probes[probeKey{target: k.Src, id: k.DstPort}]
	return ok && pt.v6 == (k.Proto == rewrite.ProtoICMPv6)
}

// consumeProbe records f when it is the reply to one of the shim's probes: an echo reply (ICMP
// for an IPv4 target, ICMPv6 for an IPv6 one) from the target with the identifier chosen for
// it; an IPv6 reply must also be addressed to the uplink's address the request left from. A
// reply to a request of the current round (by its sequence number) counts for the round; any
// other such reply is consumed and counts for nothing.
func (e *Engine) consumeProbe(f *rewrite.Frame, now int64) bool {
	if len(e.probes) == 0 || !f.IsICMPEchoReply() {
		return false
	}
	src := f.Src6
	if !f.IPv6 {
		src = conntrack.Addr4(f.Src)
	}
	pt, ok := e.probes[probeKey{target: src, id: f.SrcPort}]
	if !ok || pt.v6 != f.IPv6 {
		return false
	}
	if pt.v6 && f.Dst6 != e.ifaces[e.gws[pt.gateway].Iface].Addr6 {
		return false
	}
	// A reply to any of this round's requests counts (a retry may cross a late answer).
	if pt.replied {
		return true
	}
	// sent is how many requests of this round went out, less one (0xffff: none yet, and no
	// reply can be to one of them).
	if sent := pt.seq - pt.roundSeq; sent != 0xffff && f.ICMPEchoSeq()-pt.roundSeq <= sent {
		pt.replied = true
		pt.rtt = now - pt.sentAt
	}
	return true
}

// bestRTT returns the smallest latest round-trip time among gateway gi's targets of one family
// (v6: its IPv6 targets), 0 when none.
func (e *Engine) bestRTT(gi int, v6 bool) int64 {
	var best int64
	for _, pt := range e.probeList {
		if pt.gateway == gi && pt.v6 == v6 && pt.rtt > 0 && (best == 0 || pt.rtt < best) {
			best = pt.rtt
		}
	}
	return best
}
