package datapath

import (
	"github.com/l2shim/l2shim/conntrack"
	"github.com/l2shim/l2shim/rewrite"
)

// The kernel's fast path carries a flow once it is confirmed: its frames never reach user
// space. The engine decides which flows it carries and how; the shim installs what the engine
// says in the kernel's flow maps (FastChanges) and reports back what the kernel counted
// (FastCounts). Every change to a carried flow (moved, reset, remapped, its gateway's MAC or
// its interface changed, removed) queues it again, so its entries follow or go.

// FastKey is a flow's tuple as frames carry it in one direction.
type FastKey = conntrack.Key

// FastEntry says what the kernel does with a flow's frames in one direction: the interface
// they leave through (out) or enter the host on (in), the rewritten address and port (out:
// source, in: destination), the MACs, and the MTU of the path out (0: no check).
type FastEntry struct {
	Ifindex int
	NAT     bool
	Addr    [16]byte // as a flow key holds it (IPv4-mapped for IPv4)
	Port    uint16
	MTU     int
	SrcMAC  [6]byte
	DstMAC  [6]byte
	// Orig identifies the flow the entry belongs to (its host-side tuple), for the counts.
	Orig FastKey
	// What a later l2shim needs to adopt the flow (see AdoptFast).
	Origin, Why uint8
	Rule        int16
	Gateway     [16]byte // the gateway's address as a flow key holds it, zero for none
	// DivertOnly (in entries): a flow of the host's, not confirmed yet. Its answers reach
	// user space through the host's capture queue, never behind a flood from the wire.
	DivertOnly bool
	// CarrySYNACK (in entries of a connection the host opens): the kernel carries the peer's
	// SYN-ACK too; user space has no MSS to clamp in it, and learns of it from the counts.
	CarrySYNACK bool
	// ToL3: Ifindex is an L3 device; the frame leaves it without the MACs.
	ToL3 bool
}

// FastOp is one change to the kernel's flow maps.
type FastOp struct {
	Delete bool
	In     bool // the wire → host map; otherwise host → wire
	Key    FastKey
	Entry  FastEntry // when not Delete
	// Tally, when valid, says the op removes or replaces an entry the engine counts from: the
	// shim reads the entry's counts first and hands what is new to FastFinal, so the frames a
	// flow sent since the last sync are not lost when it ends, moves or changes.
	Tally FastTally
}

// FastTally is what the engine counted from an entry so far, and where the rest belongs.
type FastTally struct {
	Valid          bool
	Orig           FastKey // the flow
	Gateway, Rule  int16
	Packets, Bytes uint64 // counted already
}

// FastTracker reads what the kernel's fast path saw of a TCP flow it carries, by its out and
// in entries. The engine asks when a segment it handles (an RST from the wire, a new SYN from
// the host on the tuple) or a reset it builds must be judged against what the kernel carried
// since the last sync: the host's sequence space, and the FINs that closed the connection.
type FastTracker interface {
	TCP(orig, reply FastKey) (out, in KernelTCP)
}

// KernelTCP is what the fast path saw of one direction of a TCP flow it carries.
type KernelTCP struct {
	OK bool // the entry is there and carried a frame
	// FIN: it carried a FIN. Out: SeqEnd, Ack and Win are what the host's last carried
	// segment said (the sequence number after it, its acknowledgment, its unscaled window).
	// In, with FIN: SeqEnd is the sequence number after the wire's FIN.
	FIN         bool
	SeqEnd, Ack uint32
	Win         uint16
}

// refreshFromKernel brings what the kernel carried of TCP flow fl since the last sync into
// fl: the host's sequence space, the handshake's end and the FINs (kernelTCP). e.mu is held.
func (e *Engine) refreshFromKernel(fl *conntrack.Flow) {
	if fl.Fast != conntrack.FastCarry || e.opts.Tracker == nil || fl.Orig.Proto != rewrite.ProtoTCP {
		return
	}
	if st := e.fast[fl.Orig]; st == nil || st.reopened {
		return
	}
	out, in := e.opts.Tracker.TCP(fl.Orig, fl.Reply)
	e.kernelTCP(fl, out, conntrack.DirOrig)
	e.kernelTCP(fl, in, conntrack.DirReply)
}

