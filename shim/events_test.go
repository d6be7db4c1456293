package shim

import (
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/l2shim/l2shim/control"
	"github.com/l2shim/l2shim/datapath"
	"github.com/l2shim/l2shim/internal/testcfg"
)

// TestObserverEvents: the ring keeps the last MaxEvents in order with increasing sequence
// numbers; after returns what is newer, and its channel closes on the next event.
func TestObserverEvents(t *testing.T) {
	o := newObserver()
	at := time.Unix(1000, 0)
	if ev, _ := o.after(0); len(ev) != 0 {
		t.Fatalf("a fresh observer has %d events", len(ev))
	}
	for i := range control.MaxEvents + 50 {
		o.record(at.Add(time.Duration(i)*time.Second), "gateway", "isp-a", "x")
	}
	ev, next := o.after(0)
	if len(ev) != control.MaxEvents || ev[0].Seq != 51 || ev[len(ev)-1].Seq != control.MaxEvents+50 {
		t.Fatalf("kept %d events, %d..%d", len(ev), ev[0].Seq, ev[len(ev)-1].Seq)
	}
	for i := 1; i < len(ev); i++ {
		if ev[i].Seq != ev[i-1].Seq+1 || !ev[i].Time.After(ev[i-1].Time) {
			t.Fatalf("events out of order at %d", i)
		}
	}
	if ev, _ := o.after(control.MaxEvents + 48); len(ev) != 2 {
		t.Fatalf("after the last but two: %d events", len(ev))
	}
	if last := o.last(5); len(last) != 5 || last[4].Seq != control.MaxEvents+50 {
		t.Fatalf("last(5) = %+v", last)
	}
	select {
	case <-next:
		t.Fatal("the channel closed without a new event")
	default:
	}
	o.record(at, "reload", "", "y")
	select {
	case <-next:
	case <-time.After(time.Second):
		t.Fatal("the channel did not close on a new event")
	}
}

// TestEventsWait: a waiting Events call returns as soon as an event arrives, and an empty list
// after its wait.
func TestEventsWait(t *testing.T) {
	s := &Shim{}
	s.view.Store(&view{obs: newObserver()})
	start := time.Now()
	if ev := s.Events(0, 50*time.Millisecond); len(ev) != 0 || time.Since(start) < 50*time.Millisecond {
		t.Fatalf("Events without any: %v after %v", ev, time.Since(start))
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		time.Sleep(30 * time.Millisecond)
		s.event("drain", "isp-a", "drained: it takes no new flows")
	}()
	start = time.Now()
	ev := s.Events(0, 5*time.Second)
	wg.Wait()
	if len(ev) != 1 || ev[0].Kind != "drain" || time.Since(start) > 2*time.Second {
		t.Fatalf("Events = %+v after %v", ev, time.Since(start))
	}
}

