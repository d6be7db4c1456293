package conf

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
)

// MaxSuperFrame is the largest GSO or GRO super-frame l2shim carries whole (64 KiB, the
// kernel's default; BIG TCP makes larger ones).
const MaxSuperFrame = 65536

// HostInterface is what CheckHost needs to know about one network interface of the host.
type HostInterface struct {
	Name       string
	Index      int
	MTU        int
	MAC        net.HardwareAddr
	Ethernet   bool           // ARPHRD_ETHER
	L3         bool           // no link-layer header: ARPHRD_PPP or ARPHRD_NONE (ppp, tun, WireGuard, raw-IP WWAN)
	Kind       string         // netlink link type: "veth", "device", "bridge", "bond", "macvlan", "vlan", "tun", "wireguard", "ppp", ...
	MasterKind string         // "" or the kind of the master: "bridge", "bond", ...
	Master     string         // name of the master, if any
	Prefixes   []netip.Prefix // IPv4 addresses with their prefix length
	RPFilter   int            // effective: max(conf.all.rp_filter, conf.IFACE.rp_filter)
	ForeignTCX []string       // descriptions of TCX programs already attached that are not l2shim's
	Up         bool
	// GSOIPv4Max and GROIPv4Max are the largest IPv4 super-frames the interface builds and
	// aggregates (gso_ipv4_max_size, gro_ipv4_max_size; above 65536 is BIG TCP); 0 if unknown.
	GSOIPv4Max, GROIPv4Max int
}

// FwmarkRule is one of the host's IPv4 policy routing rules (`ip rule`) that matches the
// firewall mark: packets whose mark under Mask equals Mark (or, with Invert, does not).
type FwmarkRule struct {
	Priority int
	Mark     uint32
	Mask     uint32 // 0xffffffff when the rule gives none
	Table    int
	Invert   bool // "not fwmark ..."
}

// String renders the rule as `ip rule` lists it, near enough.
func (r FwmarkRule) String() string {
	not := ""
	if r.Invert {
		not = "not "
	}
	return fmt.Sprintf("%d: %sfwmark %#x/%#x lookup %d", r.Priority, not, r.Mark, r.Mask, r.Table)
}

// Host looks up the host's interfaces and policy routing rules. Interface returns an error
// when the interface does not exist; FwmarkRules lists the IPv4 rules that match a firewall
// mark. Tests use fakes; the real implementation reads netlink.
type Host interface {
	Interface(name string) (HostInterface, error)
	FwmarkRules() ([]FwmarkRule, error)
}

// NoInterfaceError is what a Host's Interface returns (wrapped or not) for a name the host
// has no interface of; it reads as the error it carries.
type NoInterfaceError struct{ Err error }

func (e *NoInterfaceError) Error() string { return e.Err.Error() }
func (e *NoInterfaceError) Unwrap() error { return e.Err }

// OnlyL3 reports whether interface name can only be a link without a link-layer header: it has
// gateways and none has an address (an Ethernet gateway needs one, for ARP).
func (c *Config) OnlyL3(name string) bool {
	found := false
	for _, g := range c.Gateways {
		if g.Interface != name {
			continue
		}
		if g.Address.IsValid() {
			return false
		}
		found = true
	}
	return found
}

