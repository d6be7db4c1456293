package datapath

import (
	"bytes"
	"fmt"
	"testing"
	"time"

	"github.com/gopacket/gopacket/layers"

	"github.com/l2shim/l2shim/conf"
	"github.com/l2shim/l2shim/failover"
	"github.com/l2shim/l2shim/filters"
	"github.com/l2shim/l2shim/internal/testcfg"
	"github.com/l2shim/l2shim/rewrite"
)

func processAt(d *Engine, in int, b []byte, now int64) Output {
	v, _ := processVnetAt(d, in, b, rewrite.VnetHdr{}, now)
	return v
}

// TestSynRotation: the third SYN of an unanswered connection moves it to the next gateway,
// NAT following; a late SYN-ACK through the first gateway is answered with an RST upstream.
func TestSynRotation(t *testing.T) {
	d := testDatapath(t, failover.Failover, 1, 1)
	reconfigure(t, d, func(p *Plan) {
		p.Config.Health = failover.HealthConfig{Window: time.Minute, FailRatio: 0.5, MinAttempts: 4}
	})
	sec := int64(time.Second)
	var v Output
	for i, at := range []int64{0, 1 * sec, 3 * sec} {
		b := syn(8000).build(t)
		v = processAt(d, 0, b, at)
		ip := checkFrame(t, b).Layer(layers.LayerTypeIPv4).(*layers.IPv4)
		want, wantSrc := 0, addr0
		if i == 2 {
			want, wantSrc = 1, addr1
		}
		if v.Iface != want || !bytes.Equal(ip.SrcIP.To4(), wantSrc[:]) {
			t.Fatalf("SYN %d left via %d from %v, want %d from %v", i+1, v.Iface, ip.SrcIP, want, wantSrc)
		}
	}
	if d.Counters().Load(Rotations) != 1 {
		t.Fatalf("%d rotations, want 1", d.Counters().Load(Rotations))
	}
	if st := d.health.Stats(0, 3*sec); st.Attempts != 1 {
		t.Fatalf("gateway 0 health %+v, want one attempt", st)
	}
	// The server answers the second SYN late, through gw0: an RST goes back up, nothing to the host.
	late := pkt{srcMAC: gwMAC0, dstMAC: mac0, src: server, dst: addr0, proto: 6, sport: 80, dport: 8000, syn: true, ack: true}.build(t)
	v = processAt(d, 0, late, 3*sec+1)
	if v.To != ToWire || v.Iface != 0 || len(v.Frame) != rewrite.VnetHdrLen+rewrite.RSTLen {
		t.Fatalf("late SYN-ACK verdict %+v, want an RST out of eth0", v)
	}
	rst := checkFrame(t, v.Frame[rewrite.VnetHdrLen:]).Layer(layers.LayerTypeTCP).(*layers.TCP)
	if !rst.RST || rst.SrcPort != 8000 || rst.DstPort != 80 || rst.Seq != 1001 {
		t.Fatalf("answer is %+v, want RST 8000→80 seq 1001 (the SYN-ACK's ack)", rst)
	}
	// The answer through gw1 reaches the host, and the success is credited to gw1.
	ok := pkt{srcMAC: gwMAC1, dstMAC: mac1, src: server, dst: addr1, proto: 6, sport: 80, dport: 8000, syn: true, ack: true}.build(t)
	if v := processAt(d, 1, ok, 3*sec+2); v.To != ToHost || v.Iface != 0 {
		t.Fatalf("SYN-ACK through gw1 verdict %+v", v)
	}
	// A failure counts once gw1 reached the destination.
	if st := d.health.Stats(0, 3*sec+3); st.Failures != 1 {
		t.Fatalf("gateway 0 health %+v, want one counted failure", st)
	}
}

// TestUDPRetryRotation: a UDP request retried without an answer moves on the third datagram,
// but a burst of datagrams does not count as retries.
func TestUDPRetryRotation(t *testing.T) {
	d := testDatapath(t, failover.Failover, 1, 1)
	dns := pkt{srcMAC: mac0, dstMAC: gwMAC0, src: addr0, dst: server, proto: 17, sport: 5353, dport: 53}
	sec := int64(time.Second)
	for i := 0; i < 10; i++ { // a burst: 10 datagrams in 10 ms
		if v := processAt(d, 0, dns.build(t), int64(i)*1e6); v.Iface != 0 {
			t.Fatalf("burst datagram %d rotated", i)
		}
	}
	if v := processAt(d, 0, dns.build(t), 2*sec); v.Iface != 0 {
		t.Fatal("first retry rotated")
	}
	if v := processAt(d, 0, dns.build(t), 4*sec); v.Iface != 1 {
		t.Fatalf("second retry (third request) stayed on %d", v.Iface)
	}
}

