package datapath

import (
	"github.com/l2shim/l2shim/conntrack"
	"github.com/l2shim/l2shim/filters"
)

// Affinity ([shim] affinity, a rule's affinity) decides what the mode's choice hashes. Per
// flow, the 5-tuple: the best balance, and each new connection may take another uplink. With
// host-pair, only the two addresses: every connection between one local and one remote
// address scores the gateways alike in the rendezvous hash, so they all take the same uplink,
// with no per-pair state to keep; pairs still spread by weight, and a pair moves only when its
// gateway stops being usable (rendezvous hashing moves nothing placed elsewhere). The cost is
// balance: one busy pair is one flow's worth of choice, however many connections it opens.

// pairSalt keeps a pair's hash apart from any flow's.
const pairSalt = 0x686f73742d706169 // "host-pai"

// placementHash returns the hash the mode's choice places fl by, and the affinity it follows:
// the affinity of the rule that left the flow to the mode's choice (fl.Rule), else the
// configuration's.
func (e *Engine) placementHash(fl *conntrack.Flow) (uint64, filters.Affinity) {
	a := e.rules.Affinity(int(fl.Rule))
	if a == filters.AffinityHostPair {
		return pairHash(fl.Orig, e.opts.Seed), a
	}
	return fl.Orig.Hash(e.opts.Seed), a
}

// pairHash hashes only the two addresses of k.
func pairHash(k conntrack.Key, seed uint64) uint64 {
	return conntrack.Key{Src: k.Src, Dst: k.Dst}.Hash(seed ^ pairSalt)
}
