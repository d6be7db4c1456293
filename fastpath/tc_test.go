package fastpath

import (
	"net/netip"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/l2shim/l2shim/rewrite"
)

// inNewNetns runs f on a locked thread in a throwaway network namespace with a veth pair, up,
// passing one end's ifindex.
func inNewNetns(t *testing.T, f func(ifindex int)) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("tc attach needs root")
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	orig, err := netns.Get()
	if err != nil {
		t.Fatal(err)
	}
	defer orig.Close()
	ns, err := netns.New()
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	defer func() { _ = netns.Set(orig) }()
	d := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "l2t-tc0"}, PeerName: "l2t-tc1"}
	if err := netlink.LinkAdd(d); err != nil {
		t.Fatal(err)
	}
	l, err := netlink.LinkByName("l2t-tc0")
	if err != nil {
		t.Fatal(err)
	}
	if err := netlink.LinkSetUp(l); err != nil {
		t.Fatal(err)
	}
	f(l.Attrs().Index)
}

func loadMode(t *testing.T, mode Mode) *Kernel {
	t.Helper()
	k, err := Load(Options{Mark: 0xa0, Mask: 0xf0, Heartbeat: time.Second, MaxFlows: 4096, Attach: mode})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { k.Close() })
	return k
}

func progID(t *testing.T, p *ebpf.Program) int {
	t.Helper()
	info, err := p.Info()
	if err != nil {
		t.Fatal(err)
	}
	id, _ := info.ID()
	return int(id)
}

// ourFilters lists l2shim's filters on one chain as "NAME id N".
func ourFilters(t *testing.T, ifindex int, typ ebpf.AttachType) []*netlink.BpfFilter {
	t.Helper()
	fs, err := listFilters(ifindex, tcParent(typ))
	if err != nil {
		t.Fatal(err)
	}
	var out []*netlink.BpfFilter
	for _, f := range fs {
		if ourFilter(f) {
			out = append(out, f.(*netlink.BpfFilter))
		}
	}
	return out
}

// TestTCAttach: in tc mode the programs sit at priority 1 as direct-action cls_bpf filters
// under a clsact qdisc; a second attach replaces the filter in place (same handle, the new
// program); a foreign filter at priority 1 is refused; Detach removes the filter and the
// clsact qdisc this process made; CleanupTC removes only l2shim's filters.
func TestTCAttach(t *testing.T) {
	inNewNetns(t, func(idx int) {
		k1, k2 := loadMode(t, ModeTC), loadMode(t, ModeTC)
		eg, err := k1.Attach("l2shim_egress", k1.Egress(), idx, ebpf.AttachTCXEgress)
		if err != nil {
			t.Fatal(err)
		}
		in, err := k1.Attach("l2shim_ingress", k1.Ingress(), idx, ebpf.AttachTCXIngress)
		if err != nil {
			t.Fatal(err)
		}
		fs := ourFilters(t, idx, ebpf.AttachTCXEgress)
		if len(fs) != 1 || !fs[0].DirectAction || fs[0].Name != "l2shim_egress" || fs[0].Id != progID(t, k1.Egress()) {
			t.Fatalf("egress filters = %+v, want one direct-action l2shim_egress with the program's id", fs)
		}
		// A restart: the next instance's program replaces the filter in place.
		if _, err := k2.Attach("l2shim_ingress", k2.Ingress(), idx, ebpf.AttachTCXIngress); err != nil {
			t.Fatal(err)
		}
		fs = ourFilters(t, idx, ebpf.AttachTCXIngress)
		if len(fs) != 1 || fs[0].Id != progID(t, k2.Ingress()) {
			t.Fatalf("ingress filters after the restart = %+v, want one with the new program's id %d", fs, progID(t, k2.Ingress()))
		}
		// Close lets go but leaves the filter.
		_ = eg.Close()
		if len(ourFilters(t, idx, ebpf.AttachTCXEgress)) != 1 {
			t.Fatal("Close removed the egress filter")
		}
		if err := eg.Detach(); err != nil {
			t.Fatal(err)
		}
		if err := in.Detach(); err != nil {
			t.Fatal(err)
		}
		if fs := ourFilters(t, idx, ebpf.AttachTCXIngress); len(fs) != 0 {
			t.Fatalf("filters after Detach: %+v", fs)
		}
		if kind, _ := clsactKind(idx); kind != "" {
			t.Errorf("qdisc %q left after the last filter went", kind)
		}

		// Someone else's filter at priority 1: refused, and left alone.
		if err := ensureClsact(idx); err != nil {
			t.Fatal(err)
		}
		other := &netlink.BpfFilter{FilterAttrs: netlink.FilterAttrs{LinkIndex: idx, Parent: tcParent(ebpf.AttachTCXIngress), Handle: 7, Priority: 1, Protocol: unix.ETH_P_ALL},
			Fd: k1.Sink().FD(), Name: "someone_else", DirectAction: true}
		if err := netlink.FilterAdd(other); err != nil {
			t.Fatal(err)
		}
		_, err = k1.Attach("l2shim_ingress", k1.Ingress(), idx, ebpf.AttachTCXIngress)
		if err == nil || !strings.Contains(err.Error(), "priority 1 is taken by another filter") || !strings.Contains(err.Error(), "someone_else") {
			t.Fatalf("attach over a foreign filter: %v", err)
		}
		// At another priority it stays through CleanupTC, which removes ours only.
		if err := netlink.FilterDel(other); err != nil {
			t.Fatal(err)
		}
		other.Priority = 5
		if err := netlink.FilterAdd(other); err != nil {
			t.Fatal(err)
		}
		if _, err := k1.Attach("l2shim_ingress", k1.Ingress(), idx, ebpf.AttachTCXIngress); err != nil {
			t.Fatal(err)
		}
		if n, err := CleanupTC(); n != 1 || err != nil {
			t.Fatalf("CleanupTC = %d, %v; want 1", n, err)
		}
		fs2, err := listFilters(idx, tcParent(ebpf.AttachTCXIngress))
		if err != nil {
			t.Fatal(err)
		}
		left := 0
		for _, f := range fs2 {
			if b, ok := f.(*netlink.BpfFilter); ok && b.Name == "someone_else" {
				left++
			}
		}
		if left != 1 {
			t.Errorf("the foreign filter did not survive CleanupTC: %+v", fs2)
		}
	})
}

