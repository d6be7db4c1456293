package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime"
	"runtime/pprof"
	"syscall"
	"time"

	"github.com/l2shim/l2shim/conf"
	"github.com/l2shim/l2shim/control"
	"github.com/l2shim/l2shim/fastpath"
	"github.com/l2shim/l2shim/shim"
)

// Exit codes, the same for every command (docs/commands.md).
const (
	exitOK      = 0
	exitRuntime = 1
	exitUsage   = 2
)

// version is stamped in by the build: `make build` and `make deb` pass
// -ldflags "-X main.version=VERSION", the Debian version dist/version.sh derives from
// `git describe` (see dist/README.md). A plain `go build` leaves "devel".
var version = "devel"

const usage = `usage: l2shim COMMAND [flags]

commands:
  run -c FILE      attach to the configured interfaces and run until SIGINT/SIGTERM
  check -c FILE [--pin-dir DIR]
                   validate FILE and the host it would run on; print every problem
  status [-s SOCKET] [--json]
                   the gateway table, rule counters and datapath counters of a running l2shim
  drain NAME [--reset] [-s SOCKET]
                   no new flows through gateway NAME; --reset also resets its TCP flows
  undrain NAME [-s SOCKET]
                   let gateway NAME take new flows again
  reload [-s SOCKET]
                   apply the config file again, as SIGHUP does; a bad file is refused
  flows [--json] [--gateway NAME] [--addr ADDR|CIDR] [--port N] [--proto P] [--state S]
        [--limit N] [--sort bytes] [-s SOCKET]
                   the flow table: tuples as the host and the wire see them, gateway,
                   state, age, counters, and why each flow has its gateway
  explain [--json] [--in] [--interface IF] [--via GW] PROTO SRC[:PORT] DST[:PORT]
                   which gateway a new flow (IPv4, or IPv6 as [ADDR]:PORT) would get now,
                   and every step that decides it
  top [--once] [-s SOCKET]
                   a live view: gateways' rates and last minute, the busiest flows
  events [--json] [--follow] [-n N] [-s SOCKET]
                   the last state changes (gateways, drains, flows reset or moved, reloads)
  cleanup [--pin-dir DIR] [-s SOCKET]
                   remove what an l2shim left (pinned hooks and maps, capture veths);
                   refused while the l2shim of SOCKET runs
  demo             build a throwaway two-uplink topology and show l2shim at work (root)
  version          print l2shim's version, its Go version and platform

exit codes: 0 success, 1 runtime failure, 2 bad usage or config
`

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return exitUsage
	}
	switch args[0] {
	case "run":
		return cmdRun(args[1:], stderr)
	case "check":
		return cmdCheck(args[1:], stdout, stderr)
	case "demo":
		return cmdDemo(args[1:], stdout, stderr)
	case "cleanup":
		return cmdCleanup(args[1:], stdout, stderr)
	case "status", "reload", "drain", "undrain":
		return cmdControl(args[0], args[1:], stdout, stderr)
	case "flows":
		return cmdFlows(args[1:], stdout, stderr)
	case "explain":
		return cmdExplain(args[1:], stdout, stderr)
	case "top":
		return cmdTop(args[1:], stdout, stderr)
	case "events":
		return cmdEvents(args[1:], stdout, stderr)
	case "version", "--version", "-version":
		fmt.Fprintf(stdout, "l2shim %s %s %s/%s\n", version, runtime.Version(), runtime.GOOS, runtime.GOARCH)
		return exitOK
	case "-h", "--help", "help":
		fmt.Fprint(stdout, usage)
		return exitOK
	}
	fmt.Fprintf(stderr, "l2shim: unknown command %q\n\n%s", args[0], usage)
	return exitUsage
}

// loadAndCheck loads the file and checks it against this host. It prints every error and
// returns nil when there were any.
// TCX programs of an earlier l2shim, pinned in pinDir, are its own, not foreign ones.
func loadAndCheck(path, pinDir string, stderr io.Writer) (*conf.Config, []string) {
	cfg, warnings, _ := loadAndCheckMode(path, pinDir, stderr)
	return cfg, warnings
}

// loadAndCheckMode is loadAndCheck that also returns the attach mode the kernel gets.
func loadAndCheckMode(path, pinDir string, stderr io.Writer) (*conf.Config, []string, fastpath.Mode) {
	cfg, err := conf.Load(path)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return nil, nil, ""
	}
	errs, warnings := cfg.CheckHost(shim.PinnedHost(pinDir))
	mode, err := shim.CheckKernel(cfg.Shim.Attach)
	if err != nil {
		errs = append(errs, &conf.Error{File: path, Msg: err.Error()})
	}
	if len(errs) > 0 {
		for _, w := range warnings {
			fmt.Fprintf(stderr, "warning: %s\n", w)
		}
		fmt.Fprintln(stderr, errs)
		return nil, nil, ""
	}
	return cfg, warnings, mode
}

