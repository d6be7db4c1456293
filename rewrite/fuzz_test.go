package rewrite

import (
	"bytes"
	"encoding/binary"
	"testing"
)

// csumState records which checksums of a frame verify, so that the fuzz test can check that a
// rewrite keeps every valid checksum valid (and a partial sum consistent with the addresses).
type csumState struct {
	ipHdr      bool // the IPv4 header checksum verifies
	l4Full     bool // a full TCP/UDP/ICMP checksum over an unfragmented datagram verifies
	udpNone    bool // UDP checksum 0
	l4Partial  bool // the partial sum equals the pseudo-header sum of the current addresses
	innerHdr   bool // the quoted IPv4 header checksum verifies
	innerL4    bool // the quoted TCP/UDP checksum verifies over a complete quote
	innerNone  bool // quoted UDP checksum 0
	innerWhole bool
}

func sameSum(a, b uint16) bool {
	return a == b || (a == 0 && b == 0xffff) || (a == 0xffff && b == 0)
}

func stateOf(f *Frame) csumState {
	var s csumState
	b := f.Buf
	ihl := int(b[f.L3]&0x0f) * 4
	s.ipHdr = Checksum(b[f.L3:f.L3+ihl], 0) == 0
	unfragmented := f.FragOff == 0 && !f.MoreFrags
	if f.L4 >= 0 && unfragmented {
		seg := b[f.L4:f.End]
		switch f.Proto {
		case ProtoTCP, ProtoUDP:
			field := binary.BigEndian.Uint16(seg[l4CsumOffset(f.Proto):])
			pseudo := PseudoHeaderSum(f.Src, f.Dst, f.Proto, len(seg))
			switch {
			case f.PartialCsum:
				s.l4Partial = sameSum(field, Fold(pseudo))
			case f.Proto == ProtoUDP && field == 0:
				s.udpNone = true
			default:
				s.l4Full = Checksum(seg, pseudo) == 0
			}
		case ProtoICMP:
			if !f.PartialCsum {
				s.l4Full = Checksum(seg, 0) == 0
			}
		}
	}
	if f.InnerL3 >= 0 {
		q := b[f.InnerL3:f.End]
		qihl := int(q[0]&0x0f) * 4
		s.innerHdr = Checksum(q[:qihl], 0) == 0
		whole := int(binary.BigEndian.Uint16(q[2:])) == len(q) && binary.BigEndian.Uint16(q[6:])&0x3fff == 0
		if whole && f.InnerL4 >= 0 && (f.InnerProto == ProtoTCP || f.InnerProto == ProtoUDP) &&
			len(q)-qihl >= l4CsumOffset(f.InnerProto)+2 {
			s.innerWhole = true
			seg := q[qihl:]
			if f.InnerProto == ProtoUDP && binary.BigEndian.Uint16(seg[6:]) == 0 {
				s.innerNone = true
			} else {
				s.innerL4 = Checksum(seg, PseudoHeaderSum(f.InnerSrc, f.InnerDst, f.InnerProto, len(seg))) == 0
			}
		}
	}
	return s
}

// fixChecksums makes the checksums of a parsed frame verify: the quoted ones first, then the
// outer L4 checksum (or partial sum), then the IPv4 header checksum.
func fixChecksums(f *Frame) {
	b := f.Buf
	put := func(off int, v uint16) { binary.BigEndian.PutUint16(b[off:], v) }
	if f.InnerL3 >= 0 {
		q := b[f.InnerL3:f.End]
		qihl := int(q[0]&0x0f) * 4
		put(f.InnerL3+10, 0)
		put(f.InnerL3+10, Checksum(q[:qihl], 0))
		whole := int(binary.BigEndian.Uint16(q[2:])) == len(q) && binary.BigEndian.Uint16(q[6:])&0x3fff == 0
		if o := l4CsumOffset(f.InnerProto); whole && f.InnerL4 >= 0 && o >= 0 && f.InnerProto != ProtoICMP && len(q)-qihl >= o+2 {
			seg := q[qihl:]
			put(f.InnerL4+o, 0)
			put(f.InnerL4+o, Checksum(seg, PseudoHeaderSum(f.InnerSrc, f.InnerDst, f.InnerProto, len(seg))))
		}
	}
	if f.L4 >= 0 && f.FragOff == 0 && !f.MoreFrags {
		if o := l4CsumOffset(f.Proto); o >= 0 {
			seg := b[f.L4:f.End]
			pseudo := uint64(0)
			if f.Proto != ProtoICMP {
				pseudo = PseudoHeaderSum(f.Src, f.Dst, f.Proto, len(seg))
			}
			switch {
			case f.PartialCsum:
				put(f.L4+o, Fold(pseudo))
			case f.Proto == ProtoUDP && binary.BigEndian.Uint16(seg[o:]) == 0:
			default:
				put(f.L4+o, 0)
				c := Checksum(seg, pseudo)
				if c == 0 && f.Proto == ProtoUDP {
					c = 0xffff
				}
				put(f.L4+o, c)
			}
		}
	}
	ihl := int(b[f.L3]&0x0f) * 4
	put(f.L3+10, 0)
	put(f.L3+10, Checksum(b[f.L3:f.L3+ihl], 0))
}

