package datapath

import (
	"bytes"
	"net"
	"net/netip"
	"testing"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"

	"github.com/l2shim/l2shim/conntrack"
	"github.com/l2shim/l2shim/failover"
	"github.com/l2shim/l2shim/rewrite"
)

var (
	gw6MAC0  = [6]byte{0x02, 0, 0, 0, 0, 0x21} // IPv6 router on eth0's link
	gw6MAC1  = [6]byte{0x02, 0, 0, 0, 0, 0x22} // IPv6 router on eth1's link
	host6    = netip.MustParseAddr("2001:db8:a::2").As16()
	host6b   = netip.MustParseAddr("2001:db8:b::2").As16()
	server6  = netip.MustParseAddr("2001:db8:ffff::10").As16()
	prefix6a = netip.MustParsePrefix("2001:db8:a::/64")
	prefix6b = netip.MustParsePrefix("2001:db8:b::/64")
)

// testIfaces6 is testIfaces with an IPv6 view: eth0 has 2001:db8:a::2/64, eth1
// 2001:db8:b::2/64.
func testIfaces6() []Iface {
	ifs := testIfaces()
	ifs[0].Addr6, ifs[0].Addrs6, ifs[0].Prefixes6 = host6, [][16]byte{host6}, []netip.Prefix{prefix6a}
	ifs[1].Addr6, ifs[1].Addrs6, ifs[1].Prefixes6 = host6b, [][16]byte{host6b}, []netip.Prefix{prefix6b}
	return ifs
}

// testDatapath6 is testDatapath over testIfaces6, with both IPv6 routers' MACs resolved.
func testDatapath6(t testing.TB, mode failover.Mode, w0, w1 int) *Engine {
	t.Helper()
	d := New(testIfaces6(), testPlan(mode, w0, w1), Options{Seed: 42})
	d.ResolvedMAC6(0, gw6MAC0)
	d.ResolvedMAC6(1, gw6MAC1)
	return d
}

// pkt6 is pkt for IPv6 frames.
type pkt6 struct {
	srcMAC, dstMAC [6]byte
	src, dst       [16]byte
	proto          uint8 // 6, 17, 58
	sport, dport   uint16
	syn, ack, rst  bool
	icmpType       uint8 // ICMPv6: 128/129 echo (sport is the identifier), others bare
	mss            uint16
	payload        []byte
}

func (p pkt6) build(t testing.TB) []byte {
	t.Helper()
	eth := &layers.Ethernet{SrcMAC: net.HardwareAddr(p.srcMAC[:]), DstMAC: net.HardwareAddr(p.dstMAC[:]), EthernetType: layers.EthernetTypeIPv6}
	ip := &layers.IPv6{Version: 6, HopLimit: 64, SrcIP: net.IP(p.src[:]), DstIP: net.IP(p.dst[:])}
	var l4 []gopacket.SerializableLayer
	switch p.proto {
	case 6:
		ip.NextHeader = layers.IPProtocolTCP
		tcp := &layers.TCP{SrcPort: layers.TCPPort(p.sport), DstPort: layers.TCPPort(p.dport), SYN: p.syn, ACK: p.ack, RST: p.rst, Seq: 1000, Window: 65535}
		if p.ack {
			tcp.Ack = 1001
		}
		if p.mss != 0 {
			tcp.Options = []layers.TCPOption{{OptionType: layers.TCPOptionKindMSS, OptionLength: 4, OptionData: []byte{byte(p.mss >> 8), byte(p.mss)}}}
		}
		tcp.SetNetworkLayerForChecksum(ip)
		l4 = append(l4, tcp)
	case 17:
		ip.NextHeader = layers.IPProtocolUDP
		udp := &layers.UDP{SrcPort: layers.UDPPort(p.sport), DstPort: layers.UDPPort(p.dport)}
		udp.SetNetworkLayerForChecksum(ip)
		l4 = append(l4, udp)
	case 58:
		ip.NextHeader = layers.IPProtocolICMPv6
		icmp := &layers.ICMPv6{TypeCode: layers.CreateICMPv6TypeCode(p.icmpType, 0)}
		icmp.SetNetworkLayerForChecksum(ip)
		l4 = append(l4, icmp)
		switch p.icmpType {
		case 128, 129:
			l4 = append(l4, &layers.ICMPv6Echo{Identifier: p.sport, SeqNumber: 1})
		default:
			// Router/neighbour solicitation, MLD...: a reserved word and a target or
			// multicast address are enough to look like one.
			l4 = append(l4, gopacket.Payload(make([]byte, 20)))
		}
	}
	buf := gopacket.NewSerializeBuffer()
	all := append([]gopacket.SerializableLayer{eth, ip}, l4...)
	all = append(all, gopacket.Payload(p.payload))
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{ComputeChecksums: true, FixLengths: true}, all...); err != nil {
		t.Fatal(err)
	}
	return append([]byte(nil), buf.Bytes()...)
}

// checkFrame6 is checkFrame for IPv6 frames: it decodes b and checks that its TCP, UDP or
// ICMPv6 checksum matches a full recompute.
func checkFrame6(t *testing.T, b []byte) gopacket.Packet {
	t.Helper()
	p := gopacket.NewPacket(b, layers.LayerTypeEthernet, gopacket.Default)
	if el := p.ErrorLayer(); el != nil {
		t.Fatalf("decode: %v", el.Error())
	}
	ip, ok := p.Layer(layers.LayerTypeIPv6).(*layers.IPv6)
	if !ok {
		t.Fatalf("not IPv6: %v", p)
	}
	again := gopacket.NewSerializeBuffer()
	var ls []gopacket.SerializableLayer
	for _, l := range p.Layers() {
		sl, ok := l.(gopacket.SerializableLayer)
		if !ok {
			continue
		}
		switch l := l.(type) {
		case *layers.TCP:
			l.SetNetworkLayerForChecksum(ip)
		case *layers.UDP:
			l.SetNetworkLayerForChecksum(ip)
		case *layers.ICMPv6:
			l.SetNetworkLayerForChecksum(ip)
		}
		ls = append(ls, sl)
	}
	if err := gopacket.SerializeLayers(again, gopacket.SerializeOptions{ComputeChecksums: true}, ls...); err != nil {
		t.Fatal(err)
	}
	n := min(len(again.Bytes()), len(b))
	if n < 54 || !bytes.Equal(again.Bytes()[:n], b[:n]) {
		t.Fatalf("checksums differ from a full recompute:\n got %x\nwant %x", b, again.Bytes())
	}
	// And the L4 checksum verifies over the pseudo-header, independently of gopacket.
	var src, dst [16]byte
	copy(src[:], ip.SrcIP.To16())
	copy(dst[:], ip.DstIP.To16())
	l4 := b[rewrite.EthHdrLen+40 : rewrite.EthHdrLen+40+int(ip.Length)]
	if ip.NextHeader != layers.IPProtocolNoNextHeader && rewrite.Checksum(l4, rewrite.PseudoHeaderSum6(src, dst, uint8(ip.NextHeader), len(l4))) != 0 {
		t.Fatalf("L4 checksum does not verify: %x", b)
	}
	return p
}

