package datapath

import (
	"bytes"
	"net/netip"
	"testing"

	"github.com/gopacket/gopacket/layers"

	"github.com/l2shim/l2shim/failover"
)

// The MACs an L3 device's frames carry in the engine (the shim's choice; any will do).
var (
	l3If = [6]byte{0x02, 0x6c, 0x33, 0, 0, 1}
	l3Gw = [6]byte{0x02, 0x6c, 0x33, 0, 0, 2}
)

// l3Datapath is eth0 (Ethernet, isp-a) and ppp1 (no link-layer header, isp-b with neither
// address nor MAC configured).
func l3Datapath(t testing.TB) *Engine {
	t.Helper()
	ifaces := testIfaces()
	ifaces[1] = Iface{Name: "ppp1", Index: 3, MTU: 1492, L3: true, MAC: l3If, GatewayMAC: l3Gw, Addr: addr1, Addrs: [][4]byte{addr1},
		Prefixes: []netip.Prefix{netip.MustParsePrefix("10.2.0.2/32")}, Up: true}
	p := testPlan(failover.LoadBalance, 1, 1)
	p.Gateways[1] = GatewaySpec{Name: "isp-b", Iface: 1, Weight: 1, On: true}
	return New(ifaces, p, Options{Seed: 42, FastPath: true})
}

// TestL3Uplink places flows from an Ethernet interface on a gateway behind an L3 device: the
// gateway needs no ARP, frames leave with the MACs the device is known by (the shim strips
// them), replies return to the host with the Ethernet MACs it expects, and the kernel's entries
// say which side has no link-layer header.
func TestL3Uplink(t *testing.T) {
	d := l3Datapath(t)
	onL3 := 0
	for sport := uint16(40000); sport < 40100; sport++ {
		b := syn(sport).build(t)
		v := process(d, 0, b)
		if v.To != ToWire {
			t.Fatalf("port %d: verdict %+v", sport, v)
		}
		if v.Iface != 1 {
			continue
		}
		onL3++
		p := checkFrame(t, b)
		eth := p.Layer(layers.LayerTypeEthernet).(*layers.Ethernet)
		ip := p.Layer(layers.LayerTypeIPv4).(*layers.IPv4)
		if !bytes.Equal(eth.SrcMAC, l3If[:]) || !bytes.Equal(eth.DstMAC, l3Gw[:]) || !bytes.Equal(ip.SrcIP.To4(), addr1[:]) {
			t.Fatalf("port %d on ppp1: %v→%v from %v", sport, eth.SrcMAC, eth.DstMAC, ip.SrcIP)
		}
		// The hooks give the SYN-ACK from ppp1 the device's MACs.
		reply := pkt{srcMAC: l3Gw, dstMAC: l3If, src: server, dst: addr1, proto: 6, sport: 80, dport: sport, syn: true, ack: true}.build(t)
		rv := process(d, 1, reply)
		if rv.To != ToHost || rv.Iface != 0 {
			t.Fatalf("reply verdict %+v", rv)
		}
		rp := checkFrame(t, reply)
		reth := rp.Layer(layers.LayerTypeEthernet).(*layers.Ethernet)
		rip := rp.Layer(layers.LayerTypeIPv4).(*layers.IPv4)
		if !bytes.Equal(reth.DstMAC, mac0[:]) || !bytes.Equal(reth.SrcMAC, gwMAC0[:]) || !bytes.Equal(rip.DstIP.To4(), addr0[:]) {
			t.Fatalf("reply reaches the host as %v→%v for %v", reth.SrcMAC, reth.DstMAC, rip.DstIP)
		}
		// The handshake completes: the kernel may carry the flow.
		ack := syn(sport)
		ack.syn, ack.ack, ack.payload = false, true, nil
		if v := process(d, 0, ack.build(t)); v.To != ToWire || v.Iface != 1 {
			t.Fatalf("ACK verdict %+v", v)
		}
		var out, in *FastEntry
		for _, op := range d.FastChanges(nil) {
			if op.Key.SrcPort == sport && !op.In && !op.Delete {
				out = &op.Entry
			}
			if op.Key.DstPort == sport && op.In && !op.Delete && !op.Entry.DivertOnly {
				in = &op.Entry
			}
		}
		if out == nil || in == nil {
			t.Fatalf("port %d: no fast-path entries for a confirmed flow", sport)
		}
		if !out.ToL3 || out.Ifindex != 3 || in.ToL3 || in.Ifindex != 2 || in.DstMAC != mac0 || in.SrcMAC != gwMAC0 {
			t.Fatalf("port %d: entries out %+v in %+v", sport, *out, *in)
		}
	}
	if onL3 < 30 || onL3 > 70 {
		t.Fatalf("%d of 100 flows on the L3 uplink; want about half", onL3)
	}
}

// TestL3UplinkLinkState checks that an L3 gateway is unusable exactly while its link is down:
// there is no ARP to revive it, the link coming back does.
func TestL3UplinkLinkState(t *testing.T) {
	d := l3Datapath(t)
	place := func(from uint16) (onL3 int) {
		for sport := from; sport < from+50; sport++ {
			if v := process(d, 0, syn(sport).build(t)); v.To == ToWire && v.Iface == 1 {
				onL3++
			}
		}
		return onL3
	}
	if n := place(41000); n == 0 {
		t.Fatal("no flow on the L3 uplink while it is up")
	}
	d.SetLink(1, false)
	if n := place(42000); n != 0 {
		t.Fatalf("%d new flows on the L3 uplink while its link is down", n)
	}
	d.SetLink(1, true)
	if n := place(43000); n == 0 {
		t.Fatal("the L3 uplink takes no flows after its link came back")
	}
	// A re-created device (new ifindex) keeps its gateway usable without ARP.
	ifc := d.ifaces[1]
	ifc.Index = 9
	d.SetAddressing(1, ifc, 1)
	if n := place(44000); n == 0 {
		t.Fatal("the L3 uplink takes no flows after its device was re-created")
	}
	if got := d.table.Len(); got == 0 {
		t.Fatal("no flows tracked")
	}
}