// CheckHost checks the configuration against the host it would run on. errs lists what l2shim
// refuses (none of the configured interfaces there, an interface of a kind it cannot rewrite, a
// bridge port or bond slave, an interface without an IPv4 address, a gateway outside the
// interface's networks without onlink, a gateway MTU above the interface's), each naming the
// file, the line and the key; warnings lists what works but deserves attention (an interface
// that does not exist yet, strict rp_filter, foreign TCX programs, an interface that is down,
// BIG TCP on an interface, a metrics endpoint on every address, the host's fwmark rules on
// l2shim's mark bits), in the same format.
func (c *Config) CheckHost(h Host) (errs Errors, warnings []string) {
	report := func(line int, key, format string, args ...any) {
		errs = append(errs, &Error{File: c.File, Line: line, Key: key, Msg: fmt.Sprintf(format, args...)})
	}
	warn := func(line int, key, format string, args ...any) {
		warnings = append(warnings, (&Error{File: c.File, Line: line, Key: key, Msg: fmt.Sprintf(format, args...)}).Error())
	}
	// keyLine returns the rendered key and line of key k of the i-th (0-based) gateway.
	keyLine := func(i int, k string) (string, int) {
		line := c.lines.lookup("gateway", elem(i), k)
		if line == 0 {
			line = c.Gateways[i].Line
		}
		return fmt.Sprintf("gateway[%d].%s", i+1, k), line
	}

	ifaces := map[string]*HostInterface{}
	// Interfaces that do not exist (yet: a USB modem not plugged in, a PPP session not up):
	// l2shim starts without them and attaches each when it appears. Each is a warning, unless
	// none of the configured ones exists: then the names are wrong.
	type absentIface struct {
		line      int
		key, name string
	}
	var missing []absentIface
	for i, g := range c.Gateways {
		hi, seen := ifaces[g.Interface]
		if !seen {
			// Interface-level problems are reported once, at the first gateway using it.
			ifaces[g.Interface] = nil
			key, line := keyLine(i, "interface")
			got, err := h.Interface(g.Interface)
			if errors.As(err, new(*NoInterfaceError)) {
				missing = append(missing, absentIface{line, key, g.Interface})
				continue
			}
			if err != nil {
				if strings.Contains(err.Error(), g.Interface) {
					report(line, key, "%v", err) // the Host already named the interface
				} else {
					report(line, key, "no interface %q on this host: %v", g.Interface, err)
				}
				continue
			}
			hi = &got
			ifaces[g.Interface] = hi
			if !hi.Ethernet && !hi.L3 {
				report(line, key, "%s is %s: l2shim works on Ethernet interfaces and on interfaces without a "+
					"link-layer header (ppp, tun, WireGuard, raw-IP modems); this one has a link-layer header of another "+
					"kind, whose frames it cannot rewrite", g.Interface, describeKind(hi.Kind))
			}
			switch hi.MasterKind {
			case "bridge", "openvswitch":
				report(line, key, "%s is a port of bridge %s: l2shim cannot divert frames of a bridge port; "+
					"configure the gateway on %s instead", g.Interface, masterName(hi), masterName(hi))
			case "bond", "team":
				report(line, key, "%s is a slave of %s %s: l2shim cannot divert frames of an aggregated link; "+
					"configure the gateway on %s instead", g.Interface, hi.MasterKind, masterName(hi), masterName(hi))
			}
			if len(hi.Prefixes) == 0 && hi.L3 && c.OnlyL3(g.Interface) {
				// A PPP link between its creation and its IPCP: the engine keeps a gateway
				// whose interface has no address down until it has one.
				warn(line, key, "%s has no IPv4 address (yet): its gateway is down until it has one", g.Interface)
			} else if len(hi.Prefixes) == 0 {
				report(line, key, "%s has no IPv4 address: l2shim needs one on every external interface (for ARP, probes and NAT)",
					g.Interface)
			}
			if hi.RPFilter == 1 {
				warn(line, key, "%s has rp_filter = 1 (strict): the kernel drops inbound connections whose replies it "+
					"would route through another interface; use loose mode: sysctl -w net.ipv4.conf.%s.rp_filter=2",
					g.Interface, strings.ReplaceAll(g.Interface, ".", "/"))
			}
			if len(hi.ForeignTCX) > 0 {
				warn(line, key, "%s already has TCX programs that are not l2shim's (%s); l2shim attaches ahead of them, "+
					"so they will not see the frames it diverts", g.Interface, strings.Join(hi.ForeignTCX, "; "))
			}
			if !hi.Up {
				warn(line, key, "%s is down: its gateways are unusable until it comes up", g.Interface)
			}
			if hi.GSOIPv4Max > MaxSuperFrame || hi.GROIPv4Max > MaxSuperFrame {
				warn(line, key, "%s has BIG TCP on (gso_ipv4_max_size %d, gro_ipv4_max_size %d): l2shim carries "+
					"frames of at most 64 KiB, so larger super-frames are cut into single segments on their way to it or "+
					"dropped (counted as truncated); turn it off: ip link set %s gso_ipv4_max_size %d gro_ipv4_max_size %d",
					g.Interface, hi.GSOIPv4Max, hi.GROIPv4Max, g.Interface, MaxSuperFrame, MaxSuperFrame)
			}
		}
		if hi == nil {
			continue // missing interface, already reported
		}
		c.checkGatewayOnHost(i, g, hi, keyLine, report)
	}
	if len(missing) > 0 && len(missing) == len(ifaces) {
		names := make([]string, len(missing))
		for i, m := range missing {
			names[i] = m.name
		}
		report(missing[0].line, missing[0].key, "none of the gateways' interfaces exists (%s): l2shim would have "+
			"nothing to balance; check the names", strings.Join(names, ", "))
	} else {
		for _, m := range missing {
			warn(m.line, m.key, "%s does not exist (yet): l2shim starts without it, its gateways down, and attaches it "+
				"when it appears (a modem plugged in, a PPP session coming up); if the name is wrong, correct it", m.name)
		}
	}
	c.checkMarks(h, warn)
	c.checkMetrics(warn)
	errs.sort()
	return errs, warnings
}

