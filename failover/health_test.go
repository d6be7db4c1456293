package failover

import (
	"math/rand/v2"
	"runtime"
	"strings"
	"testing"
	"time"
)

const sec = int64(time.Second)

func ms(n int64) int64 { return n * int64(time.Millisecond) }

func dstN(i int) [4]byte { return [4]byte{byte(i >> 24), byte(i >> 16), byte(i >> 8), byte(i)} }

var dstA = [4]byte{192, 0, 2, 1}

// sim runs events in time order (insertion order among equal times), as the datapath would
// report them; an event may schedule more.
type sim struct {
	evs []simEvent
}

type simEvent struct {
	t int64
	f func(now int64)
}

func (s *sim) at(t int64, f func(now int64)) { s.evs = append(s.evs, simEvent{t, f}) }

func (s *sim) run() {
	for len(s.evs) > 0 {
		m := 0
		for i := range s.evs {
			if s.evs[i].t < s.evs[m].t {
				m = i
			}
		}
		e := s.evs[m]
		s.evs = append(s.evs[:m], s.evs[m+1:]...)
		e.f(e.t)
	}
}

func defaultHealth(gateways int) *Health {
	return NewHealth(HealthConfig{Window: 60 * time.Second, FailRatio: 0.5, MinAttempts: 4}, gateways)
}

func TestHealthDefaults(t *testing.T) {
	h := NewHealth(HealthConfig{}, 2)
	c := h.Config()
	if c.Window != 60*time.Second || c.FailRatio != 0.5 || c.MinAttempts != 4 || c.Destinations != DefaultDestinations {
		t.Fatalf("defaults: %+v", c)
	}
	if h.width != sec {
		t.Fatalf("bucket width %d, want 1s for a 60s window", h.width)
	}
}

// TestHealthWindowAging: an attempt and its failure count for the window and then leave it.
func TestHealthWindowAging(t *testing.T) {
	for _, tc := range []struct {
		at, check int64
		want      int
	}{
		{0, 0, 1},
		{0, 59*sec + 999*ms(1), 1},
		{0, 60 * sec, 0},
		{ms(500), 60 * sec, 0}, // same bucket as 0: ages out at 59.5 s of age
		{ms(500), 59*sec + ms(999), 1},
		{10 * sec, 69*sec + ms(999), 1},
		{10 * sec, 70 * sec, 0},
	} {
		h := defaultHealth(2)
		h.Success(1, dstA, tc.at)
		h.Attempt(0, tc.at)
		h.Failure(0, dstA, tc.at, tc.at+ms(10))
		st := h.Stats(0, tc.check)
		if st.Attempts != tc.want || st.Failures != tc.want {
			t.Errorf("attempt at %v, checked at %v: %+v, want %d attempt(s) and failure(s)",
				time.Duration(tc.at), time.Duration(tc.check), st, tc.want)
		}
	}
	// A failure whose attempt began more than a window ago is not recorded.
	h := defaultHealth(2)
	h.Success(1, dstA, 100*sec)
	h.Failure(0, dstA, 30*sec, 100*sec)
	if st := h.Stats(0, 100*sec); st.Failures != 0 || st.Pending != 0 {
		t.Errorf("stale failure recorded: %+v", st)
	}
}

// TestHealthBenchRule: min_attempts and fail_ratio.
func TestHealthBenchRule(t *testing.T) {
	for _, tc := range []struct {
		minAttempts       int
		ratio             float64
		attempts, failing int
		want              bool
	}{
		{4, 0.5, 3, 3, false}, // below min_attempts
		{4, 0.5, 4, 2, true},
		{4, 0.5, 4, 1, false},
		{4, 0.5, 10, 5, true},
		{4, 0.5, 10, 4, false},
		{4, 1, 4, 3, false},
		{4, 1, 4, 4, true},
		{1, 0.5, 1, 1, true},
		{1, 0.5, 2, 1, true},
		{2, 0.25, 8, 2, true},
		{2, 0.25, 9, 2, false},
	} {
		h := NewHealth(HealthConfig{Window: 60 * time.Second, FailRatio: tc.ratio, MinAttempts: tc.minAttempts}, 2)
		h.Success(1, dstA, 0)
		for i := 0; i < tc.attempts; i++ {
			h.Attempt(0, ms(int64(i)))
		}
		for i := 0; i < tc.failing; i++ {
			h.Failure(0, dstA, ms(int64(i)), 3*sec)
		}
		if got := h.Benched(0, 3*sec); got != tc.want {
			t.Errorf("min %d ratio %v: %d of %d failed: benched %v, want %v",
				tc.minAttempts, tc.ratio, tc.failing, tc.attempts, got, tc.want)
		}
		if h.Benched(1, 3*sec) {
			t.Errorf("gateway 1 benched without attempts")
		}
	}
}

