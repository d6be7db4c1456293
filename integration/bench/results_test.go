package main

import "testing"

// TestMedianPair: a line prints its median round's pair (by how l2shim did in each round; of
// two middle ones the worse), not each side's best round.
func TestMedianPair(t *testing.T) {
	ratio := line{name: "tcp_up"}
	lower := line{name: "cpu_per_gb", lower: true}
	diff := line{name: "tcp_rr_p50", lower: true, diff: true}
	for _, c := range []struct {
		name         string
		l            line
		shim, kernel map[int]float64
		want         [2]float64
	}{
		// Best-of-rounds would print 21.30 against 25.63 (0.83); the paired ratios are
		// 0.77, 1.24 and 1.35.
		{"three rounds", ratio, map[int]float64{0: 19.63, 1: 17.42, 2: 21.30}, map[int]float64{0: 25.63, 1: 14.00, 2: 15.81}, [2]float64{17.42, 14.00}},
		{"two rounds: the worse", ratio, map[int]float64{0: 8, 1: 10}, map[int]float64{0: 10, 1: 10}, [2]float64{8, 10}},
		{"a round without its pair is left out", ratio, map[int]float64{0: 9, 1: 1, 2: 10}, map[int]float64{0: 10, 2: 10}, [2]float64{9, 10}},
		{"lower is better", lower, map[int]float64{0: 0.9, 1: 1.2, 2: 1.0}, map[int]float64{0: 1, 1: 1, 2: 1}, [2]float64{1.0, 1}},
		{"by difference, two rounds: the worse", diff, map[int]float64{0: 12, 1: 30}, map[int]float64{0: 10, 1: 20}, [2]float64{30, 20}},
	} {
		r := newResults()
		for round, v := range c.shim {
			r.add(shimSide, c.l.name, round, v)
		}
		for round, v := range c.kernel {
			r.add(kernelSide, c.l.name, round, v)
		}
		s, k, all, ok := r.medianPair(c.l, shimSide, c.l.name)
		if !ok || s != c.want[0] || k != c.want[1] {
			t.Errorf("%s: shim %v kernel %v (%v), want %v; rounds %s", c.name, s, k, ok, c.want, all)
		}
	}
	if _, _, _, ok := newResults().medianPair(ratio, shimSide, "tcp_up"); ok {
		t.Error("a line without values printed a pair")
	}
}
