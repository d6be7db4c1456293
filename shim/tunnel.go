package shim

import (
	"context"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl"

	"github.com/l2shim/l2shim/conf"
	"github.com/l2shim/l2shim/failover"
)

// peerAnswerDelay is how long a WireGuard peer may take to answer one-way traffic: one that
// receives data and has none to send back sends a keepalive 10 s later (its passive
// keepalive). A silent peer is judged only after probe_interval × probe_misses and this.
const peerAnswerDelay = 10 * time.Second

// tunnelLoop follows the peers of the uplinks that are WireGuard links (kernel WireGuard over
// generic netlink, wireguard-go over its UAPI socket in /var/run/wireguard). Such a link stays
// up when its peer is gone, so its link state says nothing: once a second the peers' byte
// counters go to a failover.PeerWatch per interface, and a silent peer makes the interface's
// gateway unusable (and its flows handled) as a link going down would.
func (s *Shim) tunnelLoop(ctx context.Context) {
	c, err := wgctrl.New()
	if err != nil {
		s.log.Debug("no WireGuard peer watch", "err", err)
		return
	}
	defer c.Close()
	watches := map[string]*failover.PeerWatch{}
	every(ctx, time.Second, func() { s.checkTunnels(c, watches) })
}

// peerLimit is how long traffic may go unanswered before a tunnel's peer counts as silent.
func peerLimit(f conf.Failover) time.Duration {
	interval := f.ProbeInterval
	if interval <= 0 {
		interval = conf.DefaultProbeInterval
	}
	return interval*time.Duration(max(f.ProbeMisses, 1)) + peerAnswerDelay
}

func (s *Shim) checkTunnels(c *wgctrl.Client, watches map[string]*failover.PeerWatch) {
	cfg := s.config()
	limit := peerLimit(cfg.Failover)
	now := time.Now()
	for _, p := range *s.portsSnap.Load() {
		if !p.l3.Load() {
			continue
		}
		dev, err := c.Device(p.name)
		if err != nil {
			delete(watches, p.name) // not a WireGuard link (or gone)
			continue
		}
		var rx, tx int64
		for _, peer := range dev.Peers {
			rx += peer.ReceiveBytes
			tx += peer.TransmitBytes
		}
		w := watches[p.name]
		if w == nil {
			w = &failover.PeerWatch{}
			watches[p.name] = w
		}
		changed, silent, reason := w.Sample(now, uint64(rx), uint64(tx), limit)
		if !changed {
			continue
		}
		for gi, gc := range cfg.Gateways {
			if gc.Interface != p.name {
				continue
			}
			log := s.log.With("gateway", gc.Name, "interface", p.name)
			if silent {
				s.engine.SetPeerSilent(gi, reason)
				log.Warn("gateway down: "+reason, "limit", limit)
				s.gatewayDown(gi, reason)
			} else {
				s.engine.SetPeerSilent(gi, "")
				log.Info("gateway up: " + reason)
			}
		}
	}
}
