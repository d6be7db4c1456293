package rewrite

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"net"
	"testing"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
)

// Encapsulations the tests build.
const (
	encVXLAN   = "vxlan"
	encGeneve  = "geneve"
	encGRETAP  = "gretap" // GRE carrying Ethernet (0x6558)
	encGREIP   = "gre"    // GRE carrying IPv4 (0x0800)
	encIPIP    = "ipip"
	encOddUDP  = "oddudp" // a UDP tunnel with a 9-byte header and IPv4 right after it
	encVLANTap = "gretap-vlan"
)

type encCase struct {
	name    string
	enc     string
	udpCsum bool // keep a non-zero outer UDP checksum (else 0)
	greCsum bool // GRE C bit
	greKS   bool // GRE key and sequence number
	payload int
	gso     uint16
	flags   uint8 // inner TCP flags of the super-frame
	ecn     bool  // GSOECN
	ipOpts  bool  // inner IPv4 options (IHL 6)
}

// encFrame is a built super-frame and where its parts are.
type encFrame struct {
	b       []byte
	v       VnetHdr
	inner   int // inner IPv4 header
	tcp     int // inner TCP header
	hdrEnd  int
	payload []byte
	udpCsum uint16 // the outer UDP checksum field as built
}

var (
	ipInnerA = [4]byte{172, 16, 0, 1}
	ipInnerB = [4]byte{172, 16, 0, 2}
	macInA   = net.HardwareAddr{0x02, 0xaa, 0, 0, 0, 1}
	macInB   = net.HardwareAddr{0x02, 0xaa, 0, 0, 0, 2}
)

func ip4(a [4]byte) net.IP { return net.IP(a[:]).To4() }

