package rewrite

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/gopacket/gopacket/layers"
)

// icmp6Err returns an ICMPv6 error frame from src to dst of type typ and code quoting quote.
func icmp6Err(t testing.TB, src, dst [16]byte, typ, code uint8, quote []byte) []byte {
	t.Helper()
	body := append([]byte{0, 0, 0x05, 0x00}, quote...) // a Packet Too Big's MTU: 1280
	return pkt6{src: src, dst: dst, proto: ProtoICMPv6, icmpType: typ, icmpCode: code, body: body}.frame(t)
}

// TestICMPv6ErrorQuote translates ICMPv6 errors about translated flows both ways, with quotes
// whole, cut short and behind extension headers, and checks the outer ICMPv6 checksum with
// gopacket, and the quote against the quoted packet built by gopacket with the translated
// endpoints (cut as short: every quoted byte, the quoted checksum included, must be what a
// packet sent with those endpoints would have held).
func TestICMPv6ErrorQuote(t *testing.T) {
	// The packets as they left after source NAT (ip6Host2 is the NAT address), and as the host
	// got one after reverse NAT.
	udpOut := pkt6{src: ip6Host2, dst: ip6Remote, proto: ProtoUDP, sport: 61000, dport: 53, body: payloadBytes(30, 1)}
	udpNone := udpOut
	udpNone.udpZero = true
	tcpOut := pkt6{src: ip6Host2, dst: ip6Remote, proto: ProtoTCP, sport: 61001, dport: 443, flags: TCPSyn, tcpOpts: tcpOpts6(),
		exts: []ext6{{typ: extDestOpts, n: 16}, {typ: extRouting, rtype: 4, addrs: [][16]byte{ip6Remote}}}}
	pingOut := pkt6{src: ip6Host2, dst: ip6Remote, proto: ProtoICMPv6, icmpType: ICMPv6EchoRequest, id: 0x7777, seq: 1, body: payloadBytes(16, 2)}
	routed := pkt6{src: ip6Remote, dst: ip6Host, proto: ProtoUDP, sport: 53, dport: 5353, body: payloadBytes(20, 3),
		exts: []ext6{{typ: extRouting, rtype: 4, segLeft: 1, addrs: [][16]byte{ip6Other, ip6Host}}}}
	udpIn := pkt6{src: ip6Remote, dst: ip6Host, proto: ProtoUDP, sport: 53, dport: 5353, body: payloadBytes(30, 4)}
	fragOut := pkt6{src: ip6Host2, dst: ip6Remote, proto: ProtoUDP, body: payloadBytes(100, 5),
		exts: []ext6{{typ: extFragment, fragOff: 100, id: 1}}}

	type tc struct {
		name      string
		outerSrc  [16]byte
		outerDst  [16]byte
		typ, code uint8
		quoted    pkt6
		cut       int  // bytes of the quoted packet quoted, 0: all
		outer     op6  // outer rewrite
		inner     op6  // inner rewrite (dst: SetInnerDst6)
		innerL4   bool // InnerL4 is expected
		unchanged bool
	}
	cases := []tc{
		{"port unreachable quoting udp", ip6Remote, ip6Host2, ICMPv6DestUnreach, 4, udpOut, 0,
			op6{true, ip6Host, 0}, op6{false, ip6Host, 5353}, true, false},
		{"packet too big quoting a tcp syn behind extension headers", ip6Other, ip6Host2, ICMPv6PacketTooBig, 0, tcpOut, 0,
			op6{true, ip6Host, 0}, op6{false, ip6Host, 40000}, true, false},
		{"time exceeded quoting 8 bytes of tcp", ip6Other, ip6Host2, ICMPv6TimeExceeded, 0, tcpOut, tcpOut.l4Off() + 8,
			op6{true, ip6Host, 0}, op6{false, ip6Host, 40001}, true, false},
		{"time exceeded quoting 18 bytes of tcp (the checksum field)", ip6Other, ip6Host2, ICMPv6TimeExceeded, 0, tcpOut, tcpOut.l4Off() + 18,
			op6{true, ip6Host, 0}, op6{false, ip6Host, 40001}, true, false},
		{"time exceeded quoting 2 bytes of udp (no ports)", ip6Other, ip6Host2, ICMPv6TimeExceeded, 0, udpOut, ipv6HdrLen + 2,
			op6{true, ip6Host, 0}, op6{false, ip6Host, 40001}, true, false},
		{"quote cut inside the extension headers", ip6Other, ip6Host2, ICMPv6TimeExceeded, 0, tcpOut, ipv6HdrLen + 20,
			op6{true, ip6Host, 0}, op6{false, ip6Host, 40001}, false, false},
		{"parameter problem quoting a ping", ip6Other, ip6Host2, ICMPv6ParamProblem, 0, pingOut, 0,
			op6{true, ip6Host, 0}, op6{false, ip6Host, 0x1111}, true, false},
		{"unreachable quoting udp without checksum", ip6Remote, ip6Host2, ICMPv6DestUnreach, 3, udpNone, 0,
			op6{true, ip6Host, 0}, op6{false, ip6Host, 5353}, true, false},
		{"unreachable quoting a later fragment", ip6Remote, ip6Host2, ICMPv6DestUnreach, 3, fragOut, 0,
			op6{true, ip6Host, 0}, op6{false, ip6Host, 5353}, false, false},
		{"host's port unreachable about a reverse-NATed packet", ip6Host, ip6Remote, ICMPv6DestUnreach, 4, udpIn, 0,
			op6{false, ip6Host2, 0}, op6{true, ip6Host2, 61000}, true, false},
		{"host's error about a source-routed packet", ip6Host, ip6Remote, ICMPv6DestUnreach, 4, routed, 0,
			op6{false, ip6Host2, 0}, op6{true, ip6Host2, 61000}, true, false},
		{"inner address only", ip6Remote, ip6Host2, ICMPv6DestUnreach, 4, udpOut, 0,
			op6{true, ip6Host, 0}, op6{false, ip6Host, 61000}, true, false},
		{"no-op", ip6Remote, ip6Host2, ICMPv6DestUnreach, 4, udpOut, 0,
			op6{true, ip6Host2, 0}, op6{false, ip6Host2, 61000}, true, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			quote := c.quoted.packet(t)
			if c.cut > 0 {
				quote = quote[:c.cut]
			}
			orig := icmp6Err(t, c.outerSrc, c.outerDst, c.typ, c.code, quote)
			buf := bytes.Clone(orig)
			var f Frame
			if r := f.ParseAny(buf, VnetHdr{}); r != OK {
				t.Fatalf("parse: %v", r)
			}
			q := EthHdrLen + ipv6HdrLen + icmpMinLen
			wantL4 := -1
			if c.innerL4 {
				wantL4 = q + c.quoted.l4Off()
			}
			if f.InnerL3 != q || f.InnerL4 != wantL4 || f.IsICMPError() != c.innerL4 {
				t.Fatalf("InnerL3 %d InnerL4 %d (want %d %d)", f.InnerL3, f.InnerL4, q, wantL4)
			}
			// The quoted endpoints, as ParseAny should read them.
			qe := ends6{c.quoted.src, c.quoted.dst, 0, 0}
			hasPorts := c.innerL4 && len(quote) >= c.quoted.l4Off()+portBytes(c.quoted.proto)
			switch {
			case !hasPorts:
			case c.quoted.proto == ProtoICMPv6:
				qe.srcPort, qe.dstPort = c.quoted.id, c.quoted.id
			default:
				qe.srcPort, qe.dstPort = c.quoted.sport, c.quoted.dport
			}
			if got := (ends6{f.InnerSrc6, f.InnerDst6, f.InnerSrcPort, f.InnerDstPort}); got != qe {
				t.Fatalf("inner endpoints %+v, want %+v", got, qe)
			}
			if s, d := f.InnerAddrs16(); s != qe.src || d != qe.dst {
				t.Errorf("InnerAddrs16")
			}
			if c.innerL4 && f.InnerProto != c.quoted.proto {
				t.Errorf("InnerProto %d", f.InnerProto)
			}
			apply6(&f, c.outer)
			want, wantPkt := qe, c.quoted
			if c.inner.dst {
				f.SetInnerDst6(c.inner.ip, c.inner.port)
				want.dst, wantPkt.dst = c.inner.ip, c.inner.ip
				if hasPorts {
					want.dstPort = c.inner.port
					wantPkt.dport = c.inner.port
				}
			} else {
				f.SetInnerSrc6(c.inner.ip, c.inner.port)
				want.src, wantPkt.src = c.inner.ip, c.inner.ip
				if hasPorts {
					want.srcPort = c.inner.port
					wantPkt.sport = c.inner.port
					if c.quoted.proto == ProtoICMPv6 {
						want.dstPort, wantPkt.id = c.inner.port, c.inner.port
					}
				}
			}
			var g Frame
			if r := g.ParseAny(buf, VnetHdr{}); r != OK {
				t.Fatalf("re-parse: %v", r)
			}
			for _, x := range []*Frame{&f, &g} {
				if got := (ends6{x.InnerSrc6, x.InnerDst6, x.InnerSrcPort, x.InnerDstPort}); got != want {
					t.Errorf("inner endpoints %+v, want %+v", got, want)
				}
			}
			if c.unchanged && !bytes.Equal(buf, orig) {
				t.Errorf("no-op changed the frame")
			}
			// The outer ICMPv6 checksum covers the outer pseudo-header and the whole quote.
			checkL4Gopacket(t, "outer ICMPv6", buf[EthHdrLen:f.End], false)
			// The quote is what the packet would have held with the new endpoints.
			wq := wantQuote(t, wantPkt, quote, &f)
			if got := buf[q:f.End]; !bytes.Equal(got, wq) {
				t.Errorf("quote differs from the packet gopacket builds with the new endpoints:\n got % x\nwant % x", got, wq)
			}
			if c.cut == 0 && c.innerL4 {
				checkL4Gopacket(t, "quoted", buf[q:f.End], c.quoted.udpZero)
			}
		})
	}
}

