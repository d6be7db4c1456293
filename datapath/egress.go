package datapath

import (
	"github.com/l2shim/l2shim/conntrack"
	"github.com/l2shim/l2shim/internal/mix"
	"github.com/l2shim/l2shim/rewrite"
)

// egress handles a frame the host sent out of interface in: find or place its flow, then send
// it through the flow's gateway, translated when the flow is NATed.
func (e *Engine) egress(in int, f *rewrite.Frame, b *Batch, now int64) verdict {
	var fl *conntrack.Flow
	var key conntrack.Key
	tracked := flowKey(f, &key)
	switch {
	case tracked:
		var v verdict
		var done bool
		if fl, v, done = e.outboundFlow(in, f, key, now); done {
			return v
		}
	case f.FragOff != 0:
		// A later fragment follows its first fragment's flow.
		if fl = e.fragmentFlow(f, conntrack.DirOrig, now); fl == nil {
			return e.pass(in)
		}
	case f.IsICMPError() && !e.onLink(dst16(f)):
		return e.egressICMPError(in, f)
	default:
		return e.pass(in)
	}
	if v, stop := e.flowGate(fl, f); stop {
		return v
	}
	if fl.Origin == conntrack.Inbound && src16(f) != fl.Orig.Src {
		return e.answerFromAskedAddress(f, fl)
	}
	if fl.Gateway < 0 {
		return e.pass(in)
	}
	g := e.gws[fl.Gateway]
	mac, ok := e.macFor(g, fl.Orig.Src)
	if !ok {
		return e.pass(in)
	}
	fit, replaced := e.fitPath(in, f, g, b)
	if replaced {
		return fit
	}
	if fl.NAT {
		setSrc(f, fl.Reply.Dst, fl.Reply.DstPort)
		e.c.Add(NATed, 1)
	}
	f.SetMACs(e.ifaces[fl.WireIf].MAC, mac)
	g.stats.PacketsOut.Add(1)
	g.stats.BytesOut.Add(uint64(len(f.Buf)))
	return verdict{to: ToWire, iface: int(fl.WireIf), fragMTU: fit.fragMTU}
}

// pass sends a frame out as the host sent it.
func (e *Engine) pass(in int) verdict {
	e.c.Add(Passed, 1)
	return verdict{to: ToWire, iface: in}
}

// outboundFlow returns the flow of a host frame with key, placing a new one when the frame
// may open it, and accounts the frame to it (rotating an unanswered flow whose request is
// repeated too often). Without a flow (done) v says where the frame goes: as the host sent
// it, dropped (a rule forbids that and the table had no room for the flow), or the way an
// untracked flow from the wire came.
func (e *Engine) outboundFlow(in int, f *rewrite.Frame, key conntrack.Key, now int64) (fl *conntrack.Flow, v verdict, done bool) {
	fl = e.table.LookupOrig(key)
	if fl != nil && fl.Reset && opensFlow(f) {
		// A new connection on the tuple of one l2shim reset: placed afresh.
		e.table.Delete(fl)
		fl = nil
	}
	if fl == nil {
		// Destinations on directly attached networks are never steered. They never get a
		// flow either, so the check costs only frames without one.
		if e.onLink(key.Dst) {
			return nil, e.pass(in), true
		}
		if g, refused := e.inbound.refusedAnswer(key.Hash(e.opts.Seed)); refused {
			// The host answers a flow from the wire that was over its share of the table.
			return nil, e.sendVia(in, f, int(g)), true
		}
		fl = e.askedAddressFlow(key)
	}
	if fl == nil && (f.HasTCPFlag(rewrite.TCPRst) || f.IsTCPSynAck()) {
		// The host refuses or accepts a connection l2shim does not track (one from the wire
		// over its share of the table, or older than l2shim): no flow is worth keeping for
		// that, and under a SYN flood there would be one per spoofed SYN. It leaves the way
		// a segment of such a connection does.
		return nil, e.sendVia(in, f, e.pin(in, key, f.DstMAC())), true
	}
	if fl == nil {
		var failClosed bool
		if fl, failClosed = e.newOutbound(in, f, key, now); fl == nil {
			if failClosed {
				return nil, verdict{to: Drop, reason: DropRule}, true
			}
			return nil, e.pass(in), true
		}
	}
	if f.MoreFrags {
		e.rememberFragment(f, conntrack.DirOrig, fl.Orig, now)
	}
	if (f.HasTCPFlag(rewrite.TCPSyn) || f.HasTCPFlag(rewrite.TCPRst)) && fl.TCPState != conntrack.TCPClosed {
		// The kernel may have carried the connection's close since the last sync: a SYN
		// after it opens a new connection on the tuple. (Known closed already, the old
		// connection's entries have nothing more to tell: a client reusing the port of a
		// connection synced closed costs no lookups.)
		e.refreshFromKernel(fl)
	}
	gap := now - fl.LastSeen
	// A SYN on a closed connection's tuple opens a new one: entries it keeps are replaced,
	// so the old connection's FIN marks and counts are not taken for the new one's.
	reopens := fl.TCPState == conntrack.TCPClosed && f.IsTCPSyn()
	e.table.Seen(fl, conntrack.DirOrig, len(f.Buf), f.TCPFlags, now)
	trackHostTCP(f, fl)
	if reopens {
		e.fastReopened(fl)
	}
	if fl.Fast != fastWant(fl) || reopens && fl.Fast == conntrack.FastCarry {
		e.markFast(fl)
	}
	if e.isRetry(f, fl, gap) {
		e.rotate(fl, now)
	}
	return fl, verdict{}, false
}

