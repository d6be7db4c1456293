package rewrite

import (
	"bytes"
	"encoding/binary"
	"net/netip"
	"testing"

	"github.com/gopacket/gopacket/layers"
)

var ep6 = Endpoints6{SrcMAC: [6]byte(macGW), DstMAC: [6]byte(macHost), Src: ip6Remote, Dst: ip6Host, SrcPort: 443, DstPort: 40000}

func TestBuildRST6(t *testing.T) {
	for _, ack := range []uint32{0, 0xa0b0c0d0} {
		out := make([]byte, RST6Len+10)
		n := BuildRST6(out, ep6, 0x01020304, ack)
		if n != RST6Len {
			t.Fatalf("length %d", n)
		}
		b := out[:n]
		all := decode6(b, layers.LayerTypeEthernet)
		eth, _ := all[0].(*layers.Ethernet)
		ip, _ := all[1].(*layers.IPv6)
		tcp, _ := all[2].(*layers.TCP)
		if eth == nil || ip == nil || tcp == nil {
			t.Fatalf("gopacket: %v", all)
		}
		if [6]byte(eth.SrcMAC) != ep6.SrcMAC || [6]byte(eth.DstMAC) != ep6.DstMAC || [16]byte(ip.SrcIP) != ep6.Src ||
			[16]byte(ip.DstIP) != ep6.Dst || ip.HopLimit != 64 || ip.Length != tcpMinLen || ip.Version != 6 ||
			tcp.SrcPort != 443 || tcp.DstPort != 40000 || tcp.Seq != 0x01020304 || !tcp.RST || tcp.ACK != (ack != 0) || tcp.Ack != ack ||
			tcp.SYN || tcp.FIN || tcp.DataOffset != 5 {
			t.Errorf("RST: %+v %+v", ip, tcp)
		}
		checkL4Gopacket(t, "RST", b[EthHdrLen:], false)
		var f Frame
		if f.ParseAny(b, VnetHdr{}) != OK || !f.HasTCPFlag(TCPRst) || f.TCPSeq() != 0x01020304 {
			t.Errorf("ParseAny of the RST")
		}
	}
}

func TestBuildEchoRequest6(t *testing.T) {
	out := make([]byte, EchoRequest6Len)
	n := BuildEchoRequest6(out, ep6, 0x4242, 7)
	if n != EchoRequest6Len {
		t.Fatalf("length %d", n)
	}
	all := decode6(out, layers.LayerTypeEthernet)
	var ip *layers.IPv6
	var icmp *layers.ICMPv6
	var echo *layers.ICMPv6Echo
	for _, l := range all {
		switch l := l.(type) {
		case *layers.IPv6:
			ip = l
		case *layers.ICMPv6:
			icmp = l
		case *layers.ICMPv6Echo:
			echo = l
		}
	}
	if ip == nil || icmp == nil || echo == nil {
		t.Fatalf("gopacket: %v", all)
	}
	if ip.NextHeader != layers.IPProtocolICMPv6 || [16]byte(ip.SrcIP) != ep6.Src || [16]byte(ip.DstIP) != ep6.Dst ||
		icmp.TypeCode != layers.CreateICMPv6TypeCode(ICMPv6EchoRequest, 0) || echo.Identifier != 0x4242 || echo.SeqNumber != 7 ||
		!bytes.Equal(echo.Payload, []byte(echoPayload)) {
		t.Errorf("echo request: %+v %+v %+v", ip, icmp, echo)
	}
	checkL4Gopacket(t, "echo request", out[EthHdrLen:], false)
	var f Frame
	if f.ParseAny(out, VnetHdr{}) != OK || !f.IsICMPEchoRequest() || f.SrcPort != 0x4242 || f.ICMPEchoSeq() != 7 {
		t.Errorf("ParseAny of the echo request: %+v", f)
	}
}

