// Command bench measures l2shim against the kernel alone on the integration
// topology, in one run, and prints lines of the form
//
//	bench: NAME shim=X kernel=Y ratio=Z UNIT
//
// ratio is shim/kernel. Higher is better for Gbit/s, kpps and conn/s; lower
// is better for %, µs and cpu-s/GB (there a ratio above 1 is l2shim's cost).
// Comment lines (#) say so, give the target for each line and
// whether it is met.
//
// What is measured (-duration D each, default 3 s):
//
//   - tcp_up, tcp_down, tcp_8streams: one TCP stream host → server (the
//     server counts what arrived), one server → host (the host counts), and
//     8 parallel streams host → server; Gbit/s of goodput. tcp_up_direct is
//     tcp_up on the direct path. The _gro lines repeat them with GRO on the
//     host's eth0 and eth1 (real NICs have it on; veth has it off).
//   - udp_small_up, udp_small_down: -udp-size (64) byte datagrams sent
//     unpaced (sendmmsg, 64 a call) for D, host → server and server → host;
//     kpps delivered to the receiving socket (recvmmsg) per second of
//     sending, and (_loss) the share of the datagrams the sending socket took
//     that never reached the receiving one, in %. The fast path carries a UDP
//     flow once a reply was seen, as real UDP protocols (DNS, QUIC, VPNs)
//     have one: each stream starts with a hello datagram the receiver's side
//     answers (for down the host sends the hello and the server then sends
//     to the source it saw), so the flow is confirmed; the rest of the stream
//     is not answered. udp_oneway is the up stream without the hello, never
//     answered: l2shim keeps such a flow in its slow path (user space), and
//     this line keeps that number visible.
//   - cpu_per_gb: -cpu-bytes (1 GB) host → server over TCP paced by the
//     sender at -cpu-rate (2 Gbit/s); the whole machine's busy CPU time
//     during the transfer (/proc/stat: user, nice, system, irq, softirq),
//     per 10^9 bytes. Everything on the machine counts (sender, receiver,
//     softirqs, l2shim, and anything else running): on a small shared VM it
//     is the honest measure; of the two transfers each side makes per round
//     the quieter counts.
//   - tcp_rr_p50, tcp_rr_p99: 32-byte request, 32-byte response, one at a
//     time on one connection (after 500 to warm up), at most -rr (20000)
//     exchanges within D; µs.
//   - tcp_crr: HTTP/1.0-like: a new connection per request (96 bytes), a
//     320-byte response, the server closes; 4 concurrent clients for D (at
//     most -crr connections); connections per second.
//   - restart_under_load: four 512 MiB downloads (two NATed on eth1, two
//     direct on eth0) while l2shim, pinned to a bpffs of its own, is stopped
//     by SIGTERM and started again; the downloads not byte-exact ("flows
//     lost"; the kernel alone has nothing to restart: 0). Once, after the
//     rounds.
//
// Paths. The kernel runs use the host's own routing: everything leaves
// through eth0 → gw0. In the l2shim runs (mode load-balance) strict
// route-to rules pin the servers' ports to an uplink: "nat" (eth1 → gw1, the
// source NATed to 10.2.0.2: diversion plus rewrite), used by every line
// without a path in its name, and "direct" (eth0, the host's own choice, no
// NAT: the cost of the diversion alone), the _direct lines. The servers
// record the source address they see and every measurement checks it, so no
// number comes from the wrong path.
//
// Runs. Each round takes the measurements one after the other, and each
// measurement runs back to back on the kernel alone, l2shim (its fast path
// on, the default, started for that measurement) and l2shim with
// --no-fast-path (every frame in user space, for reference: the TCP bulk and
// UDP lines once more, suffixed _slowpath, against the same kernel numbers),
// the order alternating from one to the next: on a shared VM the machine's
// speed drifts over tens of seconds, and the sides of one line are measured
// within seconds of each other. Each line prints the pair of its median
// round over -rounds (3): the rounds ordered by how l2shim did against the
// kernel in each (ratio, or difference for % and µs), of two middle ones the
// worse. A round's ratio is free of the drift; the median of one lucky or
// unlucky round. (Each side's best round, which this printed before, paired
// numbers measured a minute apart: the kernel alone gave 25.6 and 14.0
// Gbit/s in two rounds of one run.) A comment line per measurement lists
// every round's pair, and every value is logged to stderr as it is measured. The bulk and UDP streams'
// threads are bound to CPUs (see -pin). Before each measurement the
// bench waits while integration tests run (pgrep -f integration.test), up to
// -max-wait in all, and a measurement during which tests started is taken
// again (twice at most).
//
// l2shim runs with --pin-dir "": each run starts with an empty kernel side
// and leaves nothing behind, so no run measures another's flows.
//
// On veth the kernel-only path runs almost entirely in the sender's softirq
// context on one CPU, while through l2shim's slow path the work is split
// between the sender's CPU and the shim's thread, so other load on a small
// machine hurts the kernel run more: ratios above 1 seen under load are
// artifacts of that, not speed-ups. Run it on an otherwise idle machine.
//
// Needs root. Progress goes to stderr, result lines to stdout. -only RE
// runs only the measurements whose name matches.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"math"
	"net/netip"
	"os"
	"os/signal"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/l2shim/l2shim/integration"
)

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "bench: "+format+"\n", args...)
}

