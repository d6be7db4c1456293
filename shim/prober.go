package shim

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
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

// arpFirstWait is how long the first ARP request waits for its answer when probing is off;
// each unanswered one doubles the wait, up to a second.
const arpFirstWait = 100 * time.Millisecond

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
		p := &prober{s: s, gi: gi, gc: gc}
		targets := probeTargets(gc, false)
		if gc.Address.IsValid() && p.l3() && !slices.Contains(targets, gc.Address) {
			// An L3 link's gateway has no ARP to answer: its peer address, when
			// configured, is pinged like a probe target (and so counts as one).
			targets = append(targets, gc.Address)
		}
		key := fmt.Sprint(gc.Name, gc.Interface, gc.Address, gc.Probe, targets, cfg.Failover.ProbeMisses, cfg.Failover.ProbeInterval)
		live[key] = true
		state, ok := s.probers.states[key]
		if !ok {
			state = failover.NewProbeState(len(targets), cfg.Failover.ProbeMisses)
			s.probers.states[key] = state
			s.engine.ProbeVerdict(gi, state.Summary(), s.now())
		}
		// Health per family: a gateway with IPv6 targets has an IPv6 verdict of its own;
		// without, its IPv6 flows follow the IPv4 one.
		var state6 *failover.ProbeState
		if t6 := probeTargets(gc, true); len(t6) > 0 && cfg.Failover.ProbeInterval > 0 {
			key6 := "ipv6 " + key
			live[key6] = true
			if state6 = s.probers.states[key6]; state6 == nil {
				state6 = failover.NewProbeState6(len(t6), cfg.Failover.ProbeMisses)
				s.probers.states[key6] = state6
			}
			sum := state6.Summary()
			s.engine.ProbeVerdict6(gi, &sum)
		} else {
			s.engine.ProbeVerdict6(gi, nil)
		}
		p.probing = cfg.Failover.ProbeInterval > 0
		p.interval = cfg.Failover.ProbeInterval
		p.log = s.log.With("gateway", gc.Name, "address", gc.Address)
		p.state, p.state6, p.targets4 = state, state6, targets
		s.probers.wg.Add(1)
		go func() { defer s.probers.wg.Done(); p.run(ctx) }()
	}
	for key := range s.probers.states {
		if !live[key] {
			delete(s.probers.states, key)
		}
	}
}