func addr6Of(ip net.IP) [16]byte { return [16]byte(ip.To16()) }

// TestIPv6SpreadAndNAT places IPv6 TCP, UDP and ICMPv6 echo flows over two uplinks: those on
// eth1 leave NAT66ed to eth1's address with its MAC and its IPv6 router's (not the IPv4
// gateway's), ports kept; the replies come back to the host exactly as it expects them.
func TestIPv6SpreadAndNAT(t *testing.T) {
	d := testDatapath6(t, failover.LoadBalance, 1, 1)
	type proto struct {
		name  string
		req   func(port uint16) pkt6
		reply func(port uint16, dst [16]byte, srcMAC, dstMAC [6]byte) pkt6
	}
	protos := []proto{
		{"tcp",
			func(port uint16) pkt6 {
				return pkt6{srcMAC: mac0, dstMAC: gw6MAC0, src: host6, dst: server6, proto: 6, sport: port, dport: 443, syn: true, payload: []byte("x")}
			},
			func(port uint16, dst [16]byte, s, m [6]byte) pkt6 {
				return pkt6{srcMAC: s, dstMAC: m, src: server6, dst: dst, proto: 6, sport: 443, dport: port, syn: true, ack: true}
			}},
		{"udp",
			func(port uint16) pkt6 {
				return pkt6{srcMAC: mac0, dstMAC: gw6MAC0, src: host6, dst: server6, proto: 17, sport: port, dport: 9999, payload: []byte("query")}
			},
			func(port uint16, dst [16]byte, s, m [6]byte) pkt6 {
				return pkt6{srcMAC: s, dstMAC: m, src: server6, dst: dst, proto: 17, sport: 9999, dport: port, payload: []byte("answer")}
			}},
		{"icmpv6",
			func(id uint16) pkt6 {
				return pkt6{srcMAC: mac0, dstMAC: gw6MAC0, src: host6, dst: server6, proto: 58, icmpType: 128, sport: id, payload: []byte("ping")}
			},
			func(id uint16, dst [16]byte, s, m [6]byte) pkt6 {
				return pkt6{srcMAC: s, dstMAC: m, src: server6, dst: dst, proto: 58, icmpType: 129, sport: id, payload: []byte("ping")}
			}},
	}
	for _, pr := range protos {
		var per [2]int
		for port := uint16(40000); port < 40150; port++ {
			b := pr.req(port).build(t)
			v := process(d, 0, b)
			if v.To != ToWire {
				t.Fatalf("%s %d: verdict %+v", pr.name, port, v)
			}
			per[v.Iface]++
			p := checkFrame6(t, b)
			eth := p.Layer(layers.LayerTypeEthernet).(*layers.Ethernet)
			ip := p.Layer(layers.LayerTypeIPv6).(*layers.IPv6)
			wantSrcMAC, wantDstMAC, wantIP := mac0, gw6MAC0, host6
			if v.Iface == 1 {
				wantSrcMAC, wantDstMAC, wantIP = mac1, gw6MAC1, host6b
			}
			if !bytes.Equal(eth.SrcMAC, wantSrcMAC[:]) || !bytes.Equal(eth.DstMAC, wantDstMAC[:]) || addr6Of(ip.SrcIP) != wantIP || addr6Of(ip.DstIP) != server6 {
				t.Fatalf("%s %d via %d: left as %v→%v from %v to %v", pr.name, port, v.Iface, eth.SrcMAC, eth.DstMAC, ip.SrcIP, ip.DstIP)
			}
			var gotPort uint16
			switch l := p.Layer(layers.LayerTypeTCP).(type) {
			case *layers.TCP:
				gotPort = uint16(l.SrcPort)
			}
			if l, ok := p.Layer(layers.LayerTypeUDP).(*layers.UDP); ok {
				gotPort = uint16(l.SrcPort)
			}
			if l, ok := p.Layer(layers.LayerTypeICMPv6Echo).(*layers.ICMPv6Echo); ok {
				gotPort = l.Identifier
			}
			if gotPort != port {
				t.Fatalf("%s: port changed without a collision: %d → %d", pr.name, port, gotPort)
			}
			// The reply comes back through the same uplink, addressed as the request left.
			rb := pr.reply(port, wantIP, wantDstMAC, wantSrcMAC).build(t)
			rv := process(d, v.Iface, rb)
			if rv.To != ToHost || rv.Iface != 0 {
				t.Fatalf("%s %d: reply verdict %+v", pr.name, port, rv)
			}
			rp := checkFrame6(t, rb)
			reth := rp.Layer(layers.LayerTypeEthernet).(*layers.Ethernet)
			rip := rp.Layer(layers.LayerTypeIPv6).(*layers.IPv6)
			if !bytes.Equal(reth.DstMAC, mac0[:]) || !bytes.Equal(reth.SrcMAC, gw6MAC0[:]) || addr6Of(rip.DstIP) != host6 || addr6Of(rip.SrcIP) != server6 {
				t.Fatalf("%s %d: reply reaches the host as %v→%v %v→%v", pr.name, port, reth.SrcMAC, reth.DstMAC, rip.SrcIP, rip.DstIP)
			}
			want := pr.reply(port, host6, gw6MAC0, mac0).build(t)
			if !bytes.Equal(rb, want) {
				t.Fatalf("%s %d: reply differs from what the host expects:\n got %x\nwant %x", pr.name, port, rb, want)
			}
		}
		if per[0] < 40 || per[1] < 40 {
			t.Fatalf("%s: 150 flows split %v; want both uplinks used", pr.name, per)
		}
	}
	if got := d.Flows(); got != 450 {
		t.Fatalf("%d flows tracked, want 450", got)
	}
	// Confirmed IPv6 flows go to the kernel's fast path with their IPv6 router's MAC and, when
	// NATed, eth1's IPv6 address; the way back restores the host's.
	d.mu.Lock()
	defer d.mu.Unlock()
	carried := 0
	d.table.Range(func(fl *conntrack.Flow) bool {
		out, in, ok := d.fastEntries(fl)
		if ok != fastCandidate(fl) {
			t.Fatalf("IPv6 flow %+v (replied %v): entries %v", fl.Orig, fl.Replied, ok)
		}
		if !ok {
			return true
		}
		carried++
		wantMAC, wantAddr := gw6MAC0, host6
		if fl.WireIf == 1 {
			wantMAC, wantAddr = gw6MAC1, host6b
		}
		if out.DstMAC != wantMAC || out.NAT != (fl.WireIf == 1) || out.NAT && (out.Addr != wantAddr || in.Addr != host6) || out.Gateway != ([16]byte{}) {
			t.Fatalf("IPv6 flow %+v on eth%d: out entry %+v, in entry %+v", fl.Orig, fl.WireIf, out, in)
		}
		return true
	})
	if carried < 300 {
		t.Fatalf("%d of 450 IPv6 flows carried by the fast path", carried)
	}
}

