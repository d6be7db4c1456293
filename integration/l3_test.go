package integration

import (
	"context"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestL3Spread balances flows over uplinks without a link-layer header: Ethernet + tun
// (PPP-like), Ethernet + WireGuard, and two tun links; TCP, UDP and ICMP get through and both
// uplinks carry flows, the gateways of the L3 links configured by interface alone.
func TestL3Spread(t *testing.T) {
	requireRoot(t)
	for _, tc := range []struct {
		name    string
		uplinks [2]LinkKind
	}{
		{"eth+tun", [2]LinkKind{LinkVeth, LinkTun}},
		{"eth+wireguard", [2]LinkKind{LinkVeth, LinkWireGuard}},
		{"tun+tun", [2]LinkKind{LinkTun, LinkTun}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			topo := newTopoWith(t, Options{Uplinks: tc.uplinks})
			srv := startServers(t, topo)
			s := startShim(t, topo, "load-balance")
			ctx := context.Background()
			if n, _, err := Ping(ctx, topo.Host, topo.ServerAddr, 5, time.Second); n != 5 {
				t.Errorf("ICMP echo through l2shim: %d/5 replies (%v)", n, err)
			}
			ok, errs := TCPEchoMany(ctx, topo.Host, srv.echoAddr(), 200, 4, 3*time.Second)
			if ok != 200 {
				t.Errorf("TCP: %d/200 connections succeeded:%s", ok, firstErrs(errs, 10))
			}
			splitOK(t, "TCP", topo, srv.echo.Seen.Counts(), srv.echo.Seen.Total())
			res := UDPExchange(ctx, topo.Host, srv.udpAddr(), 100, 2, time.Second)
			if res.Answered != 100 {
				t.Errorf("UDP: %d/100 requests answered:%s", res.Answered, firstErrs(res.Errors, 10))
			}
			splitOK(t, "UDP", topo, srv.udp.Seen.Counts(), srv.udp.Seen.Total())
			st := s.status(t)
			for _, g := range st.Gateways {
				t.Logf("gateway %s on %s: state %s, %d flows placed, address %q, MAC %q", g.Name, g.Interface, g.State, g.Placed, g.Address, g.MAC)
			}
			stopShim(t, s)
		})
	}
}

// TestL3Bulk moves 1 GiB each way, byte-exact, through a NATed WireGuard uplink (MTU 1420,
// wireguard-go with GSO offloads) while the host sends on Ethernet (MTU 1500): the SYN's MSS
// is clamped to the tunnel's, and the transfers run in the kernel's fast path, which pushes
// and drops the Ethernet header between the two kinds of device.
func TestL3Bulk(t *testing.T) {
	topo := newTopoWith(t, Options{Uplinks: [2]LinkKind{LinkVeth, LinkWireGuard}})
	srv := startServers(t, topo)
	s := startShim(t, topo, "load-balance")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	c, err := DialUplink(ctx, topo.Host, srv.bulkAddr(), topo.HostAddr1, 40)
	cancel()
	if err != nil {
		t.Fatalf("connection through wg1: %v", err)
	}
	mss := tcpMaxSeg(t, c.Conn)
	c.Close()
	t.Logf("MEASURED MSS of a connection the host sent on eth0 (MTU 1500) and l2shim placed on wg1 (MTU 1420): %d", mss)
	if mss > 1420-40 {
		t.Errorf("MSS %d through wg1: the SYN was not clamped to the tunnel's MTU (want <= %d)", mss, 1420-40)
	}
	size := bulkSize()
	for i, up := range []bool{false, true} {
		what, f := "download", Download
		if up {
			what, f = "upload", Upload
		}
		ctx, cancel := context.WithTimeout(context.Background(), 180*time.Second)
		res, err := f(ctx, topo.Host, srv.bulkAddr(), size, uint64(2000+i), From(topo.HostAddr1))
		cancel()
		if err != nil {
			t.Errorf("%s of %d MiB through wg1 (NAT): %v (moved %d bytes, server saw %s)", what, size>>20, err, res.Bytes, res.Seen)
			continue
		}
		t.Logf("MEASURED %s through wg1 (NAT): %d MiB byte-exact in %v (%.2f Gbit/s)", what, size>>20, res.Elapsed.Round(time.Millisecond), res.Gbps())
	}
	tot := stopShim(t, s)
	fast := atoiAttr(tot, "fast_out") + atoiAttr(tot, "fast_in")
	slow := atoiAttr(tot, "frames_out") + atoiAttr(tot, "frames_in")
	t.Logf("MEASURED fast path: %d frames in the kernel, %d through user space", fast, slow)
	if fast < 100*max(slow, 1) || slow > 2000 {
		t.Errorf("the fast path carried %d frames and user space %d: the transfers did not run in the kernel", fast, slow)
	}
}

