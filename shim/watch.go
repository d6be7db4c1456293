package shim

import (
	"context"
	"log/slog"
	"net"
	"net/netip"
	"slices"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// watcher follows the host through netlink: links going down or up, addresses changing (DHCP),
// interfaces re-created with a new ifindex (USB modems), all without a restart.
type watcher struct {
	links chan netlink.LinkUpdate
	addrs chan netlink.AddrUpdate
	done  chan struct{}
}

// subscribe starts listening before the shim attaches anything, so no change slips between
// reading the interfaces and following them.
func (s *Shim) subscribe() (*watcher, error) {
	w := &watcher{
		links: make(chan netlink.LinkUpdate, 256),
		addrs: make(chan netlink.AddrUpdate, 256),
		done:  make(chan struct{}),
	}
	onErr := func(err error) {
		select {
		case <-w.done: // closing the subscription makes its reader fail; that is no news
		default:
			s.log.Warn("netlink subscription", "err", err)
		}
	}
	if err := netlink.LinkSubscribeWithOptions(w.links, w.done, netlink.LinkSubscribeOptions{ErrorCallback: onErr}); err != nil {
		return nil, err
	}
	if err := netlink.AddrSubscribeWithOptions(w.addrs, w.done, netlink.AddrSubscribeOptions{ErrorCallback: onErr}); err != nil {
		close(w.done)
		return nil, err
	}
	return w, nil
}

func (s *Shim) watch(ctx context.Context, w *watcher) {
	defer close(w.done)
	for {
		select {
		case <-ctx.Done():
			return
		case u, ok := <-w.links:
			if !ok {
				return
			}
			s.onLink(u)
		case a, ok := <-w.addrs:
			if !ok {
				return
			}
			s.onAddr(a.LinkIndex)
		}
	}
}

func (s *Shim) portByName(name string) (int, *port) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, p := range s.ports {
		if p.name == name && !p.removed {
			return i, p
		}
	}
	return -1, nil
}

func linkUp(a *netlink.LinkAttrs) bool {
	return a.Flags&net.FlagUp != 0 && (a.OperState == netlink.OperUp || a.OperState == netlink.OperUnknown)
}

