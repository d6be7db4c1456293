package fastpath

import (
	"bytes"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"testing"
	"time"
	"unsafe"

	"github.com/cilium/ebpf"
	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"

	"github.com/l2shim/l2shim/rewrite"
)

// skbContext is struct __sk_buff (include/uapi/linux/bpf.h), the context BPF_PROG_TEST_RUN
// takes for a TC program: only mark, priority, ifindex, cb, tstamp, wire_len, gso_segs and
// gso_size may be set.
type skbContext struct {
	Len, PktType, Mark, QueueMapping, Protocol, VlanPresent, VlanTCI, VlanProto uint32
	Priority, IngressIfindex, Ifindex, TCIndex                                  uint32
	CB                                                                          [5]uint32
	Hash, TCClassid, Data, DataEnd, NapiID, Family, RemoteIP4, LocalIP4         uint32
	RemoteIP6, LocalIP6                                                         [4]uint32
	RemotePort, LocalPort, DataMeta                                             uint32
	FlowKeys, Tstamp                                                            uint64
	WireLen, GSOSegs                                                            uint32
	Sk                                                                          uint64
	GSOSize                                                                     uint32
	TstampType                                                                  uint32 // a byte and padding
	Hwtstamp                                                                    uint64
}

// The programs run against the loopback device in BPF_PROG_TEST_RUN (ifindex 1, MAC zero:
// a frame addressed to it is PACKET_HOST).
const testIfindex = 1

var (
	hostMAC = [6]byte{}
	gwMAC   = [6]byte{0x02, 0, 0, 0, 0, 0x01}
)

const (
	retNext     = 0xffffffff // TCX_NEXT (-1)
	retRedirect = 7
)

func loadTest(t *testing.T) *Kernel {
	t.Helper()
	if n := unsafe.Sizeof(skbContext{}); n != 192 {
		t.Fatalf("skbContext is %d bytes; struct __sk_buff is 192", n)
	}
	if os.Geteuid() != 0 {
		t.Skip("loading BPF programs needs root")
	}
	k, err := Load(Options{Mark: 0xa0, Mask: 0xf0, Heartbeat: time.Second, MaxFlows: 4096})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { k.Close() })
	if err := k.SetIface(testIfindex, Iface{MAC: hostMAC, Capture: 99, CaptureHost: 98}); err != nil {
		t.Fatal(err)
	}
	if err := k.AddGateway(gwMAC); err != nil {
		t.Fatal(err)
	}
	return k
}

func run(t *testing.T, p *ebpf.Program, frame []byte, ctx *skbContext) (uint32, []byte) {
	t.Helper()
	if ctx == nil {
		ctx = &skbContext{}
	}
	if ctx.GSOSegs > 0 {
		ctx.WireLen = uint32(len(frame))
	}
	opts := ebpf.RunOptions{Data: frame, DataOut: make([]byte, len(frame)+256), Context: ctx}
	ret, err := p.Run(&opts)
	if err != nil {
		t.Fatalf("test run: %v", err)
	}
	return ret, opts.DataOut
}

// flowFrame is a random frame of a random flow: what the differential test feeds both paths.
type flowFrame struct {
	frame []byte
	key   Key // as the frame carries it
}

func randAddr(r *rand.Rand) netip.Addr {
	return netip.AddrFrom4([4]byte{byte(1 + r.IntN(220)), byte(r.IntN(256)), byte(r.IntN(256)), byte(1 + r.IntN(254))})
}

// randAddr6 is a random global unicast IPv6 address (2000::/3).
func randAddr6(r *rand.Rand) netip.Addr {
	var a [16]byte
	for i := range a {
		a[i] = byte(r.IntN(256))
	}
	a[0] = 0x20 | a[0]&0x1f
	return netip.AddrFrom16(a)
}

func randMAC(r *rand.Rand) [6]byte {
	var m [6]byte
	for i := range m {
		m[i] = byte(r.IntN(256))
	}
	m[0] &^= 1 // unicast
	return m
}

