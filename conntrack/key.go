package conntrack

import (
	"encoding/binary"
	"net/netip"

	"github.com/l2shim/l2shim/internal/mix"
)

// Key is a flow's 5-tuple in one direction. For ICMP echo both ports hold the identifier.
//
// Addresses are 16 bytes in network byte order, an IPv4 address as IPv4-mapped IPv6
// (::ffff:a.b.c.d, see Addr4), so one table holds IPv4 and IPv6 flows; the fast path's keys
// (fastpath.Key, struct flow_key in fastpath/bpf/fastpath.c) follow the same convention. An
// IPv6 packet never carries an IPv4-mapped address on the wire (RFC 4291 2.5.5.2): whoever
// makes keys of IPv6 frames must refuse those, or they would share an IPv4 flow's key.
type Key struct {
	Src, Dst         [16]byte
	SrcPort, DstPort uint16
	Proto            uint8
}

// v4Prefix is the first 12 bytes of an IPv4-mapped address.
var v4Prefix = [12]byte{10: 0xff, 11: 0xff}

// Addr4 returns IPv4 address a as a key holds it: ::ffff:a.b.c.d.
func Addr4(a [4]byte) (m [16]byte) {
	// One 8-byte store (the compiler builds a literal byte by byte).
	binary.LittleEndian.PutUint64(m[8:], mapped4(a))
	return m
}

// mapped4 is the last eight bytes of IPv4 address a mapped (0, 0, 0xff, 0xff, a), as a
// little-endian word.
func mapped4(a [4]byte) uint64 {
	return 0xffff0000 | uint64(binary.LittleEndian.Uint32(a[:]))<<32
}

// Is4 reports whether a is an IPv4 address (IPv4-mapped).
func Is4(a [16]byte) bool { return [12]byte(a[:12]) == v4Prefix }

// V4 returns the IPv4 address a holds, and whether it holds one.
func V4(a [16]byte) ([4]byte, bool) { return [4]byte(a[12:]), Is4(a) }

// As4 returns the IPv4 address a holds, for an address known to be IPv4 (a key made from an
// IPv4 frame): its last four bytes, whatever the others are.
func As4(a [16]byte) [4]byte { return [4]byte(a[12:]) }

// Addr returns a as a netip.Addr, an IPv4 address unmapped: it prints as a.b.c.d and an
// IPv4 prefix contains it.
func Addr(a [16]byte) netip.Addr { return netip.AddrFrom16(a).Unmap() }

// Key4 returns the key of an IPv4 tuple.
func Key4(src, dst [4]byte, srcPort, dstPort uint16, proto uint8) (k Key) {
	k.Set4(src, dst, srcPort, dstPort, proto)
	return k
}

// Set4 makes k the key of an IPv4 tuple. It is Key4 for the per-frame path: writing into a
// key in place spares the copies a returned one takes.
func (k *Key) Set4(src, dst [4]byte, srcPort, dstPort uint16, proto uint8) {
	le := binary.LittleEndian
	*k = Key{SrcPort: srcPort, DstPort: dstPort, Proto: proto}
	le.PutUint64(k.Src[8:], mapped4(src))
	le.PutUint64(k.Dst[8:], mapped4(dst))
}

// Is4 reports whether k is an IPv4 flow's key (both addresses IPv4).
func (k Key) Is4() bool { return Is4(k.Src) && Is4(k.Dst) }

// Reverse returns the key of the same flow seen from the other end.
func (k Key) Reverse() Key {
	return Key{Src: k.Dst, Dst: k.Src, SrcPort: k.DstPort, DstPort: k.SrcPort, Proto: k.Proto}
}

// Hash returns a well-mixed 64-bit hash of the key, stable for the life of the process and
// independent of direction-specific fields other than the tuple itself. An IPv4 key hashes
// its four-byte addresses exactly as before keys had 16 (placements do not change); an IPv6
// key mixes in the rest of both addresses first.
func (k Key) Hash(seed uint64) uint64 {
	be := binary.BigEndian
	h := seed ^ (uint64(be.Uint32(k.Src[12:]))<<32 | uint64(be.Uint32(k.Dst[12:])))
	if !k.Is4() {
		h = mix.Mix64(h ^ be.Uint64(k.Src[:8]))
		h = mix.Mix64(h ^ be.Uint64(k.Dst[:8]))
		h ^= uint64(be.Uint32(k.Src[8:12]))<<32 | uint64(be.Uint32(k.Dst[8:12]))
	}
	h = mix.Mix64(h)
	h ^= uint64(k.SrcPort)<<24 | uint64(k.DstPort)<<8 | uint64(k.Proto)
	return mix.Mix64(h)
}