// side is one of the three configurations each round measures.
type side int

const (
	kernelSide side = iota // no l2shim: the host's routing
	shimSide               // l2shim with its fast path (the default)
	slowSide               // l2shim --no-fast-path
	nSides
)

func (s side) String() string {
	return [...]string{"kernel", "l2shim", "l2shim --no-fast-path"}[s]
}

// val is one measured number.
type val struct {
	name string
	v    float64
}

// step is one measurement, giving one or more values.
type step struct {
	name string
	gro  bool // GRO on on the host's eth0 and eth1 during the step
	slow bool // also measured with --no-fast-path
	run  func(e *env, path func(port uint16) netip.Addr) ([]val, error)
}

func steps() []step {
	tcpUp := func(name string, direct bool, streams int) func(e *env, path func(uint16) netip.Addr) ([]val, error) {
		return func(e *env, path func(uint16) netip.Addr) ([]val, error) {
			srv, port := e.srv.sink, uint16(portSink)
			if direct {
				srv, port = e.srv.sinkDirect, portSinkDirect
			}
			g, err := e.tcpUp(srv, port, streams, path(port))
			return []val{{name, g}}, err
		}
	}
	tcpDown := func(name string) func(e *env, path func(uint16) netip.Addr) ([]val, error) {
		return func(e *env, path func(uint16) netip.Addr) ([]val, error) {
			g, err := e.tcpDown(path(portSource))
			return []val{{name, g}}, err
		}
	}
	udp := func(name string, f func(e *env, want netip.Addr) (udpResult, error)) func(e *env, path func(uint16) netip.Addr) ([]val, error) {
		return func(e *env, path func(uint16) netip.Addr) ([]val, error) {
			r, err := f(e, path(portUDP))
			return []val{{name, r.kpps}, {name + "_loss", r.loss}}, err
		}
	}
	s := []step{
		{name: "tcp_up", slow: true, run: tcpUp("tcp_up", false, 1)},
		{name: "tcp_up_direct", slow: true, run: tcpUp("tcp_up_direct", true, 1)},
		{name: "tcp_down", slow: true, run: tcpDown("tcp_down")},
		{name: "tcp_8streams", slow: true, run: tcpUp("tcp_8streams", false, 8)},
		{name: "udp_small_up", slow: true, run: udp("udp_small_up", func(e *env, w netip.Addr) (udpResult, error) { return e.udpUp(true, w) })},
		{name: "udp_small_down", slow: true, run: udp("udp_small_down", func(e *env, w netip.Addr) (udpResult, error) { return e.udpDown(w) })},
		{name: "udp_oneway", run: udp("udp_oneway", func(e *env, w netip.Addr) (udpResult, error) { return e.udpUp(false, w) })},
		{name: "tcp_rr", run: func(e *env, path func(uint16) netip.Addr) ([]val, error) {
			p50, p99, err := e.rr(path(portRR))
			return []val{{"tcp_rr_p50", p50}, {"tcp_rr_p99", p99}}, err
		}},
		{name: "tcp_crr", run: func(e *env, path func(uint16) netip.Addr) ([]val, error) {
			r, err := e.crr(path(portCRR))
			return []val{{"tcp_crr", r}}, err
		}},
		{name: "cpu_per_gb", run: func(e *env, path func(uint16) netip.Addr) ([]val, error) {
			// Twice, keeping the lower: the machine's busy time counts whatever
			// else runs, and a shorter quiet window is likelier than a long one.
			best := math.Inf(1)
			for i := 0; i < 2; i++ {
				r, err := e.cpuPerGB(path(portSink))
				if err != nil {
					return nil, err
				}
				best = min(best, r)
			}
			return []val{{"cpu_per_gb", best}}, nil
		}},
		{name: "tcp_up_gro", gro: true, slow: true, run: tcpUp("tcp_up_gro", false, 1)},
		{name: "tcp_up_direct_gro", gro: true, slow: true, run: tcpUp("tcp_up_direct_gro", true, 1)},
		{name: "tcp_down_gro", gro: true, slow: true, run: tcpDown("tcp_down_gro")},
		{name: "tcp_8streams_gro", gro: true, slow: true, run: tcpUp("tcp_8streams_gro", false, 8)},
	}
	return s
}

