package integration

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// offGW0 is the gateway configuration of the tests below: gw0 off, so l2shim places every new
// flow on eth1, and the host's flows (routed via eth0, from eth0's address) leave NAT66ed to
// eth1's address.
var offGW0 = [2]string{"address6 = \"fe80::1\"\non = false", "address6 = \"fe80::1\""}

// TestIPv6PacketTooBig: path-MTU discovery works through a translated IPv6 uplink, both ways.
// eth1 has MTU 1400 and gw1 forwards to the server over a route locked at MTU 1300, while the
// host's own route (eth0) has 1500:
//   - TCP: l2shim clamps the MSS to eth1's 1400, and gw1 answers the host's 1400-byte
//     segments with a Packet Too Big (1300) addressed to eth1's address and quoting the NAT66ed
//     packet; only if l2shim translates it back (the quoted source to the host's address) does
//     the host lower its path MTU: without that the upload stalls in a black hole;
//   - UDP with "don't fragment" (IPv6 never fragments on the way): a 1450-byte datagram fits
//     the host's eth0 but not eth1: l2shim answers the host with its own Packet Too Big (1400),
//     so the socket learns the path MTU and the next send fails with EMSGSIZE.
func TestIPv6PacketTooBig(t *testing.T) {
	requireRoot(t)
	topo := newTopoWith(t, Options{IPv6: true})
	srv, err := topo.startServers6()
	if err != nil {
		t.Fatal(err)
	}
	ctSetMTU(t, topo.Host, topo.HostIf1, 1400)
	ctSetMTU(t, topo.GW1, "lan", 1400)
	// A locked route MTU is what the kernel checks when it forwards IPv6.
	mustRun(t, topo.GW1, "ip", "-6", "route", "replace", "default", "via", srvUp16.Addr().String(), "dev", "wan", "mtu", "lock", "1300")
	s := startShimCfg(t, topo, ConfigOptions{Mode: "load-balance", GatewayExtra: offGW0})
	waitSource6(t, s, 5*time.Second, "2001:db8:1::/64", "2001:db8:2::/64")

	const size = 32 << 20
	for _, up := range []bool{true, false} {
		what, f := "download", Download
		if up {
			what, f = "upload", Upload
		}
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		res, err := f(ctx, topo.Host, srv.bulkAddr(), size, 0x6130, From(topo.HostAddr6_1))
		cancel()
		if err != nil {
			t.Errorf("IPv6 %s of %d MiB through eth1 (MTU 1400, path 1300): %v (%d bytes in %v, server saw %s)", what, size>>20, err, res.Bytes, res.Elapsed.Round(time.Millisecond), res.Seen)
			continue
		}
		t.Logf("MEASURED IPv6 %s through eth1 (NAT66, MTU 1400, path 1300): %d MiB byte-exact in %v (%.2f Gbit/s)", what, size>>20, res.Elapsed.Round(time.Millisecond), res.Gbps())
	}
	route := mustRun(t, topo.Host, "ip", "-6", "route", "get", ServerAddr6.String(), "from", topo.HostAddr6_0.String())
	t.Logf("MEASURED the host's route to the server after the upload: %s", strings.TrimSpace(route))
	if !strings.Contains(route, "mtu 1300") {
		t.Errorf("the host's route to the server %q has no path MTU 1300: gw1's Packet Too Big did not reach the host translated", strings.TrimSpace(route))
	}

	// UDP: l2shim's own Packet Too Big for eth1's MTU.
	mtu, sendErr, err := udp6PathMTU(topo.Host, netip.AddrPortFrom(ServerAddr6, EchoPort), 1450)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("MEASURED a 1450-byte IPv6 datagram toward eth1 (MTU 1400): send %v, path MTU then %d", sendErr, mtu)
	if !errors.Is(sendErr, unix.EMSGSIZE) || mtu > 1400 {
		t.Errorf("oversized IPv6 datagram: socket got %v and path MTU %d, want EMSGSIZE and at most 1400 (a Packet Too Big from l2shim)", sendErr, mtu)
	}
	c, err := dialUDP(topo.Host, netip.AddrPortFrom(topo.HostAddr6_0, 0), srv.udpAddr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	small := bytes.Repeat([]byte("fits "), 1200/5)
	buf := make([]byte, 2048)
	answered := false
	for try := 0; try < 3 && !answered; try++ {
		if _, err := c.Write(small); err != nil {
			t.Fatalf("send %d bytes: %v", len(small), err)
		}
		c.SetReadDeadline(time.Now().Add(time.Second))
		n, err := c.Read(buf)
		answered = err == nil && bytes.Equal(buf[:n], small)
	}
	if !answered {
		t.Errorf("a %d-byte IPv6 datagram that fits eth1 was not echoed", len(small))
	}
	// The transfers ended within a second, between two reads of the kernel's counts: what the
	// kernel counted is read when their entries go, so the totals have them.
	tot := stopShim(t, s)
	fast := atoiAttr(tot, "fast_out") + atoiAttr(tot, "fast_in")
	slow := atoiAttr(tot, "frames_out") + atoiAttr(tot, "frames_in")
	t.Logf("MEASURED fast path: %d frames in the kernel, %d through user space", fast, slow)
	if fast < 20*max(slow, 1) {
		t.Errorf("the fast path counted %d frames and user space %d: the kernel's counts of short flows were lost, or it did not carry them", fast, slow)
	}
}

// udp6PathMTU sends datagrams of size bytes from the host's own choice of address to dst with
// "don't fragment" until a send fails (at most 5 tries, 300 ms apart: the first goes, l2shim's
// Packet Too Big lowers the path MTU, the next fails) and returns the socket's path MTU then.
func udp6PathMTU(ns *NS, dst netip.AddrPort, size int) (mtu int, sendErr, err error) {
	err = ns.Do(func() error {
		fd, err := unix.Socket(unix.AF_INET6, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		if err := unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_MTU_DISCOVER, unix.IPV6_PMTUDISC_DO); err != nil {
			return fmt.Errorf("IPV6_MTU_DISCOVER: %w", err)
		}
		if err := unix.Connect(fd, &unix.SockaddrInet6{Addr: dst.Addr().As16(), Port: int(dst.Port())}); err != nil {
			return fmt.Errorf("connect %s: %w", dst, err)
		}
		big := make([]byte, size)
		for try := 0; try < 5; try++ {
			if _, sendErr = unix.Write(fd, big); sendErr != nil {
				break
			}
			time.Sleep(300 * time.Millisecond)
		}
		mtu, _ = unix.GetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_MTU)
		return nil
	})
	return mtu, sendErr, err
}