// checkMarks warns about the host's fwmark rules that route by mark bits l2shim owns
// (mark_mask): the egress hooks pass a packet whose mark under mark_mask is l2shim's own, so a
// packet the host marks that way is never steered, and the ingress hooks clear those bits on
// every frame l2shim hands to the host. Rules whose mark leaves those bits clear are no
// concern.
func (c *Config) checkMarks(h Host, warn func(int, string, string, ...any)) {
	rules, err := h.FwmarkRules()
	if err != nil {
		return // the rules are advice; an unreadable list is no error
	}
	key, line := "shim.mark_mask", c.lines.lookup("shim", "mark_mask")
	for _, r := range rules {
		shared := r.Mark & r.Mask & c.Shim.MarkMask
		if shared == 0 {
			continue
		}
		warn(line, key, "the host's ip rule \"%s\" routes by mark bits l2shim owns (%#x of mark_mask %#x): "+
			"l2shim never steers a packet the host marks with l2shim's mark %#x in those bits, and clears them on "+
			"every frame it hands to the host; give l2shim bits nobody else uses with shim.mark and shim.mark_mask",
			r, shared, c.Shim.MarkMask, c.Shim.Mark)
	}
}

// checkMetrics warns when the Prometheus endpoint listens on every address: the uplinks'
// addresses too, so anyone who reaches them reads l2shim's status.
func (c *Config) checkMetrics(warn func(int, string, string, ...any)) {
	if c.Shim.Metrics == "" {
		return
	}
	host, port, err := net.SplitHostPort(c.Shim.Metrics)
	if err != nil {
		return
	}
	if a, err := netip.ParseAddr(host); host != "" && (err != nil || !a.IsUnspecified()) {
		return
	}
	warn(c.lines.lookup("shim", "metrics"), "shim.metrics", "%q listens on every address of the host, the uplinks' "+
		"included: anyone who reaches them reads l2shim's gateways, rules and traffic; listen on a loopback or LAN "+
		"address instead (e.g. \"127.0.0.1:%s\"), or filter the port", c.Shim.Metrics, port)
}

