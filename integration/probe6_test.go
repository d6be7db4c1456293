package integration

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/l2shim/l2shim/control"
)

// waitGateway6 polls the status every 50 ms until the gateway on iface satisfies ok, and
// returns its row and how long that took; it fails the test after within.
func waitGateway6(t *testing.T, s *testShim, iface, what string, within time.Duration, ok func(g control.GatewayStatus) bool) (control.GatewayStatus, time.Duration) {
	t.Helper()
	start := time.Now()
	for {
		st, err := s.queryStatus()
		if err == nil {
			for _, g := range st.Gateways {
				if g.Interface == iface && ok(g) {
					return g, time.Since(start)
				}
			}
		}
		if time.Since(start) > within {
			var rows []string
			if st != nil {
				for _, g := range st.Gateways {
					rows = append(rows, fmt.Sprintf("%s: IPv4 %s (%s) rtt %.1fms, IPv6 %s (%s) rtt %.1fms", g.Interface, g.State, g.Reason, g.RTTMillis, g.State6, g.Reason6, g.RTT6Millis))
				}
			}
			t.Fatalf("gateway on %s not %s within %v: %s %v", iface, what, within, strings.Join(rows, "; "), err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestProbe6FamilyLoss: health per address family. Both gateways probe an IPv4 and an IPv6
// target behind them (every 200 ms, 3 misses). gw0 then loses IPv6 only (its IPv6 default
// route becomes a blackhole; IPv4 forwarding and its answers to neighbour solicitations go on):
// within probe_interval × probe_misses + 1 s the status shows gw0 IPv4 up and IPv6 down, with
// the IPv6 round-trip times of both gateways shown before; gw0's open IPv6 TCP connection is
// reset and its IPv6 UDP flow moves to eth1 (NAT66), while its open IPv4 connection keeps
// working; new IPv6 connections all go via eth1, new IPv4 connections still use both uplinks.
// When gw0's IPv6 comes back, probes bring it up again. Last, gw0 stops answering neighbour
// solicitations while IPv6 still flows: IPv6 degraded (the solicitation does not vote when there
// are IPv6 targets), up again once it answers.
func TestProbe6FamilyLoss(t *testing.T) {
	topo := newTopoWith(t, Options{IPv6: true})
	srv4 := startServers(t, topo)
	srv6, err := topo.startServers6()
	if err != nil {
		t.Fatal(err)
	}
	const interval, misses = 200 * time.Millisecond, 3
	gw := `address6 = "fe80::1"` + "\n" + fmt.Sprintf("probe = [%q, %q]", topo.ServerAddr, topo.ServerAddr6)
	s := startShimCfg(t, topo, ConfigOptions{Mode: "load-balance",
		Extra:        failoverTable(`probe_interval = "200ms"`, fmt.Sprintf("probe_misses = %d", misses), `min_attempts = 1000000`),
		GatewayExtra: [2]string{gw, gw}})
	waitSource6(t, s, 5*time.Second, "2001:db8:1::/64", "2001:db8:2::/64")
	bothUp := func(g control.GatewayStatus) bool {
		return g.State == "up" && g.State6 == "up" && g.RTTMillis > 0 && g.RTT6Millis > 0
	}
	for _, ifn := range []string{topo.HostIf0, topo.HostIf1} {
		g, took := waitGateway6(t, s, ifn, "up for both families with probe round trips", 5*time.Second, bothUp)
		t.Logf("MEASURED %s: IPv4 up (rtt %.2fms), IPv6 up (rtt %.2fms, router %s) %v after start", ifn, g.RTTMillis, g.RTT6Millis, g.MAC6, took.Round(time.Millisecond))
	}

	// Open flows through gw0 before the loss.
	ctx := context.Background()
	tcp6, err := DialUplink(ctx, topo.Host, srv6.bulkAddr(), topo.HostAddr6_0, 32)
	if err != nil {
		t.Fatalf("IPv6 TCP connection through gw0: %v", err)
	}
	defer tcp6.Close()
	tcp4, err := DialUplink(ctx, topo.Host, srv4.bulkAddr(), topo.HostAddr0, 32)
	if err != nil {
		t.Fatalf("IPv4 TCP connection through gw0: %v", err)
	}
	defer tcp4.Close()
	udp6, _, err := DialUDPPath(topo.Host, srv6.udpAddr(), From(topo.HostAddr6_0), 32)
	if err != nil {
		t.Fatalf("IPv6 UDP flow through gw0: %v", err)
	}
	defer udp6.Close()
	type readEnd struct {
		at  time.Time
		err error
	}
	tcp6End := make(chan readEnd, 1)
	go func() {
		tcp6.SetReadDeadline(time.Now().Add(30 * time.Second))
		var b [1]byte
		_, err := tcp6.Read(b[:])
		tcp6End <- readEnd{time.Now(), err}
	}()

	// gw0 loses IPv6 only.
	mark := s.LogMark()
	if err := topo.cutUpstream6(0, true); err != nil {
		t.Fatal(err)
	}
	cut := time.Now()
	limit := interval*misses + time.Second
	g0, detect := waitGateway6(t, s, topo.HostIf0, "IPv6 down", limit, func(g control.GatewayStatus) bool { return g.State6 == "down" })
	t.Logf("MEASURED IPv6-only loss on gw0: status IPv6 down %v after the cut (limit %v): IPv4 %s, IPv6 %s: %s",
		detect.Round(time.Millisecond), limit, g0.State, g0.State6, g0.Reason6)
	if g0.State != "up" {
		t.Errorf("gw0 after losing only IPv6: IPv4 state %q (%s), want up", g0.State, g0.Reason)
	}
	if !strings.Contains(g0.Reason6, "IPv6 target") {
		t.Errorf("gw0 IPv6 reason %q, want the IPv6 probe target named", g0.Reason6)
	}
	if st := s.status(t); st != nil {
		for _, g := range st.Gateways {
			if g.Interface == topo.HostIf1 && (g.State != "up" || g.State6 != "up") {
				t.Errorf("gw1 after gw0 lost IPv6: IPv4 %s, IPv6 %s (%s); want both up", g.State, g.State6, g.Reason6)
			}
		}
	}
	if line, _, err := s.WaitLog(mark, 2*time.Second, "gateway down for IPv6", "gateway=eth0", "family=ipv6"); err != nil {
		t.Errorf("log: %v", err)
	} else {
		t.Logf("%s", line)
		// The router still answered the neighbour solicitations of those rounds.
		if !strings.Contains(line, "the IPv6 router answers neighbour solicitations") {
			t.Errorf("IPv6 down log line does not say the router answers neighbour solicitations: %s", line)
		}
	}
	if l := s.LogLines(mark, "gateway down: probes unanswered"); len(l) > 0 {
		t.Errorf("an IPv4 down was logged for an IPv6-only loss: %s", l[0])
	}

	// gw0's IPv6 TCP connection: reset toward the host. Its IPv6 UDP flow: moved to eth1.
	select {
	case e := <-tcp6End:
		if !errors.Is(e.err, syscall.ECONNRESET) {
			t.Errorf("gw0's IPv6 TCP connection ended with %v, want ECONNRESET (an RST injected toward the host)", e.err)
		} else {
			t.Logf("MEASURED gw0's IPv6 TCP connection reset %v after the cut", e.at.Sub(cut).Round(time.Millisecond))
		}
	case <-time.After(3 * time.Second):
		t.Errorf("gw0's IPv6 TCP connection was not reset within 3 s of IPv6 down")
	}
	if ans, _ := whoami(udp6, 6, 300*time.Millisecond); ans != topo.HostAddr6_1.String() {
		t.Errorf("gw0's IPv6 UDP flow after IPv6 down: the server sees %q, want %s (moved to eth1)", ans, topo.HostAddr6_1)
	}
	// gw0's IPv4 TCP connection: untouched.
	if err := tcp4.Upload(256<<10, 7, 5*time.Second); err != nil {
		t.Errorf("gw0's IPv4 TCP connection after gw0 lost IPv6: %v", err)
	}

	// New connections: IPv6 all via eth1, IPv4 over both.
	srv6.echo.Seen.Reset()
	ts := TimedEchoes(ctx, topo.Host, netip.Addr{}, srv6.echoAddr(), 30, 2, 3*time.Second)
	w6 := checkTimings(t, "new IPv6 connections with gw0's IPv6 down", ts, time.Second)
	requireOnly(t, "new IPv6 connections with gw0's IPv6 down", srv6.echo.Seen.Counts(), topo.HostAddr6_1, 30)
	srv4.echo.Seen.Reset()
	ts = TimedEchoes(ctx, topo.Host, netip.Addr{}, srv4.echoAddr(), 60, 2, 3*time.Second)
	w4 := checkTimings(t, "new IPv4 connections with gw0's IPv6 down", ts, time.Second)
	c4 := srv4.echo.Seen.Counts()
	t.Logf("MEASURED with gw0's IPv6 down: 30 new IPv6 connections all via eth1 (worst %v); 60 new IPv4 connections %s (worst %v)",
		w6.Round(time.Millisecond), FormatCounts(c4), w4.Round(time.Millisecond))
	if c4[topo.HostAddr0] == 0 || c4[topo.HostAddr1] == 0 {
		t.Errorf("new IPv4 connections with gw0's IPv6 down: %s; want both uplinks used", FormatCounts(c4))
	}

	// Recovery.
	if err := topo.cutUpstream6(0, false); err != nil {
		t.Fatal(err)
	}
	g0, back := waitGateway6(t, s, topo.HostIf0, "IPv6 up again", 3*time.Second, func(g control.GatewayStatus) bool { return g.State6 == "up" })
	t.Logf("MEASURED gw0 IPv6 up %v after its IPv6 came back (IPv4 %s)", back.Round(time.Millisecond), g0.State)
	// The neighbour solicitation is checked too: gw0 stops sending neighbour advertisements
	// (its IPv6 forwarding and the echoes go on), so its IPv6 state turns degraded, not down
	// (with IPv6 targets the solicitation does not vote), and comes back when they do.
	if err := Nft(topo.GW0, "table ip6 l2t_na {\n chain out {\n  type filter hook output priority 0;\n  icmpv6 type nd-neighbor-advert drop\n }\n}\n"); err != nil {
		t.Fatal(err)
	}
	g0, took := waitGateway6(t, s, topo.HostIf0, "IPv6 degraded (no neighbour advertisement)", interval*misses+time.Second,
		func(g control.GatewayStatus) bool { return g.State6 == "degraded" })
	t.Logf("MEASURED gw0 silent to neighbour solicitations: IPv6 %s after %v: %s", g0.State6, took.Round(time.Millisecond), g0.Reason6)
	if !strings.Contains(g0.Reason6, "no neighbour advertisement from the IPv6 router") || g0.State != "up" {
		t.Errorf("gw0 without neighbour advertisements: IPv4 %s, IPv6 %s (%s)", g0.State, g0.State6, g0.Reason6)
	}
	if err := Nft(topo.GW0, "delete table ip6 l2t_na"); err != nil {
		t.Fatal(err)
	}
	waitGateway6(t, s, topo.HostIf0, "IPv6 up after neighbour advertisements resumed", 2*time.Second, func(g control.GatewayStatus) bool { return g.State6 == "up" })

	found := false
	for _, ev := range s.status(t).Events {
		if ev.Gateway == "eth0" && strings.HasPrefix(ev.Message, "IPv6: ") {
			found = true
		}
	}
	if !found {
		t.Errorf("no IPv6 event for eth0 among the status's last events")
	}
	stopShim(t, s)
}
