package fastpath

import (
	"os"
	"runtime"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/l2shim/l2shim/integration"
	"golang.org/x/sys/unix"
)

// unitCapabilities returns the capabilities the systemd unit leaves l2shim
// (integration.UnitCapabilities, which dist's TestUnit keeps equal to the unit), as a bit set.
func unitCapabilities(t testing.TB) uint64 {
	t.Helper()
	known := map[string]uint{"CAP_NET_ADMIN": unix.CAP_NET_ADMIN, "CAP_NET_RAW": unix.CAP_NET_RAW, "CAP_BPF": unix.CAP_BPF}
	var set uint64
	for _, name := range integration.UnitCapabilities() {
		c, ok := known[name]
		if !ok {
			t.Fatalf("the unit grants %s: teach this test its number", name)
		}
		set |= 1 << c
	}
	return set
}

// withCapabilities runs fn on an OS thread that holds only the capabilities in set.
// Capabilities are a thread's: the thread stays locked, so it exits with fn's goroutine and no
// other goroutine ever runs on it.
func withCapabilities(set uint64, fn func() error) error {
	done := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
		data := [2]unix.CapUserData{
			{Effective: uint32(set), Permitted: uint32(set)},
			{Effective: uint32(set >> 32), Permitted: uint32(set >> 32)},
		}
		if err := unix.Capset(&hdr, &data[0]); err != nil {
			done <- err
			return
		}
		done <- fn()
	}()
	return <-done
}

// TestLoadWithUnitCapabilities: the programs load with only what the systemd unit gives l2shim.
// Without CAP_PERFMON the verifier refuses packet pointer arithmetic at a variable offset,
// which clang may emit for code that reads at constant offsets (two copies merged into one),
// and adds Spectre barriers; tests otherwise run as full root and would not see either.
func TestLoadWithUnitCapabilities(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("loading BPF programs needs root")
	}
	caps := unitCapabilities(t)
	err := withCapabilities(caps, func() error {
		var c [2]unix.CapUserData
		if err := unix.Capget(&unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}, &c[0]); err != nil {
			return err
		}
		if got := uint64(c[0].Effective) | uint64(c[1].Effective)<<32; got != caps {
			t.Errorf("effective capabilities %#x, want %#x", got, caps)
		}
		k, err := Load(Options{Mark: 0xa0, Mask: 0xf0, Heartbeat: time.Second, MaxFlows: 64})
		if err != nil {
			return err
		}
		defer k.Close()
		for name, p := range map[string]*ebpf.Program{"egress": k.Egress(), "ingress": k.Ingress()} {
			if n, ok := barriers(p); ok {
				t.Logf("MEASURED %s: %d Spectre barriers in the verified program", name, n)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("load with the unit's capabilities (%#x): %v", caps, err)
	}
}

// barriers counts the speculation barriers (BPF_ST | BPF_NOSPEC) the verifier put in p.
func barriers(p *ebpf.Program) (int, bool) {
	info, err := p.Info()
	if err != nil {
		return 0, false
	}
	insns, err := info.Instructions()
	if err != nil {
		return 0, false
	}
	n := 0
	for _, ins := range insns {
		if ins.OpCode == asm.OpCode(0xc2) {
			n++
		}
	}
	return n, true
}