// randomFrame builds a frame of a random flow: TCP (no SYN, FIN or RST, random options), UDP
// (sometimes without checksum) or ICMP echo of type icmpType (ICMPv6's echo of the same kind
// for IPv6), with IPv4 options sometimes and a payload of any length; from srcMAC to dstMAC;
// IPv6 when v6.
func randomFrame(t *testing.T, r *rand.Rand, srcMAC, dstMAC [6]byte, icmpType uint8, v6 bool) flowFrame {
	t.Helper()
	src, dst := randAddr(r), randAddr(r)
	if v6 {
		src, dst = randAddr6(r), randAddr6(r)
	}
	eth := &layers.Ethernet{SrcMAC: net.HardwareAddr(srcMAC[:]), DstMAC: net.HardwareAddr(dstMAC[:]), EthernetType: layers.EthernetTypeIPv4}
	ip4 := &layers.IPv4{Version: 4, TTL: 64, Id: uint16(r.IntN(65536)), SrcIP: src.AsSlice(), DstIP: dst.AsSlice()}
	if r.IntN(4) == 0 {
		ip4.Options = []layers.IPv4Option{{OptionType: 1}, {OptionType: 1}, {OptionType: 1}, {OptionType: 0}}
	}
	ip6 := &layers.IPv6{Version: 6, HopLimit: 64, FlowLabel: uint32(r.IntN(1 << 20)), SrcIP: src.AsSlice(), DstIP: dst.AsSlice()}
	var ip gopacket.NetworkLayer = ip4
	var ipLayer gopacket.SerializableLayer = ip4
	setProto := func(p layers.IPProtocol) { ip4.Protocol = p }
	if v6 {
		eth.EthernetType = layers.EthernetTypeIPv6
		ip, ipLayer = ip6, ip6
		setProto = func(p layers.IPProtocol) { ip6.NextHeader = p }
	}
	payload := make([]byte, r.IntN(1400))
	for i := range payload {
		payload[i] = byte(r.IntN(256))
	}
	var l4 []gopacket.SerializableLayer
	key := Key{Src: src, Dst: dst}
	udpNoCsum := false
	switch r.IntN(3) {
	case 0:
		setProto(layers.IPProtocolTCP)
		tcp := &layers.TCP{SrcPort: layers.TCPPort(1 + r.IntN(65535)), DstPort: layers.TCPPort(1 + r.IntN(65535)),
			Seq: r.Uint32(), Ack: r.Uint32(), ACK: true, PSH: r.IntN(2) == 0, Window: uint16(r.IntN(65536))}
		for i := r.IntN(3); i > 0; i-- {
			tcp.Options = append(tcp.Options, layers.TCPOption{OptionType: layers.TCPOptionKindNop})
		}
		if r.IntN(2) == 0 {
			tcp.Options = append(tcp.Options, layers.TCPOption{OptionType: layers.TCPOptionKindTimestamps, OptionLength: 10, OptionData: make([]byte, 8)})
		}
		tcp.SetNetworkLayerForChecksum(ip)
		key.SrcPort, key.DstPort, key.Proto = uint16(tcp.SrcPort), uint16(tcp.DstPort), rewrite.ProtoTCP
		l4 = append(l4, tcp)
	case 1:
		setProto(layers.IPProtocolUDP)
		udp := &layers.UDP{SrcPort: layers.UDPPort(1 + r.IntN(65535)), DstPort: layers.UDPPort(1 + r.IntN(65535))}
		udp.SetNetworkLayerForChecksum(ip)
		udpNoCsum = r.IntN(4) == 0
		key.SrcPort, key.DstPort, key.Proto = uint16(udp.SrcPort), uint16(udp.DstPort), rewrite.ProtoUDP
		l4 = append(l4, udp)
	default:
		id := uint16(r.IntN(65536))
		if v6 {
			setProto(layers.IPProtocolICMPv6)
			typ := uint8(rewrite.ICMPv6EchoRequest)
			if icmpType == rewrite.ICMPEchoReply {
				typ = rewrite.ICMPv6EchoReply
			}
			icmp := &layers.ICMPv6{TypeCode: layers.CreateICMPv6TypeCode(typ, 0)}
			icmp.SetNetworkLayerForChecksum(ip)
			l4 = append(l4, icmp, &layers.ICMPv6Echo{Identifier: id, SeqNumber: uint16(r.IntN(65536))})
			key.SrcPort, key.DstPort, key.Proto = id, id, rewrite.ProtoICMPv6
			break
		}
		setProto(layers.IPProtocolICMPv4)
		l4 = append(l4, &layers.ICMPv4{TypeCode: layers.CreateICMPv4TypeCode(icmpType, 0), Id: id, Seq: uint16(r.IntN(65536))})
		key.SrcPort, key.DstPort, key.Proto = id, id, rewrite.ProtoICMP
	}
	buf := gopacket.NewSerializeBuffer()
	all := append(append([]gopacket.SerializableLayer{eth, ipLayer}, l4...), gopacket.Payload(payload))
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{ComputeChecksums: true, FixLengths: true}, all...); err != nil {
		t.Fatal(err)
	}
	b := append([]byte(nil), buf.Bytes()...)
	if udpNoCsum {
		l4off := rewrite.EthHdrLen + 40
		if !v6 {
			l4off = rewrite.EthHdrLen + int(b[rewrite.EthHdrLen]&0x0f)*4
		}
		b[l4off+6], b[l4off+7] = 0, 0
	}
	return flowFrame{frame: b, key: key}
}

// goRewrite applies entry e to frame b the way the slow path does, and returns the result.
func goRewrite(t *testing.T, b []byte, d Direction, e Entry) []byte {
	t.Helper()
	out := append([]byte(nil), b...)
	var f rewrite.Frame
	if r := f.ParseAny(out, rewrite.VnetHdr{}); r != rewrite.OK {
		t.Fatalf("Go parse: %v", r)
	}
	switch {
	case !e.NAT:
	case f.IPv6 && d == Out:
		f.SetSrc6(e.Addr.As16(), e.Port)
	case f.IPv6:
		f.SetDst6(e.Addr.As16(), e.Port)
	case d == Out:
		f.SetSrc(e.Addr.As4(), e.Port)
	default:
		f.SetDst(e.Addr.As4(), e.Port)
	}
	f.SetMACs(e.SrcMAC, e.DstMAC)
	return out
}

