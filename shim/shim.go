// Package shim is l2shim's datapath: it attaches the TCX hooks to each external interface,
// creates the capture/inject veths, opens the AF_PACKET sockets and runs the frame loops that
// feed the Datapath (parse, conntrack, decide, rewrite).
package shim

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/l2shim/l2shim/conf"
	"github.com/l2shim/l2shim/conntrack"
	"github.com/l2shim/l2shim/control"
	"github.com/l2shim/l2shim/failover"
	"github.com/l2shim/l2shim/filters"
	"github.com/l2shim/l2shim/metrics"
)

// Options tune a Shim; the zero value is usable.
type Options struct {
	// Log receives the shim's log records; nil means slog.Default().
	Log *slog.Logger
	// Batch is how many frames one recvmmsg reads (default 64).
	Batch int
}

// Shim is one running instance for one configuration.
type Shim struct {
	cfg  *conf.Config
	log  *slog.Logger
	opts Options
	base time.Time

	dp    *Datapath
	maps  *maps
	ports []*port
	mu    sync.Mutex // serialises control-plane changes to ports

	started time.Time
	metrics *metrics.Exporter
	view    atomic.Pointer[view]
	reloads atomic.Uint64

	// cfgMu guards cfg, which a reload replaces; goroutines that outlive a reload read it
	// through config().
	cfgMu sync.RWMutex
	// reloadMu serialises reloads.
	reloadMu sync.Mutex

	runCtx   context.Context
	loops    sync.WaitGroup
	loopErr  chan error
	portsGen atomic.Uint64
	// portsSnap is s.ports as of its last change, for readers that cannot take s.mu.
	portsSnap atomic.Pointer[[]*port]

	probeCancel context.CancelFunc
	probeWG     sync.WaitGroup
	// ownProgs holds the IDs of the TCX programs this instance attached.
	ownProgs sync.Map
}

// config returns the configuration in force.
func (s *Shim) config() *conf.Config {
	s.cfgMu.RLock()
	defer s.cfgMu.RUnlock()
	return s.cfg
}

// port is everything l2shim owns for one external interface. The veth pair and the capture
// socket live as long as the shim; the hooks, the inject program and the wire socket are tied
// to the interface's ifindex and MAC and are replaced when the interface is re-created.
type port struct {
	name    string
	veth    *vethPair
	capture *packetConn                // on the veth's far end: reads diverted frames, writes injections
	wire    atomic.Pointer[packetConn] // on the external interface: writes to the gateways
	sink    link.Link
	// closing is set before the capture socket is closed on purpose (a reload removed the
	// interface, or the shim stops), so its loop ends quietly.
	closing atomic.Bool

	// Guarded by Shim.mu.
	removed bool // a reload detached the interface
	ifi     *net.Interface
	inject  link.Link
	hooks   []link.Link // egress and ingress on the external interface
}

// New prepares a shim for cfg; Run does the work.
func New(cfg *conf.Config, opts Options) *Shim {
	if opts.Log == nil {
		opts.Log = slog.Default()
	}
	if opts.Batch <= 0 {
		opts.Batch = 64
	}
	return &Shim{cfg: cfg, log: opts.Log, opts: opts, base: time.Now(), started: time.Now()}
}

// now returns monotonic nanoseconds since the shim started.
func (s *Shim) now() int64 { return int64(time.Since(s.base)) }

// Datapath returns the running datapath (nil before Run has set it up).
func (s *Shim) Datapath() *Datapath { return s.dp }

func modeOf(m conf.Mode) failover.Mode {
	switch m {
	case conf.ModeFailover:
		return failover.Failover
	case conf.ModeOff:
		return failover.Off
	}
	return failover.LoadBalance
}

// lockInstance takes an exclusive lock next to the control socket, so a second instance in
// the same network namespace cannot tear down the first one's veths as "leftovers".
func lockInstance(control string) (*os.File, error) {
	path := control + ".lock"
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("create %s: %w", filepath.Dir(path), err)
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open lock %s: %w", path, err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		return nil, fmt.Errorf("another l2shim holds %s: %w", path, err)
	}
	return f, nil
}

