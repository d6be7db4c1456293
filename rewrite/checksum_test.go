package rewrite

import (
	"encoding/binary"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/gopacket/gopacket"
)

func TestAddFold(t *testing.T) {
	cases := []struct{ a, b, want uint16 }{
		{0, 0, 0}, {1, 2, 3}, {0xffff, 1, 1}, {0xffff, 0xffff, 0xffff}, {0x8000, 0x8000, 1}, {0xfffe, 1, 0xffff},
	}
	for _, c := range cases {
		if got := Add(c.a, c.b); got != c.want {
			t.Errorf("Add(%#x, %#x) = %#x, want %#x", c.a, c.b, got, c.want)
		}
	}
	folds := []struct {
		s    uint64
		want uint16
	}{
		{0, 0}, {0xffff, 0xffff}, {0x10000, 1}, {0x1fffe, 0xffff}, {0xffffffff, 0xffff},
		{math.MaxUint64, 0xffff}, {0x1_0000_0000, 1}, {0xfffe_ffff_0001, 0xffff},
	}
	for _, c := range folds {
		if got := Fold(c.s); got != c.want {
			t.Errorf("Fold(%#x) = %#x, want %#x", c.s, got, c.want)
		}
	}
	r := rand.New(rand.NewPCG(1, 2))
	for range 100000 {
		s := r.Uint64() >> (r.IntN(64))
		want := uint16(0)
		if s != 0 {
			want = uint16((s-1)%0xffff + 1)
		}
		if got := Fold(s); got != want {
			t.Fatalf("Fold(%#x) = %#x, want %#x", s, got, want)
		}
		a, b := uint16(r.Uint32()), uint16(r.Uint32())
		if got, want := Add(a, b), Fold(uint64(a)+uint64(b)); got != want {
			t.Fatalf("Add(%#x, %#x) = %#x, want %#x", a, b, got, want)
		}
	}
}

func TestChecksumMatchesGopacket(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	lengths := []int{0, 1, 2, 3, 4, 5, 7, 8, 15, 16, 17, 31, 33, 63, 1499, 1500, 65535, 65536}
	for range 200 {
		lengths = append(lengths, r.IntN(3000))
	}
	for _, n := range lengths {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(r.Uint32())
		}
		if n == 65536 {
			for i := range b {
				b[i] = 0xff // the largest sum
			}
		}
		init := uint32(r.Uint32() >> 8)
		want := gopacket.FoldChecksum(gopacket.ComputeChecksum(b, init))
		if got := Checksum(b, uint64(init)); got != want {
			t.Errorf("Checksum(len %d, %#x) = %#04x, gopacket %#04x", n, init, got, want)
		}
	}
}

func TestPseudoHeaderSum(t *testing.T) {
	for _, frame := range [][]byte{
		buildTCP(t, ipHost, ipRemote, 1, 2, tcpOpt{options: true, payload: 999}),
		buildUDP(t, ipRemote, ipHost, 3, 4, 1234),
	} {
		var f Frame
		if r := f.Parse(frame, VnetHdr{}); r != OK {
			t.Fatal(r)
		}
		if c := Checksum(frame[f.L4:f.End], PseudoHeaderSum(f.Src, f.Dst, f.Proto, f.End-f.L4)); c != 0 {
			t.Errorf("proto %d: a gopacket-built frame does not verify against PseudoHeaderSum: %#x", f.Proto, c)
		}
	}
	// Lengths beyond 16 bits (BIG TCP) add as two words.
	if got, want := Fold(PseudoHeaderSum([4]byte{}, [4]byte{}, 6, 0x12345)), uint16(6+1+0x2345); got != want {
		t.Errorf("32-bit length: %#x, want %#x", got, want)
	}
}

// TestIncrementalUpdates checks updateFull, updateFullAddr, updatePartial and updatePartialAddr
// against full recomputation over random data, steering some cases onto the 0/0xffff corner.
func TestIncrementalUpdates(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	for i := range 200000 {
		n := 4 + 2*r.IntN(40)
		b := make([]byte, n)
		for j := range b {
			b[j] = byte(r.Uint32())
		}
		if i%7 == 0 {
			for j := range b {
				b[j] = 0
			}
			b[n-1] = byte(r.IntN(3)) // nearly all zero: sums near the corner
		}
		// Word 0 is the checksum field; words 1.. are data.
		binary.BigEndian.PutUint16(b, 0)
		if Fold(Sum(b, 0)) == 0 {
			continue // all-zero data has no checksum that a receiver could verify
		}
		csum := Checksum(b, 0)
		partial := Fold(Sum(b[2:], 0))
		k := 2 + 2*r.IntN((n-2)/2)
		old := binary.BigEndian.Uint16(b[k:])
		nv := uint16(r.Uint32())
		switch i % 5 {
		case 0:
			nv = old
		case 1:
			// Choose nv so that the new checksum computes to 0: the data sum must fold to 0xffff.
			rest := Fold(Sum(b[2:], 0) + uint64(^old))
			nv = ^rest
		}
		binary.BigEndian.PutUint16(b[k:], nv)
		if Fold(Sum(b, 0)) == 0 {
			continue
		}
		wantFull := Checksum(b, 0)
		wantPartial := Fold(Sum(b[2:], 0))
		if nv != old {
			if got := updateFull(csum, old, nv); got != wantFull {
				t.Fatalf("updateFull(%#x, %#x, %#x) = %#x, recomputed %#x", csum, old, nv, got, wantFull)
			}
			if got := updatePartial(partial, old, nv); got != wantPartial {
				t.Fatalf("updatePartial(%#x, %#x, %#x) = %#x, recomputed %#x", partial, old, nv, got, wantPartial)
			}
		}
		if k+4 <= n {
			binary.BigEndian.PutUint16(b[k:], old)
			oldA := [4]byte(b[k : k+4])
			newA := [4]byte{byte(r.Uint32()), byte(r.Uint32()), byte(r.Uint32()), byte(r.Uint32())}
			copy(b[k:], newA[:])
			if Fold(Sum(b, 0)) == 0 || oldA == newA {
				continue
			}
			if got, want := updateFullAddr(csum, oldA, newA), Checksum(b, 0); got != want {
				t.Fatalf("updateFullAddr = %#x, recomputed %#x", got, want)
			}
			if got, want := updatePartialAddr(partial, oldA, newA), Fold(Sum(b[2:], 0)); got != want {
				t.Fatalf("updatePartialAddr = %#x, recomputed %#x", got, want)
			}
		}
	}
}
