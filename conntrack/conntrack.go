package conntrack

import (
	"errors"
	"math/rand/v2"
	"sync/atomic"
	"time"

	"github.com/l2shim/l2shim/conf"
)

// Origin says which side opened a flow.
type Origin uint8

const (
	// Outbound flows were opened by the host (or a LAN client it forwards for).
	Outbound Origin = iota
	// Inbound flows were opened from the wire towards the host.
	Inbound
)

// TCP states. They follow the connection closely enough to pick an idle timeout and an eviction
// group; sequence numbers are not tracked (the endpoints check those).
const (
	// TCPNone: no SYN seen; a connection picked up in the middle (one that predates l2shim).
	// The first segment without SYN, FIN or RST makes it TCPEstablished.
	TCPNone uint8 = iota
	// TCPSynSent: the initiator's SYN was seen, no SYN-ACK yet.
	TCPSynSent
	// TCPEstablished: the handshake completed (the initiator acknowledged the SYN-ACK), or a
	// picked-up connection carries data.
	TCPEstablished
	// TCPClosing: a FIN was seen one way; the other way may still send data for as long as it
	// likes (each segment restarts the idle clock).
	TCPClosing
	// TCPClosed: a FIN was seen each way, or an RST. A new SYN from the initiator re-opens
	// the flow with its placement and NAT mapping; after an RST, segments without RST seen
	// again both ways (the RST was one the endpoints ignored) bring the flow back.
	TCPClosed
	// TCPSynRecv: the responder's SYN-ACK was seen; the initiator's final ACK makes it
	// TCPEstablished.
	TCPSynRecv
)

// Direction indexes per-direction counters.
const (
	DirOrig  = 0 // host → wire
	DirReply = 1 // wire → host
)

// FastState is what the kernel's fast path holds for a flow.
type FastState uint8

const (
	FastNone FastState = iota
	// FastDivert: an in entry that only sends the answers of a host's flow, not confirmed
	// yet, to user space through the host's own capture queue (never behind a flood).
	FastDivert
	// FastCarry: both entries; the kernel carries the flow.
	FastCarry
)

// Flow is one tracked connection and the decision the datapath made for it.
//
// A *Flow from Lookup*, Insert or Range is valid until the flow is removed: by Delete, by
// Expire, or by an Insert that evicts it when the table is full. Do not keep one across an
// Insert or an Expire unless you look it up again.
type Flow struct {
	Orig  Key // as the host sends it
	Reply Key // as it arrives from the wire (after NAT, when NATed)

	// HostIf is the interface the host sent the first frame on (outbound) or the flow arrived on
	// (inbound); WireIf the one its frames leave through. They are indexes into the shim's list.
	HostIf, WireIf int16
	// Gateway is the index of the gateway the flow is placed on, or -1 when the flow is left to
	// the host's routing.
	Gateway int16
	Origin  Origin
	// NAT is true when the flow's source address (and maybe port) is rewritten on the wire.
	NAT bool
	// HostGatewayMAC is the MAC the host addressed its first frame to, put back as the source
	// of injected replies so the host's view of its neighbour never changes.
	HostGatewayMAC [6]byte

	TCPState uint8
	// Replied is true once the end that did not open the flow has sent a frame: the wire for
	// an outbound flow, the host for an inbound one.
	Replied bool
	// SynCount counts the initiator's SYNs (retransmissions included) since the flow was
	// opened or re-opened, for SYN-retry rotation.
	SynCount uint8
	// Rule is the index of the [[rule]] that decided the flow, -1 for none; Drop is set when
	// that verdict (or a strict route-to to a dead gateway) drops the flow's frames. (Drop
	// comes first: the byte fills the gap before Rule.)
	Drop bool
	Rule int16
	// Request identifies the payload of an unanswered UDP flow's last datagram from its
	// initiator (a hash with its length), so only a datagram that repeats it counts as a
	// retry.
	Request uint32
	// HostRcvNext is the sequence number the host expects next from the remote end of a TCP
	// flow: an RST toward the host must carry it to be accepted at once (RFC 5961). The host's
	// own ACKs advance it, and the remote's segments only within the window the host
	// announced, so a spoofed segment cannot move it.
	HostRcvNext uint32
	// What the host's own segments of a TCP flow announced, once HostKnown: HostSndNext is
	// the sequence number after the last byte it sent, HostAck the highest acknowledgment,
	// HostWin its receive window (scaled by HostWScale, 14 when the flow predates l2shim and
	// the scale is unknown). They decide which segments from the wire the host itself would
	// accept (RFC 793, RFC 5961), so a forged RST or FIN cannot end a flow the host keeps.
	// HostISS is the sequence number of the host's SYN.
	HostISS, HostSndNext, HostAck, HostWin uint32
	HostWScale                             uint8
	HostKnown                              bool
	// Reset is set when l2shim reset the flow toward the host (its gateway went down): from
	// then on its frames are dropped both ways, so the host's sequence space stays where the
	// RST expects it.
	Reset bool
	// Failed is set once the flow counted as a failed attempt of its gateway (unanswered for
	// a while, or rotated away), so it counts once.
	Failed bool
	// Fast says what the kernel's fast path holds for the flow.
	Fast FastState
	// Why says why the flow has its gateway (the engine's Reason values); Moves counts how
	// often it was moved to another gateway (rotated, or off a dead one).
	Why   uint8
	Moves uint8

	list       uint8 // the LRU list holding the flow; listFree when the slot is free
	bits       uint8 // bit* flags
	prev, next int32 // LRU neighbours (next also links the free list); -1 = none
	idx        int32 // the flow's own slot

	Created, LastSeen int64 // monotonic nanoseconds
	Packets, Bytes    [2]uint64
}

