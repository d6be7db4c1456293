package shim

import (
	"context"
	"encoding/binary"
	"syscall"
	"time"

	"github.com/l2shim/l2shim/conntrack"
	"github.com/l2shim/l2shim/failover"
	"github.com/l2shim/l2shim/rewrite"
)

// HealthTick re-evaluates failure accounting and returns the gateways benched or restored
// since the last call, and the new "no gateway usable" state when it changed.
func (d *Datapath) HealthTick(now int64) (trans []failover.Transition, allDownChanged, allDown bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.health != nil {
		trans = d.health.Transitions(now, nil)
		for _, t := range trans {
			d.Gws[t.Gateway].Benched = t.Benched
		}
	}
	d.refreshLocked()
	all := true
	for i := range d.cands {
		if d.cands[i].Usable {
			all = false
		}
	}
	if all != d.allDown {
		d.allDown = all
		return trans, true, all
	}
	return trans, false, all
}

// ProbeVerdict records the outcome of a gateway's probe round.
func (d *Datapath) ProbeVerdict(gi int, up bool, summary failover.ProbeSummary, now int64) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.Gws[gi].ProbeDown = !up
	d.Gws[gi].probe = summary
	if up && d.health != nil {
		d.health.ProbeOK(gi, now)
	}
	d.refreshLocked()
}

// Injection is a frame the control plane must hand to the host on interface Iface.
type Injection struct {
	Iface int
	Frame []byte // Ethernet frame, without the virtio-net header
}

// Evacuate handles the flows of gateway gi after it went down: each TCP flow is reset toward
// the host (an RST the host accepts, so applications reconnect at once over a live link instead
// of waiting minutes for a dead path) and forgotten; each UDP flow moves to a live gateway, NAT
// following. It returns the RSTs to inject and how many flows were reset and moved.
func (d *Datapath) Evacuate(gi int, now int64) (rsts []Injection, reset, moved int) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.evacuateLocked(func(fl *conntrack.Flow) bool { return int(fl.Gateway) == gi }, now)
}

// resetToHost builds an RST for flow fl toward the host: from the remote end, with the
// sequence number the host expects next, so it resets at once (RFC 5961 would answer any other
// in-window RST with a challenge ACK).
func (d *Datapath) resetToHost(fl *conntrack.Flow) Injection {
	buf := make([]byte, 64)
	o := fl.Orig
	n := buildRST(buf, fl.HostGatewayMAC, d.Ifaces[fl.HostIf].MAC, o.Dst, o.Src, o.DstPort, o.SrcPort, fl.HostRcvNext, 0, false)
	return Injection{Iface: int(fl.HostIf), Frame: buf[:n]}
}

// trackHostSeq remembers, for a TCP frame from the wire, the sequence number the host will
// expect next from the remote end.
func trackHostSeq(f *rewrite.Frame, fl *conntrack.Flow) {
	if f.Proto != rewrite.ProtoTCP || f.L4+20 > f.End {
		return
	}
	b := f.Buf[f.L4:]
	seq := binary.BigEndian.Uint32(b[4:])
	doff := int(b[12]>>4) * 4
	n := uint32(f.End - f.L4 - doff)
	if f.TCPFlags&(rewrite.TCPSyn|rewrite.TCPFin) != 0 {
		n++
	}
	if next := seq + n; int32(next-fl.HostRcvNext) > 0 || fl.HostRcvNext == 0 {
		fl.HostRcvNext = next
	}
}

// gatewayDown resets and moves the flows of a gateway that just went down, and injects the
// resets.
func (s *Shim) gatewayDown(gi int, reason string) {
	rsts, reset, moved := s.dp.Evacuate(gi, s.now())
	s.injectResets(rsts)
	if reset+moved > 0 {
		s.log.Warn("flows of a down gateway handled", "gateway", s.config().Gateways[gi].Name, "reason", reason, "tcp_reset", reset, "udp_moved", moved)
	}
}

// injectResets hands RSTs to the host now and once more 100 ms later. The first may overtake
// data the frame loops processed just before but have not flushed yet, which makes it land
// early in the host's sequence space (only a challenge ACK); by the second, everything before it
// is delivered and nothing after it will be, so its sequence number is exact.
func (s *Shim) injectResets(rsts []Injection) {
	if len(rsts) == 0 {
		return
	}
	for _, r := range rsts {
		s.inject(r)
	}
	time.AfterFunc(100*time.Millisecond, func() {
		for _, r := range rsts {
			s.inject(r)
		}
	})
}

// inject hands one frame to the host through the capture veth of its interface.
func (s *Shim) inject(r Injection) {
	p := (*s.portsSnap.Load())[r.Iface]
	buf := make([]byte, rewrite.VnetHdrLen+len(r.Frame))
	copy(buf[rewrite.VnetHdrLen:], r.Frame)
	q := newSendQueue(func() *packetConn { return p.capture }, 1, func(syscall.Errno) { s.dp.C.SendErrors.Add(1) })
	q.add(buf)
	_ = q.flush()
}

// healthLoop re-evaluates failure accounting every 100 ms and logs what changed.
func (s *Shim) healthLoop(ctx context.Context) {
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		trans, changed, allDown := s.dp.HealthTick(s.now())
		s.publishView()
		for _, tr := range trans {
			name := s.config().Gateways[tr.Gateway].Name
			if tr.Benched {
				s.log.Warn("gateway benched: no new flows", "gateway", name, "reason", tr.Reason)
			} else {
				s.log.Info("gateway back from the bench", "gateway", name, "reason", tr.Reason)
			}
		}
		if changed {
			if allDown {
				s.log.Warn("no usable gateway: new flows are left to the host's own routing")
			} else {
				s.log.Info("a gateway is usable again: l2shim places new flows")
			}
		}
	}
}
