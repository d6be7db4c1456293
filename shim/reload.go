package shim

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/l2shim/l2shim/conf"
	"github.com/l2shim/l2shim/datapath"
)

// Reload implements control.Handler (and SIGHUP): it reads the configuration file again and
// applies it atomically. A file with errors, or one that changes what only a restart can
// change, is refused with its errors and the running configuration stays in force. Live flows
// keep their gateway unless that gateway was removed or turned off (then they are handled as
// for a gateway that went down: TCP flows reset toward the host, UDP flows moved); interfaces
// added are attached, interfaces no gateway uses any more are detached. Failure accounting
// starts afresh; probe verdicts survive for gateways whose probing did not change.
func (s *Shim) Reload() (string, error) {
	s.reloadMu.Lock()
	defer s.reloadMu.Unlock()
	if err := s.notRunning(); err != nil {
		return "", fmt.Errorf("reload refused: %w", err)
	}
	old := s.config()
	next, err := s.loadNext(old)
	if err != nil {
		return "", err
	}

	s.stopProbes()
	defer s.startProbes()
	s.mu.Lock()
	defer s.mu.Unlock()

	// Interfaces: existing ports keep their index; new ones are appended. The plan is built
	// first, so a refusal leaves the host as it was.
	names := make([]string, len(s.ports))
	for i, p := range s.ports {
		if !p.removed {
			// A detached slot's name may be attached again in a later slot: rules and
			// gateways must name the live one.
			names[i] = p.name
		}
	}
	var added []string
	for _, name := range next.Interfaces() {
		if !slices.Contains(names, name) {
			added = append(added, name)
			names = append(names, name)
		}
	}
	plan, err := datapath.PlanFrom(next, names)
	if err != nil {
		return "", fmt.Errorf("reload refused, the running configuration stays: %w", err)
	}
	var detached []string
	for i, p := range s.ports {
		if !p.removed && !slices.Contains(next.Interfaces(), p.name) {
			plan.RemoveIfaces = append(plan.RemoveIfaces, i)
			detached = append(detached, p.name)
		}
	}
	firstNew := len(s.ports)
	for _, name := range added {
		ifc, err := s.attachNewPort(name, next)
		if err != nil {
			// Undo the ports this reload attached: the engine does not know them.
			for i := firstNew; i < len(s.ports); i++ {
				s.removePort(i)
			}
			s.setPorts(s.ports[:firstNew])
			return "", fmt.Errorf("reload refused, the running configuration stays: attach %s: %w", name, err)
		}
		plan.AddIfaces = append(plan.AddIfaces, ifc)
	}

	s.cfgMu.Lock()
	ev := s.engine.Reconfigure(plan, s.now())
	s.cfg = next
	s.cfgMu.Unlock()

	// The hooks divert to exactly the gateways in force: a removed gateway's MAC goes (the
	// probers, which add MACs they resolve, are stopped meanwhile).
	if err := s.maps.setGateways(s.engine.GatewayMACs()); err != nil {
		s.log.Error("reload: the hooks' gateway MACs are not the gateways'", "err", err)
	}
	for _, i := range plan.RemoveIfaces {
		s.removePort(i)
	}
	for i := firstNew; i < len(s.ports); i++ {
		if s.ports[i].attached() {
			s.startLoop(i)
		}
	}
	s.injectResets(ev.Resets)
	s.reloads.Add(1)
	msg := fmt.Sprintf("reloaded %s: %d gateways on %d interfaces", next.File, len(next.Gateways), len(next.Interfaces()))
	if len(added) > 0 {
		msg += "; attached " + strings.Join(added, ", ")
	}
	if len(detached) > 0 {
		msg += "; detached " + strings.Join(detached, ", ")
	}
	if ev.Reset+ev.Moved > 0 {
		msg += fmt.Sprintf("; flows of removed or turned-off gateways: %d TCP reset, %d UDP moved", ev.Reset, ev.Moved)
	}
	s.log.Info(msg)
	go s.publishView()
	return msg, nil
}

// loadNext reads the configuration file again and checks it against the host and the running
// configuration; every refusal is logged and returned.
func (s *Shim) loadNext(old *conf.Config) (*conf.Config, error) {
	next, err := conf.Load(old.File)
	if err != nil {
		s.log.Error("reload refused: the configuration has errors; the running one stays", "errors", err.Error())
		return nil, fmt.Errorf("reload refused, the running configuration stays:\n%w", err)
	}
	errs, warnings := next.CheckHost(Host{own: &s.ownProgs})
	if len(errs) > 0 {
		s.log.Error("reload refused: the configuration does not fit this host; the running one stays", "errors", errs.Error())
		return nil, fmt.Errorf("reload refused, the running configuration stays:\n%w", errs)
	}
	for _, w := range warnings {
		s.log.Warn(w)
	}
	if err := restartOnly(old, next); err != nil {
		s.log.Error("reload refused; the running configuration stays", "err", err)
		return nil, fmt.Errorf("reload refused, the running configuration stays: %w", err)
	}
	return next, nil
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
	if old.Shim.Attach != next.Shim.Attach {
		what = append(what, "shim.attach (how the hooks are attached)")
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
// ports never change), and returns the engine's view of it. Its frame loop starts once the
// engine knows the interface; until then diverted frames wait in the capture socket. s.mu is
// held.
func (s *Shim) attachNewPort(name string, next *conf.Config) (datapath.Iface, error) {
	ifc, absent, err := readIfaceFor(next, name)
	if err != nil {
		return datapath.Iface{}, err
	}
	if absent {
		s.addAbsentPort(name)
		return ifc, nil
	}
	p, err := s.addPort(name)
	if err != nil {
		return datapath.Iface{}, err
	}
	p.mtu = ifc.MTU
	if err := s.attachPortHooks(p); err != nil {
		return datapath.Iface{}, err
	}
	return ifc, nil
}
