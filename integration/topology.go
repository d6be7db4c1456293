package integration

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Addresses of the standard topology: two uplinks from one host to one server.
//
//	host ns                     gw0 ns                          server ns
//	eth0 10.1.0.2/24 ───── lan 10.1.0.1/24   wan 192.0.2.1/30 ───── up0 192.0.2.2/30
//	eth1 10.2.0.2/24 ───── lan 10.2.0.1/24   wan 192.0.2.5/30 ───── up1 192.0.2.6/30
//	default via 10.1.0.1        gw1 ns                          lo 203.0.113.10/32
//
// The server routes 10.1.0.0/24 back through gw0 and 10.2.0.0/24 through
// gw1; each gateway routes everything else to the server. The gateways do no
// NAT: the server sees the host's own source address, which is how the tests
// tell which uplink a flow took.
var (
	HostAddr0  = netip.MustParseAddr("10.1.0.2")
	HostAddr1  = netip.MustParseAddr("10.2.0.2")
	GW0Addr    = netip.MustParseAddr("10.1.0.1")
	GW1Addr    = netip.MustParseAddr("10.2.0.1")
	ServerAddr = netip.MustParseAddr("203.0.113.10")

	gw0WAN  = netip.MustParsePrefix("192.0.2.1/30")
	srvUp0  = netip.MustParsePrefix("192.0.2.2/30")
	gw1WAN  = netip.MustParsePrefix("192.0.2.5/30")
	srvUp1  = netip.MustParsePrefix("192.0.2.6/30")
	lan0    = netip.MustParsePrefix("10.1.0.0/24")
	lan1    = netip.MustParsePrefix("10.2.0.0/24")
	srvHost = netip.PrefixFrom(ServerAddr, 32)
)

// Fixed, locally administered MACs: every topology is its own L2 world, and
// stable addresses make captures readable.
var (
	macHostEth0 = net.HardwareAddr{0x02, 0x4c, 0x32, 0x01, 0x00, 0x02}
	macGW0LAN   = net.HardwareAddr{0x02, 0x4c, 0x32, 0x01, 0x00, 0x01}
	macHostEth1 = net.HardwareAddr{0x02, 0x4c, 0x32, 0x02, 0x00, 0x02}
	macGW1LAN   = net.HardwareAddr{0x02, 0x4c, 0x32, 0x02, 0x00, 0x01}
)

// Options tune NewTopology.
type Options struct {
	// Prefix starts every namespace name (default "l2t"). A random suffix
	// makes the names unique per topology.
	Prefix string
	// MTU of every link (default: the veth default, 1500).
	MTU int
	// Uplinks says what uplink 0 (host ─ gw0) and uplink 1 (host ─ gw1)
	// are made of (default LinkVeth: eth0/eth1). An L3 uplink i (LinkTun,
	// LinkWireGuard) is ppp<i> or wg<i> on the host, see l3link.go.
	Uplinks [2]LinkKind
	// UplinkMTU is the MTU of uplink i's two ends (0: MTU for a veth,
	// DefaultTunMTU 1500, DefaultWireGuardMTU 1420).
	UplinkMTU [2]int
	// IPv6 makes the topology dual-stack (see ipv6.go): IPv6 enabled in
	// every namespace, the addresses drawn there, the host's IPv6 default
	// route via gw0's link-local fe80::1, and each gateway dropping what
	// arrives on its LAN side from outside its /64 (nft). Off: IPv6 stays
	// disabled everywhere, as before.
	IPv6 bool
	// Logf, when set, receives progress messages.
	Logf func(format string, args ...any)
}