// buildEncap builds what a tunnel's TSO frame reads back as from a PACKET_VNET_HDR socket:
// GSO_TCPV4 and NEEDS_CSUM with csum_start at the inner TCP header, whose checksum field holds
// the uncomplemented pseudo-header sum over the whole inner L4 length, as the kernel leaves it.
func buildEncap(t testing.TB, c encCase) encFrame {
	t.Helper()
	payload := payloadBytes(c.payload, 5)
	for i := range payload { // a pattern that does not repeat with any segment size
		payload[i] ^= byte(i >> 11)
	}

	innerIP := &layers.IPv4{
		Version: 4, TTL: 64, Id: 0xfffd, Flags: layers.IPv4DontFragment, Protocol: layers.IPProtocolTCP,
		SrcIP: ip4(ipInnerA), DstIP: ip4(ipInnerB),
	}
	if c.ipOpts {
		innerIP.Options = []layers.IPv4Option{{OptionType: 148, OptionLength: 4, OptionData: []byte{0, 0}}}
	}
	ts := make([]byte, 8)
	binary.BigEndian.PutUint32(ts, 0x01020304)
	binary.BigEndian.PutUint32(ts[4:], 0x0a0b0c0d)
	tcp := &layers.TCP{
		SrcPort: 45678, DstPort: 5201, Seq: 0xfffff000, Ack: 0x12345678, Window: 501,
		Options: []layers.TCPOption{
			{OptionType: layers.TCPOptionKindNop, OptionLength: 1},
			{OptionType: layers.TCPOptionKindNop, OptionLength: 1},
			{OptionType: layers.TCPOptionKindTimestamps, OptionLength: 10, OptionData: ts},
		},
	}
	tcp.FIN = c.flags&TCPFin != 0
	tcp.PSH = c.flags&TCPPsh != 0
	tcp.ACK = c.flags&TCPAck != 0
	tcp.ECE = c.flags&TCPEce != 0
	tcp.CWR = c.flags&TCPCwr != 0
	innerEth := &layers.Ethernet{SrcMAC: macInA, DstMAC: macInB, EthernetType: layers.EthernetTypeIPv4}

	eth, outerIP := ethIPv4(ipHost, ipRemote, layers.IPProtocolUDP)
	outerIP.Id = 0xfffe
	var ls []gopacket.SerializableLayer
	switch c.enc {
	case encVXLAN:
		ls = []gopacket.SerializableLayer{eth, outerIP, &layers.UDP{SrcPort: 51234, DstPort: 4789},
			&layers.VXLAN{ValidIDFlag: true, VNI: 42}, innerEth}
	case encGeneve:
		ls = []gopacket.SerializableLayer{eth, outerIP, &layers.UDP{SrcPort: 51234, DstPort: 6081},
			&layers.Geneve{Protocol: layers.EthernetTypeTransparentEthernetBridging, VNI: 77,
				Options: []*layers.GeneveOption{{Class: 0x0102, Type: 0x80, Data: []byte{1, 2, 3, 4, 5, 6, 7, 8}}}},
			innerEth}
	case encOddUDP:
		ls = []gopacket.SerializableLayer{eth, outerIP, &layers.UDP{SrcPort: 51234, DstPort: 5555},
			gopacket.Payload{9, 8, 7, 6, 5, 4, 3, 2, 1}}
	case encGRETAP, encGREIP, encVLANTap:
		outerIP.Protocol = layers.IPProtocolGRE
		gre := &layers.GRE{Protocol: layers.EthernetTypeTransparentEthernetBridging, ChecksumPresent: c.greCsum}
		if c.greKS {
			gre.KeyPresent, gre.Key = true, 0xdeadbeef
			gre.SeqPresent, gre.Seq = true, 1000
		}
		ls = []gopacket.SerializableLayer{eth, outerIP, gre}
		switch c.enc {
		case encGRETAP:
			ls = append(ls, innerEth)
		case encVLANTap:
			innerEth.EthernetType = layers.EthernetTypeDot1Q
			ls = append(ls, innerEth, &layers.Dot1Q{VLANIdentifier: 12, Type: layers.EthernetTypeIPv4})
		case encGREIP:
			gre.Protocol = layers.EthernetTypeIPv4
		}
	case encIPIP:
		outerIP.Protocol = layers.IPProtocolIPv4
		ls = []gopacket.SerializableLayer{eth, outerIP}
	default:
		t.Fatalf("unknown encapsulation %q", c.enc)
	}
	ls = append(ls, innerIP, tcp, gopacket.Payload(payload))
	// serialize ties each L4 layer to the IPv4 layer before it: the outer UDP to the outer IPv4
	// header, the inner TCP to the inner one.
	b := serialize(t, ls...)

	e := encFrame{b: b, payload: payload}
	e.hdrEnd = len(b) - len(payload)
	e.tcp = e.hdrEnd - 32 // 20 + NOP NOP timestamps
	e.inner = e.tcp - 20
	if c.ipOpts {
		e.inner -= 4
	}
	if b[e.inner]>>4 != 4 || b[e.tcp+12] != 0x80 {
		t.Fatalf("layout: inner IPv4 at %d, TCP at %d do not match", e.inner, e.tcp)
	}
	// The partial sum of a CHECKSUM_PARTIAL super-frame.
	binary.BigEndian.PutUint16(b[e.tcp+16:], Fold(PseudoHeaderSum(ipInnerA, ipInnerB, ProtoTCP, len(b)-e.tcp)))
	if outerIP.Protocol == layers.IPProtocolUDP {
		l4 := EthHdrLen + 20
		if !c.udpCsum {
			binary.BigEndian.PutUint16(b[l4+6:], 0)
		} else if binary.BigEndian.Uint16(b[l4+6:]) == 0 {
			t.Fatal("gopacket left the outer UDP checksum 0")
		}
		e.udpCsum = binary.BigEndian.Uint16(b[l4+6:])
	}
	e.v = VnetHdr{Flags: VnetNeedsCsum, GSOType: GSOTCPv4, GSOSize: c.gso, HdrLen: uint16(e.hdrEnd),
		CsumStart: uint16(e.tcp), CsumOffset: 16}
	if c.ecn {
		e.v.GSOType |= GSOECN
	}
	return e
}