// TestEvacuate: when a gateway goes down its TCP flows are reset toward the host with the
// sequence number the host expects, and its UDP flows move.
func TestEvacuate(t *testing.T) {
	d := testDatapath(t, failover.Failover, 1, 1)
	process(d, 0, syn(8100).build(t))
	sa := pkt{srcMAC: gwMAC0, dstMAC: mac0, src: server, dst: addr0, proto: 6, sport: 80, dport: 8100, syn: true, ack: true, payload: []byte("hello")}.build(t)
	process(d, 0, sa)
	process(d, 0, pkt{srcMAC: mac0, dstMAC: gwMAC0, src: addr0, dst: server, proto: 17, sport: 8101, dport: 53}.build(t))
	d.ProbeVerdict(0, failover.ProbeSummary{Up: false}, 5)
	ev := d.Evacuate(0, 5)
	rsts, reset, moved := ev.Resets, ev.Reset, ev.Moved
	if reset != 1 || moved != 1 || len(rsts) != 1 {
		t.Fatalf("reset %d moved %d (%d frames), want 1 and 1", reset, moved, len(rsts))
	}
	tcp := checkFrame(t, rsts[0].Frame).Layer(layers.LayerTypeTCP).(*layers.TCP)
	// The SYN-ACK had seq 1000, SYN counts one, payload five.
	if !tcp.RST || tcp.SrcPort != 80 || tcp.DstPort != 8100 || tcp.Seq != 1006 || rsts[0].Iface != 0 {
		t.Fatalf("RST to host %+v on %d, want 80→8100 seq 1006 on eth0", tcp, rsts[0].Iface)
	}
	// Data from the server still in flight after the reset is dropped, so the host's sequence
	// space stays where the RST expects it.
	late := pkt{srcMAC: gwMAC0, dstMAC: mac0, src: server, dst: addr0, proto: 6, sport: 80, dport: 8100, ack: true, payload: []byte("late")}.build(t)
	if v := process(d, 0, late); v.To != Drop || v.Reason != DropReset {
		t.Fatalf("data of a reset flow verdict %+v, want dropped", v)
	}
	// A new connection on the same tuple is placed afresh (gw1 now), not dropped.
	if v := process(d, 0, syn(8100).build(t)); v.To != ToWire || v.Iface != 1 {
		t.Fatalf("new SYN on a reset flow's tuple: %+v, want placed on gw1", v)
	}
	// The UDP flow now leaves via gw1, NATed.
	u := pkt{srcMAC: mac0, dstMAC: gwMAC0, src: addr0, dst: server, proto: 17, sport: 8101, dport: 53}.build(t)
	if v := process(d, 0, u); v.Iface != 1 {
		t.Fatalf("moved UDP flow left via %d", v.Iface)
	}
}

// TestHealthBenches: enough counted failures bench a gateway, and the tick reports it.
func TestHealthBenches(t *testing.T) {
	d := testDatapath(t, failover.Failover, 1, 1)
	reconfigure(t, d, func(p *Plan) {
		p.Config.Health = failover.HealthConfig{Window: time.Minute, FailRatio: 0.5, MinAttempts: 4}
	})
	sec := int64(time.Second)
	for i := 0; i < 4; i++ {
		port := uint16(8200 + i)
		base := int64(i) * 10 * sec
		for _, at := range []int64{0, 1 * sec, 3 * sec} {
			processAt(d, 0, syn(port).build(t), base+at)
		}
		sa := pkt{srcMAC: gwMAC1, dstMAC: mac1, src: server, dst: addr1, proto: 6, sport: 80, dport: port, syn: true, ack: true}.build(t)
		processAt(d, 1, sa, base+3*sec+1)
	}
	trans, changed, allDown := d.HealthTick(40 * sec)
	if len(trans) != 1 || !trans[0].Benched || trans[0].Gateway != 0 || changed || allDown {
		t.Fatalf("transitions %+v changed %v allDown %v", trans, changed, allDown)
	}
	if v := processAt(d, 0, syn(8300).build(t), 40*sec); v.Iface != 1 {
		t.Fatalf("new flow placed on benched gateway (%d)", v.Iface)
	}
}

func compileRules(t *testing.T, src string) *filters.Set {
	t.Helper()
	cfg, err := conf.Parse("rules.toml", []byte(testcfg.TwoGateways+src))
	if err != nil {
		t.Fatal(err)
	}
	set, err := filters.Compile(cfg, []string{"eth0", "eth1"})
	if err != nil {
		t.Fatal(err)
	}
	return set
}

