package rewrite

import "encoding/binary"

// TCP option kinds the rewrite path reads.
const (
	tcpOptEnd    = 0
	tcpOptNOP    = 1
	tcpOptMSS    = 2
	tcpOptWScale = 3
)

// tcpOption returns the offset in f.Buf of the TCP option kind with total length n, when the
// frame is a parsed TCP segment that carries it.
func (f *Frame) tcpOption(kind uint8, n int) (int, bool) {
	if !f.valid() || f.L4 < 0 || f.Proto != ProtoTCP || f.L4+tcpMinLen > f.End {
		return 0, false
	}
	b := f.Buf
	doff := int(b[f.L4+12]>>4) * 4
	if doff < tcpMinLen || f.L4+doff > f.End {
		return 0, false
	}
	for i, end := f.L4+tcpMinLen, f.L4+doff; i < end; {
		switch b[i] {
		case tcpOptEnd:
			return 0, false
		case tcpOptNOP:
			i++
			continue
		}
		if i+1 >= end {
			return 0, false
		}
		l := int(b[i+1])
		if l < 2 || i+l > end {
			return 0, false
		}
		if b[i] == kind && l == n {
			return i, true
		}
		i += l
	}
	return 0, false
}

// TCPWindow returns a TCP segment's window field, unscaled (0 for other frames).
func (f *Frame) TCPWindow() uint16 {
	if f.Proto != ProtoTCP || f.L4 < 0 {
		return 0
	}
	return binary.BigEndian.Uint16(f.Buf[f.L4+14:])
}

// TCPWindowScale returns the window scale a SYN or SYN-ACK offers (RFC 7323: at most 14), and
// whether it offers one.
func (f *Frame) TCPWindowScale() (uint8, bool) {
	if f.TCPFlags&TCPSyn == 0 {
		return 0, false
	}
	i, ok := f.tcpOption(tcpOptWScale, 3)
	if !ok {
		return 0, false
	}
	return min(f.Buf[i+2], 14), true
}
