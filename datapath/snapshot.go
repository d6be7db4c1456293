package datapath

import (
	"github.com/l2shim/l2shim/failover"
	"github.com/l2shim/l2shim/filters"
)

// GatewaySnapshot is one gateway's state as the status shows it.
type GatewaySnapshot struct {
	Name string
	MAC  [6]byte // zero while unknown
	// Inputs decide its state (failover.Evaluate gives the state and its reason).
	Inputs failover.Inputs
	RTT    int64 // smallest latest probe round-trip time (ns), 0 when none
	// Stats stay live after the snapshot: a gateway a reload keeps keeps the same Stats.
	Stats *GatewayStats
}

// Snapshot is the engine's state for the status, copied under the lock.
type Snapshot struct {
	Gateways []GatewaySnapshot
	Rules    *filters.Set
	Flows    int
}

// Snapshot copies what the status needs.
func (e *Engine) Snapshot(now int64) Snapshot {
	e.mu.Lock()
	defer e.mu.Unlock()
	s := Snapshot{Gateways: make([]GatewaySnapshot, len(e.gws)), Rules: e.rules, Flows: e.table.Len()}
	for i, g := range e.gws {
		gs := &s.Gateways[i]
		gs.Name = g.Name
		if g.hasMAC {
			gs.MAC = g.mac
		}
		gs.Inputs = e.inputs(i, now, true)
		gs.RTT = e.bestRTT(i)
		gs.Stats = g.stats
	}
	return s
}
