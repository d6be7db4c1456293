package shim

import (
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/l2shim/l2shim/control"
	"github.com/l2shim/l2shim/failover"
)

// gatewayView is what the status needs from one gateway, copied under the datapath lock by
// the health loop every 100 ms, so a status request never takes that lock.
type gatewayView struct {
	in         failover.Inputs
	mac        [6]byte
	rttNS      int64
	state      failover.Status
	lastChange time.Time
}

// view is a published snapshot of control-plane state.
type view struct {
	gateways  []gatewayView
	flows     int
	published time.Time
}

// snapshotLocked copies the gateways' state; d must be locked.
func (d *Datapath) snapshotLocked(probing bool, window time.Duration, now int64) []gatewayView {
	out := make([]gatewayView, len(d.Gws))
	for i, g := range d.Gws {
		v := &out[i]
		v.mac = g.MAC
		v.in = failover.Inputs{
			On:       g.On,
			Drained:  g.Drained,
			LinkUp:   d.Ifaces[g.Iface].Up,
			MACKnown: g.HasMAC && g.Alive,
			Probing:  probing,
			Probe:    g.probe,
			Window:   window,
		}
		if !probing {
			v.in.Probe.Up = true
		}
		if d.health != nil {
			v.in.Health = d.health.Stats(i, now)
		}
		for _, pt := range d.probes {
			if pt.Gateway == i && pt.RTT > 0 && (v.rttNS == 0 || pt.RTT < v.rttNS) {
				v.rttNS = pt.RTT
			}
		}
	}
	return out
}

// publishView refreshes the snapshot and logs gateway state changes with their reasons.
func (s *Shim) publishView() {
	now := s.now()
	s.dp.mu.Lock()
	gws := s.dp.snapshotLocked(s.cfg.Failover.ProbeInterval > 0, s.cfg.Failover.Window, now)
	flows := s.dp.table.Len()
	s.dp.mu.Unlock()
	prev := s.view.Load()
	wall := time.Now()
	for i := range gws {
		gws[i].state = failover.Evaluate(gws[i].in)
		gws[i].lastChange = s.started
		if prev != nil {
			p := prev.gateways[i]
			gws[i].lastChange = p.lastChange
			if p.state.State != gws[i].state.State {
				gws[i].lastChange = wall
				s.log.Info("gateway state", "gateway", s.cfg.Gateways[i].Name, "from", p.state.State.String(), "to", gws[i].state.State.String(), "reason", gws[i].state.Reason)
			}
		}
	}
	s.view.Store(&view{gateways: gws, flows: flows, published: wall})
}

