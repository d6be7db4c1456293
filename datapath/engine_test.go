package datapath

import (
	"bytes"
	"fmt"
	"math"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"

	"github.com/l2shim/l2shim/conntrack"
	"github.com/l2shim/l2shim/failover"
	"github.com/l2shim/l2shim/rewrite"
)

var (
	mac0   = [6]byte{0x02, 0, 0, 0, 0, 0x10} // host eth0
	mac1   = [6]byte{0x02, 0, 0, 0, 0, 0x11} // host eth1
	gwMAC0 = [6]byte{0x02, 0, 0, 0, 0, 0x01}
	gwMAC1 = [6]byte{0x02, 0, 0, 0, 0, 0x02}
	addr0  = [4]byte{10, 1, 0, 2}
	addr1  = [4]byte{10, 2, 0, 2}
	server = [4]byte{203, 0, 113, 10}
)

// testPlan is two gateways, isp-a on eth0 and isp-b on eth1, with weights w0 and w1.
func testPlan(mode failover.Mode, w0, w1 int) Plan {
	return Plan{
		Config: Config{Mode: mode, SourceAware: true, SynRetries: 2, Probing: true},
		Gateways: []GatewaySpec{
			{Name: "isp-a", Iface: 0, IP: [4]byte{10, 1, 0, 1}, MAC: gwMAC0, HasMAC: true, Weight: w0, On: true},
			{Name: "isp-b", Iface: 1, IP: [4]byte{10, 2, 0, 1}, MAC: gwMAC1, HasMAC: true, Weight: w1, On: true},
		},
		Timeouts: conntrack.DefaultTimeouts(),
		MaxFlows: 1 << 16,
	}
}

func testIfaces() []Iface {
	return []Iface{
		{Name: "eth0", Index: 2, MTU: 1500, MAC: mac0, Addr: addr0, Addrs: [][4]byte{addr0}, Prefixes: []netip.Prefix{netip.MustParsePrefix("10.1.0.0/24")}, Up: true},
		{Name: "eth1", Index: 3, MTU: 1500, MAC: mac1, Addr: addr1, Addrs: [][4]byte{addr1}, Prefixes: []netip.Prefix{netip.MustParsePrefix("10.2.0.0/24")}, Up: true},
	}
}

func testDatapath(t testing.TB, mode failover.Mode, w0, w1 int) *Engine {
	t.Helper()
	return New(testIfaces(), testPlan(mode, w0, w1), Options{Seed: 42})
}

// reconfigure applies a changed plan as a reload would and returns the evacuation.
func reconfigure(t testing.TB, d *Engine, edit func(p *Plan)) Evacuation {
	t.Helper()
	p := testPlan(d.cfg.Mode, d.gws[0].Weight, d.gws[1].Weight)
	p.Config = d.cfg
	for i := range p.Gateways {
		p.Gateways[i].On = d.gws[i].On
		p.Gateways[i].MTU = d.gws[i].MTU
	}
	edit(&p)
	return d.Reconfigure(p, 1)
}

type pkt struct {
	srcMAC, dstMAC [6]byte
	src, dst       [4]byte
	proto          uint8
	sport, dport   uint16
	syn, ack, rst  bool
	fin            bool
	seq, ackNum    uint32 // 0: 1000 and 1001
	wscale         int8   // window scale option on a SYN; 0: none
	icmpType       uint8
	mss            uint16
	df             bool
	payload        []byte
}

func (p pkt) build(t testing.TB) []byte {
	t.Helper()
	eth := &layers.Ethernet{SrcMAC: net.HardwareAddr(p.srcMAC[:]), DstMAC: net.HardwareAddr(p.dstMAC[:]), EthernetType: layers.EthernetTypeIPv4}
	ip := &layers.IPv4{Version: 4, IHL: 5, TTL: 64, Id: 7, SrcIP: net.IP(p.src[:]), DstIP: net.IP(p.dst[:])}
	if p.df {
		ip.Flags = layers.IPv4DontFragment
	}
	var l4 []gopacket.SerializableLayer
	switch p.proto {
	case 6:
		ip.Protocol = layers.IPProtocolTCP
		tcp := &layers.TCP{SrcPort: layers.TCPPort(p.sport), DstPort: layers.TCPPort(p.dport), SYN: p.syn, ACK: p.ack, RST: p.rst, FIN: p.fin, Seq: 1000, Window: 65535}
		if p.seq != 0 {
			tcp.Seq = p.seq
		}
		if p.ack {
			tcp.Ack = 1001
			if p.ackNum != 0 {
				tcp.Ack = p.ackNum
			}
		}
		if p.wscale > 0 {
			tcp.Options = append(tcp.Options, layers.TCPOption{OptionType: layers.TCPOptionKindWindowScale, OptionLength: 3, OptionData: []byte{byte(p.wscale)}})
		}
		if p.mss != 0 {
			tcp.Options = []layers.TCPOption{{OptionType: layers.TCPOptionKindMSS, OptionLength: 4, OptionData: []byte{byte(p.mss >> 8), byte(p.mss)}}}
		}
		tcp.SetNetworkLayerForChecksum(ip)
		l4 = append(l4, tcp)
	case 17:
		ip.Protocol = layers.IPProtocolUDP
		udp := &layers.UDP{SrcPort: layers.UDPPort(p.sport), DstPort: layers.UDPPort(p.dport)}
		udp.SetNetworkLayerForChecksum(ip)
		l4 = append(l4, udp)
	case 1:
		ip.Protocol = layers.IPProtocolICMPv4
		l4 = append(l4, &layers.ICMPv4{TypeCode: layers.CreateICMPv4TypeCode(p.icmpType, 0), Id: p.sport, Seq: 1})
	}
	buf := gopacket.NewSerializeBuffer()
	all := append([]gopacket.SerializableLayer{eth, ip}, l4...)
	all = append(all, gopacket.Payload(p.payload))
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{ComputeChecksums: true, FixLengths: true}, all...); err != nil {
		t.Fatal(err)
	}
	return append([]byte(nil), buf.Bytes()...)
}

