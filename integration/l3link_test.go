package integration

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// L3 uplinks (LinkTun, LinkWireGuard) without l2shim: the topology itself.

// l3Topo builds a topology with the given uplink kinds and MTUs, removed in
// t.Cleanup (also when the test fails), and checks that its namespaces are
// gone afterwards.
func l3Topo(t *testing.T, kinds [2]LinkKind, mtus [2]int) *Topology {
	t.Helper()
	requireRoot(t)
	topo, err := NewTopology(Options{Uplinks: kinds, UplinkMTU: mtus, Logf: t.Logf})
	if err != nil {
		t.Fatalf("topology %v+%v: %v", kinds[0], kinds[1], err)
	}
	t.Cleanup(func() {
		names := []string{}
		for _, n := range topo.Namespaces() {
			names = append(names, n.Name)
		}
		if err := topo.Close(); err != nil {
			t.Errorf("topology cleanup: %v", err)
		}
		for _, n := range names {
			if _, err := os.Stat(filepath.Join("/run/netns", n)); err == nil {
				t.Errorf("netns %s still exists after cleanup", n)
			}
		}
	})
	return topo
}

// hostIf returns the host's interface of uplink i.
func (t *Topology) hostIf(i int) string {
	if i == 1 {
		return t.HostIf1
	}
	return t.HostIf0
}

// sourceRoute makes the host route packets from src through uplink i:
// rule "from src[ to dst] lookup table" (pref) and the table's default
// route through the uplink (dev for an L3 link, via the gateway for a
// veth). It replaces the table's route, so it can be called again after
// RecreateUplink. The rule is removed when the test ends.
func sourceRoute(t *testing.T, topo *Topology, src netip.Addr, dst netip.Prefix, i, table, pref int) {
	t.Helper()
	h := topo.Host.Netlink()
	l, err := h.LinkByName(topo.hostIf(i))
	if err != nil {
		t.Fatal(err)
	}
	r := &netlink.Route{Table: table, LinkIndex: l.Attrs().Index, Dst: &net.IPNet{IP: net.IPv4zero.To4(), Mask: net.CIDRMask(0, 32)}}
	if topo.UplinkKind(i) == LinkVeth {
		_, gw := topo.uplinkAddrs(i)
		r.Gw = gw.AsSlice()
	} else {
		r.Scope = netlink.SCOPE_LINK
	}
	if err := h.RouteReplace(r); err != nil {
		t.Fatalf("table %d: default via uplink %d: %v", table, i, err)
	}
	rule := netlink.NewRule()
	rule.Src = &net.IPNet{IP: src.AsSlice(), Mask: net.CIDRMask(32, 32)}
	if dst.IsValid() {
		rule.Dst = &net.IPNet{IP: dst.Addr().AsSlice(), Mask: net.CIDRMask(dst.Bits(), 32)}
	}
	rule.Table = table
	rule.Priority = pref
	if err := h.RuleAdd(rule); err != nil {
		if errors.Is(err, unix.EEXIST) {
			return
		}
		t.Fatalf("rule from %s lookup %d: %v", src, table, err)
	}
	t.Cleanup(func() { h.RuleDel(rule) })
}

// sourceRoutes routes each uplink's address through its own uplink (tables
// 100 and 101).
func sourceRoutes(t *testing.T, topo *Topology) {
	t.Helper()
	for i := range 2 {
		src, _ := topo.uplinkAddrs(i)
		sourceRoute(t, topo, src, netip.Prefix{}, i, 100+i, 100+i)
	}
}

// pingFrom runs ping(8) in the host namespace from src to dst: count
// echoes, size bytes of payload, with DF set when df.
func pingFrom(topo *Topology, src, dst netip.Addr, count, size int, df bool) error {
	args := []string{"-n", "-q", "-c", strconv.Itoa(count), "-i", "0.2", "-W", "1", "-I", src.String(), "-s", strconv.Itoa(size)}
	if df {
		args = append(args, "-M", "do")
	}
	_, err := topo.Host.Run(nil, "ping", append(args, dst.String())...)
	return err
}

