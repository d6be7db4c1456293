package rewrite

import "encoding/binary"

// IPv4TCPHdrLen is the size of option-less IPv4 and TCP headers: a path MTU minus it is the
// largest TCP segment (MSS) that fits.
const IPv4TCPHdrLen = ipv4MinLen + tcpMinLen

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

// IsICMPEcho reports whether the frame is an ICMP echo request or reply, whose identifier
// stands in both SrcPort and DstPort.
func (f *Frame) IsICMPEcho() bool {
	return f.Proto == ProtoICMP && (f.ICMPType == ICMPEchoRequest || f.ICMPType == ICMPEchoReply)
}

// IsICMPError reports whether the frame is an ICMP error quoting a packet whose L4 header is
// there (InnerL4), so the flow it concerns can be found.
func (f *Frame) IsICMPError() bool { return f.Proto == ProtoICMP && f.InnerL4 >= 0 }

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
	case ProtoICMP:
		start += icmpMinLen
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

// ICMPEchoSeq returns an ICMP echo request's or reply's sequence number (0 for other frames).
func (f *Frame) ICMPEchoSeq() uint16 {
	if !f.IsICMPEcho() || f.L4 < 0 {
		return 0
	}
	return binary.BigEndian.Uint16(f.Buf[f.L4+6:])
}
