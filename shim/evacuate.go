package shim

import (
	"time"

	"github.com/l2shim/l2shim/datapath"
	"github.com/l2shim/l2shim/rewrite"
)

// gatewayDown resets and moves the flows of a gateway that just went down, and injects the
// resets.
func (s *Shim) gatewayDown(gi int, reason string) {
	s.gatewayDownFamily(gi, datapath.BothFamilies, reason)
}

// gatewayDownFamily is gatewayDown for the flows of one family: a gateway whose IPv6 probes
// fail keeps its IPv4 flows, and the other way round.
func (s *Shim) gatewayDownFamily(gi int, fam datapath.Family, reason string) {
	ev := s.engine.EvacuateFamily(gi, fam, s.now())
	s.injectResets(ev.Resets)
	if ev.Reset+ev.Moved > 0 {
		s.log.Warn("flows of a down gateway handled", "gateway", s.config().Gateways[gi].Name, "family", fam.String(),
			"reason", reason, "tcp_reset", ev.Reset, "udp_moved", ev.Moved)
	}
}

// injectResets hands RSTs to the host now and once more 100 ms later. The first may overtake
// data the frame loops processed just before but have not flushed yet, which makes it land
// early in the host's sequence space (only a challenge ACK); by the second, everything before it
// is delivered and nothing after it will be, so its sequence number is exact.
func (s *Shim) injectResets(rsts []datapath.Injection) {
	if len(rsts) == 0 {
		return
	}
	// The reset flows leave the kernel's fast path first: nothing of theirs may reach the
	// host after the RST.
	s.applyFast()
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
func (s *Shim) inject(r datapath.Injection) {
	buf := make([]byte, rewrite.VnetHdrLen+len(r.Frame))
	copy(buf[rewrite.VnetHdrLen:], r.Frame)
	q := newSendQueue(s.portSocket(r.Iface, captureConn), 1, s.sendDropped)
	q.add(buf)
	_ = q.flush()
}
