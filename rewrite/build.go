package rewrite

import "encoding/binary"

// The frames l2shim makes itself are built here, with no allocation, into buffers the caller
// owns: TCP resets (toward the host for flows of a dead gateway, upstream for a late SYN-ACK),
// ICMP echo requests (gateway probes), and ICMP fragmentation-needed errors (BuildFragNeeded);
// for IPv6 the same with BuildRST6, BuildEchoRequest6 and BuildPacketTooBig.

// RSTLen is the length of the frame BuildRST writes.
const RSTLen = EthHdrLen + ipv4MinLen + tcpMinLen

// Endpoints name both ends of a frame l2shim builds: Ethernet, IPv4 and (for TCP) ports.
type Endpoints struct {
	SrcMAC, DstMAC   [6]byte
	Src, Dst         [4]byte
	SrcPort, DstPort uint16
}

// BuildRST writes an Ethernet frame carrying a TCP RST with sequence number seq into out (at
// least RSTLen bytes) and returns its length. With ack != 0 the RST also acknowledges ack.
func BuildRST(out []byte, ep Endpoints, seq, ack uint32) int {
	b := out[:RSTLen]
	clear(b)
	ipHdr := putEthIPv4(b, ep, ProtoTCP, ipv4MinLen+tcpMinLen, 0)
	tcp := ipHdr[ipv4MinLen:]
	binary.BigEndian.PutUint16(tcp[0:], ep.SrcPort)
	binary.BigEndian.PutUint16(tcp[2:], ep.DstPort)
	binary.BigEndian.PutUint32(tcp[4:], seq)
	tcp[12] = (tcpMinLen / 4) << 4
	tcp[13] = TCPRst
	if ack != 0 {
		binary.BigEndian.PutUint32(tcp[8:], ack)
		tcp[13] |= TCPAck
	}
	binary.BigEndian.PutUint16(tcp[16:], Checksum(tcp, PseudoHeaderSum(ep.Src, ep.Dst, ProtoTCP, tcpMinLen)))
	return RSTLen
}

// echoPayload marks the shim's probes for anyone who captures them.
const echoPayload = "l2shim gateway probe, not a host"

// EchoRequestLen is the length of the frame BuildEchoRequest writes.
const EchoRequestLen = EthHdrLen + ipv4MinLen + icmpMinLen + len(echoPayload)

// BuildEchoRequest writes an Ethernet frame carrying an ICMP echo request with identifier id
// and sequence number seq (also the IP ID) into out (at least EchoRequestLen bytes) and returns
// its length.
func BuildEchoRequest(out []byte, ep Endpoints, id, seq uint16) int {
	b := out[:EchoRequestLen]
	clear(b)
	ipHdr := putEthIPv4(b, ep, ProtoICMP, ipv4MinLen+icmpMinLen+len(echoPayload), seq)
	icmp := ipHdr[ipv4MinLen:]
	icmp[0] = ICMPEchoRequest
	binary.BigEndian.PutUint16(icmp[4:], id)
	binary.BigEndian.PutUint16(icmp[6:], seq)
	copy(icmp[icmpMinLen:], echoPayload)
	binary.BigEndian.PutUint16(icmp[2:], Checksum(icmp, 0))
	return EchoRequestLen
}

// putEthIPv4 writes the Ethernet header and an option-less IPv4 header with DF set, TTL 64 and
// its checksum into b, for an IP datagram of ipLen bytes, and returns b from the IPv4 header on.
func putEthIPv4(b []byte, ep Endpoints, proto uint8, ipLen int, id uint16) []byte {
	copy(b[0:6], ep.DstMAC[:])
	copy(b[6:12], ep.SrcMAC[:])
	binary.BigEndian.PutUint16(b[12:], etherTypeIPv4)
	ip := b[EthHdrLen:]
	ip[0] = 0x40 | ipv4MinLen/4 // version 4, IHL 5
	binary.BigEndian.PutUint16(ip[2:], uint16(ipLen))
	binary.BigEndian.PutUint16(ip[4:], id)
	ip[6] = 0x40 // DF
	ip[8] = 64   // TTL
	ip[9] = proto
	copy(ip[12:16], ep.Src[:])
	copy(ip[16:20], ep.Dst[:])
	binary.BigEndian.PutUint16(ip[10:], Checksum(ip[:ipv4MinLen], 0))
	return ip
}

// FragNeededLen returns the length of the frame BuildFragNeeded writes for f, 0 when it would
// write none (an IPv6 frame among others: see PacketTooBigLen).
func (f *Frame) FragNeededLen() int {
	if !f.valid4() || f.FragOff != 0 {
		// RFC 1122 3.2.2: no ICMP error about a non-initial fragment.
		return 0
	}
	if f.Proto == ProtoICMP && f.ICMPType != ICMPEchoRequest && f.ICMPType != ICMPEchoReply {
		// No ICMP error about an ICMP error (RFC 1122 3.2.2), nor about other ICMP messages
		// the host would not act on anyway.
		return 0
	}
	quote := min(f.End-f.L3, int(f.Buf[f.L3]&0x0f)*4+8)
	return EthHdrLen + ipv4MinLen + icmpMinLen + quote
}

