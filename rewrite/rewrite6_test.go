package rewrite

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"reflect"
	"testing"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
)

// randFrame6 returns a random IPv6 frame: TCP (SYNs with options), UDP (sometimes with checksum
// 0), ICMPv6 echo or another ICMPv6 message, behind random extension headers, with a full
// checksum, a partial one, or as a GSO super-frame (TCPv6 or UDP_L4, partial or full, with a
// payload length of 0 sometimes).
func randFrame6(t testing.TB, r *rand.Rand) ([]byte, VnetHdr, pkt6) {
	p := pkt6{src: randAddr6R(r), dst: randAddr6R(r), exts: randExts(r, true),
		sport: uint16(r.IntN(0x10000)), dport: uint16(r.IntN(0x10000))}
	switch r.IntN(7) {
	case 0, 1, 2:
		p.proto = ProtoTCP
		p.flags = []uint8{TCPSyn, TCPSyn | TCPAck, TCPAck | TCPPsh, TCPAck | TCPFin, TCPRst | TCPAck, TCPAck, TCPAck | TCPCwr | TCPEce}[r.IntN(7)]
		if p.flags&TCPSyn != 0 || r.IntN(4) == 0 {
			p.tcpOpts = tcpOpts6()
		}
		p.body = randBytes(r, r.IntN(1400))
	case 3, 4:
		p.proto = ProtoUDP
		p.udpZero = r.IntN(8) == 0
		p.body = randBytes(r, r.IntN(1400))
	case 5:
		p.proto, p.icmpType = ProtoICMPv6, []uint8{ICMPv6EchoRequest, ICMPv6EchoReply}[r.IntN(2)]
		p.id, p.seq = uint16(r.IntN(0x10000)), uint16(r.IntN(0x10000))
		p.body = randBytes(r, r.IntN(200))
	default:
		// Not echo, not an error with a parsable quote: the address still changes the checksum.
		p.proto, p.icmpType = ProtoICMPv6, []uint8{ICMPv6DestUnreach, 200, ICMPv6NeighborSolicit}[r.IntN(3)]
		p.body = randBytes(r, 4+r.IntN(40))
	}
	b := p.frame(t)
	var v VnetHdr
	switch r.IntN(6) {
	case 0:
		v = makePartial6(t, b, v)
	case 1:
		switch {
		case p.proto == ProtoTCP && len(p.body) > 0:
			v = VnetHdr{GSOType: GSOTCPv6, GSOSize: uint16(1 + r.IntN(1500))}
			if r.IntN(2) == 0 {
				v.GSOType |= GSOECN
			}
		case p.proto == ProtoUDP && !p.udpZero && len(p.body) > 0:
			v = VnetHdr{GSOType: GSOUDPL4, GSOSize: uint16(1 + r.IntN(1500))}
		}
		if v.GSOType != GSONone {
			if len(b) > 60 && r.IntN(2) == 0 {
				binary.BigEndian.PutUint16(b[EthHdrLen+4:], 0) // BIG TCP style
			}
			if r.IntN(4) != 0 {
				v = makePartial6(t, b, v)
			}
		}
	case 2:
		v.Flags = VnetDataValid
	}
	return b, v, p
}

type op6 struct {
	dst  bool
	ip   [16]byte
	port uint16
}

func (o op6) String() string {
	w := "src"
	if o.dst {
		w = "dst"
	}
	return fmt.Sprintf("%s=[%x]:%d", w, o.ip, o.port)
}

type ends6 struct {
	src, dst         [16]byte
	srcPort, dstPort uint16
}

// model6 applies o to e the way SetSrc6/SetDst6 are documented to.
func model6(e ends6, f *Frame, o op6) ends6 {
	ports := f.L4 >= 0 && (f.Proto == ProtoTCP || f.Proto == ProtoUDP)
	echoID := f.L4 >= 0 && f.Proto == ProtoICMPv6 &&
		((!o.dst && f.ICMPType == ICMPv6EchoRequest) || (o.dst && f.ICMPType == ICMPv6EchoReply))
	if o.dst {
		e.dst = o.ip
		if ports {
			e.dstPort = o.port
		}
	} else {
		e.src = o.ip
		if ports {
			e.srcPort = o.port
		}
	}
	if echoID {
		e.srcPort, e.dstPort = o.port, o.port
	}
	return e
}

