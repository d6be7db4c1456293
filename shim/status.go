package shim

import (
	"context"
	"net"
	"net/netip"
	"time"

	"github.com/l2shim/l2shim/conf"
	"github.com/l2shim/l2shim/control"
	"github.com/l2shim/l2shim/datapath"
	"github.com/l2shim/l2shim/failover"
)

// view is a published snapshot of the engine's state with the configuration it belongs to,
// refreshed by the health loop every 100 ms, so a status request never takes the engine's
// lock.
type view struct {
	cfg       *conf.Config
	snap      datapath.Snapshot
	states    []failover.Status // by gateway
	states6   []failover.Status // by gateway, for IPv6 flows (zero when it has no IPv6)
	changed   []time.Time       // when each gateway's state last changed
	published time.Time
	// obs keeps the events and the traffic history (events.go); the counters are what
	// observe compares between two views.
	obs                         *observer
	tcpReset, udpMoved, reloads uint64
}

// healthLoop re-evaluates failure accounting every 100 ms, publishes the view and logs what
// changed.
func (s *Shim) healthLoop(ctx context.Context) {
	every(ctx, 100*time.Millisecond, func() {
		trans, changed, allDown := s.engine.HealthTick(s.now())
		s.publishView()
		for _, tr := range trans {
			name := s.config().Gateways[tr.Gateway].Name
			if tr.Benched {
				s.log.Warn("gateway benched: no new flows", "gateway", name, "reason", tr.Reason)
				s.event("bench", name, "benched: no new flows: "+tr.Reason)
			} else {
				s.log.Info("gateway back from the bench", "gateway", name, "reason", tr.Reason)
				s.event("bench", name, "back from the bench: "+tr.Reason)
			}
		}
		if changed {
			if allDown {
				s.log.Warn("no usable gateway: new flows are left to the host's own routing")
				s.event("all-down", "", "no usable gateway: new flows are left to the host's own routing")
			} else {
				s.log.Info("a gateway is usable again: l2shim places new flows")
				s.event("all-down", "", "a gateway is usable again: l2shim places new flows")
			}
		}
	})
}

// publishView refreshes the view, logs gateway state changes with their reasons and records
// them, with what else changed, as events. Concurrent callers (the health loop, a drain, a
// reload) each install a complete view; a change is logged and recorded once, by the caller
// whose view replaced the one without it.
func (s *Shim) publishView() {
	for {
		// The snapshot is taken after prev was installed, so it is never older than prev's.
		prev := s.view.Load()
		// A reload changes the configuration and the engine together with cfgMu held, so the
		// snapshot belongs to cfg.
		s.cfgMu.RLock()
		cfg := s.cfg
		snap := s.engine.Snapshot(s.now())
		s.cfgMu.RUnlock()
		wall := time.Now()
		v := &view{cfg: cfg, snap: snap, states: make([]failover.Status, len(snap.Gateways)), states6: make([]failover.Status, len(snap.Gateways)),
			changed: make([]time.Time, len(snap.Gateways)), published: wall}
		s.counterValues(v)
		if prev == nil {
			v.obs = newObserver()
		} else {
			v.obs = prev.obs
		}
		type change struct {
			name     string
			family   string // "ipv4", or "ipv6" for the state of its IPv6 flows
			from, to failover.State
			reason   string
		}
		var changes []change
		for i, g := range snap.Gateways {
			v.states[i] = failover.Evaluate(g.Inputs)
			if g.Has6 {
				v.states6[i] = failover.Evaluate(g.Inputs6)
			}
			v.changed[i] = s.started
			if prev == nil {
				continue
			}
			for j, pg := range prev.snap.Gateways {
				// The same Stats is the same gateway, across reloads too.
				if pg.Stats != g.Stats {
					continue
				}
				v.changed[i] = prev.changed[j]
				if prev.states[j].State != v.states[i].State {
					v.changed[i] = wall
					changes = append(changes, change{g.Name, "ipv4", prev.states[j].State, v.states[i].State, v.states[i].Reason})
				}
				// IPv6 (health per family): a change while the gateway has IPv6 before and
				// after; gaining or losing IPv6 itself shows in the status.
				if g.Has6 && pg.Has6 && prev.states6[j].State != v.states6[i].State {
					changes = append(changes, change{g.Name, "ipv6", prev.states6[j].State, v.states6[i].State, v.states6[i].Reason})
				}
			}
		}
		if !s.view.CompareAndSwap(prev, v) {
			continue // another caller published meanwhile: build on its view
		}
		for _, c := range changes {
			s.log.Info("gateway state", "gateway", c.name, "family", c.family, "from", c.from.String(), "to", c.to.String(), "reason", c.reason)
			msg := c.from.String() + " → " + c.to.String()
			if c.family == "ipv6" {
				msg = "IPv6: " + msg
			}
			if c.reason != "" {
				msg += ": " + c.reason
			}
			v.obs.record(wall, "gateway", c.name, msg)
		}
		s.observe(prev, v, wall)
		return
	}
}