// TestDifferential feeds thousands of random flows' frames through the programs and through
// the Go rewrite of the slow path, in both directions, and requires byte-identical frames.
func TestDifferential(t *testing.T) {
	k := loadTest(t)
	if err := k.Beat(); err != nil {
		t.Fatal(err)
	}
	r := rand.New(rand.NewPCG(1, 2))
	for i := 0; i < 3000; i++ {
		d, v6 := Direction(i%2), i%4 >= 2
		var ff flowFrame
		prog := k.Egress()
		if d == Out {
			ff = randomFrame(t, r, hostMAC, gwMAC, rewrite.ICMPEchoRequest, v6)
		} else {
			prog = k.Ingress()
			ff = randomFrame(t, r, randMAC(r), hostMAC, rewrite.ICMPEchoReply, v6)
		}
		e := Entry{Ifindex: testIfindex, SrcMAC: randMAC(r), DstMAC: randMAC(r)}
		if r.IntN(4) != 0 {
			e.NAT, e.Addr, e.Port = true, randAddr(r), uint16(1+r.IntN(65535))
			if v6 {
				e.Addr = randAddr6(r)
			}
			if r.IntN(3) == 0 { // address only: the port kept
				e.Port = ff.key.SrcPort
				if d == In {
					e.Port = ff.key.DstPort
				}
			}
		}
		if err := k.Put(d, ff.key, e); err != nil {
			t.Fatal(err)
		}
		ret, got := run(t, prog, ff.frame, nil)
		want := goRewrite(t, ff.frame, d, e)
		if ret != retNext || !bytes.Equal(got, want) {
			t.Fatalf("frame %d (%v, %+v): ret %d\n got %x\nwant %x", i, d, ff.key, int32(ret), got, want)
		}
		c, ok := k.Counts(d, ff.key)
		if !ok || c.Packets != 1 || c.Bytes != uint64(len(ff.frame)) || c.LastSeen == 0 {
			t.Fatalf("frame %d: counts %+v", i, c)
		}
		if err := k.Delete(d, ff.key); err != nil {
			t.Fatal(err)
		}
	}
	s, err := k.Stats()
	if err != nil || s.FastOut != 1500 || s.FastIn != 1500 || s.DivertOut+s.DivertIn != 0 {
		t.Fatalf("stats %+v (%v)", s, err)
	}
}

// setAlive makes the programs see user space alive (a fresh heartbeat) or gone (a beat long
// past).
func setAlive(t *testing.T, k *Kernel, alive bool) {
	t.Helper()
	if alive {
		if err := k.Beat(); err != nil {
			t.Fatal(err)
		}
		return
	}
	zero, old := uint32(0), uint64(1)
	if err := k.objs.L2sHeartbeat.Put(&zero, &old); err != nil {
		t.Fatal(err)
	}
}

// tcpFrame builds a TCP frame of flow key with flags (ACK unless SYN).
func tcpFrame(t *testing.T, srcMAC, dstMAC [6]byte, key Key, syn, fin, rst bool, payload int, df bool) []byte {
	t.Helper()
	return tcpSegment(t, srcMAC, dstMAC, key, &layers.TCP{ACK: !syn, SYN: syn, FIN: fin, RST: rst, Seq: 1, Window: 1000}, payload, df)
}

// tcpSegment builds a frame of flow key carrying the TCP header tcp (its ports set from key)
// and payload zero bytes.
func tcpSegment(t *testing.T, srcMAC, dstMAC [6]byte, key Key, tcp *layers.TCP, payload int, df bool) []byte {
	t.Helper()
	eth := &layers.Ethernet{SrcMAC: net.HardwareAddr(srcMAC[:]), DstMAC: net.HardwareAddr(dstMAC[:]), EthernetType: layers.EthernetTypeIPv4}
	ip := &layers.IPv4{Version: 4, TTL: 64, Protocol: layers.IPProtocolTCP, SrcIP: key.Src.AsSlice(), DstIP: key.Dst.AsSlice()}
	if df {
		ip.Flags = layers.IPv4DontFragment
	}
	tcp.SrcPort, tcp.DstPort = layers.TCPPort(key.SrcPort), layers.TCPPort(key.DstPort)
	tcp.SetNetworkLayerForChecksum(ip)
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{ComputeChecksums: true, FixLengths: true}, eth, ip, tcp, gopacket.Payload(make([]byte, payload))); err != nil {
		t.Fatal(err)
	}
	return append([]byte(nil), buf.Bytes()...)
}