func apply6(f *Frame, o op6) {
	if o.dst {
		f.SetDst6(o.ip, o.port)
	} else {
		f.SetSrc6(o.ip, o.port)
	}
}

type opSeq6 struct {
	name      string
	ops       []op6
	unchanged bool
}

func opSeqs6(f *Frame) []opSeq6 {
	s := []opSeq6{
		{name: "src addr", ops: []op6{{false, ip6Host2, f.SrcPort}}},
		{name: "src port", ops: []op6{{false, f.Src6, 61000}}},
		{name: "src addr+port", ops: []op6{{false, ip6Host2, 61001}}},
		{name: "dst addr+port", ops: []op6{{true, ip6Other, 8443}}},
		{name: "dst port", ops: []op6{{true, f.Dst6, 8444}}},
		{name: "both ends", ops: []op6{{false, ip6Host2, 62000}, {true, ip6Other, 9000}}},
		{name: "edge values", ops: []op6{{false, [16]byte{0: 0xff, 15: 0xff}, 0xffff}, {true, [16]byte{}, 0}}},
		{name: "all ones", ops: []op6{{false, [16]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, 1}}},
		{name: "repeated", ops: []op6{{false, ip6Host2, 1}, {false, ip6Other, 2}, {true, ip6Host, 3}, {false, ip6Remote, 4}}},
		{name: "no-op", ops: []op6{{false, f.Src6, f.SrcPort}, {true, f.Dst6, f.DstPort}}, unchanged: true},
		{name: "round trip", ops: []op6{{false, ip6Host2, 61002}, {true, ip6Other, 8445}, {false, f.Src6, f.SrcPort}, {true, f.Dst6, f.DstPort}}, unchanged: true},
	}
	if o, ok := zeroOp6(f); ok {
		s = append(s, opSeq6{name: "result 0/0xffff", ops: []op6{o}})
	}
	return s
}

// zeroOp6 finds a rewrite after which the checksum field lands on the ones-complement zero
// corner: a full checksum that computes to 0 (sent as 0xffff for UDP) or a partial sum of 0xffff.
func zeroOp6(f *Frame) (op6, bool) {
	if f.L4 < 0 || l4CsumOffset6(f.Proto) < 0 {
		return op6{}, false
	}
	field := binary.BigEndian.Uint16(f.Buf[f.L4+l4CsumOffset6(f.Proto):])
	switch {
	case f.PartialCsum:
		for x := 0; x < 0x10000; x++ {
			ip := f.Src6
			ip[14], ip[15] = byte(x>>8), byte(x)
			if UpdatePartialAddr6(field, f.Src6, ip) == 0xffff {
				return op6{false, ip, f.SrcPort}, true
			}
		}
	case f.Proto == ProtoUDP && field == 0:
	case f.Proto == ProtoTCP || f.Proto == ProtoUDP || (f.Proto == ProtoICMPv6 && f.ICMPType == ICMPv6EchoRequest):
		for p := 0; p < 0x10000; p++ {
			if uint16(p) != f.SrcPort && updateFull(field, f.SrcPort, uint16(p)) == 0 {
				return op6{false, f.Src6, uint16(p)}, true
			}
		}
	case f.Proto == ProtoICMPv6 && f.ICMPType == ICMPv6EchoReply:
		for p := 0; p < 0x10000; p++ {
			if uint16(p) != f.DstPort && updateFull(field, f.DstPort, uint16(p)) == 0 {
				return op6{true, f.Dst6, uint16(p)}, true
			}
		}
	}
	return op6{}, false
}

