package rewrite

import (
	"encoding/binary"
	"math"
)

// Outer IP protocols SegmentEncap understands besides UDP.
const (
	protoIPIP = 4  // IPv4 in IPv4 (ipip tunnels): the inner IPv4 header follows the outer one
	protoGRE  = 47 // GRE (gre and gretap tunnels)

	greFlagCsum    = 0x8000 // C: checksum and reserved1 present
	greFlagRouting = 0x4000 // R: source routing (RFC 1701), which Linux refuses as well
	greFlagKey     = 0x2000 // K: key present
	greFlagSeq     = 0x1000 // S: sequence number present
	greVersionMask = 0x0007

	greProtoTEB  = 0x6558 // transparent Ethernet bridging (gretap): an Ethernet frame follows
	greProtoIPv4 = 0x0800 // plain gre: an IPv4 packet follows

	ipv4MaxLen = 60 // IHL 15
)

// encapLayout is where SegmentEncap finds things in an encapsulated TCP super-frame. Every
// offset is into Frame.Buf; every header up to hdrEnd is copied into each segment unchanged
// except for the fields SegmentEncap fixes.
type encapLayout struct {
	greCsum int  // offset of the GRE checksum field, -1 when the outer is not GRE with C set
	udpCsum bool // the outer is UDP with a non-zero checksum, to be computed for each segment
	inner   int  // the inner IPv4 header
	tcp     int  // the inner TCP header (csum_start)
	hdrEnd  int  // just past the inner TCP header (with options)
	payload int  // inner TCP payload bytes of the super-frame
	mss     int  // gso_size: the most payload bytes per segment
	segs    int  // how many segments the super-frame makes
	size    int  // the bytes SegmentEncap writes: segs virtio-net headers and frames
}

// encapLayout finds the layout of f as an encapsulated TCP GSO super-frame, or reports false
// when f is not one or its encapsulation is not understood. It reads only bytes below f.End and
// never panics, whatever f holds.
func (f *Frame) encapLayout() (l encapLayout, ok bool) {
	v := f.Vnet
	if !f.valid() || !f.Encap || f.L4 < 0 || f.FragOff != 0 || f.MoreFrags ||
		v.Flags&VnetNeedsCsum == 0 || v.GSOType&gsoTypeMk != GSOTCPv4 || v.GSOSize == 0 ||
		v.CsumOffset != 16 {
		return l, false
	}
	b, end := f.Buf, f.End
	tcp := int(v.CsumStart)
	if tcp+tcpMinLen > end {
		return l, false
	}
	doff := int(b[tcp+12]>>4) * 4
	if doff < tcpMinLen || tcp+doff > end {
		return l, false
	}

	// The outer header: where the inner IPv4 header may start at the earliest.
	l.greCsum = -1
	var first int
	greEnd, greProto := 0, uint16(0)
	switch f.Proto {
	case ProtoUDP:
		// Any UDP tunnel (VXLAN, GENEVE, VXLAN-GPE, FOU, GUE, ...): the bytes between the UDP
		// header and the inner IPv4 header are copied as they are, and none of these
		// encapsulations has a length field that covers the payload.
		first = f.L4 + udpLen
		if first > end {
			return l, false
		}
		l.udpCsum = be16(b[f.L4+6:]) != 0
	case protoGRE:
		if f.L4+4 > end {
			return l, false
		}
		flags := be16(b[f.L4:])
		if flags&(greFlagRouting|greVersionMask) != 0 {
			return l, false
		}
		greEnd = f.L4 + 4
		if flags&greFlagCsum != 0 {
			l.greCsum = greEnd
			greEnd += 4
		}
		if flags&greFlagKey != 0 {
			greEnd += 4
		}
		if flags&greFlagSeq != 0 {
			greEnd += 4
		}
		if greEnd > end {
			return l, false
		}
		greProto = be16(b[f.L4+2:])
		switch greProto {
		case greProtoTEB:
			first = greEnd + EthHdrLen
		case greProtoIPv4:
			first = greEnd
		default:
			return l, false
		}
	case protoIPIP:
		first = f.L4
	default:
		return l, false
	}

	// The inner IPv4 header ends at csum_start: try IHL 5 first, then longer headers. A
	// candidate must be a first (and only) fragment of TCP whose total length reaches exactly
	// to the end of the outer datagram (or is 0, as a GSO frame's may be).
	l.inner = -1
	for ihl := ipv4MinLen; ihl <= ipv4MaxLen; ihl += 4 {
		p := tcp - ihl
		if p < first {
			break
		}
		h := b[p:tcp]
		if h[0] != 0x40|byte(ihl/4) || h[9] != ProtoTCP || be16(h[6:])&0x3fff != 0 {
			continue
		}
		if tl := int(be16(h[2:])); tl != end-p && tl != 0 {
			continue
		}
		l.inner = p
		break
	}
	if l.inner < 0 {
		return l, false
	}
	switch f.Proto {
	case protoGRE:
		if greProto == greProtoIPv4 && l.inner != greEnd {
			return l, false
		}
		if greProto == greProtoTEB && be16(b[l.inner-2:]) != etherTypeIPv4 {
			return l, false // the inner Ethernet header (maybe VLAN-tagged) must end in IPv4
		}
	case protoIPIP:
		if l.inner != f.L4 {
			return l, false
		}
	}

	l.tcp = tcp
	l.hdrEnd = tcp + doff
	l.payload = end - l.hdrEnd
	l.mss = int(v.GSOSize)
	l.segs = max(1, (l.payload+l.mss-1)/l.mss)
	// The largest segment must fit the 16-bit outer IPv4 total length.
	if l.hdrEnd+min(l.mss, l.payload)-f.L3 > 0xffff {
		return l, false
	}
	size := uint64(l.segs)*uint64(VnetHdrLen+l.hdrEnd) + uint64(l.payload)
	if size > math.MaxInt32 {
		return l, false
	}
	l.size = int(size)
	return l, true
}

