package shim

import (
	"fmt"
	"net"
	"slices"
	"sync/atomic"

	"github.com/cilium/ebpf"
	"github.com/l2shim/l2shim/fastpath"
)

// port is everything l2shim owns for one external interface. The veth pair and the capture
// socket live as long as the shim; the hooks, the inject program and the wire socket are tied
// to the interface's ifindex and MAC and are replaced when the interface is re-created.
type port struct {
	name    string
	veth    *vethPair
	capture *packetConn // on the veth's far end: reads diverted frames, writes injections
	// The host's own queue: a second pair and socket for the frames the host sends and the
	// answers to its new flows, so a flood from the wire never delays them.
	vethHost    *vethPair
	captureHost *packetConn
	sinkHost    fastpath.Hook
	wire        atomic.Pointer[packetConn] // writes to the gateways: on the external interface, or see l3Wire
	sink        fastpath.Hook
	// l3: the interface has no link-layer header (ppp, tun, WireGuard, raw-IP modems).
	l3 atomic.Bool
	// closing is set before the capture socket is closed on purpose (a reload removed the
	// interface, or the shim stops), so its loop ends quietly.
	closing atomic.Bool
	// busy is when (on the shim's clock) the frame loop took the batch it is working on, 0
	// while it waits for frames: the heartbeat's measure of progress.
	busy, busyHost atomic.Int64

	// Guarded by Shim.mu.
	removed bool // a reload detached the interface
	mtu     int  // the interface's MTU as the engine knows it
	ifi     *net.Interface
	// wireProg, on an L3 device's host pair's near end, sends what the wire socket writes
	// to the device (see l3Wire).
	wireProg fastpath.Hook
	inject   fastpath.Hook
	hooks    []fastpath.Hook // egress and ingress on the external interface
}

// attached reports whether p has its capture veths and sockets: not while its interface has
// not appeared since the start or the reload that added it, nor once a reload removed it.
func (p *port) attached() bool { return p.veth != nil }

// captureConn returns the port's capture socket (closed once the port is removed).
func captureConn(p *port) *packetConn { return p.capture }

// wireConn returns the port's socket on the external interface (nil while it has none).
func wireConn(p *port) *packetConn { return p.wire.Load() }

// addPort creates everything l2shim owns for external interface name except the hooks on the
// interface itself: the veth pair, the capture socket, the sink and inject programs and the
// wire socket. On success the port is appended to s.ports (its index is the engine's
// interface index); on failure what was made is removed again.
func (s *Shim) addPort(name string) (*port, error) {
	ifi, err := net.InterfaceByName(name)
	if err != nil {
		return nil, fmt.Errorf("interface %s: %w", name, err)
	}
	p := &port{name: name, ifi: ifi}
	if err := s.buildPort(p, ifi); err != nil {
		p.closeSockets()
		p.release()
		return nil, err
	}
	s.setPorts(append(s.ports, p))
	return p, nil
}

// addAbsentPort appends a slot for interface name, absent when l2shim starts or reloads: no
// veths, sockets or hooks until it appears (arrive). s.mu is held (or Run has not shared the
// shim yet).
func (s *Shim) addAbsentPort(name string) {
	s.setPorts(append(s.ports, &port{name: name, ifi: &net.Interface{Name: name, Index: -1}}))
}

// setIface tells the programs p's interface is external, with its MAC and capture veths.
func (s *Shim) setIface(p *port) error {
	ifc := fastpath.Iface{L3: p.l3.Load(), Capture: p.veth.near.Attrs().Index, CaptureHost: p.vethHost.near.Attrs().Index}
	if ifc.L3 {
		ifc.MAC, ifc.GatewayMAC = l3IfaceMAC, l3GatewayMAC
	} else {
		copy(ifc.MAC[:], p.ifi.HardwareAddr)
	}
	return s.maps.k.SetIface(p.ifi.Index, ifc)
}

// attachHook attaches one of the external interfaces' programs (pinned, and adopting an
// earlier l2shim's link, when there is a pin directory).
func (s *Shim) attachHook(name string, prog *ebpf.Program, ifindex int, typ ebpf.AttachType) (fastpath.Hook, error) {
	rememberOwn(prog, &s.ownProgs)
	l, err := s.maps.k.Attach(name, prog, ifindex, typ)
	if err != nil {
		return nil, fmt.Errorf("attach %s to ifindex %d: %w", name, ifindex, err)
	}
	return l, nil
}

// attachVeth attaches one of the capture veths' programs in the kernel's mode, unpinned.
func (s *Shim) attachVeth(name string, prog *ebpf.Program, ifindex int) (fastpath.Hook, error) {
	rememberOwn(prog, &s.ownProgs)
	return fastpath.AttachTo(s.maps.k.Mode(), name, prog, ifindex, ebpf.AttachTCXIngress)
}