// TestRewrite6AgainstGopacket rewrites random IPv6 frames in every way and checks each result
// against gopacket: the fields, a fresh parse, every byte of the upper-layer header and payload
// (checksum included, after the NIC's completion for a partial one), and the partial sum rule.
func TestRewrite6AgainstGopacket(t *testing.T) {
	r := rand.New(rand.NewPCG(61, 6))
	n := 600
	if testing.Short() {
		n = 100
	}
	for i := 0; i < n; i++ {
		orig, vnet, p := randFrame6(t, r)
		var f0 Frame
		if rs := f0.ParseAny(orig, vnet); rs != OK {
			t.Fatalf("frame %d: parse: %v (%+v)", i, rs, p)
		}
		for _, seq := range opSeqs6(&f0) {
			buf := bytes.Clone(orig)
			var f Frame
			if rs := f.ParseAny(buf, vnet); rs != OK {
				t.Fatalf("parse: %v", rs)
			}
			e := ends6{f.Src6, f.Dst6, f.SrcPort, f.DstPort}
			for _, o := range seq.ops {
				apply6(&f, o)
				e = model6(e, &f, o)
			}
			name := fmt.Sprintf("frame %d (proto %d type %d exts %d vnet %+v) %s", i, p.proto, p.icmpType, len(p.exts), vnet, seq.name)
			checkRewritten6(t, name, orig, buf, vnet, &f, e, seq.unchanged, p.udpZero)
			if t.Failed() {
				t.FailNow()
			}
		}
	}
}

// checkRewritten6 checks a rewritten IPv6 frame as checkRewritten does an IPv4 one.
func checkRewritten6(t *testing.T, name string, orig, buf []byte, vnet VnetHdr, f *Frame, e ends6, unchanged, udpZero bool) {
	t.Helper()
	if got := (ends6{f.Src6, f.Dst6, f.SrcPort, f.DstPort}); got != e {
		t.Errorf("%s: Frame fields after rewrite: %+v, want %+v", name, got, e)
	}
	var g Frame
	if r := g.ParseAny(buf, vnet); r != OK {
		t.Fatalf("%s: re-parse after rewrite: %v", name, r)
	}
	if got := (ends6{g.Src6, g.Dst6, g.SrcPort, g.DstPort}); got != e {
		t.Errorf("%s: re-parsed fields: %+v, want %+v", name, got, e)
	}
	if g.PartialCsum != f.PartialCsum || g.End != f.End || g.L4 != f.L4 || g.InnerL3 != f.InnerL3 || g.InnerL4 != f.InnerL4 {
		t.Errorf("%s: re-parse differs in structure", name)
	}
	if unchanged && !bytes.Equal(buf, orig) {
		t.Errorf("%s: frame changed although the rewrite was a no-op overall", name)
	}
	// Nothing outside the addresses and the upper-layer header may change.
	l4 := f.L4
	if l4 < 0 {
		l4 = f.End
	}
	if !bytes.Equal(buf[:f.L3+ip6SrcOff], orig[:f.L3+ip6SrcOff]) || !bytes.Equal(buf[f.L3+ipv6HdrLen:l4], orig[f.L3+ipv6HdrLen:l4]) ||
		!bytes.Equal(buf[f.End:], orig[f.End:]) {
		t.Errorf("%s: bytes changed outside the addresses and the upper-layer header", name)
	}
	if f.L4 < 0 {
		return
	}
	work := bytes.Clone(buf)
	if f.PartialCsum {
		field := binary.BigEndian.Uint16(buf[f.L4+l4CsumOffset6(f.Proto):])
		want := Fold(PseudoHeaderSum6(e.src, finalDst6(buf[f.L3:f.End]), f.Proto, f.End-f.L4))
		if !sameSum(field, want) {
			t.Errorf("%s: partial sum field %#04x, pseudo-header sum of the new addresses %#04x", name, field, want)
		}
		nicComplete(work, f.End, vnet, f.Proto)
	}
	if l4CsumOffset6(f.Proto) >= 0 {
		checkL4Gopacket(t, name, work[f.L3:f.End], udpZero && !f.PartialCsum)
	}
}

// TestParseAnyMatchesGopacket parses random IPv6 frames, fragments among them, and checks
// every field ParseAny fills against gopacket's decoding.
func TestParseAnyMatchesGopacket(t *testing.T) {
	r := rand.New(rand.NewPCG(62, 6))
	for i := 0; i < 1500; i++ {
		b, vnet, p := randFrame6(t, r)
		if i%5 == 0 {
			// A fragment: first (with the upper-layer header) or later.
			var fe ext6
			fe.typ, fe.id, fe.more = extFragment, r.Uint32(), r.IntN(2) == 0
			if r.IntN(2) == 0 {
				fe.fragOff = uint16(1 + r.IntN(8000))
			} else {
				fe.more = true
			}
			p.exts = append(randExts(r, false), fe)
			b, vnet = p.frame(t), VnetHdr{}
		}
		var f Frame
		if rs := f.ParseAny(b, vnet); rs != OK {
			t.Fatalf("frame %d: %v", i, rs)
		}
		checkParse6(t, fmt.Sprintf("frame %d", i), b, vnet, p, &f)
		if t.Failed() {
			t.FailNow()
		}
	}
}