// TestIPv6NATPortCollision: a NAT66 mapping whose natural wire tuple is held by the host's own
// flow on eth1's address is remapped, and mapped back.
func TestIPv6NATPortCollision(t *testing.T) {
	d := testDatapath6(t, failover.LoadBalance, 1, 1000)
	own := pkt6{srcMAC: mac1, dstMAC: gw6MAC1, src: host6b, dst: server6, proto: 17, sport: 7000, dport: 53}.build(t)
	if v := process(d, 1, own); v.Iface != 1 {
		t.Fatalf("own flow verdict %+v", v)
	}
	b := pkt6{srcMAC: mac0, dstMAC: gw6MAC0, src: host6, dst: server6, proto: 17, sport: 7000, dport: 53}.build(t)
	if v := process(d, 0, b); v.Iface != 1 {
		t.Fatalf("second flow verdict %+v", v)
	}
	udp := checkFrame6(t, b).Layer(layers.LayerTypeUDP).(*layers.UDP)
	if udp.SrcPort == 7000 || udp.SrcPort < natPortLo {
		t.Fatalf("colliding flow kept or got a bad port: %d", udp.SrcPort)
	}
	rep := pkt6{srcMAC: gw6MAC1, dstMAC: mac1, src: server6, dst: host6b, proto: 17, sport: 53, dport: uint16(udp.SrcPort)}.build(t)
	if v := process(d, 1, rep); v.To != ToHost || v.Iface != 0 {
		t.Fatalf("reply verdict %+v", v)
	}
	p := checkFrame6(t, rep)
	if ru := p.Layer(layers.LayerTypeUDP).(*layers.UDP); ru.DstPort != 7000 || addr6Of(p.Layer(layers.LayerTypeIPv6).(*layers.IPv6).DstIP) != host6 {
		t.Fatalf("reply mapped back to port %d", ru.DstPort)
	}
}

// TestIPv6PerSource: a flow the host sends on eth0 from a source in eth1's network (a bound
// socket, a temporary address) leaves through eth1's gateway un-NATed, whatever the weights.
func TestIPv6PerSource(t *testing.T) {
	d := testDatapath6(t, failover.LoadBalance, 1000, 1)
	tmp := netip.MustParseAddr("2001:db8:b::beef").As16() // not in eth1's Addrs6: its prefix says
	for _, src := range [][16]byte{host6b, tmp} {
		for sport := uint16(9000); sport < 9010; sport++ {
			b := pkt6{srcMAC: mac0, dstMAC: gw6MAC0, src: src, dst: server6, proto: 17, sport: sport, dport: 53}.build(t)
			v := process(d, 0, b)
			if v.To != ToWire || v.Iface != 1 {
				t.Fatalf("per-source flow verdict %+v", v)
			}
			p := checkFrame6(t, b)
			eth := p.Layer(layers.LayerTypeEthernet).(*layers.Ethernet)
			if ip := p.Layer(layers.LayerTypeIPv6).(*layers.IPv6); addr6Of(ip.SrcIP) != src || !bytes.Equal(eth.DstMAC, gw6MAC1[:]) || !bytes.Equal(eth.SrcMAC, mac1[:]) {
				t.Fatalf("per-source flow left from %v via %v", ip.SrcIP, eth.DstMAC)
			}
			rep := pkt6{srcMAC: gw6MAC1, dstMAC: mac1, src: server6, dst: src, proto: 17, sport: 53, dport: sport}.build(t)
			orig := append([]byte(nil), rep...)
			if v := process(d, 1, rep); v.To != ToHost || v.Iface != 0 {
				t.Fatalf("reply verdict %+v", v)
			}
			// Only the MACs change: the host's router MAC and its eth0.
			copy(orig[0:6], mac0[:])
			copy(orig[6:12], gw6MAC0[:])
			if !bytes.Equal(rep, orig) {
				t.Fatalf("per-source reply changed beyond its MACs:\n got %x\nwant %x", rep, orig)
			}
		}
	}
	// A destination on an attached IPv6 network is never steered, and gets no flow.
	n := d.Flows()
	onLink := netip.MustParseAddr("2001:db8:b::9").As16()
	b := pkt6{srcMAC: mac0, dstMAC: gw6MAC0, src: host6, dst: onLink, proto: 17, sport: 1, dport: 2}.build(t)
	orig := append([]byte(nil), b...)
	if v := process(d, 0, b); v.To != ToWire || v.Iface != 0 || !bytes.Equal(b, orig) || d.Flows() != n {
		t.Fatalf("on-link IPv6 destination: verdict %+v changed=%v", v, !bytes.Equal(b, orig))
	}
}

// TestIPv6InboundAnsweredViaUplink: a connection from the wire on eth1 is tracked, and the
// host's answers leave through eth1's IPv6 router though the host routes them to eth0.
func TestIPv6InboundAnsweredViaUplink(t *testing.T) {
	d := testDatapath6(t, failover.LoadBalance, 1000, 1)
	in := pkt6{srcMAC: gw6MAC1, dstMAC: mac1, src: server6, dst: host6b, proto: 6, sport: 40000, dport: 22, syn: true}.build(t)
	orig := append([]byte(nil), in...)
	if v := process(d, 1, in); v.To != ToHost || v.Iface != 1 || !bytes.Equal(in, orig) {
		t.Fatalf("inbound SYN verdict %+v changed=%v", v, !bytes.Equal(in, orig))
	}
	if d.Flows() != 1 {
		t.Fatalf("%d flows, want the inbound one", d.Flows())
	}
	out := pkt6{srcMAC: mac0, dstMAC: gw6MAC0, src: host6b, dst: server6, proto: 6, sport: 22, dport: 40000, syn: true, ack: true}.build(t)
	v := process(d, 0, out)
	if v.To != ToWire || v.Iface != 1 {
		t.Fatalf("answer verdict %+v, want out of eth1", v)
	}
	p := checkFrame6(t, out)
	eth := p.Layer(layers.LayerTypeEthernet).(*layers.Ethernet)
	ip := p.Layer(layers.LayerTypeIPv6).(*layers.IPv6)
	if !bytes.Equal(eth.SrcMAC, mac1[:]) || !bytes.Equal(eth.DstMAC, gw6MAC1[:]) || addr6Of(ip.SrcIP) != host6b {
		t.Fatalf("answer left as %v→%v from %v", eth.SrcMAC, eth.DstMAC, ip.SrcIP)
	}
	// The client's ACK is delivered as it came.
	ack := pkt6{srcMAC: gw6MAC1, dstMAC: mac1, src: server6, dst: host6b, proto: 6, sport: 40000, dport: 22, ack: true}.build(t)
	if v := process(d, 1, ack); v.To != ToHost || v.Iface != 1 {
		t.Fatalf("client ACK verdict %+v", v)
	}
}

