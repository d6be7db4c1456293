package shim

import (
	"io"
	"log/slog"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/l2shim/l2shim/control"
	"github.com/l2shim/l2shim/datapath"
	"github.com/l2shim/l2shim/internal/testcfg"
)

// testEngine6 is testEngine with an IPv6 view: eth0 has 2001:db8:a::2/64, eth1
// 2001:db8:b::2/64; both gateways' IPv6 routers are resolved unless no6 names one.
func testEngine6(t *testing.T, extra string, no6 int) (*Shim, *datapath.Engine) {
	t.Helper()
	cfg := parse(t, testcfg.TwoGateways+extra)
	plan, err := datapath.PlanFrom(cfg, []string{"eth0", "eth1"})
	if err != nil {
		t.Fatal(err)
	}
	a6 := func(s string) [16]byte { return netip.MustParseAddr(s).As16() }
	ifaces := []datapath.Iface{
		{Name: "eth0", Index: 2, MTU: 1500, MAC: [6]byte{2, 0, 0, 0, 0, 0x10}, Addr: [4]byte{10, 1, 0, 2}, Addrs: [][4]byte{{10, 1, 0, 2}}, Up: true,
			Addr6: a6("2001:db8:a::2"), Addrs6: [][16]byte{a6("2001:db8:a::2")}, Prefixes6: []netip.Prefix{netip.MustParsePrefix("2001:db8:a::/64")}},
		{Name: "eth1", Index: 3, MTU: 1500, MAC: [6]byte{2, 0, 0, 0, 0, 0x11}, Addr: [4]byte{10, 2, 0, 2}, Addrs: [][4]byte{{10, 2, 0, 2}}, Up: true,
			Addr6: a6("2001:db8:b::2"), Addrs6: [][16]byte{a6("2001:db8:b::2")}, Prefixes6: []netip.Prefix{netip.MustParsePrefix("2001:db8:b::/64")}},
	}
	for i := range plan.Gateways {
		plan.Gateways[i].HasMAC, plan.Gateways[i].MAC = true, [6]byte{2, 0, 0, 0, 0, byte(1 + i)}
	}
	e := datapath.New(ifaces, plan, datapath.Options{Seed: 1})
	for i := range plan.Gateways {
		if i != no6 {
			e.ResolvedMAC6(i, [6]byte{2, 0, 0, 0, 0, byte(0x21 + i)})
		}
	}
	s := &Shim{cfg: cfg, engine: e, base: time.Now(), started: time.Now(), log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	s.publishView()
	return s, e
}

// TestExplainText6: IPv6 flows are explained as IPv4 ones: rules with IPv6 prefixes, NAT66
// in brackets, "icmp" as ICMPv6, the inbound case, on-link and link-local destinations, and
// usability for IPv6 (a gateway whose IPv6 router is unknown takes no IPv6 flow).
func TestExplainText6(t *testing.T) {
	const rules = `
[[rule]]
name = "v6 servers via b"
dst = "2001:db8:ffff::/48"
action = "route-to"
gateway = "isp-b"
[[rule]]
name = "no pings to c"
protocol = "icmp"
dst = "2001:db8:c::/48"
action = "drop"
`
	s, e := testEngine6(t, rules, -1)
	for _, tc := range []struct {
		name string
		q    control.ExplainQuery
		want []string
		gw   string // "?": any
	}{
		{"route-to by IPv6 prefix, NAT66", control.ExplainQuery{Proto: "tcp", Src: "2001:db8:a::2", SrcPort: 40000, Dst: "2001:db8:ffff::10", DstPort: 443, Interface: "eth0"},
			[]string{"tcp [2001:db8:a::2]:40000 → [2001:db8:ffff::10]:443 sent on eth0", `rule "v6 servers via b" matches: route-to isp-b, which is usable`,
				"its source becomes [2001:db8:b::2]:40000", "would leave through isp-b (eth1), NATed to [2001:db8:b::2]:40000; reason: rule (rule \"v6 servers via b\")"}, "isp-b"},
		{"icmp is ICMPv6", control.ExplainQuery{Proto: "icmp", Src: "2001:db8:a::2", SrcPort: 7, Dst: "2001:db8:c::1", Interface: "eth0"},
			[]string{"A new icmp [2001:db8:a::2]:7 → [2001:db8:c::1]:7", `rule "no pings to c" matches: drop`, "would be dropped"}, ""},
		{"IPv4-mapped is IPv4", control.ExplainQuery{Proto: "tcp", Src: "::ffff:10.1.0.2", SrcPort: 40000, Dst: "203.0.113.10", DstPort: 443, Interface: "eth0"},
			[]string{"tcp 10.1.0.2:40000 → 203.0.113.10:443"}, "?"},
		{"inbound", control.ExplainQuery{Proto: "tcp", Src: "2001:db8:fffe::10", SrcPort: 5000, Dst: "2001:db8:b::2", DstPort: 22, Direction: "in"},
			[]string{"arriving on eth1", "source-aware: it arrives through isp-b", "would be answered through isp-b (eth1)"}, "isp-b"},
		{"on-link", control.ExplainQuery{Proto: "udp", Src: "2001:db8:a::2", SrcPort: 1, Dst: "2001:db8:b::9", DstPort: 2, Interface: "eth0"},
			[]string{"2001:db8:b::9 is on a directly attached network"}, ""},
		{"link-local", control.ExplainQuery{Proto: "tcp", Src: "2001:db8:a::2", SrcPort: 1, Dst: "fe80::1%eth0", DstPort: 22, Interface: "eth0"},
			[]string{"link-scoped IPv6", "never steers it"}, ""},
	} {
		x := explainSays(t, s, tc.name, tc.q, tc.want)
		if tc.gw != "?" && x.Gateway != tc.gw {
			t.Errorf("%s: gateway %q, want %q", tc.name, x.Gateway, tc.gw)
		}
	}
	for _, q := range []control.ExplainQuery{
		{Proto: "tcp", Src: "10.1.0.2", Dst: "2001:db8::1", Interface: "eth0"},
		{Proto: "tcp", Src: "2001:db8:a::2", Dst: "203.0.113.10", Interface: "eth0"},
		{Proto: "tcp", Src: "::", Dst: "2001:db8::1", Interface: "eth0"},
		{Proto: "tcp", Src: "[2001:db8:a::2]", Dst: "2001:db8::1", Interface: "eth0"},
		{Proto: "tcp", Src: "2001:db8:fffe::10", Dst: "2001:db8:99::2", Direction: "in"},
	} {
		if _, err := s.Explain(q); err == nil {
			t.Errorf("%+v accepted", q)
		}
	}
	if e.Flows() != 0 {
		t.Fatal("explain made flows")
	}

	// isp-b's IPv6 router unknown: no IPv6 flow goes there, its IPv4 flows still do.
	s, _ = testEngine6(t, rules, 1)
	x, err := s.Explain(control.ExplainQuery{Proto: "tcp", Src: "2001:db8:a::2", SrcPort: 40000, Dst: "2001:db8:ffff::10", DstPort: 443, Interface: "eth0"})
	if err != nil {
		t.Fatal(err)
	}
	text := x.Summary + "\n" + strings.Join(x.Steps, "\n")
	if x.Gateway != "eth0" || x.Gateways[1].Usable || !strings.Contains(text, "IPv6 router not resolved") || !strings.Contains(text, "not strict: placed as if no rule had matched") {
		t.Errorf("without isp-b's IPv6 router: gateway %q, %+v\n%s", x.Gateway, x.Gateways, text)
	}
	x, err = s.Explain(control.ExplainQuery{Proto: "tcp", Src: "10.1.0.2", SrcPort: 40000, Dst: "203.0.113.10", DstPort: 443, Interface: "eth0"})
	if err != nil || !x.Gateways[1].Usable {
		t.Errorf("an IPv4 flow without isp-b's IPv6 router: %+v, %v", x, err)
	}
}

// explainSays explains q on s and checks that the summary and steps say each of want.
func explainSays(t *testing.T, s *Shim, name string, q control.ExplainQuery, want []string) *control.Explanation {
	t.Helper()
	x, err := s.Explain(q)
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	text := x.Summary + "\n" + strings.Join(x.Steps, "\n")
	for _, w := range want {
		if !strings.Contains(text, w) {
			t.Errorf("%s: lacks %q:\n%s", name, w, text)
		}
	}
	return x
}
