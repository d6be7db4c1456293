package integration

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// ReadyMarker is what l2shim logs (slog text) once everything is attached.
const ReadyMarker = "msg=running"

// DefaultStartTimeout bounds how long StartShim waits for ReadyMarker when the
// context has no earlier deadline.
const DefaultStartTimeout = 30 * time.Second

// ConfigOptions describe a config for the standard topology.
type ConfigOptions struct {
	Mode    string // "load-balance" (default), "failover", "off"
	Control string // status socket path; default: TMPDIR/l2shim-ID.sock
	// Extra is appended verbatim (e.g. [failover] tuning, [[rule]]s).
	Extra string
	// ShimExtra is inserted into the [shim] table (e.g. `heartbeat = "1s"`).
	ShimExtra string
	// GatewayExtra[i] is inserted into gateway i's [[gateway]] table (e.g.
	// `probe = ["203.0.113.10"]`).
	GatewayExtra [2]string
	// PeerAddress[i] gives the gateway of an L3 uplink its address; without it the
	// gateway is its interface alone (`interface = "ppp1"`), as such a link allows.
	PeerAddress [2]bool
	// RunArgs are added to `l2shim run` (e.g. --no-fast-path); not part of the file.
	RunArgs []string
	// Bin, when set, is the l2shim binary to run instead of the one under test (an upgrade).
	Bin string
	// Attach is [shim] attach ("tcx", "tc", "auto"); "" leaves it out (auto), unless the
	// environment's L2SHIM_TEST_ATTACH says otherwise (see startShimCfg).
	Attach string
}

// Config returns an l2shim TOML config for the topology: two gateways, eth0
// via 10.1.0.1 first and eth1 via 10.2.0.1, MACs resolved with ARP; a gateway
// on an L3 uplink is its interface alone (see PeerAddress).
func (t *Topology) Config(o ConfigOptions) string {
	if o.Mode == "" {
		o.Mode = "load-balance"
	}
	if o.Control == "" {
		o.Control = filepath.Join(os.TempDir(), "l2shim-"+t.ID+".sock")
	}
	var b strings.Builder
	fmt.Fprintf(&b, "[shim]\nmode = %q\ncontrol = %q\n", o.Mode, o.Control)
	if o.Attach != "" {
		fmt.Fprintf(&b, "attach = %q\n", o.Attach)
	}
	if o.ShimExtra != "" {
		b.WriteString(strings.TrimSpace(o.ShimExtra) + "\n")
	}
	for i, g := range []struct {
		ifname  string
		addr    string
		comment string
	}{{t.HostIf0, t.GW0Addr.String(), "uplink A (gw0)"}, {t.HostIf1, t.GW1Addr.String(), "uplink B (gw1)"}} {
		if t.UplinkKind(i) != LinkVeth && !o.PeerAddress[i] {
			fmt.Fprintf(&b, "\n[[gateway]]\ninterface = %q\ncomment = %q\n", g.ifname, g.comment)
		} else {
			fmt.Fprintf(&b, "\n[[gateway]]\ninterface = %q\naddress = %q\ncomment = %q\n", g.ifname, g.addr, g.comment)
		}
		if x := strings.TrimSpace(o.GatewayExtra[i]); x != "" {
			b.WriteString(x + "\n")
		}
	}
	if o.Extra != "" {
		b.WriteString("\n" + strings.TrimSpace(o.Extra) + "\n")
	}
	return b.String()
}

// failoverTable returns a [failover] table of the given `key = value` lines.
func failoverTable(kv ...string) string {
	return "[failover]\n" + strings.Join(kv, "\n")
}

// fastProbes is the [failover] table of a config that notices a dead uplink
// quickly: a probe round every 200 ms, a gateway down after 3 missed rounds.
const fastProbes = "[failover]\nprobe_interval = \"200ms\"\nprobe_misses = 3"

// probeLine is the [[gateway]] key that makes a gateway probe target.
func probeLine(target netip.Addr) string { return fmt.Sprintf("probe = [%q]", target) }

// probeCfg is the GatewayExtra that makes both gateways probe target.
func probeCfg(target netip.Addr) [2]string {
	p := probeLine(target)
	return [2]string{p, p}
}

