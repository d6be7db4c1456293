package integration

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"strings"
	"time"
)

// demoEnv is what each demo step works with.
type demoEnv struct {
	w    io.Writer
	topo *Topology
	srv  servers
	shim *Shim
	bin  string
	dir  string
}

// RunDemo builds a throwaway two-uplink topology (namespaces named l2d*),
// runs l2shim (shimBin; empty: this executable) in its host namespace with a
// built-in config, drives traffic, prints how flows spread over the uplinks
// and removes everything again, also when ctx is cancelled (ctrl-C).
func RunDemo(ctx context.Context, w io.Writer, shimBin string) (err error) {
	if os.Geteuid() != 0 {
		return errors.New("demo: needs root (it creates network namespaces, veths and eBPF programs)")
	}
	if shimBin == "" {
		if shimBin, err = os.Executable(); err != nil {
			return err
		}
	}
	p := func(format string, args ...any) { fmt.Fprintf(w, format+"\n", args...) }

	if gone := CleanupStale("l2d"); len(gone) > 0 {
		p("l2shim demo: removed namespaces left by an earlier demo that was killed: %v", gone)
	}
	p("l2shim demo: building a throwaway topology in network namespaces ...")
	topo, err := NewTopology(Options{Prefix: "l2d"})
	if err != nil {
		return fmt.Errorf("demo: topology: %w", err)
	}
	env := &demoEnv{w: w, topo: topo, bin: shimBin}
	defer func() {
		p("")
		if ctx.Err() != nil {
			p("interrupted: cleaning up ...")
		} else {
			p("cleaning up ...")
		}
		if env.shim != nil && !env.shim.Exited() {
			if serr := env.shim.Stop(); serr != nil && err == nil {
				err = fmt.Errorf("demo: stopping l2shim: %w", serr)
			}
		}
		topo.Close()
		if env.dir != "" {
			os.RemoveAll(env.dir)
		}
		p("removed namespaces %s-{host,gw0,gw1,server}; nothing was changed outside them.", "l2d"+topo.ID)
	}()

	p("")
	p("    host (netns %s)", topo.Host.Name)
	p("    eth0 %-15s ----- gw0 %-9s (ISP A) ---+", topo.HostAddr0.String()+"/24", topo.GW0Addr)
	p("    eth1 %-15s ----- gw1 %-9s (ISP B) ---+--- server %s", topo.HostAddr1.String()+"/24", topo.GW1Addr, topo.ServerAddr)
	p("    default via %s dev eth0", topo.GW0Addr)
	p("    gw0 and gw1 drop packets whose source is not on their LAN, as ISPs do.")

	if env.srv, err = topo.startServers(); err != nil {
		return err
	}

	steps := []struct {
		title string
		run   func(context.Context, *demoEnv) error
	}{
		{"without l2shim: the host routes everything through eth0", demoBaseline},
		{"starting l2shim (mode load-balance) in the host namespace", demoStartShim},
		{"with l2shim: 100 TCP connections and 100 UDP flows from the host", demoSpread},
		{"cutting uplink A silently: gw0 forwards nothing any more, but still answers ARP", demoUplinkFailure},
		{"restoring uplink A", demoUplinkRecovery},
		{"stopping l2shim (SIGTERM): hooks detached, its veths deleted", demoStopShim},
	}
	for i, s := range steps {
		if err := ctx.Err(); err != nil {
			return err
		}
		p("\nstep %d: %s", i+1, s.title)
		if err := s.run(ctx, env); err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return fmt.Errorf("demo step %d (%s): %w", i+1, s.title, err)
		}
	}
	return nil
}

func demoBaseline(ctx context.Context, e *demoEnv) error {
	e.srv.echo.Seen.Reset()
	ok, errs := TCPEchoMany(ctx, e.topo.Host, e.srv.echo.Addr, 20, 2, 3*time.Second)
	if ok != 20 {
		return fmt.Errorf("%d/20 TCP connections succeeded: %v", ok, errors.Join(errs...))
	}
	demoTable(e, e.srv.echo.Seen.Counts(), nil)
	fmt.Fprintf(e.w, "    every connection left through eth0; eth1's uplink sits idle.\n")
	return nil
}

