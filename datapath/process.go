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
	// fragMTU: the frame, an IPv4 datagram without DF, is larger than its path's MTU and
	// goes out cut into fragments of at most this size.
	fragMTU int
}

// decode parses pkt (virtio-net header and Ethernet frame) into e.frame. A frame that does not
// parse is counted by reason.
func (e *Engine) decode(pkt []byte) bool {
	if !e.vnet.Decode(pkt) {
		e.c.drop(DropMalformed)
		return false
	}
	if r := e.frame.ParseAny(pkt[rewrite.VnetHdrLen:], e.vnet); r != rewrite.OK {
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
func (e *Engine) process(in int, pkt []byte, b *Batch, now int64) (out Output, fragMTU int) {
	f := &e.frame
	ifc := &e.ifaces[in]
	var v verdict
	switch {
	case f.IPv6 && linkScoped6(f):
		v = e.notOurs6(in, f)
	case f.DstMAC() == ifc.MAC:
		e.c.Add(FramesIn, 1)
		v = e.ingress(in, f, b, now)
	case f.SrcMAC() == ifc.MAC:
		e.c.Add(FramesOut, 1)
		v = e.egress(in, f, b, now)
	default:
		e.c.drop(DropUnknownDirection)
		return Output{To: Drop, Reason: DropUnknownDirection}, 0
	}
	if v.to == Drop && v.reason == DropUnknownDirection {
		e.c.drop(DropUnknownDirection)
		return Output{To: Drop, Reason: DropUnknownDirection}, 0
	}
	if v.reason != DropNone {
		// A drop, or a frame too big for its path answered in its place.
		e.c.drop(v.reason)
	}
	out = Output{To: v.to, Iface: v.iface, Reason: v.reason, Frame: pkt}
	if v.answer != nil {
		out.Frame = v.answer
		return out, 0
	}
	if v.to == ToWire && v.fragMTU > 0 {
		return out, v.fragMTU
	}
	if f.Vnet != e.vnet {
		f.Vnet.Encode(pkt)
	}
	return out, 0
}

// fragment appends to b.Out the fragments of out, the frame just processed (e.frame), an IPv4
// datagram without DF too large for its path, each of at most mtu bytes, written into the
// batch's arena: what a router on that path would send. Without room in the arena the
// datagram is dropped (counted as no-room).
func (e *Engine) fragment(out Output, mtu int, b *Batch) {
	f := &e.frame
	n := f.Fragment4(b.room(), b.lens, mtu)
	if n == 0 {
		why := DropTooBig
		if size, count := f.Fragment4Size(mtu); count > 0 && (size > len(b.room()) || count > len(b.lens)) {
			why = DropNoRoom
		}
		e.dropOut(b, why)
		return
	}
	e.c.Add(Fragmented, 1)
	for _, l := range b.lens[:n] {
		b.Out = append(b.Out, Output{To: out.To, Iface: out.Iface, Frame: b.arena[b.used : b.used+l]})
		b.used += l
	}
}

// linkScoped6 reports whether an IPv6 frame is none of l2shim's business: neighbour discovery
// and multicast listener discovery concern their link only, a link-local or multicast address
// means nothing on another link, and an IPv4-mapped address (never on the wire, RFC 4291
// 2.5.5.2) would make the key of an IPv4 flow.
func linkScoped6(f *rewrite.Frame) bool {
	return f.IsNeighborDiscovery() || f.IsMLD() || f.IsLinkLocal() || f.IsMulticast() || f.HasIPv4MappedAddr() ||
		f.Src6 == ([16]byte{}) || f.Dst6 == ([16]byte{})
}

// notOurs6 sends a link-scoped IPv6 frame on untouched, the way it was going: one addressed to
// the interface to the host, one the host sent to the wire, and one from the wire to a group
// address (a multicast destination MAC: the host may be a member) to the host. A frame to
// another unicast MAC has no direction, as for IPv4.
func (e *Engine) notOurs6(in int, f *rewrite.Frame) verdict {
	ifc := &e.ifaces[in]
	dst := f.DstMAC()
	switch {
	case dst == ifc.MAC:
		e.c.Add(FramesIn, 1)
		return toHost(in)
	case f.SrcMAC() == ifc.MAC:
		e.c.Add(FramesOut, 1)
		return e.pass(in)
	case dst[0]&1 != 0:
		e.c.Add(FramesIn, 1)
		return toHost(in)
	}
	return verdict{to: Drop, reason: DropUnknownDirection}
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
	case rewrite.ProtoICMP, rewrite.ProtoICMPv6:
		// ICMP in IPv4, ICMPv6 in IPv6 (IsICMPEcho checks the pair).
		if !f.IsICMPEcho() {
			return false
		}
	default:
		return false
	}
	if f.IPv6 {
		*k = conntrack.Key{Src: f.Src6, Dst: f.Dst6, SrcPort: f.SrcPort, DstPort: f.DstPort, Proto: f.Proto}
		return true
	}
	k.Set4(f.Src, f.Dst, f.SrcPort, f.DstPort, f.Proto)
	return true
}

// isEchoProto reports whether a flow key's protocol is ICMP's or ICMPv6's: an echo flow, whose
// ports both hold the identifier.
func isEchoProto(proto uint8) bool {
	return proto == rewrite.ProtoICMP || proto == rewrite.ProtoICMPv6
}

// src16 returns the frame's source address as a flow key holds it.
func src16(f *rewrite.Frame) [16]byte {
	if f.IPv6 {
		return f.Src6
	}
	return conntrack.Addr4(f.Src)
}

// dst16 returns the frame's destination address as a flow key holds it.
func dst16(f *rewrite.Frame) [16]byte {
	if f.IPv6 {
		return f.Dst6
	}
	return conntrack.Addr4(f.Dst)
}

// The address setters for either family, the address as a flow key holds it.

func setSrc(f *rewrite.Frame, a [16]byte, port uint16) {
	if f.IPv6 {
		f.SetSrc6(a, port)
		return
	}
	f.SetSrc(conntrack.As4(a), port)
}

func setDst(f *rewrite.Frame, a [16]byte, port uint16) {
	if f.IPv6 {
		f.SetDst6(a, port)
		return
	}
	f.SetDst(conntrack.As4(a), port)
}

func setInnerSrc(f *rewrite.Frame, a [16]byte, port uint16) {
	if f.IPv6 {
		f.SetInnerSrc6(a, port)
		return
	}
	f.SetInnerSrc(conntrack.As4(a), port)
}

func setInnerDst(f *rewrite.Frame, a [16]byte, port uint16) {
	if f.IPv6 {
		f.SetInnerDst6(a, port)
		return
	}
	f.SetInnerDst(conntrack.As4(a), port)
}

// tcpHdrLen is the size of option-less IP and TCP headers of the frame's family: a path MTU
// minus it is the MSS that fits.
func tcpHdrLen(f *rewrite.Frame) int {
	if f.IPv6 {
		return rewrite.IPv6TCPHdrLen
	}
	return rewrite.IPv4TCPHdrLen
}

// opensFlow reports whether a frame may start a new tracked flow: a TCP SYN, any UDP
// datagram, an ICMP echo request. A TCP segment of a connection that predates l2shim is not
// one, so starting the shim never moves (and breaks) an established connection.
func opensFlow(f *rewrite.Frame) bool {
	switch f.Proto {
	case rewrite.ProtoTCP:
		return f.IsTCPSyn()
	case rewrite.ProtoICMP, rewrite.ProtoICMPv6:
		return f.IsICMPEchoRequest()
	}
	return true
}