func TestRules(t *testing.T) {
	d := testDatapath(t, failover.Failover, 1, 1)
	rules := compileRules(t, `
[[rule]]
name = "mail via b"
protocol = "tcp"
dst_port = 25
action = "route-to"
gateway = "isp-b"
[[rule]]
name = "no telnet"
protocol = "tcp"
dst_port = 23
action = "drop"
[[rule]]
name = "dns as the host wants"
protocol = "udp"
dst_port = 53
action = "pass"
[[rule]]
name = "strict b"
protocol = "tcp"
dst_port = 26
action = "route-to"
gateway = "isp-b"
strict = true
[[rule]]
name = "no inbound ssh on b"
direction = "in"
interface = "eth1"
protocol = "tcp"
dst_port = 22
action = "drop"
`)
	reconfigure(t, d, func(p *Plan) { p.Rules = rules })
	mk := func(dport uint16, proto uint8) []byte {
		p := syn(9000 + dport)
		p.dport, p.proto = dport, proto
		return p.build(t)
	}
	if v := process(d, 0, mk(25, 6)); v.To != ToWire || v.Iface != 1 {
		t.Fatalf("route-to verdict %+v", v)
	}
	if v := process(d, 0, mk(23, 6)); v.To != Drop || v.Reason != DropRule {
		t.Fatalf("drop verdict %+v", v)
	}
	b := mk(53, 17)
	orig := append([]byte(nil), b...)
	if v := process(d, 0, b); v.To != ToWire || v.Iface != 0 || !bytes.Equal(b, orig) {
		t.Fatalf("pass verdict %+v", v)
	}
	if v := process(d, 0, mk(80, 6)); v.Iface != 0 {
		t.Fatalf("unmatched flow not load-balanced normally: %+v", v)
	}
	// With isp-b down, a plain route-to fails over; a strict one drops.
	d.ProbeVerdict(1, failover.ProbeSummary{Up: false}, 1)
	p := syn(9125)
	p.dport = 25
	if v := process(d, 0, p.build(t)); v.To != ToWire || v.Iface != 0 {
		t.Fatalf("route-to with its gateway down: %+v", v)
	}
	if v := process(d, 0, mk(26, 6)); v.To != Drop {
		t.Fatalf("strict route-to with its gateway down: %+v", v)
	}
	in := pkt{srcMAC: gwMAC1, dstMAC: mac1, src: server, dst: addr1, proto: 6, sport: 40000, dport: 22, syn: true}.build(t)
	if v := process(d, 1, in); v.To != Drop {
		t.Fatalf("inbound drop rule verdict %+v", v)
	}
	stats := d.Snapshot(1).Rules.Stats()
	if stats[0].Flows != 2 || stats[1].Flows != 1 || stats[1].Packets != 1 || stats[4].Flows != 1 {
		t.Fatalf("rule counters %+v", stats)
	}
}

// TestRotationStartsCountAgain: after a move, the SYNs through the new gateway are counted
// from one, so the connection stays there for syn_retries more SYNs instead of bouncing back
// on the very next one.
func TestRotationStartsCountAgain(t *testing.T) {
	d := testDatapath(t, failover.Failover, 1, 1)
	sec := int64(time.Second)
	want := []int{0, 0, 1, 1, 0} // SYN 3 moves to gw1, SYN 5 (the third there) back to gw0
	for i, at := range []int64{0, 1 * sec, 3 * sec, 7 * sec, 15 * sec} {
		if v := processAt(d, 0, syn(8300).build(t), at); v.Iface != want[i] {
			t.Fatalf("SYN %d left via %d, want %d", i+1, v.Iface, want[i])
		}
	}
	if got := d.Counters().Load(Rotations); got != 2 {
		t.Fatalf("%d rotations, want 2", got)
	}
}

// TestOneWayUDPNeverRotates: a one-way stream (syslog, RTP) is never answered, but its
// datagrams differ: none is a retry, so it keeps its uplink and its source address.
func TestOneWayUDPNeverRotates(t *testing.T) {
	d := testDatapath(t, failover.Failover, 1, 1)
	sec := int64(time.Second)
	for i := 0; i < 10; i++ {
		p := pkt{srcMAC: mac0, dstMAC: gwMAC0, src: addr0, dst: server, proto: 17, sport: 5514, dport: 514, payload: []byte(fmt.Sprintf("<13>message %d", i))}
		if v := processAt(d, 0, p.build(t), int64(i)*sec); v.Iface != 0 {
			t.Fatalf("datagram %d of a one-way stream moved to %d", i, v.Iface)
		}
	}
	if got := d.Counters().Load(Rotations); got != 0 {
		t.Fatalf("%d rotations, want 0", got)
	}
}
