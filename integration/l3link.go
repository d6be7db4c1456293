package integration

import (
	"crypto/ecdh"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
	"golang.zx2c4.com/wireguard/conn"
	"golang.zx2c4.com/wireguard/device"
	"golang.zx2c4.com/wireguard/ipc"
	"golang.zx2c4.com/wireguard/tun"
)

// LinkKind is what one uplink (host ─ gateway i) is made of.
type LinkKind int

const (
	// LinkVeth is an Ethernet veth pair eth<i> ─ lan with /24 addresses and
	// ARP: the default.
	LinkVeth LinkKind = iota
	// LinkTun is a PPP-like point-to-point L3 link ppp<i> ─ lan without
	// Ethernet (ARPHRD_NONE): a tun device (IFF_TUN|IFF_NO_PI, no
	// IFF_VNET_HDR, so the kernel segments before the device) in the host
	// namespace and one in the gateway's, carried by goroutines of this
	// process copying packets between their file descriptors.
	LinkTun
	// LinkWireGuard is a WireGuard tunnel wg<i> ─ lan made by wireguard-go
	// (in this process, tun with IFF_VNET_HDR and GSO offloads) over an
	// underlay veth pair wgu<i> 172.31.i.1/30 ─ wgu 172.31.i.2/30 of its
	// own. allowed-ips is 0.0.0.0/0 on both sides (and ::/0 with
	// Options.IPv6).
	LinkWireGuard
)

func (k LinkKind) String() string {
	switch k {
	case LinkVeth:
		return "veth"
	case LinkTun:
		return "tun"
	case LinkWireGuard:
		return "wireguard"
	}
	return fmt.Sprintf("LinkKind(%d)", int(k))
}

// Default MTUs of the L3 link kinds (Options.UplinkMTU 0).
const (
	DefaultTunMTU       = 1500
	DefaultWireGuardMTU = device.DefaultMTU // 1420
)

// wgPort is the UDP port gateway i's WireGuard listens on; the host's
// device for uplink i listens on wgPort+i.
const wgPort = 51820

// wgUnderlay returns the host's and the gateway's address on uplink i's
// underlay veth pair (172.31.i.0/30, not routed anywhere else).
func wgUnderlay(i int) (host, gw netip.Prefix) {
	return netip.PrefixFrom(netip.AddrFrom4([4]byte{172, 31, byte(i), 1}), 30),
		netip.PrefixFrom(netip.AddrFrom4([4]byte{172, 31, byte(i), 2}), 30)
}

// hostIfName is the host's interface of uplink i for the kind in opts.
func hostIfName(opts Options, i int) string {
	switch opts.Uplinks[i] {
	case LinkTun:
		return fmt.Sprintf("ppp%d", i)
	case LinkWireGuard:
		return fmt.Sprintf("wg%d", i)
	}
	return fmt.Sprintf("eth%d", i)
}

// uplinkMTU is the MTU to give uplink i (0: the kind's default, for veth the
// veth default or Options.MTU).
func (t *Topology) uplinkMTU(i int) int {
	if m := t.opts.UplinkMTU[i]; m > 0 {
		return m
	}
	switch t.opts.Uplinks[i] {
	case LinkTun:
		return DefaultTunMTU
	case LinkWireGuard:
		return DefaultWireGuardMTU
	}
	return t.opts.MTU
}

// UplinkKind returns what uplink i is made of.
func (t *Topology) UplinkKind(i int) LinkKind {
	if i < 0 || i > 1 {
		return LinkVeth
	}
	return t.opts.Uplinks[i]
}

// l3Uplink is an uplink without Ethernet. Its Close (registered with the
// host namespace, so Topology.Close runs it before the namespaces go)
// stops the copying goroutines, closes the tun files and the WireGuard
// devices of both sides.
type l3Uplink struct {
	t    *Topology
	i    int
	kind LinkKind
	mtu  int
	gw   *NS

	cut atomic.Bool // CutL3: LinkTun's pipe drops; LinkWireGuard has nft rules

	mu     sync.Mutex
	closed bool
	// LinkTun
	hostFile, gwFile *os.File
	pipe             *tunPipe
	// LinkWireGuard
	hostKey, gwKey *ecdh.PrivateKey
	hostWG, gwWG   *wgDevice
}