// Status implements control.Handler. It reads the kernel's counts into the engine (syncFast),
// then the published view and atomic counters; before Run has published one (it is starting)
// there is no status: nil.
func (s *Shim) Status() *control.Status {
	v := s.view.Load()
	if v == nil {
		return nil
	}
	// What the kernel carried since the last sync counts too: a transfer that just ended
	// shows all its bytes.
	s.syncFast()
	cfg := v.cfg
	st := &control.Status{
		Started:     s.started,
		Mode:        string(cfg.Shim.Mode),
		SourceAware: cfg.Shim.SourceAware,
		Config:      cfg.File,
		Reloads:     s.reloads.Load(),
		Datapath:    map[string]uint64{},
		Drops:       map[string]uint64{},
		Affinity:    affinityName(string(cfg.Shim.Affinity)),
		Attach:      s.attachMode(),
		Events:      v.obs.last(5),
	}
	for i, g := range v.snap.Gateways {
		gc := cfg.Gateways[i]
		stats := g.Stats
		gs := control.GatewayStatus{
			Name:       gc.Name,
			Interface:  gc.Interface,
			Address:    addrString(gc.Address),
			On:         gc.On,
			Comment:    gc.Comment,
			Weight:     gc.Weight,
			Flows:      uint64(max(stats.Live.Load(), 0)),
			Placed:     stats.Placed.Load(),
			PacketsOut: stats.PacketsOut.Load(),
			PacketsIn:  stats.PacketsIn.Load(),
			BytesOut:   stats.BytesOut.Load(),
			BytesIn:    stats.BytesIn.Load(),
			State:      v.states[i].State.String(),
			Reason:     v.states[i].Reason,
			Drained:    g.Inputs.Drained,
			Active:     g.Inputs.Health.Attempts,
			Failed:     g.Inputs.Health.Failures,
			RTTMillis:  float64(g.RTT) / 1e6,
			LastChange: v.changed[i],
		}
		if g.MAC != ([6]byte{}) && g.MAC != l3GatewayMAC {
			gs.MAC = net.HardwareAddr(g.MAC[:]).String()
		}
		if g.Has6 {
			st6 := v.states6[i]
			gs.State6, gs.Reason6 = st6.State.String(), st6.Reason
			gs.RTT6Millis = float64(g.RTT6) / 1e6
			if g.MAC6 != ([6]byte{}) {
				gs.MAC6 = net.HardwareAddr(g.MAC6[:]).String()
			}
		}
		st.Gateways = append(st.Gateways, gs)
	}
	for _, r := range v.snap.Rules.Stats() {
		st.Rules = append(st.Rules, control.RuleStatus{Index: r.Index, Name: r.Name, Action: r.Action, Gateway: r.Gateway, Affinity: r.Affinity, Flows: r.Flows, Packets: r.Packets, Bytes: r.Bytes})
	}
	st.Conntrack.Flows = v.snap.Flows
	st.Conntrack.Max = cfg.Conntrack.MaxFlows
	st.Conntrack.Evictions, st.Conntrack.Expired = s.engine.TableCounters()
	s.engine.Counters().Each(func(g datapath.Group, name string, val uint64) {
		switch g {
		case datapath.GroupTotals:
			st.Datapath[name] = val
		case datapath.GroupDrops:
			st.Drops[name] = val
		case datapath.GroupMalformed:
			if val > 0 {
				st.Drops["malformed:"+name] = val
			}
		}
	})
	s.eachOwnCounter(func(name string, val uint64) { st.Datapath[name] = val })
	if v := s.source6.view.Load(); v != nil {
		for _, e := range *v {
			p := control.Source6Status{Prefix: e.Prefix.String(), Interface: e.Interface, Router: addrString(e.Router), Active: e.ready()}
			if e.MAC != ([6]byte{}) {
				p.MAC = net.HardwareAddr(e.MAC[:]).String()
			}
			st.Source6 = append(st.Source6, p)
		}
	}
	return st
}

