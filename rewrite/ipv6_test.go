package rewrite

import (
	"bytes"
	"encoding/binary"
	"math/rand/v2"
	"net"
	"testing"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
)

// ipv6Packet builds an IPv6 packet (no Ethernet header) with the given extension headers
// (each: next-header value it is, and its length in bytes, a multiple of 8) in front of an
// upper-layer payload of protocol proto.
func ipv6Packet(t testing.TB, exts []uint8, extLen []int, proto uint8, l4 []byte) []byte {
	t.Helper()
	var chain []byte
	for i, typ := range exts {
		next := proto
		if i+1 < len(exts) {
			next = exts[i+1]
		}
		n := extLen[i]
		h := make([]byte, n)
		h[0] = next
		switch typ {
		case extFragment:
			n = 8
			h = h[:8]
		default:
			h[1] = byte(n/8 - 1)
			if n > 2 {
				h[2] = 1 // PadN
				h[3] = byte(n - 4)
			}
		}
		chain = append(chain, h...)
	}
	first := proto
	if len(exts) > 0 {
		first = exts[0]
	}
	b := make([]byte, ipv6HdrLen, ipv6HdrLen+len(chain)+len(l4))
	b[0] = 0x60
	binary.BigEndian.PutUint16(b[4:], uint16(len(chain)+len(l4)))
	b[6], b[7] = first, 64
	copy(b[8:24], net.ParseIP("2001:db8:1::2"))
	copy(b[24:40], net.ParseIP("2001:db8:ff::10"))
	b = append(b, chain...)
	return append(b, l4...)
}

// TestWalkIPv6MatchesGopacket walks random IPv6 packets with random chains of hop-by-hop,
// destination-options and routing headers and checks the upper-layer protocol and offset
// against gopacket's decoding.
func TestWalkIPv6MatchesGopacket(t *testing.T) {
	r := rand.New(rand.NewPCG(6, 6))
	for i := 0; i < 2000; i++ {
		var exts []uint8
		var lens []int
		if r.IntN(3) == 0 {
			exts, lens = append(exts, extHopByHop), append(lens, 8*(1+r.IntN(3)))
		}
		for j := r.IntN(4); j > 0; j-- {
			typ := []uint8{extDestOpts, extRouting}[r.IntN(2)]
			exts, lens = append(exts, typ), append(lens, 8*(1+r.IntN(3)))
		}
		proto := []uint8{ProtoTCP, ProtoUDP, ProtoICMPv6}[r.IntN(3)]
		l4 := make([]byte, 20+r.IntN(100))
		if proto == ProtoTCP {
			l4[12] = 5 << 4
		}
		b := ipv6Packet(t, exts, lens, proto, l4)
		h, reason := WalkIPv6(b, false)
		if reason != OK {
			t.Fatalf("packet %d (%v %v): %v", i, exts, lens, reason)
		}
		p := gopacket.NewPacket(b, layers.LayerTypeIPv6, gopacket.Default)
		want := ipv6HdrLen
		for _, l := range p.Layers()[1:] {
			switch l.LayerType() {
			case layers.LayerTypeIPv6HopByHop, layers.LayerTypeIPv6Destination, layers.LayerTypeIPv6Routing:
				want += len(l.LayerContents())
			}
		}
		if h.Proto != proto || h.L4 != want || h.End != len(b) || h.ExtHeaders != len(exts) {
			t.Fatalf("packet %d (%v %v): got proto %d L4 %d end %d exts %d; want %d %d %d %d (gopacket: %v)",
				i, exts, lens, h.Proto, h.L4, h.End, h.ExtHeaders, proto, want, len(b), len(exts), p.Layers())
		}
	}
}