// checkFrame decodes b and checks that its checksums match a full recompute.
func checkFrame(t *testing.T, b []byte) gopacket.Packet {
	t.Helper()
	p := gopacket.NewPacket(b, layers.LayerTypeEthernet, gopacket.Default)
	if el := p.ErrorLayer(); el != nil {
		t.Fatalf("decode: %v", el.Error())
	}
	ip := p.Layer(layers.LayerTypeIPv4).(*layers.IPv4)
	again := gopacket.NewSerializeBuffer()
	var ls []gopacket.SerializableLayer
	for _, l := range p.Layers() {
		if sl, ok := l.(gopacket.SerializableLayer); ok {
			if tcp, ok := l.(*layers.TCP); ok {
				tcp.SetNetworkLayerForChecksum(ip)
			}
			if udp, ok := l.(*layers.UDP); ok {
				udp.SetNetworkLayerForChecksum(ip)
			}
			ls = append(ls, sl)
		}
	}
	if err := gopacket.SerializeLayers(again, gopacket.SerializeOptions{ComputeChecksums: true}, ls...); err != nil {
		t.Fatal(err)
	}
	n := min(len(again.Bytes()), len(b))
	if n < 34 || !bytes.Equal(again.Bytes()[:n], b[:n]) {
		t.Fatalf("checksums differ from a full recompute:\n got %x\nwant %x", b, again.Bytes())
	}
	return p
}

func process(d *Engine, in int, b []byte) Output {
	v, _ := processVnet(d, in, b, rewrite.VnetHdr{})
	return v
}

// processVnet runs one frame with a virtio-net header through ProcessBatch and returns where
// it went and the header as the engine left it. The frame as sent (rewritten, or an answer
// that replaced it) is copied back into b (up to b's length) and stays in the output.
func processVnet(d *Engine, in int, b []byte, vnet rewrite.VnetHdr) (Output, rewrite.VnetHdr) {
	return processVnetAt(d, in, b, vnet, 1)
}

func processVnetAt(d *Engine, in int, b []byte, vnet rewrite.VnetHdr, now int64) (Output, rewrite.VnetHdr) {
	pkt := make([]byte, rewrite.VnetHdrLen+len(b))
	copy(pkt[rewrite.VnetHdrLen:], b)
	vnet.Encode(pkt)
	batch := NewBatch(1)
	batch.Add(pkt)
	d.ProcessBatch(in, batch, now)
	if len(batch.Out) != 1 {
		panic(fmt.Sprintf("one frame in, %d out", len(batch.Out)))
	}
	out := batch.Out[0]
	var hdr rewrite.VnetHdr
	if out.Frame != nil {
		copy(b, out.Frame[rewrite.VnetHdrLen:])
		hdr.Decode(out.Frame)
	}
	return out, hdr
}

func syn(sport uint16) pkt {
	return pkt{srcMAC: mac0, dstMAC: gwMAC0, src: addr0, dst: server, proto: 6, sport: sport, dport: 80, syn: true, payload: []byte("x")}
}

// TestOutboundSpreadAndNAT places many new flows and checks both uplinks get some, the NATed
// ones leave eth1 with its address and MACs, and replies come back to the host on eth0
// exactly as the host expects them.
func TestOutboundSpreadAndNAT(t *testing.T) {
	d := testDatapath(t, failover.LoadBalance, 1, 1)
	var per [2]int
	for sport := uint16(40000); sport < 40200; sport++ {
		b := syn(sport).build(t)
		v := process(d, 0, b)
		if v.To != ToWire {
			t.Fatalf("port %d: verdict %+v", sport, v)
		}
		per[v.Iface]++
		p := checkFrame(t, b)
		eth := p.Layer(layers.LayerTypeEthernet).(*layers.Ethernet)
		ip := p.Layer(layers.LayerTypeIPv4).(*layers.IPv4)
		tcp := p.Layer(layers.LayerTypeTCP).(*layers.TCP)
		wantSrcMAC, wantDstMAC, wantIP := mac0, gwMAC0, addr0
		if v.Iface == 1 {
			wantSrcMAC, wantDstMAC, wantIP = mac1, gwMAC1, addr1
		}
		if !bytes.Equal(eth.SrcMAC, wantSrcMAC[:]) || !bytes.Equal(eth.DstMAC, wantDstMAC[:]) || !bytes.Equal(ip.SrcIP.To4(), wantIP[:]) {
			t.Fatalf("port %d via %d: got %v→%v src %v", sport, v.Iface, eth.SrcMAC, eth.DstMAC, ip.SrcIP)
		}
		if uint16(tcp.SrcPort) != sport {
			t.Fatalf("port changed without a collision: %d → %d", sport, tcp.SrcPort)
		}
		// The SYN-ACK comes back through the same uplink, addressed as it left.
		reply := pkt{srcMAC: wantDstMAC, dstMAC: wantSrcMAC, src: server, dst: wantIP, proto: 6, sport: 80, dport: sport, syn: true, ack: true}.build(t)
		rv := process(d, v.Iface, reply)
		if rv.To != ToHost || rv.Iface != 0 {
			t.Fatalf("reply verdict %+v", rv)
		}
		rp := checkFrame(t, reply)
		reth := rp.Layer(layers.LayerTypeEthernet).(*layers.Ethernet)
		rip := rp.Layer(layers.LayerTypeIPv4).(*layers.IPv4)
		if !bytes.Equal(reth.DstMAC, mac0[:]) || !bytes.Equal(reth.SrcMAC, gwMAC0[:]) || !bytes.Equal(rip.DstIP.To4(), addr0[:]) {
			t.Fatalf("reply reaches the host as %v→%v dst %v", reth.SrcMAC, reth.DstMAC, rip.DstIP)
		}
	}
	if per[0] < 60 || per[1] < 60 {
		t.Fatalf("200 flows split %v; want both uplinks used about evenly", per)
	}
	if got := d.Flows(); got != 200 {
		t.Fatalf("%d flows tracked, want 200", got)
	}
}

// TestFlowKeepsGateway checks that a flow's later frames follow its first, even after its
// gateway's weight changes or another gateway stops being usable.
func TestFlowKeepsGateway(t *testing.T) {
	d := testDatapath(t, failover.LoadBalance, 1, 1)
	first := map[uint16]int{}
	for sport := uint16(1000); sport < 1100; sport++ {
		first[sport] = process(d, 0, syn(sport).build(t)).Iface
	}
	reconfigure(t, d, func(p *Plan) { p.Gateways[0].Weight = 50 })
	for sport, want := range first {
		p := syn(sport)
		p.syn, p.ack = false, true
		if v := process(d, 0, p.build(t)); v.Iface != want {
			t.Fatalf("flow %d moved from %d to %d", sport, want, v.Iface)
		}
	}
}

