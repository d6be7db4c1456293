package main

import (
	"fmt"
	"slices"
	"strings"
)

// results holds every measured value: by side, line name and round.
type results [nSides]map[string]map[int]float64

func newResults() results {
	var r results
	for i := range r {
		r[i] = map[string]map[int]float64{}
	}
	return r
}

// add records value v of line name measured on side sd in round (a value measured again
// replaces the earlier one).
func (r results) add(sd side, name string, round int, v float64) {
	if r[sd][name] == nil {
		r[sd][name] = map[int]float64{}
	}
	r[sd][name][round] = v
}

// pair is one round's values of a line, measured back to back on both sides.
type pair struct {
	round        int
	shim, kernel float64
}

// score is how l2shim did in the pair: the ratio, or for a line judged by difference
// (percentages, latencies) the difference.
func (p pair) score(l line) float64 {
	if l.diff {
		return p.shim - p.kernel
	}
	if p.kernel == 0 {
		return 0
	}
	return p.shim / p.kernel
}

// medianPair returns the values of line l (named name on side sd: l.name, or its _slowpath
// twin) from its median round: the rounds where both sides have a value, ordered by how
// l2shim did in each, and of an even count the worse of the two middle ones. Each round's
// sides ran within seconds of each other, so its ratio is free of the machine's drift over a
// run (on a shared VM the kernel alone measured 14 and 26 Gbit/s a minute apart), and the
// median is free of one lucky or unlucky round; best-of-rounds per side was neither. all
// describes every round, for the report.
func (r results) medianPair(l line, sd side, name string) (shim, kernel float64, all string, ok bool) {
	var ps []pair
	for round, s := range r[sd][name] {
		if k, ok := r[kernelSide][l.name][round]; ok {
			ps = append(ps, pair{round, s, k})
		}
	}
	if len(ps) == 0 {
		return 0, 0, "", false
	}
	slices.SortFunc(ps, func(a, b pair) int { return a.round - b.round })
	var b strings.Builder
	for i, p := range ps {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "shim %.2f kernel %.2f", p.shim, p.kernel)
	}
	byScore := slices.Clone(ps)
	slices.SortStableFunc(byScore, func(a, b pair) int {
		sa, sb := a.score(l), b.score(l)
		if l.lower {
			// Lower is better: order from best to worst, as for the others.
			sa, sb = -sa, -sb
		}
		switch {
		case sa < sb:
			return 1
		case sa > sb:
			return -1
		}
		return 0
	})
	// byScore runs from l2shim's best round to its worst: the median, and of two the worse.
	m := byScore[len(byScore)/2]
	return m.shim, m.kernel, b.String(), true
}
