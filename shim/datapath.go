package shim

import (
	"net/netip"
	"sync"
	"sync/atomic"

	"github.com/l2shim/l2shim/conntrack"
	"github.com/l2shim/l2shim/failover"
	"github.com/l2shim/l2shim/filters"
	"github.com/l2shim/l2shim/rewrite"
)

// natPortLo and natPortHi are the default bounds of the ports a NAT mapping moves to when the
// host's own port is taken on the new address. They lie above Linux's default
// ip_local_port_range (32768-60999), so a remapped flow does not take a port the host is about
// to use; NATPorts computes them from the host's actual range.
const (
	natPortLo = 61000
	natPortHi = 65535
)

// NATPorts returns the port range for remapped NAT mappings given the host's
// ip_local_port_range lo-hi: above it when at least 1024 ports are free there, else below it
// (from 1024), else the default.
func NATPorts(lo, hi int) (int, int) {
	switch {
	case hi > 0 && 65535-hi >= 1024:
		return hi + 1, 65535
	case lo > 0 && lo-1-1024 >= 1024:
		return 1024, lo - 1
	}
	return natPortLo, natPortHi
}

// Iface is an external interface as the datapath sees it.
type Iface struct {
	Name     string
	Index    int // ifindex
	MAC      [6]byte
	Addr     [4]byte        // the address NAT uses on this interface
	Addrs    [][4]byte      // all its IPv4 addresses
	Prefixes []netip.Prefix // the networks directly attached through it
	MTU      int
	Up       bool
}

// Gateway is a configured gateway as the datapath sees it.
type Gateway struct {
	Name   string
	Iface  int // index into Datapath.Ifaces
	IP     [4]byte
	MAC    [6]byte
	HasMAC bool
	Weight int
	On     bool
	// MTU is the path MTU through this gateway when the config sets one below the
	// interface's; 0 means the interface's.
	MTU int
	// Alive is false while the gateway does not answer ARP.
	Alive bool
	// Drained is set by `l2shim drain`: no new flows.
	Drained bool
	// ProbeDown is set while active probes say the gateway's path is dead; Benched while
	// failure accounting keeps it out.
	ProbeDown, Benched bool
	probe              failover.ProbeSummary
	// probeState belongs to the gateway's prober; it outlives a reload that keeps the
	// gateway's probing as it was (probeKey).
	probeState *failover.ProbeState
	probeKey   string
	// Flows counts flows placed on this gateway since start, Live those in the table now;
	// the others count the frames of those flows each way.
	Flows                 atomic.Uint64
	Live                  atomic.Int64
	PacketsOut, PacketsIn atomic.Uint64
	BytesOut, BytesIn     atomic.Uint64
}

// Usable reports whether new flows may be placed on g.
func (g *Gateway) Usable(ifaces []Iface) bool {
	return g.On && !g.Drained && !g.ProbeDown && !g.Benched && g.HasMAC && g.Alive && ifaces[g.Iface].Up
}

// Where says where a processed frame goes.
type Where uint8

const (
	// Drop discards the frame (counted by reason).
	Drop Where = iota
	// ToWire sends the frame out of external interface Verdict.Iface.
	ToWire
	// ToHost injects the frame into the host as if it arrived on Verdict.Iface.
	ToHost
	// Consumed means the shim itself was the frame's destination (a probe reply).
	Consumed
	// Segment means the frame is a tunnel's TSO super-frame, which the kernel will not send
	// as it is: the caller cuts it with the datapath's frame (SegmentEncap) and processes
	// each segment.
	Segment
)

// Verdict is the datapath's answer for one frame.
type Verdict struct {
	Where  Where
	Iface  int
	Reason DropReason
	// Len, when not 0, is the new length of the buffer (virtio-net header included): the
	// datapath replaced the frame with an answer of its own (an ICMP error to the host).
	Len int
}

// DropReason says why a frame was dropped.
type DropReason uint8

const (
	DropNone DropReason = iota
	DropMalformed
	DropUnknownDirection
	// DropTooBig: a DF frame larger than its uplink's MTU; the host got an ICMP
	// fragmentation-needed instead.
	DropTooBig
	// DropRotated: a late frame for a tuple its flow rotated away from.
	DropRotated
	// DropRule: a frame of a flow a rule drops (or a strict route-to whose gateway is down).
	DropRule
	// DropReset: a frame of a flow l2shim reset toward the host when its gateway went down.
	DropReset
	dropReasons
)

func (r DropReason) String() string {
	switch r {
	case DropMalformed:
		return "malformed"
	case DropUnknownDirection:
		return "unknown-direction"
	case DropTooBig:
		return "too-big"
	case DropRotated:
		return "rotated"
	case DropRule:
		return "rule"
	case DropReset:
		return "reset"
	}
	return "none"
}

