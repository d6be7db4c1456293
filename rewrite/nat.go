package rewrite

import "encoding/binary"

// Offsets within an IPv4 header.
const (
	ipCsumOff = 10
	ipSrcOff  = 12
	ipDstOff  = 16
)

// SetSrc rewrites the source address to ip and the source port to port, and fixes the IPv4
// header checksum and the L4 checksum incrementally (RFC 1624), so that the result equals a full
// recomputation without touching the payload. It updates f.Src and f.SrcPort too. Fields that
// already hold the new value are left alone, so a no-op call leaves the frame byte for byte as
// it was.
//
// The L4 checksum field is updated by the rule that fits what it holds:
//
//   - A full checksum (no NEEDS_CSUM, the usual case on the wire; also an Encap frame's outer
//     checksum): TCP and UDP checksums cover the pseudo-header, so both an address and a port
//     change adjust them; the ICMP checksum covers the ICMP message only, so an address change
//     leaves it alone and an identifier change adjusts it. A UDP checksum of 0 means "none" and stays 0; a UDP result of 0 is sent
//     as 0xffff, as RFC 768 asks.
//   - A partial sum (PartialCsum: NEEDS_CSUM and csum_start/csum_offset at this frame's
//     checksum field, as for every TCP segment the host sends on a veth and every GRO'd frame):
//     the field holds the uncomplemented, folded sum of the pseudo-header only, with the L4
//     length of the whole (super-)frame. The device or the kernel's segmentation later adds the
//     L4 header and payload as they are then, ports included, and stores the complement. So an
//     address change adjusts the field in the uncomplemented sense (sum' = sum + ~old + new), and
//     a port change must not touch it: adjusting it would count the change twice. No 0/0xffff
//     substitution applies to a sum.
//
// For a non-first fragment (L4 == -1) only the IPv4 header changes: the L4 header, and with it
// the ports and the checksum, travel in the first fragment, which the datapath rewrites the same
// way. A first fragment gets the full treatment: its L4 checksum covers the whole reassembled
// datagram, but an incremental update needs only the words that change.
//
// For ICMP, port is the echo identifier and is written only on an echo request, whose
// identifier the sender chose (on a reply it is the peer's choice: see SetDst); Parse gives the
// identifier as both SrcPort and DstPort and SetSrc keeps both in step. For other protocols port
// is ignored. SetSrc does nothing on a Frame that Parse did not accept, nor on an IPv6 frame
// (see SetSrc6).
func (f *Frame) SetSrc(ip [4]byte, port uint16) {
	if !f.valid4() {
		return
	}
	if f.setAddr(f.L3+ipSrcOff, ip) {
		f.Src = ip
	}
	if f.L4 < 0 {
		return
	}
	switch f.Proto {
	case ProtoTCP, ProtoUDP:
		if f.setPort(f.L4, port) {
			f.SrcPort = port
		}
	case ProtoICMP:
		if f.ICMPType == ICMPEchoRequest && f.setICMPID(port) {
			f.SrcPort, f.DstPort = port, port
		}
	}
}

// SetDst is SetSrc for the destination address and port. For ICMP, port is the echo identifier
// and is written only on an echo reply: the reply of a translated echo request carries the
// translated identifier back, and the reverse translation restores the host's.
func (f *Frame) SetDst(ip [4]byte, port uint16) {
	if !f.valid4() {
		return
	}
	if f.setAddr(f.L3+ipDstOff, ip) {
		f.Dst = ip
	}
	if f.L4 < 0 {
		return
	}
	switch f.Proto {
	case ProtoTCP, ProtoUDP:
		if f.setPort(f.L4+2, port) {
			f.DstPort = port
		}
	case ProtoICMP:
		if f.ICMPType == ICMPEchoReply && f.setICMPID(port) {
			f.SrcPort, f.DstPort = port, port
		}
	}
}