// Private per-flow flags.
const (
	bitFinOrig    = 1 << iota // FIN seen host → wire
	bitFinReply               // FIN seen wire → host
	bitRst                    // closed by an RST
	bitAliveOrig              // after the RST, a segment without RST host → wire
	bitAliveReply             // ... and wire → host
	bitAssured                // UDP or other: replied and still busy StreamAfter after creation
)

// StreamAfter is how long after its creation a replied UDP (or other) flow must still be seen
// to become assured: kept for udp_replied and never evicted. A query and its answer (DNS) stay
// unconfirmed with the short timeout, as in nf_conntrack.
const StreamAfter = 2 * time.Second

// Resolution is the default granularity of the LRU order (see the package comment): a flow
// outlives its idle timeout by at most this much plus the interval between Expire calls. It
// is a power of two nanoseconds (2^26 ns, about 67 ms).
const Resolution = time.Duration(1 << resolutionShift)

const resolutionShift = 26

// Timeouts are the idle timeouts by state.
type Timeouts struct {
	TCPSynSent     time.Duration // TCPNone (not yet established), TCPSynSent and TCPSynRecv
	TCPEstablished time.Duration
	TCPClosing     time.Duration
	TCPClosed      time.Duration
	UDPUnreplied   time.Duration // UDP flows not assured (see StreamAfter)
	UDPReplied     time.Duration // assured UDP flows
	ICMP           time.Duration // ICMP echo
	Other          time.Duration // any other protocol
}

// DefaultTimeouts returns the defaults of the [conntrack] section (conf.Default*; the reasons
// for each are there): nf_conntrack's, except for established TCP flows, which idle out after
// 2h4m (RFC 5382) instead of five days.
func DefaultTimeouts() Timeouts {
	return Timeouts{
		TCPSynSent:     conf.DefaultTCPSynSent,
		TCPEstablished: conf.DefaultTCPEstablished,
		TCPClosing:     conf.DefaultTCPClosing,
		TCPClosed:      conf.DefaultTCPClosed,
		UDPUnreplied:   conf.DefaultUDPUnreplied,
		UDPReplied:     conf.DefaultUDPReplied,
		ICMP:           conf.DefaultICMPTimeout,
		Other:          conf.DefaultOtherTimeout,
	}
}

// TimeoutsFrom returns the timeouts of a [conntrack] section. A zero field (a conf.Conntrack
// built by hand) takes its default.
func TimeoutsFrom(c conf.Conntrack) Timeouts {
	return Timeouts{
		TCPSynSent:     c.TCPSynSent,
		TCPEstablished: c.TCPEstablished,
		TCPClosing:     c.TCPClosing,
		TCPClosed:      c.TCPClosed,
		UDPUnreplied:   c.UDPUnreplied,
		UDPReplied:     c.UDPReplied,
		ICMP:           c.ICMP,
		Other:          c.Other,
	}.withDefaults()
}