// TestWeights checks new flows spread in proportion to the weights.
func TestWeights(t *testing.T) {
	d := testDatapath(t, failover.LoadBalance, 3, 1)
	var per [2]int
	const n = 8000
	for i := 0; i < n; i++ {
		p := syn(uint16(10000 + i))
		p.proto = 17
		per[process(d, 0, p.build(t)).Iface]++
	}
	share := float64(per[0]) / n
	if math.Abs(share-0.75) > 0.03 {
		t.Fatalf("weight 3:1 gave shares %v (%.3f), want 0.75±0.03", per, share)
	}
}

func TestFailoverModeUsesFirstUsable(t *testing.T) {
	d := testDatapath(t, failover.Failover, 1, 1)
	for sport := uint16(2000); sport < 2050; sport++ {
		if v := process(d, 0, syn(sport).build(t)); v.Iface != 0 {
			t.Fatalf("failover mode placed a flow on %d", v.Iface)
		}
	}
	d.SetLink(0, false)
	d.SetLink(0, true) // up again, but the gateway has not answered ARP since
	for sport := uint16(3000); sport < 3050; sport++ {
		if v := process(d, 0, syn(sport).build(t)); v.Iface != 1 {
			t.Fatalf("with the first gateway dead a flow went to %d", v.Iface)
		}
	}
}

// TestPassUntouched lists frames l2shim must leave exactly as the host sent them.
func TestPassUntouched(t *testing.T) {
	d := testDatapath(t, failover.LoadBalance, 0, 1) // every placed flow would go to eth1
	reconfigure(t, d, func(p *Plan) { p.Gateways[0].Weight = 1; p.Gateways[1].Weight = 1000 })
	cases := map[string]pkt{
		"on-link destination (the gateway itself)":        {srcMAC: mac0, dstMAC: gwMAC0, src: addr0, dst: [4]byte{10, 1, 0, 1}, proto: 17, sport: 5353, dport: 53},
		"on-link destination on the other uplink":         {srcMAC: mac0, dstMAC: gwMAC0, src: addr0, dst: [4]byte{10, 2, 0, 9}, proto: 6, sport: 5353, dport: 53, syn: true},
		"TCP segment of a connection older than the shim": {srcMAC: mac0, dstMAC: gwMAC0, src: addr0, dst: server, proto: 6, sport: 5000, dport: 80, ack: true},
		"ICMP that is not an echo request":                {srcMAC: mac0, dstMAC: gwMAC0, src: addr0, dst: server, proto: 1, icmpType: 13},
	}
	for name, p := range cases {
		b := p.build(t)
		orig := append([]byte(nil), b...)
		v := process(d, 0, b)
		if v.To != ToWire || v.Iface != 0 || !bytes.Equal(b, orig) {
			t.Errorf("%s: verdict %+v, changed=%v", name, v, !bytes.Equal(b, orig))
		}
	}
}

// TestInboundFlowRepliesNotPlaced checks that the host's answers to a connection that came in
// on eth0 stay on eth0 un-NATed, though the balancer would have placed a new flow on eth1.
func TestInboundFlowRepliesNotPlaced(t *testing.T) {
	d := testDatapath(t, failover.LoadBalance, 1, 1000)
	in := pkt{srcMAC: gwMAC0, dstMAC: mac0, src: server, dst: addr0, proto: 17, sport: 5000, dport: 53}.build(t)
	if v := process(d, 0, in); v.To != ToHost || v.Iface != 0 {
		t.Fatalf("inbound verdict %+v", v)
	}
	out := pkt{srcMAC: mac0, dstMAC: gwMAC0, src: addr0, dst: server, proto: 17, sport: 53, dport: 5000}.build(t)
	orig := append([]byte(nil), out...)
	if v := process(d, 0, out); v.To != ToWire || v.Iface != 0 || !bytes.Equal(out, orig) {
		t.Fatalf("reply verdict %+v changed=%v", v, !bytes.Equal(out, orig))
	}
}

// TestMalformedCountedAndHarmless feeds broken frames between the frames of a live flow.
func TestMalformedCountedAndHarmless(t *testing.T) {
	d := testDatapath(t, failover.LoadBalance, 1, 1)
	good := syn(4242).build(t)
	want := process(d, 0, good)
	bad := syn(4243).build(t)
	for _, b := range [][]byte{bad[:20], bad[:34], append(append([]byte(nil), bad[:14]...), 0x45, 0, 0xff, 0xff)} {
		if v := process(d, 0, append([]byte(nil), b...)); v.To != Drop || v.Reason != DropMalformed {
			t.Fatalf("malformed frame verdict %+v", v)
		}
	}
	if got := d.Counters().Dropped(DropMalformed); got != 3 {
		t.Fatalf("malformed drops counted %d, want 3", got)
	}
	if d.Flows() != 1 {
		t.Fatalf("table has %d flows, want 1", d.Flows())
	}
	p := syn(4242)
	p.syn, p.ack = false, true
	if v := process(d, 0, p.build(t)); v.To != want.To || v.Iface != want.Iface {
		t.Fatalf("live flow changed after malformed frames: %+v vs %+v", v, want)
	}
}

func TestICMPEchoNAT(t *testing.T) {
	d := testDatapath(t, failover.LoadBalance, 1, 1000)
	req := pkt{srcMAC: mac0, dstMAC: gwMAC0, src: addr0, dst: server, proto: 1, icmpType: 8, sport: 77}.build(t)
	v := process(d, 0, req)
	if v.To != ToWire || v.Iface != 1 {
		t.Fatalf("echo request verdict %+v", v)
	}
	checkFrame(t, req)
	ip := gopacket.NewPacket(req, layers.LayerTypeEthernet, gopacket.Default).Layer(layers.LayerTypeIPv4).(*layers.IPv4)
	if !bytes.Equal(ip.SrcIP.To4(), addr1[:]) {
		t.Fatalf("echo request left with source %v", ip.SrcIP)
	}
	rep := pkt{srcMAC: gwMAC1, dstMAC: mac1, src: server, dst: addr1, proto: 1, icmpType: 0, sport: 77}.build(t)
	if v := process(d, 1, rep); v.To != ToHost || v.Iface != 0 {
		t.Fatalf("echo reply verdict %+v", v)
	}
	checkFrame(t, rep)
}