// SegmentEncapSize returns the bytes SegmentEncap needs in dst for f (0 when it would write
// nothing). SegmentEncapCount gives the length lens needs.
func (f *Frame) SegmentEncapSize() int {
	l, ok := f.encapLayout()
	if !ok {
		return 0
	}
	return l.size
}

// SegmentEncapCount returns how many segments SegmentEncap makes of f, the length lens needs (0
// when it would write nothing): ceil(payload/gso_size), or 1 for a frame without payload.
func (f *Frame) SegmentEncapCount() int {
	l, ok := f.encapLayout()
	if !ok {
		return 0
	}
	return l.segs
}

// SegmentEncap cuts f, an encapsulated TCP GSO super-frame (f.Encap, f.Vnet.GSOType&^GSOECN ==
// GSOTCPv4, csum_start at an inner IPv4/TCP header), into ordinary frames of at most
// f.Vnet.GSOSize inner TCP payload bytes each, with every checksum complete. It writes them back
// to back into dst, each preceded by a zeroed virtio-net header (VnetHdrLen bytes), stores each
// one's length (header included) in lens, and returns how many it wrote. It returns 0 when f is
// not such a frame, when the encapsulation is not understood, or when dst or lens are too small
// (the caller then drops and counts the frame). It does not allocate, and it leaves f unchanged.
//
// The kernel hands over such frames from tunnels whose underlay is an external interface, and
// refuses to send them back (ENOMEM; such a frame reads back as plain GSO_TCPV4 with csum_start
// at the inner TCP header). Cutting them here turns them into frames the datapath NATs and
// places like any other.
//
// Understood encapsulations, with the outer IPv4 header of f:
//   - UDP (VXLAN, GENEVE, and any other UDP tunnel: the bytes between the UDP header and the
//     inner IPv4 header are copied unchanged, so an encapsulation with a length field covering
//     the payload, such as L2TPv2 with the L bit, would come out wrong; the kernel does not
//     offload TSO through those). The UDP length is set per segment; a UDP checksum of 0 stays
//     0, any other is computed in full (a result of 0 goes out as 0xffff).
//   - GRE (IP protocol 47) carrying Ethernet (gretap, 0x6558) or IPv4 (gre, 0x0800), without
//     routing and of version 0. With the C bit the GRE checksum is computed over the GRE header
//     and everything after it. The key is copied. A sequence number (S bit) is copied too, so
//     every segment carries the super-frame's: Linux turns GSO off on GRE tunnels with
//     sequence numbers, so such a frame should not occur, and a receiver that checks sequence
//     numbers would drop all but one segment.
//   - IPv4 in IPv4 (IP protocol 4).
//
// The inner IPv4 header is the one that ends at csum_start (IHL 5 is tried first, then IHL 6 to
// 15), must carry TCP, must not be a fragment, and its total length must be 0 or reach the end of
// the outer datagram. An inner Ethernet header is copied unchanged.
//
// For segment i of n, like the kernel's own segmentation (tcp_gso_segment, inet_gso_segment):
//   - outer and inner IPv4: total length of the segment, ID + i (also with DF, whatever the
//     ID), header checksum recomputed; options, TOS, TTL and flags (DF included) copied;
//   - inner TCP: sequence number + i*gso_size; FIN and PSH only on the last segment, CWR only on
//     the first (with or without GSOECN); the checksum computed in full over the pseudo-header,
//     the header and the segment's payload (the super-frame's partial sum is not used). Other
//     fields, the urgent pointer included, are copied.
//
// Ethernet padding after the outer datagram is not copied. A super-frame without payload gives
// one segment. Each segment's outer IPv4 datagram is at most f.Vnet.GSOSize bytes longer than
// the headers (outer IPv4 to the end of the inner TCP header); to fit a smaller uplink MTU,
// lower f.Vnet.GSOSize before calling (FitGSO leaves Encap frames alone).
func (f *Frame) SegmentEncap(dst []byte, lens []int) int {
	l, ok := f.encapLayout()
	if !ok || len(lens) < l.segs || len(dst) < l.size {
		return 0
	}
	b := f.Buf
	outer, l4 := f.L3, f.L4
	outerIHL := int(b[outer]&0x0f) * 4
	innerIHL := l.tcp - l.inner
	outerID, innerID := be16(b[outer+4:]), be16(b[l.inner+4:])
	seq := binary.BigEndian.Uint32(b[l.tcp+4:])
	flags := b[l.tcp+13]
	innerSrc, innerDst := [4]byte(b[l.inner+ipSrcOff:]), [4]byte(b[l.inner+ipDstOff:])
	outerPseudo := uint64(0)
	if l.udpCsum {
		// The length is added per segment. The addresses come from the bytes, which a NAT
		// before segmenting has already changed.
		outerPseudo = PseudoHeaderSum([4]byte(b[outer+ipSrcOff:]), [4]byte(b[outer+ipDstOff:]), ProtoUDP, 0)
	}

	off := 0
	for i := range l.segs {
		from := l.hdrEnd + i*l.mss
		pl := min(l.mss, l.payload-i*l.mss)
		n := l.hdrEnd + pl
		clear(dst[off : off+VnetHdrLen])
		s := dst[off+VnetHdrLen : off+VnetHdrLen+n]
		copy(s, b[:l.hdrEnd])
		copy(s[l.hdrEnd:], b[from:from+pl])

		// Inner IPv4 header.
		ip := s[l.inner:l.tcp]
		put16(ip[2:], uint16(n-l.inner))
		put16(ip[4:], innerID+uint16(i))
		put16(ip[ipCsumOff:], 0)
		put16(ip[ipCsumOff:], Checksum(ip[:innerIHL], 0))

		// Inner TCP header and checksum.
		t := s[l.tcp:n]
		binary.BigEndian.PutUint32(t[4:], seq+uint32(i*l.mss))
		fl := flags
		if i > 0 {
			fl &^= TCPCwr
		}
		if i < l.segs-1 {
			fl &^= TCPFin | TCPPsh
		}
		t[13] = fl
		put16(t[16:], 0)
		ts := Sum(t, 0)
		tc := ^Fold(ts + PseudoHeaderSum(innerSrc, innerDst, ProtoTCP, len(t)))
		put16(t[16:], tc)
		// What the TCP segment, its checksum included, adds to a checksum over the outer
		// payload: summing it again would double the work on every byte. Bytes at an odd
		// offset from the start of that checksum contribute their sum byte-swapped (RFC 1071).
		tcpSum := Add(Fold(ts), tc)

		// Outer L4.
		switch f.Proto {
		case ProtoUDP:
			put16(s[l4+4:], uint16(n-l4))
			if l.udpCsum {
				put16(s[l4+6:], 0)
				c := ^Fold(Sum(s[l4:l.tcp], outerPseudo+uint64(n-l4)) + uint64(oddSwap(tcpSum, l.tcp-l4)))
				if c == 0 {
					c = 0xffff
				}
				put16(s[l4+6:], c)
			}
		case protoGRE:
			if l.greCsum >= 0 {
				put16(s[l.greCsum:], 0)
				put16(s[l.greCsum:], ^Fold(Sum(s[l4:l.tcp], 0)+uint64(oddSwap(tcpSum, l.tcp-l4))))
			}
		}

		// Outer IPv4 header.
		ip = s[outer : outer+outerIHL]
		put16(ip[2:], uint16(n-outer))
		put16(ip[4:], outerID+uint16(i))
		put16(ip[ipCsumOff:], 0)
		put16(ip[ipCsumOff:], Checksum(ip, 0))

		lens[i] = VnetHdrLen + n
		off += VnetHdrLen + n
	}
	return l.segs
}

// oddSwap returns sum, the ones-complement sum of bytes that start off bytes into a larger
// checksummed range, as those bytes contribute to the larger sum: byte-swapped at an odd offset.
func oddSwap(sum uint16, off int) uint16 {
	if off&1 == 1 {
		return bswap16(sum)
	}
	return sum
}
