package rewrite

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"math/rand/v2"
	"net"
	"slices"
	"testing"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
)

// Encapsulations the tests build.
const (
	encVXLAN   = "vxlan"
	encGeneve  = "geneve"
	encGRETAP  = "gretap" // GRE carrying Ethernet (0x6558)
	encGREIP   = "gre"    // GRE carrying IPv4 (0x0800) or IPv6 (0x86dd)
	encIPIP    = "ipip"   // IPv4 in IPv4 (protocol 4), or IPv6 in IPv4 (sit, protocol 41)
	encOddUDP  = "oddudp" // a UDP tunnel with a 9-byte header and the inner IP header right after it
	encVLANTap = "gretap-vlan"
)

// Inner IPv6 extension headers the tests build, as the kernel writes them for a socket with
// IPV6_HOPOPTS or IPV6_DSTOPTS set (one PadN option filling 8 bytes), and a longer one.
const (
	extHBH    = "hbh"
	extDst    = "dst"
	extHBHDst = "hbh+dst16" // hop-by-hop, then 16 bytes of destination options
)

type encCase struct {
	name    string
	enc     string
	udpCsum bool // keep a non-zero outer UDP checksum (else 0)
	greCsum bool // GRE C bit
	greKS   bool // GRE key and sequence number
	payload int
	gso     uint16
	flags   uint8  // inner TCP flags of the super-frame
	ecn     bool   // GSOECN
	ipOpts  bool   // inner IPv4 options (IHL 6)
	ip6     bool   // inner IPv6 (TCP: GSO_TCPV6)
	udp     bool   // inner UDP (GSO_UDP_L4), IPv4 or IPv6
	ext     string // inner IPv6 extension headers (ext* above)
}

// encFrame is a built super-frame and where its parts are.
type encFrame struct {
	b       []byte
	v       VnetHdr
	inner   int // inner IPv4 or IPv6 header
	l4      int // inner TCP or UDP header
	hdrEnd  int
	payload []byte
	udpCsum uint16 // the outer UDP checksum field as built
}

var (
	ipInnerA  = [4]byte{172, 16, 0, 1}
	ipInnerB  = [4]byte{172, 16, 0, 2}
	ip6InnerA = net.ParseIP("fd00:42::1")
	ip6InnerB = net.ParseIP("fd00:42::2")
	macInA    = net.HardwareAddr{0x02, 0xaa, 0, 0, 0, 1}
	macInB    = net.HardwareAddr{0x02, 0xaa, 0, 0, 0, 2}
)

func ip4(a [4]byte) net.IP { return net.IP(a[:]).To4() }

// extHeaders returns the extension header bytes for ext, chained to end in proto, and the next
// header value the IPv6 header must carry.
func extHeaders(t testing.TB, ext string, proto uint8) (first layers.IPProtocol, b []byte) {
	t.Helper()
	switch ext {
	case "":
		return layers.IPProtocol(proto), nil
	case extHBH:
		return layers.IPProtocolIPv6HopByHop, []byte{proto, 0, 1, 4, 0, 0, 0, 0}
	case extDst:
		return layers.IPProtocolIPv6Destination, []byte{proto, 0, 1, 4, 0, 0, 0, 0}
	case extHBHDst:
		return layers.IPProtocolIPv6HopByHop, []byte{60, 0, 1, 4, 0, 0, 0, 0,
			proto, 1, 1, 12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}
	}
	t.Fatalf("unknown extension headers %q", ext)
	return 0, nil
}

// serializeNet builds a frame from layers with lengths and checksums computed by gopacket, each
// TCP or UDP layer tied for its checksum to the IPv4 or IPv6 layer before it.
func serializeNet(t testing.TB, ls ...gopacket.SerializableLayer) []byte {
	t.Helper()
	var nl gopacket.NetworkLayer
	for _, l := range ls {
		switch l := l.(type) {
		case *layers.IPv4:
			nl = l
		case *layers.IPv6:
			nl = l
		case *layers.TCP:
			l.SetNetworkLayerForChecksum(nl)
		case *layers.UDP:
			l.SetNetworkLayerForChecksum(nl)
		}
	}
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}, ls...); err != nil {
		t.Fatalf("serialize: %v", err)
	}
	return bytes.Clone(buf.Bytes())
}

// pseudoSum is the unfolded sum of the TCP/UDP pseudo-header for src and dst (IPv4 or IPv6),
// computed here independently of PseudoHeaderSum.
func pseudoSum(src, dst net.IP, proto uint8, l4len int) uint32 {
	var ph []byte
	if s4, d4 := src.To4(), dst.To4(); s4 != nil && d4 != nil {
		ph = append(append(ph, s4...), d4...)
		ph = append(ph, 0, proto, byte(l4len>>8), byte(l4len))
	} else {
		ph = append(append(ph, src.To16()...), dst.To16()...)
		ph = append(ph, byte(l4len>>24), byte(l4len>>16), byte(l4len>>8), byte(l4len), 0, 0, 0, proto)
	}
	return uint32(^naiveCsum(ph, 0))
}