var encCases = []encCase{
	{name: "vxlan udp csum 0", enc: encVXLAN, payload: 10000, gso: 1398, flags: TCPAck | TCPPsh},
	{name: "vxlan udp csum", enc: encVXLAN, udpCsum: true, payload: 10000, gso: 1398, flags: TCPAck | TCPPsh},
	{name: "vxlan fin psh", enc: encVXLAN, udpCsum: true, payload: 7001, gso: 1398, flags: TCPAck | TCPPsh | TCPFin},
	{name: "vxlan even split", enc: encVXLAN, payload: 5 * 1398, gso: 1398, flags: TCPAck},
	{name: "vxlan one segment", enc: encVXLAN, udpCsum: true, payload: 900, gso: 1398, flags: TCPAck | TCPPsh | TCPFin | TCPCwr},
	{name: "vxlan no payload", enc: encVXLAN, payload: 0, gso: 1398, flags: TCPAck | TCPFin},
	{name: "vxlan ecn", enc: encVXLAN, payload: 6000, gso: 1398, flags: TCPAck | TCPCwr | TCPEce | TCPPsh, ecn: true},
	{name: "vxlan inner ip options", enc: encVXLAN, udpCsum: true, payload: 4000, gso: 1000, flags: TCPAck, ipOpts: true},
	{name: "vxlan 64k", enc: encVXLAN, udpCsum: true, payload: 65000, gso: 1398, flags: TCPAck | TCPPsh},
	{name: "vxlan gso 1", enc: encVXLAN, udpCsum: true, payload: 37, gso: 1, flags: TCPAck | TCPPsh},
	{name: "geneve option", enc: encGeneve, payload: 10000, gso: 1398, flags: TCPAck | TCPPsh},
	{name: "geneve option udp csum", enc: encGeneve, udpCsum: true, payload: 9999, gso: 1350, flags: TCPAck | TCPFin},
	{name: "gretap", enc: encGRETAP, payload: 10000, gso: 1398, flags: TCPAck | TCPPsh},
	{name: "gretap csum", enc: encGRETAP, greCsum: true, payload: 10000, gso: 1398, flags: TCPAck | TCPPsh | TCPFin},
	{name: "gretap csum key seq", enc: encGRETAP, greCsum: true, greKS: true, payload: 4321, gso: 1398, flags: TCPAck},
	{name: "gretap vlan inner", enc: encVLANTap, greCsum: true, payload: 3000, gso: 1398, flags: TCPAck},
	{name: "gre ipv4 csum", enc: encGREIP, greCsum: true, payload: 10000, gso: 1398, flags: TCPAck | TCPPsh},
	{name: "gre ipv4", enc: encGREIP, payload: 2800, gso: 1400, flags: TCPAck},
	{name: "ipip", enc: encIPIP, payload: 10000, gso: 1448, flags: TCPAck | TCPPsh, ipOpts: true},
	{name: "odd offset udp tunnel", enc: encOddUDP, udpCsum: true, payload: 5555, gso: 1398, flags: TCPAck | TCPPsh},
}

func TestSegmentEncap(t *testing.T) {
	for _, c := range encCases {
		t.Run(c.name, func(t *testing.T) {
			e := buildEncap(t, c)
			orig := bytes.Clone(e.b)
			var f Frame
			if r := f.Parse(e.b, e.v); r != OK {
				t.Fatalf("parse: %v", r)
			}
			if !f.Encap || f.PartialCsum {
				t.Fatalf("Encap %v PartialCsum %v, want an Encap frame", f.Encap, f.PartialCsum)
			}
			size, count := f.SegmentEncapSize(), f.SegmentEncapCount()
			wantSegs := max(1, (c.payload+int(c.gso)-1)/int(c.gso))
			if count != wantSegs || size != wantSegs*(VnetHdrLen+e.hdrEnd)+c.payload {
				t.Fatalf("size %d count %d, want %d segments", size, count, wantSegs)
			}
			dst := make([]byte, size+7)
			lens := make([]int, count+1)
			// Too small a buffer or length slice: nothing written.
			if n := f.SegmentEncap(dst[:size-1], lens); n != 0 {
				t.Fatalf("short dst: %d segments", n)
			}
			if n := f.SegmentEncap(dst, lens[:count-1]); n != 0 {
				t.Fatalf("short lens: %d segments", n)
			}
			if !bytes.Equal(dst, make([]byte, len(dst))) || lens[0] != 0 {
				t.Fatalf("a refused call wrote into dst or lens")
			}
			n := f.SegmentEncap(dst, lens)
			if n != count {
				t.Fatalf("%d segments, want %d", n, count)
			}
			if !bytes.Equal(e.b, orig) {
				t.Fatalf("SegmentEncap changed the super-frame")
			}
			checkSegments(t, c, e, dst, lens[:n])
		})
	}
}

