package failover

import (
	"github.com/l2shim/l2shim/internal/mix"

	"fmt"
	"math"
	"time"
)

// Failure accounting: IPNetRouterX's "Active" and "Failed" columns, and the benching they drive.
//
// The datapath reports three events per gateway:
//
//   - Attempt: a new outbound TCP connection (its first SYN) or a new UDP request flow was placed
//     on the gateway. A SYN rotated to another gateway is a new attempt on that gateway.
//   - Success: something came back from the destination through the gateway: a SYN-ACK, any UDP
//     reply, a TCP RST, or an ICMP error whose source is the destination itself (port or protocol
//     unreachable). Each proves that the gateway's path reaches that destination. An attempt
//     answered by an ICMP error from a router on the way (host or net unreachable from a hop) did
//     not fail through the gateway's fault either, so report neither Success nor Failure for it:
//     it proves the gateway's own path works but says nothing about the destination.
//   - Failure: an attempt got no answer at all and was rotated away (more than syn_retries SYNs,
//     or unanswered UDP requests). An attempt that is never answered and never rotated (no
//     other gateway was usable) is not reported as a failure.
//
// A failure counts against its gateway only when another gateway reached the same destination
// address meanwhile: from just before the failed attempt began (start - 1 s) until the failure
// ages out of the window. A destination that answers nowhere (a dead server, a port dropped on
// every path) therefore benches no gateway. Until such evidence arrives a failure is "pending":
// shown in Stats, never counted. A failure whose attempt began more than one window ago is not
// recorded at all.
//
// A gateway is benched while counted failures >= FailRatio × attempts and attempts >= MinAttempts,
// both within the window. Attempts still in flight count as attempts. A failure is accounted at
// the time its attempt began (not when it was declared), so a failure lives exactly as long as
// its attempt and the failed share never exceeds 1. Once benched a gateway gets no new flows, so
// its counts only age; when the condition no longer holds it is tried again. With
// HealthConfig.ProbeConfirm set (probes configured) it additionally waits for ProbeOK.
//
// Benching speed: because attempts in flight count, when every new attempt through a gateway
// fails after D (the rotation delay: about 3 s with syn_retries = 2) the failed share reaches
// 1/2 about 2·D after the outage began (6 s), whatever the connection rate r, plus S/r when S
// successful attempts are still in the window, and never before MinAttempts attempts are in
// the window. Active probes with ICMP targets are the fast detector; this is the fallback.
//
// Time is the caller's monotonic clock in nanoseconds; a time earlier than one already seen is
// taken as the latest seen. The window is kept as 60 buckets of Window/60 (1 s for the default
// 60 s), so an event counts for at least 59/60 of the window and at most the whole window, and
// memory per gateway does not depend on the window or the traffic.
//
// Per destination, a fixed-size table (HealthConfig.Destinations entries, 4-way set associative,
// least recently used replaced) keeps the last time each gateway reached it and each gateway's
// pending failures to it. A destination pushed out of the table takes its pending failures with
// it (they never count). Memory is fixed at NewHealth; no method allocates except Transitions
// when it has something to report.

// HealthConfig configures failure accounting. Zero values take the [failover] defaults.
type HealthConfig struct {
	Window      time.Duration // sliding window; default 60 s
	FailRatio   float64       // share of failed attempts that benches; default 0.5
	MinAttempts int           // attempts needed in the window before benching; default 4
	// ProbeConfirm: a benched gateway whose counts no longer bench it stays benched until
	// ProbeOK reports a successful probe round (set it when probe_interval > 0).
	ProbeConfirm bool
	// Destinations bounds the per-destination table; default DefaultDestinations.
	Destinations int
}

// DefaultDestinations is the default size of the per-destination table.
const DefaultDestinations = 4096

const (
	healthBuckets = 60                 // ring buckets per gateway
	destWays      = 4                  // set associativity of the destination table
	pendSlots     = 2                  // pending-failure entries per destination and gateway
	lookback      = int64(time.Second) // evidence this long before an attempt began still counts
	never         = math.MinInt64 / 2  // "never reached"; far below any real time, no overflow
)

// Transition is a gateway being benched or returning, with a reason for the log.
type Transition struct {
	Gateway int
	Benched bool
	Reason  string // e.g. "5 of 8 connection attempts failed in 60s"
}