// TestNATPortCollision forces two host flows from different addresses onto one external
// address and port; the second must be remapped and mapped back.
func TestNATPortCollision(t *testing.T) {
	d := testDatapath(t, failover.LoadBalance, 1, 1000)
	// A host flow that already uses eth1's address and port 7000 to the server.
	own := pkt{srcMAC: mac1, dstMAC: gwMAC1, src: addr1, dst: server, proto: 17, sport: 7000, dport: 53}.build(t)
	if v := process(d, 1, own); v.Iface != 1 {
		t.Fatalf("own flow verdict %+v", v)
	}
	// The same port from eth0's address, placed on eth1: NAT must pick another port.
	b := pkt{srcMAC: mac0, dstMAC: gwMAC0, src: addr0, dst: server, proto: 17, sport: 7000, dport: 53}.build(t)
	if v := process(d, 0, b); v.Iface != 1 {
		t.Fatalf("second flow verdict %+v", v)
	}
	udp := gopacket.NewPacket(b, layers.LayerTypeEthernet, gopacket.Default).Layer(layers.LayerTypeUDP).(*layers.UDP)
	if udp.SrcPort == 7000 || udp.SrcPort < natPortLo {
		t.Fatalf("colliding flow kept or got a bad port: %d", udp.SrcPort)
	}
	checkFrame(t, b)
	rep := pkt{srcMAC: gwMAC1, dstMAC: mac1, src: server, dst: addr1, proto: 17, sport: 53, dport: uint16(udp.SrcPort)}.build(t)
	if v := process(d, 1, rep); v.To != ToHost || v.Iface != 0 {
		t.Fatalf("reply verdict %+v", v)
	}
	ru := gopacket.NewPacket(rep, layers.LayerTypeEthernet, gopacket.Default).Layer(layers.LayerTypeUDP).(*layers.UDP)
	if ru.DstPort != 7000 {
		t.Fatalf("reply mapped back to port %d", ru.DstPort)
	}
}

// TestHotPathAllocs proves parse → conntrack → decide → rewrite allocates nothing per frame.
func TestHotPathAllocs(t *testing.T) {
	d := testDatapath(t, failover.LoadBalance, 1, 1000)
	out := syn(5555).build(t)
	process(d, 0, append([]byte(nil), out...))
	p := syn(5555)
	p.syn, p.ack = false, true
	data := p.build(t)
	rep := pkt{srcMAC: gwMAC1, dstMAC: mac1, src: server, dst: addr1, proto: 6, sport: 80, dport: 5555, ack: true}.build(t)
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
	if bOut.Out[0].To != ToWire || bIn.Out[0].To != ToHost {
		t.Fatalf("frames went %+v and %+v", bOut.Out[0].To, bIn.Out[0].To)
	}
	if allocs != 0 {
		t.Fatalf("%v allocations per frame pair, want 0", allocs)
	}
}

func BenchmarkDatapathEstablished(b *testing.B) {
	d := testDatapath(b, failover.LoadBalance, 1, 1000)
	process(d, 0, syn(5555).build(b))
	p := syn(5555)
	p.syn, p.ack = false, true
	p.payload = make([]byte, 1400)
	data := p.build(b)
	buf := make([]byte, rewrite.VnetHdrLen+len(data))
	copy(buf[rewrite.VnetHdrLen:], data)
	batch := NewBatch(1)
	b.ReportAllocs()
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		copy(buf[rewrite.VnetHdrLen:][:60], data[:60])
		batch.Reset()
		batch.Add(buf)
		d.ProcessBatch(0, batch, 2)
	}
}

// FuzzDatapath drives arbitrary frames, in both directions, through one datapath: it must
// never panic and the table must stay consistent (every flow findable by both keys).
func FuzzDatapath(f *testing.F) {
	vn := func(b []byte) []byte { return append(make([]byte, rewrite.VnetHdrLen), b...) }
	f.Add(vn(syn(1).build(f)), uint8(0))
	f.Add(vn(pkt{srcMAC: gwMAC1, dstMAC: mac1, src: server, dst: addr1, proto: 17, sport: 53, dport: 7000}.build(f)), uint8(1))
	f.Add(vn(pkt{srcMAC: mac0, dstMAC: gwMAC0, src: addr0, dst: server, proto: 1, icmpType: 8, sport: 3}.build(f)), uint8(0))
	// IPv6: a TCP SYN, a UDP reply, an ICMPv6 echo request, neighbour discovery, a fragment
	// and an ICMPv6 error.
	s6 := pkt6{srcMAC: mac0, dstMAC: gw6MAC0, src: host6, dst: server6, proto: 6, sport: 1, dport: 443, syn: true, mss: 1460}.build(f)
	f.Add(vn(s6), uint8(0))
	u6 := pkt6{srcMAC: gw6MAC1, dstMAC: mac1, src: server6, dst: host6b, proto: 17, sport: 53, dport: 7000, payload: []byte("answer")}.build(f)
	f.Add(vn(u6), uint8(1))
	f.Add(vn(pkt6{srcMAC: mac0, dstMAC: gw6MAC0, src: host6, dst: server6, proto: 58, icmpType: 128, sport: 3}.build(f)), uint8(0))
	f.Add(vn(pkt6{srcMAC: mac0, dstMAC: [6]byte{0x33, 0x33, 0xff, 0, 0, 2}, src: host6, dst: netip.MustParseAddr("ff02::1:ff00:2").As16(), proto: 58, icmpType: 135}.build(f)), uint8(0))
	first, second := fragments6(f, pkt6{srcMAC: mac0, dstMAC: gw6MAC0, src: host6, dst: server6, proto: 17, sport: 9, dport: 9, payload: make([]byte, 40)}.build(f), 1)
	f.Add(vn(first), uint8(0))
	f.Add(vn(second), uint8(0))
	f.Add(vn(icmp6Error(f, gw6MAC1, mac1, server6, host6b, 1, 4, u6)), uint8(1))
	d := testDatapath6(f, failover.LoadBalance, 1, 1)
	batch := NewBatch(1)
	f.Fuzz(func(t *testing.T, b []byte, in uint8) {
		batch.Reset()
		batch.Add(b)
		d.ProcessBatch(int(in%2), batch, 3)
		d.mu.Lock()
		defer d.mu.Unlock()
		d.table.Range(func(fl *conntrack.Flow) bool {
			if d.table.LookupOrig(fl.Orig) != fl || d.table.LookupReply(fl.Reply) != fl {
				t.Fatalf("flow %+v not findable by both keys", fl)
			}
			if conntrack.Is4(fl.Orig.Src) != conntrack.Is4(fl.Orig.Dst) || conntrack.Is4(fl.Reply.Src) != conntrack.Is4(fl.Orig.Src) || conntrack.Is4(fl.Reply.Dst) != conntrack.Is4(fl.Orig.Src) {
				t.Fatalf("flow %+v mixes IPv4 and IPv6 addresses", fl)
			}
			if out, in, ok := d.fastEntries(fl); ok && (out.NAT && conntrack.Is4(out.Addr) != fl.Orig.Is4() || in.NAT && conntrack.Is4(in.Addr) != fl.Orig.Is4()) {
				t.Fatalf("flow %+v: fast path entries %+v, %+v translate to another family", fl, out, in)
			}
			return true
		})
	})
}

