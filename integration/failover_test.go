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
)

// Tests of gateway selection under failure: SYN rotation, failure
// accounting, active probes, flows on a dead gateway, all gateways down, and
// a host whose interfaces change under l2shim.
//
// A "silent upstream loss" is Topology.CutUpstream: the gateway's default
// route becomes a blackhole, so it still answers ARP (and pings to itself)
// on the host's LAN but forwards nothing and sends no ICMP back.

// stopShimTotals is stopShim for a test that reads the totals: it fails the
// test when the shim logged no totals line.
func stopShimTotals(t *testing.T, s *testShim) map[string]string {
	t.Helper()
	tot := stopShim(t, s)
	if tot == nil {
		t.Errorf("l2shim logged no totals line at stop")
		return map[string]string{}
	}
	return tot
}

func atoiAttr(m map[string]string, key string) int {
	var n int
	fmt.Sscan(m[key], &n)
	return n
}

// checkTimings asserts that every connection succeeded within limit and
// returns the worst.
func checkTimings(t *testing.T, what string, ts []ConnTiming, limit time.Duration) time.Duration {
	t.Helper()
	ok, worst, median, errs := TimingStats(ts)
	t.Logf("%s: %d/%d connections succeeded, worst %v, median %v", what, ok, len(ts), worst.Round(time.Millisecond), median.Round(time.Millisecond))
	if ok != len(ts) {
		t.Errorf("%s: %d/%d connections failed:%s", what, len(ts)-ok, len(ts), firstErrs(errs, 5))
	}
	for i, c := range ts {
		if c.Err == nil && c.Elapsed > limit {
			t.Errorf("%s: connection %d took %v, want < %v", what, i, c.Elapsed.Round(time.Millisecond), limit)
		}
	}
	return worst
}