// TestICMPv6ErrorPartial: a CHECKSUM_PARTIAL ICMPv6 error's outer field is the pseudo-header
// sum, updated for the outer address and left alone for the quote, which the device sums.
func TestICMPv6ErrorPartial(t *testing.T) {
	quote := pkt6{src: ip6Host2, dst: ip6Remote, proto: ProtoUDP, sport: 61000, dport: 53, body: payloadBytes(30, 1)}.packet(t)
	buf := icmp6Err(t, ip6Remote, ip6Host2, ICMPv6DestUnreach, 4, quote)
	vnet := makePartial6(t, buf, VnetHdr{})
	var f Frame
	if r := f.ParseAny(buf, vnet); r != OK || !f.PartialCsum {
		t.Fatalf("parse: %v partial %v", r, f.PartialCsum)
	}
	f.SetDst6(ip6Host, 0)
	f.SetInnerSrc6(ip6Host, 5353)
	field := binary.BigEndian.Uint16(buf[f.L4+2:])
	if want := Fold(PseudoHeaderSum6(ip6Remote, ip6Host, ProtoICMPv6, f.End-f.L4)); !sameSum(field, want) {
		t.Errorf("partial field %#04x, want %#04x", field, want)
	}
	nicComplete(buf, f.End, vnet, ProtoICMPv6)
	checkL4Gopacket(t, "outer ICMPv6", buf[EthHdrLen:f.End], false)
	checkL4Gopacket(t, "quoted", buf[f.InnerL3:f.End], false)
}