// GatewayHealth is one gateway's accounting at a point in time.
type GatewayHealth struct {
	Attempts int // connection attempts in the window, in flight included
	Failures int // counted failures (another gateway reached the destination)
	Pending  int // failures not (yet) seen to work through another gateway
	Benched  bool
	// AwaitingProbe: benched only because recovery waits for a probe (ProbeConfirm).
	AwaitingProbe bool
}

// Health is the failure accounting of all gateways. It is not safe for concurrent use: the
// datapath serializes calls. Gateways are numbered 0..gateways-1 as in the config.
type Health struct {
	cfg   HealthConfig
	width int64 // bucket width in ns
	now   int64 // latest time seen
	gws   []gwHealth

	// destination table: slot s (set s/destWays) holds key[s]; per gateway g,
	// reached[s*G+g] and pend[(s*G+g)*pendSlots ...].
	setMask uint32
	used    []bool
	key     []uint32
	touched []int64
	reached []int64
	pend    []pendEntry
}

type pendEntry struct {
	b int64 // bucket of the failed attempt's start
	n int32 // failures in that bucket; 0 = free
}

type gwHealth struct {
	cur                       int64 // newest bucket in the ring
	attempts, failed, pending [healthBuckets]int32
	sumA, sumF, sumP          int

	benched       bool
	awaitingProbe bool
	reported      bool // benched as last reported by Transitions
	// counts and cause at the last change, for the Transition reason
	atA, atF int
	byProbe  bool
}

// NewHealth returns the accounting for gateways gateways.
func NewHealth(cfg HealthConfig, gateways int) *Health {
	if cfg.Window <= 0 {
		cfg.Window = 60 * time.Second
	}
	if cfg.FailRatio <= 0 {
		cfg.FailRatio = 0.5
	}
	if cfg.MinAttempts <= 0 {
		cfg.MinAttempts = 4
	}
	if cfg.Destinations <= 0 {
		cfg.Destinations = DefaultDestinations
	}
	if gateways < 0 {
		gateways = 0
	}
	sets := 1
	for sets*destWays < cfg.Destinations {
		sets <<= 1
	}
	cfg.Destinations = sets * destWays
	h := &Health{
		cfg:     cfg,
		width:   max(1, (int64(cfg.Window)+healthBuckets-1)/healthBuckets),
		now:     never,
		gws:     make([]gwHealth, gateways),
		setMask: uint32(sets - 1),
		used:    make([]bool, cfg.Destinations),
		key:     make([]uint32, cfg.Destinations),
		touched: make([]int64, cfg.Destinations),
		reached: make([]int64, cfg.Destinations*gateways),
		pend:    make([]pendEntry, cfg.Destinations*gateways*pendSlots),
	}
	for i := range h.gws {
		h.gws[i].cur = never
	}
	return h
}

// Config returns the configuration in effect, defaults applied.
func (h *Health) Config() HealthConfig { return h.cfg }

// Attempt records a new connection attempt placed on gw.
func (h *Health) Attempt(gw int, now int64) {
	now = h.clock(now)
	g := &h.gws[gw]
	b := h.bucket(now)
	g.advance(b)
	g.attempts[ringPos(b)]++
	g.sumA++
	h.eval(g)
}

// Success records that dst answered through gw (a reply, an RST, or an ICMP error from dst
// itself). It makes other gateways' pending failures to dst count.
func (h *Health) Success(gw int, dst [4]byte, now int64) {
	now = h.clock(now)
	s := h.slot(dst, now, true)
	G := len(h.gws)
	h.reached[s*G+gw] = now
	for o := range h.gws {
		if o == gw {
			continue
		}
		pe := h.pend[(s*G+o)*pendSlots:][:pendSlots]
		var g *gwHealth
		for i := range pe {
			if pe[i].n == 0 {
				continue
			}
			if g == nil {
				g = &h.gws[o]
				g.advance(h.bucket(now))
			}
			if g.live(pe[i].b) {
				p := ringPos(pe[i].b)
				g.pending[p] -= pe[i].n
				g.failed[p] += pe[i].n
				g.sumP -= int(pe[i].n)
				g.sumF += int(pe[i].n)
			}
			pe[i] = pendEntry{}
		}
		if g != nil {
			h.eval(g)
		}
	}
}

