package datapath

import (
	"bytes"
	"encoding/binary"
	"testing"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/ip4defrag"
	"github.com/gopacket/gopacket/layers"

	"github.com/l2shim/l2shim/failover"
	"github.com/l2shim/l2shim/rewrite"
)

// TestPathMTUFragments: a datagram without DF (what a LAN's Windows client or a DNS server
// sends) larger than the path MTU of the gateway its flow is placed on (1400, below the host
// interface's 1500) leaves in fragments of at most 1400 bytes, NATed, as a router on that path
// would cut it; reassembled, it is the datagram the host sent with the new source. With a
// partial checksum too (the host's UDP socket leaves it to the device).
func TestPathMTUFragments(t *testing.T) {
	for _, partial := range []bool{false, true} {
		d := testDatapath(t, failover.LoadBalance, 1, 1000)
		reconfigure(t, d, func(p *Plan) { p.Gateways[1].MTU = 1400 })
		payload := make([]byte, 2900)
		for i := range payload {
			payload[i] = byte(i * 7)
		}
		frame := pkt{srcMAC: mac0, dstMAC: gwMAC0, src: addr0, dst: server, proto: 17, sport: 5353, dport: 53, payload: payload}.build(t)
		want := bytes.Clone(frame)
		vnet := rewrite.VnetHdr{}
		if partial {
			// The field holds the pseudo-header sum, as for a CHECKSUM_PARTIAL frame.
			l4 := rewrite.EthHdrLen + 20
			binary.BigEndian.PutUint16(frame[l4+6:], rewrite.Fold(rewrite.PseudoHeaderSum(addr0, server, 17, len(frame)-l4)))
			vnet = rewrite.VnetHdr{Flags: rewrite.VnetNeedsCsum, CsumStart: uint16(l4), CsumOffset: 6}
		}
		in := make([]byte, rewrite.VnetHdrLen+len(frame))
		vnet.Encode(in)
		copy(in[rewrite.VnetHdrLen:], frame)
		b := NewBatch(1)
		b.Add(in)
		d.ProcessBatch(0, b, 1)
		if len(b.Out) != 3 {
			t.Fatalf("partial %v: %d outputs, want 3 fragments: %+v", partial, len(b.Out), b.Out)
		}
		defrag := ip4defrag.NewIPv4Defragmenter()
		var whole *layers.IPv4
		for i, o := range b.Out {
			if o.To != ToWire || o.Iface != 1 {
				t.Fatalf("fragment %d: to %v interface %d, want the wire of eth1", i, o.To, o.Iface)
			}
			p := gopacket.NewPacket(o.Frame[rewrite.VnetHdrLen:], layers.LayerTypeEthernet, gopacket.Default)
			eth := p.Layer(layers.LayerTypeEthernet).(*layers.Ethernet)
			ip := p.Layer(layers.LayerTypeIPv4).(*layers.IPv4)
			if !bytes.Equal(eth.SrcMAC, mac1[:]) || !bytes.Equal(eth.DstMAC, gwMAC1[:]) {
				t.Errorf("fragment %d: MACs %v → %v, want eth1's to gateway 1's", i, eth.SrcMAC, eth.DstMAC)
			}
			if int(ip.Length) > 1400 || !ip.SrcIP.Equal(addr1[:]) {
				t.Errorf("fragment %d: %d bytes from %v, want at most 1400 from %v", i, ip.Length, ip.SrcIP, addr1)
			}
			if rewrite.Checksum(o.Frame[rewrite.VnetHdrLen+rewrite.EthHdrLen:][:20], 0) != 0 {
				t.Errorf("fragment %d: bad header checksum", i)
			}
			w, err := defrag.DefragIPv4(ip)
			if err != nil {
				t.Fatalf("fragment %d: reassembly: %v", i, err)
			}
			if w != nil {
				whole = w
			}
		}
		if whole == nil {
			t.Fatal("the fragments do not reassemble into a datagram")
		}
		// The reassembled datagram is the host's with the NATed source: its UDP checksum
		// verifies over the new pseudo-header, and the payload is intact.
		if rewrite.Checksum(whole.Payload, rewrite.PseudoHeaderSum(addr1, server, 17, len(whole.Payload))) != 0 {
			t.Errorf("partial %v: the reassembled datagram's UDP checksum does not verify", partial)
		}
		if !bytes.Equal(whole.Payload[8:], want[rewrite.EthHdrLen+28:]) || binary.BigEndian.Uint16(whole.Payload) != 5353 {
			t.Errorf("partial %v: reassembled payload differs from the host's", partial)
		}
		if n := d.Counters().Load(Fragmented); n != 1 {
			t.Errorf("fragmented counter %d, want 1", n)
		}
	}
}

// TestFragmentsAllocateNothing: cutting a datagram allocates nothing per frame.
func TestFragmentsAllocateNothing(t *testing.T) {
	d := testDatapath(t, failover.LoadBalance, 1, 1000)
	reconfigure(t, d, func(p *Plan) { p.Gateways[1].MTU = 1400 })
	frame := pkt{srcMAC: mac0, dstMAC: gwMAC0, src: addr0, dst: server, proto: 17, sport: 5353, dport: 53, payload: make([]byte, 1472)}.build(t)
	in := make([]byte, rewrite.VnetHdrLen+len(frame))
	b := NewBatch(1)
	run := func() {
		copy(in[rewrite.VnetHdrLen:], frame)
		b.Reset()
		b.Add(in)
		d.ProcessBatch(0, b, 1)
	}
	run()
	if len(b.Out) != 2 {
		t.Fatalf("%d outputs, want 2 fragments", len(b.Out))
	}
	if a := testing.AllocsPerRun(100, run); a != 0 {
		t.Fatalf("%v allocations per frame", a)
	}
}
