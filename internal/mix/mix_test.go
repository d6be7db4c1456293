package mix

import (
	"math/bits"
	"testing"
)

// TestAvalanche checks that flipping one input bit flips about half of the output bits, which
// is what lets callers use a slice of the result as a table index.
func TestAvalanche(t *testing.T) {
	total, n := 0, 0
	for x := uint64(1); x < 1<<12; x++ {
		for b := 0; b < 64; b += 7 {
			total += bits.OnesCount64(Mix64(x) ^ Mix64(x^1<<b))
			n++
		}
	}
	if avg := float64(total) / float64(n); avg < 30 || avg > 34 {
		t.Fatalf("average flipped bits %.2f, want about 32", avg)
	}
	if Mix64(0) != 0 {
		t.Fatalf("Mix64(0) = %#x: the finaliser maps 0 to 0", Mix64(0))
	}
}