// TestICMPv6ErrorRandom translates random quotes (random extension headers, cut short at a
// random length or whole) both ways and checks them as TestICMPv6ErrorQuote does.
func TestICMPv6ErrorRandom(t *testing.T) {
	r := rand.New(rand.NewPCG(63, 6))
	for i := 0; i < 800; i++ {
		_, _, p := randFrame6(t, r)
		if p.proto == ProtoICMPv6 && p.icmpType != ICMPv6EchoRequest && p.icmpType != ICMPv6EchoReply {
			continue
		}
		if len(p.body) > 600 {
			p.body = p.body[:600]
		}
		whole := p.packet(t)
		quote := whole
		if r.IntN(2) == 0 {
			quote = whole[:r.IntN(len(whole)+1)]
		}
		ingress := r.IntN(2) == 0 // from the wire: SetDst6 and SetInnerSrc6; else the host's: SetSrc6 and SetInnerDst6
		b := icmp6Err(t, randAddr6R(r), randAddr6R(r), uint8(1+r.IntN(4)), 0, quote)
		var v VnetHdr
		if r.IntN(4) == 0 {
			v = makePartial6(t, b, v)
		}
		buf := bytes.Clone(b)
		var f Frame
		if rs := f.ParseAny(buf, v); rs != OK {
			t.Fatalf("error %d: %v", i, rs)
		}
		name := fmt.Sprintf("error %d (quote %d of %d bytes, exts %d, ingress %v, partial %v)", i, len(quote), len(whole), len(p.exts), ingress, f.PartialCsum)
		if (f.InnerL3 >= 0) != (len(quote) >= ipv6HdrLen) {
			t.Fatalf("%s: InnerL3 %d", name, f.InnerL3)
		}
		if f.InnerL3 < 0 {
			continue
		}
		nip, nport := randAddr6R(r), uint16(r.IntN(0x10000))
		hasPorts := f.InnerL4 >= 0 && len(quote) >= p.l4Off()+portBytes(p.proto)
		isID := p.proto == ProtoICMPv6 && ((ingress && p.icmpType == ICMPv6EchoRequest) || (!ingress && p.icmpType == ICMPv6EchoReply))
		if ingress {
			f.SetDst6(randAddr6R(r), 1)
			f.SetInnerSrc6(nip, nport)
			p.src = nip
			if hasPorts && p.proto != ProtoICMPv6 {
				p.sport = nport
			}
		} else {
			f.SetSrc6(randAddr6R(r), 1)
			f.SetInnerDst6(nip, nport)
			p.dst = nip
			if hasPorts && p.proto != ProtoICMPv6 {
				p.dport = nport
			}
		}
		if hasPorts && isID {
			p.id = nport
		}
		wq := wantQuote(t, p, quote, &f)
		if !bytes.Equal(buf[f.InnerL3:f.End], wq) {
			t.Fatalf("%s: quote differs from gopacket's packet with the new endpoints:\n got % x\nwant % x", name, buf[f.InnerL3:f.End], wq)
		}
		work := bytes.Clone(buf)
		if f.PartialCsum {
			nicComplete(work, f.End, v, ProtoICMPv6)
		}
		checkL4Gopacket(t, name+" outer", work[EthHdrLen:f.End], false)
		if t.Failed() {
			t.FailNow()
		}
	}
}