// withDefaults replaces zero and negative fields by their defaults.
func (to Timeouts) withDefaults() Timeouts {
	d := DefaultTimeouts()
	for _, p := range []struct{ v, def *time.Duration }{
		{&to.TCPSynSent, &d.TCPSynSent}, {&to.TCPEstablished, &d.TCPEstablished},
		{&to.TCPClosing, &d.TCPClosing}, {&to.TCPClosed, &d.TCPClosed},
		{&to.UDPUnreplied, &d.UDPUnreplied}, {&to.UDPReplied, &d.UDPReplied},
		{&to.ICMP, &d.ICMP}, {&to.Other, &d.Other},
	} {
		if *p.v <= 0 {
			*p.v = *p.def
		}
	}
	return to
}

// ErrFull is returned by Insert when the table holds its maximum number of flows and none of
// them may be evicted (all are established or assured).
var ErrFull = errors.New("conntrack: table full")

// ErrExists is returned by Insert when either key is already in use.
var ErrExists = errors.New("conntrack: tuple in use")

// Class is a flow's eviction group (see the package comment), in eviction order.
type Class uint8

// The eviction groups.
const (
	ClassClosed      Class = iota // closed TCP flows: evicted first
	ClassUnconfirmed              // no reply, handshake incomplete, not assured
	ClassClosing                  // half-closed TCP, replied ICMP echo
	// ClassWire: assured UDP (and other) flows the wire opened. Anyone can open them with
	// spoofed datagrams that the host answers, so they make room for the host's own before
	// an established flow would.
	ClassWire
	ClassEstablished // never evicted
	NumClasses
)

func (c Class) String() string {
	switch c {
	case ClassClosed:
		return "closed"
	case ClassUnconfirmed:
		return "unconfirmed"
	case ClassClosing:
		return "closing"
	case ClassWire:
		return "wire-assured"
	case ClassEstablished:
		return "established"
	}
	return "invalid"
}

// The LRU lists, one per idle timeout and eviction group.
const (
	listTCPNew = iota
	listTCPEstablished
	listTCPClosing
	listTCPClosed
	listUDPNew
	listUDPAssured
	listICMPNew
	listICMPReplied
	listOtherNew
	listOtherAssured
	listUDPAssuredWire
	listOtherAssuredWire
	numLists

	listFree = 0xff
)

// listClass is the eviction group of each list.
var listClass = [numLists]Class{
	listTCPNew:           ClassUnconfirmed,
	listTCPEstablished:   ClassEstablished,
	listTCPClosing:       ClassClosing,
	listTCPClosed:        ClassClosed,
	listUDPNew:           ClassUnconfirmed,
	listUDPAssured:       ClassEstablished,
	listICMPNew:          ClassUnconfirmed,
	listICMPReplied:      ClassClosing,
	listOtherNew:         ClassUnconfirmed,
	listOtherAssured:     ClassEstablished,
	listUDPAssuredWire:   ClassWire,
	listOtherAssuredWire: ClassWire,
}

// classLists lists the lists of each evictable group.
var classLists = [...][]uint8{
	ClassClosed:      {listTCPClosed},
	ClassUnconfirmed: {listTCPNew, listUDPNew, listICMPNew, listOtherNew},
	ClassClosing:     {listTCPClosing, listICMPReplied},
	ClassWire:        {listUDPAssuredWire, listOtherAssuredWire},
}

// RemoveReason says why a flow left the table.
type RemoveReason uint8

// The reasons given to an OnRemove hook.
const (
	Deleted RemoveReason = iota // by Delete
	Expired                     // idle longer than its timeout
	Evicted                     // to make room for a new flow
)

// Counters count what the table did since it was made. They are safe to read concurrently.
type Counters struct {
	Inserted atomic.Uint64 // flows added
	Expired  atomic.Uint64 // flows removed by Expire
	Evicted  atomic.Uint64 // flows removed by Insert to make room (see the package comment)
	Refused  atomic.Uint64 // Inserts that failed with ErrFull
}

const chunkShift = 12
const chunkSize = 1 << chunkShift