// kernelTCP brings what the kernel saw of direction dir of TCP flow fl into fl: the host's
// sequence space (the out entry), and the FINs the kernel carried. The host's FIN is its own
// word; the wire's counts once the host's acknowledgment is exactly where it ends, so a forged
// one the host would not accept closes nothing. A FIN moves only a connection past its handshake: an entry
// a new connection on the tuple has not replaced yet still holds the old one's. Call it for
// the out direction first. e.mu is held.
func (e *Engine) kernelTCP(fl *conntrack.Flow, k KernelTCP, dir int) {
	if !k.OK {
		return
	}
	if replied := fl.Replied; fl.TCPState == conntrack.TCPSynSent || fl.TCPState == conntrack.TCPSynRecv {
		// The entry carried a frame: the SYN-ACK in, the host's ACK out.
		e.table.Carried(fl, dir)
		if !replied && fl.Replied {
			e.answered(fl, fl.LastSeen)
		}
	}
	if dir == conntrack.DirOrig {
		if seqBefore(fl.HostSndNext, k.SeqEnd) {
			fl.HostSndNext = k.SeqEnd
		}
		if fl.HostAck == 0 || seqBefore(fl.HostAck, k.Ack) {
			fl.HostAck = k.Ack
		}
		if fl.HostRcvNext == 0 || seqBefore(fl.HostRcvNext, k.Ack) {
			fl.HostRcvNext = k.Ack
		}
		fl.HostWin = max(uint32(k.Win)<<fl.HostWScale, minWindow)
	}
	if !k.FIN || fl.TCPState != conntrack.TCPEstablished && fl.TCPState != conntrack.TCPClosing {
		return
	}
	// Nothing follows a FIN in the peer's sequence space, so the host's acknowledgment of the
	// real one is exactly where it ends: a forged FIN behind it (old data) counts no more
	// than one ahead of it, which the host does not take.
	if dir == conntrack.DirReply && (!fl.HostKnown || fl.HostAck != k.SeqEnd) {
		return
	}
	e.table.FIN(fl, dir)
}

// fastReopened records that a new TCP connection opens on carried flow fl's tuple: until its
// entries are replaced, what the kernel reports of them is the old connection's. e.mu is held.
func (e *Engine) fastReopened(fl *conntrack.Flow) {
	if st := e.fast[fl.Orig]; st != nil {
		st.reopened = true
	}
}

// answered records that the kernel carried the first answer to fl: for a flow the host opened,
// it proves the path through its gateway (as the slow path's first answer does). e.mu is held.
func (e *Engine) answered(fl *conntrack.Flow, now int64) {
	if fl.Origin == conntrack.Outbound && fl.Gateway >= 0 && e.health != nil {
		e.health.Success(int(fl.Gateway), healthDst(fl.Orig.Dst), now)
	}
}

// fastState is what the engine remembers about a flow the fast path carries.
type fastState struct {
	// counted are the kernel's counts already added to the flow, by direction (the kernel
	// counts from the entry's installation).
	counted [2]struct{ packets, bytes uint64 }
	// reopened: a new TCP connection on the tuple replaces the entries; until it has, what
	// they say (their FIN marks, that they carried frames) is the old connection's.
	reopened bool
}

// markFast queues fl to be (re)considered for the fast path. e.mu is held.
func (e *Engine) markFast(fl *conntrack.Flow) {
	if !e.opts.FastPath || fl == nil {
		return
	}
	if fl.Fast == conntrack.FastNone && fastWant(fl) == conntrack.FastNone {
		return
	}
	if e.fastDirty == nil {
		e.fastDirty = make(map[conntrack.Key]struct{})
	}
	e.fastDirty[fl.Orig] = struct{}{}
	e.fastPending.Store(true)
}

// FastPending reports, without the lock, whether FastChanges has anything to say.
func (e *Engine) FastPending() bool { return e.fastPending.Load() }

// markFastAll queues every carried flow match selects. e.mu is held.
func (e *Engine) markFastAll(match func(*conntrack.Flow) bool) {
	if !e.opts.FastPath || len(e.fast) == 0 {
		return
	}
	for orig := range e.fast {
		if fl := e.table.LookupOrig(orig); fl != nil && match(fl) {
			e.markFast(fl)
		}
	}
}

