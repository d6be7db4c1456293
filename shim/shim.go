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
	"sync"
	"sync/atomic"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/l2shim/l2shim/conf"
	"github.com/l2shim/l2shim/control"
	"github.com/l2shim/l2shim/datapath"
	"github.com/l2shim/l2shim/fastpath"
	"github.com/l2shim/l2shim/metrics"
)

// Options tune a Shim; the zero value is usable.
type Options struct {
	// Log receives the shim's log records; nil means slog.Default().
	Log *slog.Logger
	// Batch is how many frames one recvmmsg reads (default 64).
	Batch int
	// SlowPathOnly keeps every frame in user space: the kernel's fast path carries no flow.
	// For measuring the slow path; l2shim runs with the fast path.
	SlowPathOnly bool
	// PinDir is where the kernel side is pinned (it must be on a bpffs), so flows survive a
	// restart, an upgrade or a crash; "" pins nothing.
	PinDir string
}

// Shim is one running instance for one configuration.
type Shim struct {
	log  *slog.Logger
	opts Options
	base time.Time

	engine *datapath.Engine
	maps   *maps
	// ports holds every external interface's port, by the engine's interface index; mu
	// serialises control-plane changes to them.
	ports []*port
	mu    sync.Mutex
	// source6 is the IPv6 per-source map's sync (its own goroutine; the view for status).
	source6 source6
	// portsSnap is ports as of its last change, for the frame loops, which cannot take mu;
	// portsGen counts the changes.
	portsSnap atomic.Pointer[[]*port]
	portsGen  atomic.Uint64

	started time.Time
	metrics *metrics.Exporter
	view    atomic.Pointer[view]
	reloads atomic.Uint64

	// cfg is the configuration in force; a reload replaces it under cfgMu, so goroutines
	// that outlive a reload read it through config(). reloadMu serialises reloads and drains.
	cfg      *conf.Config
	cfgMu    sync.RWMutex
	reloadMu sync.Mutex

	runCtx  context.Context
	loops   sync.WaitGroup
	loopErr chan error

	probers probers
	fast    fastSync
	// pinned: the kernel side is pinned under Options.PinDir.
	pinned bool
	// ownProgs holds the IDs of the TCX programs this instance attached.
	ownProgs sync.Map

	// state is starting until Run has attached everything, then running, then stopping;
	// reloads and drains are refused unless running. It changes with reloadMu held. ready is
	// closed when it becomes running.
	state atomic.Int32
	ready chan struct{}
	// vethMTU is the MTU of every capture veth: at least the largest external interface's.
	// Guarded by mu.
	vethMTU int

	// Frames the shim dropped on its own, beside the engine's counters (which count them too,
	// as send_errors and lost): writes to a socket whose send buffer was full, and reads cut
	// short because the frame was larger than the read buffer.
	sendFull  atomic.Uint64
	truncated atomic.Uint64
}

// The values of Shim.state.
const (
	stateStarting int32 = iota
	stateRunning
	stateStopping
)

// New prepares a shim for cfg; Run does the work.
func New(cfg *conf.Config, opts Options) *Shim {
	if opts.Log == nil {
		opts.Log = slog.Default()
	}
	if opts.Batch <= 0 {
		opts.Batch = 64
	}
	return &Shim{cfg: cfg, log: opts.Log, opts: opts, base: time.Now(), started: time.Now(), ready: make(chan struct{})}
}

// Ready is closed once Run has attached everything and the shim takes reloads and drains.
func (s *Shim) Ready() <-chan struct{} { return s.ready }

// setState changes the state once no reload or drain is under way.
func (s *Shim) setState(st int32) {
	s.reloadMu.Lock()
	defer s.reloadMu.Unlock()
	if s.state.Swap(st) != stateRunning && st == stateRunning {
		close(s.ready)
	}
}

// notRunning is the error a reload or drain gets before Run has finished starting or once it
// is stopping; nil while running. reloadMu is held.
func (s *Shim) notRunning() error {
	switch s.state.Load() {
	case stateStarting:
		return control.ErrStarting
	case stateStopping:
		return control.ErrStopping
	}
	return nil
}