// sendVia sends a frame without a flow through gateway g as it is but for its MACs (source-
// aware routing for an untracked flow from the wire: its answers leave the way it came), or as
// the host sent it when g is -1 or cannot be reached.
func (e *Engine) sendVia(in int, f *rewrite.Frame, g int) verdict {
	if g < 0 || g >= len(e.gws) {
		return e.pass(in)
	}
	gw, src := e.gws[g], src16(f)
	mac, ok := e.macFor(gw, src)
	if !ok || !e.ifaces[gw.Iface].hasAddr(src) {
		return e.pass(in)
	}
	f.SetMACs(e.ifaces[gw.Iface].MAC, mac)
	return verdict{to: ToWire, iface: gw.Iface}
}

// askedAddressFlow returns the inbound UDP flow a host datagram with key answers from another
// local address than the client asked: a server bound to the wildcard address, whose source
// the host's routing picks. nil when there is none.
func (e *Engine) askedAddressFlow(key conntrack.Key) *conntrack.Flow {
	if key.Proto != rewrite.ProtoUDP {
		return nil
	}
	if !conntrack.Is4(key.Src) {
		return e.askedAddressFlow6(key)
	}
	for i := range e.ifaces {
		for _, a := range e.ifaces[i].Addrs {
			if conntrack.Addr4(a) == key.Src {
				continue
			}
			asked := key
			asked.Src = conntrack.Addr4(a)
			if fl := e.table.LookupOrig(asked); fl != nil && fl.Origin == conntrack.Inbound {
				return fl
			}
		}
	}
	return nil
}

// askedAddressFlow6 is askedAddressFlow for an IPv6 datagram: the interfaces' IPv6 addresses.
func (e *Engine) askedAddressFlow6(key conntrack.Key) *conntrack.Flow {
	for i := range e.ifaces {
		for _, a := range e.ifaces[i].Addrs6 {
			if a == key.Src {
				continue
			}
			asked := key
			asked.Src = a
			if fl := e.table.LookupOrig(asked); fl != nil && fl.Origin == conntrack.Inbound {
				return fl
			}
		}
	}
	return nil
}

// answerFromAskedAddress sends a wildcard-bound server's answer the way its request came, from
// the address the client asked (a client with a connected socket discards anything else). The
// client's next datagrams reach that address as before, and the host's socket gets them.
func (e *Engine) answerFromAskedAddress(f *rewrite.Frame, fl *conntrack.Flow) verdict {
	setSrc(f, fl.Orig.Src, fl.Orig.SrcPort)
	e.c.Add(NATed, 1)
	out, mac := int(fl.HostIf), fl.HostGatewayMAC
	if fl.Gateway >= 0 {
		if gm, ok := e.macFor(e.gws[fl.Gateway], fl.Orig.Src); ok {
			g := e.gws[fl.Gateway]
			out, mac = g.Iface, gm
			g.stats.PacketsOut.Add(1)
			g.stats.BytesOut.Add(uint64(len(f.Buf)))
		}
	}
	f.SetMACs(e.ifaces[out].MAC, mac)
	return verdict{to: ToWire, iface: out}
}

