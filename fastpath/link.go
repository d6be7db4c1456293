package fastpath

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
)

// Attach attaches prog at the head of ifindex's TCX hook typ and returns the link. With a pin
// directory, a link an earlier l2shim pinned there for the same hook is adopted and given
// prog atomically, so no frame passes the interface unhooked during a restart or an upgrade;
// otherwise the new link is pinned. Without one the link lives as long as this process.
func (k *Kernel) Attach(prog *ebpf.Program, ifindex int, typ ebpf.AttachType) (link.Link, error) {
	pin := ""
	if k.pinDir != "" {
		pin = filepath.Join(k.pinDir, "links", fmt.Sprintf("%d-%s", ifindex, typ))
		if old, err := link.LoadPinnedLink(pin, nil); err == nil {
			if err := old.Update(prog); err == nil {
				return old, nil
			}
			// Its interface went away (the link is defunct), or it is not ours to update.
			_ = old.Unpin()
			_ = old.Close()
		}
		_ = os.Remove(pin)
	}
	l, err := link.AttachTCX(link.TCXOptions{Interface: ifindex, Program: prog, Attach: typ, Anchor: link.Head()})
	if err != nil {
		return nil, err
	}
	if pin != "" {
		if err := l.Pin(pin); err != nil {
			_ = l.Close()
			return nil, fmt.Errorf("fastpath: pin %s: %w", pin, err)
		}
	}
	return l, nil
}

// Detach takes a link off its hook for good, pinned or not.
func Detach(l link.Link) {
	_ = l.Unpin()
	_ = l.Close()
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
			Detach(l)
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
