package rewrite

import (
	"bytes"
	"encoding/binary"
	"math/rand/v2"
	"net/netip"
	"testing"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
)

// IPv6 test frames: the extension headers are written here byte by byte (so that every field,
// routing and fragment headers' included, is under the test's control), the upper-layer header,
// its payload and its checksum by gopacket. After a rewrite the packet is decoded by gopacket and
// its upper-layer header reserialized with ComputeChecksums (gopacket's pseudo-header takes the
// final destination of a routing header with segments left, RFC 8200 8.1), and the bytes must
// come out equal.

var (
	ip6Host   = netip.MustParseAddr("2001:db8:1::2").As16()
	ip6Host2  = netip.MustParseAddr("2001:db8:2::2").As16()
	ip6Remote = netip.MustParseAddr("2001:db8:ff::10").As16()
	ip6Other  = netip.MustParseAddr("2001:db8:77::77").As16()
)

// ext6 is one extension header of a test packet.
type ext6 struct {
	typ uint8 // extHopByHop, extDestOpts, extRouting or extFragment
	n   int   // length in bytes, a multiple of 8; a routing header: 8 + 16 per address; a fragment header: 8

	rtype, segLeft uint8 // routing header
	addrs          [][16]byte

	fragOff uint16 // fragment header, in 8-byte units
	more    bool
	id      uint32
}

func (e ext6) bytes(next uint8) []byte {
	switch e.typ {
	case extFragment:
		b := make([]byte, 8)
		b[0] = next
		fo := e.fragOff << 3
		if e.more {
			fo |= 1
		}
		binary.BigEndian.PutUint16(b[2:], fo)
		binary.BigEndian.PutUint32(b[4:], e.id)
		return b
	case extRouting:
		b := make([]byte, 8+16*len(e.addrs))
		b[0], b[1], b[2], b[3] = next, byte(len(b)/8-1), e.rtype, e.segLeft
		for i, a := range e.addrs {
			copy(b[8+16*i:], a[:])
		}
		return b
	}
	b := make([]byte, e.n)
	b[0], b[1] = next, byte(e.n/8-1)
	b[2], b[3] = 1, byte(e.n-4) // PadN over the rest
	return b
}

// pkt6 describes an IPv6 test packet.
type pkt6 struct {
	src, dst     [16]byte
	exts         []ext6
	proto        uint8 // ProtoTCP, ProtoUDP, ProtoICMPv6, or another (body is the payload)
	sport, dport uint16
	flags        uint8              // TCP
	tcpOpts      []layers.TCPOption // TCP
	icmpType     uint8
	icmpCode     uint8
	id, seq      uint16 // ICMPv6 echo
	// body is the TCP or UDP payload, the ICMPv6 echo data, or for another ICMPv6 message what
	// follows its checksum (an error: 4 bytes of unused, MTU or pointer, then the quote).
	body    []byte
	udpZero bool // UDP checksum 0
}

// finalDst returns the destination the transport pseudo-header holds: the destination field,
// unless a routing header of type 0, 2 or 4 with segments left names the final one.
func (p pkt6) finalDst() [16]byte {
	for _, e := range p.exts {
		if e.typ == extFragment {
			break // gopacket, like the RFC's picture, looks only before the fragment header
		}
		if e.typ == extRouting && e.segLeft > 0 {
			if len(e.addrs) > 0 {
				switch e.rtype {
				case 0, 2:
					return e.addrs[len(e.addrs)-1]
				case 4:
					return e.addrs[0]
				}
			}
			break // the first routing header with segments left decides
		}
	}
	return p.dst
}

// chain returns the extension headers' bytes and the first next-header value.
func (p pkt6) chain() ([]byte, uint8) {
	var b []byte
	for i, e := range p.exts {
		next := p.proto
		if i+1 < len(p.exts) {
			next = p.exts[i+1].typ
		}
		b = append(b, e.bytes(next)...)
	}
	if len(p.exts) == 0 {
		return nil, p.proto
	}
	return b, p.exts[0].typ
}