// fastGone queues the removal of a carried flow's entries: both when it left the table, its in
// entry (keyed reply) when its wire tuple changed. gw is the gateway the entries counted for.
// e.mu is held.
func (e *Engine) fastGone(fl *conntrack.Flow, reply conntrack.Key, both bool, gw int16) {
	if both {
		e.fastDel = append(e.fastDel, FastOp{Delete: true, Key: fl.Orig, Tally: e.tally(fl, conntrack.DirOrig, gw)})
		delete(e.fast, fl.Orig)
	}
	e.fastDel = append(e.fastDel, FastOp{Delete: true, In: true, Key: reply, Tally: e.tally(fl, conntrack.DirReply, gw)})
	e.fastPending.Store(true)
}

// tally returns what the engine counted from fl's entry in direction dir (invalid when it
// counts none). e.mu is held.
func (e *Engine) tally(fl *conntrack.Flow, dir int, gw int16) FastTally {
	st, ok := e.fast[fl.Orig]
	if !ok {
		return FastTally{}
	}
	c := st.counted[dir]
	return FastTally{Valid: true, Orig: fl.Orig, Gateway: gw, Rule: fl.Rule, Packets: c.packets, Bytes: c.bytes}
}

// fastWant returns what the kernel's maps should hold for fl now.
func fastWant(fl *conntrack.Flow) conntrack.FastState {
	switch {
	case fastCandidate(fl):
		return conntrack.FastCarry
	case fl.Origin == conntrack.Outbound && !fl.Replied && fl.Gateway >= 0 && !fl.Reset && !fl.Drop:
		return conntrack.FastDivert
	}
	return conntrack.FastNone
}

// fastCandidate reports whether a flow's state lets the kernel carry it: confirmed (a UDP or
// ICMP reply seen; a TCP connection the host opens from its SYN on, one from the wire once its
// handshake completed) and nothing pending that needs user space. A TCP connection stays
// carried while it closes with FINs (the kernel marks them in the entries, user space reads
// them at the next sync); an RST ends it.
//
// A connection the host opens from its SYN on, placed: its entries are in the kernel before
// the SYN leaves, so the peer's SYN-ACK (when it needs no MSS clamping: CarrySYNACK), the
// host's ACK completing the handshake and its first request never cross user space; the
// counts tell user space it was answered (conntrack's Touch). The host's own SYNs (a retry
// that may rotate the connection) and RSTs still do. Not for inbound connections, whose
// SYN-ACK the host sends to whatever source a SYN claimed (a spoofed SYN flood would fill the
// maps).
func fastCandidate(fl *conntrack.Flow) bool {
	if fl.Reset || fl.Drop {
		return false
	}
	switch fl.Orig.Proto {
	case rewrite.ProtoTCP:
		if !fl.Replied {
			return fl.Origin == conntrack.Outbound && fl.TCPState == conntrack.TCPSynSent && fl.Gateway >= 0
		}
		switch fl.TCPState {
		case conntrack.TCPSynRecv:
			return fl.Origin == conntrack.Outbound
		case conntrack.TCPEstablished, conntrack.TCPClosing:
			return true
		case conntrack.TCPClosed:
			return !fl.ClosedByReset()
		}
		return false
	case rewrite.ProtoUDP, rewrite.ProtoICMP, rewrite.ProtoICMPv6:
		return fl.Replied
	}
	return false
}

