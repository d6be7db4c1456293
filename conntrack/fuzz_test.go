package conntrack

import (
	"testing"
	"time"
)

// checkTable verifies every structural invariant of the table: the bound, both maps pointing
// at every live flow (so every NAT mapping resolves both ways), each flow on the list its state
// calls for, the lists well linked and ordered by last-seen period, their lengths summing to
// Len, and the free list holding every other slot.
func checkTable(t testing.TB, tb *Table) {
	t.Helper()
	checkLists(t, tb)
	live := 0
	tb.Range(func(*Flow) bool { live++; return true })
	if live != tb.n {
		t.Fatalf("%d live slots, len %d", live, tb.n)
	}
	free := 0
	for i := tb.free; i >= 0; i = tb.at(i).next {
		if tb.at(i).list != listFree {
			t.Fatalf("free slot %d on list %d", i, tb.at(i).list)
		}
		if free++; free > len(tb.chunks)*chunkSize {
			t.Fatal("free list has a cycle")
		}
	}
	if free+tb.n != len(tb.chunks)*chunkSize {
		t.Fatalf("%d free + %d live != %d slots", free, tb.n, len(tb.chunks)*chunkSize)
	}
}

// checkFlow verifies a live flow is where the maps and its state say.
func checkFlow(t testing.TB, tb *Table, idx int32) {
	t.Helper()
	f := tb.at(idx)
	if f.idx != idx {
		t.Fatalf("slot %d says it is %d", idx, f.idx)
	}
	if i := tb.find(&tb.orig, &f.Orig); i != idx || tb.LookupOrig(f.Orig) != f {
		t.Fatalf("flow %d not found by its original key %v", idx, f.Orig)
	}
	if i := tb.find(&tb.reply, &f.Reply); i != idx || tb.LookupReply(f.Reply) != f || !tb.ReplyInUse(f.Reply) {
		t.Fatalf("flow %d not found by its reply key %v", idx, f.Reply)
	}
	if f.Reply != f.Orig.Reverse() { // a NAT mapping: the translation resolves both ways
		if r := tb.LookupReply(f.Reply); r == nil || r.Orig != f.Orig || tb.LookupOrig(r.Orig).Reply != f.Reply {
			t.Fatalf("NAT mapping %v -> %v has no reverse", f.Orig, f.Reply)
		}
	}
	if l := listOf(f); l != f.list {
		t.Fatalf("flow %d (proto %d state %d replied %v bits %#x) on list %d, belongs on %d", idx, f.Orig.Proto, f.TCPState, f.Replied, f.bits, f.list, l)
	}
}

// checkLists is checkTable without the walk over every slot: O(Len).
func checkLists(t testing.TB, tb *Table) {
	t.Helper()
	if tb.n > tb.max {
		t.Fatalf("len %d above max %d", tb.n, tb.max)
	}
	if tb.orig.len() != tb.n || tb.reply.len() != tb.n {
		t.Fatalf("len %d, indexes %d and %d", tb.n, tb.orig.len(), tb.reply.len())
	}
	total := 0
	for l := range tb.lists {
		L := tb.lists[l]
		n := 0
		prev := int32(-1)
		var prevPeriod int64
		for i := L.head; i >= 0; {
			f := tb.at(i)
			if int(f.list) != l || f.prev != prev {
				t.Fatalf("list %d: slot %d on list %d, prev %d want %d", l, i, f.list, f.prev, prev)
			}
			checkFlow(t, tb, i)
			if p := f.LastSeen >> tb.shift; n > 0 && p < prevPeriod {
				t.Fatalf("list %d out of order at slot %d", l, i)
			} else {
				prevPeriod = p
			}
			prev = i
			i = f.next
			if n++; n > tb.n {
				t.Fatalf("list %d has a cycle", l)
			}
		}
		if L.tail != prev || int(L.n) != n {
			t.Fatalf("list %d: tail %d want %d, n %d want %d", l, L.tail, prev, L.n, n)
		}
		total += n
	}
	if total != tb.n {
		t.Fatalf("lists hold %d flows, len %d", total, tb.n)
	}
	sum := 0
	for c := Class(0); c < NumClasses; c++ {
		sum += tb.ClassLen(c)
	}
	if sum != tb.n {
		t.Fatalf("classes hold %d, len %d", sum, tb.n)
	}
}

// checkExpired verifies that no flow is older than its timeout plus the LRU resolution.
func checkExpired(t testing.TB, tb *Table, now int64) {
	t.Helper()
	slack := int64(1)<<tb.shift - 1
	for l := range tb.lists {
		for i := tb.lists[l].head; i >= 0; i = tb.at(i).next {
			f := tb.at(i)
			if age := now - f.LastSeen; age > int64(tb.Timeout(f))+slack {
				t.Fatalf("flow %v (list %d) idle %v, timeout %v, survived a complete Expire", f.Orig, f.list, time.Duration(age), tb.Timeout(f))
			}
		}
	}
}

