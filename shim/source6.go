package shim

import (
	"context"
	"net"
	"net/netip"
	"sync/atomic"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/l2shim/l2shim/fastpath"
)

// IPv6 per-source routing runs in the kernel (fastpath's egress program): an IPv6 packet whose
// source address is in an uplink's prefixes leaves through that uplink's router. The shim only
// keeps the programs' prefix map in step with the host, once a second: addresses come and go
// (SLAAC renumbering, DHCPv6), routers and their MACs change.

// source6Entry is one prefix of the map as the shim last computed it, for status and logs.
type source6Entry struct {
	Prefix    netip.Prefix
	Interface string
	Router    netip.Addr // the uplink's IPv6 router; invalid on an L3 link (none needed)
	MAC       [6]byte    // the router's, from the neighbour table; zero when not known yet
	L3        bool
}

// ready reports whether packets can be sent to the entry's uplink: an L3 link needs no
// router; on Ethernet the router's MAC must be known.
func (e source6Entry) ready() bool { return e.L3 || e.MAC != ([6]byte{}) }

// source6 is the state of the sync: what is installed in the kernel, and the last view.
type source6 struct {
	installed map[netip.Prefix]fastpath.Uplink6
	view      atomic.Pointer[[]source6Entry]
	// asked: when ND for a router was last triggered, so a router that does not answer is
	// asked once a second at most.
	asked map[netip.Addr]time.Time
}

// source6Loop keeps the kernel's IPv6 per-source map in step with the host until ctx ends.
// While an uplink's router is not resolved yet (the kernel is asking it), the next sync comes
// sooner (50 ms, doubling up to the second), so a gateway's IPv6 is usable as soon as its
// router answers, not up to a second later.
func (s *Shim) source6Loop(ctx context.Context) {
	quick := source6Quick
	for {
		next := time.Second
		if s.syncSource6() {
			next, quick = quick, min(2*quick, time.Second)
		} else {
			quick = source6Quick
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(next):
		}
	}
}

// source6Quick is the first recheck after an uplink's router was found unresolved.
const source6Quick = 50 * time.Millisecond

// uplink6View is what the sync needs to know about one external interface.
type uplink6View struct {
	name    string
	ifindex int
	l3      bool
	mac     [6]byte
	router  netip.Addr // configured (address6 of its first gateway that has one); else learned
}

func (s *Shim) uplinks6() []uplink6View {
	cfg := s.config()
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []uplink6View
	for _, p := range s.ports {
		if p.removed || p.ifi == nil {
			continue
		}
		v := uplink6View{name: p.name, ifindex: p.ifi.Index, l3: p.l3.Load()}
		copy(v.mac[:], p.ifi.HardwareAddr)
		for _, g := range cfg.Gateways {
			if g.Interface == p.name && g.Address6.IsValid() {
				v.router = g.Address6
				break
			}
		}
		out = append(out, v)
	}
	return out
}

// syncSource6 computes the prefix map from the host and applies the difference. It reports
// whether an Ethernet uplink with IPv6 addresses still waits for its router's MAC.
func (s *Shim) syncSource6() (unresolved bool) {
	st := &s.source6
	if st.installed == nil {
		st.installed = map[netip.Prefix]fastpath.Uplink6{}
		st.asked = map[netip.Addr]time.Time{}
	}
	var view []source6Entry
	want := map[netip.Prefix]fastpath.Uplink6{}
	for _, u := range s.uplinks6() {
		ifc, err := readIface(u.name)
		prefixes := ifc.Prefixes6
		if err != nil || len(prefixes) == 0 {
			continue
		}
		e := source6Entry{Interface: u.name, L3: u.l3}
		if !u.l3 {
			e.Router = u.router
			if !e.Router.IsValid() {
				e.Router = defaultRouter6(u.ifindex)
			}
			if e.Router.IsValid() {
				e.MAC = s.routerMAC6(u, e.Router)
			}
		}
		if e.MAC != ([6]byte{}) {
			s.routerResolved6(u.name, e.MAC)
		} else if !u.l3 {
			unresolved = true
		}
		up := fastpath.Uplink6{Ifindex: u.ifindex, L3: u.l3, SrcMAC: u.mac, DstMAC: e.MAC}
		for _, p := range prefixes {
			if _, taken := want[p]; taken {
				continue // on two uplinks: the first one's
			}
			e.Prefix = p
			view = append(view, e)
			if e.ready() {
				want[p] = up
			}
		}
	}
	for p := range st.installed {
		if _, ok := want[p]; !ok {
			if err := s.maps.k.DeleteSource6(p); err != nil {
				s.log.Error("IPv6 per-source", "prefix", p, "err", err)
				continue
			}
			delete(st.installed, p)
			s.log.Info("IPv6 per-source: prefix no longer steered", "prefix", p)
		}
	}
	for p, u := range want {
		if old, ok := st.installed[p]; ok && old == u {
			continue
		}
		if err := s.maps.k.SetSource6(p, u); err != nil {
			s.log.Error("IPv6 per-source", "prefix", p, "err", err)
			continue
		}
		st.installed[p] = u
		s.log.Info("IPv6 per-source: packets from the prefix leave through its uplink", "prefix", p,
			"interface", ifaceName(view, p), "router_mac", net.HardwareAddr(u.DstMAC[:]).String())
	}
	st.view.Store(&view)
	return unresolved
}

