package datapath

import (
	"github.com/l2shim/l2shim/conntrack"
	"github.com/l2shim/l2shim/rewrite"
)

// verdict is what the egress and ingress paths decide for one frame; answer, when set, is a
// frame the engine wrote to send instead (in the batch's arena, after the virtio-net header).
type verdict struct {
	to     Where
	iface  int
	reason DropReason
	answer []byte
}

// decode parses pkt (virtio-net header and Ethernet frame) into e.frame. A frame that does not
// parse is counted by reason.
func (e *Engine) decode(pkt []byte) bool {
	if !e.vnet.Decode(pkt) {
		e.c.drop(DropMalformed)
		return false
	}
	if r := e.frame.Parse(pkt[rewrite.VnetHdrLen:], e.vnet); r != rewrite.OK {
		if r < rewrite.NumReasons {
			e.c.malformed[r].Add(1)
		}
		e.c.drop(DropMalformed)
		return false
	}
	return true
}

// process handles the frame just decoded from pkt, captured at external interface in. The
// hook that captured it tells the direction, and the destination MAC tells the hook: the
// ingress hook diverts only frames addressed to the interface's own MAC, the egress hook only
// frames addressed to a gateway's, never the interface's own. So a wire frame that claims the
// host's MAC as its source is still a wire frame. pkt is rewritten in place (its virtio-net
// header too, when the frame's GSO size must shrink), or replaced by an answer written into b's
// arena.
func (e *Engine) process(in int, pkt []byte, b *Batch, now int64) Output {
	f := &e.frame
	ifc := &e.ifaces[in]
	var v verdict
	switch {
	case f.DstMAC() == ifc.MAC:
		e.c.Add(FramesIn, 1)
		v = e.ingress(in, f, b, now)
	case f.SrcMAC() == ifc.MAC:
		e.c.Add(FramesOut, 1)
		v = e.egress(in, f, b, now)
	default:
		e.c.drop(DropUnknownDirection)
		return Output{To: Drop, Reason: DropUnknownDirection}
	}
	if v.reason != DropNone {
		// A drop, or a frame too big for its path answered in its place.
		e.c.drop(v.reason)
	}
	out := Output{To: v.to, Iface: v.iface, Reason: v.reason, Frame: pkt}
	if v.answer != nil {
		out.Frame = v.answer
		return out
	}
	if f.Vnet != e.vnet {
		f.Vnet.Encode(pkt)
	}
	return out
}

// answerBuf returns room in b's arena for an answer frame, after a zeroed virtio-net header.
// The caller writes the frame at [rewrite.VnetHdrLen:] and passes answer(n) on.
func answerBuf(b *Batch) []byte {
	r := b.room()
	if len(r) < answerRoom {
		return nil
	}
	clear(r[:rewrite.VnetHdrLen])
	return r[:answerRoom]
}

// answer returns the answer of n frame bytes written into answerBuf's room, and keeps it.
func answer(b *Batch, n int) []byte {
	a := b.arena[b.used : b.used+rewrite.VnetHdrLen+n]
	b.used += len(a)
	return a
}

// flowKey sets k to the frame's conntrack key and reports whether the frame belongs to a flow
// l2shim tracks at all: TCP, UDP, ICMP echo; not later fragments (they follow their first), not
// ICMP errors (they follow the flow they quote). It writes k in place: a returned key would be
// copied on the way, and this is every frame's path.
func flowKey(f *rewrite.Frame, k *conntrack.Key) bool {
	// A tunnel's frame whose partial checksum is the inner packet's (Encap, not a
	// super-frame: those are segmented first) is tracked by its outer header like any other:
	// NAT touches only outer fields, and the outer checksums take full-checksum updates.
	if f.L4 < 0 || f.FragOff != 0 {
		return false
	}
	switch f.Proto {
	case rewrite.ProtoTCP, rewrite.ProtoUDP:
	case rewrite.ProtoICMP:
		if !f.IsICMPEcho() {
			return false
		}
	default:
		return false
	}
	k.Set4(f.Src, f.Dst, f.SrcPort, f.DstPort, f.Proto)
	return true
}

// opensFlow reports whether a frame may start a new tracked flow: a TCP SYN, any UDP
// datagram, an ICMP echo request. A TCP segment of a connection that predates l2shim is not
// one, so starting the shim never moves (and breaks) an established connection.
func opensFlow(f *rewrite.Frame) bool {
	switch f.Proto {
	case rewrite.ProtoTCP:
		return f.IsTCPSyn()
	case rewrite.ProtoICMP:
		return f.ICMPType == rewrite.ICMPEchoRequest
	}
	return true
}