// TestIPv6LinkScopedUntouched: neighbour discovery, MLD, link-local and multicast traffic and
// IPv4-mapped addresses are not l2shim's: they pass as they are, both ways, with no flow.
func TestIPv6LinkScopedUntouched(t *testing.T) {
	d := testDatapath6(t, failover.LoadBalance, 1, 1000)
	ll := netip.MustParseAddr("fe80::1").As16()
	llGW := netip.MustParseAddr("fe80::ff").As16()
	allNodes := netip.MustParseAddr("ff02::1").As16()
	solicited := netip.MustParseAddr("ff02::1:ff00:2").As16()
	mldr := netip.MustParseAddr("ff02::16").As16()
	mapped := netip.MustParseAddr("::ffff:203.0.113.10").As16()
	mcastMAC := [6]byte{0x33, 0x33, 0, 0, 0, 1}
	out := []struct {
		name string
		p    pkt6
	}{
		{"neighbour solicitation", pkt6{srcMAC: mac0, dstMAC: [6]byte{0x33, 0x33, 0xff, 0, 0, 2}, src: host6, dst: solicited, proto: 58, icmpType: 135}},
		{"neighbour advertisement (global addresses)", pkt6{srcMAC: mac0, dstMAC: gw6MAC0, src: host6, dst: server6, proto: 58, icmpType: 136}},
		{"router solicitation", pkt6{srcMAC: mac0, dstMAC: [6]byte{0x33, 0x33, 0, 0, 0, 2}, src: ll, dst: netip.MustParseAddr("ff02::2").As16(), proto: 58, icmpType: 133}},
		{"MLDv2 report", pkt6{srcMAC: mac0, dstMAC: [6]byte{0x33, 0x33, 0, 0, 0, 0x16}, src: ll, dst: mldr, proto: 58, icmpType: 143}},
		{"link-local TCP SYN", pkt6{srcMAC: mac0, dstMAC: gw6MAC0, src: ll, dst: llGW, proto: 6, sport: 1000, dport: 22, syn: true}},
		{"link-local source to a global destination", pkt6{srcMAC: mac0, dstMAC: gw6MAC0, src: ll, dst: server6, proto: 17, sport: 1000, dport: 53}},
		{"multicast UDP", pkt6{srcMAC: mac0, dstMAC: mcastMAC, src: host6, dst: netip.MustParseAddr("ff0e::fb").As16(), proto: 17, sport: 5353, dport: 5353}},
		{"IPv4-mapped destination", pkt6{srcMAC: mac0, dstMAC: gw6MAC0, src: host6, dst: mapped, proto: 17, sport: 1000, dport: 53}},
	}
	for _, c := range out {
		b := c.p.build(t)
		orig := append([]byte(nil), b...)
		if v := process(d, 0, b); v.To != ToWire || v.Iface != 0 || !bytes.Equal(b, orig) {
			t.Errorf("host's %s: verdict %+v changed=%v", c.name, v, !bytes.Equal(b, orig))
		}
	}
	in := []struct {
		name string
		p    pkt6
	}{
		{"neighbour solicitation to the interface", pkt6{srcMAC: gw6MAC1, dstMAC: mac1, src: llGW, dst: host6b, proto: 58, icmpType: 135}},
		{"router advertisement to all nodes", pkt6{srcMAC: gw6MAC1, dstMAC: mcastMAC, src: llGW, dst: allNodes, proto: 58, icmpType: 134}},
		{"MLD query", pkt6{srcMAC: gw6MAC1, dstMAC: mcastMAC, src: llGW, dst: allNodes, proto: 58, icmpType: 130}},
		{"link-local TCP SYN", pkt6{srcMAC: gw6MAC1, dstMAC: mac1, src: llGW, dst: ll, proto: 6, sport: 1000, dport: 22, syn: true}},
		{"IPv4-mapped source", pkt6{srcMAC: gw6MAC1, dstMAC: mac1, src: mapped, dst: host6b, proto: 17, sport: 53, dport: 1000}},
	}
	for _, c := range in {
		b := c.p.build(t)
		orig := append([]byte(nil), b...)
		if v := process(d, 1, b); v.To != ToHost || v.Iface != 1 || !bytes.Equal(b, orig) {
			t.Errorf("wire's %s: verdict %+v changed=%v", c.name, v, !bytes.Equal(b, orig))
		}
	}
	if d.Flows() != 0 {
		t.Fatalf("%d flows for link-scoped traffic", d.Flows())
	}
}

// TestIPv6NeedsAddressAndRouter: a gateway whose interface has no IPv6 address, or whose IPv6
// router's MAC is unknown, never gets an IPv6 flow; IPv4 flows still use it.
func TestIPv6NeedsAddressAndRouter(t *testing.T) {
	noAddr := testIfaces6()
	noAddr[1].Addr6, noAddr[1].Addrs6, noAddr[1].Prefixes6 = [16]byte{}, nil, nil
	dNoAddr := New(noAddr, testPlan(failover.LoadBalance, 1, 1000), Options{Seed: 42})
	dNoAddr.ResolvedMAC6(0, gw6MAC0)
	dNoAddr.ResolvedMAC6(1, gw6MAC1)
	dNoMAC := New(testIfaces6(), testPlan(failover.LoadBalance, 1, 1000), Options{Seed: 42})
	dNoMAC.ResolvedMAC6(0, gw6MAC0)
	for name, d := range map[string]*Engine{"no IPv6 address": dNoAddr, "router MAC unknown": dNoMAC} {
		v4On1 := 0
		for sport := uint16(2000); sport < 2050; sport++ {
			b := pkt6{srcMAC: mac0, dstMAC: gw6MAC0, src: host6, dst: server6, proto: 6, sport: sport, dport: 443, syn: true}.build(t)
			if v := process(d, 0, b); v.To != ToWire || v.Iface != 0 {
				t.Fatalf("%s: IPv6 flow verdict %+v, want eth0", name, v)
			}
			if v := process(d, 0, syn(sport).build(t)); v.To == ToWire && v.Iface == 1 {
				v4On1++
			}
		}
		if v4On1 < 40 {
			t.Fatalf("%s: %d of 50 IPv4 flows on eth1 (weight 1000)", name, v4On1)
		}
	}
	// Once the router answers, IPv6 flows go there too.
	dNoMAC.ResolvedMAC6(1, gw6MAC1)
	b := pkt6{srcMAC: mac0, dstMAC: gw6MAC0, src: host6, dst: server6, proto: 6, sport: 3000, dport: 443, syn: true}.build(t)
	if v := process(dNoMAC, 0, b); v.Iface != 1 {
		t.Fatalf("after ResolvedMAC6: verdict %+v, want eth1", v)
	}
	// A link going down takes the router with it until it is reported again.
	dNoMAC.SetLink(1, false)
	dNoMAC.SetLink(1, true)
	dNoMAC.ARPAnswered(1)
	b = pkt6{srcMAC: mac0, dstMAC: gw6MAC0, src: host6, dst: server6, proto: 6, sport: 3001, dport: 443, syn: true}.build(t)
	if v := process(dNoMAC, 0, b); v.Iface != 0 {
		t.Fatalf("router not confirmed after link flap: verdict %+v, want eth0", v)
	}
	// No usable gateway at all: the host's routing, untouched.
	dNoMAC.SetLink(0, false)
	dNoMAC.SetLink(0, true)
	b = pkt6{srcMAC: mac0, dstMAC: gw6MAC0, src: host6, dst: server6, proto: 6, sport: 3002, dport: 443, syn: true}.build(t)
	orig := append([]byte(nil), b...)
	if v := process(dNoMAC, 0, b); v.To != ToWire || v.Iface != 0 || !bytes.Equal(b, orig) {
		t.Fatalf("no IPv6 gateway: verdict %+v changed=%v", v, !bytes.Equal(b, orig))
	}
}