// Run attaches everything, runs until ctx is done or a loop fails, then detaches everything
// and removes its veths.
func (s *Shim) Run(ctx context.Context) (err error) {
	lock, err := lockInstance(s.cfg.Shim.Control)
	if err != nil {
		return err
	}
	defer lock.Close()

	if removed, err := removeLeftovers(); err != nil {
		return err
	} else if len(removed) > 0 {
		s.log.Warn("removed links left by an earlier instance", "links", removed)
	}

	defer s.teardown()
	w, err := s.subscribe()
	if err != nil {
		return fmt.Errorf("netlink subscribe: %w", err)
	}
	if err := s.setup(); err != nil {
		close(w.done)
		return err
	}

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	s.runCtx = ctx
	var wg sync.WaitGroup
	s.loopErr = make(chan error, 64)
	for i := range s.ports {
		s.startLoop(i)
	}
	defer s.loops.Wait()
	wg.Add(1)
	go func() { defer wg.Done(); s.heartbeat(ctx) }()
	wg.Add(1)
	go func() { defer wg.Done(); s.expiry(ctx) }()
	wg.Add(1)
	go func() { defer wg.Done(); s.watch(ctx, w) }()
	s.startProbes()
	defer s.stopProbes()
	wg.Add(1)
	go func() { defer wg.Done(); s.healthLoop(ctx) }()

	s.publishView()
	srv, err := control.Listen(s.cfg.Shim.Control, s, s.log)
	if err != nil {
		cancel()
		s.closeSockets()
		wg.Wait()
		return err
	}
	wg.Add(1)
	go func() { defer wg.Done(); srv.Serve(ctx) }()
	if addr := s.cfg.Shim.Metrics; addr != "" {
		s.metrics = metrics.New(s)
		if err := s.metrics.Serve(ctx, addr, s.log); err != nil {
			cancel()
			s.closeSockets()
			wg.Wait()
			return err
		}
		s.log.Info("serving Prometheus metrics", "addr", addr, "path", "/metrics")
	}

	if err := s.attachHooks(); err != nil {
		cancel()
		s.closeSockets()
		wg.Wait()
		return err
	}
	names := make([]string, len(s.ports))
	for i, p := range s.ports {
		names[i] = p.name
	}
	s.log.Info("running", "interfaces", names, "gateways", len(s.dp.Gws), "mode", string(s.cfg.Shim.Mode))

	select {
	case <-ctx.Done():
	case err = <-s.loopErr:
		s.log.Error("frame loop failed", "err", err)
	}
	s.log.Info("stopping")
	s.logTotals()
	// Detach the hooks first: from here on the host routes on its own, and nothing waits in
	// a capture veth for a loop that is going away.
	s.detachHooks()
	cancel()
	s.closeSockets()
	wg.Wait()
	return err
}

// setup builds the datapath state, veths, sockets and the veths' hooks. Nothing diverts
// frames until attachHooks.
func (s *Shim) setup() error {
	names := s.cfg.Interfaces()
	ifaces := make([]Iface, len(names))
	index := map[string]int{}
	for i, name := range names {
		l, err := netlink.LinkByName(name)
		if err != nil {
			return fmt.Errorf("interface %s: %w", name, err)
		}
		ifc, err := ifaceFromLink(l)
		if err != nil {
			return err
		}
		ifaces[i] = ifc
		index[name] = i
	}
	gws := make([]*Gateway, len(s.cfg.Gateways))
	for i, gc := range s.cfg.Gateways {
		g := &Gateway{Name: gc.Name, Iface: index[gc.Interface], IP: gc.Address.As4(), Weight: gc.Weight, On: gc.On, MTU: gc.MTU, Alive: true,
			probe: failover.ProbeSummary{Up: true, Misses: s.cfg.Failover.ProbeMisses}}
		if gc.MAC != nil {
			copy(g.MAC[:], gc.MAC)
			g.HasMAC = true
		}
		gws[i] = g
	}
	table := conntrack.New(s.cfg.Conntrack.MaxFlows, conntrack.TimeoutsFrom(s.cfg.Conntrack))
	fo := s.cfg.Failover
	natLo, natHi := NATPorts(hostPortRange())
	s.dp = NewDatapath(ifaces, gws, DatapathConfig{
		NATPortLo:   uint16(natLo),
		NATPortHi:   uint16(natHi),
		Mode:        modeOf(s.cfg.Shim.Mode),
		SourceAware: s.cfg.Shim.SourceAware,
		Seed:        rand.Uint64(),
		SynRetries:  fo.SynRetries,
		Health: failover.HealthConfig{
			Window:       fo.Window,
			FailRatio:    fo.FailRatio,
			MinAttempts:  fo.MinAttempts,
			ProbeConfirm: fo.ProbeInterval > 0,
		},
	}, table)

	rules, err := filters.Compile(s.cfg, names)
	if err != nil {
		return err
	}
	s.dp.SetRules(rules)

	m, err := newMaps()
	if err != nil {
		return err
	}
	s.maps = m
	for _, g := range gws {
		if g.HasMAC {
			if err := s.maps.gateways.Put(macKey(g.MAC[:]), uint32(1)); err != nil {
				return fmt.Errorf("add gateway %s to the hook map: %w", g.Name, err)
			}
		}
	}
	if err := s.maps.beat(); err != nil {
		return fmt.Errorf("write heartbeat: %w", err)
	}

	for _, name := range names {
		if _, err := s.addPort(name); err != nil {
			return err
		}
	}
	return nil
}