// Counters are the datapath's running totals; all fields are updated atomically so a status
// request never takes the datapath lock.
type Counters struct {
	Frames        [2]atomic.Uint64 // by conntrack direction: host→wire, wire→host
	Passed        atomic.Uint64    // left exactly as the host sent it
	NATed         atomic.Uint64
	NewFlows      atomic.Uint64
	TableFull     atomic.Uint64
	SendErrors    atomic.Uint64 // frames the kernel refused to send
	SendTooBig    atomic.Uint64 // ... of which EMSGSIZE
	Lost          atomic.Uint64 // frames the kernel could not hand over with a virtio-net header
	ProbeReplies  atomic.Uint64 // replies to the shim's own probes, consumed
	FragTableFull atomic.Uint64 // first fragments whose followers could not be remembered
	Rotations     atomic.Uint64 // connection requests moved to the next gateway
	Resets        atomic.Uint64 // TCP flows of a down gateway reset toward the host
	Moved         atomic.Uint64 // UDP flows of a down gateway moved to a live one
	LateAnswers   atomic.Uint64 // wire frames for a tuple a flow rotated away from
	Segmented     atomic.Uint64 // tunnels' TSO super-frames cut in software
	Drops         [dropReasons]atomic.Uint64
	ParseFailures [rewrite.NumReasons]atomic.Uint64
}

// Datapath decides what happens to each captured frame: parse, conntrack, decide, rewrite. It
// does no I/O, so tests drive it with frames built in memory.
type Datapath struct {
	mu     sync.Mutex
	Ifaces []Iface
	Gws    []*Gateway
	cfg    DatapathConfig
	table  *conntrack.Table
	cands  []failover.Candidate
	frame  rewrite.Frame
	vnet   rewrite.VnetHdr
	// scratch holds an answer the datapath builds before it replaces a frame with it.
	scratch [256]byte
	probes  map[probeKey]*ProbeTarget
	frags   map[fragKey]fragEntry
	rotated map[conntrack.Key]rotEntry
	health  *failover.Health
	rules   *filters.Set
	allDown bool
	lastNow int64
	C       Counters
}

// DatapathConfig holds the policy knobs of a datapath.
type DatapathConfig struct {
	Mode failover.Mode
	// SourceAware sends the host's side of a flow that arrived on interface X back through
	// the gateway it arrived from.
	SourceAware bool
	// Seed keys the per-flow hash, so placement differs between runs and cannot be steered
	// from outside.
	Seed uint64
	// SynRetries: a connection request seen more than this many times moves to the next
	// usable gateway; negative turns rotation off.
	SynRetries int
	// Health configures failure accounting; a zero Window turns it off.
	Health failover.HealthConfig
	// NATPortLo and NATPortHi bound remapped NAT ports (see NATPorts); zero means the
	// default.
	NATPortLo, NATPortHi uint16
}

// NewDatapath returns a datapath over ifaces and gateways.
func NewDatapath(ifaces []Iface, gws []*Gateway, cfg DatapathConfig, table *conntrack.Table) *Datapath {
	d := &Datapath{Ifaces: ifaces, Gws: gws, cfg: cfg, table: table}
	table.OnRemove(func(f *conntrack.Flow, _ conntrack.RemoveReason) {
		if f.Gateway >= 0 && int(f.Gateway) < len(d.Gws) {
			d.Gws[f.Gateway].Live.Add(-1)
		}
	})
	if cfg.Health.Window > 0 {
		d.health = failover.NewHealth(cfg.Health, len(gws))
	}
	d.cands = make([]failover.Candidate, len(gws))
	for i, g := range gws {
		d.cands[i] = failover.Candidate{ID: failover.GatewayID(g.Name), Weight: g.Weight}
	}
	d.refreshLocked()
	return d
}

// Update runs fn with the datapath locked, then recomputes which gateways are usable. The
// control plane changes gateway and interface state only through it.
func (d *Datapath) Update(fn func(ifaces []Iface, gws []*Gateway)) {
	d.mu.Lock()
	defer d.mu.Unlock()
	fn(d.Ifaces, d.Gws)
	d.refreshLocked()
}

func (d *Datapath) refreshLocked() {
	for i, g := range d.Gws {
		d.cands[i].Usable = g.Usable(d.Ifaces)
	}
}

// Expire drops idle flows, looking at up to budget table slots.
func (d *Datapath) Expire(now int64, budget int) int {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.expireFragments(now)
	d.expireRotated(now)
	return d.table.Expire(now, budget)
}