// buildEncap builds what a tunnel's GSO frame reads back as from a PACKET_VNET_HDR socket:
// GSO_TCPV4, GSO_TCPV6 or GSO_UDP_L4 and NEEDS_CSUM with csum_start at the inner TCP or UDP
// header, whose checksum field holds the uncomplemented pseudo-header sum over the whole inner
// L4 length, as the kernel leaves it.
func buildEncap(t testing.TB, c encCase) encFrame {
	t.Helper()
	payload := payloadBytes(c.payload, 5)
	for i := range payload { // a pattern that does not repeat with any segment size
		payload[i] ^= byte(i >> 11)
	}
	proto := uint8(ProtoTCP)
	if c.udp {
		proto = ProtoUDP
	}

	var innerIP gopacket.SerializableLayer
	var src, dst net.IP
	var extBytes []byte
	innerEth := &layers.Ethernet{SrcMAC: macInA, DstMAC: macInB, EthernetType: layers.EthernetTypeIPv4}
	if c.ip6 {
		nh, eb := extHeaders(t, c.ext, proto)
		extBytes = eb
		src, dst = ip6InnerA, ip6InnerB
		innerIP = &layers.IPv6{Version: 6, TrafficClass: 0x02, FlowLabel: 0xd9c87, HopLimit: 64, NextHeader: nh, SrcIP: src, DstIP: dst}
		innerEth.EthernetType = layers.EthernetTypeIPv6
	} else {
		src, dst = ip4(ipInnerA), ip4(ipInnerB)
		ip := &layers.IPv4{
			Version: 4, TTL: 64, Id: 0xfffd, Flags: layers.IPv4DontFragment, Protocol: layers.IPProtocol(proto),
			SrcIP: src, DstIP: dst,
		}
		if c.ipOpts {
			ip.Options = []layers.IPv4Option{{OptionType: 148, OptionLength: 4, OptionData: []byte{0, 0}}}
		}
		innerIP = ip
	}
	var l4 gopacket.SerializableLayer
	l4Len := 8
	if c.udp {
		l4 = &layers.UDP{SrcPort: 45678, DstPort: 4433}
	} else {
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
		l4, l4Len = tcp, 32 // 20 + NOP NOP timestamps
	}

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
			vlan := &layers.Dot1Q{VLANIdentifier: 12, Type: innerEth.EthernetType}
			innerEth.EthernetType = layers.EthernetTypeDot1Q
			ls = append(ls, innerEth, vlan)
		case encGREIP:
			gre.Protocol = innerEth.EthernetType
		}
	case encIPIP:
		outerIP.Protocol = layers.IPProtocolIPv4
		if c.ip6 {
			outerIP.Protocol = layers.IPProtocolIPv6
		}
		ls = []gopacket.SerializableLayer{eth, outerIP}
	default:
		t.Fatalf("unknown encapsulation %q", c.enc)
	}
	ls = append(ls, innerIP)
	if extBytes != nil {
		ls = append(ls, gopacket.Payload(extBytes))
	}
	ls = append(ls, l4, gopacket.Payload(payload))
	b := serializeNet(t, ls...)

	e := encFrame{b: b, payload: payload}
	e.hdrEnd = len(b) - len(payload)
	e.l4 = e.hdrEnd - l4Len
	switch {
	case c.ip6:
		e.inner = e.l4 - len(extBytes) - 40
	case c.ipOpts:
		e.inner = e.l4 - 24
	default:
		e.inner = e.l4 - 20
	}
	if (c.ip6 && b[e.inner]>>4 != 6) || (!c.ip6 && b[e.inner]>>4 != 4) || (!c.udp && b[e.l4+12] != 0x80) ||
		(c.udp && int(binary.BigEndian.Uint16(b[e.l4+4:])) != len(b)-e.l4) {
		t.Fatalf("layout: inner IP at %d, L4 at %d do not match", e.inner, e.l4)
	}
	// The partial sum of a CHECKSUM_PARTIAL super-frame.
	csumAt := 16
	if c.udp {
		csumAt = 6
	}
	binary.BigEndian.PutUint16(b[e.l4+csumAt:], Fold(uint64(pseudoSum(src, dst, proto, len(b)-e.l4))))
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
		CsumStart: uint16(e.l4), CsumOffset: uint16(csumAt)}
	switch {
	case c.udp:
		e.v.GSOType = GSOUDPL4
	case c.ip6:
		e.v.GSOType = GSOTCPv6
	}
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