// checkSegments decodes every segment with gopacket and checks it against the super-frame.
func checkSegments(t *testing.T, c encCase, e encFrame, dst []byte, lens []int) {
	var (
		got     []byte
		off     int
		wantSeq = binary.BigEndian.Uint32(e.b[e.tcp+4:])
		oIHL    = int(e.b[EthHdrLen]&0x0f) * 4
		l4      = EthHdrLen + oIHL
	)
	for i, ln := range lens {
		last := i == len(lens)-1
		if off+ln > len(dst) || ln < VnetHdrLen {
			t.Fatalf("segment %d: length %d beyond dst", i, ln)
		}
		if !bytes.Equal(dst[off:off+VnetHdrLen], make([]byte, VnetHdrLen)) {
			t.Errorf("segment %d: virtio-net header not zeroed", i)
		}
		seg := dst[off+VnetHdrLen : off+ln]
		off += ln
		what := fmt.Sprintf("segment %d/%d", i, len(lens))

		var g Frame
		if r := g.Parse(seg, VnetHdr{}); r != OK || g.Encap || g.PartialCsum || g.End != len(seg) {
			t.Fatalf("%s: Parse %v Encap %v End %d/%d", what, r, g.Encap, g.End, len(seg))
		}

		// Outer layers.
		pkt := gopacket.NewPacket(seg, layers.LayerTypeEthernet, gopacket.Default)
		oip, _ := pkt.Layer(layers.LayerTypeIPv4).(*layers.IPv4)
		if oip == nil {
			t.Fatalf("%s: no outer IPv4 (%v)", what, pkt.ErrorLayer())
		}
		if err, r := oip.VerifyChecksum(); err != nil || !r.Valid {
			t.Errorf("%s: outer IPv4 checksum %#x, want %#x", what, r.Actual, r.Correct)
		}
		if int(oip.Length) != len(seg)-EthHdrLen || oip.Id != 0xfffe+uint16(i) || oip.Flags != layers.IPv4DontFragment {
			t.Errorf("%s: outer IPv4 length %d id %#x flags %v", what, oip.Length, oip.Id, oip.Flags)
		}
		switch c.enc {
		case encVXLAN, encGeneve, encOddUDP:
			udp, _ := pkt.Layer(layers.LayerTypeUDP).(*layers.UDP)
			if udp == nil {
				t.Fatalf("%s: no outer UDP", what)
			}
			if int(udp.Length) != len(seg)-l4 {
				t.Errorf("%s: UDP length %d, want %d", what, udp.Length, len(seg)-l4)
			}
			udp.SetNetworkLayerForChecksum(oip)
			if err, r := udp.VerifyChecksum(); err != nil || !r.Valid || (udp.Checksum == 0) != (e.udpCsum == 0) {
				t.Errorf("%s: UDP checksum %#x, want %#x (super-frame's was %#x)", what, r.Actual, r.Correct, e.udpCsum)
			}
			// An independent full recompute, not relying on VerifyChecksum's 0 = none.
			if e.udpCsum != 0 {
				cp := bytes.Clone(seg)
				binary.BigEndian.PutUint16(cp[l4+6:], 0)
				if want := naiveL4Csum(oip, ProtoUDP, cp[l4:]); want != udp.Checksum && !(want == 0 && udp.Checksum == 0xffff) {
					t.Errorf("%s: UDP checksum %#x, naive recompute %#x", what, udp.Checksum, want)
				}
			}
			switch c.enc {
			case encVXLAN:
				if pkt.Layer(layers.LayerTypeVXLAN) == nil {
					t.Errorf("%s: no VXLAN header", what)
				}
			case encGeneve:
				if gn, _ := pkt.Layer(layers.LayerTypeGeneve).(*layers.Geneve); gn == nil || len(gn.Options) != 1 || gn.VNI != 77 {
					t.Errorf("%s: GENEVE header lost", what)
				}
			}
		case encGRETAP, encGREIP, encVLANTap:
			gre, _ := pkt.Layer(layers.LayerTypeGRE).(*layers.GRE)
			if gre == nil {
				t.Fatalf("%s: no GRE", what)
			}
			if gre.ChecksumPresent != c.greCsum || gre.KeyPresent != c.greKS || (c.greKS && (gre.Key != 0xdeadbeef || gre.Seq != 1000)) {
				t.Errorf("%s: GRE header %+v", what, gre)
			}
			if err, r := gre.VerifyChecksum(); err != nil || !r.Valid {
				t.Errorf("%s: GRE checksum %#x, want %#x", what, r.Actual, r.Correct)
			}
			if c.greCsum {
				cp := bytes.Clone(seg[l4:])
				binary.BigEndian.PutUint16(cp[4:], 0)
				if want := naiveCsum(cp, 0); want != gre.Checksum {
					t.Errorf("%s: GRE checksum %#x, naive recompute %#x", what, gre.Checksum, want)
				}
			}
		}

		// Inner layers, decoded from the inner IPv4 header on.
		ipkt := gopacket.NewPacket(seg[e.inner:], layers.LayerTypeIPv4, gopacket.Default)
		iip, _ := ipkt.Layer(layers.LayerTypeIPv4).(*layers.IPv4)
		tcp, _ := ipkt.Layer(layers.LayerTypeTCP).(*layers.TCP)
		if iip == nil || tcp == nil {
			t.Fatalf("%s: inner IPv4/TCP do not decode (%v)", what, ipkt.ErrorLayer())
		}
		if err, r := iip.VerifyChecksum(); err != nil || !r.Valid {
			t.Errorf("%s: inner IPv4 checksum %#x, want %#x", what, r.Actual, r.Correct)
		}
		if int(iip.Length) != len(seg)-e.inner || iip.Id != 0xfffd+uint16(i) {
			t.Errorf("%s: inner IPv4 length %d id %#x", what, iip.Length, iip.Id)
		}
		tcp.SetNetworkLayerForChecksum(iip)
		if err, r := tcp.VerifyChecksum(); err != nil || !r.Valid {
			t.Errorf("%s: inner TCP checksum %#x, want %#x", what, r.Actual, r.Correct)
		}
		cp := bytes.Clone(seg[e.tcp:])
		binary.BigEndian.PutUint16(cp[16:], 0)
		if want := naiveL4Csum(iip, ProtoTCP, cp); want != tcp.Checksum {
			t.Errorf("%s: TCP checksum %#x, naive recompute %#x", what, tcp.Checksum, want)
		}
		if tcp.Seq != wantSeq {
			t.Errorf("%s: seq %#x, want %#x", what, tcp.Seq, wantSeq)
		}
		pl := tcp.Payload
		if len(pl) > int(c.gso) || (!last && len(pl) != int(c.gso)) || len(pl) != len(seg)-e.hdrEnd {
			t.Errorf("%s: %d payload bytes, gso_size %d", what, len(pl), c.gso)
		}
		wantSeq += uint32(len(pl))
		got = append(got, pl...)
		fl := seg[e.tcp+13]
		want := c.flags
		if !last {
			want &^= TCPFin | TCPPsh
		}
		if i > 0 {
			want &^= TCPCwr
		}
		if fl != want {
			t.Errorf("%s: flags %#02x, want %#02x", what, fl, want)
		}

		// Every other header byte as in the super-frame.
		a, b := bytes.Clone(seg[:e.hdrEnd]), bytes.Clone(e.b[:e.hdrEnd])
		for _, m := range mutable(c, l4, e) {
			clear(a[m[0]:m[1]])
			clear(b[m[0]:m[1]])
		}
		if !bytes.Equal(a, b) {
			t.Errorf("%s: header bytes other than lengths, IDs, sequence, flags and checksums differ", what)
		}
	}
	if !bytes.Equal(got, e.payload) {
		t.Errorf("reassembled payload differs (%d bytes, want %d)", len(got), len(e.payload))
	}
}