// TestHealthEvidence: a failure counts only when another gateway reached the destination
// between just before the attempt began and the failure leaving the window.
func TestHealthEvidence(t *testing.T) {
	const start, fail = 100 * sec, 103 * sec // attempt, then rotated away after 3 s
	other := [4]byte{192, 0, 2, 99}
	for _, tc := range []struct {
		name            string
		gw              int     // who reaches
		dst             [4]byte // what it reaches
		at              int64   // when
		failed, pending int     // right after the failure
		later           int64   // check time
		failedLater     int
	}{
		{"other gateway long before", 1, dstA, start - 2*sec, 0, 1, 150 * sec, 0},
		{"other gateway just before", 1, dstA, start - ms(500), 1, 0, 150 * sec, 1},
		{"other gateway during the attempt", 1, dstA, start + sec, 1, 0, 150 * sec, 1},
		{"rotated SYN answered", 1, dstA, fail + ms(20), 0, 1, 150 * sec, 1},
		{"other gateway late in the window", 1, dstA, start + 59*sec, 0, 1, start + 59*sec, 1},
		{"other gateway after the window", 1, dstA, start + 61*sec, 0, 1, start + 61*sec, 0},
		{"same gateway", 0, dstA, fail + sec, 0, 1, 150 * sec, 0},
		{"other destination", 1, other, fail + sec, 0, 1, 150 * sec, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := defaultHealth(2)
			if tc.at < start {
				h.Success(tc.gw, tc.dst, tc.at)
			}
			h.Attempt(0, start)
			if tc.at >= start && tc.at < fail {
				h.Success(tc.gw, tc.dst, tc.at)
			}
			h.Failure(0, dstA, start, fail)
			st := h.Stats(0, fail)
			if st.Failures != tc.failed || st.Pending != tc.pending {
				t.Fatalf("after the failure: %+v, want %d failed %d pending", st, tc.failed, tc.pending)
			}
			if tc.at > fail {
				h.Success(tc.gw, tc.dst, tc.at)
			}
			st = h.Stats(0, tc.later)
			if st.Failures != tc.failedLater || st.Pending != 0 && tc.failedLater == 1 {
				t.Fatalf("at %v: %+v, want %d failed", time.Duration(tc.later), st, tc.failedLater)
			}
		})
	}
}

// TestHealthDeadEverywhere: a destination that answers on no path benches nobody, however
// many attempts rotate through every gateway; its failures stay pending and age out.
func TestHealthDeadEverywhere(t *testing.T) {
	h := defaultHealth(3)
	var s sim
	for i := int64(0); i < 20; i++ {
		for gw := 0; gw < 3; gw++ {
			start := i*sec + int64(gw)*3*sec // SYNs at start, +1 s, +3 s: rotated at +3 s
			s.at(start, func(now int64) { h.Attempt(gw, now) })
			s.at(start+3*sec, func(now int64) { h.Failure(gw, dstA, start, now) })
		}
	}
	s.run()
	for gw := 0; gw < 3; gw++ {
		st := h.Stats(gw, 30*sec)
		if st.Benched || st.Failures != 0 || st.Pending != 20 {
			t.Errorf("gateway %d: %+v, want 20 pending, none counted, not benched", gw, st)
		}
	}
	for gw := 0; gw < 3; gw++ {
		if st := h.Stats(gw, 200*sec); st.Pending != 0 || st.Attempts != 0 {
			t.Errorf("gateway %d after the window: %+v", gw, st)
		}
	}
	if tr := h.Transitions(200*sec, nil); len(tr) != 0 {
		t.Errorf("transitions %+v", tr)
	}
}