// TestIPv6PathMTU: on a gateway whose path MTU (1400) is below the host's interface's, an
// IPv6 SYN's and SYN-ACK's MSS are clamped to 1400-60, a GSO frame's segment size shrinks,
// and an oversized frame is answered with an ICMPv6 Packet Too Big to the host.
func TestIPv6PathMTU(t *testing.T) {
	d := testDatapath6(t, failover.LoadBalance, 1, 1000)
	reconfigure(t, d, func(p *Plan) { p.Gateways[1].MTU = 1400 })
	s := pkt6{srcMAC: mac0, dstMAC: gw6MAC0, src: host6, dst: server6, proto: 6, sport: 6000, dport: 443, syn: true, mss: 1440}
	b := s.build(t)
	if v := process(d, 0, b); v.Iface != 1 {
		t.Fatalf("SYN verdict %+v", v)
	}
	checkFrame6(t, b)
	if got := mssOf6(t, b); got != 1340 {
		t.Fatalf("SYN MSS %d after clamping, want 1340", got)
	}
	sa := pkt6{srcMAC: gw6MAC1, dstMAC: mac1, src: server6, dst: host6b, proto: 6, sport: 443, dport: 6000, syn: true, ack: true, mss: 1440}.build(t)
	if v := process(d, 1, sa); v.To != ToHost || v.Iface != 0 {
		t.Fatalf("SYN-ACK verdict %+v", v)
	}
	if got := mssOf6(t, sa); got != 1340 {
		t.Fatalf("SYN-ACK MSS %d after clamping, want 1340", got)
	}

	g := s
	g.syn, g.ack, g.mss = false, true, 0
	g.payload = make([]byte, 4*1428)
	vnet := rewrite.VnetHdr{GSOType: rewrite.GSOTCPv6, GSOSize: 1428, HdrLen: 74}
	v, hdr := processVnet(d, 0, g.build(t), vnet)
	if v.To != ToWire || v.Iface != 1 || hdr.GSOSize != 1400-60 {
		t.Fatalf("GSO frame verdict %+v gso_size %d, want 1340", v, hdr.GSOSize)
	}

	big := s
	big.syn, big.ack, big.mss = false, true, 0
	big.payload = make([]byte, 1440)
	bb := big.build(t)
	v = process(d, 0, append([]byte(nil), bb...))
	if v.To != ToHost || v.Iface != 0 || v.Reason != DropTooBig {
		t.Fatalf("oversized frame verdict %+v", v)
	}
	ans := v.Frame[rewrite.VnetHdrLen:]
	if len(ans) != rewrite.PacketTooBigMaxLen {
		t.Fatalf("Packet Too Big of %d bytes, want %d (a 1280-byte packet quoting what fits)", len(ans), rewrite.PacketTooBigMaxLen)
	}
	p := gopacket.NewPacket(ans, layers.LayerTypeEthernet, gopacket.Default)
	icmp, ok := p.Layer(layers.LayerTypeICMPv6).(*layers.ICMPv6)
	if !ok || icmp.TypeCode != layers.CreateICMPv6TypeCode(2, 0) {
		t.Fatalf("answer is not a Packet Too Big: %v", p)
	}
	if mtu := uint32(icmp.Payload[0])<<24 | uint32(icmp.Payload[1])<<16 | uint32(icmp.Payload[2])<<8 | uint32(icmp.Payload[3]); mtu != 1400 {
		t.Fatalf("MTU %d, want 1400", mtu)
	}
	ip := p.Layer(layers.LayerTypeIPv6).(*layers.IPv6)
	eth := p.Layer(layers.LayerTypeEthernet).(*layers.Ethernet)
	if addr6Of(ip.DstIP) != host6 || !bytes.Equal(eth.DstMAC, mac0[:]) || !bytes.Equal(eth.SrcMAC, gw6MAC0[:]) {
		t.Fatalf("Packet Too Big to %v (%v)", ip.DstIP, eth.DstMAC)
	}
	var src [16]byte
	copy(src[:], ip.SrcIP.To16())
	if c := rewrite.Checksum(ans[rewrite.EthHdrLen+40:], rewrite.PseudoHeaderSum6(src, host6, 58, len(ans)-rewrite.EthHdrLen-40)); c != 0 {
		t.Fatalf("Packet Too Big checksum does not verify")
	}
	if !bytes.Equal(ans[rewrite.EthHdrLen+48:], bb[rewrite.EthHdrLen:rewrite.EthHdrLen+1280-48]) {
		t.Fatal("Packet Too Big does not quote the packet as the host sent it")
	}
}

func mssOf6(t *testing.T, b []byte) uint16 {
	t.Helper()
	tcp := checkFrame6(t, b).Layer(layers.LayerTypeTCP).(*layers.TCP)
	for _, o := range tcp.Options {
		if o.OptionType == layers.TCPOptionKindMSS {
			return uint16(o.OptionData[0])<<8 | uint16(o.OptionData[1])
		}
	}
	return 0
}

// TestIPv6HotPathAllocs: an established IPv6 flow, NAT66ed both ways, allocates nothing.
func TestIPv6HotPathAllocs(t *testing.T) {
	d := testDatapath6(t, failover.LoadBalance, 1, 1000)
	s := pkt6{srcMAC: mac0, dstMAC: gw6MAC0, src: host6, dst: server6, proto: 6, sport: 5555, dport: 443, syn: true}
	process(d, 0, s.build(t))
	s.syn, s.ack = false, true
	data := s.build(t)
	rep := pkt6{srcMAC: gw6MAC1, dstMAC: mac1, src: server6, dst: host6b, proto: 6, sport: 443, dport: 5555, ack: true}.build(t)
	bo, br := make([]byte, rewrite.VnetHdrLen+len(data)), make([]byte, rewrite.VnetHdrLen+len(rep))
	bOut, bIn := NewBatch(4), NewBatch(4)
	allocs := testing.AllocsPerRun(1000, func() {
		copy(bo[rewrite.VnetHdrLen:], data)
		copy(br[rewrite.VnetHdrLen:], rep)
		bOut.Reset()
		bOut.Add(bo)
		d.ProcessBatch(0, bOut, 2)
		bIn.Reset()
		bIn.Add(br)
		d.ProcessBatch(1, bIn, 2)
	})
	if bOut.Out[0].To != ToWire || bOut.Out[0].Iface != 1 || bIn.Out[0].To != ToHost || bIn.Out[0].Iface != 0 {
		t.Fatalf("frames went %+v and %+v", bOut.Out[0], bIn.Out[0])
	}
	if allocs != 0 {
		t.Fatalf("%v allocations per IPv6 frame pair, want 0", allocs)
	}
}

