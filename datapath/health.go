package datapath

import (
	"github.com/l2shim/l2shim/conntrack"
	"github.com/l2shim/l2shim/failover"
	"github.com/l2shim/l2shim/rewrite"
)

// HealthTick re-evaluates failure accounting and returns the gateways benched or restored
// since the last call, and the new "no gateway usable" state when it changed.
func (e *Engine) HealthTick(now int64) (trans []failover.Transition, allDownChanged, allDown bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.checkUnanswered(now)
	if e.health != nil {
		trans = e.health.Transitions(now, nil)
		for _, t := range trans {
			e.gws[t.Gateway].benched = t.Benched
		}
	}
	e.refresh()
	all := true
	for i := range e.cands {
		if e.cands[i].Usable {
			all = false
		}
	}
	if all != e.allDown {
		e.allDown = all
		return trans, true, all
	}
	return trans, false, all
}

// ProbeVerdict records gateway gi's probe verdict (after a round, or a fresh one when its
// probing starts): summary.Up decides whether it may take new flows, the rest is for the
// status. An up verdict lets failure accounting release a gateway benched while waiting for a
// probe.
func (e *Engine) ProbeVerdict(gi int, summary failover.ProbeSummary, now int64) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.gws[gi].probe = summary
	if summary.Up && e.health != nil {
		e.health.ProbeOK(gi, now)
	}
	e.refresh()
}

// ProbeVerdict6 records gateway gi's IPv6 probe verdict, as ProbeVerdict does the IPv4 one:
// from then on summary.Up decides whether it may take new IPv6 flows, whatever its IPv4
// verdict. nil: the gateway has no IPv6 probes (no IPv6 targets, or probing off), and its IPv6
// flows follow its IPv4 verdict again.
func (e *Engine) ProbeVerdict6(gi int, summary *failover.ProbeSummary) {
	e.mu.Lock()
	defer e.mu.Unlock()
	g := e.gws[gi]
	g.own6 = summary != nil
	g.probe6 = failover.ProbeSummary{}
	if summary != nil {
		g.probe6 = *summary
	}
	e.refresh()
}

// Injection is a frame the control plane must hand to the host on interface Iface.
type Injection struct {
	Iface int
	Frame []byte // Ethernet frame, without the virtio-net header
}

// Evacuation is what handling a down gateway's flows did: the resets to inject into the host,
// how many TCP flows were reset and how many UDP flows moved.
type Evacuation struct {
	Resets       []Injection
	Reset, Moved int
}

// Evacuate handles the flows of gateway gi after it went down: each TCP flow is reset toward
// the host (an RST the host accepts, so applications reconnect at once over a live link instead
// of waiting minutes for a dead path); each outbound UDP flow moves to a live gateway, NAT
// following.
func (e *Engine) Evacuate(gi int, now int64) Evacuation {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.evacuate(func(fl *conntrack.Flow) bool { return int(fl.Gateway) == gi }, e.pickOther, now)
}

// Family selects the flows of one address family.
type Family uint8

const (
	// BothFamilies: IPv4 and IPv6 flows.
	BothFamilies Family = iota
	// IPv4Only: IPv4 flows.
	IPv4Only
	// IPv6Only: IPv6 flows.
	IPv6Only
)

func (f Family) String() string {
	switch f {
	case IPv4Only:
		return "IPv4"
	case IPv6Only:
		return "IPv6"
	}
	return "IPv4 and IPv6"
}

// has reports whether flow key address like (IPv4-mapped or IPv6) is of the family.
func (f Family) has(like [16]byte) bool {
	switch f {
	case IPv4Only:
		return conntrack.Is4(like)
	case IPv6Only:
		return !conntrack.Is4(like)
	}
	return true
}

