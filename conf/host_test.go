package conf

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"testing"

	"github.com/l2shim/l2shim/internal/testcfg"
)

// fakeHost is a Host made of a map; missing names are errors.
type fakeHost map[string]HostInterface

func (h fakeHost) FwmarkRules() ([]FwmarkRule, error) { return nil, nil }

func (h fakeHost) Interface(name string) (HostInterface, error) {
	hi, ok := h[name]
	if !ok {
		if name == "eth9" {
			return HostInterface{}, fmt.Errorf("no interface %q on this host: %w", name, &NoInterfaceError{errors.New("Link not found")})
		}
		return HostInterface{}, &NoInterfaceError{errors.New("Link not found")}
	}
	return hi, nil
}

// eth returns a healthy Ethernet interface with the given prefixes.
func eth(name string, prefixes ...string) HostInterface {
	hi := HostInterface{Name: name, Index: 2, MTU: 1500, Ethernet: true, Kind: "veth", Up: true, RPFilter: 2}
	for _, p := range prefixes {
		hi.Prefixes = append(hi.Prefixes, netip.MustParsePrefix(p))
	}
	return hi
}

// l3 returns a healthy interface without a link-layer header with the given prefixes.
func l3(name string, prefixes ...string) HostInterface {
	hi := eth(name, prefixes...)
	hi.Ethernet, hi.L3, hi.Kind = false, true, "ppp"
	return hi
}

