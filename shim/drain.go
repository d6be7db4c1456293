package shim

import (
	"fmt"
	"net/netip"
)

// Drain implements control.Handler: no new flows on the gateway; with reset its TCP flows are
// reset toward the host and its UDP flows move, so applications reconnect elsewhere at once.
func (s *Shim) Drain(name string, reset bool) (string, error) {
	return s.setDrained(name, true, func(gi int) string {
		msg := "drained: no new flows"
		if reset {
			ev := s.engine.Evacuate(gi, s.now())
			s.injectResets(ev.Resets)
			msg += fmt.Sprintf("; %d TCP flows reset, %d UDP flows moved", ev.Reset, ev.Moved)
		}
		return msg
	})
}

// Undrain implements control.Handler: the gateway takes new flows again when usable.
func (s *Shim) Undrain(name string) (string, error) {
	return s.setDrained(name, false, func(int) string { return "undrained: it takes new flows when usable" })
}

// setDrained drains or undrains the gateway called name, runs then, and logs and returns what
// happened. It holds reloadMu, so the gateway's index stays valid throughout.
func (s *Shim) setDrained(name string, drained bool, then func(gi int) string) (string, error) {
	s.reloadMu.Lock()
	defer s.reloadMu.Unlock()
	if err := s.notRunning(); err != nil {
		return "", err
	}
	gi, err := s.gatewayIndex(name)
	if err != nil {
		return "", err
	}
	s.engine.SetDrained(gi, drained)
	msg := fmt.Sprintf("gateway %s %s", s.config().Gateways[gi].Name, then(gi))
	s.log.Info(msg)
	s.publishView()
	return msg, nil
}

// gatewayIndex finds a gateway of the configuration in force by name, or by address when that
// names one gateway.
func (s *Shim) gatewayIndex(name string) (int, error) {
	cfg := s.config()
	for i, gc := range cfg.Gateways {
		if gc.Name == name {
			return i, nil
		}
	}
	if a, err := netip.ParseAddr(name); err == nil {
		for i, gc := range cfg.Gateways {
			if gc.Address == a {
				return i, nil
			}
		}
	}
	return -1, fmt.Errorf("no gateway named %q", name)
}