// icmp6Error builds an ICMPv6 error frame (type typ, code code) quoting the IPv6 packet
// inside frame q.
func icmp6Error(t testing.TB, srcMAC, dstMAC [6]byte, src, dst [16]byte, typ, code uint8, q []byte) []byte {
	t.Helper()
	eth := &layers.Ethernet{SrcMAC: net.HardwareAddr(srcMAC[:]), DstMAC: net.HardwareAddr(dstMAC[:]), EthernetType: layers.EthernetTypeIPv6}
	ip := &layers.IPv6{Version: 6, HopLimit: 64, NextHeader: layers.IPProtocolICMPv6, SrcIP: net.IP(src[:]), DstIP: net.IP(dst[:])}
	icmp := &layers.ICMPv6{TypeCode: layers.CreateICMPv6TypeCode(typ, code)}
	icmp.SetNetworkLayerForChecksum(ip)
	body := append(make([]byte, 4), q[rewrite.EthHdrLen:]...)
	if typ == 2 {
		body[2], body[3] = 0x05, 0x00 // MTU 1280
	}
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{ComputeChecksums: true, FixLengths: true}, eth, ip, icmp, gopacket.Payload(body)); err != nil {
		t.Fatal(err)
	}
	return append([]byte(nil), buf.Bytes()...)
}

// checkQuote6 checks an ICMPv6 error frame's checksum and the quoted packet's addresses, port
// and (complete quote) UDP checksum.
func checkQuote6(t *testing.T, b []byte, wantSrc, wantDst [16]byte, wantSport, wantDport uint16) {
	t.Helper()
	ipl := rewrite.EthHdrLen + 40
	var osrc, odst [16]byte
	copy(osrc[:], b[rewrite.EthHdrLen+8:])
	copy(odst[:], b[rewrite.EthHdrLen+24:])
	if rewrite.Checksum(b[ipl:], rewrite.PseudoHeaderSum6(osrc, odst, 58, len(b)-ipl)) != 0 {
		t.Fatalf("ICMPv6 checksum does not verify: %x", b)
	}
	q := b[ipl+8:]
	var qs, qd [16]byte
	copy(qs[:], q[8:24])
	copy(qd[:], q[24:40])
	sp, dp := uint16(q[40])<<8|uint16(q[41]), uint16(q[42])<<8|uint16(q[43])
	if qs != wantSrc || qd != wantDst || sp != wantSport || dp != wantDport {
		t.Fatalf("quote %v:%d → %v:%d, want %v:%d → %v:%d", netip.AddrFrom16(qs), sp, netip.AddrFrom16(qd), dp,
			netip.AddrFrom16(wantSrc), wantSport, netip.AddrFrom16(wantDst), wantDport)
	}
	if rewrite.Checksum(q[40:], rewrite.PseudoHeaderSum6(qs, qd, 17, len(q)-40)) != 0 {
		t.Fatal("quoted UDP checksum does not verify")
	}
}

// TestIPv6ICMPErrorsBothWays: an ICMPv6 error from the wire about a NAT66ed flow reaches the
// host about the packet as the host sent it; the host's own error about a reverse-translated
// packet leaves about the packet as the wire sent it.
func TestIPv6ICMPErrorsBothWays(t *testing.T) {
	d := testDatapath6(t, failover.LoadBalance, 1, 1000)
	req := pkt6{srcMAC: mac0, dstMAC: gw6MAC0, src: host6, dst: server6, proto: 17, sport: 7777, dport: 9999, payload: []byte("hello")}.build(t)
	if v := process(d, 0, req); v.To != ToWire || v.Iface != 1 {
		t.Fatalf("request verdict %+v", v)
	}
	// The server's port unreachable quotes the request as it left (from eth1's address).
	unreach := icmp6Error(t, gw6MAC1, mac1, server6, host6b, 1, 4, req)
	if v := process(d, 1, unreach); v.To != ToHost || v.Iface != 0 {
		t.Fatalf("unreachable verdict %+v", v)
	}
	checkFrame6(t, unreach)
	if got := [16]byte(unreach[rewrite.EthHdrLen+24 : rewrite.EthHdrLen+40]); got != host6 {
		t.Fatalf("unreachable delivered to %v", netip.AddrFrom16(got))
	}
	if !bytes.Equal(unreach[0:6], mac0[:]) || !bytes.Equal(unreach[6:12], gw6MAC0[:]) {
		t.Fatal("unreachable has the wrong MACs")
	}
	checkQuote6(t, unreach, host6, server6, 7777, 9999)

	// A datagram from the server reaches the host translated back; the host answers it with
	// its own unreachable, which must leave eth1 about the packet as the wire sent it.
	in := pkt6{srcMAC: gw6MAC1, dstMAC: mac1, src: server6, dst: host6b, proto: 17, sport: 9999, dport: 7777, payload: []byte("late")}.build(t)
	if v := process(d, 1, in); v.To != ToHost || v.Iface != 0 {
		t.Fatalf("datagram verdict %+v", v)
	}
	hostErr := icmp6Error(t, mac0, gw6MAC0, host6, server6, 1, 4, in)
	if v := process(d, 0, hostErr); v.To != ToWire || v.Iface != 1 {
		t.Fatalf("host's unreachable verdict %+v", v)
	}
	checkFrame6(t, hostErr)
	if got := [16]byte(hostErr[rewrite.EthHdrLen+8 : rewrite.EthHdrLen+24]); got != host6b {
		t.Fatalf("host's unreachable left from %v", netip.AddrFrom16(got))
	}
	if !bytes.Equal(hostErr[0:6], gw6MAC1[:]) || !bytes.Equal(hostErr[6:12], mac1[:]) {
		t.Fatal("host's unreachable has the wrong MACs")
	}
	checkQuote6(t, hostErr, server6, host6b, 9999, 7777)
}

// fragments6 cuts the IPv6 packet of frame b into two fragments with identification id.
func fragments6(t testing.TB, b []byte, id uint32) (first, second []byte) {
	t.Helper()
	hdr, payload := b[:rewrite.EthHdrLen+40], b[rewrite.EthHdrLen+40:]
	cut := 16 // a multiple of 8, after the UDP header
	frag := func(off int, more bool, data []byte) []byte {
		out := append([]byte(nil), hdr...)
		nh := out[rewrite.EthHdrLen+6]
		out[rewrite.EthHdrLen+6] = 44
		l := 8 + len(data)
		out[rewrite.EthHdrLen+4], out[rewrite.EthHdrLen+5] = byte(l>>8), byte(l)
		fo := uint16(off/8) << 3
		if more {
			fo |= 1
		}
		out = append(out, nh, 0, byte(fo>>8), byte(fo), byte(id>>24), byte(id>>16), byte(id>>8), byte(id))
		return append(out, data...)
	}
	return frag(0, true, payload[:cut]), frag(cut, false, payload[cut:])
}