// checkGatewayOnHost checks one gateway's address and MTU against its interface.
func (c *Config) checkGatewayOnHost(i int, g Gateway, hi *HostInterface,
	keyLine func(int, string) (string, int), report func(int, string, string, ...any)) {
	key, line := keyLine(i, "address")
	if hi.L3 {
		c.checkL3Gateway(i, g, hi, keyLine, report)
	} else if !g.Address.IsValid() {
		report(line, key, "is required on %s (Ethernet): the gateway's IPv4 address, which l2shim resolves with ARP "+
			"(only a gateway on a link without a link-layer header, such as ppp0 or wg0, may go without one)", g.Interface)
	}
	if g.Address.IsValid() && len(hi.Prefixes) > 0 && !hi.L3 {
		inside := false
		for _, p := range hi.Prefixes {
			if p.Addr() == g.Address {
				report(line, key, "%v is %s's own address, not a gateway", g.Address, g.Interface)
				inside = true // do not also report it as outside
				break
			}
			if !p.Contains(g.Address) {
				continue
			}
			inside = true
			if p.Bits() <= 30 {
				m := p.Masked()
				if g.Address == m.Addr() {
					report(line, key, "%v is the network address of %v, not a gateway", g.Address, m)
				} else if g.Address == lastAddr(m) {
					report(line, key, "%v is the broadcast address of %v, not a gateway", g.Address, m)
				}
			}
		}
		if !inside && !g.Onlink {
			ps := make([]string, len(hi.Prefixes))
			for j, p := range hi.Prefixes {
				ps[j] = p.String()
			}
			report(line, key, "%v is not inside %s's networks (%s); correct the address, or set onlink = true "+
				"if the gateway is reachable on that link anyway", g.Address, g.Interface, strings.Join(ps, ", "))
		}
	}
	if g.MTU > 0 && hi.MTU > 0 && g.MTU > hi.MTU {
		key, line := keyLine(i, "mtu")
		report(line, key, "%d is above %s's MTU of %d: mtu can only lower the path MTU", g.MTU, g.Interface, hi.MTU)
	}
}

// checkL3Gateway checks a gateway on an interface without a link-layer header: there is one
// gateway at the other end of the link, no MAC, and any address it has is optional (for probes
// and status) and need not be in the interface's networks.
func (c *Config) checkL3Gateway(i int, g Gateway, hi *HostInterface,
	keyLine func(int, string) (string, int), report func(int, string, string, ...any)) {
	if g.MAC != nil {
		key, line := keyLine(i, "mac")
		report(line, key, "%s has no link-layer header, so its gateway has no MAC: remove mac", g.Interface)
	}
	for j := range i {
		if c.Gateways[j].Interface == g.Interface {
			key, line := keyLine(i, "interface")
			report(line, key, "%s has no link-layer header: the one gateway at its other end is gateway[%d] (line %d); "+
				"a second one on it cannot be told apart", g.Interface, j+1, c.Gateways[j].Line)
			break
		}
	}
	if g.Address.IsValid() {
		for _, p := range hi.Prefixes {
			if p.Addr() == g.Address {
				key, line := keyLine(i, "address")
				report(line, key, "%v is %s's own address, not its peer's", g.Address, g.Interface)
			}
		}
	}
}

// lastAddr returns the highest address of an IPv4 prefix.
func lastAddr(p netip.Prefix) netip.Addr {
	a := p.Masked().Addr().As4()
	host := uint32(1)<<(32-p.Bits()) - 1
	v := uint32(a[0])<<24 | uint32(a[1])<<16 | uint32(a[2])<<8 | uint32(a[3]) | host
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

// masterName names an interface's master for messages.
func masterName(hi *HostInterface) string {
	if hi.Master == "" {
		return "(its master)"
	}
	return hi.Master
}

// describeKind names a non-Ethernet link type for messages.
func describeKind(kind string) string {
	switch kind {
	case "wireguard":
		return "a WireGuard interface"
	case "ppp":
		return "a PPP interface"
	case "tun":
		return "a TUN interface"
	case "ipip", "gre", "sit", "ip6tnl", "ip6gre", "vti", "vti6":
		return fmt.Sprintf("an IP tunnel (%s)", kind)
	case "", "device":
		return "a non-Ethernet device"
	}
	return fmt.Sprintf("a %s interface", kind)
}