// TestSlowPathFrames lists the frames of an installed flow that the programs leave to user
// space, and what they do with them once user space is gone (heartbeat stale).
func TestSlowPathFrames(t *testing.T) {
	k := loadTest(t)
	key := Key{Src: netip.MustParseAddr("10.1.0.2"), Dst: netip.MustParseAddr("203.0.113.10"), SrcPort: 40000, DstPort: 443, Proto: rewrite.ProtoTCP}
	e := Entry{Ifindex: 7, NAT: true, Addr: netip.MustParseAddr("10.2.0.2"), Port: 40000, MTU: 1400, SrcMAC: [6]byte{2, 0, 0, 0, 0, 0x11}, DstMAC: [6]byte{2, 0, 0, 0, 0, 2}}
	if err := k.Put(Out, key, e); err != nil {
		t.Fatal(err)
	}
	stats := func() Stats {
		s, err := k.Stats()
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	for _, c := range []struct {
		name     string
		frame    []byte
		ctx      *skbContext
		alive    bool
		wantRet  uint32
		wantFast bool
	}{
		{"data", tcpFrame(t, hostMAC, gwMAC, key, false, false, false, 100, true), nil, true, retRedirect, true},
		{"SYN, shim alive", tcpFrame(t, hostMAC, gwMAC, key, true, false, false, 0, true), nil, true, retRedirect, false},
		{"FIN, shim alive", tcpFrame(t, hostMAC, gwMAC, key, false, true, false, 0, true), nil, true, retRedirect, true},
		{"RST, shim alive", tcpFrame(t, hostMAC, gwMAC, key, false, false, true, 0, true), nil, true, retRedirect, false},
		{"over the uplink's MTU", tcpFrame(t, hostMAC, gwMAC, key, false, false, false, 1400, true), nil, true, retRedirect, false},
		{"GSO segments fit", tcpFrame(t, hostMAC, gwMAC, key, false, false, false, 2720, true), &skbContext{GSOSegs: 2, GSOSize: 1360}, true, retRedirect, true},
		{"GSO segments too big", tcpFrame(t, hostMAC, gwMAC, key, false, false, false, 2800, true), &skbContext{GSOSegs: 2, GSOSize: 1400}, true, retRedirect, false},
		{"shim's own frame", tcpFrame(t, hostMAC, gwMAC, key, false, false, false, 100, true), &skbContext{Mark: 0xa3}, true, retNext, false},
		{"FIN after the shim stopped", tcpFrame(t, hostMAC, gwMAC, key, false, true, false, 0, true), nil, false, retRedirect, true},
		{"a truncated TCP header", tcpFrame(t, hostMAC, gwMAC, key, false, false, false, 0, false)[:rewrite.EthHdrLen+20+4], nil, true, retRedirect, false},
		{"over the MTU after the shim stopped", tcpFrame(t, hostMAC, gwMAC, key, false, false, false, 1400, true), nil, false, retNext, false},
	} {
		setAlive(t, k, c.alive)
		before := stats()
		ret, _ := run(t, k.Egress(), c.frame, c.ctx)
		after := stats()
		fast := after.FastOut > before.FastOut
		diverted := after.DivertOut > before.DivertOut
		if ret != c.wantRet || fast != c.wantFast || diverted != (!c.wantFast && c.wantRet == retRedirect) {
			t.Errorf("%s: ret %d, fast path %v, diverted %v; want ret %d, fast path %v", c.name, int32(ret), fast, diverted, int32(c.wantRet), c.wantFast)
		}
	}
}

// TestFINMarked: the programs carry a FIN of an installed flow and mark it in the entry, with
// the sequence number after it (for the wire's, what user space checks the host's
// acknowledgment against); other segments mark nothing.
func TestFINMarked(t *testing.T) {
	k := loadTest(t)
	if err := k.Beat(); err != nil {
		t.Fatal(err)
	}
	out := Key{Src: netip.MustParseAddr("10.1.0.2"), Dst: netip.MustParseAddr("203.0.113.10"), SrcPort: 40000, DstPort: 443, Proto: rewrite.ProtoTCP}
	in := Key{Src: out.Dst, Dst: out.Src, SrcPort: out.DstPort, DstPort: out.SrcPort, Proto: rewrite.ProtoTCP}
	for _, d := range []Direction{Out, In} {
		key, prog, src, dst := out, k.Egress(), hostMAC, gwMAC
		if d == In {
			key, prog, src, dst = in, k.Ingress(), gwMAC, hostMAC
		}
		if err := k.Put(d, key, Entry{Ifindex: testIfindex}); err != nil {
			t.Fatal(err)
		}
		// Sequence number 1: 100 bytes of data, then 10 bytes and the FIN (ends at 12).
		for _, c := range []struct {
			fin     bool
			payload int
			wantFIN bool
		}{{false, 100, false}, {true, 10, true}, {false, 0, true}} {
			if ret, _ := run(t, prog, tcpFrame(t, src, dst, key, false, c.fin, false, c.payload, true), nil); ret != retNext {
				t.Fatalf("%v, FIN %v: ret %d, want the frame carried", d, c.fin, int32(ret))
			}
			got, ok := k.Counts(d, key)
			if !ok || got.FIN != c.wantFIN {
				t.Fatalf("%v after a segment (FIN %v, %d bytes): counts %+v, want FIN %v", d, c.fin, c.payload, got, c.wantFIN)
			}
			if c.fin && got.SeqEnd != 12 {
				t.Fatalf("%v FIN with 10 bytes at sequence number 1: SeqEnd %d, want 12", d, got.SeqEnd)
			}
		}
	}
	// The wire's FIN counts once the host acknowledges exactly its end: a FIN that ends
	// elsewhere (forged, behind or ahead of the real one) never moves the recorded end. While
	// l2shim runs it goes to user space, which checks it against the host's window; the real
	// FIN's retransmission is carried.
	for _, c := range []struct {
		name     string
		payload  int
		alive    bool
		wantRet  uint32
		wantFast bool
	}{
		{"the FIN retransmitted", 10, true, retNext, true},
		{"a FIN ending at 52", 50, true, retRedirect, false},
		{"a FIN ending at 2", 0, true, retRedirect, false},
		{"a FIN ending at 52, no l2shim", 50, false, retNext, true},
	} {
		setAlive(t, k, c.alive)
		before, err := k.Stats()
		if err != nil {
			t.Fatal(err)
		}
		ret, _ := run(t, k.Ingress(), tcpFrame(t, gwMAC, hostMAC, in, false, true, false, c.payload, true), nil)
		after, err := k.Stats()
		if err != nil {
			t.Fatal(err)
		}
		if fast := after.FastIn > before.FastIn; ret != c.wantRet || fast != c.wantFast {
			t.Errorf("%s: ret %d, fast path %v; want ret %d, fast path %v", c.name, int32(ret), fast, int32(c.wantRet), c.wantFast)
		}
		if got, _ := k.Counts(In, in); got.SeqEnd != 12 {
			t.Errorf("%s: the in entry's FIN end is %d, want the first FIN's 12", c.name, got.SeqEnd)
		}
	}
	// With no l2shim running, a SYN on the closed connection's tuple is a new flow: the host's
	// routing, and the old entry goes.
	setAlive(t, k, false)
	syn := tcpFrame(t, hostMAC, gwMAC, out, true, false, false, 0, true)
	if ret, got := run(t, k.Egress(), syn, nil); ret != retNext || !bytes.Equal(got, syn) {
		t.Fatalf("a new SYN after the close, no l2shim: ret %d, changed %v; want it passed as sent", int32(ret), !bytes.Equal(got, syn))
	}
	if c, ok := k.Counts(Out, out); ok {
		t.Fatalf("the closed connection's out entry is still there: %+v", c)
	}
}

// TestUnownedFramesUntouched: frames l2shim does not own pass as they are, whatever the maps
// hold: another MAC's (a macvlan), not to a gateway, not IPv4.
func TestUnownedFramesUntouched(t *testing.T) {
	k := loadTest(t)
	if err := k.Beat(); err != nil {
		t.Fatal(err)
	}
	key := Key{Src: netip.MustParseAddr("10.1.0.5"), Dst: netip.MustParseAddr("203.0.113.10"), SrcPort: 1, DstPort: 2, Proto: rewrite.ProtoTCP}
	other := [6]byte{2, 0, 0, 0, 0, 0x77}
	for name, f := range map[string][]byte{
		"a macvlan's frame": tcpFrame(t, other, gwMAC, key, false, false, false, 10, false),
		"not to a gateway":  tcpFrame(t, hostMAC, other, key, false, false, false, 10, false),
		"an ARP frame":      append(append(append([]byte{}, gwMAC[:]...), hostMAC[:]...), append([]byte{0x08, 0x06}, make([]byte, 46)...)...),
	} {
		ret, out := run(t, k.Egress(), f, nil)
		if ret != retNext || !bytes.Equal(out, f) {
			t.Errorf("%s: ret %d, changed %v", name, int32(ret), !bytes.Equal(out, f))
		}
	}
}

// synAckFrame builds a SYN-ACK of flow key.
func synAckFrame(t *testing.T, srcMAC, dstMAC [6]byte, key Key) []byte {
	t.Helper()
	return tcpSegment(t, srcMAC, dstMAC, key, &layers.TCP{SYN: true, ACK: true, Seq: 9000, Ack: 1, Window: 1000}, 0, true)
}

// TestSYNACKCarried: the in entry of a connection the host is opening carries the peer's
// SYN-ACK, translated, when user space let it (CarrySYNACK); a bare SYN or an RST still goes to
// user space, and without the flag so does the SYN-ACK (its MSS is user space's to clamp).
func TestSYNACKCarried(t *testing.T) {
	k := loadTest(t)
	if err := k.Beat(); err != nil {
		t.Fatal(err)
	}
	key := Key{Src: netip.MustParseAddr("203.0.113.10"), Dst: netip.MustParseAddr("10.2.0.2"), SrcPort: 443, DstPort: 40000, Proto: rewrite.ProtoTCP}
	e := Entry{Ifindex: testIfindex, NAT: true, Addr: netip.MustParseAddr("10.1.0.2"), Port: 40001, SrcMAC: gwMAC, DstMAC: hostMAC, CarrySYNACK: true}
	for _, c := range []struct {
		name     string
		carry    bool
		frame    []byte
		wantFast bool
	}{
		{"SYN-ACK, carried", true, synAckFrame(t, gwMAC, hostMAC, key), true},
		{"SYN-ACK, not carried", false, synAckFrame(t, gwMAC, hostMAC, key), false},
		{"bare SYN", true, tcpFrame(t, gwMAC, hostMAC, key, true, false, false, 0, true), false},
		{"RST", true, tcpFrame(t, gwMAC, hostMAC, key, false, false, true, 0, true), false},
	} {
		e.CarrySYNACK = c.carry
		if err := k.Put(In, key, e); err != nil {
			t.Fatal(err)
		}
		before, _ := k.Stats()
		ret, out := run(t, k.Ingress(), c.frame, nil)
		after, _ := k.Stats()
		fast, diverted := after.FastIn > before.FastIn, after.DivertIn > before.DivertIn
		if fast != c.wantFast || diverted == c.wantFast {
			t.Errorf("%s: ret %d, fast path %v, diverted %v; want fast path %v", c.name, int32(ret), fast, diverted, c.wantFast)
			continue
		}
		if c.wantFast {
			if want := goRewrite(t, c.frame, In, e); ret != retNext || !bytes.Equal(out, want) {
				t.Errorf("%s: ret %d\n got %x\nwant %x", c.name, int32(ret), out, want)
			}
		}
	}
}

// TestDivertOnlyEntry: an answer to a flow the host opened and l2shim has not confirmed yet
// goes to user space (the host's queue) untouched, whatever it is; without l2shim it passes.
func TestDivertOnlyEntry(t *testing.T) {
	k := loadTest(t)
	key := Key{Src: netip.MustParseAddr("203.0.113.10"), Dst: netip.MustParseAddr("10.2.0.2"), SrcPort: 443, DstPort: 40000, Proto: rewrite.ProtoTCP}
	if err := k.Put(In, key, Entry{Ifindex: testIfindex, DivertOnly: true}); err != nil {
		t.Fatal(err)
	}
	synack := tcpFrame(t, gwMAC, hostMAC, key, true, false, false, 0, false)
	if err := k.Beat(); err != nil {
		t.Fatal(err)
	}
	before, _ := k.Stats()
	ret, out := run(t, k.Ingress(), synack, nil)
	after, _ := k.Stats()
	if ret != retRedirect || !bytes.Equal(out, synack) || after.DivertIn != before.DivertIn+1 || after.FastIn != before.FastIn {
		t.Fatalf("answer to a new flow: ret %d, changed %v, diverted %d", int32(ret), !bytes.Equal(out, synack), after.DivertIn-before.DivertIn)
	}
	setAlive(t, k, false)
	if ret, _ := run(t, k.Ingress(), synack, nil); ret != retNext {
		t.Fatalf("with l2shim gone: ret %d, want it passed", int32(ret))
	}
}

// TestEntryToL3: a frame whose entry sends it to a device without a link-layer header is NATed
// like any other, keeps the MACs it came with (bpf_redirect to that device pulls the Ethernet
// header, so none are written) and is redirected there.
func TestEntryToL3(t *testing.T) {
	k := loadTest(t)
	if err := k.Beat(); err != nil {
		t.Fatal(err)
	}
	r := rand.New(rand.NewPCG(3, 4))
	for i := 0; i < 200; i++ {
		v6 := i%2 == 1
		ff := randomFrame(t, r, hostMAC, gwMAC, rewrite.ICMPEchoRequest, v6)
		e := Entry{Ifindex: 7, ToL3: true, NAT: true, Addr: randAddr(r), Port: uint16(1 + r.IntN(65535)), SrcMAC: randMAC(r), DstMAC: randMAC(r)}
		if v6 {
			e.Addr = randAddr6(r)
		}
		if err := k.Put(Out, ff.key, e); err != nil {
			t.Fatal(err)
		}
		ret, got := run(t, k.Egress(), ff.frame, nil)
		kept := e
		kept.SrcMAC, kept.DstMAC = hostMAC, gwMAC
		want := goRewrite(t, ff.frame, Out, kept)
		if ret != retRedirect || !bytes.Equal(got, want) {
			t.Fatalf("frame %d (%+v): ret %d\n got %x\nwant %x", i, ff.key, int32(ret), got, want)
		}
		if err := k.Delete(Out, ff.key); err != nil {
			t.Fatal(err)
		}
	}
}

// ipv6Frame builds an Ethernet frame from hostMAC to gwMAC carrying IPv6 from src to dst with
// a TCP segment, or with an ICMPv6 message of icmpType when it is not 0.
func ipv6Frame(t *testing.T, src, dst string, icmpType uint8) []byte {
	t.Helper()
	eth := &layers.Ethernet{SrcMAC: net.HardwareAddr(hostMAC[:]), DstMAC: net.HardwareAddr(gwMAC[:]), EthernetType: layers.EthernetTypeIPv6}
	ip := &layers.IPv6{Version: 6, HopLimit: 64, SrcIP: net.ParseIP(src), DstIP: net.ParseIP(dst)}
	var l4 gopacket.SerializableLayer
	if icmpType != 0 {
		ip.NextHeader = layers.IPProtocolICMPv6
		icmp := &layers.ICMPv6{TypeCode: layers.CreateICMPv6TypeCode(icmpType, 0)}
		icmp.SetNetworkLayerForChecksum(ip)
		l4 = icmp
	} else {
		ip.NextHeader = layers.IPProtocolTCP
		tcp := &layers.TCP{SrcPort: 40000, DstPort: 443, ACK: true, Seq: 1, Window: 1000}
		tcp.SetNetworkLayerForChecksum(ip)
		l4 = tcp
	}
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{ComputeChecksums: true, FixLengths: true}, eth, ip, l4, gopacket.Payload(make([]byte, 100))); err != nil {
		t.Fatal(err)
	}
	return append([]byte(nil), buf.Bytes()...)
}

