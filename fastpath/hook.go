package fastpath

import (
	"errors"
	"fmt"
	"net"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
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
// an error saying that BPF is not allowed here.
func HaveTCX() error {
	lo, err := net.InterfaceByName("lo")
	if err != nil {
		return fmt.Errorf("probe TCX: %w", err)
	}
	_, err = link.QueryPrograms(link.QueryOptions{Target: lo.Index, Attach: ebpf.AttachTCXIngress})
	switch {
	case errors.Is(err, ebpf.ErrNotSupported):
		return ErrNoTCX
	case errors.Is(err, unix.EPERM):
		return errors.New("not allowed to use BPF here: l2shim needs CAP_BPF, CAP_NET_ADMIN and CAP_NET_RAW (or root)")
	case err != nil:
		return fmt.Errorf("probe TCX: %w", err)
	}
	return nil
}

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