func fuzzSeeds(f *testing.F) {
	add := func(frame []byte, v VnetHdr) {
		vb := make([]byte, VnetHdrLen)
		v.Encode(vb)
		f.Add(vb, frame, uint32(0x0a020002), uint16(61000), uint16(1400))
	}
	for _, c := range rwCases {
		b, v := c.build(f)
		if len(b) > 4096 { // keep the corpus small; one big frame is enough
			b = b[:4096]
			binary.BigEndian.PutUint16(b[EthHdrLen+2:], 0)
		}
		add(b, v)
	}
	udp := buildUDP(f, ipHost2, ipRemote, 61000, 53, 20)[EthHdrLen:]
	add(buildICMPError(f, ipRemote, ipHost2, 3, 3, udp), VnetHdr{})
	tcp := buildTCP(f, ipHost2, ipRemote, 61000, 443, tcpOpt{options: true, flags: TCPSyn})[EthHdrLen:]
	add(buildICMPError(f, ipRemote, ipHost2, 11, 0, tcp), VnetHdr{})
	add(buildICMPError(f, ipRemote, ipHost2, 11, 0, tcp[:28]), VnetHdr{})
	ping := buildICMPEcho(f, ipHost2, ipRemote, 8, 9, 4)[EthHdrLen:]
	add(buildICMPError(f, ipRemote, ipHost2, 11, 0, ping), VnetHdr{})
	frag := buildUDP(f, ipHost, ipRemote, 1, 2, 100)
	binary.BigEndian.PutUint16(frag[EthHdrLen+6:], 0x2000|100)
	add(frag, VnetHdr{})
	vx, vxv := vxlanTSO(f)
	add(vx[:600], vxv)
	// Tunnels' super-frames with an inner IPv6/TCP or UDP packet (kept small).
	for _, c := range []encCase{
		{enc: encVXLAN, ip6: true, udpCsum: true, payload: 500, gso: 200, flags: TCPAck | TCPPsh},
		{enc: encVXLAN, ip6: true, ext: extDst, payload: 300, gso: 100, flags: TCPAck},
		{enc: encGRETAP, ip6: true, greCsum: true, payload: 300, gso: 100, flags: TCPAck | TCPFin},
		{enc: encVXLAN, udp: true, ip6: true, udpCsum: true, payload: 500, gso: 200},
		{enc: encVXLAN, udp: true, payload: 500, gso: 200},
		{enc: encIPIP, udp: true, ip6: true, payload: 300, gso: 100},
	} {
		e := buildEncap(f, c)
		add(e.b, e.v)
	}
	add([]byte{}, VnetHdr{})
	add(make([]byte, 60), VnetHdr{Flags: VnetNeedsCsum, CsumStart: 0xffff})
}

