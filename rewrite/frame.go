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

// Reason says why Parse rejected a frame. It is a small integer so that the datapath can keep
// one drop counter per reason in an array indexed by it, without allocating or hashing.
type Reason uint8

// The reasons Parse returns. OK is the zero value.
const (
	OK              Reason = iota // parsed; the frame may be rewritten
	ShortFrame                    // shorter than the Ethernet header, an IPv4 header or its IHL
	NotIPv4                       // the ethertype is not IPv4 (ARP, IPv6, ...)
	BadIPHeader                   // IHL below 5 words
	BadIPLength                   // total length below the IHL, or beyond the bytes available
	ShortL4                       // the datagram ends inside the TCP, UDP or ICMP header
	BadVnetHdr                    // the virtio-net header contradicts the frame (see Parse)
	VLANTagged                    // an 802.1Q/802.1ad tag: the shim never owns tagged frames
	BadIPVersion                  // ethertype IPv4 but the version nibble is not 4
	BadTCPOffset                  // TCP data offset below 5 words or beyond the datagram
	BadExtHeader                  // an IPv6 extension header runs past the packet, or is misplaced or malformed
	ExtChainTooLong               // more than MaxIPv6ExtHeaders IPv6 extension headers
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

	L3  int // offset of the IPv4 header (EthHdrLen), -1 before a successful Parse
	L4  int // offset of the L4 header (the IP payload for other protocols); -1 for a non-first fragment
	End int // offset just past the IPv4 datagram; bytes after it are Ethernet padding

	Proto            uint8 // IP protocol
	Src, Dst         [4]byte
	SrcPort, DstPort uint16 // TCP/UDP ports; ICMP echo request/reply: both hold the identifier
	TCPFlags         uint8
	ICMPType         uint8
	ICMPCode         uint8
	FragOff          uint16 // fragment offset in 8-byte units
	MoreFrags        bool
	DontFrag         bool
	IPID             uint16

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
	InnerL3, InnerL4           int
	InnerProto                 uint8
	InnerSrc, InnerDst         [4]byte
	InnerSrcPort, InnerDstPort uint16 // as SrcPort and DstPort, for the quoted packet
}

// Parse fills f from buf, an untagged Ethernet frame, and vnet, the virtio-net header it came
// with. It keeps only offsets into buf. It returns OK when the frame can be rewritten, or the
// reason it cannot. On any other result the offsets are -1 and the setters do nothing, while the
// header fields parsed before the problem showed (addresses, protocol, ports) stay for logging.
// Parse never panics and never allocates.
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
	f.DontFrag = fo&0x4000 != 0
	f.MoreFrags = fo&0x2000 != 0
	f.FragOff = fo & 0x1fff

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
	if binary.BigEndian.Uint16(b[6:])&0x1fff != 0 {
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
		if f.Encap || f.Proto == ProtoTCP {
			return OK
		}
	case GSOUDP, GSOUDPL4:
		if f.Encap || f.Proto == ProtoUDP {
			return OK
		}
	case GSOTCPv6:
		if f.Encap {
			return OK
		}
	}
	return BadVnetHdr
}

// valid reports whether f describes a parsed frame that still fits its buffer, so that the
// setters can index without panicking even when called on a zero or failed Frame.
func (f *Frame) valid() bool {
	return f.L3 == EthHdrLen && f.End >= f.L3+ipv4MinLen && f.End <= len(f.Buf) &&
		f.L4 <= f.End && (f.L4 < 0 || f.L4 >= f.L3+ipv4MinLen)
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
