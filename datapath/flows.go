package datapath

import (
	"net/netip"
	"time"

	"github.com/l2shim/l2shim/conntrack"
	"github.com/l2shim/l2shim/rewrite"
)

// FlowInfo is one flow as `l2shim flows` lists it, copied under the engine's lock. Its
// counters and LastSeen are the flow's own (whoever keeps them current: the frame loops, or a
// fast path that writes them back into the flow).
type FlowInfo struct {
	Orig           conntrack.Key // as the host sends it
	Reply          conntrack.Key // as the wire returns it (after NAT)
	Origin         conntrack.Origin
	HostIf, WireIf int
	Gateway        int // -1: the host's routing
	NAT            bool
	TCPState       uint8
	Replied        bool
	Reset          bool // l2shim reset it toward the host (its gateway went down); its frames are dropped
	Drop           bool // a rule drops its frames
	Rule           int  // the rule that matched it, -1 for none
	Why            Reason
	Moves          int
	Created        int64 // engine clock, ns
	LastSeen       int64
	Packets, Bytes [2]uint64 // by direction: conntrack.DirOrig (host to wire), DirReply
	Timeout        time.Duration
}

// State names the flow's state as `l2shim flows` shows it and --state filters it: for TCP
// "syn-sent", "syn-recv", "established", "closing", "closed" or "mid-stream" (picked up
// without its SYN, no data seen yet); for other protocols "unreplied" or "replied"; "reset"
// for a flow l2shim reset.
func (fi *FlowInfo) State() string {
	if fi.Reset {
		return "reset"
	}
	if fi.Orig.Proto == rewrite.ProtoTCP {
		switch fi.TCPState {
		case conntrack.TCPSynSent:
			return "syn-sent"
		case conntrack.TCPSynRecv:
			return "syn-recv"
		case conntrack.TCPEstablished:
			return "established"
		case conntrack.TCPClosing:
			return "closing"
		case conntrack.TCPClosed:
			return "closed"
		}
		return "mid-stream"
	}
	if fi.Replied {
		return "replied"
	}
	return "unreplied"
}

// FlowStates lists every State value.
func FlowStates() []string {
	return []string{"syn-sent", "syn-recv", "established", "closing", "closed", "mid-stream", "unreplied", "replied", "reset"}
}

// AnyGateway in FlowFilter.Gateway selects flows on every gateway and on none.
const AnyGateway = -2

// FlowFilter selects flows; the zero value (with Gateway AnyGateway) selects every flow.
type FlowFilter struct {
	Gateway int          // a gateway index, -1 for flows left to the host's routing, or AnyGateway
	Addr    netip.Prefix // an address of either end, as the host or the wire sees it; invalid: any
	Port    uint16       // a port of either end, host or wire view; 0: any
	Proto   uint8        // 0: any
	State   string       // a State value; "": any
	// ActiveSince keeps flows seen at or after this engine time; 0: any.
	ActiveSince int64
}

// Matches reports whether fi passes the filter.
func (ff *FlowFilter) Matches(fi *FlowInfo) bool {
	if ff == nil {
		return true
	}
	if ff.Gateway != AnyGateway && fi.Gateway != ff.Gateway {
		return false
	}
	if ff.Proto != 0 && fi.Orig.Proto != ff.Proto && !(ff.Proto == rewrite.ProtoICMP && fi.Orig.Proto == rewrite.ProtoICMPv6) {
		return false
	}
	if ff.ActiveSince != 0 && fi.LastSeen < ff.ActiveSince {
		return false
	}
	if ff.Addr.IsValid() {
		in := func(a [16]byte) bool { return ff.Addr.Contains(conntrack.Addr(a)) }
		if !in(fi.Orig.Src) && !in(fi.Orig.Dst) && !in(fi.Reply.Src) && !in(fi.Reply.Dst) {
			return false
		}
	}
	if p := ff.Port; p != 0 {
		// An ICMP echo's "ports" are its identifier.
		if isEchoProto(fi.Orig.Proto) || fi.Orig.SrcPort != p && fi.Orig.DstPort != p && fi.Reply.SrcPort != p && fi.Reply.DstPort != p {
			return false
		}
	}
	return ff.State == "" || fi.State() == ff.State
}

// Paging bounds: the most flows one page copies, and the most table slots it looks at, while
// it holds the engine's lock (a page of 1000 flows takes tens of microseconds).
const (
	MaxFlowsPage  = 1000
	pageSlotLimit = 16384
)

// FlowsPage appends to out up to n flows (at most MaxFlowsPage) that match filter, walking the
// table from slot from; it holds the engine's lock for this one page only. next is the slot to
// continue from, -1 at the end of the table. A page may hold fewer than n flows and still not
// be the last: it also stops after looking at a bounded number of slots.
func (e *Engine) FlowsPage(from, n int, filter *FlowFilter, out []FlowInfo) (page []FlowInfo, next int) {
	n = min(max(n, 1), MaxFlowsPage)
	e.mu.Lock()
	defer e.mu.Unlock()
	got := 0
	next = e.table.Walk(from, pageSlotLimit, func(fl *conntrack.Flow) bool {
		fi := e.flowInfo(fl)
		if filter.Matches(&fi) {
			out = append(out, fi)
			got++
		}
		return got < n
	})
	return out, next
}

// flowInfo copies what the flow list shows of fl. e.mu is held.
func (e *Engine) flowInfo(fl *conntrack.Flow) FlowInfo {
	return FlowInfo{
		Orig: fl.Orig, Reply: fl.Reply, Origin: fl.Origin,
		HostIf: int(fl.HostIf), WireIf: int(fl.WireIf), Gateway: int(fl.Gateway),
		NAT: fl.NAT, TCPState: fl.TCPState, Replied: fl.Replied, Reset: fl.Reset, Drop: fl.Drop,
		Rule: int(fl.Rule), Why: Reason(fl.Why), Moves: int(fl.Moves),
		Created: fl.Created, LastSeen: fl.LastSeen, Packets: fl.Packets, Bytes: fl.Bytes,
		Timeout: e.table.Timeout(fl),
	}
}

// SynRetries returns [failover] syn_retries in force: a rotated flow moved after this many
// unanswered repetitions of its request.
func (e *Engine) SynRetries() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.cfg.SynRetries
}

// IfaceNames returns the names of the engine's interfaces, by index (a detached one keeps its
// slot and name).
func (e *Engine) IfaceNames() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := make([]string, len(e.ifaces))
	for i := range e.ifaces {
		out[i] = e.ifaces[i].Name
	}
	return out
}

// IfaceByIndex returns the engine's index of the interface with kernel ifindex ifindex, -1 when
// it is none of the engine's.
func (e *Engine) IfaceByIndex(ifindex int) int {
	e.mu.Lock()
	defer e.mu.Unlock()
	for i := range e.ifaces {
		if e.ifaces[i].Index == ifindex && e.ifaces[i].Up {
			return i
		}
	}
	return -1
}

// IfaceOwning returns the engine's index of the interface that has address ip, -1 when none
// has it.
func (e *Engine) IfaceOwning(ip netip.Addr) int {
	if !ip.IsValid() {
		return -1
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.ifaceOwning(ip.As16())
}