// eachOwnCounter calls fn with the counters the shim keeps beside the engine's, by the name
// status and the totals give them: frames dropped because a socket's send buffer was full
// (also counted as send_errors), and frames read cut short (also counted as lost).
func (s *Shim) eachOwnCounter(fn func(name string, val uint64)) {
	fn("send_full", s.sendFull.Load())
	fn("truncated", s.truncated.Load())
	// IPv6 packets the kernel sent out of the uplink their source address belongs to.
	var source6 uint64
	if s.maps != nil {
		if st, err := s.maps.k.Stats(); err == nil {
			source6 = st.Source6
		}
	}
	fn("ipv6_per_source", source6)
}

// logTotals writes the counters when the shim stops, so a run can be seen to have worked even
// without the status socket. The names are the status's, with "drop_" and "malformed_" in
// front of drop and parse-failure reasons.
func (s *Shim) logTotals() {
	evicted, expired := s.engine.TableCounters()
	attrs := []any{"flows_now", s.engine.Flows(), "evicted", evicted, "expired", expired}
	s.engine.Counters().Each(func(g datapath.Group, name string, val uint64) {
		switch g {
		case datapath.GroupTotals:
			attrs = append(attrs, name, val)
		case datapath.GroupDrops:
			attrs = append(attrs, "drop_"+name, val)
		case datapath.GroupMalformed:
			if val > 0 {
				attrs = append(attrs, "malformed_"+name, val)
			}
		}
	})
	s.eachOwnCounter(func(name string, val uint64) { attrs = append(attrs, name, val) })
	snap := s.engine.Snapshot(s.now())
	for _, g := range snap.Gateways {
		attrs = append(attrs, "flows_"+g.Name, g.Stats.Placed.Load())
	}
	for _, p := range s.ports {
		if p.removed {
			continue // a reload detached it; the interface may be back as another port
		}
		// Frames the kernel dropped because the shim did not read fast enough.
		var drops uint32
		for _, c := range []*packetConn{p.capture, p.captureHost} {
			if c == nil {
				continue
			}
			if st, err := c.c.Stats(); err == nil {
				drops += st.Drops
			}
		}
		attrs = append(attrs, "capture_drops_"+p.name, drops)
	}
	s.log.Info("totals", attrs...)
}

// addrString renders an address for status, "" for none (an L3 link's gateway may have none).
func addrString(a netip.Addr) string {
	if !a.IsValid() {
		return ""
	}
	return a.String()
}

// attachMode is how the hooks are attached ("" before setup).
func (s *Shim) attachMode() string {
	if s.maps == nil {
		return ""
	}
	return string(s.maps.k.Mode())
}