// config returns the configuration in force.
func (s *Shim) config() *conf.Config {
	s.cfgMu.RLock()
	defer s.cfgMu.RUnlock()
	return s.cfg
}

// now returns monotonic nanoseconds since the shim started: the engine's clock.
func (s *Shim) now() int64 { return int64(time.Since(s.base)) }

// Run attaches everything, runs until ctx is done or a frame loop fails, then detaches
// everything and removes its veths.
func (s *Shim) Run(ctx context.Context) (err error) {
	lock, err := lockInstance(s.cfg.Shim.Control, true)
	if err != nil {
		return err
	}
	defer lock.Close()

	if removed, err := removeLeftovers(); err != nil {
		return err
	} else if len(removed) > 0 {
		s.log.Warn("removed links left by an earlier instance", "links", removed)
	}
	s.removeStaleFilters()

	defer s.teardown()
	// No reload or drain once stopping starts (or starting failed): the ports, sockets and
	// maps they work on are going away.
	defer s.setState(stateStopping)
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
	s.loopErr = make(chan error, 64)
	for i, p := range s.ports {
		if p.attached() {
			s.startLoop(i)
		}
	}
	defer s.loops.Wait()
	var wg sync.WaitGroup
	for _, background := range []func(context.Context){s.heartbeat, s.expiry, s.healthLoop, s.fastLoop, s.source6Loop, s.tunnelLoop, func(ctx context.Context) { s.watch(ctx, w) }} {
		wg.Add(1)
		go func() { defer wg.Done(); background(ctx) }()
	}
	s.startProbes()
	defer s.stopProbes()
	// stop ends everything Run started when starting fails halfway.
	stop := func() {
		cancel()
		s.closeSockets()
		wg.Wait()
	}

	s.publishView()
	srv, err := control.Listen(s.cfg.Shim.Control, s, s.log)
	if err != nil {
		stop()
		return err
	}
	wg.Add(1)
	go func() { defer wg.Done(); srv.Serve(ctx) }()
	if addr := s.cfg.Shim.Metrics; addr != "" {
		s.metrics = metrics.New(s)
		if err := s.metrics.Serve(ctx, addr, s.log); err != nil {
			stop()
			return err
		}
		s.log.Info("serving Prometheus metrics", "addr", addr, "path", "/metrics")
	}

	if err := s.attachHooks(); err != nil {
		stop()
		return err
	}
	s.setState(stateRunning)
	s.log.Info("running", "interfaces", s.cfg.Interfaces(), "gateways", len(s.cfg.Gateways), "mode", string(s.cfg.Shim.Mode))

	select {
	case <-ctx.Done():
	case err = <-s.loopErr:
		s.log.Error("frame loop failed", "err", err)
	}
	s.setState(stateStopping)
	s.log.Info("stopping")
	s.syncFast()
	s.logTotals()
	// Let go of the hooks first: from here on new flows take the host's own routing, and
	// nothing waits in a capture veth for a loop that is going away.
	s.handOver()
	stop()
	return err
}