// TestParseAny6Errors lists malformed IPv6 frames and virtio-net headers, each with its reason.
func TestParseAny6Errors(t *testing.T) {
	tcp := pkt6{src: ip6Host, dst: ip6Remote, proto: ProtoTCP, sport: 1, dport: 2, flags: TCPAck, body: payloadBytes(100, 1)}
	udp := pkt6{src: ip6Host, dst: ip6Remote, proto: ProtoUDP, sport: 1, dport: 2, body: payloadBytes(100, 1)}
	ping := pkt6{src: ip6Host, dst: ip6Remote, proto: ProtoICMPv6, icmpType: ICMPv6EchoRequest, body: payloadBytes(10, 1)}
	set := func(b []byte, off int, v ...byte) []byte { b = bytes.Clone(b); copy(b[off:], v); return b }
	payload := func(b []byte, n int) []byte {
		b = bytes.Clone(b)
		binary.BigEndian.PutUint16(b[EthHdrLen+4:], uint16(n))
		return b
	}
	withExts := func(p pkt6, e ...ext6) pkt6 { p.exts = e; return p }
	nine := make([]ext6, MaxIPv6ExtHeaders+1)
	for i := range nine {
		nine[i] = ext6{typ: extDestOpts, n: 8}
	}
	tf := tcp.frame(t)
	l4 := EthHdrLen + ipv6HdrLen
	tcpPartial := VnetHdr{Flags: VnetNeedsCsum, CsumStart: uint16(l4), CsumOffset: 16}
	cases := []struct {
		name  string
		frame []byte
		vnet  VnetHdr
		want  Reason
	}{
		{"ok", tf, VnetHdr{}, OK},
		{"ethernet only", tf[:EthHdrLen], VnetHdr{}, ShortFrame},
		{"short ipv6 header", tf[:EthHdrLen+39], VnetHdr{}, ShortFrame},
		{"version 4 under ethertype ipv6", set(tf, EthHdrLen, 0x45), VnetHdr{}, BadIPVersion},
		{"payload length beyond the frame", payload(tf, len(tf)), VnetHdr{}, BadIPLength},
		{"payload length 0 without gso", payload(tf, 0), VnetHdr{}, ShortL4},
		{"tcp header cut by the payload length", payload(tf, 19), VnetHdr{}, ShortL4},
		{"tcp data offset 4", set(tf, l4+12, 0x40), VnetHdr{}, BadTCPOffset},
		{"tcp data offset 15", set(tf, l4+12, 0xf0), VnetHdr{}, OK}, // 60 bytes: inside the 120-byte segment
		{"tcp data offset beyond the packet", payload(set(tf, l4+12, 0xf0), 40), VnetHdr{}, BadTCPOffset},
		{"udp header cut", payload(udp.frame(t), 7), VnetHdr{}, ShortL4},
		{"icmpv6 header cut", payload(ping.frame(t), 7), VnetHdr{}, ShortL4},
		{"extension header past the end", payload(withExts(tcp, ext6{typ: extDestOpts, n: 16}).frame(t), 8), VnetHdr{}, BadExtHeader},
		{"hop-by-hop not first", withExts(tcp, ext6{typ: extDestOpts, n: 8}, ext6{typ: extHopByHop, n: 8}).frame(t), VnetHdr{}, BadExtHeader},
		{"two fragment headers", withExts(tcp, ext6{typ: extFragment}, ext6{typ: extFragment}).frame(t), VnetHdr{}, BadExtHeader},
		{"nine extension headers", withExts(tcp, nine...).frame(t), VnetHdr{}, ExtChainTooLong},
		{"vlan tag", set(tf, 12, 0x81, 0x00), VnetHdr{}, VLANTagged},
		{"arp", set(tf, 12, 0x08, 0x06), VnetHdr{}, NotIPv4},
		{"partial tcp", tf, tcpPartial, OK},
		{"partial, wrong offset", tf, VnetHdr{Flags: VnetNeedsCsum, CsumStart: uint16(l4), CsumOffset: 6}, BadVnetHdr},
		{"partial, field past the packet", tf, VnetHdr{Flags: VnetNeedsCsum, CsumStart: uint16(len(tf) - 1), CsumOffset: 0}, BadVnetHdr},
		{"partial icmpv6", ping.frame(t), VnetHdr{Flags: VnetNeedsCsum, CsumStart: uint16(l4), CsumOffset: 2}, OK},
		{"partial icmpv6, wrong offset", ping.frame(t), VnetHdr{Flags: VnetNeedsCsum, CsumStart: uint16(l4), CsumOffset: 16}, BadVnetHdr},
		{"gso tcpv6", tf, VnetHdr{GSOType: GSOTCPv6, GSOSize: 50}, OK},
		{"gso tcpv6 ecn", tf, VnetHdr{GSOType: GSOTCPv6 | GSOECN, GSOSize: 50}, OK},
		{"gso tcpv6 payload length 0", payload(tf, 0), VnetHdr{GSOType: GSOTCPv6, GSOSize: 50}, OK},
		{"gso tcpv4 on ipv6", tf, VnetHdr{GSOType: GSOTCPv4, GSOSize: 50}, BadVnetHdr},
		{"gso tcpv6 on udp", udp.frame(t), VnetHdr{GSOType: GSOTCPv6, GSOSize: 50}, BadVnetHdr},
		{"gso udp_l4", udp.frame(t), VnetHdr{GSOType: GSOUDPL4, GSOSize: 50}, OK},
		{"ufo on ipv6", udp.frame(t), VnetHdr{GSOType: GSOUDP, GSOSize: 50}, BadVnetHdr},
		{"gso size 0", tf, VnetHdr{GSOType: GSOTCPv6}, BadVnetHdr},
		{"gso unknown type", tf, VnetHdr{GSOType: 2, GSOSize: 50}, BadVnetHdr},
		{"gso on a first fragment", withExts(tcp, ext6{typ: extFragment, more: true}).frame(t), VnetHdr{GSOType: GSOTCPv6, GSOSize: 50}, BadVnetHdr},
		{"gso tcpv4 on an encapsulated frame", udp.frame(t), VnetHdr{Flags: VnetNeedsCsum, CsumStart: uint16(l4 + 8), CsumOffset: 16, GSOType: GSOTCPv4, GSOSize: 50}, OK},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			b := bytes.Clone(c.frame)
			var f Frame
			if r := f.ParseAny(b, c.vnet); r != c.want {
				t.Fatalf("ParseAny: %v, want %v", r, c.want)
			}
			if c.want == OK {
				return
			}
			if f.L3 != -1 || f.L4 != -1 || f.InnerL3 != -1 || f.PartialCsum || f.Encap {
				t.Errorf("rejected frame keeps offsets: %+v", f)
			}
			noEffect(t, &f, b)
		})
	}
}