// setAddr writes the address at off and fixes the IP header checksum and, for TCP and UDP, the
// pseudo-header part of the L4 checksum. It reports whether the address changed.
func (f *Frame) setAddr(off int, ip [4]byte) bool {
	b := f.Buf
	old := [4]byte(b[off : off+4])
	if old == ip {
		return false
	}
	d := diff4(old, ip)
	c := f.L3 + ipCsumOff
	put16(b[c:], applyFull(be16(b[c:]), d))
	if f.L4 >= 0 && (f.Proto == ProtoTCP || f.Proto == ProtoUDP) {
		if c := f.L4 + l4CsumOffset(f.Proto); c+2 <= f.End {
			if f.PartialCsum {
				put16(b[c:], applyPartial(be16(b[c:]), d))
			} else {
				put16(b[c:], f.fullL4(be16(b[c:]), d))
			}
		}
	}
	copy(b[off:off+4], ip[:])
	return true
}

// setPort writes a TCP or UDP port at off and, unless the checksum field is a partial sum,
// adjusts the checksum. It reports whether the port changed.
func (f *Frame) setPort(off int, port uint16) bool {
	b := f.Buf
	c := f.L4 + l4CsumOffset(f.Proto)
	if c+2 > f.End || off+2 > f.End {
		return false
	}
	old := be16(b[off:])
	if old == port {
		return false
	}
	if !f.PartialCsum {
		put16(b[c:], f.fullL4(be16(b[c:]), diff2(old, port)))
	}
	put16(b[off:], port)
	return true
}

// setICMPID writes the ICMP echo identifier and adjusts the ICMP checksum unless it is a partial
// sum (which for ICMP is a sum of nothing: the device sums the whole message). It reports whether
// the identifier changed.
func (f *Frame) setICMPID(id uint16) bool {
	b := f.Buf
	off, c := f.L4+4, f.L4+2
	if off+2 > f.End {
		return false
	}
	old := be16(b[off:])
	if old == id {
		return false
	}
	if !f.PartialCsum {
		put16(b[c:], applyFull(be16(b[c:]), diff2(old, id)))
	}
	put16(b[off:], id)
	return true
}

// fullL4 applies d to a full TCP or UDP checksum, honouring UDP's "0 means no checksum".
func (f *Frame) fullL4(csum uint16, d uint32) uint16 {
	if f.Proto == ProtoUDP {
		return udpFull(csum, d)
	}
	return applyFull(csum, d)
}

// udpFull applies d to a full UDP checksum: 0 (none) stays 0, a result of 0 becomes 0xffff.
func udpFull(csum uint16, d uint32) uint16 {
	if csum == 0 {
		return 0
	}
	if n := applyFull(csum, d); n != 0 {
		return n
	}
	return 0xffff
}

// SetInnerSrc rewrites the source address and port of the packet quoted by an ICMP error (for
// a quoted ICMP echo request, port is its identifier), and updates every checksum the change
// touches: the quoted IPv4 header's, the quoted TCP/UDP checksum when the quote includes it (a
// quoted UDP checksum of 0 stays 0), the quoted ICMP echo checksum for an identifier change, and
// the outer ICMP checksum, which covers the whole quote, checksum fields included. The quoted
// L4 checksum is always a full one: the quoted packet was on the wire. The outer ICMP checksum
// is updated only when it is a full checksum (not PartialCsum). It updates f.InnerSrc and
// f.InnerSrcPort.
//
// An ICMP error that reaches the host about a source-NATed flow quotes the packet as it left,
// with the NAT address as its source: reverse NAT restores the host's address and port with
// SetInnerSrc (and the outer destination with SetDst). It does nothing when InnerL3 is -1, nor
// on an IPv6 frame (see SetInnerSrc6).
func (f *Frame) SetInnerSrc(ip [4]byte, port uint16) {
	f.setInner(ipSrcOff, 0, ICMPEchoRequest, ip, port)
}