// line is one output line: a value's name, unit, direction and target.
type line struct {
	name, unit string
	lower      bool                            // lower is better
	diff       bool                            // l2shim is judged by shim - kernel, not the ratio
	target     string                          // the target, in words ("" none)
	met        func(shim, kernel float64) bool // nil: no target
}

func atLeast(f float64) func(s, k float64) bool { return func(s, k float64) bool { return s >= f*k } }

func lines() []line {
	var ls []line
	for _, n := range []string{"tcp_up", "tcp_up_direct", "tcp_down", "tcp_8streams", "tcp_up_gro", "tcp_up_direct_gro", "tcp_down_gro", "tcp_8streams_gro"} {
		ls = append(ls, line{name: n, unit: "Gbit/s", target: "ratio >= 0.95", met: atLeast(0.95)})
	}
	for _, k := range l3Kinds {
		up, down := l3Names(k)
		for _, n := range []string{up, down} {
			ls = append(ls, line{name: n, unit: "Gbit/s", target: "ratio >= 0.95", met: atLeast(0.95)})
		}
	}
	for _, n := range []string{"udp_small_up", "udp_small_down"} {
		ls = append(ls,
			line{name: n, unit: "kpps", target: "ratio >= 0.90", met: atLeast(0.9)},
			line{name: n + "_loss", unit: "%", lower: true, diff: true, target: "shim <= kernel + 1 point", met: func(s, k float64) bool { return s <= k+1 }})
	}
	ls = append(ls,
		line{name: ipv6Up, unit: "Gbit/s", target: "ratio >= 0.95", met: atLeast(0.95)},
		line{name: ipv6Down, unit: "Gbit/s", target: "ratio >= 0.95", met: atLeast(0.95)},
		line{name: "udp_oneway", unit: "kpps"},
		line{name: "udp_oneway_loss", unit: "%", lower: true, diff: true},
		line{name: "cpu_per_gb", unit: "cpu-s/GB", lower: true, target: "ratio <= 1.10", met: func(s, k float64) bool { return s <= 1.1*k }},
		line{name: "tcp_rr_p50", unit: "µs", lower: true, diff: true, target: "shim <= kernel + 5 µs", met: func(s, k float64) bool { return s <= k+5 }},
		line{name: "tcp_rr_p99", unit: "µs", lower: true, diff: true},
		line{name: "tcp_crr", unit: "conn/s", target: "ratio >= 0.80", met: atLeast(0.8)},
		line{name: "restart_under_load", unit: "flows lost", lower: true, target: "0 flows lost", met: func(s, _ float64) bool { return s == 0 }},
	)
	return ls
}

type config struct {
	shimBin    string
	dur        time.Duration
	rounds     int
	udpSize    int
	rrMax      int
	crrMax     int
	crrWorkers int
	cpuBytes   int64
	cpuRate    float64
	maxWait    time.Duration
	slowpath   bool
	only       *regexp.Regexp
	verbose    bool
	place      placement
	caps       []string // l2shim's capabilities (nil: all of root's)
}

