package fastpath

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"

	"github.com/cilium/ebpf"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Where l2shim's cls_bpf filters sit in tc mode: priority 1 (the head of the chain: no filter
// runs before it), handle 1, protocol all, direct action, named after the program
// ("l2shim_egress", ...). A filter at priority 1 that is not l2shim's makes the attach fail.
const (
	TCPriority = 1
	TCHandle   = 1
	// TCNamePrefix starts the name of every filter l2shim attaches.
	TCNamePrefix = "l2shim_"
)

// clsactMade remembers the interfaces (by ifindex) whose clsact qdisc this process created: a
// Detach that leaves both of its chains empty removes it again. A clsact qdisc that was there
// before, or that an earlier l2shim created, is left.
var clsactMade sync.Map

// tcHook is one of l2shim's cls_bpf filters.
type tcHook struct {
	ifindex int
	parent  uint32
}

func tcParent(typ ebpf.AttachType) uint32 {
	if typ == ebpf.AttachTCXEgress {
		return netlink.HANDLE_MIN_EGRESS
	}
	return netlink.HANDLE_MIN_INGRESS
}

func tcFilter(ifindex int, parent uint32) *netlink.BpfFilter {
	return &netlink.BpfFilter{FilterAttrs: netlink.FilterAttrs{
		LinkIndex: ifindex, Parent: parent, Handle: TCHandle, Priority: TCPriority, Protocol: unix.ETH_P_ALL,
	}}
}

// attachTC puts prog at the head of ifindex's tc hook typ, replacing in place (atomically: no
// frame passes unhooked) the filter an earlier l2shim left there.
func attachTC(name string, prog *ebpf.Program, ifindex int, typ ebpf.AttachType) (Hook, error) {
	parent := tcParent(typ)
	if err := ensureClsact(ifindex); err != nil {
		return nil, fmt.Errorf("attach %s to ifindex %d (tc): %w", name, ifindex, err)
	}
	if err := headFree(ifindex, parent); err != nil {
		return nil, fmt.Errorf("attach %s to ifindex %d (tc %s): %w", name, ifindex, direction(typ), err)
	}
	f := tcFilter(ifindex, parent)
	f.Fd, f.Name, f.DirectAction = prog.FD(), name, true
	if err := netlink.FilterReplace(f); err != nil {
		return nil, fmt.Errorf("attach %s to ifindex %d (tc %s filter): %w", name, ifindex, direction(typ), err)
	}
	return &tcHook{ifindex: ifindex, parent: parent}, nil
}

// ensureClsact adds a clsact qdisc to ifindex unless it has one.
func ensureClsact(ifindex int) error {
	q := &netlink.GenericQdisc{QdiscType: "clsact", QdiscAttrs: netlink.QdiscAttrs{
		LinkIndex: ifindex, Handle: netlink.MakeHandle(0xffff, 0), Parent: netlink.HANDLE_CLSACT,
	}}
	err := netlink.QdiscAdd(q)
	if err == nil {
		clsactMade.Store(ifindex, true)
		return nil
	}
	if !errors.Is(err, unix.EEXIST) {
		return fmt.Errorf("add clsact qdisc: %w", err)
	}
	kind, err := clsactKind(ifindex)
	if err != nil {
		return err
	}
	if kind != "clsact" {
		return fmt.Errorf("the interface has an %q qdisc where l2shim needs clsact (remove it, or use attach = \"tcx\" on Linux 6.6 or later)", kind)
	}
	return nil
}

// clsactKind returns the kind of the qdisc in clsact's place ("clsact", "ingress", "" for none).
func clsactKind(ifindex int) (string, error) {
	l, err := netlink.LinkByIndex(ifindex)
	if err != nil {
		return "", fmt.Errorf("list qdiscs: %w", err)
	}
	qs, err := netlink.QdiscList(l)
	if err != nil {
		return "", fmt.Errorf("list qdiscs: %w", err)
	}
	for _, q := range qs {
		if q.Attrs().Parent == netlink.HANDLE_CLSACT {
			return q.Type(), nil
		}
	}
	return "", nil
}

// ourFilter says whether f is one of l2shim's filters.
func ourFilter(f netlink.Filter) bool {
	b, ok := f.(*netlink.BpfFilter)
	a := f.Attrs()
	return ok && a.Priority == TCPriority && a.Handle == TCHandle && strings.HasPrefix(b.Name, TCNamePrefix)
}