// tcpMaxSeg returns a connection's TCP_MAXSEG.
func tcpMaxSeg(t *testing.T, c net.Conn) int {
	t.Helper()
	tc, ok := c.(*net.TCPConn)
	if !ok {
		t.Fatalf("%T is no TCP connection", c)
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var mss int
	var serr error
	if err := rc.Control(func(fd uintptr) { mss, serr = unix.GetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_MAXSEG) }); err != nil {
		t.Fatal(err)
	}
	if serr != nil {
		t.Fatal(serr)
	}
	return mss
}

// TestL3Inbound: connections the server opens to the host's address on a tun uplink (ppp1)
// are answered through ppp1, and sockets bound to that address connect through it. Without
// l2shim the host answers through its default route (eth0), and gw0 drops the answers as
// spoofed.
func TestL3Inbound(t *testing.T) {
	topo := newTopoWith(t, Options{Uplinks: [2]LinkKind{LinkVeth, LinkTun}})
	echo, udp := hostServices(t, topo, topo.HostAddr1, EchoPort)
	ctx := context.Background()
	to := netip.AddrPortFrom(topo.HostAddr1, EchoPort)
	primeARP(t, topo)
	ts := TimedEchoes(ctx, topo.Server, topo.ServerAddr, to, 3, 3, 1500*time.Millisecond)
	if ok, _, _, _ := TimingStats(ts); ok != 0 {
		t.Fatalf("without l2shim %d/3 inbound connections to %s succeeded: the topology proves nothing", ok, to)
	}
	s := startShim(t, topo, "load-balance")
	echo.Seen.Reset()
	udp.Seen.Reset()
	ts = TimedEchoes(ctx, topo.Server, topo.ServerAddr, to, 40, 4, 3*time.Second)
	checkTimings(t, "inbound TCP to ppp1's address with l2shim", ts, time.Second)
	requireOnly(t, "inbound TCP (the host sees the client unchanged)", echo.Seen.Counts(), topo.ServerAddr, 40)
	if r := UDPExchangeFrom(ctx, topo.Server, topo.ServerAddr, to, 20, 1, time.Second); r.Answered != 20 {
		t.Errorf("inbound UDP with l2shim: %d/20 answered:%s", r.Answered, firstErrs(r.Errors, 5))
	}
	if n, _, err := Ping(ctx, topo.Server, topo.HostAddr1, 5, time.Second); n != 5 {
		t.Errorf("inbound ping to %s with l2shim: %d/5 answered (%v)", topo.HostAddr1, n, err)
	}
	// Per-source: a socket bound to ppp1's address, routed by the host through eth0, leaves
	// through ppp1 (gw0 would drop it).
	srvEcho, _ := echoServices(t, topo.Server, netip.AddrPortFrom(topo.ServerAddr, EchoPort+1))
	ts = TimedEchoes(ctx, topo.Host, topo.HostAddr1, netip.AddrPortFrom(topo.ServerAddr, EchoPort+1), 20, 2, 3*time.Second)
	checkTimings(t, "TCP from a socket bound to ppp1's address", ts, time.Second)
	requireOnly(t, "TCP from a socket bound to ppp1's address (untranslated)", srvEcho.Seen.Counts(), topo.HostAddr1, 20)
	stopShim(t, s)
}

