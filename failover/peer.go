package failover

import (
	"fmt"
	"time"
)

// Tunnel peers: whether a tunnel uplink's far end answers, from its byte counters.
//
// A WireGuard link stays up when its peer is gone: nothing in the link state changes. What
// changes is that the tunnel keeps sending (data, and handshake initiations every 5 s while
// data waits) and receives nothing. The rule, fed once a second with the peers' total bytes
// received and sent:
//
//   - Silent when bytes went out at some moment after the last time bytes came in, and that
//     moment is more than Limit ago while still nothing came in. Limit should cover the peer's
//     own delay in answering one-way traffic: a WireGuard peer that receives data and has none
//     to send back sends a keepalive 10 s later (its passive keepalive), so l2shim uses
//     probe_interval × probe_misses plus those 10 s.
//   - An idle tunnel (nothing sent) is never judged: no handshake for a long time means
//     nothing, since WireGuard only shakes hands when it has traffic.
//   - Not silent again as soon as bytes come in, or once it has been silent for Limit with
//     nothing more sent: then it is given new flows again, which either get answers or make it
//     silent again after Limit. (New flows are the only traffic that could show the peer is
//     back when nothing else uses the tunnel.)

// PeerWatch follows one tunnel's peer. The zero value is a tunnel never sampled, not silent.
type PeerWatch struct {
	sampled     bool
	rx, tx      uint64
	rxAt        time.Time // last time rx grew (or the first sample)
	sentAt      time.Time // first time tx grew after rxAt; zero when it has not
	silent      bool
	silentSince time.Time
	txAtSilence uint64
}

// Sample takes the tunnel's counters at now and reports whether the verdict changed, the
// verdict, and its reason in words.
func (w *PeerWatch) Sample(now time.Time, rx, tx uint64, limit time.Duration) (changed, silent bool, reason string) {
	if !w.sampled || rx < w.rx || tx < w.tx {
		// First sample, or counters reset (the device was re-created): start afresh.
		was := w.silent
		*w = PeerWatch{sampled: true, rx: rx, tx: tx, rxAt: now}
		return was, false, ""
	}
	if rx != w.rx {
		w.rx, w.tx, w.rxAt, w.sentAt = rx, tx, now, time.Time{}
		if w.silent {
			w.silent = false
			return true, false, "the peer answers again"
		}
		return false, false, ""
	}
	if tx != w.tx {
		if w.sentAt.IsZero() {
			w.sentAt = now
		}
		w.tx = tx
	}
	if w.silent {
		if w.tx == w.txAtSilence && now.Sub(w.silentSince) > limit {
			// Nothing offered since it went silent: let new flows try it again.
			w.silent, w.sentAt, w.rxAt = false, time.Time{}, now
			return true, false, "retrying a silent peer"
		}
		return false, true, ""
	}
	if !w.sentAt.IsZero() && now.Sub(w.sentAt) > limit {
		w.silent, w.silentSince, w.txAtSilence = true, now, w.tx
		return true, true, fmt.Sprintf("tunnel peer silent: traffic sent for %v without an answer", now.Sub(w.sentAt).Round(time.Second))
	}
	return false, false, ""
}
