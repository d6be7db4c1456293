package integration

import (
	"context"
	"net/netip"
	"testing"
	"time"
)

// waitSource6 waits until status shows every prefix in want steered.
func waitSource6(t *testing.T, s *testShim, within time.Duration, want ...string) {
	t.Helper()
	start := time.Now()
	for {
		st, err := s.queryStatus()
		if err == nil {
			steered := map[string]bool{}
			for _, p := range st.Source6 {
				if p.Active {
					steered[p.Prefix] = true
				}
			}
			all := true
			for _, w := range want {
				all = all && steered[w]
			}
			if all {
				t.Logf("IPv6 prefixes steered after %v: %+v", time.Since(start).Round(time.Millisecond), st.Source6)
				return
			}
		}
		if time.Since(start) > within {
			t.Fatalf("IPv6 prefixes %v not all steered within %v (status %+v, %v)", want, within, st, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestIPv6PerSource: on a dual-stack host whose IPv6 default route leads through eth0, the
// server connects (TCP, UDP, ping) to the host's address on eth1, and the host connects from
// a socket bound to it. Without l2shim gw0 drops every answer (its ISP's source check); with
// l2shim the kernel sends each one through eth1's router, untranslated. The router of eth1
// comes from address6, or, with none, from the default route router advertisements install;
// a prefix added to eth1 later is steered within a few seconds.
func TestIPv6PerSource(t *testing.T) {
	requireRoot(t)
	for _, learned := range []bool{false, true} {
		name := "address6"
		if learned {
			name = "learned"
		}
		t.Run(name, func(t *testing.T) {
			topo := newTopoWith(t, Options{IPv6: true})
			echo, udp := hostServices(t, topo, topo.HostAddr6_1, EchoPort)
			srvEcho, _ := echoServices(t, topo.Server, netip.AddrPortFrom(topo.ServerAddr6, EchoPort))
			ctx := context.Background()
			to := netip.AddrPortFrom(topo.HostAddr6_1, EchoPort)
			ts := TimedEchoes(ctx, topo.Server, topo.ServerAddr6, to, 2, 2, 1500*time.Millisecond)
			if ok, _, _, _ := TimingStats(ts); ok != 0 {
				t.Fatalf("without l2shim %d/2 inbound IPv6 connections to %s succeeded: the topology proves nothing", ok, to)
			}
			o := ConfigOptions{Mode: "load-balance"}
			if learned {
				if err := topo.AddDefaultRoute6(1, 2048); err != nil {
					t.Fatal(err)
				}
			} else {
				o.GatewayExtra = [2]string{`address6 = "fe80::1"`, `address6 = "fe80::1"`}
			}
			s := startShimCfg(t, topo, o)
			waitSource6(t, s, 5*time.Second, "2001:db8:1::/64", "2001:db8:2::/64")
			before, err := topo.SourceDrops6(0)
			if err != nil {
				t.Fatal(err)
			}
			echo.Seen.Reset()
			ts = TimedEchoes(ctx, topo.Server, topo.ServerAddr6, to, 30, 3, 3*time.Second)
			checkTimings(t, "inbound IPv6 TCP to eth1's address with l2shim", ts, time.Second)
			requireOnly(t, "inbound IPv6 TCP (untranslated)", echo.Seen.Counts(), topo.ServerAddr6, 30)
			if r := UDPExchangeFrom(ctx, topo.Server, topo.ServerAddr6, to, 20, 1, time.Second); r.Answered != 20 {
				t.Errorf("inbound IPv6 UDP with l2shim: %d/20 answered:%s", r.Answered, firstErrs(r.Errors, 5))
			}
			_ = udp
			if n, _, err := Ping(ctx, topo.Server, topo.HostAddr6_1, 5, time.Second); n != 5 {
				t.Errorf("inbound ping6 to %s with l2shim: %d/5 answered (%v)", topo.HostAddr6_1, n, err)
			}
			srvEcho.Seen.Reset()
			ts = TimedEchoes(ctx, topo.Host, topo.HostAddr6_1, netip.AddrPortFrom(topo.ServerAddr6, EchoPort), 20, 2, 3*time.Second)
			checkTimings(t, "IPv6 TCP from a socket bound to eth1's address", ts, time.Second)
			requireOnly(t, "IPv6 TCP from a bound socket", srvEcho.Seen.Counts(), topo.HostAddr6_1, 20)
			srvEcho.Seen.Reset()
			ts = TimedEchoes(ctx, topo.Host, netip.Addr{}, netip.AddrPortFrom(topo.ServerAddr6, EchoPort), 10, 2, 3*time.Second)
			checkTimings(t, "IPv6 TCP from unbound sockets (balanced, NAT66 on eth1)", ts, time.Second)
			if after, _ := topo.SourceDrops6(0); after != before {
				t.Errorf("gw0 dropped %d IPv6 packets from the wrong prefix while l2shim ran", after-before)
			}

			// Renumbering: a new prefix on eth1, routed to it by the server and gw1.
			renum := netip.MustParseAddr("2001:db8:22::2")
			if err := topo.SourceFilter6(1, false); err != nil {
				t.Fatal(err)
			}
			mustRun(t, topo.Host, "ip", "-6", "addr", "add", renum.String()+"/64", "dev", topo.HostIf1, "nodad")
			mustRun(t, topo.Server, "ip", "-6", "route", "add", "2001:db8:22::/64", "via", "2001:db8:f1::1")
			mustRun(t, topo.GW1, "ip", "-6", "route", "add", "2001:db8:22::/64", "dev", "lan")
			waitSource6(t, s, 5*time.Second, "2001:db8:22::/64")
			srvEcho.Seen.Reset()
			ts = TimedEchoes(ctx, topo.Host, renum, netip.AddrPortFrom(topo.ServerAddr6, EchoPort), 10, 2, 3*time.Second)
			checkTimings(t, "IPv6 TCP from the renumbered prefix", ts, time.Second)
			requireOnly(t, "IPv6 TCP from the renumbered prefix", srvEcho.Seen.Counts(), renum, 10)
			tot := stopShimTotals(t, s)
			t.Logf("MEASURED IPv6 packets sent by source in the kernel: %s", tot["ipv6_per_source"])
			if atoiAttr(tot, "ipv6_per_source") == 0 {
				t.Errorf("totals: ipv6_per_source=%q, want > 0", tot["ipv6_per_source"])
			}
		})
	}
}

// TestIPv6Balance: on the dual-stack topology, the host's new IPv6 connections (its routing:
// everything through eth0) are spread over both uplinks; those placed on eth1 leave with eth1's
// own address (NAT66), so gw1's source check lets them through, and the answers come back to
// the host as it expects. TCP, UDP and ping6.
func TestIPv6Balance(t *testing.T) {
	topo := newTopoWith(t, Options{IPv6: true})
	srvEcho, srvUDP := echoServices(t, topo.Server, netip.AddrPortFrom(topo.ServerAddr6, EchoPort))
	s := startShimCfg(t, topo, ConfigOptions{Mode: "load-balance", GatewayExtra: [2]string{`address6 = "fe80::1"`, `address6 = "fe80::1"`}})
	waitSource6(t, s, 5*time.Second, "2001:db8:1::/64", "2001:db8:2::/64")
	ctx := context.Background()
	if n, _, err := Ping(ctx, topo.Host, topo.ServerAddr6, 5, time.Second); n != 5 {
		t.Errorf("ping6 through l2shim: %d/5 replies (%v)", n, err)
	}
	ts := TimedEchoes(ctx, topo.Host, netip.Addr{}, netip.AddrPortFrom(topo.ServerAddr6, EchoPort), 100, 4, 3*time.Second)
	checkTimings(t, "IPv6 TCP through l2shim", ts, time.Second)
	counts := srvEcho.Seen.Counts()
	t.Logf("MEASURED IPv6 TCP: server saw %s", FormatCounts(counts))
	if counts[topo.HostAddr6_0] < 25 || counts[topo.HostAddr6_1] < 25 || counts[topo.HostAddr6_0]+counts[topo.HostAddr6_1] != 100 {
		t.Errorf("IPv6 TCP: 100 connections split %s; want both uplinks used", FormatCounts(counts))
	}
	r := UDPExchangeFrom(ctx, topo.Host, netip.Addr{}, netip.AddrPortFrom(topo.ServerAddr6, EchoPort), 60, 1, time.Second)
	if r.Answered != 60 {
		t.Errorf("IPv6 UDP: %d/60 answered:%s", r.Answered, firstErrs(r.Errors, 5))
	}
	uc := srvUDP.Seen.Counts()
	t.Logf("MEASURED IPv6 UDP: server saw %s", FormatCounts(uc))
	if uc[topo.HostAddr6_0] == 0 || uc[topo.HostAddr6_1] == 0 {
		t.Errorf("IPv6 UDP: split %s; want both uplinks used", FormatCounts(uc))
	}
	if drops, _ := topo.SourceDrops6(1); drops != 0 {
		t.Errorf("gw1 dropped %d IPv6 packets with a source outside its prefix: NAT66 missed some", drops)
	}
	// Status shows each gateway's IPv6 state and router beside its IPv4 one.
	for _, g := range s.status(t).Gateways {
		if g.State6 != "up" || g.MAC6 == "" {
			t.Errorf("status of %s: IPv6 state %q (%q), router MAC %q; want up with the router's MAC", g.Name, g.State6, g.Reason6, g.MAC6)
		}
	}
	tot := stopShimTotals(t, s)
	t.Logf("totals: nated=%s flows_created=%s", tot["nated"], tot["flows_created"])
}

// TestIPv6SilentCut: gw0's upstream (IPv4 and IPv6) is cut silently while every new flow tries
// gw0 first: every new IPv6 connection still succeeds, moved to eth1 with NAT66 after two
// unanswered SYNs (< 4.5 s) without probes, and at once (< 1 s) once probes declared gw0 down.
func TestIPv6SilentCut(t *testing.T) {
	requireRoot(t)
	for _, probing := range []bool{false, true} {
		name := "rotation"
		if probing {
			name = "probes"
		}
		t.Run(name, func(t *testing.T) {
			topo := newTopoWith(t, Options{IPv6: true})
			srvEcho, _ := echoServices(t, topo.Server, netip.AddrPortFrom(topo.ServerAddr6, EchoPort))
			o := ConfigOptions{Mode: "failover", Extra: failoverTable(`syn_retries = 2`, `probe_interval = "0s"`, `min_attempts = 1000000`),
				GatewayExtra: [2]string{`address6 = "fe80::1"`, `address6 = "fe80::1"`}}
			if probing {
				o.Extra = failoverTable(`syn_retries = 2`, `probe_interval = "200ms"`, `probe_misses = 2`, `min_attempts = 1000000`)
				o.GatewayExtra = [2]string{`address6 = "fe80::1"` + "\n" + probeLine(topo.ServerAddr), `address6 = "fe80::1"` + "\n" + probeLine(topo.ServerAddr)}
			}
			s := startShimCfg(t, topo, o)
			waitSource6(t, s, 5*time.Second, "2001:db8:1::/64", "2001:db8:2::/64")
			ctx := context.Background()
			to := netip.AddrPortFrom(topo.ServerAddr6, EchoPort)
			srvEcho.Seen.Reset()
			checkTimings(t, "IPv6 before the cut", TimedEchoes(ctx, topo.Host, netip.Addr{}, to, 10, 2, 2*time.Second), time.Second)
			requireOnly(t, "IPv6 before the cut (mode failover: gw0)", srvEcho.Seen.Counts(), topo.HostAddr6_0, 10)
			if err := topo.CutUpstream(0); err != nil {
				t.Fatal(err)
			}
			limit := 4500 * time.Millisecond
			if probing {
				waitGatewayState(t, s, topo.HostIf0, "down", 3*time.Second)
				limit = time.Second
			}
			srvEcho.Seen.Reset()
			ts := TimedEchoes(ctx, topo.Host, netip.Addr{}, to, 10, 10, 8*time.Second)
			worst := checkTimings(t, "IPv6 TCP through a silently dead gw0", ts, limit)
			t.Logf("MEASURED worst new IPv6 connection through a silently dead gw0 (%s): %v", name, worst.Round(time.Millisecond))
			requireOnly(t, "IPv6 TCP after the cut (NAT66 to eth1's address)", srvEcho.Seen.Counts(), topo.HostAddr6_1, 10)
			stopShim(t, s)
		})
	}
}

// TestIPv6Bulk moves 1 GiB each way, byte-exact, over a NATed IPv6 path (eth1, NAT66), with
// veth defaults and with GRO on the host's uplinks: once the handshake is done the kernel's
// fast path carries the frames, GSO and GRO super-frames included, and user space sees few.
func TestIPv6Bulk(t *testing.T) {
	requireRoot(t)
	for _, gro := range []bool{false, true} {
		name := "veth-defaults"
		if gro {
			name = "gro-on"
		}
		t.Run(name, func(t *testing.T) {
			topo := newTopoWith(t, Options{IPv6: true})
			if gro {
				for _, ifn := range []string{topo.HostIf0, topo.HostIf1} {
					if err := SetGRO(topo.Host, ifn, true); err != nil {
						t.Fatal(err)
					}
				}
			}
			srv, err := topo.startServers6()
			if err != nil {
				t.Fatal(err)
			}
			s := startShimCfg(t, topo, ConfigOptions{Mode: "load-balance", GatewayExtra: [2]string{`address6 = "fe80::1"`, `address6 = "fe80::1"`}})
			waitSource6(t, s, 5*time.Second, "2001:db8:1::/64", "2001:db8:2::/64")
			size := bulkSize()
			for i, up := range []bool{false, true} {
				what, f := "download", Download
				if up {
					what, f = "upload", Upload
				}
				ctx, cancel := context.WithTimeout(context.Background(), 180*time.Second)
				res, err := f(ctx, topo.Host, srv.bulkAddr(), size, uint64(3000+i), From(topo.HostAddr6_1))
				cancel()
				if err != nil {
					t.Errorf("IPv6 %s of %d MiB via eth1 (NAT66): %v (moved %d bytes, server saw %s)", what, size>>20, err, res.Bytes, res.Seen)
					continue
				}
				t.Logf("MEASURED IPv6 %s via eth1 (NAT66, %s): %d MiB byte-exact in %v (%.2f Gbit/s)", what, name, size>>20, res.Elapsed.Round(time.Millisecond), res.Gbps())
			}
			tot := stopShim(t, s)
			fast := atoiAttr(tot, "fast_out") + atoiAttr(tot, "fast_in")
			slow := atoiAttr(tot, "frames_out") + atoiAttr(tot, "frames_in")
			t.Logf("MEASURED fast path (%s): %d frames in the kernel, %d through user space", name, fast, slow)
			if fast < 100*max(slow, 1) || slow > 2000 {
				t.Errorf("the fast path carried %d frames and user space %d: the IPv6 transfers did not run in the kernel", fast, slow)
			}
		})
	}
}