// Flows returns the number of tracked flows.
func (d *Datapath) Flows() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.table.Len()
}

// Lock and Unlock let the frame loop process a whole batch under one lock.
func (d *Datapath) Lock()   { d.mu.Lock() }
func (d *Datapath) Unlock() { d.mu.Unlock() }

// ProcessLocked handles one frame captured at external interface in; pkt holds its virtio-net
// header and the Ethernet frame, and d must be locked. It rewrites pkt in place (virtio-net
// header included, when the frame's GSO size must shrink) and says where it goes. The MACs tell
// the direction: from the interface's own MAC the host is sending, to it the wire is
// delivering.
func (d *Datapath) ProcessLocked(in int, pkt []byte, now int64) Verdict {
	if !d.vnet.Decode(pkt) {
		d.C.Drops[DropMalformed].Add(1)
		return Verdict{Where: Drop, Reason: DropMalformed}
	}
	f := &d.frame
	if r := f.Parse(pkt[rewrite.VnetHdrLen:], d.vnet); r != rewrite.OK {
		if r < rewrite.NumReasons {
			d.C.ParseFailures[r].Add(1)
		}
		d.C.Drops[DropMalformed].Add(1)
		return Verdict{Where: Drop, Reason: DropMalformed}
	}
	d.lastNow = now
	if f.Encap && f.Vnet.IsGSO() {
		d.C.Segmented.Add(1)
		return Verdict{Where: Segment}
	}
	ifc := &d.Ifaces[in]
	var v Verdict
	switch {
	case f.SrcMAC() == ifc.MAC:
		d.C.Frames[conntrack.DirOrig].Add(1)
		v = d.egress(in, f, now)
	case f.DstMAC() == ifc.MAC:
		d.C.Frames[conntrack.DirReply].Add(1)
		v = d.ingress(in, f, now)
	default:
		d.C.Drops[DropUnknownDirection].Add(1)
		return Verdict{Where: Drop, Reason: DropUnknownDirection}
	}
	if f.Vnet != d.vnet {
		f.Vnet.Encode(pkt)
	}
	if v.Len > 0 {
		// The frame was replaced by an answer built in scratch.
		clear(pkt[:rewrite.VnetHdrLen])
		copy(pkt[rewrite.VnetHdrLen:], d.scratch[:v.Len])
		v.Len += rewrite.VnetHdrLen
	}
	return v
}

// pathMTU returns the MTU of the path through gateway g.
func (d *Datapath) pathMTU(g *Gateway) int {
	m := d.Ifaces[g.Iface].MTU
	if g.MTU > 0 && (m == 0 || g.MTU < m) {
		m = g.MTU
	}
	return m
}

// fitPath makes an egress frame of a flow placed on gateway g fit the path's MTU when it is
// smaller than the MTU of the interface the host chose: the MSS of a SYN is clamped, a GSO
// frame's segment size lowered, and an oversized DF frame answered with an ICMP
// fragmentation-needed to the host (the kernel gives it no such signal for a frame the shim
// sends). It returns a verdict when the frame was replaced by that answer.
func (d *Datapath) fitPath(in int, f *rewrite.Frame, g *Gateway) (Verdict, bool) {
	mtu := d.pathMTU(g)
	if mtu <= 0 || mtu >= d.Ifaces[in].MTU {
		return Verdict{}, false
	}
	if f.Proto == rewrite.ProtoTCP && f.TCPFlags&rewrite.TCPSyn != 0 {
		f.ClampMSS(uint16(mtu - 40))
	}
	if f.Vnet.IsGSO() {
		f.FitGSO(mtu)
		return Verdict{}, false
	}
	if f.End-f.L3 <= mtu || !f.DontFrag {
		return Verdict{}, false
	}
	n := f.BuildFragNeeded(d.scratch[:], uint16(mtu), g.IP)
	d.C.Drops[DropTooBig].Add(1)
	if n == 0 {
		return Verdict{Where: Drop, Reason: DropTooBig}, true
	}
	return Verdict{Where: ToHost, Iface: in, Reason: DropTooBig, Len: n}, true
}

