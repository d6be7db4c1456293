package filters

import (
	"net/netip"
	"strings"
	"sync"
	"testing"

	"github.com/l2shim/l2shim/conf"
	"github.com/l2shim/l2shim/internal/testcfg"
)

// gateways are the [[gateway]] tables every snippet gets: three interfaces, the second gateway
// named, so rules can route to a default name, an explicit name and an address.
const gateways = "\n" + testcfg.TwoGateways + `
[[gateway]]
name = "isp-c"
interface = "eth2"
address = "10.3.0.1"
`

// testIfaces is the datapath's interface list in the tests: eth2 has a gateway but is left out,
// as if it were down at compile time, so rules naming it never match.
var testIfaces = []string{"eth0", "eth1"}

// parse loads a snippet of [[rule]] tables through conf, so the tests see rules exactly as a
// file produces them.
func parse(t testing.TB, rules string) *conf.Config {
	t.Helper()
	c, err := conf.Parse("test.toml", []byte(gateways+"\n"+rules))
	if err != nil {
		t.Fatalf("conf.Parse: %v", err)
	}
	return c
}

// both compiles cfg for the linear path (as far as it goes: 64 rules, beyond linearMax so the
// tests cover all it can do) and for the bit-vector path, so every case checks both.
func both(t testing.TB, cfg *conf.Config, ifaces []string) map[string]*Set {
	t.Helper()
	out := map[string]*Set{}
	for name, lin := range map[string]int{"linear": 64, "bitvector": 0} {
		s, err := compile(cfg, ifaces, lin)
		if err != nil {
			t.Fatalf("compile (%s): %v", name, err)
		}
		if wantLinear := name == "linear" && s.Len() <= 64; wantLinear != s.linear && s.Len() > 0 {
			t.Fatalf("compile (%s): linear = %v", name, s.linear)
		}
		out[name] = s
	}
	return out
}

// pk builds a packet from text; iface -1 means an index the datapath does not know.
func pk(iface int, dir Direction, proto uint8, src, dst string, sport, dport uint16) Packet {
	return Packet{
		Iface: iface, Dir: dir, Proto: proto,
		Src: netip.MustParseAddr(src).As4(), Dst: netip.MustParseAddr(dst).As4(),
		SrcPort: sport, DstPort: dport,
	}
}

// pk6 is pk for an IPv6 packet.
func pk6(iface int, dir Direction, proto uint8, src, dst string, sport, dport uint16) Packet {
	return Packet{
		Iface: iface, Dir: dir, Proto: proto, IPv6: true,
		Src6: netip.MustParseAddr(src).As16(), Dst6: netip.MustParseAddr(dst).As16(),
		SrcPort: sport, DstPort: dport,
	}
}

const (
	icmp   = 1
	tcp    = 6
	udp    = 17
	gre    = 47
	icmpv6 = 58
)

// host6 is an IPv6 address no rule in the tables looks at.
const host6 = "2001:db8:ffff::1"