// SetInnerDst is SetInnerSrc for the quoted destination address and port (for a quoted ICMP echo
// reply, its identifier): an ICMP error the host sends about a reverse-NATed packet quotes
// the host's address as the destination, and the shim restores the NAT address. It updates
// f.InnerDst and f.InnerDstPort.
func (f *Frame) SetInnerDst(ip [4]byte, port uint16) {
	f.setInner(ipDstOff, 2, ICMPEchoReply, ip, port)
}

func (f *Frame) setInner(addrOff, portOff int, echoType uint8, ip [4]byte, port uint16) {
	if !f.valid4() || f.InnerL3 < 0 || f.L4 < 0 || f.Proto != ProtoICMP ||
		f.InnerL3 < f.L4+icmpMinLen || f.InnerL3+ipv4MinLen > f.End ||
		(f.InnerL4 >= 0 && f.InnerL4 < f.InnerL3+ipv4MinLen) {
		return
	}
	b, q, end := f.Buf, f.InnerL3, f.End
	src := addrOff == ipSrcOff
	// outer accumulates ~old + new of every word of the ICMP message that changes. Every field
	// touched is 16-bit aligned relative to the start of the ICMP message (the quote begins at
	// offset 8, IPv4 and TCP/UDP/ICMP headers have even lengths), as RFC 1624 requires.
	var outer uint32
	changed := false
	word := func(off int, v uint16) {
		if old := be16(b[off:]); old != v {
			outer += diff2(old, v)
			put16(b[off:], v)
			changed = true
		}
	}
	l4csum := -1 // the quoted L4 checksum field, when quoted
	if f.InnerL4 >= 0 {
		if o := l4CsumOffset(f.InnerProto); o >= 0 && f.InnerL4+o+2 <= end {
			l4csum = f.InnerL4 + o
		}
	}
	if old := [4]byte(b[q+addrOff : q+addrOff+4]); old != ip {
		d := diff4(old, ip)
		word(q+ipCsumOff, applyFull(be16(b[q+ipCsumOff:]), d))
		if l4csum >= 0 && f.InnerProto != ProtoICMP {
			c := be16(b[l4csum:])
			if f.InnerProto == ProtoUDP {
				word(l4csum, udpFull(c, d))
			} else {
				word(l4csum, applyFull(c, d))
			}
		}
		word(q+addrOff, be16(ip[:]))
		word(q+addrOff+2, be16(ip[2:]))
		if src {
			f.InnerSrc = ip
		} else {
			f.InnerDst = ip
		}
	}
	if f.InnerL4 >= 0 {
		p := -1
		switch f.InnerProto {
		case ProtoTCP, ProtoUDP:
			p = f.InnerL4 + portOff
		case ProtoICMP:
			if f.InnerL4+6 <= end && b[f.InnerL4] == echoType {
				p = f.InnerL4 + 4
			}
		}
		if p >= 0 && p+2 <= end {
			if old := be16(b[p:]); old != port {
				d := diff2(old, port)
				if l4csum >= 0 {
					c := be16(b[l4csum:])
					if f.InnerProto == ProtoUDP {
						word(l4csum, udpFull(c, d))
					} else {
						word(l4csum, applyFull(c, d))
					}
				}
				word(p, port)
				switch {
				case f.InnerProto == ProtoICMP:
					f.InnerSrcPort, f.InnerDstPort = port, port
				case src:
					f.InnerSrcPort = port
				default:
					f.InnerDstPort = port
				}
			}
		}
	}
	if changed && !f.PartialCsum {
		c := f.L4 + 2
		put16(b[c:], applyFull(be16(b[c:]), outer))
	}
}

// Offsets within an IPv6 header.
const (
	ip6SrcOff = 8
	ip6DstOff = 24
)