// Failure records that an attempt through gw to dst, begun at start, got no answer. It counts
// at once when another gateway reached dst since start - 1 s, and is held pending otherwise.
func (h *Health) Failure(gw int, dst [4]byte, start, now int64) {
	now = h.clock(now)
	start = min(start, now)
	g := &h.gws[gw]
	g.advance(h.bucket(now))
	b := h.bucket(start)
	if !g.live(b) {
		return // the attempt has left the window already
	}
	p := ringPos(b)
	G := len(h.gws)
	s := h.slot(dst, now, false)
	if s >= 0 {
		h.touched[s] = now
		for o, t := range h.reached[s*G : (s+1)*G] {
			if o != gw && t >= start-lookback {
				g.failed[p]++
				g.sumF++
				h.eval(g)
				return
			}
		}
	} else {
		s = h.slot(dst, now, true)
	}
	g.pending[p]++
	g.sumP++
	pe := h.pend[(s*G+gw)*pendSlots:][:pendSlots]
	free, newest := -1, -1
	for i := range pe {
		switch {
		case pe[i].n > 0 && !g.live(pe[i].b):
			pe[i] = pendEntry{} // aged out with its bucket
			fallthrough
		case pe[i].n == 0:
			if free < 0 {
				free = i
			}
		case pe[i].b == b:
			pe[i].n++
			return
		default:
			if newest < 0 || pe[i].b > pe[newest].b {
				newest = i
			}
		}
	}
	if free >= 0 {
		pe[free] = pendEntry{b: b, n: 1}
		return
	}
	// All entries hold other live buckets: merge into the newest one. Its bucket is older
	// than b, so the failure may age out a little early, never late.
	pe[newest].n++
	g.pending[p]--
	g.pending[ringPos(pe[newest].b)]++
}

// ProbeOK reports a successful probe round through gw: call it after each round that leaves
// the gateway's ProbeState up (with ICMP targets that means the upstream answers; ARP-only it
// only proves the LAN side). With ProbeConfirm, it ends the bench of a gateway whose counts no
// longer bench it; a benched gateway therefore recovers at most one probe interval after its
// failures age out.
func (h *Health) ProbeOK(gw int, now int64) {
	now = h.clock(now)
	g := &h.gws[gw]
	g.advance(h.bucket(now))
	h.eval(g)
	if g.awaitingProbe {
		g.benched, g.awaitingProbe = false, false
		g.atA, g.atF, g.byProbe = g.sumA, g.sumF, true
	}
}

// Benched reports whether gw gets no new flows because of its failures.
func (h *Health) Benched(gw int, now int64) bool {
	now = h.clock(now)
	g := &h.gws[gw]
	g.advance(h.bucket(now))
	h.eval(g)
	return g.benched
}

// Stats returns gw's counts and bench state.
func (h *Health) Stats(gw int, now int64) GatewayHealth {
	now = h.clock(now)
	g := &h.gws[gw]
	g.advance(h.bucket(now))
	h.eval(g)
	return GatewayHealth{
		Attempts:      g.sumA,
		Failures:      g.sumF,
		Pending:       g.sumP,
		Benched:       g.benched,
		AwaitingProbe: g.awaitingProbe,
	}
}

// Transitions appends to out every gateway whose bench state changed since the previous call
// (the net change: a bench that began and ended between two calls is not reported) and
// returns it. Call it periodically (every ~100 ms) to log changes and update the gateway table.
func (h *Health) Transitions(now int64, out []Transition) []Transition {
	now = h.clock(now)
	b := h.bucket(now)
	for i := range h.gws {
		g := &h.gws[i]
		g.advance(b)
		h.eval(g)
		if g.benched == g.reported {
			continue
		}
		g.reported = g.benched
		t := Transition{Gateway: i, Benched: g.benched}
		counts := FailureText(g.atA, g.atF, h.cfg.Window)
		switch {
		case g.benched:
			t.Reason = counts
		case g.byProbe:
			t.Reason = "failures aged out (" + counts + "), a probe confirmed"
		default:
			t.Reason = "failures aged out (" + counts + ")"
		}
		out = append(out, t)
	}
	return out
}

