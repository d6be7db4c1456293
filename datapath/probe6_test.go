package datapath

import (
	"bytes"
	"encoding/binary"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/gopacket/gopacket/layers"

	"github.com/l2shim/l2shim/conntrack"
	"github.com/l2shim/l2shim/failover"
	"github.com/l2shim/l2shim/rewrite"
)

// echoReply6 is an ICMPv6 echo reply from server6 to dst on eth1's link with identifier id and
// sequence number seq, checksum right.
func echoReply6(t *testing.T, dst [16]byte, id, seq uint16) []byte {
	t.Helper()
	b := pkt6{srcMAC: gw6MAC1, dstMAC: mac1, src: server6, dst: dst, proto: 58, icmpType: 129, sport: id}.build(t)
	icmp := b[rewrite.EthHdrLen+40:]
	binary.BigEndian.PutUint16(icmp[6:], seq)
	icmp[2], icmp[3] = 0, 0
	c := rewrite.Checksum(icmp, rewrite.PseudoHeaderSum6(server6, dst, rewrite.ProtoICMPv6, len(icmp)))
	binary.BigEndian.PutUint16(icmp[2:], c)
	return b
}

// TestProbe6Echo: an IPv6 probe is an ICMPv6 echo request from the uplink's global IPv6
// address to its IPv6 router's MAC; only a reply from the target, with the identifier chosen
// for it, to that address, counts, and only for a request of the current round. A reply with
// another identifier, or to another address, is none of the probe's (the host gets it); one
// with a sequence number from an earlier round is consumed but counts for nothing.
func TestProbe6Echo(t *testing.T) {
	d := testDatapath6(t, failover.LoadBalance, 1, 1)
	id := d.AddProbe6(1, server6)
	pt := d.probeList[id]
	buf := make([]byte, ProbeFrameLen)
	replied, rtt := make([]bool, 1), make([]time.Duration, 1)
	results := func() bool {
		d.ProbeResults([]ProbeID{id}, replied, rtt)
		return replied[0]
	}

	// Round 1: two requests (sequence 1 and 2).
	d.StartProbeRound([]ProbeID{id})
	var n int
	for range 2 {
		var v6 bool
		if n, v6 = d.ProbeFrame(id, buf, 1); n == 0 || !v6 {
			t.Fatalf("ProbeFrame = %d, v6 %v", n, v6)
		}
	}
	p := checkFrame6(t, buf[rewrite.VnetHdrLen:n])
	eth := p.Layer(layers.LayerTypeEthernet).(*layers.Ethernet)
	ip := p.Layer(layers.LayerTypeIPv6).(*layers.IPv6)
	echo := p.Layer(layers.LayerTypeICMPv6Echo).(*layers.ICMPv6Echo)
	if !bytes.Equal(eth.SrcMAC, mac1[:]) || !bytes.Equal(eth.DstMAC, gw6MAC1[:]) || addr6Of(ip.SrcIP) != host6b || addr6Of(ip.DstIP) != server6 ||
		echo.Identifier != pt.id || echo.SeqNumber != 2 {
		t.Fatalf("probe %v → %v, %v → %v, id %d seq %d", eth.SrcMAC, eth.DstMAC, ip.SrcIP, ip.DstIP, echo.Identifier, echo.SeqNumber)
	}

	// Round 2 starts: sequence 3 from now on. A late answer to round 1 counts for nothing,
	// before and after this round's first request.
	d.StartProbeRound([]ProbeID{id})
	if v, _ := processVnetAt(d, 1, echoReply6(t, host6b, pt.id, 2), rewrite.VnetHdr{}, 5); v.To != Consumed || results() {
		t.Fatalf("late reply before any request of the round: %+v, counted %v", v, replied[0])
	}
	if n, _ = d.ProbeFrame(id, buf, 10); n == 0 {
		t.Fatal("no frame")
	}
	if v, _ := processVnetAt(d, 1, echoReply6(t, host6b, pt.id, 1), rewrite.VnetHdr{}, 11); v.To != Consumed || results() {
		t.Fatalf("reply to round 1's request: %+v, counted %v", v, replied[0])
	}
	// Another identifier, or another destination: not the probe's.
	if v, _ := processVnetAt(d, 1, echoReply6(t, host6b, pt.id+1, 3), rewrite.VnetHdr{}, 12); v.To == Consumed || results() {
		t.Fatalf("reply with another identifier: %+v, counted %v", v, replied[0])
	}
	other := netip.MustParseAddr("2001:db8:b::99").As16()
	if v, _ := processVnetAt(d, 1, echoReply6(t, other, pt.id, 3), rewrite.VnetHdr{}, 13); v.To == Consumed || results() {
		t.Fatalf("reply to another address: %+v, counted %v", v, replied[0])
	}
	// An IPv4 reply from the IPv4-mapped form of nothing registered: not taken either.
	if v := process(d, 1, pkt{srcMAC: gwMAC1, dstMAC: mac1, src: server, dst: addr1, proto: 1, icmpType: 0, sport: pt.id}.build(t)); v.To == Consumed {
		t.Fatalf("IPv4 reply with the IPv6 probe's identifier consumed: %+v", v)
	}
	// The right one.
	if v, _ := processVnetAt(d, 1, echoReply6(t, host6b, pt.id, 3), rewrite.VnetHdr{}, 10+int64(time.Millisecond)); v.To != Consumed || !results() || rtt[0] != time.Millisecond {
		t.Fatalf("reply: %+v, replied %v rtt %v", v, replied[0], rtt[0])
	}
	if d.bestRTT(1, true) != int64(time.Millisecond) || d.bestRTT(1, false) != 0 {
		t.Errorf("bestRTT IPv6 %d, IPv4 %d", d.bestRTT(1, true), d.bestRTT(1, false))
	}
	if n, _ = d.ProbeFrame(id, buf, 20); n != 0 {
		t.Error("a target that answered this round is probed again")
	}

	// A host ping6 with the probe's identifier is remapped on the wire.
	d.SetDrained(0, true)
	req := pkt6{srcMAC: mac0, dstMAC: gw6MAC0, src: host6, dst: server6, proto: 58, icmpType: 128, sport: pt.id}.build(t)
	if v := process(d, 0, req); v.To != ToWire || v.Iface != 1 {
		t.Fatalf("host ping6 verdict %+v", v)
	}
	if e := checkFrame6(t, req).Layer(layers.LayerTypeICMPv6Echo).(*layers.ICMPv6Echo); e.Identifier == pt.id {
		t.Fatal("host ping6 left with the probe's identifier")
	}

	// No frame while the uplink has no global IPv6 address or its router is unknown.
	d2 := New(testIfaces6(), testPlan(failover.LoadBalance, 1, 1), Options{Seed: 42})
	id2 := d2.AddProbe6(1, server6)
	d2.StartProbeRound([]ProbeID{id2})
	if n, _ := d2.ProbeFrame(id2, buf, 1); n != 0 || d2.Probe6Ready(1) {
		t.Errorf("router unknown: frame of %d bytes, ready %v", n, d2.Probe6Ready(1))
	}
	d2.ResolvedMAC6(1, gw6MAC1)
	if !d2.Probe6Ready(1) {
		t.Error("router known: not ready")
	}
}

