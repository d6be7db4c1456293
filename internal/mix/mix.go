// Package mix holds the one 64-bit mixing function the project hashes with: flow keys for
// placement and the flow table, gateway names for rendezvous scores, destinations for the
// failure table.
package mix

// Golden is 2^64 divided by the golden ratio: adding or xoring it decorrelates two uses of one
// seed.
const Golden = 0x9e3779b97f4a7c15

// Mix64 is the splitmix64 finaliser: every input bit affects every output bit, so the low or
// high bits of the result can be used alone.
func Mix64(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}
