package conf

import (
	"errors"
	"net"
	"net/netip"
	"os"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/l2shim/l2shim/internal/testcfg"
)

// baseGateways is appended by withGW to snippets that need gateways; it comes last so that the
// snippet's own lines keep their numbers.
const baseGateways = "\n" + testcfg.TwoGateways

func withGW(s string) string { return s + "\n" + baseGateways }

// TestParse is the table of snippets, good and bad. For a bad one, errs lists a substring of each
// error in the order Parse returns them (by line), and there must be no other error. For a good
// one, check looks at the decoded values.
func TestParse(t *testing.T) {
	tests := []struct {
		name  string
		input string
		errs  []string
		check func(t *testing.T, c *Config)
	}{
		// Good files.
		{
			name:  "minimal",
			input: "[[gateway]]\ninterface = \"eth0\"\naddress = \"10.1.0.1\"\n",
			check: func(t *testing.T, c *Config) {
				want := []Gateway{{Name: "eth0", Interface: "eth0", Address: netip.MustParseAddr("10.1.0.1"), Weight: 1, On: true, Line: 1}}
				if !reflect.DeepEqual(c.Gateways, want) {
					t.Errorf("gateways = %+v, want %+v", c.Gateways, want)
				}
			},
		},
		{
			name:  "shim keys at their bounds",
			input: withGW("[shim]\nmode = \"failover\"\nheartbeat = \"200ms\"\nmark = 0xc0\nmark_mask = 0xc0\nmetrics = \":9617\""),
			check: func(t *testing.T, c *Config) {
				want := Shim{Mode: ModeFailover, SourceAware: true, Control: DefaultControl, Metrics: ":9617", Mark: 0xc0, MarkMask: 0xc0, Heartbeat: 200 * time.Millisecond, Affinity: AffinityFlow, Attach: AttachAuto}
				if c.Shim != want {
					t.Errorf("shim = %+v, want %+v", c.Shim, want)
				}
			},
		},
		{
			name:  "heartbeat at its upper bound, mode off, IPv6 and named metrics hosts",
			input: withGW("[shim]\nmode = \"off\"\nheartbeat = \"1m\"\nmetrics = \"[::1]:9617\""),
			check: func(t *testing.T, c *Config) {
				if c.Shim.Heartbeat != time.Minute || c.Shim.Mode != ModeOff || c.Shim.Metrics != "[::1]:9617" {
					t.Errorf("shim = %+v", c.Shim)
				}
			},
		},
		{
			name:  "inline tables",
			input: "shim = { mode = \"off\", source_aware = false }\nfailover = { fail_ratio = 1, probe_interval = \"0s\" }\ngateway = [ { interface = \"eth0\", address = \"10.1.0.1\", mtu = 0 } ]\n",
			check: func(t *testing.T, c *Config) {
				if c.Shim.Mode != ModeOff || c.Shim.SourceAware || c.Failover.FailRatio != 1 || c.Failover.ProbeInterval != 0 || len(c.Gateways) != 1 || c.Gateways[0].Line != 3 {
					t.Errorf("config = %+v", c)
				}
			},
		},
		{
			name:  "rule with ports, prefixes and route-to by unique address",
			input: withGW("[[rule]]\nname = \"mail\"\nprotocol = \"tcp\"\nsrc = \"10.1.0.7\"\ndst = \"192.0.2.0/24\"\nsrc_port = \" 1000 - 2000 \"\ndst_port = 25\naction = \"route-to\"\ngateway = \"10.2.0.1\"\nstrict = true"),
			check: func(t *testing.T, c *Config) {
				want := Rule{Name: "mail", Src: netip.MustParsePrefix("10.1.0.7/32"), Dst: netip.MustParsePrefix("192.0.2.0/24"),
					Protocol: "tcp", SrcPort: PortRange{1000, 2000}, DstPort: PortRange{25, 25}, Action: "route-to", Gateway: "10.2.0.1", Strict: true, Line: 1}
				if len(c.Rules) != 1 || !reflect.DeepEqual(c.Rules[0], want) {
					t.Errorf("rules = %+v, want %+v", c.Rules, want)
				}
				if g, ok := c.GatewayByRef(c.Rules[0].Gateway); !ok || g.Name != "isp-b" {
					t.Errorf("GatewayByRef(%q) = %v, %v", c.Rules[0].Gateway, g, ok)
				}
			},
		},
		{
			name: "IPv6 prefixes and addresses",
			input: withGW("[[rule]]\naction = \"pass\"\nsrc = \"2001:db8:1::/48\"\ndst = \" 2001:DB8::7 \"\n" +
				"[[rule]]\naction = \"drop\"\ndst = \"::/0\"\nprotocol = \"icmp\"\n" +
				"[[rule]]\naction = \"pass\"\nsrc = \"fe80::/10\"\n" +
				"[[rule]]\naction = \"pass\"\nsrc = \"2001:db8::/32\"\ndst = \"2001:db8::/32\""),
			check: func(t *testing.T, c *Config) {
				want := []struct{ src, dst string }{
					{"2001:db8:1::/48", "2001:db8::7/128"},
					{"invalid Prefix", "::/0"},
					{"fe80::/10", "invalid Prefix"},
					{"2001:db8::/32", "2001:db8::/32"},
				}
				for i, w := range want {
					if r := c.Rules[i]; r.Src.String() != w.src || r.Dst.String() != w.dst {
						t.Errorf("rule %d: src %v dst %v, want %s %s", i+1, r.Src, r.Dst, w.src, w.dst)
					}
				}
			},
		},
		{
			name:  "default rule names and indices",
			input: withGW("[[rule]]\naction = \"pass\"\ndirection = \"in\"\ndst = \"0.0.0.0/0\"\n[[rule]]\naction = \"drop\"\nprotocol = \"udp\"\ndst_port = \"53\"\ninterface = \"eth1\""),
			check: func(t *testing.T, c *Config) {
				if len(c.Rules) != 2 || c.Rules[0].Name != "rule 1" || c.Rules[1].Name != "rule 2" || c.Rules[1].Index != 1 || c.Rules[1].Line != 5 {
					t.Fatalf("rules = %+v", c.Rules)
				}
				if c.Rules[0].Protocol != "any" || c.Rules[0].Direction != "in" || c.Rules[0].Dst.Bits() != 0 || c.Rules[1].DstPort != (PortRange{53, 53}) || c.Rules[1].Interface != "eth1" {
					t.Errorf("rules = %+v", c.Rules)
				}
			},
		},
		{
			name:  "two named gateways on one interface",
			input: "[[gateway]]\nname = \"a\"\ninterface = \"eth0\"\naddress = \"10.1.0.1\"\n[[gateway]]\nname = \"b\"\ninterface = \"eth0\"\naddress = \"10.1.0.254\"\nmac = \"02-00-00-00-00-02\"\nweight = 1000\nprobe = [\"192.0.2.1\"]\nmtu = 576\non = false\nonlink = true\ncomment = \"backup\"",
			check: func(t *testing.T, c *Config) {
				g := c.Gateways[1]
				if g.Name != "b" || g.MAC.String() != "02:00:00:00:00:02" || g.Weight != 1000 || g.MTU != 576 || g.On || !g.Onlink || g.Comment != "backup" ||
					!reflect.DeepEqual(g.Probe, []netip.Addr{netip.MustParseAddr("192.0.2.1")}) || g.Line != 5 {
					t.Errorf("gateway = %+v", g)
				}
			},
		},

		// TOML syntax and unknown keys.
		{
			name:  "syntax error keeps toml's line",
			input: "[shim]\nmode = \"off\"\nheartbeat = \n",
			errs:  []string{"l2shim.toml:3: TOML syntax: expected value"},
		},
		{
			name:  "duplicate key",
			input: withGW("[shim]\nmode = \"off\"\nmode = \"failover\""),
			errs:  []string{"l2shim.toml:3: TOML syntax: Key 'shim.mode' has already been defined"},
		},
		{
			name:  "unknown key with suggestion",
			input: withGW("[shim]\nmod = \"off\""),
			errs:  []string{`l2shim.toml:2: shim.mod: unknown key; did you mean "mode"?`},
		},
		{
			name:  "unknown table",
			input: withGW("[gateways]\ninterface = \"eth0\""),
			errs:  []string{`l2shim.toml:1: gateways: unknown table; did you mean "gateway"?`},
		},
		{
			name:  "unknown key in the second gateway",
			input: "[[gateway]]\ninterface = \"eth0\"\naddress = \"10.1.0.1\"\n\n[[gateway]]\ninterface = \"eth1\"\naddres = \"10.2.0.1\"\n",
			errs:  []string{`l2shim.toml:7: gateway[2].addres: unknown key; did you mean "address"?`},
		},
		{
			name:  "unknown key far from any",
			input: withGW("[failover]\ncolour = \"blue\""),
			errs:  []string{"l2shim.toml:2: failover.colour: unknown key (known: fail_ratio, min_attempts, probe_interval, probe_misses, syn_retries, window)"},
		},

		// [shim].
		{
			name:  "bad mode",
			input: withGW("[shim]\nmode = \"balance\""),
			errs:  []string{`l2shim.toml:2: shim.mode: "balance" is not a mode: use "load-balance", "failover" or "off"`},
		},
		{
			name:  "wrong types",
			input: withGW("[shim]\nsource_aware = \"yes\"\nheartbeat = 1\nmark = \"0xa0\""),
			errs: []string{
				`l2shim.toml:2: shim.source_aware: must be true or false, not the string "yes"`,
				`l2shim.toml:3: shim.heartbeat: must be a string, not the integer 1`,
				`l2shim.toml:4: shim.mark: must be an integer, not the string "0xa0"`,
			},
		},
		{
			name:  "heartbeat out of range and not a duration",
			input: withGW("[shim]\nheartbeat = \"100ms\"\n[failover]\nwindow = \"1 minute\""),
			errs: []string{
				`l2shim.toml:2: shim.heartbeat: 100ms is out of range: must be from 200ms to 1m0s`,
				`l2shim.toml:4: failover.window: "1 minute" is not a duration`,
			},
		},
		{
			name:  "mark zero, mask zero",
			input: withGW("[shim]\nmark = 0\nmark_mask = 0"),
			errs:  []string{"l2shim.toml:2: shim.mark: must not be 0", "l2shim.toml:3: shim.mark_mask: must not be 0"},
		},
		{
			name:  "mark outside the default mask",
			input: withGW("[shim]\nmark = 0x100"),
			errs:  []string{"l2shim.toml:2: shim.mark: mark 0x100 has bits outside mark_mask 0xf0"},
		},
		{
			name:  "mask without the default mark's bits",
			input: withGW("[shim]\nmark_mask = 0xf00"),
			errs:  []string{"l2shim.toml:2: shim.mark_mask: mark 0xa0 has bits outside mark_mask 0xf00"},
		},
		{
			name:  "mark beyond 32 bits",
			input: withGW("[shim]\nmark = 0x100000000\nmark_mask = -1"),
			errs:  []string{"l2shim.toml:2: shim.mark: 4294967296 is out of range: must be from 0 to 4294967295", "l2shim.toml:3: shim.mark_mask: -1 is out of range"},
		},
		{
			name:  "bad control and metrics",
			input: withGW("[shim]\ncontrol = \"\"\nmetrics = \"localhost\"\n"),
			errs:  []string{"l2shim.toml:2: shim.control: must not be empty", `l2shim.toml:3: shim.metrics: "localhost" is not host:port`},
		},
		{
			name:  "metrics port zero and bad host",
			input: withGW("[shim]\nmetrics = \"127.0.0.1:0\"\n[[gateway]]\ninterface = \"eth2\"\naddress = \"10.3.0.1\"\n[shim2]\nmetrics = \"bad_host:80\""),
			errs:  []string{`l2shim.toml:2: shim.metrics: "127.0.0.1:0": port "0" must be a number from 1 to 65535`, `l2shim.toml:6: shim2: unknown table; did you mean "shim"?`},
		},
		{
			name:  "attach tc",
			input: withGW("[shim]\nattach = \"tc\""),
			check: func(t *testing.T, c *Config) {
				if c.Shim.Attach != AttachTC {
					t.Errorf("attach = %q, want tc", c.Shim.Attach)
				}
			},
		},
		{
			name:  "attach tcx",
			input: withGW("[shim]\nmode = \"off\"\nattach = \"tcx\""),
			check: func(t *testing.T, c *Config) {
				if c.Shim.Attach != AttachTCX {
					t.Errorf("attach = %q, want tcx", c.Shim.Attach)
				}
			},
		},
		{
			name:  "attach: not a mode",
			input: withGW("[shim]\nmode = \"off\"\nattach = \"xdp\""),
			errs: []string{
				`l2shim.toml:3: shim.attach: "xdp" is not an attach mode: use "auto" (TCX when the kernel has it, else tc), "tcx" (Linux 6.6 or later) or "tc" (clsact and cls_bpf)`,
			},
		},
		{
			name:  "attach not a string",
			input: withGW("[shim]\nattach = true"),
			errs:  []string{`l2shim.toml:2: shim.attach: must be a string, not`},
		},
		{
			name:  "attach misspelt",
			input: withGW("[shim]\nattatch = \"tc\""),
			errs:  []string{`l2shim.toml:2: shim.attatch: unknown key; did you mean "attach"?`},
		},
		{
			name:  "shim as an array of tables",
			input: withGW("[[shim]]\nmode = \"off\""),
			errs:  []string{"l2shim.toml:1: shim: must be a single table: write [shim], not [[shim]]"},
		},

		// [failover].
		{
			name:  "failover out of range",
			input: withGW("[failover]\nsyn_retries = 11\nfail_ratio = 0\nmin_attempts = 0\nwindow = \"0s\"\nprobe_interval = \"10ms\"\nprobe_misses = 0"),
			errs: []string{
				"l2shim.toml:2: failover.syn_retries: 11 is out of range: must be from 1 to 10",
				"l2shim.toml:3: failover.fail_ratio: 0 is out of range: must be above 0 and at most 1",
				"l2shim.toml:4: failover.min_attempts: 0 is out of range: must be at least 1",
				"l2shim.toml:5: failover.window: 0s is out of range: must be above 0",
				`l2shim.toml:6: failover.probe_interval: 10ms is out of range: must be "0s" (probing off) or at least 50ms`,
				"l2shim.toml:7: failover.probe_misses: 0 is out of range: must be at least 1",
			},
		},
		{
			// 0 would move every connection on its first SYN and bench healthy gateways.
			name:  "syn_retries 0",
			input: withGW("[failover]\nsyn_retries = 0"),
			errs:  []string{"l2shim.toml:2: failover.syn_retries: 0 is out of range: must be from 1 to 10"},
		},
		{
			name:  "fail_ratio above 1, NaN and a string",
			input: withGW("[failover]\nfail_ratio = 1.5\n[[rule]]\naction = \"pass\"\n[[gateway]]\ninterface = \"eth3\"\naddress = \"10.3.0.1\"\n[failover.x]\ny = nan"),
			errs:  []string{"l2shim.toml:2: failover.fail_ratio: 1.5 is out of range", "l2shim.toml:8: failover.x: unknown table"},
		},

		// [conntrack].
		{
			name:  "conntrack keys at their bounds",
			input: withGW("[conntrack]\nmax_flows = 1024\ntcp_syn_sent = \"1s\"\ntcp_established = \"720h\"\ntcp_closing = \" 90s \"\ntcp_closed = \"1.5s\"\nudp_unreplied = \"1m30s\"\nudp_replied = \"1h\"\nicmp = \"1s\"\nother = \"720h\""),
			check: func(t *testing.T, c *Config) {
				want := Conntrack{MaxFlows: 1024, TCPSynSent: time.Second, TCPEstablished: 720 * time.Hour, TCPClosing: 90 * time.Second, TCPClosed: 1500 * time.Millisecond,
					UDPUnreplied: 90 * time.Second, UDPReplied: time.Hour, ICMP: time.Second, Other: 720 * time.Hour}
				if c.Conntrack != want {
					t.Errorf("conntrack = %+v, want %+v", c.Conntrack, want)
				}
			},
		},
		{
			name:  "conntrack max_flows at its upper bound, other keys default",
			input: withGW("conntrack = { max_flows = 16777216 }"),
			check: func(t *testing.T, c *Config) {
				if c.Conntrack.MaxFlows != 16<<20 || c.Conntrack.TCPEstablished != DefaultTCPEstablished || c.Conntrack.Other != DefaultOtherTimeout {
					t.Errorf("conntrack = %+v", c.Conntrack)
				}
			},
		},
		{
			name:  "conntrack out of range",
			input: withGW("[conntrack]\nmax_flows = 1023\ntcp_syn_sent = \"999ms\"\ntcp_established = \"721h\"\ntcp_closing = \"0s\"\ntcp_closed = \"-10s\""),
			errs: []string{
				"l2shim.toml:2: conntrack.max_flows: 1023 is out of range: must be from 1024 to 16777216",
				"l2shim.toml:3: conntrack.tcp_syn_sent: 999ms is out of range: must be from 1s to 720h0m0s",
				"l2shim.toml:4: conntrack.tcp_established: 721h0m0s is out of range: must be from 1s to 720h0m0s",
				"l2shim.toml:5: conntrack.tcp_closing: 0s is out of range",
				"l2shim.toml:6: conntrack.tcp_closed: -10s is out of range",
			},
		},
		{
			name:  "conntrack wrong types and bad durations",
			input: withGW("[conntrack]\nmax_flows = \"262144\"\nudp_unreplied = 30\nudp_replied = \"3 minutes\"\nicmp = \"30\"\nother = true"),
			errs: []string{
				`l2shim.toml:2: conntrack.max_flows: must be an integer, not the string "262144"`,
				"l2shim.toml:3: conntrack.udp_unreplied: must be a string, not the integer 30",
				`l2shim.toml:4: conntrack.udp_replied: "3 minutes" is not a duration; write it like "1s", "200ms" or "1m30s"`,
				`l2shim.toml:5: conntrack.icmp: "30" is not a duration`,
				"l2shim.toml:6: conntrack.other: must be a string, not the boolean true",
			},
		},
		{
			name:  "conntrack max_flows too large, unknown subtable",
			input: withGW("[conntrack]\nmax_flows = 16777217\n[[gateway]]\ninterface = \"eth2\"\naddress = \"10.3.0.1\"\n[conntrack.x]\n"),
			errs:  []string{"l2shim.toml:2: conntrack.max_flows: 16777217 is out of range: must be from 1024 to 16777216", "l2shim.toml:6: conntrack.x: unknown table"},
		},
		{
			name:  "conntrack max_flows as a float",
			input: withGW("[conntrack]\nmax_flows = 1e6"),
			errs:  []string{"l2shim.toml:2: conntrack.max_flows: must be an integer, not the float 1e+06"},
		},
		{
			name:  "conntrack unknown keys",
			input: withGW("[conntrack]\ntcp_establised = \"2h\"\nudp_replyed = \"30s\"\nsize = 1"),
			errs: []string{
				`l2shim.toml:2: conntrack.tcp_establised: unknown key; did you mean "tcp_established"?`,
				`l2shim.toml:3: conntrack.udp_replyed: unknown key; did you mean "udp_replied"?`,
				"l2shim.toml:4: conntrack.size: unknown key (known: icmp, max_flows, other, tcp_closed, tcp_closing, tcp_established, tcp_syn_sent, udp_replied, udp_unreplied)",
			},
		},
		{
			name:  "conntrack as an array of tables",
			input: withGW("[[conntrack]]\nmax_flows = 2048"),
			errs:  []string{"l2shim.toml:1: conntrack: must be a single table: write [conntrack], not [[conntrack]]"},
		},
		{
			name:  "conntrack as a value",
			input: withGW("conntrack = 5"),
			errs:  []string{"l2shim.toml:1: conntrack: must be a table ([conntrack]), not the integer 5"},
		},

		// [[gateway]].
		{
			name:  "no gateways",
			input: "[shim]\nmode = \"off\"\n",
			errs:  []string{"l2shim.toml: gateway: no [[gateway]] tables: l2shim needs at least one gateway"},
		},
		{
			name:  "gateway as a single table",
			input: "[gateway]\ninterface = \"eth0\"\naddress = \"10.1.0.1\"\n",
			errs:  []string{"l2shim.toml:1: gateway: must be an array of tables: write [[gateway]], not [gateway]"},
		},
		{
			name:  "gateway without interface and address",
			input: "[[gateway]]\ncomment = \"nothing\"\n",
			errs:  []string{"l2shim.toml:1: gateway[1].interface: is required"},
		},
		{
			name: "bad addresses",
			input: "[[gateway]]\ninterface = \"e0\"\naddress = \"fe80::1\"\n[[gateway]]\ninterface = \"e1\"\naddress = \"224.0.0.1\"\n" +
				"[[gateway]]\ninterface = \"e2\"\naddress = \"255.255.255.255\"\n[[gateway]]\ninterface = \"e3\"\naddress = \"0.0.0.0\"\n" +
				"[[gateway]]\ninterface = \"e4\"\naddress = \"10.1.0\"\n[[gateway]]\ninterface = \"e5\"\naddress = \"127.0.0.1\"\n" +
				"[[gateway]]\ninterface = \"e6\"\naddress = \"::ffff:10.1.0.1\"\n",
			errs: []string{
				`l2shim.toml:3: gateway[1].address: "fe80::1" is an IPv6 address; l2shim handles IPv4 only`,
				"l2shim.toml:6: gateway[2].address: 224.0.0.1 is a multicast address",
				"l2shim.toml:9: gateway[3].address: 255.255.255.255 is the broadcast address",
				"l2shim.toml:12: gateway[4].address: 0.0.0.0 is the unspecified address",
				`l2shim.toml:15: gateway[5].address: "10.1.0" is not an IPv4 address`,
				"l2shim.toml:18: gateway[6].address: 127.0.0.1 is a loopback address",
				`l2shim.toml:21: gateway[7].address: "::ffff:10.1.0.1" is an IPv6 address`,
			},
		},
		{
			name:  "address with a prefix length, key in the wrong case",
			input: "[[gateway]]\ninterface = \"eth0\"\naddress = \"10.1.0.1/24\"\nWeight = 2\n",
			errs: []string{
				`l2shim.toml:3: gateway[1].address: "10.1.0.1/24" is not an IPv4 address: write the address alone, without a prefix length`,
				`l2shim.toml:4: gateway[1].Weight: unknown key; did you mean "weight"?`,
			},
		},
		{
			name:  "bad MACs",
			input: "[[gateway]]\ninterface = \"e0\"\naddress = \"10.0.0.1\"\nmac = \"02:00:00:00:01\"\n[[gateway]]\ninterface = \"e1\"\naddress = \"10.0.1.1\"\nmac = \"ff:ff:ff:ff:ff:ff\"\n[[gateway]]\ninterface = \"e2\"\naddress = \"10.0.2.1\"\nmac = \"02:00:00:00:00:00:00:01\"\n",
			errs: []string{
				`l2shim.toml:4: gateway[1].mac: "02:00:00:00:01" is not a MAC address`,
				"l2shim.toml:8: gateway[2].mac: ff:ff:ff:ff:ff:ff is a multicast or broadcast MAC address",
				`l2shim.toml:12: gateway[3].mac: "02:00:00:00:00:00:00:01" is not a MAC address`,
			},
		},
		{
			name:  "weight, mtu and interface name out of range",
			input: "[[gateway]]\ninterface = \"a-very-long-interface-name\"\naddress = \"10.0.0.1\"\nweight = 0\nmtu = 100\n[[gateway]]\ninterface = \"e1\"\naddress = \"10.0.1.1\"\nweight = 1001\nmtu = 65536\n",
			errs: []string{
				"l2shim.toml:2: gateway[1].interface: \"a-very-long-interface-name\" is not an interface name: Linux allows at most 15 bytes",
				"l2shim.toml:4: gateway[1].weight: 0 is out of range: must be from 1 to 1000",
				"l2shim.toml:5: gateway[1].mtu: 100 is out of range: must be from 576 to 65535",
				"l2shim.toml:9: gateway[2].weight: 1001 is out of range",
				"l2shim.toml:10: gateway[2].mtu: 65536 is out of range",
			},
		},
		{
			name:  "bad probes",
			input: "[[gateway]]\ninterface = \"e0\"\naddress = \"10.0.0.1\"\nprobe = [\n  \"192.0.2.1\",\n  \"192.0.2.1\",\n  5,\n  \"ff02::1\",\n]\n[[gateway]]\ninterface = \"e1\"\naddress = \"10.0.1.1\"\nprobe = \"192.0.2.1\"\n",
			errs: []string{
				"l2shim.toml:6: gateway[1].probe[2]: 192.0.2.1 is already probe[1]",
				"l2shim.toml:7: gateway[1].probe[3]: must be a string with an IPv4 or IPv6 address, not the integer 5",
				`l2shim.toml:8: gateway[1].probe[4]: ff02::1 is a multicast address, not a unicast address`,
				`l2shim.toml:13: gateway[2].probe: must be an array of IP addresses such as ["192.0.2.10", "2001:db8::10"], not the string "192.0.2.1"`,
			},
		},
		{
			name:  "mixed IPv4 and IPv6 probe targets",
			input: "[[gateway]]\ninterface = \"e0\"\naddress = \"10.0.0.1\"\nprobe = [\"192.0.2.1\", \"2001:db8:ff::10\", \"2606:4700:4700::1111\", \"fd00::53\"]\n",
			check: func(t *testing.T, c *Config) {
				want := []netip.Addr{netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("2001:db8:ff::10"),
					netip.MustParseAddr("2606:4700:4700::1111"), netip.MustParseAddr("fd00::53")}
				if !reflect.DeepEqual(c.Gateways[0].Probe, want) {
					t.Errorf("probe = %v, want %v", c.Gateways[0].Probe, want)
				}
			},
		},
		{
			name:  "bad IPv6 probe targets",
			input: "[[gateway]]\ninterface = \"e0\"\naddress = \"10.0.0.1\"\nprobe = [\n  \"fe80::1\",\n  \"ff0e::101\",\n  \"2001:db8::1%e0\",\n  \"::ffff:192.0.2.1\",\n  \"::\",\n  \"::1\",\n  \"2001:db8::/64\",\n  \"2001:db8::10\",\n  \"2001:DB8::10\",\n  \"2001:db8::zz\",\n]\n",
			errs: []string{
				"l2shim.toml:5: gateway[1].probe[1]: fe80::1 is a link-local address: IPv6 probe targets are global unicast addresses",
				"l2shim.toml:6: gateway[1].probe[2]: ff0e::101 is a multicast address, not a unicast address",
				`l2shim.toml:7: gateway[1].probe[3]: "2001:db8::1%e0" has a zone`,
				`l2shim.toml:8: gateway[1].probe[4]: "::ffff:192.0.2.1" is an IPv4-mapped IPv6 address: write the IPv4 address (192.0.2.1)`,
				"l2shim.toml:9: gateway[1].probe[5]: :: is the unspecified address",
				"l2shim.toml:10: gateway[1].probe[6]: ::1 is a loopback address",
				`l2shim.toml:11: gateway[1].probe[7]: "2001:db8::/64" is not an IP address: write the address alone, without a prefix length`,
				"l2shim.toml:13: gateway[1].probe[9]: 2001:db8::10 is already probe[8]",
				`l2shim.toml:14: gateway[1].probe[10]: "2001:db8::zz" is not an IPv4 or IPv6 address`,
			},
		},
		{
			name:  "two unnamed gateways on one interface",
			input: "[[gateway]]\ninterface = \"eth0\"\naddress = \"10.1.0.1\"\n[[gateway]]\ninterface = \"eth0\"\naddress = \"10.1.0.2\"\n",
			errs: []string{
				`l2shim.toml:1: gateway[1].name: is required: gateway[1] and gateway[2] share interface "eth0", so give each a unique name`,
				`l2shim.toml:4: gateway[2].name: is required: gateway[1] and gateway[2] share interface "eth0"`,
			},
		},
		{
			name:  "duplicate names",
			input: "[[gateway]]\nname = \"isp\"\ninterface = \"eth0\"\naddress = \"10.1.0.1\"\n[[gateway]]\nname = \"isp\"\ninterface = \"eth1\"\naddress = \"10.2.0.1\"\n[[gateway]]\ninterface = \"isp\"\naddress = \"10.3.0.1\"\n",
			errs: []string{
				`l2shim.toml:6: gateway[2].name: "isp" is already the name of gateway[1] (line 1)`,
				`l2shim.toml:9: gateway[3].name: is required: the default, the interface name "isp", is already the name of gateway[1] (line 1)`,
			},
		},
		{
			name:  "same gateway twice, name that is an address",
			input: "[[gateway]]\nname = \"10.1.0.1\"\ninterface = \"eth0\"\naddress = \"10.1.0.1\"\n[[gateway]]\nname = \"b\"\ninterface = \"eth0\"\naddress = \"10.1.0.1\"\n",
			errs: []string{
				`l2shim.toml:2: gateway[1].name: "10.1.0.1" must not be an IP address`,
				"l2shim.toml:8: gateway[2].address: gateway[1] (line 1) is already 10.1.0.1 on eth0",
			},
		},

		// [[rule]].
		{
			name:  "rule action missing and invalid",
			input: withGW("[[rule]]\nname = \"x\"\n[[rule]]\naction = \"accept\""),
			errs:  []string{`l2shim.toml:1: rule "x".action: is required`, `l2shim.toml:4: rule[2].action: "accept" is not an action`},
		},
		{
			name:  "route-to without a gateway",
			input: withGW("[[rule]]\naction = \"route-to\""),
			errs:  []string{`l2shim.toml:1: rule[1].gateway: is required with action = "route-to"`},
		},
		{
			name:  "route-to an unknown name and an unknown address",
			input: withGW("[[rule]]\nname = \"mail via ISP B\"\naction = \"route-to\"\ngateway = \"isp-c\"\n[[rule]]\naction = \"route-to\"\ngateway = \"10.9.0.1\""),
			errs: []string{
				`l2shim.toml:4: rule "mail via ISP B".gateway: no gateway is named "isp-c" (gateways: "eth0", "isp-b")`,
				"l2shim.toml:7: rule[2].gateway: no gateway has address 10.9.0.1",
			},
		},
		{
			name:  "route-to an ambiguous address",
			input: "[[gateway]]\ninterface = \"eth0\"\naddress = \"192.168.1.1\"\n[[gateway]]\ninterface = \"eth1\"\naddress = \"192.168.1.1\"\n[[rule]]\naction = \"route-to\"\ngateway = \"192.168.1.1\"\n",
			errs:  []string{`l2shim.toml:9: rule[1].gateway: 192.168.1.1 is ambiguous: gateway[1] and gateway[2] all have this address; name one of "eth0", "eth1" instead`},
		},
		{
			name:  "gateway and strict on rules that do not route",
			input: withGW("[[rule]]\naction = \"pass\"\ngateway = \"isp-b\"\n[[rule]]\naction = \"drop\"\nstrict = true"),
			errs: []string{
				`l2shim.toml:3: rule[1].gateway: only route-to rules name a gateway; this rule's action is "pass"`,
				`l2shim.toml:6: rule[2].strict: only applies to route-to rules; this rule's action is "drop"`,
			},
		},
		{
			name:  "affinity: bad values, and on rules that leave nothing to the mode",
			input: "[shim]\naffinity = \"pair\"\n" + withGW("[[rule]]\naction = \"pass\"\naffinity = \"host-pair\"\n[[rule]]\naction = \"balance\"\naffinity = 1"),
			errs: []string{
				`l2shim.toml:2: shim.affinity: "pair" is not an affinity: use "flow" (each connection on its own) or "host-pair" (every connection between two addresses on one uplink)`,
				`rule[1].affinity: only applies to balance and route-to rules (the flows they leave to the mode's choice); this rule's action is "pass"`,
				`rule[2].affinity: must be a string, not`,
			},
		},
		{
			name:  "ports without tcp or udp",
			input: withGW("[[rule]]\nname = \"p\"\naction = \"drop\"\nprotocol = \"icmp\"\ndst_port = 25\n[[rule]]\naction = \"drop\"\nsrc_port = 25"),
			errs: []string{
				`l2shim.toml:5: rule "p".dst_port: ports need protocol = "tcp" or "udp"; this rule's protocol is "icmp"`,
				`l2shim.toml:8: rule[2].src_port: ports need protocol = "tcp" or "udp"; this rule's protocol defaults to "any"`,
			},
		},
		{
			name:  "bad ports",
			input: withGW("[[rule]]\naction = \"drop\"\nprotocol = \"udp\"\nsrc_port = \"2000-1000\"\ndst_port = 0\n[[rule]]\naction = \"drop\"\nprotocol = \"tcp\"\nsrc_port = \"smtp\"\ndst_port = \"1-70000\"\n[[rule]]\naction = \"drop\"\nprotocol = \"tcp\"\ndst_port = 25.0"),
			errs: []string{
				`l2shim.toml:4: rule[1].src_port: "2000-1000" goes from high to low; write "1000-2000"`,
				"l2shim.toml:5: rule[1].dst_port: port 0 is out of range: must be from 1 to 65535",
				`l2shim.toml:9: rule[2].src_port: "smtp" is not a port (25) or a range ("1000-2000")`,
				`l2shim.toml:10: rule[2].dst_port: "1-70000": port 70000 is out of range`,
				`l2shim.toml:14: rule[3].dst_port: must be a port (25) or a range ("1000-2000"), not the float 25`,
			},
		},
		{
			name:  "bad prefixes",
			input: withGW("[[rule]]\naction = \"pass\"\nsrc = \"10.0.0.1/8\"\ndst = \"2001:db8::1/32\"\n[[rule]]\naction = \"pass\"\nsrc = \"10.0.0.0/33\"\ndst = \"example.com\""),
			errs: []string{
				`l2shim.toml:3: rule[1].src: "10.0.0.1/8" has host bits set; did you mean "10.0.0.0/8"?`,
				`l2shim.toml:4: rule[1].dst: "2001:db8::1/32" has host bits set; did you mean "2001:db8::/32"?`,
				`l2shim.toml:7: rule[2].src: "10.0.0.0/33" is not a CIDR such as "192.0.2.0/24" or "2001:db8::/32"`,
				`l2shim.toml:8: rule[2].dst: "example.com" is not an IP address or CIDR such as "192.0.2.0/24" or "2001:db8::/32"`,
			},
		},
		{
			name: "bad IPv6 prefixes",
			input: withGW("[[rule]]\naction = \"pass\"\nsrc = \"2001:db8::/129\"\ndst = \"2001:db8::g/64\"\n" +
				"[[rule]]\naction = \"pass\"\nsrc = \"fe80::1%eth0\"\ndst = \"fe80::/64%eth0\"\n" +
				"[[rule]]\naction = \"pass\"\nsrc = \"::ffff:10.0.0.0/104\"\ndst = \"::ffff:192.0.2.7\"\n" +
				"[[rule]]\naction = \"pass\"\nsrc = \"::ffff:0:0/95\"\ndst = \"2001:db8:::/48\""),
			errs: []string{
				`l2shim.toml:3: rule[1].src: "2001:db8::/129" is not a CIDR`,
				`l2shim.toml:4: rule[1].dst: "2001:db8::g/64" is not a CIDR`,
				`l2shim.toml:7: rule[2].src: "fe80::1%eth0" has a zone: write the address alone`,
				`l2shim.toml:8: rule[2].dst: "fe80::/64%eth0" is not a CIDR`,
				`l2shim.toml:11: rule[3].src: "::ffff:10.0.0.0/104" is an IPv4-mapped IPv6 address, which no flow carries: write "10.0.0.0/8"`,
				`l2shim.toml:12: rule[3].dst: "::ffff:192.0.2.7" is an IPv4-mapped IPv6 address, which no flow carries: write "192.0.2.7"`,
				`l2shim.toml:15: rule[4].src: "::ffff:0:0/95" is an IPv4-mapped IPv6 address, which no flow carries: write an IPv4 prefix`,
				`l2shim.toml:16: rule[4].dst: "2001:db8:::/48" is not a CIDR`,
			},
		},
		{
			name: "src and dst of different families",
			input: withGW("[[rule]]\nname = \"mixed\"\naction = \"pass\"\nsrc = \"10.0.0.0/8\"\ndst = \"2001:db8::/32\"\n" +
				"[[rule]]\naction = \"drop\"\nsrc = \"2001:db8::7\"\ndst = \"0.0.0.0/0\"\n" +
				"[[rule]]\naction = \"drop\"\nsrc = \"10.0.0.0/33\"\ndst = \"2001:db8::/32\""),
			errs: []string{
				`l2shim.toml:5: rule "mixed".dst: "2001:db8::/32" is IPv6 but src "10.0.0.0/8" is IPv4, and a flow is one or the other: this rule could never match; write one rule per family`,
				`l2shim.toml:9: rule[2].dst: "0.0.0.0/0" is IPv4 but src "2001:db8::7" is IPv6`,
				// An invalid src leaves nothing to compare dst with.
				`l2shim.toml:12: rule[3].src: "10.0.0.0/33" is not a CIDR`,
			},
		},
		{
			name:  "bad direction, protocol and interface",
			input: withGW("[[rule]]\naction = \"pass\"\ndirection = \"both\"\nprotocol = \"sctp\"\ninterface = \"eth7\"\ndst_port = 9"),
			errs: []string{
				`l2shim.toml:3: rule[1].direction: "both" is not a direction`,
				`l2shim.toml:4: rule[1].protocol: "sctp" is not a protocol: use "tcp", "udp", "icmp" or "any"`,
				`l2shim.toml:5: rule[1].interface: no gateway uses interface "eth7", and l2shim only sees frames on its gateways' interfaces (eth0, eth1)`,
			},
		},
		{
			name:  "duplicate rule names",
			input: withGW("[[rule]]\nname = \"r\"\naction = \"pass\"\n[[rule]]\nname = \"r\"\naction = \"drop\"\n[[rule]]\nname = \"rule 1\"\naction = \"drop\""),
			errs:  []string{`l2shim.toml:5: rule[2].name: "r" is already the name of rule[1] (line 1)`},
		},
		{
			name:  "rule name is not a string",
			input: withGW("[[rule]]\nname = 7\naction = \"pass\"\nfoo = 1"),
			errs:  []string{"l2shim.toml:2: rule[1].name: must be a string, not the integer 7", `l2shim.toml:4: rule[1].foo: unknown key`},
		},

		// Several problems at once, and lines the scanner must get right.
		{
			name: "every problem at once",
			input: "[shim]\nmode = \"fast\"\n\n[failover]\nsyn_retries = -1\n\n" +
				"[[gateway]]\ninterface = \"eth0\"\naddress = \"10.1.0.300\"\nwieght = 2\n\n" +
				"[[rule]]\nname = \"r\"\naction = \"route-to\"\ngateway = \"nowhere\"\n",
			errs: []string{
				"l2shim.toml:2: shim.mode:",
				"l2shim.toml:5: failover.syn_retries:",
				"l2shim.toml:9: gateway[1].address:",
				`l2shim.toml:10: gateway[1].wieght: unknown key; did you mean "weight"?`,
				`l2shim.toml:15: rule "r".gateway: no gateway is named "nowhere"`,
			},
		},
		{
			name: "lines after multi-line strings, quoted keys and inline arrays",
			input: "[[gateway]]\ncomment = \"\"\"\nline two\n[[gateway]]\nline four\"\"\"\ninterface = \"eth0\"\naddress = \"10.1.0.1\"\n" +
				"probe = [ # a comment [\n \"192.0.2.1\", '''x\n'''\n]\n\"we ird\" = 1\n",
			errs: []string{
				`l2shim.toml:9: gateway[1].probe[2]: "x\n" is not an IPv4 or IPv6 address`,
				`l2shim.toml:12: gateway[1]."we ird": unknown key`,
			},
		},
		{
			name:  "inline array of gateway tables",
			input: "gateway = [\n  { interface = \"eth0\", address = \"10.1.0.1\" },\n  { interface = \"eth1\",\n    address = \"10.1.0\" },\n]\n",
			errs:  []string{`l2shim.toml:4: gateway[2].address: "10.1.0" is not an IPv4 address`},
		},
		{
			name:  "gateway array element that is not a table",
			input: "gateway = [\n  { interface = \"eth0\", address = \"10.1.0.1\" },\n  5,\n]\n",
			errs:  []string{"l2shim.toml:3: gateway[2]: must be a table, not the integer 5", "gateway[2].interface: is required"},
		},
	}

	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Parse("l2shim.toml", []byte(tc.input))
			if tc.errs == nil {
				if err != nil {
					t.Fatalf("unexpected error:\n%v", err)
				}
				if c == nil || c.File != "l2shim.toml" {
					t.Fatalf("config = %+v", c)
				}
				if tc.check != nil {
					tc.check(t, c)
				}
				return
			}
			if err == nil {
				t.Fatalf("no error, want %q", tc.errs)
			}
			if c != nil {
				t.Errorf("config is not nil on error")
			}
			var es Errors
			if !errors.As(err, &es) {
				t.Fatalf("error is %T, not Errors", err)
			}
			if len(es) != len(tc.errs) {
				t.Fatalf("got %d errors, want %d:\n%v", len(es), len(tc.errs), err)
			}
			for i, want := range tc.errs {
				if got := es[i].Error(); !strings.Contains(got, want) {
					t.Errorf("error %d:\n got %s\nwant substring %s", i, got, want)
				}
			}
		})
	}
}

