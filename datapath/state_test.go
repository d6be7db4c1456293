package datapath

import (
	"bytes"
	"net/netip"
	"strings"
	"testing"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"

	"github.com/l2shim/l2shim/failover"
)

// TestAddressChangeMovesNATedFlows: when the uplink a flow is NATed to gets a new address
// (DHCP), its UDP flows carry on from the new address and its TCP flows are reset toward the
// host, instead of leaving from an address the uplink no longer has.
func TestAddressChangeMovesNATedFlows(t *testing.T) {
	d := testDatapath(t, failover.LoadBalance, 1, 1000)
	udp := pkt{srcMAC: mac0, dstMAC: gwMAC0, src: addr0, dst: server, proto: 17, sport: 7700, dport: 4500}
	if v := process(d, 0, udp.build(t)); v.Iface != 1 {
		t.Fatalf("UDP flow not NATed onto eth1: %+v", v)
	}
	process(d, 0, syn(7701).build(t))
	process(d, 1, pkt{srcMAC: gwMAC1, dstMAC: mac1, src: server, dst: addr1, proto: 6, sport: 80, dport: 7701, syn: true, ack: true}.build(t))

	renewed := [4]byte{10, 2, 0, 77}
	eth1 := testIfaces()[1]
	eth1.Addr, eth1.Addrs = renewed, [][4]byte{renewed}
	old, ev := d.SetAddressing(1, eth1, 2)
	if old != addr1 || ev.Reset != 1 || ev.Moved != 1 || len(ev.Resets) != 1 {
		t.Fatalf("address change: old %v, %d reset (%d frames), %d moved; want %v, 1, 1", old, ev.Reset, len(ev.Resets), ev.Moved, addr1)
	}
	rst := checkFrame(t, ev.Resets[0].Frame).Layer(layers.LayerTypeTCP).(*layers.TCP)
	if !rst.RST || rst.DstPort != 7701 || ev.Resets[0].Iface != 0 {
		t.Fatalf("reset %+v on %d, want an RST to the host's port 7701 on eth0", rst, ev.Resets[0].Iface)
	}

	b := udp.build(t)
	if v := process(d, 0, b); v.To != ToWire || v.Iface != 1 {
		t.Fatalf("next datagram: %+v", v)
	}
	ip := gopacket.NewPacket(b, layers.LayerTypeEthernet, gopacket.Default).Layer(layers.LayerTypeIPv4).(*layers.IPv4)
	if !bytes.Equal(ip.SrcIP.To4(), renewed[:]) {
		t.Fatalf("datagram leaves from %v, want the new address %v", ip.SrcIP, netip.AddrFrom4(renewed))
	}
	rep := pkt{srcMAC: gwMAC1, dstMAC: mac1, src: server, dst: renewed, proto: 17, sport: 4500, dport: 7700}.build(t)
	if v := process(d, 1, rep); v.To != ToHost || v.Iface != 0 {
		t.Fatalf("reply to the new address: %+v", v)
	}
	rip := gopacket.NewPacket(rep, layers.LayerTypeEthernet, gopacket.Default).Layer(layers.LayerTypeIPv4).(*layers.IPv4)
	if !bytes.Equal(rip.DstIP.To4(), addr0[:]) {
		t.Fatalf("reply reaches the host for %v, want %v", rip.DstIP, netip.AddrFrom4(addr0))
	}
}