// addL3Uplink builds uplink i as an L3 link: the gateway's side "lan"
// (10.(i+1).0.1 peer 10.(i+1).0.2, rp_filter strict, a route to the host's
// whole 10.(i+1).0.0/24 through it) and the host's side (see addHost).
func (t *Topology) addL3Uplink(i int) error {
	gw, _, err := t.gateway(i)
	if err != nil {
		return err
	}
	u := &l3Uplink{t: t, i: i, kind: t.opts.Uplinks[i], mtu: t.uplinkMTU(i), gw: gw}
	t.mu.Lock()
	t.l3[i] = u
	t.mu.Unlock()
	t.Host.AddCloser(u)

	switch u.kind {
	case LinkTun:
		f, err := openTun(gw, "lan", u.mtu)
		if err != nil {
			return err
		}
		u.mu.Lock()
		u.gwFile = f
		u.mu.Unlock()
	case LinkWireGuard:
		if u.hostKey, err = ecdh.X25519().GenerateKey(rand.Reader); err != nil {
			return err
		}
		if u.gwKey, err = ecdh.X25519().GenerateKey(rand.Reader); err != nil {
			return err
		}
		hostU, gwU := wgUnderlay(i)
		hostName := fmt.Sprintf("wgu%d", i)
		umtu := max(1500, u.mtu+80) // WireGuard over IPv6 adds 80 bytes, over IPv4 60
		if err := addVeth(veth{a: t.Host, aName: hostName, b: gw, bName: "wgu"}, umtu); err != nil {
			return err
		}
		if err := addAddrUp(t.Host, hostName, hostU); err != nil {
			return err
		}
		if err := addAddrUp(gw, "wgu", gwU); err != nil {
			return err
		}
		// The gateway knows no endpoint for the host: it learns it from the host's first
		// handshake, as a WireGuard server does. Were both sides to initiate, their
		// initiations could cross: each side's answer to the other's overwrites its own
		// pending handshake, both responses are dropped, and the tunnel waits for
		// wireguard-go's 5 s retry (or, with sessions left mismatched, 15 s).
		d, err := newWGDevice(gw, "lan", u.mtu, wgPort, u.gwKey, u.hostKey.PublicKey(), netip.AddrPort{}, t.opts)
		if err != nil {
			return err
		}
		u.mu.Lock()
		u.gwWG = d
		u.mu.Unlock()
	default:
		return fmt.Errorf("uplink %d: unknown link kind %v", i, u.kind)
	}
	host, gwAddr := t.uplinkAddrs(i)
	if err := gw.Sysctl("net.ipv4.conf.lan.rp_filter", "1"); err != nil {
		return err
	}
	if err := t.prepLAN6(gw); err != nil {
		return err
	}
	if err := addPeerAddrUp(gw, "lan", gwAddr, host); err != nil {
		return err
	}
	if err := addDevRoute(gw, "lan", netip.PrefixFrom(host, 24).Masked()); err != nil {
		return err
	}
	if err := t.addLAN6(i); err != nil {
		return err
	}
	if err := u.addHost(); err != nil {
		return err
	}
	return waitCarrier(gw, "lan", 5*time.Second)
}

// uplinkAddrs returns the host's and gateway's address on uplink i.
func (t *Topology) uplinkAddrs(i int) (host, gw netip.Addr) {
	if i == 1 {
		return t.HostAddr1, t.GW1Addr
	}
	return t.HostAddr0, t.GW0Addr
}