// TestHealthAnswers: an RST or an ICMP unreachable from the destination is a success: a closed
// port reached through every gateway benches nobody, and the same answer through one gateway
// makes a silent failure through another count.
func TestHealthAnswers(t *testing.T) {
	h := defaultHealth(2)
	for i := int64(0); i < 10; i++ {
		for gw := 0; gw < 2; gw++ {
			h.Attempt(gw, i*sec)
			h.Success(gw, dstN(int(i)), i*sec+ms(5)) // RST, or ICMP port unreachable from dst
		}
	}
	for gw := 0; gw < 2; gw++ {
		if st := h.Stats(gw, 10*sec); st.Benched || st.Failures != 0 || st.Pending != 0 || st.Attempts != 10 {
			t.Errorf("closed port: gateway %d %+v", gw, st)
		}
	}
	h = defaultHealth(2)
	var s sim
	for i := int64(0); i < 4; i++ {
		d, start := dstN(int(i)), i*sec
		s.at(start, func(now int64) { h.Attempt(0, now) })
		s.at(start+3*sec, func(now int64) {
			h.Failure(0, d, start, now)
			h.Attempt(1, now)
		})
		s.at(start+3*sec+ms(10), func(now int64) { h.Success(1, d, now) }) // RST through the other gateway
	}
	s.run()
	if st := h.Stats(0, 10*sec); !st.Benched || st.Failures != 4 {
		t.Errorf("silent through 0, RST through 1: %+v, want 4 counted failures and benched", st)
	}
}

// TestHealthRotation plays the integration test's hard case: gateway 0's upstream drops
// everything; flows placed on it are rotated to gateway 1 after 3 s and answered there.
func TestHealthRotation(t *testing.T) {
	h := defaultHealth(2)
	var tr []Transition
	benchedAt := int64(-1)
	var s sim
	for i := 0; i < 40; i++ {
		d := dstN(1000 + i)
		s.at(int64(i)*ms(250), func(now int64) {
			gw := i % 2 // the selector's placement
			if h.Benched(0, now) {
				gw = 1
				if benchedAt < 0 {
					benchedAt = now
				}
			}
			h.Attempt(gw, now)
			if gw == 1 {
				s.at(now+ms(20), func(now int64) { h.Success(1, d, now) })
				return
			}
			// SYNs at now, +1 s, +3 s; the third goes through gateway 1 and is answered
			start := now
			s.at(now+3*sec, func(now int64) {
				h.Failure(0, d, start, now)
				h.Attempt(1, now)
			})
			s.at(now+3*sec+ms(20), func(now int64) { h.Success(1, d, now) })
		})
	}
	s.run()
	tr = h.Transitions(10*sec, tr)
	if benchedAt < 0 || len(tr) != 1 || tr[0].Gateway != 0 || !tr[0].Benched {
		t.Fatalf("benched at %v, transitions %+v", time.Duration(benchedAt), tr)
	}
	if !strings.HasSuffix(tr[0].Reason, "connection attempts failed in 60s") {
		t.Errorf("reason %q", tr[0].Reason)
	}
	t.Logf("benched after %v: %s", time.Duration(benchedAt), tr[0].Reason)
}

// TestHealthRecovery: a benched gateway is tried again once its failures age out; with
// ProbeConfirm only after a probe round succeeded.
func TestHealthRecovery(t *testing.T) {
	for _, confirm := range []bool{false, true} {
		// 12 s window: 200 ms buckets, so the aging times below are exact.
		h := NewHealth(HealthConfig{Window: 12 * time.Second, FailRatio: 0.5, MinAttempts: 4, ProbeConfirm: confirm}, 2)
		var s sim
		for i := int64(0); i < 4; i++ {
			start := i * sec
			s.at(start, func(now int64) { h.Attempt(0, now) })
			s.at(start+3*sec, func(now int64) {
				h.Failure(0, dstA, start, now)
				h.Success(1, dstA, now+ms(20)) // the rotated SYN is answered
			})
		}
		s.run()
		tr := h.Transitions(7*sec, nil)
		if len(tr) != 1 || !tr[0].Benched || tr[0].Reason != "2 of 4 connection attempts failed in 12s" {
			t.Fatalf("confirm %v: transitions %+v", confirm, tr)
		}
		// The attempts (and their failures) age out at 12, 13, 14, 15 s.
		if st := h.Stats(0, 12*sec-1); !st.Benched || st.Attempts != 4 || st.Failures != 4 {
			t.Fatalf("confirm %v: just before 12 s %+v", confirm, st)
		}
		h.ProbeOK(0, 12*sec-1) // too early: the counts still bench
		if !h.Benched(0, 12*sec-1) {
			t.Fatalf("confirm %v: a probe ended the bench while the counts still bench", confirm)
		}
		st := h.Stats(0, 12*sec) // 3 of 3: below min_attempts
		if st.Benched != confirm || st.AwaitingProbe != confirm {
			t.Fatalf("confirm %v: at 12 s %+v", confirm, st)
		}
		if confirm {
			if tr := h.Transitions(12*sec, nil); len(tr) != 0 {
				t.Fatalf("transition before the probe: %+v", tr)
			}
			h.ProbeOK(0, 12*sec+ms(200))
			if h.Benched(0, 12*sec+ms(200)) {
				t.Fatalf("still benched after the probe confirmed")
			}
		}
		tr = h.Transitions(12*sec+ms(300), nil)
		want := "failures aged out (3 of 3 connection attempts failed in 12s)"
		if confirm {
			want += ", a probe confirmed"
		}
		if len(tr) != 1 || tr[0].Benched || tr[0].Reason != want {
			t.Fatalf("confirm %v: transitions %+v, want %q", confirm, tr, want)
		}
		// Still failing: the next attempt, with the failures still in the window, benches
		// it again at once (3 of 4).
		h.Attempt(0, 12*sec+ms(500))
		if !h.Benched(0, 12*sec+ms(500)) {
			t.Fatalf("confirm %v: not benched again with 3 of 4 attempts failed", confirm)
		}
		// Upstream restored: after the window nothing is left and it is tried again.
		h.ProbeOK(0, 40*sec)
		if h.Benched(0, 40*sec) {
			t.Fatalf("confirm %v: benched after the window", confirm)
		}
	}
}