func TestCheckHost(t *testing.T) {
	const twoGateways = testcfg.TwoGateways + "mtu = 1492\n"
	healthy := fakeHost{"eth0": eth("eth0", "10.1.0.2/24"), "eth1": eth("eth1", "10.2.0.2/24")}
	with := func(name string, change func(*HostInterface)) fakeHost {
		h := fakeHost{}
		for k, v := range healthy {
			h[k] = v
		}
		hi := h[name]
		change(&hi)
		h[name] = hi
		return h
	}
	tests := []struct {
		name     string
		config   string
		host     fakeHost
		errs     []string
		warnings []string
	}{
		{name: "healthy", config: twoGateways, host: healthy},
		{
			// A USB modem's Ethernet interface not plugged in when l2shim starts.
			name:     "missing interface",
			config:   twoGateways,
			host:     fakeHost{"eth0": healthy["eth0"]},
			warnings: []string{`l2shim.toml:7: gateway[2].interface: eth1 does not exist (yet): l2shim starts without it, its gateways down, and attaches it when it appears (a modem plugged in, a PPP session coming up); if the name is wrong, correct it`},
		},
		{
			name:   "no configured interface exists",
			config: "[[gateway]]\ninterface = \"eth9\"\naddress = \"10.9.0.1\"\n[[gateway]]\ninterface = \"eth8\"\naddress = \"10.8.0.1\"\n",
			host:   fakeHost{},
			errs:   []string{`l2shim.toml:2: gateway[1].interface: none of the gateways' interfaces exists (eth9, eth8): l2shim would have nothing to balance; check the names`},
		},
		{
			// An L3 link may be missing at start too: ppp0 before its session.
			name:     "missing L3 interface",
			config:   "[[gateway]]\ninterface = \"eth0\"\naddress = \"10.1.0.1\"\n[[gateway]]\ninterface = \"ppp0\"\n",
			host:     fakeHost{"eth0": healthy["eth0"]},
			warnings: []string{`l2shim.toml:5: gateway[2].interface: ppp0 does not exist (yet): l2shim starts without it, its gateways down, and attaches it when it appears (a modem plugged in, a PPP session coming up); if the name is wrong, correct it`},
		},
		{
			name:     "L3 interface without an address yet",
			config:   "[[gateway]]\ninterface = \"eth0\"\naddress = \"10.1.0.1\"\n[[gateway]]\ninterface = \"ppp0\"\n",
			host:     fakeHost{"eth0": healthy["eth0"], "ppp0": l3("ppp0")},
			warnings: []string{`l2shim.toml:5: gateway[2].interface: ppp0 has no IPv4 address (yet): its gateway is down until it has one`},
		},
		{
			// An L3 link's peer address need not be inside its networks.
			name:   "WireGuard",
			config: twoGateways,
			host: with("eth1", func(hi *HostInterface) {
				hi.Ethernet, hi.L3, hi.Kind, hi.MTU = false, true, "wireguard", 1420
				hi.Prefixes = []netip.Prefix{netip.MustParsePrefix("10.9.0.2/32")}
			}),
			errs: []string{"l2shim.toml:9: gateway[2].mtu: 1492 is above eth1's MTU of 1420"},
		},
		{
			name:   "PPP",
			config: twoGateways,
			host:   with("eth0", func(hi *HostInterface) { hi.Ethernet, hi.L3, hi.Kind = false, true, "ppp" }),
		},
		{
			name:   "L3 gateway without an address",
			config: "[[gateway]]\ninterface = \"wg0\"\n",
			host:   fakeHost{"wg0": l3("wg0", "10.9.0.2/32")},
		},
		{
			name:   "Ethernet gateway without an address",
			config: "[[gateway]]\ninterface = \"eth0\"\n",
			host:   healthy,
			errs:   []string{"l2shim.toml:1: gateway[1].address: is required on eth0 (Ethernet): the gateway's IPv4 address, which l2shim resolves with ARP"},
		},
		{
			name:   "L3 gateway with a MAC",
			config: "[[gateway]]\ninterface = \"ppp0\"\nmac = \"02:00:00:00:00:01\"\n",
			host:   fakeHost{"ppp0": l3("ppp0", "10.9.0.2/32")},
			errs:   []string{"l2shim.toml:3: gateway[1].mac: ppp0 has no link-layer header, so its gateway has no MAC: remove mac"},
		},
		{
			name:   "two gateways on one L3 link",
			config: "[[gateway]]\nname = \"dsl\"\ninterface = \"ppp0\"\n\n[[gateway]]\nname = \"again\"\ninterface = \"ppp0\"\naddress = \"10.9.0.1\"\n",
			host:   fakeHost{"ppp0": l3("ppp0", "10.9.0.2/32")},
			errs:   []string{"l2shim.toml:7: gateway[2].interface: ppp0 has no link-layer header: the one gateway at its other end is gateway[1] (line 1)"},
		},
		{
			name:   "L3 gateway at the link's own address",
			config: "[[gateway]]\ninterface = \"ppp0\"\naddress = \"10.9.0.2\"\n",
			host:   fakeHost{"ppp0": l3("ppp0", "10.9.0.2/32")},
			errs:   []string{"l2shim.toml:3: gateway[1].address: 10.9.0.2 is ppp0's own address, not its peer's"},
		},
		{
			name:   "a link-layer header l2shim cannot rewrite",
			config: twoGateways,
			host:   with("eth1", func(hi *HostInterface) { hi.Ethernet, hi.Kind = false, "ip6gre" }),
			errs:   []string{"l2shim.toml:7: gateway[2].interface: eth1 is an IP tunnel (ip6gre): l2shim works on Ethernet interfaces and on interfaces without a link-layer header"},
		},
		{
			name:   "bridge port",
			config: twoGateways,
			host:   with("eth0", func(hi *HostInterface) { hi.MasterKind, hi.Master = "bridge", "br0" }),
			errs:   []string{"l2shim.toml:2: gateway[1].interface: eth0 is a port of bridge br0: l2shim cannot divert frames of a bridge port; configure the gateway on br0 instead"},
		},
		{
			name:   "bond slave",
			config: twoGateways,
			host:   with("eth1", func(hi *HostInterface) { hi.MasterKind, hi.Master = "bond", "bond0" }),
			errs:   []string{"l2shim.toml:7: gateway[2].interface: eth1 is a slave of bond bond0"},
		},
		{
			name:   "no IPv4 address",
			config: twoGateways,
			host:   with("eth0", func(hi *HostInterface) { hi.Prefixes = nil }),
			errs:   []string{"l2shim.toml:2: gateway[1].interface: eth0 has no IPv4 address"},
		},
		{
			name:   "gateway outside the interface's networks",
			config: twoGateways,
			host: with("eth1", func(hi *HostInterface) {
				hi.Prefixes = []netip.Prefix{netip.MustParsePrefix("10.9.0.2/24"), netip.MustParsePrefix("10.8.0.2/16")}
			}),
			errs: []string{"l2shim.toml:8: gateway[2].address: 10.2.0.1 is not inside eth1's networks (10.9.0.2/24, 10.8.0.2/16); correct the address, or set onlink = true"},
		},
		{
			name:   "onlink gateway outside the interface's networks",
			config: strings.Replace(twoGateways, "mtu = 1492", "onlink = true", 1),
			host:   with("eth1", func(hi *HostInterface) { hi.Prefixes = []netip.Prefix{netip.MustParsePrefix("10.9.0.2/24")} }),
		},
		{
			name:   "gateway is the interface's own, network or broadcast address",
			config: "[[gateway]]\nname = \"o\"\ninterface = \"eth0\"\naddress = \"10.1.0.2\"\n[[gateway]]\nname = \"n\"\ninterface = \"eth0\"\naddress = \"10.1.0.0\"\n[[gateway]]\nname = \"b\"\ninterface = \"eth0\"\naddress = \"10.1.0.255\"\n",
			host:   healthy,
			errs: []string{
				"l2shim.toml:4: gateway[1].address: 10.1.0.2 is eth0's own address",
				"l2shim.toml:8: gateway[2].address: 10.1.0.0 is the network address of 10.1.0.0/24",
				"l2shim.toml:12: gateway[3].address: 10.1.0.255 is the broadcast address of 10.1.0.0/24",
			},
		},
		{
			name:     "strict rp_filter",
			config:   twoGateways,
			host:     with("eth0", func(hi *HostInterface) { hi.RPFilter = 1 }),
			warnings: []string{"l2shim.toml:2: gateway[1].interface: eth0 has rp_filter = 1 (strict): the kernel drops inbound connections whose replies it would route through another interface; use loose mode: sysctl -w net.ipv4.conf.eth0.rp_filter=2"},
		},
		{
			name:     "rp_filter on a VLAN interface names the sysctl with slashes",
			config:   "[[gateway]]\ninterface = \"eth0.7\"\naddress = \"10.7.0.1\"\n",
			host:     fakeHost{"eth0.7": func() HostInterface { hi := eth("eth0.7", "10.7.0.2/24"); hi.RPFilter = 1; return hi }()},
			warnings: []string{"sysctl -w net.ipv4.conf.eth0/7.rp_filter=2"},
		},
		{
			name:     "foreign TCX programs",
			config:   twoGateways,
			host:     with("eth1", func(hi *HostInterface) { hi.ForeignTCX = []string{"cilium_host (id 12)", "prog 40"} }),
			warnings: []string{"l2shim.toml:7: gateway[2].interface: eth1 already has TCX programs that are not l2shim's (cilium_host (id 12); prog 40)"},
		},
		{
			name:     "interface down",
			config:   twoGateways,
			host:     with("eth1", func(hi *HostInterface) { hi.Up = false }),
			warnings: []string{"l2shim.toml:7: gateway[2].interface: eth1 is down: its gateways are unusable until it comes up"},
		},
		{
			name:     "BIG TCP",
			config:   twoGateways,
			host:     with("eth1", func(hi *HostInterface) { hi.GSOIPv4Max, hi.GROIPv4Max = 185000, 65536 }),
			warnings: []string{"l2shim.toml:7: gateway[2].interface: eth1 has BIG TCP on (gso_ipv4_max_size 185000, gro_ipv4_max_size 65536): l2shim carries frames of at most 64 KiB, so larger super-frames are cut into single segments on their way to it or dropped (counted as truncated); turn it off: ip link set eth1 gso_ipv4_max_size 65536 gro_ipv4_max_size 65536"},
		},
		{
			name:   "64 KiB super-frames are no BIG TCP",
			config: twoGateways,
			host:   with("eth0", func(hi *HostInterface) { hi.GSOIPv4Max, hi.GROIPv4Max = 65536, 65536 }),
		},
		{
			name:   "interface problems are reported once per interface",
			config: "[[gateway]]\nname = \"a\"\ninterface = \"eth0\"\naddress = \"10.1.0.1\"\n[[gateway]]\nname = \"b\"\ninterface = \"eth0\"\naddress = \"10.1.0.254\"\n",
			host:   fakeHost{},
			errs:   []string{`l2shim.toml:3: gateway[1].interface: none of the gateways' interfaces exists (eth0)`},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Parse("l2shim.toml", []byte(tc.config))
			if err != nil {
				t.Fatal(err)
			}
			errs, warnings := c.CheckHost(tc.host)
			if len(errs) != len(tc.errs) {
				t.Errorf("got %d errors, want %d:\n%v", len(errs), len(tc.errs), errs)
			} else {
				for i, want := range tc.errs {
					if !strings.Contains(errs[i].Error(), want) {
						t.Errorf("error %d:\n got %s\nwant substring %s", i, errs[i], want)
					}
				}
			}
			if len(warnings) != len(tc.warnings) {
				t.Errorf("got %d warnings, want %d:\n%s", len(warnings), len(tc.warnings), strings.Join(warnings, "\n"))
			} else {
				for i, want := range tc.warnings {
					if !strings.Contains(warnings[i], want) {
						t.Errorf("warning %d:\n got %s\nwant substring %s", i, warnings[i], want)
					}
				}
			}
		})
	}
}