// addHost creates the host's side of the uplink (ppp<i> or wg<i>):
// 10.(i+1).0.2 peer 10.(i+1).0.1, rp_filter loose, up, and for uplink 0
// the host's default route through it.
func (u *l3Uplink) addHost() error {
	t := u.t
	ifname := hostIfName(t.opts, u.i)
	u.mu.Lock()
	closed := u.closed
	u.mu.Unlock()
	if closed {
		return errors.New("topology closed")
	}
	switch u.kind {
	case LinkTun:
		f, err := openTun(t.Host, ifname, u.mtu)
		if err != nil {
			return err
		}
		u.mu.Lock()
		if u.closed {
			u.mu.Unlock()
			f.Close()
			return errors.New("topology closed")
		}
		u.hostFile = f
		u.pipe = startTunPipe(u.hostFile, u.gwFile, &u.cut)
		u.mu.Unlock()
	case LinkWireGuard:
		_, gwU := wgUnderlay(u.i)
		d, err := newWGDevice(t.Host, ifname, u.mtu, wgPort+u.i, u.hostKey, u.gwKey.PublicKey(), netip.AddrPortFrom(gwU.Addr(), wgPort), t.opts)
		if err == nil {
			if err = d.listenUAPI(ifname); err != nil {
				d.Close()
			}
		}
		if err != nil {
			return err
		}
		u.mu.Lock()
		if u.closed {
			u.mu.Unlock()
			d.Close()
			return errors.New("topology closed")
		}
		u.hostWG = d
		u.mu.Unlock()
	}
	host, gwAddr := t.uplinkAddrs(u.i)
	if err := t.Host.Sysctl("net.ipv4.conf."+ifname+".rp_filter", "2"); err != nil {
		return err
	}
	if err := addPeerAddrUp(t.Host, ifname, host, gwAddr); err != nil {
		return err
	}
	if u.i == 0 {
		if err := addDevRoute(t.Host, ifname, netip.Prefix{}); err != nil {
			return err
		}
	}
	if err := waitCarrier(t.Host, ifname, 5*time.Second); err != nil {
		return err
	}
	return t.addHost6(u.i)
}

// closeHost deletes the host's side of the uplink and stops what carried it.
func (u *l3Uplink) closeHost() {
	u.mu.Lock()
	pipe, f, wg := u.pipe, u.hostFile, u.hostWG
	u.pipe, u.hostFile, u.hostWG = nil, nil, nil
	u.mu.Unlock()
	if pipe != nil {
		pipe.halt()
	}
	if f != nil {
		f.Close()
	}
	if wg != nil {
		wg.Close()
	}
}

// Close stops the uplink's goroutines and closes its tun files and
// WireGuard devices (the devices go with them). Idempotent.
func (u *l3Uplink) Close() error {
	u.mu.Lock()
	if u.closed {
		u.mu.Unlock()
		return nil
	}
	u.closed = true
	u.mu.Unlock()
	u.closeHost()
	u.mu.Lock()
	f, wg := u.gwFile, u.gwWG
	u.gwFile, u.gwWG = nil, nil
	u.mu.Unlock()
	if f != nil {
		f.Close()
	}
	if wg != nil {
		wg.Close()
	}
	return nil
}

// recreate deletes the host's device of the uplink and builds it again
// (see RecreateUplink).
func (u *l3Uplink) recreate() (oldIdx, newIdx int, err error) {
	if oldIdx, err = u.remove(); err != nil {
		return oldIdx, 0, err
	}
	newIdx, err = u.restore()
	return oldIdx, newIdx, err
}

// remove deletes the host's device of the uplink (a PPP session going away) and returns its
// ifindex; restore builds it again.
func (u *l3Uplink) remove() (int, error) {
	t := u.t
	ifname := hostIfName(t.opts, u.i)
	h := t.Host.Netlink()
	l, err := h.LinkByName(ifname)
	if err != nil {
		return 0, fmt.Errorf("%s: %s: %w", t.Host.Name, ifname, err)
	}
	u.mu.Lock()
	if u.hostWG != nil {
		u.hostWG.quiet.Store(true) // its tun is about to fail under it
	}
	u.mu.Unlock()
	if err := h.LinkDel(l); err != nil {
		return l.Attrs().Index, fmt.Errorf("%s: delete %s: %w", t.Host.Name, ifname, err)
	}
	u.closeHost()
	return l.Attrs().Index, nil
}

// restore builds the host's device of the uplink again after remove and returns its ifindex.
func (u *l3Uplink) restore() (int, error) {
	if err := u.addHost(); err != nil {
		return 0, fmt.Errorf("re-create uplink %d: %w", u.i, err)
	}
	nl, err := u.t.Host.Netlink().LinkByName(hostIfName(u.t.opts, u.i))
	if err != nil {
		return 0, err
	}
	return nl.Attrs().Index, nil
}

// l3Uplink returns uplink i if it is an L3 link.
func (t *Topology) l3Uplink(i int) (*l3Uplink, error) {
	if i < 0 || i > 1 {
		return nil, fmt.Errorf("no uplink %d", i)
	}
	t.mu.Lock()
	u := t.l3[i]
	t.mu.Unlock()
	if u == nil {
		return nil, fmt.Errorf("uplink %d is a %v link, not an L3 one", i, t.opts.Uplinks[i])
	}
	return u, nil
}