func main() {
	var c config
	flag.StringVar(&c.shimBin, "shim", "", "l2shim binary (default: build ./cmd/l2shim into a temp dir)")
	flag.DurationVar(&c.dur, "duration", 3*time.Second, "length of each throughput, request/response and connection-rate measurement")
	flag.IntVar(&c.rounds, "rounds", 3, "rounds; each takes every measurement on the kernel, l2shim and l2shim --no-fast-path back to back (alternating order); each line prints its median pair")
	flag.IntVar(&c.udpSize, "udp-size", 64, "UDP payload size in bytes")
	flag.IntVar(&c.rrMax, "rr", 20000, "request/response exchanges at most (within -duration)")
	flag.IntVar(&c.crrMax, "crr", 50000, "connections at most in the connection-rate test (within -duration)")
	flag.IntVar(&c.crrWorkers, "crr-clients", 4, "concurrent clients in the connection-rate test")
	cpuGB := flag.Float64("cpu-bytes", 1, "volume of the paced transfer the CPU cost is measured on, in GB (10^9 bytes)")
	cpuRate := flag.Float64("cpu-rate", 2, "rate of the paced transfer, in Gbit/s")
	flag.DurationVar(&c.maxWait, "max-wait", 20*time.Minute, "how long to wait in all for running integration tests to finish")
	flag.BoolVar(&c.slowpath, "slowpath", true, "also measure l2shim --no-fast-path (the _slowpath lines)")
	only := flag.String("only", "", "run only the measurements whose name matches this regexp (e.g. 'tcp_up|udp')")
	flag.BoolVar(&c.verbose, "v", false, "stream l2shim's output to stderr")
	fullCaps := flag.Bool("full-caps", false, "run l2shim with all of root's capabilities, not only the systemd unit's (with CAP_PERFMON the kernel loads the programs without its Spectre barriers)")
	flag.BoolVar(&c.place.on, "pin", true, "bind each bulk and UDP stream's sender and receiver threads to CPUs 0 and 1 (the same in every run)")
	flag.Parse()
	c.cpuBytes = int64(*cpuGB * 1e9)
	if !*fullCaps {
		c.caps = integration.UnitCapabilities()
	}
	c.cpuRate = *cpuRate * 1e9
	if *only != "" {
		re, err := regexp.Compile(*only)
		if err != nil {
			fmt.Fprintf(os.Stderr, "bench: -only: %v\n", err)
			os.Exit(2)
		}
		c.only = re
	}
	if err := run(c); err != nil {
		fmt.Fprintf(os.Stderr, "bench: %v\n", err)
		os.Exit(1)
	}
}

