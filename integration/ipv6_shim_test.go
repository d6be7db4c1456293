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
			checkTimings(t, "IPv6 TCP by the host's routing (eth0)", ts, time.Second)
			requireOnly(t, "IPv6 TCP by the host's routing", srvEcho.Seen.Counts(), topo.HostAddr6_0, 10)
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
