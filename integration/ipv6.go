package integration

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv6"
	"golang.org/x/sys/unix"
)

// IPv6 addresses of the dual-stack topology (Options.IPv6), next to the
// IPv4 ones:
//
//	host ns                        gw0 ns                                       server ns
//	eth0 2001:db8:1::2/64 ──── lan 2001:db8:1::1/64   wan 2001:db8:f0::1/126 ──── up0 2001:db8:f0::2/126
//	                               fe80::1/64
//	eth1 2001:db8:2::2/64 ──── lan 2001:db8:2::1/64   wan 2001:db8:f1::1/126 ──── up1 2001:db8:f1::2/126
//	                               fe80::1/64
//	default via fe80::1 dev eth0   gw1 ns                                       lo 2001:db8:ff::10/128
//
// Each gateway's lan has the fixed link-local fe80::1 and no other; every
// other interface keeps its automatic one (the host's eth0/eth1: EUI-64 from
// their fixed MACs, fe80::4c:32ff:fe01:2 and fe80::4c:32ff:fe02:2). The
// server routes 2001:db8:1::/64 via gw0 and 2001:db8:2::/64 via gw1; each
// gateway routes ::/0 to the server. An L3 uplink (LinkTun, LinkWireGuard)
// gets the same /64 addresses on its point-to-point devices (no neighbour
// discovery there) and the same fe80::1 on the gateway's side.
var (
	HostAddr6_0 = netip.MustParseAddr("2001:db8:1::2")
	HostAddr6_1 = netip.MustParseAddr("2001:db8:2::2")
	GW0Addr6    = netip.MustParseAddr("2001:db8:1::1")
	GW1Addr6    = netip.MustParseAddr("2001:db8:2::1")
	// GWLinkLocal is both gateways' link-local address on their lan
	// (without a zone: add the host's interface, "fe80::1%eth0").
	GWLinkLocal = netip.MustParseAddr("fe80::1")
	ServerAddr6 = netip.MustParseAddr("2001:db8:ff::10")

	gw0WAN6 = netip.MustParsePrefix("2001:db8:f0::1/126")
	srvUp06 = netip.MustParsePrefix("2001:db8:f0::2/126")
	gw1WAN6 = netip.MustParsePrefix("2001:db8:f1::1/126")
	srvUp16 = netip.MustParsePrefix("2001:db8:f1::2/126")
)

// The source-prefix filter of the dual-stack gateways: rp_filter is
// IPv4-only, so each gateway drops, in table ip6 NftSrc6Table, chain
// NftSrc6Chain (hook prerouting, priority filter, after anything at raw
// priority), whatever arrives on "lan" from a source outside its /64 that
// is neither link-local nor unspecified (DAD, early MLD), counting it in the
// rule commented NftSrc6Counter (SourceDrops6 reads it).
const (
	NftSrc6Table   = "l2t_src6"
	NftSrc6Chain   = "prerouting"
	NftSrc6Counter = "src6-drop"
)

// lan6 returns gateway i's /64.
func lan6(i int) netip.Prefix {
	return netip.PrefixFrom(netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 0, byte(i + 1)}), 64)
}

// uplinkAddrs6 returns the host's and gateway's IPv6 address on uplink i.
func (t *Topology) uplinkAddrs6(i int) (host, gw netip.Addr) {
	if i == 1 {
		return t.HostAddr6_1, t.GW1Addr6
	}
	return t.HostAddr6_0, t.GW0Addr6
}

// enableIPv6 (Options.IPv6, before any link exists) fills in the topology's
// IPv6 fields and enables IPv6 in every namespace: disable_ipv6=0 on all,
// default and lo; accept_dad=0 (no DAD: addresses usable at once);
// keep_addr_on_down=1 (static addresses survive a link going down, as IPv4
// ones do); forwarding=1 on the gateways. Links created afterwards inherit
// "default".
func (t *Topology) enableIPv6() error {
	if !t.opts.IPv6 {
		return nil
	}
	t.HostAddr6_0, t.HostAddr6_1 = HostAddr6_0, HostAddr6_1
	t.GW0Addr6, t.GW1Addr6 = GW0Addr6, GW1Addr6
	t.GW0LinkLocal, t.GW1LinkLocal = GWLinkLocal, GWLinkLocal
	t.ServerAddr6 = ServerAddr6
	for _, ns := range []*NS{t.Host, t.GW0, t.GW1, t.Server} {
		kvs := [][2]string{
			{"net.ipv6.conf.all.accept_dad", "0"},
			{"net.ipv6.conf.default.accept_dad", "0"},
			{"net.ipv6.conf.all.keep_addr_on_down", "1"},
			{"net.ipv6.conf.default.keep_addr_on_down", "1"},
			{"net.ipv6.conf.all.disable_ipv6", "0"},
			{"net.ipv6.conf.default.disable_ipv6", "0"},
			{"net.ipv6.conf.lo.disable_ipv6", "0"},
		}
		if ns == t.GW0 || ns == t.GW1 {
			kvs = append(kvs, [2]string{"net.ipv6.conf.all.forwarding", "1"}, [2]string{"net.ipv6.conf.default.forwarding", "1"})
		}
		for _, kv := range kvs {
			if err := ns.Sysctl(kv[0], kv[1]); err != nil {
				return err
			}
		}
	}
	return nil
}