// TestSource6: an IPv6 packet whose source is in another uplink's prefix is sent there with
// that uplink's MACs (or none, to an L3 link); neighbour discovery, MLD, link-local and
// multicast traffic, and everything once the heartbeat is stale, pass untouched; other packets
// to the gateway's router go to user space.
func TestSource6(t *testing.T) {
	k := loadTest(t)
	if err := k.Beat(); err != nil {
		t.Fatal(err)
	}
	upMAC, routerMAC := [6]byte{2, 0, 0, 0, 0, 0x21}, [6]byte{2, 0, 0, 0, 0, 0x22}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(k.SetSource6(netip.MustParsePrefix("2001:db8:2::/64"), Uplink6{Ifindex: 7, SrcMAC: upMAC, DstMAC: routerMAC}))
	must(k.SetSource6(netip.MustParsePrefix("2001:db8:1::/64"), Uplink6{Ifindex: testIfindex, SrcMAC: hostMAC, DstMAC: gwMAC}))
	must(k.SetSource6(netip.MustParsePrefix("2001:db8:3::/64"), Uplink6{Ifindex: 8, L3: true}))

	frame := ipv6Frame(t, "2001:db8:2::2", "2001:db8:ff::10", 0)
	ret, got := run(t, k.Egress(), frame, nil)
	want := append([]byte(nil), frame...)
	copy(want[0:6], routerMAC[:])
	copy(want[6:12], upMAC[:])
	if ret != retRedirect || !bytes.Equal(got[:len(want)], want) {
		t.Fatalf("another uplink's source: ret %d\n got %x\nwant %x", int32(ret), got[:len(want)], want)
	}
	frame = ipv6Frame(t, "2001:db8:3::2", "2001:db8:ff::10", 0)
	if ret, got := run(t, k.Egress(), frame, nil); ret != retRedirect || !bytes.Equal(got[:len(frame)], frame) {
		t.Fatalf("an L3 uplink's source: ret %d, frame changed: %v", int32(ret), !bytes.Equal(got[:len(frame)], frame))
	}
	for _, tc := range []struct {
		what     string
		src, dst string
		icmp     uint8
	}{
		{"neighbour solicitation", "2001:db8:2::2", "2001:db8:ff::10", 135},
		{"neighbour advertisement", "2001:db8:2::2", "2001:db8:ff::10", 136},
		{"router solicitation", "2001:db8:2::2", "2001:db8:ff::10", 133},
		{"MLD report", "2001:db8:2::2", "2001:db8:ff::10", 143},
		{"multicast destination", "2001:db8:2::2", "ff02::1:2", 0},
		{"link-local destination", "2001:db8:2::2", "fe80::1", 0},
		{"link-local source", "fe80::2", "2001:db8:ff::10", 0},
	} {
		frame := ipv6Frame(t, tc.src, tc.dst, tc.icmp)
		if ret, got := run(t, k.Egress(), frame, nil); ret != retNext || !bytes.Equal(got[:len(frame)], frame) {
			t.Errorf("%s: ret %d, frame changed: %v", tc.what, int32(ret), !bytes.Equal(got[:len(frame)], frame))
		}
	}
	// A flow of the interface's own uplink, or of no uplink's prefix, to the gateway's router:
	// to user space, untouched, which places it.
	for _, src := range []string{"2001:db8:1::2", "2001:db8:9::2"} {
		frame := ipv6Frame(t, src, "2001:db8:ff::10", 0)
		if ret, got := run(t, k.Egress(), frame, nil); ret != retRedirect || !bytes.Equal(got[:len(frame)], frame) {
			t.Errorf("%s to the router: ret %d, frame changed: %v", src, int32(ret), !bytes.Equal(got[:len(frame)], frame))
		}
	}
	if s, err := k.Stats(); err != nil || s.DivertOut != 2 {
		t.Errorf("stats %+v (%v): want 2 IPv6 frames diverted", s, err)
	}
	// A stale heartbeat (l2shim gone or hung): the host's own routing.
	must(k.BeatLagging(time.Hour))
	frame = ipv6Frame(t, "2001:db8:2::2", "2001:db8:ff::10", 0)
	if ret, _ := run(t, k.Egress(), frame, nil); ret != retNext {
		t.Errorf("stale heartbeat: ret %d", int32(ret))
	}
	must(k.Beat())
	must(k.DeleteSource6(netip.MustParsePrefix("2001:db8:2::/64")))
	if ret, got := run(t, k.Egress(), frame, nil); ret != retRedirect || !bytes.Equal(got[:len(frame)], frame) {
		t.Errorf("a deleted prefix: ret %d (want the frame diverted untouched)", int32(ret))
	}
	s, err := k.Stats()
	if err != nil || s.Source6 != 2 {
		t.Errorf("stats %+v (%v): want 2 packets sent by source", s, err)
	}
}

