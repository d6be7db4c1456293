package rewrite

import "encoding/binary"

// The internet checksum (RFC 1071) is the ones-complement of the ones-complement sum of the
// covered data taken as big-endian 16-bit words. Ones-complement addition is addition modulo
// 0xffff with the carry out of bit 15 added back in ("end-around carry"), so a sum can be kept
// in a wider integer and folded to 16 bits at the end. These helpers keep that arithmetic in one
// place; the rewrite path uses only the incremental forms, the full sums serve tests, software
// fallbacks and frames the shim builds itself.

// Add returns the ones-complement sum of a and b.
func Add(a, b uint16) uint16 {
	s := uint32(a) + uint32(b)
	return uint16(s + s>>16)
}

// Fold folds a wide ones-complement sum into 16 bits without complementing it. A non-zero sum
// folds to a value in 1..0xffff, never to 0.
func Fold(s uint64) uint16 {
	s = s>>32 + s&0xffffffff // at most 33 bits
	s = s>>16 + s&0xffff     // at most 18 bits
	s = s>>16 + s&0xffff     // at most 17 bits, and then only when the low part is < 0xffff
	s = s>>16 + s&0xffff
	return uint16(s)
}

// Sum adds the bytes of b to the running sum initial, as big-endian 16-bit words with an odd
// last byte padded by a zero byte, and returns the unfolded result. initial may be any value
// returned by Sum or PseudoHeaderSum, so sums over consecutive pieces compose as long as every
// piece but the last has an even length.
func Sum(b []byte, initial uint64) uint64 {
	s := initial
	// 32-bit words: w = hi<<16 | lo is congruent to hi+lo modulo 0xffff, so adding whole 32-bit
	// words and folding later is the same as adding the 16-bit halves.
	for len(b) >= 16 {
		s += uint64(binary.BigEndian.Uint32(b)) + uint64(binary.BigEndian.Uint32(b[4:])) +
			uint64(binary.BigEndian.Uint32(b[8:])) + uint64(binary.BigEndian.Uint32(b[12:]))
		b = b[16:]
	}
	for len(b) >= 4 {
		s += uint64(binary.BigEndian.Uint32(b))
		b = b[4:]
	}
	if len(b) >= 2 {
		s += uint64(binary.BigEndian.Uint16(b))
		b = b[2:]
	}
	if len(b) == 1 {
		s += uint64(b[0]) << 8
	}
	return s
}

// Checksum returns the internet checksum of b on top of the running sum initial (0, or a
// PseudoHeaderSum for TCP and UDP): the complement of the folded sum. It is the value to store
// in a zeroed checksum field; over data that already includes a correct checksum it returns 0.
func Checksum(b []byte, initial uint64) uint16 {
	return ^Fold(Sum(b, initial))
}

// PseudoHeaderSum returns the unfolded sum of the IPv4 pseudo-header that TCP and UDP checksums
// cover: both addresses, the protocol and the L4 length (header plus payload). For a GSO
// super-frame the length is that of the whole super-frame, which is what the kernel puts into the
// partial sum of a CHECKSUM_PARTIAL frame; the 32-bit length keeps BIG TCP frames right.
func PseudoHeaderSum(src, dst [4]byte, proto uint8, l4len int) uint64 {
	return uint64(binary.BigEndian.Uint16(src[:])) + uint64(binary.BigEndian.Uint16(src[2:])) +
		uint64(binary.BigEndian.Uint16(dst[:])) + uint64(binary.BigEndian.Uint16(dst[2:])) +
		uint64(proto) + uint64(uint32(l4len)>>16) + uint64(uint32(l4len)&0xffff)
}

// updateFull returns the complemented checksum field csum after a 16-bit word it covers changed
// from old to new, by RFC 1624 equation 3: HC' = ~(~HC + ~m + m'). Unlike the older equation
// HC' = HC - ~m - m' this never produces a 0xffff that a fresh computation would not.
func updateFull(csum, old, new uint16) uint16 {
	return applyFull(csum, diff2(old, new))
}

// updatePartial returns the uncomplemented partial sum field sum (of a CHECKSUM_PARTIAL frame)
// after a 16-bit word of its pseudo-header changed from old to new: sum' = sum + ~m + m'. This is
// what the kernel's inet_proto_csum_replace4(..., pseudohdr=true) does to a CHECKSUM_PARTIAL skb.
func updatePartial(sum, old, new uint16) uint16 {
	return applyPartial(sum, diff2(old, new))
}

// updateFullAddr is updateFull for a 4-byte field such as an IPv4 address.
func updateFullAddr(csum uint16, old, new [4]byte) uint16 {
	return applyFull(csum, diff4(old, new))
}

// updatePartialAddr is updatePartial for a 4-byte pseudo-header field such as an IPv4 address.
func updatePartialAddr(sum uint16, old, new [4]byte) uint16 {
	return applyPartial(sum, diff4(old, new))
}

// diff2 returns the unfolded ones-complement difference ~old + new of a 16-bit word.
func diff2(old, new uint16) uint32 {
	return uint32(^old) + uint32(new)
}

// diff4 returns the unfolded ones-complement difference of a 4-byte field.
func diff4(old, new [4]byte) uint32 {
	return diff2(binary.BigEndian.Uint16(old[:]), binary.BigEndian.Uint16(new[:])) +
		diff2(binary.BigEndian.Uint16(old[2:]), binary.BigEndian.Uint16(new[2:]))
}

// applyFull applies an accumulated difference d to a complemented checksum field. With d == 0
// the field comes back unchanged, 0 and 0xffff included; callers skip words that did not
// change, because ~m + m = 0xffff would turn a (never computed) 0xffff field into 0.
func applyFull(csum uint16, d uint32) uint16 {
	return ^Fold(uint64(^csum) + uint64(d))
}

// applyPartial applies an accumulated difference d to an uncomplemented partial-sum field.
func applyPartial(sum uint16, d uint32) uint16 {
	return Fold(uint64(sum) + uint64(d))
}