// mutable lists the byte ranges of the headers that SegmentEncap may change.
func mutable(c encCase, l4 int, e encFrame) [][2]int {
	o := EthHdrLen
	m := [][2]int{{o + 2, o + 6}, {o + 10, o + 12}, {e.inner + 2, e.inner + 6}, {e.inner + 10, e.inner + 12},
		{e.tcp + 4, e.tcp + 8}, {e.tcp + 13, e.tcp + 14}, {e.tcp + 16, e.tcp + 18}}
	switch c.enc {
	case encVXLAN, encGeneve, encOddUDP:
		m = append(m, [2]int{l4 + 4, l4 + 8})
	case encGRETAP, encGREIP, encVLANTap:
		if c.greCsum {
			m = append(m, [2]int{l4 + 4, l4 + 6})
		}
	}
	return m
}

// naiveCsum is RFC 1071 the slow way, independent of Sum and of gopacket.
func naiveCsum(b []byte, initial uint32) uint16 {
	s := initial
	for i := 0; i < len(b); i++ {
		if i&1 == 0 {
			s += uint32(b[i]) << 8
		} else {
			s += uint32(b[i])
		}
		for s > 0xffff {
			s = s>>16 + s&0xffff
		}
	}
	return ^uint16(s)
}

// naiveL4Csum is the TCP/UDP checksum of seg (checksum field zeroed) under ip's pseudo-header.
func naiveL4Csum(ip *layers.IPv4, proto uint8, seg []byte) uint16 {
	ph := make([]byte, 0, 12)
	ph = append(ph, ip.SrcIP.To4()...)
	ph = append(ph, ip.DstIP.To4()...)
	ph = append(ph, 0, proto, byte(len(seg)>>8), byte(len(seg)))
	return naiveCsum(seg, uint32(^naiveCsum(ph, 0)))
}