// TestHostFlowAfterNATFlowIsRemapped is the other order of TestNATPortCollision: a NATed flow
// holds eth1's address and port 7100 first, then the host itself opens a flow from that address
// and port; the host's flow must be remapped so replies reach the right one.
func TestHostFlowAfterNATFlowIsRemapped(t *testing.T) {
	d := testDatapath(t, failover.LoadBalance, 1, 1000)
	nat := pkt{srcMAC: mac0, dstMAC: gwMAC0, src: addr0, dst: server, proto: 17, sport: 7100, dport: 53}.build(t)
	if v := process(d, 0, nat); v.Iface != 1 {
		t.Fatalf("first flow verdict %+v", v)
	}
	own := pkt{srcMAC: mac1, dstMAC: gwMAC1, src: addr1, dst: server, proto: 17, sport: 7100, dport: 53}.build(t)
	if v := process(d, 1, own); v.To != ToWire || v.Iface != 1 {
		t.Fatalf("host flow verdict %+v", v)
	}
	udp := gopacket.NewPacket(own, layers.LayerTypeEthernet, gopacket.Default).Layer(layers.LayerTypeUDP).(*layers.UDP)
	if udp.SrcPort == 7100 {
		t.Fatal("second flow on the same wire tuple was not remapped")
	}
	checkFrame(t, own)
	for _, c := range []struct {
		port     uint16
		wantHost [4]byte
	}{{7100, addr0}, {uint16(udp.SrcPort), addr1}} {
		rep := pkt{srcMAC: gwMAC1, dstMAC: mac1, src: server, dst: addr1, proto: 17, sport: 53, dport: c.port}.build(t)
		process(d, 1, rep)
		p := gopacket.NewPacket(rep, layers.LayerTypeEthernet, gopacket.Default)
		ip := p.Layer(layers.LayerTypeIPv4).(*layers.IPv4)
		ru := p.Layer(layers.LayerTypeUDP).(*layers.UDP)
		if !bytes.Equal(ip.DstIP.To4(), c.wantHost[:]) || ru.DstPort != 7100 {
			t.Fatalf("reply to wire port %d reached %v:%d", c.port, ip.DstIP, ru.DstPort)
		}
	}
}

// TestProbeRepliesConsumed checks the datapath keeps the replies to its own probes from the
// host, records them, and never gives a host ping the probe's identifier on the wire.
func TestProbeRepliesConsumed(t *testing.T) {
	d := testDatapath(t, failover.LoadBalance, 1, 1000)
	id := d.AddProbe(1, server)
	d.StartProbeRound([]ProbeID{id})
	buf := make([]byte, ProbeFrameLen)
	var n int
	for seq := 1; seq <= 9; seq++ {
		n, _ = d.ProbeFrame(id, buf, 1)
	}
	probe := checkFrame(t, buf[rewrite.VnetHdrLen:n])
	if echo := probe.Layer(layers.LayerTypeICMPv4).(*layers.ICMPv4); echo.Seq != 9 {
		t.Fatalf("ninth probe has sequence %d", echo.Seq)
	}
	pt := d.probeList[id]
	// The target answers: same id and sequence, addresses swapped.
	rep := pkt{srcMAC: gwMAC1, dstMAC: mac1, src: server, dst: addr1, proto: 1, icmpType: 0, sport: pt.id}.build(t)
	// pkt.build uses sequence 1; put the probe's.
	rep[14+20+6], rep[14+20+7] = 0, 9
	rep[14+20+2], rep[14+20+3] = 0, 0
	c := rewrite.Checksum(rep[14+20:], 0)
	rep[14+20+2], rep[14+20+3] = byte(c>>8), byte(c)
	if v, _ := processVnetAt(d, 1, rep, rewrite.VnetHdr{}, 1+int64(time.Millisecond)); v.To != Consumed {
		t.Fatalf("probe reply verdict %+v", v)
	}
	replied, rtt := make([]bool, 1), make([]time.Duration, 1)
	if !d.ProbeResults([]ProbeID{id}, replied, rtt) || !replied[0] || rtt[0] != time.Millisecond {
		t.Fatalf("probe reply not recorded: replied %v rtt %v, want true and 1ms", replied, rtt)
	}
	// A host ping to the same target with the same identifier is remapped on the wire.
	req := pkt{srcMAC: mac0, dstMAC: gwMAC0, src: addr0, dst: server, proto: 1, icmpType: 8, sport: pt.id}.build(t)
	if v := process(d, 0, req); v.Iface != 1 {
		t.Fatalf("host ping verdict %+v", v)
	}
	icmp := gopacket.NewPacket(req, layers.LayerTypeEthernet, gopacket.Default).Layer(layers.LayerTypeICMPv4).(*layers.ICMPv4)
	if icmp.Id == pt.id {
		t.Fatal("host ping left with the probe's identifier")
	}
}

// TestSourceAware: a connection that arrived on eth1 through gw1 is answered through gw1,
// without NAT, though the host routes the answer to gw0 on eth0. Without source_aware the
// answer leaves as the host sent it.
func TestSourceAware(t *testing.T) {
	for _, aware := range []bool{true, false} {
		d := testDatapath(t, failover.LoadBalance, 1000, 1)
		d.cfg.SourceAware = aware
		in := pkt{srcMAC: gwMAC1, dstMAC: mac1, src: server, dst: addr1, proto: 6, sport: 40000, dport: 22, syn: true}.build(t)
		if v := process(d, 1, in); v.To != ToHost || v.Iface != 1 {
			t.Fatalf("aware=%v: inbound SYN verdict %+v", aware, v)
		}
		out := pkt{srcMAC: mac0, dstMAC: gwMAC0, src: addr1, dst: server, proto: 6, sport: 22, dport: 40000, syn: true, ack: true}.build(t)
		orig := append([]byte(nil), out...)
		v := process(d, 0, out)
		if !aware {
			if v.To != ToWire || v.Iface != 0 || !bytes.Equal(out, orig) {
				t.Fatalf("source_aware off: verdict %+v changed=%v", v, !bytes.Equal(out, orig))
			}
			continue
		}
		if v.To != ToWire || v.Iface != 1 {
			t.Fatalf("source-aware reply verdict %+v, want out of eth1", v)
		}
		p := checkFrame(t, out)
		eth := p.Layer(layers.LayerTypeEthernet).(*layers.Ethernet)
		ip := p.Layer(layers.LayerTypeIPv4).(*layers.IPv4)
		if !bytes.Equal(eth.SrcMAC, mac1[:]) || !bytes.Equal(eth.DstMAC, gwMAC1[:]) || !bytes.Equal(ip.SrcIP.To4(), addr1[:]) {
			t.Fatalf("reply left as %v→%v from %v", eth.SrcMAC, eth.DstMAC, ip.SrcIP)
		}
	}
}