// FuzzParseRewrite feeds arbitrary frames and virtio-net headers to Parse and, when it accepts
// them, to every setter: nothing may panic, a rejected frame must stay untouched, the rewritten
// frame must parse again to the same structure, and every checksum that verified before must
// verify after (a partial sum must stay the pseudo-header sum of the new addresses).
func FuzzParseRewrite(f *testing.F) {
	fuzzSeeds(f)
	f.Fuzz(func(t *testing.T, vb, frame []byte, addr uint32, port, mss uint16) {
		var v VnetHdr
		v.Decode(vb)
		var fr Frame
		r := fr.Parse(frame, v)
		if r >= NumReasons {
			t.Fatalf("reason %d out of range", r)
		}
		var ip [4]byte
		binary.BigEndian.PutUint32(ip[:], addr)
		ip2 := [4]byte{ip[3], ip[2] ^ 0x55, ip[1], ip[0]}
		out := make([]byte, 128)
		if r != OK {
			before := bytes.Clone(frame)
			fr.SetMACs([6]byte{1}, [6]byte{2}) // MACs may change even on a rejected frame
			copy(before, frame[:min(12, len(frame))])
			fr.SetSrc(ip, port)
			fr.SetDst(ip2, port)
			fr.SetInnerSrc(ip, port)
			fr.SetInnerDst(ip2, port)
			fr.ClampMSS(mss)
			fr.FitGSO(int(mss))
			if fr.BuildFragNeeded(out, mss, ip) != 0 || !bytes.Equal(before, frame) {
				t.Fatalf("setters acted on a frame Parse rejected (%v)", r)
			}
			return
		}
		if mss&1 == 0 {
			// Make every checksum verify first, so that the invariants below bite on arbitrary
			// structure and not only on frames that arrived with valid checksums.
			fixChecksums(&fr)
		}
		orig := bytes.Clone(frame)
		before := stateOf(&fr)
		l4, end, inner, innerL4, partial := fr.L4, fr.End, fr.InnerL3, fr.InnerL4, fr.PartialCsum

		fr.SetMACs([6]byte{2, 0, 0, 0, 0, 9}, [6]byte{2, 0, 0, 0, 0, 8})
		fr.SetSrc(ip, port)
		fr.SetDst(ip2, port^0x5555)
		fr.SetInnerSrc(ip2, port+1)
		fr.SetInnerDst(ip, port+2)
		fr.ClampMSS(mss)
		fr.FitGSO(int(mss))
		if n := fr.BuildFragNeeded(out, mss, ip); n > 0 {
			var g Frame
			if r := g.Parse(out[:n], VnetHdr{}); r != OK {
				t.Fatalf("BuildFragNeeded built a frame Parse rejects: %v", r)
			}
			if Checksum(out[EthHdrLen+20:n], 0) != 0 || Checksum(out[EthHdrLen:EthHdrLen+20], 0) != 0 {
				t.Fatalf("BuildFragNeeded: bad checksum")
			}
		}

		var g Frame
		if r := g.Parse(frame, fr.Vnet); r != OK {
			t.Fatalf("re-parse after rewrite: %v", r)
		}
		if g.L4 != l4 || g.End != end || g.InnerL3 != inner || g.InnerL4 != innerL4 || g.PartialCsum != partial {
			t.Fatalf("structure changed by the rewrite")
		}
		if g.Src != fr.Src || g.Dst != fr.Dst || g.SrcPort != fr.SrcPort || g.DstPort != fr.DstPort ||
			g.InnerSrc != fr.InnerSrc || g.InnerDst != fr.InnerDst || g.InnerSrcPort != fr.InnerSrcPort || g.InnerDstPort != fr.InnerDstPort {
			t.Fatalf("Frame fields disagree with the bytes")
		}
		if fr.Src != ip || fr.Dst != ip2 {
			t.Fatalf("addresses not set")
		}
		if !bytes.Equal(frame[end:], orig[end:]) {
			t.Fatalf("padding changed")
		}
		after := stateOf(&g)
		check := func(what string, b, a bool) {
			if b && !a {
				t.Fatalf("%s verified before the rewrite and not after", what)
			}
		}
		check("IPv4 header checksum", before.ipHdr, after.ipHdr)
		check("L4 checksum", before.l4Full, after.l4Full)
		check("UDP checksum 0", before.udpNone, after.udpNone)
		check("partial sum", before.l4Partial, after.l4Partial)
		check("quoted IPv4 header checksum", before.innerHdr, after.innerHdr)
		if before.innerWhole {
			check("quoted L4 checksum", before.innerL4, after.innerL4)
			check("quoted UDP checksum 0", before.innerNone, after.innerNone)
		}
	})
}

// segLayout is what checkFuzzed needs to know of SegmentEncap's layout of a frame.
type segLayout struct {
	inner, l4, hdrEnd, mss, greCsum int
	inner6, udp, udpCsum            bool
}

// layoutOf returns the layout SegmentEncap uses for f (zero when it refuses f).
func layoutOf(f *Frame) segLayout {
	l, _ := f.encapLayout()
	return segLayout{inner: l.inner, l4: l.innerL4, hdrEnd: l.hdrEnd, mss: l.mss, greCsum: l.greCsum,
		inner6: l.inner6, udp: l.udp, udpCsum: l.udpCsum}
}