// TestSegmentEncapRefuses checks the frames SegmentEncap must leave alone.
func TestSegmentEncapRefuses(t *testing.T) {
	dst := make([]byte, 1<<17)
	lens := make([]int, 128)
	good := func() encFrame {
		return buildEncap(t, encCase{enc: encVXLAN, payload: 3000, gso: 1000, flags: TCPAck})
	}
	gre := func() encFrame {
		return buildEncap(t, encCase{enc: encGRETAP, payload: 3000, gso: 1000, flags: TCPAck})
	}
	plain, pv := gsoTCP(t, 5000, false, false)
	cases := []struct {
		name string
		b    []byte
		v    VnetHdr
	}{
		{"plain tcp gso", plain, pv},
		{"plain tcp", buildTCP(t, ipHost, ipRemote, 1, 2, tcpOpt{payload: 100}), VnetHdr{}},
		{"empty", nil, VnetHdr{GSOType: GSOTCPv4, GSOSize: 100}},
		{"garbage", payloadBytes(300, 1), VnetHdr{Flags: VnetNeedsCsum, GSOType: GSOTCPv4, GSOSize: 100, CsumStart: 80, CsumOffset: 16}},
	}
	add := func(name string, mod func(e *encFrame)) {
		e := good()
		if name[:3] == "gre" {
			e = gre()
		}
		mod(&e)
		cases = append(cases, struct {
			name string
			b    []byte
			v    VnetHdr
		}{name, e.b, e.v})
	}
	add("encap without gso", func(e *encFrame) { e.v.GSOType, e.v.GSOSize = GSONone, 0 })
	add("encap udp gso", func(e *encFrame) { e.v.GSOType = GSOUDPL4 })
	add("encap tcpv6 gso", func(e *encFrame) { e.v.GSOType = GSOTCPv6 })
	add("csum offset not tcp", func(e *encFrame) { e.v.CsumOffset = 6 })
	add("inner not tcp", func(e *encFrame) { e.b[e.inner+9] = ProtoUDP })
	add("inner not ipv4", func(e *encFrame) { e.b[e.inner] = 0x65 })
	add("inner fragment", func(e *encFrame) { e.b[e.inner+6] |= 0x20 })
	add("inner length wrong", func(e *encFrame) { binary.BigEndian.PutUint16(e.b[e.inner+2:], 1500) })
	add("inner tcp offset short", func(e *encFrame) { e.b[e.tcp+12] = 0x40 })
	add("inner tcp offset long", func(e *encFrame) { e.v.CsumStart = uint16(len(e.b) - 30); e.b[len(e.b)-30+12] = 0xf0 })
	add("csum start in outer udp", func(e *encFrame) { e.v.CsumStart = EthHdrLen + 20 + 2 })
	add("outer icmp", func(e *encFrame) {
		e.b[EthHdrLen+9] = ProtoICMP
		binary.BigEndian.PutUint16(e.b[EthHdrLen+10:], 0)
		binary.BigEndian.PutUint16(e.b[EthHdrLen+10:], Checksum(e.b[EthHdrLen:EthHdrLen+20], 0))
	})
	add("gre routing", func(e *encFrame) { e.b[EthHdrLen+20] |= 0x40 })
	add("gre version 1", func(e *encFrame) { e.b[EthHdrLen+21] |= 1 })
	add("gre protocol unknown", func(e *encFrame) { binary.BigEndian.PutUint16(e.b[EthHdrLen+22:], 0x88be) })
	add("gre ipv4 protocol with ethernet", func(e *encFrame) { binary.BigEndian.PutUint16(e.b[EthHdrLen+22:], 0x0800) })
	add("gretap inner ethertype", func(e *encFrame) { binary.BigEndian.PutUint16(e.b[e.inner-2:], 0x86dd) })
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var f Frame
			f.Parse(c.b, c.v) // accepted or not, SegmentEncap must refuse
			if f.SegmentEncapSize() != 0 || f.SegmentEncapCount() != 0 {
				t.Errorf("size %d count %d, want 0", f.SegmentEncapSize(), f.SegmentEncapCount())
			}
			if n := f.SegmentEncap(dst, lens); n != 0 {
				t.Errorf("%d segments, want 0", n)
			}
		})
	}
	var zero Frame
	if zero.SegmentEncap(dst, lens) != 0 || zero.SegmentEncapSize() != 0 {
		t.Error("a zero Frame segments")
	}
}

// TestSegmentEncapZeroAlloc checks that segmenting does not allocate.
func TestSegmentEncapZeroAlloc(t *testing.T) {
	frames := []encFrame{
		buildEncap(t, encCase{enc: encVXLAN, udpCsum: true, payload: 60000, gso: 1398, flags: TCPAck}),
		buildEncap(t, encCase{enc: encGRETAP, greCsum: true, payload: 20000, gso: 1398, flags: TCPAck}),
	}
	dst := make([]byte, 1<<18)
	lens := make([]int, 64)
	var f Frame
	i := 0
	allocs := testing.AllocsPerRun(200, func() {
		e := frames[i%len(frames)]
		i++
		if f.Parse(e.b, e.v) != OK || f.SegmentEncapSize() == 0 || f.SegmentEncap(dst, lens) == 0 {
			panic("segment")
		}
	})
	if allocs != 0 {
		t.Errorf("%v allocations per frame, want 0", allocs)
	}
}