// TestIPv6FragmentsFollowFirst: the later fragment of a NAT66ed datagram follows its first,
// matched by the fragment header's identification, both ways.
func TestIPv6FragmentsFollowFirst(t *testing.T) {
	d := testDatapath6(t, failover.LoadBalance, 1, 1000)
	b := pkt6{srcMAC: mac0, dstMAC: gw6MAC0, src: host6, dst: server6, proto: 17, sport: 8000, dport: 9999, payload: make([]byte, 40)}.build(t)
	first, second := fragments6(t, b, 0x12345678)
	if v := process(d, 0, first); v.To != ToWire || v.Iface != 1 {
		t.Fatalf("first fragment verdict %+v", v)
	}
	if v := process(d, 0, second); v.To != ToWire || v.Iface != 1 {
		t.Fatalf("second fragment verdict %+v", v)
	}
	for _, f := range [][]byte{first, second} {
		if got := [16]byte(f[rewrite.EthHdrLen+8 : rewrite.EthHdrLen+24]); got != host6b || !bytes.Equal(f[0:6], gw6MAC1[:]) {
			t.Fatalf("fragment left from %v to %x", netip.AddrFrom16(got), f[0:6])
		}
	}
	// Reassembled, the datagram's checksum holds.
	whole := append(append([]byte(nil), first[rewrite.EthHdrLen+48:]...), second[rewrite.EthHdrLen+48:]...)
	if rewrite.Checksum(whole, rewrite.PseudoHeaderSum6(host6b, server6, 17, len(whole))) != 0 {
		t.Fatal("reassembled datagram's checksum does not verify")
	}
	// The reply, fragmented too, reaches the host whole and translated back.
	r := pkt6{srcMAC: gw6MAC1, dstMAC: mac1, src: server6, dst: host6b, proto: 17, sport: 9999, dport: 8000, payload: make([]byte, 40)}.build(t)
	rf, rs := fragments6(t, r, 7)
	for _, f := range [][]byte{rf, rs} {
		if v := process(d, 1, f); v.To != ToHost || v.Iface != 0 {
			t.Fatalf("reply fragment verdict %+v", v)
		}
		if got := [16]byte(f[rewrite.EthHdrLen+24 : rewrite.EthHdrLen+40]); got != host6 {
			t.Fatalf("reply fragment to %v", netip.AddrFrom16(got))
		}
	}
	whole = append(append([]byte(nil), rf[rewrite.EthHdrLen+48:]...), rs[rewrite.EthHdrLen+48:]...)
	if rewrite.Checksum(whole, rewrite.PseudoHeaderSum6(server6, host6, 17, len(whole))) != 0 {
		t.Fatal("reassembled reply's checksum does not verify")
	}
}

// TestIPv6EvacuateAndRotate: a down gateway's IPv6 TCP flow is reset toward the host with an
// IPv6 RST the host accepts, its UDP flow moves to the other uplink usable for IPv6, NAT66
// following; an unanswered SYN repeated too often moves to the next gateway usable for IPv6.
func TestIPv6EvacuateAndRotate(t *testing.T) {
	d := testDatapath6(t, failover.LoadBalance, 1, 1000)
	tcp := pkt6{srcMAC: mac0, dstMAC: gw6MAC0, src: host6, dst: server6, proto: 6, sport: 4000, dport: 443, syn: true}.build(t)
	if v := process(d, 0, tcp); v.Iface != 1 {
		t.Fatalf("TCP verdict %+v", v)
	}
	udp := pkt6{srcMAC: mac0, dstMAC: gw6MAC0, src: host6, dst: server6, proto: 17, sport: 4001, dport: 9999}.build(t)
	if v := process(d, 0, udp); v.Iface != 1 {
		t.Fatalf("UDP verdict %+v", v)
	}
	d.SetLink(1, false)
	ev := d.Evacuate(1, 2)
	if ev.Reset != 1 || ev.Moved != 1 || len(ev.Resets) != 1 {
		t.Fatalf("evacuation %+v", ev)
	}
	rst := checkFrame6(t, ev.Resets[0].Frame)
	rip := rst.Layer(layers.LayerTypeIPv6).(*layers.IPv6)
	rt := rst.Layer(layers.LayerTypeTCP).(*layers.TCP)
	if ev.Resets[0].Iface != 0 || addr6Of(rip.SrcIP) != server6 || addr6Of(rip.DstIP) != host6 || !rt.RST || rt.DstPort != 4000 || rt.SrcPort != 443 {
		t.Fatalf("reset %v", rst)
	}
	udp = pkt6{srcMAC: mac0, dstMAC: gw6MAC0, src: host6, dst: server6, proto: 17, sport: 4001, dport: 9999}.build(t)
	if v := process(d, 0, udp); v.To != ToWire || v.Iface != 0 {
		t.Fatalf("moved UDP flow verdict %+v", v)
	}
	if ip := checkFrame6(t, udp).Layer(layers.LayerTypeIPv6).(*layers.IPv6); addr6Of(ip.SrcIP) != host6 || !bytes.Equal(udp[0:6], gw6MAC0[:]) {
		t.Fatalf("moved UDP flow left from %v", ip.SrcIP)
	}

	// Rotation: the third SYN of an unanswered connection moves to the next gateway usable
	// for IPv6, or stays when there is none (eth0's IPv6 router unknown), though eth0 could
	// take IPv4 flows.
	for _, known := range []bool{true, false} {
		d := New(testIfaces6(), testPlan(failover.LoadBalance, 1, 1000), Options{Seed: 42})
		if known {
			d.ResolvedMAC6(0, gw6MAC0)
		}
		d.ResolvedMAC6(1, gw6MAC1)
		want := []int{1, 1, 0}
		if !known {
			want = []int{1, 1, 1}
		}
		for i := range want {
			b := pkt6{srcMAC: mac0, dstMAC: gw6MAC0, src: host6, dst: server6, proto: 6, sport: 4100, dport: 443, syn: true}.build(t)
			v, _ := processVnetAt(d, 0, b, rewrite.VnetHdr{}, int64(10+i)*1e9)
			if v.To != ToWire || v.Iface != want[i] {
				t.Fatalf("router known=%v: SYN %d verdict %+v, want eth%d", known, i+1, v, want[i])
			}
			if i == 2 && known {
				ip := checkFrame6(t, b).Layer(layers.LayerTypeIPv6).(*layers.IPv6)
				if addr6Of(ip.SrcIP) != host6 || !bytes.Equal(b[0:6], gw6MAC0[:]) {
					t.Fatalf("rotated SYN left from %v to %x", ip.SrcIP, b[0:6])
				}
			}
		}
	}
}