// encCases6 are the inner IPv6 TCP super-frames (GSO_TCPV6): what a tunnel carrying IPv6 hands
// over.
var encCases6 = []encCase{
	{name: "vxlan tcp6", enc: encVXLAN, ip6: true, udpCsum: true, payload: 9646, gso: 1378, flags: TCPAck | TCPPsh},
	{name: "vxlan tcp6 udp csum 0", enc: encVXLAN, ip6: true, payload: 10000, gso: 1398, flags: TCPAck | TCPPsh},
	{name: "vxlan tcp6 fin psh", enc: encVXLAN, ip6: true, udpCsum: true, payload: 7001, gso: 1398, flags: TCPAck | TCPPsh | TCPFin},
	{name: "vxlan tcp6 even split", enc: encVXLAN, ip6: true, payload: 5 * 1398, gso: 1398, flags: TCPAck},
	{name: "vxlan tcp6 one segment", enc: encVXLAN, ip6: true, udpCsum: true, payload: 900, gso: 1398, flags: TCPAck | TCPPsh | TCPFin | TCPCwr},
	{name: "vxlan tcp6 no payload", enc: encVXLAN, ip6: true, payload: 0, gso: 1398, flags: TCPAck | TCPFin},
	{name: "vxlan tcp6 ecn", enc: encVXLAN, ip6: true, payload: 6000, gso: 1398, flags: TCPAck | TCPCwr | TCPEce | TCPPsh, ecn: true},
	{name: "vxlan tcp6 destination options", enc: encVXLAN, ip6: true, ext: extDst, udpCsum: true, payload: 6858, gso: 1370, flags: TCPAck | TCPPsh},
	{name: "vxlan tcp6 hop-by-hop", enc: encVXLAN, ip6: true, ext: extHBH, udpCsum: true, payload: 6858, gso: 1370, flags: TCPAck | TCPPsh | TCPFin},
	{name: "vxlan tcp6 hop-by-hop and destination options", enc: encVXLAN, ip6: true, ext: extHBHDst, payload: 5000, gso: 1000, flags: TCPAck | TCPCwr},
	{name: "vxlan tcp6 64k", enc: encVXLAN, ip6: true, udpCsum: true, payload: 65000, gso: 1398, flags: TCPAck | TCPPsh},
	{name: "vxlan tcp6 gso 1", enc: encVXLAN, ip6: true, udpCsum: true, payload: 37, gso: 1, flags: TCPAck | TCPPsh},
	{name: "geneve tcp6", enc: encGeneve, ip6: true, udpCsum: true, payload: 9999, gso: 1350, flags: TCPAck | TCPFin},
	{name: "gretap tcp6 csum", enc: encGRETAP, ip6: true, greCsum: true, payload: 10000, gso: 1398, flags: TCPAck | TCPPsh | TCPFin},
	{name: "gretap tcp6 vlan inner", enc: encVLANTap, ip6: true, greCsum: true, greKS: true, payload: 3000, gso: 1398, flags: TCPAck},
	{name: "gre ipv6", enc: encGREIP, ip6: true, greCsum: true, payload: 10000, gso: 1398, flags: TCPAck | TCPPsh},
	{name: "sit", enc: encIPIP, ip6: true, payload: 10000, gso: 1428, flags: TCPAck | TCPPsh},
	{name: "odd offset udp tunnel tcp6", enc: encOddUDP, ip6: true, ext: extDst, udpCsum: true, payload: 5555, gso: 1398, flags: TCPAck | TCPPsh},
}

// encCasesUDP are the inner UDP super-frames (GSO_UDP_L4, UDP_SEGMENT): one datagram per
// gso_size.
var encCasesUDP = []encCase{
	{name: "vxlan udp6", enc: encVXLAN, udp: true, ip6: true, udpCsum: true, payload: 24000, gso: 1200},
	{name: "vxlan udp6 udp csum 0", enc: encVXLAN, udp: true, ip6: true, payload: 24000 - 17, gso: 1200},
	{name: "vxlan udp6 one datagram", enc: encVXLAN, udp: true, ip6: true, udpCsum: true, payload: 700, gso: 1200},
	{name: "vxlan udp6 empty", enc: encVXLAN, udp: true, ip6: true, payload: 0, gso: 1200},
	{name: "vxlan udp6 destination options", enc: encVXLAN, udp: true, ip6: true, ext: extDst, payload: 9000, gso: 1000},
	{name: "vxlan udp6 64k", enc: encVXLAN, udp: true, ip6: true, udpCsum: true, payload: 65000, gso: 1400},
	{name: "vxlan udp4", enc: encVXLAN, udp: true, udpCsum: true, payload: 24000, gso: 1200},
	{name: "vxlan udp4 udp csum 0", enc: encVXLAN, udp: true, payload: 10001, gso: 1472},
	{name: "vxlan udp4 ip options", enc: encVXLAN, udp: true, ipOpts: true, payload: 5000, gso: 999},
	{name: "vxlan udp4 gso 1", enc: encVXLAN, udp: true, udpCsum: true, payload: 29, gso: 1},
	{name: "geneve udp6", enc: encGeneve, udp: true, ip6: true, payload: 9999, gso: 1350},
	{name: "gretap udp4 csum", enc: encGRETAP, udp: true, greCsum: true, payload: 8000, gso: 1400},
	{name: "gretap udp6 vlan", enc: encVLANTap, udp: true, ip6: true, greCsum: true, payload: 5000, gso: 1300},
	{name: "gre udp6", enc: encGREIP, udp: true, ip6: true, payload: 8000, gso: 1400},
	{name: "gre udp4 csum", enc: encGREIP, udp: true, greCsum: true, payload: 8000, gso: 1400},
	{name: "ipip udp4", enc: encIPIP, udp: true, payload: 8000, gso: 1400},
	{name: "sit udp6", enc: encIPIP, udp: true, ip6: true, payload: 8000, gso: 1400},
	{name: "odd offset udp tunnel udp6", enc: encOddUDP, udp: true, ip6: true, udpCsum: true, payload: 5555, gso: 1111},
}