// TestDefaults checks every default a minimal file leaves in place.
func TestDefaults(t *testing.T) {
	c, err := Parse("min.toml", []byte("[[gateway]]\ninterface = \"eth0\"\naddress = \"10.1.0.1\"\n[[rule]]\naction = \"pass\"\n"))
	if err != nil {
		t.Fatal(err)
	}
	wantShim := Shim{Mode: ModeLoadBalance, SourceAware: true, Control: "/run/l2shim/l2shim.sock", Metrics: "", Mark: 0xa0, MarkMask: 0xf0, Heartbeat: time.Second, Affinity: AffinityFlow, Attach: AttachAuto}
	if c.Shim != wantShim {
		t.Errorf("shim = %+v, want %+v", c.Shim, wantShim)
	}
	wantFailover := Failover{SynRetries: 2, FailRatio: 0.5, MinAttempts: 4, Window: 60 * time.Second, ProbeInterval: time.Second, ProbeMisses: 3}
	if c.Failover != wantFailover {
		t.Errorf("failover = %+v, want %+v", c.Failover, wantFailover)
	}
	wantConntrack := Conntrack{MaxFlows: 262144, TCPSynSent: 2 * time.Minute, TCPEstablished: 2*time.Hour + 4*time.Minute, TCPClosing: 2 * time.Minute,
		TCPClosed: 10 * time.Second, UDPUnreplied: 30 * time.Second, UDPReplied: 3 * time.Minute, ICMP: 30 * time.Second, Other: 10 * time.Minute}
	if c.Conntrack != wantConntrack {
		t.Errorf("conntrack = %+v, want %+v", c.Conntrack, wantConntrack)
	}
	g := c.Gateways[0]
	if g.Name != "eth0" || g.Weight != 1 || !g.On || g.Onlink || g.MAC != nil || g.Probe != nil || g.MTU != 0 || g.Comment != "" || g.Line != 1 {
		t.Errorf("gateway = %+v", g)
	}
	r := c.Rules[0]
	want := Rule{Name: "rule 1", Protocol: "any", Action: "pass", Line: 4}
	if !reflect.DeepEqual(r, want) {
		t.Errorf("rule = %+v, want %+v", r, want)
	}
	if r.Src.IsValid() || r.Dst.IsValid() || !r.SrcPort.Any() || !r.DstPort.Contains(80) {
		t.Errorf("rule matches are not 'any': %+v", r)
	}
}

