package failover

import (
	"math"

	"github.com/l2shim/l2shim/internal/mix"
)

// Mode is how new flows are placed.
type Mode uint8

const (
	// LoadBalance spreads flows by weight with rendezvous hashing.
	LoadBalance Mode = iota
	// Failover uses the first usable gateway in configured order.
	Failover
	// Off places no flow: traffic is left to the host's routing.
	Off
)

// Candidate is one gateway as the selector sees it.
type Candidate struct {
	// ID is a stable hash of the gateway's name, so a flow's score for a gateway does not
	// change when other gateways are added, removed or benched.
	ID     uint64
	Weight int
	Usable bool
}

// GatewayID derives a Candidate.ID from a gateway name (FNV-1a, then mixed).
func GatewayID(name string) uint64 {
	h := uint64(14695981039346656037)
	for i := 0; i < len(name); i++ {
		h ^= uint64(name[i])
		h *= 1099511628211
	}
	return mix.Mix64(h)
}

// Pick returns the index of the gateway a new flow with hash flowHash goes to, or -1 when no
// candidate is usable.
//
// Load balancing uses weighted rendezvous hashing: each usable gateway scores
// weight / -ln(u), u uniform in (0,1) from the flow and gateway hashes, and the highest score
// wins. A flow's winner changes only when the winner itself stops being usable, so adding,
// benching or restoring a gateway moves no flow that is placed elsewhere, and the share of
// new flows each gateway receives is its weight over the sum of usable weights.
func Pick(mode Mode, flowHash uint64, cands []Candidate) int {
	switch mode {
	case Failover:
		for i := range cands {
			if cands[i].Usable && cands[i].Weight > 0 {
				return i
			}
		}
		return -1
	case Off:
		return -1
	}
	best, bestScore := -1, math.Inf(-1)
	for i := range cands {
		c := &cands[i]
		if !c.Usable || c.Weight <= 0 {
			continue
		}
		h := mix.Mix64(flowHash ^ c.ID)
		u := (float64(h>>11) + 0.5) / (1 << 53)
		score := float64(c.Weight) / -math.Log(u)
		if score > bestScore {
			best, bestScore = i, score
		}
	}
	return best
}
