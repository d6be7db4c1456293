package datapath

// Reason says why a flow has its gateway, for `l2shim flows` and `explain`.
type Reason uint8

// The reasons, in the order the engine considers them for a new flow.
const (
	ReasonNone        Reason = iota
	ReasonRule               // a [[rule]] decided (route-to, pass or drop)
	ReasonSourceAware        // it arrived through this gateway (source_aware)
	ReasonPerSource          // its source address belongs to this gateway's uplink
	ReasonBalanced           // load-balance: the weighted hash chose it
	ReasonFailover           // failover: the first usable gateway in file order
	ReasonRetry              // an application retried an unanswered attempt from a new socket
	ReasonRotated            // its connection request went unanswered; moved on (Moves times)
	ReasonMoved              // its gateway went down; moved here (Moves times)
	ReasonPinned             // a connection older than l2shim (or forgotten): kept as the host sent it
	ReasonHostRouting        // no gateway usable, or none applies: the host's own routing
	ReasonAffinity           // load-balance with host-pair affinity: the hash of its two addresses chose it
	numReasons
)

func (r Reason) String() string {
	switch r {
	case ReasonRule:
		return "rule"
	case ReasonSourceAware:
		return "source-aware"
	case ReasonPerSource:
		return "per-source"
	case ReasonBalanced:
		return "balanced"
	case ReasonFailover:
		return "failover-order"
	case ReasonRetry:
		return "retry-elsewhere"
	case ReasonRotated:
		return "rotated"
	case ReasonMoved:
		return "moved-off-dead"
	case ReasonPinned:
		return "pinned"
	case ReasonHostRouting:
		return "host-routing"
	case ReasonAffinity:
		return "affinity"
	}
	return "none"
}
