package shim

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"time"

	"github.com/mdlayher/arp"
	"golang.org/x/sys/unix"

	"github.com/l2shim/l2shim/conf"
	"github.com/l2shim/l2shim/failover"
)

// prober keeps one gateway's MAC current with ARP and, when probing is configured, runs its
// probe rounds: every probe_interval an ARP request to the gateway and an ICMP echo to each of
// its probe targets through it. An unanswered probe is sent again at 1/3 and 2/3 of the
// interval (failover.EchoesPerRound), so a lossy but healthy link is not taken out (the
// reasoning and the numbers are in failover/probe.go). At the end of a round the results go to
// the gateway's failover.ProbeState, whose verdict decides whether the gateway takes new flows.
type prober struct {
	s       *Shim
	gi      int
	gc      conf.Gateway
	log     *slog.Logger
	targets []*ProbeTarget
	state   *failover.ProbeState
	client  *arp.Client
	buf     []byte
}

func (s *Shim) probeLoop(ctx context.Context, gi int) {
	cfg := s.config()
	gc := cfg.Gateways[gi]
	p := &prober{s: s, gi: gi, gc: gc, log: s.log.With("gateway", gc.Name, "address", gc.Address), buf: make([]byte, 128)}
	defer func() {
		if p.client != nil {
			p.client.Close()
		}
	}()
	probing := cfg.Failover.ProbeInterval > 0
	interval := cfg.Failover.ProbeInterval
	if !probing {
		// MAC resolution only: keep trying until it answers, then check now and then that
		// it has not moved.
		interval = time.Second
	}
	for _, t := range gc.Probe {
		p.targets = append(p.targets, s.dp.RegisterProbe(gi, t.As4()))
	}
	// A reload keeps the probe verdict of a gateway whose probing did not change, so a dead
	// gateway does not get new flows for probe_misses rounds after every reload.
	s.dp.mu.Lock()
	g := s.dp.Gws[gi]
	key := fmt.Sprint(gc.Probe, cfg.Failover.ProbeMisses, cfg.Failover.ProbeInterval)
	if g.probeState == nil || g.probeKey != key {
		g.probeState = failover.NewProbeState(len(p.targets), cfg.Failover.ProbeMisses)
		g.probeKey = key
		g.ProbeDown = false
		g.probe = g.probeState.Summary()
		s.dp.refreshLocked()
	}
	p.state = g.probeState
	s.dp.mu.Unlock()
	results := make([]bool, 1+len(p.targets))
	resolved := gc.MAC != nil
	next := time.Now()
	for {
		if !resolved || probing {
			resolved = p.round(ctx, interval, results, gc.MAC == nil) || resolved
			if ctx.Err() != nil {
				return
			}
			if probing {
				p.verdict(results)
			}
		}
		next = next.Add(interval)
		if !probing && resolved {
			next = time.Now().Add(30 * time.Second)
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Until(next)):
		}
	}
}

// round runs one probe round of length interval and fills results (ARP first, then each
// target). It reports whether ARP was answered.
func (p *prober) round(ctx context.Context, interval time.Duration, results []bool, resolveMAC bool) bool {
	clear(results)
	p.s.dp.Lock()
	for _, t := range p.targets {
		t.Replied = false
		t.RoundSeq = t.Seq + 1
	}
	p.s.dp.Unlock()
	sub := interval / failover.EchoesPerRound
	start := time.Now()
	for i := 0; i < failover.EchoesPerRound && ctx.Err() == nil; i++ {
		end := start.Add(time.Duration(i+1) * sub)
		p.sendEchoes()
		if !results[0] {
			results[0] = p.arp(end, resolveMAC)
		}
		time.Sleep(time.Until(end))
		if results[0] && p.allReplied() {
			break
		}
	}
	p.s.dp.Lock()
	var rtts [8]time.Duration
	for i, t := range p.targets {
		results[1+i] = t.Replied
		if t.Replied && i < len(rtts) {
			rtts[i] = time.Duration(t.RTT)
		}
	}
	p.s.dp.Unlock()
	if m := p.s.metrics; m != nil {
		for _, r := range rtts {
			if r > 0 {
				m.ObserveRTT(p.gc.Name, r)
			}
		}
	}
	return results[0]
}

func (p *prober) allReplied() bool {
	p.s.dp.Lock()
	defer p.s.dp.Unlock()
	for _, t := range p.targets {
		if !t.Replied {
			return false
		}
	}
	return true
}

// sendEchoes sends an echo request to every target that has not answered in this round.
func (p *prober) sendEchoes() {
	if len(p.targets) == 0 {
		return
	}
	port := p.s.ports[p.s.dp.Gws[p.gi].Iface]
	wire := port.wire.Load()
	if wire == nil {
		return
	}
	for _, t := range p.targets {
		p.s.dp.Lock()
		g := p.s.dp.Gws[p.gi]
		if t.Replied || !g.HasMAC {
			p.s.dp.Unlock()
			continue
		}
		t.Seq++
		t.SentAt = p.s.now()
		t.Requests++
		n := buildProbe(p.buf, &p.s.dp.Ifaces[g.Iface], g, t, t.Seq)
		p.s.dp.Unlock()
		to := &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_IP), Ifindex: int(wire.to.Ifindex)}
		_ = wire.rc.Write(func(fd uintptr) bool {
			err := unix.Sendto(int(fd), p.buf[:n], 0, to)
			return err != unix.EAGAIN
		})
	}
}

// arp asks the gateway for its MAC, waiting until deadline, and records a new MAC.
func (p *prober) arp(deadline time.Time, record bool) bool {
	gc := p.gc
	if p.client == nil {
		ifi, err := net.InterfaceByName(gc.Interface)
		if err == nil {
			p.client, err = arp.Dial(ifi)
		}
		if err != nil {
			p.log.Debug("cannot open ARP socket", "interface", gc.Interface, "err", err)
			time.Sleep(time.Until(deadline))
			return false
		}
	}
	_ = p.client.SetDeadline(deadline)
	mac, err := p.client.Resolve(gc.Address)
	if err != nil {
		// Dial again next time: the interface may have been re-created or given a new
		// address, and the client is bound to what it was at dial time.
		p.client.Close()
		p.client = nil
		return false
	}
	if record {
		p.s.setGatewayMAC(p.gi, mac, p.log)
	} else {
		p.s.gatewayAnswered(p.gi, p.log)
	}
	return true
}

// verdict feeds a round's results to the probe state and acts on a change.
func (p *prober) verdict(results []bool) {
	changed, up, reason := p.state.Round(results)
	p.s.dp.ProbeVerdict(p.gi, up, p.state.Summary(), p.s.now())
	if !changed {
		return
	}
	if up {
		p.log.Info("gateway up: probes answered again", "reason", reason)
	} else {
		p.log.Warn("gateway down: probes unanswered", "reason", reason)
		p.s.gatewayDown(p.gi, reason)
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
	if revived && !changed {
		log.Info("gateway answers ARP again")
	}
}

// gatewayAnswered notes that a gateway with a configured MAC answered ARP.
func (s *Shim) gatewayAnswered(gi int, log *slog.Logger) {
	revived := false
	s.dp.Update(func(_ []Iface, gws []*Gateway) {
		if !gws[gi].Alive {
			revived = true
			gws[gi].Alive = true
		}
	})
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