// fastEntries computes a flow's entries, and whether the kernel may carry it now.
func (e *Engine) fastEntries(fl *conntrack.Flow) (out, in FastEntry, ok bool) {
	if !fastCandidate(fl) || int(fl.HostIf) >= len(e.ifaces) || int(fl.WireIf) >= len(e.ifaces) {
		return out, in, false
	}
	host, wire := &e.ifaces[fl.HostIf], &e.ifaces[fl.WireIf]
	if !host.Up || !wire.Up || host.Index <= 0 || wire.Index <= 0 {
		return out, in, false
	}
	gwMAC := fl.HostGatewayMAC
	mtu := 0
	var gwIP [16]byte
	if fl.Gateway >= 0 {
		g := e.gws[fl.Gateway]
		mac, ok := e.macFor(g, fl.Orig.Src)
		if !ok {
			return out, in, false
		}
		gwMAC = mac
		// An IPv4 flow names its gateway by address for a later l2shim to adopt it; an
		// IPv6 one by the router's MAC (adoptGateway).
		if g.IP != ([4]byte{}) && fl.Orig.Is4() {
			gwIP = conntrack.Addr4(g.IP)
		}
		if m := e.pathMTU(g); m > 0 && m < host.MTU {
			mtu = m
		}
	} else if fl.NAT || fl.WireIf != fl.HostIf {
		return out, in, false
	}
	out = FastEntry{Orig: fl.Orig, Ifindex: wire.Index, ToL3: wire.L3, MTU: mtu, SrcMAC: wire.MAC, DstMAC: gwMAC, Origin: uint8(fl.Origin), Why: fl.Why, Rule: fl.Rule, Gateway: gwIP}
	in = FastEntry{Orig: fl.Orig, Ifindex: host.Index, ToL3: host.L3, SrcMAC: fl.HostGatewayMAC, DstMAC: host.MAC, Origin: uint8(fl.Origin), Why: fl.Why, Rule: fl.Rule, Gateway: gwIP}
	// The SYN-ACK's MSS is clamped to a path narrower than the host's link (toHostFor): only
	// user space does that.
	in.CarrySYNACK = fl.Orig.Proto == rewrite.ProtoTCP && fl.Origin == conntrack.Outbound && mtu == 0
	if fl.NAT {
		out.NAT, out.Addr, out.Port = true, fl.Reply.Dst, fl.Reply.DstPort
		in.NAT, in.Addr, in.Port = true, fl.Orig.Src, fl.Orig.SrcPort
	}
	return out, in, true
}

// FastChanges appends to ops the changes the kernel's flow maps need now, and forgets them:
// entries to install or replace for flows that became (or stay, changed) fast, and entries to
// remove. Removals come first, so a flow whose wire tuple changed never has two in entries.
func (e *Engine) FastChanges(ops []FastOp) []FastOp {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.fastPending.Store(false)
	ops = append(ops, e.fastDel...)
	e.fastDel = e.fastDel[:0]
	for orig := range e.fastDirty {
		delete(e.fastDirty, orig)
		fl := e.table.LookupOrig(orig)
		if fl == nil {
			continue // removed: its entries are in fastDel already
		}
		out, in, ok := e.fastEntries(fl)
		switch {
		case !ok && fastWant(fl) == conntrack.FastDivert && int(fl.HostIf) < len(e.ifaces) && e.ifaces[fl.HostIf].Index > 0:
			in := FastOp{In: true, Key: fl.Reply, Entry: FastEntry{Orig: fl.Orig, Ifindex: e.ifaces[fl.HostIf].Index, DivertOnly: true}}
			if fl.Fast == conntrack.FastCarry {
				// A new connection on the tuple of a carried one: its out entry goes.
				in.Tally = e.tally(fl, conntrack.DirReply, fl.Gateway)
				ops = append(ops, FastOp{Delete: true, Key: fl.Orig, Tally: e.tally(fl, conntrack.DirOrig, fl.Gateway)})
				delete(e.fast, fl.Orig)
			}
			ops = append(ops, in)
			fl.Fast = conntrack.FastDivert
		case ok:
			if fl.Fast == conntrack.FastCarry {
				// The entries about to be replaced may hold FINs the kernel carried since
				// the last sync: read them now, or the close would never be seen.
				e.refreshFromKernel(fl)
			}
			ops = append(ops, FastOp{Key: fl.Orig, Entry: out, Tally: e.tally(fl, conntrack.DirOrig, fl.Gateway)},
				FastOp{In: true, Key: fl.Reply, Entry: in, Tally: e.tally(fl, conntrack.DirReply, fl.Gateway)})
			if e.fast == nil {
				e.fast = make(map[conntrack.Key]*fastState)
			}
			// A replaced entry counts afresh.
			e.fast[fl.Orig] = &fastState{}
			fl.Fast = conntrack.FastCarry
		case fl.Fast != conntrack.FastNone:
			if fl.Fast == conntrack.FastCarry {
				e.refreshFromKernel(fl) // as above: the entries go
				ops = append(ops, FastOp{Delete: true, Key: fl.Orig, Tally: e.tally(fl, conntrack.DirOrig, fl.Gateway)},
					FastOp{Delete: true, In: true, Key: fl.Reply, Tally: e.tally(fl, conntrack.DirReply, fl.Gateway)})
				delete(e.fast, fl.Orig)
			} else {
				ops = append(ops, FastOp{Delete: true, In: true, Key: fl.Reply})
			}
			fl.Fast = conntrack.FastNone
		}
	}
	return ops
}

