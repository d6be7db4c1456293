package conntrack

import (
	"math/bits"
	"math/rand/v2"
	"net/netip"
	"testing"

	"github.com/l2shim/l2shim/internal/mix"
)

func TestAddr4(t *testing.T) {
	a := [4]byte{192, 0, 2, 7}
	m := Addr4(a)
	if want := netip.AddrFrom4(a).As16(); m != want {
		t.Fatalf("Addr4 = %x, want %x (netip's IPv4-mapped form)", m, want)
	}
	if !Is4(m) || As4(m) != a || Addr(m) != netip.AddrFrom4(a) || Addr(m).String() != "192.0.2.7" {
		t.Fatalf("Is4 %v As4 %v Addr %v", Is4(m), As4(m), Addr(m))
	}
	if v, ok := V4(m); !ok || v != a {
		t.Fatalf("V4 = %v, %v", v, ok)
	}
	for _, s := range []string{"2001:db8::c000:207", "::c000:207", "::", "::fffe:c000:207", "64:ff9b::c000:207"} {
		x := netip.MustParseAddr(s).As16()
		if _, ok := V4(x); ok || Is4(x) {
			t.Errorf("%s taken for IPv4", s)
		}
		if Addr(x).String() != s {
			t.Errorf("Addr(%s) = %v", s, Addr(x))
		}
	}
	k := Key4(a, [4]byte{203, 0, 113, 1}, 1024, 443, 6)
	if !k.Is4() || k.Src != m || As4(k.Dst) != [4]byte{203, 0, 113, 1} || k.SrcPort != 1024 || k.DstPort != 443 || k.Proto != 6 {
		t.Fatalf("Key4 = %+v", k)
	}
	k.Dst = netip.MustParseAddr("2001:db8::1").As16()
	if k.Is4() {
		t.Fatal("a key with an IPv6 address is IPv4")
	}
}

// oldHash is Key.Hash as it was when keys held 4-byte addresses.
func oldHash(src, dst [4]byte, sport, dport uint16, proto uint8, seed uint64) uint64 {
	a := uint64(src[0])<<24 | uint64(src[1])<<16 | uint64(src[2])<<8 | uint64(src[3])
	b := uint64(dst[0])<<24 | uint64(dst[1])<<16 | uint64(dst[2])<<8 | uint64(dst[3])
	h := seed ^ (a<<32 | b)
	h = mix.Mix64(h)
	h ^= uint64(sport)<<24 | uint64(dport)<<8 | uint64(proto)
	return mix.Mix64(h)
}

// TestHashIPv4Unchanged: an IPv4 key hashes as before, so placements (per flow and per host
// pair) stay where they were.
func TestHashIPv4Unchanged(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for range 10000 {
		var src, dst [4]byte
		v := r.Uint64()
		src = [4]byte{byte(v), byte(v >> 8), byte(v >> 16), byte(v >> 24)}
		dst = [4]byte{byte(v >> 32), byte(v >> 40), byte(v >> 48), byte(v >> 56)}
		sport, dport, proto := uint16(r.Uint32()), uint16(r.Uint32()), uint8(r.Uint32())
		seed := r.Uint64()
		if got, want := Key4(src, dst, sport, dport, proto).Hash(seed), oldHash(src, dst, sport, dport, proto, seed); got != want {
			t.Fatalf("%v → %v: hash %#x, was %#x", src, dst, got, want)
		}
	}
}

// TestHashIPv6 checks every bit of an IPv6 key's addresses moves about half of the hash's
// bits, and a key and its reverse hash apart.
func TestHashIPv6(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	total, n := 0, 0
	for range 200 {
		var k Key
		for i := range k.Src {
			k.Src[i], k.Dst[i] = byte(r.Uint32()), byte(r.Uint32())
		}
		k.Src[0], k.Dst[0] = 0x20, 0x20 // never IPv4-mapped
		k.SrcPort, k.DstPort, k.Proto = uint16(r.Uint32()), 443, 6
		seed := r.Uint64()
		h := k.Hash(seed)
		if k.Reverse().Hash(seed) == h {
			t.Fatalf("%v hashes as its reverse", k)
		}
		for b := 8; b < 128; b++ { // past the first byte, which stays 0x20
			for _, a := range []*[16]byte{&k.Src, &k.Dst} {
				a[b/8] ^= 1 << (b % 8)
				total += bits.OnesCount64(h ^ k.Hash(seed))
				n++
				a[b/8] ^= 1 << (b % 8)
			}
		}
	}
	if avg := float64(total) / float64(n); avg < 31 || avg > 33 {
		t.Fatalf("average flipped bits %.2f, want about 32", avg)
	}
}

// TestIndexCollisions runs a table whose keys all share one hash: every key but one per index
// lives in its overflow map, through inserts, lookups, re-keys, deletes and expiry.
func TestIndexCollisions(t *testing.T) {
	for _, mask := range []uint32{0, 1, ^uint32(0)} {
		tb := New(64, DefaultTimeouts())
		tb.hashMask = mask
		v6 := func(i int) Key {
			k := key(i)
			k.Src = netip.MustParseAddr("2001:db8::1").As16()
			k.Src[15] = byte(i)
			k.Dst = netip.MustParseAddr("2001:db8:1::80").As16()
			return k
		}
		var ps []*Flow
		for i := range 32 {
			for _, k := range []Key{key(i), v6(i)} {
				ps = append(ps, mustInsert(t, tb, Flow{Orig: k, Reply: k.Reverse(), Gateway: -1}))
			}
		}
		checkTable(t, tb)
		if tb.LookupOrig(v6(40)) != nil || tb.LookupReply(key(40).Reverse()) != nil || tb.ReplyInUse(v6(41).Reverse()) {
			t.Fatal("a key no flow has was found")
		}
		if _, err := tb.Insert(Flow{Orig: v6(3), Reply: v6(50)}); err != ErrExists {
			t.Fatalf("insert of a live key: %v", err)
		}
		// Re-key half of them (NAT to another port), delete a quarter, check all.
		for i, p := range ps {
			switch i % 4 {
			case 0, 1:
				r := p.Reply
				r.DstPort += 10000
				if err := tb.Rekey(p, r); err != nil {
					t.Fatalf("rekey %v: %v", p.Orig, err)
				}
				if tb.LookupReply(r) != p || tb.LookupReply(p.Orig.Reverse()) != nil {
					t.Fatalf("mask %#x: rekeyed flow %v not where it should be", mask, p.Orig)
				}
			case 2:
				tb.Delete(p)
			}
		}
		checkTable(t, tb)
		if err := tb.Rekey(ps[1], ps[4].Reply); err != ErrExists {
			t.Fatalf("rekey onto a live key: %v", err)
		}
		tb.Expire(int64(24*3600e9), 1000)
		if tb.Len() != 0 || tb.orig.len() != 0 || tb.reply.len() != 0 {
			t.Fatalf("after expiry: len %d, indexes %d and %d", tb.Len(), tb.orig.len(), tb.reply.len())
		}
	}
}
