package rewrite

import (
	"bytes"
	"encoding/binary"
	"net"
	"testing"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
)

// Test frames are built by gopacket with FixLengths and ComputeChecksums, so every checksum in
// them starts out as gopacket computes it; after a rewrite the frame is decoded by gopacket and
// reserialized with ComputeChecksums, and the checksum fields must come out equal.

var (
	macHost = net.HardwareAddr{0x02, 0x00, 0x00, 0x00, 0x00, 0x01}
	macGW   = net.HardwareAddr{0x02, 0x00, 0x00, 0x00, 0x00, 0xfe}

	ipHost   = [4]byte{10, 1, 0, 2}
	ipHost2  = [4]byte{10, 2, 0, 2}
	ipRemote = [4]byte{192, 0, 2, 10}
	ipOther  = [4]byte{198, 51, 100, 77}
)

func payloadBytes(n int, seed byte) []byte {
	p := make([]byte, n)
	for i := range p {
		p[i] = seed + byte(i*7) + byte(i>>8)
	}
	return p
}

func ethIPv4(src, dst [4]byte, proto layers.IPProtocol) (*layers.Ethernet, *layers.IPv4) {
	eth := &layers.Ethernet{SrcMAC: macHost, DstMAC: macGW, EthernetType: layers.EthernetTypeIPv4}
	ip := &layers.IPv4{
		Version: 4, TTL: 64, Id: 0x1234, Flags: layers.IPv4DontFragment, Protocol: proto,
		SrcIP: net.IP(src[:]).To4(), DstIP: net.IP(dst[:]).To4(),
	}
	return eth, ip
}

// serialize builds a frame from layers with lengths and checksums computed by gopacket.
func serialize(t testing.TB, ls ...gopacket.SerializableLayer) []byte {
	t.Helper()
	var ip *layers.IPv4
	for _, l := range ls {
		switch l := l.(type) {
		case *layers.IPv4:
			ip = l
		case *layers.TCP:
			l.SetNetworkLayerForChecksum(ip)
		case *layers.UDP:
			l.SetNetworkLayerForChecksum(ip)
		}
	}
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}, ls...); err != nil {
		t.Fatalf("serialize: %v", err)
	}
	return bytes.Clone(buf.Bytes())
}

type tcpOpt struct {
	options bool // MSS, SACK permitted, timestamps, NOP, window scale
	ipOpts  bool // an IPv4 router alert option (IHL 6)
	flags   uint8
	payload int
}

func buildTCP(t testing.TB, src, dst [4]byte, sport, dport uint16, o tcpOpt) []byte {
	eth, ip := ethIPv4(src, dst, layers.IPProtocolTCP)
	if o.ipOpts {
		ip.Options = []layers.IPv4Option{{OptionType: 148, OptionLength: 4, OptionData: []byte{0, 0}}}
	}
	tcp := &layers.TCP{SrcPort: layers.TCPPort(sport), DstPort: layers.TCPPort(dport), Seq: 0x01020304, Ack: 0xa0b0c0d0, Window: 64240}
	tcp.SYN = o.flags&TCPSyn != 0
	tcp.ACK = o.flags&TCPAck != 0
	tcp.PSH = o.flags&TCPPsh != 0
	tcp.FIN = o.flags&TCPFin != 0
	if o.options {
		ts := make([]byte, 8)
		binary.BigEndian.PutUint32(ts, 0x11223344)
		binary.BigEndian.PutUint32(ts[4:], 0x55667788)
		tcp.Options = []layers.TCPOption{
			{OptionType: layers.TCPOptionKindMSS, OptionLength: 4, OptionData: []byte{0x05, 0xb4}},
			{OptionType: layers.TCPOptionKindSACKPermitted, OptionLength: 2},
			{OptionType: layers.TCPOptionKindTimestamps, OptionLength: 10, OptionData: ts},
			{OptionType: layers.TCPOptionKindNop, OptionLength: 1},
			{OptionType: layers.TCPOptionKindWindowScale, OptionLength: 3, OptionData: []byte{7}},
		}
	}
	return serialize(t, eth, ip, tcp, gopacket.Payload(payloadBytes(o.payload, 3)))
}

func buildUDP(t testing.TB, src, dst [4]byte, sport, dport uint16, payload int) []byte {
	eth, ip := ethIPv4(src, dst, layers.IPProtocolUDP)
	udp := &layers.UDP{SrcPort: layers.UDPPort(sport), DstPort: layers.UDPPort(dport)}
	return serialize(t, eth, ip, udp, gopacket.Payload(payloadBytes(payload, 11)))
}

func buildICMPEcho(t testing.TB, src, dst [4]byte, typ uint8, id uint16, payload int) []byte {
	eth, ip := ethIPv4(src, dst, layers.IPProtocolICMPv4)
	icmp := &layers.ICMPv4{TypeCode: layers.CreateICMPv4TypeCode(typ, 0), Id: id, Seq: 7}
	return serialize(t, eth, ip, icmp, gopacket.Payload(payloadBytes(payload, 21)))
}

// buildICMPError builds an ICMP error from src to dst that quotes quote (an IPv4 packet).
func buildICMPError(t testing.TB, src, dst [4]byte, typ, code uint8, quote []byte) []byte {
	eth, ip := ethIPv4(src, dst, layers.IPProtocolICMPv4)
	ip.Flags = 0
	icmp := &layers.ICMPv4{TypeCode: layers.CreateICMPv4TypeCode(typ, code)}
	return serialize(t, eth, ip, icmp, gopacket.Payload(quote))
}