// TestPerSource: a new flow the host sends on eth0 with eth1's address (a bound socket) leaves
// through eth1's gateway, un-NATed, whatever the weights say.
func TestPerSource(t *testing.T) {
	d := testDatapath(t, failover.LoadBalance, 1000, 1)
	for sport := uint16(9000); sport < 9020; sport++ {
		b := pkt{srcMAC: mac0, dstMAC: gwMAC0, src: addr1, dst: server, proto: 17, sport: sport, dport: 53}.build(t)
		v := process(d, 0, b)
		if v.To != ToWire || v.Iface != 1 {
			t.Fatalf("bound-socket flow verdict %+v", v)
		}
		ip := checkFrame(t, b).Layer(layers.LayerTypeIPv4).(*layers.IPv4)
		if !bytes.Equal(ip.SrcIP.To4(), addr1[:]) {
			t.Fatalf("bound-socket flow NATed to %v", ip.SrcIP)
		}
		// Its replies arrive on eth1 and go to the host on eth0, where it sent from.
		rep := pkt{srcMAC: gwMAC1, dstMAC: mac1, src: server, dst: addr1, proto: 17, sport: 53, dport: sport}.build(t)
		if v := process(d, 1, rep); v.To != ToHost || v.Iface != 0 {
			t.Fatalf("reply verdict %+v", v)
		}
	}
}

func mssOf(t *testing.T, b []byte) uint16 {
	t.Helper()
	tcp := checkFrame(t, b).Layer(layers.LayerTypeTCP).(*layers.TCP)
	for _, o := range tcp.Options {
		if o.OptionType == layers.TCPOptionKindMSS {
			return uint16(o.OptionData[0])<<8 | uint16(o.OptionData[1])
		}
	}
	return 0
}

// TestPathMTU places flows on a gateway whose path MTU (1400) is below the host interface's
// (1500): SYN and SYN-ACK MSS are clamped, GSO frames get a smaller segment size, an oversized
// DF frame is answered with an ICMP fragmentation-needed to the host. Flows on eth0 are
// untouched.
func TestPathMTU(t *testing.T) {
	d := testDatapath(t, failover.LoadBalance, 1, 1000)
	reconfigure(t, d, func(p *Plan) { p.Gateways[1].MTU = 1400 })
	s := syn(6000)
	s.mss = 1460
	b := s.build(t)
	if v := process(d, 0, b); v.Iface != 1 {
		t.Fatalf("SYN verdict %+v", v)
	}
	if got := mssOf(t, b); got != 1360 {
		t.Fatalf("SYN MSS %d after clamping, want 1360", got)
	}
	sa := pkt{srcMAC: gwMAC1, dstMAC: mac1, src: server, dst: addr1, proto: 6, sport: 80, dport: 6000, syn: true, ack: true, mss: 1460}.build(t)
	process(d, 1, sa)
	if got := mssOf(t, sa); got != 1360 {
		t.Fatalf("SYN-ACK MSS %d after clamping, want 1360", got)
	}

	// A GSO super-frame of the same flow: gso_size must shrink to fit 1400.
	g := syn(6000)
	g.syn, g.ack = false, true
	g.payload = make([]byte, 4*1448)
	gb := g.build(t)
	vnet := rewrite.VnetHdr{GSOType: rewrite.GSOTCPv4, GSOSize: 1448, HdrLen: 54}
	v, out := processVnet(d, 0, gb, vnet)
	if v.To != ToWire || v.Iface != 1 || out.GSOSize != 1400-40 {
		t.Fatalf("GSO frame verdict %+v gso_size %d, want 1360", v, out.GSOSize)
	}

	// A full-size DF frame without GSO: answered with ICMP fragmentation-needed, not sent.
	big := syn(6000)
	big.syn, big.ack, big.df = false, true, true
	big.payload = make([]byte, 1460)
	bb := big.build(t)
	v = process(d, 0, bb)
	if v.To != ToHost || v.Iface != 0 || v.Reason != DropTooBig || len(v.Frame) >= len(bb) {
		t.Fatalf("oversized DF frame verdict %+v", v)
	}
	p := gopacket.NewPacket(v.Frame[rewrite.VnetHdrLen:], layers.LayerTypeEthernet, gopacket.Default)
	icmp, ok := p.Layer(layers.LayerTypeICMPv4).(*layers.ICMPv4)
	if !ok || icmp.TypeCode != layers.CreateICMPv4TypeCode(3, 4) {
		t.Fatalf("answer is not an ICMP fragmentation-needed: %v", p)
	}
	if mtu := uint16(icmp.Seq); mtu != 1400 {
		t.Fatalf("next-hop MTU %d, want 1400", mtu)
	}
	eth := p.Layer(layers.LayerTypeEthernet).(*layers.Ethernet)
	if !bytes.Equal(eth.DstMAC, mac0[:]) {
		t.Fatalf("ICMP addressed to %v, want the host's eth0", eth.DstMAC)
	}

	// A flow on eth0 (MTU 1500 all the way) keeps its MSS.
	reconfigure(t, d, func(p *Plan) { p.Gateways[1].On = false })
	s0 := syn(6001)
	s0.mss = 1460
	b0 := s0.build(t)
	if v := process(d, 0, b0); v.Iface != 0 || mssOf(t, b0) != 1460 {
		t.Fatalf("eth0 flow verdict %+v mss %d", v, mssOf(t, b0))
	}
}