// routerResolved6 tells the engine the IPv6 router MAC of every gateway on interface name, and
// the hooks to divert the host's IPv6 frames to it.
func (s *Shim) routerResolved6(name string, mac [6]byte) {
	for gi, gc := range s.config().Gateways {
		if gc.Interface != name {
			continue
		}
		if s.engine.ResolvedMAC6(gi, mac) {
			if err := s.maps.addGateways([][6]byte{mac}); err != nil {
				s.log.Error("IPv6 router resolved but not diverted to", "interface", name, "err", err)
			}
			s.log.Info("IPv6 router resolved", "gateway", gc.Name, "mac", net.HardwareAddr(mac[:]).String())
		}
	}
}

func ifaceName(view []source6Entry, p netip.Prefix) string {
	for _, e := range view {
		if e.Prefix == p {
			return e.Interface
		}
	}
	return ""
}

// defaultRouter6 returns the router of the kernel's IPv6 default route through interface
// ifindex (the one router advertisements install), or an invalid address.
func defaultRouter6(ifindex int) netip.Addr {
	routes, err := netlink.RouteListFiltered(unix.AF_INET6, &netlink.Route{LinkIndex: ifindex}, netlink.RT_FILTER_OIF)
	if err != nil {
		return netip.Addr{}
	}
	for _, r := range routes {
		if r.Gw == nil || (r.Dst != nil && !isDefault6(r.Dst)) {
			continue
		}
		if a, ok := netip.AddrFromSlice(r.Gw); ok {
			return a
		}
	}
	return netip.Addr{}
}

func isDefault6(n *net.IPNet) bool {
	ones, _ := n.Mask.Size()
	return ones == 0
}

// routerMAC6 returns the router's MAC from the kernel's neighbour table. When the kernel does
// not know it (or not any more), it makes the kernel resolve it, at most once a second per
// router, and reports zero for now.
func (s *Shim) routerMAC6(u uplink6View, router netip.Addr) [6]byte {
	var mac [6]byte
	neighs, err := netlink.NeighList(u.ifindex, unix.AF_INET6)
	if err == nil {
		for _, n := range neighs {
			a, ok := netip.AddrFromSlice(n.IP)
			usable := n.State&(netlink.NUD_REACHABLE|netlink.NUD_STALE|netlink.NUD_DELAY|netlink.NUD_PROBE|netlink.NUD_PERMANENT) != 0
			if ok && a == router && usable && len(n.HardwareAddr) == 6 {
				copy(mac[:], n.HardwareAddr)
				return mac
			}
		}
	}
	if time.Since(s.source6.asked[router]) >= time.Second {
		s.source6.asked[router] = time.Now()
		solicit6(u.name, router)
	}
	return mac
}

// solicit6 makes the kernel resolve router's MAC on interface name: it sends one UDP byte to
// the router's discard port, which the kernel cannot send without neighbour discovery.
func solicit6(name string, router netip.Addr) {
	zone := ""
	if router.IsLinkLocalUnicast() {
		zone = name
	}
	c, err := net.DialUDP("udp6", nil, &net.UDPAddr{IP: router.AsSlice(), Port: 9, Zone: zone})
	if err != nil {
		return
	}
	defer c.Close()
	_, _ = c.Write([]byte{0})
}