func checkParse6(t *testing.T, name string, b []byte, vnet VnetHdr, p pkt6, f *Frame) {
	t.Helper()
	w := bytes.Clone(b)
	end := EthHdrLen + ipv6HdrLen + int(binary.BigEndian.Uint16(w[EthHdrLen+4:]))
	if end == EthHdrLen+ipv6HdrLen {
		end = len(w)
		binary.BigEndian.PutUint16(w[EthHdrLen+4:], uint16(end-EthHdrLen-ipv6HdrLen))
	}
	all := decode6(w, layers.LayerTypeEthernet)
	layer := func(lt gopacket.LayerType) gopacket.Layer {
		for _, l := range all {
			if l.LayerType() == lt {
				return l
			}
		}
		return nil
	}
	ip, _ := layer(layers.LayerTypeIPv6).(*layers.IPv6)
	if ip == nil {
		t.Fatalf("%s: gopacket: no IPv6", name)
	}
	if !f.IPv6 || f.L3 != EthHdrLen || f.End != end || [16]byte(ip.SrcIP) != f.Src6 || [16]byte(ip.DstIP) != f.Dst6 ||
		!f.DontFrag || f.Src != ([4]byte{}) || f.Dst != ([4]byte{}) || f.IPID != 0 {
		t.Errorf("%s: IPv6 header fields: %+v", name, f)
	}
	if s, d := f.Addrs16(); s != f.Src6 || d != f.Dst6 {
		t.Errorf("%s: Addrs16", name)
	}
	l4 := EthHdrLen + ipv6HdrLen
	var frag *layers.IPv6Fragment
	for _, l := range all {
		switch l := l.(type) {
		case *layers.IPv6HopByHop, *layers.IPv6Destination, *layers.IPv6Routing:
			l4 += len(l.LayerContents())
		case *layers.IPv6Fragment:
			l4 += 8
			frag = l
		}
	}
	atomic := frag != nil && frag.FragmentOffset == 0 && !frag.MoreFragments
	if frag != nil {
		if f.FragOff != frag.FragmentOffset || f.MoreFrags != frag.MoreFragments || f.FragID != frag.Identification {
			t.Errorf("%s: fragment fields %d %v %#x, gopacket %+v", name, f.FragOff, f.MoreFrags, f.FragID, frag)
		}
		if frag.FragmentOffset != 0 {
			if f.L4 != -1 || f.Proto != uint8(frag.NextHeader) || f.SrcPort != 0 || f.TCPFlags != 0 {
				t.Errorf("%s: later fragment: L4 %d proto %d", name, f.L4, f.Proto)
			}
			return
		}
		if !atomic {
			// gopacket decodes no further than the fragment header of a first fragment:
			// the description says the rest.
			l4 = EthHdrLen + p.l4Off()
		}
	} else if f.FragOff != 0 || f.MoreFrags {
		t.Errorf("%s: fragment fields without a fragment header", name)
	}
	if f.L4 != l4 || f.Proto != p.proto {
		t.Errorf("%s: L4 %d proto %d, want %d %d", name, f.L4, f.Proto, l4, p.proto)
	}
	if frag != nil && !atomic {
		return
	}
	switch p.proto {
	case ProtoTCP:
		tcp := layer(layers.LayerTypeTCP).(*layers.TCP)
		var fl uint8
		for i, set := range []bool{tcp.FIN, tcp.SYN, tcp.RST, tcp.PSH, tcp.ACK, tcp.URG, tcp.ECE, tcp.CWR} {
			if set {
				fl |= 1 << i
			}
		}
		if f.SrcPort != uint16(tcp.SrcPort) || f.DstPort != uint16(tcp.DstPort) || f.TCPFlags != fl ||
			f.TCPSeq() != tcp.Seq || f.TCPAckNum() != tcp.Ack || f.TCPWindow() != tcp.Window ||
			!f.HasPorts() || f.IsTCPSyn() != (tcp.SYN && !tcp.ACK) || f.IsTCPSynAck() != (tcp.SYN && tcp.ACK) {
			t.Errorf("%s: TCP fields", name)
		}
		n := uint32(len(tcp.Payload))
		if tcp.SYN || tcp.FIN {
			n++
		}
		if f.TCPSeqLen() != n {
			t.Errorf("%s: TCPSeqLen %d, want %d", name, f.TCPSeqLen(), n)
		}
		if ws, ok := f.TCPWindowScale(); tcp.SYN && len(p.tcpOpts) > 0 && (!ok || ws != 7) {
			t.Errorf("%s: window scale %d %v", name, ws, ok)
		}
	case ProtoUDP:
		udp := layer(layers.LayerTypeUDP).(*layers.UDP)
		if f.SrcPort != uint16(udp.SrcPort) || f.DstPort != uint16(udp.DstPort) || !f.HasPorts() {
			t.Errorf("%s: UDP fields", name)
		}
	case ProtoICMPv6:
		icmp := layer(layers.LayerTypeICMPv6).(*layers.ICMPv6)
		if f.ICMPType != icmp.TypeCode.Type() || f.ICMPCode != icmp.TypeCode.Code() || f.HasPorts() || !f.IsICMP() {
			t.Errorf("%s: ICMPv6 fields", name)
		}
		echo, _ := layer(layers.LayerTypeICMPv6Echo).(*layers.ICMPv6Echo)
		if f.IsICMPEcho() != (echo != nil) {
			t.Errorf("%s: IsICMPEcho %v", name, f.IsICMPEcho())
		}
		if echo != nil && (f.SrcPort != echo.Identifier || f.DstPort != echo.Identifier || f.ICMPEchoSeq() != echo.SeqNumber ||
			f.IsICMPEchoRequest() != (f.ICMPType == ICMPv6EchoRequest) || f.IsICMPEchoReply() != (f.ICMPType == ICMPv6EchoReply)) {
			t.Errorf("%s: echo fields", name)
		}
	}
	if f.PartialCsum != (vnet.Flags&VnetNeedsCsum != 0) || f.Encap {
		t.Errorf("%s: partial %v encap %v", name, f.PartialCsum, f.Encap)
	}
}