// TestHealthPendingMerge: several pending failures to one destination through one gateway, in
// more distinct seconds than there are pending slots, all count when the evidence comes.
func TestHealthPendingMerge(t *testing.T) {
	h := defaultHealth(2)
	var s sim
	for i := int64(0); i < 5; i++ {
		start := i * sec
		s.at(start, func(now int64) { h.Attempt(0, now) })
		s.at(start+3*sec, func(now int64) { h.Failure(0, dstA, start, now) })
	}
	s.run()
	if st := h.Stats(0, 8*sec); st.Pending != 5 || st.Failures != 0 {
		t.Fatalf("%+v, want 5 pending", st)
	}
	h.Success(1, dstA, 8*sec)
	if st := h.Stats(0, 8*sec); st.Pending != 0 || st.Failures != 5 || !st.Benched {
		t.Fatalf("%+v, want 5 counted and benched", st)
	}
	// Merged failures age out no later than their own attempts.
	for now := 59 * sec; now <= 65*sec; now += ms(100) {
		if st := h.Stats(0, now); st.Failures > st.Attempts {
			t.Fatalf("at %v %+v: more failures than attempts", time.Duration(now), st)
		}
	}
}

// TestHealthEviction: the destination table is bounded; a destination pushed out takes its
// pending failures with it.
func TestHealthEviction(t *testing.T) {
	h := NewHealth(HealthConfig{Destinations: 4}, 2) // one set of four
	for i := 0; i < 5; i++ {
		h.Failure(0, dstN(i), int64(i)*sec, int64(i)*sec+sec)
	}
	if st := h.Stats(0, 6*sec); st.Pending != 4 {
		t.Fatalf("%+v, want 4 pending (one evicted)", st)
	}
	h.Success(1, dstN(0), 7*sec) // evicted: cannot count; evicts dstN(1) in turn
	h.Success(1, dstN(2), 7*sec)
	if st := h.Stats(0, 7*sec); st.Failures != 1 || st.Pending != 2 {
		t.Fatalf("%+v, want 1 counted, 2 pending", st)
	}
}

// TestHealthBoundedMemory: a million distinct destinations do not grow memory.
func TestHealthBoundedMemory(t *testing.T) {
	h := defaultHealth(3)
	churn := func(from, n int) {
		for i := from; i < from+n; i++ {
			now := int64(i) * ms(1)
			d := dstN(i * 2654435761)
			h.Attempt(i%3, now)
			if i%2 == 0 {
				h.Success(i%3, d, now)
			} else {
				h.Failure(i%3, d, now, now)
			}
		}
	}
	churn(0, 10000)
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	churn(10000, 1_000_000)
	runtime.GC()
	runtime.ReadMemStats(&after)
	used := 0
	for _, u := range h.used {
		if u {
			used++
		}
	}
	if used > DefaultDestinations || len(h.used) != DefaultDestinations {
		t.Fatalf("%d destinations held in a table of %d", used, len(h.used))
	}
	if after.Mallocs-before.Mallocs > 100 {
		t.Fatalf("%d allocations for 1M destinations", after.Mallocs-before.Mallocs)
	}
	if grow := int64(after.HeapAlloc) - int64(before.HeapAlloc); grow > 64<<10 {
		t.Fatalf("heap grew by %d bytes", grow)
	}
	for gw := 0; gw < 3; gw++ {
		if st := h.Stats(gw, 1_100_000*ms(1)); st.Pending < 0 || st.Failures < 0 || st.Attempts < 0 {
			t.Fatalf("gateway %d: negative counts %+v", gw, st)
		}
	}
}