// addPort creates everything l2shim owns for external interface name except the hooks on the
// interface itself: the veth pair, the capture socket, the sink and inject programs and the
// wire socket. The port is appended to s.ports; its index is the datapath's interface index.
func (s *Shim) addPort(name string) (*port, error) {
	ifi, err := net.InterfaceByName(name)
	if err != nil {
		return nil, fmt.Errorf("interface %s: %w", name, err)
	}
	p := &port{name: name, ifi: ifi}
	s.ports = append(s.ports, p)
	ports := slices.Clone(s.ports)
	s.portsSnap.Store(&ports)
	s.portsGen.Add(1)
	if p.veth, err = createVethPair(name, ifi.Index, max(1500, ifi.MTU)); err != nil {
		return nil, err
	}
	farIfi, err := net.InterfaceByName(p.veth.far.Attrs().Name)
	if err != nil {
		return nil, err
	}
	if p.capture, err = openPacket(farIfi, s.cfg.Shim.Mark, true); err != nil {
		return nil, err
	}
	if p.sink, err = attach(progSink, sinkInsns(), p.veth.far.Attrs().Index, ebpf.AttachTCXIngress, &s.ownProgs); err != nil {
		return nil, err
	}
	if err := s.bindPort(p, ifi); err != nil {
		return nil, err
	}
	return p, nil
}

// startLoop runs the frame loop of port i until its capture socket closes.
func (s *Shim) startLoop(i int) {
	s.loops.Add(1)
	go func() {
		defer s.loops.Done()
		if err := s.loop(i); err != nil {
			select {
			case s.loopErr <- err:
			default:
			}
		}
	}()
}

// startProbes starts a prober for every gateway of the configuration in force.
func (s *Shim) startProbes() {
	ctx, cancel := context.WithCancel(s.runCtx)
	s.probeCancel = cancel
	for i := range s.config().Gateways {
		s.probeWG.Add(1)
		go func() { defer s.probeWG.Done(); s.probeLoop(ctx, i) }()
	}
}

// stopProbes stops the probers and waits for them.
func (s *Shim) stopProbes() {
	if s.probeCancel != nil {
		s.probeCancel()
	}
	s.probeWG.Wait()
}

// captureConn returns the port's capture socket (closed once the port is removed).
func (p *port) captureConn() *packetConn { return p.capture }

// bindPort ties p to the external interface ifi as it is now: the wire socket and the inject
// program, which carry its ifindex. The hooks follow in attachPortHooks.
func (s *Shim) bindPort(p *port, ifi *net.Interface) error {
	wire, err := openPacket(ifi, s.cfg.Shim.Mark, false)
	if err != nil {
		return err
	}
	if old := p.wire.Swap(wire); old != nil {
		_ = old.Close()
	}
	if p.inject != nil {
		_ = p.inject.Close()
		p.inject = nil
	}
	if p.inject, err = attach(progInject, injectInsns(ifi.Index), p.veth.near.Attrs().Index, ebpf.AttachTCXIngress, &s.ownProgs); err != nil {
		return err
	}
	p.ifi = ifi
	return nil
}

// attachHooks attaches the egress and ingress programs to each external interface, at the head
// of its TCX chain.
func (s *Shim) attachHooks() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, p := range s.ports {
		if err := s.attachPortHooks(p); err != nil {
			return err
		}
	}
	return nil
}