// FastCount is what the kernel counted for one entry since it was installed.
type FastCount struct {
	Orig           FastKey
	In             bool
	Packets, Bytes uint64
	LastSeen       int64     // the engine's clock; 0: no frame yet
	TCP            KernelTCP // a TCP flow's (OK: read)
}

// FastCounts adds what the kernel counted to the flows, their gateways and rules, and moves
// their idle clocks, so status, metrics and expiry see every frame whichever path it took; and
// closes the TCP connections whose FINs the kernel carried (kernelTCP).
func (e *Engine) FastCounts(counts []FastCount) {
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, c := range counts {
		st, ok := e.fast[c.Orig]
		if !ok || st.reopened {
			continue
		}
		fl := e.table.LookupOrig(c.Orig)
		if fl == nil {
			continue
		}
		dir := conntrack.DirOrig
		if c.In {
			dir = conntrack.DirReply
		}
		done := &st.counted[dir]
		if c.Packets < done.packets || c.Bytes < done.bytes {
			// The entry was replaced under us: count from zero.
			done.packets, done.bytes = 0, 0
		}
		dp, db := c.Packets-done.packets, c.Bytes-done.bytes
		done.packets, done.bytes = c.Packets, c.Bytes
		if dp != 0 || db != 0 {
			replied := fl.Replied
			e.table.Touch(fl, dir, dp, db, c.LastSeen)
			e.credit(fl.Gateway, fl.Rule, c.In, dp, db)
			if !replied && fl.Replied {
				e.answered(fl, c.LastSeen)
			}
		}
		if fl.Orig.Proto == rewrite.ProtoTCP {
			e.kernelTCP(fl, c.TCP, dir)
		}
	}
}

// credit adds frames the kernel carried to their gateway's, rule's and the engine's counts.
// e.mu is held.
func (e *Engine) credit(gw, rule int16, in bool, packets, bytes uint64) {
	if gw >= 0 && int(gw) < len(e.gws) {
		gs := e.gws[gw].stats
		if in {
			gs.PacketsIn.Add(packets)
			gs.BytesIn.Add(bytes)
		} else {
			gs.PacketsOut.Add(packets)
			gs.BytesOut.Add(bytes)
		}
	}
	if rule >= 0 {
		e.rules.CountPackets(int(rule), packets, bytes)
	}
	if in {
		e.c.Add(FastIn, packets)
	} else {
		e.c.Add(FastOut, packets)
	}
}

// FastFinal is what the kernel had counted on an entry when an op with a valid Tally removed
// or replaced it.
type FastFinal struct {
	Tally          FastTally
	In             bool
	Packets, Bytes uint64
	LastSeen       int64 // the engine's clock
}

// FastFinals credits what the kernel counted on removed or replaced entries since the engine's
// last look: to the flow when it is still in the table, and to its gateway and rule.
func (e *Engine) FastFinals(finals []FastFinal) {
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, f := range finals {
		if f.Packets <= f.Tally.Packets || f.Bytes < f.Tally.Bytes {
			continue
		}
		dp, db := f.Packets-f.Tally.Packets, f.Bytes-f.Tally.Bytes
		if fl := e.table.LookupOrig(f.Tally.Orig); fl != nil {
			dir := conntrack.DirOrig
			if f.In {
				dir = conntrack.DirReply
			}
			e.table.Touch(fl, dir, dp, db, f.LastSeen)
		}
		e.credit(f.Tally.Gateway, f.Tally.Rule, f.In, dp, db)
	}
}

// AdoptedFlow is a flow an earlier l2shim left in the kernel's fast path: its two entries as
// installed, and what the kernel last saw of the host's side of a TCP flow.
type AdoptedFlow struct {
	Orig, Reply FastKey
	Out, In     FastEntry // Ifindex as installed; the other fields as FastChanges made them
	Origin, Why uint8
	Rule        int16
	HostSeqEnd  uint32
	HostAck     uint32
	HostWin     uint16
}