// allEncCases is every built case: IPv4/TCP, IPv6/TCP and UDP.
func allEncCases() []encCase {
	return append(append(slices.Clone(encCases), encCases6...), encCasesUDP...)
}

func TestSegmentEncap(t *testing.T) { testSegmentEncap(t, encCases) }

// TestSegmentEncapTCP6 cuts inner IPv6/TCP super-frames (GSO_TCPV6), with and without
// extension headers.
func TestSegmentEncapTCP6(t *testing.T) { testSegmentEncap(t, encCases6) }

// TestSegmentEncapUDP cuts inner UDP super-frames (GSO_UDP_L4) over IPv4 and IPv6.
func TestSegmentEncapUDP(t *testing.T) { testSegmentEncap(t, encCasesUDP) }

func testSegmentEncap(t *testing.T, cases []encCase) {
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e := buildEncap(t, c)
			segmentAndCheck(t, c, e)
		})
	}
}

// segmentAndCheck segments e, checking sizes, counts and refusals of short buffers, and then
// every segment with checkSegments.
func segmentAndCheck(t *testing.T, c encCase, e encFrame) {
	t.Helper()
	orig := bytes.Clone(e.b)
	var f Frame
	if r := f.Parse(e.b, e.v); r != OK {
		t.Fatalf("parse: %v", r)
	}
	if !f.Encap || f.PartialCsum {
		t.Fatalf("Encap %v PartialCsum %v, want an Encap frame", f.Encap, f.PartialCsum)
	}
	size, count := f.SegmentEncapSize(), f.SegmentEncapCount()
	payload := len(e.payload)
	wantSegs := max(1, (payload+int(c.gso)-1)/int(c.gso))
	if count != wantSegs || size != wantSegs*(VnetHdrLen+e.hdrEnd)+payload {
		t.Fatalf("size %d count %d, want %d segments of %d header bytes and %d payload bytes", size, count, wantSegs, e.hdrEnd, payload)
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
}

// checkSegments decodes every segment with gopacket and checks it against the super-frame:
// every checksum recomputed by gopacket and by naiveCsum, lengths, IDs, sequence numbers,
// flags, the bytes that must not change, and the payloads, which must add up to the
// super-frame's.
func checkSegments(t *testing.T, c encCase, e encFrame, dst []byte, lens []int) {
	var (
		got     []byte
		off     int
		wantSeq = binary.BigEndian.Uint32(e.b[e.l4+4:])
		oIHL    = int(e.b[EthHdrLen]&0x0f) * 4
		l4      = EthHdrLen + oIHL
		outerID = binary.BigEndian.Uint16(e.b[EthHdrLen+4:])
		innerID = binary.BigEndian.Uint16(e.b[e.inner+4:]) // IPv4 only
		oFlags  = layers.IPv4Flag(e.b[EthHdrLen+6] >> 5)
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
		if int(oip.Length) != len(seg)-EthHdrLen || oip.Id != outerID+uint16(i) || oip.Flags != oFlags {
			t.Errorf("%s: outer IPv4 length %d id %#x flags %v", what, oip.Length, oip.Id, oip.Flags)
		}
		switch c.enc {
		case encVXLAN, encGeneve, encOddUDP:
			// The outer UDP header, decoded from the outer IPv4 payload (with an inner UDP the
			// packet holds two UDP layers).
			udp := &layers.UDP{}
			if err := udp.DecodeFromBytes(seg[l4:], gopacket.NilDecodeFeedback); err != nil {
				t.Fatalf("%s: no outer UDP: %v", what, err)
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
				if want := naiveL4Csum(oip.SrcIP, oip.DstIP, ProtoUDP, cp[l4:]); want != udp.Checksum && !(want == 0 && udp.Checksum == 0xffff) {
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

		// Inner layers, decoded from the inner IP header on.
		var (
			ipkt       gopacket.Packet
			nl         gopacket.NetworkLayer
			isrc, idst net.IP
		)
		if c.ip6 {
			ipkt = gopacket.NewPacket(seg[e.inner:], layers.LayerTypeIPv6, gopacket.Default)
			iip, _ := ipkt.Layer(layers.LayerTypeIPv6).(*layers.IPv6)
			if iip == nil {
				t.Fatalf("%s: inner IPv6 does not decode (%v)", what, ipkt.ErrorLayer())
			}
			if int(iip.Length) != len(seg)-e.inner-40 {
				t.Errorf("%s: inner IPv6 payload length %d, want %d", what, iip.Length, len(seg)-e.inner-40)
			}
			hbh := ipkt.Layer(layers.LayerTypeIPv6HopByHop) != nil
			dopts := ipkt.Layer(layers.LayerTypeIPv6Destination) != nil
			if hbh != (c.ext == extHBH || c.ext == extHBHDst) || dopts != (c.ext == extDst || c.ext == extHBHDst) {
				t.Errorf("%s: extension headers: hop-by-hop %v, destination options %v, want %q", what, hbh, dopts, c.ext)
			}
			nl, isrc, idst = iip, iip.SrcIP, iip.DstIP
		} else {
			ipkt = gopacket.NewPacket(seg[e.inner:], layers.LayerTypeIPv4, gopacket.Default)
			iip, _ := ipkt.Layer(layers.LayerTypeIPv4).(*layers.IPv4)
			if iip == nil {
				t.Fatalf("%s: inner IPv4 does not decode (%v)", what, ipkt.ErrorLayer())
			}
			if err, r := iip.VerifyChecksum(); err != nil || !r.Valid {
				t.Errorf("%s: inner IPv4 checksum %#x, want %#x", what, r.Actual, r.Correct)
			}
			if int(iip.Length) != len(seg)-e.inner || iip.Id != innerID+uint16(i) {
				t.Errorf("%s: inner IPv4 length %d id %#x", what, iip.Length, iip.Id)
			}
			nl, isrc, idst = iip, iip.SrcIP, iip.DstIP
		}

		var pl []byte
		if c.udp {
			udp, _ := ipkt.Layer(layers.LayerTypeUDP).(*layers.UDP)
			if udp == nil {
				t.Fatalf("%s: inner UDP does not decode (%v)", what, ipkt.ErrorLayer())
			}
			if int(udp.Length) != len(seg)-e.l4 || uint16(udp.SrcPort) != binary.BigEndian.Uint16(e.b[e.l4:]) || uint16(udp.DstPort) != binary.BigEndian.Uint16(e.b[e.l4+2:]) {
				t.Errorf("%s: inner UDP length %d (want %d), ports %d %d", what, udp.Length, len(seg)-e.l4, udp.SrcPort, udp.DstPort)
			}
			udp.SetNetworkLayerForChecksum(nl)
			if err, r := udp.VerifyChecksum(); err != nil || !r.Valid || udp.Checksum == 0 {
				t.Errorf("%s: inner UDP checksum %#x, want %#x", what, r.Actual, r.Correct)
			}
			cp := bytes.Clone(seg[e.l4:])
			binary.BigEndian.PutUint16(cp[6:], 0)
			if want := naiveL4Csum(isrc, idst, ProtoUDP, cp); want != udp.Checksum && !(want == 0 && udp.Checksum == 0xffff) {
				t.Errorf("%s: inner UDP checksum %#x, naive recompute %#x", what, udp.Checksum, want)
			}
			pl = udp.Payload
		} else {
			tcp, _ := ipkt.Layer(layers.LayerTypeTCP).(*layers.TCP)
			if tcp == nil {
				t.Fatalf("%s: inner TCP does not decode (%v)", what, ipkt.ErrorLayer())
			}
			tcp.SetNetworkLayerForChecksum(nl)
			if err, r := tcp.VerifyChecksum(); err != nil || !r.Valid {
				t.Errorf("%s: inner TCP checksum %#x, want %#x", what, r.Actual, r.Correct)
			}
			cp := bytes.Clone(seg[e.l4:])
			binary.BigEndian.PutUint16(cp[16:], 0)
			if want := naiveL4Csum(isrc, idst, ProtoTCP, cp); want != tcp.Checksum {
				t.Errorf("%s: TCP checksum %#x, naive recompute %#x", what, tcp.Checksum, want)
			}
			if tcp.Seq != wantSeq {
				t.Errorf("%s: seq %#x, want %#x", what, tcp.Seq, wantSeq)
			}
			fl := seg[e.l4+13]
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
			pl = tcp.Payload
		}
		if len(pl) > int(c.gso) || (!last && len(pl) != int(c.gso)) || len(pl) != len(seg)-e.hdrEnd {
			t.Errorf("%s: %d payload bytes, gso_size %d", what, len(pl), c.gso)
		}
		wantSeq += uint32(len(pl))
		got = append(got, pl...)

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
	m := [][2]int{{o + 2, o + 6}, {o + 10, o + 12}}
	if c.ip6 {
		m = append(m, [2]int{e.inner + 4, e.inner + 6})
	} else {
		m = append(m, [2]int{e.inner + 2, e.inner + 6}, [2]int{e.inner + 10, e.inner + 12})
	}
	if c.udp {
		m = append(m, [2]int{e.l4 + 4, e.l4 + 8})
	} else {
		m = append(m, [2]int{e.l4 + 4, e.l4 + 8}, [2]int{e.l4 + 13, e.l4 + 14}, [2]int{e.l4 + 16, e.l4 + 18})
	}
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

// naiveL4Csum is the TCP/UDP checksum of seg (checksum field zeroed) under the IPv4 or IPv6
// pseudo-header of src and dst.
func naiveL4Csum(src, dst net.IP, proto uint8, seg []byte) uint16 {
	return naiveCsum(seg, pseudoSum(src, dst, proto, len(seg)))
}

// kernelFrames are super-frames as Linux 6.18 handed them over on the underlay of a VXLAN
// tunnel (read with PACKET_VNET_HDR from the egress of the veth under it): the headers as
// captured, up to hdr_len, and the payload (zeros, as the sender wrote) up to the length read.
// The outer UDP checksum is on (iproute2's default), and its field holds the partial sum.
var kernelFrames = []struct {
	name string
	v    VnetHdr
	len  int
	hdr  string
}{
	{"tcp6", VnetHdr{Flags: VnetNeedsCsum, GSOType: GSOTCPv6, HdrLen: 136, GSOSize: 1378, CsumStart: 104, CsumOffset: 16}, 9782,
		"3e2684b40bb33601bca1c30e080045022628d36f000040116c8b0a6300010a630002ebec12b526143aee0800000000002a002ec8983cc2ce7a694fb885e986dd602d9c8725ce0640fd000042000000000000000000000001fd000042000000000000000000000002e8921389dfbadfda94bdd6e980180040205d00000101080a95a269927d58237d"},
	{"tcp6 destination options", VnetHdr{Flags: VnetNeedsCsum, GSOType: GSOTCPv6, HdrLen: 144, GSOSize: 1370, CsumStart: 112, CsumOffset: 16}, 6994,
		"3e2684b40bb33601bca1c30e080045021b44dee5000040116bf90a6300010a630002940712b51b30300a0800000000002a002ec8983cc2ce7a694fb885e986dd6026e9181aea3c40fd000042000000000000000000000001fd0000420000000000000000000000020600010400000000e8941389ccfefd1f5c63aeb980180040157100000101080ae2bf08df8874efc8"},
	{"tcp6 hop-by-hop", VnetHdr{Flags: VnetNeedsCsum, GSOType: GSOTCPv6, HdrLen: 144, GSOSize: 1370, CsumStart: 112, CsumOffset: 16}, 6994,
		"3e2684b40bb33601bca1c30e080045021b44e4a400004011663a0a6300010a630002bfb512b51b30300a0800000000002a002ec8983cc2ce7a694fb885e986dd6028e53b1aea0040fd000042000000000000000000000001fd0000420000000000000000000000020600010400000000e89e13895d04a3a87ca5226d80180040157100000101080a615f9f082fc0743a"},
	{"udp6", VnetHdr{Flags: VnetNeedsCsum, GSOType: GSOUDPL4, HdrLen: 112, GSOSize: 1200, CsumStart: 104, CsumOffset: 6}, 24112,
		"3e2684b40bb33601bca1c30e080045005e22ea5e000040111da40a6300010a630002977712b55e0e72e80800000000002a002ec8983cc2ce7a694fb885e986dd600f97495dc81140fd000042000000000000000000000001fd000042000000000000000000000002b3a2138a5dc85862"},
	{"udp4", VnetHdr{Flags: VnetNeedsCsum, GSOType: GSOUDPL4, HdrLen: 92, GSOSize: 1200, CsumStart: 84, CsumOffset: 6}, 24092,
		"3e2684b40bb33601bca1c30e080045005e0eebf0000040111c260a6300010a630002848712b55dfa72d40800000000002a002ec8983cc2ce7a694fb885e9080045005ddce2a000004011651cc0a82a01c0a82a02854a138b5dc8332e"},
}

// TestSegmentEncapKernelFrames cuts the super-frames the kernel produced (kernelFrames) and
// checks the segments as the built ones.
func TestSegmentEncapKernelFrames(t *testing.T) {
	for _, k := range kernelFrames {
		t.Run(k.name, func(t *testing.T) {
			hdr, err := hex.DecodeString(k.hdr)
			if err != nil || len(hdr) != int(k.v.HdrLen) {
				t.Fatalf("header: %v, %d bytes", err, len(hdr))
			}
			b := make([]byte, k.len)
			copy(b, hdr)
			e := encFrame{b: b, v: k.v, l4: int(k.v.CsumStart), hdrEnd: len(hdr), payload: b[len(hdr):],
				udpCsum: binary.BigEndian.Uint16(b[EthHdrLen+20+6:])}
			c := encCase{enc: encVXLAN, gso: k.v.GSOSize, udp: k.v.GSOType == GSOUDPL4, ip6: b[e.l4-20]>>4 != 4}
			switch {
			case !c.ip6:
				e.inner = e.l4 - 20
			case b[e.l4-40]>>4 == 6:
				e.inner = e.l4 - 40
			default:
				// One 8-byte extension header, as the socket options set it.
				e.inner = e.l4 - 48
				c.ext = extDst
				if b[e.inner+6] == 0 {
					c.ext = extHBH
				}
			}
			if !c.udp {
				c.flags = b[e.l4+13]
			}
			// The partial sums are the kernel's: check them against an independent computation.
			var src, dst net.IP
			if c.ip6 {
				src, dst = net.IP(b[e.inner+8:e.inner+24]), net.IP(b[e.inner+24:e.inner+40])
			} else {
				src, dst = net.IP(b[e.inner+12:e.inner+16]), net.IP(b[e.inner+16:e.inner+20])
			}
			proto := uint8(ProtoTCP)
			if c.udp {
				proto = ProtoUDP
			}
			if got, want := binary.BigEndian.Uint16(b[e.l4+int(k.v.CsumOffset):]), Fold(uint64(pseudoSum(src, dst, proto, len(b)-e.l4))); got != want {
				t.Errorf("the kernel's partial sum %#x, want %#x", got, want)
			}
			segmentAndCheck(t, c, e)
		})
	}
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
	add("encap udp gso on tcp", func(e *encFrame) { e.v.GSOType, e.v.CsumOffset = GSOUDPL4, 6 })
	add("encap udp gso with tcp csum offset", func(e *encFrame) { e.v.GSOType = GSOUDPL4 })
	add("encap tcpv6 gso on ipv4", func(e *encFrame) { e.v.GSOType = GSOTCPv6 })
	add("encap ufo", func(e *encFrame) { e.v.GSOType, e.v.CsumOffset = GSOUDP, 6 })
	add("encap unknown gso type", func(e *encFrame) { e.v.GSOType = 2 })
	add("csum offset not tcp", func(e *encFrame) { e.v.CsumOffset = 6 })
	add("inner not tcp", func(e *encFrame) { e.b[e.inner+9] = ProtoUDP })
	add("inner not ipv4", func(e *encFrame) { e.b[e.inner] = 0x65 })
	add("inner fragment", func(e *encFrame) { e.b[e.inner+6] |= 0x20 })
	add("inner length wrong", func(e *encFrame) { binary.BigEndian.PutUint16(e.b[e.inner+2:], 1500) })
	add("inner tcp offset short", func(e *encFrame) { e.b[e.l4+12] = 0x40 })
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

	// Inner IPv6 and UDP.
	addCase := func(name string, c encCase, mod func(e *encFrame)) {
		e := buildEncap(t, c)
		mod(&e)
		cases = append(cases, struct {
			name string
			b    []byte
			v    VnetHdr
		}{name, e.b, e.v})
	}
	tcp6 := encCase{enc: encVXLAN, ip6: true, payload: 3000, gso: 1000, flags: TCPAck}
	tcp6dst := encCase{enc: encVXLAN, ip6: true, ext: extDst, payload: 3000, gso: 1000, flags: TCPAck}
	udp6 := encCase{enc: encVXLAN, udp: true, ip6: true, payload: 3000, gso: 1000}
	udp4 := encCase{enc: encVXLAN, udp: true, payload: 3000, gso: 1000}
	addCase("tcpv6 as tcpv4", tcp6, func(e *encFrame) { e.v.GSOType = GSOTCPv4 })
	addCase("tcpv6 inner not tcp", tcp6, func(e *encFrame) { e.b[e.inner+6] = ProtoUDP })
	addCase("tcpv6 inner not ipv6", tcp6, func(e *encFrame) { e.b[e.inner] = 0x56 })
	addCase("tcpv6 payload length wrong", tcp6, func(e *encFrame) { binary.BigEndian.PutUint16(e.b[e.inner+4:], 1500) })
	addCase("tcpv6 payload length 0", tcp6, func(e *encFrame) { binary.BigEndian.PutUint16(e.b[e.inner+4:], 0) })
	addCase("tcpv6 fragment header", tcp6dst, func(e *encFrame) { e.b[e.inner+6] = 44 })
	addCase("tcpv6 routing header", tcp6dst, func(e *encFrame) { e.b[e.inner+6] = 43 })
	addCase("tcpv6 hop-by-hop not first", tcp6dst, func(e *encFrame) {
		// IPv6, destination options, then a hop-by-hop header: not a valid chain.
		e.b[e.inner+40] = 0
		ext := []byte{ProtoTCP, 0, 1, 4, 0, 0, 0, 0}
		b := append(append(bytes.Clone(e.b[:e.l4]), ext...), e.b[e.l4:]...)
		binary.BigEndian.PutUint16(b[e.inner+4:], binary.BigEndian.Uint16(b[e.inner+4:])+8)
		binary.BigEndian.PutUint16(b[EthHdrLen+2:], binary.BigEndian.Uint16(b[EthHdrLen+2:])+8)
		binary.BigEndian.PutUint16(b[EthHdrLen+24:], binary.BigEndian.Uint16(b[EthHdrLen+24:])+8)
		e.b, e.v.CsumStart = b, e.v.CsumStart+8
	})
	addCase("tcpv6 extension header past csum start", tcp6dst, func(e *encFrame) { e.b[e.inner+41] = 1 })
	addCase("tcpv6 over ipip", encCase{enc: encIPIP, ip6: true, payload: 3000, gso: 1000, flags: TCPAck}, func(e *encFrame) {
		e.b[EthHdrLen+9] = protoIPIP
	})
	addCase("tcpv4 over sit", encCase{enc: encIPIP, payload: 3000, gso: 1000, flags: TCPAck}, func(e *encFrame) {
		e.b[EthHdrLen+9] = byte(layers.IPProtocolIPv6)
	})
	addCase("tcpv6 in gre ipv4", encCase{enc: encGREIP, ip6: true, payload: 3000, gso: 1000, flags: TCPAck}, func(e *encFrame) {
		binary.BigEndian.PutUint16(e.b[EthHdrLen+22:], 0x0800)
	})
	addCase("gretap tcpv6 ipv4 ethertype", encCase{enc: encGRETAP, ip6: true, payload: 3000, gso: 1000, flags: TCPAck}, func(e *encFrame) {
		binary.BigEndian.PutUint16(e.b[e.inner-2:], 0x0800)
	})
	addCase("udp csum offset tcp", udp6, func(e *encFrame) { e.v.CsumOffset = 16 })
	addCase("udp as tcpv6", udp6, func(e *encFrame) { e.v.GSOType, e.v.CsumOffset = GSOTCPv6, 16 })
	addCase("udp6 inner not udp", udp6, func(e *encFrame) { e.b[e.inner+6] = ProtoTCP })
	addCase("udp4 inner not udp", udp4, func(e *encFrame) { e.b[e.inner+9] = ProtoTCP })
	addCase("udp4 inner fragment", udp4, func(e *encFrame) { e.b[e.inner+6] |= 0x20 })
	addCase("udp4 inner length wrong", udp4, func(e *encFrame) { binary.BigEndian.PutUint16(e.b[e.inner+2:], 1500) })
	addCase("udp header past the end", udp4, func(e *encFrame) { e.v.CsumStart = uint16(len(e.b) - 7) })
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
		buildEncap(t, encCase{enc: encVXLAN, ip6: true, ext: extDst, udpCsum: true, payload: 60000, gso: 1398, flags: TCPAck}),
		buildEncap(t, encCase{enc: encVXLAN, udp: true, ip6: true, udpCsum: true, payload: 60000, gso: 1200}),
		buildEncap(t, encCase{enc: encGRETAP, udp: true, greCsum: true, payload: 20000, gso: 1200}),
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
		{name: "vxlan64k_tcp6", enc: encVXLAN, ip6: true, payload: 64000, gso: 1378, flags: TCPAck},
		{name: "vxlan64k_udp6", enc: encVXLAN, udp: true, ip6: true, payload: 64000, gso: 1200},
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
		exts := []string{"", extHBH, extDst, extHBHDst}
		c := encCase{
			enc: encs[r.IntN(len(encs))], udpCsum: r.IntN(2) == 0, greCsum: r.IntN(2) == 0,
			greKS: r.IntN(2) == 0, payload: r.IntN(20000), gso: uint16(1 + r.IntN(3000)),
			flags: uint8(r.IntN(256)) &^ (TCPSyn | TCPRst), ecn: r.IntN(2) == 0, ipOpts: r.IntN(2) == 0,
			ip6: r.IntN(2) == 0, udp: r.IntN(3) == 0,
		}
		if c.ip6 {
			c.ipOpts, c.ext = false, exts[r.IntN(len(exts))]
		}
		if c.udp {
			c.flags = 0
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
	l := layoutOf(&f)
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
		proto := uint8(ProtoTCP)
		if l.udp {
			proto = ProtoUDP
			if int(binary.BigEndian.Uint16(seg[l.l4+4:])) != len(seg)-l.l4 || binary.BigEndian.Uint16(seg[l.l4+6:]) == 0 {
				t.Fatalf("segment %d: inner UDP length or checksum 0", i)
			}
		}
		var pseudo uint64
		if l.inner6 {
			if seg[l.inner]>>4 != 6 || int(binary.BigEndian.Uint16(seg[l.inner+4:])) != len(seg)-l.inner-40 {
				t.Fatalf("segment %d: inner IPv6 header", i)
			}
			pseudo = Sum(seg[l.inner+8:l.inner+40], uint64(proto)+uint64(len(seg)-l.l4))
		} else {
			if Checksum(seg[l.inner:l.l4], 0) != 0 || int(binary.BigEndian.Uint16(seg[l.inner+2:])) != len(seg)-l.inner {
				t.Fatalf("segment %d: inner IPv4 header", i)
			}
			pseudo = PseudoHeaderSum([4]byte(seg[l.inner+12:]), [4]byte(seg[l.inner+16:]), proto, len(seg)-l.l4)
		}
		if Checksum(seg[l.l4:], pseudo) != 0 {
			t.Fatalf("segment %d: inner L4 checksum", i)
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
	for _, c := range allEncCases() {
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