// bulkFrom makes one byte-exact transfer (opUpload or opDownload) of size
// bytes with a bulk server from a socket bound to src, and checks that the
// server saw src.
func bulkFrom(ctx context.Context, ns *NS, src netip.Addr, addr netip.AddrPort, op byte, size int64, seed uint64) (time.Duration, error) {
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	c, err := dialTCPBound(ctx, ns, netip.AddrPortFrom(src, 0), addr)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	setCtxDeadline(ctx, c)
	line, err := readLine(c)
	if err != nil {
		return 0, fmt.Errorf("read server hello: %w", err)
	}
	if line != src.String() {
		return 0, fmt.Errorf("server saw %s, want %s", line, src)
	}
	start := time.Now()
	if err := writeHeader(c, op, size, seed); err != nil {
		return 0, err
	}
	_, want, err := sendStream(io.Discard, size, seed, nil)
	if err != nil {
		return 0, err
	}
	var mine []byte
	switch op {
	case opUpload:
		if _, mine, err = sendStream(c, size, seed, nil); err != nil {
			return 0, fmt.Errorf("upload: %w", err)
		}
	case opDownload:
		h := sha256.New()
		n, err := io.CopyBuffer(h, io.LimitReader(c, size), make([]byte, chunk))
		if err == nil && n < size {
			err = io.ErrUnexpectedEOF
		}
		if err != nil {
			return 0, fmt.Errorf("download: after %d of %d bytes: %w", n, size, err)
		}
		mine = h.Sum(nil)
	}
	sum, err := readServerSum(c)
	if err != nil {
		return 0, fmt.Errorf("read server sha256: %w", err)
	}
	if !bytes.Equal(sum, want) || !bytes.Equal(mine, want) {
		return 0, fmt.Errorf("%c corrupted: stream %x, server %x, client %x", op, want, sum, mine)
	}
	return time.Since(start), nil
}