// TestExample loads a short example with every table (testdata/example.toml).
func TestExample(t *testing.T) {
	c, err := Load("testdata/example.toml")
	if err != nil {
		t.Fatal(err)
	}
	if c.File != "testdata/example.toml" || len(c.Gateways) != 2 || len(c.Rules) != 1 {
		t.Fatalf("config = %+v", c)
	}
	if c.Gateways[0].Name != "eth0" || c.Gateways[0].Comment != "ISP A" || c.Gateways[1].Name != "isp-b" {
		t.Errorf("gateways = %+v", c.Gateways)
	}
	r := c.Rules[0]
	if r.Name != "mail via ISP B" || r.Protocol != "tcp" || r.DstPort != (PortRange{25, 25}) || r.Action != ActionRouteTo || r.Gateway != "isp-b" {
		t.Errorf("rule = %+v", r)
	}
	if g, ok := c.GatewayByRef(r.Gateway); !ok || g != &c.Gateways[1] {
		t.Errorf("GatewayByRef(%q) = %v, %v", r.Gateway, g, ok)
	}
	// The example spells out the [conntrack] defaults.
	d, err := Parse("d.toml", []byte(baseGateways))
	if err != nil {
		t.Fatal(err)
	}
	if c.Conntrack != d.Conntrack {
		t.Errorf("example's conntrack = %+v, defaults %+v", c.Conntrack, d.Conntrack)
	}
}