// nftCutTable is the nft table (family ip, in gateway i's namespace) that
// CutL3 loads to cut a WireGuard uplink's underlay.
const nftCutTable = "l2t_cutl3"

// CutL3 makes L3 uplink i silently drop everything in both directions
// (cut true) or carry it again (cut false), without the link going down:
// both ends stay up and running. LinkTun: the copying goroutine drops
// every packet. LinkWireGuard: nft drops everything on the underlay in the
// gateway's namespace (table ip l2t_cutl3; keys and sessions survive, so
// traffic flows at once when restored). An error for a veth uplink.
func (t *Topology) CutL3(i int, cut bool) error {
	u, err := t.l3Uplink(i)
	if err != nil {
		return err
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.cut.Load() == cut {
		return nil
	}
	if u.kind == LinkWireGuard {
		var script string
		if cut {
			script = `table ip ` + nftCutTable + ` {
	chain in { type filter hook input priority -300; policy accept; iifname "wgu" counter drop; }
	chain out { type filter hook output priority -300; policy accept; oifname "wgu" counter drop; }
}
`
		} else {
			script = "delete table ip " + nftCutTable + "\n"
		}
		if err := Nft(u.gw, script); err != nil {
			return err
		}
	}
	u.cut.Store(cut)
	return nil
}

// ---- tun ----

// openTun creates the tun device name (IFF_TUN|IFF_NO_PI: no packet
// information, no virtio-net header, hence no offloads) inside ns and
// returns its file, non-blocking (in Go's poller, so reads can be
// interrupted), with the device's MTU set. Closing the file removes the
// device.
func openTun(ns *NS, name string, mtu int) (*os.File, error) {
	var f *os.File
	err := ns.Do(func() error {
		// The device is created in the namespace of the thread that opens
		// /dev/net/tun.
		fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
		if err != nil {
			return err
		}
		ifr, err := unix.NewIfreq(name)
		if err == nil {
			ifr.SetUint16(unix.IFF_TUN | unix.IFF_NO_PI)
			err = unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr)
		}
		if err != nil {
			unix.Close(fd)
			return err
		}
		f = os.NewFile(uintptr(fd), "/dev/net/tun:"+name)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("%s: tun %s: %w", ns.Name, name, err)
	}
	if mtu > 0 {
		if err := setMTU(ns, name, mtu); err != nil {
			f.Close()
			return nil, err
		}
	}
	return f, nil
}

// tunPipe copies packets between two tun files, one goroutine per
// direction, dropping them while cut is set.
type tunPipe struct {
	a, b    *os.File
	cut     *atomic.Bool
	stop    atomic.Bool
	wg      sync.WaitGroup
	copied  atomic.Int64
	dropped atomic.Int64
}

func startTunPipe(a, b *os.File, cut *atomic.Bool) *tunPipe {
	p := &tunPipe{a: a, b: b, cut: cut}
	p.wg.Add(2)
	go p.copy(b, a)
	go p.copy(a, b)
	return p
}

// copy moves packets from src to dst until halt or until src fails (closed,
// its device deleted). Each iteration is one blocking read, which halt
// interrupts with a read deadline.
func (p *tunPipe) copy(dst, src *os.File) {
	defer p.wg.Done()
	buf := make([]byte, 65536)
	for !p.stop.Load() {
		n, err := src.Read(buf)
		if err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) || errors.Is(err, unix.EINTR) || errors.Is(err, unix.EAGAIN) {
				continue // the loop condition decides
			}
			return
		}
		if p.cut.Load() {
			p.dropped.Add(1)
			continue
		}
		// A write fails while dst is down (EIO): the packet is lost,
		// as on a wire.
		if _, err := dst.Write(buf[:n]); errors.Is(err, os.ErrClosed) {
			return
		}
		p.copied.Add(1)
	}
}

// halt stops both goroutines and waits for them; the files stay open.
func (p *tunPipe) halt() {
	p.stop.Store(true)
	past := time.Unix(1, 0)
	p.a.SetReadDeadline(past)
	p.b.SetReadDeadline(past)
	p.wg.Wait()
	p.a.SetReadDeadline(time.Time{})
	p.b.SetReadDeadline(time.Time{})
}

// ---- WireGuard ----