// EvacuateFamily is Evacuate for the flows of one family only: a gateway whose IPv6 probes
// failed while IPv4 still answers (or the other way round) keeps the other family's flows.
func (e *Engine) EvacuateFamily(gi int, fam Family, now int64) Evacuation {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.evacuate(func(fl *conntrack.Flow) bool { return int(fl.Gateway) == gi && fam.has(fl.Orig.Src) }, e.pickOther, now)
}

// pickOther returns the gateway a moved UDP flow goes to: the mode's choice among the usable
// gateways, -1 when that is none or the flow's own.
func (e *Engine) pickOther(fl *conntrack.Flow) int {
	// By the flow's placement hash: a host pair's flows move together, as they were placed.
	h, _ := e.placementHash(fl)
	g := failover.Pick(e.cfg.Mode, h, e.candsFor(fl.Orig.Src))
	if g == int(fl.Gateway) {
		return -1
	}
	return g
}

// evacuate handles the flows match selects: each TCP flow is reset toward the host, each
// outbound UDP flow moves to the gateway moveTo names (-1: it stays), NAT following, and any
// other flow is forgotten. e.mu is held.
func (e *Engine) evacuate(match func(*conntrack.Flow) bool, moveTo func(*conntrack.Flow) int, now int64) Evacuation {
	var victims []*conntrack.Flow
	e.table.Range(func(fl *conntrack.Flow) bool {
		if match(fl) {
			victims = append(victims, fl)
		}
		return true
	})
	var ev Evacuation
	for _, fl := range victims {
		switch fl.Orig.Proto {
		case rewrite.ProtoTCP:
			// What the kernel carried since the last sync first: a connection it closed
			// needs no reset, and a reset must carry the host's sequence numbers of now.
			e.refreshFromKernel(fl)
			if fl.TCPState != conntrack.TCPClosed && !fl.Reset {
				ev.Resets = append(ev.Resets, e.resetToHost(fl))
				ev.Reset++
			}
			// The flow stays, dropping its frames, until it idles out: a segment from the
			// remote still in flight must not move the host's sequence past the RST's.
			fl.Reset = true
			e.markFast(fl)
		case rewrite.ProtoUDP:
			if fl.Origin == conntrack.Inbound {
				// The client addressed this uplink: answers from another address would be
				// no answers at all. The flow stays (and idles out).
				continue
			}
			old := int(fl.Gateway)
			if g := moveTo(fl); g >= 0 && e.moveFlow(fl, g) {
				ev.Moved++
				if g != old {
					fl.Why = uint8(ReasonMoved)
				}
			}
		default:
			e.table.Delete(fl)
		}
	}
	e.c.Add(TCPReset, uint64(ev.Reset))
	e.c.Add(UDPMoved, uint64(ev.Moved))
	return ev
}

// resetToHost builds an RST for flow fl toward the host: from the remote end, with the
// sequence number the host expects next, so it resets at once (RFC 5961 would answer any other
// in-window RST with a challenge ACK).
func (e *Engine) resetToHost(fl *conntrack.Flow) Injection {
	o := fl.Orig
	if !o.Is4() {
		buf := make([]byte, rewrite.RST6Len)
		rewrite.BuildRST6(buf, rewrite.Endpoints6{
			SrcMAC: fl.HostGatewayMAC, DstMAC: e.ifaces[fl.HostIf].MAC,
			Src: o.Dst, Dst: o.Src, SrcPort: o.DstPort, DstPort: o.SrcPort,
		}, fl.HostRcvNext, 0)
		return Injection{Iface: int(fl.HostIf), Frame: buf}
	}
	buf := make([]byte, rewrite.RSTLen)
	rewrite.BuildRST(buf, rewrite.Endpoints{
		SrcMAC: fl.HostGatewayMAC, DstMAC: e.ifaces[fl.HostIf].MAC,
		Src: conntrack.As4(o.Dst), Dst: conntrack.As4(o.Src), SrcPort: o.DstPort, DstPort: o.SrcPort,
	}, fl.HostRcvNext, 0)
	return Injection{Iface: int(fl.HostIf), Frame: buf}
}