// lru is one intrusive list: slot indexes, -1 when empty.
type lru struct {
	head, tail int32
	n          int32
}

// Table is a bounded flow table.
type Table struct {
	C Counters // what the table did; safe to read from any goroutine

	max      int
	timeouts Timeouts
	to       [numLists]int64 // idle timeout of each list, ns
	orig     index           // by Orig key
	reply    index           // by Reply key
	mul      hashKeys        // the indexes' hash
	hashMask uint32          // all ones; tests narrow it to make keys collide
	chunks   [][]Flow
	free     int32 // first free slot, linked through Flow.next; -1 = none
	n        int
	lists    [numLists]lru
	clock    int64 // the latest time Insert or Seen was given; LastSeen never goes below it
	shift    uint8 // log2 of the LRU resolution in ns
	start    int   // list Expire starts with, rotating so no list starves on a small budget
	onRemove func(*Flow, RemoveReason)
}

// New returns a table that holds at most max flows (conf.DefaultMaxFlows when max <= 0).
// A zero or negative timeout takes its default.
func New(max int, timeouts Timeouts) *Table {
	if max <= 0 {
		max = conf.DefaultMaxFlows
	}
	t := &Table{
		max:      max,
		orig:     newIndex(min(max, 65536), false),
		reply:    newIndex(min(max, 65536), true),
		hashMask: ^uint32(0),
		free:     -1,
		shift:    resolutionShift,
	}
	for i := range t.lists {
		t.lists[i] = lru{head: -1, tail: -1}
	}
	for i := range t.mul {
		t.mul[i] = rand.Uint64()
	}
	t.SetTimeouts(timeouts)
	return t
}

// SetTimeouts changes the idle timeouts, for live flows too (a configuration reload). A zero
// or negative timeout takes its default.
func (t *Table) SetTimeouts(timeouts Timeouts) {
	to := timeouts.withDefaults()
	t.timeouts = to
	t.to = [numLists]int64{
		listTCPNew:           int64(to.TCPSynSent),
		listTCPEstablished:   int64(to.TCPEstablished),
		listTCPClosing:       int64(to.TCPClosing),
		listTCPClosed:        int64(to.TCPClosed),
		listUDPNew:           int64(to.UDPUnreplied),
		listUDPAssured:       int64(to.UDPReplied),
		listICMPNew:          int64(to.ICMP),
		listICMPReplied:      int64(to.ICMP),
		listOtherNew:         int64(to.Other),
		listOtherAssured:     int64(to.Other),
		listUDPAssuredWire:   int64(to.UDPReplied),
		listOtherAssuredWire: int64(to.Other),
	}
}

// Timeouts returns the idle timeouts in force.
func (t *Table) Timeouts() Timeouts { return t.timeouts }

// OnRemove sets a function called with each flow just before it leaves the table, and why.
// It must not modify the table. nil removes the hook.
func (t *Table) OnRemove(fn func(f *Flow, why RemoveReason)) { t.onRemove = fn }

// Max returns the most flows the table holds.
func (t *Table) Max() int { return t.max }

// Len returns the number of live flows.
func (t *Table) Len() int { return t.n }

// ClassLen returns the number of live flows in eviction group c.
func (t *Table) ClassLen(c Class) int {
	n := 0
	for l := range t.lists {
		if listClass[l] == c {
			n += int(t.lists[l].n)
		}
	}
	return n
}

// ClosedByReset reports whether the flow's last close was an RST (rather than a FIN each way)
// that the endpoints have not been seen to ignore.
func (f *Flow) ClosedByReset() bool { return f.TCPState == TCPClosed && f.bits&bitRst != 0 }

// Class returns the eviction group f is in.
func (f *Flow) Class() Class {
	if f.list >= numLists {
		return NumClasses
	}
	return listClass[f.list]
}

// Timeout returns how long f may stay idle in its current state.
func (t *Table) Timeout(f *Flow) time.Duration { return time.Duration(t.to[listOf(f)]) }

func (t *Table) at(i int32) *Flow { return &t.chunks[i>>chunkShift][i&(chunkSize-1)] }

// LookupOrig finds a flow by its key as the host sends it.
func (t *Table) LookupOrig(k Key) *Flow {
	if i := t.find(&t.orig, &k); i >= 0 {
		return t.at(i)
	}
	return nil
}