// testEngine is an engine over the two test gateways, with rules from extra.
func testEngine(t *testing.T, extra string) (*Shim, *datapath.Engine) {
	t.Helper()
	cfg := parse(t, testcfg.TwoGateways+extra)
	plan, err := datapath.PlanFrom(cfg, []string{"eth0", "eth1"})
	if err != nil {
		t.Fatal(err)
	}
	ifaces := []datapath.Iface{
		{Name: "eth0", Index: 2, MTU: 1500, MAC: [6]byte{2, 0, 0, 0, 0, 0x10}, Addr: [4]byte{10, 1, 0, 2}, Addrs: [][4]byte{{10, 1, 0, 2}}, Up: true},
		{Name: "eth1", Index: 3, MTU: 1500, MAC: [6]byte{2, 0, 0, 0, 0, 0x11}, Addr: [4]byte{10, 2, 0, 2}, Addrs: [][4]byte{{10, 2, 0, 2}}, Up: true},
	}
	for i := range plan.Gateways {
		plan.Gateways[i].HasMAC, plan.Gateways[i].MAC = true, [6]byte{2, 0, 0, 0, 0, byte(1 + i)}
	}
	e := datapath.New(ifaces, plan, datapath.Options{Seed: 1})
	s := &Shim{cfg: cfg, engine: e, base: time.Now(), started: time.Now(), log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	s.publishView()
	return s, e
}

// TestExplainText: the shim names what the engine decided, step by step.
func TestExplainText(t *testing.T) {
	s, e := testEngine(t, `
[[rule]]
name = "web via b"
protocol = "tcp"
dst_port = 443
action = "route-to"
gateway = "isp-b"
[[rule]]
name = "bank"
dst = "198.51.100.0/24"
action = "balance"
affinity = "host-pair"
`)
	for _, tc := range []struct {
		name string
		q    control.ExplainQuery
		want []string
		gw   string
	}{
		{"route-to", control.ExplainQuery{Proto: "tcp", Src: "10.1.0.2", SrcPort: 40000, Dst: "203.0.113.10", DstPort: 443, Interface: "eth0"},
			[]string{`rule "web via b" matches: route-to isp-b, which is usable`, "its source becomes 10.2.0.2:40000", "would leave through isp-b (eth1), NATed to 10.2.0.2:40000; reason: rule (rule \"web via b\")"}, "isp-b"},
		{"balance, host-pair", control.ExplainQuery{Proto: "udp", Src: "10.1.0.2", SrcPort: 5000, Dst: "198.51.100.7", DstPort: 53, Interface: "eth0"},
			[]string{`rule "web via b" does not match: its protocol differs`, `rule "bank" matches: balance, with host-pair affinity`, "the address pair 10.1.0.2 ↔ 198.51.100.7"}, ""},
		{"inbound", control.ExplainQuery{Proto: "tcp", Src: "203.0.113.10", SrcPort: 5000, Dst: "10.2.0.2", DstPort: 22, Direction: "in"},
			[]string{"arriving on eth1", "source-aware: it arrives through isp-b", "would be answered through isp-b (eth1)"}, "isp-b"},
		{"inbound from a neighbour", control.ExplainQuery{Proto: "tcp", Src: "203.0.113.10", SrcPort: 5000, Dst: "10.2.0.2", DstPort: 22, Direction: "in", Via: "none"},
			[]string{"a neighbour that is no gateway", "would be left to the host's routing"}, ""},
	} {
		x := explainSays(t, s, tc.name, tc.q, tc.want)
		if tc.gw != "" && x.Gateway != tc.gw {
			t.Errorf("%s: gateway %q, want %q", tc.name, x.Gateway, tc.gw)
		}
		if len(x.Gateways) != 2 || x.Gateways[0].Name != "eth0" || x.Gateways[1].Name != "isp-b" {
			t.Errorf("%s: gateways %+v", tc.name, x.Gateways)
		}
	}
	for _, q := range []control.ExplainQuery{
		{Proto: "gre", Src: "10.1.0.2", Dst: "203.0.113.10"},
		{Proto: "tcp", Src: "10.1.0.2", Dst: "2001:db8::1"},
		{Proto: "tcp", Src: "10.1.0.2", Dst: "203.0.113.10", Interface: "eth7"},
		{Proto: "tcp", Src: "10.1.0.2", Dst: "203.0.113.10", Interface: "eth0", Direction: "sideways"},
		{Proto: "tcp", Src: "203.0.113.10", Dst: "192.0.2.1", Direction: "in"},
		{Proto: "tcp", Src: "203.0.113.10", Dst: "10.2.0.2", Direction: "in", Via: "isp-z"},
	} {
		if _, err := s.Explain(q); err == nil {
			t.Errorf("%+v accepted", q)
		}
	}
	if e.Flows() != 0 {
		t.Fatal("explain made flows")
	}
}

// TestFlowNames: a listed flow carries the configuration's names and says why in words.
func TestFlowNames(t *testing.T) {
	s, _ := testEngine(t, "")
	n := s.namer(s.config())
	for _, tc := range []struct {
		fi   datapath.FlowInfo
		want string
	}{
		{datapath.FlowInfo{Gateway: 1, Rule: -1, Why: datapath.ReasonBalanced}, "balanced"},
		{datapath.FlowInfo{Gateway: 1, Rule: -1, Why: datapath.ReasonRotated, Moves: 2}, "went unanswered 3 times, moved 2 times"},
		{datapath.FlowInfo{Gateway: 0, Rule: -1, Why: datapath.ReasonMoved, Moves: 1}, "moved off a gateway that went down"},
		{datapath.FlowInfo{Gateway: 0, Rule: -1, Why: datapath.ReasonPinned}, "predates l2shim"},
		{datapath.FlowInfo{Gateway: -1, Rule: -1, Why: datapath.ReasonHostRouting}, "no usable gateway"},
		{datapath.FlowInfo{Gateway: 1, Rule: -1, Why: datapath.ReasonAffinity}, "host-pair affinity"},
		{datapath.FlowInfo{Gateway: 1, Rule: 5, Why: datapath.ReasonRule}, "since reloaded away"},
	} {
		tc.fi.Orig.Proto, tc.fi.HostIf, tc.fi.WireIf = 6, 0, 1
		f := n.flow(&tc.fi)
		if !strings.Contains(f.Why, tc.want) {
			t.Errorf("%v: why %q, want %q", tc.fi.Why, f.Why, tc.want)
		}
		if f.HostIf != "eth0" || f.WireIf != "eth1" || f.Reason != tc.fi.Why.String() {
			t.Errorf("%+v", f)
		}
	}
	if got := n.gateway(1); got != "isp-b" {
		t.Errorf("gateway 1 is %q", got)
	}
}

// TestPublishRecordsEvents: the first view records the start; a drain, a reload and flows
// reset are recorded by the view that first sees them; a sample is taken at most once a
// second.
func TestPublishRecordsEvents(t *testing.T) {
	s, e := testEngine(t, "")
	s.state.Store(stateRunning)
	v := s.view.Load()
	if ev := v.obs.last(10); len(ev) != 1 || ev[0].Kind != "start" {
		t.Fatalf("after the first view: %+v", ev)
	}
	e.SetDrained(1, true)
	s.publishView()
	s.publishView()
	ev := s.view.Load().obs.last(10)
	kinds := []string{}
	for _, x := range ev {
		kinds = append(kinds, x.Kind+":"+x.Gateway+":"+x.Message)
	}
	joined := strings.Join(kinds, "\n")
	if len(ev) != 3 || !strings.Contains(joined, "gateway:isp-b:up → down: drained") || !strings.Contains(joined, "drain:isp-b:drained") {
		t.Fatalf("after a drain:\n%s", joined)
	}
	st := s.Status()
	if len(st.Events) != 3 || st.Affinity != "flow" {
		t.Fatalf("status events %+v, affinity %q", st.Events, st.Affinity)
	}
	// Flows reset and moved (an evacuation), and a reload that removes a gateway.
	e.Counters().Add(datapath.TCPReset, 2)
	e.Counters().Add(datapath.UDPMoved, 1)
	s.cfgMu.Lock()
	s.cfg = parse(t, testcfg.TwoGateways+"\n[[rule]]\naction = \"pass\"\n")
	s.cfg.File = "new.toml"
	s.cfgMu.Unlock()
	s.reloads.Add(1)
	s.publishView()
	ev = s.view.Load().obs.last(2)
	if len(ev) != 2 || ev[0].Kind != "reload" || !strings.Contains(ev[0].Message, "reloaded new.toml: 2 gateways, 1 rules") ||
		ev[1].Kind != "flows" || ev[1].Message != "2 TCP flows reset toward the host, 1 UDP flows moved to another gateway" {
		t.Fatalf("after a reload and an evacuation: %+v", ev)
	}
	if n := s.view.Load().obs.history.Len(); n != 1 {
		t.Fatalf("%d samples within a second, want 1", n)
	}
	if h := s.History(60); len(h) != 1 || len(h[0].Gateways) != 2 || h[0].Gateways[1].State != "up" { // taken by the first view, before the drain
		t.Fatalf("history %+v", h)
	}
}
