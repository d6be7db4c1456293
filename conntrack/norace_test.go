//go:build !race

package conntrack

import (
	"runtime"
	"testing"
	"time"
)

// The tests here measure allocations and memory, which the race detector changes: they are
// built without it only (make unit runs them in a second, race-free pass).

// TestMemory1M checks a million flows, both maps included, fit in 256 MiB.
func TestMemory1M(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: builds a million flows")
	}
	const n = 1 << 20
	before := heapInUse()
	tb := fill(t, n)
	used := heapInUse() - before
	t.Logf("%d flows: %.1f MiB, %.1f bytes/flow (Flow %d bytes)", tb.Len(), float64(used)/(1<<20), float64(used)/n, flowSize)
	if used >= 256<<20 {
		t.Errorf("%d flows use %d MiB, want < 256", n, used>>20)
	}
	// Steady churn at the bound: memory stays put.
	now := int64(0)
	for i := n; i < 3*n; i++ {
		now += 1000
		tb.Delete(tb.at(tb.lists[listTCPEstablished].head))
		p, err := tb.Insert(benchFlow(i, now))
		if err != nil {
			t.Fatal(err)
		}
		establish(tb, p, now)
	}
	churned := heapInUse() - before
	t.Logf("after %d replacements: %.1f MiB", 2*n, float64(churned)/(1<<20))
	if churned > used+used/8 {
		t.Errorf("memory grew under churn from %d to %d MiB", used>>20, churned>>20)
	}
	runtime.KeepAlive(tb)
}

// TestAllocs checks the hot path does not allocate: lookups, Seen, Insert into a slot that
// exists (evicting in steady state), Expire.
func TestAllocs(t *testing.T) {
	const max = 4096
	tb := New(max, DefaultTimeouts())
	i := 0
	now := int64(0)
	insert := func() {
		i++
		now += 1000
		k := Key{Src: Addr4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}), Dst: Addr4([4]byte{1, 1, 1, 1}), SrcPort: uint16(i), DstPort: 80, Proto: 6}
		p, err := tb.Insert(Flow{Orig: k, Reply: k.Reverse(), LastSeen: now})
		if err != nil {
			t.Fatal(err)
		}
		tb.Seen(p, DirOrig, 60, syn, now)
	}
	for j := 0; j < 20*max; j++ { // fill, then churn until the maps settle
		insert()
	}
	if n := testing.AllocsPerRun(10000, insert); n != 0 {
		t.Errorf("Insert with eviction: %v allocs", n)
	}
	k := tb.at(tb.lists[listTCPNew].head).Orig
	var p *Flow
	if n := testing.AllocsPerRun(1000, func() {
		p = tb.LookupOrig(k)
		_ = tb.LookupReply(k.Reverse())
		_ = tb.ReplyInUse(k)
		now++
		tb.Seen(p, DirReply, 60, synack, now)
		tb.Seen(p, DirOrig, 60, ack, now)
		tb.Seen(p, DirOrig, 60, psh, now)
	}); n != 0 {
		t.Errorf("Lookup and Seen: %v allocs", n)
	}
	if n := testing.AllocsPerRun(100, func() {
		now += int64(time.Minute)
		tb.Expire(now, 64)
		for tb.Len() < max {
			insert()
		}
	}); n != 0 {
		t.Errorf("Expire and Insert into freed slots: %v allocs", n)
	}
}