// icmpError builds an ICMP error frame quoting the IPv4 packet inside frame q.
func icmpError(t *testing.T, srcMAC, dstMAC [6]byte, src, dst [4]byte, typ, code uint8, q []byte) []byte {
	t.Helper()
	eth := &layers.Ethernet{SrcMAC: net.HardwareAddr(srcMAC[:]), DstMAC: net.HardwareAddr(dstMAC[:]), EthernetType: layers.EthernetTypeIPv4}
	ip := &layers.IPv4{Version: 4, IHL: 5, TTL: 64, Protocol: layers.IPProtocolICMPv4, SrcIP: net.IP(src[:]), DstIP: net.IP(dst[:])}
	icmp := &layers.ICMPv4{TypeCode: layers.CreateICMPv4TypeCode(typ, code)}
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{ComputeChecksums: true, FixLengths: true}, eth, ip, icmp, gopacket.Payload(q[14:14+28])); err != nil {
		t.Fatal(err)
	}
	return append([]byte(nil), buf.Bytes()...)
}

// quoted decodes the packet an ICMP error frame quotes.
func quoted(t *testing.T, b []byte) (*layers.IPv4, *layers.UDP) {
	t.Helper()
	p := checkFrame(t, b)
	icmp := p.Layer(layers.LayerTypeICMPv4).(*layers.ICMPv4)
	q := gopacket.NewPacket(icmp.Payload, layers.LayerTypeIPv4, gopacket.Default)
	ip := q.Layer(layers.LayerTypeIPv4).(*layers.IPv4)
	var sum [20]byte
	copy(sum[:], icmp.Payload[:20])
	if c := rewrite.Checksum(sum[:], 0); c != 0 {
		t.Fatalf("quoted IPv4 header checksum does not verify (%#x)", c)
	}
	udp, _ := q.Layer(layers.LayerTypeUDP).(*layers.UDP)
	return ip, udp
}

// TestICMPErrorsBothWays translates ICMP errors about a NATed flow: from the wire to the host
// (outer destination and quoted source back to the host's), and from the host to the wire
// (outer source and quoted destination to the flow's external address).
func TestICMPErrorsBothWays(t *testing.T) {
	d := testDatapath(t, failover.LoadBalance, 1, 1000)
	out := pkt{srcMAC: mac0, dstMAC: gwMAC0, src: addr0, dst: server, proto: 17, sport: 7300, dport: 53}.build(t)
	if v := process(d, 0, out); v.Iface != 1 {
		t.Fatalf("flow verdict %+v", v)
	}
	// The datagram as it left eth1 is what a router quotes.
	router := [4]byte{198, 51, 100, 1}
	e := icmpError(t, gwMAC1, mac1, router, addr1, 3, 3, out)
	if v := process(d, 1, e); v.To != ToHost || v.Iface != 0 {
		t.Fatalf("wire ICMP error verdict %+v", v)
	}
	ip, udp := quoted(t, e)
	outer := checkFrame(t, e).Layer(layers.LayerTypeIPv4).(*layers.IPv4)
	if !bytes.Equal(outer.DstIP.To4(), addr0[:]) || !bytes.Equal(ip.SrcIP.To4(), addr0[:]) || udp.SrcPort != 7300 {
		t.Fatalf("host sees error to %v quoting %v:%d", outer.DstIP, ip.SrcIP, udp.SrcPort)
	}

	// The host's own port unreachable about a reply it got on eth0 for that flow.
	rep := pkt{srcMAC: gwMAC0, dstMAC: mac0, src: server, dst: addr0, proto: 17, sport: 53, dport: 7300}.build(t)
	he := icmpError(t, mac0, gwMAC0, addr0, server, 3, 3, rep)
	if v := process(d, 0, he); v.To != ToWire || v.Iface != 1 {
		t.Fatalf("host ICMP error verdict %+v", v)
	}
	ip, udp = quoted(t, he)
	outer = checkFrame(t, he).Layer(layers.LayerTypeIPv4).(*layers.IPv4)
	if !bytes.Equal(outer.SrcIP.To4(), addr1[:]) || !bytes.Equal(ip.DstIP.To4(), addr1[:]) || udp.DstPort != 7300 {
		t.Fatalf("wire sees error from %v quoting %v:%d", outer.SrcIP, ip.DstIP, udp.DstPort)
	}
}

// fragments returns the two fragments of one UDP datagram, built by hand: gopacket does not
// fragment.
func fragments(t *testing.T, p pkt, id uint16) (first, second []byte) {
	t.Helper()
	p.payload = make([]byte, 64)
	whole := p.build(t)
	ipHdr := whole[14:34]
	l4 := whole[34:]
	mk := func(off int, part []byte, more bool) []byte {
		b := append(append(append([]byte(nil), whole[:14]...), ipHdr...), part...)
		ip := b[14:34]
		ip[2], ip[3] = byte((20+len(part))>>8), byte(20+len(part))
		ip[4], ip[5] = byte(id>>8), byte(id)
		fo := uint16(off / 8)
		if more {
			fo |= 0x2000
		}
		ip[6], ip[7] = byte(fo>>8), byte(fo)
		ip[10], ip[11] = 0, 0
		c := rewrite.Checksum(ip, 0)
		ip[10], ip[11] = byte(c>>8), byte(c)
		return b
	}
	return mk(0, l4[:40], true), mk(40, l4[40:], false)
}

// TestFragmentsFollowFirst: the later fragments of a NATed datagram get the same translation as
// the first, in both directions.
func TestFragmentsFollowFirst(t *testing.T) {
	d := testDatapath(t, failover.LoadBalance, 1, 1000)
	f1, f2 := fragments(t, pkt{srcMAC: mac0, dstMAC: gwMAC0, src: addr0, dst: server, proto: 17, sport: 7400, dport: 5000}, 99)
	for i, b := range [][]byte{f1, f2} {
		if v := process(d, 0, b); v.To != ToWire || v.Iface != 1 {
			t.Fatalf("fragment %d verdict %+v", i, v)
		}
		if !bytes.Equal(b[26:30], addr1[:]) || rewrite.Checksum(b[14:34], 0) != 0 {
			t.Fatalf("fragment %d left from %v (header checksum %#x)", i, b[26:30], rewrite.Checksum(b[14:34], 0))
		}
	}
	r1, r2 := fragments(t, pkt{srcMAC: gwMAC1, dstMAC: mac1, src: server, dst: addr1, proto: 17, sport: 5000, dport: 7400}, 77)
	for i, b := range [][]byte{r1, r2} {
		if v := process(d, 1, b); v.To != ToHost || v.Iface != 0 {
			t.Fatalf("reply fragment %d verdict %+v", i, v)
		}
		if !bytes.Equal(b[30:34], addr0[:]) || rewrite.Checksum(b[14:34], 0) != 0 {
			t.Fatalf("reply fragment %d reached %v", i, b[30:34])
		}
	}
	// A later fragment whose first was never seen passes as it is.
	_, lone := fragments(t, pkt{srcMAC: mac0, dstMAC: gwMAC0, src: addr0, dst: server, proto: 17, sport: 7401, dport: 5000}, 5)
	orig := append([]byte(nil), lone...)
	if v := process(d, 0, lone); v.To != ToWire || v.Iface != 0 || !bytes.Equal(lone, orig) {
		t.Fatalf("orphan fragment verdict %+v", v)
	}
}