// echoWithin repeats 1-second echo connections from src until one succeeds
// or within has passed, and returns how long it took.
func echoWithin(topo *Topology, src netip.Addr, addr netip.AddrPort, within time.Duration) (time.Duration, error) {
	start := time.Now()
	var err error
	for time.Since(start) < within {
		if err = TCPEchoFrom(context.Background(), topo.Host, src, addr, []byte("l3 echo\n"), time.Second); err == nil {
			return time.Since(start), nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return time.Since(start), err
}

// linkUp reports whether ifname in ns is up with its carrier.
func linkUp(ns *NS, ifname string) error {
	l, err := ns.Netlink().LinkByName(ifname)
	if err != nil {
		return err
	}
	a := l.Attrs()
	if a.RawFlags&unix.IFF_UP == 0 || a.RawFlags&unix.IFF_LOWER_UP == 0 {
		return fmt.Errorf("%s: %s flags %v operstate %v: not up with carrier", ns.Name, ifname, a.Flags, a.OperState)
	}
	return nil
}

// TestL3Link builds topologies with L3 uplinks (tun+tun, veth+wireguard,
// wireguard+tun) without l2shim and checks, per uplink: the devices (names,
// ARPHRD_NONE, point-to-point, MTU as asked), ping and TCP by source
// address, a byte-exact 4 MiB upload and download, the gateway's strict
// rp_filter dropping the other uplink's source address (and that it is the
// rp_filter), CutL3 (silent, link stays up; un-cut restores),
// CutUpstream/RestoreUpstream and RecreateUplink (new ifindex, same
// configuration, traffic again).
func TestL3Link(t *testing.T) {
	for _, c := range []struct {
		kinds [2]LinkKind
		mtus  [2]int
		want  [2]int
	}{
		{[2]LinkKind{LinkTun, LinkTun}, [2]int{1492, 0}, [2]int{1492, 1500}},
		{[2]LinkKind{LinkVeth, LinkWireGuard}, [2]int{0, 0}, [2]int{1500, 1420}},
		{[2]LinkKind{LinkWireGuard, LinkTun}, [2]int{1400, 1492}, [2]int{1400, 1492}},
	} {
		t.Run(c.kinds[0].String()+"+"+c.kinds[1].String(), func(t *testing.T) {
			topo := l3Topo(t, c.kinds, c.mtus)
			srv := startServers(t, topo)
			sourceRoutes(t, topo)
			for i := range 2 {
				checkUplinkDevices(t, topo, i, c.want[i])
			}
			checkDefaultRoute(t, topo)
			for i := range 2 {
				checkUplinkTraffic(t, topo, srv, i, c.want[i])
			}
			for i := range 2 {
				checkWrongSourceDropped(t, topo, srv, i)
			}
			for i := range 2 {
				if topo.UplinkKind(i) != LinkVeth {
					checkCutL3(t, topo, srv, i)
				}
				checkCutUpstream(t, topo, srv, i)
			}
			for i := range 2 {
				checkRecreate(t, topo, srv, i, c.want[i])
			}
			checkDefaultRoute(t, topo)
		})
	}
}

func checkUplinkDevices(t *testing.T, topo *Topology, i, mtu int) {
	t.Helper()
	kind := topo.UplinkKind(i)
	want := map[LinkKind]string{LinkVeth: "eth", LinkTun: "ppp", LinkWireGuard: "wg"}[kind] + strconv.Itoa(i)
	if got := topo.hostIf(i); got != want {
		t.Errorf("uplink %d (%v): host interface %q, want %q", i, kind, got, want)
	}
	gw, _, _ := topo.gateway(i)
	for _, e := range []struct {
		ns     *NS
		ifname string
	}{{topo.Host, topo.hostIf(i)}, {gw, "lan"}} {
		l, err := e.ns.Netlink().LinkByName(e.ifname)
		if err != nil {
			t.Errorf("uplink %d: %v", i, err)
			continue
		}
		a := l.Attrs()
		encap, p2p := "ether", false
		if kind != LinkVeth {
			encap, p2p = "none", true
		}
		if a.MTU != mtu || a.EncapType != encap || (a.RawFlags&unix.IFF_POINTOPOINT != 0) != p2p {
			t.Errorf("uplink %d %s/%s: mtu %d link/%s flags %v, want mtu %d link/%s point-to-point %v", i, e.ns.Name, e.ifname, a.MTU, a.EncapType, a.Flags, mtu, encap, p2p)
		}
		if err := linkUp(e.ns, e.ifname); err != nil {
			t.Errorf("uplink %d: %v", i, err)
		}
	}
	if kind == LinkVeth {
		return
	}
	host, gwAddr := topo.uplinkAddrs(i)
	for _, e := range []struct {
		ns          *NS
		ifname      string
		local, peer netip.Addr
	}{{topo.Host, topo.hostIf(i), host, gwAddr}, {gw, "lan", gwAddr, host}} {
		out, err := e.ns.Run(nil, "ip", "-4", "-o", "addr", "show", "dev", e.ifname)
		if err != nil {
			t.Fatal(err)
		}
		if want := fmt.Sprintf("inet %s peer %s/32", e.local, e.peer); !strings.Contains(out, want) {
			t.Errorf("%s: %s: %q, want %q", e.ns.Name, e.ifname, strings.TrimSpace(out), want)
		}
	}
	rp, err := gw.ReadSysctl("net.ipv4.conf.lan.rp_filter")
	if err != nil || rp != "1" {
		t.Errorf("%s: lan rp_filter %q (%v), want 1", gw.Name, rp, err)
	}
	rp, err = topo.Host.ReadSysctl("net.ipv4.conf." + topo.hostIf(i) + ".rp_filter")
	if err != nil || rp != "2" {
		t.Errorf("host: %s rp_filter %q (%v), want 2", topo.hostIf(i), rp, err)
	}
	// LinkTun: a plain tun (no pi, no virtio-net header), so no TSO: the
	// kernel segments before the device, as before PPP. WireGuard:
	// wireguard-go's tun has the virtio-net header and takes TSO.
	wantHdr, wantTSO := "pi off vnet_hdr off", false
	if kind == LinkWireGuard {
		wantHdr, wantTSO = "pi off vnet_hdr on", true
	}
	for _, e := range []struct {
		ns     *NS
		ifname string
	}{{topo.Host, topo.hostIf(i)}, {gw, "lan"}} {
		out, err := e.ns.Run(nil, "ip", "-d", "link", "show", "dev", e.ifname)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(out, "tun type tun "+wantHdr) {
			t.Errorf("%s: %s: want tun type tun %s:\n%s", e.ns.Name, e.ifname, wantHdr, out)
		}
		v := &ethtoolValue{cmd: ethtoolGTSO}
		if err := ethtoolIoctl(e.ns, e.ifname, v); err != nil {
			t.Errorf("%s: %s: ETHTOOL_GTSO: %v", e.ns.Name, e.ifname, err)
		} else if (v.data != 0) != wantTSO {
			t.Errorf("%s: %s: TSO %v, want %v", e.ns.Name, e.ifname, v.data != 0, wantTSO)
		}
	}
}

// ethtoolGTSO is the legacy ETHTOOL_GTSO command (linux/ethtool.h).
const ethtoolGTSO = 0x0000001e

// checkDefaultRoute: the host's default route is through uplink 0, "dev"
// only for an L3 uplink.
func checkDefaultRoute(t *testing.T, topo *Topology) {
	t.Helper()
	out, err := topo.Host.Run(nil, "ip", "-4", "route", "show", "default")
	if err != nil {
		t.Fatal(err)
	}
	out = strings.TrimSpace(out)
	want := "default via " + topo.GW0Addr.String() + " dev " + topo.HostIf0
	if topo.UplinkKind(0) != LinkVeth {
		want = "default dev " + topo.HostIf0 + " scope link"
	}
	if out != want {
		t.Errorf("host default route %q, want %q", out, want)
	}
	out, err = topo.Host.Run(nil, "ip", "-4", "route", "get", topo.ServerAddr.String())
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "dev "+topo.HostIf0+" src "+topo.HostAddr0.String()) {
		t.Errorf("ip route get %s: %q, want dev %s src %s", topo.ServerAddr, strings.TrimSpace(out), topo.HostIf0, topo.HostAddr0)
	}
}

func checkUplinkTraffic(t *testing.T, topo *Topology, srv servers, i, mtu int) {
	t.Helper()
	src, gwAddr := topo.uplinkAddrs(i)
	what := fmt.Sprintf("uplink %d (%v, %s)", i, topo.UplinkKind(i), topo.hostIf(i))
	if err := pingFrom(topo, src, gwAddr, 2, 56, false); err != nil {
		t.Errorf("%s: ping gateway: %v", what, err)
	}
	if err := pingFrom(topo, src, topo.ServerAddr, 3, 56, false); err != nil {
		t.Errorf("%s: ping server from %s: %v", what, src, err)
	}
	// The whole MTU with DF reaches the server; one byte more does not
	// leave the host.
	if err := pingFrom(topo, src, topo.ServerAddr, 1, mtu-28, true); err != nil {
		t.Errorf("%s: ping with DF and %d-byte packets: %v", what, mtu, err)
	}
	if err := pingFrom(topo, src, topo.ServerAddr, 1, mtu-27, true); err == nil {
		t.Errorf("%s: a DF ping of %d bytes got through an MTU of %d", what, mtu+1, mtu)
	}

	srv.echo.Seen.Reset()
	for k := range 5 {
		if err := TCPEchoFrom(context.Background(), topo.Host, src, srv.echoAddr(), []byte(fmt.Sprintf("echo %d\n", k)), 3*time.Second); err != nil {
			t.Errorf("%s: TCP echo from %s: %v", what, src, err)
		}
	}
	requireOnly(t, what+" TCP echo", srv.echo.Seen.Counts(), src, 5)
	res := UDPExchangeFrom(context.Background(), topo.Host, src, srv.udpAddr(), 5, 1, time.Second)
	if res.Answered != 5 {
		t.Errorf("%s: UDP from %s: %d/5 answered:%s", what, src, res.Answered, firstErrs(res.Errors, 3))
	}

	const size = 4 << 20
	for _, op := range []byte{opUpload, opDownload} {
		d, err := bulkFrom(context.Background(), topo.Host, src, srv.bulkAddr(), op, size, uint64(100+i))
		if err != nil {
			t.Errorf("%s: %c %d MiB: %v", what, op, size>>20, err)
			continue
		}
		t.Logf("%s: %c %d MiB byte-exact in %v", what, op, size>>20, d.Round(time.Millisecond))
	}
}

// checkWrongSourceDropped sends datagrams from the other uplink's address
// through uplink i: gateway i drops them, and it is its rp_filter.
func checkWrongSourceDropped(t *testing.T, topo *Topology, srv servers, i int) {
	t.Helper()
	other, _ := topo.uplinkAddrs(1 - i)
	gw, _, _ := topo.gateway(i)
	sourceRoute(t, topo, other, srvHost, i, 110+i, 50)
	defer func() {
		rule := netlink.NewRule()
		rule.Src = &net.IPNet{IP: other.AsSlice(), Mask: net.CIDRMask(32, 32)}
		rule.Dst = &net.IPNet{IP: topo.ServerAddr.AsSlice(), Mask: net.CIDRMask(32, 32)}
		rule.Table, rule.Priority = 110+i, 50
		if err := topo.Host.Netlink().RuleDel(rule); err != nil {
			t.Errorf("delete rule: %v", err)
		}
	}()
	out, _ := topo.Host.Run(nil, "ip", "-4", "route", "get", topo.ServerAddr.String(), "from", other.String())
	if !strings.Contains(out, "dev "+topo.hostIf(i)) {
		t.Fatalf("route from %s to the server is not through %s: %s", other, topo.hostIf(i), out)
	}
	what := fmt.Sprintf("uplink %d (%v)", i, topo.UplinkKind(i))

	send := func(msg string, n int) int {
		srv.udp.Seen.Reset()
		if err := UDPSendFrom(topo.Host, other, srv.udpAddr(), []byte(msg), n); err != nil {
			t.Fatalf("send from %s: %v", other, err)
		}
		srv.udp.Seen.waitCount(other, time.Second)
		time.Sleep(200 * time.Millisecond)
		return srv.udp.Seen.Count(other)
	}
	if n := send("wrong source", 5); n != 0 {
		t.Errorf("%s: %d datagrams from %s reached the server through %s: its rp_filter does not drop wrong sources", what, n, other, gw.Name)
	}
	setRP := func(v string) {
		for _, k := range []string{"net.ipv4.conf.all.rp_filter", "net.ipv4.conf.lan.rp_filter"} {
			if err := gw.Sysctl(k, v); err != nil {
				t.Fatal(err)
			}
		}
	}
	setRP("0")
	n := send("wrong source, rp_filter off", 1)
	setRP("1")
	if n != 1 {
		t.Errorf("%s: with %s's rp_filter off the datagram from %s still did not arrive: something else drops it", what, gw.Name, other)
	}
	if n := send("wrong source again", 3); n != 0 {
		t.Errorf("%s: rp_filter restored but %d datagrams from %s arrived", what, n, other)
	}
	t.Logf("%s: datagrams from %s dropped by %s's rp_filter", what, other, gw.Name)
}

// checkCutL3: cut, the uplink carries nothing (both ends stay up); un-cut,
// traffic flows again; the other uplink is unaffected.
func checkCutL3(t *testing.T, topo *Topology, srv servers, i int) {
	t.Helper()
	src, gwAddr := topo.uplinkAddrs(i)
	otherSrc, _ := topo.uplinkAddrs(1 - i)
	gw, _, _ := topo.gateway(i)
	what := fmt.Sprintf("uplink %d (%v)", i, topo.UplinkKind(i))
	if err := topo.CutL3(i, true); err != nil {
		t.Fatalf("%s: CutL3: %v", what, err)
	}
	if err := topo.CutL3(i, true); err != nil {
		t.Errorf("%s: CutL3 twice: %v", what, err)
	}
	if err := TCPEchoFrom(context.Background(), topo.Host, src, srv.echoAddr(), []byte("cut\n"), time.Second); err == nil {
		t.Errorf("%s: TCP echo through a cut uplink succeeded", what)
	}
	if err := pingFrom(topo, src, gwAddr, 2, 56, false); err == nil {
		t.Errorf("%s: ping to the gateway through a cut uplink succeeded", what)
	}
	if err := TCPEchoFrom(context.Background(), topo.Host, otherSrc, srv.echoAddr(), []byte("other\n"), 3*time.Second); err != nil {
		t.Errorf("%s cut: the other uplink fails too: %v", what, err)
	}
	for _, e := range []struct {
		ns     *NS
		ifname string
	}{{topo.Host, topo.hostIf(i)}, {gw, "lan"}} {
		if err := linkUp(e.ns, e.ifname); err != nil {
			t.Errorf("%s cut: %v", what, err)
		}
	}
	u, _ := topo.l3Uplink(i)
	switch u.kind {
	case LinkTun:
		u.mu.Lock()
		dropped := u.pipe.dropped.Load()
		u.mu.Unlock()
		if dropped == 0 {
			t.Errorf("%s cut: the pipe dropped nothing", what)
		}
		t.Logf("%s cut: pipe dropped %d packets", what, dropped)
	case LinkWireGuard:
		out, err := NftOutput(gw, "list", "table", "ip", nftCutTable)
		var dropped int64
		f := strings.Fields(out)
		for k := 0; k+2 < len(f); k++ {
			if f[k] == "counter" && f[k+1] == "packets" {
				n, _ := strconv.ParseInt(f[k+2], 10, 64)
				dropped += n
			}
		}
		if err != nil || dropped == 0 {
			t.Errorf("%s cut: nothing dropped on the underlay (%v):\n%s", what, err, out)
		}
		t.Logf("%s cut: nft dropped %d packets on the underlay", what, dropped)
	}
	if err := topo.CutL3(i, false); err != nil {
		t.Fatalf("%s: un-cut: %v", what, err)
	}
	if err := topo.CutL3(i, false); err != nil {
		t.Errorf("%s: un-cut twice: %v", what, err)
	}
	d, err := echoWithin(topo, src, srv.echoAddr(), 15*time.Second)
	if err != nil {
		t.Errorf("%s: un-cut, TCP echo still fails after %v: %v", what, d.Round(time.Millisecond), err)
	} else {
		t.Logf("%s: CutL3 dropped everything, un-cut: echo again after %v", what, d.Round(time.Millisecond))
	}
	if topo.UplinkKind(1-i) == LinkVeth {
		if err := topo.CutL3(1-i, true); err == nil {
			t.Errorf("CutL3 on a veth uplink: no error")
		}
	}
}

// checkCutUpstream: CutUpstream/RestoreUpstream work the same on an L3
// uplink: the gateway still answers, nothing is forwarded.
func checkCutUpstream(t *testing.T, topo *Topology, srv servers, i int) {
	t.Helper()
	src, gwAddr := topo.uplinkAddrs(i)
	what := fmt.Sprintf("uplink %d (%v)", i, topo.UplinkKind(i))
	if err := topo.CutUpstream(i); err != nil {
		t.Fatal(err)
	}
	if err := TCPEchoFrom(context.Background(), topo.Host, src, srv.echoAddr(), []byte("upstream cut\n"), time.Second); err == nil {
		t.Errorf("%s: TCP echo with the upstream cut succeeded", what)
	}
	if err := pingFrom(topo, src, gwAddr, 1, 56, false); err != nil {
		t.Errorf("%s: upstream cut: the gateway does not answer a ping: %v", what, err)
	}
	if err := topo.RestoreUpstream(i); err != nil {
		t.Fatal(err)
	}
	if d, err := echoWithin(topo, src, srv.echoAddr(), 5*time.Second); err != nil {
		t.Errorf("%s: upstream restored, TCP echo still fails after %v: %v", what, d.Round(time.Millisecond), err)
	}
}

// checkRecreate: RecreateUplink gives a new ifindex, the same name, MTU,
// addresses (and default route for uplink 0), and traffic works again.
func checkRecreate(t *testing.T, topo *Topology, srv servers, i, mtu int) {
	t.Helper()
	src, _ := topo.uplinkAddrs(i)
	what := fmt.Sprintf("uplink %d (%v)", i, topo.UplinkKind(i))
	oldIdx, newIdx, err := topo.RecreateUplink(i)
	if err != nil {
		t.Fatalf("%s: RecreateUplink: %v", what, err)
	}
	if oldIdx == newIdx || newIdx == 0 {
		t.Errorf("%s: RecreateUplink: ifindex %d -> %d, want a new one", what, oldIdx, newIdx)
	}
	l, err := topo.Host.Netlink().LinkByName(topo.hostIf(i))
	if err != nil || l.Attrs().Index != newIdx {
		t.Fatalf("%s: %s after RecreateUplink: %v (want ifindex %d)", what, topo.hostIf(i), err, newIdx)
	}
	checkUplinkDevices(t, topo, i, mtu)
	sourceRoute(t, topo, src, netip.Prefix{}, i, 100+i, 100+i) // its table route went with the old device
	d, err := echoWithin(topo, src, srv.echoAddr(), 10*time.Second)
	if err != nil {
		t.Errorf("%s: re-created (ifindex %d -> %d), TCP echo still fails after %v: %v", what, oldIdx, newIdx, d.Round(time.Millisecond), err)
		return
	}
	if _, err := bulkFrom(context.Background(), topo.Host, src, srv.bulkAddr(), opUpload, 1<<20, 7); err != nil {
		t.Errorf("%s: re-created: upload: %v", what, err)
	}
	t.Logf("%s: re-created, ifindex %d -> %d, echo after %v", what, oldIdx, newIdx, d.Round(time.Millisecond))
}

// l3Goroutines returns the stacks of this process's goroutines that belong
// to wireguard-go or to a tun pipe.
func l3Goroutines() []string {
	buf := make([]byte, 8<<20)
	buf = buf[:runtime.Stack(buf, true)]
	var out []string
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, "golang.zx2c4.com/wireguard") || strings.Contains(g, "(*tunPipe).copy") {
			out = append(out, g)
		}
	}
	return out
}

