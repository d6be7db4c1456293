package conntrack

import (
	"testing"
	"time"
)

func key(i int) Key {
	return Key{Src: [4]byte{10, 1, byte(i >> 8), byte(i)}, Dst: [4]byte{203, 0, 113, 10}, SrcPort: uint16(1024 + i), DstPort: 80, Proto: 6}
}

func flow(i int, now int64) Flow {
	k := key(i)
	return Flow{Orig: k, Reply: k.Reverse(), Gateway: -1, Created: now, LastSeen: now}
}

func TestInsertLookupDelete(t *testing.T) {
	tb := New(100, DefaultTimeouts())
	p, err := tb.Insert(flow(1, 0))
	if err != nil {
		t.Fatal(err)
	}
	if tb.LookupOrig(key(1)) != p || tb.LookupReply(key(1).Reverse()) != p {
		t.Fatal("flow not found by both keys")
	}
	if _, err := tb.Insert(flow(1, 0)); err != ErrExists {
		t.Fatalf("duplicate insert: %v", err)
	}
	if !tb.ReplyInUse(key(1).Reverse()) {
		t.Fatal("reply key not reported in use")
	}
	tb.Delete(p)
	if tb.Len() != 0 || tb.LookupOrig(key(1)) != nil || tb.ReplyInUse(key(1).Reverse()) {
		t.Fatal("flow still present after delete")
	}
}

func TestBound(t *testing.T) {
	tb := New(10, DefaultTimeouts())
	for i := 0; i < 10; i++ {
		if _, err := tb.Insert(flow(i, 0)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := tb.Insert(flow(11, 0)); err != ErrFull {
		t.Fatalf("insert into a full table: %v", err)
	}
}

// TestPointersStable checks a *Flow survives the table growing past a chunk.
func TestPointersStable(t *testing.T) {
	tb := New(3*chunkSize, DefaultTimeouts())
	p, _ := tb.Insert(flow(0, 0))
	for i := 1; i < 2*chunkSize+5; i++ {
		if _, err := tb.Insert(flow(i, 0)); err != nil {
			t.Fatal(err)
		}
	}
	if p.Orig != key(0) || tb.LookupOrig(key(0)) != p {
		t.Fatal("pointer to the first flow went stale")
	}
}

func TestTCPStatesAndExpiry(t *testing.T) {
	to := DefaultTimeouts()
	tb := New(100, to)
	p, _ := tb.Insert(flow(1, 0))
	tb.Seen(p, DirOrig, 60, 0x02, 0) // SYN
	if p.TCPState != TCPSynSent || p.SynCount != 1 {
		t.Fatalf("after SYN: state %d syns %d", p.TCPState, p.SynCount)
	}
	tb.Seen(p, DirOrig, 60, 0x02, 1) // retransmitted SYN
	tb.Seen(p, DirReply, 60, 0x12, 2)
	tb.Seen(p, DirOrig, 60, 0x10, 3)
	if p.TCPState != TCPEstablished || p.SynCount != 2 || !p.Replied {
		t.Fatalf("after handshake: state %d syns %d replied %v", p.TCPState, p.SynCount, p.Replied)
	}
	if p.Packets != [2]uint64{3, 1} || p.Bytes != [2]uint64{180, 60} {
		t.Fatalf("counters %v %v", p.Packets, p.Bytes)
	}
	// Established flows survive far longer than a closed one.
	now := int64(3 + time.Hour)
	if n := tb.Expire(now, 1<<20); n != 0 || tb.Len() != 1 {
		t.Fatalf("established flow expired after an hour")
	}
	tb.Seen(p, DirOrig, 60, 0x11, now) // FIN
	if p.TCPState != TCPClosing {
		t.Fatalf("after one FIN: state %d", p.TCPState)
	}
	tb.Seen(p, DirReply, 60, 0x11, now)
	if p.TCPState != TCPClosed {
		t.Fatalf("after both FINs: state %d", p.TCPState)
	}
	if n := tb.Expire(now+int64(to.TCPClosed)-1, 1<<20); n != 0 {
		t.Fatal("closed flow expired before its timeout")
	}
	if n := tb.Expire(now+int64(to.TCPClosed)+1, 1<<20); n != 1 || tb.Len() != 0 {
		t.Fatalf("closed flow not expired after its timeout (%d removed)", n)
	}
}

// TestExpireIncremental checks Expire respects its budget and a full pass over several calls
// removes every idle flow.
func TestExpireIncremental(t *testing.T) {
	tb := New(1<<16, DefaultTimeouts())
	for i := 0; i < 10000; i++ {
		f := flow(i, 0)
		f.Orig.Proto, f.Reply.Proto = 17, 17
		tb.Insert(f)
	}
	late := int64(time.Hour)
	if n := tb.Expire(late, 1000); n > 1000 {
		t.Fatalf("expired %d with a budget of 1000", n)
	}
	for i := 0; i < 20 && tb.Len() > 0; i++ {
		tb.Expire(late, 1000)
	}
	if tb.Len() != 0 {
		t.Fatalf("%d idle flows left after a full pass", tb.Len())
	}
	// Slots are reused.
	if _, err := tb.Insert(flow(1, late)); err != nil {
		t.Fatal(err)
	}
}

func BenchmarkLookup(b *testing.B) {
	const n = 1 << 20
	tb := New(n, DefaultTimeouts())
	for i := 0; i < n; i++ {
		k := Key{Src: [4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}, Dst: [4]byte{1, 1, 1, 1}, SrcPort: 1, DstPort: 2, Proto: 6}
		tb.Insert(Flow{Orig: k, Reply: k.Reverse()})
	}
	i := 0
	for b.Loop() {
		i = (i + 7919) & (n - 1)
		k := Key{Src: [4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}, Dst: [4]byte{1, 1, 1, 1}, SrcPort: 1, DstPort: 2, Proto: 6}
		if tb.LookupOrig(k) == nil {
			b.Fatal("missing")
		}
	}
}