// TestL3SilentCut cuts a tun uplink silently (the link stays up, nothing passes) while it is
// the gateway every new flow tries first: every new connection still succeeds, by rotation
// after unanswered SYNs (< 4.5 s) without probes, and at once (< 1 s) after probes declared
// the gateway down.
func TestL3SilentCut(t *testing.T) {
	requireRoot(t)
	for _, probing := range []bool{false, true} {
		name := "rotation"
		if probing {
			name = "probes"
		}
		t.Run(name, func(t *testing.T) {
			topo := newTopoWith(t, Options{Uplinks: [2]LinkKind{LinkTun, LinkVeth}})
			srv := startServers(t, topo)
			o := ConfigOptions{Mode: "failover", Extra: failoverTable(`syn_retries = 2`, `probe_interval = "0s"`, `min_attempts = 1000000`)}
			if probing {
				o.Extra = failoverTable(`syn_retries = 2`, `probe_interval = "200ms"`, `probe_misses = 2`, `min_attempts = 1000000`)
				o.GatewayExtra = [2]string{probeLine(topo.ServerAddr), probeLine(topo.ServerAddr)}
				// The L3 gateway with its peer's address too, which it pings besides the
				// target (such a gateway once crashed l2shim on its first probe round).
				o.PeerAddress = [2]bool{true, false}
			}
			s := startShimCfg(t, topo, o)
			ctx := context.Background()
			srv.echo.Seen.Reset()
			checkTimings(t, "before the cut", TimedEchoes(ctx, topo.Host, netip.Addr{}, srv.echoAddr(), 10, 2, 2*time.Second), time.Second)
			requireOnly(t, "before the cut (mode failover: ppp0)", srv.echo.Seen.Counts(), topo.HostAddr0, 10)
			if err := topo.CutL3(0, true); err != nil {
				t.Fatal(err)
			}
			limit := 4500 * time.Millisecond
			if probing {
				waitGatewayState(t, s, topo.HostIf0, "down", 3*time.Second)
				limit = time.Second
			}
			srv.echo.Seen.Reset()
			ts := TimedEchoes(ctx, topo.Host, netip.Addr{}, srv.echoAddr(), 10, 10, 8*time.Second)
			worst := checkTimings(t, "TCP through a silently cut ppp0", ts, limit)
			t.Logf("MEASURED worst new connection through a silently cut L3 uplink (%s): %v", name, worst.Round(time.Millisecond))
			requireOnly(t, "TCP after the cut (NAT to eth1's address)", srv.echo.Seen.Counts(), topo.HostAddr1, 10)
			if err := topo.CutL3(0, false); err != nil {
				t.Fatal(err)
			}
			stopShim(t, s)
		})
	}
}

