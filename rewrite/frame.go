package rewrite

import "encoding/binary"

// Sizes and offsets of the headers Parse understands.
const (
	EthHdrLen = 14 // destination MAC, source MAC, ethertype; frames are untagged

	etherTypeIPv4 = 0x0800
	etherTypeVLAN = 0x8100 // 802.1Q
	etherTypeQinQ = 0x88a8 // 802.1ad
	etherType9100 = 0x9100 // pre-standard double tagging

	ipv4MinLen = 20
	tcpMinLen  = 20
	udpLen     = 8
	icmpMinLen = 8
)

// IP protocol numbers the rewrite path treats specially.
const (
	ProtoICMP = 1
	ProtoTCP  = 6
	ProtoUDP  = 17
)

// TCP flags, as in Frame.TCPFlags.
const (
	TCPFin = 0x01
	TCPSyn = 0x02
	TCPRst = 0x04
	TCPPsh = 0x08
	TCPAck = 0x10
	TCPUrg = 0x20
	TCPEce = 0x40
	TCPCwr = 0x80
)

// ICMP types the rewrite path looks at.
const (
	ICMPEchoReply      = 0
	ICMPDestUnreach    = 3
	ICMPSourceQuench   = 4
	ICMPRedirect       = 5
	ICMPEchoRequest    = 8
	ICMPTimeExceeded   = 11
	ICMPParamProblem   = 12
	ICMPFragNeededCode = 4 // code of ICMPDestUnreach: fragmentation needed and DF set
)

// ICMPv6 types the rewrite path looks at (RFC 4443, 4861, 2710, 3810). Errors are the types
// below 128; the four defined ones quote the packet that caused them.
const (
	ICMPv6DestUnreach     = 1
	ICMPv6PacketTooBig    = 2
	ICMPv6TimeExceeded    = 3
	ICMPv6ParamProblem    = 4
	ICMPv6EchoRequest     = 128
	ICMPv6EchoReply       = 129
	ICMPv6MLDQuery        = 130
	ICMPv6MLDReport       = 131
	ICMPv6MLDDone         = 132
	ICMPv6RouterSolicit   = 133
	ICMPv6RouterAdvert    = 134
	ICMPv6NeighborSolicit = 135
	ICMPv6NeighborAdvert  = 136
	ICMPv6Redirect        = 137
	ICMPv6MLDv2Report     = 143
)

// Reason says why Parse rejected a frame. It is a small integer so that the datapath can keep
// one drop counter per reason in an array indexed by it, without allocating or hashing.
type Reason uint8

// The reasons Parse returns. OK is the zero value.
const (
	OK              Reason = iota // parsed; the frame may be rewritten
	ShortFrame                    // shorter than the Ethernet header, an IPv4 header or its IHL
	NotIPv4                       // the ethertype is not IPv4 (ARP, IPv6, ...); for ParseAny, neither IPv4 nor IPv6
	BadIPHeader                   // IHL below 5 words
	BadIPLength                   // total length below the IHL, or beyond the bytes available
	ShortL4                       // the datagram ends inside the TCP, UDP or ICMP header
	BadVnetHdr                    // the virtio-net header contradicts the frame (see Parse)
	VLANTagged                    // an 802.1Q/802.1ad tag: the shim never owns tagged frames
	BadIPVersion                  // ethertype IPv4 but the version nibble is not 4
	BadTCPOffset                  // TCP data offset below 5 words or beyond the datagram
	BadExtHeader                  // an IPv6 extension header runs past the packet, or is misplaced or malformed (ParseAny, WalkIPv6)
	ExtChainTooLong               // more than MaxIPv6ExtHeaders IPv6 extension headers (ParseAny, WalkIPv6)
	NumReasons                    // the number of reasons, for sizing counter arrays
)

var reasonNames = [NumReasons]string{
	OK:              "ok",
	ShortFrame:      "short_frame",
	NotIPv4:         "not_ipv4",
	BadIPHeader:     "bad_ip_header",
	BadIPLength:     "bad_ip_length",
	ShortL4:         "short_l4",
	BadVnetHdr:      "bad_vnet_hdr",
	VLANTagged:      "vlan_tagged",
	BadIPVersion:    "bad_ip_version",
	BadTCPOffset:    "bad_tcp_offset",
	BadExtHeader:    "bad_ext_header",
	ExtChainTooLong: "ext_chain_too_long",
}

// String returns a short snake_case name, suitable as a metrics label.
func (r Reason) String() string {
	if r < NumReasons {
		return reasonNames[r]
	}
	return "unknown"
}