// noEffect checks that nothing but SetMACs changes a frame ParseAny rejected, and that no
// builder writes about it.
func noEffect(t *testing.T, f *Frame, b []byte) {
	t.Helper()
	before := bytes.Clone(b)
	f.SetSrc6(ip6Other, 1)
	f.SetDst6(ip6Other, 2)
	f.SetInnerSrc6(ip6Other, 3)
	f.SetInnerDst6(ip6Other, 4)
	f.SetSrc(ipOther, 1)
	f.SetDst(ipOther, 2)
	f.SetInnerSrc(ipOther, 3)
	f.SetInnerDst(ipOther, 4)
	f.ClampMSS(100)
	f.FitGSO(100)
	out := make([]byte, PacketTooBigMaxLen)
	if f.BuildPacketTooBig(out, 1280, ip6Other) != 0 || f.BuildFragNeeded(out, 1280, ipOther) != 0 || f.SegmentEncapCount() != 0 {
		t.Errorf("a builder wrote about a rejected frame")
	}
	if !bytes.Equal(before, b) {
		t.Errorf("a setter changed a rejected frame")
	}
}

// TestParseAny6Truncated parses every prefix of IPv6 frames: no panic, and a reason whenever
// the cut falls inside the packet.
func TestParseAny6Truncated(t *testing.T) {
	r := rand.New(rand.NewPCG(64, 6))
	for i := 0; i < 40; i++ {
		b, v, _ := randFrame6(t, r)
		if len(b) > 400 {
			continue
		}
		var f Frame
		if f.ParseAny(b, v) != OK {
			t.Fatal("parse")
		}
		end := f.End
		for n := 0; n < len(b); n++ {
			c := bytes.Clone(b[:n])
			rs := f.ParseAny(c, v)
			if n < end && rs == OK && binary.BigEndian.Uint16(b[EthHdrLen+4:]) != 0 {
				t.Fatalf("frame %d cut at %d of %d: OK", i, n, end)
			}
			if rs != OK {
				noEffect(t, &f, c)
			}
		}
	}
}