var fuzzSteps = []time.Duration{0, time.Millisecond, 40 * time.Millisecond, 100 * time.Millisecond, time.Second, 2 * time.Second,
	9 * time.Second, 31 * time.Second, 2 * time.Minute, 3 * time.Minute, 11 * time.Minute, 2*time.Hour + 5*time.Minute, -time.Second}

var fuzzFlags = []uint8{syn, synack, ack, psh, finack, fin, rst, rst | ack, 0}

var fuzzProtos = []uint8{6, 6, 17, 1, 47}

// FuzzTable drives random operations through a small table: inserts (plain and NATed, both
// origins, colliding keys), frames with random directions and TCP flags, time going forward
// (and now and then back), Expire with small and large budgets, deletes and timeout changes.
// After every step the structural invariants hold; every eviction takes the least recently
// seen flow of the first non-empty group and never an established one; ErrFull comes only when
// nothing may be evicted; after a complete Expire no flow has outlived its timeout.
func FuzzTable(f *testing.F) {
	f.Add([]byte{0, 0, 1, 2, 3, 0, 4, 5, 6, 1, 0, 2, 3, 1, 1, 1, 2, 0, 7, 4, 255})
	f.Add([]byte{1, 0, 10, 0, 0, 11, 1, 0, 0, 12, 2, 1, 1, 0, 1, 1, 1, 2, 1, 2, 0, 3, 0, 11, 4, 200, 5, 1})
	f.Add([]byte("\x08\x00\x01\x00\x02\x00\x03\x00\x04\x00\x05\x00\x06\x00\x07\x00\x08\x00\x09\x02\x09\x03\x00\x03\xff"))
	f.Add([]byte("insert seen expire delete timeouts and more bytes to walk through every branch of the loop"))
	seed := make([]byte, 0, 600)
	for i := 0; i < 200; i++ {
		seed = append(seed, byte(i%3), byte(i*7), byte(i*13))
	}
	f.Add(seed)
	f.Fuzz(func(t *testing.T, data []byte) {
		pos := 0
		next := func() int {
			if pos >= len(data) {
				return 0
			}
			pos++
			return int(data[pos-1])
		}
		max := 4 + next()%28
		tb := New(max, DefaultTimeouts())
		if next()%2 == 0 {
			tb.shift = 0 // exact LRU order
		}
		if max%2 == 1 {
			tb.hashMask = 3 // keys share hashes: the indexes' overflow maps take most of them
		}
		live := map[Key]bool{}
		var removed []*Flow
		var reasons []RemoveReason
		tb.OnRemove(func(f *Flow, why RemoveReason) {
			if !live[f.Orig] {
				t.Fatalf("removing %v, which is not live", f.Orig)
			}
			delete(live, f.Orig)
			c := *f
			removed = append(removed, &c)
			reasons = append(reasons, why)
		})
		now := int64(time.Hour)
		nth := func(n int) *Flow { // the n-th flow in list order, cheaper than Range
			for l := range tb.lists {
				for i := tb.lists[l].head; i >= 0; i = tb.at(i).next {
					if n == 0 {
						return tb.at(i)
					}
					n--
				}
			}
			t.Fatal("nth: past the end")
			return nil
		}
		flows := func(fn func(*Flow)) {
			for l := range tb.lists {
				for i := tb.lists[l].head; i >= 0; i = tb.at(i).next {
					fn(tb.at(i))
				}
			}
		}
		for steps := 0; pos < len(data) && steps < 2000; steps++ {
			removed, reasons = removed[:0], reasons[:0]
			switch op := next() % 8; op {
			case 0, 1: // insert
				k, b := next(), next()
				proto := fuzzProtos[b%len(fuzzProtos)]
				orig := Key{Src: Addr4([4]byte{10, 0, 0, byte(1 + k%4)}), Dst: Addr4([4]byte{192, 0, 2, byte(1 + k/4%4)}), SrcPort: uint16(1000 + k/16%3), DstPort: 80, Proto: proto}
				if proto == 1 {
					orig.DstPort = orig.SrcPort
				}
				fl := Flow{Orig: orig, Reply: orig.Reverse(), Gateway: -1, Created: now, LastSeen: now}
				if b&0x10 != 0 { // NATed to a shared external address, ports that collide
					fl.NAT = true
					fl.Reply.Dst = Addr4([4]byte{100, 64, 0, 1})
					fl.Reply.DstPort = uint16(40000 + b>>5)
					if proto == 1 {
						fl.Reply.SrcPort = fl.Reply.DstPort
					}
				}
				if b&0x08 != 0 {
					fl.Origin = Inbound
				}
				origUsed := tb.find(&tb.orig, &fl.Orig) >= 0
				replyUsed := tb.find(&tb.reply, &fl.Reply) >= 0
				full := tb.n >= tb.max
				var first Class = NumClasses
				var oldest int64
				if full {
					for c := Class(0); c < ClassEstablished; c++ {
						if tb.ClassLen(c) > 0 {
							first = c
							break
						}
					}
					if first < NumClasses {
						oldest = 1 << 62
						flows(func(f *Flow) {
							if f.Class() == first && f.LastSeen>>tb.shift < oldest {
								oldest = f.LastSeen >> tb.shift
							}
						})
					}
				}
				evicted := tb.C.Evicted.Load()
				p, err := tb.Insert(fl)
				switch {
				case origUsed || replyUsed:
					if err != ErrExists || len(removed) != 0 {
						t.Fatalf("insert of a used tuple: %v, %d removed", err, len(removed))
					}
				case full && first == NumClasses:
					if err != ErrFull || len(removed) != 0 {
						t.Fatalf("insert into a table of established flows: %v", err)
					}
				case err != nil:
					t.Fatalf("insert: %v", err)
				case full:
					if len(removed) != 1 || reasons[0] != Evicted || tb.C.Evicted.Load() != evicted+1 {
						t.Fatalf("insert into a full table removed %d", len(removed))
					}
					v := removed[0]
					if c := listClass[v.list]; c != first || v.LastSeen>>tb.shift != oldest {
						t.Fatalf("evicted a %v flow seen in period %d; want the %v flow of period %d", c, v.LastSeen>>tb.shift, first, oldest)
					}
				default:
					if len(removed) != 0 {
						t.Fatal("insert into a table with room evicted")
					}
				}
				if err == nil {
					live[p.Orig] = true
				}
			case 2, 3: // a frame
				if tb.n == 0 {
					break
				}
				p := nth(next() % tb.n)
				b := next()
				tb.Seen(p, b&1, b, fuzzFlags[b>>1%len(fuzzFlags)], now)
				if p.LastSeen < now {
					t.Fatalf("LastSeen %d after a frame at %d", p.LastSeen, now)
				}
			case 4: // time passes
				now += int64(fuzzSteps[next()%len(fuzzSteps)])
			case 5: // expire
				b := next()
				budget := 1 + b%4
				if b&0x80 != 0 {
					budget = 1 << 30
				}
				n := tb.Expire(now, budget)
				if n > budget || n != len(removed) {
					t.Fatalf("Expire(budget %d) = %d, removed %d", budget, n, len(removed))
				}
				for i, f := range removed {
					if reasons[i] != Expired || now-f.LastSeen <= int64(tb.to[f.list]) {
						t.Fatalf("Expire removed a flow idle %v with timeout %v", time.Duration(now-f.LastSeen), time.Duration(tb.to[f.list]))
					}
				}
				if n < budget {
					checkExpired(t, tb, now)
				}
			case 6: // delete
				if tb.n == 0 {
					break
				}
				p := nth(next() % tb.n)
				tb.Delete(p)
				if len(removed) != 1 || reasons[0] != Deleted {
					t.Fatalf("Delete removed %d", len(removed))
				}
				tb.Delete(&Flow{})
			case 7: // a configuration reload
				to := DefaultTimeouts()
				if next()%2 == 0 {
					to = Timeouts{TCPSynSent: 3 * time.Second, TCPEstablished: 40 * time.Second, TCPClosing: 2 * time.Second, TCPClosed: time.Second,
						UDPUnreplied: time.Second, UDPReplied: 5 * time.Second, ICMP: 2 * time.Second, Other: 7 * time.Second}
				}
				tb.SetTimeouts(to)
			}
			if steps%64 == 0 {
				checkTable(t, tb)
			} else {
				checkLists(t, tb)
			}
			if len(live) != tb.n {
				t.Fatalf("%d flows inserted and not removed, len %d", len(live), tb.n)
			}
			for k := range live {
				if tb.LookupOrig(k) == nil {
					t.Fatalf("flow %v lost without a removal", k)
				}
			}
		}
		checkTable(t, tb)
		tb.Expire(now+int64(31*24*time.Hour), 1<<30)
		if tb.n != 0 || len(live) != 0 {
			t.Fatalf("flows left after a month: %d", tb.n)
		}
	})
}
