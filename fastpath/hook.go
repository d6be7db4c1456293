package fastpath

import (
	"errors"
	"fmt"
	"math"
	"sync"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/rlimit"
	"golang.org/x/sys/unix"
)

// Mode is how the programs are attached to an interface's hooks.
type Mode string

const (
	// ModeTCX attaches TCX links (Linux 6.6 or later). A link not pinned belongs to the
	// process: when it dies, even by SIGKILL, the kernel detaches it.
	ModeTCX Mode = "tcx"
	// ModeTC attaches direct-action cls_bpf filters under a clsact qdisc, at the head of the
	// chain (see TCPriority). The filters outlive the process: fail-open rests on the
	// heartbeat, and the next start or Cleanup replaces or removes them.
	ModeTC Mode = "tc"
)

// Hook is one program on one hook (ingress or egress) of one interface, however attached.
type Hook interface {
	// Close lets go of the hook: a TCX link that is not pinned detaches; a pinned link and a
	// tc filter stay attached (the next l2shim replaces them in place).
	Close() error
	// Detach takes the program off its hook for good.
	Detach() error
}

// tcxHook is a TCX link.
type tcxHook struct{ l link.Link }

func (h tcxHook) Close() error { return h.l.Close() }

func (h tcxHook) Detach() error {
	_ = h.l.Unpin()
	return h.l.Close()
}

// ErrNoTCX is HaveTCX's answer on a kernel without TCX.
var ErrNoTCX = errors.New("this kernel has no TCX (Linux 6.6 or later)")

// HaveTCX reports whether this kernel attaches TCX links (nil), and if not why: ErrNoTCX, or
// an error saying that BPF is not allowed here. It loads a two-instruction program and
// attaches it to an interface that does not exist: a kernel with TCX answers ENODEV.
func HaveTCX() error {
	raiseMemlock()
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Type:         ebpf.SchedCLS,
		License:      "MIT",
		Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, 0), asm.Return()},
	})
	if err != nil {
		if errors.Is(err, unix.EPERM) {
			return errNoBPF
		}
		return fmt.Errorf("probe TCX: load a program: %w", err)
	}
	defer prog.Close()
	l, err := link.AttachTCX(link.TCXOptions{Interface: math.MaxInt32, Program: prog, Attach: ebpf.AttachTCXIngress})
	switch {
	case err == nil:
		_ = l.Close()
	case errors.Is(err, ebpf.ErrNotSupported):
		return ErrNoTCX
	case errors.Is(err, unix.EPERM):
		return errNoBPF
	}
	return nil
}

var errNoBPF = errors.New("not allowed to use BPF here: l2shim needs CAP_BPF, CAP_NET_ADMIN and CAP_NET_RAW (or root)")

var memlockOnce sync.Once

// raiseMemlock lifts RLIMIT_MEMLOCK on kernels before 5.11, which charge BPF maps and programs
// to it (later ones charge the memory cgroup, and nothing is changed). Raising it needs
// CAP_SYS_RESOURCE; without it loading fails later with a clear error.
func raiseMemlock() { memlockOnce.Do(func() { _ = rlimit.RemoveMemlock() }) }

// AttachTo attaches prog, whose program name is name, at the head of ifindex's hook typ
// (ebpf.AttachTCXIngress or ebpf.AttachTCXEgress) in mode. Nothing is pinned: in ModeTCX the
// hook lives as long as this process.
func AttachTo(mode Mode, name string, prog *ebpf.Program, ifindex int, typ ebpf.AttachType) (Hook, error) {
	if mode == ModeTC {
		return attachTC(name, prog, ifindex, typ)
	}
	l, err := link.AttachTCX(link.TCXOptions{Interface: ifindex, Program: prog, Attach: typ, Anchor: link.Head()})
	if err != nil {
		if errors.Is(err, ebpf.ErrNotSupported) {
			return nil, fmt.Errorf("attach %s to ifindex %d: this kernel has no TCX (Linux 6.6 or later is needed; attach = \"tc\" works without): %w", name, ifindex, err)
		}
		return nil, fmt.Errorf("attach %s to ifindex %d: %w", name, ifindex, err)
	}
	return tcxHook{l}, nil
}

// direction names a hook for messages and tc.
func direction(typ ebpf.AttachType) string {
	if typ == ebpf.AttachTCXEgress {
		return "egress"
	}
	return "ingress"
}
