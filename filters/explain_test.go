package filters

import (
	"math/rand/v2"
	"testing"

	"github.com/l2shim/l2shim/conf"
)

// TestExplain names, for each rule before the match, the first key that differs.
func TestExplain(t *testing.T) {
	cfg := parse(t, `
[[rule]]
name = "on eth1"
interface = "eth1"
action = "pass"
[[rule]]
name = "inbound"
direction = "in"
action = "pass"
[[rule]]
name = "udp"
protocol = "udp"
action = "pass"
[[rule]]
name = "from lan"
src = "192.168.0.0/16"
action = "pass"
[[rule]]
name = "to docs"
dst = "198.51.100.0/24"
action = "pass"
[[rule]]
name = "from low ports"
protocol = "tcp"
src_port = "1-1023"
action = "pass"
[[rule]]
name = "to mail"
protocol = "tcp"
dst_port = 25
action = "pass"
[[rule]]
name = "web"
protocol = "tcp"
dst_port = 443
action = "balance"
affinity = "host-pair"
[[rule]]
name = "never reached"
action = "drop"
`)
	s, err := Compile(cfg, testIfaces)
	if err != nil {
		t.Fatal(err)
	}
	p := pk(0, Out, tcp, "10.1.0.2", "203.0.113.10", 40000, 443)
	got := s.Explain(&p)
	want := []RuleCheck{
		{0, "on eth1", false, "interface"},
		{1, "inbound", false, "direction"},
		{2, "udp", false, "protocol"},
		{3, "from lan", false, "src"},
		{4, "to docs", false, "dst"},
		{5, "from low ports", false, "src_port"},
		{6, "to mail", false, "dst_port"},
		{7, "web", true, ""},
	}
	if len(got) != len(want) {
		t.Fatalf("Explain = %+v, want %+v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("check %d = %+v, want %+v", i, got[i], want[i])
		}
	}
	if v, ok := s.Match(&p); !ok || v.Rule != 7 || v.Action != Balance || v.Affinity != AffinityHostPair {
		t.Errorf("Match = %+v, %v", v, ok)
	}
	var none *Set
	if none.Explain(&p) != nil {
		t.Error("a nil Set explains something")
	}
}

// TestExplainFamilies: a rule of the other family mismatches on its first prefix key; an
// IPv6 packet is checked against the IPv6 prefixes and ICMPv6 is "icmp".
func TestExplainFamilies(t *testing.T) {
	cfg := parse(t, `
[[rule]]
name = "v4 src"
src = "0.0.0.0/0"
action = "pass"
[[rule]]
name = "v4 dst"
dst = "192.0.2.0/24"
action = "pass"
[[rule]]
name = "v6 other net"
protocol = "icmp"
src = "2001:db8::/32"
dst = "2001:db8:1::/48"
action = "pass"
[[rule]]
name = "v6 tcp"
protocol = "tcp"
dst = "2001:db8:2::/48"
action = "pass"
[[rule]]
name = "v6 ping"
protocol = "icmp"
dst = "2001:db8:2::/48"
action = "drop"
`)
	s, err := Compile(cfg, testIfaces)
	if err != nil {
		t.Fatal(err)
	}
	p := pk6(0, Out, icmpv6, "2001:db8::1", "2001:db8:2::1", 7, 7)
	got := s.Explain(&p)
	want := []RuleCheck{
		{0, "v4 src", false, "src"},
		{1, "v4 dst", false, "dst"},
		{2, "v6 other net", false, "dst"},
		{3, "v6 tcp", false, "protocol"},
		{4, "v6 ping", true, ""},
	}
	if len(got) != len(want) {
		t.Fatalf("Explain = %+v, want %+v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("check %d = %+v, want %+v", i, got[i], want[i])
		}
	}
	// An IPv4 packet: rule 0 takes every one; without it, the IPv6 rules mismatch on their
	// first prefix key.
	p4 := pk(0, Out, icmp, host, "198.51.100.1", 7, 7)
	if got := s.Explain(&p4); len(got) != 1 || !got[0].Matched {
		t.Errorf("IPv4 Explain = %+v", got)
	}
	s, err = Compile(&conf.Config{Rules: cfg.Rules[1:]}, testIfaces)
	if err != nil {
		t.Fatal(err)
	}
	got = s.Explain(&p4)
	if len(got) != 4 || got[0].Mismatch != "dst" || got[1].Mismatch != "src" || got[2].Mismatch != "protocol" || got[3].Mismatch != "dst" {
		t.Errorf("IPv4 Explain without rule 0 = %+v", got)
	}
}

// TestExplainAgreesWithMatch: over random rule sets, Explain's last check matches exactly when
// Match finds a rule, and it is that rule.
func TestExplainAgreesWithMatch(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	ifaces := []string{"eth0", "eth1", "eth2", "eth0"}
	for k := range 60 {
		cfg := &conf.Config{Gateways: diffGateways, Rules: randRules(r, 1+r.IntN(120), k%2 == 1)}
		s, err := Compile(cfg, ifaces)
		if err != nil {
			t.Fatal(err)
		}
		for range 200 {
			p := randPacket(r, cfg.Rules)
			v, ok := s.Match(&p)
			checks := s.Explain(&p)
			last := checks[len(checks)-1]
			if last.Matched != ok || ok && last.Rule != v.Rule || !ok && len(checks) != len(cfg.Rules) {
				t.Fatalf("Match(%+v) = %+v, %v; Explain ends with %+v after %d checks", p, v, ok, last, len(checks))
			}
			for _, c := range checks[:len(checks)-1] {
				if c.Matched || c.Mismatch == "" {
					t.Fatalf("check before the last: %+v", c)
				}
			}
		}
	}
}

// TestAffinity: a rule's own affinity, else the configuration's; pass and drop rules report
// none in Stats.
func TestAffinity(t *testing.T) {
	cfg := parse(t, `
[[rule]]
name = "bank"
dst = "198.51.100.0/24"
action = "balance"
affinity = "host-pair"
[[rule]]
name = "video"
dst = "198.51.100.0/24"
action = "balance"
[[rule]]
name = "mail"
action = "route-to"
gateway = "isp-b"
affinity = "flow"
[[rule]]
name = "dns"
action = "pass"
`)
	for _, tc := range []struct {
		shim conf.Affinity
		want [5]Affinity // rules 0-3, then -1
	}{
		{"", [5]Affinity{AffinityHostPair, AffinityFlow, AffinityFlow, AffinityFlow, AffinityFlow}},
		{conf.AffinityFlow, [5]Affinity{AffinityHostPair, AffinityFlow, AffinityFlow, AffinityFlow, AffinityFlow}},
		{conf.AffinityHostPair, [5]Affinity{AffinityHostPair, AffinityHostPair, AffinityFlow, AffinityHostPair, AffinityHostPair}},
	} {
		cfg.Shim.Affinity = tc.shim
		s, err := Compile(cfg, testIfaces)
		if err != nil {
			t.Fatal(err)
		}
		for i, w := range tc.want {
			rule := i
			if i == 4 {
				rule = -1
			}
			if got := s.Affinity(rule); got != w {
				t.Errorf("shim %q: Affinity(%d) = %v, want %v", tc.shim, rule, got, w)
			}
		}
		st := s.Stats()
		if st[0].Affinity != "host-pair" || st[1].Action != "balance" || st[3].Affinity != "" {
			t.Errorf("shim %q: stats %+v", tc.shim, st)
		}
	}
	var none *Set
	if none.Affinity(-1) != AffinityFlow {
		t.Error("a nil Set's affinity is not per flow")
	}
}