// SetSrc6 is SetSrc for an IPv6 frame: it rewrites the source address to ip and the source port
// to port, updates the L4 checksum incrementally and f.Src6 and f.SrcPort, and does nothing on a
// Frame that ParseAny did not accept as IPv6. IPv6 has no header checksum; the TCP, UDP and
// ICMPv6 checksums all cover the pseudo-header (RFC 8200 8.1), so an address change adjusts
// each of them, ICMPv6 included (unlike ICMP for IPv4), by the rule that fits what the field
// holds, as SetSrc does:
//
//   - a full checksum is updated as a checksum; a UDP checksum of 0 (not allowed in IPv6 but
//     for some tunnels, RFC 6935) stays 0, and a UDP result of 0 is sent as 0xffff;
//   - a partial sum (PartialCsum, for TCP, UDP or ICMPv6) is updated as an uncomplemented sum
//     for an address change, and left alone for a port or identifier change, which the device
//     sums later.
//
// For ICMPv6, port is the echo identifier and is written only on an echo request (on a reply it
// is the peer's choice: see SetDst6); ParseAny gives it as both SrcPort and DstPort and SetSrc6
// keeps both in step. A non-first fragment (L4 == -1) gets its address only; a first fragment
// gets the full treatment. Fields that already hold the new value are left alone.
func (f *Frame) SetSrc6(ip [16]byte, port uint16) {
	if !f.valid6() {
		return
	}
	if f.setAddr6(f.L3+ip6SrcOff, ip, true) {
		f.Src6 = ip
	}
	if f.L4 < 0 {
		return
	}
	switch f.Proto {
	case ProtoTCP, ProtoUDP:
		if f.setPort(f.L4, port) {
			f.SrcPort = port
		}
	case ProtoICMPv6:
		if f.ICMPType == ICMPv6EchoRequest && f.setICMPID(port) {
			f.SrcPort, f.DstPort = port, port
		}
	}
}

// SetDst6 is SetSrc6 for the destination address and port. For ICMPv6, port is the echo
// identifier and is written only on an echo reply, as SetDst does for ICMP. A packet still
// being source-routed (a routing header with segments left, see IPv6Headers.Routed) has its
// final destination, not the destination field, in the pseudo-header: its checksum does not
// change with the field.
func (f *Frame) SetDst6(ip [16]byte, port uint16) {
	if !f.valid6() {
		return
	}
	if f.setAddr6(f.L3+ip6DstOff, ip, !f.routed) {
		f.Dst6 = ip
	}
	if f.L4 < 0 {
		return
	}
	switch f.Proto {
	case ProtoTCP, ProtoUDP:
		if f.setPort(f.L4+2, port) {
			f.DstPort = port
		}
	case ProtoICMPv6:
		if f.ICMPType == ICMPv6EchoReply && f.setICMPID(port) {
			f.SrcPort, f.DstPort = port, port
		}
	}
}

// setAddr6 writes the IPv6 address at off and, when the address is in the pseudo-header, fixes
// the L4 checksum or partial sum. It reports whether the address changed.
func (f *Frame) setAddr6(off int, ip [16]byte, pseudo bool) bool {
	b := f.Buf
	old := [16]byte(b[off : off+16])
	if old == ip {
		return false
	}
	if o := l4CsumOffset6(f.Proto); pseudo && f.L4 >= 0 && o >= 0 {
		if c := f.L4 + o; c+2 <= f.End {
			d := diff16(old, ip)
			switch {
			case f.PartialCsum:
				put16(b[c:], applyPartial(be16(b[c:]), d))
			case f.Proto == ProtoUDP:
				put16(b[c:], udpFull(be16(b[c:]), d))
			default:
				put16(b[c:], applyFull(be16(b[c:]), d))
			}
		}
	}
	copy(b[off:off+16], ip[:])
	return true
}