// TestSlowPathFrames6: of an installed IPv6 flow, a plain segment is finished in the kernel,
// while a fragment, a packet with another extension header first, and an ICMPv6 error
// quoting the flow (Packet Too Big above all) go to user space untouched.
func TestSlowPathFrames6(t *testing.T) {
	k := loadTest(t)
	if err := k.Beat(); err != nil {
		t.Fatal(err)
	}
	key := Key{Src: netip.MustParseAddr("2001:db8:1::2"), Dst: netip.MustParseAddr("2001:db8:ff::10"), SrcPort: 40000, DstPort: 443, Proto: rewrite.ProtoTCP}
	e := Entry{Ifindex: testIfindex, NAT: true, Addr: netip.MustParseAddr("2001:db8:2::2"), Port: 40000, SrcMAC: hostMAC, DstMAC: gwMAC}
	if err := k.Put(Out, key, e); err != nil {
		t.Fatal(err)
	}
	plain := ipv6Frame(t, "2001:db8:1::2", "2001:db8:ff::10", 0)
	withNext := func(next layers.IPProtocol, ext []byte) []byte {
		b := append([]byte(nil), plain[:rewrite.EthHdrLen+40]...)
		b[rewrite.EthHdrLen+6] = byte(next)
		b = append(append(b, ext...), plain[rewrite.EthHdrLen+40:]...)
		plen := len(b) - rewrite.EthHdrLen - 40
		b[rewrite.EthHdrLen+4], b[rewrite.EthHdrLen+5] = byte(plen>>8), byte(plen)
		return b
	}
	fragment := withNext(layers.IPProtocolIPv6Fragment, []byte{byte(layers.IPProtocolTCP), 0, 0, 1, 0, 0, 0, 7}) // first fragment, more follow
	hopByHop := withNext(layers.IPProtocolIPv6HopByHop, []byte{byte(layers.IPProtocolTCP), 0, 1, 4, 0, 0, 0, 0})
	ptb := ipv6Frame(t, "2001:db8:1::2", "2001:db8:ff::10", rewrite.ICMPv6PacketTooBig)

	for _, c := range []struct {
		name     string
		frame    []byte
		wantFast bool
	}{
		{"a plain segment", plain, true},
		{"a fragment", fragment, false},
		{"a hop-by-hop header", hopByHop, false},
		{"Packet Too Big", ptb, false},
	} {
		before, _ := k.Stats()
		ret, out := run(t, k.Egress(), c.frame, nil)
		after, _ := k.Stats()
		fast, diverted := after.FastOut > before.FastOut, after.DivertOut > before.DivertOut
		if fast != c.wantFast || diverted == c.wantFast || ret != retNext && ret != retRedirect {
			t.Errorf("%s: ret %d, fast path %v, diverted %v; want fast path %v", c.name, int32(ret), fast, diverted, c.wantFast)
		}
		if !c.wantFast && !bytes.Equal(out[:len(c.frame)], c.frame) {
			t.Errorf("%s: changed on its way to user space", c.name)
		}
		if c.wantFast && !bytes.Equal(out[rewrite.EthHdrLen+8:rewrite.EthHdrLen+24], e.Addr.AsSlice()) {
			t.Errorf("%s: source %x, want it translated to %v", c.name, out[rewrite.EthHdrLen+8:rewrite.EthHdrLen+24], e.Addr)
		}
	}
}