// TestParseAnyIPv4 checks that ParseAny gives for every IPv4 frame, good or bad, exactly what
// Parse gives, and that Parse still refuses IPv6 frames with NotIPv4.
func TestParseAnyIPv4(t *testing.T) {
	var frames [][]byte
	var vnets []VnetHdr
	for _, c := range rwCases {
		b, v := c.build(t)
		frames, vnets = append(frames, b), append(vnets, v)
	}
	udp := buildUDP(t, ipHost2, ipRemote, 61000, 53, 20)
	frames = append(frames, buildICMPError(t, ipRemote, ipHost2, 3, 3, udp[EthHdrLen:]), udp[:30], udp[:10])
	vnets = append(vnets, VnetHdr{}, VnetHdr{}, VnetHdr{})
	vx, vxv := vxlanTSO(t)
	frames, vnets = append(frames, vx), append(vnets, vxv)
	for i := range frames {
		for _, v := range []VnetHdr{vnets[i], {GSOType: GSOTCPv6, GSOSize: 100}, {Flags: VnetNeedsCsum, CsumStart: 34, CsumOffset: 2}} {
			var a, b Frame
			ra, rb := a.Parse(frames[i], v), b.ParseAny(frames[i], v)
			if ra != rb || !reflect.DeepEqual(a, b) {
				t.Errorf("frame %d: Parse %v %+v\nParseAny %v %+v", i, ra, a, rb, b)
			}
		}
	}
	b, _, _ := randFrame6(t, rand.New(rand.NewPCG(1, 2)))
	var f Frame
	if r := f.Parse(b, VnetHdr{}); r != NotIPv4 || f.L3 != -1 || f.IPv6 {
		t.Errorf("Parse of an IPv6 frame: %v %+v", r, f)
	}
}