// headFree checks that priority TCPriority of the chain holds nothing but l2shim's filter.
func headFree(ifindex int, parent uint32) error {
	fs, err := listFilters(ifindex, parent)
	if err != nil {
		return err
	}
	for _, f := range fs {
		a := f.Attrs()
		if a.Priority != TCPriority || ourFilter(f) {
			continue
		}
		// The chain's own entry for a priority (handle 0) is l2shim's when it is bpf, protocol all.
		if a.Handle == 0 && f.Type() == "bpf" && a.Protocol == unix.ETH_P_ALL {
			continue
		}
		return fmt.Errorf("priority %d is taken by another filter (%s, handle %#x, protocol %#04x%s): l2shim's filters must run first; remove it (tc filter del dev IF %s pref %d) or use attach = \"tcx\"",
			TCPriority, f.Type(), a.Handle, a.Protocol, filterName(f), tcDir(parent), TCPriority)
	}
	return nil
}

func filterName(f netlink.Filter) string {
	if b, ok := f.(*netlink.BpfFilter); ok && b.Name != "" {
		return ", name " + b.Name
	}
	return ""
}

func tcDir(parent uint32) string {
	if parent == netlink.HANDLE_MIN_EGRESS {
		return "egress"
	}
	return "ingress"
}

func listFilters(ifindex int, parent uint32) ([]netlink.Filter, error) {
	l, err := netlink.LinkByIndex(ifindex)
	if err != nil {
		return nil, fmt.Errorf("list tc filters: %w", err)
	}
	fs, err := netlink.FilterList(l, parent)
	if err != nil {
		return nil, fmt.Errorf("list tc %s filters: %w", tcDir(parent), err)
	}
	return fs, nil
}

// Close leaves the filter attached: the heartbeat stops it diverting, and the next l2shim
// replaces it in place (or Cleanup removes it).
func (h *tcHook) Close() error { return nil }

// Detach removes the filter, and the clsact qdisc when this process created it and it has no
// filter left.
func (h *tcHook) Detach() error {
	err := removeTC(h.ifindex, h.parent)
	dropClsactIfEmpty(h.ifindex)
	return err
}

// removeTC removes l2shim's filter from one chain of ifindex, if it is there.
func removeTC(ifindex int, parent uint32) error {
	err := netlink.FilterDel(tcFilter(ifindex, parent))
	if err == nil || errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENODEV) || errors.Is(err, unix.EINVAL) {
		return nil
	}
	return fmt.Errorf("remove tc %s filter from ifindex %d: %w", tcDir(parent), ifindex, err)
}

func dropClsactIfEmpty(ifindex int) {
	if _, made := clsactMade.Load(ifindex); !made {
		return
	}
	for _, parent := range []uint32{netlink.HANDLE_MIN_INGRESS, netlink.HANDLE_MIN_EGRESS} {
		if fs, err := listFilters(ifindex, parent); err != nil || len(fs) > 0 {
			return
		}
	}
	clsactMade.Delete(ifindex)
	_ = netlink.QdiscDel(&netlink.GenericQdisc{QdiscType: "clsact", QdiscAttrs: netlink.QdiscAttrs{
		LinkIndex: ifindex, Handle: netlink.MakeHandle(0xffff, 0), Parent: netlink.HANDLE_CLSACT,
	}})
}

// hasOurTC says whether ifindex's chain holds l2shim's filter.
func hasOurTC(ifindex int, parent uint32) bool {
	fs, err := listFilters(ifindex, parent)
	if err != nil {
		return false
	}
	for _, f := range fs {
		if ourFilter(f) {
			return true
		}
	}
	return false
}

// CleanupTC removes l2shim's tc filters from every interface of this network namespace but
// those in keep (by ifindex), and reports how many it removed. The clsact qdiscs stay.
func CleanupTC(keep ...int) (int, error) {
	links, err := netlink.LinkList()
	if err != nil {
		return 0, fmt.Errorf("list interfaces: %w", err)
	}
	n := 0
	var errs []error
	for _, l := range links {
		idx := l.Attrs().Index
		if slices.Contains(keep, idx) {
			continue
		}
		for _, parent := range []uint32{netlink.HANDLE_MIN_INGRESS, netlink.HANDLE_MIN_EGRESS} {
			if !hasOurTC(idx, parent) {
				continue
			}
			if err := removeTC(idx, parent); err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", l.Attrs().Name, err))
				continue
			}
			n++
		}
	}
	return n, errors.Join(errs...)
}