// l4 returns the upper-layer header and payload of p, serialized by gopacket with its checksum
// over the pseudo-header of src and dst.
func (p pkt6) l4(t testing.TB, src, dst [16]byte) []byte {
	t.Helper()
	ip := &layers.IPv6{Version: 6, HopLimit: 64, SrcIP: src[:], DstIP: dst[:], NextHeader: layers.IPProtocol(p.proto)}
	var ls []gopacket.SerializableLayer
	switch p.proto {
	case ProtoTCP:
		tcp := &layers.TCP{SrcPort: layers.TCPPort(p.sport), DstPort: layers.TCPPort(p.dport), Seq: 0x01020304, Ack: 0xa0b0c0d0, Window: 64240, Options: p.tcpOpts}
		tcp.FIN, tcp.SYN, tcp.RST, tcp.PSH = p.flags&TCPFin != 0, p.flags&TCPSyn != 0, p.flags&TCPRst != 0, p.flags&TCPPsh != 0
		tcp.ACK, tcp.URG, tcp.ECE, tcp.CWR = p.flags&TCPAck != 0, p.flags&TCPUrg != 0, p.flags&TCPEce != 0, p.flags&TCPCwr != 0
		tcp.SetNetworkLayerForChecksum(ip)
		ls = append(ls, tcp)
	case ProtoUDP:
		udp := &layers.UDP{SrcPort: layers.UDPPort(p.sport), DstPort: layers.UDPPort(p.dport)}
		udp.SetNetworkLayerForChecksum(ip)
		ls = append(ls, udp)
	case ProtoICMPv6:
		icmp := &layers.ICMPv6{TypeCode: layers.CreateICMPv6TypeCode(p.icmpType, p.icmpCode)}
		icmp.SetNetworkLayerForChecksum(ip)
		ls = append(ls, icmp)
		if p.icmpType == ICMPv6EchoRequest || p.icmpType == ICMPv6EchoReply {
			ls = append(ls, &layers.ICMPv6Echo{Identifier: p.id, SeqNumber: p.seq})
		}
	}
	ls = append(ls, gopacket.Payload(p.body))
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}, ls...); err != nil {
		t.Fatalf("serialize: %v", err)
	}
	b := bytes.Clone(buf.Bytes())
	if p.proto == ProtoUDP && p.udpZero {
		binary.BigEndian.PutUint16(b[6:], 0)
	}
	return b
}

// packet returns the IPv6 packet p describes.
func (p pkt6) packet(t testing.TB) []byte {
	t.Helper()
	chain, first := p.chain()
	l4 := p.l4(t, p.src, p.finalDst())
	b := make([]byte, ipv6HdrLen, ipv6HdrLen+len(chain)+len(l4))
	b[0] = 0x60
	binary.BigEndian.PutUint16(b[4:], uint16(len(chain)+len(l4)))
	b[6], b[7] = first, 64
	copy(b[8:24], p.src[:])
	copy(b[24:40], p.dst[:])
	return append(append(b, chain...), l4...)
}

// frame returns p as an Ethernet frame from macHost to macGW, padded to 60 bytes with junk.
func (p pkt6) frame(t testing.TB) []byte {
	t.Helper()
	return ethFrame6(p.packet(t))
}

func ethFrame6(pkt []byte) []byte {
	b := make([]byte, EthHdrLen, EthHdrLen+len(pkt)+60)
	copy(b[0:6], macGW)
	copy(b[6:12], macHost)
	binary.BigEndian.PutUint16(b[12:], etherTypeIPv6)
	b = append(b, pkt...)
	for len(b) < 60 {
		b = append(b, 0xa5)
	}
	return b
}

// l4Off returns the offset of p's upper-layer header in its packet.
func (p pkt6) l4Off() int {
	n := ipv6HdrLen
	for _, e := range p.exts {
		n += len(e.bytes(0))
	}
	return n
}

// finalDst6 is pkt6.finalDst read from the bytes of an IPv6 packet, as gopacket reads it.
func finalDst6(pkt []byte) [16]byte {
	dst := [16]byte(pkt[24:40])
	nh, off := pkt[6], ipv6HdrLen
	for nh == extHopByHop || nh == extDestOpts || nh == extRouting {
		if off+8 > len(pkt) {
			break
		}
		n := (int(pkt[off+1]) + 1) * 8
		if off+n > len(pkt) {
			break
		}
		if nh == extRouting && pkt[off+3] > 0 {
			if k := (n - 8) / 16; k > 0 {
				switch pkt[off+2] {
				case 0, 2:
					return [16]byte(pkt[off+8+16*(k-1):])
				case 4:
					return [16]byte(pkt[off+8:])
				}
			}
			break
		}
		nh, off = pkt[off], off+n
	}
	return dst
}

