package shim

import (
	"context"
	"log/slog"
	"net"
	"time"

	"github.com/mdlayher/arp"
)

// arpMisses is how many unanswered ARP requests in a row make a gateway unusable until it
// answers again.
const arpMisses = 3

// resolveLoop keeps gateway gi's MAC current with ARP: it resolves it at start, re-checks it
// every probe interval (every second when probing is off), marks the gateway unusable after
// arpMisses unanswered requests in a row, and picks up a new MAC when the gateway answers
// from one.
func (s *Shim) resolveLoop(ctx context.Context, gi int) {
	gc := s.cfg.Gateways[gi]
	log := s.log.With("gateway", gc.Name, "address", gc.Address)
	interval := s.cfg.Failover.ProbeInterval
	if interval <= 0 {
		interval = time.Second
	}
	var client *arp.Client
	defer func() {
		if client != nil {
			client.Close()
		}
	}()
	misses := 0
	for {
		if client == nil {
			ifi, err := net.InterfaceByName(gc.Interface)
			if err == nil {
				client, err = arp.Dial(ifi)
			}
			if err != nil {
				log.Warn("cannot open ARP socket", "interface", gc.Interface, "err", err)
			}
		}
		if client != nil {
			wait := min(interval, time.Second)
			_ = client.SetDeadline(time.Now().Add(wait))
			mac, err := client.Resolve(gc.Address)
			if err == nil {
				misses = 0
				s.setGatewayMAC(gi, mac, log)
			} else if ctx.Err() == nil {
				misses++
				if misses == arpMisses {
					s.markGatewayDead(gi, log)
				}
				// Dial again next time: the interface may have been re-created or given a
				// new address, and the client is bound to what it was at dial time.
				client.Close()
				client = nil
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(interval):
		}
	}
}

// setGatewayMAC records a gateway's (new) MAC in the datapath and the hooks' map.
func (s *Shim) setGatewayMAC(gi int, mac net.HardwareAddr, log *slog.Logger) {
	var m [6]byte
	copy(m[:], mac)
	var old [6]byte
	changed, revived := false, false
	s.dp.Update(func(_ []Iface, gws []*Gateway) {
		g := gws[gi]
		old = g.MAC
		if !g.HasMAC || g.MAC != m {
			changed = true
			g.MAC, g.HasMAC = m, true
		}
		if !g.Alive {
			revived = true
			g.Alive = true
		}
	})
	if changed {
		_ = s.maps.gateways.Put(macKey(m[:]), uint32(1))
		if old != ([6]byte{}) && old != m && !s.macInUse(old) {
			_ = s.maps.gateways.Delete(macKey(old[:]))
		}
		log.Info("gateway resolved", "mac", mac.String())
	}
	if revived {
		log.Info("gateway answers ARP again")
	}
}

func (s *Shim) macInUse(mac [6]byte) bool {
	in := false
	s.dp.Update(func(_ []Iface, gws []*Gateway) {
		for _, g := range gws {
			if g.HasMAC && g.MAC == mac {
				in = true
			}
		}
	})
	return in
}

// markGatewayDead takes a gateway that stopped answering ARP out of new-flow placement. Its
// MAC stays in the hooks' map, so flows the host sends to it are still steered elsewhere.
func (s *Shim) markGatewayDead(gi int, log *slog.Logger) {
	was := false
	s.dp.Update(func(_ []Iface, gws []*Gateway) {
		was = gws[gi].Alive
		gws[gi].Alive = false
	})
	if was {
		log.Warn("gateway stopped answering ARP; no new flows until it answers", "misses", arpMisses)
	}
}