// Status implements control.Handler.
func (s *Shim) Status() *control.Status {
	v := s.view.Load()
	st := &control.Status{
		Started:     s.started,
		Mode:        string(s.cfg.Shim.Mode),
		SourceAware: s.cfg.Shim.SourceAware,
		Config:      s.cfg.File,
		Reloads:     s.reloads.Load(),
		Datapath:    map[string]uint64{},
		Drops:       map[string]uint64{},
	}
	for i, gc := range s.cfg.Gateways {
		g := s.dp.Gws[i]
		gs := control.GatewayStatus{
			Name:       gc.Name,
			Interface:  gc.Interface,
			Address:    gc.Address.String(),
			On:         gc.On,
			Comment:    gc.Comment,
			Weight:     gc.Weight,
			Flows:      uint64(max(g.Live.Load(), 0)),
			Placed:     g.Flows.Load(),
			PacketsOut: g.PacketsOut.Load(),
			PacketsIn:  g.PacketsIn.Load(),
			BytesOut:   g.BytesOut.Load(),
			BytesIn:    g.BytesIn.Load(),
		}
		if v != nil {
			gv := v.gateways[i]
			if gv.mac != ([6]byte{}) {
				gs.MAC = net.HardwareAddr(gv.mac[:]).String()
			}
			gs.State = gv.state.State.String()
			gs.Reason = gv.state.Reason
			gs.Drained = gv.in.Drained
			gs.Active = gv.in.Health.Attempts
			gs.Failed = gv.in.Health.Failures
			gs.RTTMillis = float64(gv.rttNS) / 1e6
			gs.LastChange = gv.lastChange
		}
		st.Gateways = append(st.Gateways, gs)
	}
	for _, r := range s.dp.Rules().Stats() {
		st.Rules = append(st.Rules, control.RuleStatus{Index: r.Index, Name: r.Name, Action: r.Action, Gateway: r.Gateway, Flows: r.Flows, Packets: r.Packets, Bytes: r.Bytes})
	}
	if v != nil {
		st.Conntrack.Flows = v.flows
	}
	st.Conntrack.Max = s.cfg.Conntrack.MaxFlows
	st.Conntrack.Evictions = s.dp.table.C.Evicted.Load()
	c := &s.dp.C
	for k, val := range map[string]uint64{
		"frames_out":    c.Frames[0].Load(),
		"frames_in":     c.Frames[1].Load(),
		"flows_created": c.NewFlows.Load(),
		"nated":         c.NATed.Load(),
		"passed":        c.Passed.Load(),
		"rotations":     c.Rotations.Load(),
		"late_answers":  c.LateAnswers.Load(),
		"tcp_reset":     c.Resets.Load(),
		"udp_moved":     c.Moved.Load(),
		"probe_replies": c.ProbeReplies.Load(),
		"send_errors":   c.SendErrors.Load(),
		"lost":          c.Lost.Load(),
	} {
		st.Datapath[k] = val
	}
	for r := DropReason(1); r < dropReasons; r++ {
		st.Drops[r.String()] = c.Drops[r].Load()
	}
	st.Drops["table-full"] = c.TableFull.Load()
	return st
}

func (s *Shim) gatewayIndex(name string) (int, error) {
	for i, gc := range s.cfg.Gateways {
		if gc.Name == name {
			return i, nil
		}
	}
	for i, gc := range s.cfg.Gateways {
		if a, err := netip.ParseAddr(name); err == nil && gc.Address == a {
			return i, nil
		}
	}
	return -1, fmt.Errorf("no gateway named %q", name)
}

// Drain implements control.Handler: no new flows on the gateway; with reset its TCP flows are
// reset toward the host and its UDP flows move, so applications reconnect elsewhere at once.
func (s *Shim) Drain(name string, reset bool) (string, error) {
	gi, err := s.gatewayIndex(name)
	if err != nil {
		return "", err
	}
	s.dp.Update(func(_ []Iface, gws []*Gateway) { gws[gi].Drained = true })
	msg := fmt.Sprintf("gateway %s drained: no new flows", s.cfg.Gateways[gi].Name)
	if reset {
		rsts, n, moved := s.dp.Evacuate(gi, s.now())
		for _, r := range rsts {
			s.inject(r)
		}
		msg += fmt.Sprintf("; %d TCP flows reset, %d UDP flows moved", n, moved)
	}
	s.log.Info(msg)
	s.publishView()
	return msg, nil
}

// Undrain implements control.Handler.
func (s *Shim) Undrain(name string) (string, error) {
	gi, err := s.gatewayIndex(name)
	if err != nil {
		return "", err
	}
	s.dp.Update(func(_ []Iface, gws []*Gateway) { gws[gi].Drained = false })
	msg := fmt.Sprintf("gateway %s undrained: it takes new flows when usable", s.cfg.Gateways[gi].Name)
	s.log.Info(msg)
	s.publishView()
	return msg, nil
}

// Reload implements control.Handler. Not yet: applying a new configuration to a running
// instance arrives with the operator-surface work; until then a restart applies it.
func (s *Shim) Reload() (string, error) {
	return "", fmt.Errorf("reload is not implemented yet: restart l2shim to apply a new configuration")
}
