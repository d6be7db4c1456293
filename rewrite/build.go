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
