package datapath

import (
	"testing"
	"time"

	"github.com/l2shim/l2shim/conntrack"
	"github.com/l2shim/l2shim/failover"
	"github.com/l2shim/l2shim/rewrite"
)

func smallEngine(t *testing.T, maxFlows int, edit func(p *Plan)) *Engine {
	t.Helper()
	p := testPlan(failover.LoadBalance, 1, 1000)
	p.MaxFlows = maxFlows
	if edit != nil {
		edit(&p)
	}
	return New(testIfaces(), p, Options{Seed: 42})
}

// TestSpoofedUDPCannotPinTable: spoofed datagrams to the host's DNS server from many addresses,
// each answered by the host and kept busy past StreamAfter (assured), fill only the wire's
// share of the table; the host's own new flows are still placed, and new connections from the
// wire to other ports still tracked.
func TestSpoofedUDPCannotPinTable(t *testing.T) {
	const maxFlows = 2048
	d := smallEngine(t, maxFlows, nil)
	now := int64(0)
	for i := 0; i < 3000; i++ {
		src := [4]byte{198, 18, byte(i >> 8), byte(i)}
		q := pkt{srcMAC: gwMAC1, dstMAC: mac1, src: src, dst: addr1, proto: 17, sport: uint16(1024 + i), dport: 53}
		a := pkt{srcMAC: mac1, dstMAC: gwMAC1, src: addr1, dst: src, proto: 17, sport: 53, dport: uint16(1024 + i)}
		processVnetAt(d, 1, q.build(t), rewrite.VnetHdr{}, now)
		// Tracked or not, the host's answer leaves the way the request came.
		if v, _ := processVnetAt(d, 1, a.build(t), rewrite.VnetHdr{}, now+int64(3*time.Second)); v.To != ToWire || v.Iface != 1 {
			t.Fatalf("answer %d: %v via %d, want sent through gw1 on eth1", i, v.To, v.Iface)
		}
	}
	now += int64(3 * time.Second)
	if got, want := d.Flows(), maxFlows/8; got != want {
		t.Fatalf("%d flows after the flood, want the port's share %d", got, want)
	}
	if d.Counters().Load(InboundRefused) == 0 {
		t.Fatal("no inbound flow refused")
	}
	for sport := uint16(20000); sport < 20000+maxFlows-maxFlows/8; sport++ {
		if v, _ := processVnetAt(d, 0, syn(sport).build(t), rewrite.VnetHdr{}, now); v.To != ToWire {
			t.Fatalf("host flow %d during the flood: %v via %d, want placed (flows %d, table full %d)", sport, v.To, v.Iface, d.Flows(), d.Counters().Load(TableFull))
		}
	}
	if got := d.Counters().Load(TableFull); got != 0 || d.Flows() != maxFlows {
		t.Fatalf("%d host flows found the table full; %d flows", got, d.Flows())
	}
}

// TestTableFullFailsClosed: when the table is full of flows it may not evict, a new flow that
// a drop rule or a strict route-to covers is dropped, not left to the host's routing; any
// other flow is left to it.
func TestTableFullFailsClosed(t *testing.T) {
	rules := compileRules(t, `
[[rule]]
name = "no smtp"
protocol = "tcp"
dst_port = 25
action = "drop"
[[rule]]
name = "bank via b only"
protocol = "tcp"
dst_port = 443
action = "route-to"
gateway = "isp-b"
strict = true
`)
	d := smallEngine(t, 1024, func(p *Plan) { p.Rules = rules })
	// Fill the table with the host's established connections.
	for sport := uint16(1); d.Flows() < 1024; sport++ {
		s := syn(sport)
		s.dport = 80
		v := process(d, 0, s.build(t))
		wire := pkt{srcMAC: gwMAC1, dstMAC: mac1, src: server, dst: addr1, proto: 6, sport: 80, dport: sport, syn: true, ack: true, ackNum: 1002}
		if v.Iface == 0 {
			wire.srcMAC, wire.dstMAC, wire.dst = gwMAC0, mac0, addr0
		}
		process(d, v.Iface, wire.build(t))
		a := syn(sport)
		a.syn, a.ack, a.seq, a.payload = false, true, 1002, nil
		process(d, 0, a.build(t))
	}
	for _, c := range []struct {
		dport uint16
		want  Where
	}{{25, Drop}, {443, Drop}, {80, ToWire}} {
		s := syn(60000)
		s.dport = c.dport
		if v := process(d, 0, s.build(t)); v.To != c.want || c.want == ToWire && v.Iface != 0 {
			t.Fatalf("port %d with the table full: %+v, want %v", c.dport, v, c.want)
		}
	}
	if d.Counters().Load(TableFull) != 3 {
		t.Fatalf("%d table-full refusals, want 3", d.Counters().Load(TableFull))
	}
}

// TestSpoofedHandshakeStaysUnconfirmed: a blind spoofer sends a SYN, never sees the host's
// SYN-ACK, and "completes" the handshake with a guessed ACK: the flow stays unconfirmed (first
// to be evicted), not established.
func TestSpoofedHandshakeStaysUnconfirmed(t *testing.T) {
	d := testDatapath(t, failover.LoadBalance, 1, 1000)
	spoofed := [4]byte{198, 51, 100, 9}
	wire := func(p pkt) []byte {
		p.srcMAC, p.dstMAC, p.src, p.dst, p.proto, p.sport, p.dport = gwMAC1, mac1, spoofed, addr1, 6, 4444, 22
		return p.build(t)
	}
	process(d, 1, wire(pkt{syn: true, seq: 7000}))
	process(d, 1, pkt{srcMAC: mac1, dstMAC: gwMAC1, src: addr1, dst: spoofed, proto: 6, sport: 22, dport: 4444, syn: true, ack: true, seq: 123456, ackNum: 7001}.build(t))
	process(d, 1, wire(pkt{ack: true, seq: 7001, ackNum: 1}))
	fl := d.table.LookupOrig(conntrack.Key4(addr1, spoofed, 22, 4444, 6))
	if fl == nil || fl.Class() != conntrack.ClassUnconfirmed {
		t.Fatalf("spoofed handshake: %+v", fl)
	}
	process(d, 1, wire(pkt{ack: true, seq: 7001, ackNum: 123457}))
	if fl.Class() != conntrack.ClassEstablished {
		t.Fatalf("the real handshake's ACK left the flow in class %v", fl.Class())
	}
}
