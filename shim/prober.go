package shim

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"sync"
	"time"

	"github.com/mdlayher/arp"
	"golang.org/x/sys/unix"

	"github.com/l2shim/l2shim/conf"
	"github.com/l2shim/l2shim/datapath"
	"github.com/l2shim/l2shim/failover"
)

// macRecheck is how often a gateway's MAC is checked with ARP when probing is off.
const macRecheck = 30 * time.Second

// probers runs one prober per gateway of the configuration in force.
type probers struct {
	cancel context.CancelFunc
	wg     sync.WaitGroup
	// states keeps each gateway's probe verdict across reloads that keep its probing as it
	// was (same interface, address, targets, misses and interval), so a dead gateway does not
	// get new flows for probe_misses rounds after every reload. Guarded by Shim.reloadMu
	// (probers start and stop under it, or before Run shares the shim).
	states map[string]*failover.ProbeState
}

// startProbes starts a prober for every gateway of the configuration in force.
func (s *Shim) startProbes() {
	ctx, cancel := context.WithCancel(s.runCtx)
	s.probers.cancel = cancel
	if s.probers.states == nil {
		s.probers.states = map[string]*failover.ProbeState{}
	}
	cfg := s.config()
	live := map[string]bool{}
	for gi, gc := range cfg.Gateways {
		key := fmt.Sprint(gc.Name, gc.Interface, gc.Address, gc.Probe, cfg.Failover.ProbeMisses, cfg.Failover.ProbeInterval)
		live[key] = true
		state, ok := s.probers.states[key]
		if !ok {
			state = failover.NewProbeState(len(gc.Probe), cfg.Failover.ProbeMisses)
			s.probers.states[key] = state
			s.engine.ProbeVerdict(gi, state.Summary(), s.now())
		}
		p := &prober{
			s:        s,
			gi:       gi,
			gc:       gc,
			probing:  cfg.Failover.ProbeInterval > 0,
			interval: cfg.Failover.ProbeInterval,
			log:      s.log.With("gateway", gc.Name, "address", gc.Address),
			state:    state,
		}
		s.probers.wg.Add(1)
		go func() { defer s.probers.wg.Done(); p.run(ctx) }()
	}
	for key := range s.probers.states {
		if !live[key] {
			delete(s.probers.states, key)
		}
	}
}

// stopProbes stops the probers and waits for them.
func (s *Shim) stopProbes() {
	if s.probers.cancel != nil {
		s.probers.cancel()
	}
	s.probers.wg.Wait()
}

// prober keeps one gateway's MAC current with ARP and, when probing is configured, runs its
// probe rounds: every probe_interval an ARP request to the gateway and an ICMP echo to each of
// its probe targets through it. An unanswered probe is sent again at 1/3 and 2/3 of the
// interval (failover.EchoesPerRound), so a lossy but healthy link is not taken out (the
// reasoning and the numbers are in failover/probe.go). At the end of a round the results go to
// the gateway's failover.ProbeState, whose verdict the engine gets through ProbeVerdict.
// Without probing, it resolves the MAC (when not configured) and checks it every macRecheck,
// so a gateway replaced by another box is followed.
type prober struct {
	s        *Shim
	gi       int
	gc       conf.Gateway
	probing  bool
	interval time.Duration
	log      *slog.Logger
	state    *failover.ProbeState

	targets []datapath.ProbeID
	client  *arp.Client
	buf     [datapath.ProbeFrameLen]byte
	replied []bool
	rtts    []time.Duration
}

func (p *prober) run(ctx context.Context) {
	defer func() {
		if p.client != nil {
			p.client.Close()
		}
	}()
	targets := p.gc.Probe
	if p.gc.Address.IsValid() && p.l3() && !slices.Contains(targets, p.gc.Address) {
		// An L3 link's gateway has no ARP to answer: its peer address, when configured, is
		// pinged like a probe target.
		targets = append(slices.Clip(targets), p.gc.Address)
	}
	for _, t := range targets {
		p.targets = append(p.targets, p.s.engine.AddProbe(p.gi, t.As4()))
	}
	p.replied = make([]bool, len(p.targets))
	p.rtts = make([]time.Duration, len(p.targets))
	results := make([]bool, 1+len(p.targets))
	next := time.Now()
	for {
		if p.probing {
			p.round(ctx, p.interval, results)
			if ctx.Err() != nil {
				return
			}
			p.verdict(results)
			next = next.Add(p.interval)
		} else if p.l3() {
			// No ARP on a link without a link-layer header: its state alone says whether
			// the gateway is there (the watcher reports it).
			next = time.Now().Add(macRecheck)
		} else {
			// ARP only: ask every second until the gateway answers, then every macRecheck,
			// which follows a MAC that moved and a gateway back after its link went down.
			next = time.Now().Add(time.Second)
			if p.arp(next) {
				next = time.Now().Add(macRecheck)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Until(next)):
		}
	}
}