// TestFull loads a file that sets every key and checks every value.
func TestFull(t *testing.T) {
	c, err := Load("testdata/full.toml")
	if err != nil {
		t.Fatal(err)
	}
	want := &Config{
		File:     "testdata/full.toml",
		Shim:     Shim{Mode: ModeFailover, SourceAware: false, Control: "/tmp/l2shim-test.sock", Metrics: "127.0.0.1:9617", Mark: 0x100, MarkMask: 0xf00, Heartbeat: 500 * time.Millisecond, Affinity: AffinityHostPair, Attach: AttachTC},
		Failover: Failover{SynRetries: 3, FailRatio: 0.75, MinAttempts: 6, Window: 2 * time.Minute, ProbeInterval: 0, ProbeMisses: 5},
		Conntrack: Conntrack{MaxFlows: 1 << 20, TCPSynSent: time.Minute, TCPEstablished: 120 * time.Hour, TCPClosing: 4 * time.Minute, TCPClosed: 5 * time.Second,
			UDPUnreplied: 20 * time.Second, UDPReplied: 5 * time.Minute, ICMP: 15 * time.Second, Other: time.Hour},
		Gateways: []Gateway{
			{Name: "isp-a", Interface: "eth0", Address: netip.MustParseAddr("10.1.0.1"), MAC: net.HardwareAddr{2, 0, 0, 0, 0, 1}, Weight: 3, Comment: "ISP A", On: true, Onlink: true,
				Probe: []netip.Addr{netip.MustParseAddr("192.0.2.10"), netip.MustParseAddr("198.51.100.7")}, MTU: 1492, Line: 33},
			{Name: "isp-b", Interface: "eth1", Address: netip.MustParseAddr("10.2.0.1"), Weight: 1, On: false, Line: 45},
		},
		Rules: []Rule{
			{Name: "mail via ISP B", Index: 0, Interface: "eth0", Direction: "out", Src: netip.MustParsePrefix("10.1.0.0/24"), Dst: netip.MustParsePrefix("192.0.2.7/32"), Protocol: "tcp",
				SrcPort: PortRange{25, 25}, DstPort: PortRange{1000, 2000}, Action: "route-to", Gateway: "10.2.0.1", Strict: true, Affinity: AffinityFlow, Line: 51},
			{Name: "rule 2", Index: 1, Direction: "in", Protocol: "icmp", Action: "drop", Line: 65},
			{Name: "bank", Index: 2, Dst: netip.MustParsePrefix("198.51.100.0/24"), Protocol: "any", Action: "balance", Affinity: AffinityHostPair, Line: 70},
		},
	}
	c.lines = nil
	if !reflect.DeepEqual(c, want) {
		t.Errorf("config =\n%+v\nwant\n%+v", c, want)
	}
}