// TestMatch is the table: each case is a rule list and packets with the rule index they must
// match (-1: none).
func TestMatch(t *testing.T) {
	type probe struct {
		p    Packet
		want int
	}
	tests := []struct {
		name   string
		rules  string
		probes []probe
	}{
		{
			name:  "no rules",
			rules: "",
			probes: []probe{
				{pk(0, Out, tcp, host, host, 1, 2), -1},
			},
		},
		{
			name:  "empty rule matches everything",
			rules: `[[rule]]` + "\naction = \"pass\"\n",
			probes: []probe{
				{pk(0, Out, tcp, host, host, 1, 2), 0},
				{pk(1, In, udp, "0.0.0.0", "255.255.255.255", 0, 65535), 0},
				{pk(-1, 0, gre, host, host, 0, 0), 0},
				{pk(7, 9, 0, host, host, 0, 0), 0},
			},
		},
		{
			name: "interface",
			rules: `
[[rule]]
interface = "eth1"
action = "drop"
[[rule]]
interface = "eth2"
action = "drop"
`,
			probes: []probe{
				{pk(1, Out, tcp, host, host, 1, 2), 0},
				{pk(0, Out, tcp, host, host, 1, 2), -1},
				// eth2 is not in the datapath's list: no index reaches rule 1.
				{pk(2, Out, tcp, host, host, 1, 2), -1},
				{pk(-1, Out, tcp, host, host, 1, 2), -1},
			},
		},
		{
			name: "direction",
			rules: `
[[rule]]
direction = "in"
action = "drop"
[[rule]]
direction = "out"
action = "pass"
`,
			probes: []probe{
				{pk(0, In, tcp, host, host, 1, 2), 0},
				{pk(0, Out, tcp, host, host, 1, 2), 1},
				{pk(0, 0, tcp, host, host, 1, 2), -1},
				{pk(0, 3, tcp, host, host, 1, 2), -1},
			},
		},
		{
			name: "protocol",
			rules: `
[[rule]]
protocol = "icmp"
action = "drop"
[[rule]]
protocol = "udp"
action = "drop"
[[rule]]
protocol = "tcp"
action = "drop"
[[rule]]
protocol = "any"
action = "pass"
`,
			probes: []probe{
				{pk(0, Out, icmp, host, host, 0, 0), 0},
				{pk(0, Out, udp, host, host, 53, 53), 1},
				{pk(0, Out, tcp, host, host, 80, 80), 2},
				{pk(0, Out, gre, host, host, 0, 0), 3},
				{pk(0, Out, 0, host, host, 0, 0), 3},
				{pk(0, Out, 58, host, host, 0, 0), 3}, // protocol 58 in IPv4 is not "icmp"
			},
		},
		{
			name: "dst prefix edges",
			rules: `
[[rule]]
dst = "10.1.0.0/16"
action = "drop"
`,
			probes: []probe{
				{pk(0, Out, tcp, host, "10.0.255.255", 1, 2), -1},
				{pk(0, Out, tcp, host, "10.1.0.0", 1, 2), 0},
				{pk(0, Out, tcp, host, "10.1.128.7", 1, 2), 0},
				{pk(0, Out, tcp, host, "10.1.255.255", 1, 2), 0},
				{pk(0, Out, tcp, host, "10.2.0.0", 1, 2), -1},
				// The source does not count for a dst rule.
				{pk(0, Out, tcp, "10.1.0.1", host, 1, 2), -1},
			},
		},
		{
			name: "src prefix /32 and /0",
			rules: `
[[rule]]
src = "10.9.9.9/32"
action = "drop"
[[rule]]
src = "0.0.0.0/0"
protocol = "udp"
action = "pass"
`,
			probes: []probe{
				{pk(0, Out, tcp, "10.9.9.8", host, 1, 2), -1},
				{pk(0, Out, tcp, "10.9.9.9", host, 1, 2), 0},
				{pk(0, Out, tcp, "10.9.9.10", host, 1, 2), -1},
				{pk(0, Out, udp, "0.0.0.0", host, 1, 2), 1},
				{pk(0, Out, udp, "255.255.255.255", host, 1, 2), 1},
			},
		},
		{
			name: "a bare address is a /32",
			rules: `
[[rule]]
dst = "203.0.113.5"
action = "drop"
`,
			probes: []probe{
				{pk(0, Out, tcp, host, "203.0.113.5", 1, 2), 0},
				{pk(0, Out, tcp, host, "203.0.113.4", 1, 2), -1},
				{pk(0, Out, tcp, host, "203.0.113.6", 1, 2), -1},
			},
		},
		{
			name: "address space edges",
			rules: `
[[rule]]
dst = "0.0.0.0/32"
action = "drop"
[[rule]]
dst = "255.255.255.255/32"
action = "drop"
[[rule]]
src = "128.0.0.0/1"
direction = "in"
action = "pass"
`,
			probes: []probe{
				{pk(0, Out, tcp, host, "0.0.0.0", 1, 2), 0},
				{pk(0, Out, tcp, host, "0.0.0.1", 1, 2), -1},
				{pk(0, Out, tcp, host, "255.255.255.255", 1, 2), 1},
				{pk(0, Out, tcp, host, "255.255.255.254", 1, 2), -1},
				{pk(0, In, tcp, "127.255.255.255", "1.1.1.1", 1, 2), -1},
				{pk(0, In, tcp, "128.0.0.0", "1.1.1.1", 1, 2), 2},
				{pk(0, In, tcp, "255.255.255.255", "1.1.1.1", 1, 2), 2},
			},
		},
		{
			name: "port range edges",
			rules: `
[[rule]]
protocol = "tcp"
dst_port = "1000-2000"
action = "drop"
[[rule]]
protocol = "udp"
src_port = 53
action = "drop"
[[rule]]
protocol = "tcp"
dst_port = "65535"
action = "drop"
[[rule]]
protocol = "tcp"
src_port = "1-1"
action = "drop"
`,
			probes: []probe{
				{pk(0, Out, tcp, host, host, 5, 999), -1},
				{pk(0, Out, tcp, host, host, 5, 1000), 0},
				{pk(0, Out, tcp, host, host, 5, 1500), 0},
				{pk(0, Out, tcp, host, host, 5, 2000), 0},
				{pk(0, Out, tcp, host, host, 5, 2001), -1},
				// A UDP packet to the TCP range is not a match.
				{pk(0, Out, udp, host, host, 5, 1500), -1},
				{pk(0, Out, udp, host, host, 52, 9), -1},
				{pk(0, Out, udp, host, host, 53, 9), 1},
				{pk(0, Out, udp, host, host, 54, 9), -1},
				{pk(0, Out, tcp, host, host, 53, 9), -1},
				{pk(0, Out, tcp, host, host, 5, 65535), 2},
				{pk(0, Out, tcp, host, host, 5, 65534), -1},
				{pk(0, Out, tcp, host, host, 0, 9), -1},
				{pk(0, Out, tcp, host, host, 1, 9), 3},
				{pk(0, Out, tcp, host, host, 2, 9), -1},
			},
		},
		{
			name: "port rule never matches another protocol",
			rules: `
[[rule]]
protocol = "udp"
dst_port = "1-65535"
action = "drop"
`,
			probes: []probe{
				{pk(0, Out, udp, host, host, 0, 1), 0},
				{pk(0, Out, udp, host, host, 0, 0), -1},
				{pk(0, Out, udp, host, host, 9, 65535), 0},
				{pk(0, Out, icmp, host, host, 0, 0), -1},
				{pk(0, Out, tcp, host, host, 0, 0), -1},
				{pk(0, Out, gre, host, host, 0, 0), -1},
			},
		},
		{
			name: "all keys combined",
			rules: `
[[rule]]
interface = "eth1"
direction = "out"
src = "10.2.0.0/24"
dst = "198.51.100.0/24"
protocol = "tcp"
src_port = "1024-65535"
dst_port = 25
action = "route-to"
gateway = "isp-b"
`,
			probes: []probe{
				{pk(1, Out, tcp, "10.2.0.2", "198.51.100.9", 40000, 25), 0},
				{pk(0, Out, tcp, "10.2.0.2", "198.51.100.9", 40000, 25), -1},
				{pk(1, In, tcp, "10.2.0.2", "198.51.100.9", 40000, 25), -1},
				{pk(1, Out, tcp, "10.2.1.2", "198.51.100.9", 40000, 25), -1},
				{pk(1, Out, tcp, "10.2.0.2", "198.51.101.9", 40000, 25), -1},
				{pk(1, Out, udp, "10.2.0.2", "198.51.100.9", 40000, 25), -1},
				{pk(1, Out, tcp, "10.2.0.2", "198.51.100.9", 1023, 25), -1},
				{pk(1, Out, tcp, "10.2.0.2", "198.51.100.9", 40000, 26), -1},
			},
		},
		{
			name: "families: IPv4 prefixes, IPv6 prefixes, none",
			rules: `
[[rule]]
name = "v4 net"
dst = "198.51.100.0/24"
action = "drop"
[[rule]]
name = "v6 net"
dst = "2001:db8:100::/48"
action = "drop"
[[rule]]
name = "all of v6"
src = "::/0"
protocol = "udp"
action = "pass"
[[rule]]
name = "all of v4"
src = "0.0.0.0/0"
protocol = "udp"
action = "pass"
[[rule]]
name = "port only"
protocol = "tcp"
dst_port = 443
action = "route-to"
gateway = "isp-b"
`,
			probes: []probe{
				{pk(0, Out, tcp, host, "198.51.100.9", 1, 2), 0},
				{pk6(0, Out, tcp, host6, "2001:db8:100::9", 1, 2), 1},
				// An IPv6 address whose low 32 bits are 198.51.100.9 is not in the IPv4 net.
				{pk6(0, Out, tcp, host6, "::c633:6409", 1, 2), -1},
				{pk6(0, Out, tcp, host6, "::ffff:198.51.100.9", 1, 2), -1},
				{pk6(0, Out, udp, host6, host6, 1, 2), 2},
				{pk(0, Out, udp, host, host, 1, 2), 3},
				{pk(0, Out, tcp, host, host, 1, 443), 4},
				{pk6(0, Out, tcp, host6, host6, 1, 443), 4},
				{pk6(1, In, tcp, "::", "::", 1, 443), 4},
				{pk6(0, Out, tcp, host6, host6, 1, 444), -1},
				{pk6(0, Out, gre, host6, host6, 0, 0), -1},
			},
		},
		{
			name: "IPv6 prefix edges",
			rules: `
[[rule]]
dst = "2001:db8:0:1::/64"
action = "drop"
[[rule]]
src = "2001:db8::ff00:0/120"
action = "drop"
[[rule]]
dst = "2001:db8::8000:0:0:0/65"
action = "pass"
[[rule]]
dst = "2001:db8::7"
action = "pass"
[[rule]]
dst = "8000::/1"
direction = "in"
action = "pass"
[[rule]]
dst = "::/128"
action = "pass"
[[rule]]
dst = "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff/128"
action = "pass"
`,
			probes: []probe{
				// A /64: the boundary between the two halves (the address below it is in
				// the /65 of rule 2).
				{pk6(0, Out, tcp, host6, "2001:db8:0:0:ffff:ffff:ffff:ffff", 1, 2), 2},
				{pk6(0, Out, tcp, host6, "2001:db8:0:1::", 1, 2), 0},
				{pk6(0, Out, tcp, host6, "2001:db8:0:1:ffff:ffff:ffff:ffff", 1, 2), 0},
				{pk6(0, Out, tcp, host6, "2001:db8:0:2::", 1, 2), -1},
				// A /120 in the low half, on the source.
				{pk6(0, Out, tcp, "2001:db8::feff:ffff", host6, 1, 2), -1},
				{pk6(0, Out, tcp, "2001:db8::ff00:0", host6, 1, 2), 1},
				{pk6(0, Out, tcp, "2001:db8::ff00:ff", host6, 1, 2), 1},
				{pk6(0, Out, tcp, "2001:db8::ff00:100", host6, 1, 2), -1},
				// A /65: one bit into the low half.
				{pk6(0, Out, tcp, host6, "2001:db8::7fff:ffff:ffff:ffff", 1, 2), -1},
				{pk6(0, Out, tcp, host6, "2001:db8::8000:0:0:0", 1, 2), 2},
				{pk6(0, Out, tcp, host6, "2001:db8::ffff:ffff:ffff:ffff", 1, 2), 2},
				{pk6(0, Out, tcp, host6, "2001:db8:0:1::", 1, 2), 0},
				// A bare address is a /128.
				{pk6(0, Out, tcp, host6, "2001:db8::6", 1, 2), -1},
				{pk6(0, Out, tcp, host6, "2001:db8::7", 1, 2), 3},
				{pk6(0, Out, tcp, host6, "2001:db8::8", 1, 2), -1},
				// The ends of the space.
				{pk6(0, In, tcp, host6, "7fff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", 1, 2), -1},
				{pk6(0, In, tcp, host6, "8000::", 1, 2), 4},
				{pk6(0, Out, tcp, host6, "::", 1, 2), 5},
				{pk6(0, Out, tcp, host6, "::1", 1, 2), -1},
				{pk6(0, Out, tcp, host6, "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", 1, 2), 6},
				{pk6(0, Out, tcp, host6, "ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe", 1, 2), -1},
				// IPv4 packets never match IPv6 prefixes, not even ::/128 with 0.0.0.0.
				{pk(0, Out, tcp, host, "0.0.0.0", 1, 2), -1},
				{pk(0, In, tcp, host, "255.255.255.255", 1, 2), -1},
			},
		},
		{
			name: "icmp is ICMPv6 for IPv6",
			rules: `
[[rule]]
protocol = "icmp"
action = "drop"
[[rule]]
protocol = "icmp"
dst = "2001:db8::/32"
action = "pass"
[[rule]]
protocol = "any"
action = "pass"
`,
			probes: []probe{
				{pk(0, Out, icmp, host, host, 7, 7), 0},
				{pk6(0, Out, icmpv6, host6, host6, 7, 7), 0},
				// Protocol 1 in IPv6 and 58 in IPv4 are not ICMP.
				{pk6(0, Out, icmp, host6, host6, 0, 0), 2},
				{pk(0, Out, icmpv6, host, host, 0, 0), 2},
			},
		},
		{
			name: "first match across families",
			rules: `
[[rule]]
name = "v6 mail"
protocol = "tcp"
dst = "2001:db8::/32"
dst_port = 25
action = "drop"
[[rule]]
name = "v4 docs"
dst = "192.0.2.0/24"
action = "pass"
[[rule]]
name = "mail"
protocol = "tcp"
dst_port = 25
action = "route-to"
gateway = "isp-b"
[[rule]]
name = "v6 docs"
dst = "2001:db8::/32"
action = "route-to"
gateway = "eth0"
[[rule]]
name = "everything"
action = "balance"
`,
			probes: []probe{
				{pk6(0, Out, tcp, host6, "2001:db8::25", 1, 25), 0},
				{pk(0, Out, tcp, host, "192.0.2.25", 1, 25), 1},
				{pk(0, Out, tcp, host, "198.51.100.25", 1, 25), 2},
				{pk6(0, Out, tcp, host6, "2001:db9::25", 1, 25), 2},
				{pk6(0, Out, tcp, host6, "2001:db8::25", 1, 80), 3},
				{pk6(0, Out, udp, host6, "2001:db8::25", 1, 25), 3},
				{pk6(0, Out, udp, host6, "2001:db9::25", 1, 25), 4},
				{pk(0, Out, udp, host, "198.51.100.25", 1, 25), 4},
			},
		},
		{
			name: "first match wins",
			rules: `
[[rule]]
name = "drop one host"
dst = "192.0.2.66"
action = "drop"
[[rule]]
name = "mail via isp-b"
protocol = "tcp"
dst_port = 25
action = "route-to"
gateway = "isp-b"
[[rule]]
name = "network via eth0"
dst = "192.0.2.0/24"
action = "route-to"
gateway = "eth0"
[[rule]]
name = "shadowed"
dst = "192.0.2.0/25"
action = "pass"
`,
			probes: []probe{
				{pk(0, Out, tcp, host, "192.0.2.66", 1, 25), 0},
				{pk(0, Out, tcp, host, "192.0.2.67", 1, 25), 1},
				{pk(0, Out, tcp, host, "198.18.0.1", 1, 25), 1},
				{pk(0, Out, tcp, host, "192.0.2.67", 1, 80), 2},
				{pk(0, Out, udp, host, "192.0.2.1", 1, 25), 2},
				{pk(0, Out, udp, host, "192.0.3.1", 1, 25), -1},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := parse(t, tt.rules)
			for path, s := range both(t, cfg, testIfaces) {
				for _, pr := range tt.probes {
					v, ok := s.Match(&pr.p)
					got := -1
					if ok {
						got = v.Rule
					}
					if got != pr.want {
						t.Errorf("%s: Match(%+v) = rule %d, want %d", path, pr.p, got, pr.want)
					}
					if want := ref(cfg.Rules, testIfaces, &pr.p); want != pr.want {
						t.Errorf("reference disagrees with the table for %+v: %d, want %d", pr.p, want, pr.want)
					}
				}
			}
		})
	}
}

