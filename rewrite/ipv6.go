package rewrite

import "encoding/binary"

// IPv6 header facts (RFC 8200); etherTypeIPv6 and ipv6HdrLen are in segment.go.
const (
	// ProtoICMPv6 is ICMPv6's next-header number.
	ProtoICMPv6 = 58

	extHopByHop = 0  // hop-by-hop options
	extRouting  = 43 // routing header
	extFragment = 44 // fragment header (8 bytes)
	extDestOpts = 60 // destination options
	extNoNext   = 59 // no next header

	// MaxIPv6ExtHeaders bounds the extension-header chain WalkIPv6 follows: a legitimate
	// packet carries a handful at most (hop-by-hop, destination options, routing, fragment,
	// destination options), and a longer chain is either an attack on parsers or nothing l2shim
	// should steer.
	MaxIPv6ExtHeaders = 8
)

// IPv6Headers is where the parts of an IPv6 packet are, as WalkIPv6 found them. Offsets are
// from the start of the IPv6 header.
type IPv6Headers struct {
	// Proto is the upper-layer protocol (the last next-header value): TCP, UDP, ICMPv6, or any
	// other; extNoNext when the chain ends with "no next header". For a non-first fragment it
	// is the fragment header's next header: the first header of the fragmentable part, which
	// is the upper-layer protocol unless an extension header (destination options) comes first.
	Proto uint8
	// L4 is the offset of the upper-layer header, -1 for a non-first fragment (its upper-layer
	// header is in the first fragment).
	L4 int
	// End is the offset just past the packet: 40 plus the payload length (the rest of the buffer
	// for a GSO super-frame whose payload length is 0, which BIG TCP sends).
	End int
	// ExtHeaders is how many extension headers precede L4 (the fragment header included).
	ExtHeaders int
	// Routed is set when the first routing header with segments left (before any fragment
	// header, where RFC 8200 4.1 puts it) is of type 0, 2 or 4 (source route, Mobile IPv6,
	// segment routing) and names at least one address: the destination field is then only the
	// next waypoint, and the transport pseudo-header holds the final destination from the
	// routing header instead (RFC 8200 8.1), so a change of the destination field does not touch
	// the upper-layer checksum. (A node drops a packet with a routing header of another type and
	// segments left, RFC 8200 4.4.)
	Routed bool
	// Fragment header fields, when the packet has one (FragHdr >= 0).
	FragHdr   int
	FragOff   uint16 // in 8-byte units
	MoreFrags bool
	FragID    uint32
}

// IsFragment reports whether the packet is a fragment (any, the first included) rather than a
// whole datagram. A fragment header with offset 0 and no more fragments (an "atomic fragment")
// is a whole datagram.
func (h *IPv6Headers) IsFragment() bool {
	return h.FragHdr >= 0 && (h.FragOff != 0 || h.MoreFrags)
}

// WalkIPv6 parses the IPv6 header at the start of b and walks its extension headers, each
// bounded by the packet, at most MaxIPv6ExtHeaders of them. gso says the packet is a GSO
// super-frame (a payload length of 0 then means "the rest of b"). It returns OK, or why the
// packet cannot be steered: ShortFrame, BadIPVersion, BadIPLength, BadExtHeader (a header that
// runs past the packet, a second hop-by-hop header or one not first, a fragment header with
// reserved bits set), ExtChainTooLong, or ShortL4 (the upper-layer header is cut short). The
// walk stops at the fragment header of a non-first fragment: what follows it is the middle of
// the original packet, not a header. It never panics and never allocates.
func WalkIPv6(b []byte, gso bool) (IPv6Headers, Reason) {
	h := IPv6Headers{L4: -1, FragHdr: -1}
	if len(b) < ipv6HdrLen {
		return h, ShortFrame
	}
	if b[0]>>4 != 6 {
		return h, BadIPVersion
	}
	payload := int(binary.BigEndian.Uint16(b[4:]))
	if payload == 0 && gso {
		payload = len(b) - ipv6HdrLen
	}
	h.End = ipv6HdrLen + payload
	if h.End > len(b) {
		return h, BadIPLength
	}
	if r := walkChain6(b, &h); r != OK || h.L4 < 0 {
		return h, r
	}
	return h, checkL4v6(b[h.L4:h.End], h.Proto)
}

