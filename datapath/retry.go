package datapath

import (
	"encoding/binary"

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
	src, dst [16]byte // as flow keys hold them
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
	be := binary.BigEndian
	h := a.seedRecent
	if !conntrack.Is4(r.src) || !conntrack.Is4(r.dst) {
		// IPv6: the addresses' first 12 bytes too. IPv4 addresses hash their four bytes
		// alone, as before keys held 16.
		h = mix.Mix64(h ^ be.Uint64(r.src[:8]))
		h = mix.Mix64(h ^ be.Uint64(r.dst[:8]))
		h = mix.Mix64(h ^ uint64(be.Uint32(r.src[8:12]))<<32 ^ uint64(be.Uint32(r.dst[8:12])))
	}
	h = mix.Mix64(h ^ uint64(be.Uint32(r.src[12:])))
	h = mix.Mix64(h ^ uint64(be.Uint32(r.dst[12:])))
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
	if alt := e.nextUsable(g, orig.Src); alt >= 0 {
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
		if fl == nil || fl.Failed || fl.Gateway != p.gateway || e.health == nil {
			continue
		}
		if !fl.Replied {
			// The kernel may have carried the answer since the last sync.
			e.refreshFromKernel(fl)
		}
		if fl.Replied {
			continue
		}
		fl.Failed = true
		e.health.Failure(int(p.gateway), healthDst(fl.Orig.Dst), p.at, now)
	}
}

// healthDst is the destination failure accounting (failover.Health, by 32-bit destination)
// knows a flow's remote address a by: an IPv4 address itself, an IPv6 address folded into 32
// bits (two destinations that fold alike share their record, as two in one hash slot would).
func healthDst(a [16]byte) [4]byte {
	if v4, ok := conntrack.V4(a); ok {
		return v4
	}
	be := binary.BigEndian
	h := mix.Mix64(be.Uint64(a[:8]) ^ mix.Mix64(be.Uint64(a[8:])^mix.Golden))
	return [4]byte{byte(h >> 56), byte(h >> 48), byte(h >> 40), byte(h >> 32)}
}
