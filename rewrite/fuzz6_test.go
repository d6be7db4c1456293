package rewrite

import (
	"bytes"
	"encoding/binary"
	"math/rand/v2"
	"reflect"
	"testing"
)

// csumState6 records which checksums of an IPv6 frame verify, for FuzzParseRewrite6.
type csumState6 struct {
	l4Full     bool // a full TCP/UDP/ICMPv6 checksum over an unfragmented packet verifies
	udpNone    bool // UDP checksum 0
	l4Partial  bool // the partial sum equals the pseudo-header sum of the current addresses
	innerWhole bool // the quote holds a whole unfragmented packet with a TCP/UDP/ICMPv6 checksum
	innerL4    bool // its checksum verifies
	innerNone  bool // quoted UDP checksum 0
}

// l4Sum6 returns the checksum over seg of protocol proto in the IPv6 packet pkt (whose
// pseudo-header takes pkt's source and final destination), and the field's offset in seg.
func l4Sum6(pkt, seg []byte, proto uint8) (uint16, int) {
	return Checksum(seg, PseudoHeaderSum6([16]byte(pkt[8:24]), finalDst6(pkt), proto, len(seg))), l4CsumOffset6(proto)
}

// wholeQuote reports whether the quote of f holds a whole, unfragmented packet whose L4
// checksum field is there, and returns it.
func wholeQuote(f *Frame) ([]byte, bool) {
	if f.InnerL3 < 0 || f.InnerL4 < 0 || l4CsumOffset6(f.InnerProto) < 0 {
		return nil, false
	}
	q := f.Buf[f.InnerL3:f.End]
	h, r := WalkIPv6(q, false)
	return q, r == OK && h.End == len(q) && !h.IsFragment() && f.InnerL4-f.InnerL3 == h.L4
}

func stateOf6(f *Frame) csumState6 {
	var s csumState6
	pkt := f.Buf[f.L3:f.End]
	if f.L4 >= 0 && f.FragOff == 0 && !f.MoreFrags && l4CsumOffset6(f.Proto) >= 0 {
		seg := f.Buf[f.L4:f.End]
		c, o := l4Sum6(pkt, seg, f.Proto)
		field := binary.BigEndian.Uint16(seg[o:])
		switch {
		case f.PartialCsum:
			s.l4Partial = sameSum(field, Fold(PseudoHeaderSum6(f.Src6, finalDst6(pkt), f.Proto, len(seg))))
		case f.Proto == ProtoUDP && field == 0:
			s.udpNone = true
		default:
			s.l4Full = c == 0
		}
	}
	if q, ok := wholeQuote(f); ok {
		s.innerWhole = true
		seg := f.Buf[f.InnerL4:f.End]
		c, o := l4Sum6(q, seg, f.InnerProto)
		if f.InnerProto == ProtoUDP && binary.BigEndian.Uint16(seg[o:]) == 0 {
			s.innerNone = true
		} else {
			s.innerL4 = c == 0
		}
	}
	return s
}

// fixChecksums6 makes the checksums of a parsed IPv6 frame verify: the quoted one first, then
// the outer one (or partial sum).
func fixChecksums6(f *Frame) {
	put := func(b []byte, v uint16) { binary.BigEndian.PutUint16(b, v) }
	if q, ok := wholeQuote(f); ok {
		seg := f.Buf[f.InnerL4:f.End]
		o := l4CsumOffset6(f.InnerProto)
		put(seg[o:], 0)
		c, _ := l4Sum6(q, seg, f.InnerProto)
		if c == 0 && f.InnerProto == ProtoUDP {
			c = 0xffff
		}
		put(seg[o:], c)
	}
	if f.L4 >= 0 && f.FragOff == 0 && !f.MoreFrags && l4CsumOffset6(f.Proto) >= 0 {
		pkt, seg, o := f.Buf[f.L3:f.End], f.Buf[f.L4:f.End], l4CsumOffset6(f.Proto)
		switch {
		case f.PartialCsum:
			put(seg[o:], Fold(PseudoHeaderSum6(f.Src6, finalDst6(pkt), f.Proto, len(seg))))
		case f.Proto == ProtoUDP && binary.BigEndian.Uint16(seg[o:]) == 0:
		default:
			put(seg[o:], 0)
			c, _ := l4Sum6(pkt, seg, f.Proto)
			if c == 0 && f.Proto == ProtoUDP {
				c = 0xffff
			}
			put(seg[o:], c)
		}
	}
}