// udpSockets lists `ss -unap` lines with this process's sockets on port,
// in ns (nil: the root namespace).
func udpSockets(t *testing.T, ns *NS, port int) []string {
	t.Helper()
	var out []byte
	var err error
	if ns == nil {
		out, err = exec.Command("ss", "-unap").CombinedOutput()
	} else {
		var s string
		s, err = ns.Run(nil, "ss", "-unap")
		out = []byte(s)
	}
	if err != nil {
		t.Fatalf("ss: %v: %s", err, out)
	}
	var lines []string
	for _, l := range strings.Split(string(out), "\n") {
		if strings.Contains(l, fmt.Sprintf(":%d ", port)) && strings.Contains(l, fmt.Sprintf("pid=%d,", os.Getpid())) {
			lines = append(lines, strings.Join(strings.Fields(l), " "))
		}
	}
	return lines
}

// TestL3LinkCleanup: WireGuard's UDP sockets are in the host's and the
// gateway's namespaces (none in the root namespace), also after the device
// went down and up again; Close stops every goroutine, closes every device
// and removes every namespace, leaving the root namespace as it was.
func TestL3LinkCleanup(t *testing.T) {
	requireRoot(t)
	if g := l3Goroutines(); len(g) > 0 {
		t.Fatalf("%d wireguard/tun goroutines before the test:\n%s", len(g), strings.Join(g, "\n\n"))
	}
	rootBefore := rootLinks(t)
	topo, err := NewTopology(Options{Uplinks: [2]LinkKind{LinkWireGuard, LinkTun}, Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	names := topo.Namespaces()
	closed := false
	defer func() {
		if !closed {
			topo.Close()
		}
	}()

	checkSockets := func(when string) {
		t.Helper()
		for _, c := range []struct {
			ns   *NS
			port int
		}{{topo.Host, wgPort}, {topo.GW0, wgPort}} {
			if l := udpSockets(t, c.ns, c.port); len(l) == 0 {
				t.Errorf("%s: no WireGuard UDP socket of ours on port %d in %s", when, c.port, c.ns.Name)
			} else {
				t.Logf("%s: %s: %s", when, c.ns.Name, strings.Join(l, " | "))
			}
		}
		if l := udpSockets(t, nil, wgPort); len(l) > 0 {
			t.Errorf("%s: WireGuard UDP sockets of ours in the root namespace: %v", when, l)
		}
	}
	checkSockets("created")
	if n, _, err := Ping(context.Background(), topo.Host, topo.ServerAddr, 2, time.Second); n != 2 {
		t.Errorf("ping server through wg0: %d/2 (%v)", n, err)
	}
	// Device down and up from this goroutine (in no particular namespace),
	// as wireguard-go's event goroutine does when it sees the tun go down
	// and up: the sockets close and open again, in the right namespace.
	u, err := topo.l3Uplink(0)
	if err != nil {
		t.Fatal(err)
	}
	u.mu.Lock()
	dev := u.hostWG.dev
	u.mu.Unlock()
	// wireguard-go asks the MTU from its event goroutine too.
	if m, err := u.hostWG.tun.MTU(); err != nil || m != DefaultWireGuardMTU {
		t.Errorf("wg0 MTU() from outside the namespace: %d, %v; want %d", m, err, DefaultWireGuardMTU)
	}
	if err := dev.Down(); err != nil {
		t.Fatal(err)
	}
	if l := udpSockets(t, topo.Host, wgPort); len(l) > 0 {
		t.Errorf("wg0 device down: sockets still open (%v): the reopen below proves nothing", l)
	}
	if err := dev.Up(); err != nil {
		t.Fatal(err)
	}
	checkSockets("device down and up")
	// The link down and up (wireguard-go on this kernel does not take its
	// device down for that: its tun status probe always sees "up").
	if err := SetLinkUp(topo.Host, "wg0", false); err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond)
	if err := SetLinkUp(topo.Host, "wg0", true); err != nil {
		t.Fatal(err)
	}
	if err := addDevRoute(topo.Host, "wg0", netip.Prefix{}); err != nil && !errors.Is(err, unix.EEXIST) { // went with the link
		t.Fatal(err)
	}
	checkSockets("link down and up")
	if n, _, err := Ping(context.Background(), topo.Host, topo.ServerAddr, 2, time.Second); n != 2 {
		t.Errorf("ping server through wg0 after down/up: %d/2 (%v)", n, err)
	}
	if g := l3Goroutines(); len(g) == 0 {
		t.Errorf("no wireguard/tun goroutines while the topology runs: the check below proves nothing")
	}

	closed = true
	if err := topo.Close(); err != nil {
		t.Errorf("close: %v", err)
	}
	var left []string
	for end := time.Now().Add(3 * time.Second); time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
		if left = l3Goroutines(); len(left) == 0 {
			break
		}
	}
	if len(left) > 0 {
		t.Errorf("%d wireguard/tun goroutines left after Close:\n%s", len(left), strings.Join(left, "\n\n"))
	}
	for _, n := range names {
		if _, err := os.Stat(filepath.Join("/run/netns", n.Name)); err == nil {
			t.Errorf("netns %s still exists", n.Name)
		}
	}
	if after := rootLinks(t); strings.Join(after, ",") != strings.Join(rootBefore, ",") {
		t.Errorf("root namespace links changed: before %v after %v", rootBefore, after)
	}
	if l := udpSockets(t, nil, wgPort); len(l) > 0 {
		t.Errorf("WireGuard UDP sockets of ours in the root namespace after Close: %v", l)
	}
}