// Topology is the standard test network: a host with two uplinks (eth0
// via gw0, eth1 via gw1) to one server, as drawn above.
type Topology struct {
	ID string // the random part shared by all namespace names

	Host, GW0, GW1, Server *NS

	HostIf0, HostIf1 string // host's external interfaces: "eth0", "eth1" (L3: "ppp0", "wg1", ...)

	HostAddr0, HostAddr1 netip.Addr // 10.1.0.2, 10.2.0.2
	GW0Addr, GW1Addr     netip.Addr // 10.1.0.1, 10.2.0.1
	ServerAddr           netip.Addr // 203.0.113.10

	// Dual-stack only (Options.IPv6; the zero Addr otherwise), see ipv6.go.
	HostAddr6_0, HostAddr6_1   netip.Addr // 2001:db8:1::2, 2001:db8:2::2
	GW0Addr6, GW1Addr6         netip.Addr // 2001:db8:1::1, 2001:db8:2::1
	GW0LinkLocal, GW1LinkLocal netip.Addr // fe80::1 on each gateway's lan (no zone)
	ServerAddr6                netip.Addr // 2001:db8:ff::10

	opts   Options
	mu     sync.Mutex
	extra  []*NS
	shims  []*Shim
	closed bool
	l3     [2]*l3Uplink // L3 uplinks (Options.Uplinks), nil for veth
}

// waitTunnels waits until every WireGuard uplink carries a ping to its gateway (IPv4, and
// the gateway's link-local IPv6 address in a dual-stack topology): its handshake is done. The
// gateway's device exists before the host's, and a handshake it started toward a host port not
// yet open is retried only after wireguard-go's 5 s rekey timeout; a test's first packets
// would be lost meanwhile.
func (t *Topology) waitTunnels(timeout time.Duration) error {
	for i, u := range t.l3 {
		if u == nil || u.kind != LinkWireGuard {
			continue
		}
		ifname := hostIfName(t.opts, i)
		_, gw := t.uplinkAddrs(i)
		dsts := []netip.Addr{gw}
		if t.opts.IPv6 {
			dsts = append(dsts, GWLinkLocal.WithZone(ifname))
		}
		start := time.Now()
		for _, dst := range dsts {
			for {
				ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
				n, _, _ := Ping(ctx, t.Host, dst, 1, 250*time.Millisecond)
				cancel()
				if n == 1 {
					break
				}
				if time.Since(start) > timeout {
					u.mu.Lock()
					host, gw := u.hostWG, u.gwWG
					u.mu.Unlock()
					return fmt.Errorf("WireGuard uplink %s: no answer from %s over it within %v (host: %s; gateway: %s)", ifname, dst, timeout, host.peerState(), gw.peerState())
				}
			}
		}
		t.opts.logf("topology %s: WireGuard uplink %s carries traffic after %v", t.ID, ifname, time.Since(start).Round(time.Millisecond))
	}
	return nil
}

func (o Options) logf(format string, args ...any) {
	if o.Logf != nil {
		o.Logf(format, args...)
	}
}