// Frame is a parsed view of one Ethernet frame. It holds offsets into Buf and copies of the few
// header fields the datapath decides on; it never copies the frame or allocates, so one Frame
// can be reused for every frame a goroutine handles. The setters keep the copies in step with
// the bytes.
type Frame struct {
	Buf  []byte  // the Ethernet frame (no vnet header)
	Vnet VnetHdr // the frame's virtio-net header, to be written back unchanged (or via FitGSO)

	L3  int // offset of the IPv4 or IPv6 header (EthHdrLen), -1 before a successful Parse
	L4  int // offset of the L4 header (the IP payload for other protocols); -1 for a non-first fragment
	End int // offset just past the IP datagram; bytes after it are Ethernet padding

	// IPv6 is set for an IPv6 frame, which only ParseAny accepts. Its addresses are in Src6 and
	// Dst6 (Src and Dst stay zero), its upper-layer protocol in Proto (ProtoICMPv6 for ICMPv6,
	// whose echo identifier, type and code fill SrcPort, DstPort, ICMPType and ICMPCode as ICMP
	// does for IPv4), and L4 is the upper-layer header after the extension headers. The IPv4
	// setters do nothing on an IPv6 frame and the IPv6 ones nothing on an IPv4 frame.
	IPv6 bool

	Proto            uint8 // IP protocol (IPv6: the upper-layer protocol, see IPv6Headers.Proto)
	Src, Dst         [4]byte
	Src6, Dst6       [16]byte // IPv6 frames only
	SrcPort, DstPort uint16   // TCP/UDP ports; ICMP and ICMPv6 echo request/reply: both hold the identifier
	TCPFlags         uint8
	ICMPType         uint8
	ICMPCode         uint8
	FragOff          uint16 // fragment offset in 8-byte units
	MoreFrags        bool
	DontFrag         bool   // IPv4: the DF bit; always set for IPv6, which routers never fragment
	IPID             uint16 // IPv4 only
	FragID           uint32 // IPv6 only: the fragment header's identification, when there is one

	// routed is IPv6Headers.Routed for an IPv6 frame: the destination field is not in the
	// transport pseudo-header. innerRouted is the same for the quoted packet.
	routed, innerRouted bool

	// PartialCsum is set for a CHECKSUM_PARTIAL frame (NEEDS_CSUM) whose csum_start and
	// csum_offset point exactly at this frame's TCP, UDP or ICMP checksum field. That field then
	// holds the uncomplemented pseudo-header sum, not a checksum, and the setters update it as
	// such (see SetSrc).
	PartialCsum bool
	// Encap is set for a NEEDS_CSUM frame whose csum_start is not at the outer L4 header: the
	// partial checksum belongs to a packet inside a tunnel (VXLAN, GENEVE, GRE, ...), and a GSO
	// type on such a frame describes the inner packet. The kernel refuses to send an
	// encapsulated TSO frame back (ENOMEM), so the datapath must segment it in software or leave
	// it undiverted; it must not NAT it. The setters would treat the outer checksum as a full
	// one, which is right for the outer UDP checksum of a tunnel, but nothing more is promised.
	// An Encap frame is never PartialCsum. (A NEEDS_CSUM non-first fragment, which the kernel
	// never produces because it completes checksums before fragmenting, also counts as Encap.)
	Encap bool

	// The packet quoted by an ICMP error (destination unreachable, source quench, redirect, time
	// exceeded, parameter problem), for NAT of errors that concern a translated flow.
	// InnerL3 is the offset of the quoted IPv4 header, -1 when the frame is not an ICMP error or
	// the quote does not hold a whole IPv4 header. InnerL4 is the offset of the quoted L4 header,
	// -1 when absent or when the quoted packet is a non-first fragment; it may be truncated, so
	// the ports are filled only when quoted (RFC 792 guarantees the first 8 bytes).
	//
	// For an IPv6 frame the same fields describe the packet an ICMPv6 error (destination
	// unreachable, packet too big, time exceeded, parameter problem) quotes, with its addresses
	// in InnerSrc6 and InnerDst6 (InnerSrc and InnerDst stay zero): InnerL3 is set when the quote
	// holds a whole IPv6 header, InnerL4 when its extension headers lie within the quote too and
	// it is not a non-first fragment; InnerProto is the upper-layer protocol then (otherwise the
	// next-header value where the walk stopped), and the ports, or an ICMPv6 echo's identifier,
	// are filled when quoted.
	InnerL3, InnerL4           int
	InnerProto                 uint8
	InnerSrc, InnerDst         [4]byte
	InnerSrc6, InnerDst6       [16]byte // IPv6 frames only
	InnerSrcPort, InnerDstPort uint16   // as SrcPort and DstPort, for the quoted packet
}