// TestVerdict checks each action's verdict: route-to resolved by default name, explicit name
// and unique address, strict carried, pass and drop without a gateway.
func TestVerdict(t *testing.T) {
	cfg := parse(t, `
[[rule]]
dst = "198.51.100.1"
action = "route-to"
gateway = "eth0"
[[rule]]
dst = "198.51.100.2"
action = "route-to"
gateway = "isp-c"
strict = true
[[rule]]
dst = "198.51.100.3"
action = "route-to"
gateway = "10.2.0.1"
[[rule]]
dst = "198.51.100.4"
action = "pass"
[[rule]]
dst = "198.51.100.5"
action = "drop"
`)
	want := []Verdict{
		{Rule: 0, Action: RouteTo, Gateway: 0},
		{Rule: 1, Action: RouteTo, Gateway: 2, Strict: true},
		{Rule: 2, Action: RouteTo, Gateway: 1},
		{Rule: 3, Action: Pass, Gateway: -1},
		{Rule: 4, Action: Drop, Gateway: -1},
	}
	for path, s := range both(t, cfg, testIfaces) {
		for i, w := range want {
			p := pk(0, Out, tcp, "10.1.0.2", "198.51.100."+string(rune('1'+i)), 1, 2)
			v, ok := s.Match(&p)
			if !ok || v != w {
				t.Errorf("%s: rule %d: Match = %+v, %v; want %+v", path, i, v, ok, w)
			}
		}
	}
	names := []string{"eth0", "isp-c", "isp-b", "", ""}
	s, _ := Compile(cfg, testIfaces)
	for i, st := range s.Stats() {
		if st.Gateway != names[i] || st.Action != cfg.Rules[i].Action || st.Index != i || st.Name != cfg.Rules[i].Name {
			t.Errorf("Stats()[%d] = %+v", i, st)
		}
	}
}