// TestFamilies checks that the IPv4 setters and builders leave IPv6 frames alone and the IPv6
// ones IPv4 frames, and that the predicates and Addrs16 answer for both.
func TestFamilies(t *testing.T) {
	v6 := pkt6{src: ip6Host, dst: ip6Remote, proto: ProtoTCP, sport: 1, dport: 2, flags: TCPSyn, tcpOpts: tcpOpts6()}.frame(t)
	var f Frame
	if f.ParseAny(v6, VnetHdr{}) != OK {
		t.Fatal("parse")
	}
	before := bytes.Clone(v6)
	f.SetSrc(ipOther, 9)
	f.SetDst(ipOther, 9)
	f.SetInnerSrc(ipOther, 9)
	f.SetInnerDst(ipOther, 9)
	out := make([]byte, 2000)
	if !bytes.Equal(before, v6) || f.FragNeededLen() != 0 || f.BuildFragNeeded(out, 1280, ipOther) != 0 || f.SegmentEncapCount() != 0 {
		t.Errorf("IPv4 setters or builders acted on an IPv6 frame")
	}
	v4 := buildTCP(t, ipHost, ipRemote, 1, 2, tcpOpt{options: true, flags: TCPSyn})
	var g Frame
	if g.ParseAny(v4, VnetHdr{}) != OK || g.IPv6 {
		t.Fatal("parse v4")
	}
	before = bytes.Clone(v4)
	g.SetSrc6(ip6Other, 9)
	g.SetDst6(ip6Other, 9)
	if !bytes.Equal(before, v4) || g.PacketTooBigLen() != 0 || g.BuildPacketTooBig(out, 1280, ip6Other) != 0 {
		t.Errorf("IPv6 setters or builders acted on an IPv4 frame")
	}
	if s, d := g.Addrs16(); s != [16]byte{10: 0xff, 11: 0xff, 12: 10, 13: 1, 14: 0, 15: 2} || [4]byte(d[12:]) != ipRemote {
		t.Errorf("Addrs16 of IPv4: %x %x", s, d)
	}
	if g.HasIPv4MappedAddr() || g.IsLinkLocal() || g.IsNeighborDiscovery() {
		t.Errorf("IPv6 predicates true for IPv4")
	}
	// ICMPv4 types read as ICMPv6 ones must not count, nor the other way round.
	ping4 := buildICMPEcho(t, ipHost, ipRemote, ICMPEchoReply, 5, 8)
	if g.ParseAny(ping4, VnetHdr{}) != OK || !g.IsICMPEcho() || !g.IsICMPEchoReply() || g.IsICMPEchoRequest() || !g.IsICMP() || g.ICMPEchoSeq() != 7 {
		t.Errorf("ICMP echo reply predicates")
	}
	proto1 := pkt6{src: ip6Host, dst: ip6Remote, proto: ProtoICMP, body: []byte{0, 0, 0, 0, 0, 5, 0, 7}}.frame(t)
	if g.ParseAny(proto1, VnetHdr{}) != OK || g.IsICMPEcho() || g.IsICMP() || g.ICMPEchoSeq() != 0 {
		t.Errorf("ICMPv4 in IPv6 taken for an echo")
	}
}

// TestPredicates6 checks the IPv6 predicates.
func TestPredicates6(t *testing.T) {
	ll := [16]byte{0: 0xfe, 1: 0x80, 15: 1}
	mc := [16]byte{0: 0xff, 1: 0x02, 15: 1}
	mapped := [16]byte{10: 0xff, 11: 0xff, 12: 192, 13: 0, 14: 2, 15: 1}
	icmp := func(src, dst [16]byte, typ uint8) pkt6 {
		return pkt6{src: src, dst: dst, proto: ProtoICMPv6, icmpType: typ, body: make([]byte, 20)}
	}
	udp := func(src, dst [16]byte) pkt6 { return pkt6{src: src, dst: dst, proto: ProtoUDP, sport: 1, dport: 2} }
	quoteMapped := icmp6Err(t, ip6Remote, ip6Host, ICMPv6DestUnreach, 0, udp(ip6Host, mapped).packet(t))
	cases := []struct {
		name                   string
		frame                  []byte
		nd, mld, ll, mc, mapd  bool
		echo, err, tcpSyn, icm bool
	}{
		{"router solicitation", icmp(ll, mc, ICMPv6RouterSolicit).frame(t), true, false, true, true, false, false, false, false, true},
		{"neighbour solicitation", icmp(ip6Host, mc, ICMPv6NeighborSolicit).frame(t), true, false, false, true, false, false, false, false, true},
		{"neighbour advertisement", icmp(ll, ll, ICMPv6NeighborAdvert).frame(t), true, false, true, false, false, false, false, false, true},
		{"redirect", icmp(ll, ip6Host, ICMPv6Redirect).frame(t), true, false, true, false, false, false, false, false, true},
		{"mld query", icmp(ll, mc, ICMPv6MLDQuery).frame(t), false, true, true, true, false, false, false, false, true},
		{"mld done", icmp(ll, mc, ICMPv6MLDDone).frame(t), false, true, true, true, false, false, false, false, true},
		{"mldv2 report", icmp(ll, mc, ICMPv6MLDv2Report).frame(t), false, true, true, true, false, false, false, false, true},
		{"router renumbering", icmp(ip6Host, ip6Remote, 138).frame(t), false, false, false, false, false, false, false, false, true},
		{"echo request", icmp(ip6Host, ip6Remote, ICMPv6EchoRequest).frame(t), false, false, false, false, false, true, false, false, true},
		{"udp to multicast", udp(ip6Host, mc).frame(t), false, false, false, true, false, false, false, false, false},
		{"udp from link-local", udp(ll, ip6Remote).frame(t), false, false, true, false, false, false, false, false, false},
		{"udp to site-local fec0::", udp(ip6Host, [16]byte{0: 0xfe, 1: 0xc0, 15: 1}).frame(t), false, false, false, false, false, false, false, false, false},
		{"mapped source", udp(mapped, ip6Remote).frame(t), false, false, false, false, true, false, false, false, false},
		{"error quoting a mapped destination", quoteMapped, false, false, false, false, true, false, true, false, true},
		{"tcp syn", pkt6{src: ip6Host, dst: ip6Remote, proto: ProtoTCP, flags: TCPSyn}.frame(t), false, false, false, false, false, false, false, true, false},
	}
	for _, c := range cases {
		var f Frame
		if r := f.ParseAny(c.frame, VnetHdr{}); r != OK {
			t.Fatalf("%s: %v", c.name, r)
		}
		got := [9]bool{f.IsNeighborDiscovery(), f.IsMLD(), f.IsLinkLocal(), f.IsMulticast(), f.HasIPv4MappedAddr(),
			f.IsICMPEcho(), f.IsICMPError(), f.IsTCPSyn(), f.IsICMP()}
		want := [9]bool{c.nd, c.mld, c.ll, c.mc, c.mapd, c.echo, c.err, c.tcpSyn, c.icm}
		if got != want {
			t.Errorf("%s: nd, mld, link-local, multicast, mapped, echo, error, syn, icmp = %v, want %v", c.name, got, want)
		}
	}
}