// Shim is an l2shim child process (`ip netns exec HOST BIN run -c FILE`;
// ip execs the binary, so the process is l2shim itself).
type Shim struct {
	ConfigPath string

	cmd  *exec.Cmd
	out  *outBuf
	done chan struct{}
	err  error // from Wait, valid after done
	dir  string
}

// outBuf collects the child's combined output and notices ReadyMarker.
type outBuf struct {
	mu    sync.Mutex
	buf   bytes.Buffer
	ready chan struct{}
	seen  bool
	tee   func(string)
}

func (o *outBuf) Write(p []byte) (int, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	start := o.buf.Len() - len(ReadyMarker)
	if start < 0 {
		start = 0
	}
	o.buf.Write(p)
	if !o.seen && bytes.Contains(o.buf.Bytes()[start:], []byte(ReadyMarker)) {
		o.seen = true
		close(o.ready)
	}
	if o.tee != nil {
		o.tee(string(p))
	}
	return len(p), nil
}

func (o *outBuf) String() string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.buf.String()
}

// ShimOptions tune StartShimWith.
type ShimOptions struct {
	// Tee receives the child's output as it arrives (e.g. for -v logs).
	Tee func(string)
	// Dir holds the config file; default: a new temp dir, removed at Stop.
	Dir string
	// Args are added to `l2shim run`.
	Args []string
	// Capabilities, when set, are the only ones l2shim runs with (through setpriv(1)): see
	// UnitCapabilities.
	Capabilities []string
}

// UnitCapabilities are the capabilities the systemd unit (dist/l2shim.service) leaves l2shim,
// its CapabilityBoundingSet; dist's TestUnit keeps the two the same. Without
// CAP_PERFMON the verifier refuses some programs root may load and adds Spectre barriers to
// the others, so tests and the bench run l2shim with these.
func UnitCapabilities() []string {
	return []string{"CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_BPF"}
}

// setprivArgs returns the setpriv(1) command that runs what follows with only caps.
func setprivArgs(caps []string) []string {
	var set []string
	for _, c := range caps {
		set = append(set, "+"+strings.ToLower(strings.TrimPrefix(c, "CAP_")))
	}
	only := "-all," + strings.Join(set, ",")
	return []string{"setpriv", "--inh-caps=" + only, "--ambient-caps=" + only, "--bounding-set=" + only}
}

// StartShim writes config to a temp file, starts `bin run -c FILE` in the
// host namespace and waits for ReadyMarker, bounded by ctx (or
// DefaultStartTimeout). The topology's Close stops it if nobody else does.
func (t *Topology) StartShim(ctx context.Context, bin, config string) (*Shim, error) {
	return t.StartShimWith(ctx, bin, config, ShimOptions{})
}

// StartShimWith is StartShim with options.
func (t *Topology) StartShimWith(ctx context.Context, bin, config string, o ShimOptions) (*Shim, error) {
	t.mu.Lock()
	closed := t.closed
	t.mu.Unlock()
	if closed {
		return nil, errors.New("topology closed")
	}
	dir := o.Dir
	ownDir := false
	if dir == "" {
		d, err := os.MkdirTemp("", "l2shim-"+t.ID+"-")
		if err != nil {
			return nil, err
		}
		dir, ownDir = d, true
	}
	cfg := filepath.Join(dir, "l2shim.toml")
	if err := os.WriteFile(cfg, []byte(config), 0o600); err != nil {
		return nil, err
	}
	s := &Shim{
		ConfigPath: cfg,
		out:        &outBuf{ready: make(chan struct{}), tee: o.Tee},
		done:       make(chan struct{}),
	}
	if ownDir {
		s.dir = dir
	}
	// Not CommandContext: the shim outlives the start context.
	args := []string{"netns", "exec", t.Host.Name}
	if len(o.Capabilities) > 0 {
		args = append(args, setprivArgs(o.Capabilities)...)
	}
	args = append(append(args, bin, "run", "-c", cfg), o.Args...)
	s.cmd = exec.Command("ip", args...)
	s.cmd.Stdout = s.out
	s.cmd.Stderr = s.out
	s.cmd.WaitDelay = 2 * time.Second
	s.cmd.SysProcAttr = &syscall.SysProcAttr{
		Setpgid: true, // a terminal's ctrl-C reaches us, we stop the shim in order
		// If this process dies without cleaning up, the shim gets SIGTERM and
		// detaches (the namespaces are left for `ip netns del`).
		Pdeathsig: syscall.SIGTERM,
	}
	if err := s.cmd.Start(); err != nil {
		s.cleanupDir()
		return nil, fmt.Errorf("start %s: %w", bin, err)
	}
	go func() {
		s.err = s.cmd.Wait()
		close(s.done)
	}()
	t.mu.Lock()
	t.shims = append(t.shims, s)
	t.mu.Unlock()

	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, DefaultStartTimeout)
		defer cancel()
	}
	select {
	case <-s.out.ready:
		return s, nil
	case <-s.done:
		return s, fmt.Errorf("l2shim exited before %q (%v); output:\n%s", ReadyMarker, s.err, s.Output())
	case <-ctx.Done():
		s.terminate(5 * time.Second)
		return s, fmt.Errorf("l2shim not ready (%q not logged): %w; output:\n%s", ReadyMarker, ctx.Err(), s.Output())
	}
}

