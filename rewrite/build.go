package rewrite

import "encoding/binary"

// The frames l2shim makes itself are built here, with no allocation, into buffers the caller
// owns: TCP resets (toward the host for flows of a dead gateway, upstream for a late SYN-ACK),
// ICMP echo requests (gateway probes), and ICMP fragmentation-needed errors (BuildFragNeeded).

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
// write none.
func (f *Frame) FragNeededLen() int {
	if !f.valid() || f.FragOff != 0 {
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