// waitServerSees makes rounds of n short connections every pause until the
// server has seen one from want since the call, or within passes; it returns
// the time from since until then.
func waitServerSees(ctx context.Context, topo *Topology, srv servers, want netip.Addr, since time.Time, within time.Duration) (time.Duration, error) {
	deadline := since.Add(within)
	before := srv.echo.Seen.Count(want)
	for {
		TCPEchoMany(ctx, topo.Host, srv.echoAddr(), 4, 4, 4500*time.Millisecond)
		if srv.echo.Seen.Count(want) > before {
			return time.Since(since), nil
		}
		if time.Now().After(deadline) {
			return time.Since(since), fmt.Errorf("no new connection from %s within %v (server saw %s)", want, within, srv.echo.Seen.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// synRecvFrom counts the server's half-open (SYN-RECV) connections from src.
func synRecvFrom(t *testing.T, ns *NS, src netip.Addr) int {
	t.Helper()
	out := mustRun(t, ns, "ss", "-Htn", "state", "syn-recv")
	n := 0
	for _, l := range strings.Split(out, "\n") {
		f := strings.Fields(l)
		if len(f) >= 4 && strings.HasPrefix(f[len(f)-1], src.String()+":") {
			n++
		}
	}
	return n
}

// TestSYNRotation: gw0's upstream silently drops everything while
// its LAN side still answers ARP, probes are off and failure accounting
// cannot bench it: every new TCP connection from the host still succeeds,
// each within 4.5 s, by moving its third SYN to gw1 with NAT following. An
// unanswered UDP request flow moves the same way. Afterwards, a SYN-ACK that
// comes late through gw0 for a connection that moved is answered with an
// RST upstream (the server forgets the half-open connection) instead of
// reaching the host.
func TestSYNRotation(t *testing.T) {
	topo := newTopo(t)
	srv := startServers(t, topo)
	// mode failover: every new flow tries gw0 first, so every one must rotate.
	s := startShimCfg(t, topo, ConfigOptions{
		Mode:  "failover",
		Extra: failoverTable(`syn_retries = 2`, `probe_interval = "0s"`, `min_attempts = 1000000`),
	})
	ctx := context.Background()

	srv.echo.Seen.Reset()
	checkTimings(t, "before the cut", TimedEchoes(ctx, topo.Host, netip.Addr{}, srv.echoAddr(), 10, 2, 2*time.Second), time.Second)
	requireOnly(t, "before the cut (mode failover: gw0)", srv.echo.Seen.Counts(), topo.HostAddr0, 10)

	if err := topo.CutUpstream(0); err != nil {
		t.Fatal(err)
	}
	t.Logf("gw0's upstream cut (blackhole default route)")

	// TCP: 10 new connections at once, each may take two SYN timeouts (1 s + 2 s).
	srv.echo.Seen.Reset()
	ts := TimedEchoes(ctx, topo.Host, netip.Addr{}, srv.echoAddr(), 10, 10, 8*time.Second)
	worst := checkTimings(t, "TCP through a silently dead gw0", ts, 4500*time.Millisecond)
	t.Logf("MEASURED syn-rotation worst case: %v (10 concurrent connections, all placed on dead gw0 first)", worst.Round(time.Millisecond))
	requireOnly(t, "TCP after rotation (NAT to eth1's address)", srv.echo.Seen.Counts(), topo.HostAddr1, 10)

	// Sequentially too: no connection may depend on another's rotation.
	srv.echo.Seen.Reset()
	ts = TimedEchoes(ctx, topo.Host, netip.Addr{}, srv.echoAddr(), 2, 1, 8*time.Second)
	checkTimings(t, "TCP through a silently dead gw0, one at a time", ts, 4500*time.Millisecond)
	requireOnly(t, "TCP after rotation, one at a time", srv.echo.Seen.Counts(), topo.HostAddr1, 2)

	// UDP: a request resent every 600 ms; the third datagram moves the flow.
	srv.udp.Seen.Reset()
	start := time.Now()
	res := UDPExchange(ctx, topo.Host, srv.udpAddr(), 3, 5, 600*time.Millisecond)
	t.Logf("UDP through dead gw0: %d/3 answered, %d resends in all, %v", res.Answered, res.Retried, time.Since(start).Round(time.Millisecond))
	if res.Answered != 3 {
		t.Errorf("UDP: %d/3 request flows answered after rotation:%s", res.Answered, firstErrs(res.Errors, 3))
	}
	if res.Retried > 3*2 {
		t.Errorf("UDP: %d resends for 3 flows; the 3rd datagram of each should have moved it (at most 2 resends each)", res.Retried)
	}
	requireOnly(t, "UDP after rotation", srv.udp.Seen.Counts(), topo.HostAddr1, res.Answered)

	// Late SYN-ACK: gw0's upstream back, but gw0 drops the server's
	// SYN-ACKs, so a new connection's SYNs reach the server through gw0 and
	// the connection moves to gw1 on the third; the server keeps a
	// half-open connection from 10.1.0.2 and resends its SYN-ACK.
	if err := topo.RestoreUpstream(0); err != nil {
		t.Fatal(err)
	}
	if err := Nft(topo.GW0, `table ip l2t {
	chain filt {
		type filter hook forward priority 0; policy accept;
		ip saddr `+topo.ServerAddr.String()+` tcp flags & (syn | ack) == syn | ack counter drop comment "synack"
	}
}`); err != nil {
		t.Fatal(err)
	}
	uc, err := DialUplink(ctx, topo.Host, srv.bulkAddr(), topo.HostAddr1, 1)
	if err != nil {
		t.Fatalf("connection while gw0 drops SYN-ACKs: %v", err)
	}
	defer uc.Close()
	dropped, _ := NftCounter(topo.GW0, "ip", "l2t", "filt", "synack")
	half := synRecvFrom(t, topo.Server, topo.HostAddr0)
	t.Logf("connection moved to gw1 (server sees %s); gw0 dropped %d SYN-ACKs; server holds %d half-open connection(s) from %s", uc.Seen, dropped, half, topo.HostAddr0)
	if dropped == 0 || half == 0 {
		t.Fatalf("precondition: the server should hold a half-open connection from %s (SYN-ACKs dropped: %d, half-open: %d)", topo.HostAddr0, dropped, half)
	}
	if err := Nft(topo.GW0, "delete table ip l2t"); err != nil {
		t.Fatal(err)
	}
	// The server resends its SYN-ACK (1, 3, 7 s after the first); through
	// gw0 now, it reaches l2shim, which must answer it with an RST.
	released := time.Now()
	var gone time.Duration = -1
	for time.Since(released) < 10*time.Second {
		if synRecvFrom(t, topo.Server, topo.HostAddr0) == 0 {
			gone = time.Since(released)
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if gone < 0 {
		t.Errorf("late SYN-ACK: the server still holds its half-open connection from %s 10 s after gw0 let SYN-ACKs through: l2shim did not answer the late SYN-ACK with an RST upstream", topo.HostAddr0)
	} else {
		t.Logf("late SYN-ACK answered upstream: the server's half-open connection was gone %v after gw0 let SYN-ACKs through", gone.Round(time.Millisecond))
	}
	// The moved connection is unharmed (a SYN-ACK injected into the host
	// would have drawn a challenge ACK, not broken it, so this is a sanity check).
	if err := uc.Upload(64<<10, 77, 5*time.Second); err != nil {
		t.Errorf("the moved connection after the late SYN-ACK: %v", err)
	}

	tot := stopShimTotals(t, s)
	t.Logf("totals: rotations=%s late_answers=%s drop_rotated=%s", tot["rotations"], tot["late_answers"], tot["drop_rotated"])
	if atoiAttr(tot, "rotations") < 16 {
		t.Errorf("totals: rotations=%q, want at least 16 (12 TCP, 3 UDP, 1 for the late SYN-ACK)", tot["rotations"])
	}
	if atoiAttr(tot, "late_answers") < 1 {
		t.Errorf("totals: late_answers=%q, want at least 1 (the late SYN-ACK)", tot["late_answers"])
	}
	if n := len(s.LogLines(0, "benched")); n != 0 {
		t.Errorf("a gateway was benched with min_attempts = 1000000: %v", s.LogLines(0, "benched"))
	}
}

// TestFailureAccounting: connections to a closed port, to an
// address reported unreachable and to an address that drops everything on
// every path bench no gateway; a silently
// dead upstream is benched once enough of its connection attempts failed
// while gw1 reached the same server, after which new connections succeed at
// once (< 1 s, no SYN retransmission); when the upstream is back and the
// failures age out of the window, gw0 takes new flows again.
func TestFailureAccounting(t *testing.T) {
	topo := newTopo(t)
	srv := startServers(t, topo)
	// An address nobody answers on any path: the gateways send everything
	// to the server, whose blackhole route drops it silently.
	dead := netip.MustParseAddr("198.51.100.7")
	mustRun(t, topo.Server, "ip", "route", "add", "blackhole", dead.String()+"/32")
	// An address both gateways report unreachable (ICMP host unreachable
	// from a router on the way, not from the destination).
	unreach := netip.MustParseAddr("198.51.100.8")
	// (nft reject, not an unreachable route, and no ICMP rate limit: the
	// kernel's route-error limiter would let only two errors in a burst
	// through, and its tunable is not per namespace.)
	for _, gw := range []*NS{topo.GW0, topo.GW1} {
		if err := gw.Sysctl("net.ipv4.icmp_ratelimit", "0"); err != nil {
			t.Fatal(err)
		}
		if err := Nft(gw, `table ip l2tu {
	chain filt {
		type filter hook forward priority 0; policy accept;
		ip daddr `+unreach.String()+` reject with icmp type host-unreachable
	}
}`); err != nil {
			t.Fatal(err)
		}
	}
	// Without l2shim that fails at once.
	if ts := TimedEchoes(context.Background(), topo.Host, netip.Addr{}, netip.AddrPortFrom(unreach, 80), 1, 1, 3*time.Second); !errors.Is(ts[0].Err, syscall.EHOSTUNREACH) {
		t.Fatalf("without l2shim a connection to %s ended with %v after %v, want no route to host", unreach, ts[0].Err, ts[0].Elapsed)
	}
	const window = 6 * time.Second
	s := startShimCfg(t, topo, ConfigOptions{
		Mode: "load-balance",
		Extra: failoverTable(`syn_retries = 2`, `probe_interval = "0s"`, `min_attempts = 4`, `fail_ratio = 0.5`,
			fmt.Sprintf("window = %q", window.String())),
	})
	ctx := context.Background()

	// Phase 1: failures that are nobody's fault, mixed with working traffic.
	t0 := time.Now()
	deadDone := make(chan []ConnTiming, 1)
	go func() {
		deadDone <- TimedEchoes(ctx, topo.Host, netip.Addr{}, netip.AddrPortFrom(dead, 80), 8, 8, 4*time.Second)
	}()
	udpDead := make(chan UDPResult, 4)
	for i := 0; i < 4; i++ {
		go func() {
			udpDead <- UDPExchange(ctx, topo.Host, netip.AddrPortFrom(dead, 53), 1, 3, 600*time.Millisecond)
		}()
	}
	closed := TimedEchoes(ctx, topo.Host, netip.Addr{}, netip.AddrPortFrom(topo.ServerAddr, 9), 16, 4, 2*time.Second)
	for i, c := range closed {
		if !errors.Is(c.Err, syscall.ECONNREFUSED) {
			t.Errorf("closed port: connection %d: %v after %v, want connection refused at once", i, c.Err, c.Elapsed.Round(time.Millisecond))
		}
	}
	// ICMP host unreachable ends a connection attempt at once (l2shim
	// translating the error back for NATed flows).
	unr := TimedEchoes(ctx, topo.Host, netip.Addr{}, netip.AddrPortFrom(unreach, 80), 8, 4, 3*time.Second)
	for i, c := range unr {
		if !errors.Is(c.Err, syscall.EHOSTUNREACH) || c.Elapsed > time.Second {
			t.Errorf("unreachable address: connection %d: %v after %v, want no route to host at once", i, c.Err, c.Elapsed.Round(time.Millisecond))
		}
	}
	srv.echo.Seen.Reset()
	ok, errs := TCPEchoMany(ctx, topo.Host, srv.echoAddr(), 20, 2, 3*time.Second)
	if ok != 20 {
		t.Errorf("working connections beside the failing ones: %d/20:%s", ok, firstErrs(errs, 5))
	}
	for i, c := range <-deadDone {
		if c.Err == nil {
			t.Errorf("connection %d to %s (blackholed everywhere) succeeded?", i, dead)
		}
	}
	for i := 0; i < 4; i++ {
		if r := <-udpDead; r.Answered != 0 {
			t.Errorf("UDP to %s (blackholed everywhere) answered %d times?", dead, r.Answered)
		}
	}
	time.Sleep(500 * time.Millisecond) // a few accounting ticks
	if b := s.LogLines(0, "benched"); len(b) > 0 {
		t.Errorf("a closed port and an address dead on every path benched a gateway:\n%s", strings.Join(b, "\n"))
	} else {
		t.Logf("closed port (16 refused), unreachable address (8 host unreachable) and dead address (8 TCP, 4 UDP flows) in %v: no gateway benched", time.Since(t0).Round(time.Millisecond))
	}
	splitOK(t, "working connections during phase 1", topo, srv.echo.Seen.Counts(), srv.echo.Seen.Total())

	// Let phase 1's attempts age out, so phase 2 starts from a clean window.
	time.Sleep(window)

	// Phase 2: gw0's upstream dies silently.
	mark := s.LogMark()
	if err := topo.CutUpstream(0); err != nil {
		t.Fatal(err)
	}
	cut := time.Now()
	// A steady stream of new connections, one every 200 ms, each timed,
	// until gw0 is benched; the check of what "benched" means starts the
	// moment it is logged (with a short window the bench lasts only until
	// the outage's first failures age out).
	srv.echo.Seen.Reset()
	stream := make(chan ConnTiming, 200)
	started := 0
	var benchedAt time.Time
	for time.Since(cut) < 20*time.Second {
		if _, at, err := s.WaitLog(mark, 0, "gateway benched", "gateway=eth0"); err == nil {
			benchedAt = at
			break
		}
		started++
		go func() {
			ts := TimedEchoes(ctx, topo.Host, netip.Addr{}, srv.echoAddr(), 1, 1, 8*time.Second)
			stream <- ts[0]
		}()
		for i := 0; i < 40; i++ { // 200 ms, watching the log
			if len(s.LogLines(mark, "gateway benched", "gateway=eth0")) > 0 {
				break
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	if benchedAt.IsZero() {
		t.Fatalf("gw0 not benched %v after the cut (%d new connections started, each rotated away from it): log has %q", time.Since(cut).Round(time.Millisecond), started, s.LogLines(mark, "bench"))
	}
	// Benched: new connections go straight to gw1, no SYN retransmission.
	benchTs := TimedEchoes(ctx, topo.Host, netip.Addr{}, srv.echoAddr(), 20, 1, 3*time.Second)
	var ts []ConnTiming
	for i := 0; i < started; i++ {
		ts = append(ts, <-stream)
	}
	worst := checkTimings(t, "connections started between the cut and the bench", ts, 4500*time.Millisecond)
	t.Logf("MEASURED benching: gw0 benched %v after the cut (window %v, min_attempts 4, fail_ratio 0.5, one new connection every 200 ms); worst connection meanwhile %v",
		benchedAt.Sub(cut).Round(time.Millisecond), window, worst.Round(time.Millisecond))
	w := checkTimings(t, "while gw0 is benched", benchTs, time.Second)
	t.Logf("MEASURED while benched: 20 new connections, worst %v", w.Round(time.Millisecond))
	if c := srv.echo.Seen.Count(topo.HostAddr0); c != 0 {
		t.Errorf("%d connections succeeded from %s through a dead gw0?", c, topo.HostAddr0)
	}
	if b := s.LogLines(0, "benched", "gateway=eth1"); len(b) > 0 {
		t.Errorf("gw1 (healthy) was benched: %v", b)
	}

	// Phase 3: the upstream comes back; once the failures age out gw0 is
	// tried again and takes new flows, nobody needing to intervene.
	if err := topo.RestoreUpstream(0); err != nil {
		t.Fatal(err)
	}
	restored := time.Now()
	rec, err := waitServerSees(ctx, topo, srv, topo.HostAddr0, restored, 3*window)
	if err != nil {
		t.Errorf("after the upstream came back: %v", err)
	} else {
		t.Logf("MEASURED recovery (accounting, no probes): first new flow through gw0 %v after its upstream came back (window %v)", rec.Round(time.Millisecond), window)
	}
	if _, _, err := s.WaitLog(mark, time.Second, "gateway back from the bench", "gateway=eth0"); err != nil {
		t.Errorf("%v", err)
	}
	t.Logf("during the outage gw0 was benched %d time(s) (tried again each time its failures aged out of the %v window)",
		len(s.LogLines(mark, "gateway benched", "gateway=eth0")), window)
	srv.echo.Seen.Reset()
	ts = TimedEchoes(ctx, topo.Host, netip.Addr{}, srv.echoAddr(), 40, 4, 3*time.Second)
	checkTimings(t, "after recovery", ts, time.Second)
	splitOK(t, "after recovery", topo, srv.echo.Seen.Counts(), srv.echo.Seen.Total())
	stopShim(t, s)
}

// TestProbes: probes every 200 ms, down after 3 misses.
// A healthy gw0 losing 20 % of its probes is never declared down in 30 s.
// After a silent upstream loss, within 1.5 s new connections go only
// through gw1, each in < 1 s; gw0's open TCP connection is reset toward the
// host (ECONNRESET at once, not minutes later), its UDP flow moves to gw1 and
// keeps getting answers; gw1's TCP connection is untouched. When the
// upstream is back, probes bring gw0 back.
func TestProbes(t *testing.T) {
	topo := newTopo(t)
	srv := startServers(t, topo)
	s := startShimCfg(t, topo, ConfigOptions{
		Mode:         "load-balance",
		Extra:        fastProbes,
		GatewayExtra: probeCfg(topo.ServerAddr),
	})
	ctx := context.Background()

	// 20 % probe loss on a healthy link, for 30 s, with traffic.
	lossFor := 30 * time.Second
	if err := Nft(topo.GW0, `table ip l2t {
	chain filt {
		type filter hook forward priority 0; policy accept;
		icmp type echo-request counter comment "echo"
		icmp type echo-request numgen random mod 5 == 0 counter drop comment "lost"
	}
}`); err != nil {
		t.Fatal(err)
	}
	mark := s.LogMark()
	lossStart := time.Now()
	conns, connOK := 0, 0
	srv.echo.Seen.Reset()
	for time.Since(lossStart) < lossFor {
		ok, errs := TCPEchoMany(ctx, topo.Host, srv.echoAddr(), 4, 4, 2*time.Second)
		conns += 4
		connOK += ok
		if ok != 4 {
			t.Errorf("lossy probes phase: %d/4 connections:%s", ok, firstErrs(errs, 4))
		}
		time.Sleep(500 * time.Millisecond)
	}
	echoes, _ := NftCounter(topo.GW0, "ip", "l2t", "filt", "echo")
	lost, _ := NftCounter(topo.GW0, "ip", "l2t", "filt", "lost")
	t.Logf("20%% probe loss for %v: gw0 forwarded %d echo requests, dropped %d (%.1f%%); %d/%d connections ok, server saw %s",
		lossFor, echoes, lost, 100*float64(lost)/float64(max(echoes, 1)), connOK, conns, srv.echo.Seen.String())
	if echoes < int64(lossFor/(200*time.Millisecond))/2 || lost == 0 {
		t.Errorf("probe loss not applied: %d echo requests seen at gw0, %d dropped (want at least %d probes, some dropped)", echoes, lost, int64(lossFor/(200*time.Millisecond))/2)
	}
	if d := s.LogLines(mark, "gateway down"); len(d) > 0 {
		t.Errorf("a healthy gateway with 20%% probe loss was declared down:\n%s", strings.Join(d, "\n"))
	}
	if srv.echo.Seen.Count(topo.HostAddr0) == 0 {
		t.Errorf("gw0 took no new flows during the lossy-probe phase: %s", srv.echo.Seen.String())
	}
	if err := Nft(topo.GW0, "delete table ip l2t"); err != nil {
		t.Fatal(err)
	}

	// Live flows on both gateways.
	tcp0, err := DialUplink(ctx, topo.Host, srv.bulkAddr(), topo.HostAddr0, 32)
	if err != nil {
		t.Fatalf("TCP connection through gw0: %v", err)
	}
	defer tcp0.Close()
	tcp1, err := DialUplink(ctx, topo.Host, srv.bulkAddr(), topo.HostAddr1, 32)
	if err != nil {
		t.Fatalf("TCP connection through gw1: %v", err)
	}
	defer tcp1.Close()
	udp0, _, err := DialUDPPath(topo.Host, srv.udpAddr(), From(topo.HostAddr0), 32)
	if err != nil {
		t.Fatalf("UDP flow through gw0: %v", err)
	}
	defer udp0.Close()
	type readEnd struct {
		at  time.Time
		err error
	}
	tcp0End := make(chan readEnd, 1)
	go func() {
		tcp0.SetReadDeadline(time.Now().Add(30 * time.Second))
		var b [1]byte
		_, err := tcp0.Read(b[:])
		tcp0End <- readEnd{time.Now(), err}
	}()

	// Silent upstream loss.
	mark = s.LogMark()
	if err := topo.CutUpstream(0); err != nil {
		t.Fatal(err)
	}
	cut := time.Now()
	line, downAt, err := s.WaitLog(mark, 3*time.Second, "gateway down", "gateway=eth0")
	if err != nil {
		t.Fatalf("after the cut: %v", err)
	}
	detect := downAt.Sub(cut)
	t.Logf("MEASURED probe detection: gw0 down %v after its upstream was cut (interval 200ms, 3 misses): %s", detect.Round(time.Millisecond), line)
	if detect > 1500*time.Millisecond {
		t.Errorf("probe detection took %v, want <= 1.5s", detect.Round(time.Millisecond))
	}
	time.Sleep(time.Until(cut.Add(1500 * time.Millisecond)))
	srv.echo.Seen.Reset()
	ts := TimedEchoes(ctx, topo.Host, netip.Addr{}, srv.echoAddr(), 30, 1, 3*time.Second)
	w := checkTimings(t, "from 1.5 s after the cut", ts, time.Second)
	t.Logf("MEASURED after detection: 30 new connections, worst %v", w.Round(time.Millisecond))
	requireOnly(t, "from 1.5 s after the cut", srv.echo.Seen.Counts(), topo.HostAddr1, 30)

	// gw0's TCP connection: reset toward the host.
	select {
	case e := <-tcp0End:
		after := e.at.Sub(downAt)
		if !errors.Is(e.err, syscall.ECONNRESET) {
			t.Errorf("gw0's open TCP connection ended with %v, want ECONNRESET (an RST injected toward the host)", e.err)
		} else {
			t.Logf("MEASURED gw0's open TCP connection reset %v after gw0 was declared down", after.Round(time.Millisecond))
		}
		if after > 2*time.Second {
			t.Errorf("gw0's TCP connection reset %v after detection, want < 2s", after.Round(time.Millisecond))
		}
	case <-time.After(3 * time.Second):
		t.Errorf("gw0's open TCP connection was not reset within 3 s of the cut's detection + 1.5 s (no ECONNRESET)")
	}
	if l := s.LogLines(mark, "flows of a down gateway handled", "gateway=eth0"); len(l) == 0 {
		t.Errorf("no %q log line for gw0", "flows of a down gateway handled")
	} else {
		t.Logf("%s", l[0])
	}

	// gw0's UDP flow: moved to gw1, NAT following.
	udpAns, _ := whoami(udp0, 6, 300*time.Millisecond)
	if udpAns != topo.HostAddr1.String() {
		t.Errorf("gw0's UDP flow after gw0 went down: answer %q, want the server to see %s (moved to gw1)", udpAns, topo.HostAddr1)
	} else {
		t.Logf("gw0's UDP flow moved: the server now sees it from %s", udpAns)
	}
	// gw1's TCP connection: untouched.
	if err := tcp1.Upload(256<<10, 5, 5*time.Second); err != nil {
		t.Errorf("gw1's TCP connection after gw0 went down: %v", err)
	}

	// Recovery.
	mark = s.LogMark()
	if err := topo.RestoreUpstream(0); err != nil {
		t.Fatal(err)
	}
	restored := time.Now()
	if _, upAt, err := s.WaitLog(mark, 3*time.Second, "gateway up", "gateway=eth0"); err != nil {
		t.Errorf("after the upstream came back: %v", err)
	} else {
		t.Logf("MEASURED probe recovery: gw0 up %v after its upstream came back", upAt.Sub(restored).Round(time.Millisecond))
	}
	srv.echo.Seen.Reset()
	if d, err := waitServerSees(ctx, topo, srv, topo.HostAddr0, restored, 5*time.Second); err != nil {
		t.Errorf("after recovery: %v", err)
	} else {
		t.Logf("MEASURED first new flow through gw0 %v after its upstream came back", d.Round(time.Millisecond))
	}
	tot := stopShimTotals(t, s)
	t.Logf("totals: tcp_reset=%s udp_moved=%s", tot["tcp_reset"], tot["udp_moved"])
	if atoiAttr(tot, "tcp_reset") < 1 || atoiAttr(tot, "udp_moved") < 1 {
		t.Errorf("totals: tcp_reset=%q udp_moved=%q, want at least 1 each (gw0's TCP connection and UDP flow)", tot["tcp_reset"], tot["udp_moved"])
	}
}

// TestAllGatewaysDown: when every gateway is down, l2shim leaves
// new flows to the host's own routing (eth0, the host's address, no NAT),
// logs it once, and takes over again when a gateway is back. The gateways'
// probe target stops answering while the data path keeps working, so what
// "left to the host" means can be seen: everything succeeds via eth0.
func TestAllGatewaysDown(t *testing.T) {
	topo := newTopo(t)
	srv := startServers(t, topo)
	target := netip.MustParseAddr("203.0.113.20")
	if err := topo.AddServerAddr(target); err != nil {
		t.Fatal(err)
	}
	s := startShimCfg(t, topo, ConfigOptions{
		Mode:         "load-balance",
		Extra:        fastProbes,
		GatewayExtra: probeCfg(target),
	})
	ctx := context.Background()
	requireSteering(t, topo, srv)

	mark := s.LogMark()
	if err := Nft(topo.Server, `table ip l2t {
	chain in {
		type filter hook input priority 0; policy accept;
		ip daddr `+target.String()+` icmp type echo-request counter drop comment "probes"
	}
}`); err != nil {
		t.Fatal(err)
	}
	blocked := time.Now()
	if _, at, err := s.WaitLog(mark, 3*time.Second, "no usable gateway"); err != nil {
		t.Fatalf("every probe target silent: %v", err)
	} else {
		t.Logf("all gateways down, logged %v after the probe target went silent", at.Sub(blocked).Round(time.Millisecond))
	}
	srv.echo.Seen.Reset()
	ts := TimedEchoes(ctx, topo.Host, netip.Addr{}, srv.echoAddr(), 40, 4, 3*time.Second)
	checkTimings(t, "no usable gateway", ts, time.Second)
	requireOnly(t, "no usable gateway: host routing (eth0, no NAT)", srv.echo.Seen.Counts(), topo.HostAddr0, 40)
	srv.udp.Seen.Reset()
	if r := UDPExchange(ctx, topo.Host, srv.udpAddr(), 10, 1, time.Second); r.Answered != 10 {
		t.Errorf("no usable gateway: UDP %d/10:%s", r.Answered, firstErrs(r.Errors, 3))
	}
	requireOnly(t, "no usable gateway: UDP by host routing", srv.udp.Seen.Counts(), topo.HostAddr0, 10)
	time.Sleep(time.Second) // more probe rounds, all missed
	if n := len(s.LogLines(mark, "no usable gateway")); n != 1 {
		t.Errorf("%q logged %d times in one outage, want once", "no usable gateway", n)
	}

	if err := Nft(topo.Server, "delete table ip l2t"); err != nil {
		t.Fatal(err)
	}
	back := time.Now()
	if _, at, err := s.WaitLog(mark, 3*time.Second, "usable again"); err != nil {
		t.Errorf("probe target answering again: %v", err)
	} else {
		t.Logf("a gateway usable again %v after the probe target answered", at.Sub(back).Round(time.Millisecond))
	}
	// Each gateway's probes run in their own phase: the second may come back a probe round
	// after the first.
	waitGatewayState(t, s, topo.HostIf0, "up", 2*time.Second)
	waitGatewayState(t, s, topo.HostIf1, "up", 2*time.Second)
	spreadOK(t, "after the outage", topo, srv, 40, 4)
	if n := len(s.LogLines(mark, "no usable gateway")); n != 1 {
		t.Errorf("%q logged %d times, want once", "no usable gateway", n)
	}
	stopShim(t, s)
}

// TestChangingHost: l2shim follows netlink without a restart.
// eth1 down: gw1 unusable at once (every new connection works, via eth0);
// up: gw1 usable again after it answers ARP. eth1's address changed (DHCP):
// new flows through eth1 NAT to the new address. eth1 deleted and re-created
// with a new ifindex (a USB modem): re-attached, flows through eth1 work.
func TestChangingHost(t *testing.T) {
	topo := newTopo(t)
	srv := startServers(t, topo)
	s := startShimCfg(t, topo, ConfigOptions{
		Mode:  "load-balance",
		Extra: fastProbes,
	})
	ctx := context.Background()
	requireSteering(t, topo, srv)

	t.Run("link-down-up", func(t *testing.T) {
		mark := s.LogMark()
		if err := SetLinkUp(topo.Host, topo.HostIf1, false); err != nil {
			t.Fatal(err)
		}
		down := time.Now()
		if _, at, err := s.WaitLog(mark, 2*time.Second, "interface down", "eth1"); err != nil {
			t.Error(err)
		} else {
			t.Logf("MEASURED eth1 down logged %v after the link went down (log times have 1 ms resolution)", max(at.Sub(down), 0).Round(time.Millisecond))
		}
		// From the netlink event on, no new flow may be placed on gw1.
		srv.echo.Seen.Reset()
		ts := TimedEchoes(ctx, topo.Host, netip.Addr{}, srv.echoAddr(), 30, 1, 3*time.Second)
		checkTimings(t, "eth1 down", ts, time.Second)
		requireOnly(t, "eth1 down", srv.echo.Seen.Counts(), topo.HostAddr0, 30)
		if err := SetLinkUp(topo.Host, topo.HostIf1, true); err != nil {
			t.Fatal(err)
		}
		up := time.Now()
		if err := waitCarrier(topo.Host, topo.HostIf1, 5*time.Second); err != nil {
			t.Fatal(err)
		}
		if _, _, err := s.WaitLog(mark, 3*time.Second, "interface up", "eth1"); err != nil {
			t.Error(err)
		}
		srv.echo.Seen.Reset()
		if d, err := waitServerSees(ctx, topo, srv, topo.HostAddr1, up, 10*time.Second); err != nil {
			t.Errorf("eth1 up again: %v", err)
		} else {
			t.Logf("MEASURED eth1 up: first new flow through gw1 %v after the link came up", d.Round(time.Millisecond))
		}
	})

	newAddr := netip.MustParseAddr("10.2.0.77")
	t.Run("address-change", func(t *testing.T) {
		change := func(from, to netip.Addr) {
			t.Helper()
			mark := s.LogMark()
			mustRun(t, topo.Host, "ip", "addr", "del", from.String()+"/24", "dev", topo.HostIf1)
			mustRun(t, topo.Host, "ip", "addr", "add", to.String()+"/24", "dev", topo.HostIf1)
			if _, _, err := s.WaitLog(mark, 3*time.Second, "interface address changed", to.String()); err != nil {
				// The log may not name the address; the traffic check below decides.
				if _, _, err2 := s.WaitLog(mark, time.Second, "interface address changed"); err2 != nil {
					t.Error(err2)
				}
			}
			srv.echo.Seen.Reset()
			ok, errs := TCPEchoMany(ctx, topo.Host, srv.echoAddr(), 40, 4, 3*time.Second)
			c := srv.echo.Seen.Counts()
			t.Logf("eth1 %s -> %s: %d/40 connections, server saw %s", from, to, ok, FormatCounts(c))
			if ok != 40 {
				t.Errorf("after eth1's address changed to %s: %d/40:%s", to, ok, firstErrs(errs, 5))
			}
			if c[to] == 0 || c[from] != 0 || c[topo.HostAddr0]+c[to] != ok {
				t.Errorf("after eth1's address changed %s -> %s the server saw %s: want flows through eth1 NATed to %s only", from, to, FormatCounts(c), to)
			}
		}
		change(topo.HostAddr1, newAddr)
		change(newAddr, topo.HostAddr1)
	})

	t.Run("re-created", func(t *testing.T) {
		mark := s.LogMark()
		oldIdx, newIdx, err := topo.RecreateUplink(1)
		if err != nil {
			t.Fatal(err)
		}
		again := time.Now()
		t.Logf("eth1 re-created: ifindex %d -> %d", oldIdx, newIdx)
		if newIdx == oldIdx {
			t.Fatalf("re-created eth1 kept ifindex %d", oldIdx)
		}
		if _, at, err := s.WaitLog(mark, 5*time.Second, "re-attached"); err != nil {
			t.Error(err)
		} else {
			t.Logf("MEASURED re-attached %v after eth1 came back", at.Sub(again).Round(time.Millisecond))
		}
		if in, eg, err := TCXPrograms(topo.Host, topo.HostIf1); err != nil || in == 0 || eg == 0 {
			t.Errorf("new eth1: TCX ingress=%d egress=%d (%v), want l2shim's hooks attached", in, eg, err)
		}
		srv.echo.Seen.Reset()
		if d, err := waitServerSees(ctx, topo, srv, topo.HostAddr1, again, 10*time.Second); err != nil {
			t.Errorf("re-created eth1: %v", err)
		} else {
			t.Logf("MEASURED first new flow through the re-created eth1 %v after it came back", d.Round(time.Millisecond))
		}
		spreadOK(t, "after eth1 was re-created", topo, srv, 40, 4)
	})

	stopShim(t, s)
	if l, _ := topo.ShimLinks(); len(l) > 0 {
		t.Errorf("l2s* links left after stop: %v", l)
	}
	if n, d := tcxCounts(t, topo); n != 0 {
		t.Errorf("TCX programs left after stop: %s", d)
	}
}