// waitGatewayState waits until the gateway on interface iface has state want in status (one
// of them, for "up|degraded").
func waitGatewayState(t *testing.T, s *testShim, iface, want string, within time.Duration) {
	t.Helper()
	start := time.Now()
	for {
		st, err := s.queryStatus()
		if err == nil {
			for _, g := range st.Gateways {
				if g.Interface == iface && slices.Contains(strings.Split(want, "|"), g.State) {
					t.Logf("gateway on %s %s after %v", iface, want, time.Since(start).Round(time.Millisecond))
					return
				}
			}
		}
		if time.Since(start) > within {
			t.Fatalf("gateway on %s not %s within %v (status: %+v, %v)", iface, want, within, st, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestL3Recreate deletes the host's tun uplink and makes it again (a PPP redial): l2shim
// follows the new ifindex without a restart, and flows are placed on it again.
func TestL3Recreate(t *testing.T) {
	topo := newTopoWith(t, Options{Uplinks: [2]LinkKind{LinkVeth, LinkTun}})
	srv := startServers(t, topo)
	s := startShim(t, topo, "load-balance")
	spreadOK(t, "before ppp1 is re-created", topo, srv, 60, 2)
	oldIdx, newIdx, err := topo.RecreateUplink(1)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("ppp1 re-created: ifindex %d → %d", oldIdx, newIdx)
	waitGatewayState(t, s, topo.HostIf1, "up", 5*time.Second)
	waitFlowsOnUplink1(t, "after ppp1 was re-created", topo, srv)
	spreadOK(t, "after ppp1 was re-created", topo, srv, 60, 2)
	stopShim(t, s)
}

// waitFlowsOnUplink1 waits up to 5 s until a round of 40 connections all succeed and some
// of them reached the server through uplink 1.
func waitFlowsOnUplink1(t *testing.T, what string, topo *Topology, srv servers) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		srv.echo.Seen.Reset()
		ok, _ := TCPEchoMany(context.Background(), topo.Host, srv.echoAddr(), 40, 2, 2*time.Second)
		if ok == 40 && srv.echo.Seen.Count(topo.HostAddr1) > 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %d/40 connections, server saw %s", what, ok, srv.echo.Seen)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// TestL3FailOpen: with both uplinks tun devices, a killed l2shim (SIGKILL) and a hung one
// (SIGSTOP) leave the host routing as if l2shim had never run, within 2 s.
func TestL3FailOpen(t *testing.T) {
	topo := newTopoWith(t, Options{Uplinks: [2]LinkKind{LinkTun, LinkTun}})
	srv := startServers(t, topo)
	ctx := context.Background()
	for _, sig := range []syscall.Signal{syscall.SIGSTOP, syscall.SIGKILL} {
		s := startShim(t, topo, "load-balance")
		spreadOK(t, "before "+sig.String(), topo, srv, 40, 2)
		t0 := time.Now()
		if err := s.Signal(sig); err != nil {
			t.Fatal(err)
		}
		el, tries, err := FirstSuccess(ctx, topo.Host, srv.echoAddr(), t0, 150*time.Millisecond, 3*time.Second)
		if err != nil {
			t.Errorf("after %v: %v", sig, err)
		} else {
			t.Logf("MEASURED after %v: first new connection succeeded %v later (attempt %d)", sig, el.Round(time.Millisecond), tries)
			if el > 2*time.Second {
				t.Errorf("after %v: plain routing took %v, want <= 2s", sig, el)
			}
		}
		time.Sleep(1500 * time.Millisecond) // past the heartbeat for SIGSTOP
		plainRouting(t, "after "+sig.String(), topo, srv, 20)
		if sig == syscall.SIGSTOP {
			if err := s.Resume(); err != nil {
				t.Fatal(err)
			}
			stopShim(t, s)
		} else if err := s.Wait(10 * time.Second); err != nil {
			t.Fatal(err)
		}
	}
}

// TestL3CheckAndReload: `l2shim check` accepts a gateway that is a tun uplink alone and
// refuses a MAC on it; a reload that removes the L3 uplink's gateway sends every new flow to
// eth0, and one that adds it back while the device is gone is taken with the gateway down;
// when the device appears it is attached and flows spread over both.
func TestL3CheckAndReload(t *testing.T) {
	topo := newTopoWith(t, Options{Uplinks: [2]LinkKind{LinkVeth, LinkTun}})
	srv := startServers(t, topo)
	full := ConfigOptions{Mode: "load-balance"}
	if out, code := runShimCommand(t, topo, "check", topo.Config(full)); code != 0 {
		t.Fatalf("check of a config with `interface = \"ppp1\"` alone: exit %d:\n%s", code, out)
	}
	bad := full
	bad.GatewayExtra[1] = `mac = "02:00:00:00:00:09"`
	if out, code := runShimCommand(t, topo, "check", topo.Config(bad)); code == 0 || !strings.Contains(out, "ppp1 has no link-layer header, so its gateway has no MAC") {
		t.Errorf("check of a MAC on ppp1: exit %d, want an error naming the key:\n%s", code, out)
	}
	s := startShimCfg(t, topo, full)
	spreadOK(t, "before the reloads", topo, srv, 60, 2)
	b, err := os.ReadFile(s.ConfigPath)
	if err != nil {
		t.Fatal(err)
	}
	cfg := string(b)
	onlyEth0 := cfg[:strings.LastIndex(cfg, "\n[[gateway]]")] + "\n"
	reload := func(text string) {
		t.Helper()
		s.writeRaw(t, text)
		mark := s.LogMark()
		if out, errOut, code := s.cli(t, "reload"); code != 0 {
			t.Fatalf("reload: exit %d: %s%s", code, out, errOut)
		}
		if _, _, err := s.WaitLog(mark, 2*time.Second, "reloaded"); err != nil {
			t.Fatal(err)
		}
	}
	reload(onlyEth0)
	srv.echo.Seen.Reset()
	ok, errs := TCPEchoMany(context.Background(), topo.Host, srv.echoAddr(), 40, 2, 2*time.Second)
	if ok != 40 {
		t.Errorf("after removing ppp1's gateway: %d/40:%s", ok, firstErrs(errs, 5))
	}
	requireOnly(t, "after removing ppp1's gateway", srv.echo.Seen.Counts(), topo.HostAddr0, ok)
	// Its gateway comes back while the line is down: the reload is taken, the gateway stays
	// down until ppp1 appears.
	if _, err := topo.RemoveUplink(1); err != nil {
		t.Fatal(err)
	}
	reload(cfg)
	waitGatewayState(t, s, topo.HostIf1, "down", 5*time.Second)
	srv.echo.Seen.Reset()
	ok, errs = TCPEchoMany(context.Background(), topo.Host, srv.echoAddr(), 40, 2, 2*time.Second)
	if ok != 40 {
		t.Errorf("with ppp1's gateway back but ppp1 absent: %d/40:%s", ok, firstErrs(errs, 5))
	}
	requireOnly(t, "with ppp1's gateway back but ppp1 absent", srv.echo.Seen.Counts(), topo.HostAddr0, ok)
	if _, err := topo.RestoreUplink(1); err != nil {
		t.Fatal(err)
	}
	waitGatewayState(t, s, topo.HostIf1, "up", 5*time.Second)
	spreadOK(t, "after adding ppp1's gateway back and ppp1 appearing", topo, srv, 60, 2)
	stopShim(t, s)
}

// TestL3WireGuardPeerSilent: a WireGuard uplink whose peer goes silent (the tunnel's underlay
// drops everything; the link stays up) is taken down by l2shim's peer watch without any probe
// configured, once traffic went unanswered for probe_interval × probe_misses + 10 s; new
// connections then take the other uplink at once. When the peer is back, the gateway is given
// flows again and they are answered.
func TestL3WireGuardPeerSilent(t *testing.T) {
	topo := newTopoWith(t, Options{Uplinks: [2]LinkKind{LinkVeth, LinkWireGuard}})
	srv := startServers(t, topo)
	s := startShimCfg(t, topo, ConfigOptions{
		Mode:         "load-balance",
		GatewayExtra: [2]string{"weight = 1", "weight = 1000"},
		Extra:        failoverTable(`syn_retries = 2`, `probe_interval = "0s"`, `min_attempts = 1000000`),
	})
	ctx := context.Background()
	srv.echo.Seen.Reset()
	checkTimings(t, "before the cut", TimedEchoes(ctx, topo.Host, netip.Addr{}, srv.echoAddr(), 10, 2, 2*time.Second), time.Second)
	if srv.echo.Seen.Count(topo.HostAddr1) < 8 {
		t.Fatalf("before the cut: server saw %s; want nearly all through wg1 (weight 1000)", srv.echo.Seen)
	}
	if err := topo.CutL3(1, true); err != nil {
		t.Fatal(err)
	}
	cut := time.Now()
	// Connections keep coming (each rotates to eth0 after two unanswered SYNs through wg1)
	// until the peer watch takes wg1 down.
	var down time.Duration
	for time.Since(cut) < 30*time.Second {
		TimedEchoes(ctx, topo.Host, netip.Addr{}, srv.echoAddr(), 2, 2, 5*time.Second)
		st, err := s.queryStatus()
		if err == nil && st.Gateways[1].State == "down" {
			down = time.Since(cut)
			t.Logf("MEASURED wg1 down %v after its peer went silent: %s", down.Round(100*time.Millisecond), st.Gateways[1].Reason)
			if !strings.Contains(st.Gateways[1].Reason, "peer silent") {
				t.Errorf("wg1 down for another reason: %q", st.Gateways[1].Reason)
			}
			break
		}
	}
	if down == 0 {
		t.Fatalf("wg1 not down 30 s after its peer went silent")
	}
	srv.echo.Seen.Reset()
	checkTimings(t, "new connections with wg1 down", TimedEchoes(ctx, topo.Host, netip.Addr{}, srv.echoAddr(), 10, 2, 3*time.Second), time.Second)
	requireOnly(t, "new connections with wg1 down", srv.echo.Seen.Counts(), topo.HostAddr0, 10)
	if err := topo.CutL3(1, false); err != nil {
		t.Fatal(err)
	}
	back := time.Now()
	waitGatewayState(t, s, topo.HostIf1, "up|degraded", 40*time.Second)
	t.Logf("wg1 given flows again %v after its peer came back", time.Since(back).Round(100*time.Millisecond))
	deadline := time.Now().Add(20 * time.Second)
	for {
		srv.echo.Seen.Reset()
		TimedEchoes(ctx, topo.Host, netip.Addr{}, srv.echoAddr(), 10, 2, 5*time.Second)
		if srv.echo.Seen.Count(topo.HostAddr1) >= 5 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("wg1 back up, but new connections do not go through it: server saw %s", srv.echo.Seen)
		}
	}
	stopShim(t, s)
}

// TestUplinkAbsentAtStart: an uplink missing when l2shim starts (a USB modem not plugged in,
// a PPP session not up yet) does not stop the start: l2shim runs with that gateway down and
// every connection leaves through the other; once the interface appears it is attached without
// a restart and takes flows (an Ethernet one's gateway once it answers ARP).
func TestUplinkAbsentAtStart(t *testing.T) {
	for _, kind := range []LinkKind{LinkVeth, LinkTun} {
		t.Run(kind.String(), func(t *testing.T) {
			topo := newTopoWith(t, Options{Uplinks: [2]LinkKind{LinkVeth, kind}})
			srv := startServers(t, topo)
			if _, err := topo.RemoveUplink(1); err != nil {
				t.Fatal(err)
			}
			s := startShim(t, topo, "load-balance")
			waitGatewayState(t, s, topo.HostIf1, "down", 5*time.Second)
			srv.echo.Seen.Reset()
			if ok, err := TCPEchoMany(context.Background(), topo.Host, srv.echoAddr(), 40, 2, 2*time.Second); ok != 40 || srv.echo.Seen.Count(topo.HostAddr1) != 0 {
				t.Fatalf("with %s absent: %d/40 connections (%v), server saw %s; want all through eth0", topo.HostIf1, ok, err, srv.echo.Seen)
			}
			idx, err := topo.RestoreUplink(1)
			if err != nil {
				t.Fatal(err)
			}
			t0 := time.Now()
			waitGatewayState(t, s, topo.HostIf1, "up", 5*time.Second)
			t.Logf("MEASURED %s appeared (ifindex %d): its gateway up after %v", topo.HostIf1, idx, time.Since(t0).Round(10*time.Millisecond))
			waitFlowsOnUplink1(t, "after "+topo.HostIf1+" appeared", topo, srv)
			spreadOK(t, "after the absent uplink appeared", topo, srv, 60, 2)
			stopShim(t, s)
		})
	}
}
