package datapath

import (
	"math/rand/v2"
	"time"

	"github.com/l2shim/l2shim/conntrack"
	"github.com/l2shim/l2shim/rewrite"
)

// ProbeID names an ICMP echo target probed through one gateway, as AddProbe registered it.
type ProbeID int

// probeTarget is the engine's side of one probe target: the replies it consumes are recorded
// here, so the host never sees them.
type probeTarget struct {
	gateway  int
	target   [4]byte
	id       uint16 // ICMP echo identifier, unique per target and gateway
	seq      uint16 // sequence number of the last request sent
	roundSeq uint16 // sequence number of the first request of the current round
	sentAt   int64  // when it was sent (monotonic ns)
	replied  bool   // a reply to a request of this round arrived
	rtt      int64  // round-trip time of the last reply (ns)
}

// probeKey identifies a probe reply on the wire: from the target, with the probe's identifier.
type probeKey struct {
	target [4]byte
	id     uint16
}

// ProbeFrameLen is the room ProbeFrame needs: the virtio-net header and an echo request.
const ProbeFrameLen = rewrite.VnetHdrLen + rewrite.EchoRequestLen

// AddProbe registers target, probed through gateway gi. Its echo identifier is chosen so that
// no tracked flow and no other probe uses it. A reload forgets every target (the probers
// register theirs again).
func (e *Engine) AddProbe(gi int, target [4]byte) ProbeID {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.probes == nil {
		e.probes = make(map[probeKey]*probeTarget)
	}
	addr := e.ifaces[e.gws[gi].Iface].Addr
	for {
		id := uint16(rand.Uint32())
		k := probeKey{target: target, id: id}
		if _, taken := e.probes[k]; taken || id == 0 {
			continue
		}
		if e.table.ReplyInUse(conntrack.Key4(target, addr, id, id, rewrite.ProtoICMP)) {
			continue
		}
		pt := &probeTarget{gateway: gi, target: target, id: id}
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
// virtio-net header first, from the gateway's interface to the gateway, and returns its
// length. It returns 0 when the target already answered this round or the gateway's MAC is not
// known yet.
func (e *Engine) ProbeFrame(id ProbeID, buf []byte, now int64) int {
	e.mu.Lock()
	defer e.mu.Unlock()
	pt := e.probeList[id]
	g := e.gws[pt.gateway]
	if pt.replied || !g.hasMAC {
		return 0
	}
	pt.seq++
	pt.sentAt = now
	ifc := &e.ifaces[g.Iface]
	clear(buf[:rewrite.VnetHdrLen])
	n := rewrite.BuildEchoRequest(buf[rewrite.VnetHdrLen:], rewrite.Endpoints{
		SrcMAC: ifc.MAC, DstMAC: g.mac, Src: ifc.Addr, Dst: pt.target,
	}, pt.id, pt.seq)
	return rewrite.VnetHdrLen + n
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
	if k.Proto != rewrite.ProtoICMP || len(e.probes) == 0 {
		return false
	}
	target, ok := conntrack.V4(k.Src) // the probes are IPv4
	if !ok {
		return false
	}
	_, ok = e.probes[probeKey{target: target, id: k.DstPort}]
	return ok
}

// consumeProbe records f when it is the reply to one of the shim's probes.
func (e *Engine) consumeProbe(f *rewrite.Frame, now int64) bool {
	if f.IPv6 || f.Proto != rewrite.ProtoICMP || f.ICMPType != rewrite.ICMPEchoReply || len(e.probes) == 0 {
		return false
	}
	pt, ok := e.probes[probeKey{target: f.Src, id: f.SrcPort}]
	if !ok {
		return false
	}
	// A reply to any of this round's requests counts (a retry may cross a late answer).
	if pt.replied {
		return true
	}
	if seq := f.ICMPEchoSeq(); seq-pt.roundSeq <= pt.seq-pt.roundSeq {
		pt.replied = true
		pt.rtt = now - pt.sentAt
	}
	return true
}

// bestRTT returns the smallest latest round-trip time among gateway gi's targets, 0 when none.
func (e *Engine) bestRTT(gi int) int64 {
	var best int64
	for _, pt := range e.probeList {
		if pt.gateway == gi && pt.rtt > 0 && (best == 0 || pt.rtt < best) {
			best = pt.rtt
		}
	}
	return best
}