// Pid is the shim's process id.
func (s *Shim) Pid() int { return s.cmd.Process.Pid }

// Output returns everything the shim wrote to stdout and stderr so far.
func (s *Shim) Output() string { return s.out.String() }

// Done is closed when the process has exited.
func (s *Shim) Done() <-chan struct{} { return s.done }

// Exited reports whether the process has exited.
func (s *Shim) Exited() bool {
	select {
	case <-s.done:
		return true
	default:
		return false
	}
}

// ExitCode is the exit code (-1 if killed by a signal or still running).
func (s *Shim) ExitCode() int {
	if !s.Exited() {
		return -1
	}
	return s.cmd.ProcessState.ExitCode()
}

func (s *Shim) signal(sig syscall.Signal) error {
	if s.Exited() {
		return fmt.Errorf("l2shim already exited (%v)", s.err)
	}
	return s.cmd.Process.Signal(sig)
}

// Signal sends sig to the shim.
func (s *Shim) Signal(sig syscall.Signal) error { return s.signal(sig) }

// Pause stops the process (SIGSTOP): a hung shim.
func (s *Shim) Pause() error { return s.signal(syscall.SIGSTOP) }

// Resume continues a paused process (SIGCONT).
func (s *Shim) Resume() error { return s.signal(syscall.SIGCONT) }

// Wait waits up to timeout for the process to exit.
func (s *Shim) Wait(timeout time.Duration) error {
	select {
	case <-s.done:
		return nil
	case <-time.After(timeout):
		return fmt.Errorf("l2shim (pid %d) still running after %v", s.Pid(), timeout)
	}
}

// Stop sends SIGTERM (and SIGCONT, in case it is paused), waits up to 15 s,
// and reports an error unless the shim exited with status 0. A shim that does
// not exit in time is killed.
func (s *Shim) Stop() error {
	return s.StopTimeout(15 * time.Second)
}

// StopTimeout is Stop with a custom wait.
func (s *Shim) StopTimeout(timeout time.Duration) error {
	defer s.cleanupDir()
	if s.Exited() {
		return fmt.Errorf("l2shim had already exited (%v); output:\n%s", s.err, s.Output())
	}
	if !s.sigterm(timeout) {
		return fmt.Errorf("l2shim did not exit within %v of SIGTERM (killed); output:\n%s", timeout, s.Output())
	}
	if s.err != nil {
		return fmt.Errorf("l2shim exit after SIGTERM: %v; output:\n%s", s.err, s.Output())
	}
	return nil
}

// sigterm sends SIGTERM (and SIGCONT, in case the shim is paused) and waits
// up to timeout for it to exit; one still running then is killed. It
// reports whether the shim exited in time.
func (s *Shim) sigterm(timeout time.Duration) bool {
	s.cmd.Process.Signal(syscall.SIGTERM)
	s.cmd.Process.Signal(syscall.SIGCONT)
	select {
	case <-s.done:
		return true
	case <-time.After(timeout):
		s.Kill()
		return false
	}
}

// Kill sends SIGKILL and waits for the process to be gone.
func (s *Shim) Kill() error {
	defer s.cleanupDir()
	if s.Exited() {
		return fmt.Errorf("l2shim had already exited (%v)", s.err)
	}
	if err := s.cmd.Process.Kill(); err != nil {
		return err
	}
	select {
	case <-s.done:
		return nil
	case <-time.After(10 * time.Second):
		return errors.New("l2shim not reaped 10 s after SIGKILL")
	}
}