func (s *Shim) attachPortHooks(p *port) error {
	params := hookParams{
		mark:      s.cfg.Shim.Mark,
		mask:      s.cfg.Shim.MarkMask,
		mac:       p.ifi.HardwareAddr,
		capture:   p.veth.near.Attrs().Index,
		heartbeat: s.cfg.Shim.Heartbeat,
	}
	eg, err := attach(progEgress, egressInsns(params, s.maps), p.ifi.Index, ebpf.AttachTCXEgress, &s.ownProgs)
	if err != nil {
		return err
	}
	p.hooks = append(p.hooks, eg)
	in, err := attach(progIngress, ingressInsns(params, s.maps), p.ifi.Index, ebpf.AttachTCXIngress, &s.ownProgs)
	if err != nil {
		return err
	}
	p.hooks = append(p.hooks, in)
	s.log.Info("attached", "interface", p.ifi.Name, "ifindex", p.ifi.Index, "mac", p.ifi.HardwareAddr.String(), "capture", p.veth.far.Attrs().Name)
	return nil
}

func detachPortHooks(p *port) {
	for _, l := range p.hooks {
		_ = l.Close()
	}
	p.hooks = nil
}

func (s *Shim) detachHooks() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, p := range s.ports {
		detachPortHooks(p)
	}
}

func (s *Shim) closeSockets() {
	for _, p := range s.ports {
		p.closing.Store(true)
		if p.capture != nil {
			_ = p.capture.Close()
		}
		if w := p.wire.Swap(nil); w != nil {
			_ = w.Close()
		}
	}
}

func (s *Shim) teardown() {
	s.detachHooks()
	s.closeSockets()
	for _, p := range s.ports {
		for _, l := range []link.Link{p.inject, p.sink} {
			if l != nil {
				_ = l.Close()
			}
		}
		if p.veth != nil {
			p.veth.delete()
		}
	}
	s.ports = nil
	if s.maps != nil {
		s.maps.Close()
		s.maps = nil
	}
}

func ifaceFromLink(l netlink.Link) (Iface, error) {
	a := l.Attrs()
	ifc := Iface{Name: a.Name, Index: a.Index, MTU: a.MTU, Up: a.Flags&net.FlagUp != 0}
	copy(ifc.MAC[:], a.HardwareAddr)
	addrs, err := netlink.AddrList(l, unix.AF_INET)
	if err != nil {
		return Iface{}, fmt.Errorf("addresses of %s: %w", a.Name, err)
	}
	for _, ad := range addrs {
		ip, ok := netip.AddrFromSlice(ad.IP.To4())
		if !ok {
			continue
		}
		ones, _ := ad.Mask.Size()
		ifc.Prefixes = append(ifc.Prefixes, netip.PrefixFrom(ip, ones).Masked())
		ifc.Addrs = append(ifc.Addrs, ip.As4())
		if ifc.Addr == ([4]byte{}) {
			ifc.Addr = ip.As4()
		}
	}
	return ifc, nil
}

