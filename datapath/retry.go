package datapath

import (
	"github.com/l2shim/l2shim/conntrack"
	"github.com/l2shim/l2shim/internal/mix"
)

// Applications rarely retry on the same socket: a resolver (dig, glibc, systemd-resolved) and
// a browser try again from a new source port, so the repeated-SYN rule never sees them. Two
// rules follow how they retry:
//
//   - A connection attempt (a TCP SYN, a UDP request) still unanswered unansweredAfter after
//     it was placed counts as a failed attempt of its gateway. Failure accounting counts it
//     only once another gateway has reached the same destination meanwhile, so a dead server
//     benches nothing.
//   - A new attempt from the same local address to the same destination address, port and
//     protocol, made between retryMinGap and retryMaxGap after an attempt that is still
//     unanswered, is placed on another gateway than that attempt's: the application is
//     retrying.

const (
	unansweredAfter = int64(1e9)   // one second: a resolver's first timeout, Linux's first SYN retransmission
	retryMinGap     = int64(500e6) // closer together, attempts are parallel connections, not retries
	retryMaxGap     = int64(10e9)
	pendingSlots    = 8192 // attempts waiting for their answer check; the oldest is dropped beyond
	retrySlots      = 4096 // recent attempts by local address, destination and port
)

// pendingAttempt is an attempt whose answer is checked unansweredAfter after it was placed.
type pendingAttempt struct {
	orig    conntrack.Key
	gateway int16
	at      int64
}

// retryKey identifies what an application retries: from one local address to one service.
type retryKey struct {
	src, dst [4]byte
	dport    uint16
	proto    uint8
}

type retryEntry struct {
	key     retryKey
	orig    conntrack.Key // the attempt's flow
	gateway int16
	at      int64
}

// attempts holds both memories in fixed arrays: nothing grows with traffic.
type attempts struct {
	pending    *[pendingSlots]pendingAttempt
	head, n    int
	recent     *[retrySlots]retryEntry
	seedRecent uint64
}

func newAttempts(seed uint64) attempts {
	return attempts{pending: new([pendingSlots]pendingAttempt), recent: new([retrySlots]retryEntry), seedRecent: seed ^ mix.Golden}
}

func retryKeyOf(k conntrack.Key) retryKey {
	return retryKey{src: k.Src, dst: k.Dst, dport: k.DstPort, proto: k.Proto}
}

func (a *attempts) slot(r retryKey) *retryEntry {
	h := a.seedRecent
	h = mix.Mix64(h ^ uint64(r.src[0])<<24 ^ uint64(r.src[1])<<16 ^ uint64(r.src[2])<<8 ^ uint64(r.src[3]))
	h = mix.Mix64(h ^ uint64(r.dst[0])<<24 ^ uint64(r.dst[1])<<16 ^ uint64(r.dst[2])<<8 ^ uint64(r.dst[3]))
	h = mix.Mix64(h ^ uint64(r.dport)<<8 ^ uint64(r.proto))
	return &a.recent[h%retrySlots]
}

// noteAttempt remembers a new attempt placed on its gateway, for both rules.
func (e *Engine) noteAttempt(fl *conntrack.Flow, now int64) {
	a := &e.attempts
	if a.n == pendingSlots {
		a.head = (a.head + 1) % pendingSlots
		a.n--
	}
	a.pending[(a.head+a.n)%pendingSlots] = pendingAttempt{orig: fl.Orig, gateway: fl.Gateway, at: now}
	a.n++
	r := retryKeyOf(fl.Orig)
	*a.slot(r) = retryEntry{key: r, orig: fl.Orig, gateway: fl.Gateway, at: now}
}

// retryElsewhere returns the gateway a new attempt with key orig goes to instead of g when it
// retries an unanswered attempt made through g, or g.
func (e *Engine) retryElsewhere(orig conntrack.Key, g int, now int64) int {
	if g < 0 || e.cfg.SynRetries <= 0 {
		return g
	}
	r := retryKeyOf(orig)
	prev := e.attempts.slot(r)
	if prev.key != r || int(prev.gateway) != g || now-prev.at < retryMinGap || now-prev.at > retryMaxGap || prev.orig == orig {
		return g
	}
	fl := e.table.LookupOrig(prev.orig)
	if fl == nil || fl.Replied || int(fl.Gateway) != g {
		return g
	}
	if alt := e.nextUsable(g); alt >= 0 {
		return alt
	}
	return g
}

// checkUnanswered counts as failed the attempts still unanswered unansweredAfter after they
// were placed. e.mu is held.
func (e *Engine) checkUnanswered(now int64) {
	a := &e.attempts
	for a.n > 0 {
		p := &a.pending[a.head]
		if now-p.at < unansweredAfter {
			return
		}
		a.head = (a.head + 1) % pendingSlots
		a.n--
		fl := e.table.LookupOrig(p.orig)
		if fl == nil || fl.Replied || fl.Failed || fl.Gateway != p.gateway || e.health == nil {
			continue
		}
		fl.Failed = true
		e.health.Failure(int(p.gateway), fl.Orig.Dst, p.at, now)
	}
}
