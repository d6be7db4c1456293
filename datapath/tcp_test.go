package datapath

import (
	"testing"

	"github.com/gopacket/gopacket/layers"

	"github.com/l2shim/l2shim/conntrack"
	"github.com/l2shim/l2shim/failover"
)

// natedConnection opens a TCP connection from the host (port sport, ISS 5000) that l2shim
// places on eth1 and NATs, completes the handshake (server ISS 90000) and moves 100 bytes
// from the server, so the host expects 90101 next. It returns the flow.
func natedConnection(t *testing.T, d *Engine, sport uint16) *conntrack.Flow {
	t.Helper()
	host := func(p pkt) pkt {
		p.srcMAC, p.dstMAC, p.src, p.dst, p.proto, p.sport, p.dport = mac0, gwMAC0, addr0, server, 6, sport, 80
		return p
	}
	wire := func(p pkt) pkt {
		p.srcMAC, p.dstMAC, p.src, p.dst, p.proto, p.sport, p.dport = gwMAC1, mac1, server, addr1, 6, 80, sport
		return p
	}
	if v := process(d, 0, host(pkt{syn: true, seq: 5000, wscale: 7}).build(t)); v.Iface != 1 {
		t.Fatalf("SYN not placed on eth1: %+v", v)
	}
	process(d, 1, wire(pkt{syn: true, ack: true, seq: 90000, ackNum: 5001}).build(t))
	process(d, 0, host(pkt{ack: true, seq: 5001, ackNum: 90001}).build(t))
	process(d, 1, wire(pkt{ack: true, seq: 90001, ackNum: 5001, payload: make([]byte, 100)}).build(t))
	process(d, 0, host(pkt{ack: true, seq: 5001, ackNum: 90101}).build(t))
	d.mu.Lock()
	defer d.mu.Unlock()
	fl := d.table.LookupOrig(conntrack.Key4(addr0, server, sport, 80, 6))
	if fl == nil || fl.TCPState != conntrack.TCPEstablished || fl.HostRcvNext != 90101 {
		t.Fatalf("connection not established as expected: %+v", fl)
	}
	return fl
}

func wireSeg(sport uint16, p pkt) []byte {
	p.srcMAC, p.dstMAC, p.src, p.dst, p.proto, p.sport, p.dport = gwMAC1, mac1, server, addr1, 6, 80, sport
	return p.build(&testing.T{})
}

// TestForgedRSTLeavesFlow: an RST from the wire at any sequence number but the one the host
// expects next is what the host answers with a challenge ACK (RFC 5961): l2shim delivers it but
// keeps the flow (and its NAT) as it is. The exact one closes it.
func TestForgedRSTLeavesFlow(t *testing.T) {
	d := testDatapath(t, failover.LoadBalance, 1, 1000)
	fl := natedConnection(t, d, 7100)
	for _, seq := range []uint32{1, 90100, 90102, 90101 + 30000, 0x80000000} {
		if v := process(d, 1, wireSeg(7100, pkt{rst: true, seq: seq})); v.To != ToHost {
			t.Fatalf("forged RST seq %d: %+v, want delivered to the host", seq, v)
		}
		if fl.TCPState != conntrack.TCPEstablished {
			t.Fatalf("forged RST seq %d moved the flow to state %d", seq, fl.TCPState)
		}
	}
	process(d, 1, wireSeg(7100, pkt{rst: true, seq: 90101}))
	if fl.TCPState != conntrack.TCPClosed {
		t.Fatalf("the RST the host accepts left the flow in state %d", fl.TCPState)
	}
}

// TestForgedFINLeavesFlow: a FIN outside the window the host announced does not move the flow
// to closing; one inside it does.
func TestForgedFINLeavesFlow(t *testing.T) {
	d := testDatapath(t, failover.LoadBalance, 1, 1000)
	fl := natedConnection(t, d, 7101)
	// The host announced 65535 << 7: about 8 MiB from 90101.
	for _, seq := range []uint32{90101 + 9<<20, 90101 + 0xffffffff - 9<<20, 0xdead0000} {
		process(d, 1, wireSeg(7101, pkt{fin: true, ack: true, seq: seq, ackNum: 5001}))
		if fl.TCPState != conntrack.TCPEstablished {
			t.Fatalf("forged FIN seq %d moved the flow to state %d", seq, fl.TCPState)
		}
	}
	process(d, 1, wireSeg(7101, pkt{fin: true, ack: true, seq: 90101, ackNum: 5001}))
	if fl.TCPState != conntrack.TCPClosing {
		t.Fatalf("an in-window FIN left the flow in state %d", fl.TCPState)
	}
}

// TestForgedDataCannotMoveHostRcvNext: a segment far beyond the host's window must not move
// the sequence number l2shim's own resets carry, or the reset of a dead gateway's flow would be
// one the host ignores.
func TestForgedDataCannotMoveHostRcvNext(t *testing.T) {
	d := testDatapath(t, failover.LoadBalance, 1, 1000)
	natedConnection(t, d, 7102)
	process(d, 1, wireSeg(7102, pkt{ack: true, seq: 90101 + 1<<30, ackNum: 5001, payload: make([]byte, 10)}))
	ev := d.Evacuate(1, 10)
	if len(ev.Resets) != 1 {
		t.Fatalf("%d resets, want 1", len(ev.Resets))
	}
	rst := checkFrame(t, ev.Resets[0].Frame).Layer(layers.LayerTypeTCP).(*layers.TCP)
	if rst.Seq != 90101 {
		t.Fatalf("reset toward the host has seq %d, want 90101 (what the host expects)", rst.Seq)
	}
}

// TestForgedSYNACKIsNoAnswer: a SYN-ACK that does not acknowledge the host's SYN is no answer:
// the flow stays unanswered (so it still rotates off a dead gateway) and the gateway gets no
// credit for it.
func TestForgedSYNACKIsNoAnswer(t *testing.T) {
	d := testDatapath(t, failover.LoadBalance, 1, 1000)
	process(d, 0, pkt{srcMAC: mac0, dstMAC: gwMAC0, src: addr0, dst: server, proto: 6, sport: 7103, dport: 80, syn: true, seq: 5000}.build(t))
	process(d, 1, wireSeg(7103, pkt{syn: true, ack: true, seq: 1, ackNum: 77}))
	fl := d.table.LookupOrig(conntrack.Key4(addr0, server, 7103, 80, 6))
	if fl.Replied || fl.TCPState != conntrack.TCPSynSent {
		t.Fatalf("forged SYN-ACK counted: replied %v state %d", fl.Replied, fl.TCPState)
	}
	process(d, 1, wireSeg(7103, pkt{syn: true, ack: true, seq: 1, ackNum: 5001}))
	if !fl.Replied || fl.TCPState != conntrack.TCPSynRecv {
		t.Fatalf("the real SYN-ACK not counted: replied %v state %d", fl.Replied, fl.TCPState)
	}
}