func (s *Shim) buildPort(p *port, ifi *net.Interface) error {
	s.fitVeths(ifi.MTU)
	var err error
	if p.veth, p.capture, p.sink, err = s.capturePair(p.name, ifi.Index, false); err != nil {
		return err
	}
	if p.vethHost, p.captureHost, p.sinkHost, err = s.capturePair(p.name, ifi.Index, true); err != nil {
		return err
	}
	if err := s.bindPort(p, ifi); err != nil {
		return err
	}
	// Diverted frames go to this port's capture veth from now on (the hooks of an earlier
	// l2shim, adopted, included: the heartbeat tells them when to divert).
	return s.setIface(p)
}

// capturePair makes one capture pair of interface name: the veths, the packet socket on the
// far end and the program that drops what the socket has read.
func (s *Shim) capturePair(name string, ifindex int, host bool) (*vethPair, *packetConn, fastpath.Hook, error) {
	v, err := createVethPair(name, ifindex, s.vethMTU, host)
	if err != nil {
		return nil, nil, nil, err
	}
	farIfi, err := net.InterfaceByName(v.far.Attrs().Name)
	if err != nil {
		v.delete()
		return nil, nil, nil, err
	}
	c, err := openPacket(farIfi, s.cfg.Shim.Mark, true)
	if err != nil {
		v.delete()
		return nil, nil, nil, err
	}
	sink, err := s.attachVeth(progSink, s.maps.k.Sink(), v.far.Attrs().Index)
	if err != nil {
		_ = c.Close()
		v.delete()
		return nil, nil, nil, err
	}
	return v, c, sink, nil
}

// fitVeths makes every capture veth's MTU at least mtu (and 1500): a frame read from one
// interface may be handed to the host through another's veth, so each must take the largest
// external interface's frames. MTUs are only ever raised. s.mu is held (or Run has not shared
// the shim yet).
func (s *Shim) fitVeths(mtu int) {
	mtu = max(mtu, 1500)
	if mtu <= s.vethMTU {
		return
	}
	for _, p := range s.ports {
		if p.removed || p.veth == nil {
			continue
		}
		for _, v := range []*vethPair{p.veth, p.vethHost} {
			if v == nil {
				continue
			}
			if err := v.setMTU(mtu); err != nil {
				s.log.Error("raise the capture veth's MTU; frames larger than the old one are lost", "interface", p.name, "mtu", mtu, "err", err)
			}
		}
	}
	if s.vethMTU > 0 {
		s.log.Info("capture veths raised to the largest external MTU", "mtu", mtu)
	}
	s.vethMTU = mtu
}

// setPorts replaces s.ports and publishes the change to the frame loops. s.mu is held (or Run
// has not shared the shim yet).
func (s *Shim) setPorts(ports []*port) {
	s.ports = ports
	snap := slices.Clone(ports)
	s.portsSnap.Store(&snap)
	s.portsGen.Add(1)
}

// portSocket returns a getter for the socket of the port at index i, whichever port holds
// that index when it is called (nil when none): send queues look their socket up at every
// flush.
func (s *Shim) portSocket(i int, which func(*port) *packetConn) func() *packetConn {
	return func() *packetConn {
		ports := *s.portsSnap.Load()
		if i >= len(ports) {
			return nil
		}
		return which(ports[i])
	}
}

// bindPort ties p to the external interface ifi as it is now: the wire socket and the inject
// program, which carry its ifindex. The hooks follow in attachPortHooks.
func (s *Shim) bindPort(p *port, ifi *net.Interface) error {
	l3, err := isL3(ifi.Index)
	if err != nil {
		return err
	}
	var wire *packetConn
	if l3 {
		wire, err = s.l3Wire(p, ifi)
	} else {
		wire, err = openPacket(ifi, s.cfg.Shim.Mark, false)
	}
	if err != nil {
		return err
	}
	p.l3.Store(l3)
	if old := p.wire.Swap(wire); old != nil {
		_ = old.Close()
	}
	if p.inject != nil {
		_ = p.inject.Detach()
		p.inject = nil
	}
	near := p.veth.near.Attrs().Index
	if err := s.maps.k.SetInject(near, ifi.Index); err != nil {
		return err
	}
	if p.inject, err = s.attachVeth(progInject, s.maps.k.Inject(), near); err != nil {
		return err
	}
	p.ifi = ifi
	return nil
}

