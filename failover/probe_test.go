package failover

import (
	"math"
	"math/rand/v2"
	"strconv"
	"strings"
	"testing"
	"time"
)

// rounds parses a round script: one string per round, one character per result, ARP first:
// '1' answered, '0' missed. "1 0 1" ... spaces are ignored.
func rounds(script ...string) [][]bool {
	out := make([][]bool, len(script))
	for i, r := range script {
		for _, c := range strings.ReplaceAll(r, " ", "") {
			out[i] = append(out[i], c == '1')
		}
	}
	return out
}

func TestProbeRules(t *testing.T) {
	for _, tc := range []struct {
		name    string
		targets int
		misses  int
		script  []string
		want    string // verdict after each round: u(p) or d(own)
		reason  string // the reason of the last change, if any
	}{
		{"ARP only: three misses", 0, 3, []string{"0", "0", "0"}, "uud",
			"the gateway did not answer ARP 3 rounds in a row"},
		{"ARP only: an answer resets the run", 0, 3, []string{"0", "0", "1", "0", "0", "1"}, "uuuuuu", ""},
		{"one target: three misses while ARP answers", 1, 3, []string{"10", "10", "10"}, "uud",
			"1 of 1 probe target missed 3 rounds in a row (the gateway answers ARP)"},
		{"one target: ARP does not vote", 1, 3, []string{"01", "01", "01", "01"}, "uuuu", ""},
		{"one target and ARP both gone", 1, 2, []string{"00", "00"}, "ud",
			"1 of 1 probe target missed 2 rounds in a row (the gateway does not answer ARP either)"},
		{"misses = 1", 1, 1, []string{"11", "10"}, "ud", "1 of 1 probe target missed 1 rounds in a row (the gateway answers ARP)"},
		{"two targets: one dead forever stays up", 2, 3, []string{"110", "110", "110", "110", "110"}, "uuuuu", ""},
		{"two targets: both dead", 2, 3, []string{"100", "100", "100"}, "uud",
			"2 of 2 probe targets missed 3 rounds in a row (the gateway answers ARP)"},
		{"three targets: one dead forever stays up", 3, 3, []string{"1011", "1011", "1011", "1011"}, "uuuu", ""},
		{"three targets: two dead", 3, 3, []string{"1001", "1001", "1001"}, "uud",
			"2 of 3 probe targets missed 3 rounds in a row (the gateway answers ARP)"},
		{"three targets: misses in different rounds do not add up", 3, 3,
			[]string{"1001", "1100", "1010", "1001", "1100", "1010"}, "uuuuuu", ""},
		{"four targets: two dead is not most", 4, 2, []string{"10011", "10011", "10011"}, "uuu", ""},
		{"four targets: three dead", 4, 2, []string{"10001", "10001"}, "ud",
			"3 of 4 probe targets missed 2 rounds in a row (the gateway answers ARP)"},
		{"up after three good rounds", 1, 3, []string{"10", "10", "10", "11", "11", "11"}, "uudddu",
			"probes answered 3 rounds in a row"},
		{"an interrupted run starts over", 1, 3, []string{"10", "10", "10", "11", "11", "10", "11", "11", "11"}, "uuddddddu",
			"probes answered 3 rounds in a row"},
		{"two targets: one answering is a good round", 2, 2, []string{"100", "100", "110", "101"}, "uddu",
			"probes answered 2 rounds in a row"},
		{"three targets: one answering is not a good round", 3, 2, []string{"1000", "1000", "1100", "1100", "1110", "1011"}, "uddddu",
			"probes answered 2 rounds in a row"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if len(tc.want) != len(tc.script) {
				t.Fatalf("bad test: %d rounds, %d verdicts", len(tc.script), len(tc.want))
			}
			p := NewProbeState(tc.targets, tc.misses)
			if !p.Up() {
				t.Fatalf("a new ProbeState is down")
			}
			last, prev := "", true
			var got strings.Builder
			for _, r := range rounds(tc.script...) {
				changed, up, reason := p.Round(r)
				if changed != (up != prev) || up != p.Up() {
					t.Fatalf("changed %v, up %v after %v", changed, up, prev)
				}
				if changed {
					last = reason
				} else if reason != "" {
					t.Fatalf("reason %q without a change", reason)
				}
				prev = up
				if up {
					got.WriteByte('u')
				} else {
					got.WriteByte('d')
				}
			}
			if got.String() != tc.want {
				t.Fatalf("verdicts %s, want %s", got.String(), tc.want)
			}
			if last != tc.reason {
				t.Fatalf("reason %q, want %q", last, tc.reason)
			}
		})
	}
}