// TestPayloadHash6 checks PayloadHash skips the ICMPv6 header as it does the ICMP one, so an
// echo request and its retry hash alike only when their data does.
func TestPayloadHash6(t *testing.T) {
	a := pkt6{src: ip6Host, dst: ip6Remote, proto: ProtoICMPv6, icmpType: ICMPv6EchoRequest, id: 1, seq: 1, body: []byte("hello")}.frame(t)
	b := pkt6{src: ip6Host, dst: ip6Remote, proto: ProtoICMPv6, icmpType: ICMPv6EchoRequest, id: 2, seq: 9, body: []byte("hello")}.frame(t)
	c := pkt6{src: ip6Host, dst: ip6Remote, proto: ProtoICMPv6, icmpType: ICMPv6EchoRequest, id: 1, seq: 1, body: []byte("world")}.frame(t)
	var f Frame
	hash := func(b []byte) uint32 { f.ParseAny(b, VnetHdr{}); return f.PayloadHash() }
	if hash(a) != hash(b) || hash(a) == hash(c) || hash(a) == 0 {
		t.Errorf("PayloadHash: %x %x %x", hash(a), hash(b), hash(c))
	}
}

// TestClampMSS6 clamps the MSS of IPv6 SYNs behind extension headers, full and partial.
func TestClampMSS6(t *testing.T) {
	mss := func(v uint16) layers.TCPOption {
		return layers.TCPOption{OptionType: layers.TCPOptionKindMSS, OptionLength: 4, OptionData: []byte{byte(v >> 8), byte(v)}}
	}
	nop := layers.TCPOption{OptionType: layers.TCPOptionKindNop, OptionLength: 1}
	sack := layers.TCPOption{OptionType: layers.TCPOptionKindSACKPermitted, OptionLength: 2}
	ws := layers.TCPOption{OptionType: layers.TCPOptionKindWindowScale, OptionLength: 3, OptionData: []byte{7}}
	for _, c := range []struct {
		name    string
		flags   uint8
		opts    []layers.TCPOption
		exts    []ext6
		partial bool
		changed bool
		want    uint16
	}{
		{"syn, even offset", TCPSyn, []layers.TCPOption{mss(1440), sack}, nil, false, true, 1220},
		{"syn, odd offset, behind destination options", TCPSyn, []layers.TCPOption{nop, mss(1440), ws}, []ext6{{typ: extDestOpts, n: 16}}, false, true, 1220},
		{"syn-ack, partial, odd offset", TCPSyn | TCPAck, []layers.TCPOption{ws, mss(8940)}, []ext6{{typ: extHopByHop, n: 8}}, true, true, 1220},
		{"syn, partial, even offset", TCPSyn, []layers.TCPOption{mss(65475), sack}, nil, true, true, 1220},
		{"mss already lower", TCPSyn, []layers.TCPOption{mss(1200)}, nil, false, false, 1200},
		{"not a syn", TCPAck, []layers.TCPOption{mss(1440)}, nil, false, false, 1440},
	} {
		t.Run(c.name, func(t *testing.T) {
			orig := pkt6{src: ip6Host, dst: ip6Remote, proto: ProtoTCP, sport: 40000, dport: 443, flags: c.flags, tcpOpts: c.opts, exts: c.exts}.frame(t)
			v := VnetHdr{}
			if c.partial {
				v = makePartial6(t, orig, v)
			}
			buf := bytes.Clone(orig)
			var f Frame
			if r := f.ParseAny(buf, v); r != OK {
				t.Fatal(r)
			}
			if got := f.ClampMSS(1280 - IPv6TCPHdrLen); got != c.changed {
				t.Errorf("ClampMSS = %v", got)
			}
			if got := findMSS(buf[f.L4:f.End]); got != c.want {
				t.Errorf("MSS %d, want %d", got, c.want)
			}
			if !c.changed && !bytes.Equal(buf, orig) {
				t.Errorf("frame changed")
			}
			if c.partial && !bytes.Equal(buf[f.L4+16:f.L4+18], orig[f.L4+16:f.L4+18]) {
				t.Errorf("partial sum touched")
			}
			if c.partial {
				nicComplete(buf, f.End, v, ProtoTCP)
			}
			checkL4Gopacket(t, "TCP", buf[EthHdrLen:f.End], false)
		})
	}
}