// TestCompileErrors feeds hand-built configurations with what conf would have refused: each
// must fail and name the rule and the key.
func TestCompileErrors(t *testing.T) {
	gws := []conf.Gateway{
		{Name: "a", Interface: "eth0", Address: netip.MustParseAddr("10.1.0.1")},
		{Name: "b", Interface: "eth1", Address: netip.MustParseAddr("10.1.0.1")},
	}
	tests := []struct {
		rule conf.Rule
		want string
	}{
		{conf.Rule{Name: "r", Action: "route-to", Gateway: "nope"}, `rule "r" (number 2): route-to gateway "nope"`},
		{conf.Rule{Name: "r", Action: "route-to", Gateway: "10.1.0.1"}, `route-to gateway "10.1.0.1"`},
		{conf.Rule{Name: "r", Action: "route-to"}, `route-to gateway ""`},
		{conf.Rule{Name: "r", Action: "accept"}, `action "accept"`},
		{conf.Rule{Name: "r"}, `action ""`},
		{conf.Rule{Name: "r", Action: "drop", Protocol: "sctp"}, `protocol "sctp"`},
		{conf.Rule{Name: "r", Action: "drop", Direction: "both"}, `direction "both"`},
		{conf.Rule{Name: "r", Action: "drop", Src: netip.MustParsePrefix("10.0.0.0/8"), Dst: netip.MustParsePrefix("2001:db8::/32")},
			`dst: 2001:db8::/32 and src 10.0.0.0/8 are of different families: a flow has one, so the rule could never match`},
		{conf.Rule{Name: "r", Action: "drop", Src: netip.MustParsePrefix("2001:db8::/32"), Dst: netip.MustParsePrefix("0.0.0.0/0")}, `dst: 0.0.0.0/0 and src 2001:db8::/32`},
		{conf.Rule{Name: "r", Action: "drop", Src: netip.MustParsePrefix("::ffff:10.0.0.0/104"), Dst: netip.MustParsePrefix("10.0.0.0/8")}, `are of different families`},
		{conf.Rule{Name: "r", Action: "drop", Protocol: "icmp", DstPort: conf.PortRange{Lo: 1, Hi: 1}}, `dst_port: protocol "icmp" has no ports`},
		{conf.Rule{Name: "r", Action: "drop", SrcPort: conf.PortRange{Lo: 1, Hi: 1}}, `src_port: protocol "" has no ports`},
		{conf.Rule{Name: "r", Action: "drop", Protocol: "tcp", DstPort: conf.PortRange{Lo: 9, Hi: 8}}, `dst_port: range 9-8 is empty`},
	}
	for _, tt := range tests {
		cfg := &conf.Config{Gateways: gws, Rules: []conf.Rule{{Name: "ok", Action: "pass"}, tt.rule}}
		s, err := Compile(cfg, testIfaces)
		if err == nil || s != nil {
			t.Errorf("Compile(%+v) = %v, nil; want an error", tt.rule, s)
			continue
		}
		if !strings.Contains(err.Error(), tt.want) || !strings.Contains(err.Error(), `rule "r"`) {
			t.Errorf("Compile(%+v): %q; want it to name the rule and contain %q", tt.rule, err, tt.want)
		}
	}

	// A rule that came from a file is also named by its place in the file.
	cfg := parse(t, "[[rule]]\nname = \"late\"\naction = \"route-to\"\ngateway = \"isp-b\"\n")
	cfg.Gateways[1].Name = "renamed"
	_, err := Compile(cfg, testIfaces)
	if want := `test.toml:16: rule "late": route-to gateway "isp-b"`; err == nil || !strings.HasPrefix(err.Error(), want) {
		t.Errorf("Compile: %v; want %q...", err, want)
	}
}