// TestIPv6Renumber: eth1's ISP renumbers it (a new /64, the old one withdrawn, as SLAAC
// renumbering or a new DHCPv6-PD lease does) while the host has a UDP flow NAT66ed through it
// (in the kernel's fast path by then). Without a restart, l2shim translates the flow to the new
// address, and new connections leave from it.
func TestIPv6Renumber(t *testing.T) {
	requireRoot(t)
	topo := newTopoWith(t, Options{IPv6: true})
	srv, err := topo.startServers6()
	if err != nil {
		t.Fatal(err)
	}
	s := startShimCfg(t, topo, ConfigOptions{Mode: "load-balance", GatewayExtra: offGW0})
	waitSource6(t, s, 5*time.Second, "2001:db8:1::/64", "2001:db8:2::/64")
	c, err := dialUDP(topo.Host, netip.AddrPortFrom(topo.HostAddr6_0, 0), srv.udpAddr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if n := keepalives(c, 5); n != 5 {
		t.Fatalf("before renumbering %d/5 datagrams answered", n)
	}
	requireOnly(t, "the flow before renumbering", srv.udp.Seen.Counts(), topo.HostAddr6_1, srv.udp.Seen.Count(topo.HostAddr6_1))
	time.Sleep(1500 * time.Millisecond) // confirmed and counted: the kernel carries it now

	newAddr := netip.MustParseAddr("2001:db8:22::2")
	// The ISP's side: the new prefix on gw1's lan, routed to it by the server; the old one
	// forgotten (nothing from or to it passes gw1 any more). gw1's source filter knows only the
	// old prefix: it goes, the forgetting rule does its job.
	if err := topo.SourceFilter6(1, false); err != nil {
		t.Fatal(err)
	}
	mustRun(t, topo.GW1, "ip", "-6", "addr", "add", "2001:db8:22::1/64", "dev", "lan")
	mustRun(t, topo.Server, "ip", "-6", "route", "add", "2001:db8:22::/64", "via", gw1WAN6.Addr().String())
	// The host's side, as SLAAC does it: the new address comes, the old one goes.
	mustRun(t, topo.Host, "ip", "-6", "addr", "add", newAddr.String()+"/64", "dev", topo.HostIf1, "nodad")
	mustRun(t, topo.Host, "ip", "-6", "addr", "del", topo.HostAddr6_1.String()+"/64", "dev", topo.HostIf1)
	mustRun(t, topo.GW1, "nft", "add table ip6 renumber; add chain ip6 renumber forget { type filter hook forward priority -300; }; add rule ip6 renumber forget ip6 saddr 2001:db8:2::/64 drop; add rule ip6 renumber forget ip6 daddr 2001:db8:2::/64 drop")
	waitSource6(t, s, 5*time.Second, "2001:db8:1::/64", "2001:db8:22::/64")
	time.Sleep(500 * time.Millisecond)

	srv.udp.Seen.Reset()
	if n := keepalives(c, 10); n < 9 {
		t.Errorf("after renumbering %d/10 datagrams of the flow answered", n)
	}
	requireOnly(t, "the flow after renumbering", srv.udp.Seen.Counts(), newAddr, srv.udp.Seen.Count(newAddr))
	srv.echo.Seen.Reset()
	checkTimings(t, "new IPv6 connections after renumbering", TimedEchoes(context.Background(), topo.Host, netip.Addr{}, srv.echoAddr(), 10, 2, 2*time.Second), time.Second)
	requireOnly(t, "new connections after renumbering", srv.echo.Seen.Counts(), newAddr, 10)
	t.Logf("MEASURED after renumbering eth1: the flow's datagrams and 10 new connections from %v", newAddr)
	stopShim(t, s)
}

// TestIPv6L3Uplink: IPv6 through an uplink without Ethernet (a PPP-like tun). The host routes
// IPv6 via eth0 and l2shim places its flows on ppp1, NAT66ed to ppp1's address: 256 MiB each
// way byte-exact, carried by the kernel's fast path (which drops the Ethernet header toward
// ppp1 and pushes one back on the way in); and a socket bound to ppp1's address reaches the
// server through ppp1 untranslated (per-source routing to an L3 device).
func TestIPv6L3Uplink(t *testing.T) {
	requireRoot(t)
	topo := newTopoWith(t, Options{IPv6: true, Uplinks: [2]LinkKind{LinkVeth, LinkTun}})
	srv, err := topo.startServers6()
	if err != nil {
		t.Fatal(err)
	}
	s := startShimCfg(t, topo, ConfigOptions{Mode: "load-balance", GatewayExtra: [2]string{"address6 = \"fe80::1\"\non = false", ""}})
	waitSource6(t, s, 5*time.Second, "2001:db8:1::/64", "2001:db8:2::/64")
	const size = 256 << 20
	for i, up := range []bool{false, true} {
		what, f := "download", Download
		if up {
			what, f = "upload", Upload
		}
		ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
		res, err := f(ctx, topo.Host, srv.bulkAddr(), size, uint64(0x6140+i), From(topo.HostAddr6_1))
		cancel()
		if err != nil {
			t.Errorf("IPv6 %s of %d MiB through %s (NAT66): %v (%d bytes in %v, server saw %s)", what, size>>20, topo.HostIf1, err, res.Bytes, res.Elapsed.Round(time.Millisecond), res.Seen)
			continue
		}
		t.Logf("MEASURED IPv6 %s through %s (NAT66, no link-layer header): %d MiB byte-exact in %v (%.2f Gbit/s)", what, topo.HostIf1, size>>20, res.Elapsed.Round(time.Millisecond), res.Gbps())
	}
	srv.echo.Seen.Reset()
	checkTimings(t, "IPv6 connections from a socket bound to "+topo.HostIf1+"'s address", TimedEchoes(context.Background(), topo.Host, topo.HostAddr6_1, srv.echoAddr(), 10, 2, 2*time.Second), time.Second)
	requireOnly(t, "connections bound to "+topo.HostIf1+"'s address", srv.echo.Seen.Counts(), topo.HostAddr6_1, 10)
	tot := stopShim(t, s)
	fast := atoiAttr(tot, "fast_out") + atoiAttr(tot, "fast_in")
	slow := atoiAttr(tot, "frames_out") + atoiAttr(tot, "frames_in")
	t.Logf("MEASURED fast path: %d frames in the kernel, %d through user space; %d IPv6 packets sent by source", fast, slow, atoiAttr(tot, "ipv6_per_source"))
	if fast < 100*max(slow, 1) {
		t.Errorf("the fast path carried %d frames and user space %d: the IPv6 transfers through %s did not run in the kernel", fast, slow, topo.HostIf1)
	}
	if atoiAttr(tot, "ipv6_per_source") == 0 {
		t.Errorf("no IPv6 packet was sent by its source address: the bound socket's connections did not go through the per-source path")
	}
}