// SetInnerSrc6 is SetInnerSrc for an ICMPv6 error (ParseAny, InnerL3 >= 0): it rewrites the
// source address and port of the quoted IPv6 packet (for a quoted ICMPv6 echo request, port is
// its identifier; a port only when ParseAny read it, both ports being quoted) and updates every checksum the change touches: the quoted TCP, UDP or ICMPv6
// checksum when the quote includes its field (all three cover the quoted pseudo-header; a
// quoted UDP checksum of 0 stays 0), and the outer ICMPv6 checksum, which covers the whole
// quote, when it is a full checksum (not PartialCsum). The quoted checksum is always a full one:
// the quoted packet was on the wire. It updates f.InnerSrc6 and f.InnerSrcPort.
//
// An ICMPv6 error that reaches the host about a source-NATed flow quotes the packet as it left,
// with the NAT address as its source: reverse NAT restores the host's address and port with
// SetInnerSrc6 (and the outer destination with SetDst6).
func (f *Frame) SetInnerSrc6(ip [16]byte, port uint16) {
	f.setInner6(ip6SrcOff, 0, ICMPv6EchoRequest, ip, port)
}

// SetInnerDst6 is SetInnerSrc6 for the quoted destination address and port (for a quoted
// ICMPv6 echo reply, its identifier): an ICMPv6 error the host sends about a reverse-NATed
// packet quotes the host's address as the destination, and the shim restores the NAT address.
// It updates f.InnerDst6 and f.InnerDstPort.
func (f *Frame) SetInnerDst6(ip [16]byte, port uint16) {
	f.setInner6(ip6DstOff, 2, ICMPv6EchoReply, ip, port)
}

func (f *Frame) setInner6(addrOff, portOff int, echoType uint8, ip [16]byte, port uint16) {
	if !f.valid6() || f.InnerL3 < 0 || f.L4 < 0 || f.Proto != ProtoICMPv6 ||
		f.InnerL3 < f.L4+icmpMinLen || f.InnerL3+ipv6HdrLen > f.End ||
		(f.InnerL4 >= 0 && f.InnerL4 < f.InnerL3+ipv6HdrLen) {
		return
	}
	b, q, end := f.Buf, f.InnerL3, f.End
	src := addrOff == ip6SrcOff
	// outer accumulates ~old + new of every word of the ICMPv6 message that changes. Every
	// field touched is 16-bit aligned relative to the start of the message: the quote begins at
	// offset 8, the IPv6 header is 40 bytes and extension headers come in multiples of 8.
	var outer uint32
	changed := false
	word := func(off int, v uint16) {
		if old := be16(b[off:]); old != v {
			outer += diff2(old, v)
			put16(b[off:], v)
			changed = true
		}
	}
	l4csum := -1 // the quoted L4 checksum field, when quoted
	if f.InnerL4 >= 0 {
		if o := l4CsumOffset6(f.InnerProto); o >= 0 && f.InnerL4+o+2 <= end {
			l4csum = f.InnerL4 + o
		}
	}
	fixL4 := func(d uint32) {
		c := be16(b[l4csum:])
		if f.InnerProto == ProtoUDP {
			word(l4csum, udpFull(c, d))
		} else {
			word(l4csum, applyFull(c, d))
		}
	}
	if old := [16]byte(b[q+addrOff : q+addrOff+16]); old != ip {
		// A quoted packet still being source-routed has its final destination, not the
		// destination field, in its pseudo-header.
		if l4csum >= 0 && (src || !f.innerRouted) {
			fixL4(diff16(old, ip))
		}
		for i := 0; i < 16; i += 2 {
			word(q+addrOff+i, be16(ip[i:]))
		}
		if src {
			f.InnerSrc6 = ip
		} else {
			f.InnerDst6 = ip
		}
	}
	if f.InnerL4 >= 0 {
		// The ports are written when ParseAny read them: both quoted.
		p := -1
		switch f.InnerProto {
		case ProtoTCP, ProtoUDP:
			if f.InnerL4+4 <= end {
				p = f.InnerL4 + portOff
			}
		case ProtoICMPv6:
			if f.InnerL4+6 <= end && b[f.InnerL4] == echoType {
				p = f.InnerL4 + 4
			}
		}
		if p >= 0 {
			if old := be16(b[p:]); old != port {
				if l4csum >= 0 {
					fixL4(diff2(old, port))
				}
				word(p, port)
				switch {
				case f.InnerProto == ProtoICMPv6:
					f.InnerSrcPort, f.InnerDstPort = port, port
				case src:
					f.InnerSrcPort = port
				default:
					f.InnerDstPort = port
				}
			}
		}
	}
	if changed && !f.PartialCsum {
		c := f.L4 + 2
		put16(b[c:], applyFull(be16(b[c:]), outer))
	}
}