// prepLAN6 (Options.IPv6) turns off automatic link-local addresses on a
// gateway's "lan", before it goes up: it gets fe80::1 only (addLAN6).
func (t *Topology) prepLAN6(gw *NS) error {
	if !t.opts.IPv6 {
		return nil
	}
	return gw.Sysctl("net.ipv6.conf.lan.addr_gen_mode", "1") // none
}

// addUplink6 (Options.IPv6) gives veth uplink i its IPv6 addresses, both
// sides, and for uplink 0 the host's IPv6 default route.
func (t *Topology) addUplink6(i int) error {
	if !t.opts.IPv6 {
		return nil
	}
	if err := t.addLAN6(i); err != nil {
		return err
	}
	return t.addHost6(i)
}

// addLAN6 (Options.IPv6) gives gateway i's "lan" fe80::1/64 and its /64
// address (and removes any other link-local, should the link have come up
// before prepLAN6).
func (t *Topology) addLAN6(i int) error {
	if !t.opts.IPv6 {
		return nil
	}
	gw, _, err := t.gateway(i)
	if err != nil {
		return err
	}
	_, gwAddr := t.uplinkAddrs6(i)
	ll := netip.PrefixFrom(GWLinkLocal, 64)
	for _, p := range []netip.Prefix{ll, netip.PrefixFrom(gwAddr, 64)} {
		if err := addAddr6(gw, "lan", p); err != nil {
			return err
		}
	}
	l, err := gw.Netlink().LinkByName("lan")
	if err != nil {
		return fmt.Errorf("%s: lan: %w", gw.Name, err)
	}
	addrs, err := gw.Netlink().AddrList(l, netlink.FAMILY_V6)
	if err != nil {
		return fmt.Errorf("%s: lan addresses: %w", gw.Name, err)
	}
	for _, a := range addrs {
		if ip, _ := netip.AddrFromSlice(a.IP); ip.IsLinkLocalUnicast() && ip != GWLinkLocal {
			if err := gw.Netlink().AddrDel(l, &a); err != nil {
				return fmt.Errorf("%s: delete %s on lan: %w", gw.Name, ip, err)
			}
		}
	}
	return waitAddrs6(gw, "lan", []netip.Addr{GWLinkLocal, gwAddr}, 5*time.Second)
}

// addHost6 (Options.IPv6) gives the host's interface of uplink i its /64
// address and, for uplink 0, the default route via fe80::1 (as a router
// advertisement from gw0 would install it), and waits until its addresses
// are usable.
func (t *Topology) addHost6(i int) error {
	if !t.opts.IPv6 {
		return nil
	}
	ifname := hostIfName(t.opts, i)
	host, _ := t.uplinkAddrs6(i)
	if err := addAddr6(t.Host, ifname, netip.PrefixFrom(host, 64)); err != nil {
		return err
	}
	if i == 0 {
		if err := addRoute6(t.Host, ifname, netip.Prefix{}, GWLinkLocal, 0); err != nil {
			return err
		}
	}
	return waitAddrs6(t.Host, ifname, []netip.Addr{host}, 5*time.Second)
}