// walkChain6 follows the extension headers of the IPv6 packet b (whose fixed header is whole)
// up to h.End and fills h, but does not look at the upper-layer header: ICMPv6 errors quote
// packets cut short anywhere. h must come with L4 and FragHdr at -1.
func walkChain6(b []byte, h *IPv6Headers) Reason {
	next, off := b[6], ipv6HdrLen
	segsLeft := false
	for {
		switch next {
		case extHopByHop, extRouting, extDestOpts:
			if next == extHopByHop && h.ExtHeaders != 0 {
				return BadExtHeader // RFC 8200 4.1: hop-by-hop only right after the IPv6 header
			}
			if off+8 > h.End {
				return BadExtHeader
			}
			n := (int(b[off+1]) + 1) * 8
			if off+n > h.End {
				return BadExtHeader
			}
			if next == extRouting && b[off+3] != 0 && !segsLeft && h.FragHdr < 0 {
				// The first routing header with segments left decides (a second one is
				// malformed: RFC 8200 4.1 allows one, before any fragment header).
				segsLeft = true
				switch b[off+2] {
				case 0, 2, 4:
					h.Routed = n >= 24
				}
			}
			next, off = b[off], off+n
		case extFragment:
			if off+8 > h.End || h.FragHdr >= 0 {
				return BadExtHeader
			}
			fo := binary.BigEndian.Uint16(b[off+2:])
			if fo&0x6 != 0 {
				return BadExtHeader // reserved bits
			}
			h.FragHdr = off
			h.FragOff = fo >> 3
			h.MoreFrags = fo&1 != 0
			h.FragID = binary.BigEndian.Uint32(b[off+4:])
			next, off = b[off], off+8
			if h.FragOff != 0 {
				// A later fragment: the rest is data, no header (the upper-layer one is in
				// the first fragment).
				h.Proto = next
				h.ExtHeaders++
				if h.ExtHeaders > MaxIPv6ExtHeaders {
					return ExtChainTooLong
				}
				return OK
			}
		default:
			h.Proto = next
			h.L4 = off
			return OK
		}
		h.ExtHeaders++
		if h.ExtHeaders > MaxIPv6ExtHeaders {
			return ExtChainTooLong
		}
	}
}

// checkL4v6 reports whether seg holds the whole upper-layer header of protocol proto (for the
// protocols l2shim rewrites; others are not checked).
func checkL4v6(seg []byte, proto uint8) Reason {
	switch proto {
	case ProtoTCP:
		if len(seg) < tcpMinLen {
			return ShortL4
		}
		if doff := int(seg[12]>>4) * 4; doff < tcpMinLen || doff > len(seg) {
			return BadTCPOffset
		}
	case ProtoUDP:
		if len(seg) < udpLen {
			return ShortL4
		}
	case ProtoICMPv6:
		if len(seg) < icmpMinLen {
			return ShortL4
		}
	}
	return OK
}

// PseudoHeaderSum6 returns the unfolded sum of the IPv6 pseudo-header (RFC 8200 8.1) that TCP,
// UDP and ICMPv6 checksums cover: both addresses, the upper-layer length and the next header.
func PseudoHeaderSum6(src, dst [16]byte, proto uint8, l4len int) uint64 {
	var s uint64
	for i := 0; i < 16; i += 2 {
		s += uint64(binary.BigEndian.Uint16(src[i:])) + uint64(binary.BigEndian.Uint16(dst[i:]))
	}
	return s + uint64(uint32(l4len)>>16) + uint64(uint32(l4len)&0xffff) + uint64(proto)
}

// diff16 returns the unfolded ones-complement difference of a 16-byte field such as an IPv6
// address.
func diff16(old, new [16]byte) uint32 {
	var d uint32
	for i := 0; i < 16; i += 2 {
		d += diff2(binary.BigEndian.Uint16(old[i:]), binary.BigEndian.Uint16(new[i:]))
	}
	return d
}

// UpdateFullAddr6 returns a complemented checksum field (TCP, UDP, ICMPv6) after an IPv6
// address its pseudo-header covers changed from old to new (RFC 1624 over the eight words).
func UpdateFullAddr6(csum uint16, old, new [16]byte) uint16 {
	if old == new {
		return csum
	}
	return applyFull(csum, diff16(old, new))
}

// UpdatePartialAddr6 is UpdateFullAddr6 for the uncomplemented pseudo-header sum a
// CHECKSUM_PARTIAL frame holds in its checksum field.
func UpdatePartialAddr6(sum uint16, old, new [16]byte) uint16 {
	if old == new {
		return sum
	}
	return applyPartial(sum, diff16(old, new))
}