// BuildFragNeeded writes into out an ICMP "fragmentation needed and DF set" error (type 3,
// code 4) about f, announcing mtu as the next-hop MTU, and returns its length, or 0 when out is
// too short or no error may be sent about f (see FragNeededLen). The datapath injects it into
// the host when a DF frame does not fit the uplink it was placed on, because the kernel gives the
// host no such signal for a frame the shim sends (EMSGSIZE reaches only the shim). The frame
// goes back the way f came: its Ethernet addresses are f's swapped, the IPv4 source is from
// and the destination f's source; it quotes f's IPv4 header and the first 8 bytes of its
// payload, which hold the ports the host needs to find the socket. It does not allocate.
func (f *Frame) BuildFragNeeded(out []byte, mtu uint16, from [4]byte) int {
	n := f.FragNeededLen()
	if n == 0 || len(out) < n {
		return 0
	}
	out = out[:n]
	b := f.Buf
	copy(out[0:6], b[6:12])
	copy(out[6:12], b[0:6])
	put16(out[12:], etherTypeIPv4)
	ip := out[EthHdrLen:]
	ip[0] = 0x45
	ip[1] = 0xc0 // IPTOS_PREC_INTERNETCONTROL, as the kernel's own ICMP errors
	put16(ip[2:], uint16(n-EthHdrLen))
	put16(ip[4:], 0) // ID
	put16(ip[6:], 0) // no flags: an ICMP error may be fragmented
	ip[8] = 64       // TTL
	ip[9] = ProtoICMP
	put16(ip[10:], 0)
	copy(ip[12:16], from[:])
	copy(ip[16:20], f.Src[:])
	put16(ip[10:], Checksum(ip[:ipv4MinLen], 0))
	icmp := ip[ipv4MinLen:]
	icmp[0], icmp[1] = ICMPDestUnreach, ICMPFragNeededCode
	put16(icmp[2:], 0)
	put16(icmp[4:], 0)
	put16(icmp[6:], mtu)
	copy(icmp[icmpMinLen:], b[f.L3:])
	put16(icmp[2:], Checksum(icmp, 0))
	return n
}

// RST6Len is the length of the frame BuildRST6 writes.
const RST6Len = EthHdrLen + ipv6HdrLen + tcpMinLen

// EchoRequest6Len is the length of the frame BuildEchoRequest6 writes.
const EchoRequest6Len = EthHdrLen + ipv6HdrLen + icmpMinLen + len(echoPayload)

// Endpoints6 is Endpoints for the IPv6 frames l2shim builds.
type Endpoints6 struct {
	SrcMAC, DstMAC   [6]byte
	Src, Dst         [16]byte
	SrcPort, DstPort uint16
}

// BuildRST6 is BuildRST over IPv6: it writes an Ethernet frame carrying a TCP RST with sequence
// number seq (and, with ack != 0, acknowledging ack) into out (at least RST6Len bytes) and
// returns its length.
func BuildRST6(out []byte, ep Endpoints6, seq, ack uint32) int {
	b := out[:RST6Len]
	clear(b)
	tcp := putEthIPv6(b, ep, ProtoTCP, tcpMinLen)
	binary.BigEndian.PutUint16(tcp[0:], ep.SrcPort)
	binary.BigEndian.PutUint16(tcp[2:], ep.DstPort)
	binary.BigEndian.PutUint32(tcp[4:], seq)
	tcp[12] = (tcpMinLen / 4) << 4
	tcp[13] = TCPRst
	if ack != 0 {
		binary.BigEndian.PutUint32(tcp[8:], ack)
		tcp[13] |= TCPAck
	}
	binary.BigEndian.PutUint16(tcp[16:], Checksum(tcp, PseudoHeaderSum6(ep.Src, ep.Dst, ProtoTCP, tcpMinLen)))
	return RST6Len
}

// BuildEchoRequest6 is BuildEchoRequest over IPv6: it writes an Ethernet frame carrying an
// ICMPv6 echo request with identifier id and sequence number seq into out (at least
// EchoRequest6Len bytes) and returns its length. The ports of ep are not used.
func BuildEchoRequest6(out []byte, ep Endpoints6, id, seq uint16) int {
	b := out[:EchoRequest6Len]
	clear(b)
	n := icmpMinLen + len(echoPayload)
	icmp := putEthIPv6(b, ep, ProtoICMPv6, n)
	icmp[0] = ICMPv6EchoRequest
	binary.BigEndian.PutUint16(icmp[4:], id)
	binary.BigEndian.PutUint16(icmp[6:], seq)
	copy(icmp[icmpMinLen:], echoPayload)
	binary.BigEndian.PutUint16(icmp[2:], Checksum(icmp, PseudoHeaderSum6(ep.Src, ep.Dst, ProtoICMPv6, n)))
	return EchoRequest6Len
}