// NewTopology builds the namespaces, links, addresses, routes and sysctls of
// the standard topology. On error everything already built is removed.
//
// Sysctls and why:
//   - host: rp_filter=2 (loose) on all and on eth0/eth1. A multi-homed host
//     needs loose reverse-path filtering: with strict (1) an inbound connection
//     arriving on eth1 is dropped because the route back to its source is the
//     default route via eth0. l2shim warns about rp_filter=1 for that reason,
//     and real multi-uplink hosts run with 2.
//   - gateways: ip_forward=1 and rp_filter=1 (strict) on all and on the LAN
//     side, so a frame whose source address is not on the LAN (10.2.0.2 sent
//     to gw0) is dropped, as ISPs do. This is what makes the baseline fail
//     without l2shim and what makes NAT necessary with it.
//   - everywhere: IPv6 disabled (no RS/DAD/MLD frames in the way), unless
//     Options.IPv6 (ipv6.go: enabled, forwarding on the gateways, no DAD).
func NewTopology(opts Options) (t *Topology, err error) {
	if opts.Prefix == "" {
		opts.Prefix = "l2t"
	}
	t = &Topology{
		ID:         randSuffix(6),
		HostIf0:    hostIfName(opts, 0),
		HostIf1:    hostIfName(opts, 1),
		HostAddr0:  HostAddr0,
		HostAddr1:  HostAddr1,
		GW0Addr:    GW0Addr,
		GW1Addr:    GW1Addr,
		ServerAddr: ServerAddr,
		opts:       opts,
	}
	defer func() {
		if err != nil {
			t.Close()
			t = nil
		}
	}()
	name := func(role string) string { return opts.Prefix + t.ID + "-" + role }
	for _, p := range []struct {
		ns   **NS
		role string
	}{{&t.Host, "host"}, {&t.GW0, "gw0"}, {&t.GW1, "gw1"}, {&t.Server, "server"}} {
		ns, err := NewNS(name(p.role))
		if err != nil {
			return t, err
		}
		*p.ns = ns
	}
	opts.logf("topology %s: namespaces %s %s %s %s", t.ID, t.Host.Name, t.GW0.Name, t.GW1.Name, t.Server.Name)

	// Namespace-wide sysctls first, so that links inherit "default".
	for _, s := range []struct {
		ns       *NS
		key, val string
	}{
		{t.Host, "net.ipv4.conf.all.rp_filter", "2"},
		{t.Host, "net.ipv4.conf.default.rp_filter", "2"},
		{t.GW0, "net.ipv4.ip_forward", "1"},
		{t.GW0, "net.ipv4.conf.all.rp_filter", "1"},
		{t.GW0, "net.ipv4.conf.default.rp_filter", "1"},
		{t.GW1, "net.ipv4.ip_forward", "1"},
		{t.GW1, "net.ipv4.conf.all.rp_filter", "1"},
		{t.GW1, "net.ipv4.conf.default.rp_filter", "1"},
		{t.Server, "net.ipv4.conf.all.rp_filter", "0"},
		{t.Server, "net.ipv4.conf.default.rp_filter", "0"},
	} {
		if err := s.ns.Sysctl(s.key, s.val); err != nil {
			return t, err
		}
	}
	if err := t.enableIPv6(); err != nil {
		return t, err
	}

	// The uplinks (host eth0/eth1 to the gateways' LAN side, with the host's
	// default route via gw0), then the gateways' WAN links to the server.
	for i := range 2 {
		if err := t.addUplink(i); err != nil {
			return t, err
		}
	}
	for _, w := range []struct {
		gw      *NS
		srvIf   string
		gwWAN   netip.Prefix
		srvPeer netip.Prefix
	}{{t.GW0, "up0", gw0WAN, srvUp0}, {t.GW1, "up1", gw1WAN, srvUp1}} {
		if err := addVeth(veth{a: w.gw, aName: "wan", b: t.Server, bName: w.srvIf}, opts.MTU); err != nil {
			return t, err
		}
		if err := addAddrUp(w.gw, "wan", w.gwWAN); err != nil {
			return t, err
		}
		if err := addAddrUp(t.Server, w.srvIf, w.srvPeer); err != nil {
			return t, err
		}
	}
	if err := addAddrUp(t.Server, "lo", srvHost); err != nil {
		return t, err
	}

	// Routes.
	for _, r := range []struct {
		ns  *NS
		dev string
		dst netip.Prefix // invalid: default
		via netip.Addr
	}{
		{t.GW0, "wan", netip.Prefix{}, srvUp0.Addr()},
		{t.GW1, "wan", netip.Prefix{}, srvUp1.Addr()},
		{t.Server, "up0", lan0, gw0WAN.Addr()},
		{t.Server, "up1", lan1, gw1WAN.Addr()},
	} {
		if err := addRoute(r.ns, r.dev, r.dst, r.via); err != nil {
			return t, err
		}
	}
	for _, w := range []struct {
		ns  *NS
		dev string
	}{{t.Host, t.HostIf0}, {t.Host, t.HostIf1}, {t.GW0, "wan"}, {t.GW1, "wan"}} {
		if err := waitCarrier(w.ns, w.dev, 5*time.Second); err != nil {
			return t, err
		}
	}
	if err := t.finishIPv6(); err != nil {
		return t, err
	}
	// wireguard-go retries a handshake every 5 s: 20 s are four attempts.
	if err := t.waitTunnels(20 * time.Second); err != nil {
		return t, err
	}
	opts.logf("topology %s: ready", t.ID)
	return t, nil
}

// veth is a veth pair to create: aName in namespace a, its peer bName in
// namespace b, with the given MACs (nil: random).
type veth struct {
	a     *NS
	aName string
	aMAC  net.HardwareAddr
	b     *NS
	bName string
	bMAC  net.HardwareAddr
}