// TestCheckHostHandMadeConfig checks that a Config built in code (no line index) still gets the
// gateway's header line in messages.
func TestCheckHostHandMadeConfig(t *testing.T) {
	c := &Config{File: "x.toml", Gateways: []Gateway{{Name: "a", Interface: "eth0", Address: netip.MustParseAddr("10.1.0.1"), Line: 42}}}
	errs, _ := c.CheckHost(fakeHost{})
	if len(errs) != 1 || !strings.HasPrefix(errs[0].Error(), "x.toml:42: gateway[1].interface: ") {
		t.Errorf("errs = %v", errs)
	}
}

// rulesHost is a fakeHost whose policy routing has the given fwmark rules.
type rulesHost struct {
	fakeHost
	rules []FwmarkRule
	err   error
}

func (h rulesHost) FwmarkRules() ([]FwmarkRule, error) { return h.rules, h.err }

// TestCheckHostMarksAndMetrics: the host's fwmark rules that route by mark bits l2shim owns,
// and a metrics endpoint on every address, are warned about; neither is an error.
func TestCheckHostMarksAndMetrics(t *testing.T) {
	healthy := fakeHost{"eth0": eth("eth0", "10.1.0.2/24"), "eth1": eth("eth1", "10.2.0.2/24")}
	all := ^uint32(0)
	tests := []struct {
		name     string
		shim     string // [shim] keys
		rules    []FwmarkRule
		err      error
		warnings []string
	}{
		{name: "no rules"},
		{name: "rules on other bits", rules: []FwmarkRule{
			{Priority: 100, Mark: 0x1, Mask: all, Table: 100},
			{Priority: 101, Mark: 0x100, Mask: 0xf00, Table: 101},
			{Priority: 102, Mark: 0xc000, Mask: 0xc000, Table: 102, Invert: true},
		}},
		{name: "a rule that only requires l2shim's bits clear", rules: []FwmarkRule{{Priority: 5, Mark: 0, Mask: 0xff, Table: 7}}},
		{name: "l2shim's own mark", rules: []FwmarkRule{{Priority: 100, Mark: 0xa0, Mask: all, Table: 100}},
			warnings: []string{`l2shim.toml: shim.mark_mask: the host's ip rule "100: fwmark 0xa0/0xffffffff lookup 100" routes by mark bits l2shim owns (0xa0 of mark_mask 0xf0): l2shim never steers a packet the host marks with l2shim's mark 0xa0`}},
		{name: "a mask sharing one bit", rules: []FwmarkRule{{Priority: 7, Mark: 0x8010, Mask: 0xff10, Table: 9, Invert: true}},
			warnings: []string{`"7: not fwmark 0x8010/0xff10 lookup 9" routes by mark bits l2shim owns (0x10 of mark_mask 0xf0)`}},
		{name: "the line of mark_mask", shim: "mark = 0x2000\nmark_mask = 0xf000", rules: []FwmarkRule{{Priority: 1, Mark: 0x3000, Mask: all, Table: 1}},
			warnings: []string{`l2shim.toml:3: shim.mark_mask: the host's ip rule "1: fwmark 0x3000/0xffffffff lookup 1" routes by mark bits l2shim owns (0x3000 of mark_mask 0xf000)`}},
		{name: "moved clear of the host's bits", shim: "mark = 0x2000\nmark_mask = 0xf000", rules: []FwmarkRule{{Priority: 100, Mark: 0xa0, Mask: all, Table: 100}}},
		{name: "rules unreadable", err: fmt.Errorf("no netlink"), rules: []FwmarkRule{{Mark: 0xa0, Mask: all}}},
		{name: "metrics on loopback", shim: `metrics = "127.0.0.1:9617"`},
		{name: "metrics on a LAN address", shim: `metrics = "192.168.1.2:9617"`},
		{name: "metrics on a host name", shim: `metrics = "localhost:9617"`},
		{name: "metrics on every address", shim: `metrics = ":9617"`,
			warnings: []string{`l2shim.toml:2: shim.metrics: ":9617" listens on every address of the host, the uplinks' included: anyone who reaches them reads l2shim's gateways, rules and traffic; listen on a loopback or LAN address instead (e.g. "127.0.0.1:9617"), or filter the port`}},
		{name: "metrics on 0.0.0.0", shim: `metrics = "0.0.0.0:9100"`, warnings: []string{`shim.metrics: "0.0.0.0:9100" listens on every address`}},
		{name: "metrics on [::]", shim: `metrics = "[::]:9100"`, warnings: []string{`shim.metrics: "[::]:9100" listens on every address`}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			text := testcfg.TwoGateways
			if tc.shim != "" {
				text = "[shim]\n" + tc.shim + "\n\n" + text
			}
			c, err := Parse("l2shim.toml", []byte(text))
			if err != nil {
				t.Fatal(err)
			}
			errs, warnings := c.CheckHost(rulesHost{healthy, tc.rules, tc.err})
			if len(errs) > 0 {
				t.Errorf("errors: %v", errs)
			}
			if len(warnings) != len(tc.warnings) {
				t.Fatalf("got %d warnings, want %d:\n%s", len(warnings), len(tc.warnings), strings.Join(warnings, "\n"))
			}
			for i, want := range tc.warnings {
				if !strings.Contains(warnings[i], want) {
					t.Errorf("warning %d:\n got %s\nwant substring %s", i, warnings[i], want)
				}
			}
		})
	}
}