// TestHandBuilt checks what only a hand-built Config can hold: host bits in a prefix are
// ignored, an empty protocol is any, and an interface listed twice matches at both indices.
func TestHandBuilt(t *testing.T) {
	cfg := &conf.Config{Rules: []conf.Rule{
		{Name: "hostbits", Action: "drop", Dst: netip.MustParsePrefix("10.1.2.3/16")},
		{Name: "dup", Action: "pass", Interface: "eth9"},
	}}
	// An IPv6 prefix with host bits behaves as the masked one.
	cfg6 := &conf.Config{Rules: []conf.Rule{{Name: "hostbits6", Action: "drop", Src: netip.MustParsePrefix("2001:db8::1/64")}}}
	for path, s := range both(t, cfg6, nil) {
		for _, c := range []struct {
			p    Packet
			want int
		}{
			{pk6(0, Out, gre, "2001:db8::", host6, 0, 0), 0},
			{pk6(0, Out, gre, "2001:db8::ffff:ffff:ffff:ffff", host6, 0, 0), 0},
			{pk6(0, Out, gre, "2001:db8:0:1::", host6, 0, 0), -1},
		} {
			v, ok := s.Match(&c.p)
			if got := map[bool]int{true: v.Rule, false: -1}[ok]; got != c.want {
				t.Errorf("%s: Match(%+v) = %d, want %d", path, c.p, got, c.want)
			}
		}
	}
	for path, s := range both(t, cfg, []string{"eth9", "eth0", "eth9"}) {
		for _, c := range []struct {
			p    Packet
			want int
		}{
			{pk(1, Out, gre, host, "10.1.0.0", 0, 0), 0},
			{pk(1, Out, gre, host, "10.1.255.255", 0, 0), 0},
			{pk(1, Out, gre, host, "10.2.0.0", 0, 0), -1},
			{pk(0, Out, gre, host, "10.2.0.0", 0, 0), 1},
			{pk(2, Out, gre, host, "10.2.0.0", 0, 0), 1},
			{pk(3, Out, gre, host, "10.2.0.0", 0, 0), -1},
		} {
			v, ok := s.Match(&c.p)
			if got := map[bool]int{true: v.Rule, false: -1}[ok]; got != c.want {
				t.Errorf("%s: Match(%+v) = %d, want %d", path, c.p, got, c.want)
			}
		}
	}
}