// probeTargets returns gateway gc's probe targets of one family (v6: its IPv6 ones).
func probeTargets(gc conf.Gateway, v6 bool) []netip.Addr {
	var out []netip.Addr
	for _, t := range gc.Probe {
		if t.Is6() == v6 {
			out = append(out, t)
		}
	}
	return out
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
// its IPv4 probe targets through it and, when it has IPv6 targets and its uplink IPv6 (a global
// address and a known router), a neighbour solicitation to its IPv6 router and an ICMPv6 echo
// to each IPv6 target through that router. An unanswered probe is sent again at 1/3 and 2/3 of
// the interval (failover.EchoesPerRound), so a lossy but healthy link is not taken out (the
// reasoning and the numbers are in failover/probe.go). At the end of a round the results go to
// the gateway's failover.ProbeState of each family, whose verdicts the engine gets through
// ProbeVerdict and ProbeVerdict6. Without probing, it resolves the MAC (when not configured)
// and checks it every macRecheck, so a gateway replaced by another box is followed.
type prober struct {
	s        *Shim
	gi       int
	gc       conf.Gateway
	probing  bool
	interval time.Duration
	log      *slog.Logger
	state    *failover.ProbeState
	// state6 is the IPv6 verdict (nil: no IPv6 targets, or probing off).
	state6 *failover.ProbeState

	// targets4 are the IPv4 addresses pinged, as the state counts them (the probe targets,
	// and an L3 link's peer address).
	targets4          []netip.Addr
	targets, targets6 []datapath.ProbeID
	client            *arp.Client
	ns                *nsConn
	buf               [datapath.ProbeFrameLen]byte
	replied           []bool
	rtts              []time.Duration
}

func (p *prober) run(ctx context.Context) {
	defer func() {
		if p.client != nil {
			p.client.Close()
		}
		if p.ns != nil {
			p.ns.Close()
		}
	}()
	for _, t := range p.targets4 {
		p.targets = append(p.targets, p.s.engine.AddProbe(p.gi, t.As4()))
	}
	if p.state6 != nil {
		for _, t := range probeTargets(p.gc, true) {
			p.targets6 = append(p.targets6, p.s.engine.AddProbe6(p.gi, t.As16()))
		}
	}
	p.replied = make([]bool, max(len(p.targets), len(p.targets6)))
	p.rtts = make([]time.Duration, len(p.replied))
	results := make([]bool, 1+len(p.targets))
	results6 := make([]bool, 1+len(p.targets6))
	next := time.Now()
	arpWait := arpFirstWait
	for {
		if p.probing {
			v6 := p.round(ctx, p.interval, results, results6)
			if ctx.Err() != nil {
				return
			}
			p.verdict(results)
			if v6 {
				p.verdict6(results6)
			}
			next = next.Add(p.interval)
		} else if p.l3() {
			// No ARP on a link without a link-layer header: its state alone says whether
			// the gateway is there (the watcher reports it).
			next = time.Now().Add(macRecheck)
		} else {
			// ARP only: ask until the gateway answers, then every macRecheck, which follows
			// a MAC that moved and a gateway back after its link went down. The first asks
			// come quickly (100, 200, 400, 800 ms, then every second): one lost request or
			// reply at start must not keep a live gateway out of use for a whole second.
			next = time.Now().Add(arpWait)
			if p.arp(next) {
				next = time.Now().Add(macRecheck)
				arpWait = arpFirstWait
			} else {
				arpWait = min(2*arpWait, time.Second)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Until(next)):
		}
	}
}

// round runs one probe round of length interval and fills results (ARP first, then each IPv4
// target) and, when it reports true, results6 (the IPv6 router's answer to a neighbour
// solicitation first, then each IPv6 target). It reports false when the gateway has no IPv6
// probes or its uplink cannot be probed over IPv6 now (no global address, router unknown):
// such a round says nothing about IPv6.
func (p *prober) round(ctx context.Context, interval time.Duration, results, results6 []bool) (v6 bool) {
	clear(results)
	clear(results6)
	e := p.s.engine
	v6 = p.state6 != nil && e.Probe6Ready(p.gi)
	l3 := p.l3()
	var router netip.Addr
	e.StartProbeRound(p.targets)
	if v6 {
		e.StartProbeRound(p.targets6)
		if l3 {
			results6[0] = true // no neighbour discovery on a link without a link-layer header
		} else {
			router = p.router6()
		}
	}
	sub := interval / failover.EchoesPerRound
	start := time.Now()
	for i := 0; i < failover.EchoesPerRound && ctx.Err() == nil; i++ {
		end := start.Add(time.Duration(i+1) * sub)
		p.sendEchoes(v6)
		solicited := v6 && !results6[0] && p.solicit(router)
		if !results[0] {
			// On an L3 link the link itself is the gateway's presence (the watcher makes
			// it unusable while the link is down); its probe targets alone judge the path.
			results[0] = l3 || p.arp(end)
		}
		if solicited {
			results6[0] = p.ns.await(router, end)
		}
		time.Sleep(time.Until(end))
		done := results[0] && e.ProbeResults(p.targets, p.replied, p.rtts)
		if v6 {
			done = done && results6[0] && e.ProbeResults(p.targets6, p.replied, p.rtts)
		}
		if done {
			break
		}
	}
	p.collect(p.targets, results[1:], "ipv4")
	if v6 {
		p.collect(p.targets6, results6[1:], "ipv6")
	}
	return v6
}

// collect copies the round's results of targets into results and records their round-trip
// times.
func (p *prober) collect(targets []datapath.ProbeID, results []bool, family string) {
	replied, rtts := p.replied[:len(targets)], p.rtts[:len(targets)]
	p.s.engine.ProbeResults(targets, replied, rtts)
	copy(results, replied)
	if m := p.s.metrics; m != nil {
		for _, r := range rtts {
			if r > 0 {
				m.ObserveRTT(p.gc.Name, family, r)
			}
		}
	}
}

// router6 returns the IPv6 router of the gateway's uplink, as the per-source sync found it
// (the gateway's address6, or the kernel's IPv6 default route through the interface); invalid
// when there is none.
func (p *prober) router6() netip.Addr {
	if p.gc.Address6.IsValid() {
		return p.gc.Address6
	}
	if v := p.s.source6.view.Load(); v != nil {
		for _, e := range *v {
			if e.Interface == p.gc.Interface && e.Router.IsValid() {
				return e.Router
			}
		}
	}
	if ifi, err := net.InterfaceByName(p.gc.Interface); err == nil {
		return defaultRouter6(ifi.Index)
	}
	return netip.Addr{}
}

// solicit sends a neighbour solicitation for router and reports whether it went out.
func (p *prober) solicit(router netip.Addr) bool {
	if !router.IsValid() {
		return false
	}
	if p.ns == nil {
		ns, err := dialNS(p.gc.Interface)
		if err != nil {
			p.log.Debug("cannot open the neighbour discovery socket", "interface", p.gc.Interface, "err", err)
			return false
		}
		p.ns = ns
	}
	if err := p.ns.solicit(router); err != nil {
		// Open it again next time: the interface may have been re-created.
		p.ns.Close()
		p.ns = nil
		return false
	}
	return true
}

// l3 reports whether the gateway's interface has no link-layer header (and so no ARP).
func (p *prober) l3() bool {
	i := p.s.ifaceIndex(p.gc.Interface)
	if i < 0 {
		return false
	}
	return (*p.s.portsSnap.Load())[i].l3.Load()
}

// sendEchoes sends an echo request to every IPv4 target (and, with v6, every IPv6 target)
// that has not answered in this round.
func (p *prober) sendEchoes(v6 bool) {
	if len(p.targets) == 0 && !v6 {
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
	to6 := &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_IPV6), Ifindex: int(wire.to.Ifindex)}
	send := func(t datapath.ProbeID) {
		n, is6 := p.s.engine.ProbeFrame(t, p.buf[:], p.s.now())
		if n == 0 {
			return
		}
		pkt, dst := p.buf[:n], to
		if is6 {
			dst = to6
		}
		// Never waits: a probe that finds the socket's send buffer full is lost like one
		// lost on the way, and a stuck uplink cannot hold up a reload waiting for its prober.
		_ = wire.rc.Write(func(fd uintptr) bool {
			_ = unix.Sendto(int(fd), pkt, unix.MSG_DONTWAIT, dst)
			return true
		})
	}
	for _, t := range p.targets {
		send(t)
	}
	if v6 {
		for _, t := range p.targets6 {
			send(t)
		}
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

// verdict feeds a round's IPv4 results to the probe state and acts on a change. A gateway
// with IPv6 probes of its own keeps its IPv6 flows when only IPv4 fails; one without has a
// single verdict for both families.
func (p *prober) verdict(results []bool) {
	changed, up, reason := p.state.Round(results)
	p.s.engine.ProbeVerdict(p.gi, p.state.Summary(), p.s.now())
	if !changed {
		return
	}
	fam, family := datapath.BothFamilies, "ipv4 and ipv6"
	if p.state6 != nil {
		fam, family = datapath.IPv4Only, "ipv4"
	}
	if up {
		p.log.Info("gateway up: probes answered again", "family", family, "reason", reason)
	} else {
		p.log.Warn("gateway down: probes unanswered", "family", family, "reason", reason)
		p.s.gatewayDownFamily(p.gi, fam, reason)
	}
}

// verdict6 feeds a round's IPv6 results to the IPv6 probe state and acts on a change: a
// gateway whose IPv6 probes fail takes no new IPv6 flows and its IPv6 flows are reset or
// moved, while its IPv4 flows stay.
func (p *prober) verdict6(results []bool) {
	changed, up, reason := p.state6.Round(results)
	sum := p.state6.Summary()
	p.s.engine.ProbeVerdict6(p.gi, &sum)
	if !changed {
		return
	}
	if up {
		p.log.Info("gateway up for IPv6: IPv6 probes answered again", "family", "ipv6", "reason", reason)
	} else {
		p.log.Warn("gateway down for IPv6: IPv6 probes unanswered", "family", "ipv6", "reason", reason)
		p.s.gatewayDownFamily(p.gi, datapath.IPv6Only, reason)
	}
}