// finishIPv6 (Options.IPv6, after all links exist) adds the WAN side:
// addresses of the gateway ─ server links and the server's lo, the routes
// between them, the gateways' source-prefix filters, and waits until every
// IPv6 address of the topology is usable (none tentative).
func (t *Topology) finishIPv6() error {
	if !t.opts.IPv6 {
		return nil
	}
	for _, w := range []struct {
		gw           *NS
		srvIf        string
		gwWAN, srvUp netip.Prefix
	}{{t.GW0, "up0", gw0WAN6, srvUp06}, {t.GW1, "up1", gw1WAN6, srvUp16}} {
		if err := addAddr6(w.gw, "wan", w.gwWAN); err != nil {
			return err
		}
		if err := addAddr6(t.Server, w.srvIf, w.srvUp); err != nil {
			return err
		}
	}
	if err := addAddr6(t.Server, "lo", netip.PrefixFrom(t.ServerAddr6, 128)); err != nil {
		return err
	}
	for _, r := range []struct {
		ns  *NS
		dev string
		dst netip.Prefix // invalid: default
		via netip.Addr
	}{
		{t.GW0, "wan", netip.Prefix{}, srvUp06.Addr()},
		{t.GW1, "wan", netip.Prefix{}, srvUp16.Addr()},
		{t.Server, "up0", lan6(0), gw0WAN6.Addr()},
		{t.Server, "up1", lan6(1), gw1WAN6.Addr()},
	} {
		if err := addRoute6(r.ns, r.dev, r.dst, r.via, 0); err != nil {
			return err
		}
	}
	for i := range 2 {
		if err := t.SourceFilter6(i, true); err != nil {
			return err
		}
	}
	for _, w := range []struct {
		ns   *NS
		dev  string
		want netip.Addr
	}{
		{t.Host, t.HostIf0, t.HostAddr6_0}, {t.Host, t.HostIf1, t.HostAddr6_1},
		{t.GW0, "lan", t.GW0Addr6}, {t.GW1, "lan", t.GW1Addr6},
		{t.GW0, "wan", gw0WAN6.Addr()}, {t.GW1, "wan", gw1WAN6.Addr()},
		{t.Server, "up0", srvUp06.Addr()}, {t.Server, "up1", srvUp16.Addr()},
		{t.Server, "lo", t.ServerAddr6},
	} {
		if err := waitAddrs6(w.ns, w.dev, []netip.Addr{w.want}, 5*time.Second); err != nil {
			return err
		}
	}
	return nil
}

// srcFilter6Script is gateway i's source-prefix filter.
func srcFilter6Script(i int) string {
	return fmt.Sprintf(`table ip6 %[1]s
delete table ip6 %[1]s
table ip6 %[1]s {
	chain %[2]s {
		type filter hook prerouting priority filter; policy accept;
		iifname "lan" ip6 saddr != { %[3]s, fe80::/10, ::/128 } counter drop comment %[4]q
	}
}
`, NftSrc6Table, NftSrc6Chain, lan6(i), NftSrc6Counter)
}

// SourceFilter6 loads (on) or removes (off) gateway i's IPv6 source-prefix
// filter (see NftSrc6Table), which a dual-stack topology starts with: the
// IPv6 counterpart of its strict rp_filter. Loading it again resets its
// counter.
func (t *Topology) SourceFilter6(i int, on bool) error {
	gw, _, err := t.gateway(i)
	if err != nil {
		return err
	}
	if !t.opts.IPv6 {
		return errors.New("topology without IPv6 (Options.IPv6)")
	}
	script := srcFilter6Script(i)
	if !on {
		script = fmt.Sprintf("table ip6 %[1]s\ndelete table ip6 %[1]s\n", NftSrc6Table)
	}
	return Nft(gw, script)
}

// SourceDrops6 returns how many packets gateway i's IPv6 source-prefix
// filter dropped (arrived on lan from a source outside its /64).
func (t *Topology) SourceDrops6(i int) (int64, error) {
	gw, _, err := t.gateway(i)
	if err != nil {
		return 0, err
	}
	return NftCounter(gw, "ip6", NftSrc6Table, NftSrc6Chain, NftSrc6Counter)
}

// AddDefaultRoute6 adds a host IPv6 default route via fe80::1 through the
// interface of uplink i (eth<i>, or its L3 device) with the given metric
// (0: the kernel's 1024, which uplink 0's standard route already has: give
// another one). It is the route a router advertisement from gateway i would
// install; SendRA makes the gateway really send one.
func (t *Topology) AddDefaultRoute6(i, metric int) error {
	if !t.opts.IPv6 {
		return errors.New("topology without IPv6 (Options.IPv6)")
	}
	if i < 0 || i > 1 {
		return fmt.Errorf("no uplink %d", i)
	}
	return addRoute6(t.Host, hostIfName(t.opts, i), netip.Prefix{}, GWLinkLocal, metric)
}

