package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"
)

// userHZ is the unit of /proc/stat and /proc/PID/stat times (USER_HZ, 100
// on every Linux architecture Go supports).
const userHZ = 100

// machineBusy returns the busy time of all CPUs since boot, in seconds, from
// /proc/stat's first line: user (which includes guest), nice, system, irq
// and softirq; idle, iowait and steal (time the hypervisor gave to others)
// are not busy.
func machineBusy() (float64, error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, err
	}
	line, _, _ := bytes.Cut(b, []byte("\n"))
	f := strings.Fields(string(line))
	if len(f) < 8 || f[0] != "cpu" {
		return 0, fmt.Errorf("/proc/stat: unexpected first line %q", line)
	}
	var busy uint64
	for _, i := range []int{1, 2, 3, 6, 7} { // user nice system irq softirq
		v, err := strconv.ParseUint(f[i], 10, 64)
		if err != nil {
			return 0, fmt.Errorf("/proc/stat: %q: %w", line, err)
		}
		busy += v
	}
	return float64(busy) / userHZ, nil
}

// procCPU returns a process's user and system time in seconds (0 for pid 0).
func procCPU(pid int) (float64, error) {
	if pid <= 0 {
		return 0, nil
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name (field 2) may hold spaces: fields count from after ')'.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, errors.New("bad /proc/PID/stat")
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0, errors.New("short /proc/PID/stat")
	}
	u, err1 := strconv.ParseUint(f[11], 10, 64) // utime, field 14
	s, err2 := strconv.ParseUint(f[12], 10, 64) // stime, field 15
	if err := errors.Join(err1, err2); err != nil {
		return 0, err
	}
	return float64(u+s) / userHZ, nil
}

// testsRunning returns the pids of running integration test binaries, as
// `pgrep -f integration.test` finds them. The pattern's dot is bracketed so
// it matches only a literal dot: not integration_test.go in an editor's
// command line, nor a shell whose command line holds the pattern.
func testsRunning(ctx context.Context) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "pgrep", "-f", "integration[.]test").Output()
	var ee *exec.ExitError
	if errors.As(err, &ee) && ee.ExitCode() == 1 {
		return "", nil // none
	}
	if err != nil {
		return "", fmt.Errorf("pgrep: %w", err)
	}
	return strings.Join(strings.Fields(string(out)), ","), nil
}

// gate keeps measurements away from integration test runs: the two would
// disturb each other on a small machine. It waits while a test binary runs,
// up to budget in all for the whole bench.
type gate struct {
	budget time.Duration
	waited time.Duration
}

const gatePoll = 5 * time.Second

// errWaitBudget: the bench waited as long as it may for integration tests.
var errWaitBudget = errors.New("waited -max-wait in all for integration tests")

// wait returns once no integration test binary runs, or an error when the
// bench's waiting budget is spent or ctx ends.
func (g *gate) wait(ctx context.Context) error {
	for i := 0; ; i++ {
		pids, err := testsRunning(ctx)
		if err != nil {
			return err
		}
		if pids == "" {
			if i > 0 {
				logf("integration tests done; measuring again")
			}
			return nil
		}
		if g.waited >= g.budget {
			return fmt.Errorf("%w: integration tests (pid %s) still running after %v", errWaitBudget, pids, g.waited.Round(time.Second))
		}
		if i == 0 {
			logf("integration tests are running (pid %s): waiting (%v of %v spent)", pids, g.waited.Round(time.Second), g.budget)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(gatePoll):
		}
		g.waited += gatePoll
	}
}

// busy reports whether an integration test binary runs now.
func (g *gate) busy(ctx context.Context) bool {
	pids, err := testsRunning(ctx)
	return err == nil && pids != ""
}
