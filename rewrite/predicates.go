package rewrite

import "encoding/binary"

// IPv4TCPHdrLen is the size of option-less IPv4 and TCP headers: a path MTU minus it is the
// largest TCP segment (MSS) that fits.
const IPv4TCPHdrLen = ipv4MinLen + tcpMinLen

// IPv6TCPHdrLen is the size of an IPv6 header without extension headers and an option-less TCP
// header: an IPv6 path MTU minus it is the largest TCP segment (MSS) that fits.
const IPv6TCPHdrLen = ipv6HdrLen + tcpMinLen

// HasPorts reports whether the frame's SrcPort and DstPort are TCP or UDP ports.
func (f *Frame) HasPorts() bool { return f.Proto == ProtoTCP || f.Proto == ProtoUDP }

// HasTCPFlag reports whether the frame is TCP with every flag of mask set.
func (f *Frame) HasTCPFlag(mask uint8) bool {
	return f.Proto == ProtoTCP && f.TCPFlags&mask == mask
}

// IsTCPSyn reports whether the frame opens a TCP connection: SYN without ACK.
func (f *Frame) IsTCPSyn() bool {
	return f.Proto == ProtoTCP && f.TCPFlags&(TCPSyn|TCPAck) == TCPSyn
}

// IsTCPSynAck reports whether the frame accepts a TCP connection: SYN with ACK.
func (f *Frame) IsTCPSynAck() bool {
	return f.Proto == ProtoTCP && f.TCPFlags&(TCPSyn|TCPAck) == TCPSyn|TCPAck
}

// IsICMP reports whether the frame is ICMP of its IP version: ICMP in IPv4, ICMPv6 in IPv6.
func (f *Frame) IsICMP() bool {
	if f.IPv6 {
		return f.Proto == ProtoICMPv6
	}
	return f.Proto == ProtoICMP
}

// IsICMPEcho reports whether the frame is an ICMP echo request or reply (ICMPv6 for an IPv6
// frame), whose identifier stands in both SrcPort and DstPort.
func (f *Frame) IsICMPEcho() bool { return f.IsICMPEchoRequest() || f.IsICMPEchoReply() }

// IsICMPEchoRequest reports whether the frame is an ICMP echo request (ICMPv6 for an IPv6
// frame).
func (f *Frame) IsICMPEchoRequest() bool {
	if f.IPv6 {
		return f.Proto == ProtoICMPv6 && f.ICMPType == ICMPv6EchoRequest
	}
	return f.Proto == ProtoICMP && f.ICMPType == ICMPEchoRequest
}

// IsICMPEchoReply reports whether the frame is an ICMP echo reply (ICMPv6 for an IPv6 frame).
func (f *Frame) IsICMPEchoReply() bool {
	if f.IPv6 {
		return f.Proto == ProtoICMPv6 && f.ICMPType == ICMPv6EchoReply
	}
	return f.Proto == ProtoICMP && f.ICMPType == ICMPEchoReply
}

// IsICMPError reports whether the frame is an ICMP error (ICMPv6 for an IPv6 frame) quoting a
// packet whose L4 header is there (InnerL4), so the flow it concerns can be found.
func (f *Frame) IsICMPError() bool { return f.IsICMP() && f.InnerL4 >= 0 }

// IsNeighborDiscovery reports whether the frame is an ICMPv6 neighbour discovery message (RFC
// 4861: router solicitation and advertisement, neighbour solicitation and advertisement,
// redirect), which concerns its link only.
func (f *Frame) IsNeighborDiscovery() bool {
	return f.IPv6 && f.Proto == ProtoICMPv6 && f.L4 >= 0 &&
		f.ICMPType >= ICMPv6RouterSolicit && f.ICMPType <= ICMPv6Redirect
}

// IsMLD reports whether the frame is an ICMPv6 multicast listener discovery message (RFC 2710,
// RFC 3810: query, report, done, version 2 report), which concerns its link only.
func (f *Frame) IsMLD() bool {
	if !f.IPv6 || f.Proto != ProtoICMPv6 || f.L4 < 0 {
		return false
	}
	switch f.ICMPType {
	case ICMPv6MLDQuery, ICMPv6MLDReport, ICMPv6MLDDone, ICMPv6MLDv2Report:
		return true
	}
	return false
}