// putEthIPv6 writes the Ethernet header and an IPv6 header (traffic class and flow label 0, hop
// limit 64) for an upper-layer payload of n bytes of protocol proto into b, and returns b from
// the upper-layer header on.
func putEthIPv6(b []byte, ep Endpoints6, proto uint8, n int) []byte {
	copy(b[0:6], ep.DstMAC[:])
	copy(b[6:12], ep.SrcMAC[:])
	binary.BigEndian.PutUint16(b[12:], etherTypeIPv6)
	ip := b[EthHdrLen:]
	ip[0] = 0x60
	binary.BigEndian.PutUint16(ip[4:], uint16(n))
	ip[6] = proto
	ip[7] = 64
	copy(ip[ip6SrcOff:], ep.Src[:])
	copy(ip[ip6DstOff:], ep.Dst[:])
	return ip[ipv6HdrLen:]
}

// IPv6MinMTU is the smallest MTU IPv6 allows (RFC 8200 5); an ICMPv6 error is no larger.
const IPv6MinMTU = 1280

// PacketTooBigMaxLen is the longest frame BuildPacketTooBig writes: an IPv6 packet of
// IPv6MinMTU bytes.
const PacketTooBigMaxLen = EthHdrLen + IPv6MinMTU

// ptbQuoteMax is the most of the invoking packet a Packet Too Big quotes.
const ptbQuoteMax = IPv6MinMTU - ipv6HdrLen - icmpMinLen

// PacketTooBigLen returns the length of the frame BuildPacketTooBig writes for f given room
// enough (at most PacketTooBigMaxLen), 0 when it would write none: f is not an IPv6 frame
// ParseAny accepted, or is a non-first fragment (the first one carries what the host needs to
// find the socket, and is at least as large), or an ICMPv6 message other than an echo request
// or reply (RFC 4443 2.4 (e): no error about an error or a redirect; nor about other messages,
// which the host would not act on), or comes from an address that names no single node (the
// unspecified address, a multicast one: RFC 4443 2.4 (f)).
func (f *Frame) PacketTooBigLen() int {
	if !f.valid6() || f.L4 < 0 || f.FragOff != 0 || f.Src6[0] == 0xff || f.Src6 == ([16]byte{}) {
		return 0
	}
	if f.Proto == ProtoICMPv6 && f.ICMPType != ICMPv6EchoRequest && f.ICMPType != ICMPv6EchoReply {
		return 0
	}
	return EthHdrLen + ipv6HdrLen + icmpMinLen + min(f.End-f.L3, ptbQuoteMax)
}

// BuildPacketTooBig writes into out an ICMPv6 Packet Too Big (type 2, code 0) about f,
// announcing mtu as the MTU of the next hop, and returns its length, or 0 when no error may be
// sent about f (see PacketTooBigLen) or out is too short. It is BuildFragNeeded for IPv6, where
// routers never fragment: the datapath injects it into the host when a frame does not fit the
// uplink it was placed on. The frame goes back the way f came: its Ethernet addresses are f's
// swapped, the IPv6 source is from and the destination f's source (hop limit 64); it quotes as
// much of f's packet as fits in an ICMPv6 packet of IPv6MinMTU bytes (RFC 4443 3.2) and in out,
// but at least the IPv6 header, the extension headers and 8 bytes of the upper-layer header (or
// the whole packet when shorter), which hold the ports the host needs to find the socket. An
// mtu below IPv6MinMTU is written as it is (a host then keeps to 1280 bytes, RFC 8201 4). It
// does not allocate.
func (f *Frame) BuildPacketTooBig(out []byte, mtu uint32, from [16]byte) int {
	n := f.PacketTooBigLen()
	if n == 0 {
		return 0
	}
	if len(out) < n {
		least := EthHdrLen + ipv6HdrLen + icmpMinLen + min(f.End, f.L4+8) - f.L3
		if len(out) < least {
			return 0
		}
		n = len(out)
	}
	out = out[:n]
	b := f.Buf
	copy(out[0:6], b[6:12])
	copy(out[6:12], b[0:6])
	put16(out[12:], etherTypeIPv6)
	ip := out[EthHdrLen:]
	clear(ip[:8])
	ip[0] = 0x60
	put16(ip[4:], uint16(n-EthHdrLen-ipv6HdrLen))
	ip[6] = ProtoICMPv6
	ip[7] = 64
	copy(ip[ip6SrcOff:], from[:])
	copy(ip[ip6DstOff:], f.Src6[:])
	icmp := ip[ipv6HdrLen:]
	icmp[0], icmp[1] = ICMPv6PacketTooBig, 0
	put16(icmp[2:], 0)
	binary.BigEndian.PutUint32(icmp[4:], mtu)
	copy(icmp[icmpMinLen:], b[f.L3:f.End])
	put16(icmp[2:], Checksum(icmp, PseudoHeaderSum6(from, f.Src6, ProtoICMPv6, len(icmp))))
	return n
}