func demoStartShim(ctx context.Context, e *demoEnv) error {
	dir, err := os.MkdirTemp("", "l2shim-demo-")
	if err != nil {
		return err
	}
	e.dir = dir
	cfg := e.topo.Config(ConfigOptions{
		Mode:         "load-balance",
		Control:      dir + "/l2shim.sock",
		GatewayExtra: probeCfg(e.topo.ServerAddr),
		Extra:        fastProbes,
	})
	fmt.Fprintf(e.w, "    config:\n")
	for _, l := range strings.Split(strings.TrimSpace(cfg), "\n") {
		fmt.Fprintf(e.w, "%s\n", strings.TrimRight("      "+l, " "))
	}
	sctx, cancel := context.WithTimeout(ctx, DefaultStartTimeout)
	defer cancel()
	s, err := e.topo.StartShimWith(sctx, e.bin, cfg, ShimOptions{Dir: dir})
	if s != nil {
		e.shim = s
	}
	if err != nil {
		return err
	}
	fmt.Fprintf(e.w, "    l2shim running (pid %d); the host's routes and addresses are unchanged.\n", s.Pid())
	return nil
}

func demoSpread(ctx context.Context, e *demoEnv) error {
	e.srv.echo.Seen.Reset()
	e.srv.udp.Seen.Reset()
	ok, errs := TCPEchoMany(ctx, e.topo.Host, e.srv.echo.Addr, 100, 4, 3*time.Second)
	res := UDPExchange(ctx, e.topo.Host, e.srv.udp.Addr, 100, 2, time.Second)
	demoTable(e, e.srv.echo.Seen.Counts(), e.srv.udp.Seen.Counts())
	if ok != 100 {
		return fmt.Errorf("%d/100 TCP connections succeeded: %v", ok, errors.Join(errs...))
	}
	if res.Answered != 100 {
		return fmt.Errorf("%d/100 UDP requests answered: %v", res.Answered, errors.Join(res.Errors...))
	}
	fmt.Fprintf(e.w, "    flows through eth1 were NATed to %s, so gw1 accepts them; replies came back to the\n", e.topo.HostAddr1)
	fmt.Fprintf(e.w, "    host as if they had arrived on eth0. Each flow keeps its uplink for its whole life.\n")
	return nil
}

func demoStopShim(ctx context.Context, e *demoEnv) error {
	if e.shim == nil {
		return nil
	}
	if err := e.shim.Stop(); err != nil {
		return err
	}
	links, _ := e.topo.ShimLinks()
	n, _, _ := e.topo.hostTCXPrograms()
	fmt.Fprintf(e.w, "    l2shim exited 0; l2s* links left: %d, TCX programs left on eth0/eth1: %d\n", len(links), n)
	return nil
}

// demoTable prints, per uplink, how many flows the server saw from that
// uplink's address.
func demoTable(e *demoEnv, tcp, udp map[netip.Addr]int) {
	total := func(m map[netip.Addr]int) int {
		n := 0
		for _, v := range m {
			n += v
		}
		return n
	}
	tt, ut := total(tcp), total(udp)
	cell := func(m map[netip.Addr]int, a netip.Addr, t int) string {
		if m == nil {
			return ""
		}
		if t == 0 {
			return fmt.Sprintf("%4d", 0)
		}
		return fmt.Sprintf("%4d %5.1f%%", m[a], 100*float64(m[a])/float64(t))
	}
	line := func(a, b, c, d string) {
		fmt.Fprintf(e.w, "%s\n", strings.TrimRight(fmt.Sprintf("    %-22s %-12s %-12s %s", a, b, c, d), " "))
	}
	udpHead := ""
	if udp != nil {
		udpHead = "udp"
	}
	line("uplink", "source", "tcp", udpHead)
	rows := []struct {
		name string
		addr netip.Addr
	}{
		{e.topo.HostIf0 + " via " + e.topo.GW0Addr.String(), e.topo.HostAddr0},
		{e.topo.HostIf1 + " via " + e.topo.GW1Addr.String(), e.topo.HostAddr1},
	}
	for _, r := range rows {
		line(r.name, r.addr.String(), cell(tcp, r.addr, tt), cell(udp, r.addr, ut))
	}
	other := 0
	for a, v := range tcp {
		if a != e.topo.HostAddr0 && a != e.topo.HostAddr1 {
			other += v
		}
	}
	if other > 0 {
		fmt.Fprintf(e.w, "    (server also saw unexpected sources: %s)\n", FormatCounts(tcp))
	}
}

