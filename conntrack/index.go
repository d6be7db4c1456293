package conntrack

import "encoding/binary"

// index finds live flows by one of their keys (Orig or Reply).
//
// A key holds two 16-byte addresses, so a map by the key itself would keep a 44-byte slot for
// each key beside the flow's own copy in the slab. Instead main maps a 32-bit hash of the key
// to the slot of the flow that has it; the flow's own key is compared on lookup. A key whose
// hash another live key holds already goes to over, by the key itself. At a million flows a
// few hundred keys share a hash, so over stays small; and since over is an ordinary map, keys
// made to collide cost an extra lookup, nothing worse.
type index struct {
	main  map[uint32]int32
	over  map[Key]int32
	reply bool // the index of Reply keys; otherwise of Orig keys
}

func newIndex(size int, reply bool) index {
	return index{main: make(map[uint32]int32, size), over: make(map[Key]int32), reply: reply}
}

// len returns the number of keys indexed.
func (x *index) len() int { return len(x.main) + len(x.over) }

// hashKeys are the random multipliers of the indexes' hash (pair-multiply-shift over the key's
// ten 32-bit words, and a constant).
type hashKeys [11]uint64

// hash is the key's hash in the table's indexes: pair-multiply-shift (Dietzfelbinger; Thorup,
// "High Speed Hashing for Integers and Strings", 2015) with the table's random multipliers,
// which two distinct keys share with probability about 2^-31 whatever they are. It costs five
// independent multiplications; the map hashes the result again.
func (t *Table) hash(k *Key) uint32 {
	le := binary.LittleEndian
	a := &t.mul
	h := (a[0]+uint64(le.Uint32(k.Src[4:])))*(a[1]+uint64(le.Uint32(k.Src[0:]))) +
		(a[2]+uint64(le.Uint32(k.Src[12:])))*(a[3]+uint64(le.Uint32(k.Src[8:]))) +
		(a[4]+uint64(le.Uint32(k.Dst[4:])))*(a[5]+uint64(le.Uint32(k.Dst[0:]))) +
		(a[6]+uint64(le.Uint32(k.Dst[12:])))*(a[7]+uint64(le.Uint32(k.Dst[8:]))) +
		(a[8]+uint64(k.Proto))*(a[9]+(uint64(k.SrcPort)|uint64(k.DstPort)<<16)) + a[10]
	return uint32(h>>32) & t.hashMask
}

// key returns the key of the flow at slot i that x indexes.
func (t *Table) key(x *index, i int32) *Key {
	if x.reply {
		return &t.at(i).Reply
	}
	return &t.at(i).Orig
}

// find returns the slot of the live flow with key k in x, or -1.
func (t *Table) find(x *index, k *Key) int32 {
	if i, ok := x.main[t.hash(k)]; ok && *t.key(x, i) == *k {
		return i
	}
	if len(x.over) > 0 {
		if i, ok := x.over[*k]; ok {
			return i
		}
	}
	return -1
}

// add indexes slot i by k, which no live flow has.
func (t *Table) add(x *index, k *Key, i int32) {
	h := t.hash(k)
	if _, taken := x.main[h]; taken {
		x.over[*k] = i
		return
	}
	x.main[h] = i
}

// del forgets k, the key of slot i.
func (t *Table) del(x *index, k *Key, i int32) {
	h := t.hash(k)
	if j, ok := x.main[h]; ok && j == i {
		delete(x.main, h)
		return
	}
	delete(x.over, *k)
}