func TestProbeSummary(t *testing.T) {
	p := NewProbeState(3, 3)
	for range 3 {
		p.Round([]bool{false, true, false, true})
	}
	s := p.Summary()
	if !s.Up || s.Targets != 3 || s.Missing != 1 || !s.ARPMissing || s.Misses != 3 {
		t.Fatalf("%+v", s)
	}
	p = NewProbeState(0, 2)
	p.Round([]bool{false})
	p.Round([]bool{false})
	p.Round([]bool{true})
	if s := p.Summary(); s.Up || s.Missing != 0 || s.GoodRounds != 1 || s.Targets != 0 {
		t.Fatalf("ARP only, recovering: %+v", s)
	}
}

// TestProbeDetection: after a silent loss every round misses; the verdict changes on the
// probe_misses-th missed round, reported when the next round starts, so the gateway is down
// at most (probe_misses + 1) intervals after the loss.
func TestProbeDetection(t *testing.T) {
	const interval = 200 * time.Millisecond
	for _, targets := range []int{0, 1, 2, 3} {
		for misses := 1; misses <= 5; misses++ {
			p := NewProbeState(targets, misses)
			ok := make([]bool, targets+1)
			dead := make([]bool, targets+1)
			for i := range ok {
				ok[i] = true
				dead[i] = targets > 0 && i == 0 // the LAN side still answers ARP
			}
			for range 10 {
				p.Round(ok)
			}
			n := 0
			for p.Up() {
				n++
				p.Round(dead)
				if n > 100 {
					t.Fatalf("never down")
				}
			}
			if n != misses {
				t.Errorf("%d targets, %d misses: down after %d missed rounds", targets, misses, n)
			}
			if worst := time.Duration(n+1) * interval; misses == 3 && worst > 1500*time.Millisecond {
				t.Errorf("worst-case detection %v at %v", worst, interval)
			}
			// and back after misses good rounds
			m := 0
			for !p.Up() {
				m++
				p.Round(ok)
			}
			if m != misses {
				t.Errorf("%d targets, %d misses: up after %d good rounds", targets, misses, m)
			}
		}
	}
}

// falseDownExact is the probability that a run of m misses (each round missing with
// probability q, independently) occurs within n rounds: the Markov chain on the current run.
func falseDownExact(q float64, m, n int) float64 {
	run := make([]float64, m) // run[k]: P(current run == k, not yet down)
	run[0] = 1
	down := 0.0
	for range n {
		next := make([]float64, m)
		for k, v := range run {
			next[0] += v * (1 - q)
			if k+1 == m {
				down += v * q
			} else {
				next[k+1] += v * q
			}
		}
		run = next
	}
	return down
}

// simulateFalseDown runs trials healthy-link trials of n rounds and counts those that went
// down. Each echo is lost with probability p; a target's result is answered when any of
// echoes echoes was (the prober's in-round retries); ARP always answers.
func simulateFalseDown(rng *rand.Rand, targets, misses, echoes int, p float64, n, trials int) int {
	downs := 0
	res := make([]bool, targets+1)
	for range trials {
		ps := NewProbeState(targets, misses)
		for range n {
			res[0] = true
			for i := 1; i <= targets; i++ {
				res[i] = false
				for range echoes {
					if rng.Float64() >= p {
						res[i] = true
						break
					}
				}
			}
			if _, up, _ := ps.Round(res); !up {
				downs++
				break
			}
		}
	}
	return downs
}