// flowKey returns the frame's conntrack key and whether the frame belongs to a flow l2shim
// tracks at all (TCP, UDP, ICMP echo; not fragments, not tunnels' offloaded frames).
func flowKey(f *rewrite.Frame) (conntrack.Key, bool) {
	// A tunnel's frame whose partial checksum is the inner packet's (Encap, not a
	// super-frame: those are segmented first) is tracked by its outer header like any other:
	// NAT touches only outer fields, and the outer checksums take full-checksum updates.
	if f.L4 < 0 || f.FragOff != 0 {
		return conntrack.Key{}, false
	}
	switch f.Proto {
	case 6, 17:
	case 1:
		if f.ICMPType != 8 && f.ICMPType != 0 {
			return conntrack.Key{}, false
		}
	default:
		return conntrack.Key{}, false
	}
	return conntrack.Key{Src: f.Src, Dst: f.Dst, SrcPort: f.SrcPort, DstPort: f.DstPort, Proto: f.Proto}, true
}

// onLink reports whether ip is on a network directly attached to one of the interfaces.
func (d *Datapath) onLink(ip [4]byte) bool {
	a := netip.AddrFrom4(ip)
	for i := range d.Ifaces {
		for _, p := range d.Ifaces[i].Prefixes {
			if p.Contains(a) {
				return true
			}
		}
	}
	return false
}

func (d *Datapath) pass(in int) Verdict {
	d.C.Passed.Add(1)
	return Verdict{Where: ToWire, Iface: in}
}

// opensFlow reports whether a frame may start a new tracked flow: a TCP SYN, any UDP
// datagram, an ICMP echo request. A TCP segment of a connection that predates l2shim is not
// one, so starting the shim never moves (and breaks) an established connection.
func opensFlow(f *rewrite.Frame) bool {
	switch f.Proto {
	case 6:
		return f.TCPFlags&0x12 == 0x02
	case 1:
		return f.ICMPType == 8
	}
	return true
}

func (d *Datapath) egress(in int, f *rewrite.Frame, now int64) Verdict {
	var fl *conntrack.Flow
	key, tracked := flowKey(f)
	switch {
	case tracked:
		fl = d.table.LookupOrig(key)
		if fl != nil && fl.Reset && opensFlow(f) {
			// A new connection on the tuple of one l2shim reset: placed afresh.
			d.table.Delete(fl)
			fl = nil
		}
		if fl == nil {
			// Destinations on directly attached networks are never steered. They never get
			// a flow either, so the check costs only frames without one.
			if d.onLink(f.Dst) {
				return d.pass(in)
			}
			if fl = d.newOutbound(in, f, key, now); fl == nil {
				return d.pass(in)
			}
		}
		if f.MoreFrags {
			d.rememberFragment(f, conntrack.DirOrig, fl.Orig, now)
		}
		gap := now - fl.LastSeen
		d.table.Seen(fl, conntrack.DirOrig, len(f.Buf), f.TCPFlags, now)
		if d.isRetry(f, fl, gap) {
			d.rotate(fl, now)
		}
	case f.FragOff != 0:
		// A later fragment follows its first fragment's flow.
		if fl = d.fragmentFlow(f, conntrack.DirOrig, now); fl == nil {
			return d.pass(in)
		}
	case f.Proto == rewrite.ProtoICMP && f.InnerL4 >= 0 && !d.onLink(f.Dst):
		return d.egressICMPError(in, f)
	default:
		return d.pass(in)
	}
	if fl.Reset {
		d.C.Drops[DropReset].Add(1)
		return Verdict{Where: Drop, Reason: DropReset}
	}
	if fl.Rule >= 0 {
		d.rules.CountPackets(int(fl.Rule), 1, uint64(len(f.Buf)))
	}
	if fl.Drop {
		d.C.Drops[DropRule].Add(1)
		return Verdict{Where: Drop, Reason: DropRule}
	}
	if fl.Gateway < 0 {
		return d.pass(in)
	}
	g := d.Gws[fl.Gateway]
	if !g.HasMAC {
		return d.pass(in)
	}
	if v, replaced := d.fitPath(in, f, g); replaced {
		return v
	}
	if fl.NAT {
		f.SetSrc(fl.Reply.Dst, fl.Reply.DstPort)
		d.C.NATed.Add(1)
	}
	f.SetMACs(d.Ifaces[fl.WireIf].MAC, g.MAC)
	g.PacketsOut.Add(1)
	g.BytesOut.Add(uint64(len(f.Buf)))
	return Verdict{Where: ToWire, Iface: int(fl.WireIf)}
}