// Parse fills f from buf, an untagged Ethernet frame, and vnet, the virtio-net header it came
// with. It accepts IPv4 only (an IPv6 frame gives NotIPv4; ParseAny accepts IPv6 too). It keeps
// only offsets into buf. It returns OK when the frame can be rewritten, or the reason it cannot.
// On any other result the offsets are -1 and the setters do nothing, while the header fields
// parsed before the problem showed (addresses, protocol, ports) stay for logging. Parse never
// panics and never allocates.
//
// It checks:
//   - the ethertype is IPv4 (VLANTagged for 802.1Q/802.1ad tags, NotIPv4 otherwise);
//   - the IPv4 version, IHL and total length; Ethernet padding after the datagram is allowed
//     and ignored (End marks where the datagram stops); a GSO frame may have a total length of
//     0 (BIG TCP, and a Windows-style TSO habit), and then the datagram is the rest of buf;
//   - unless the frame is a non-first fragment, that the TCP (with its data offset), UDP or ICMP
//     header lies within the datagram; no checksum is verified, since the incremental updates
//     keep a wrong checksum exactly as wrong and the receiver drops the frame as it would have;
//   - the virtio-net header: a NEEDS_CSUM checksum field must lie inside the datagram and, when
//     csum_start is at this frame's L4 header, csum_offset must be that protocol's checksum
//     offset; a GSO type must be a known one with a non-zero gso_size on an unfragmented
//     datagram of the matching protocol (TCPv4 on TCP, UDP and UDP_L4 on UDP) unless the frame
//     is Encap, whose GSO type describes the inner packet.
func (f *Frame) Parse(buf []byte, vnet VnetHdr) Reason {
	r := f.parse(buf, vnet)
	if r != OK {
		// Keep what was parsed for logging, but make the setters no-ops.
		f.L3, f.L4, f.InnerL3, f.InnerL4 = -1, -1, -1, -1
		f.PartialCsum, f.Encap = false, false
	}
	return r
}

// ParseAny is Parse for IPv4 and IPv6 frames: an IPv4 frame gives exactly what Parse gives, an
// IPv6 frame (ethertype 0x86dd) is parsed too and sets f.IPv6. It never panics and never
// allocates. For IPv6 it checks, with the same reasons as for IPv4:
//   - the version (BadIPVersion), the fixed header (ShortFrame) and the payload length
//     (BadIPLength; a GSO frame may have a payload length of 0, and then the packet is the rest
//     of buf; Ethernet padding after the packet is allowed and ignored);
//   - the extension headers, as WalkIPv6 does (BadExtHeader, ExtChainTooLong);
//   - unless the frame is a non-first fragment, that the TCP (with its data offset), UDP or
//     ICMPv6 header lies within the packet (ShortL4, BadTCPOffset);
//   - the virtio-net header as for IPv4 (BadVnetHdr), the checksum offsets being TCP's, UDP's
//     and ICMPv6's and the GSO types GSOTCPv6 on TCP and GSOUDPL4 on UDP (GSOTCPv4 and UDP
//     fragmentation offload are refused on an IPv6 frame), unless the frame is Encap.
//
// An IPv6 frame has L3 EthHdrLen, L4 at the upper-layer header after the extension headers (-1
// for a non-first fragment), End from the payload length, Proto the upper-layer protocol,
// FragOff, MoreFrags and FragID from a fragment header, DontFrag set; ICMPv6 echo requests and
// replies give their identifier as SrcPort and DstPort, and the four ICMPv6 errors fill the
// Inner fields from their quote.
func (f *Frame) ParseAny(buf []byte, vnet VnetHdr) Reason {
	r := f.parseAny(buf, vnet)
	if r != OK {
		f.L3, f.L4, f.InnerL3, f.InnerL4 = -1, -1, -1, -1
		f.PartialCsum, f.Encap = false, false
	}
	return r
}

func (f *Frame) parseAny(buf []byte, vnet VnetHdr) Reason {
	if len(buf) >= EthHdrLen && binary.BigEndian.Uint16(buf[12:]) == etherTypeIPv6 {
		return f.parse6(buf, vnet)
	}
	return f.parse(buf, vnet)
}