// terminate is the best-effort stop used by cleanup paths.
func (s *Shim) terminate(timeout time.Duration) {
	defer s.cleanupDir()
	if !s.Exited() {
		s.sigterm(timeout)
	}
}

func (s *Shim) cleanupDir() {
	if s.dir != "" && s.Exited() {
		os.RemoveAll(s.dir)
	}
}

// LogMark returns the length of the shim's output so far: LogLines and
// WaitLog given this mark look only at what is logged afterwards.
func (s *Shim) LogMark() int {
	s.out.mu.Lock()
	defer s.out.mu.Unlock()
	return s.out.buf.Len()
}

// LogLines returns the complete lines of output from mark on (0: all) that
// contain every one of subs.
func (s *Shim) LogLines(mark int, subs ...string) []string {
	out := s.Output()
	if mark > len(out) {
		mark = len(out)
	}
	// Back to the start of the line mark falls in: a mark taken mid-line
	// must not hide that line's end.
	if i := strings.LastIndexByte(out[:mark], '\n'); i >= 0 {
		mark = i + 1
	} else {
		mark = 0
	}
	rest := out[mark:]
	if i := strings.LastIndexByte(rest, '\n'); i >= 0 {
		rest = rest[:i]
	} else {
		return nil
	}
	var lines []string
next:
	for _, l := range strings.Split(rest, "\n") {
		for _, sub := range subs {
			if !strings.Contains(l, sub) {
				continue next
			}
		}
		lines = append(lines, l)
	}
	return lines
}

// WaitLog waits up to timeout for a line logged from mark on that contains
// every one of subs, and returns it with the time it was logged (the line's
// own time= when it has one, else when it was seen).
func (s *Shim) WaitLog(mark int, timeout time.Duration, subs ...string) (string, time.Time, error) {
	deadline := time.Now().Add(timeout)
	for {
		seen := time.Now()
		if l := s.LogLines(mark, subs...); len(l) > 0 {
			if at, ok := LogTime(l[0]); ok {
				return l[0], at, nil
			}
			return l[0], seen, nil
		}
		if s.Exited() {
			return "", time.Time{}, fmt.Errorf("l2shim exited (%v) without logging %q", s.err, strings.Join(subs, " ... "))
		}
		if time.Now().After(deadline) {
			return "", time.Time{}, fmt.Errorf("l2shim did not log %q within %v", strings.Join(subs, " ... "), timeout)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// LogTime returns the time= attribute of a slog text line.
func LogTime(line string) (time.Time, bool) {
	v, ok := LogAttrs(line)["time"]
	if !ok {
		return time.Time{}, false
	}
	for _, layout := range []string{time.RFC3339Nano, "2006-01-02T15:04:05.000Z07:00"} {
		if t, err := time.Parse(layout, v); err == nil {
			return t, true
		}
	}
	return time.Time{}, false
}

// LogAttrs splits a slog text line (key=value key="quoted value" ...) into
// its attributes.
func LogAttrs(line string) map[string]string {
	m := map[string]string{}
	for i := 0; i < len(line); {
		for i < len(line) && line[i] == ' ' {
			i++
		}
		eq := strings.IndexByte(line[i:], '=')
		if eq < 0 {
			break
		}
		key := line[i : i+eq]
		i += eq + 1
		var val string
		if i < len(line) && line[i] == '"' {
			j := i + 1
			for j < len(line) && line[j] != '"' {
				if line[j] == '\\' {
					j++
				}
				j++
			}
			if uq, err := strconv.Unquote(line[i:min(j+1, len(line))]); err == nil {
				val = uq
			} else {
				val = line[i:min(j+1, len(line))]
			}
			i = j + 1
		} else {
			j := strings.IndexByte(line[i:], ' ')
			if j < 0 {
				j = len(line) - i
			}
			val = line[i : i+j]
			i += j
		}
		m[key] = val
	}
	return m
}

// Totals returns the attributes of the last "totals" line l2shim logged
// (at stop), or nil.
func (s *Shim) Totals() map[string]string {
	l := s.LogLines(0, "msg=totals")
	if len(l) == 0 {
		return nil
	}
	return LogAttrs(l[len(l)-1])
}