// TestIPv6L3Uplink: a gateway behind an L3 device takes IPv6 flows with no router MAC to
// learn (the MACs the device is known by), NAT66 to its address; with the fast path on,
// confirmed IPv6 flows get kernel entries that send them there without MACs.
func TestIPv6L3Uplink(t *testing.T) {
	d := l3Datapath(t)
	ppp6 := netip.MustParseAddr("2001:db8:c::1").As16()
	d.ifaces[0].Addr6, d.ifaces[0].Addrs6, d.ifaces[0].Prefixes6 = host6, [][16]byte{host6}, []netip.Prefix{prefix6a}
	d.ifaces[1].Addr6, d.ifaces[1].Addrs6 = ppp6, [][16]byte{ppp6}
	d.ResolvedMAC6(0, gw6MAC0)
	onL3 := 0
	for sport := uint16(40000); sport < 40100; sport++ {
		b := pkt6{srcMAC: mac0, dstMAC: gw6MAC0, src: host6, dst: server6, proto: 17, sport: sport, dport: 9999}.build(t)
		v := process(d, 0, b)
		if v.To != ToWire {
			t.Fatalf("port %d: verdict %+v", sport, v)
		}
		wantSrcMAC, wantDstMAC, wantIP := mac0, gw6MAC0, host6
		if v.Iface == 1 {
			onL3++
			wantSrcMAC, wantDstMAC, wantIP = l3If, l3Gw, ppp6
		}
		ip := checkFrame6(t, b).Layer(layers.LayerTypeIPv6).(*layers.IPv6)
		if !bytes.Equal(b[6:12], wantSrcMAC[:]) || !bytes.Equal(b[0:6], wantDstMAC[:]) || addr6Of(ip.SrcIP) != wantIP {
			t.Fatalf("port %d via %d: %x→%x from %v", sport, v.Iface, b[6:12], b[0:6], ip.SrcIP)
		}
		rep := pkt6{srcMAC: wantDstMAC, dstMAC: wantSrcMAC, src: server6, dst: wantIP, proto: 17, sport: 9999, dport: sport}.build(t)
		if rv := process(d, v.Iface, rep); rv.To != ToHost || rv.Iface != 0 {
			t.Fatalf("reply verdict %+v", rv)
		}
		want := pkt6{srcMAC: gw6MAC0, dstMAC: mac0, src: server6, dst: host6, proto: 17, sport: 9999, dport: sport}.build(t)
		if !bytes.Equal(rep, want) {
			t.Fatalf("reply reaches the host as %x, want %x", rep, want)
		}
	}
	if onL3 < 20 || onL3 > 80 {
		t.Fatalf("%d of 100 IPv6 flows on ppp1", onL3)
	}
	// Each confirmed flow gets its two entries; those through ppp1 leave without MACs (ToL3),
	// NAT66ed to ppp1's address.
	ops := d.FastChanges(nil)
	if len(ops) != 200 {
		t.Fatalf("%d fast path ops for 100 confirmed IPv6 flows, want 200", len(ops))
	}
	toL3 := 0
	for _, op := range ops {
		if op.Delete || op.In {
			continue
		}
		if op.Entry.ToL3 {
			toL3++
			if !op.Entry.NAT || op.Entry.Addr != ppp6 {
				t.Fatalf("out entry through ppp1: %+v", op.Entry)
			}
		} else if op.Entry.NAT || op.Entry.DstMAC != gw6MAC0 {
			t.Fatalf("out entry through eth0: %+v", op.Entry)
		}
	}
	if toL3 != onL3 {
		t.Fatalf("%d out entries to ppp1, %d flows placed there", toL3, onL3)
	}
}

// TestIPv6LateAnswerAndAskedAddress: a late SYN-ACK for an IPv6 connection that rotated away
// is answered upstream with an IPv6 RST; a wildcard-bound server's answer from another of the
// host's IPv6 addresses leaves from the address the client asked, the way it came.
func TestIPv6LateAnswerAndAskedAddress(t *testing.T) {
	d := testDatapath6(t, failover.Failover, 1, 1)
	for i := 0; i < 3; i++ {
		b := pkt6{srcMAC: mac0, dstMAC: gw6MAC0, src: host6, dst: server6, proto: 6, sport: 8000, dport: 443, syn: true}.build(t)
		processVnetAt(d, 0, b, rewrite.VnetHdr{}, int64(i)*2e9)
	}
	if d.Counters().Load(Rotations) != 1 {
		t.Fatalf("%d rotations, want 1", d.Counters().Load(Rotations))
	}
	late := pkt6{srcMAC: gw6MAC0, dstMAC: mac0, src: server6, dst: host6, proto: 6, sport: 443, dport: 8000, syn: true, ack: true}.build(t)
	v, _ := processVnetAt(d, 0, late, rewrite.VnetHdr{}, 5e9)
	if v.To != ToWire || v.Iface != 0 || len(v.Frame) != rewrite.VnetHdrLen+rewrite.RST6Len {
		t.Fatalf("late SYN-ACK verdict %+v, want an IPv6 RST out of eth0", v)
	}
	p := checkFrame6(t, v.Frame[rewrite.VnetHdrLen:])
	rst := p.Layer(layers.LayerTypeTCP).(*layers.TCP)
	ip := p.Layer(layers.LayerTypeIPv6).(*layers.IPv6)
	if !rst.RST || rst.SrcPort != 8000 || rst.DstPort != 443 || rst.Seq != 1001 || addr6Of(ip.SrcIP) != host6 || addr6Of(ip.DstIP) != server6 {
		t.Fatalf("answer is %v, want RST 8000→443 seq 1001 from the host's address", p)
	}

	d = testDatapath6(t, failover.LoadBalance, 1000, 1)
	client := netip.MustParseAddr("2001:db8:cafe::20").As16()
	for i := 0; i < 3; i++ {
		req := pkt6{srcMAC: gw6MAC1, dstMAC: mac1, src: client, dst: host6b, proto: 17, sport: 40000, dport: 9000}.build(t)
		if v := process(d, 1, req); v.To != ToHost || v.Iface != 1 {
			t.Fatalf("request: %+v", v)
		}
		ans := pkt6{srcMAC: mac0, dstMAC: gw6MAC0, src: host6, dst: client, proto: 17, sport: 9000, dport: 40000, payload: []byte("answer")}.build(t)
		v := process(d, 0, ans)
		if v.To != ToWire || v.Iface != 1 {
			t.Fatalf("answer %d: %+v, want sent through eth1", i, v)
		}
		p := checkFrame6(t, ans)
		ip := p.Layer(layers.LayerTypeIPv6).(*layers.IPv6)
		if addr6Of(ip.SrcIP) != host6b || !bytes.Equal(ans[6:12], mac1[:]) || !bytes.Equal(ans[0:6], gw6MAC1[:]) {
			t.Fatalf("answer %d leaves from %v (%x → %x)", i, ip.SrcIP, ans[6:12], ans[0:6])
		}
	}
	if n := d.Flows(); n != 1 {
		t.Fatalf("%d flows: the answers must belong to the request's flow", n)
	}
}