// TestFragments6 rewrites the fragments of UDP, TCP and ICMPv6 echo datagrams (behind a
// destination options header, with more extension headers in the fragmentable part for some),
// reassembles them and lets gopacket check the upper-layer checksum of the whole.
func TestFragments6(t *testing.T) {
	for _, tc := range []struct {
		name  string
		p     pkt6
		after []ext6 // extension headers after the fragment header (in the fragmentable part)
	}{
		{"udp", pkt6{proto: ProtoUDP, sport: 5000, dport: 6000, body: payloadBytes(3000, 1)}, nil},
		{"tcp", pkt6{proto: ProtoTCP, sport: 5000, dport: 443, flags: TCPAck, body: payloadBytes(2999, 2)}, nil},
		{"echo request", pkt6{proto: ProtoICMPv6, icmpType: ICMPv6EchoRequest, id: 77, body: payloadBytes(2500, 3)}, nil},
		{"udp, destination options after the fragment header", pkt6{proto: ProtoUDP, sport: 5000, dport: 6000, body: payloadBytes(2000, 4)},
			[]ext6{{typ: extDestOpts, n: 16}}},
	} {
		sp, dp := tc.p.sport, tc.p.dport
		if tc.p.proto == ProtoICMPv6 {
			sp = tc.p.id
		}
		for _, seq := range []opSeq6{
			{name: "src addr+port", ops: []op6{{false, ip6Host2, 61000}}},
			{name: "both ends", ops: []op6{{false, ip6Host2, 61000}, {true, ip6Other, 53}}},
			{name: "no-op", ops: []op6{{false, ip6Host, sp}, {true, ip6Remote, dp}}, unchanged: true},
		} {
			t.Run(tc.name+"/"+seq.name, func(t *testing.T) {
				p := tc.p
				p.src, p.dst = ip6Host, ip6Remote
				p.exts = append([]ext6{{typ: extDestOpts, n: 8}}, tc.after...)
				whole := p.packet(t)
				unfrag := whole[:ipv6HdrLen+8] // IPv6 header and the first destination options
				rest := whole[ipv6HdrLen+8:]   // the fragmentable part
				var frags [][]byte
				for off := 0; off < len(rest); off += 1232 {
					part := rest[off:min(len(rest), off+1232)]
					fh := ext6{typ: extFragment, fragOff: uint16(off / 8), more: off+1232 < len(rest), id: 0xc0ffee}.bytes(unfrag[ipv6HdrLen])
					pk := append(append(bytes.Clone(unfrag), fh...), part...)
					pk[ipv6HdrLen] = extFragment
					binary.BigEndian.PutUint16(pk[4:], uint16(len(pk)-ipv6HdrLen))
					frags = append(frags, ethFrame6(pk))
				}
				orig := make([][]byte, len(frags))
				for i, b := range frags {
					orig[i] = bytes.Clone(b)
					var f Frame
					if r := f.ParseAny(b, VnetHdr{}); r != OK || f.FragID != 0xc0ffee || f.MoreFrags != (i < len(frags)-1) {
						t.Fatalf("fragment %d: %v %+v", i, r, f)
					}
					if (i == 0) != (f.L4 >= 0) {
						t.Fatalf("fragment %d: L4 %d", i, f.L4)
					}
					if i > 0 && f.Proto != rest0(whole) {
						t.Errorf("later fragment's protocol %d, want the fragment header's next header %d", f.Proto, rest0(whole))
					}
					for _, o := range seq.ops {
						apply6(&f, o)
					}
				}
				if seq.unchanged {
					for i := range frags {
						if !bytes.Equal(frags[i], orig[i]) {
							t.Fatalf("no-op changed fragment %d", i)
						}
					}
				}
				re := bytes.Clone(frags[0][EthHdrLen : EthHdrLen+ipv6HdrLen+8])
				for i, b := range frags {
					if !bytes.Equal(b[EthHdrLen+8:EthHdrLen+ipv6HdrLen], frags[0][EthHdrLen+8:EthHdrLen+ipv6HdrLen]) {
						t.Errorf("fragment %d: addresses differ from the first's", i)
					}
					pl := EthHdrLen + ipv6HdrLen + int(binary.BigEndian.Uint16(b[EthHdrLen+4:]))
					if i > 0 && !bytes.Equal(b[EthHdrLen+ipv6HdrLen:pl], orig[i][EthHdrLen+ipv6HdrLen:pl]) {
						t.Errorf("fragment %d: payload changed", i)
					}
					re = append(re, b[EthHdrLen+ipv6HdrLen+16:pl]...)
				}
				re[ipv6HdrLen] = rest0(whole)
				binary.BigEndian.PutUint16(re[4:], uint16(len(re)-ipv6HdrLen))
				if len(re) != len(whole) {
					t.Fatalf("reassembled %d bytes, want %d", len(re), len(whole))
				}
				checkL4Gopacket(t, "reassembled", re, false)
			})
		}
	}
}