func TestBuildPacketTooBig(t *testing.T) {
	from := netipAddr16("2001:db8:1::1")
	tcp := pkt6{src: ip6Host, dst: ip6Remote, proto: ProtoTCP, sport: 40000, dport: 443, flags: TCPAck, tcpOpts: tcpOpts6(), body: payloadBytes(1000, 1),
		exts: []ext6{{typ: extDestOpts, n: 16}}}
	big := tcp
	big.body = payloadBytes(8000, 2)
	udp := pkt6{src: ip6Host, dst: ip6Remote, proto: ProtoUDP, sport: 5000, dport: 53, body: payloadBytes(1000, 3)}
	tiny := pkt6{src: ip6Host, dst: ip6Remote, proto: ProtoUDP, sport: 5000, dport: 53, body: payloadBytes(1, 3)} // padded
	ping := pkt6{src: ip6Host, dst: ip6Remote, proto: ProtoICMPv6, icmpType: ICMPv6EchoRequest, id: 1, body: payloadBytes(1000, 4)}
	first := udp
	first.exts = []ext6{{typ: extFragment, more: true, id: 5}}
	later := udp
	later.exts = []ext6{{typ: extFragment, fragOff: 100, id: 5}}
	errQuote := udp.packet(t)[:48]
	ns := pkt6{src: ip6Host, dst: ip6Remote, proto: ProtoICMPv6, icmpType: ICMPv6NeighborSolicit, body: make([]byte, 20)}
	mcSrc := udp
	mcSrc.src = [16]byte{0: 0xff, 1: 0x0e, 15: 1}
	unspec := udp
	unspec.src = [16]byte{}
	partial := tcp.frame(t)
	pv := makePartial6(t, partial, VnetHdr{})

	cases := []struct {
		name  string
		frame []byte
		vnet  VnetHdr
		out   int // room; 0: PacketTooBigMaxLen
		ok    bool
		quote int // bytes quoted, when ok
	}{
		{"tcp behind destination options", tcp.frame(t), VnetHdr{}, 0, true, 40 + 16 + 40 + 1000},
		{"tcp partial", partial, pv, 0, true, 40 + 16 + 40 + 1000},
		{"tcp too big to quote whole", big.frame(t), VnetHdr{}, 0, true, 1232},
		{"udp", udp.frame(t), VnetHdr{}, 0, true, 40 + 8 + 1000},
		{"small udp (the quote stops at the packet)", tiny.frame(t), VnetHdr{}, 0, true, 40 + 9},
		{"ping", ping.frame(t), VnetHdr{}, 0, true, 40 + 8 + 1000},
		{"first fragment", first.frame(t), VnetHdr{}, 0, true, 40 + 8 + 8 + 1000},
		{"out with room for 600 bytes", udp.frame(t), VnetHdr{}, EthHdrLen + 600, true, 600 - 48},
		{"out with room for the headers and 8 bytes", tcp.frame(t), VnetHdr{}, EthHdrLen + 48 + 56 + 8, true, 56 + 8},
		{"out too short", tcp.frame(t), VnetHdr{}, EthHdrLen + 48 + 56 + 7, false, 0},
		{"later fragment", later.frame(t), VnetHdr{}, 0, false, 0},
		{"icmpv6 error", icmp6Err(t, ip6Remote, ip6Host, ICMPv6DestUnreach, 0, errQuote), VnetHdr{}, 0, false, 0},
		{"neighbour solicitation", ns.frame(t), VnetHdr{}, 0, false, 0},
		{"multicast source", mcSrc.frame(t), VnetHdr{}, 0, false, 0},
		{"unspecified source", unspec.frame(t), VnetHdr{}, 0, false, 0},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var f Frame
			if r := f.ParseAny(c.frame, c.vnet); r != OK {
				t.Fatalf("parse: %v", r)
			}
			room := c.out
			if room == 0 {
				room = PacketTooBigMaxLen
			}
			out := make([]byte, room)
			n := f.BuildPacketTooBig(out, 1400, from)
			if !c.ok {
				if n != 0 || (c.out == 0 && f.PacketTooBigLen() != 0) {
					t.Fatalf("built %d bytes, PacketTooBigLen %d", n, f.PacketTooBigLen())
				}
				return
			}
			if want := EthHdrLen + 48 + c.quote; n != want || n > PacketTooBigMaxLen || (c.out == 0 && n != f.PacketTooBigLen()) {
				t.Fatalf("built %d bytes, want %d (PacketTooBigLen %d)", n, want, f.PacketTooBigLen())
			}
			out = out[:n]
			all := decode6(out, layers.LayerTypeEthernet)
			eth, _ := all[0].(*layers.Ethernet)
			ip, _ := all[1].(*layers.IPv6)
			icmp, _ := all[2].(*layers.ICMPv6)
			if eth == nil || ip == nil || icmp == nil {
				t.Fatalf("gopacket: %v", all)
			}
			if [6]byte(eth.SrcMAC) != f.DstMAC() || [6]byte(eth.DstMAC) != f.SrcMAC() || eth.EthernetType != layers.EthernetTypeIPv6 ||
				[16]byte(ip.SrcIP) != from || [16]byte(ip.DstIP) != f.Src6 || ip.HopLimit != 64 || int(ip.Length) != n-EthHdrLen-40 ||
				ip.TrafficClass != 0 || ip.FlowLabel != 0 ||
				icmp.TypeCode != layers.CreateICMPv6TypeCode(ICMPv6PacketTooBig, 0) || binary.BigEndian.Uint32(icmp.Payload) != 1400 {
				t.Errorf("built frame: %+v %+v %+v", eth, ip, icmp)
			}
			if !bytes.Equal(out[EthHdrLen+48:], c.frame[f.L3:f.L3+c.quote]) {
				t.Errorf("quote differs from the frame")
			}
			checkL4Gopacket(t, "Packet Too Big", out[EthHdrLen:], false)
			var g Frame
			if r := g.ParseAny(out, VnetHdr{}); r != OK || g.ICMPType != ICMPv6PacketTooBig || g.InnerL3 != EthHdrLen+48 ||
				g.InnerSrc6 != f.Src6 || g.InnerDst6 != f.Dst6 || !g.IsICMPError() || g.InnerSrcPort != f.SrcPort || g.InnerDstPort != f.DstPort {
				t.Errorf("ParseAny of the built frame: %v %+v", r, g)
			}
			if f.BuildPacketTooBig(out[:EthHdrLen+48], 1400, from) != 0 {
				t.Errorf("built into a buffer without room for a quote")
			}
		})
	}
}