// TestProbe6NeighborAdvert: the router's answer to a neighbour solicitation is a solicited
// neighbour advertisement for the router's address, code 0, hop limit 255, with sane options;
// anything else is not.
func TestProbe6NeighborAdvert(t *testing.T) {
	router := netip.MustParseAddr("fe80::1").As16()
	routerMAC := [6]byte{0x02, 0, 0, 0, 0, 0x31}
	na := func(edit func(b []byte) []byte) []byte {
		b := make([]byte, 32)
		b[0] = 136
		b[4] = 0x40 | 0x80 // solicited, router
		copy(b[8:24], router[:])
		b[24], b[25] = 2, 1
		copy(b[26:32], routerMAC[:])
		if edit != nil {
			b = edit(b)
		}
		return b
	}
	for _, tc := range []struct {
		name           string
		msg            []byte
		hops           int
		ok, hasMAC     bool
		wantRouterMAC6 bool
	}{
		{"answer with target MAC", na(nil), 255, true, true, true},
		{"answer without options", na(func(b []byte) []byte { return b[:24] }), 255, true, false, false},
		{"after a nonce option", na(func(b []byte) []byte { return append(b, 14, 1, 1, 2, 3, 4, 5, 6) }), 255, true, true, true},
		{"forwarded (hop limit 64)", na(nil), 64, false, false, false},
		{"unsolicited", na(func(b []byte) []byte { b[4] = 0x20; return b }), 255, false, false, false},
		{"for another address", na(func(b []byte) []byte { b[23] = 2; return b }), 255, false, false, false},
		{"a solicitation", na(func(b []byte) []byte { b[0] = 135; return b }), 255, false, false, false},
		{"code 1", na(func(b []byte) []byte { b[1] = 1; return b }), 255, false, false, false},
		{"truncated", na(func(b []byte) []byte { return b[:20] }), 255, false, false, false},
		{"zero option length", na(func(b []byte) []byte { b[25] = 0; return b }), 255, false, false, false},
		{"option past the end", na(func(b []byte) []byte { b[25] = 2; return b }), 255, false, false, false},
		{"short option", na(func(b []byte) []byte { return b[:28] }), 255, false, false, false},
	} {
		mac, hasMAC, ok := MatchNA(tc.msg, tc.hops, router)
		if ok != tc.ok || hasMAC != tc.hasMAC || (tc.wantRouterMAC6 && mac != routerMAC) {
			t.Errorf("%s: ok %v hasMAC %v mac %x", tc.name, ok, hasMAC, mac)
		}
	}

	// The solicitation: type 135, the router as target, our MAC as source link-layer
	// address, sent to the router's solicited-node group.
	ns := make([]byte, NSLen)
	mine := [6]byte{0x02, 0, 0, 0, 0, 0x10}
	if n := BuildNS(ns, router, mine); n != NSLen || ns[0] != 135 || ns[1] != 0 || [16]byte(ns[8:24]) != router ||
		ns[24] != 1 || ns[25] != 1 || [6]byte(ns[26:32]) != mine {
		t.Errorf("NS %x", ns)
	}
	if g := netip.AddrFrom16(SolicitedNode(netip.MustParseAddr("2001:db8::12:3456").As16())); g != netip.MustParseAddr("ff02::1:ff12:3456") {
		t.Errorf("solicited-node group %v", g)
	}
}