func BenchmarkSegmentEncap(b *testing.B) {
	for _, c := range []encCase{
		{name: "vxlan64k", enc: encVXLAN, payload: 64000, gso: 1398, flags: TCPAck},
		{name: "vxlan64k_udpcsum", enc: encVXLAN, udpCsum: true, payload: 64000, gso: 1398, flags: TCPAck},
		{name: "gretap64k_csum", enc: encGRETAP, greCsum: true, payload: 64000, gso: 1398, flags: TCPAck},
	} {
		b.Run(c.name, func(b *testing.B) {
			e := buildEncap(b, c)
			var f Frame
			if f.Parse(e.b, e.v) != OK {
				b.Fatal("parse")
			}
			dst := make([]byte, f.SegmentEncapSize())
			lens := make([]int, f.SegmentEncapCount())
			b.SetBytes(int64(len(e.b)))
			b.ReportAllocs()
			for b.Loop() {
				if f.SegmentEncap(dst, lens) == 0 {
					b.Fatal("segment")
				}
			}
		})
	}
}

// TestSegmentEncapRandom segments random encapsulated frames and checks them as the fuzz
// target does, so that the invariants run in every plain `go test`.
func TestSegmentEncapRandom(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	encs := []string{encVXLAN, encGeneve, encGRETAP, encGREIP, encIPIP, encOddUDP, encVLANTap}
	for i := range 200 {
		c := encCase{
			enc: encs[r.IntN(len(encs))], udpCsum: r.IntN(2) == 0, greCsum: r.IntN(2) == 0,
			greKS: r.IntN(2) == 0, payload: r.IntN(20000), gso: uint16(1 + r.IntN(3000)),
			flags: uint8(r.IntN(256)) &^ (TCPSyn | TCPRst), ecn: r.IntN(2) == 0, ipOpts: r.IntN(2) == 0,
		}
		c.name = fmt.Sprintf("random %d %+v", i, c)
		e := buildEncap(t, c)
		checkFuzzed(t, e.b, e.v, true)
	}
}

// checkFuzzed runs SegmentEncap on frame and checks what it writes with the package's own
// checksum helpers. With want set, the frame must segment.
func checkFuzzed(t *testing.T, frame []byte, v VnetHdr, want bool) {
	t.Helper()
	var f Frame
	r := f.Parse(frame, v)
	size, count := f.SegmentEncapSize(), f.SegmentEncapCount()
	if (size == 0) != (count == 0) {
		t.Fatalf("size %d, count %d", size, count)
	}
	if r != OK || size == 0 {
		if want {
			t.Fatalf("not segmented: parse %v", r)
		}
		if f.SegmentEncap(make([]byte, 256), make([]int, 8)) != 0 {
			t.Fatalf("SegmentEncap wrote segments where SegmentEncapSize says 0")
		}
		return
	}
	l, _ := f.encapLayout()
	if size > 16<<20 {
		// Tiny gso_size over a big frame: only check the refusal of a short buffer.
		if f.SegmentEncap(make([]byte, 4096), make([]int, count)) != 0 {
			t.Fatalf("segments written into a short buffer")
		}
		return
	}
	orig := bytes.Clone(frame)
	dst := make([]byte, size)
	lens := make([]int, count)
	if f.SegmentEncap(dst[:size-1], lens) != 0 || f.SegmentEncap(dst, lens[:count-1]) != 0 {
		t.Fatalf("segments written into a short buffer")
	}
	n := f.SegmentEncap(dst, lens)
	if n != count {
		t.Fatalf("%d segments, count said %d", n, count)
	}
	if !bytes.Equal(frame, orig) {
		t.Fatalf("the super-frame changed")
	}
	var got []byte
	off := 0
	for i, ln := range lens {
		if ln < VnetHdrLen || off+ln > len(dst) {
			t.Fatalf("segment %d: length %d", i, ln)
		}
		seg := dst[off+VnetHdrLen : off+ln]
		off += ln
		var g Frame
		if r := g.Parse(seg, VnetHdr{}); r != OK || g.End != len(seg) || g.Proto != f.Proto {
			t.Fatalf("segment %d: parse %v", i, r)
		}
		oihl := int(seg[EthHdrLen]&0x0f) * 4
		if Checksum(seg[EthHdrLen:EthHdrLen+oihl], 0) != 0 {
			t.Fatalf("segment %d: outer IPv4 checksum", i)
		}
		if Checksum(seg[l.inner:l.tcp], 0) != 0 || int(binary.BigEndian.Uint16(seg[l.inner+2:])) != len(seg)-l.inner {
			t.Fatalf("segment %d: inner IPv4 header", i)
		}
		isrc, idst := [4]byte(seg[l.inner+12:]), [4]byte(seg[l.inner+16:])
		if Checksum(seg[l.tcp:], PseudoHeaderSum(isrc, idst, ProtoTCP, len(seg)-l.tcp)) != 0 {
			t.Fatalf("segment %d: inner TCP checksum", i)
		}
		switch {
		case g.Proto == ProtoUDP && l.udpCsum:
			if Checksum(seg[g.L4:], PseudoHeaderSum(g.Src, g.Dst, ProtoUDP, len(seg)-g.L4)) != 0 ||
				binary.BigEndian.Uint16(seg[g.L4+6:]) == 0 {
				t.Fatalf("segment %d: outer UDP checksum", i)
			}
		case g.Proto == ProtoUDP:
			if binary.BigEndian.Uint16(seg[g.L4+6:]) != 0 {
				t.Fatalf("segment %d: outer UDP checksum not kept 0", i)
			}
		case l.greCsum >= 0:
			if Checksum(seg[g.L4:], 0) != 0 {
				t.Fatalf("segment %d: GRE checksum", i)
			}
		}
		if g.Proto == ProtoUDP && int(binary.BigEndian.Uint16(seg[g.L4+4:])) != len(seg)-g.L4 {
			t.Fatalf("segment %d: UDP length", i)
		}
		pl := seg[l.hdrEnd:]
		if len(pl) > l.mss {
			t.Fatalf("segment %d: %d payload bytes, gso_size %d", i, len(pl), l.mss)
		}
		got = append(got, pl...)
	}
	if !bytes.Equal(got, frame[l.hdrEnd:f.End]) {
		t.Fatalf("reassembled payload differs")
	}
}