func (s *Shim) onLink(u netlink.LinkUpdate) {
	a := u.Attrs()
	i, p := s.portByName(a.Name)
	if p == nil {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	log := s.log.With("interface", a.Name)
	if u.Header.Type == unix.RTM_DELLINK {
		if p.ifi == nil || a.Index != p.ifi.Index {
			return
		}
		p.detachHooks()
		p.closeWire()
		s.setIfaceState(i, false)
		log.Warn("interface removed; its gateways take no new flows until it comes back")
		p.ifi = &net.Interface{Name: a.Name, Index: -1}
		return
	}
	if !p.attached() {
		s.arrive(i, p, a, log)
		return
	}
	switch linkChange(p, a) {
	case linkRecreated:
		ifi, err := net.InterfaceByIndex(a.Index)
		if err != nil {
			log.Error("re-attach: interface vanished again", "err", err)
			return
		}
		p.detachHooks()
		if err := s.bindPort(p, ifi); err != nil {
			log.Error("re-attach failed; the interface is left to the host", "err", err)
			s.setIfaceState(i, false)
			return
		}
		if err := s.attachPortHooks(p); err != nil {
			log.Error("re-attach failed; the interface is left to the host", "err", err)
			p.detachHooks()
			s.setIfaceState(i, false)
			return
		}
		s.refreshAddrs(i, a.Index)
		log.Info("interface re-created; re-attached", "ifindex", ifi.Index, "mac", ifi.HardwareAddr.String())
	case linkMTU:
		s.refreshAddrs(i, a.Index)
	}
	s.setIfaceState(i, linkUp(a))
}

// arrive attaches interface a, absent when l2shim started, now that it appeared: a new port in
// slot i with its capture veths, sockets and hooks (the frame loops of the others pick it up
// from the ports' snapshot), the engine told what it is and its addresses, its loops started.
// An Ethernet interface's gateways then take flows once they answer ARP. One whose gateways
// have no address must be a link without a link-layer header. A failure leaves the slot as it
// was, to try again at the next report. s.mu is held.
func (s *Shim) arrive(i int, old *port, a *netlink.LinkAttrs, log *slog.Logger) {
	if !linkIsL3(a) && s.config().OnlyL3(a.Name) {
		log.Error("interface appeared with a link-layer header: its gateways have no address, so l2shim leaves it alone; give them one and reload")
		return
	}
	ifi, err := net.InterfaceByIndex(a.Index)
	if err != nil {
		log.Error("attach: interface vanished again", "err", err)
		return
	}
	p := &port{name: old.name}
	if err := s.buildPort(p, ifi); err != nil {
		p.closeSockets()
		p.release()
		log.Error("attach failed; the interface is left to the host", "err", err)
		return
	}
	p.mtu = ifi.MTU
	ports := slices.Clone(s.ports)
	ports[i] = p
	s.setPorts(ports)
	s.refreshAddrs(i, a.Index)
	if err := s.attachPortHooks(p); err != nil {
		// Back to the empty slot, so the next report tries again.
		p.detachHooks()
		p.closeSockets()
		p.release()
		ports = slices.Clone(s.ports)
		ports[i] = old
		s.setPorts(ports)
		log.Error("attach failed; the interface is left to the host", "err", err)
		s.setIfaceState(i, false)
		return
	}
	s.startLoop(i)
	log.Info("interface appeared; attached", "ifindex", ifi.Index)
	s.setIfaceState(i, linkUp(a))
}

// What a link report changes for a port.
const (
	linkSame      = iota // nothing l2shim follows (or only the link state)
	linkRecreated        // a new ifindex or MAC: the hooks, inject program and wire socket are re-made
	linkMTU              // a new MTU: the engine and the capture veths follow it
)

// linkChange says what the link report a means for port p, bound to its interface as it was.
// s.mu is held.
func linkChange(p *port, a *netlink.LinkAttrs) int {
	var mac, cur [6]byte
	copy(mac[:], a.HardwareAddr)
	if p.ifi != nil {
		copy(cur[:], p.ifi.HardwareAddr)
	}
	switch {
	case p.ifi == nil || a.Index != p.ifi.Index || mac != cur:
		return linkRecreated
	case a.MTU != p.mtu:
		return linkMTU
	}
	return linkSame
}

// setIfaceState records whether interface i is up. Going down makes its gateways unusable at
// once; coming up, each must answer ARP again before it takes new flows.
func (s *Shim) setIfaceState(i int, up bool) {
	if s.engine.SetLink(i, up) {
		if up {
			if s.ports[i].l3.Load() {
				s.log.Info("interface up; its gateway takes flows again", "interface", s.ports[i].name)
			} else {
				s.log.Info("interface up; its gateways return when they answer ARP", "interface", s.ports[i].name)
			}
		} else {
			s.log.Warn("interface down; its gateways take no new flows", "interface", s.ports[i].name)
			for gi, gc := range s.config().Gateways {
				if gc.Interface == s.ports[i].name {
					s.gatewayDown(gi, "interface "+gc.Interface+" down")
				}
			}
		}
	}
}

func (s *Shim) onAddr(ifindex int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, p := range s.ports {
		if p.ifi != nil && p.ifi.Index == ifindex {
			s.refreshAddrs(i, ifindex)
		}
	}
}

// refreshAddrs re-reads interface i's IPv4 addresses (the first is the one new NATed flows
// use) and MTU, and hands them to the engine; a larger MTU raises the capture veths'. s.mu is
// held.
func (s *Shim) refreshAddrs(i, ifindex int) {
	l, err := netlink.LinkByIndex(ifindex)
	if err != nil {
		return
	}
	ifc, err := ifaceFromLink(l)
	if err != nil {
		s.log.Warn("read addresses", "interface", s.ports[i].name, "err", err)
		return
	}
	p := s.ports[i]
	if ifc.MTU != p.mtu {
		// Raise the veths before the engine learns the MTU: it may then pass larger frames.
		s.fitVeths(ifc.MTU)
		s.log.Info("interface MTU changed", "interface", p.name, "old", p.mtu, "new", ifc.MTU)
	}
	old, ev := s.engine.SetAddressing(i, ifc, s.now())
	p.mtu = ifc.MTU
	s.injectResets(ev.Resets)
	if old != ifc.Addr {
		s.log.Info("interface address changed; new flows NAT to the new one", "interface", s.ports[i].name,
			"old", netip.AddrFrom4(old), "new", netip.AddrFrom4(ifc.Addr), "tcp_reset", ev.Reset, "udp_moved", ev.Moved)
	}
}
