package datapath

import (
	"net/netip"
	"sync"
	"sync/atomic"

	"github.com/l2shim/l2shim/conntrack"
	"github.com/l2shim/l2shim/failover"
	"github.com/l2shim/l2shim/filters"
	"github.com/l2shim/l2shim/rewrite"
)

// Iface is an external interface as the engine sees it.
type Iface struct {
	Name  string
	Index int // ifindex
	// MAC is the interface's. An L3 device (ppp, tun, WireGuard, a raw-IP modem) has none:
	// its packets reach the engine behind an Ethernet header the hooks made up, from MAC to
	// GatewayMAC (the device's one gateway) or back, and leave without one.
	MAC        [6]byte
	L3         bool
	GatewayMAC [6]byte
	Addr       [4]byte        // the address NAT uses on this interface
	Addrs      [][4]byte      // all its IPv4 addresses
	Prefixes   []netip.Prefix // the networks directly attached through it
	MTU        int
	Up         bool
	// The interface's IPv6 view. Addr6 is the global address NAT66 uses on it (zero: none,
	// and no IPv6 flow is placed on its gateways); Addrs6 all its global addresses;
	// Prefixes6 the IPv6 networks directly attached through it. A host's IPv6 source inside
	// one of them belongs to the interface (per-source routing, never NATed there).
	Addr6     [16]byte
	Addrs6    [][16]byte
	Prefixes6 []netip.Prefix
}

// has reports whether ip is one of the interface's addresses.
func (ifc *Iface) has(ip [4]byte) bool {
	for _, a := range ifc.Addrs {
		if a == ip {
			return true
		}
	}
	return false
}

// hasAddr reports whether ip, as a flow key holds it, is one of the interface's addresses:
// for IPv6, one of its addresses or an address in one of its attached networks (see owns6).
func (ifc *Iface) hasAddr(ip [16]byte) bool {
	if a, ok := conntrack.V4(ip); ok {
		return ifc.has(a)
	}
	return ifc.owns6(ip)
}

// has6 reports whether IPv6 address ip is one of the interface's (Addr6 or Addrs6).
func (ifc *Iface) has6(ip [16]byte) bool {
	if ip == ([16]byte{}) {
		return false
	}
	if ip == ifc.Addr6 {
		return true
	}
	for _, a := range ifc.Addrs6 {
		if a == ip {
			return true
		}
	}
	return false
}