// host is an address no rule in the tables looks at.
const host = "192.0.2.1"

// TestZeroRules checks that a nil config, an empty rule list and a nil *Set all behave as "no
// rules", so the datapath needs no special case.
func TestZeroRules(t *testing.T) {
	p := pk(0, Out, tcp, host, host, 1, 2)
	empty, err := Compile(&conf.Config{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	fromNil, err := Compile(nil, testIfaces)
	if err != nil {
		t.Fatal(err)
	}
	for name, s := range map[string]*Set{"empty": empty, "nil config": fromNil, "nil set": nil} {
		if s.Len() != 0 {
			t.Errorf("%s: Len = %d", name, s.Len())
		}
		if v, ok := s.Match(&p); ok {
			t.Errorf("%s: Match = %+v", name, v)
		}
		s.CountFlow(0)
		s.CountPackets(0, 1, 1)
		if st := s.Stats(); len(st) != 0 {
			t.Errorf("%s: Stats = %+v", name, st)
		}
	}
}

// TestCounters checks that counts land on the right rule and that indices outside the set
// (a verdict from before a reload, -1) are ignored instead of panicking.
func TestCounters(t *testing.T) {
	cfg := parse(t, `
[[rule]]
name = "first"
action = "pass"
[[rule]]
action = "route-to"
gateway = "isp-b"
`)
	s, err := Compile(cfg, testIfaces)
	if err != nil {
		t.Fatal(err)
	}
	s.CountFlow(1)
	s.CountFlow(1)
	s.CountPackets(1, 3, 4500)
	s.CountPackets(0, 1, 60)
	s.CountFlow(-1)
	s.CountFlow(2)
	s.CountPackets(-1, 1, 1)
	s.CountPackets(99, 1, 1)
	want := []RuleStats{
		{Name: "first", Index: 0, Action: "pass", Packets: 1, Bytes: 60},
		{Name: "rule 2", Index: 1, Action: "route-to", Gateway: "isp-b", Affinity: "flow", Flows: 2, Packets: 3, Bytes: 4500},
	}
	got := s.Stats()
	if len(got) != len(want) {
		t.Fatalf("Stats = %+v", got)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("Stats()[%d] = %+v, want %+v", i, got[i], want[i])
		}
	}
}

// TestAllocs holds Match and the counters to zero allocations on both paths, hit and miss,
// because they run on the frame loop.
func TestAllocs(t *testing.T) {
	for _, n := range []int{10, 300} {
		cfg, hit, miss := benchRules(n)
		hit6, miss6 := pk6(0, Out, tcp, host6, "2001:db8::1", 1, 25), pk6(0, Out, gre, host6, host6, 0, 0)
		for path, s := range both(t, cfg, benchIfaces) {
			for name, p := range map[string]*Packet{"hit": &hit, "miss": &miss, "IPv6 hit": &hit6, "IPv6 miss": &miss6} {
				if a := testing.AllocsPerRun(1000, func() { s.Match(p) }); a != 0 {
					t.Errorf("%d rules, %s, %s: Match allocates %v times", n, path, name, a)
				}
			}
			if a := testing.AllocsPerRun(1000, func() {
				s.CountFlow(n - 1)
				s.CountPackets(n-1, 1, 1500)
			}); a != 0 {
				t.Errorf("%d rules: counters allocate %v times", n, a)
			}
		}
	}
}

// TestConcurrent runs Match and the counters from several goroutines while Stats reads, for the
// race detector, and checks that no count is lost.
func TestConcurrent(t *testing.T) {
	cfg, hit, _ := benchRules(200)
	s, err := Compile(cfg, benchIfaces)
	if err != nil {
		t.Fatal(err)
	}
	const workers, rounds = 4, 2000
	var wg sync.WaitGroup
	stop := make(chan struct{})
	var readers sync.WaitGroup
	readers.Add(1)
	go func() {
		defer readers.Done()
		for {
			select {
			case <-stop:
				return
			default:
				_ = s.Stats()
			}
		}
	}()
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p := hit
			for range rounds {
				v, ok := s.Match(&p)
				if !ok {
					t.Error("no match")
					return
				}
				s.CountFlow(v.Rule)
				s.CountPackets(v.Rule, 2, 100)
			}
		}()
	}
	wg.Wait()
	close(stop)
	readers.Wait()
	v, _ := s.Match(&hit)
	st := s.Stats()[v.Rule]
	if st.Flows != workers*rounds || st.Packets != 2*workers*rounds || st.Bytes != 100*workers*rounds {
		t.Errorf("Stats = %+v, want %d flows", st, workers*rounds)
	}
}

// TestStrings checks that actions and directions print as the configuration spells them.
func TestStrings(t *testing.T) {
	for v, want := range map[string]string{
		Out.String(): "out", In.String(): "in", Direction(0).String(): "Direction(0)",
		Pass.String(): "pass", Drop.String(): "drop", RouteTo.String(): "route-to", Balance.String(): "balance", Action(9).String(): "Action(9)",
		AffinityFlow.String(): "flow", AffinityHostPair.String(): "host-pair",
	} {
		if v != want {
			t.Errorf("%q, want %q", v, want)
		}
	}
}
