package datapath

import (
	"fmt"

	"github.com/l2shim/l2shim/conf"
	"github.com/l2shim/l2shim/conntrack"
	"github.com/l2shim/l2shim/failover"
	"github.com/l2shim/l2shim/filters"
)

// Plan is a configuration as the engine applies it: at start (New) and on every reload
// (Reconfigure). PlanFrom builds one from a loaded file.
type Plan struct {
	Config   Config
	Gateways []GatewaySpec
	Rules    *filters.Set // nil: no rules
	Timeouts conntrack.Timeouts
	// MaxFlows sizes the flow table; only New uses it (a reload cannot resize the table).
	MaxFlows int
	// AddIfaces are interfaces a reload attached; they take the next indexes, after every
	// interface the engine has (indexes never change while the engine lives).
	AddIfaces []Iface
	// RemoveIfaces are indexes of interfaces a reload detached: they are marked down.
	RemoveIfaces []int
}

// ModeOf maps a configured mode to the selector's.
func ModeOf(m conf.Mode) failover.Mode {
	switch m {
	case conf.ModeFailover:
		return failover.Failover
	case conf.ModeOff:
		return failover.Off
	}
	return failover.LoadBalance
}

// PlanFrom builds the plan of cfg for an engine whose interfaces are named ifaces (by index;
// every interface cfg uses must be among them).
func PlanFrom(cfg *conf.Config, ifaces []string) (Plan, error) {
	index := make(map[string]int, len(ifaces))
	for i, name := range ifaces {
		index[name] = i
	}
	fo := cfg.Failover
	p := Plan{
		Config: Config{
			Mode:        ModeOf(cfg.Shim.Mode),
			SourceAware: cfg.Shim.SourceAware,
			SynRetries:  fo.SynRetries,
			Health: failover.HealthConfig{
				Window:       fo.Window,
				FailRatio:    fo.FailRatio,
				MinAttempts:  fo.MinAttempts,
				ProbeConfirm: fo.ProbeInterval > 0,
			},
			Probing:     fo.ProbeInterval > 0,
			ProbeMisses: fo.ProbeMisses,
		},
		Timeouts: conntrack.TimeoutsFrom(cfg.Conntrack),
		MaxFlows: cfg.Conntrack.MaxFlows,
	}
	for _, gc := range cfg.Gateways {
		i, ok := index[gc.Interface]
		if !ok {
			return Plan{}, fmt.Errorf("gateway %s: interface %s is not attached", gc.Name, gc.Interface)
		}
		g := GatewaySpec{Name: gc.Name, Iface: i, Weight: gc.Weight, On: gc.On, MTU: gc.MTU}
		if gc.Address.IsValid() {
			g.IP = gc.Address.As4() // else an L3 link's gateway without an address
		}
		if gc.MAC != nil {
			copy(g.MAC[:], gc.MAC)
			g.HasMAC = true
		}
		p.Gateways = append(p.Gateways, g)
	}
	rules, err := filters.Compile(cfg, ifaces)
	if err != nil {
		return Plan{}, err
	}
	p.Rules = rules
	return p, nil
}

// Reconfigure applies a reload's plan atomically. A gateway of the same name on the same
// interface and address continues the running one: it keeps its MAC, liveness, drain, probe
// verdict and counters, and its flows keep it. The flows of a gateway that is gone or turned
// off are handled as for a gateway that went down (TCP reset toward the host, outbound UDP
// moved); the returned Evacuation holds the resets to inject. Failure accounting and probe
// targets start afresh (the probers register their targets again).
func (e *Engine) Reconfigure(p Plan, now int64) Evacuation {
	e.mu.Lock()
	defer e.mu.Unlock()
	gone := e.apply(p, e.gws)
	return e.evacuate(func(fl *conntrack.Flow) bool {
		return gone[fl] || fl.Gateway >= 0 && !e.gws[fl.Gateway].On
	}, e.pickOther, now)
}

// apply installs plan p over the gateways prev (nil at start) and returns the flows whose
// gateway is gone. e.mu is held (or the engine is not shared yet).
func (e *Engine) apply(p Plan, prev []*gateway) map[*conntrack.Flow]bool {
	e.ifaces = append(e.ifaces, p.AddIfaces...)
	for _, i := range p.RemoveIfaces {
		e.ifaces[i].Up = false
	}
	remap := make([]int16, len(prev))
	for i := range remap {
		remap[i] = -1
	}
	gws := make([]*gateway, len(p.Gateways))
	for i, spec := range p.Gateways {
		var g *gateway
		for j, old := range prev {
			if old.Name == spec.Name && old.Iface == spec.Iface && old.IP == spec.IP {
				g, remap[j] = old, int16(i)
				break
			}
		}
		if g == nil {
			// New, or moved to another interface or address: it must be resolved again.
			g = &gateway{alive: true, alive6: true, stats: &GatewayStats{}, probe: failover.ProbeSummary{Up: true, Misses: p.Config.ProbeMisses}}
		}
		g.GatewaySpec = spec
		if spec.HasMAC {
			g.mac, g.hasMAC = spec.MAC, true
		}
		if spec.HasMAC6 {
			g.mac6, g.hasMAC6 = spec.MAC6, true
		}
		e.fitL3Gateway(g)
		g.benched = false
		gws[i] = g
	}
	var gone map[*conntrack.Flow]bool
	if prev != nil {
		// Flows follow their gateway's new index.
		gone = map[*conntrack.Flow]bool{}
		e.table.Range(func(fl *conntrack.Flow) bool {
			if fl.Gateway >= 0 {
				fl.Gateway = remap[fl.Gateway]
				if fl.Gateway < 0 {
					gone[fl] = true
				}
			}
			return true
		})
	}
	e.gws = gws
	e.cands = make([]failover.Candidate, len(gws))
	e.cands6 = make([]failover.Candidate, len(gws))
	for i, g := range gws {
		e.cands[i] = failover.Candidate{ID: failover.GatewayID(g.Name), Weight: g.Weight}
		e.cands6[i] = e.cands[i]
	}
	e.cfg = p.Config
	e.health = nil
	if p.Config.Health.Window > 0 {
		e.health = failover.NewHealth(p.Config.Health, len(gws))
	}
	clear(e.probes)
	e.probeList = nil
	e.rules = p.Rules
	e.table.SetTimeouts(p.Timeouts)
	e.refresh()
	// Gateways' indexes, MACs and MTUs may have changed: every carried flow is recomputed.
	e.markFastAll(func(*conntrack.Flow) bool { return true })
	return gone
}
