package fastpath

import (
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
)

// natFlipFrame is a frame of a NATed flow for the program benchmarks, and the two entries
// that translate it: the first from the frame's tuple to the other address, the second back.
// A repeated test run rewrites the same buffer, so with both installed every run is a full
// translation (addresses, checksums, MACs), as on the wire.
func natFlipFrame(b *testing.B, k *Kernel, d Direction, proto layers.IPProtocol, payload int) []byte {
	b.Helper()
	peer, local, nat := netip.MustParseAddr("198.51.100.7"), netip.MustParseAddr("10.1.0.2"), netip.MustParseAddr("10.2.0.2")
	src, dst := local, peer
	srcMAC, dstMAC := hostMAC, gwMAC
	if d == In {
		src, dst = peer, nat
		srcMAC, dstMAC = gwMAC, hostMAC
	}
	eth := &layers.Ethernet{SrcMAC: net.HardwareAddr(srcMAC[:]), DstMAC: net.HardwareAddr(dstMAC[:]), EthernetType: layers.EthernetTypeIPv4}
	ip := &layers.IPv4{Version: 4, TTL: 64, Protocol: proto, SrcIP: src.AsSlice(), DstIP: dst.AsSlice()}
	var l4 gopacket.SerializableLayer
	if proto == layers.IPProtocolTCP {
		tcp := &layers.TCP{SrcPort: 40000, DstPort: 443, Seq: 1, Ack: 1, ACK: true, Window: 512}
		if d == In {
			tcp.SrcPort, tcp.DstPort = 443, 40000
		}
		tcp.SetNetworkLayerForChecksum(ip)
		l4 = tcp
	} else {
		udp := &layers.UDP{SrcPort: 40000, DstPort: 4433}
		if d == In {
			udp.SrcPort, udp.DstPort = 4433, 40000
		}
		udp.SetNetworkLayerForChecksum(ip)
		l4 = udp
	}
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{ComputeChecksums: true, FixLengths: true},
		eth, ip, l4, gopacket.Payload(make([]byte, payload))); err != nil {
		b.Fatal(err)
	}
	sport, dport := uint16(40000), uint16(443)
	if proto == layers.IPProtocolUDP {
		dport = 4433
	}
	key := Key{Src: src, Dst: dst, SrcPort: sport, DstPort: dport, Proto: uint8(proto)}
	flipped := Key{Src: nat, Dst: dst, SrcPort: sport, DstPort: dport, Proto: uint8(proto)}
	if d == In {
		key = Key{Src: src, Dst: dst, SrcPort: dport, DstPort: sport, Proto: uint8(proto)}
		flipped = Key{Src: src, Dst: local, SrcPort: dport, DstPort: sport, Proto: uint8(proto)}
	}
	other := local
	if d == Out {
		other = nat
	}
	// The MACs alternate too: each run writes them. The destination MAC in stays the host's
	// (the ingress program takes only frames to it).
	e1 := Entry{Ifindex: testIfindex, NAT: true, Addr: other, Port: sport, SrcMAC: [6]byte{2, 0, 0, 0, 0, 0xa}, DstMAC: dstMAC}
	e2 := Entry{Ifindex: testIfindex, NAT: true, Addr: key.Dst, Port: sport, SrcMAC: [6]byte{2, 0, 0, 0, 0, 0xb}, DstMAC: dstMAC}
	if d == Out {
		e2.Addr = key.Src
		// Out, the source MAC stays the host's (the egress program takes only its frames).
		e1.SrcMAC, e2.SrcMAC = hostMAC, hostMAC
		e1.DstMAC, e2.DstMAC = [6]byte{2, 0, 0, 0, 0, 0xc}, [6]byte{2, 0, 0, 0, 0, 0xd}
	}
	if err := k.Put(d, key, e1); err != nil {
		b.Fatal(err)
	}
	if err := k.Put(d, flipped, e2); err != nil {
		b.Fatal(err)
	}
	return buf.Bytes()
}

// carried counts the frames the benchmark's two entries carried.
func carried(b *testing.B, k *Kernel, d Direction) uint64 {
	b.Helper()
	var n uint64
	err := k.Each(d, nil, func(in Installed) { n += in.Counts.Packets })
	if err != nil {
		b.Fatal(err)
	}
	return n
}

// benchProgram reports the program's own time per frame, as BPF_PROG_TEST_RUN measures it
// over repeated runs on one buffer.
func benchProgram(b *testing.B, p *ebpf.Program, frame []byte) {
	const repeat = 10000
	var total time.Duration
	runs := 0
	for b.Loop() {
		ret, d, err := p.Benchmark(frame, repeat, nil)
		if err != nil {
			b.Fatal(err)
		}
		if ret != retNext {
			b.Fatalf("returned %d, want TCX_NEXT", int32(ret))
		}
		total += d * repeat
		runs += repeat
	}
	b.ReportMetric(float64(total.Nanoseconds())/float64(runs), "ns/frame")
}

// benchTranslating runs benchProgram and checks that every run was a translation.
func benchTranslating(b *testing.B, k *Kernel, d Direction, p *ebpf.Program, frame []byte) {
	benchProgram(b, p, frame)
	// A test run the kernel interrupts is started again (cilium/ebpf retries on EINTR), so
	// a few runs more may have counted.
	if n := carried(b, k, d); n < uint64(b.N)*10000 {
		b.Fatalf("the entries carried %d frames of %d runs", n, b.N*10000)
	}
}

// benchKernel loads the programs the way l2shim's systemd unit does (unit: only its
// capabilities, so the verifier adds its Spectre barriers) or as root with every capability.
func benchKernel(b *testing.B, unit bool) *Kernel {
	var k *Kernel
	load := func() (err error) {
		k, err = Load(Options{Mark: 0xa0, Mask: 0xf0, Heartbeat: time.Minute, MaxFlows: 4096})
		return err
	}
	var err error
	if unit {
		err = withCapabilities(unitCapabilities(b), load)
	} else {
		err = load()
	}
	if err != nil {
		b.Skip("loading BPF programs:", err)
	}
	b.Cleanup(func() { k.Close() })
	if err := k.SetIface(testIfindex, Iface{MAC: hostMAC, Capture: 99, CaptureHost: 98}); err != nil {
		b.Fatal(err)
	}
	if err := k.Beat(); err != nil {
		b.Fatal(err)
	}
	return k
}

// benchBoth runs fn with the programs loaded as the unit loads them and as root.
func benchBoth(b *testing.B, fn func(b *testing.B, k *Kernel)) {
	for _, c := range []struct {
		name string
		unit bool
	}{{"unit", true}, {"root", false}} {
		b.Run(c.name, func(b *testing.B) { fn(b, benchKernel(b, c.unit)) })
	}
}

func BenchmarkIngressUDPNAT(b *testing.B) {
	benchBoth(b, func(b *testing.B, k *Kernel) {
		benchTranslating(b, k, In, k.Ingress(), natFlipFrame(b, k, In, layers.IPProtocolUDP, 64))
	})
}

func BenchmarkIngressTCPNAT(b *testing.B) {
	benchBoth(b, func(b *testing.B, k *Kernel) {
		benchTranslating(b, k, In, k.Ingress(), natFlipFrame(b, k, In, layers.IPProtocolTCP, 1400))
	})
}

func BenchmarkEgressTCPNAT(b *testing.B) {
	benchBoth(b, func(b *testing.B, k *Kernel) {
		benchTranslating(b, k, Out, k.Egress(), natFlipFrame(b, k, Out, layers.IPProtocolTCP, 1400))
	})
}