// loop moves frames from one capture socket through the datapath to their sockets.
func (s *Shim) loop(in int) error {
	p := s.ports[in]
	rb := newReadBatch(s.opts.Batch)
	dropped := func(errno syscall.Errno) {
		s.dp.C.SendErrors.Add(1)
		if errno == unix.EMSGSIZE {
			s.dp.C.SendTooBig.Add(1)
		}
	}
	var wireQ, hostQ []*sendQueue
	var gen uint64
	queues := func() {
		// Interfaces a reload added get queues; indexes never change.
		gen = s.portsGen.Load()
		ports := *s.portsSnap.Load()
		for j := len(wireQ); j < len(ports); j++ {
			q := ports[j]
			wireQ = append(wireQ, newSendQueue(q.wire.Load, s.opts.Batch, dropped))
			hostQ = append(hostQ, newSendQueue(q.captureConn, s.opts.Batch, dropped))
		}
	}
	queues()
	flushAll := func() {
		// A failed write (a socket closed while its interface is being re-created, or at
		// shutdown) has been counted; reading decides when the loop ends.
		for j := range wireQ {
			_ = wireQ[j].flush()
			_ = hostQ[j].flush()
		}
	}
	enqueue := func(v Verdict, b []byte) {
		if v.Len > 0 {
			b = b[:v.Len]
		}
		if v.Where != Drop && v.Where != Consumed && v.Iface >= len(wireQ) {
			queues()
		}
		var q *sendQueue
		switch v.Where {
		case ToWire:
			q = wireQ[v.Iface]
		case ToHost:
			q = hostQ[v.Iface]
		default:
			return
		}
		if q.full() {
			// Never wait on a socket with the datapath locked: the other loops would wait too.
			s.dp.Unlock()
			flushAll()
			s.dp.Lock()
		}
		q.add(b)
	}
	// Segments of tunnels' TSO frames live here until the batch is flushed.
	arena := make([]byte, 512<<10)
	lens := make([]int, 64)
	for {
		n, err := p.capture.read(rb)
		if err != nil {
			if errors.Is(err, errFrameLost) {
				s.dp.C.Lost.Add(1)
				continue
			}
			if p.closing.Load() || errors.Is(err, net.ErrClosed) || errors.Is(err, os.ErrClosed) {
				return nil
			}
			return fmt.Errorf("read %s: %w", p.capture.name, err)
		}
		if s.portsGen.Load() != gen {
			queues()
		}
		now := s.now()
		s.dp.Lock()
		used := 0
		for i := 0; i < n; i++ {
			b := rb.bufs[i][:rb.lens[i]]
			v := s.dp.ProcessLocked(in, b, now)
			if v.Where != Segment {
				enqueue(v, b)
				continue
			}
			need, count := s.dp.SegmentNeedsLocked()
			if count > len(lens) {
				lens = make([]int, count)
			}
			if used+need > len(arena) {
				// The segmenter's state lives in the datapath's frame; take what it needs
				// before letting the other loops in.
				s.dp.Unlock()
				flushAll()
				s.dp.Lock()
				used = 0
				if !s.dp.ReparseLocked(b) {
					continue
				}
			}
			k := s.dp.SegmentLocked(arena[used:], lens)
			for j := 0; j < k; j++ {
				seg := arena[used : used+lens[j]]
				used += lens[j]
				enqueue(s.dp.ProcessLocked(in, seg, now), seg)
			}
		}
		s.dp.Unlock()
		flushAll()
	}
}

// heartbeat tells the hooks the shim is alive every 100 ms; if the process hangs the hooks
// stop diverting once the last beat is older than [shim] heartbeat.
func (s *Shim) heartbeat(ctx context.Context) {
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if err := s.maps.beat(); err != nil {
				s.log.Error("heartbeat", "err", err)
			}
		}
	}
}

// expiry removes idle flows a slice at a time, so no frame ever waits behind a full sweep.
func (s *Shim) expiry(ctx context.Context) {
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			s.dp.Expire(s.now(), 8192)
		}
	}
}

// logTotals writes what the datapath did, so a run can be seen to have worked even before the
// status socket exists.
func (s *Shim) logTotals() {
	c := &s.dp.C
	attrs := []any{
		"frames_out", c.Frames[conntrack.DirOrig].Load(),
		"frames_in", c.Frames[conntrack.DirReply].Load(),
		"flows_created", c.NewFlows.Load(),
		"flows_now", s.dp.Flows(),
		"nated", c.NATed.Load(),
		"passed", c.Passed.Load(),
		"table_full", c.TableFull.Load(),
		"evicted", s.dp.table.C.Evicted.Load(),
		"rotations", c.Rotations.Load(),
		"late_answers", c.LateAnswers.Load(),
		"tcp_reset", c.Resets.Load(),
		"udp_moved", c.Moved.Load(),
		"probe_replies", c.ProbeReplies.Load(),
		"send_errors", c.SendErrors.Load(),
		"send_too_big", c.SendTooBig.Load(),
		"lost", c.Lost.Load(),
	}
	for r := DropReason(1); r < dropReasons; r++ {
		attrs = append(attrs, "drop_"+r.String(), c.Drops[r].Load())
	}
	for _, g := range s.dp.Gws {
		attrs = append(attrs, "flows_"+g.Name, g.Flows.Load())
	}
	for _, p := range s.ports {
		// Frames the kernel dropped because the shim did not read fast enough.
		if st, err := p.capture.c.Stats(); err == nil {
			attrs = append(attrs, "capture_drops_"+p.name, st.Drops)
		}
	}
	s.log.Info("totals", attrs...)
}

// hostPortRange reads the host's ip_local_port_range (0, 0 when it cannot).
func hostPortRange() (lo, hi int) {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return 0, 0
	}
	if _, err := fmt.Sscan(string(b), &lo, &hi); err != nil {
		return 0, 0
	}
	return lo, hi
}