// TestEach reads every entry of a map in chunks (more entries than one batch read returns),
// each once, with what was installed.
func TestEach(t *testing.T) {
	k := loadTest(t)
	const n = 3*readChunk + 17
	want := map[Key]uint16{}
	for i := range n {
		key := Key{Src: netip.AddrFrom4([4]byte{10, 1, byte(i >> 8), byte(i)}), Dst: netip.MustParseAddr("203.0.113.10"), SrcPort: uint16(1000 + i), DstPort: 443, Proto: rewrite.ProtoTCP}
		if err := k.Put(Out, key, Entry{Ifindex: 7, NAT: true, Addr: netip.MustParseAddr("10.2.0.2"), Port: uint16(i)}); err != nil {
			t.Fatal(err)
		}
		want[key] = uint16(i)
	}
	var r Reader
	for round := range 2 { // the reader's buffers are reused
		seen := 0
		err := k.Each(Out, &r, func(e Installed) {
			port, ok := want[e.Key]
			if !ok || !e.Entry.NAT || e.Entry.Port != port || e.Entry.Addr != netip.MustParseAddr("10.2.0.2") {
				t.Errorf("round %d: entry %+v not as installed", round, e)
			}
			seen++
		})
		if err != nil || seen != n {
			t.Fatalf("round %d: read %d entries of %d (%v)", round, seen, n, err)
		}
	}
}