// FailureText formats counts the way logs and the status table show them:
// "5 of 8 connection attempts failed in 60s".
func FailureText(attempts, failures int, window time.Duration) string {
	noun := "connection attempts"
	if attempts == 1 {
		noun = "connection attempt"
	}
	return fmt.Sprintf("%d of %d %s failed in %s", failures, attempts, noun, durText(window))
}

// durText prints whole seconds as "60s" rather than time.Duration's "1m0s".
func durText(d time.Duration) string {
	if d > 0 && d%time.Second == 0 {
		return fmt.Sprintf("%ds", d/time.Second)
	}
	return d.String()
}

// eval updates g's bench latch from its current counts.
func (h *Health) eval(g *gwHealth) {
	bench := g.sumA >= h.cfg.MinAttempts && float64(g.sumF) >= h.cfg.FailRatio*float64(g.sumA)
	switch {
	case bench:
		if !g.benched {
			g.atA, g.atF, g.byProbe = g.sumA, g.sumF, false
		}
		g.benched, g.awaitingProbe = true, false
	case g.benched && h.cfg.ProbeConfirm:
		if !g.awaitingProbe {
			g.atA, g.atF = g.sumA, g.sumF
		}
		g.awaitingProbe = true
	case g.benched:
		g.benched = false
		g.atA, g.atF, g.byProbe = g.sumA, g.sumF, false
	}
}

func (h *Health) clock(now int64) int64 {
	if now < h.now {
		return h.now
	}
	h.now = now
	return now
}

// bucket is floor(t / width).
func (h *Health) bucket(t int64) int64 {
	b := t / h.width
	if t%h.width < 0 {
		b--
	}
	return b
}

func ringPos(b int64) int {
	p := int(b % healthBuckets)
	if p < 0 {
		p += healthBuckets
	}
	return p
}

// live reports whether bucket b is still in g's ring.
func (g *gwHealth) live(b int64) bool { return b <= g.cur && b > g.cur-healthBuckets }

// advance moves g's ring forward to bucket b, dropping what leaves the window.
func (g *gwHealth) advance(b int64) {
	if b <= g.cur {
		return
	}
	if b-g.cur >= healthBuckets {
		g.attempts, g.failed, g.pending = [healthBuckets]int32{}, [healthBuckets]int32{}, [healthBuckets]int32{}
		g.sumA, g.sumF, g.sumP = 0, 0, 0
		g.cur = b
		return
	}
	for g.cur < b {
		g.cur++
		p := ringPos(g.cur)
		g.sumA -= int(g.attempts[p])
		g.sumF -= int(g.failed[p])
		g.sumP -= int(g.pending[p])
		g.attempts[p], g.failed[p], g.pending[p] = 0, 0, 0
	}
}

func destHash(k uint32) uint32 {
	return uint32(mix.Mix64(uint64(k)*mix.Golden) >> 32)
}

// slot returns dst's table slot, or -1 when it has none and create is false. A created slot
// replaces the least recently used one of its set; that one's pending failures are dropped.
func (h *Health) slot(dst [4]byte, now int64, create bool) int {
	k := uint32(dst[0])<<24 | uint32(dst[1])<<16 | uint32(dst[2])<<8 | uint32(dst[3])
	base := int(destHash(k)&h.setMask) * destWays
	victim := -1
	for s := base; s < base+destWays; s++ {
		if !h.used[s] {
			if victim < 0 || h.used[victim] {
				victim = s
			}
			continue
		}
		if h.key[s] == k {
			h.touched[s] = now
			return s
		}
		if victim < 0 || (h.used[victim] && h.touched[s] < h.touched[victim]) {
			victim = s
		}
	}
	if !create {
		return -1
	}
	s := victim
	G := len(h.gws)
	if h.used[s] {
		for gw := range h.gws {
			pe := h.pend[(s*G+gw)*pendSlots:][:pendSlots]
			g := &h.gws[gw]
			for i := range pe {
				if pe[i].n > 0 && g.live(pe[i].b) {
					g.pending[ringPos(pe[i].b)] -= pe[i].n
					g.sumP -= int(pe[i].n)
				}
				pe[i] = pendEntry{}
			}
		}
	}
	h.used[s], h.key[s], h.touched[s] = true, k, now
	for i := range h.reached[s*G : (s+1)*G] {
		h.reached[s*G+i] = never
	}
	return s
}