// ClampMSS lowers the MSS option of a TCP segment with SYN set (a SYN or a SYN-ACK) to mss when
// it announces more, so that a flow placed on an uplink with a smaller MTU never sends segments
// the uplink cannot carry (a frame l2shim sends that is too big fails with EMSGSIZE, and the
// host gets no ICMP about it). It reports whether it changed the frame. A full checksum is
// adjusted incrementally; a partial sum is left alone, because the option is part of the TCP
// header the device sums later. An option at an odd offset contributes its bytes swapped to the
// 16-bit word sum, and the update accounts for that. It works on IPv4 and IPv6 frames alike
// (the option is not in the pseudo-header); the MSS for a path MTU m is m - IPv4TCPHdrLen, or
// m - IPv6TCPHdrLen for IPv6.
func (f *Frame) ClampMSS(mss uint16) bool {
	if f.TCPFlags&TCPSyn == 0 {
		return false
	}
	i, ok := f.tcpOption(tcpOptMSS, 4)
	if !ok {
		return false
	}
	b := f.Buf
	old := be16(b[i+2:])
	if old <= mss {
		return false
	}
	if !f.PartialCsum {
		d := diff2(old, mss)
		if (i+2-f.L4)&1 == 1 {
			d = diff2(bswap16(old), bswap16(mss))
		}
		c := f.L4 + 16
		put16(b[c:], applyFull(be16(b[c:]), d))
	}
	put16(b[i+2:], mss)
	return true
}

// FitGSO lowers the gso_size of a TCP or UDP_L4 super-frame so that every segment the kernel
// cuts from it fits an IP MTU of mtu bytes, and reports whether it changed f.Vnet (which the
// datapath writes back with the frame). gso_size is the L4 payload of each segment, so the IP
// header (IPv4 with its options, or IPv6 with its extension headers, which every segment
// carries) and the TCP header (with options) or the UDP header come off the MTU. UDP
// fragmentation offload (GSOUDP) produces IP fragments of any size and is left alone, as are
// frames that are not super-frames; an mtu too small for the headers leaves gso_size unchanged.
func (f *Frame) FitGSO(mtu int) bool {
	if !f.valid() || f.L4 < 0 || f.Vnet.GSOType == GSONone || f.Encap {
		return false
	}
	tcpGSO := uint8(GSOTCPv4)
	if f.IPv6 {
		tcpGSO = GSOTCPv6
	}
	var hdr int
	switch f.Vnet.GSOType & gsoTypeMk {
	case tcpGSO:
		if f.Proto != ProtoTCP || f.L4+tcpMinLen > f.End {
			return false
		}
		hdr = int(f.Buf[f.L4+12]>>4) * 4
	case GSOUDPL4:
		if f.Proto != ProtoUDP {
			return false
		}
		hdr = udpLen
	default:
		return false
	}
	max := mtu - (f.L4 - f.L3) - hdr
	if max <= 0 || int(f.Vnet.GSOSize) <= max {
		return false
	}
	f.Vnet.GSOSize = uint16(max)
	return true
}

func be16(b []byte) uint16     { return binary.BigEndian.Uint16(b) }
func put16(b []byte, v uint16) { binary.BigEndian.PutUint16(b, v) }
func bswap16(v uint16) uint16  { return v<<8 | v>>8 }