func fuzzSeeds6(f *testing.F) {
	add := func(frame []byte, v VnetHdr) {
		vb := make([]byte, VnetHdrLen)
		v.Encode(vb)
		f.Add(vb, frame, uint64(0x20010db800020000), uint64(2), uint16(61000), uint16(1280))
	}
	r := rand.New(rand.NewPCG(65, 6))
	for n := 0; n < 24; {
		b, v, _ := randFrame6(f, r)
		if len(b) <= 512 {
			add(b, v)
			n++
		}
	}
	udp := pkt6{src: ip6Host2, dst: ip6Remote, proto: ProtoUDP, sport: 61000, dport: 53, body: payloadBytes(20, 1),
		exts: []ext6{{typ: extDestOpts, n: 8}}}.packet(f)
	add(icmp6Err(f, ip6Remote, ip6Host2, ICMPv6DestUnreach, 4, udp), VnetHdr{})
	add(icmp6Err(f, ip6Remote, ip6Host2, ICMPv6PacketTooBig, 0, udp[:len(udp)-10]), VnetHdr{})
	ping := pkt6{src: ip6Host2, dst: ip6Remote, proto: ProtoICMPv6, icmpType: ICMPv6EchoRequest, id: 3, body: payloadBytes(8, 1)}.packet(f)
	add(icmp6Err(f, ip6Remote, ip6Host2, ICMPv6TimeExceeded, 0, ping), VnetHdr{})
	routed := pkt6{src: ip6Host, dst: ip6Remote, proto: ProtoTCP, flags: TCPSyn, tcpOpts: tcpOpts6(),
		exts: []ext6{{typ: extRouting, rtype: 4, segLeft: 1, addrs: [][16]byte{ip6Other}}}}
	add(routed.frame(f), VnetHdr{})
	add(icmp6Err(f, ip6Remote, ip6Host2, ICMPv6TimeExceeded, 0, routed.packet(f)), VnetHdr{})
	later := pkt6{src: ip6Host, dst: ip6Remote, proto: ProtoUDP, body: payloadBytes(40, 1), exts: []ext6{{typ: extFragment, fragOff: 9}}}
	add(later.frame(f), VnetHdr{})
	add(buildTCP(f, ipHost, ipRemote, 40000, 443, tcpOpt{options: true, flags: TCPSyn}), VnetHdr{})
	add(buildICMPError(f, ipRemote, ipHost2, 3, 3, buildUDP(f, ipHost2, ipRemote, 61000, 53, 20)[EthHdrLen:]), VnetHdr{})
	add([]byte{}, VnetHdr{})
}