// TestWalkIPv6Refuses lists the malformed and unwanted packets WalkIPv6 refuses, each with its
// reason, and the fragments it describes.
func TestWalkIPv6Refuses(t *testing.T) {
	tcp := make([]byte, 20)
	tcp[12] = 5 << 4
	ok := ipv6Packet(t, nil, nil, ProtoTCP, tcp)
	cut := func(b []byte, n int) []byte { return b[:len(b)-n] }
	eight := func(n int) ([]uint8, []int) {
		var e []uint8
		var l []int
		for i := 0; i < n; i++ {
			e, l = append(e, extDestOpts), append(l, 8)
		}
		return e, l
	}
	e9, l9 := eight(MaxIPv6ExtHeaders + 1)
	e8, l8 := eight(MaxIPv6ExtHeaders)
	v4 := append([]byte(nil), ok...)
	v4[0] = 0x45
	longer := append([]byte(nil), ok...)
	binary.BigEndian.PutUint16(longer[4:], 200)
	fragBits := ipv6Packet(t, []uint8{extFragment}, []int{8}, ProtoTCP, tcp)
	fragBits[ipv6HdrLen+3] |= 0x2
	for _, tc := range []struct {
		what string
		b    []byte
		want Reason
	}{
		{"whole", ok, OK},
		{"shorter than the header", ok[:39], ShortFrame},
		{"not version 6", v4, BadIPVersion},
		{"payload length beyond the buffer", longer, BadIPLength},
		{"TCP header cut short", ipv6Packet(t, nil, nil, ProtoTCP, tcp[:19]), ShortL4},
		{"second hop-by-hop", ipv6Packet(t, []uint8{extHopByHop, extHopByHop}, []int{8, 8}, ProtoTCP, tcp), BadExtHeader},
		{"hop-by-hop not first", ipv6Packet(t, []uint8{extDestOpts, extHopByHop}, []int{8, 8}, ProtoTCP, tcp), BadExtHeader},
		{"extension header past the end", cut(ipv6Packet(t, []uint8{extDestOpts}, []int{16}, ProtoTCP, nil), 0)[:ipv6HdrLen+8], BadIPLength},
		{"fragment reserved bits", fragBits, BadExtHeader},
		{"eight extension headers", ipv6Packet(t, e8, l8, ProtoTCP, tcp), OK},
		{"nine extension headers", ipv6Packet(t, e9, l9, ProtoTCP, tcp), ExtChainTooLong},
	} {
		if _, got := WalkIPv6(tc.b, false); got != tc.want {
			t.Errorf("%s: %v, want %v", tc.what, got, tc.want)
		}
	}
	// A header whose stated length runs past the packet whose length is right.
	b := ipv6Packet(t, []uint8{extDestOpts}, []int{8}, ProtoTCP, nil)
	b[ipv6HdrLen+1] = 3
	if _, got := WalkIPv6(b, false); got != BadExtHeader {
		t.Errorf("extension header longer than the packet: %v", got)
	}

	first := ipv6Packet(t, []uint8{extFragment}, []int{8}, ProtoUDP, make([]byte, 16))
	binary.BigEndian.PutUint16(first[ipv6HdrLen+2:], 1) // offset 0, more fragments
	binary.BigEndian.PutUint32(first[ipv6HdrLen+4:], 0xdeadbeef)
	h, r := WalkIPv6(first, false)
	if r != OK || !h.IsFragment() || h.L4 != ipv6HdrLen+8 || h.FragID != 0xdeadbeef || !h.MoreFrags {
		t.Errorf("first fragment: %v %+v", r, h)
	}
	later := append([]byte(nil), first...)
	binary.BigEndian.PutUint16(later[ipv6HdrLen+2:], 185<<3)
	h, r = WalkIPv6(later, false)
	if r != OK || !h.IsFragment() || h.L4 != -1 || h.FragOff != 185 || h.Proto != ProtoUDP {
		t.Errorf("later fragment: %v %+v", r, h)
	}
	atomic := ipv6Packet(t, []uint8{extFragment}, []int{8}, ProtoUDP, make([]byte, 16))
	if h, r := WalkIPv6(atomic, false); r != OK || h.IsFragment() {
		t.Errorf("atomic fragment: %v %+v", r, h)
	}
	gso := append([]byte(nil), ok...)
	binary.BigEndian.PutUint16(gso[4:], 0)
	if h, r := WalkIPv6(gso, true); r != OK || h.End != len(gso) {
		t.Errorf("GSO packet with payload length 0: %v %+v", r, h)
	}
}