// owns6 reports whether a host's IPv6 source ip belongs to the interface: one of its
// addresses, or (IPv6 hosts hold many addresses, temporary ones among them) an address in one
// of its attached networks, which only that uplink routes back.
func (ifc *Iface) owns6(ip [16]byte) bool {
	if ifc.has6(ip) {
		return true
	}
	if len(ifc.Prefixes6) == 0 {
		return false
	}
	a := netip.AddrFrom16(ip)
	for _, p := range ifc.Prefixes6 {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// natAddr returns the address NAT uses on the interface for a flow of the family of key
// address like (IPv4-mapped or IPv6), as a flow key holds it; zero when there is none.
func (ifc *Iface) natAddr(like [16]byte) [16]byte {
	if conntrack.Is4(like) {
		if ifc.Addr == ([4]byte{}) {
			return [16]byte{}
		}
		return conntrack.Addr4(ifc.Addr)
	}
	return ifc.Addr6
}

// GatewaySpec is a gateway as configured.
type GatewaySpec struct {
	Name   string
	Iface  int // index into the engine's interfaces
	IP     [4]byte
	MAC    [6]byte // configured MAC, when HasMAC
	HasMAC bool
	Weight int
	On     bool
	// MTU is the path MTU through this gateway when the config sets one below the
	// interface's; 0 means the interface's.
	MTU int
	// MAC6 is the MAC of the IPv6 router on the gateway's link, when HasMAC6 (configured, or
	// learned later through ResolvedMAC6). A gateway on an L3 link needs none. Without it
	// the gateway takes no IPv6 flow.
	MAC6    [6]byte
	HasMAC6 bool
}

// GatewayStats are a gateway's traffic totals, atomic so status reads them without the lock.
// A gateway that a reload keeps keeps its stats.
type GatewayStats struct {
	Placed                atomic.Uint64 // flows placed on the gateway since start
	Live                  atomic.Int64  // its flows in the table now
	PacketsOut, PacketsIn atomic.Uint64
	BytesOut, BytesIn     atomic.Uint64
}

// gateway is a GatewaySpec with what the engine learned about it at run time.
type gateway struct {
	GatewaySpec
	mac    [6]byte // configured or resolved; valid when hasMAC
	hasMAC bool
	// alive is false from its interface going down until it answers ARP again.
	alive bool
	// mac6 is the IPv6 router's MAC (configured or resolved), valid when hasMAC6; alive6 is
	// false from the interface going down until ResolvedMAC6 reports it again.
	mac6            [6]byte
	hasMAC6, alive6 bool
	drained         bool
	// probe is the last verdict of its probes (Up when probing is off).
	probe failover.ProbeSummary
	// probe6 is the last verdict of its IPv6 probes when own6 (it has IPv6 probe targets and
	// probing is on); without, IPv6 flows follow probe, as IPv4 ones.
	probe6 failover.ProbeSummary
	own6   bool
	// peerSilent, when not empty, is why the tunnel peer of its link counts as gone.
	peerSilent string
	benched    bool
	stats      *GatewayStats
}

// Config holds the engine's policy knobs; a reload may change all of them.
type Config struct {
	Mode failover.Mode
	// SourceAware sends the host's side of a flow that arrived on interface X back through
	// the gateway it arrived from.
	SourceAware bool
	// SynRetries: a connection request seen more than this many times moves to the next
	// usable gateway; negative turns rotation off.
	SynRetries int
	// Health configures failure accounting; a zero Window turns it off.
	Health failover.HealthConfig
	// Probing says probes decide whether a gateway is up (probe_interval > 0).
	Probing bool
	// ProbeMisses is [failover] probe_misses, for the probe summary of a fresh gateway.
	ProbeMisses int
}

// Options are fixed for an engine's life.
type Options struct {
	// Seed keys the per-flow hash, so placement differs between runs and cannot be steered
	// from outside.
	Seed uint64
	// NATPortLo and NATPortHi bound remapped NAT ports (see NATPorts); zero means the
	// default.
	NATPortLo, NATPortHi uint16
	// FastPath lets the kernel carry confirmed flows (see FastChanges).
	FastPath bool
	// Tracker tells what the kernel saw of the host's side of a TCP flow it carries; nil
	// when there is no fast path.
	Tracker FastTracker
}

// Engine decides what happens to each captured frame. See the package documentation.
type Engine struct {
	mu     sync.Mutex
	ifaces []Iface
	gws    []*gateway
	cands  []failover.Candidate
	// cands6 are the same gateways as candidates for IPv6 flows: usable when their
	// interface has an IPv6 address (Addr6) and their IPv6 router's MAC is known.
	cands6 []failover.Candidate
	cfg    Config
	opts   Options
	table  *conntrack.Table
	rules  *filters.Set
	health *failover.Health

	// frame and vnet are the parsed view of the frame being processed.
	frame rewrite.Frame
	vnet  rewrite.VnetHdr

	probes    map[probeKey]*probeTarget
	probeList []*probeTarget // by ProbeID
	frags     fragTable
	// The fast path's bookkeeping: flows it carries, flows to (re)consider, entries to remove.
	fast      map[conntrack.Key]*fastState
	fastDirty map[conntrack.Key]struct{}
	fastDel   []FastOp
	// fastPending is set while fastDirty or fastDel hold anything.
	fastPending atomic.Bool
	attempts    attempts
	inbound     inboundBudget
	rotated     map[conntrack.Key]rotEntry
	allDown     bool
	lastNow     int64
	c           Counters
}

// New returns an engine over the interfaces ifaces and the configuration plan, with a flow
// table of plan.MaxFlows flows.
func New(ifaces []Iface, plan Plan, opts Options) *Engine {
	e := &Engine{
		ifaces:   ifaces,
		opts:     opts,
		table:    conntrack.New(plan.MaxFlows, plan.Timeouts),
		frags:    newFragTable(),
		inbound:  newInboundBudget(plan.MaxFlows),
		attempts: newAttempts(opts.Seed),
	}
	e.table.OnRemove(func(f *conntrack.Flow, _ conntrack.RemoveReason) {
		if f.Gateway >= 0 && int(f.Gateway) < len(e.gws) {
			e.gws[f.Gateway].stats.Live.Add(-1)
		}
		if f.Origin == conntrack.Inbound {
			e.inbound.remove(f)
		}
		if f.Fast != conntrack.FastNone {
			e.fastGone(f, f.Reply, f.Fast == conntrack.FastCarry, f.Gateway)
		}
	})
	e.apply(plan, nil)
	return e
}

// Counters returns the engine's running totals. The frame loops add their I/O counters
// (SendErrors, SendTooBig, Lost) to them.
func (e *Engine) Counters() *Counters { return &e.c }

// TableCounters returns how many flows the table evicted to make room for new ones and how
// many it expired after their idle timeout.
func (e *Engine) TableCounters() (evicted, expired uint64) {
	return e.table.C.Evicted.Load(), e.table.C.Expired.Load()
}

// Flows returns the number of tracked flows.
func (e *Engine) Flows() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.table.Len()
}

// Expire drops idle flows, looking at up to budget table slots, and forgets expired fragment
// and rotation entries.
func (e *Engine) Expire(now int64, budget int) int {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.expireFragments(now)
	e.expireRotated(now)
	return e.table.Expire(now, budget)
}

// inputs returns what decides gateway i's state. With stats it includes the failure
// accounting's counts (for the status); without, only whether it is benched.
func (e *Engine) inputs(i int, now int64, stats bool) failover.Inputs {
	g := e.gws[i]
	in := failover.Inputs{
		On:      g.On,
		Drained: g.drained,
		LinkUp:  e.ifaces[g.Iface].Up,
		// Without an address of its own the uplink cannot carry a NATed flow, nor a host's
		// flow whose source it does not have.
		NoAddress:  e.ifaces[g.Iface].Addr == ([4]byte{}),
		MACKnown:   g.hasMAC && g.alive,
		PeerSilent: g.peerSilent,
		Probing:    e.cfg.Probing,
		Probe:      g.probe,
		Window:     e.cfg.Health.Window,
	}
	if stats && e.health != nil {
		in.Health = e.health.Stats(i, now)
	}
	in.Health.Benched = g.benched
	return in
}

// inputs6 is inputs for IPv6 flows: the gateway needs an IPv6 address on its interface and
// its IPv6 router's MAC (an L3 link: its one gateway, alive while the link is up). A gateway
// with IPv6 probe targets is judged by its IPv6 probes (health per family: an ISP can lose
// IPv6 and keep IPv4); one without follows its IPv4 probe verdict. Failure accounting is
// shared with IPv4.
func (e *Engine) inputs6(i int, now int64, stats bool) failover.Inputs {
	in := e.inputs(i, now, stats)
	g := e.gws[i]
	ifc := &e.ifaces[g.Iface]
	in.IPv6 = true
	in.NoAddress = ifc.Addr6 == ([16]byte{})
	if !ifc.L3 {
		in.MACKnown = g.hasMAC6 && g.alive6
	}
	if g.own6 {
		in.Probe = g.probe6
	}
	return in
}

// refresh recomputes which gateways may take new flows, after anything they depend on
// changed. e.mu is held.
func (e *Engine) refresh() {
	for i := range e.gws {
		in := e.inputs(i, 0, false)
		e.cands[i].Usable = in.Usable()
		in6 := e.inputs6(i, 0, false)
		e.cands6[i].Usable = in6.Usable()
	}
}

// candsFor returns the candidates for a flow whose key holds address like: IPv4 or IPv6.
func (e *Engine) candsFor(like [16]byte) []failover.Candidate {
	if conntrack.Is4(like) {
		return e.cands
	}
	return e.cands6
}

// macFor returns the MAC of gateway g's router for a flow of like's family, and whether it is
// known: the IPv6 router's for IPv6 on an Ethernet link, else the gateway's.
func (e *Engine) macFor(g *gateway, like [16]byte) ([6]byte, bool) {
	if conntrack.Is4(like) || e.ifaces[g.Iface].L3 {
		return g.mac, g.hasMAC
	}
	return g.mac6, g.hasMAC6
}

// pathMTU returns the MTU of the path through gateway g.
func (e *Engine) pathMTU(g *gateway) int {
	m := e.ifaces[g.Iface].MTU
	if g.MTU > 0 && (m == 0 || g.MTU < m) {
		m = g.MTU
	}
	return m
}

// onLink reports whether ip (as a flow key holds it) is on a network directly attached to one
// of the interfaces.
func (e *Engine) onLink(ip [16]byte) bool {
	a := conntrack.Addr(ip)
	v6 := !conntrack.Is4(ip)
	for i := range e.ifaces {
		ps := e.ifaces[i].Prefixes
		if v6 {
			ps = e.ifaces[i].Prefixes6
		}
		for _, p := range ps {
			if p.Contains(a) {
				return true
			}
		}
	}
	return false
}

// ifaceOwning returns the interface that has ip (as a flow key holds it) as one of its
// addresses, or -1.
func (e *Engine) ifaceOwning(ip [16]byte) int {
	for i := range e.ifaces {
		if e.ifaces[i].hasAddr(ip) {
			return i
		}
	}
	return -1
}

// firstUsableOn returns the first gateway on interface i in configured order usable for a
// flow of like's family (an address as a flow key holds it), or -1.
func (e *Engine) firstUsableOn(i int, like [16]byte) int {
	c := e.candsFor(like)
	for g := range e.gws {
		if e.gws[g].Iface == i && c[g].Usable {
			return g
		}
	}
	return -1
}

// firstResolvedOn returns the first gateway on interface i whose MAC for like's family is
// known, usable or not, or -1.
func (e *Engine) firstResolvedOn(i int, like [16]byte) int {
	for g := range e.gws {
		if _, ok := e.macFor(e.gws[g], like); e.gws[g].Iface == i && ok {
			return g
		}
	}
	return -1
}

// gatewayByMAC returns the gateway on interface i whose MAC for like's family is mac, or -1.
func (e *Engine) gatewayByMAC(i int, mac [6]byte, like [16]byte) int {
	for g, gw := range e.gws {
		if m, ok := e.macFor(gw, like); gw.Iface == i && ok && m == mac {
			return g
		}
	}
	return -1
}