// newOutbound decides where a new host flow goes and records it. It returns nil when the flow
// is left to the host (not a flow start, no usable gateway, table full).
func (d *Datapath) newOutbound(in int, f *rewrite.Frame, key conntrack.Key, now int64) *conntrack.Flow {
	fl := conntrack.Flow{
		Orig:           key,
		Origin:         conntrack.Outbound,
		HostIf:         int16(in),
		WireIf:         int16(in),
		Gateway:        -1,
		HostGatewayMAC: f.DstMAC(),
		Rule:           -1,
		Created:        now,
		LastSeen:       now,
	}
	if opensFlow(f) {
		g, decided := d.applyRule(&fl, filters.Out, in, f)
		if y := d.ifaceOwning(key.Src); !decided && y >= 0 && y != in {
			// The host chose the source address of another uplink (a socket bound to it, a
			// port-forward's reply): that uplink's gateway, as per-source routing tables
			// would do, without NAT.
			g = d.firstUsableOn(y)
		}
		if g < 0 && !decided {
			g = failover.Pick(d.cfg.Mode, key.Hash(d.cfg.Seed), d.cands)
		}
		if g >= 0 {
			fl.Gateway = int16(g)
			fl.WireIf = int16(d.Gws[g].Iface)
		}
	} else {
		// Pinned: a segment of a connection l2shim does not know (older than the shim, or
		// forgotten under table pressure) is never given another address. It leaves through
		// the uplink that owns its source address (per-source), else as the host sent it.
		g := -1
		if y := d.ifaceOwning(key.Src); y >= 0 && y != in {
			g = d.firstUsableOn(y)
			if g < 0 {
				g = d.firstResolvedOn(y)
			}
		}
		if g < 0 {
			g = d.gatewayByMAC(in, fl.HostGatewayMAC)
		}
		fl.Gateway = int16(g)
	}
	if !d.mapOnto(&fl) {
		return nil
	}
	p, err := d.table.Insert(fl)
	if err != nil {
		if err == conntrack.ErrFull {
			d.C.TableFull.Add(1)
		}
		return nil
	}
	d.C.NewFlows.Add(1)
	if p.Gateway >= 0 {
		d.Gws[p.Gateway].Flows.Add(1)
		d.Gws[p.Gateway].Live.Add(1)
		if d.health != nil && opensFlow(f) && key.Proto != rewrite.ProtoICMP {
			d.health.Attempt(int(p.Gateway), now)
		}
	}
	return p
}

// mapOnto computes the wire side of flow fl for its gateway (fl.Gateway, -1 for none): the
// interface it leaves through and, when that interface's address is not the flow's source, the
// NAT mapping. It reports false when no free wire tuple exists.
func (d *Datapath) mapOnto(fl *conntrack.Flow) bool {
	key := fl.Orig
	fl.NAT = false
	fl.WireIf = fl.HostIf
	natIP, natPort := key.Src, key.SrcPort
	if fl.Gateway >= 0 {
		fl.WireIf = int16(d.Gws[fl.Gateway].Iface)
		// NAT only when the flow leaves through another uplink than the host chose, from an
		// address that uplink does not have: on the host's own choice of interface, or from
		// one of the uplink's addresses, the host's source stands.
		if wa := d.Ifaces[fl.WireIf].Addr; fl.WireIf != fl.HostIf && !d.ifaceHas(int(fl.WireIf), key.Src) && wa != ([4]byte{}) {
			fl.NAT = true
			natIP = wa
		}
	}
	r := conntrack.Key{Src: key.Dst, Dst: natIP, SrcPort: key.DstPort, DstPort: natPort, Proto: key.Proto}
	if key.Proto == rewrite.ProtoICMP {
		r.SrcPort = natPort
	}
	// conntrack owns every tuple on an external address, the host's un-NATed flows included:
	// whichever flow arrives second with a wire tuple already taken is remapped to a free port
	// (and mapped back on replies), so two flows never share one.
	if d.wireTupleTaken(r, fl) {
		if fl.Gateway < 0 || !d.remapPort(&r, key.Hash(d.cfg.Seed^0x9e3779b97f4a7c15), fl) {
			return false
		}
		fl.NAT = true
	}
	fl.Reply = r
	return true
}

// wireTupleTaken reports whether another flow (not self) or a probe holds wire tuple r.
func (d *Datapath) wireTupleTaken(r conntrack.Key, self *conntrack.Flow) bool {
	if d.probeTaken(r) {
		return true
	}
	other := d.table.LookupReply(r)
	return other != nil && other != self
}

// ifaceOwning returns the interface that has ip as one of its addresses, or -1.
func (d *Datapath) ifaceOwning(ip [4]byte) int {
	for i := range d.Ifaces {
		for _, a := range d.Ifaces[i].Addrs {
			if a == ip {
				return i
			}
		}
	}
	return -1
}

// ifaceHas reports whether ip is one of interface i's addresses.
func (d *Datapath) ifaceHas(i int, ip [4]byte) bool {
	for _, a := range d.Ifaces[i].Addrs {
		if a == ip {
			return true
		}
	}
	return false
}

