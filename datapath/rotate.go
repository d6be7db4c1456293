package datapath

import (
	"github.com/l2shim/l2shim/conntrack"
	"github.com/l2shim/l2shim/rewrite"
)

// rotatedTimeout is how long the wire tuple a flow left behind when it rotated is remembered,
// so a late SYN-ACK through the earlier gateway is answered with an RST upstream instead of
// reaching the host (which would then hold two answers for one connection).
const rotatedTimeout = int64(60e9)

// maxRotated bounds the memory of rotated tuples.
const maxRotated = 8192

type rotEntry struct {
	gateway int16
	expires int64
}

// udpRetryGap is how long after its previous datagram an unanswered UDP datagram counts as a
// retry (a DNS resolver's timeout is seconds; a burst of a stream's datagrams is not retries).
const udpRetryGap = int64(500e6)

// isRetry reports whether this frame of an unanswered outbound flow is a connection request
// sent more than syn_retries times: a SYN (conntrack counts them), or a UDP datagram that
// repeats the previous one (the same payload) at least udpRetryGap after it. A datagram with
// other content is a new request, and the count starts again. gap is the time since the flow's
// previous frame.
func (e *Engine) isRetry(f *rewrite.Frame, fl *conntrack.Flow, gap int64) bool {
	// A flow a rule placed stays where the rule says (a route-to whose gateway goes down
	// moves with the gateway's other flows).
	if fl.Origin != conntrack.Outbound || fl.Replied || fl.Gateway < 0 || fl.Rule >= 0 || e.cfg.SynRetries <= 0 {
		return false
	}
	switch f.Proto {
	case rewrite.ProtoTCP:
		return f.IsTCPSyn() && int(fl.SynCount) > e.cfg.SynRetries
	case rewrite.ProtoUDP:
		req := f.PayloadHash()
		switch {
		case fl.SynCount == 0 || req != fl.Request:
			fl.Request, fl.SynCount = req, 1
		case gap >= udpRetryGap && fl.SynCount < 255:
			fl.SynCount++
		}
		return int(fl.SynCount) > e.cfg.SynRetries
	}
	return false
}

// nextUsable returns the first gateway after g in configured order (wrapping), other than g,
// usable for a flow of like's family (an address as a flow key holds it), or -1.
func (e *Engine) nextUsable(g int, like [16]byte) int {
	n := len(e.gws)
	cands := e.candsFor(like)
	for i := 1; i < n; i++ {
		c := (g + i) % n
		if cands[c].Usable {
			return c
		}
	}
	return -1
}

// rotate moves an unanswered flow to the next usable gateway, NAT following: the attempt
// through the old gateway counts as failed, its wire tuple is remembered for late answers.
func (e *Engine) rotate(fl *conntrack.Flow, now int64) bool {
	old := int(fl.Gateway)
	next := e.nextUsable(old, fl.Orig.Src)
	if next < 0 {
		return false
	}
	oldReply := fl.Reply
	if !e.moveFlow(fl, next) {
		return false
	}
	// The request that moved the flow is the first through the new gateway.
	fl.SynCount = 1
	fl.Why = uint8(ReasonRotated)
	if e.rotated == nil {
		e.rotated = make(map[conntrack.Key]rotEntry, 64)
	}
	if len(e.rotated) < maxRotated {
		e.rotated[oldReply] = rotEntry{gateway: int16(old), expires: now + rotatedTimeout}
	}
	if e.health != nil {
		if !fl.Failed {
			e.health.Failure(old, healthDst(fl.Orig.Dst), fl.Created, now)
		}
		e.health.Attempt(next, now)
	}
	fl.Failed = false
	e.noteAttempt(fl, now)
	e.c.Add(Rotations, 1)
	return true
}

// moveFlow places fl on gateway g, NAT following, and re-keys it in the table. On failure (no
// free wire tuple) fl is left as it was.
func (e *Engine) moveFlow(fl *conntrack.Flow, g int) bool {
	old := int(fl.Gateway)
	oldReply, oldWire, oldNAT := fl.Reply, fl.WireIf, fl.NAT
	fl.Gateway = int16(g)
	if e.mapOnto(fl) {
		nr := fl.Reply
		fl.Reply = oldReply
		if e.table.Rekey(fl, nr) == nil {
			if fl.Fast != conntrack.FastNone {
				if nr != oldReply {
					e.fastGone(fl, oldReply, false, int16(old))
				}
				e.markFast(fl)
			}
			if old != g {
				if fl.Moves < 255 {
					fl.Moves++
				}
				if old >= 0 {
					e.gws[old].stats.Live.Add(-1)
				}
				e.gws[g].stats.Placed.Add(1)
				e.gws[g].stats.Live.Add(1)
			}
			return true
		}
	}
	fl.Gateway, fl.Reply, fl.WireIf, fl.NAT = int16(old), oldReply, oldWire, oldNAT
	return false
}

// lateAnswer handles a wire frame for a tuple a flow rotated away from: a SYN-ACK is answered
// with an RST through the gateway it came from (so the server forgets the half-open
// connection); anything else there is dropped. It reports false when key is not such a tuple.
func (e *Engine) lateAnswer(in int, f *rewrite.Frame, key conntrack.Key, b *Batch, now int64) (verdict, bool) {
	ent, ok := e.rotated[key]
	if !ok {
		return verdict{}, false
	}
	if now > ent.expires {
		delete(e.rotated, key)
		return verdict{}, false
	}
	e.c.Add(LateAnswers, 1)
	buf := answerBuf(b)
	if !f.IsTCPSynAck() || buf == nil {
		return verdict{to: Drop, reason: DropRotated}, true
	}
	// The RST's sequence number is what the SYN-ACK acknowledged, so the server accepts it.
	ack := f.TCPAckNum()
	var n int
	if f.IPv6 {
		n = rewrite.BuildRST6(buf[rewrite.VnetHdrLen:], rewrite.Endpoints6{
			SrcMAC: f.DstMAC(), DstMAC: f.SrcMAC(),
			Src: key.Dst, Dst: key.Src, SrcPort: key.DstPort, DstPort: key.SrcPort,
		}, ack, 0)
	} else {
		n = rewrite.BuildRST(buf[rewrite.VnetHdrLen:], rewrite.Endpoints{
			SrcMAC: f.DstMAC(), DstMAC: f.SrcMAC(),
			Src: conntrack.As4(key.Dst), Dst: conntrack.As4(key.Src), SrcPort: key.DstPort, DstPort: key.SrcPort,
		}, ack, 0)
	}
	return verdict{to: ToWire, iface: in, answer: answer(b, n)}, true
}

// expireRotated forgets rotated tuples past their time.
func (e *Engine) expireRotated(now int64) {
	for k, ent := range e.rotated {
		if now > ent.expires {
			delete(e.rotated, k)
		}
	}
}