// makePartial turns a full-checksum frame into what a CHECKSUM_PARTIAL frame read with
// PACKET_VNET_HDR looks like: NEEDS_CSUM with csum_start/offset at the L4 checksum, and the
// field holding the folded, uncomplemented pseudo-header sum over the whole L4 length.
func makePartial(t testing.TB, frame []byte, vnet VnetHdr) VnetHdr {
	t.Helper()
	var f Frame
	if r := f.Parse(frame, vnet); r != OK {
		t.Fatalf("makePartial: parse: %v", r)
	}
	off := l4CsumOffset(f.Proto)
	sum := uint16(0)
	if f.Proto != ProtoICMP {
		sum = Fold(PseudoHeaderSum(f.Src, f.Dst, f.Proto, f.End-f.L4))
	}
	binary.BigEndian.PutUint16(frame[f.L4+off:], sum)
	vnet.Flags |= VnetNeedsCsum
	vnet.CsumStart = uint16(f.L4)
	vnet.CsumOffset = uint16(off)
	return vnet
}

// nicComplete does what a device (or skb_checksum_help) does to a CHECKSUM_PARTIAL frame: sum
// everything from csum_start to the end of the datagram with the field as it is, complement,
// store; a UDP result of 0 goes out as 0xffff.
func nicComplete(frame []byte, end int, vnet VnetHdr, proto uint8) {
	start, off := int(vnet.CsumStart), int(vnet.CsumOffset)
	c := Checksum(frame[start:end], 0)
	if c == 0 && proto == ProtoUDP {
		c = 0xffff
	}
	binary.BigEndian.PutUint16(frame[start+off:], c)
}

// recompute decodes frame with gopacket (Ethernet, IPv4, then TCP, UDP or ICMPv4 and a raw
// payload: no guessing of application protocols from ports) and reserializes it with
// ComputeChecksums, lengths kept as they are, returning gopacket's frame. A total length of 0
// (TSO) is kept as 0.
func recompute(t testing.TB, frame []byte) []byte {
	t.Helper()
	var eth layers.Ethernet
	ls, ip := decodeL3(t, frame, layers.LayerTypeEthernet, &eth)
	if binary.BigEndian.Uint16(frame[EthHdrLen+2:]) == 0 {
		ip.Length = 0
	}
	return reserialize(t, append([]gopacket.SerializableLayer{&eth}, ls...))
}

// recomputeIPv4 does the same for a bare IPv4 packet (a quote inside an ICMP error, or a
// reassembled datagram). With full false, only the IPv4 header is decoded and recomputed: the
// packet may be truncated, or a fragment.
func recomputeIPv4(t testing.TB, pkt []byte, full bool) []byte {
	t.Helper()
	if !full {
		var ip layers.IPv4
		if err := ip.DecodeFromBytes(pkt, gopacket.NilDecodeFeedback); err != nil {
			t.Fatalf("gopacket decode IPv4: %v", err)
		}
		return reserialize(t, []gopacket.SerializableLayer{&ip, gopacket.Payload(ip.Payload)})
	}
	ls, _ := decodeL3(t, pkt, layers.LayerTypeIPv4, nil)
	return reserialize(t, ls)
}

// decodeL3 decodes IPv4 and its L4 header from data (after an Ethernet header when eth is not
// nil) and returns the layers to reserialize, the payload as raw bytes.
func decodeL3(t testing.TB, data []byte, first gopacket.LayerType, eth *layers.Ethernet) ([]gopacket.SerializableLayer, *layers.IPv4) {
	t.Helper()
	var (
		ip   layers.IPv4
		tcp  layers.TCP
		udp  layers.UDP
		icmp layers.ICMPv4
	)
	dls := []gopacket.DecodingLayer{&ip, &tcp, &udp, &icmp}
	if eth != nil {
		dls = append(dls, eth)
	}
	p := gopacket.NewDecodingLayerParser(first, dls...)
	p.IgnoreUnsupported = true
	var types []gopacket.LayerType
	if err := p.DecodeLayers(data, &types); err != nil {
		t.Fatalf("gopacket decode: %v", err)
	}
	var ls []gopacket.SerializableLayer
	for _, lt := range types {
		switch lt {
		case layers.LayerTypeIPv4:
			ls = append(ls, &ip)
		case layers.LayerTypeTCP:
			tcp.SetNetworkLayerForChecksum(&ip)
			ls = append(ls, &tcp, gopacket.Payload(tcp.Payload))
		case layers.LayerTypeUDP:
			udp.SetNetworkLayerForChecksum(&ip)
			ls = append(ls, &udp, gopacket.Payload(udp.Payload))
		case layers.LayerTypeICMPv4:
			ls = append(ls, &icmp, gopacket.Payload(icmp.Payload))
		}
	}
	if len(ls) == 1 { // a fragment, or a protocol without a decoder here
		ls = append(ls, gopacket.Payload(ip.Payload))
	}
	return ls, &ip
}

func reserialize(t testing.TB, ls []gopacket.SerializableLayer) []byte {
	t.Helper()
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{ComputeChecksums: true}, ls...); err != nil {
		t.Fatalf("gopacket reserialize: %v", err)
	}
	return buf.Bytes()
}

// cmpField compares the 16-bit field at off of got and want.
func cmpField(t testing.TB, what string, got, want []byte, off int) {
	t.Helper()
	g, w := binary.BigEndian.Uint16(got[off:]), binary.BigEndian.Uint16(want[off:])
	if g != w {
		t.Errorf("%s checksum at %d: got %#04x, gopacket computes %#04x", what, off, g, w)
	}
}
