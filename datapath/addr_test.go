package datapath

import (
	"net/netip"
	"testing"

	"github.com/l2shim/l2shim/conntrack"
	"github.com/l2shim/l2shim/internal/mix"
)

// TestAddrHelpers: what keys' 16-byte addresses are grouped and hashed by. IPv4 keeps what it
// had with 4-byte keys (the /24 budget, the failure table's destination, the retry memory's
// slot); IPv6 gets its own.
func TestAddrHelpers(t *testing.T) {
	a6 := func(s string) [16]byte { return netip.MustParseAddr(s).As16() }
	pfx := func(dst [16]byte) [16]byte {
		return remotePrefix(&conntrack.Flow{Orig: conntrack.Key{Dst: dst}})
	}
	if got, want := pfx(conntrack.Addr4([4]byte{198, 51, 100, 9})), conntrack.Addr4([4]byte{198, 51, 100, 0}); got != want {
		t.Errorf("IPv4 remote prefix %v, want %v", conntrack.Addr(got), conntrack.Addr(want))
	}
	if got, want := pfx(a6("2001:db8:77:1::9")), a6("2001:db8:77::"); got != want {
		t.Errorf("IPv6 remote prefix %v, want %v", conntrack.Addr(got), conntrack.Addr(want))
	}
	if pfx(a6("2001:db8:77:1::9")) != pfx(a6("2001:db8:77:ffff:1:2:3:4")) || pfx(a6("2001:db8:77::9")) == pfx(a6("2001:db8:78::9")) {
		t.Error("IPv6 remote prefix is not the /48")
	}

	if got := healthDst(conntrack.Addr4([4]byte{203, 0, 113, 10})); got != [4]byte{203, 0, 113, 10} {
		t.Errorf("IPv4 failure-table destination %v", got)
	}
	if healthDst(a6("2001:db8::1")) == healthDst(a6("2001:db8::2")) || healthDst(a6("2001:db8::1")) == healthDst(a6("2001:db9::1")) {
		t.Error("IPv6 destinations fold alike")
	}

	// The retry memory's slot for IPv4, as it was computed from 4-byte addresses.
	a := newAttempts(42)
	src, dst := [4]byte{10, 1, 0, 2}, [4]byte{203, 0, 113, 10}
	r := retryKeyOf(conntrack.Key4(src, dst, 40000, 53, 17))
	h := a.seedRecent
	h = mix.Mix64(h ^ uint64(src[0])<<24 ^ uint64(src[1])<<16 ^ uint64(src[2])<<8 ^ uint64(src[3]))
	h = mix.Mix64(h ^ uint64(dst[0])<<24 ^ uint64(dst[1])<<16 ^ uint64(dst[2])<<8 ^ uint64(dst[3]))
	h = mix.Mix64(h ^ uint64(53)<<8 ^ uint64(17))
	if a.slot(r) != &a.recent[h%retrySlots] {
		t.Error("IPv4 retry slot moved")
	}
	r6 := retryKey{src: a6("2001:db8::2"), dst: a6("2001:db8:1::10"), dport: 53, proto: 17}
	r6b := r6
	r6b.dst = a6("2001:db8:2::10")
	same := 0
	for i := range 64 {
		r6.dport, r6b.dport = uint16(i), uint16(i)
		if a.slot(r6) == a.slot(r6b) {
			same++
		}
	}
	if same > 4 {
		t.Errorf("IPv6 destinations differing past their last 4 bytes share %d of 64 slots", same)
	}
}