// wgDevice is a wireguard-go device with its tun.
type wgDevice struct {
	dev   *device.Device
	tun   *nsTun
	quiet atomic.Bool // no more logging: closing
	// uapi is the host device's control socket (/var/run/wireguard/NAME.sock), as wg(8) and
	// l2shim's peer watch find a wireguard-go device; nil on the gateway's side.
	uapi net.Listener
}

// newWGDevice creates the WireGuard device name in ns: its tun is created on
// a thread in ns, its UDP sockets are opened in ns (nsBind) on listenPort,
// with one peer (peerPub at endpoint, none when it is the zero AddrPort: the peer's first handshake
// tells it; allowed-ips 0.0.0.0/0), up.
func newWGDevice(ns *NS, name string, mtu, listenPort int, priv *ecdh.PrivateKey, peerPub *ecdh.PublicKey, endpoint netip.AddrPort, opts Options) (*wgDevice, error) {
	var td tun.Device
	var ctl *os.File
	err := ns.Do(func() error {
		// CreateTUN opens /dev/net/tun, a netlink socket for link events,
		// and resolves the ifindex and sets the MTU with ioctls: all of them
		// in the namespace of the thread.
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return err
		}
		ctl = os.NewFile(uintptr(fd), "mtu-socket")
		td, err = tun.CreateTUN(name, mtu)
		if err != nil {
			ctl.Close()
		}
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("%s: wireguard tun %s: %w", ns.Name, name, err)
	}
	w := &wgDevice{}
	prefix := fmt.Sprintf("wireguard %s/%s: ", ns.Name, name)
	logger := &device.Logger{
		Verbosef: device.DiscardLogf,
		Errorf: func(format string, args ...any) {
			if !w.quiet.Load() {
				opts.logf(prefix+format, args...)
			}
		},
	}
	w.tun = &nsTun{Device: td, ctl: ctl, name: name}
	w.dev = device.NewDevice(w.tun, &nsBind{Bind: conn.NewStdNetBind(), ns: ns}, logger)
	cfg := fmt.Sprintf("private_key=%s\nlisten_port=%d\nreplace_peers=true\npublic_key=%s\n",
		hex.EncodeToString(priv.Bytes()), listenPort, hex.EncodeToString(peerPub.Bytes()))
	if endpoint.IsValid() {
		cfg += fmt.Sprintf("endpoint=%s\n", endpoint)
	}
	cfg += "replace_allowed_ips=true\nallowed_ip=0.0.0.0/0\n"
	if opts.IPv6 {
		cfg += "allowed_ip=::/0\n"
	}
	if err := w.dev.IpcSet(cfg); err != nil {
		w.Close()
		return nil, fmt.Errorf("%s: wireguard %s config: %w", ns.Name, name, err)
	}
	if err := w.dev.Up(); err != nil {
		w.Close()
		return nil, fmt.Errorf("%s: wireguard %s up: %w", ns.Name, name, err)
	}
	return w, nil
}

// peerState describes the device's peer as wireguard-go reports it (the last handshake, bytes
// sent and received), for an error that says where a tunnel stuck.
func (w *wgDevice) peerState() string {
	if w == nil || w.dev == nil {
		return "no device"
	}
	cfg, err := w.dev.IpcGet()
	if err != nil {
		return err.Error()
	}
	var parts []string
	for _, l := range strings.Split(cfg, "\n") {
		for _, k := range []string{"endpoint=", "last_handshake_time_sec=", "tx_bytes=", "rx_bytes="} {
			if strings.HasPrefix(l, k) {
				parts = append(parts, l)
			}
		}
	}
	return strings.Join(parts, " ")
}

// listenUAPI serves the device's configuration protocol on /var/run/wireguard/NAME.sock, so
// wg(8) and wgctrl see it like any wireguard-go device.
func (w *wgDevice) listenUAPI(name string) error {
	f, err := ipc.UAPIOpen(name)
	if err != nil {
		return fmt.Errorf("wireguard %s: UAPI socket: %w", name, err)
	}
	ln, err := ipc.UAPIListen(name, f)
	f.Close()
	if err != nil {
		return fmt.Errorf("wireguard %s: UAPI socket: %w", name, err)
	}
	w.uapi = ln
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go w.dev.IpcHandle(c)
		}
	}()
	return nil
}