// firstResolvedOn returns the first gateway on interface i whose MAC is known, usable or not,
// or -1.
func (d *Datapath) firstResolvedOn(i int) int {
	for g := range d.Gws {
		if d.Gws[g].Iface == i && d.Gws[g].HasMAC {
			return g
		}
	}
	return -1
}

// firstUsableOn returns the first usable gateway on interface i in configured order, or -1.
func (d *Datapath) firstUsableOn(i int) int {
	for g := range d.Gws {
		if d.Gws[g].Iface == i && d.cands[g].Usable {
			return g
		}
	}
	return -1
}

// gatewayByMAC returns the gateway on interface i with the given MAC, or -1.
func (d *Datapath) gatewayByMAC(i int, mac [6]byte) int {
	for g, gw := range d.Gws {
		if gw.Iface == i && gw.HasMAC && gw.MAC == mac {
			return g
		}
	}
	return -1
}

// remapPort finds a free port for a NAT mapping whose natural port is taken, starting at a
// point derived from the flow so concurrent collisions spread out.
func (d *Datapath) remapPort(r *conntrack.Key, h uint64, self *conntrack.Flow) bool {
	lo, hi := int(d.cfg.NATPortLo), int(d.cfg.NATPortHi)
	if lo == 0 || hi < lo {
		lo, hi = natPortLo, natPortHi
	}
	span := hi - lo + 1
	start := int(h % uint64(span))
	for i := 0; i < span; i++ {
		port := uint16(lo + (start+i)%span)
		r.DstPort = port
		if r.Proto == 1 {
			r.SrcPort = port
		}
		if !d.wireTupleTaken(*r, self) {
			return true
		}
	}
	return false
}

func (d *Datapath) toHost(in int) Verdict {
	return Verdict{Where: ToHost, Iface: in}
}

func (d *Datapath) ingress(in int, f *rewrite.Frame, now int64) Verdict {
	if d.consumeProbe(f, now) {
		d.C.ProbeReplies.Add(1)
		return Verdict{Where: Consumed}
	}
	key, tracked := flowKey(f)
	if !tracked {
		if f.FragOff != 0 {
			if fl := d.fragmentFlow(f, conntrack.DirReply, now); fl != nil {
				return d.toHostFor(in, f, fl)
			}
		} else if f.Proto == rewrite.ProtoICMP && f.InnerL4 >= 0 {
			return d.ingressICMPError(in, f)
		}
		return d.toHost(in)
	}
	fl := d.table.LookupReply(key)
	if fl != nil && f.MoreFrags {
		d.rememberFragment(f, conntrack.DirReply, fl.Orig, now)
	}
	if fl == nil {
		if v, late := d.lateAnswer(in, f, key, now); late {
			return v
		}
		if !opensFlow(f) || d.table.LookupOrig(key.Reverse()) != nil {
			return d.toHost(in)
		}
		// A flow opened from the wire: remember where it arrived, so the host's replies are
		// recognised as belonging to it and never placed like a new outgoing flow.
		nf := conntrack.Flow{
			Orig:           key.Reverse(),
			Reply:          key,
			Origin:         conntrack.Inbound,
			HostIf:         int16(in),
			WireIf:         int16(in),
			Gateway:        -1,
			HostGatewayMAC: f.SrcMAC(),
			Rule:           -1,
			Created:        now,
			LastSeen:       now,
		}
		g, decided := d.applyRule(&nf, filters.In, in, f)
		switch {
		case decided:
			nf.Gateway = int16(g)
		case d.cfg.SourceAware:
			// Source-aware: the host's side leaves through the gateway the flow came in
			// from, whatever the host's routes say. A flow from a LAN neighbour (no
			// gateway's MAC) stays with the host's routing.
			nf.Gateway = int16(d.gatewayByMAC(in, nf.HostGatewayMAC))
		}
		if nf.Gateway >= 0 {
			nf.WireIf = int16(d.Gws[nf.Gateway].Iface)
		}
		p, err := d.table.Insert(nf)
		if err != nil {
			if err == conntrack.ErrFull {
				d.C.TableFull.Add(1)
			}
			return d.toHost(in)
		}
		d.C.NewFlows.Add(1)
		if p.Gateway >= 0 {
			d.Gws[p.Gateway].Live.Add(1)
		}
		fl = p
	}
	if !fl.Replied && fl.Origin == conntrack.Outbound && fl.Gateway >= 0 && d.health != nil {
		// The first answer (a SYN-ACK, an RST, a datagram) proves the path through the gateway.
		d.health.Success(int(fl.Gateway), fl.Orig.Dst, now)
	}
	if fl.Reset {
		d.C.Drops[DropReset].Add(1)
		return Verdict{Where: Drop, Reason: DropReset}
	}
	trackHostSeq(f, fl)
	d.table.Seen(fl, conntrack.DirReply, len(f.Buf), f.TCPFlags, now)
	return d.toHostFor(in, f, fl)
}