// SendRA makes gateway i send one unsolicited router advertisement on its
// lan (from fe80::1 to ff02::1, hop limit 255, medium preference, no prefix
// information; with its MAC as source link-layer option on a veth) with the
// given router lifetime (whole seconds, at most 9000 s; 0 withdraws the
// route). The host (accept_ra=1, not forwarding) then installs, or removes,
// `default via fe80::1 dev <uplink i> proto ra` with the kernel's metric for
// RA routes (1024). On uplink 0 that collides with the standard static
// route (same metric): the kernel keeps the static one and adds nothing, and
// a lifetime of 0 does not remove it.
func (t *Topology) SendRA(i int, lifetime time.Duration) error {
	if !t.opts.IPv6 {
		return errors.New("topology without IPv6 (Options.IPv6)")
	}
	gw, _, err := t.gateway(i)
	if err != nil {
		return err
	}
	secs := lifetime / time.Second
	if secs < 0 || secs > 9000 {
		return fmt.Errorf("router lifetime %v out of range (0..9000 s)", lifetime)
	}
	l, err := gw.Netlink().LinkByName("lan")
	if err != nil {
		return fmt.Errorf("%s: lan: %w", gw.Name, err)
	}
	body := make([]byte, 12, 20)
	body[0] = 64 // current hop limit
	binary.BigEndian.PutUint16(body[2:4], uint16(secs))
	if mac := l.Attrs().HardwareAddr; len(mac) == 6 {
		body = append(body, 1, 1) // source link-layer address, 8 bytes
		body = append(body, mac...)
	}
	m := icmp.Message{Type: ipv6.ICMPTypeRouterAdvertisement, Body: &icmp.RawBody{Data: body}}
	b, err := m.Marshal(nil) // the kernel fills in the checksum
	if err != nil {
		return err
	}
	zone := strconv.Itoa(l.Attrs().Index) // the name would resolve in another namespace
	return gw.Do(func() error {
		c, err := icmp.ListenPacket("ip6:ipv6-icmp", GWLinkLocal.String()+"%"+zone)
		if err != nil {
			return fmt.Errorf("%s: icmpv6 socket: %w", gw.Name, err)
		}
		defer c.Close()
		if err := c.IPv6PacketConn().SetMulticastHopLimit(255); err != nil {
			return err
		}
		if _, err := c.WriteTo(b, &net.IPAddr{IP: net.ParseIP("ff02::1"), Zone: zone}); err != nil {
			return fmt.Errorf("%s: send router advertisement: %w", gw.Name, err)
		}
		return nil
	})
}

// HostLinkLocal6 returns the link-local address of the host's interface of
// uplink i (without a zone).
func (t *Topology) HostLinkLocal6(i int) (netip.Addr, error) {
	if i < 0 || i > 1 {
		return netip.Addr{}, fmt.Errorf("no uplink %d", i)
	}
	ifname := hostIfName(t.opts, i)
	addrs, err := addrs6(t.Host, ifname)
	if err != nil {
		return netip.Addr{}, err
	}
	for _, a := range addrs {
		if a.ip.IsLinkLocalUnicast() {
			return a.ip, nil
		}
	}
	return netip.Addr{}, fmt.Errorf("%s: no link-local address on %s", t.Host.Name, ifname)
}

// cutUpstream6 (Options.IPv6) is CutUpstream/RestoreUpstream for gateway
// i's IPv6 default route.
func (t *Topology) cutUpstream6(i int, cut bool) error {
	if !t.opts.IPv6 {
		return nil
	}
	ns, _, err := t.gateway(i)
	if err != nil {
		return err
	}
	via := srvUp06.Addr()
	if i == 1 {
		via = srvUp16.Addr()
	}
	r := &netlink.Route{Dst: defaultDst(via), Type: unix.RTN_BLACKHOLE}
	if !cut {
		l, err := ns.Netlink().LinkByName("wan")
		if err != nil {
			return fmt.Errorf("%s: wan: %w", ns.Name, err)
		}
		r = &netlink.Route{Dst: defaultDst(via), LinkIndex: l.Attrs().Index, Gw: via.AsSlice()}
	}
	if err := ns.Netlink().RouteReplace(r); err != nil {
		return fmt.Errorf("%s: IPv6 default route (cut %v): %w", ns.Name, cut, err)
	}
	return nil
}

// startServers6 starts the standard servers (TCP and UDP echo on EchoPort,
// bulk on BulkPort) on the server's IPv6 address.
func (t *Topology) startServers6() (servers, error) {
	var s servers
	var err error
	if !t.ServerAddr6.IsValid() {
		return s, errors.New("topology without IPv6 (Options.IPv6)")
	}
	if s.echo, err = StartTCPEcho(t.Server, netip.AddrPortFrom(t.ServerAddr6, EchoPort)); err != nil {
		return s, err
	}
	if s.udp, err = StartUDPEcho(t.Server, netip.AddrPortFrom(t.ServerAddr6, EchoPort)); err != nil {
		return s, err
	}
	s.bulk, err = StartBulkServer(t.Server, netip.AddrPortFrom(t.ServerAddr6, BulkPort))
	return s, err
}

// ---- addresses and routes ----

