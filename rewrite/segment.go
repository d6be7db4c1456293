package rewrite

import (
	"encoding/binary"
	"math"
)

// Outer IP protocols SegmentEncap understands besides UDP.
const (
	protoIPIP = 4  // IPv4 in IPv4 (ipip tunnels): the inner IPv4 header follows the outer one
	protoIPv6 = 41 // IPv6 in IPv4 (sit tunnels): the inner IPv6 header follows the outer one
	protoGRE  = 47 // GRE (gre and gretap tunnels)

	greFlagCsum    = 0x8000 // C: checksum and reserved1 present
	greFlagRouting = 0x4000 // R: source routing (RFC 1701), which Linux refuses as well
	greFlagKey     = 0x2000 // K: key present
	greFlagSeq     = 0x1000 // S: sequence number present
	greVersionMask = 0x0007

	greProtoTEB  = 0x6558 // transparent Ethernet bridging (gretap): an Ethernet frame follows
	greProtoIPv4 = 0x0800 // plain gre: an IPv4 packet follows
	greProtoIPv6 = 0x86dd // plain gre: an IPv6 packet follows

	etherTypeIPv6 = 0x86dd

	ipv4MaxLen = 60 // IHL 15
	ipv6HdrLen = 40

	// IPv6 extension headers an inner IPv6 packet may carry between its header and its TCP or
	// UDP header: they are copied into every segment unchanged. Routing headers (the
	// pseudo-header would take the final destination), fragment headers, AH and ESP are not
	// understood.
	ipv6HopByHop = 0  // only right after the IPv6 header
	ipv6DstOpts  = 60 // destination options
	// ipv6MaxExt bounds the extension headers looked for (two of 2 KiB would be 4 KiB; real
	// ones are 8 or 16 bytes).
	ipv6MaxExt = 4096
)

// encapLayout is where SegmentEncap finds things in an encapsulated GSO super-frame. Every
// offset is into Frame.Buf; every header up to hdrEnd is copied into each segment unchanged
// except for the fields SegmentEncap fixes.
type encapLayout struct {
	greCsum int  // offset of the GRE checksum field, -1 when the outer is not GRE with C set
	udpCsum bool // the outer is UDP with a non-zero checksum, to be computed for each segment
	inner   int  // the inner IPv4 or IPv6 header
	inner6  bool // the inner header is IPv6 (else IPv4)
	udp     bool // the inner L4 is UDP (GSO_UDP_L4), else TCP
	innerL4 int  // the inner TCP or UDP header (csum_start); the inner IPv4 header ends here
	hdrEnd  int  // just past the inner TCP header (with options) or UDP header
	payload int  // inner TCP or UDP payload bytes of the super-frame
	mss     int  // gso_size: the most payload bytes per segment
	segs    int  // how many segments the super-frame makes
	size    int  // the bytes SegmentEncap writes: segs virtio-net headers and frames
}