func TestLoadMissingFile(t *testing.T) {
	c, err := Load("testdata/does-not-exist.toml")
	if c != nil || err == nil {
		t.Fatalf("Load = %v, %v", c, err)
	}
	if got, want := err.Error(), "testdata/does-not-exist.toml: cannot read the file: no such file or directory"; got != want {
		t.Errorf("error = %q, want %q", got, want)
	}
}

func TestErrorFormat(t *testing.T) {
	es := Errors{
		{File: "a.toml", Line: 3, Key: "shim.mode", Msg: "bad"},
		{File: "a.toml", Key: "gateway", Msg: "none"},
		{File: "a.toml", Line: 1, Msg: "syntax"},
	}
	want := "a.toml:3: shim.mode: bad\na.toml: gateway: none\na.toml:1: syntax"
	if got := es.Error(); got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
	var e *Error
	if !errors.As(error(es), &e) || e != es[0] {
		t.Errorf("errors.As did not find the first *Error")
	}
	es.sort()
	if es[0].Line != 1 || es[1].Line != 3 || es[2].Line != 0 {
		t.Errorf("sorted = %v", es)
	}
}

func TestGatewayByRef(t *testing.T) {
	c, err := Parse("g.toml", []byte(`
[[gateway]]
name = "a"
interface = "eth0"
address = "192.168.1.1"
[[gateway]]
name = "b"
interface = "eth1"
address = "192.168.1.1"
[[gateway]]
name = "c"
interface = "eth2"
address = "10.3.0.1"
`))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		ref  string
		want string
	}{
		{"a", "a"}, {"c", "c"}, {"10.3.0.1", "c"}, {"192.168.1.1", ""}, {"10.9.9.9", ""}, {"nope", ""},
	} {
		g, ok := c.GatewayByRef(tc.ref)
		if ok != (tc.want != "") || (ok && g.Name != tc.want) {
			t.Errorf("GatewayByRef(%q) = %v, %v; want %q", tc.ref, g, ok, tc.want)
		}
	}
	if got := c.Interfaces(); !reflect.DeepEqual(got, []string{"eth0", "eth1", "eth2"}) {
		t.Errorf("Interfaces() = %v", got)
	}
}

