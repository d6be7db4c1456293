package integration

import (
	"context"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestTCMode runs the core scenarios with `[shim] attach = "tc"`: the programs attached as
// direct-action cls_bpf filters under a clsact qdisc, as on kernels without TCX. Each subtest
// checks that tc filters, not TCX programs, are what is attached.
func TestTCMode(t *testing.T) {
	requireRoot(t)
	t.Run("check", tcCheck)
	t.Run("balance", func(t *testing.T) { spreadFlows(t, "tc") })
	t.Run("route-to-nat", tcRouteTo)
	t.Run("failover", tcFailover)
	t.Run("source-aware", func(t *testing.T) { sourceAware(t, "tc") })
	t.Run("sigkill", tcKill)
	t.Run("sigstop", func(t *testing.T) { failOpenStop(t, "tc") })
	t.Run("fast-path", func(t *testing.T) { shimBulk(t, false, "tc", min(bulkSize(), 256<<20)) })
	t.Run("restart-under-load", func(t *testing.T) { restartUnderLoad(t, "sigkill", Options{}, "tc") })
	t.Run("restart-sigterm", func(t *testing.T) { restartUnderLoad(t, "sigterm", Options{}, "tc") })
}

// tcFilters is `tc filter show dev IF DIR` in the host namespace.
func tcFilters(t *testing.T, topo *Topology, ifn, dir string) string {
	t.Helper()
	return mustRun(t, topo.Host, "tc", "filter", "show", "dev", ifn, dir)
}

// l2shimFilters counts l2shim's filters on the host's two uplinks (both hooks) and describes
// what tc lists.
func l2shimFilters(t *testing.T, topo *Topology) (int, string) {
	t.Helper()
	n := 0
	var desc []string
	for _, ifn := range []string{topo.HostIf0, topo.HostIf1} {
		for _, dir := range []string{"ingress", "egress"} {
			out := tcFilters(t, topo, ifn, dir)
			if strings.Contains(out, "l2shim_"+dir+" direct-action") && strings.Contains(out, "pref 1 bpf") {
				n++
			}
			desc = append(desc, ifn+" "+dir+": "+strings.Join(strings.Fields(out), " "))
		}
	}
	return n, strings.Join(desc, "\n")
}

// checkAttached checks that s attached its hooks as attach says ("": nothing to check): the
// status names the mode, and in tc mode both uplinks carry l2shim's filters at priority 1
// and no TCX program.
func checkAttached(t *testing.T, s *testShim, attach string) {
	t.Helper()
	if attach == "" {
		return
	}
	if st := s.status(t); st.Attach != attach {
		t.Errorf("status: attach %q, want %q", st.Attach, attach)
	}
	if attach != "tc" {
		return
	}
	if n, desc := l2shimFilters(t, s.topo); n != 4 {
		t.Errorf("tc mode: %d of l2shim's 4 filters on the uplinks; tc lists:\n%s", n, desc)
	}
	if n, desc := tcxCounts(t, s.topo); n != 0 {
		t.Errorf("tc mode: TCX programs attached: %s", desc)
	}
}

// tcCheck: `check` names the attach mode the kernel gets and what it means for fail-open.
func tcCheck(t *testing.T) {
	topo := newTopo(t)
	for _, c := range []struct{ attach, want string }{
		{"tc", "attach: tc (attach = \"tc\"): clsact qdisc and cls_bpf filters (priority 1); they stay attached when l2shim exits or dies: diverting stops within heartbeat (1s)"},
		{"", "attach: tcx (attach = \"auto\"): TCX links; they die with l2shim"},
	} {
		out, code := runShimCommand(t, topo, "check", topo.Config(ConfigOptions{Attach: c.attach}))
		if code != 0 || !strings.Contains(out, c.want) {
			t.Errorf("check with attach %q: exit %d, output:\n%s\nwant a line with %q", c.attach, code, out, c.want)
		} else {
			t.Logf("check (attach %q): %s", c.attach, strings.TrimSpace(out[strings.Index(out, "attach:"):]))
		}
	}
}

// tcRouteTo: a route-to rule sends the echo connections through gw1, NATed to 10.2.0.2 (the
// host routes them via eth0).
func tcRouteTo(t *testing.T) {
	topo := newTopo(t)
	srv := startServers(t, topo)
	rule := routeToRule("echo via gw1", "tcp", int(srv.echoAddr().Port()), topo.GW1Addr.String())
	s := startShimCfg(t, topo, ConfigOptions{Mode: "load-balance", Attach: "tc", Extra: rule})
	checkAttached(t, s, "tc")
	srv.echo.Seen.Reset()
	ok, errs := TCPEchoMany(context.Background(), topo.Host, srv.echoAddr(), 40, 2, 3*time.Second)
	if ok != 40 {
		t.Errorf("route-to: %d/40 connections:%s", ok, firstErrs(errs, 5))
	}
	requireOnly(t, "route-to gw1 (NAT to 10.2.0.2)", srv.echo.Seen.Counts(), topo.HostAddr1, ok)
	if st := s.status(t); st.Datapath["nated"] == 0 {
		t.Errorf("status counts no NATed frame: %v", st.Datapath)
	}
	stopShim(t, s)
}

// tcFailover: probes every 200 ms, 3 misses; gw0's upstream cut silently: gw0 is declared
// down and every new connection goes through gw1; once restored, both take flows again.
func tcFailover(t *testing.T) {
	topo := newTopo(t)
	srv := startServers(t, topo)
	s := startShimCfg(t, topo, ConfigOptions{Mode: "load-balance", Attach: "tc", Extra: fastProbes, GatewayExtra: probeCfg(topo.ServerAddr)})
	checkAttached(t, s, "tc")
	waitGatewayState(t, s, topo.HostIf0, "up", 5*time.Second)
	requireSteering(t, topo, srv)
	if err := topo.CutUpstream(0); err != nil {
		t.Fatal(err)
	}
	cut := time.Now()
	waitGatewayState(t, s, topo.HostIf0, "down", 3*time.Second)
	t.Logf("MEASURED tc mode: gw0 declared down %v after its upstream was cut", time.Since(cut).Round(time.Millisecond))
	srv.echo.Seen.Reset()
	ok, errs := TCPEchoMany(context.Background(), topo.Host, srv.echoAddr(), 20, 2, time.Second)
	if ok != 20 {
		t.Errorf("with gw0 down: %d/20 connections:%s", ok, firstErrs(errs, 5))
	}
	requireOnly(t, "with gw0 down", srv.echo.Seen.Counts(), topo.HostAddr1, ok)
	if err := topo.RestoreUpstream(0); err != nil {
		t.Fatal(err)
	}
	waitGatewayState(t, s, topo.HostIf0, "up", 5*time.Second)
	spreadOK(t, "gw0 restored", topo, srv, 60, 2)
	stopShim(t, s)
}

// tcKill: after SIGKILL the tc filters stay, but new connections take the host's routing
// within 2 s (the heartbeat, 1 s, goes stale); `l2shim cleanup` removes the filters; a new
// l2shim replaces what is left and steers again, and its SIGTERM (no pinning) removes its
// filters.
func tcKill(t *testing.T) {
	topo := newTopo(t)
	srv := startServers(t, topo)
	s := startShimCfg(t, topo, ConfigOptions{Mode: "load-balance", Attach: "tc"})
	checkAttached(t, s, "tc")
	requireSteering(t, topo, srv)
	t0 := time.Now()
	if err := s.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	el, tries, err := FirstSuccess(context.Background(), topo.Host, srv.echoAddr(), t0, 150*time.Millisecond, 4*time.Second)
	if err != nil {
		t.Errorf("after SIGKILL: %v", err)
	} else {
		t.Logf("MEASURED tc mode: after SIGKILL the first new connection succeeded %v after the kill (attempt %d)", el.Round(time.Millisecond), tries)
		if el > 2*time.Second {
			t.Errorf("after SIGKILL: plain routing took %v, want <= 2s", el)
		}
	}
	if err := s.Wait(10 * time.Second); err != nil {
		t.Fatal(err)
	}
	if n, desc := l2shimFilters(t, topo); n != 4 {
		t.Errorf("after SIGKILL %d of l2shim's 4 filters are left; tc mode's filters outlive the process:\n%s", n, desc)
	} else {
		t.Logf("after SIGKILL the 4 filters are still attached; diverting stopped by the heartbeat")
	}
	plainRouting(t, "after SIGKILL, filters attached", topo, srv, 20)

	out := mustRun(t, topo.Host, needShim(t), "cleanup", "--pin-dir", "")
	t.Logf("%s", strings.TrimSpace(out))
	if !strings.Contains(out, "4 tc filters removed") {
		t.Errorf("cleanup: %q, want 4 tc filters removed", out)
	}
	if n, desc := l2shimFilters(t, topo); n != 0 {
		t.Errorf("%d of l2shim's filters left after cleanup:\n%s", n, desc)
	}
	if l, _ := topo.ShimLinks(); len(l) > 0 {
		t.Errorf("shim links left after cleanup: %v", l)
	}
	plainRouting(t, "after cleanup", topo, srv, 20)

	// Killed again, then a fresh start: it replaces the dead one's filters in place.
	s2 := startShimCfg(t, topo, ConfigOptions{Mode: "load-balance", Attach: "tc"})
	checkAttached(t, s2, "tc")
	if err := s2.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = s2.Wait(10 * time.Second)
	s3 := startShimCfg(t, topo, ConfigOptions{Mode: "load-balance", Attach: "tc"})
	checkAttached(t, s3, "tc")
	spreadOK(t, "restart after SIGKILL", topo, srv, 60, 2)
	stopShim(t, s3)
	if n, desc := l2shimFilters(t, topo); n != 0 {
		t.Errorf("%d of l2shim's filters left after SIGTERM without pinning:\n%s", n, desc)
	}
	if l, _ := topo.ShimLinks(); len(l) > 0 {
		t.Errorf("shim links left after clean stop of the restarted shim: %v", l)
	}
}