// FuzzSegmentEncap feeds arbitrary virtio-net headers and frames to Parse and SegmentEncap:
// nothing may panic, and when SegmentEncap cuts a frame every segment must parse with every
// checksum complete and the payload must come back whole.
func FuzzSegmentEncap(f *testing.F) {
	add := func(b []byte, v VnetHdr) {
		vb := make([]byte, VnetHdrLen)
		v.Encode(vb)
		f.Add(vb, b)
	}
	// Small seeds: the fuzzer minimizes every new interesting input byte by byte, which takes
	// long on frames of kilobytes.
	for _, c := range encCases {
		c.payload = min(c.payload, 300)
		c.gso = min(c.gso, 128)
		e := buildEncap(f, c)
		add(e.b, e.v)
	}
	plain := buildTCP(f, ipHost, ipRemote, 1, 2, tcpOpt{options: true, flags: TCPAck, payload: 300})
	add(plain, makePartial(f, plain, VnetHdr{GSOType: GSOTCPv4, GSOSize: 100}))
	add(nil, VnetHdr{})
	f.Fuzz(func(t *testing.T, vb, frame []byte) {
		var v VnetHdr
		v.Decode(vb)
		checkFuzzed(t, frame, v, false)
	})
}

// TestSegmentEncapAfterNAT checks the order the datapath may use: NAT of the outer flow on the
// super-frame, then segmentation; the outer UDP checksum must cover the new addresses and port.
func TestSegmentEncapAfterNAT(t *testing.T) {
	for _, udpCsum := range []bool{false, true} {
		e := buildEncap(t, encCase{enc: encVXLAN, udpCsum: udpCsum, payload: 5000, gso: 1398, flags: TCPAck})
		var f Frame
		if r := f.Parse(e.b, e.v); r != OK {
			t.Fatalf("parse: %v", r)
		}
		f.SetSrc(ipHost2, 61000)
		f.SetDst(ipOther, 4789)
		checkFuzzed(t, e.b, e.v, true)
		dst := make([]byte, f.SegmentEncapSize())
		lens := make([]int, f.SegmentEncapCount())
		n := f.SegmentEncap(dst, lens)
		var g Frame
		if n == 0 || g.Parse(dst[VnetHdrLen:lens[0]], VnetHdr{}) != OK || g.Src != ipHost2 || g.Dst != ipOther || g.SrcPort != 61000 {
			t.Fatalf("udp checksum %v: segments do not carry the NAT", udpCsum)
		}
	}
}