func (f *Frame) parse(buf []byte, vnet VnetHdr) Reason {
	*f = Frame{Buf: buf, Vnet: vnet, L3: -1, L4: -1, InnerL3: -1, InnerL4: -1}
	if len(buf) < EthHdrLen {
		return ShortFrame
	}
	switch binary.BigEndian.Uint16(buf[12:]) {
	case etherTypeIPv4:
	case etherTypeVLAN, etherTypeQinQ, etherType9100:
		return VLANTagged
	default:
		return NotIPv4
	}
	if len(buf) < EthHdrLen+ipv4MinLen {
		return ShortFrame
	}
	ip := buf[EthHdrLen:]
	if ip[0]>>4 != 4 {
		return BadIPVersion
	}
	ihl := int(ip[0]&0x0f) * 4
	if ihl < ipv4MinLen {
		return BadIPHeader
	}
	if ihl > len(ip) {
		return ShortFrame
	}
	totLen := int(binary.BigEndian.Uint16(ip[2:]))
	if totLen == 0 && vnet.GSOType != GSONone {
		totLen = len(ip)
	}
	if totLen < ihl || totLen > len(ip) {
		return BadIPLength
	}

	f.L3 = EthHdrLen
	f.End = EthHdrLen + totLen
	f.Proto = ip[9]
	f.Src = [4]byte(ip[12:16])
	f.Dst = [4]byte(ip[16:20])
	f.IPID = binary.BigEndian.Uint16(ip[4:])
	fo := binary.BigEndian.Uint16(ip[6:])
	f.DontFrag = fo&ipFlagDF != 0
	f.MoreFrags = fo&ipFlagMF != 0
	f.FragOff = fo & ipFragOffMask

	if f.FragOff == 0 {
		l4 := EthHdrLen + ihl
		seg := buf[l4:f.End]
		switch f.Proto {
		case ProtoTCP:
			if len(seg) < tcpMinLen {
				return ShortL4
			}
			if doff := int(seg[12]>>4) * 4; doff < tcpMinLen || doff > len(seg) {
				return BadTCPOffset
			}
			f.SrcPort = binary.BigEndian.Uint16(seg)
			f.DstPort = binary.BigEndian.Uint16(seg[2:])
			f.TCPFlags = seg[13]
		case ProtoUDP:
			if len(seg) < udpLen {
				return ShortL4
			}
			f.SrcPort = binary.BigEndian.Uint16(seg)
			f.DstPort = binary.BigEndian.Uint16(seg[2:])
		case ProtoICMP:
			if len(seg) < icmpMinLen {
				return ShortL4
			}
			f.ICMPType, f.ICMPCode = seg[0], seg[1]
			switch f.ICMPType {
			case ICMPEchoRequest, ICMPEchoReply:
				f.SrcPort = binary.BigEndian.Uint16(seg[4:])
				f.DstPort = f.SrcPort
			case ICMPDestUnreach, ICMPSourceQuench, ICMPRedirect, ICMPTimeExceeded, ICMPParamProblem:
				f.parseQuote(l4 + icmpMinLen)
			}
		}
		f.L4 = l4
	}
	return f.checkVnet()
}

// parseQuote fills the Inner fields from the packet an ICMP error quotes at offset q. A quote
// too short or malformed to use leaves InnerL3 at -1; the frame itself is still fine.
func (f *Frame) parseQuote(q int) {
	b := f.Buf[q:f.End]
	if len(b) < ipv4MinLen || b[0]>>4 != 4 {
		return
	}
	ihl := int(b[0]&0x0f) * 4
	if ihl < ipv4MinLen || ihl > len(b) {
		return
	}
	f.InnerL3 = q
	f.InnerProto = b[9]
	f.InnerSrc = [4]byte(b[12:16])
	f.InnerDst = [4]byte(b[16:20])
	if binary.BigEndian.Uint16(b[6:])&ipFragOffMask != 0 {
		return
	}
	f.InnerL4 = q + ihl
	seg := b[ihl:]
	switch f.InnerProto {
	case ProtoTCP, ProtoUDP:
		if len(seg) >= 4 {
			f.InnerSrcPort = binary.BigEndian.Uint16(seg)
			f.InnerDstPort = binary.BigEndian.Uint16(seg[2:])
		}
	case ProtoICMP:
		if len(seg) >= 6 && (seg[0] == ICMPEchoRequest || seg[0] == ICMPEchoReply) {
			f.InnerSrcPort = binary.BigEndian.Uint16(seg[4:])
			f.InnerDstPort = f.InnerSrcPort
		}
	}
}