// TestHealthNoAllocs: the per-flow calls do not allocate.
func TestHealthNoAllocs(t *testing.T) {
	h := defaultHealth(2)
	i := 0
	allocs := testing.AllocsPerRun(10000, func() {
		i++
		now := int64(i) * ms(7)
		d := dstN(i % 9000)
		h.Attempt(i%2, now)
		h.Failure(i%2, d, now-sec, now)
		h.Success(1-i%2, d, now)
		h.Benched(0, now)
		h.Benched(1, now)
		h.ProbeOK(0, now)
		_ = h.Stats(1, now)
	})
	if allocs != 0 {
		t.Fatalf("%v allocations per flow", allocs)
	}
	buf := h.Transitions(int64(i)*ms(7), make([]Transition, 0, 4))
	if allocs := testing.AllocsPerRun(100, func() { buf = h.Transitions(int64(i)*ms(7), buf[:0]) }); allocs != 0 {
		t.Fatalf("Transitions with nothing to report: %v allocations", allocs)
	}
}

// TestHealthClock: a time earlier than one seen is taken as the latest.
func TestHealthClock(t *testing.T) {
	h := defaultHealth(2)
	h.Attempt(0, 100*sec)
	h.Attempt(0, 50*sec) // late report: counted now
	if st := h.Stats(0, 159*sec); st.Attempts != 2 {
		t.Fatalf("%+v", st)
	}
	if st := h.Stats(0, 160*sec); st.Attempts != 0 {
		t.Fatalf("%+v", st)
	}
}

func BenchmarkHealthFlow(b *testing.B) {
	h := defaultHealth(2)
	i := 0
	for b.Loop() {
		i++
		now := int64(i) * ms(1)
		d := dstN(i % 10000)
		h.Attempt(i%2, now)
		h.Success(i%2, d, now)
		h.Benched(i%2, now)
	}
}

// TestHealthInvariants drives random events through a small table and checks the ring sums
// against the buckets and the pending entries after every step.
func TestHealthInvariants(t *testing.T) {
	rng := rand.New(rand.NewPCG(4, 5))
	for _, window := range []time.Duration{time.Second, 7 * time.Second, time.Minute} {
		const G = 3
		h := NewHealth(HealthConfig{Window: window, Destinations: 8}, G)
		now := int64(0)
		for step := 0; step < 200000; step++ {
			now += rng.Int64N(int64(window) / 20)
			gw, d := rng.IntN(G), dstN(rng.IntN(20))
			switch rng.IntN(5) {
			case 0, 1:
				h.Attempt(gw, now)
			case 2:
				h.Success(gw, d, now)
			case 3:
				h.Failure(gw, d, now-rng.Int64N(int64(window)*5/4), now)
			case 4:
				h.ProbeOK(gw, now)
			}
			for i := range h.gws {
				g := &h.gws[i]
				g.advance(h.bucket(now))
				a, f, p := 0, 0, 0
				for b := range healthBuckets {
					if g.attempts[b] < 0 || g.failed[b] < 0 || g.pending[b] < 0 {
						t.Fatalf("window %v step %d gw %d: negative bucket", window, step, i)
					}
					a, f, p = a+int(g.attempts[b]), f+int(g.failed[b]), p+int(g.pending[b])
				}
				live := 0
				for s := range h.used {
					if !h.used[s] {
						continue
					}
					for _, e := range h.pend[(s*G+i)*pendSlots:][:pendSlots] {
						if e.n > 0 && g.live(e.b) {
							live += int(e.n)
						}
					}
				}
				if a != g.sumA || f != g.sumF || p != g.sumP || p != live {
					t.Fatalf("window %v step %d gw %d: sums %d/%d/%d, buckets %d/%d/%d, live pending entries %d",
						window, step, i, g.sumA, g.sumF, g.sumP, a, f, p, live)
				}
			}
		}
	}
}
