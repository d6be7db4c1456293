package fastpath

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
)

// Attach attaches prog (program name name) at the head of ifindex's hook typ in the kernel's
// mode and returns the hook.
//
// TCX: with a pin directory, a link an earlier l2shim pinned there for the same hook is
// adopted and given prog atomically, so no frame passes the interface unhooked during a
// restart or an upgrade; otherwise the new link is pinned. Without one the link lives as long
// as this process. A tc filter an earlier l2shim left on the hook is removed.
//
// tc: the filter an earlier l2shim left is replaced in place (as atomically); a TCX link it
// pinned for the hook is detached.
func (k *Kernel) Attach(name string, prog *ebpf.Program, ifindex int, typ ebpf.AttachType) (Hook, error) {
	pin := k.linkPin(ifindex, typ)
	if k.mode == ModeTC {
		h, err := attachTC(name, prog, ifindex, typ)
		if err == nil && pin != "" {
			dropPinnedLink(pin)
		}
		return h, err
	}
	h, err := k.attachTCX(name, prog, ifindex, typ, pin)
	if err == nil {
		_ = removeTC(ifindex, tcParent(typ)) // an earlier l2shim's, in tc mode
	}
	return h, err
}

// linkPin is where the TCX link of ifindex's hook typ is pinned ("" without a pin directory).
func (k *Kernel) linkPin(ifindex int, typ ebpf.AttachType) string {
	if k.pinDir == "" {
		return ""
	}
	return filepath.Join(k.pinDir, "links", fmt.Sprintf("%d-%s", ifindex, typ))
}

func (k *Kernel) attachTCX(name string, prog *ebpf.Program, ifindex int, typ ebpf.AttachType, pin string) (Hook, error) {
	if pin != "" {
		if old, err := link.LoadPinnedLink(pin, nil); err == nil {
			if err := old.Update(prog); err == nil {
				return tcxHook{old}, nil
			}
			// Its interface went away (the link is defunct), or it is not ours to update.
			_ = old.Unpin()
			_ = old.Close()
		}
		_ = os.Remove(pin)
	}
	h, err := AttachTo(ModeTCX, name, prog, ifindex, typ)
	if err != nil || pin == "" {
		return h, err
	}
	if err := h.(tcxHook).l.Pin(pin); err != nil {
		_ = h.Close()
		return nil, fmt.Errorf("fastpath: pin %s: %w", pin, err)
	}
	return h, nil
}

// dropPinnedLink detaches the TCX link pinned at pin, if there is one.
func dropPinnedLink(pin string) {
	if old, err := link.LoadPinnedLink(pin, nil); err == nil {
		_ = old.Unpin()
		_ = old.Close()
	}
	_ = os.Remove(pin)
}

// PinnedPrograms returns the IDs of the programs the TCX links pinned under dir run: an earlier
// l2shim's, which the next one takes over.
func PinnedPrograms(dir string) []ebpf.ProgramID {
	entries, err := os.ReadDir(filepath.Join(dir, "links"))
	if err != nil {
		return nil
	}
	var ids []ebpf.ProgramID
	for _, e := range entries {
		l, err := link.LoadPinnedLink(filepath.Join(dir, "links", e.Name()), nil)
		if err != nil {
			continue
		}
		if info, err := l.Info(); err == nil {
			ids = append(ids, info.Program)
		}
		_ = l.Close()
	}
	return ids
}

// Cleanup removes what l2shim left pinned under dir: it detaches the hooks' links and removes
// the pinned maps (the kernel frees them once no program uses them). It reports how many
// links it detached.
func Cleanup(dir string) (int, error) {
	n := 0
	var errs []error
	entries, err := os.ReadDir(filepath.Join(dir, "links"))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		errs = append(errs, err)
	}
	for _, e := range entries {
		p := filepath.Join(dir, "links", e.Name())
		if l, err := link.LoadPinnedLink(p, nil); err == nil {
			_ = tcxHook{l}.Detach()
			n++
		} else if err := os.Remove(p); err != nil {
			errs = append(errs, err)
		}
	}
	_ = os.Remove(filepath.Join(dir, "links"))
	for _, name := range mapNames {
		if err := os.Remove(filepath.Join(dir, name)); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	if err := os.Remove(dir); err != nil && !errors.Is(err, os.ErrNotExist) {
		errs = append(errs, err)
	}
	return n, errors.Join(errs...)
}