func configFlag(name string, args []string, stderr io.Writer, extra ...func(*flag.FlagSet)) (*flag.FlagSet, *string, *string, error) {
	fs := flag.NewFlagSet("l2shim "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	file := fs.String("c", "/etc/l2shim/l2shim.toml", "configuration `FILE`")
	logFormat := fs.String("log-format", "text", "log format: text or json")
	for _, e := range extra {
		e(fs)
	}
	if err := fs.Parse(args); err != nil {
		return nil, nil, nil, err
	}
	if fs.NArg() > 0 {
		return nil, nil, nil, fmt.Errorf("l2shim %s: unexpected argument %q", name, fs.Arg(0))
	}
	return fs, file, logFormat, nil
}

func cmdCheck(args []string, stdout, stderr io.Writer) int {
	var pinDir string
	_, file, _, err := configFlag("check", args, stderr, func(fs *flag.FlagSet) {
		fs.StringVar(&pinDir, "pin-dir", defaultPinDir, "bpffs `DIR` where `run` pins (its hooks there are l2shim's own, not foreign programs)")
	})
	if err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(stderr, err)
		}
		return exitUsage
	}
	cfg, warnings, attach := loadAndCheckMode(*file, pinDir, stderr)
	if cfg == nil {
		return exitUsage
	}
	for _, w := range warnings {
		fmt.Fprintf(stdout, "warning: %s\n", w)
	}
	fmt.Fprintf(stdout, "%s: OK (%d gateways on %d interfaces, mode %s)\n", *file, len(cfg.Gateways), len(cfg.Interfaces()), cfg.Shim.Mode)
	fmt.Fprintf(stdout, "attach: %s (attach = %q): %s\n", attach, cfg.Shim.Attach, shim.FailOpen(attach, cfg.Shim.Heartbeat))
	return exitOK
}

func newLogger(format string, w io.Writer) (*slog.Logger, error) {
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(w, nil)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, nil)), nil
	}
	return nil, fmt.Errorf("unknown log format %q (text or json)", format)
}

// defaultPinDir is where run pins the kernel side and cleanup looks for it.
const defaultPinDir = "/sys/fs/bpf/l2shim"

func cmdCleanup(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("l2shim cleanup", flag.ContinueOnError)
	fs.SetOutput(stderr)
	pinDir := fs.String("pin-dir", defaultPinDir, "bpffs `DIR` the kernel side was pinned in")
	sock := fs.String("s", conf.DefaultControl, "control `SOCKET` of the l2shim whose leftovers to remove (refused while it runs)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK
		}
		return exitUsage
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "l2shim cleanup: unexpected argument %q\n", fs.Arg(0))
		return exitUsage
	}
	r, err := shim.Cleanup(*pinDir, *sock)
	if errors.Is(err, shim.ErrRunning) {
		fmt.Fprintln(stderr, "l2shim cleanup:", err)
		return exitRuntime
	}
	fmt.Fprintf(stdout, "l2shim cleanup: %d pinned hooks detached, %d tc filters removed, %d veths removed\n", r.Links, r.Filters, len(r.Veths))
	if err != nil {
		fmt.Fprintln(stderr, "l2shim cleanup:", err)
		return exitRuntime
	}
	return exitOK
}

func cmdRun(args []string, stderr io.Writer) int {
	var cpuProfile, pinDir string
	var slowPathOnly bool
	_, file, logFormat, err := configFlag("run", args, stderr, func(fs *flag.FlagSet) {
		fs.StringVar(&cpuProfile, "cpuprofile", "", "write a Go CPU profile of the run to `FILE` (for developers)")
		fs.BoolVar(&slowPathOnly, "no-fast-path", false, "keep every frame in user space: the kernel carries no flow (for diagnosis and measurement)")
		fs.StringVar(&pinDir, "pin-dir", defaultPinDir, "bpffs `DIR` where the kernel side is pinned so flows survive a restart, an upgrade or a crash (\"\": none)")
	})
	if err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(stderr, err)
		}
		return exitUsage
	}
	log, err := newLogger(*logFormat, stderr)
	if err != nil {
		fmt.Fprintln(stderr, "l2shim run:", err)
		return exitUsage
	}
	// SIGHUP is caught from here on (its default would end the process) and applied once the
	// shim runs; see forwardReloads.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	cfg, warnings := loadAndCheck(*file, pinDir, stderr)
	if cfg == nil {
		return exitUsage
	}
	for _, w := range warnings {
		log.Warn(w)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	sh := shim.New(cfg, shim.Options{Log: log, SlowPathOnly: slowPathOnly, PinDir: pinDir})
	done := make(chan struct{})
	defer close(done)
	// Reload logs its outcome, errors included; the running config stays on error.
	go forwardReloads(hup, sh.Ready(), done, log, func() { _, _ = sh.Reload() })
	if cpuProfile != "" {
		f, err := os.Create(cpuProfile)
		if err != nil {
			fmt.Fprintln(stderr, "l2shim run:", err)
			return exitUsage
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			fmt.Fprintln(stderr, "l2shim run:", err)
			return exitRuntime
		}
		defer pprof.StopCPUProfile()
	}
	if err := sh.Run(ctx); err != nil {
		log.Error("l2shim stopped", "err", err)
		return exitRuntime
	}
	return exitOK
}