// addVeth creates the pair with the netlink handle of a, the peer placed
// directly in b (nothing touches the root namespace), both ends at mtu
// (0: the veth default).
func addVeth(v veth, mtu int) error {
	l := &netlink.Veth{
		LinkAttrs:        netlink.LinkAttrs{Name: v.aName, HardwareAddr: v.aMAC, MTU: mtu},
		PeerName:         v.bName,
		PeerHardwareAddr: v.bMAC,
		PeerNamespace:    netlink.NsFd(int(v.b.Handle())),
	}
	if err := v.a.Netlink().LinkAdd(l); err != nil {
		return fmt.Errorf("veth %s/%s - %s/%s: %w", v.a.Name, v.aName, v.b.Name, v.bName, err)
	}
	if mtu > 0 {
		return setMTU(v.b, v.bName, mtu)
	}
	return nil
}

// addUplink creates uplink i (0 or 1): the host's eth0/eth1 and gateway i's
// LAN side "lan", with their fixed MACs, addresses and rp_filter settings
// (see NewTopology); for uplink 0 also the host's default route via gw0.
func (t *Topology) addUplink(i int) error {
	if t.opts.Uplinks[i] != LinkVeth {
		return t.addL3Uplink(i)
	}
	gw, _, err := t.gateway(i)
	if err != nil {
		return err
	}
	ifname, mac, gwMAC, addr, gwAddr := t.HostIf0, macHostEth0, macGW0LAN, t.HostAddr0, t.GW0Addr
	if i == 1 {
		ifname, mac, gwMAC, addr, gwAddr = t.HostIf1, macHostEth1, macGW1LAN, t.HostAddr1, t.GW1Addr
	}
	if err := addVeth(veth{a: t.Host, aName: ifname, aMAC: mac, b: gw, bName: "lan", bMAC: gwMAC}, t.uplinkMTU(i)); err != nil {
		return err
	}
	if err := t.prepLAN6(gw); err != nil {
		return err
	}
	if err := t.Host.Sysctl("net.ipv4.conf."+ifname+".rp_filter", "2"); err != nil {
		return err
	}
	if err := gw.Sysctl("net.ipv4.conf.lan.rp_filter", "1"); err != nil {
		return err
	}
	if err := addAddrUp(t.Host, ifname, netip.PrefixFrom(addr, 24)); err != nil {
		return err
	}
	if err := addAddrUp(gw, "lan", netip.PrefixFrom(gwAddr, 24)); err != nil {
		return err
	}
	if i == 0 {
		if err := addRoute(t.Host, ifname, netip.Prefix{}, gwAddr); err != nil {
			return err
		}
	}
	return t.addUplink6(i)
}

func setMTU(ns *NS, ifname string, mtu int) error {
	l, err := ns.Netlink().LinkByName(ifname)
	if err != nil {
		return fmt.Errorf("%s: %s: %w", ns.Name, ifname, err)
	}
	if err := ns.Netlink().LinkSetMTU(l, mtu); err != nil {
		return fmt.Errorf("%s: mtu %s: %w", ns.Name, ifname, err)
	}
	return nil
}

func addAddrUp(ns *NS, ifname string, p netip.Prefix) error {
	h := ns.Netlink()
	l, err := h.LinkByName(ifname)
	if err != nil {
		return fmt.Errorf("%s: %s: %w", ns.Name, ifname, err)
	}
	a := &netlink.Addr{IPNet: &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}}
	if err := h.AddrAdd(l, a); err != nil {
		return fmt.Errorf("%s: addr %s on %s: %w", ns.Name, p, ifname, err)
	}
	if err := h.LinkSetUp(l); err != nil {
		return fmt.Errorf("%s: up %s: %w", ns.Name, ifname, err)
	}
	return nil
}

func addRoute(ns *NS, dev string, dst netip.Prefix, via netip.Addr) error {
	h := ns.Netlink()
	l, err := h.LinkByName(dev)
	if err != nil {
		return fmt.Errorf("%s: %s: %w", ns.Name, dev, err)
	}
	r := &netlink.Route{LinkIndex: l.Attrs().Index, Gw: via.AsSlice()}
	if dst.IsValid() {
		r.Dst = &net.IPNet{IP: dst.Addr().AsSlice(), Mask: net.CIDRMask(dst.Bits(), dst.Addr().BitLen())}
	} else {
		r.Dst = defaultDst(via)
	}
	if err := h.RouteAdd(r); err != nil {
		return fmt.Errorf("%s: route %v via %s dev %s: %w", ns.Name, dst, via, dev, err)
	}
	return nil
}