func TestNATPorts(t *testing.T) {
	for _, c := range []struct{ lo, hi, wantLo, wantHi int }{
		{32768, 60999, 61000, 65535}, // Linux's default
		{1024, 65535, natPortLo, natPortHi},
		{10000, 65000, 1024, 9999},
		{0, 0, natPortLo, natPortHi},
	} {
		if lo, hi := NATPorts(c.lo, c.hi); lo != c.wantLo || hi != c.wantHi {
			t.Errorf("NATPorts(%d, %d) = %d-%d, want %d-%d", c.lo, c.hi, lo, hi, c.wantLo, c.wantHi)
		}
	}
}

// TestPinnedNeverNATed: a segment of a connection the shim does not know (started before it,
// or evicted) keeps its address: out through the uplink that owns it, else as sent.
func TestPinnedNeverNATed(t *testing.T) {
	d := testDatapath(t, failover.LoadBalance, 1, 1000)
	// The host answers a connection that came in on eth1 (unknown to the shim), routed via eth0.
	b := pkt{srcMAC: mac0, dstMAC: gwMAC0, src: addr1, dst: server, proto: 6, sport: 22, dport: 40000, syn: true, ack: true}.build(t)
	if v := process(d, 0, b); v.To != ToWire || v.Iface != 1 {
		t.Fatalf("pinned per-source segment verdict %+v, want out of eth1", v)
	}
	if ip := checkFrame(t, b).Layer(layers.LayerTypeIPv4).(*layers.IPv4); !bytes.Equal(ip.SrcIP.To4(), addr1[:]) {
		t.Fatalf("pinned segment NATed to %v", ip.SrcIP)
	}
	// A segment from eth0's own address: exactly as the host sent it.
	b = pkt{srcMAC: mac0, dstMAC: gwMAC0, src: addr0, dst: server, proto: 6, sport: 5000, dport: 80, ack: true}.build(t)
	orig := append([]byte(nil), b...)
	if v := process(d, 0, b); v.Iface != 0 || !bytes.Equal(b, orig) {
		t.Fatalf("pinned segment verdict %+v changed=%v", v, !bytes.Equal(b, orig))
	}
}

// TestForwardedWithoutMasquerade: a LAN client's flow the host forwards un-NATed keeps its
// address on the interface the host chose, and is NATed when placed on the other uplink.
func TestForwardedWithoutMasquerade(t *testing.T) {
	lan := [4]byte{192, 168, 60, 10}
	for _, c := range []struct {
		w0, w1    int
		wantIface int
		wantSrc   [4]byte
	}{{1000, 1, 0, lan}, {1, 1000, 1, addr1}} {
		d := testDatapath(t, failover.LoadBalance, c.w0, c.w1)
		b := pkt{srcMAC: mac0, dstMAC: gwMAC0, src: lan, dst: server, proto: 17, sport: 3333, dport: 53}.build(t)
		if v := process(d, 0, b); v.Iface != c.wantIface {
			t.Fatalf("weights %d:%d: verdict %+v", c.w0, c.w1, v)
		}
		if ip := checkFrame(t, b).Layer(layers.LayerTypeIPv4).(*layers.IPv4); !bytes.Equal(ip.SrcIP.To4(), c.wantSrc[:]) {
			t.Fatalf("weights %d:%d: left from %v, want %v", c.w0, c.w1, ip.SrcIP, c.wantSrc)
		}
	}
}

// TestTunnelFrameTracked: a tunnel's small frame (its partial checksum is the inner TCP's, not
// a super-frame) belongs to the outer flow: NATed with it, inner bytes untouched.
func TestTunnelFrameTracked(t *testing.T) {
	d := testDatapath(t, failover.LoadBalance, 1, 1000)
	inner := pkt{srcMAC: [6]byte{2, 9, 9, 9, 9, 1}, dstMAC: [6]byte{2, 9, 9, 9, 9, 2}, src: [4]byte{192, 168, 77, 1}, dst: [4]byte{192, 168, 77, 2}, proto: 6, sport: 5555, dport: 5201, ack: true}.build(t)
	vx := append([]byte{0x08, 0, 0, 0, 0, 0, 42, 0}, inner...)
	outer := pkt{srcMAC: mac0, dstMAC: gwMAC0, src: addr0, dst: server, proto: 17, sport: 40000, dport: 4789, payload: vx}.build(t)
	// The outer UDP checksum of a VXLAN frame is 0; the inner TCP checksum is partial.
	outer[14+20+6], outer[14+20+7] = 0, 0
	innerTCP := 14 + 20 + 8 + 8 + 14 + 20
	vnet := rewrite.VnetHdr{Flags: rewrite.VnetNeedsCsum, CsumStart: uint16(innerTCP), CsumOffset: 16}
	before := append([]byte(nil), outer[14+20+8:]...)
	v, _ := processVnet(d, 0, outer, vnet)
	if v.To != ToWire || v.Iface != 1 {
		t.Fatalf("tunnel frame verdict %+v, want out of eth1 with its flow", v)
	}
	if !bytes.Equal(outer[26:30], addr1[:]) || rewrite.Checksum(outer[14:34], 0) != 0 {
		t.Fatalf("outer source %v (header checksum %#x)", outer[26:30], rewrite.Checksum(outer[14:34], 0))
	}
	if outer[14+20+6] != 0 || outer[14+20+7] != 0 || !bytes.Equal(outer[14+20+8:], before) {
		t.Fatal("the outer UDP checksum or the tunnelled bytes changed")
	}
	if d.Flows() != 1 {
		t.Fatalf("%d flows, want the outer flow tracked", d.Flows())
	}
}
