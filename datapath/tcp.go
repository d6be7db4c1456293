package datapath

import (
	"github.com/l2shim/l2shim/conntrack"
	"github.com/l2shim/l2shim/rewrite"
)

// TCP sequence tracking, after nf_conntrack's tcp_in_window, from the host's point of view:
// the host's own segments are trusted and say what it expects; a segment from the wire may
// move the flow's state only if the host would accept it. Anyone on the path can send a TCP
// segment with any sequence number; without this, one forged RST would close a NATed flow in
// l2shim while the host, which only answers it with a challenge ACK, keeps the connection,
// and the flow's next segment would leave untranslated.

// unknownWScale is assumed for a connection whose handshake l2shim did not see: the largest
// scale RFC 7323 allows, so its window is never underestimated.
const unknownWScale = 14

// minWindow is the least window a flow is credited with when its receiver announced less (a
// zero window still lets retransmissions and probes through).
const minWindow = 65535

// seqBefore reports whether sequence number a comes before b (RFC 1982 arithmetic).
func seqBefore(a, b uint32) bool { return int32(a-b) < 0 }

// trackHostTCP records a segment the host sent on flow fl: how far it has sent, what it
// acknowledged and the window it announced.
func trackHostTCP(f *rewrite.Frame, fl *conntrack.Flow) {
	if f.Proto != rewrite.ProtoTCP || f.L4 < 0 {
		return
	}
	end := f.TCPSeq() + f.TCPSeqLen()
	if f.TCPFlags&rewrite.TCPSyn != 0 {
		// A (new) connection on the tuple: what the host acknowledged before is history.
		fl.HostISS, fl.HostAck, fl.HostRcvNext = f.TCPSeq(), 0, 0
	}
	if !fl.HostKnown || seqBefore(fl.HostSndNext, end) || f.IsTCPSyn() {
		fl.HostSndNext = end
	}
	win := uint32(f.TCPWindow())
	if f.TCPFlags&rewrite.TCPSyn != 0 {
		// The window of a SYN is never scaled; the scale it offers applies from then on.
		fl.HostWScale = 0
		if ws, ok := f.TCPWindowScale(); ok {
			fl.HostWScale = ws
		}
	} else {
		if !fl.HostKnown {
			fl.HostWScale = unknownWScale
		}
		win <<= fl.HostWScale
	}
	fl.HostWin = max(win, minWindow)
	if f.TCPFlags&rewrite.TCPAck != 0 {
		ack := f.TCPAckNum()
		if !fl.HostKnown || fl.HostAck == 0 || seqBefore(fl.HostAck, ack) {
			fl.HostAck = ack
		}
		if fl.HostRcvNext == 0 || seqBefore(fl.HostRcvNext, ack) {
			fl.HostRcvNext = ack
		}
	}
	fl.HostKnown = true
}

// wireTCP checks a segment from the wire on flow fl against what the host announced. It
// returns the TCP flags the flow's state may act on and whether the segment counts for the
// flow at all (as an answer, as traffic that keeps it alive). A segment that does not count is
// still delivered: the host decides what to do with it (drop it, or answer with a challenge
// ACK whose reply, from the real peer, then counts).
func wireTCP(f *rewrite.Frame, fl *conntrack.Flow, opened bool) (uint8, bool) {
	flags := f.TCPFlags
	seq := f.TCPSeq()
	end := seq + f.TCPSeqLen()
	switch {
	case opened:
		// The SYN that just opened an inbound flow defines it.
		fl.HostRcvNext = end
		return flags, true
	case !fl.HostKnown:
		// An inbound connection the host has not answered yet: only the client's SYN again,
		// or its RST for exactly that SYN.
		if f.IsTCPSyn() || flags&rewrite.TCPRst != 0 && seq == fl.HostRcvNext {
			return flags, true
		}
		return 0, false
	case fl.Origin == conntrack.Outbound && (fl.TCPState == conntrack.TCPSynSent || fl.TCPState == conntrack.TCPSynRecv):
		// Until the handshake completes, only a segment acknowledging the host's SYN answers
		// it: a SYN-ACK, or an RST that refuses the connection (RFC 793 3.4). Its ACK covers
		// the SYN and at most what the host sent with it (TCP Fast Open).
		ack := f.TCPAckNum()
		if flags&rewrite.TCPAck == 0 || seqBefore(ack, fl.HostISS+1) || seqBefore(fl.HostSndNext, ack) {
			return 0, false
		}
		if flags&rewrite.TCPSyn != 0 {
			fl.HostRcvNext = end
		}
		return flags, true
	}
	if flags&rewrite.TCPRst != 0 {
		// RFC 5961: the host resets only on an RST at exactly the sequence number it expects
		// next; any other it answers with a challenge ACK, or drops.
		if seq == fl.HostRcvNext || seq == fl.HostAck {
			return flags, true
		}
		return 0, false
	}
	if flags&rewrite.TCPAck != 0 {
		// No acknowledgment of what the host never sent; and the one that completes a
		// handshake the wire opened must acknowledge the host's SYN-ACK, which a blind
		// spoofer never saw.
		ack := f.TCPAckNum()
		if seqBefore(fl.HostSndNext, ack) ||
			fl.Origin == conntrack.Inbound && fl.TCPState == conntrack.TCPSynRecv && seqBefore(ack, fl.HostISS+1) {
			return 0, false
		}
	}
	// In the window the host announced: not beyond its right edge, and not older than a
	// window behind what it acknowledged (retransmissions of data it has).
	right := fl.HostAck + fl.HostWin
	if seqBefore(right, seq) || seqBefore(end, fl.HostAck-fl.HostWin) {
		return 0, false
	}
	if seqBefore(fl.HostRcvNext, end) && !seqBefore(right, end) {
		fl.HostRcvNext = end
	}
	return flags, true
}