// encapLayout finds the layout of f as an encapsulated GSO super-frame, or reports false when f
// is not one or its encapsulation is not understood. It reads only bytes below f.End and never
// panics, whatever f holds.
func (f *Frame) encapLayout() (l encapLayout, ok bool) {
	v := f.Vnet
	if !f.valid4() || !f.Encap || f.L4 < 0 || f.FragOff != 0 || f.MoreFrags ||
		v.Flags&VnetNeedsCsum == 0 || v.GSOSize == 0 {
		return l, false
	}
	// The GSO type says what the inner packet is; the checksum offset must be that L4's.
	want4, want6 := false, false
	switch v.GSOType & gsoTypeMk {
	case GSOTCPv4:
		want4 = true
	case GSOTCPv6:
		want6 = true
	case GSOUDPL4:
		want4, want6, l.udp = true, true, true
	default:
		return l, false
	}
	proto, csumOff := uint8(ProtoTCP), uint16(16)
	if l.udp {
		proto, csumOff = ProtoUDP, 6
	}
	if v.CsumOffset != csumOff {
		return l, false
	}
	b, end := f.Buf, f.End
	l4 := int(v.CsumStart)
	if l.udp {
		if l4+udpLen > end {
			return l, false
		}
		l.hdrEnd = l4 + udpLen
	} else {
		if l4+tcpMinLen > end {
			return l, false
		}
		doff := int(b[l4+12]>>4) * 4
		if doff < tcpMinLen || l4+doff > end {
			return l, false
		}
		l.hdrEnd = l4 + doff
	}

	// The outer header: where the inner IP header may start at the earliest, and where it
	// must start exactly (at), when the encapsulation says so.
	l.greCsum = -1
	var first int
	at := -1
	switch f.Proto {
	case ProtoUDP:
		// Any UDP tunnel (VXLAN, GENEVE, VXLAN-GPE, FOU, GUE, ...): the bytes between the UDP
		// header and the inner IP header are copied as they are, and none of these
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
		greEnd := f.L4 + 4
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
		switch be16(b[f.L4+2:]) {
		case greProtoTEB:
			first = greEnd + EthHdrLen
		case greProtoIPv4:
			first, at, want6 = greEnd, greEnd, false
		case greProtoIPv6:
			first, at, want4 = greEnd, greEnd, false
		default:
			return l, false
		}
	case protoIPIP:
		first, at, want6 = f.L4, f.L4, false
	case protoIPv6:
		first, at, want4 = f.L4, f.L4, false
	default:
		return l, false
	}

	l.inner = -1
	if want4 {
		l.inner = findInner4(b, first, l4, end, proto)
	}
	if l.inner < 0 && want6 {
		l.inner = findInner6(b, first, l4, end, proto)
		l.inner6 = l.inner >= 0
	}
	if l.inner < 0 || (at >= 0 && l.inner != at) {
		return l, false
	}
	if f.Proto == protoGRE && be16(b[f.L4+2:]) == greProtoTEB {
		// The inner Ethernet header (maybe VLAN-tagged) must end in the inner IP's ethertype.
		et := be16(b[l.inner-2:])
		if (l.inner6 && et != etherTypeIPv6) || (!l.inner6 && et != etherTypeIPv4) {
			return l, false
		}
	}

	l.innerL4 = l4
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

// findInner4 returns the offset of the inner IPv4 header that ends at l4 and starts at first or
// later, or -1: IHL 5 is tried first, then longer headers. A candidate must be a first (and
// only) fragment of proto whose total length reaches exactly to end (or is 0, as a GSO frame's
// may be).
func findInner4(b []byte, first, l4, end int, proto uint8) int {
	for ihl := ipv4MinLen; ihl <= ipv4MaxLen; ihl += 4 {
		p := l4 - ihl
		if p < first {
			break
		}
		h := b[p:l4]
		if h[0] != 0x40|byte(ihl/4) || h[9] != proto || be16(h[6:])&0x3fff != 0 {
			continue
		}
		if tl := int(be16(h[2:])); tl != end-p && tl != 0 {
			continue
		}
		return p
	}
	return -1
}

// findInner6 returns the offset of the inner IPv6 header whose chain of extension headers ends
// in proto at l4 and which starts at first or later, or -1: no extension header is tried first,
// then longer chains (extension headers come in multiples of 8 bytes). A candidate's payload
// length must reach exactly to end, and its chain may hold only a hop-by-hop header (first) and
// destination options.
func findInner6(b []byte, first, l4, end int, proto uint8) int {
	for ext := 0; ext <= ipv6MaxExt; ext += 8 {
		p := l4 - ext - ipv6HdrLen
		if p < first {
			break
		}
		if b[p]>>4 != 6 || int(be16(b[p+4:])) != end-p-ipv6HdrLen {
			continue
		}
		nh, q := b[p+6], p+ipv6HdrLen
		for q < l4 && q+2 <= l4 && (nh == ipv6DstOpts || (nh == ipv6HopByHop && q == p+ipv6HdrLen)) {
			nh, q = b[q], q+(int(b[q+1])+1)*8
		}
		if q == l4 && nh == proto {
			return p
		}
	}
	return -1
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

// SegmentEncap cuts f, an encapsulated GSO super-frame (f.Encap, csum_start at an inner TCP or
// UDP header), into ordinary frames of at most f.Vnet.GSOSize inner payload bytes each, with
// every checksum complete. It writes them back to back into dst, each preceded by a zeroed
// virtio-net header (VnetHdrLen bytes), stores each one's length (header included) in lens, and
// returns how many it wrote. It returns 0 when f is not such a frame, when the encapsulation or
// the inner packet is not understood, or when dst or lens are too small (the caller then drops
// and counts the frame). It does not allocate, and it leaves f unchanged.
//
// The kernel hands over such frames from tunnels whose underlay is an external interface, and
// refuses to send them back (ENOMEM; such a frame reads back as a plain GSO type with
// csum_start at the inner L4 header). Cutting them here turns them into frames the datapath
// NATs and places like any other.
//
// The GSO type (the ECN flag aside) says what the inner packet is, and csum_offset must be
// that L4's checksum offset:
//   - GSOTCPv4: inner IPv4 and TCP;
//   - GSOTCPv6: inner IPv6 and TCP;
//   - GSOUDPL4: inner IPv4 or IPv6 and UDP (UDP_SEGMENT, or GRO of UDP), one datagram per
//     gso_size payload bytes.
//
// Understood encapsulations, with the outer IPv4 header of f (an IPv6 frame from ParseAny,
// Encap for a tunnel over IPv6, is not understood: 0):
//   - UDP (VXLAN, GENEVE, and any other UDP tunnel: the bytes between the UDP header and the
//     inner IP header are copied unchanged, so an encapsulation with a length field covering
//     the payload, such as L2TPv2 with the L bit, would come out wrong; the kernel does not
//     offload TSO through those). The UDP length is set per segment; a UDP checksum of 0 stays
//     0, any other is computed in full (a result of 0 goes out as 0xffff).
//   - GRE (IP protocol 47) carrying Ethernet (gretap, 0x6558; the inner Ethernet header, maybe
//     VLAN-tagged, must end in the inner IP's ethertype), IPv4 (gre, 0x0800) or IPv6 (gre,
//     0x86dd), without routing and of version 0. With the C bit the GRE checksum is computed
//     over the GRE header and everything after it. The key is copied. A sequence number (S bit)
//     is copied too, so every segment carries the super-frame's: Linux turns GSO off on GRE
//     tunnels with sequence numbers, so such a frame should not occur, and a receiver that
//     checks sequence numbers would drop all but one segment.
//   - IPv4 in IPv4 (IP protocol 4, ipip) and IPv6 in IPv4 (IP protocol 41, sit).
//
// The inner IPv4 header is the one that ends at csum_start (IHL 5 is tried first, then IHL 6 to
// 15), must carry the GSO type's L4, must not be a fragment, and its total length must be 0 or
// reach the end of the outer datagram. The inner IPv6 header is the one whose chain of
// extension headers ends at csum_start in the GSO type's L4 (no extension header is tried
// first); the chain may hold a hop-by-hop header and destination options, which are copied, and
// nothing else (no routing or fragment header); its payload length must reach the end of the
// outer datagram. An inner Ethernet header is copied unchanged.
//
// For segment i of n, like the kernel's own segmentation (tcp_gso_segment, __udp_gso_segment,
// inet_gso_segment, ipv6_gso_segment):
//   - outer and inner IPv4: total length of the segment, ID + i (also with DF, whatever the
//     ID, and for UDP as for TCP), header checksum recomputed; options, TOS, TTL and flags (DF
//     included) copied;
//   - inner IPv6: payload length of the segment; everything else, extension headers included,
//     copied;
//   - inner TCP: sequence number + i*gso_size; FIN and PSH only on the last segment, CWR only on
//     the first (with or without GSOECN); the checksum computed in full over the pseudo-header
//     (IPv4 or IPv6), the header and the segment's payload (the super-frame's partial sum is not
//     used). Other fields, the urgent pointer included, are copied;
//   - inner UDP: length of the segment's datagram; the checksum computed in full over the
//     pseudo-header, the header and the payload (a result of 0 goes out as 0xffff). Ports are
//     copied.
//
// Ethernet padding after the outer datagram is not copied. A super-frame without payload gives
// one segment. Each segment's outer IPv4 datagram is at most f.Vnet.GSOSize bytes longer than
// the headers (outer IPv4 to the end of the inner TCP or UDP header); to fit a smaller uplink
// MTU, lower f.Vnet.GSOSize before calling (FitGSO leaves Encap frames alone).
func (f *Frame) SegmentEncap(dst []byte, lens []int) int {
	l, ok := f.encapLayout()
	if !ok || len(lens) < l.segs || len(dst) < l.size {
		return 0
	}
	b := f.Buf
	outer, l4 := f.L3, f.L4
	outerIHL := int(b[outer]&0x0f) * 4
	innerIHL := l.innerL4 - l.inner // IPv4 only
	outerID, innerID := be16(b[outer+4:]), be16(b[l.inner+4:])
	proto, csumAt := uint8(ProtoUDP), 6
	var seq uint32
	var flags uint8
	if !l.udp { // the TCP header is at least 20 bytes; a UDP header only 8
		proto, csumAt = ProtoTCP, 16
		seq, flags = binary.BigEndian.Uint32(b[l.innerL4+4:]), b[l.innerL4+13]
	}
	// The inner pseudo-header without its length, which is added per segment. The addresses
	// are summed once: 32 bytes for IPv6.
	var innerPseudo uint64
	if l.inner6 {
		innerPseudo = Sum(b[l.inner+8:l.inner+ipv6HdrLen], uint64(proto))
	} else {
		innerPseudo = PseudoHeaderSum([4]byte(b[l.inner+ipSrcOff:]), [4]byte(b[l.inner+ipDstOff:]), proto, 0)
	}
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

		// Inner IP header.
		if l.inner6 {
			put16(s[l.inner+4:], uint16(n-l.inner-ipv6HdrLen))
		} else {
			ip := s[l.inner:l.innerL4]
			put16(ip[2:], uint16(n-l.inner))
			put16(ip[4:], innerID+uint16(i))
			put16(ip[ipCsumOff:], 0)
			put16(ip[ipCsumOff:], Checksum(ip[:innerIHL], 0))
		}

		// Inner TCP or UDP header and checksum.
		t := s[l.innerL4:n]
		if l.udp {
			put16(t[4:], uint16(len(t)))
		} else {
			binary.BigEndian.PutUint32(t[4:], seq+uint32(i*l.mss))
			fl := flags
			if i > 0 {
				fl &^= TCPCwr
			}
			if i < l.segs-1 {
				fl &^= TCPFin | TCPPsh
			}
			t[13] = fl
		}
		put16(t[csumAt:], 0)
		ts := Sum(t, 0)
		tc := ^Fold(ts + innerPseudo + uint64(uint32(len(t))>>16) + uint64(len(t)&0xffff))
		if l.udp && tc == 0 {
			tc = 0xffff
		}
		put16(t[csumAt:], tc)
		// What the L4 segment, its checksum included, adds to a checksum over the outer
		// payload: summing it again would double the work on every byte. Bytes at an odd
		// offset from the start of that checksum contribute their sum byte-swapped (RFC 1071).
		l4Sum := Add(Fold(ts), tc)

		// Outer L4.
		switch f.Proto {
		case ProtoUDP:
			put16(s[l4+4:], uint16(n-l4))
			if l.udpCsum {
				put16(s[l4+6:], 0)
				c := ^Fold(Sum(s[l4:l.innerL4], outerPseudo+uint64(n-l4)) + uint64(oddSwap(l4Sum, l.innerL4-l4)))
				if c == 0 {
					c = 0xffff
				}
				put16(s[l4+6:], c)
			}
		case protoGRE:
			if l.greCsum >= 0 {
				put16(s[l.greCsum:], 0)
				put16(s[l.greCsum:], ^Fold(Sum(s[l4:l.innerL4], 0)+uint64(oddSwap(l4Sum, l.innerL4-l4))))
			}
		}

		// Outer IPv4 header.
		ip := s[outer : outer+outerIHL]
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
