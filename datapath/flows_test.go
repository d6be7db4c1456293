package datapath

import (
	"net/netip"
	"testing"

	"github.com/l2shim/l2shim/conntrack"
	"github.com/l2shim/l2shim/failover"
	"github.com/l2shim/l2shim/rewrite"
)

// allFlows pages through the engine's flows matching ff, n at a time.
func allFlows(t *testing.T, d *Engine, ff *FlowFilter, n int) []FlowInfo {
	t.Helper()
	var out []FlowInfo
	pages := 0
	for cur := 0; cur >= 0; pages++ {
		before := len(out)
		out, cur = d.FlowsPage(cur, n, ff, out)
		if len(out)-before > min(n, MaxFlowsPage) {
			t.Fatalf("a page of %d flows, asked for %d", len(out)-before, n)
		}
		if pages > 10000 {
			t.Fatal("paging never ends")
		}
	}
	return out
}

// TestFlowsPage lists flows a page at a time with each filter, and checks what a listed flow
// says: its tuples both ways, NAT, gateway, reason, state and counters.
func TestFlowsPage(t *testing.T) {
	d := ruleDatapath(t, "[[rule]]\nname = \"dns via b\"\nprotocol = \"udp\"\ndst_port = 53\naction = \"route-to\"\ngateway = \"isp-b\"\n")
	// 1500 TCP flows, balanced; a UDP flow a rule routes via isp-b (NATed), answered; a
	// mid-stream TCP segment (pinned).
	for i := range 1500 {
		process(d, 0, syn(uint16(10000+i)).build(t))
	}
	dns := pkt{srcMAC: mac0, dstMAC: gwMAC0, src: addr0, dst: server, proto: 17, sport: 5353, dport: 53, payload: []byte("q")}
	process(d, 0, dns.build(t))
	reply := pkt{srcMAC: gwMAC1, dstMAC: mac1, src: server, dst: addr1, proto: 17, sport: 53, dport: 5353, payload: []byte("answer")}
	process(d, 1, reply.build(t))
	mid := pkt{srcMAC: mac0, dstMAC: gwMAC0, src: addr0, dst: server, proto: 6, sport: 999, dport: 22, ack: true}
	process(d, 0, mid.build(t))

	every := &FlowFilter{Gateway: AnyGateway}
	if got := allFlows(t, d, every, 7); len(got) != 1502 {
		t.Fatalf("%d flows listed 7 at a time, want 1502", len(got))
	}
	if got := allFlows(t, d, every, 5000); len(got) != 1502 {
		t.Fatalf("%d flows listed 1000 at a time, want 1502", len(got))
	}
	onB := allFlows(t, d, &FlowFilter{Gateway: 1}, 1000)
	onA := allFlows(t, d, &FlowFilter{Gateway: 0}, 1000)
	if len(onA)+len(onB) != 1502 || len(onA) < 600 || len(onB) < 600 {
		t.Fatalf("isp-a %d, isp-b %d flows", len(onA), len(onB))
	}

	udp := allFlows(t, d, &FlowFilter{Gateway: AnyGateway, Proto: rewrite.ProtoUDP}, 10)
	if len(udp) != 1 {
		t.Fatalf("udp flows: %+v", udp)
	}
	f := udp[0]
	want := conntrack.Key4(server, addr1, 53, 5353, 17)
	if f.Gateway != 1 || !f.NAT || f.Reply != want || f.Orig.Src != conntrack.Addr4(addr0) || f.Why != ReasonRule || f.Rule != 0 ||
		f.State() != "replied" || f.Packets != [2]uint64{1, 1} || f.Bytes[1] == 0 || f.HostIf != 0 || f.WireIf != 1 {
		t.Fatalf("dns flow: %+v", f)
	}
	for _, tc := range []struct {
		name string
		ff   FlowFilter
		want int
	}{
		{"port 53, host view", FlowFilter{Gateway: AnyGateway, Port: 53}, 1},
		{"port 5353 both views", FlowFilter{Gateway: AnyGateway, Port: 5353}, 1},
		{"wire address of the NAT", FlowFilter{Gateway: AnyGateway, Addr: netip.MustParsePrefix("10.2.0.2/32")}, len(onB)},
		{"server's /24", FlowFilter{Gateway: AnyGateway, Addr: netip.MustParsePrefix("203.0.113.0/24")}, 1502},
		{"nobody", FlowFilter{Gateway: AnyGateway, Addr: netip.MustParsePrefix("192.0.2.0/24")}, 0},
		{"syn-sent", FlowFilter{Gateway: AnyGateway, State: "syn-sent"}, 1500},
		{"established (the pinned one)", FlowFilter{Gateway: AnyGateway, State: "established"}, 1},
		{"tcp on isp-b", FlowFilter{Gateway: 1, Proto: rewrite.ProtoTCP}, len(onB) - 1},
		{"host routing", FlowFilter{Gateway: -1}, 0},
		{"active since later", FlowFilter{Gateway: AnyGateway, ActiveSince: 2}, 0},
		{"icmp port", FlowFilter{Gateway: AnyGateway, Proto: rewrite.ProtoICMP, Port: 7}, 0},
	} {
		if got := allFlows(t, d, &tc.ff, 100); len(got) != tc.want {
			t.Errorf("%s: %d flows, want %d", tc.name, len(got), tc.want)
		}
	}
	pinned := allFlows(t, d, &FlowFilter{Gateway: AnyGateway, Port: 22}, 10)
	if len(pinned) != 1 || pinned[0].Why != ReasonPinned || pinned[0].NAT {
		t.Fatalf("pinned flow: %+v", pinned)
	}
}