// gopacketL4 decodes the IPv6 packet pkt with gopacket and returns its upper-layer header and
// payload reserialized by gopacket with ComputeChecksums, and the offset of that header in pkt.
// ok is false when gopacket finds no TCP, UDP or ICMPv6 layer (a fragment, or another
// protocol). A GSO packet's payload length of 0 is taken as the rest of pkt.
func gopacketL4(t testing.TB, pkt []byte) (l4 []byte, off int, ok bool) {
	t.Helper()
	w := bytes.Clone(pkt)
	if binary.BigEndian.Uint16(w[4:]) == 0 {
		binary.BigEndian.PutUint16(w[4:], uint16(len(w)-ipv6HdrLen))
	}
	all := decode6(w, layers.LayerTypeIPv6)
	ipl, _ := all[0].(*layers.IPv6)
	if ipl == nil {
		t.Fatalf("gopacket: no IPv6 layer")
	}
	off = ipv6HdrLen
	var ls []gopacket.SerializableLayer
	for _, l := range all[1:] {
		switch l := l.(type) {
		case *layers.IPv6HopByHop, *layers.IPv6Destination, *layers.IPv6Routing, *layers.IPv6Fragment:
			off += len(l.LayerContents())
			continue
		case *layers.TCP:
			l.SetNetworkLayerForChecksum(ipl)
			ls = []gopacket.SerializableLayer{l, gopacket.Payload(l.LayerPayload())}
		case *layers.UDP:
			l.SetNetworkLayerForChecksum(ipl)
			ls = []gopacket.SerializableLayer{l, gopacket.Payload(l.LayerPayload())}
		case *layers.ICMPv6:
			l.SetNetworkLayerForChecksum(ipl)
			ls = []gopacket.SerializableLayer{l, gopacket.Payload(l.LayerPayload())}
		}
		break
	}
	if ls == nil {
		return nil, off, false
	}
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{ComputeChecksums: true}, ls...); err != nil {
		t.Fatalf("gopacket reserialize: %v", err)
	}
	return bytes.Clone(buf.Bytes()), off, true
}

// decode6 decodes data with gopacket from layer type first on, and returns its layers. An atomic
// fragment (offset 0, no more fragments) is a whole packet, but gopacket's packet decoder
// takes what follows any fragment header as a fragment: decode6 decodes that on.
func decode6(data []byte, first gopacket.LayerType) []gopacket.Layer {
	all := gopacket.NewPacket(data, first, gopacket.Default).Layers()
	if n := len(all); n >= 2 {
		if fr, ok := all[n-2].(*layers.IPv6Fragment); ok && fr.FragmentOffset == 0 && !fr.MoreFragments {
			all = append(all[:n-1], decode6(fr.LayerPayload(), fr.NextHeader.LayerType())...)
		}
	}
	return all
}

// checkL4Gopacket checks the upper-layer header and payload of the IPv6 packet pkt against
// gopacket's reserialization: every byte, the checksum included. A UDP checksum of 0 must have
// stayed 0 when zero is set.
func checkL4Gopacket(t testing.TB, what string, pkt []byte, zero bool) {
	t.Helper()
	want, off, ok := gopacketL4(t, pkt)
	if !ok {
		t.Fatalf("%s: gopacket found no upper-layer header", what)
	}
	end := len(pkt)
	if pl := int(binary.BigEndian.Uint16(pkt[4:])); pl != 0 {
		end = min(end, ipv6HdrLen+pl)
	}
	got := pkt[off:end]
	if zero {
		if c := binary.BigEndian.Uint16(got[6:]); c != 0 {
			t.Errorf("%s: UDP checksum 0 became %#04x", what, c)
		}
		want = bytes.Clone(want)
		binary.BigEndian.PutUint16(want[6:], 0)
	}
	if len(got) != len(want) {
		t.Fatalf("%s: %d bytes, gopacket reserializes %d", what, len(got), len(want))
	}
	if !bytes.Equal(got, want) {
		for i := range got {
			if got[i] != want[i] {
				t.Errorf("%s: differs from gopacket's reserialization at upper-layer byte %d (got % x, want % x)",
					what, i, got[i&^1:min(len(got), i&^1+2)], want[i&^1:min(len(want), i&^1+2)])
				break
			}
		}
	}
}

