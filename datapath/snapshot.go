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
	// Has6: its interface has a global IPv6 address; Inputs6 then decide its state for IPv6
	// flows, and MAC6 is its IPv6 router's MAC (zero while unknown, or on an L3 link).
	Has6    bool
	Inputs6 failover.Inputs
	MAC6    [6]byte
	// RTT6 is RTT for its IPv6 probe targets (0 when it has none, or none answered yet).
	RTT6 int64
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
		if ifc := &e.ifaces[g.Iface]; ifc.Addr6 != ([16]byte{}) {
			gs.Has6 = true
			gs.Inputs6 = e.inputs6(i, now, true)
			if !ifc.L3 && g.hasMAC6 {
				gs.MAC6 = g.mac6
			}
			gs.RTT6 = e.bestRTT(i, true)
		}
		gs.RTT = e.bestRTT(i, false)
		gs.Stats = g.stats
	}
	return s
}