// l3Wire opens the wire socket of a device without a link-layer header. AF_PACKET cannot write
// frames with a virtio-net header to one (PACKET_VNET_HDR needs SOCK_RAW, which takes a PPP
// device's first bytes for its header), so the socket sits on the far end of the port's host
// capture pair, and the near end's program redirects what arrives to the device: bpf_redirect
// drops the Ethernet header, and the device's queue segments and checksums the GSO frames and
// partial checksums the device cannot take.
func (s *Shim) l3Wire(p *port, ifi *net.Interface) (*packetConn, error) {
	near := p.vethHost.near.Attrs().Index
	if err := s.maps.k.SetInject(near, ifi.Index); err != nil {
		return nil, err
	}
	if p.wireProg == nil {
		l, err := s.attachVeth(progWire, s.maps.k.Wire(), near)
		if err != nil {
			return nil, err
		}
		p.wireProg = l
	}
	far, err := net.InterfaceByName(p.vethHost.far.Attrs().Name)
	if err != nil {
		return nil, fmt.Errorf("wire of %s: %w", ifi.Name, err)
	}
	return openPacket(far, s.cfg.Shim.Mark, false)
}

// attachHooks attaches the egress and ingress programs to each external interface, at the head
// of its chain (TCX or tc).
func (s *Shim) attachHooks() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, p := range s.ports {
		if !p.attached() {
			continue // absent at start: attached when it appears
		}
		if err := s.attachPortHooks(p); err != nil {
			return err
		}
	}
	return nil
}

func (s *Shim) attachPortHooks(p *port) error {
	if err := s.setIface(p); err != nil {
		return err
	}
	eg, err := s.attachHook(progEgress, s.maps.k.Egress(), p.ifi.Index, ebpf.AttachTCXEgress)
	if err != nil {
		return err
	}
	p.hooks = append(p.hooks, eg)
	in, err := s.attachHook(progIngress, s.maps.k.Ingress(), p.ifi.Index, ebpf.AttachTCXIngress)
	if err != nil {
		return err
	}
	p.hooks = append(p.hooks, in)
	s.log.Info("attached", "interface", p.ifi.Name, "ifindex", p.ifi.Index, "mac", p.ifi.HardwareAddr.String(), "capture", p.veth.far.Attrs().Name)
	return nil
}

// detachHooks detaches p's hooks from its external interface, pinned or not: the host routes
// on its own.
func (p *port) detachHooks() {
	for _, l := range p.hooks {
		_ = l.Detach()
	}
	p.hooks = nil
}

// releaseHooks lets go of p's hooks without detaching pinned TCX links or tc filters: they
// keep carrying the flows in the kernel until the next l2shim adopts them (unpinned TCX links
// detach).
func (p *port) releaseHooks() {
	for _, l := range p.hooks {
		_ = l.Close()
	}
	p.hooks = nil
}

func (s *Shim) detachHooks() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, p := range s.ports {
		p.detachHooks()
	}
}

// closeWire closes the socket to the external interface; frames queued for it are dropped
// and counted until bindPort opens a new one.
func (p *port) closeWire() {
	if w := p.wire.Swap(nil); w != nil {
		_ = w.Close()
	}
}

// closeSockets closes the port's sockets, which ends its frame loop.
func (p *port) closeSockets() {
	p.closing.Store(true)
	for _, c := range []*packetConn{p.capture, p.captureHost} {
		if c != nil {
			_ = c.Close()
		}
	}
	p.closeWire()
}

func (s *Shim) closeSockets() {
	for _, p := range s.ports {
		p.closeSockets()
	}
}

// release closes what is left of p after its hooks and sockets: its programs on the veth and
// the veth pair itself.
func (p *port) release() {
	for _, l := range []fastpath.Hook{p.inject, p.sink, p.sinkHost, p.wireProg} {
		if l != nil {
			_ = l.Detach()
		}
	}
	p.inject, p.sink, p.sinkHost, p.wireProg = nil, nil, nil, nil
	for _, v := range []*vethPair{p.veth, p.vethHost} {
		if v != nil {
			v.delete()
		}
	}
	p.veth, p.vethHost = nil, nil
}

// removePort detaches an interface no gateway uses any more. Its slot stays (the indexes of
// the others never change), marked removed. s.mu is held.
func (s *Shim) removePort(i int) {
	p := s.ports[i]
	p.detachHooks()
	p.closeSockets()
	p.release()
	p.removed = true
	s.log.Info("detached", "interface", p.name)
}

// ifaceIndex returns the index of the port of interface name (the latest, when a reload
// detached and attached it again), -1 when there is none.
func (s *Shim) ifaceIndex(name string) int {
	ports := *s.portsSnap.Load()
	for i := len(ports) - 1; i >= 0; i-- {
		if ports[i].name == name {
			return i
		}
	}
	return -1
}