// rest0 is the next header of the first destination options header of a TestFragments6 packet.
func rest0(whole []byte) uint8 { return whole[ipv6HdrLen] }

// TestWalkIPv6LaterFragment checks that the walk stops at a later fragment's fragment header:
// what follows is data, whatever it looks like.
func TestWalkIPv6LaterFragment(t *testing.T) {
	junk := bytes.Repeat([]byte{0xff}, 64) // as a header: length 2048, past the packet
	p := pkt6{src: ip6Host, dst: ip6Remote, proto: extDestOpts, body: junk,
		exts: []ext6{{typ: extFragment, fragOff: 100, id: 9}}}
	pk := p.packet(t)
	h, r := WalkIPv6(pk, false)
	if r != OK || h.L4 != -1 || h.Proto != extDestOpts || h.FragOff != 100 || h.ExtHeaders != 1 {
		t.Errorf("later fragment: %v %+v", r, h)
	}
	// A first fragment is walked on.
	binary.BigEndian.PutUint16(pk[ipv6HdrLen+2:], 1)
	if _, r := WalkIPv6(pk, false); r != BadExtHeader {
		t.Errorf("first fragment with a broken header after the fragment header: %v", r)
	}
}

// TestRouted checks IPv6Headers.Routed and what it means for SetDst6: a packet still being
// source-routed keeps its checksum when its destination field changes, as gopacket (which
// takes the final destination for the pseudo-header) confirms.
func TestRouted(t *testing.T) {
	fin := ip6Other
	for _, tc := range []struct {
		name   string
		rt     ext6
		routed bool
	}{
		{"type 0 with segments left", ext6{typ: extRouting, rtype: 0, segLeft: 1, addrs: [][16]byte{ip6Host2, fin}}, true},
		{"type 2 with segments left", ext6{typ: extRouting, rtype: 2, segLeft: 1, addrs: [][16]byte{fin}}, true},
		{"segment routing with segments left", ext6{typ: extRouting, rtype: 4, segLeft: 1, addrs: [][16]byte{fin, ip6Host2}}, true},
		{"segments left 0", ext6{typ: extRouting, rtype: 4, addrs: [][16]byte{fin, ip6Host2}}, false},
		{"unknown type", ext6{typ: extRouting, rtype: 3, segLeft: 1, addrs: [][16]byte{fin}}, false},
		{"no address", ext6{typ: extRouting, rtype: 4, segLeft: 1}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, p := range []pkt6{
				{src: ip6Host, dst: ip6Remote, proto: ProtoTCP, sport: 1, dport: 2, flags: TCPAck, body: payloadBytes(99, 1), exts: []ext6{tc.rt}},
				{src: ip6Host, dst: ip6Remote, proto: ProtoICMPv6, icmpType: ICMPv6EchoReply, id: 5, body: payloadBytes(9, 1), exts: []ext6{tc.rt}},
			} {
				b := p.frame(t)
				h, r := WalkIPv6(b[EthHdrLen:], false)
				if r != OK || h.Routed != tc.routed {
					t.Fatalf("walk: %v routed %v", r, h.Routed)
				}
				for _, partial := range []bool{false, true} {
					buf := bytes.Clone(b)
					v := VnetHdr{}
					if partial {
						v = makePartial6(t, buf, v)
					}
					var f Frame
					if r := f.ParseAny(buf, v); r != OK {
						t.Fatal(r)
					}
					f.SetDst6(ip6Host2, 77)
					f.SetSrc6(ip6Other, 78)
					e := ends6{ip6Other, ip6Host2, 78, 77}
					if p.proto == ProtoICMPv6 {
						e.srcPort, e.dstPort = 77, 77
					}
					checkRewritten6(t, fmt.Sprintf("proto %d partial %v", p.proto, partial), b, buf, v, &f, e, false, false)
				}
			}
		})
	}
}