// makePartial6 turns a full-checksum IPv6 frame into a CHECKSUM_PARTIAL one, as makePartial
// does for IPv4: the field holds the folded pseudo-header sum (final destination, whole L4
// length), which for ICMPv6 covers the pseudo-header too.
func makePartial6(t testing.TB, frame []byte, vnet VnetHdr) VnetHdr {
	t.Helper()
	var f Frame
	if r := f.ParseAny(frame, vnet); r != OK || !f.IPv6 || f.L4 < 0 {
		t.Fatalf("makePartial6: parse: %v", r)
	}
	off := l4CsumOffset6(f.Proto)
	sum := Fold(PseudoHeaderSum6(f.Src6, finalDst6(frame[f.L3:f.End]), f.Proto, f.End-f.L4))
	binary.BigEndian.PutUint16(frame[f.L4+off:], sum)
	vnet.Flags |= VnetNeedsCsum
	vnet.CsumStart = uint16(f.L4)
	vnet.CsumOffset = uint16(off)
	return vnet
}

// randAddr6R returns a random global unicast address (2000::/3 minus nothing special).
func randAddr6R(r *rand.Rand) [16]byte {
	a := randAddr6(r)
	a[0] = 0x20 | byte(r.IntN(0x20))
	return a
}

// randExts returns a random chain of extension headers in the order RFC 8200 4.1 recommends:
// maybe hop-by-hop, then destination options and routing headers (some still routing, with
// segments left), then maybe an atomic fragment header when atomic is set, then maybe
// destination options.
func randExts(r *rand.Rand, atomic bool) []ext6 {
	var e []ext6
	if r.IntN(3) == 0 {
		e = append(e, ext6{typ: extHopByHop, n: 8 * (1 + r.IntN(3))})
	}
	for i := r.IntN(3); i > 0; i-- {
		if r.IntN(2) == 0 {
			e = append(e, ext6{typ: extDestOpts, n: 8 * (1 + r.IntN(3))})
			continue
		}
		rt := ext6{typ: extRouting, rtype: []uint8{0, 2, 4, 3}[r.IntN(4)]}
		for k := r.IntN(3); k >= 0; k-- {
			rt.addrs = append(rt.addrs, randAddr6R(r))
		}
		if r.IntN(2) == 0 {
			rt.segLeft = uint8(1 + r.IntN(len(rt.addrs)))
		}
		e = append(e, rt)
	}
	if atomic && r.IntN(4) == 0 {
		e = append(e, ext6{typ: extFragment, id: r.Uint32()})
	}
	if r.IntN(4) == 0 {
		e = append(e, ext6{typ: extDestOpts, n: 8})
	}
	return e
}

func randBytes(r *rand.Rand, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.IntN(256))
	}
	return b
}

var mssOpt = layers.TCPOption{OptionType: layers.TCPOptionKindMSS, OptionLength: 4, OptionData: []byte{0x05, 0xa0}}

// tcpOpts6 are a SYN's options: MSS 1440, SACK permitted, timestamps, NOP, window scale.
func tcpOpts6() []layers.TCPOption {
	ts := make([]byte, 8)
	binary.BigEndian.PutUint32(ts, 0x11223344)
	return []layers.TCPOption{
		mssOpt,
		{OptionType: layers.TCPOptionKindSACKPermitted, OptionLength: 2},
		{OptionType: layers.TCPOptionKindTimestamps, OptionLength: 10, OptionData: ts},
		{OptionType: layers.TCPOptionKindNop, OptionLength: 1},
		{OptionType: layers.TCPOptionKindWindowScale, OptionLength: 3, OptionData: []byte{7}},
	}
}