func run(c config) error {
	if os.Geteuid() != 0 {
		return fmt.Errorf("needs root (network namespaces, veths, eBPF)")
	}
	c.rounds = max(c.rounds, 1)
	if c.dur < time.Second || c.dur > time.Minute {
		return fmt.Errorf("-duration %v: want 1s to 1m", c.dur)
	}
	if c.udpSize < 1 || c.udpSize > 1400 || c.rrMax < 1000 || c.crrMax < 1 || c.crrWorkers < 1 || c.crrWorkers > 64 ||
		c.cpuBytes < 1e7 || c.cpuRate < 1e7 || float64(c.cpuBytes)*8/c.cpuRate > 60 {
		return errors.New("a size or rate flag is out of range")
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	began := time.Now()

	if c.shimBin == "" {
		dir, err := os.MkdirTemp("", "l2shim-bench-bin-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(dir)
		logf("building ./cmd/l2shim")
		if c.shimBin, err = integration.BuildShim(dir); err != nil {
			return err
		}
	} else if abs, err := filepath.Abs(c.shimBin); err == nil {
		c.shimBin = abs
	}

	g := &gate{budget: c.maxWait}
	if err := g.wait(ctx); err != nil {
		return err
	}
	if gone := integration.CleanupStale("l2b"); len(gone) > 0 {
		logf("removed namespaces left by dead bench runs: %v", gone)
	}
	topo, err := integration.NewTopology(integration.Options{Prefix: "l2b"})
	if err != nil {
		return err
	}
	defer topo.Close()
	srv, err := startServers(topo, c.place)
	if err != nil {
		return err
	}
	cfgDir, err := os.MkdirTemp("", "l2shim-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(cfgDir)
	cfg := topo.Config(integration.ConfigOptions{Mode: "load-balance", Control: filepath.Join(cfgDir, "l2shim.sock"), Extra: benchRules()})

	e := &env{ctx: ctx, topo: topo, srv: srv, dur: c.dur, place: c.place, udpSize: c.udpSize, rrMax: c.rrMax,
		crrWorkers: c.crrWorkers, crrMax: c.crrMax, cpuBytes: c.cpuBytes, cpuRate: c.cpuRate}
	var todo []step
	for _, s := range steps() {
		if c.only == nil || c.only.MatchString(s.name) {
			todo = append(todo, s)
		}
	}
	restart := c.only == nil || c.only.MatchString("restart_under_load")
	var l3 []integration.LinkKind
	for _, k := range l3Kinds {
		up, down := l3Names(k)
		if c.only == nil || c.only.MatchString(up) || c.only.MatchString(down) {
			l3 = append(l3, k)
		}
	}
	ipv6 := c.only == nil || c.only.MatchString(ipv6Up) || c.only.MatchString(ipv6Down)
	if len(todo) == 0 && !restart && len(l3) == 0 && !ipv6 {
		return errors.New("-only matches no measurement")
	}

	res := newResults()
	var failures []string
	keep := func(sd side, round int, v val) {
		name := v.name
		if sd == slowSide {
			name += "_slowpath"
		}
		logf("%s %s=%.2f", sd, name, v.v)
		res.add(sd, name, round, v.v)
	}

	// runSide measures steps on one side: a fresh l2shim for the shim
	// sides, stopped at the end.
	runSide := func(round int, sd side, steps []step) error {
		if sd == slowSide && !c.slowpath {
			return nil
		}
		if sd == slowSide && !slices.ContainsFunc(steps, func(s step) bool { return s.slow }) {
			return nil
		}
		var shim *integration.Shim
		path := func(uint16) netip.Addr { return topo.HostAddr0 }
		e.shimPid = 0
		if sd != kernelSide {
			if err := g.wait(ctx); err != nil {
				return err
			}
			// Nothing pinned: every l2shim run starts with an empty kernel
			// side, and none leaves flows behind for the next run.
			o := integration.ShimOptions{Dir: cfgDir, Args: []string{"--pin-dir", ""}, Capabilities: c.caps}
			if sd == slowSide {
				o.Args = append(o.Args, "--no-fast-path")
			}
			if c.verbose {
				o.Tee = func(s string) { os.Stderr.WriteString(s) }
			}
			sctx, cancel := context.WithTimeout(ctx, integration.DefaultStartTimeout)
			var err error
			shim, err = topo.StartShimWith(sctx, c.shimBin, cfg, o)
			cancel()
			if err != nil {
				return err
			}
			e.shimPid = shim.Pid()
			path = func(port uint16) netip.Addr {
				if port >= directLo && port <= directHi {
					return topo.HostAddr0
				}
				return topo.HostAddr1
			}
			logf("round %d: %s running (pid %d)", round+1, sd, shim.Pid())
		} else {
			logf("round %d: kernel alone (host routing: eth0 -> gw0)", round+1)
		}
		gro := false
		setGRO := func(on bool) error {
			if on == gro {
				return nil
			}
			for _, ifn := range []string{topo.HostIf0, topo.HostIf1} {
				if err := integration.SetGRO(topo.Host, ifn, on); err != nil {
					return err
				}
			}
			gro = on
			return nil
		}
		var sideErr error
		for _, s := range steps {
			if sd == slowSide && !s.slow {
				continue
			}
			if err := setGRO(s.gro); err != nil {
				sideErr = err
				break
			}
			vals, err := measure(ctx, g, fmt.Sprintf("round %d %s %s", round+1, sd, s.name), func() ([]val, error) { return s.run(e, path) })
			if ctx.Err() != nil {
				sideErr = ctx.Err()
				break
			}
			if err != nil {
				if errors.Is(err, errWaitBudget) {
					sideErr = err
					break
				}
				failures = append(failures, fmt.Sprintf("round %d, %s, %s: %v", round+1, sd, s.name, err))
				logf("FAILED: %s on %s: %v", s.name, sd, err)
				continue
			}
			for _, v := range vals {
				keep(sd, round, v)
			}
		}
		if err := setGRO(false); err != nil && sideErr == nil {
			sideErr = err
		}
		if shim != nil {
			if err := shim.Stop(); err != nil && sideErr == nil {
				sideErr = err
			}
			if t := shim.Totals(); t != nil {
				var parts []string
				for _, k := range []string{"frames_in", "frames_out", "flows_now", "send_full", "truncated", "send_errors", "capture_drops_eth0", "capture_drops_eth1"} {
					if v, ok := t[k]; ok {
						parts = append(parts, k+"="+v)
					}
				}
				for k, v := range t {
					if strings.HasPrefix(k, "drop_") && v != "0" {
						parts = append(parts, k+"="+v)
					}
				}
				logf("%s totals: %s", sd, strings.Join(parts, " "))
			}
		}
		return sideErr
	}

	logf("topology %s, %d round(s), %v per measurement", topo.ID, c.rounds, c.dur)
	for r := 0; r < c.rounds && len(todo) > 0; r++ {
		for i, s := range todo {
			order := []side{kernelSide, shimSide, slowSide}
			if (r+i)%2 == 1 {
				order = []side{slowSide, shimSide, kernelSide}
			}
			for _, sd := range order {
				if err := runSide(r, sd, []step{s}); err != nil {
					return fmt.Errorf("round %d, %s, %s: %w", r+1, sd, s.name, err)
				}
			}
		}
	}

	for _, k := range l3 {
		if err := l3Bench(ctx, c, g, k, keep); err != nil {
			failures = append(failures, err.Error())
			logf("FAILED: %v", err)
		}
	}
	if ipv6 {
		if err := ipv6Bench(ctx, c, g, keep); err != nil {
			failures = append(failures, err.Error())
			logf("FAILED: %v", err)
		}
	}

	if restart {
		if err := g.wait(ctx); err != nil {
			return err
		}
		logf("restart_under_load: 4 downloads of %d MiB while l2shim restarts (SIGTERM, pinned)", restartSize>>20)
		lost, err := restartUnderLoad(ctx, c.shimBin, c.caps, cfg, cfgDir, topo)
		if err != nil {
			failures = append(failures, fmt.Sprintf("restart_under_load: %v", err))
		} else {
			res.add(shimSide, "restart_under_load", 0, float64(lost))
			res.add(kernelSide, "restart_under_load", 0, 0)
		}
	}

	report(os.Stdout, res, c, topo.ID, time.Since(began), g.waited)
	if len(failures) > 0 {
		for _, f := range failures {
			fmt.Printf("# FAILED %s\n", f)
		}
		return fmt.Errorf("%d measurement(s) failed", len(failures))
	}
	return nil
}

// measure runs fn once no integration test runs, and again (twice at most)
// when one started meanwhile: such a number is worth nothing.
func measure(ctx context.Context, g *gate, what string, fn func() ([]val, error)) ([]val, error) {
	for attempt := 1; ; attempt++ {
		if err := g.wait(ctx); err != nil {
			return nil, err
		}
		logf("%s", what)
		vals, err := fn()
		if attempt < 3 && ctx.Err() == nil && g.busy(ctx) {
			logf("%s: integration tests started meanwhile; measuring again", what)
			continue
		}
		return vals, err
	}
}

func report(w *os.File, res results, c config, topo string, took, waited time.Duration) {
	fmt.Fprintf(w, "# l2shim bench, topology %s: kernel alone (eth0) vs l2shim (nat: eth1, source NATed; direct: eth0), %d round(s) of back-to-back pairs, %v each; each line is its median pair; took %v (%v waiting for integration tests)\n",
		topo, c.rounds, c.dur, took.Round(time.Second), waited.Round(time.Second))
	fmt.Fprintf(w, "# ratio = shim/kernel; higher is better for Gbit/s, kpps, conn/s; LOWER is better for %%, µs and cpu-s/GB (cpu_per_gb: ratio = shim/kernel CPU per GB, lower is better); _loss ratio is - when the kernel lost nothing\n")
	var verdicts, rounds []string
	emit := func(l line, name string, sd side, judge bool) {
		s, k, all, ok := res.medianPair(l, sd, name)
		if !ok {
			return
		}
		rounds = append(rounds, "# rounds "+name+": "+all)
		ratio := "-"
		if k != 0 {
			ratio = fmt.Sprintf("%.2f", s/k)
		}
		prec := 2
		switch l.unit {
		case "kpps", "µs", "%":
			prec = 1
		case "conn/s", "flows lost":
			prec = 0
		}
		fmt.Fprintf(w, "bench: %s shim=%.*f kernel=%.*f ratio=%s %s\n", name, prec, s, prec, k, ratio, l.unit)
		if judge && l.met != nil && !math.IsNaN(s) {
			verdict := "NOT MET"
			if l.met(s, k) {
				verdict = "met"
			}
			exact := "-"
			if k != 0 {
				exact = fmt.Sprintf("%.3f", s/k)
			}
			verdicts = append(verdicts, fmt.Sprintf("# target %s: %s (shim=%.*f kernel=%.*f ratio=%s): %s", name, l.target, prec+1, s, prec+1, k, exact, verdict))
		}
	}
	for _, l := range lines() {
		emit(l, l.name, shimSide, true)
	}
	for _, l := range lines() {
		emit(l, l.name+"_slowpath", slowSide, false)
	}
	for _, v := range rounds {
		fmt.Fprintln(w, v)
	}
	for _, v := range verdicts {
		fmt.Fprintln(w, v)
	}
}