// IsLinkLocal reports whether the frame is IPv6 with a link-local source or destination
// (fe80::/10): such a packet never leaves its link, and its address means nothing on another.
func (f *Frame) IsLinkLocal() bool {
	return f.IPv6 && (linkLocal6(f.Src6) || linkLocal6(f.Dst6))
}

func linkLocal6(a [16]byte) bool { return a[0] == 0xfe && a[1]&0xc0 == 0x80 }

// IsMulticast reports whether the frame's destination is a multicast address: ff00::/8 for
// IPv6, 224.0.0.0/4 for IPv4.
func (f *Frame) IsMulticast() bool {
	if f.IPv6 {
		return f.Dst6[0] == 0xff
	}
	return f.Dst[0]&0xf0 == 0xe0
}

// HasIPv4MappedAddr reports whether an IPv6 frame carries an IPv4-mapped address
// (::ffff:0:0/96) as its source or destination, or in the packet its ICMPv6 error quotes. Such
// an address never appears on the wire (RFC 4291 2.5.5.2), and a flow key made of it
// (Addrs16) would be an IPv4 flow's.
func (f *Frame) HasIPv4MappedAddr() bool {
	if !f.IPv6 {
		return false
	}
	return isMapped4(f.Src6) || isMapped4(f.Dst6) ||
		(f.InnerL3 >= 0 && (isMapped4(f.InnerSrc6) || isMapped4(f.InnerDst6)))
}

func isMapped4(a [16]byte) bool { return [12]byte(a[:12]) == [12]byte{10: 0xff, 11: 0xff} }

// TCPMinLen is the size of a TCP header without options.
const TCPMinLen = tcpMinLen

// TCPSeq returns a TCP frame's sequence number (0 for other frames).
func (f *Frame) TCPSeq() uint32 {
	if f.Proto != ProtoTCP || f.L4 < 0 {
		return 0
	}
	return binary.BigEndian.Uint32(f.Buf[f.L4+4:])
}

// TCPAckNum returns a TCP frame's acknowledgment number (0 for other frames).
func (f *Frame) TCPAckNum() uint32 {
	if f.Proto != ProtoTCP || f.L4 < 0 {
		return 0
	}
	return binary.BigEndian.Uint32(f.Buf[f.L4+8:])
}

// TCPSeqLen returns how much of the sequence space a TCP frame takes: its payload, plus one for
// a SYN or a FIN.
func (f *Frame) TCPSeqLen() uint32 {
	if f.Proto != ProtoTCP || f.L4 < 0 {
		return 0
	}
	n := uint32(f.End - f.L4 - int(f.Buf[f.L4+12]>>4)*4)
	if f.TCPFlags&(TCPSyn|TCPFin) != 0 {
		n++
	}
	return n
}

// PayloadHash returns a hash of the L4 payload and its length, 0 for a frame without L4
// header (a later fragment). It reads at most the first 256 bytes: enough to tell one request
// from another.
func (f *Frame) PayloadHash() uint32 {
	if f.L4 < 0 {
		return 0
	}
	start := f.L4
	switch f.Proto {
	case ProtoUDP:
		start += udpLen
	case ProtoTCP:
		start += int(f.Buf[f.L4+12]>>4) * 4
	default:
		if f.IsICMP() {
			start += icmpMinLen
		}
	}
	if start > f.End {
		return 0
	}
	p := f.Buf[start:f.End]
	h := uint32(2166136261) ^ uint32(len(p))
	for _, c := range p[:min(len(p), 256)] {
		h = (h ^ uint32(c)) * 16777619
	}
	return h | 1
}

// ICMPEchoSeq returns an ICMP (or ICMPv6) echo request's or reply's sequence number (0 for
// other frames).
func (f *Frame) ICMPEchoSeq() uint16 {
	if !f.IsICMPEcho() || f.L4 < 0 {
		return 0
	}
	return binary.BigEndian.Uint16(f.Buf[f.L4+6:])
}