// LookupReply finds a flow by its key as the wire returns it.
func (t *Table) LookupReply(k Key) *Flow {
	if i := t.find(&t.reply, &k); i >= 0 {
		return t.at(i)
	}
	return nil
}

// ReplyInUse reports whether some flow already owns k as its wire-side key, which a NAT
// mapping must not reuse.
func (t *Table) ReplyInUse(k Key) bool {
	return t.find(&t.reply, &k) >= 0
}

// Insert adds f and returns a pointer to the stored copy. When the table is full it first
// evicts a flow (see the package comment), which invalidates that flow's *Flow; when only
// established or assured flows are left it returns ErrFull. Its LastSeen is raised to the
// latest time the table has been given if it is older, and a zero Created becomes LastSeen.
func (t *Table) Insert(f Flow) (*Flow, error) {
	if t.find(&t.orig, &f.Orig) >= 0 {
		return nil, ErrExists
	}
	if t.find(&t.reply, &f.Reply) >= 0 {
		return nil, ErrExists
	}
	if t.n >= t.max {
		v := t.victim()
		if v == nil {
			t.C.Refused.Add(1)
			return nil, ErrFull
		}
		t.remove(v, Evicted)
		t.C.Evicted.Add(1)
	}
	i := t.alloc()
	p := t.at(i)
	*p = f
	p.idx = i
	if p.LastSeen < t.clock {
		p.LastSeen = t.clock
	} else {
		t.clock = p.LastSeen
	}
	if p.Created == 0 {
		p.Created = p.LastSeen
	}
	t.push(p, listOf(p))
	t.add(&t.orig, &f.Orig, i)
	t.add(&t.reply, &f.Reply, i)
	t.n++
	t.C.Inserted.Add(1)
	return p, nil
}

// alloc takes a free slot, growing the slab by a chunk when none is left.
func (t *Table) alloc() int32 {
	if t.free < 0 {
		base := int32(len(t.chunks) * chunkSize)
		c := make([]Flow, chunkSize)
		for j := range c {
			c[j].list = listFree
			c[j].next = base + int32(j) + 1
		}
		c[chunkSize-1].next = -1
		t.chunks = append(t.chunks, c)
		t.free = base
	}
	i := t.free
	t.free = t.at(i).next
	return i
}

// victim returns the flow to evict: the least recently seen of the first non-empty evictable
// group, or nil.
func (t *Table) victim() *Flow {
	for _, lists := range classLists {
		var best *Flow
		for _, l := range lists {
			if h := t.lists[l].head; h >= 0 {
				if f := t.at(h); best == nil || f.LastSeen < best.LastSeen {
					best = f
				}
			}
		}
		if best != nil {
			return best
		}
	}
	return nil
}

// Delete removes the flow stored at p. A pointer that is not a live flow of this table is
// ignored.
func (t *Table) Delete(p *Flow) {
	if p == nil || p.list >= numLists || p.idx < 0 || int(p.idx) >= len(t.chunks)*chunkSize || t.at(p.idx) != p {
		return
	}
	t.remove(p, Deleted)
}

// remove takes a live flow out of the maps and its list and frees its slot.
func (t *Table) remove(p *Flow, why RemoveReason) {
	if t.onRemove != nil {
		t.onRemove(p, why)
	}
	t.del(&t.orig, &p.Orig, p.idx)
	t.del(&t.reply, &p.Reply, p.idx)
	t.unlink(p)
	i := p.idx
	*p = Flow{list: listFree, next: t.free, idx: i}
	t.free = i
	t.n--
}

// push appends p at the tail of list l.
func (t *Table) push(p *Flow, l uint8) {
	L := &t.lists[l]
	p.list = l
	p.next = -1
	p.prev = L.tail
	if L.tail >= 0 {
		t.at(L.tail).next = p.idx
	} else {
		L.head = p.idx
	}
	L.tail = p.idx
	L.n++
}

// unlink takes p out of its list.
func (t *Table) unlink(p *Flow) {
	L := &t.lists[p.list]
	if p.prev >= 0 {
		t.at(p.prev).next = p.next
	} else {
		L.head = p.next
	}
	if p.next >= 0 {
		t.at(p.next).prev = p.prev
	} else {
		L.tail = p.prev
	}
	L.n--
	p.prev, p.next = -1, -1
}