// How long SIGHUPs kept from starting settle before their one reload (see forwardReloads).
const (
	reloadSettle    = 50 * time.Millisecond
	reloadSettleMax = time.Second
)

// forwardReloads calls reload for every SIGHUP on hup until done is closed. A SIGHUP that
// arrives before ready (the shim is still attaching) is kept and applied once it runs: the file
// may have changed after it was read at start, and a reload then would find half-built state.
func forwardReloads(hup <-chan os.Signal, ready, done <-chan struct{}, log *slog.Logger, reload func()) {
	pending := false
	for waiting := true; waiting; {
		select {
		case <-hup:
			if !pending {
				log.Info("SIGHUP while starting: the file is read again once l2shim runs")
			}
			pending = true
		case <-ready:
			waiting = false
		case <-done:
			return
		}
	}
	// A SIGHUP still queued arrived while starting (select picks ready at random when both
	// are ready): it is kept too.
	for queued := true; queued; {
		select {
		case <-hup:
			pending = true
		default:
			queued = false
		}
	}
	// The kept SIGHUPs, and those that follow them within reloadSettle of each other (a
	// sender's last ones, which Go delivers to hup a moment after the kernel took them), make
	// one reload, which reads the file after all of them. The settling ends after
	// reloadSettleMax at most, so a steady stream of SIGHUPs cannot hold it off.
	if pending {
		settle := time.NewTimer(reloadSettle)
		deadline := time.After(reloadSettleMax)
		for settling := true; settling; {
			select {
			case <-hup:
				settle.Reset(reloadSettle)
			case <-settle.C:
				// One that came before the timer (select picks at random) still joins.
				select {
				case <-hup:
					settle.Reset(reloadSettle)
				default:
					settling = false
				}
			case <-deadline:
				settling = false
			case <-done:
				return
			}
		}
		reload()
	}
	for {
		select {
		case <-hup:
			reload()
		case <-done:
			return
		}
	}
}

func cmdDemo(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("l2shim demo", flag.ContinueOnError)
	fs.SetOutput(stderr)
	if err := fs.Parse(args); err != nil {
		return exitUsage
	}
	if os.Geteuid() != 0 {
		fmt.Fprintln(stderr, "l2shim demo: needs root (it creates network namespaces)")
		return exitRuntime
	}
	exe, err := os.Executable()
	if err != nil {
		fmt.Fprintln(stderr, "l2shim demo:", err)
		return exitRuntime
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := runDemo(ctx, stdout, exe); err != nil {
		fmt.Fprintln(stderr, "l2shim demo:", err)
		return exitRuntime
	}
	return exitOK
}

// cmdControl talks to a running instance through its control socket.
func cmdControl(name string, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("l2shim "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	sock := fs.String("s", conf.DefaultControl, "control `SOCKET` of the running l2shim")
	asJSON := fs.Bool("json", false, "status: print JSON for scripts")
	reset := fs.Bool("reset", false, "drain: also reset the gateway's TCP flows toward the host")
	// Flags may come after the gateway name too: `l2shim drain isp-a --reset`.
	var pos []string
	for len(args) > 0 {
		if err := fs.Parse(args); err != nil {
			return exitUsage
		}
		args = fs.Args()
		if len(args) > 0 {
			pos = append(pos, args[0])
			args = args[1:]
		}
	}
	req := control.Request{Command: name}
	switch name {
	case "drain", "undrain":
		if len(pos) != 1 {
			fmt.Fprintf(stderr, "usage: l2shim %s NAME [-s SOCKET]%s\n", name, map[bool]string{true: " [--reset]"}[name == "drain"])
			return exitUsage
		}
		req.Gateway, req.Reset = pos[0], *reset
	default:
		if len(pos) > 0 {
			fmt.Fprintf(stderr, "l2shim %s: unexpected argument %q\n", name, pos[0])
			return exitUsage
		}
	}
	resp, err := control.Call(*sock, req, 10*time.Second)
	if err != nil {
		fmt.Fprintf(stderr, "l2shim %s: %v\n", name, err)
		return exitRuntime
	}
	switch {
	case name == "status" && *asJSON:
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(resp.Status); err != nil {
			return exitRuntime
		}
	case name == "status":
		if err := control.WriteTable(stdout, resp.Status, time.Now()); err != nil {
			return exitRuntime
		}
	default:
		fmt.Fprintln(stdout, resp.Message)
	}
	return exitOK
}