// FuzzParseRewrite6 feeds arbitrary frames and virtio-net headers to ParseAny: it must agree
// with Parse on everything but IPv6 (which Parse refuses with NotIPv4), and on an IPv6 frame it
// accepts every setter and builder is applied: nothing may panic or reach past the frame, a
// rejected frame must stay untouched, the IPv4 setters must leave an IPv6 frame alone, the
// rewritten frame must parse again to the same structure with the fields the setters reported,
// every checksum that verified before must verify after (a partial sum must stay the
// pseudo-header sum of the new addresses), and a Packet Too Big must parse and verify.
func FuzzParseRewrite6(f *testing.F) {
	fuzzSeeds6(f)
	f.Fuzz(func(t *testing.T, vb, frame []byte, hi, lo uint64, port, mss uint16) {
		var v VnetHdr
		v.Decode(vb)
		var fr, f4 Frame
		r := fr.ParseAny(frame, v)
		if r >= NumReasons {
			t.Fatalf("reason %d out of range", r)
		}
		r4 := f4.Parse(frame, v)
		isIPv6 := len(frame) >= EthHdrLen && binary.BigEndian.Uint16(frame[12:]) == etherTypeIPv6
		switch {
		case isIPv6 && (r4 != NotIPv4 || f4.L3 != -1):
			t.Fatalf("Parse of an IPv6 frame: %v", r4)
		case !isIPv6 && (r4 != r || !reflect.DeepEqual(f4, fr)):
			t.Fatalf("ParseAny %v differs from Parse %v on a non-IPv6 frame", r, r4)
		}
		var ip, ip2 [16]byte
		binary.BigEndian.PutUint64(ip[:], hi)
		binary.BigEndian.PutUint64(ip[8:], lo)
		binary.BigEndian.PutUint64(ip2[:], lo^0x5555)
		binary.BigEndian.PutUint64(ip2[8:], hi)
		out := make([]byte, int(mss)%(PacketTooBigMaxLen+1))
		if r != OK {
			before := bytes.Clone(frame)
			fr.SetMACs([6]byte{1}, [6]byte{2}) // MACs may change even on a rejected frame
			copy(before, frame[:min(12, len(frame))])
			fr.SetSrc6(ip, port)
			fr.SetDst6(ip2, port)
			fr.SetInnerSrc6(ip, port)
			fr.SetInnerDst6(ip2, port)
			fr.ClampMSS(mss)
			fr.FitGSO(int(mss))
			if fr.BuildPacketTooBig(out, uint32(mss), ip) != 0 || !bytes.Equal(before, frame) {
				t.Fatalf("setters acted on a frame ParseAny rejected (%v)", r)
			}
			return
		}
		if !fr.IPv6 {
			before := bytes.Clone(frame)
			fr.SetSrc6(ip, port)
			fr.SetDst6(ip2, port)
			fr.SetInnerSrc6(ip, port)
			fr.SetInnerDst6(ip2, port)
			if fr.BuildPacketTooBig(out, uint32(mss), ip) != 0 || !bytes.Equal(before, frame) {
				t.Fatalf("IPv6 setters acted on an IPv4 frame")
			}
			return // FuzzParseRewrite covers IPv4
		}
		if fr.L3 != EthHdrLen || fr.End > len(frame) || fr.End < fr.L3+ipv6HdrLen ||
			(fr.L4 >= 0 && (fr.L4 < fr.L3+ipv6HdrLen || fr.L4 > fr.End)) ||
			(fr.InnerL3 >= 0 && (fr.L4 < 0 || fr.InnerL3 != fr.L4+icmpMinLen || fr.InnerL3+ipv6HdrLen > fr.End)) ||
			(fr.InnerL4 >= 0 && (fr.InnerL3 < 0 || fr.InnerL4 < fr.InnerL3+ipv6HdrLen || fr.InnerL4 > fr.End)) {
			t.Fatalf("offsets outside the frame: %+v (len %d)", fr, len(frame))
		}
		if mss&1 == 0 {
			fixChecksums6(&fr)
		}
		orig := bytes.Clone(frame)
		before := stateOf6(&fr)
		l4, end, inner, innerL4, partial := fr.L4, fr.End, fr.InnerL3, fr.InnerL4, fr.PartialCsum

		fr.SetMACs([6]byte{2, 0, 0, 0, 0, 9}, [6]byte{2, 0, 0, 0, 0, 8})
		mid := bytes.Clone(frame)
		fr.SetSrc([4]byte{1, 2, 3, 4}, port)
		fr.SetDst([4]byte{1, 2, 3, 4}, port)
		fr.SetInnerSrc([4]byte{1, 2, 3, 4}, port)
		fr.SetInnerDst([4]byte{1, 2, 3, 4}, port)
		if !bytes.Equal(mid, frame) || fr.BuildFragNeeded(out, mss, [4]byte{1}) != 0 || fr.SegmentEncapCount() != 0 {
			t.Fatalf("IPv4 setters or builders acted on an IPv6 frame")
		}
		fr.SetSrc6(ip, port)
		fr.SetDst6(ip2, port^0x5555)
		fr.SetInnerSrc6(ip2, port+1)
		fr.SetInnerDst6(ip, port+2)
		fr.ClampMSS(mss)
		fr.FitGSO(int(mss))
		if n := fr.BuildPacketTooBig(out, uint32(mss), ip); n > 0 {
			var g Frame
			if n > len(out) || n > PacketTooBigMaxLen {
				t.Fatalf("BuildPacketTooBig: %d bytes into %d", n, len(out))
			}
			if r := g.ParseAny(out[:n], VnetHdr{}); r != OK || g.ICMPType != ICMPv6PacketTooBig || g.InnerL3 < 0 {
				t.Fatalf("BuildPacketTooBig built a frame ParseAny takes badly: %v", r)
			}
			if c, _ := l4Sum6(out[EthHdrLen:n], out[EthHdrLen+ipv6HdrLen:n], ProtoICMPv6); c != 0 {
				t.Fatalf("BuildPacketTooBig: bad checksum")
			}
		}

		var g Frame
		if r := g.ParseAny(frame, fr.Vnet); r != OK {
			t.Fatalf("re-parse after rewrite: %v", r)
		}
		if g.L4 != l4 || g.End != end || g.InnerL3 != inner || g.InnerL4 != innerL4 || g.PartialCsum != partial {
			t.Fatalf("structure changed by the rewrite")
		}
		if g.Src6 != fr.Src6 || g.Dst6 != fr.Dst6 || g.SrcPort != fr.SrcPort || g.DstPort != fr.DstPort ||
			g.InnerSrc6 != fr.InnerSrc6 || g.InnerDst6 != fr.InnerDst6 || g.InnerSrcPort != fr.InnerSrcPort || g.InnerDstPort != fr.InnerDstPort {
			t.Fatalf("Frame fields disagree with the bytes")
		}
		if fr.Src6 != ip || fr.Dst6 != ip2 {
			t.Fatalf("addresses not set")
		}
		if !bytes.Equal(frame[end:], orig[end:]) {
			t.Fatalf("padding changed")
		}
		after := stateOf6(&g)
		check := func(what string, b, a bool) {
			if b && !a {
				t.Fatalf("%s verified before the rewrite and not after", what)
			}
		}
		check("L4 checksum", before.l4Full, after.l4Full)
		check("UDP checksum 0", before.udpNone, after.udpNone)
		check("partial sum", before.l4Partial, after.l4Partial)
		if before.innerWhole && after.innerWhole {
			check("quoted L4 checksum", before.innerL4, after.innerL4)
			check("quoted UDP checksum 0", before.innerNone, after.innerNone)
		}
	})
}