// toHostFor delivers a wire frame of flow fl to the host: reverse-translated when the flow is
// NATed, and on the interface the host used for it.
func (d *Datapath) toHostFor(in int, f *rewrite.Frame, fl *conntrack.Flow) Verdict {
	if fl.Rule >= 0 {
		d.rules.CountPackets(int(fl.Rule), 1, uint64(len(f.Buf)))
	}
	if fl.Drop {
		d.C.Drops[DropRule].Add(1)
		return Verdict{Where: Drop, Reason: DropRule}
	}
	if fl.Gateway >= 0 {
		g := d.Gws[fl.Gateway]
		g.PacketsIn.Add(1)
		g.BytesIn.Add(uint64(len(f.Buf)))
	}
	if !fl.NAT && int(fl.HostIf) == in {
		return d.toHost(in)
	}
	if fl.Gateway >= 0 && f.Proto == rewrite.ProtoTCP && f.TCPFlags&rewrite.TCPSyn != 0 {
		// The SYN-ACK's MSS tells the host how large its segments may be: clamp it to the
		// path the flow is placed on.
		if mtu := d.pathMTU(d.Gws[fl.Gateway]); mtu > 0 && mtu < d.Ifaces[fl.HostIf].MTU {
			f.ClampMSS(uint16(mtu - 40))
		}
	}
	if fl.NAT {
		f.SetDst(fl.Orig.Src, fl.Orig.SrcPort)
		d.C.NATed.Add(1)
	}
	host := int(fl.HostIf)
	f.SetMACs(fl.HostGatewayMAC, d.Ifaces[host].MAC)
	return Verdict{Where: ToHost, Iface: host}
}

// innerKey returns the tuple of the packet an ICMP error quotes, seen from its receiver: the
// quote is a packet that went the other way.
func innerKey(f *rewrite.Frame) (conntrack.Key, bool) {
	switch f.InnerProto {
	case rewrite.ProtoTCP, rewrite.ProtoUDP, rewrite.ProtoICMP:
	default:
		return conntrack.Key{}, false
	}
	return conntrack.Key{Src: f.InnerDst, Dst: f.InnerSrc, SrcPort: f.InnerDstPort, DstPort: f.InnerSrcPort, Proto: f.InnerProto}, true
}

// ingressICMPError translates an ICMP error from the wire about a NATed flow (destination
// unreachable, fragmentation needed, time exceeded): the outer destination and the quoted
// source go back to what the host sent, so its socket learns of the error.
func (d *Datapath) ingressICMPError(in int, f *rewrite.Frame) Verdict {
	k, ok := innerKey(f)
	if !ok {
		return d.toHost(in)
	}
	fl := d.table.LookupReply(k)
	if fl == nil {
		return d.toHost(in)
	}
	if !fl.Replied && fl.Origin == conntrack.Outbound && fl.Gateway >= 0 && d.health != nil && f.Src == fl.Orig.Dst {
		// An unreachable from the destination itself proves the path works.
		d.health.Success(int(fl.Gateway), fl.Orig.Dst, d.lastNow)
	}
	if fl.NAT {
		f.SetInnerSrc(fl.Orig.Src, fl.Orig.SrcPort)
	}
	return d.toHostFor(in, f, fl)
}

// egressICMPError sends the host's own ICMP error about a flow (a port unreachable for a NATed
// flow's datagram, say) the way the flow goes, with the flow's external address outside and in
// the quote.
func (d *Datapath) egressICMPError(in int, f *rewrite.Frame) Verdict {
	k, ok := innerKey(f)
	if !ok {
		return d.pass(in)
	}
	fl := d.table.LookupOrig(k)
	if fl == nil || fl.Gateway < 0 {
		return d.pass(in)
	}
	g := d.Gws[fl.Gateway]
	if !g.HasMAC {
		return d.pass(in)
	}
	if fl.NAT {
		f.SetSrc(fl.Reply.Dst, 0)
		f.SetInnerDst(fl.Reply.Dst, fl.Reply.DstPort)
		d.C.NATed.Add(1)
	}
	f.SetMACs(d.Ifaces[fl.WireIf].MAC, g.MAC)
	return Verdict{Where: ToWire, Iface: int(fl.WireIf)}
}

// fragKey identifies the fragments of one IPv4 datagram in one direction.
type fragKey struct {
	src, dst [4]byte
	id       uint16
	proto    uint8
	dir      uint8
}