// TestTCReturnCodes: the programs loaded for tc (no expected attach type) decide every frame
// as the TCX ones do; their return codes mean the same in both (TCX_NEXT -1 = TC_ACT_UNSPEC,
// TCX_PASS 0 = TC_ACT_OK, TCX_DROP 2 = TC_ACT_SHOT, TCX_REDIRECT 7 = TC_ACT_REDIRECT).
func TestTCReturnCodes(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("loading BPF programs needs root")
	}
	key := Key{Src: netip.MustParseAddr("10.1.0.2"), Dst: netip.MustParseAddr("203.0.113.10"), SrcPort: 40000, DstPort: 443, Proto: rewrite.ProtoTCP}
	e := Entry{Ifindex: 7, NAT: true, Addr: netip.MustParseAddr("10.2.0.2"), Port: 40000, MTU: 1400, SrcMAC: [6]byte{2, 0, 0, 0, 0, 0x11}, DstMAC: [6]byte{2, 0, 0, 0, 0, 2}}
	frames := [][]byte{
		tcpFrame(t, hostMAC, gwMAC, key, false, false, false, 100, true), // fast path
		tcpFrame(t, hostMAC, gwMAC, key, true, false, false, 0, true),    // SYN: diverted
		tcpFrame(t, hostMAC, [6]byte{2, 9, 9, 9, 9, 9}, Key{Src: key.Src, Dst: key.Dst, SrcPort: 40001, DstPort: 80, Proto: rewrite.ProtoTCP}, true, false, false, 0, true), // not to a gateway
	}
	var rets [2][]uint32
	for i, mode := range []Mode{ModeTCX, ModeTC} {
		k := loadMode(t, mode)
		if err := k.SetIface(testIfindex, Iface{MAC: hostMAC, Capture: 99, CaptureHost: 98}); err != nil {
			t.Fatal(err)
		}
		if err := k.AddGateway(gwMAC); err != nil {
			t.Fatal(err)
		}
		if err := k.Put(Out, key, e); err != nil {
			t.Fatal(err)
		}
		if err := k.Beat(); err != nil {
			t.Fatal(err)
		}
		for _, f := range frames {
			ret, _ := run(t, k.Egress(), f, nil)
			rets[i] = append(rets[i], ret)
		}
	}
	want := []uint32{retRedirect, retRedirect, retNext}
	for i := range want {
		if rets[0][i] != want[i] || rets[1][i] != want[i] {
			t.Errorf("frame %d: tcx %d, tc %d; want %d", i, int32(rets[0][i]), int32(rets[1][i]), int32(want[i]))
		}
	}
}