// parse6 parses buf, an Ethernet frame with ethertype IPv6, for ParseAny.
func (f *Frame) parse6(buf []byte, vnet VnetHdr) Reason {
	*f = Frame{Buf: buf, Vnet: vnet, L3: -1, L4: -1, InnerL3: -1, InnerL4: -1, IPv6: true, DontFrag: true}
	ip := buf[EthHdrLen:]
	if len(ip) >= ipv6HdrLen {
		f.Src6 = [16]byte(ip[8:24])
		f.Dst6 = [16]byte(ip[24:40])
	}
	h, r := WalkIPv6(ip, vnet.GSOType != GSONone)
	switch r {
	case OK, ShortL4, BadTCPOffset:
		f.Proto = h.Proto // for logging
	}
	if r != OK {
		return r
	}
	f.L3 = EthHdrLen
	f.End = EthHdrLen + h.End
	f.routed = h.Routed
	if h.FragHdr >= 0 {
		f.FragOff, f.MoreFrags, f.FragID = h.FragOff, h.MoreFrags, h.FragID
	}
	if h.L4 >= 0 {
		l4 := EthHdrLen + h.L4
		seg := buf[l4:f.End] // WalkIPv6 checked the TCP, UDP or ICMPv6 header is whole
		switch f.Proto {
		case ProtoTCP:
			f.SrcPort = binary.BigEndian.Uint16(seg)
			f.DstPort = binary.BigEndian.Uint16(seg[2:])
			f.TCPFlags = seg[13]
		case ProtoUDP:
			f.SrcPort = binary.BigEndian.Uint16(seg)
			f.DstPort = binary.BigEndian.Uint16(seg[2:])
		case ProtoICMPv6:
			f.ICMPType, f.ICMPCode = seg[0], seg[1]
			switch f.ICMPType {
			case ICMPv6EchoRequest, ICMPv6EchoReply:
				f.SrcPort = binary.BigEndian.Uint16(seg[4:])
				f.DstPort = f.SrcPort
			case ICMPv6DestUnreach, ICMPv6PacketTooBig, ICMPv6TimeExceeded, ICMPv6ParamProblem:
				f.parseQuote6(l4 + icmpMinLen)
			}
		}
		f.L4 = l4
	}
	return f.checkVnet()
}

// parseQuote6 fills the Inner fields from the IPv6 packet an ICMPv6 error quotes at offset q.
// The quote may be cut short anywhere (RFC 4443 quotes as much as fits in 1280 bytes): the
// extension headers must lie within it for InnerL4, the ports are read when there.
func (f *Frame) parseQuote6(q int) {
	b := f.Buf[q:f.End]
	if len(b) < ipv6HdrLen || b[0]>>4 != 6 {
		return
	}
	f.InnerL3 = q
	f.InnerSrc6 = [16]byte(b[8:24])
	f.InnerDst6 = [16]byte(b[24:40])
	// The quote is taken to the end of the ICMPv6 message, whatever the quoted payload length
	// says (it is the original packet's, and the quote may be cut short), as for IPv4.
	h := IPv6Headers{L4: -1, FragHdr: -1, End: len(b)}
	r := walkChain6(b, &h)
	f.InnerProto = h.Proto
	f.innerRouted = h.Routed
	if r != OK || h.L4 < 0 {
		return
	}
	f.InnerL4 = q + h.L4
	seg := b[h.L4:h.End]
	switch f.InnerProto {
	case ProtoTCP, ProtoUDP:
		if len(seg) >= 4 {
			f.InnerSrcPort = binary.BigEndian.Uint16(seg)
			f.InnerDstPort = binary.BigEndian.Uint16(seg[2:])
		}
	case ProtoICMPv6:
		if len(seg) >= 6 && (seg[0] == ICMPv6EchoRequest || seg[0] == ICMPv6EchoReply) {
			f.InnerSrcPort = binary.BigEndian.Uint16(seg[4:])
			f.InnerDstPort = f.InnerSrcPort
		}
	}
}

// l4CsumOffset returns the offset of the checksum field within the L4 header of proto, or -1
// for protocols whose checksum the rewrite path does not maintain.
func l4CsumOffset(proto uint8) int {
	switch proto {
	case ProtoTCP:
		return 16
	case ProtoUDP:
		return 6
	case ProtoICMP:
		return 2
	}
	return -1
}