func waitCarrier(ns *NS, dev string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		l, err := ns.Netlink().LinkByName(dev)
		if err != nil {
			return fmt.Errorf("%s: %s: %w", ns.Name, dev, err)
		}
		if l.Attrs().OperState == netlink.OperUp || isL3Carrier(l) {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: %s has no carrier after %v (operstate %v)", ns.Name, dev, timeout, l.Attrs().OperState)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Namespaces returns every namespace of the topology, extra ones included.
func (t *Topology) Namespaces() []*NS {
	t.mu.Lock()
	defer t.mu.Unlock()
	var all []*NS
	for _, n := range []*NS{t.Host, t.GW0, t.GW1, t.Server} {
		if n != nil {
			all = append(all, n)
		}
	}
	return append(all, t.extra...)
}

// newExtraNS creates the namespace "<prefix><id>-<role>" and makes it part
// of the topology (Close removes it).
func (t *Topology) newExtraNS(role string) (*NS, error) {
	ns, err := NewNS(t.opts.Prefix + t.ID + "-" + role)
	if err != nil {
		return nil, err
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		ns.Close()
		return nil, errors.New("topology closed")
	}
	t.extra = append(t.extra, ns)
	return ns, nil
}

// AddMacvlan creates a macvlan child (mode bridge) of the host interface
// parent directly inside a new namespace ("<prefix><id>-<role>"), named eth0
// there, with address addr and a default route via gw.
func (t *Topology) AddMacvlan(role, parent string, addr netip.Prefix, gw netip.Addr) (*NS, error) {
	ns, err := t.newExtraNS(role)
	if err != nil {
		return nil, err
	}

	pl, err := t.Host.Netlink().LinkByName(parent)
	if err != nil {
		return nil, fmt.Errorf("%s: %s: %w", t.Host.Name, parent, err)
	}
	mv := &netlink.Macvlan{
		LinkAttrs: netlink.LinkAttrs{
			Name:        "eth0",
			ParentIndex: pl.Attrs().Index,
			Namespace:   netlink.NsFd(int(ns.Handle())),
		},
		Mode: netlink.MACVLAN_MODE_BRIDGE,
	}
	if err := t.Host.Netlink().LinkAdd(mv); err != nil {
		return nil, fmt.Errorf("macvlan of %s into %s: %w", parent, ns.Name, err)
	}
	if err := addAddrUp(ns, "eth0", addr); err != nil {
		return nil, err
	}
	if gw.IsValid() {
		if err := addRoute(ns, "eth0", netip.Prefix{}, gw); err != nil {
			return nil, err
		}
	}
	return ns, waitCarrier(ns, "eth0", 5*time.Second)
}

// SetLinkUp sets a link in ns administratively up or down (for failure
// scenarios: cutting an uplink).
func SetLinkUp(ns *NS, ifname string, up bool) error {
	l, err := ns.Netlink().LinkByName(ifname)
	if err != nil {
		return fmt.Errorf("%s: %s: %w", ns.Name, ifname, err)
	}
	if up {
		return ns.Netlink().LinkSetUp(l)
	}
	return ns.Netlink().LinkSetDown(l)
}

// ShimLinks returns the links in the host namespace whose names start with
// "l2s" (l2shim's own capture and inject veths).
func (t *Topology) ShimLinks() ([]string, error) {
	names, err := t.Host.LinkNames()
	if err != nil {
		return nil, err
	}
	var out []string
	for _, n := range names {
		if strings.HasPrefix(n, "l2s") {
			out = append(out, n)
		}
	}
	return out, nil
}

// Close stops every shim started on the topology and removes every namespace
// it made (their links go with them). Best effort and idempotent.
func (t *Topology) Close() error {
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		return nil
	}
	t.closed = true
	shims := t.shims
	t.shims = nil
	t.mu.Unlock()

	var errs []error
	for _, s := range shims {
		s.terminate(5 * time.Second)
	}
	t.mu.Lock()
	extra := t.extra
	t.mu.Unlock()
	for i := len(extra) - 1; i >= 0; i-- {
		if err := extra[i].Close(); err != nil {
			errs = append(errs, err)
		}
	}
	for _, n := range []*NS{t.Host, t.GW0, t.GW1, t.Server} {
		if n != nil {
			if err := n.Close(); err != nil {
				errs = append(errs, err)
			}
		}
	}
	if err := errors.Join(errs...); err != nil {
		fmt.Fprintf(os.Stderr, "integration: topology %s cleanup: %v\n", t.ID, err)
		return err
	}
	return nil
}

// gateway returns gateway i's namespace and the server-side next hop of its
// WAN link.
func (t *Topology) gateway(i int) (*NS, netip.Addr, error) {
	switch i {
	case 0:
		return t.GW0, srvUp0.Addr(), nil
	case 1:
		return t.GW1, srvUp1.Addr(), nil
	}
	return nil, netip.Addr{}, fmt.Errorf("no gateway %d", i)
}

// CutUpstream makes gateway i (0: gw0, 1: gw1) silently drop everything it
// would forward upstream: its default route becomes a blackhole (no ICMP
// back). Its LAN side keeps answering ARP and pings to its own address: the
// hard case of a dead uplink, invisible at the link layer. Dual-stack: its
// IPv6 default route too.
func (t *Topology) CutUpstream(i int) error {
	ns, _, err := t.gateway(i)
	if err != nil {
		return err
	}
	r := &netlink.Route{
		Dst:  &net.IPNet{IP: net.IPv4zero.To4(), Mask: net.CIDRMask(0, 32)},
		Type: unix.RTN_BLACKHOLE,
	}
	if err := ns.Netlink().RouteReplace(r); err != nil {
		return fmt.Errorf("%s: blackhole default route: %w", ns.Name, err)
	}
	return t.cutUpstream6(i, true)
}

// RestoreUpstream undoes CutUpstream: gateway i's default route (IPv4 and,
// dual-stack, IPv6) points at the server again.
func (t *Topology) RestoreUpstream(i int) error {
	ns, via, err := t.gateway(i)
	if err != nil {
		return err
	}
	l, err := ns.Netlink().LinkByName("wan")
	if err != nil {
		return fmt.Errorf("%s: wan: %w", ns.Name, err)
	}
	r := &netlink.Route{
		Dst:       &net.IPNet{IP: net.IPv4zero.To4(), Mask: net.CIDRMask(0, 32)},
		LinkIndex: l.Attrs().Index,
		Gw:        via.AsSlice(),
	}
	if err := ns.Netlink().RouteReplace(r); err != nil {
		return fmt.Errorf("%s: restore default route: %w", ns.Name, err)
	}
	return t.cutUpstream6(i, false)
}

// RecreateUplink deletes the host's interface of uplink i (eth0 or eth1,
// and with it gateway i's LAN side) and builds it again as before: same
// names, MACs and addresses, a new ifindex (a USB modem unplugged and
// plugged back). It returns the old and new ifindex. For an L3 uplink it
// deletes ppp<i>/wg<i> and creates it again with the same name, addresses,
// MTU (keys, for WireGuard) and, for uplink 0, default route; the
// gateway's side stays.
func (t *Topology) RecreateUplink(i int) (oldIdx, newIdx int, err error) {
	if u, err := t.l3Uplink(i); err == nil {
		return u.recreate()
	}
	if oldIdx, err = t.RemoveUplink(i); err != nil {
		return oldIdx, 0, err
	}
	newIdx, err = t.RestoreUplink(i)
	return oldIdx, newIdx, err
}

// RemoveUplink deletes the host's interface of uplink i, as unplugging a
// USB modem or a PPP session ending does (for an Ethernet uplink, gateway
// i's LAN side goes with it), and returns its ifindex. RestoreUplink makes
// it again.
func (t *Topology) RemoveUplink(i int) (int, error) {
	if u, err := t.l3Uplink(i); err == nil {
		return u.remove()
	}
	ifname := hostIfName(t.opts, i)
	h := t.Host.Netlink()
	l, err := h.LinkByName(ifname)
	if err != nil {
		return 0, fmt.Errorf("%s: %s: %w", t.Host.Name, ifname, err)
	}
	if err := h.LinkDel(l); err != nil {
		return l.Attrs().Index, fmt.Errorf("%s: delete %s: %w", t.Host.Name, ifname, err)
	}
	return l.Attrs().Index, nil
}

// RestoreUplink makes uplink i again after RemoveUplink, as at the start
// (names, MACs, addresses, routes), and returns its new ifindex.
func (t *Topology) RestoreUplink(i int) (int, error) {
	if u, err := t.l3Uplink(i); err == nil {
		return u.restore()
	}
	ifname := hostIfName(t.opts, i)
	if err := t.addUplink(i); err != nil {
		return 0, fmt.Errorf("re-create uplink %d: %w", i, err)
	}
	if err := waitCarrier(t.Host, ifname, 5*time.Second); err != nil {
		return 0, err
	}
	nl, err := t.Host.Netlink().LinkByName(ifname)
	if err != nil {
		return 0, err
	}
	return nl.Attrs().Index, nil
}

// AddLAN creates a namespace "<prefix><id>-<role>" behind the host: a veth
// pair with hostIf (address hostAddr) in the host namespace and eth0
// (address addr, default route via hostAddr) in the new one. The host is
// not made a router here: set net.ipv4.ip_forward yourself.
func (t *Topology) AddLAN(role, hostIf string, hostAddr, addr netip.Prefix) (*NS, error) {
	ns, err := t.newExtraNS(role)
	if err != nil {
		return nil, err
	}
	if err := addVeth(veth{a: t.Host, aName: hostIf, b: ns, bName: "eth0"}, t.opts.MTU); err != nil {
		return nil, err
	}
	if err := addAddrUp(t.Host, hostIf, hostAddr); err != nil {
		return nil, err
	}
	if err := addAddrUp(ns, "eth0", addr); err != nil {
		return nil, err
	}
	if err := addRoute(ns, "eth0", netip.Prefix{}, hostAddr.Addr()); err != nil {
		return nil, err
	}
	if err := waitCarrier(t.Host, hostIf, 5*time.Second); err != nil {
		return nil, err
	}
	return ns, waitCarrier(ns, "eth0", 5*time.Second)
}

// AddServerAddr adds another address (a /32 on lo, IPv6: a /128) to the
// server namespace; the gateways already send everything that is not theirs
// to the server.
func (t *Topology) AddServerAddr(a netip.Addr) error {
	return addAddrUp(t.Server, "lo", netip.PrefixFrom(a, a.BitLen()))
}

// Nft loads an nftables script (`nft -f -`) in ns.
func Nft(ns *NS, script string) error {
	if _, err := ns.Run(strings.NewReader(script), "nft", "-f", "-"); err != nil {
		return fmt.Errorf("%w\nscript:\n%s", err, script)
	}
	return nil
}

// NftOutput runs `nft ARGS...` in ns and returns its output.
func NftOutput(ns *NS, args ...string) (string, error) {
	return ns.Run(nil, "nft", args...)
}

// NftCounter returns the packets of the first counter in `nft list chain`
// output that follows the comment marker `comment "NAME"`.
func NftCounter(ns *NS, family, table, chain, name string) (int64, error) {
	out, err := NftOutput(ns, "list", "chain", family, table, chain)
	if err != nil {
		return 0, err
	}
	for _, l := range strings.Split(out, "\n") {
		if !strings.Contains(l, `comment "`+name+`"`) {
			continue
		}
		f := strings.Fields(l)
		for i := 0; i+2 < len(f); i++ {
			if f[i] == "counter" && f[i+1] == "packets" {
				var n int64
				if _, err := fmt.Sscan(f[i+2], &n); err != nil {
					return 0, fmt.Errorf("counter %q: %q: %w", name, l, err)
				}
				return n, nil
			}
		}
	}
	return 0, fmt.Errorf("%s: no counter %q in chain %s %s %s:\n%s", ns.Name, name, family, table, chain, out)
}