// adoptGateway returns the gateway on interface wire that an adopted out entry goes to, by
// its address (or, for an entry without one, its MAC), or -1. A gateway whose MAC this l2shim
// has not resolved yet takes the one the earlier l2shim had: the kernel uses it this moment.
// e.mu is held.
func (e *Engine) adoptGateway(wire int, out FastEntry) int {
	if out.Gateway == ([16]byte{}) {
		if g := e.gatewayByMAC(wire, out.DstMAC, out.Orig.Src); g >= 0 || out.Orig.Is4() {
			return g
		}
		// An IPv6 entry names its router by MAC only, and this l2shim may not have asked
		// the neighbour table yet: the interface's one gateway takes the earlier one's MAC.
		only := -1
		for i, g := range e.gws {
			if g.Iface != wire {
				continue
			}
			if only >= 0 {
				return -1 // two gateways on the link: the MAC must tell
			}
			only = i
		}
		if g := e.gws[max(only, 0)]; only >= 0 && !g.hasMAC6 && !e.ifaces[wire].L3 {
			g.mac6, g.hasMAC6, g.alive6 = out.DstMAC, true, true
			e.refresh()
		}
		return only
	}
	for i, g := range e.gws {
		if g.Iface != wire || conntrack.Addr4(g.IP) != out.Gateway {
			continue
		}
		if !g.hasMAC {
			g.mac, g.hasMAC, g.alive = out.DstMAC, true, true
			e.refresh()
		}
		return i
	}
	return -1
}

// AdoptFast takes into the flow table the flows an earlier l2shim left in the kernel, so this
// one keeps carrying, counting, expiring and (when their gateway goes) resetting or moving
// them. A flow whose interfaces are not this engine's, or whose tuple is taken, is not
// adopted; its entries are queued for removal. It returns how many flows it adopted.
func (e *Engine) AdoptFast(flows []AdoptedFlow, now int64) int {
	e.mu.Lock()
	defer e.mu.Unlock()
	byIndex := func(ifindex int) int {
		for i := range e.ifaces {
			if e.ifaces[i].Index == ifindex {
				return i
			}
		}
		return -1
	}
	n := 0
	for _, a := range flows {
		wire, host := byIndex(a.Out.Ifindex), byIndex(a.In.Ifindex)
		if !e.opts.FastPath || wire < 0 || host < 0 {
			e.fastGone(&conntrack.Flow{Orig: a.Orig}, a.Reply, true, -1)
			continue
		}
		fl := conntrack.Flow{
			Orig:           a.Orig,
			Reply:          a.Reply,
			Origin:         conntrack.Origin(a.Origin),
			HostIf:         int16(host),
			WireIf:         int16(wire),
			Gateway:        int16(e.adoptGateway(wire, a.Out)),
			NAT:            a.Out.NAT,
			HostGatewayMAC: a.In.SrcMAC,
			Replied:        true,
			Rule:           -1,
			Why:            a.Why,
			Created:        now,
			LastSeen:       now,
		}
		if int(a.Rule) < e.rules.Len() {
			fl.Rule = a.Rule
		}
		if fl.Orig.Proto == rewrite.ProtoTCP {
			fl.TCPState = conntrack.TCPEstablished
			// The handshake is history: the window scale is unknown, so the largest.
			fl.HostKnown, fl.HostWScale = true, unknownWScale
			fl.HostSndNext, fl.HostAck, fl.HostRcvNext = a.HostSeqEnd, a.HostAck, a.HostAck
			fl.HostWin = max(uint32(a.HostWin)<<unknownWScale, minWindow)
		}
		p, err := e.table.Insert(fl)
		if err != nil {
			e.fastGone(&conntrack.Flow{Orig: a.Orig}, a.Reply, true, -1)
			continue
		}
		if p.Origin == conntrack.Inbound {
			e.inbound.add(p)
		}
		if p.Gateway >= 0 {
			e.gws[p.Gateway].stats.Live.Add(1)
		}
		p.Fast = conntrack.FastCarry
		if e.fast == nil {
			e.fast = make(map[conntrack.Key]*fastState)
		}
		e.fast[p.Orig] = &fastState{}
		e.markFast(p) // recomputed with this engine's gateways and interfaces
		n++
	}
	return n
}