// listOf returns the list f belongs on given its protocol and state.
func listOf(f *Flow) uint8 {
	switch f.Orig.Proto {
	case 6:
		switch f.TCPState {
		case TCPEstablished:
			if f.Replied {
				return listTCPEstablished
			}
		case TCPClosing:
			return listTCPClosing
		case TCPClosed:
			return listTCPClosed
		}
		return listTCPNew
	case 17:
		switch {
		case f.bits&bitAssured == 0:
			return listUDPNew
		case f.Origin == Inbound:
			return listUDPAssuredWire
		}
		return listUDPAssured
	case 1:
		if f.Replied {
			return listICMPReplied
		}
		return listICMPNew
	}
	switch {
	case f.bits&bitAssured == 0:
		return listOtherNew
	case f.Origin == Inbound:
		return listOtherAssuredWire
	}
	return listOtherAssured
}

// TCP flags.
const (
	tcpFIN = 0x01
	tcpSYN = 0x02
	tcpRST = 0x04
	tcpACK = 0x10
)

// Touch records frames of f that someone else carried (the kernel's fast path): packets and
// bytes in direction dir, the last one at time last. Its idle clock moves forward only; its
// state does not change (Carried and FIN do that).
func (t *Table) Touch(f *Flow, dir int, packets, bytes uint64, last int64) {
	if f.list >= numLists {
		return
	}
	dir &= 1
	f.Packets[dir] += packets
	f.Bytes[dir] += bytes
	if last <= f.LastSeen {
		return
	}
	t.clock = max(t.clock, last)
	if last>>t.shift != f.LastSeen>>t.shift && t.lists[f.list].tail != f.idx {
		t.unlink(f)
		t.push(f, f.list)
	}
	f.LastSeen = max(f.LastSeen, last)
}

// Carried moves a TCP connection being opened (TCPSynSent, TCPSynRecv) for segments the kernel
// carried in direction dir: the responder's answer it (the kernel carries no SYN but the
// SYN-ACK it was let carry, no RST); the initiator's complete its handshake (the kernel carries
// none of its SYNs, so they came after the SYN-ACK).
func (t *Table) Carried(f *Flow, dir int) {
	if f.list >= numLists || f.Orig.Proto != 6 || f.TCPState != TCPSynSent && f.TCPState != TCPSynRecv {
		return
	}
	f.Replied = true
	if (dir&1 == DirOrig) == (f.Origin != Inbound) {
		f.TCPState = TCPEstablished
	} else {
		f.TCPState = TCPSynRecv
	}
	if l := listOf(f); l != f.list {
		t.unlink(f)
		t.push(f, l)
	}
}

// FIN records a TCP FIN that someone else carried (the kernel's fast path) in direction dir:
// the connection's state moves as Seen would move it for the FIN; nothing is counted.
func (t *Table) FIN(f *Flow, dir int) {
	if f.list >= numLists || f.Orig.Proto != 6 {
		return
	}
	dir &= 1
	f.tcp(dir, (dir == DirOrig) == (f.Origin != Inbound), tcpFIN|tcpACK)
	if l := listOf(f); l != f.list {
		t.unlink(f)
		t.push(f, l)
	}
}

// Seen updates a flow's counters, state and idle clock for one frame going in direction dir
// (DirOrig or DirReply) at time now. tcpFlags are the TCP header's flags (0 for other
// protocols). A pointer to a flow that has been removed is ignored.
func (t *Table) Seen(f *Flow, dir int, bytes int, tcpFlags uint8, now int64) {
	if f.list >= numLists {
		return
	}
	if now < t.clock {
		now = t.clock
	} else {
		t.clock = now
	}
	dir &= 1
	f.Packets[dir]++
	f.Bytes[dir] += uint64(bytes)
	// The initiator sends host → wire on an outbound flow, wire → host on an inbound one.
	fromInit := (dir == DirOrig) == (f.Origin != Inbound)
	if !fromInit {
		f.Replied = true
	}
	switch f.Orig.Proto {
	case 6:
		f.tcp(dir, fromInit, tcpFlags)
	case 1:
	default:
		if f.Replied && f.bits&bitAssured == 0 && now-f.Created >= int64(StreamAfter) {
			f.bits |= bitAssured
		}
	}
	if l := listOf(f); l != f.list {
		t.unlink(f)
		t.push(f, l)
	} else if now>>t.shift != f.LastSeen>>t.shift && t.lists[l].tail != f.idx {
		t.unlink(f)
		t.push(f, l)
	}
	f.LastSeen = now
}

