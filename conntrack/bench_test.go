package conntrack

import (
	"runtime"
	"testing"
	"unsafe"
)

// benchKey is the i-th of up to 2^24 distinct host-side keys.
func benchKey(i int) Key {
	return Key{Src: Addr4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}), Dst: Addr4([4]byte{198, 51, 100, byte(i >> 3)}), SrcPort: uint16(i*7 + 1024), DstPort: 443, Proto: 6}
}

// benchFlow is a NATed outbound flow, as the datapath inserts them.
func benchFlow(i int, now int64) Flow {
	k := benchKey(i)
	r := k.Reverse()
	r.Dst = Addr4([4]byte{100, 64, byte(i >> 24), byte(i >> 16)})
	r.DstPort = uint16(i*7 + 1024)
	return Flow{Orig: k, Reply: r, Gateway: 1, WireIf: 1, NAT: true, Created: now, LastSeen: now}
}

// fill returns a table of max n holding n established flows.
func fill(tb testing.TB, n int) *Table {
	t := New(n, DefaultTimeouts())
	for i := 0; i < n; i++ {
		p, err := t.Insert(benchFlow(i, 0))
		if err != nil {
			tb.Fatal(err)
		}
		establish(t, p, 0)
	}
	return t
}

// heapInUse returns the live heap after a full collection.
func heapInUse() uint64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

const flowSize = unsafe.Sizeof(Flow{})

// BenchmarkLookup looks up random flows among a million.
func BenchmarkLookup(b *testing.B) {
	const n = 1 << 20
	tb := fill(b, n)
	i := 0
	for b.Loop() {
		i = (i + 7919) & (n - 1)
		if tb.LookupOrig(benchKey(i)) == nil {
			b.Fatal("missing")
		}
	}
}

// BenchmarkLookupReply looks up random flows by their NATed wire keys.
func BenchmarkLookupReply(b *testing.B) {
	const n = 1 << 20
	tb := fill(b, n)
	keys := make([]Key, n)
	tb.Range(func(f *Flow) bool {
		keys[f.idx] = f.Reply
		return true
	})
	i := 0
	for b.Loop() {
		i = (i + 7919) & (n - 1)
		if tb.LookupReply(keys[i]) == nil {
			b.Fatal("missing")
		}
	}
}

// BenchmarkSeen is the per-frame cost for a random established flow among a million: lookup
// and Seen, with time advancing 1µs a frame (so the LRU order is refreshed as it would be).
func BenchmarkSeen(b *testing.B) {
	const n = 1 << 20
	tb := fill(b, n)
	i := 0
	now := int64(0)
	for b.Loop() {
		i = (i + 7919) & (n - 1)
		now += 1000
		p := tb.LookupOrig(benchKey(i))
		tb.Seen(p, i&1, 1500, ack, now)
	}
}

// BenchmarkSeenExact is BenchmarkSeen with an exact LRU order (a relink on every frame).
func BenchmarkSeenExact(b *testing.B) {
	const n = 1 << 20
	tb := fill(b, n)
	tb.shift = 0
	i := 0
	now := int64(0)
	for b.Loop() {
		i = (i + 7919) & (n - 1)
		now += 1000
		p := tb.LookupOrig(benchKey(i))
		tb.Seen(p, i&1, 1500, ack, now)
	}
}

// BenchmarkNewFlows is the steady state of a full table under a flood of new connections:
// each new flow's lookup miss, its Insert (which evicts the oldest unconfirmed flow) and its
// SYN. A million established flows would leave no room, so the table holds 512 Ki established
// and 512 Ki unconfirmed flows.
func BenchmarkNewFlows(b *testing.B) {
	const n = 1 << 20
	tb := New(n, DefaultTimeouts())
	for i := 0; i < n; i++ {
		p, err := tb.Insert(benchFlow(i, 0))
		if err != nil {
			b.Fatal(err)
		}
		if i%2 == 0 {
			establish(tb, p, 0)
		} else {
			tb.Seen(p, DirOrig, 60, syn, 0)
		}
	}
	i := n
	now := int64(0)
	for b.Loop() {
		i++
		now += 1000
		f := benchFlow(i, now)
		if tb.LookupOrig(f.Orig) != nil || tb.ReplyInUse(f.Reply) {
			b.Fatal("key in use")
		}
		p, err := tb.Insert(f)
		if err != nil {
			b.Fatal(err)
		}
		tb.Seen(p, DirOrig, 60, syn, now)
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "flows/s")
	if tb.Len() != n || tb.ClassLen(ClassEstablished) != n/2 {
		b.Fatalf("len %d established %d", tb.Len(), tb.ClassLen(ClassEstablished))
	}
}

// BenchmarkNewFlowsExpire is a full life cycle at 262144 flows (the default bound): each op
// opens a connection (SYN, SYN-ACK, ACK, data, FIN each way) and Expire runs every 100 µs of
// simulated time, as the shim's ticker would, so flows leave by expiry as well as eviction.
func BenchmarkNewFlowsExpire(b *testing.B) {
	const n = 262144
	tb := New(n, DefaultTimeouts())
	i := 0
	now := int64(0)
	for b.Loop() {
		i++
		now += 1000
		p, err := tb.Insert(benchFlow(i, now))
		if err != nil {
			b.Fatal(err)
		}
		establish(tb, p, now)
		tb.Seen(p, DirReply, 1500, psh, now)
		tb.Seen(p, DirOrig, 52, finack, now)
		tb.Seen(p, DirReply, 52, finack, now)
		if i%100 == 0 {
			tb.Expire(now, 8192)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "flows/s")
}

// BenchmarkBytesPerFlow fills a table with a million flows per op and reports the live heap
// it takes per flow, both maps included.
func BenchmarkBytesPerFlow(b *testing.B) {
	const n = 1 << 20
	var used uint64
	for b.Loop() {
		before := heapInUse()
		tb := fill(b, n)
		used = heapInUse() - before
		runtime.KeepAlive(tb)
	}
	b.ReportMetric(float64(used)/n, "bytes/flow")
	b.ReportMetric(float64(used)/(1<<20), "MiB/1M")
}

// BenchmarkSeenHot is the per-frame cost when 4096 busy flows among a million take turns.
func BenchmarkSeenHot(b *testing.B) {
	for _, exact := range []bool{false, true} {
		name := "resolution"
		if exact {
			name = "exact"
		}
		b.Run(name, func(b *testing.B) {
			const n = 1 << 20
			tb := fill(b, n)
			if exact {
				tb.shift = 0
			}
			ps := make([]*Flow, 4096)
			for j := range ps {
				ps[j] = tb.LookupOrig(benchKey(j * 251))
			}
			i := 0
			now := int64(0)
			for b.Loop() {
				i++
				now += 1000
				tb.Seen(ps[(i*7)&4095], i&1, 1500, ack, now)
			}
		})
	}
}