func TestPortRangeString(t *testing.T) {
	for r, want := range map[PortRange]string{{}: "any", {25, 25}: "25", {1000, 2000}: "1000-2000"} {
		if got := r.String(); got != want {
			t.Errorf("%#v.String() = %q, want %q", r, got, want)
		}
	}
}

// TestLineIndex checks the scanner on constructs the table above does not reach.
func TestLineIndex(t *testing.T) {
	src := "a = 1\n\"b.c\" = 'x'\n[t . 'u']\nk = { x = 1,\n  y = [1,\n 2] }\n[[arr]]\n[arr.sub]\nz = 1\n[[arr]]\n[[arr.n]]\nw = \"\\\"[[\"\ns = '''\n'''''\nv = 1\n"
	x := indexLines(src)
	for _, tc := range []struct {
		path []string
		line int
	}{
		{[]string{"a"}, 1},
		{[]string{"b.c"}, 2},
		{[]string{"t", "u"}, 3},
		{[]string{"t", "u", "k", "x"}, 4},
		{[]string{"t", "u", "k", "y", elem(1)}, 6},
		{[]string{"arr", elem(0)}, 7},
		{[]string{"arr", elem(0), "sub", "z"}, 9},
		{[]string{"arr", elem(1)}, 10},
		{[]string{"arr", elem(1), "n", elem(0), "w"}, 12},
		{[]string{"arr", elem(1), "n", elem(0), "v"}, 15},
	} {
		if got := x.lookup(tc.path...); got != tc.line {
			t.Errorf("line of %q = %d, want %d", tc.path, got, tc.line)
		}
	}
}

