package shim

import (
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/l2shim/l2shim/conf"
	"github.com/l2shim/l2shim/control"
	"github.com/l2shim/l2shim/failover"
	"github.com/l2shim/l2shim/filters"
)

// gatewayView is what the status needs from one gateway, copied under the datapath lock by
// the health loop every 100 ms, so a status request never takes that lock.
type gatewayView struct {
	g          *Gateway
	in         failover.Inputs
	mac        [6]byte
	rttNS      int64
	state      failover.Status
	lastChange time.Time
}

// view is a published snapshot of control-plane state.
type view struct {
	cfg       *conf.Config // the configuration these gateways belong to
	gateways  []gatewayView
	rules     *filters.Set
	flows     int
	published time.Time
}

// snapshotLocked copies the gateways' state; d must be locked.
func (d *Datapath) snapshotLocked(probing bool, window time.Duration, now int64) []gatewayView {
	out := make([]gatewayView, len(d.Gws))
	for i, g := range d.Gws {
		v := &out[i]
		v.g = g
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
	// s.cfg changes only under the datapath lock too, so it matches d.Gws here.
	cfg := s.cfg
	gws := s.dp.snapshotLocked(cfg.Failover.ProbeInterval > 0, cfg.Failover.Window, now)
	flows := s.dp.table.Len()
	rules := s.dp.rules
	s.dp.mu.Unlock()
	prev := s.view.Load()
	wall := time.Now()
	for i := range gws {
		gws[i].state = failover.Evaluate(gws[i].in)
		gws[i].lastChange = s.started
		if prev == nil {
			continue
		}
		for _, p := range prev.gateways {
			if p.g != gws[i].g {
				continue
			}
			gws[i].lastChange = p.lastChange
			if p.state.State != gws[i].state.State {
				gws[i].lastChange = wall
				s.log.Info("gateway state", "gateway", gws[i].g.Name, "from", p.state.State.String(), "to", gws[i].state.State.String(), "reason", gws[i].state.Reason)
			}
		}
	}
	s.view.Store(&view{cfg: cfg, gateways: gws, rules: rules, flows: flows, published: wall})
}

// Status implements control.Handler. It reads the published snapshot and atomic counters only.
func (s *Shim) Status() *control.Status {
	v := s.view.Load()
	cfg := v.cfg
	st := &control.Status{
		Started:     s.started,
		Mode:        string(cfg.Shim.Mode),
		SourceAware: cfg.Shim.SourceAware,
		Config:      cfg.File,
		Reloads:     s.reloads.Load(),
		Datapath:    map[string]uint64{},
		Drops:       map[string]uint64{},
	}
	for i, gv := range v.gateways {
		gc := cfg.Gateways[i]
		g := gv.g
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
			State:      gv.state.State.String(),
			Reason:     gv.state.Reason,
			Drained:    gv.in.Drained,
			Active:     gv.in.Health.Attempts,
			Failed:     gv.in.Health.Failures,
			RTTMillis:  float64(gv.rttNS) / 1e6,
			LastChange: gv.lastChange,
		}
		if gv.mac != ([6]byte{}) {
			gs.MAC = net.HardwareAddr(gv.mac[:]).String()
		}
		st.Gateways = append(st.Gateways, gs)
	}
	for _, r := range v.rules.Stats() {
		st.Rules = append(st.Rules, control.RuleStatus{Index: r.Index, Name: r.Name, Action: r.Action, Gateway: r.Gateway, Flows: r.Flows, Packets: r.Packets, Bytes: r.Bytes})
	}
	st.Conntrack.Flows = v.flows
	st.Conntrack.Max = cfg.Conntrack.MaxFlows
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
		"segmented":     c.Segmented.Load(),
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
	cfg := s.config()
	for i, gc := range cfg.Gateways {
		if gc.Name == name {
			return i, nil
		}
	}
	for i, gc := range cfg.Gateways {
		if a, err := netip.ParseAddr(name); err == nil && gc.Address == a {
			return i, nil
		}
	}
	return -1, fmt.Errorf("no gateway named %q", name)
}

// Drain implements control.Handler: no new flows on the gateway; with reset its TCP flows are
// reset toward the host and its UDP flows move, so applications reconnect elsewhere at once.
func (s *Shim) Drain(name string, reset bool) (string, error) {
	s.reloadMu.Lock()
	defer s.reloadMu.Unlock()
	gi, err := s.gatewayIndex(name)
	if err != nil {
		return "", err
	}
	s.dp.Update(func(_ []Iface, gws []*Gateway) { gws[gi].Drained = true })
	msg := fmt.Sprintf("gateway %s drained: no new flows", s.config().Gateways[gi].Name)
	if reset {
		rsts, n, moved := s.dp.Evacuate(gi, s.now())
		s.injectResets(rsts)
		msg += fmt.Sprintf("; %d TCP flows reset, %d UDP flows moved", n, moved)
	}
	s.log.Info(msg)
	s.publishView()
	return msg, nil
}

// Undrain implements control.Handler.
func (s *Shim) Undrain(name string) (string, error) {
	s.reloadMu.Lock()
	defer s.reloadMu.Unlock()
	gi, err := s.gatewayIndex(name)
	if err != nil {
		return "", err
	}
	s.dp.Update(func(_ []Iface, gws []*Gateway) { gws[gi].Drained = false })
	msg := fmt.Sprintf("gateway %s undrained: it takes new flows when usable", s.config().Gateways[gi].Name)
	s.log.Info(msg)
	s.publishView()
	return msg, nil
}