// handOver ends diverting at once. Without a pin directory the hooks detach, and every flow
// takes the host's routing. With one, the established flows stay in the kernel's fast path,
// still translated, for the next l2shim to adopt; nothing is diverted any more (a stale
// heartbeat says so), so new flows take the host's routing.
func (s *Shim) handOver() {
	if !s.pinned {
		s.detachHooks()
		return
	}
	if err := s.maps.beat(24 * time.Hour); err != nil {
		s.log.Warn("hand over: could not stop diverting", "err", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, p := range s.ports {
		p.releaseHooks()
	}
	s.log.Info("handed over: established flows stay in the kernel for the next l2shim", "pins", s.opts.PinDir)
}

// removeStaleFilters removes the tc filters an earlier l2shim left on interfaces this one does
// not attach to (a SIGKILL, then a file without them); those it attaches to are replaced in
// place, so no frame passes them unhooked.
func (s *Shim) removeStaleFilters() {
	var keep []int
	for _, name := range s.cfg.Interfaces() {
		if ifi, err := net.InterfaceByName(name); err == nil {
			keep = append(keep, ifi.Index)
		}
	}
	n, err := fastpath.CleanupTC(keep...)
	if n > 0 {
		s.log.Warn("removed tc filters left by an earlier instance on interfaces no gateway uses", "filters", n)
	}
	if err != nil {
		s.log.Warn("remove tc filters left by an earlier instance", "err", err)
	}
}

// lockInstance takes the exclusive lock next to the control socket that a running l2shim
// holds, so a second instance in the same network namespace (or a cleanup) cannot tear down
// the first one's veths as "leftovers". With create false a missing lock file means no l2shim
// ran with that socket: nil, nil. While another holds it, the error wraps ErrRunning.
func lockInstance(control string, create bool) (*os.File, error) {
	path := control + ".lock"
	flags := os.O_RDWR
	if create {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			return nil, fmt.Errorf("create %s: %w", filepath.Dir(path), err)
		}
		flags |= os.O_CREATE
	}
	f, err := os.OpenFile(path, flags, 0o600)
	if !create && errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("open lock %s: %w", path, err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, fmt.Errorf("%w (it holds %s)", ErrRunning, path)
		}
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	return f, nil
}

// setup builds the engine, the hooks' maps, and each interface's port. Nothing diverts frames
// until attachHooks.
func (s *Shim) setup() error {
	names := s.cfg.Interfaces()
	ifaces := make([]datapath.Iface, len(names))
	absent := make([]bool, len(names))
	for i, name := range names {
		ifc, gone, err := readIfaceFor(s.cfg, name)
		if err != nil {
			return err
		}
		ifaces[i], absent[i] = ifc, gone
	}
	plan, err := datapath.PlanFrom(s.cfg, names)
	if err != nil {
		return err
	}
	pinDir := ""
	if s.opts.PinDir != "" && !s.opts.SlowPathOnly {
		if err := onBPFFS(s.opts.PinDir); err != nil {
			s.log.Warn("not pinning: a restart, an upgrade or a crash will break NATed flows", "pin_dir", s.opts.PinDir, "err", err)
		} else {
			pinDir = s.opts.PinDir
		}
	}
	mode, err := CheckKernel(s.cfg.Shim.Attach)
	if err != nil {
		return err
	}
	s.log.Info("attach mode", "attach", string(mode), "fail_open", FailOpen(mode, s.cfg.Shim.Heartbeat))
	fo := fastpath.Options{
		Attach:    mode,
		Mark:      s.cfg.Shim.Mark,
		Mask:      s.cfg.Shim.MarkMask,
		Heartbeat: s.cfg.Shim.Heartbeat,
		MaxFlows:  s.cfg.Conntrack.MaxFlows,
		PinDir:    pinDir,
	}
	m, err := newMaps(fo)
	if err != nil && pinDir != "" {
		s.log.Warn("not pinning: a restart, an upgrade or a crash will break NATed flows", "pin_dir", pinDir, "err", err)
		pinDir, fo.PinDir = "", ""
		m, err = newMaps(fo)
	}
	if err != nil {
		return err
	}
	s.maps = m
	s.pinned = pinDir != ""
	natLo, natHi := datapath.NATPorts(hostPortRange())
	s.engine = datapath.New(ifaces, plan, datapath.Options{
		Seed:      rand.Uint64(),
		NATPortLo: uint16(natLo),
		NATPortHi: uint16(natHi),
		FastPath:  !s.opts.SlowPathOnly,
		Tracker:   s.maps,
	})

	if s.maps.k.Adopted {
		s.adoptFast()
	}
	if err := s.maps.setGateways(s.engine.GatewayMACs()); err != nil {
		return err
	}
	for i, name := range names {
		if absent[i] {
			s.addAbsentPort(name)
			continue
		}
		p, err := s.addPort(name)
		if err != nil {
			return err
		}
		// The MTU the engine was given: a later netlink report of another one updates it.
		p.mtu = ifaces[i].MTU
	}
	// Only now, with every capture veth in the programs' map, may they divert.
	if err := s.maps.beat(0); err != nil {
		return fmt.Errorf("write heartbeat: %w", err)
	}
	return nil
}

// teardown removes everything Run made, in the reverse order.
func (s *Shim) teardown() {
	s.detachHooks()
	s.closeSockets()
	for _, p := range s.ports {
		p.release()
	}
	s.ports = nil
	if s.maps != nil {
		s.maps.Close()
		s.maps = nil
	}
}

// absentIface is the engine's view of an interface not there yet (a modem not plugged in, a PPP
// session not up): down, no address, so its gateways take no flows
// until onLink attaches it and the engine learns what it is and its addresses. l3 says whether
// it can only be a link without a link-layer header (conf.Config.OnlyL3); else it is taken for
// Ethernet, whose gateways answer ARP once it is there.
func absentIface(name string, l3 bool) datapath.Iface {
	if !l3 {
		return datapath.Iface{Name: name}
	}
	return datapath.Iface{Name: name, L3: true, MAC: l3IfaceMAC, GatewayMAC: l3GatewayMAC}
}

// readIfaceFor reads interface name for configuration c. One that does not exist reads as
// absentIface, absent true: the host check warned about it already.
func readIfaceFor(c *conf.Config, name string) (ifc datapath.Iface, absent bool, err error) {
	ifc, err = readIface(name)
	if errors.As(err, new(*conf.NoInterfaceError)) {
		return absentIface(name, c.OnlyL3(name)), true, nil
	}
	return ifc, false, err
}

// readIface reads interface name's state from netlink.
func readIface(name string) (datapath.Iface, error) {
	l, err := linkByName(name)
	if err != nil {
		return datapath.Iface{}, fmt.Errorf("interface %s: %w", name, err)
	}
	return ifaceFromLink(l)
}

// ifaceFromLink turns a netlink link into the engine's view of it: the first IPv4 address is
// the one NATed flows use.
func ifaceFromLink(l netlink.Link) (datapath.Iface, error) {
	a := l.Attrs()
	ifc := datapath.Iface{Name: a.Name, Index: a.Index, MTU: a.MTU, Up: a.Flags&net.FlagUp != 0}
	if linkIsL3(a) {
		ifc.L3, ifc.MAC, ifc.GatewayMAC = true, l3IfaceMAC, l3GatewayMAC
	} else {
		copy(ifc.MAC[:], a.HardwareAddr)
	}
	addrs, err := netlink.AddrList(l, unix.AF_INET)
	if err != nil {
		return datapath.Iface{}, fmt.Errorf("addresses of %s: %w", a.Name, err)
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
	addrs6, err := netlink.AddrList(l, unix.AF_INET6)
	if err != nil {
		return datapath.Iface{}, fmt.Errorf("IPv6 addresses of %s: %w", a.Name, err)
	}
	for _, ad := range addrs6 {
		ip, ok := netip.AddrFromSlice(ad.IP)
		if !ok || !ip.Is6() || ip.Is4In6() || !ip.IsGlobalUnicast() || ip.IsLinkLocalUnicast() ||
			ad.Flags&(unix.IFA_F_TENTATIVE|unix.IFA_F_DADFAILED) != 0 {
			continue
		}
		ones, _ := ad.Mask.Size()
		ifc.Prefixes6 = append(ifc.Prefixes6, netip.PrefixFrom(ip, ones).Masked())
		ifc.Addrs6 = append(ifc.Addrs6, ip.As16())
		// NAT66 uses a stable address: not a privacy (temporary) one, not a deprecated one.
		if ifc.Addr6 == ([16]byte{}) && ad.Flags&(unix.IFA_F_TEMPORARY|unix.IFA_F_DEPRECATED) == 0 {
			ifc.Addr6 = ip.As16()
		}
	}
	return ifc, nil
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