// TestProbe6FamilyLoss: a gateway whose IPv6 probes fail while IPv4 ones answer takes no new
// IPv6 flows but still IPv4 ones; evacuating its IPv6 flows resets the IPv6 TCP flow and
// moves the IPv6 UDP flow to the other uplink, while its IPv4 flows stay as they were. The
// status shows IPv4 up and IPv6 down. Without IPv6 probes of its own (ProbeVerdict6(nil)),
// IPv6 follows the IPv4 verdict as before; with them an IPv4-only loss keeps IPv6 usable.
func TestProbe6FamilyLoss(t *testing.T) {
	d := testDatapath6(t, failover.LoadBalance, 1, 1)
	d.SetDrained(0, true) // every flow on eth1 to begin with
	tcp4 := pkt{srcMAC: mac0, dstMAC: gwMAC0, src: addr0, dst: server, proto: 6, sport: 5000, dport: 443, syn: true}
	udp4 := pkt{srcMAC: mac0, dstMAC: gwMAC0, src: addr0, dst: server, proto: 17, sport: 5001, dport: 9999}
	tcp6 := pkt6{srcMAC: mac0, dstMAC: gw6MAC0, src: host6, dst: server6, proto: 6, sport: 5000, dport: 443, syn: true}
	udp6 := pkt6{srcMAC: mac0, dstMAC: gw6MAC0, src: host6, dst: server6, proto: 17, sport: 5001, dport: 9999}
	for i, b := range [][]byte{tcp4.build(t), udp4.build(t), tcp6.build(t), udp6.build(t)} {
		if v := process(d, 0, b); v.To != ToWire || v.Iface != 1 {
			t.Fatalf("flow %d verdict %+v", i, v)
		}
	}
	d.SetDrained(0, false)

	// gw1's IPv6 probes: its IPv6 target missed 3 rounds in a row; IPv4 answers.
	ps6 := failover.NewProbeState6(1, 3)
	for range 3 {
		ps6.Round([]bool{true, false})
	}
	sum := ps6.Summary()
	d.ProbeVerdict6(1, &sum)
	if !d.cands[1].Usable || d.cands6[1].Usable || !d.cands6[0].Usable {
		t.Fatalf("usable IPv4 %v IPv6 %v (eth0 IPv6 %v)", d.cands[1].Usable, d.cands6[1].Usable, d.cands6[0].Usable)
	}
	snap := d.Snapshot(1)
	st4, st6 := failover.Evaluate(snap.Gateways[1].Inputs), failover.Evaluate(snap.Gateways[1].Inputs6)
	if st4.State != failover.Up || st6.State != failover.Down || !strings.Contains(st6.Reason, "1 of 1 IPv6 target missed 3 rounds") {
		t.Fatalf("status: IPv4 %v, IPv6 %v", st4, st6)
	}

	ev := d.EvacuateFamily(1, IPv6Only, 2)
	if ev.Reset != 1 || ev.Moved != 1 || len(ev.Resets) != 1 {
		t.Fatalf("IPv6 evacuation %+v", ev)
	}
	if ip := checkFrame6(t, ev.Resets[0].Frame).Layer(layers.LayerTypeIPv6).(*layers.IPv6); addr6Of(ip.DstIP) != host6 {
		t.Fatalf("reset to %v", ip.DstIP)
	}
	d.table.Range(func(fl *conntrack.Flow) bool {
		v4 := fl.Orig.Is4()
		switch {
		case v4 && (fl.Gateway != 1 || fl.Reset):
			t.Errorf("IPv4 flow %v: gateway %d reset %v, want untouched on 1", fl.Orig, fl.Gateway, fl.Reset)
		case !v4 && fl.Orig.Proto == rewrite.ProtoTCP && !fl.Reset:
			t.Errorf("IPv6 TCP flow not reset")
		case !v4 && fl.Orig.Proto == rewrite.ProtoUDP && fl.Gateway != 0:
			t.Errorf("IPv6 UDP flow on gateway %d, want moved to 0", fl.Gateway)
		}
		return true
	})
	// Frames follow: IPv4 UDP still through eth1, IPv6 UDP now through eth0 from eth0's
	// address; new IPv6 flows never go to eth1, new IPv4 ones still may.
	if v := process(d, 0, udp4.build(t)); v.Iface != 1 {
		t.Errorf("IPv4 UDP flow now leaves on eth%d", v.Iface)
	}
	if v := process(d, 0, udp6.build(t)); v.Iface != 0 {
		t.Errorf("IPv6 UDP flow now leaves on eth%d", v.Iface)
	}
	on := [2]int{}
	on4 := [2]int{}
	for i := range 40 {
		b := pkt6{srcMAC: mac0, dstMAC: gw6MAC0, src: host6, dst: server6, proto: 6, sport: uint16(6000 + i), dport: 443, syn: true}.build(t)
		on[process(d, 0, b).Iface]++
		b4 := pkt{srcMAC: mac0, dstMAC: gwMAC0, src: addr0, dst: server, proto: 6, sport: uint16(6000 + i), dport: 443, syn: true}.build(t)
		on4[process(d, 0, b4).Iface]++
	}
	if on[1] != 0 || on4[0] == 0 || on4[1] == 0 {
		t.Errorf("new flows: IPv6 %v, IPv4 %v (by uplink)", on, on4)
	}

	// IPv6 answers again: usable again.
	for range 3 {
		ps6.Round([]bool{true, true})
	}
	sum = ps6.Summary()
	d.ProbeVerdict6(1, &sum)
	if !d.cands6[1].Usable {
		t.Error("IPv6 not usable after recovery")
	}

	// An IPv4-only loss: with IPv6 probes of its own IPv6 stays usable; without, it follows.
	down4 := failover.ProbeSummary{Up: false, Targets: 1, Missing: 1, Misses: 3}
	d.ProbeVerdict(1, down4, 3)
	if d.cands[1].Usable || !d.cands6[1].Usable {
		t.Errorf("IPv4 loss, own IPv6 verdict: usable IPv4 %v IPv6 %v", d.cands[1].Usable, d.cands6[1].Usable)
	}
	d.ProbeVerdict6(1, nil)
	if d.cands[1].Usable || d.cands6[1].Usable {
		t.Errorf("IPv4 loss, no IPv6 probes: usable IPv4 %v IPv6 %v", d.cands[1].Usable, d.cands6[1].Usable)
	}
}