// l4CsumOffset6 is l4CsumOffset for an IPv6 upper-layer protocol.
func l4CsumOffset6(proto uint8) int {
	switch proto {
	case ProtoTCP:
		return 16
	case ProtoUDP:
		return 6
	case ProtoICMPv6:
		return 2
	}
	return -1
}

// checkVnet validates f.Vnet against the parsed frame and sets PartialCsum and Encap.
func (f *Frame) checkVnet() Reason {
	v := f.Vnet
	if v.Flags&VnetNeedsCsum != 0 {
		start, off := int(v.CsumStart), int(v.CsumOffset)
		// The kernel itself rejects a checksum field outside the frame; outside the datagram
		// (in the padding) it would be completed over garbage.
		if start+off+2 > f.End {
			return BadVnetHdr
		}
		if f.L4 >= 0 && start == f.L4 {
			want := l4CsumOffset(f.Proto)
			if f.IPv6 {
				want = l4CsumOffset6(f.Proto)
			}
			switch {
			case want < 0:
				f.Encap = true // a partial checksum of some other protocol (GRE): hands off
			case off != want:
				return BadVnetHdr
			default:
				f.PartialCsum = true
			}
		} else {
			f.Encap = true
		}
	}
	if v.GSOType == GSONone {
		return OK
	}
	if v.GSOSize == 0 || f.MoreFrags || f.FragOff != 0 {
		return BadVnetHdr
	}
	switch v.GSOType & gsoTypeMk {
	case GSOTCPv4:
		if f.Encap || (f.Proto == ProtoTCP && !f.IPv6) {
			return OK
		}
	case GSOUDP:
		if f.Encap || (f.Proto == ProtoUDP && !f.IPv6) {
			return OK
		}
	case GSOUDPL4:
		if f.Encap || f.Proto == ProtoUDP {
			return OK
		}
	case GSOTCPv6:
		if f.Encap || (f.Proto == ProtoTCP && f.IPv6) {
			return OK
		}
	}
	return BadVnetHdr
}

// valid reports whether f describes a parsed frame that still fits its buffer, so that the
// setters can index without panicking even when called on a zero or failed Frame.
func (f *Frame) valid() bool {
	hdr := ipv4MinLen
	if f.IPv6 {
		hdr = ipv6HdrLen
	}
	return f.L3 == EthHdrLen && f.End >= f.L3+hdr && f.End <= len(f.Buf) &&
		f.L4 <= f.End && (f.L4 < 0 || f.L4 >= f.L3+hdr)
}

// valid4 is valid for an IPv4 frame, valid6 for an IPv6 frame.
func (f *Frame) valid4() bool { return !f.IPv6 && f.valid() }
func (f *Frame) valid6() bool { return f.IPv6 && f.valid() }

// Addrs16 returns the frame's addresses as flow keys hold them: an IPv4 address IPv4-mapped
// (::ffff:a.b.c.d), an IPv6 frame's as they are. An IPv6 frame that carries an IPv4-mapped
// address would give an IPv4 flow's key: see HasIPv4MappedAddr.
func (f *Frame) Addrs16() (src, dst [16]byte) {
	if f.IPv6 {
		return f.Src6, f.Dst6
	}
	return mapped4(f.Src), mapped4(f.Dst)
}

// InnerAddrs16 is Addrs16 for the packet an ICMP or ICMPv6 error quotes.
func (f *Frame) InnerAddrs16() (src, dst [16]byte) {
	if f.IPv6 {
		return f.InnerSrc6, f.InnerDst6
	}
	return mapped4(f.InnerSrc), mapped4(f.InnerDst)
}

// mapped4 returns a as an IPv4-mapped IPv6 address.
func mapped4(a [4]byte) [16]byte {
	return [16]byte{10: 0xff, 11: 0xff, 12: a[0], 13: a[1], 14: a[2], 15: a[3]}
}

// SrcMAC returns the frame's source MAC address.
func (f *Frame) SrcMAC() [6]byte {
	if len(f.Buf) < 12 {
		return [6]byte{}
	}
	return [6]byte(f.Buf[6:12])
}

// DstMAC returns the frame's destination MAC address.
func (f *Frame) DstMAC() [6]byte {
	if len(f.Buf) < 6 {
		return [6]byte{}
	}
	return [6]byte(f.Buf[0:6])
}

// SetMACs overwrites the source and destination MAC addresses. No checksum covers them.
func (f *Frame) SetMACs(src, dst [6]byte) {
	if len(f.Buf) < 12 {
		return
	}
	copy(f.Buf[0:6], dst[:])
	copy(f.Buf[6:12], src[:])
}