// flowGate applies what the flow's state says about a frame the host sent: a flow l2shim
// reset drops its frames, and a rule counts them and may drop them.
func (e *Engine) flowGate(fl *conntrack.Flow, f *rewrite.Frame) (verdict, bool) {
	if fl.Reset {
		return verdict{to: Drop, reason: DropReset}, true
	}
	return e.ruleGate(fl, f)
}

// ruleGate counts a frame of a flow a rule decided, either way, and drops it when the rule
// drops the flow.
func (e *Engine) ruleGate(fl *conntrack.Flow, f *rewrite.Frame) (verdict, bool) {
	if fl.Rule >= 0 {
		e.rules.CountPackets(int(fl.Rule), 1, uint64(len(f.Buf)))
	}
	if fl.Drop {
		return verdict{to: Drop, reason: DropRule}, true
	}
	return verdict{}, false
}

// newOutbound decides where a new host flow goes and records it. It returns nil when the flow
// is left to the host (no free tuple, table full), or, with failClosed, dropped: the table is
// full and a rule forbids the host's routing for it (drop, strict route-to).
func (e *Engine) newOutbound(in int, f *rewrite.Frame, key conntrack.Key, now int64) (*conntrack.Flow, bool) {
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
	opens := opensFlow(f)
	if opens {
		fl.Gateway = int16(e.place(&fl, in, f))
	} else {
		fl.Gateway = int16(e.pin(in, key, fl.HostGatewayMAC))
		fl.Why = uint8(ReasonPinned)
	}
	if !e.mapOnto(&fl) {
		return nil, e.rules.FailsClosed(int(fl.Rule))
	}
	p := e.insert(fl)
	if p == nil {
		return nil, e.rules.FailsClosed(int(fl.Rule))
	}
	if p.Gateway >= 0 {
		e.gws[p.Gateway].stats.Placed.Add(1)
		if opens && !isEchoProto(key.Proto) {
			if e.health != nil {
				e.health.Attempt(int(p.Gateway), now)
			}
			e.noteAttempt(p, now)
		}
	}
	return p, false
}

// insert enters a new flow into the table and counts it, or counts why it could not.
func (e *Engine) insert(fl conntrack.Flow) *conntrack.Flow {
	p, err := e.table.Insert(fl)
	if err != nil {
		if err == conntrack.ErrFull {
			e.c.Add(TableFull, 1)
		}
		return nil
	}
	e.c.Add(FlowsCreated, 1)
	if p.Gateway >= 0 {
		e.gws[p.Gateway].stats.Live.Add(1)
	}
	return p
}

// place decides the gateway of a new host flow, first match wins: a rule; the uplink whose
// address the host chose as source when that is not the interface it sent on (a socket bound
// to it, a port-forward's reply: what per-source routing tables would do, without NAT); the
// mode's choice among usable gateways. -1 leaves the flow to the host's routing.
func (e *Engine) place(fl *conntrack.Flow, in int, f *rewrite.Frame) int {
	g := e.decide(fl, in, f, nil)
	if fl.Rule >= 0 {
		e.rules.CountFlow(int(fl.Rule))
	}
	return g
}

// pin decides the gateway of a segment of a connection l2shim does not know (older than the
// shim, or forgotten under table pressure). It is never given another address: it leaves
// through the uplink that owns its source address (per-source), else as the host sent it.
func (e *Engine) pin(in int, key conntrack.Key, hostGatewayMAC [6]byte) int {
	if y := e.ifaceOwning(key.Src); y >= 0 && y != in {
		if g := e.firstUsableOn(y, key.Src); g >= 0 {
			return g
		}
		if g := e.firstResolvedOn(y, key.Src); g >= 0 {
			return g
		}
	}
	return e.gatewayByMAC(in, hostGatewayMAC, key.Src)
}