// TestUplinkWithoutAddressTakesNoFlows: while an uplink has no address (a lease being renewed),
// its gateways take no new flows and the status says why; with an address again they do.
func TestUplinkWithoutAddressTakesNoFlows(t *testing.T) {
	d := testDatapath(t, failover.LoadBalance, 1, 1000)
	bare := testIfaces()[1]
	bare.Addr, bare.Addrs, bare.Prefixes = [4]byte{}, nil, nil
	d.SetAddressing(1, bare, 1)
	for sport := uint16(7800); sport < 7820; sport++ {
		if v := process(d, 0, syn(sport).build(t)); v.Iface != 0 {
			t.Fatalf("new flow placed on the uplink without an address: %+v", v)
		}
	}
	st := failover.Evaluate(d.Snapshot(1).Gateways[1].Inputs)
	if st.State != failover.Down || !strings.Contains(st.Reason, "no IPv4 address") {
		t.Fatalf("status of isp-b: %v", st)
	}
	d.SetAddressing(1, testIfaces()[1], 2)
	if v := process(d, 0, syn(7900).build(t)); v.Iface != 1 {
		t.Fatalf("with its address back the uplink took no flow: %+v", v)
	}
}

// TestWireFrameWithHostMACIsNotRelayed: a neighbour on the uplink's segment sends a frame to
// the host's MAC with the host's MAC as its source, hoping to be taken for the host and relayed
// (placed, NATed, sent to a gateway) past the host's firewall. It is a wire frame: it goes to
// the host as it came, and nothing is placed.
func TestWireFrameWithHostMACIsNotRelayed(t *testing.T) {
	d := testDatapath(t, failover.LoadBalance, 1, 1000)
	neighbour := [4]byte{10, 1, 0, 66}
	b := pkt{srcMAC: mac0, dstMAC: mac0, src: neighbour, dst: server, proto: 6, sport: 9999, dport: 25, syn: true}.build(t)
	orig := append([]byte(nil), b...)
	if v := process(d, 0, b); v.To != ToHost || v.Iface != 0 || !bytes.Equal(b, orig) {
		t.Fatalf("spoofed frame: %+v (changed: %v), want it handed to the host untouched", v, !bytes.Equal(b, orig))
	}
	if d.Counters().Load(FramesOut) != 0 || d.Snapshot(1).Gateways[1].Stats.Placed.Load() != 0 {
		t.Fatalf("spoofed frame counted as the host's (%d frames out) or placed", d.Counters().Load(FramesOut))
	}
}

// TestWildcardServerAnswersFromAskedAddress: a UDP server bound to 0.0.0.0 answers a request
// that arrived on eth1 (to 10.2.0.2) from eth0's address, because the host's routing picks the
// source. l2shim sends the answer the way the request came, from the address the client asked.
func TestWildcardServerAnswersFromAskedAddress(t *testing.T) {
	d := testDatapath(t, failover.LoadBalance, 1000, 1)
	client := [4]byte{198, 51, 100, 20}
	req := pkt{srcMAC: gwMAC1, dstMAC: mac1, src: client, dst: addr1, proto: 17, sport: 40000, dport: 9000}
	for i := 0; i < 3; i++ {
		if v := process(d, 1, req.build(t)); v.To != ToHost || v.Iface != 1 {
			t.Fatalf("request: %+v", v)
		}
		ans := pkt{srcMAC: mac0, dstMAC: gwMAC0, src: addr0, dst: client, proto: 17, sport: 9000, dport: 40000, payload: []byte("answer")}.build(t)
		v := process(d, 0, ans)
		if v.To != ToWire || v.Iface != 1 {
			t.Fatalf("answer %d: %+v, want sent through eth1", i, v)
		}
		p := checkFrame(t, ans)
		eth := p.Layer(layers.LayerTypeEthernet).(*layers.Ethernet)
		ip := p.Layer(layers.LayerTypeIPv4).(*layers.IPv4)
		if !bytes.Equal(ip.SrcIP.To4(), addr1[:]) || !bytes.Equal(eth.SrcMAC, mac1[:]) || !bytes.Equal(eth.DstMAC, gwMAC1[:]) {
			t.Fatalf("answer %d leaves from %v (%v → %v), want %v via gw1", i, ip.SrcIP, eth.SrcMAC, eth.DstMAC, netip.AddrFrom4(addr1))
		}
	}
	if n := d.Flows(); n != 1 {
		t.Fatalf("%d flows: the answers must belong to the request's flow", n)
	}
}