// tcp moves f's TCP state for one segment.
func (f *Flow) tcp(dir int, fromInit bool, flags uint8) {
	finBit := uint8(bitFinOrig)
	aliveBit := uint8(bitAliveOrig)
	if dir == DirReply {
		finBit, aliveBit = bitFinReply, bitAliveReply
	}
	switch {
	case flags&tcpRST != 0:
		f.TCPState = TCPClosed
		f.bits = f.bits&^(bitAliveOrig|bitAliveReply) | bitRst

	case flags&(tcpSYN|tcpACK) == tcpSYN:
		if !fromInit {
			return // simultaneous open: leave it to the endpoints
		}
		switch f.TCPState {
		case TCPClosed:
			// The tuple is reused for a new connection: start over, keeping the placement.
			f.TCPState = TCPSynSent
			f.bits = 0
			f.Replied = false
			f.SynCount = 1
		case TCPNone:
			f.TCPState = TCPSynSent
			f.SynCount = 1
		case TCPSynSent, TCPSynRecv:
			if f.SynCount < 255 {
				f.SynCount++
			}
		}

	case flags&tcpSYN != 0: // SYN-ACK
		if !fromInit && (f.TCPState == TCPNone || f.TCPState == TCPSynSent || f.TCPState == TCPSynRecv) {
			f.TCPState = TCPSynRecv
		}

	case f.TCPState == TCPClosed:
		// Stragglers after a close. After an RST, segments both ways mean the endpoints
		// ignored it (it was out of window, or forged): the connection lives on.
		if f.bits&bitRst != 0 {
			f.bits |= aliveBit
			if f.bits&(bitAliveOrig|bitAliveReply) == bitAliveOrig|bitAliveReply {
				f.bits &^= bitRst | bitAliveOrig | bitAliveReply
				f.TCPState = TCPEstablished
				if f.bits&(bitFinOrig|bitFinReply) != 0 {
					f.TCPState = TCPClosing
				}
			}
		}

	case flags&tcpFIN != 0:
		switch f.TCPState {
		case TCPNone, TCPSynRecv, TCPEstablished, TCPClosing:
			f.bits |= finBit
			if f.bits&(bitFinOrig|bitFinReply) == bitFinOrig|bitFinReply {
				f.TCPState = TCPClosed
			} else {
				f.TCPState = TCPClosing
			}
		}

	default: // ACK, data
		switch f.TCPState {
		case TCPNone:
			f.TCPState = TCPEstablished
		case TCPSynRecv:
			if fromInit {
				f.TCPState = TCPEstablished
			}
		}
	}
}

// Expire removes flows idle longer than their timeout at time now, at most budget of them,
// and returns how many it removed. It looks only at the heads of the LRU lists, so its cost is
// the number it removes plus a constant: calling it often with a modest budget keeps every
// frame clear of long pauses. When it returns less than budget, no flow is left that has been
// idle longer than its timeout plus Resolution.
func (t *Table) Expire(now int64, budget int) int {
	removed := 0
	for k := 0; k < numLists && removed < budget; k++ {
		l := (t.start + k) % numLists
		L := &t.lists[l]
		to := t.to[l]
		for removed < budget && L.head >= 0 {
			f := t.at(L.head)
			if now-f.LastSeen <= to {
				break
			}
			t.remove(f, Expired)
			removed++
		}
	}
	t.start = (t.start + 1) % numLists
	t.C.Expired.Add(uint64(removed))
	return removed
}

// Range calls fn for every live flow until fn returns false. fn may Delete the flow it is
// given.
func (t *Table) Range(fn func(*Flow) bool) {
	for _, c := range t.chunks {
		for i := range c {
			if c[i].list < numLists && !fn(&c[i]) {
				return
			}
		}
	}
}