// mapOnto computes the wire side of flow fl for its gateway (fl.Gateway, -1 for none): the
// interface it leaves through and, when that interface's address is not the flow's source, the
// NAT mapping. It reports false when no free wire tuple exists.
func (e *Engine) mapOnto(fl *conntrack.Flow) bool {
	key := fl.Orig
	fl.NAT = false
	fl.WireIf = fl.HostIf
	natIP, natPort := key.Src, key.SrcPort
	if fl.Gateway >= 0 {
		fl.WireIf = int16(e.gws[fl.Gateway].Iface)
		// NAT only when the flow leaves through another uplink than the host chose, from an
		// address that uplink does not have: on the host's own choice of interface, or from
		// one of the uplink's addresses, the host's source stands.
		// IPv6 (NAT66) follows the same rules with the interface's Addr6, port-preserving.
		wire := &e.ifaces[fl.WireIf]
		if fl.WireIf != fl.HostIf && !wire.hasAddr(key.Src) {
			if a := wire.natAddr(key.Src); a != ([16]byte{}) {
				fl.NAT = true
				natIP = a
			}
		}
	}
	r := conntrack.Key{Src: key.Dst, Dst: natIP, SrcPort: key.DstPort, DstPort: natPort, Proto: key.Proto}
	if isEchoProto(key.Proto) {
		r.SrcPort = natPort
	}
	// conntrack owns every tuple on an external address, the host's un-NATed flows included:
	// whichever flow arrives second with a wire tuple already taken is remapped to a free port
	// (and mapped back on replies), so two flows never share one.
	if e.wireTupleTaken(r, fl) {
		if fl.Gateway < 0 || !e.remapPort(&r, key.Hash(e.opts.Seed^mix.Golden), fl) {
			return false
		}
		fl.NAT = true
	}
	fl.Reply = r
	return true
}

// wireTupleTaken reports whether another flow (not self) or a probe holds wire tuple r.
func (e *Engine) wireTupleTaken(r conntrack.Key, self *conntrack.Flow) bool {
	if e.probeTaken(r) {
		return true
	}
	other := e.table.LookupReply(r)
	return other != nil && other != self
}

// remapPort finds a free port for a NAT mapping whose natural port is taken, starting at a
// point derived from the flow so concurrent collisions spread out.
func (e *Engine) remapPort(r *conntrack.Key, h uint64, self *conntrack.Flow) bool {
	lo, hi := int(e.opts.NATPortLo), int(e.opts.NATPortHi)
	if lo == 0 || hi < lo {
		lo, hi = natPortLo, natPortHi
	}
	span := hi - lo + 1
	start := int(h % uint64(span))
	for i := 0; i < span; i++ {
		port := uint16(lo + (start+i)%span)
		r.DstPort = port
		if isEchoProto(r.Proto) {
			r.SrcPort = port
		}
		if !e.wireTupleTaken(*r, self) {
			return true
		}
	}
	return false
}

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

// fitPath makes an egress frame of a flow placed on gateway g fit the path's MTU when it is
// smaller than the MTU of the interface the host chose: the MSS of a SYN is clamped, a GSO
// frame's segment size lowered, an oversized DF frame answered with an ICMP
// fragmentation-needed to the host (the kernel gives it no such signal for a frame the shim
// sends), and an oversized IPv4 datagram without DF marked to go out in fragments (fragMTU),
// as a router on the path would cut it. It returns a verdict when the frame was replaced by
// that answer.
func (e *Engine) fitPath(in int, f *rewrite.Frame, g *gateway, b *Batch) (verdict, bool) {
	mtu := e.pathMTU(g)
	if mtu <= 0 || mtu >= e.ifaces[in].MTU {
		return verdict{}, false
	}
	if f.HasTCPFlag(rewrite.TCPSyn) {
		f.ClampMSS(uint16(mtu - tcpHdrLen(f)))
	}
	if f.Vnet.IsGSO() {
		f.FitGSO(mtu)
		return verdict{}, false
	}
	if f.End-f.L3 <= mtu {
		return verdict{}, false
	}
	if !f.DontFrag {
		return verdict{fragMTU: mtu}, false
	}
	buf := answerBuf(b)
	n := 0
	if buf != nil && f.IPv6 {
		// IPv6 routers never fragment (DontFrag is always set): a Packet Too Big. The IPv6
		// router's own address is not known, and one of the host's addresses as the source
		// would fail a reverse-path filter (firewalld's IPv6 rpfilter): it comes from the
		// destination, which the host routes through the interface the answer arrives on.
		n = f.BuildPacketTooBig(buf[rewrite.VnetHdrLen:], uint32(mtu), f.Dst6)
	} else if buf != nil {
		from := g.IP
		if from == ([4]byte{}) {
			from = e.ifaces[g.Iface].Addr // an L3 link's gateway without an address
		}
		n = f.BuildFragNeeded(buf[rewrite.VnetHdrLen:], uint16(mtu), from)
	}
	if n == 0 {
		return verdict{to: Drop, reason: DropTooBig}, true
	}
	return verdict{to: ToHost, iface: in, reason: DropTooBig, answer: answer(b, n)}, true
}