// TestFitGSO6 lowers the gso_size of IPv6 super-frames: the IPv6 header, its extension headers
// and the TCP header with options or the UDP header come off the MTU.
func TestFitGSO6(t *testing.T) {
	tcp := pkt6{src: ip6Host, dst: ip6Remote, proto: ProtoTCP, flags: TCPAck, tcpOpts: tcpOpts6(), body: payloadBytes(5000, 1)} // TCP header 40
	tcpExt := tcp
	tcpExt.exts = []ext6{{typ: extHopByHop, n: 8}, {typ: extDestOpts, n: 16}}
	udp := pkt6{src: ip6Host, dst: ip6Remote, proto: ProtoUDP, body: payloadBytes(5000, 1)}
	tf, tef, uf := tcp.frame(t), tcpExt.frame(t), udp.frame(t)
	tv := makePartial6(t, tf, VnetHdr{GSOType: GSOTCPv6, GSOSize: 1440})
	tev := makePartial6(t, tef, VnetHdr{GSOType: GSOTCPv6 | GSOECN, GSOSize: 1440})
	uv := makePartial6(t, uf, VnetHdr{GSOType: GSOUDPL4, GSOSize: 1452})
	for _, c := range []struct {
		name    string
		frame   []byte
		vnet    VnetHdr
		mtu     int
		changed bool
		want    uint16
	}{
		{"tcp fits", tf, tv, 1520, false, 1440},
		{"tcp 1500", tf, tv, 1500, true, 1420},
		{"tcp 1280", tf, tv, 1280, true, 1200},
		{"tcp behind 24 bytes of extension headers, 1500", tef, tev, 1500, true, 1396},
		{"tcp mtu too small", tf, tv, 80, false, 1440},
		{"udp_l4 1280", uf, uv, 1280, true, 1232},
		{"udp_l4 fits", uf, uv, 9000, false, 1452},
		{"not gso", tf, VnetHdr{}, 1280, false, 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			var f Frame
			if r := f.ParseAny(c.frame, c.vnet); r != OK {
				t.Fatal(r)
			}
			if got := f.FitGSO(c.mtu); got != c.changed || f.Vnet.GSOSize != c.want {
				t.Errorf("FitGSO(%d) = %v, gso_size %d; want %v, %d", c.mtu, got, f.Vnet.GSOSize, c.changed, c.want)
			}
			hdr := udpLen
			if f.Proto == ProtoTCP {
				hdr = int(f.Buf[f.L4+12]>>4) * 4
			}
			if c.changed && f.L4-f.L3+hdr+int(f.Vnet.GSOSize) != c.mtu {
				t.Errorf("a full segment's packet is not mtu bytes")
			}
		})
	}
}

// portBytes is how much of a quoted upper-layer header must be there for its ports (or an
// ICMPv6 echo's identifier) to be read.
func portBytes(proto uint8) int {
	if proto == ProtoICMPv6 {
		return 6
	}
	return 4
}

// wantQuote returns what a quote of len(quote) bytes must hold after the translation: the
// packet p (with the new endpoints) built by gopacket, cut as short; when the quote holds no
// upper-layer header (a later fragment, extension headers cut short), only the addresses change.
func wantQuote(t testing.TB, p pkt6, quote []byte, f *Frame) []byte {
	if f.InnerL4 >= 0 {
		return p.packet(t)[:len(quote)]
	}
	q := bytes.Clone(quote)
	copy(q[ip6SrcOff:], p.src[:])
	copy(q[ip6DstOff:], p.dst[:])
	return q
}
