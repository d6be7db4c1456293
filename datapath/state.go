package datapath

import "github.com/l2shim/l2shim/conntrack"

// What the control plane learns about the host and the gateways reaches the engine through
// these methods; each recomputes which gateways may take new flows.

// SetLink records whether interface i is up and reports whether that changed. Going down makes
// its gateways unusable at once; coming up, each must answer ARP again (ResolvedMAC or
// ARPAnswered) before it takes new flows.
func (e *Engine) SetLink(i int, up bool) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.ifaces[i].Up == up {
		return false
	}
	e.ifaces[i].Up = up
	e.markFastAll(func(fl *conntrack.Flow) bool { return int(fl.HostIf) == i || int(fl.WireIf) == i })
	for _, g := range e.gws {
		if g.Iface == i {
			if !up {
				g.alive, g.alive6 = false, false
			}
			e.fitL3Gateway(g)
		}
	}
	e.refresh()
	return true
}

// fitL3Gateway gives a gateway on an L3 device the MAC its packets carry in the engine, and
// makes it alive while the device is up: there is no ARP to ask it. e.mu is held.
func (e *Engine) fitL3Gateway(g *gateway) {
	ifc := &e.ifaces[g.Iface]
	if !ifc.L3 {
		return
	}
	g.mac, g.hasMAC, g.alive = ifc.GatewayMAC, true, ifc.Up
}

// SetAddressing records interface i's ifindex, MAC, addresses, attached networks and MTU as
// netlink reports them now (its name and link state stay), and returns the address NAT used
// before. New flows NAT to ifc.Addr. Flows NATed to an address the interface no longer has
// cannot go on from it: their TCP flows are reset toward the host (returned, to inject) and
// their UDP flows move to the interface's current address, so a tunnel or a call that keeps
// sending carries on (while the interface has no address they wait for one).
func (e *Engine) SetAddressing(i int, ifc Iface, now int64) (oldAddr [4]byte, ev Evacuation) {
	e.mu.Lock()
	defer e.mu.Unlock()
	cur := &e.ifaces[i]
	oldAddr = cur.Addr
	cur.Index, cur.MAC, cur.MTU = ifc.Index, ifc.MAC, ifc.MTU
	cur.L3, cur.GatewayMAC = ifc.L3, ifc.GatewayMAC
	cur.Addr, cur.Addrs, cur.Prefixes = ifc.Addr, ifc.Addrs, ifc.Prefixes
	cur.Addr6, cur.Addrs6, cur.Prefixes6 = ifc.Addr6, ifc.Addrs6, ifc.Prefixes6
	for _, g := range e.gws {
		if g.Iface == i {
			e.fitL3Gateway(g)
		}
	}
	e.refresh()
	e.markFastAll(func(fl *conntrack.Flow) bool { return int(fl.HostIf) == i || int(fl.WireIf) == i })
	stranded := func(fl *conntrack.Flow) bool {
		return fl.NAT && int(fl.WireIf) == i && !cur.hasAddr(fl.Reply.Dst)
	}
	sameGateway := func(fl *conntrack.Flow) int {
		if cur.natAddr(fl.Orig.Src) == ([16]byte{}) {
			return -1
		}
		return int(fl.Gateway)
	}
	return oldAddr, e.evacuate(stranded, sameGateway, now)
}

// MACChange is what recording a gateway's MAC changed.
type MACChange struct {
	// Changed: the MAC is new (first resolved, or moved).
	Changed bool
	// Revived: the gateway was not alive (its link went down) and answers again.
	Revived bool
	// Stale is the MAC it had before when no gateway uses it any more (the hooks' map can
	// forget it); zero when there is none.
	Stale [6]byte
}

// ResolvedMAC records that gateway gi answered ARP with mac.
func (e *Engine) ResolvedMAC(gi int, mac [6]byte) MACChange {
	e.mu.Lock()
	defer e.mu.Unlock()
	g := e.gws[gi]
	var ch MACChange
	if !g.hasMAC || g.mac != mac {
		old, had := g.mac, g.hasMAC
		ch.Changed = true
		g.mac, g.hasMAC = mac, true
		e.markFastAll(func(fl *conntrack.Flow) bool { return int(fl.Gateway) == gi })
		if had && old != ([6]byte{}) && !e.macInUse(old) {
			ch.Stale = old
		}
	}
	ch.Revived = !g.alive
	g.alive = true
	e.refresh()
	return ch
}

// ResolvedMAC6 records that the IPv6 router of gateway gi's link (its neighbour table's
// entry for the router) has mac, and reports whether that changed it. Until it is known (or
// configured) the gateway takes no IPv6 flow; a gateway on an L3 link needs none.
func (e *Engine) ResolvedMAC6(gi int, mac [6]byte) (changed bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if gi < 0 || gi >= len(e.gws) {
		return false
	}
	g := e.gws[gi]
	changed = !g.hasMAC6 || g.mac6 != mac
	g.mac6, g.hasMAC6, g.alive6 = mac, true, true
	// IPv6 flows are never carried by the fast path (fastWant): nothing to queue for it.
	e.refresh()
	return changed
}

// ARPAnswered records that gateway gi, whose MAC is configured, answered ARP, and reports
// whether it was not alive before.
func (e *Engine) ARPAnswered(gi int) (revived bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	g := e.gws[gi]
	revived = !g.alive
	g.alive = true
	e.refresh()
	return revived
}

// macInUse reports whether a gateway has mac. e.mu is held.
func (e *Engine) macInUse(mac [6]byte) bool {
	for _, g := range e.gws {
		if g.hasMAC && g.mac == mac {
			return true
		}
	}
	return false
}

// SetPeerSilent records why the tunnel peer of gateway gi's link (a WireGuard link) counts as
// gone ("" when it answers); while it does, the gateway takes no new flows.
func (e *Engine) SetPeerSilent(gi int, reason string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if gi < len(e.gws) {
		e.gws[gi].peerSilent = reason
		e.refresh()
	}
}

// SetDrained stops (or resumes) placing new flows on gateway gi.
func (e *Engine) SetDrained(gi int, drained bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.gws[gi].drained = drained
	e.refresh()
}

// GatewayMACs returns the MACs of the gateways whose MAC is known, for the hooks' map.
func (e *Engine) GatewayMACs() [][6]byte {
	e.mu.Lock()
	defer e.mu.Unlock()
	var out [][6]byte
	for _, g := range e.gws {
		if g.hasMAC {
			out = append(out, g.mac)
		}
		if g.hasMAC6 && (!g.hasMAC || g.mac6 != g.mac) {
			out = append(out, g.mac6) // its IPv6 router, when another box
		}
	}
	return out
}