// Close closes the device, its tun (the link goes), its sockets and its UAPI socket.
func (w *wgDevice) Close() {
	w.quiet.Store(true)
	if w.uapi != nil {
		w.uapi.Close() // removes the socket file
	}
	w.dev.Close()
}

// nsBind is wireguard-go's standard UDP bind with its sockets opened inside
// ns: the device opens them on Up, on a listen_port change and when its tun
// comes up again, from whatever goroutine noticed.
type nsBind struct {
	conn.Bind
	ns *NS
}

func (b *nsBind) Open(port uint16) (fns []conn.ReceiveFunc, actual uint16, err error) {
	derr := b.ns.Do(func() error {
		fns, actual, err = b.Bind.Open(port)
		return nil
	})
	if derr != nil {
		return nil, 0, derr
	}
	return fns, actual, err
}

// nsTun reads the MTU with an ioctl on a socket opened in the device's
// namespace: wireguard-go's own MTU() opens that socket in the namespace of
// the calling thread, and it calls it from its event goroutine.
type nsTun struct {
	tun.Device
	ctl  *os.File // an AF_INET datagram socket in the namespace
	name string
}

func (t *nsTun) MTU() (int, error) {
	rc, err := t.ctl.SyscallConn()
	if err != nil {
		return 0, err
	}
	var mtu int
	cerr := rc.Control(func(fd uintptr) {
		var ifr *unix.Ifreq
		if ifr, err = unix.NewIfreq(t.name); err == nil {
			if err = unix.IoctlIfreq(int(fd), unix.SIOCGIFMTU, ifr); err == nil {
				mtu = int(ifr.Uint32())
			}
		}
	})
	if cerr != nil {
		return 0, cerr
	}
	if err != nil {
		return 0, fmt.Errorf("%s: SIOCGIFMTU: %w", t.name, err)
	}
	return mtu, nil
}

func (t *nsTun) Close() error {
	err := t.Device.Close()
	t.ctl.Close()
	return err
}

// ---- addresses and routes ----

// addPeerAddrUp gives ifname in ns the point-to-point address local with
// peer peer/32 and sets it up.
func addPeerAddrUp(ns *NS, ifname string, local, peer netip.Addr) error {
	h := ns.Netlink()
	l, err := h.LinkByName(ifname)
	if err != nil {
		return fmt.Errorf("%s: %s: %w", ns.Name, ifname, err)
	}
	a := &netlink.Addr{
		IPNet: &net.IPNet{IP: local.AsSlice(), Mask: net.CIDRMask(32, 32)},
		Peer:  &net.IPNet{IP: peer.AsSlice(), Mask: net.CIDRMask(32, 32)},
	}
	if err := h.AddrAdd(l, a); err != nil {
		return fmt.Errorf("%s: addr %s peer %s on %s: %w", ns.Name, local, peer, ifname, err)
	}
	if err := h.LinkSetUp(l); err != nil {
		return fmt.Errorf("%s: up %s: %w", ns.Name, ifname, err)
	}
	return nil
}

// addDevRoute adds a route to dst (invalid: default) through dev without a
// gateway (scope link), as on a point-to-point link.
func addDevRoute(ns *NS, dev string, dst netip.Prefix) error {
	h := ns.Netlink()
	l, err := h.LinkByName(dev)
	if err != nil {
		return fmt.Errorf("%s: %s: %w", ns.Name, dev, err)
	}
	r := &netlink.Route{LinkIndex: l.Attrs().Index, Scope: netlink.SCOPE_LINK}
	if dst.IsValid() {
		r.Dst = &net.IPNet{IP: dst.Addr().AsSlice(), Mask: net.CIDRMask(dst.Bits(), 32)}
	} else {
		r.Dst = &net.IPNet{IP: net.IPv4zero.To4(), Mask: net.CIDRMask(0, 32)}
	}
	if err := h.RouteAdd(r); err != nil {
		return fmt.Errorf("%s: route %v dev %s: %w", ns.Name, dst, dev, err)
	}
	return nil
}

// isL3Carrier reports whether an L3 device without a driver-set operstate
// (tun: UNKNOWN) is up and has its carrier (a file attached).
func isL3Carrier(l netlink.Link) bool {
	a := l.Attrs()
	return a.OperState == netlink.OperUnknown && a.RawFlags&unix.IFF_LOWER_UP != 0 && a.RawFlags&unix.IFF_UP != 0
}