// defaultDst is the default destination (0.0.0.0/0, or ::/0 for an IPv6
// next hop).
func defaultDst(via netip.Addr) *net.IPNet {
	if via.Is6() && !via.Is4In6() {
		return &net.IPNet{IP: net.IPv6zero, Mask: net.CIDRMask(0, 128)}
	}
	return &net.IPNet{IP: net.IPv4zero.To4(), Mask: net.CIDRMask(0, 32)}
}

// addAddr6 adds the IPv6 address p to ifname in ns with nodad (usable at
// once) and sets the link up.
func addAddr6(ns *NS, ifname string, p netip.Prefix) error {
	h := ns.Netlink()
	l, err := h.LinkByName(ifname)
	if err != nil {
		return fmt.Errorf("%s: %s: %w", ns.Name, ifname, err)
	}
	a := &netlink.Addr{IPNet: &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), 128)}, Flags: unix.IFA_F_NODAD}
	if err := h.AddrAdd(l, a); err != nil {
		return fmt.Errorf("%s: addr %s on %s: %w", ns.Name, p, ifname, err)
	}
	if err := h.LinkSetUp(l); err != nil {
		return fmt.Errorf("%s: up %s: %w", ns.Name, ifname, err)
	}
	return nil
}

// addRoute6 adds an IPv6 route to dst (invalid: ::/0) via via through dev,
// with metric (0: the kernel's default, 1024).
func addRoute6(ns *NS, dev string, dst netip.Prefix, via netip.Addr, metric int) error {
	h := ns.Netlink()
	l, err := h.LinkByName(dev)
	if err != nil {
		return fmt.Errorf("%s: %s: %w", ns.Name, dev, err)
	}
	r := &netlink.Route{LinkIndex: l.Attrs().Index, Gw: via.AsSlice(), Dst: defaultDst(via), Priority: metric}
	if dst.IsValid() {
		r.Dst = &net.IPNet{IP: dst.Addr().AsSlice(), Mask: net.CIDRMask(dst.Bits(), 128)}
	}
	if err := h.RouteAdd(r); err != nil {
		return fmt.Errorf("%s: route %v via %s dev %s metric %d: %w", ns.Name, dst, via, dev, metric, err)
	}
	return nil
}

// addr6 is an IPv6 address of an interface with its flags (IFA_F_*).
type addr6 struct {
	ip    netip.Addr
	bits  int
	flags int
}

func (a addr6) String() string {
	s := fmt.Sprintf("%s/%d", a.ip, a.bits)
	if a.flags&unix.IFA_F_TENTATIVE != 0 {
		s += " tentative"
	}
	if a.flags&unix.IFA_F_DADFAILED != 0 {
		s += " dadfailed"
	}
	return s
}

// addrs6 lists the IPv6 addresses of ifname in ns.
func addrs6(ns *NS, ifname string) ([]addr6, error) {
	l, err := ns.Netlink().LinkByName(ifname)
	if err != nil {
		return nil, fmt.Errorf("%s: %s: %w", ns.Name, ifname, err)
	}
	list, err := ns.Netlink().AddrList(l, netlink.FAMILY_V6)
	if err != nil {
		return nil, fmt.Errorf("%s: %s addresses: %w", ns.Name, ifname, err)
	}
	var out []addr6
	for _, a := range list {
		ip, _ := netip.AddrFromSlice(a.IP)
		bits, _ := a.Mask.Size()
		out = append(out, addr6{ip: ip, bits: bits, flags: a.Flags})
	}
	return out, nil
}

// waitAddrs6 waits until ifname in ns has every address of want, a
// link-local one (except lo), and no tentative or DAD-failed address.
func waitAddrs6(ns *NS, ifname string, want []netip.Addr, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		addrs, err := addrs6(ns, ifname)
		if err != nil {
			return err
		}
		ready, ll := true, ifname == "lo"
		have := map[netip.Addr]bool{}
		for _, a := range addrs {
			have[a.ip] = true
			ll = ll || a.ip.IsLinkLocalUnicast()
			if a.flags&(unix.IFA_F_TENTATIVE|unix.IFA_F_DADFAILED) != 0 {
				ready = false
			}
		}
		for _, w := range want {
			ready = ready && have[w]
		}
		if ready && ll {
			return nil
		}
		if time.Now().After(deadline) {
			var s []string
			for _, a := range addrs {
				s = append(s, a.String())
			}
			return fmt.Errorf("%s: %s: IPv6 addresses not usable after %v (want %v and a link-local; have %s)", ns.Name, ifname, timeout, want, strings.Join(s, ", "))
		}
		time.Sleep(20 * time.Millisecond)
	}
}