// demoUplinkFailure blackholes gw0's upstream (a dead ISP behind a live
// modem), shows connections made meanwhile, the probes noticing, and new
// connections all landing on uplink B at once.
func demoUplinkFailure(ctx context.Context, e *demoEnv) error {
	mark := e.shim.LogMark()
	if err := e.topo.CutUpstream(0); err != nil {
		return err
	}
	cut := time.Now()
	fmt.Fprintf(e.w, "    (gw0's default route is now a blackhole: no ICMP, no link change, nothing to see on the LAN)\n")
	// Connections the host starts while l2shim has not noticed yet: one every
	// 100 ms until the probes declare gw0 down (at most 3 s).
	type res struct {
		d   time.Duration
		err error
	}
	results := make(chan res, 64)
	started := 0
	var line string
	var downAt time.Time
	for time.Since(cut) < 3*time.Second && started < 30 {
		if l, at, err := e.shim.WaitLog(mark, 0, "gateway down", "gateway=eth0"); err == nil {
			line, downAt = l, at
			break
		}
		started++
		go func() {
			start := time.Now()
			err := TCPEcho(ctx, e.topo.Host, e.srv.echo.Addr, []byte("during the outage"), 4500*time.Millisecond)
			results <- res{time.Since(start), err}
		}()
		time.Sleep(100 * time.Millisecond)
	}
	if line == "" {
		l, at, err := e.shim.WaitLog(mark, 2*time.Second, "gateway down", "gateway=eth0")
		if err != nil {
			return err
		}
		line, downAt = l, at
	}
	fmt.Fprintf(e.w, "    l2shim declared gw0 down %v after the cut (probes every 200 ms, 3 misses in a row):\n", downAt.Sub(cut).Round(time.Millisecond))
	fmt.Fprintf(e.w, "      %s\n", LogAttrs(line)["reason"])
	var worst time.Duration
	failed := 0
	for i := 0; i < started; i++ {
		r := <-results
		if r.err != nil {
			failed++
		}
		worst = max(worst, r.d)
	}
	fmt.Fprintf(e.w, "    %d connections started before that: %d succeeded, the slowest in %v (those placed on gw0\n", started, started-failed, worst.Round(time.Millisecond))
	fmt.Fprintf(e.w, "    went through gw1 from a retransmitted SYN on: rotated, or placed anew once gw0 was down).\n")

	e.srv.echo.Seen.Reset()
	start := time.Now()
	ts := TimedEchoes(ctx, e.topo.Host, netip.Addr{}, e.srv.echo.Addr, 100, 4, 3*time.Second)
	ok, slowest, _, errs := TimingStats(ts)
	demoTable(e, e.srv.echo.Seen.Counts(), nil)
	fmt.Fprintf(e.w, "    %d/100 new connections in %v, the slowest %v: all through uplink B, none waits for a dead path.\n",
		ok, time.Since(start).Round(time.Millisecond), slowest.Round(time.Millisecond))
	if ok != 100 {
		return fmt.Errorf("%d/100 connections failed: %v", 100-ok, errors.Join(errs...))
	}
	if n := e.srv.echo.Seen.Count(e.topo.HostAddr0); n != 0 {
		return fmt.Errorf("%d connections went through the dead uplink A", n)
	}
	return nil
}

// demoUplinkRecovery restores gw0's upstream and shows it taking new flows
// again once its probes are answered.
func demoUplinkRecovery(ctx context.Context, e *demoEnv) error {
	mark := e.shim.LogMark()
	if err := e.topo.RestoreUpstream(0); err != nil {
		return err
	}
	back := time.Now()
	_, upAt, err := e.shim.WaitLog(mark, 5*time.Second, "gateway up", "gateway=eth0")
	if err != nil {
		return err
	}
	fmt.Fprintf(e.w, "    l2shim saw gw0 answer its probes again %v after the repair (3 good rounds in a row).\n", upAt.Sub(back).Round(time.Millisecond))
	e.srv.echo.Seen.Reset()
	ok, errs := TCPEchoMany(ctx, e.topo.Host, e.srv.echo.Addr, 100, 4, 3*time.Second)
	demoTable(e, e.srv.echo.Seen.Counts(), nil)
	if ok != 100 {
		return fmt.Errorf("%d/100 TCP connections succeeded: %v", ok, errors.Join(errs...))
	}
	if e.srv.echo.Seen.Count(e.topo.HostAddr0) == 0 {
		return errors.New("uplink A took no new flows after it came back")
	}
	fmt.Fprintf(e.w, "    new flows spread over both uplinks again; nobody restarted anything.\n")
	return nil
}