type fragEntry struct {
	flow    conntrack.Key // the flow's Orig key
	expires int64
}

// Fragments: the first fragment carries the ports and finds the flow; the others are matched to
// it by source, destination, protocol and IP ID for a short while.
const (
	fragTimeout = int64(5e9)
	maxFrags    = 4096
)

func (d *Datapath) rememberFragment(f *rewrite.Frame, dir uint8, orig conntrack.Key, now int64) {
	if d.frags == nil {
		d.frags = make(map[fragKey]fragEntry, maxFrags)
	}
	k := fragKey{src: f.Src, dst: f.Dst, id: f.IPID, proto: f.Proto, dir: dir}
	if _, ok := d.frags[k]; !ok && len(d.frags) >= maxFrags {
		d.C.FragTableFull.Add(1)
		return
	}
	d.frags[k] = fragEntry{flow: orig, expires: now + fragTimeout}
}

// fragmentFlow returns the flow of a non-first fragment, or nil when its first fragment was
// not seen (it is then left as it is).
func (d *Datapath) fragmentFlow(f *rewrite.Frame, dir uint8, now int64) *conntrack.Flow {
	e, ok := d.frags[fragKey{src: f.Src, dst: f.Dst, id: f.IPID, proto: f.Proto, dir: dir}]
	if !ok || now > e.expires {
		return nil
	}
	fl := d.table.LookupOrig(e.flow)
	if fl != nil {
		d.table.Seen(fl, int(dir), len(f.Buf), 0, now)
	}
	return fl
}

// expireFragments forgets fragment entries past their time.
func (d *Datapath) expireFragments(now int64) {
	for k, e := range d.frags {
		if now > e.expires {
			delete(d.frags, k)
		}
	}
}

// SetRules installs the compiled [[rule]]s; nil means none.
func (d *Datapath) SetRules(rules *filters.Set) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.rules = rules
}

// Rules returns the installed rules (for their counters).
func (d *Datapath) Rules() *filters.Set {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.rules
}

// applyRule evaluates the rules for the first frame of a new flow. It returns the gateway the
// rule places the flow on (-1: the host's routing) and whether a rule decided at all; a drop
// verdict, or a strict route-to whose gateway is unusable, marks the flow dropped. A route-to
// whose gateway is unusable and not strict falls back to the normal choice (decided false).
func (d *Datapath) applyRule(fl *conntrack.Flow, dir filters.Direction, in int, f *rewrite.Frame) (int, bool) {
	if d.rules.Len() == 0 {
		return -1, false
	}
	p := filters.Packet{Iface: in, Dir: dir, Src: f.Src, Dst: f.Dst, Proto: f.Proto}
	if f.Proto == rewrite.ProtoTCP || f.Proto == rewrite.ProtoUDP {
		p.SrcPort, p.DstPort = f.SrcPort, f.DstPort
	}
	v, ok := d.rules.Match(&p)
	if !ok {
		return -1, false
	}
	fl.Rule = int16(v.Rule)
	d.rules.CountFlow(v.Rule)
	switch v.Action {
	case filters.Drop:
		fl.Drop = true
		return -1, true
	case filters.Pass:
		return -1, true
	case filters.RouteTo:
		if d.cands[v.Gateway].Usable {
			return v.Gateway, true
		}
		if v.Strict {
			fl.Drop = true
			return -1, true
		}
	}
	return -1, false
}

// SegmentLocked cuts the super-frame ProcessLocked just answered Segment for into ordinary
// frames, back to back in dst with their lengths in lens, and returns how many (0: dropped and
// counted). SegmentNeedsLocked tells how large dst and lens must be.
func (d *Datapath) SegmentLocked(dst []byte, lens []int) int {
	n := d.frame.SegmentEncap(dst, lens)
	if n == 0 {
		d.C.Drops[DropMalformed].Add(1)
	}
	return n
}

// ReparseLocked parses pkt (virtio-net header and frame) into the datapath's frame again, for
// a caller that had to unlock between ProcessLocked answering Segment and SegmentLocked.
func (d *Datapath) ReparseLocked(pkt []byte) bool {
	return d.vnet.Decode(pkt) && d.frame.Parse(pkt[rewrite.VnetHdrLen:], d.vnet) == rewrite.OK
}

// SegmentNeedsLocked returns the room SegmentLocked needs for the current super-frame: bytes
// and frames.
func (d *Datapath) SegmentNeedsLocked() (bytes, frames int) {
	return d.frame.SegmentEncapSize(), d.frame.SegmentEncapCount()
}