// TestFlowStates names every TCP state and the others.
func TestFlowStates(t *testing.T) {
	for _, tc := range []struct {
		fi   FlowInfo
		want string
	}{
		{FlowInfo{Orig: conntrack.Key{Proto: 6}, TCPState: conntrack.TCPNone}, "mid-stream"},
		{FlowInfo{Orig: conntrack.Key{Proto: 6}, TCPState: conntrack.TCPSynSent}, "syn-sent"},
		{FlowInfo{Orig: conntrack.Key{Proto: 6}, TCPState: conntrack.TCPSynRecv}, "syn-recv"},
		{FlowInfo{Orig: conntrack.Key{Proto: 6}, TCPState: conntrack.TCPEstablished}, "established"},
		{FlowInfo{Orig: conntrack.Key{Proto: 6}, TCPState: conntrack.TCPClosing}, "closing"},
		{FlowInfo{Orig: conntrack.Key{Proto: 6}, TCPState: conntrack.TCPClosed}, "closed"},
		{FlowInfo{Orig: conntrack.Key{Proto: 6}, TCPState: conntrack.TCPEstablished, Reset: true}, "reset"},
		{FlowInfo{Orig: conntrack.Key{Proto: 17}}, "unreplied"},
		{FlowInfo{Orig: conntrack.Key{Proto: 1}, Replied: true}, "replied"},
	} {
		if got := tc.fi.State(); got != tc.want {
			t.Errorf("%+v: %q, want %q", tc.fi, got, tc.want)
		}
		found := false
		for _, s := range FlowStates() {
			found = found || s == tc.want
		}
		if !found {
			t.Errorf("%q is not in FlowStates", tc.want)
		}
	}
}

// TestFlowsPageBoundsTheLock: a filter that matches nothing still returns after a bounded
// number of slots, with a cursor to go on.
func TestFlowsPageBoundsTheLock(t *testing.T) {
	d := testDatapath(t, failover.LoadBalance, 1, 1)
	for i := range 3 * pageSlotLimit / 2 {
		process(d, 0, syn(uint16(1000+i)).build(t))
	}
	page, next := d.FlowsPage(0, 10, &FlowFilter{Gateway: AnyGateway, Port: 1}, nil)
	if len(page) != 0 || next != pageSlotLimit {
		t.Fatalf("first page: %d flows, next %d; want 0 and %d", len(page), next, pageSlotLimit)
	}
	if _, next = d.FlowsPage(next, 10, &FlowFilter{Gateway: AnyGateway, Port: 1}, nil); next != -1 {
		t.Fatalf("second page ends at %d, want -1", next)
	}
}