// round runs one probe round of length interval and fills results (ARP first, then each
// target).
func (p *prober) round(ctx context.Context, interval time.Duration, results []bool) {
	clear(results)
	e := p.s.engine
	e.StartProbeRound(p.targets)
	sub := interval / failover.EchoesPerRound
	start := time.Now()
	for i := 0; i < failover.EchoesPerRound && ctx.Err() == nil; i++ {
		end := start.Add(time.Duration(i+1) * sub)
		p.sendEchoes()
		if !results[0] {
			// On an L3 link the link itself is the gateway's presence (the watcher makes
			// it unusable while the link is down); its probe targets alone judge the path.
			results[0] = p.l3() || p.arp(end)
		}
		time.Sleep(time.Until(end))
		if results[0] && e.ProbeResults(p.targets, p.replied, p.rtts) {
			break
		}
	}
	e.ProbeResults(p.targets, p.replied, p.rtts)
	copy(results[1:], p.replied)
	if m := p.s.metrics; m != nil {
		for _, r := range p.rtts {
			if r > 0 {
				m.ObserveRTT(p.gc.Name, r)
			}
		}
	}
}

// l3 reports whether the gateway's interface has no link-layer header (and so no ARP).
func (p *prober) l3() bool {
	i := p.s.ifaceIndex(p.gc.Interface)
	if i < 0 {
		return false
	}
	return (*p.s.portsSnap.Load())[i].l3.Load()
}

// sendEchoes sends an echo request to every target that has not answered in this round.
func (p *prober) sendEchoes() {
	if len(p.targets) == 0 {
		return
	}
	i := p.s.ifaceIndex(p.gc.Interface)
	if i < 0 {
		return
	}
	wire := (*p.s.portsSnap.Load())[i].wire.Load()
	if wire == nil {
		return
	}
	to := &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_IP), Ifindex: int(wire.to.Ifindex)}
	for _, t := range p.targets {
		n := p.s.engine.ProbeFrame(t, p.buf[:], p.s.now())
		if n == 0 {
			continue
		}
		pkt := p.buf[:n]
		// Never waits: a probe that finds the socket's send buffer full is lost like one
		// lost on the way, and a stuck uplink cannot hold up a reload waiting for its prober.
		_ = wire.rc.Write(func(fd uintptr) bool {
			_ = unix.Sendto(int(fd), pkt, unix.MSG_DONTWAIT, to)
			return true
		})
	}
}

// arp asks the gateway for its MAC, waiting until deadline, and records the answer: a MAC when
// none is configured, otherwise only that the gateway answered.
func (p *prober) arp(deadline time.Time) bool {
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
	if gc.MAC == nil {
		p.recordMAC(mac)
	} else if p.s.engine.ARPAnswered(p.gi) {
		p.log.Info("gateway answers ARP again")
	}
	return true
}

// recordMAC records a resolved MAC in the engine and the hooks' map.
func (p *prober) recordMAC(mac net.HardwareAddr) {
	var m [6]byte
	copy(m[:], mac)
	ch := p.s.engine.ResolvedMAC(p.gi, m)
	switch {
	case ch.Changed:
		if err := p.s.maps.addGateways([][6]byte{m}); err != nil {
			p.log.Error("gateway resolved but not diverted to", "mac", mac.String(), "err", err)
		}
		if ch.Stale != ([6]byte{}) {
			p.s.maps.removeGateway(ch.Stale)
		}
		p.log.Info("gateway resolved", "mac", mac.String())
	case ch.Revived:
		p.log.Info("gateway answers ARP again")
	}
}

// verdict feeds a round's results to the probe state and acts on a change.
func (p *prober) verdict(results []bool) {
	changed, up, reason := p.state.Round(results)
	p.s.engine.ProbeVerdict(p.gi, p.state.Summary(), p.s.now())
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
