package failover

import (
	"fmt"
	"math"
	"testing"

	"github.com/l2shim/l2shim/internal/mix"
)

func cands(weights ...int) []Candidate {
	out := make([]Candidate, len(weights))
	for i, w := range weights {
		out[i] = Candidate{ID: GatewayID(fmt.Sprintf("gw%d", i)), Weight: w, Usable: true}
	}
	return out
}

func flowHash(i int) uint64 { return mix.Mix64(uint64(i) * mix.Golden) }

func TestPickWeights(t *testing.T) {
	for _, weights := range [][]int{{1, 1}, {3, 1}, {1, 2, 5}, {10, 1, 1}} {
		c := cands(weights...)
		counts := make([]int, len(c))
		const n = 40000
		for i := 0; i < n; i++ {
			counts[Pick(LoadBalance, flowHash(i), c)]++
		}
		total := 0
		for _, w := range weights {
			total += w
		}
		for i, w := range weights {
			want := float64(w) / float64(total)
			got := float64(counts[i]) / n
			if math.Abs(got-want) > 0.015 {
				t.Errorf("weights %v: gateway %d got %.3f of flows, want %.3f", weights, i, got, want)
			}
		}
	}
}

// TestPickStable checks the consistency promise: benching, restoring or adding a gateway
// moves only the flows that were on (or now go to) that gateway.
func TestPickStable(t *testing.T) {
	c := cands(1, 1, 1)
	const n = 20000
	before := make([]int, n)
	for i := range before {
		before[i] = Pick(LoadBalance, flowHash(i), c)
	}
	c[1].Usable = false
	for i := range before {
		got := Pick(LoadBalance, flowHash(i), c)
		if before[i] != 1 && got != before[i] {
			t.Fatalf("flow %d moved from %d to %d when gateway 1 was benched", i, before[i], got)
		}
		if got == 1 {
			t.Fatalf("flow %d placed on a benched gateway", i)
		}
	}
	c[1].Usable = true
	for i := range before {
		if got := Pick(LoadBalance, flowHash(i), c); got != before[i] {
			t.Fatalf("flow %d placed on %d after the gateway came back, was %d", i, got, before[i])
		}
	}
	c = append(c, Candidate{ID: GatewayID("gw3"), Weight: 1, Usable: true})
	moved := 0
	for i := range before {
		got := Pick(LoadBalance, flowHash(i), c)
		if got != before[i] {
			if got != 3 {
				t.Fatalf("flow %d moved between old gateways (%d → %d) when one was added", i, before[i], got)
			}
			moved++
		}
	}
	if moved < n/5 || moved > n/3 {
		t.Fatalf("%d of %d flows moved to the new gateway, want about a quarter", moved, n)
	}
}

func TestPickModes(t *testing.T) {
	c := cands(1, 5, 1)
	if got := Pick(Failover, 1, c); got != 0 {
		t.Fatalf("failover picked %d, want 0", got)
	}
	c[0].Usable = false
	if got := Pick(Failover, 1, c); got != 1 {
		t.Fatalf("failover picked %d, want 1 with 0 unusable", got)
	}
	if got := Pick(Off, 1, c); got != -1 {
		t.Fatalf("off picked %d", got)
	}
	for i := range c {
		c[i].Usable = false
	}
	if got := Pick(LoadBalance, 1, c); got != -1 {
		t.Fatalf("no usable gateway but picked %d", got)
	}
}

func BenchmarkPick3(b *testing.B) {
	c := cands(1, 2, 3)
	i := 0
	for b.Loop() {
		i++
		Pick(LoadBalance, flowHash(i), c)
	}
}