// FuzzParse feeds arbitrary bytes to Parse, which must never panic and must return either a
// config or a non-empty Errors.
func FuzzParse(f *testing.F) {
	for _, name := range []string{"testdata/example.toml", "testdata/full.toml"} {
		data, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Add([]byte(withGW("[[rule]]\naction = \"route-to\"\ngateway = \"10.2.0.1\"\nsrc_port = \"1-2\"")))
	f.Add([]byte("gateway = [ { interface = \"eth0\", address = \"10.1.0.1\", probe = ['''x''', \"\"\"y\"\"\"] } ]"))
	f.Add([]byte("[shim]\nmark = 0x100\n[[gateway]]\n[[gateway.x]]\n[gateway.y]\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := Parse("fuzz.toml", data)
		if err != nil {
			es, ok := err.(Errors)
			if !ok || len(es) == 0 || c != nil {
				t.Fatalf("Parse = %v, %#v", c, err)
			}
			_ = es.Error()
			return
		}
		if c == nil {
			t.Fatal("nil config without error")
		}
		for _, r := range c.Rules {
			if r.Action == ActionRouteTo {
				if _, ok := c.GatewayByRef(r.Gateway); !ok {
					t.Fatalf("rule %q routes to %q, which does not resolve", r.Name, r.Gateway)
				}
			}
		}
		_, _ = c.CheckHost(fakeHost{})
	})
}

// TestParseAddress6 checks [[gateway]] address6: an IPv6 router, link-local or global, and the
// clear errors for what it cannot be.
func TestParseAddress6(t *testing.T) {
	gw := func(v string) string {
		return "[[gateway]]\ninterface = \"eth0\"\naddress = \"10.1.0.1\"\naddress6 = \"" + v + "\"\n"
	}
	for _, ok := range []string{"fe80::1", "2001:db8:1::1"} {
		c, err := Parse("l2shim.toml", []byte(gw(ok)))
		if err != nil || c.Gateways[0].Address6.String() != ok {
			t.Errorf("address6 %q: %v, %+v", ok, err, c)
		}
	}
	for v, want := range map[string]string{
		"fe80::1/64":   `l2shim.toml:4: gateway[1].address6: "fe80::1/64" is not an IPv6 address: write the address alone`,
		"fe80::1%eth0": `l2shim.toml:4: gateway[1].address6: "fe80::1%eth0" has a zone`,
		"10.1.0.1":     `l2shim.toml:4: gateway[1].address6: "10.1.0.1" is an IPv4 address`,
		"ff02::2":      `l2shim.toml:4: gateway[1].address6: ff02::2 is not a unicast address`,
		"router":       `l2shim.toml:4: gateway[1].address6: "router" is not an IPv6 address`,
		"::":           `l2shim.toml:4: gateway[1].address6: :: is not a unicast address`,
	} {
		_, err := Parse("l2shim.toml", []byte(gw(v)))
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("address6 %q: got %v, want %q", v, err, want)
		}
	}
}
