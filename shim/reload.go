package shim

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/vishvananda/netlink"

	"github.com/l2shim/l2shim/conf"
	"github.com/l2shim/l2shim/conntrack"
	"github.com/l2shim/l2shim/failover"
	"github.com/l2shim/l2shim/filters"
	"github.com/l2shim/l2shim/rewrite"
)

// Reload implements control.Handler (and SIGHUP): it reads the configuration file again and
// applies it atomically. A file with errors, or one that changes what only a restart can
// change, is refused with its errors and the running configuration stays in force. Live flows
// keep their gateway unless that gateway was removed or turned off (then they are handled as
// for a gateway that went down: TCP flows reset toward the host, UDP flows moved); interfaces
// added are attached, interfaces no gateway uses any more are detached. Failure accounting and
// probe state start afresh.
func (s *Shim) Reload() (string, error) {
	s.reloadMu.Lock()
	defer s.reloadMu.Unlock()
	old := s.config()
	next, err := conf.Load(old.File)
	if err != nil {
		s.log.Error("reload refused: the configuration has errors; the running one stays", "errors", err.Error())
		return "", fmt.Errorf("reload refused, the running configuration stays:\n%w", err)
	}
	if errs, warnings := next.CheckHost(Host{Own: &s.ownProgs}); len(errs) > 0 {
		s.log.Error("reload refused: the configuration does not fit this host; the running one stays", "errors", errs.Error())
		return "", fmt.Errorf("reload refused, the running configuration stays:\n%w", errs)
	} else {
		for _, w := range warnings {
			s.log.Warn(w)
		}
	}
	if err := restartOnly(old, next); err != nil {
		s.log.Error("reload refused; the running configuration stays", "err", err)
		return "", fmt.Errorf("reload refused, the running configuration stays: %w", err)
	}

	s.stopProbes()
	defer s.startProbes()
	s.mu.Lock()
	defer s.mu.Unlock()

	// Interfaces: existing ports keep their index; new ones are appended.
	index := map[string]int{}
	for i, p := range s.ports {
		index[p.name] = i
	}
	var added []string
	for _, name := range next.Interfaces() {
		if _, ok := index[name]; ok && !s.ports[index[name]].removed {
			continue
		}
		added = append(added, name)
	}
	for _, name := range added {
		if err := s.attachNewPort(name, index); err != nil {
			return "", fmt.Errorf("reload: attach %s: %w (interfaces attached before it stay attached; fix and reload again)", name, err)
		}
	}
	names := make([]string, len(s.ports))
	for i, p := range s.ports {
		names[i] = p.name
	}
	rules, err := filters.Compile(next, names)
	if err != nil {
		return "", fmt.Errorf("reload refused: %w", err)
	}

	var removedIfaces []int
	now := s.now()
	s.dp.mu.Lock()
	// Gateways: the same name keeps its *Gateway (MAC, probe state, counters, drain).
	byName := map[string]*Gateway{}
	oldIndex := map[*Gateway]int{}
	for i, g := range s.dp.Gws {
		byName[g.Name] = g
		oldIndex[g] = i
	}
	gws := make([]*Gateway, len(next.Gateways))
	remap := make([]int16, len(s.dp.Gws))
	for i := range remap {
		remap[i] = -1
	}
	for i, gc := range next.Gateways {
		g, ok := byName[gc.Name]
		ifc := int(index[gc.Interface])
		if !ok || g.Iface != ifc || g.IP != gc.Address.As4() {
			// New, or moved to another interface or address: it must be resolved again.
			g = &Gateway{Name: gc.Name, Alive: true, probe: failover.ProbeSummary{Up: true, Misses: next.Failover.ProbeMisses}}
		} else {
			remap[oldIndex[g]] = int16(i)
		}
		g.Iface, g.IP, g.Weight, g.On, g.MTU = ifc, gc.Address.As4(), gc.Weight, gc.On, gc.MTU
		if gc.MAC != nil {
			copy(g.MAC[:], gc.MAC)
			g.HasMAC = true
		}
		gws[i] = g
	}
	for i, p := range s.ports {
		if !slices.Contains(next.Interfaces(), p.name) && !p.removed {
			removedIfaces = append(removedIfaces, i)
			s.dp.Ifaces[i].Up = false
		}
	}
	// Flows follow their gateway's new index; those of a removed or turned-off gateway are
	// handled below, like a down gateway's.
	gone := map[*conntrack.Flow]bool{}
	s.dp.table.Range(func(fl *conntrack.Flow) bool {
		if fl.Gateway >= 0 {
			fl.Gateway = remap[fl.Gateway]
			if fl.Gateway < 0 {
				gone[fl] = true
			}
		}
		return true
	})
	s.dp.Gws = gws
	s.dp.cands = make([]failover.Candidate, len(gws))
	for i, g := range gws {
		s.dp.cands[i] = failover.Candidate{ID: failover.GatewayID(g.Name), Weight: g.Weight}
	}
	fo := next.Failover
	s.dp.cfg.Mode = modeOf(next.Shim.Mode)
	s.dp.cfg.SourceAware = next.Shim.SourceAware
	s.dp.cfg.SynRetries = fo.SynRetries
	s.dp.cfg.Health = failover.HealthConfig{Window: fo.Window, FailRatio: fo.FailRatio, MinAttempts: fo.MinAttempts, ProbeConfirm: fo.ProbeInterval > 0}
	s.dp.health = nil
	if fo.Window > 0 {
		s.dp.health = failover.NewHealth(s.dp.cfg.Health, len(gws))
	}
	for _, g := range gws {
		g.Benched = false
	}
	clear(s.dp.probes)
	s.dp.rules = rules
	s.dp.table.SetTimeouts(conntrack.TimeoutsFrom(next.Conntrack))
	s.dp.refreshLocked()
	s.cfgMu.Lock()
	s.cfg = next
	s.cfgMu.Unlock()
	// Flows whose gateway went away: TCP reset toward the host, UDP moved.
	rsts, reset, moved := s.dp.evacuateLocked(func(fl *conntrack.Flow) bool {
		return gone[fl] || fl.Gateway >= 0 && !gws[fl.Gateway].On
	}, now)
	s.dp.mu.Unlock()

	for _, g := range gws {
		if g.HasMAC {
			_ = s.maps.gateways.Put(macKey(g.MAC[:]), uint32(1))
		}
	}
	for _, i := range removedIfaces {
		s.removePort(i)
	}
	s.injectResets(rsts)
	s.reloads.Add(1)
	msg := fmt.Sprintf("reloaded %s: %d gateways on %d interfaces", next.File, len(gws), len(next.Interfaces()))
	if len(added) > 0 {
		msg += "; attached " + strings.Join(added, ", ")
	}
	if len(removedIfaces) > 0 {
		var rn []string
		for _, i := range removedIfaces {
			rn = append(rn, s.ports[i].name)
		}
		msg += "; detached " + strings.Join(rn, ", ")
	}
	if reset+moved > 0 {
		msg += fmt.Sprintf("; flows of removed or turned-off gateways: %d TCP reset, %d UDP moved", reset, moved)
	}
	s.log.Info(msg)
	go s.publishView()
	return msg, nil
}