// TestProbeFalseDownMonteCarlo checks the false-alarm numbers in probe.go's comment: 20 %
// random probe loss, 200 ms interval, 30 s (150 rounds), probe_misses = 3, 1000 seeded trials.
func TestProbeFalseDownMonteCarlo(t *testing.T) {
	const n, trials, misses = 150, 1000, 3
	rng := rand.New(rand.NewPCG(20, 2026))
	for _, tc := range []struct {
		targets, echoes int
		p               float64
		maxDowns        int // the bound asserted (about the exact expectation + 4 sigma)
	}{
		{1, 1, 0.2, -1}, // the naive prober: fails the integration test most of the time
		{1, 2, 0.2, -1}, // two echoes: ~1 % of runs
		{1, EchoesPerRound, 0.2, 1},
		{1, EchoesPerRound, 0.36, -1}, // 20 % dropped in each direction
		{3, 1, 0.2, -1},
		{3, EchoesPerRound, 0.2, 0},
		{3, EchoesPerRound, 0.36, 1},
	} {
		downs := simulateFalseDown(rng, tc.targets, misses, tc.echoes, tc.p, n, trials)
		rate := float64(downs) / trials
		// 3 targets: two must miss 3 rounds in a row together, about 3 pairs × n × q^6
		line := "approx " + formatProb(3*n*math.Pow(math.Pow(tc.p, float64(tc.echoes)), 6))
		if tc.targets == 1 {
			exact := falseDownExact(math.Pow(tc.p, float64(tc.echoes)), misses, n)
			sigma := math.Sqrt(exact * (1 - exact) / trials)
			if math.Abs(rate-exact) > 4*sigma+1.0/trials {
				t.Errorf("1 target, %d echoes, loss %.2f: %d of %d trials down, exact %.4g", tc.echoes, tc.p, downs, trials, exact)
			}
			line = "exact " + formatProb(exact)
		}
		t.Logf("%d target(s), %d echo(es)/round, loss %.2f: %4d of %d trials falsely down (%s)",
			tc.targets, tc.echoes, tc.p, downs, trials, formatProb(rate)+", "+line)
		if tc.maxDowns >= 0 && downs > tc.maxDowns {
			t.Errorf("%d targets, %d echoes, loss %.2f: %d of %d trials falsely down, want <= %d",
				tc.targets, tc.echoes, tc.p, downs, trials, tc.maxDowns)
		}
	}
}

func formatProb(p float64) string { return strconv.FormatFloat(p, 'g', 4, 64) }

// TestProbeFalseDownExact pins the figures quoted in probe.go.
func TestProbeFalseDownExact(t *testing.T) {
	for _, tc := range []struct {
		q    float64
		n    int
		want float64
	}{
		{0.2, 150, 0.6211},
		{0.04, 150, 0.009056},
		{0.008, 150, 7.517e-5},
		{0.008, 86400, 0.04293},
		{math.Pow(0.36, 3), 150, 0.01424},
	} {
		got := falseDownExact(tc.q, 3, tc.n)
		if math.Abs(got-tc.want)/tc.want > 1e-3 {
			t.Errorf("q %.4g, %d rounds: %.4g, want %.4g", tc.q, tc.n, got, tc.want)
		}
	}
}

func TestProbeRoundNoAllocs(t *testing.T) {
	p := NewProbeState(3, 3)
	res := []bool{true, true, false, true}
	if a := testing.AllocsPerRun(1000, func() { p.Round(res) }); a != 0 {
		t.Fatalf("%v allocations per unchanged round", a)
	}
}

func TestProbeRoundBadLength(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Fatalf("no panic")
		}
	}()
	NewProbeState(2, 3).Round([]bool{true, true})
}