func netipAddr16(s string) [16]byte { return netip.MustParseAddr(s).As16() }

// TestZeroAlloc6 checks that ParseAny and the IPv6 per-frame path never allocate.
func TestZeroAlloc6(t *testing.T) {
	syn := pkt6{src: ip6Host, dst: ip6Remote, proto: ProtoTCP, sport: 40000, dport: 443, flags: TCPSyn, tcpOpts: tcpOpts6(),
		exts: []ext6{{typ: extHopByHop, n: 8}, {typ: extDestOpts, n: 16}}}.frame(t)
	gso := pkt6{src: ip6Host, dst: ip6Remote, proto: ProtoTCP, sport: 40000, dport: 443, flags: TCPAck, body: payloadBytes(60000, 1)}.frame(t)
	gv := makePartial6(t, gso, VnetHdr{GSOType: GSOTCPv6, GSOSize: 1440})
	quote := pkt6{src: ip6Host2, dst: ip6Remote, proto: ProtoUDP, sport: 61000, dport: 53, body: payloadBytes(20, 1)}.packet(t)
	icmpErr := icmp6Err(t, ip6Remote, ip6Host2, ICMPv6DestUnreach, 4, quote)
	ping := pkt6{src: ip6Host, dst: ip6Remote, proto: ProtoICMPv6, icmpType: ICMPv6EchoRequest, id: 9, body: payloadBytes(56, 1)}.frame(t)
	v4 := buildTCP(t, ipHost, ipRemote, 40000, 443, tcpOpt{options: true, flags: TCPSyn})
	out := make([]byte, PacketTooBigMaxLen)
	var f Frame
	frames := []struct {
		b []byte
		v VnetHdr
	}{{syn, VnetHdr{}}, {gso, gv}, {icmpErr, VnetHdr{}}, {ping, VnetHdr{}}, {v4, VnetHdr{}}}
	i := 0
	var sink uint64
	allocs := testing.AllocsPerRun(1000, func() {
		fr := frames[i%len(frames)]
		i++
		if f.ParseAny(fr.b, fr.v) != OK {
			panic("parse")
		}
		a := ip6Host2
		a[15] = byte(i)
		f.SetMACs([6]byte(macGW), [6]byte(macHost))
		f.SetSrc6(a, uint16(i))
		f.SetDst6(ip6Other, uint16(i>>1))
		f.SetInnerSrc6(ip6Host, uint16(i))
		f.SetInnerDst6(a, 7)
		f.SetSrc(ipHost2, uint16(i))
		f.ClampMSS(1220)
		f.FitGSO(1280)
		f.BuildPacketTooBig(out, 1280, ip6Host2)
		s, d := f.Addrs16()
		is, id := f.InnerAddrs16()
		sink += uint64(s[15]) + uint64(d[15]) + uint64(is[0]) + uint64(id[0]) + uint64(f.PayloadHash())
		if f.IsNeighborDiscovery() || f.IsMLD() || f.IsLinkLocal() || f.IsMulticast() || f.HasIPv4MappedAddr() || f.IsICMPError() || f.IsICMPEcho() {
			sink++
		}
		BuildRST6(out, ep6, uint32(i), 0)
		BuildEchoRequest6(out, ep6, 1, uint16(i))
	})
	if allocs != 0 {
		t.Errorf("%v allocations per frame, want 0", allocs)
	}
	_ = sink
}
