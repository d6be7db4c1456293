package shim

import (
	"encoding/binary"

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
// repeated more than syn_retries times. gap is the time since the flow's previous frame.
func (d *Datapath) isRetry(f *rewrite.Frame, fl *conntrack.Flow, gap int64) bool {
	if fl.Origin != conntrack.Outbound || fl.Replied || fl.Gateway < 0 || d.cfg.SynRetries < 0 {
		return false
	}
	switch f.Proto {
	case rewrite.ProtoTCP:
		return f.TCPFlags&(rewrite.TCPSyn|rewrite.TCPAck) == rewrite.TCPSyn && int(fl.SynCount) > d.cfg.SynRetries
	case rewrite.ProtoUDP:
		if gap < udpRetryGap {
			return false
		}
		if fl.SynCount < 255 {
			fl.SynCount++
		}
		// The first datagram counts as the first request, as the first SYN does.
		return int(fl.SynCount)+1 > d.cfg.SynRetries
	}
	return false
}

// nextUsable returns the first usable gateway after g in configured order (wrapping), other
// than g, or -1.
func (d *Datapath) nextUsable(g int) int {
	n := len(d.Gws)
	for i := 1; i < n; i++ {
		c := (g + i) % n
		if d.cands[c].Usable {
			return c
		}
	}
	return -1
}

// rotate moves an unanswered flow to the next usable gateway, NAT following: the attempt
// through the old gateway counts as failed, its wire tuple is remembered for late answers.
func (d *Datapath) rotate(fl *conntrack.Flow, now int64) bool {
	old := int(fl.Gateway)
	next := d.nextUsable(old)
	if next < 0 {
		return false
	}
	oldReply := fl.Reply
	if !d.moveFlow(fl, next) {
		return false
	}
	if d.rotated == nil {
		d.rotated = make(map[conntrack.Key]rotEntry, 64)
	}
	if len(d.rotated) < maxRotated {
		d.rotated[oldReply] = rotEntry{gateway: int16(old), expires: now + rotatedTimeout}
	}
	if d.health != nil {
		d.health.Failure(old, fl.Orig.Dst, fl.Created, now)
		d.health.Attempt(next, now)
	}
	d.C.Rotations.Add(1)
	return true
}

// moveFlow places fl on gateway g, NAT following, and re-keys it in the table. On failure (no
// free wire tuple) fl is left as it was.
func (d *Datapath) moveFlow(fl *conntrack.Flow, g int) bool {
	old := int(fl.Gateway)
	oldReply, oldWire, oldNAT := fl.Reply, fl.WireIf, fl.NAT
	fl.Gateway = int16(g)
	if d.mapOnto(fl) {
		nr := fl.Reply
		fl.Reply = oldReply
		if d.table.Rekey(fl, nr) == nil {
			if old >= 0 {
				d.Gws[old].Live.Add(-1)
			}
			d.Gws[g].Flows.Add(1)
			d.Gws[g].Live.Add(1)
			return true
		}
	}
	fl.Gateway, fl.Reply, fl.WireIf, fl.NAT = int16(old), oldReply, oldWire, oldNAT
	return false
}

// lateAnswer handles a wire frame for a tuple a flow rotated away from: a SYN-ACK is answered
// with an RST through the gateway it came from (so the server forgets the half-open
// connection); anything else there is dropped. It reports false when key is not such a tuple.
func (d *Datapath) lateAnswer(in int, f *rewrite.Frame, key conntrack.Key, now int64) (Verdict, bool) {
	e, ok := d.rotated[key]
	if !ok {
		return Verdict{}, false
	}
	if now > e.expires {
		delete(d.rotated, key)
		return Verdict{}, false
	}
	d.C.LateAnswers.Add(1)
	if f.Proto != rewrite.ProtoTCP || f.TCPFlags&(rewrite.TCPSyn|rewrite.TCPAck) != rewrite.TCPSyn|rewrite.TCPAck || f.L4+16 > f.End {
		return Verdict{Where: Drop, Reason: DropRotated}, true
	}
	ack := binary.BigEndian.Uint32(f.Buf[f.L4+8:])
	n := buildRST(d.scratch[:], f.DstMAC(), f.SrcMAC(), key.Dst, key.Src, key.DstPort, key.SrcPort, ack, 0, false)
	return Verdict{Where: ToWire, Iface: in, Len: n}, true
}

func (d *Datapath) expireRotated(now int64) {
	for k, e := range d.rotated {
		if now > e.expires {
			delete(d.rotated, k)
		}
	}
}

// buildRST writes an Ethernet frame carrying a TCP RST (with ACK when withAck) into out and
// returns its length.
func buildRST(out []byte, srcMAC, dstMAC [6]byte, src, dst [4]byte, sport, dport uint16, seq, ack uint32, withAck bool) int {
	const n = 14 + 20 + 20
	b := out[:n]
	clear(b)
	copy(b[0:6], dstMAC[:])
	copy(b[6:12], srcMAC[:])
	binary.BigEndian.PutUint16(b[12:], 0x0800)
	ip := b[14:34]
	ip[0] = 0x45
	binary.BigEndian.PutUint16(ip[2:], 40)
	ip[6] = 0x40 // DF
	ip[8] = 64
	ip[9] = rewrite.ProtoTCP
	copy(ip[12:16], src[:])
	copy(ip[16:20], dst[:])
	binary.BigEndian.PutUint16(ip[10:], rewrite.Checksum(ip, 0))
	tcp := b[34:54]
	binary.BigEndian.PutUint16(tcp[0:], sport)
	binary.BigEndian.PutUint16(tcp[2:], dport)
	binary.BigEndian.PutUint32(tcp[4:], seq)
	tcp[12] = 5 << 4
	tcp[13] = rewrite.TCPRst
	if withAck {
		binary.BigEndian.PutUint32(tcp[8:], ack)
		tcp[13] |= rewrite.TCPAck
	}
	binary.BigEndian.PutUint16(tcp[16:], rewrite.Checksum(tcp, rewrite.PseudoHeaderSum(src, dst, rewrite.ProtoTCP, 20)))
	return n
}
