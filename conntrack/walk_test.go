package conntrack

import (
	"testing"
)

// TestWalk pages through a table with small budgets and pages: every flow is seen exactly once,
// in slot order, and the cursor ends at -1.
func TestWalk(t *testing.T) {
	for _, tc := range []struct {
		name          string
		flows, remove int
		budget, page  int
	}{
		{"empty", 0, 0, 10, 10},
		{"one chunk, big pages", 100, 0, 1 << 20, 1000},
		{"two chunks, small budget", chunkSize + 10, 0, 300, 1000},
		{"small pages", 500, 0, 1 << 20, 7},
		{"holes", 3000, 1000, 64, 5},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tb := New(1<<16, Timeouts{})
			var keys []Key
			for i := range tc.flows {
				k := Key{Src: Addr4([4]byte{10, 0, byte(i >> 8), byte(i)}), Dst: Addr4([4]byte{192, 0, 2, 1}), SrcPort: uint16(i), DstPort: 80, Proto: 6}
				if _, err := tb.Insert(Flow{Orig: k, Reply: k.Reverse(), LastSeen: 1}); err != nil {
					t.Fatal(err)
				}
				keys = append(keys, k)
			}
			want := map[Key]bool{}
			for i, k := range keys {
				if i%3 == 0 && i/3 < tc.remove {
					tb.Delete(tb.LookupOrig(k))
					continue
				}
				want[k] = true
			}
			seen := map[Key]bool{}
			lastSlot := int32(-1)
			calls := 0
			for cur := 0; cur >= 0; {
				calls++
				n := 0
				cur = tb.Walk(cur, tc.budget, func(f *Flow) bool {
					if seen[f.Orig] {
						t.Fatalf("flow %v seen twice", f.Orig)
					}
					if f.idx <= lastSlot {
						t.Fatalf("slot %d after %d", f.idx, lastSlot)
					}
					lastSlot = f.idx
					seen[f.Orig] = true
					n++
					return n < tc.page
				})
				if calls > 1<<16 {
					t.Fatal("Walk never ends")
				}
			}
			if len(seen) != len(want) {
				t.Fatalf("walked %d flows, want %d", len(seen), len(want))
			}
			for k := range want {
				if !seen[k] {
					t.Fatalf("flow %v not walked", k)
				}
			}
		})
	}
}