// restartOnly names the changes a running instance cannot apply.
func restartOnly(old, next *conf.Config) error {
	var what []string
	if old.Shim.Mark != next.Shim.Mark || old.Shim.MarkMask != next.Shim.MarkMask {
		what = append(what, "shim.mark and shim.mark_mask (the hooks carry them)")
	}
	if old.Shim.Heartbeat != next.Shim.Heartbeat {
		what = append(what, "shim.heartbeat (the hooks carry it)")
	}
	if old.Shim.Control != next.Shim.Control {
		what = append(what, "shim.control")
	}
	if old.Shim.Metrics != next.Shim.Metrics {
		what = append(what, "shim.metrics")
	}
	if old.Conntrack.MaxFlows != next.Conntrack.MaxFlows {
		what = append(what, "conntrack.max_flows")
	}
	if len(what) == 0 {
		return nil
	}
	return errors.New("changing " + strings.Join(what, ", ") + " needs a restart")
}

// attachNewPort attaches an interface a reload added, in a new slot (the indexes of existing
// ports never change). s.mu is held.
func (s *Shim) attachNewPort(name string, index map[string]int) error {
	l, err := netlink.LinkByName(name)
	if err != nil {
		return fmt.Errorf("interface %s: %w", name, err)
	}
	ifc, err := ifaceFromLink(l)
	if err != nil {
		return err
	}
	p, err := s.addPort(name)
	if err != nil {
		return err
	}
	index[name] = len(s.ports) - 1
	s.dp.mu.Lock()
	s.dp.Ifaces = append(s.dp.Ifaces, ifc)
	s.dp.mu.Unlock()
	if err := s.attachPortHooks(p); err != nil {
		return err
	}
	s.startLoop(len(s.ports) - 1)
	return nil
}

// removePort detaches an interface no gateway uses any more. Its slot stays (indexes of the
// others never change), marked removed. s.mu is held.
func (s *Shim) removePort(i int) {
	p := s.ports[i]
	detachPortHooks(p)
	for _, l := range []interface{ Close() error }{p.inject, p.sink} {
		if l != nil {
			_ = l.Close()
		}
	}
	p.inject, p.sink = nil, nil
	if w := p.wire.Swap(nil); w != nil {
		_ = w.Close()
	}
	p.closing.Store(true)
	_ = p.capture.Close()
	if p.veth != nil {
		p.veth.delete()
	}
	p.removed = true
	s.log.Info("detached", "interface", p.name)
}

// evacuateLocked is Evacuate for the flows match selects; d must be locked.
func (d *Datapath) evacuateLocked(match func(*conntrack.Flow) bool, now int64) (rsts []Injection, reset, moved int) {
	var victims []*conntrack.Flow
	d.table.Range(func(fl *conntrack.Flow) bool {
		if match(fl) {
			victims = append(victims, fl)
		}
		return true
	})
	for _, fl := range victims {
		switch fl.Orig.Proto {
		case rewrite.ProtoTCP:
			if fl.TCPState != conntrack.TCPClosed && !fl.Reset {
				rsts = append(rsts, d.resetToHost(fl))
				reset++
			}
			// The flow stays, dropping its frames, until it idles out: a segment from the
			// remote still in flight must not move the host's sequence past the RST's.
			fl.Reset = true
		case rewrite.ProtoUDP:
			if fl.Origin == conntrack.Inbound {
				// The client addressed this uplink: answers from another address would be
				// no answers at all. The flow stays (and idles out).
				continue
			}
			g := failover.Pick(d.cfg.Mode, fl.Orig.Hash(d.cfg.Seed), d.cands)
			if g >= 0 && g != int(fl.Gateway) && d.moveFlow(fl, g) {
				moved++
			}
		default:
			d.table.Delete(fl)
		}
	}
	d.C.Resets.Add(uint64(reset))
	d.C.Moved.Add(uint64(moved))
	return rsts, reset, moved
}