// TestUpdateAddr6 rewrites an IPv6 address of TCP, UDP and ICMPv6 packets and checks the
// incrementally updated checksum against gopacket's full computation, and the partial sum
// against the pseudo-header sum of the new addresses.
func TestUpdateAddr6(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 7))
	for i := 0; i < 500; i++ {
		src, dst, newSrc := randAddr6(r), randAddr6(r), randAddr6(r)
		ip := &layers.IPv6{Version: 6, HopLimit: 64, SrcIP: src[:], DstIP: dst[:]}
		var l4 gopacket.SerializableLayer
		var csumOff int
		switch i % 3 {
		case 0:
			ip.NextHeader = layers.IPProtocolTCP
			tcp := &layers.TCP{SrcPort: 1000, DstPort: 443, ACK: true, Seq: r.Uint32(), Window: 100}
			tcp.SetNetworkLayerForChecksum(ip)
			l4, csumOff = tcp, 16
		case 1:
			ip.NextHeader = layers.IPProtocolUDP
			udp := &layers.UDP{SrcPort: 1000, DstPort: 53}
			udp.SetNetworkLayerForChecksum(ip)
			l4, csumOff = udp, 6
		default:
			ip.NextHeader = layers.IPProtocolICMPv6
			icmp := &layers.ICMPv6{TypeCode: layers.CreateICMPv6TypeCode(128, 0)}
			icmp.SetNetworkLayerForChecksum(ip)
			l4, csumOff = icmp, 2
		}
		payload := make([]byte, r.IntN(300))
		for j := range payload {
			payload[j] = byte(r.IntN(256))
		}
		b := serialize6(t, ip, l4, payload)
		c := ipv6HdrLen + csumOff
		got := UpdateFullAddr6(binary.BigEndian.Uint16(b[c:]), src, newSrc)
		ip.SrcIP = newSrc[:]
		want := serialize6(t, ip, l4, payload)
		if got != binary.BigEndian.Uint16(want[c:]) {
			t.Fatalf("packet %d: checksum %#04x, want %#04x", i, got, binary.BigEndian.Uint16(want[c:]))
		}
		l4len := len(b) - ipv6HdrLen
		partial := Fold(PseudoHeaderSum6(src, dst, uint8(ip.NextHeader), l4len))
		if UpdatePartialAddr6(partial, src, newSrc) != Fold(PseudoHeaderSum6(newSrc, dst, uint8(ip.NextHeader), l4len)) {
			t.Fatalf("packet %d: partial sum not the new pseudo-header's", i)
		}
	}
}

func randAddr6(r *rand.Rand) [16]byte {
	var a [16]byte
	for i := range a {
		a[i] = byte(r.IntN(256))
	}
	a[0] = 0x20
	return a
}

func serialize6(t testing.TB, ip *layers.IPv6, l4 gopacket.SerializableLayer, payload []byte) []byte {
	t.Helper()
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{ComputeChecksums: true, FixLengths: true}, ip, l4, gopacket.Payload(payload)); err != nil {
		t.Fatal(err)
	}
	return bytes.Clone(buf.Bytes())
}

// FuzzWalkIPv6: any input is walked without a panic, and what WalkIPv6 accepts has its
// offsets inside the packet.
func FuzzWalkIPv6(f *testing.F) {
	tcp := make([]byte, 20)
	tcp[12] = 5 << 4
	f.Add(ipv6Packet(f, []uint8{extHopByHop, extDestOpts, extRouting, extFragment}, []int{8, 16, 8, 8}, ProtoTCP, tcp), false)
	f.Add(ipv6Packet(f, nil, nil, ProtoUDP, make([]byte, 8)), true)
	f.Fuzz(func(t *testing.T, b []byte, gso bool) {
		h, r := WalkIPv6(b, gso)
		if r != OK {
			return
		}
		if h.End > len(b) || h.End < ipv6HdrLen || (h.L4 >= 0 && (h.L4 < ipv6HdrLen || h.L4 > h.End)) || h.ExtHeaders > MaxIPv6ExtHeaders {
			t.Fatalf("accepted with offsets outside the packet: %+v (len %d)", h, len(b))
		}
	})
}
