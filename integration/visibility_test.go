package integration

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os/exec"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/l2shim/l2shim/control"
)

// cliJSON runs a command with --json and decodes its output into v.
func (s *testShim) cliJSON(t *testing.T, v any, args ...string) {
	t.Helper()
	out, errs, code := s.cli(t, append(args, "--json")...)
	if code != 0 {
		t.Fatalf("l2shim %s: exit %d: %s", strings.Join(args, " "), code, errs)
	}
	if err := json.Unmarshal([]byte(out), v); err != nil {
		t.Fatalf("l2shim %s --json: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// flowFrom returns the listed flow whose host-side source is local, failing the test when
// there is none.
func flowFrom(t *testing.T, what string, fl *control.FlowList, local net.Addr) control.Flow {
	t.Helper()
	want := local.(*net.TCPAddr).AddrPort().String()
	for _, f := range fl.Flows {
		if f.HostSrc == want {
			return f
		}
	}
	t.Fatalf("%s: no flow from %s among %d listed: %+v", what, want, len(fl.Flows), fl.Flows)
	return control.Flow{}
}

// echoBytes writes n bytes on c and reads them back.
func echoBytes(t *testing.T, c net.Conn, n int) {
	t.Helper()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	defer c.SetDeadline(time.Time{})
	buf := bytes.Repeat([]byte("l2shim"), n/6+1)[:n]
	if _, err := c.Write(buf); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(c, buf); err != nil {
		t.Fatal(err)
	}
}

// TestVisibility drives flows, explain, top and events after known traffic: a flow a rule
// routes (its NAT tuple, reason and counters), a flow rotated off a silently dead gateway, and a
// connection older than l2shim (pinned); explain agrees with what the datapath then does; top
// fits 80×24; events shows drains, also to a follower.
func TestVisibility(t *testing.T) {
	topo := newTopo(t)
	srv := startServers(t, topo)
	ctx := context.Background()

	// A connection older than l2shim: the host routes it via eth0.
	old, err := DialTCP(ctx, topo.Host, srv.echoAddr())
	if err != nil {
		t.Fatal(err)
	}
	defer old.Close()
	echoBytes(t, old, 100)

	s := startShimCfg(t, topo, ConfigOptions{
		Mode:  "failover",
		Extra: failoverTable(`syn_retries = 2`, `probe_interval = "0s"`, `min_attempts = 1000000`) + "\n\n" + routeToRule("echo via eth1", "tcp", EchoPort, topo.HostIf1),
	})
	defer stopShim(t, s)
	eth0, eth1 := topo.HostIf0, topo.HostIf1

	// The pinned connection carries on.
	echoBytes(t, old, 200)
	// A flow the rule routes via eth1: NATed to 10.2.0.2.
	ruled, err := DialTCP(ctx, topo.Host, srv.echoAddr())
	if err != nil {
		t.Fatal(err)
	}
	defer ruled.Close()
	const payload = 20000
	echoBytes(t, ruled, payload)

	// explain, before the flows: the rule's flow, the mode's flow, an inbound one, an on-link one.
	var x control.Explanation
	s.cliJSON(t, &x, "explain", "tcp", topo.HostAddr0.String()+":40000", netip.AddrPortFrom(topo.ServerAddr, EchoPort).String())
	if x.Gateway != eth1 || x.Reason != "rule" || x.Rule != "echo via eth1" || !x.NAT || x.WireSrc != topo.HostAddr1.String()+":40000" || x.Interface != eth1 {
		t.Errorf("explain echo: %+v", x)
	}
	if len(x.Rules) != 1 || !x.Rules[0].Matched || len(x.Steps) < 2 || len(x.Gateways) != 2 || !x.Gateways[1].Usable {
		t.Errorf("explain echo, the steps: %+v", x)
	}
	s.cliJSON(t, &x, "explain", "tcp", topo.HostAddr0.String()+":40001", netip.AddrPortFrom(topo.ServerAddr, BulkPort).String())
	if x.Gateway != eth0 || x.Reason != "failover-order" || x.NAT || len(x.Ranking) != 2 || x.Ranking[0] != eth0 {
		t.Errorf("explain bulk: %+v", x)
	}
	s.cliJSON(t, &x, "explain", "--in", "tcp", topo.ServerAddr.String()+":50000", topo.HostAddr1.String()+":22")
	if x.Gateway != eth1 || x.Reason != "source-aware" {
		t.Errorf("explain inbound: %+v", x)
	}
	s.cliJSON(t, &x, "explain", "udp", topo.HostAddr0.String()+":5353", topo.GW1Addr.String()+":53")
	if !x.OnLink || x.Gateway != "" {
		t.Errorf("explain on-link: %+v", x)
	}
	out, _, code := s.cli(t, "explain", "tcp", topo.HostAddr0.String()+":40000", netip.AddrPortFrom(topo.ServerAddr, EchoPort).String())
	t.Logf("l2shim explain (exit %d):\n%s", code, out)
	if code != 0 || !strings.Contains(out, `rule "echo via eth1" matches: route-to eth1`) || !strings.Contains(out, "NATed to 10.2.0.2:40000") {
		t.Errorf("explain's text: %s", out)
	}

	// Rotation: gw0's upstream goes silent; a new connection to the bulk port (no rule: mode
	// failover puts it on eth0) rotates to eth1 on its third SYN.
	if err := topo.CutUpstream(0); err != nil {
		t.Fatal(err)
	}
	rot, err := DialTCP(ctx, topo.Host, srv.bulkAddr())
	if err != nil {
		t.Fatalf("the rotated connection: %v", err)
	}
	defer rot.Close()
	rot.SetReadDeadline(time.Now().Add(5 * time.Second))
	if line, err := readLine(rot); err != nil || line != topo.HostAddr1.String() {
		t.Fatalf("the rotated connection: the server saw %q (%v), want %s", line, err, topo.HostAddr1)
	}
	if err := topo.RestoreUpstream(0); err != nil {
		t.Fatal(err)
	}

	// flows --json: each of the three.
	var all control.FlowList
	s.cliJSON(t, &all, "flows")
	if len(all.Flows) < 3 || all.Total < len(all.Flows) {
		t.Fatalf("flows: %d listed, total %d", len(all.Flows), all.Total)
	}
	f := flowFrom(t, "the rule's flow", &all, ruled.LocalAddr())
	t.Logf("the rule's flow: %+v", f)
	if f.Proto != "tcp" || f.Direction != "out" || f.Gateway != eth1 || !f.NAT || f.Reason != "rule" || f.Rule != "echo via eth1" ||
		f.HostDst != srv.echoAddr().String() || f.WireDst != srv.echoAddr().String() || !strings.HasPrefix(f.WireSrc, topo.HostAddr1.String()+":") ||
		f.HostIf != eth0 || f.WireIf != eth1 || f.State != "established" || f.Moves != 0 {
		t.Errorf("the rule's flow: %+v", f)
	}
	if f.BytesOut < payload || f.BytesIn < payload || f.PacketsOut < 3 || f.PacketsIn < 3 || f.Age <= 0 {
		t.Errorf("the rule's flow's counters: %d/%d bytes, %d/%d packets out/in, age %v; want at least %d bytes each way", f.BytesOut, f.BytesIn, f.PacketsOut, f.PacketsIn, f.Age, payload)
	}
	f = flowFrom(t, "the rotated flow", &all, rot.LocalAddr())
	t.Logf("the rotated flow: %+v", f)
	if f.Gateway != eth1 || f.Reason != "rotated" || !f.NAT || f.Moves != 1 || !strings.HasPrefix(f.WireSrc, topo.HostAddr1.String()+":") || !strings.Contains(f.Why, "3 times") {
		t.Errorf("the rotated flow: %+v", f)
	}
	f = flowFrom(t, "the pinned flow", &all, old.LocalAddr())
	t.Logf("the pinned flow: %+v", f)
	if f.Gateway != eth0 || f.Reason != "pinned" || f.NAT || f.WireSrc != f.HostSrc || f.BytesOut == 0 || f.BytesIn == 0 {
		t.Errorf("the pinned flow: %+v", f)
	}

	// Filters.
	var some control.FlowList
	s.cliJSON(t, &some, "flows", "--gateway", eth1, "--port", fmt.Sprint(BulkPort))
	if len(some.Flows) != 1 || some.Flows[0].Reason != "rotated" {
		t.Errorf("flows --gateway eth1 --port %d: %+v", BulkPort, some.Flows)
	}
	s.cliJSON(t, &some, "flows", "--addr", topo.HostAddr1.String()+"/32", "--proto", "tcp", "--state", "established")
	for _, f := range some.Flows {
		if f.Gateway != eth1 {
			t.Errorf("flows --addr %s: %+v", topo.HostAddr1, f)
		}
	}
	if len(some.Flows) < 2 {
		t.Errorf("flows --addr %s/32 --state established: %d flows, want the rule's and the rotated one", topo.HostAddr1, len(some.Flows))
	}
	s.cliJSON(t, &some, "flows", "--limit", "1")
	if len(some.Flows) != 1 {
		t.Errorf("flows --limit 1: %d flows", len(some.Flows))
	}
	s.cliJSON(t, &some, "flows", "--gateway", "none")
	if len(some.Flows) != 0 {
		t.Errorf("flows --gateway none: %+v", some.Flows)
	}
	out, _, code = s.cli(t, "flows", "--proto", "tcp")
	t.Logf("l2shim flows --proto tcp:\n%s", out)
	if code != 0 || !strings.Contains(out, `rule "echo via eth1": route-to eth1`) || !strings.Contains(out, "pinned") || !strings.Contains(out, "rotated") {
		t.Errorf("flows' table: %s", out)
	}
	if _, errs, code := s.cli(t, "flows", "--state", "sleepy"); code != 1 || !strings.Contains(errs, "not a state") {
		t.Errorf("flows --state sleepy: exit %d, %s", code, errs)
	}

	// top --once: one 80×24 frame with both gateways and the busiest flows.
	out, errs, code := s.cli(t, "top", "--once")
	t.Logf("l2shim top --once:\n%s", out)
	lines := strings.Split(strings.TrimRight(out, "\n"), "\n")
	if code != 0 || len(lines) != 24 {
		t.Fatalf("top --once: exit %d, %d lines (want 24): %s", code, len(lines), errs)
	}
	for i, l := range lines {
		if n := utf8.RuneCountInString(l); n > 80 {
			t.Errorf("top line %d is %d wide: %q", i+1, n, l)
		}
	}
	for _, want := range []string{"GATEWAY", eth0 + " ", eth1 + " ", "BUSIEST FLOWS", topo.ServerAddr.String() + ":" + fmt.Sprint(EchoPort)} {
		if !strings.Contains(out, want) {
			t.Errorf("top --once lacks %q", want)
		}
	}

	// events: a follower sees a drain and an undrain as they happen; events and status show them.
	fctx, fcancel := context.WithTimeout(ctx, 30*time.Second)
	defer fcancel()
	follow := exec.CommandContext(fctx, s.bin, "events", "--follow", "--json", "-s", s.sock)
	pipe, err := follow.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := follow.Start(); err != nil {
		t.Fatal(err)
	}
	followed := make(chan control.Event, 64)
	go func() {
		sc := bufio.NewScanner(pipe)
		for sc.Scan() {
			var e control.Event
			if json.Unmarshal(sc.Bytes(), &e) == nil {
				followed <- e
			}
		}
		close(followed)
	}()
	time.Sleep(300 * time.Millisecond)
	start := time.Now()
	for _, cmd := range []string{"drain", "undrain"} {
		if _, errs, code := s.cli(t, cmd, eth1); code != 0 {
			t.Fatalf("%s %s: %s", cmd, eth1, errs)
		}
	}
	var drains []string
	deadline := time.After(5 * time.Second)
wait:
	for len(drains) < 2 {
		select {
		case e, ok := <-followed:
			if !ok {
				break wait
			}
			if e.Kind == "drain" && e.Gateway == eth1 {
				drains = append(drains, e.Message)
				t.Logf("followed after %v: %s", time.Since(start).Round(time.Millisecond), control.EventLine(e))
			}
		case <-deadline:
			break wait
		}
	}
	fcancel()
	_ = follow.Wait()
	if len(drains) != 2 || !strings.HasPrefix(drains[0], "drained") || !strings.HasPrefix(drains[1], "undrained") {
		t.Errorf("events --follow saw %q, want the drain and the undrain", drains)
	}
	out, _, code = s.cli(t, "events")
	t.Logf("l2shim events:\n%s", out)
	if code != 0 || !strings.Contains(out, "start: l2shim started") || !strings.Contains(out, "drain "+eth1+": drained") || !strings.Contains(out, "gateway "+eth1+": up → down: drained") {
		t.Errorf("events: %s", out)
	}
	out, _, _ = s.cli(t, "status")
	if !strings.Contains(out, "recent events") || !strings.Contains(out, "undrained") {
		t.Errorf("status shows no recent events:\n%s", out)
	}
}

// TestAffinityHostPair: with [shim] affinity = "host-pair", 50 connections from one local
// address to one remote address all take one uplink, while 50 pairs (one local address, 50
// remote ones) still spread over both by weight.
func TestAffinityHostPair(t *testing.T) {
	topo := newTopo(t)
	srv := startServers(t, topo)
	const pairs = 50
	var remotes []netip.Addr
	for i := range pairs {
		a := netip.AddrFrom4([4]byte{198, 51, 100, byte(1 + i)})
		if err := topo.AddServerAddr(a); err != nil {
			t.Fatal(err)
		}
		remotes = append(remotes, a)
	}
	// A bulk server on every address: its first line says which source address it saw.
	if _, err := StartBulkServer(topo.Server, netip.AddrPortFrom(netip.IPv4Unspecified(), BulkPort+1)); err != nil {
		t.Fatal(err)
	}
	s := startShimCfg(t, topo, ConfigOptions{ShimExtra: `affinity = "host-pair"`, Extra: failoverTable(`probe_interval = "0s"`)})
	defer stopShim(t, s)
	ctx := context.Background()

	// One pair, 50 connections: one uplink.
	srv.echo.Seen.Reset()
	if ok, errs := TCPEchoMany(ctx, topo.Host, srv.echoAddr(), 50, 5, 3*time.Second); ok != 50 {
		t.Fatalf("%d/50 connections:%s", ok, firstErrs(errs, 5))
	}
	counts := srv.echo.Seen.Counts()
	t.Logf("one pair, 50 connections: the server saw %s", FormatCounts(counts))
	if len(counts) != 1 || srv.echo.Seen.Total() != 50 {
		t.Errorf("50 connections of one pair took more than one uplink: %s", FormatCounts(counts))
	}
	var fl control.FlowList
	s.cliJSON(t, &fl, "flows", "--port", fmt.Sprint(EchoPort))
	for _, f := range fl.Flows {
		if f.Reason != "affinity" {
			t.Errorf("flow %s → %s: reason %q, want affinity", f.HostSrc, f.HostDst, f.Reason)
		}
	}

	// 50 pairs, two connections each: each pair keeps its uplink; the pairs spread.
	seen := map[netip.Addr]int{}
	for _, r := range remotes {
		var first netip.Addr
		for k := range 2 {
			dctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			c, err := DialTCP(dctx, topo.Host, netip.AddrPortFrom(r, BulkPort+1))
			cancel()
			if err != nil {
				t.Fatalf("pair %s: %v", r, err)
			}
			c.SetReadDeadline(time.Now().Add(5 * time.Second))
			line, err := readLine(c)
			c.Close()
			a, perr := netip.ParseAddr(line)
			if err != nil || perr != nil {
				t.Fatalf("pair %s: hello %q: %v %v", r, line, err, perr)
			}
			if k == 0 {
				first = a
				seen[a]++
			} else if a != first {
				t.Errorf("pair %s: first connection from %s, second from %s", r, first, a)
			}
		}
	}
	t.Logf("50 pairs: %s", FormatCounts(seen))
	if seen[topo.HostAddr0] < 10 || seen[topo.HostAddr1] < 10 || seen[topo.HostAddr0]+seen[topo.HostAddr1] != pairs {
		t.Errorf("50 pairs of equal weight did not spread over both uplinks: %s", FormatCounts(seen))
	}
}
