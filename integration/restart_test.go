package integration

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// bpffs mounts a bpffs of the test's own (in the root mount namespace, which `ip netns exec`
// shares it with, so pins outlive each l2shim) and returns a pin directory on it.
func bpffs(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "l2shim-bpffs-")
	if err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mount", "-t", "bpf", "bpf", dir).CombinedOutput(); err != nil {
		os.Remove(dir)
		t.Fatalf("mount bpffs: %v: %s", err, out)
	}
	t.Cleanup(func() {
		_ = exec.Command("umount", dir).Run()
		_ = os.Remove(dir)
	})
	return filepath.Join(dir, "l2shim")
}

// TestRestartKeepsFlows: four 512 MiB downloads run, at least one NATed onto eth1, while
// l2shim is stopped and started again: by SIGTERM (it hands over), by SIGKILL (a crash), and
// by SIGTERM and the start of another binary (an upgrade). The kernel keeps carrying the
// established flows meanwhile and the new l2shim adopts them: every download is byte-exact.
func TestRestartKeepsFlows(t *testing.T) {
	for _, how := range []string{"sigterm", "sigkill", "upgrade"} {
		t.Run(how, func(t *testing.T) { restartUnderLoad(t, how, Options{}, "") })
	}
	// The NATed downloads through a WireGuard uplink: the kernel pushes the Ethernet header
	// onto their frames, and the new l2shim adopts flows whose gateway has no address.
	t.Run("sigkill-wireguard", func(t *testing.T) {
		restartUnderLoad(t, "sigkill", Options{Uplinks: [2]LinkKind{LinkVeth, LinkWireGuard}}, "")
	})
	// Two of the downloads over IPv6, one NAT66ed: the new l2shim adopts IPv6 flows by their
	// router's MAC.
	t.Run("sigkill-ipv6", func(t *testing.T) {
		restartUnderLoad(t, "sigkill", Options{IPv6: true}, "")
	})
}

// restartUnderLoad is one TestRestartKeepsFlows case; attach is l2shim's [shim] attach ("":
// the default).
func restartUnderLoad(t *testing.T, how string, topoOpts Options, attach string) {
	topo := newTopoWith(t, topoOpts)
	srv := startServers(t, topo)
	pins := bpffs(t)
	o := ConfigOptions{RunArgs: []string{"--pin-dir", pins}, Attach: attach}
	var srv6 servers
	if topoOpts.IPv6 {
		var err error
		if srv6, err = topo.startServers6(); err != nil {
			t.Fatal(err)
		}
		o.GatewayExtra = [2]string{`address6 = "fe80::1"`, `address6 = "fe80::1"`}
	}
	s := startShimCfg(t, topo, o)
	checkAttached(t, s, attach)
	t.Cleanup(func() {
		// Whatever happened, nothing of l2shim stays on the host.
		cmd := exec.Command("ip", "netns", "exec", topo.Host.Name, needShim(t), "cleanup", "--pin-dir", pins)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("l2shim cleanup: %v: %s", err, out)
		}
	})

	const size = 512 << 20
	type dl struct {
		res TransferResult
		err error
	}
	results := make([]dl, 4)
	var wg sync.WaitGroup
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	if topoOpts.IPv6 {
		waitSource6(t, s, 5*time.Second, "2001:db8:1::/64", "2001:db8:2::/64")
	}
	for i := range results {
		// Two on eth1 (the host routes via eth0, so NATed), two wherever they land; with
		// IPv6, the odd ones over IPv6.
		addr, nat := srv.bulkAddr(), topo.HostAddr1
		if topoOpts.IPv6 && i%2 == 1 {
			addr, nat = srv6.bulkAddr(), topo.HostAddr6_1
		}
		want := func(a netip.Addr) bool { return a == nat }
		if i >= 2 {
			want = nil
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i].res, results[i].err = Download(ctx, topo.Host, addr, size, uint64(100+i), want)
		}()
	}
	time.Sleep(300 * time.Millisecond)

	switch how {
	case "sigterm":
		stopShim(t, s)
	case "sigkill":
		if err := s.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		_ = s.Wait(10 * time.Second)
	case "upgrade":
		stopShim(t, s)
		o.Bin = copyBinary(t, needShim(t))
	}
	t.Logf("l2shim stopped (%s) while the downloads ran", how)
	s2 := startShimCfg(t, topo, o)
	checkAttached(t, s2, attach)
	if l := s2.LogLines(0, "adopted"); len(l) == 0 {
		t.Errorf("the new l2shim logged no adoption of the earlier one's flows")
	} else {
		t.Logf("%s", l[0])
	}
	wg.Wait()
	nated := 0
	for i, r := range results {
		if r.err != nil {
			t.Errorf("download %d (via %s) across the restart: %v", i, r.res.Seen, r.err)
			continue
		}
		if r.res.Seen == topo.HostAddr1 || r.res.Seen == topo.HostAddr6_1 {
			nated++
		}
		t.Logf("MEASURED download %d across the restart (%s): %d MiB byte-exact via %s in %v", i, how, r.res.Bytes>>20, r.res.Seen, r.res.Elapsed.Round(time.Millisecond))
	}
	if nated == 0 {
		t.Errorf("no download was NATed: the test proves nothing")
	}
	stopShim(t, s2)
}

// copyBinary copies bin into the test's temp dir: a "newer" binary at another path.
func copyBinary(t *testing.T, bin string) string {
	t.Helper()
	dst := filepath.Join(t.TempDir(), "l2shim-new")
	in, err := os.Open(bin)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(fmt.Errorf("copy %s: %w", bin, err))
	}
	return dst
}

// TestCleanupRefusedWhileRunning: `l2shim cleanup` pointed at a running l2shim's control
// socket removes nothing (that l2shim would lose its hooks and veths under it) and says why;
// the l2shim goes on placing flows. Once it is stopped (SIGTERM leaves its pinned hooks), the
// same command removes the hooks and pins.
func TestCleanupRefusedWhileRunning(t *testing.T) {
	requireRoot(t)
	topo := newTopo(t)
	srv := startServers(t, topo)
	pins := bpffs(t)
	s := startShimCfg(t, topo, ConfigOptions{Mode: "load-balance", RunArgs: []string{"--pin-dir", pins}})
	linksBefore, err := topo.ShimLinks()
	if err != nil || len(linksBefore) == 0 {
		t.Fatalf("l2shim's veths before: %v (%v)", linksBefore, err)
	}
	cleanup := func() (string, error) {
		return topo.Host.Run(nil, needShim(t), "cleanup", "-s", s.sock, "--pin-dir", pins)
	}

	out, err := cleanup()
	t.Logf("while l2shim runs: %s", strings.TrimSpace(out))
	if err == nil || !strings.Contains(out, "an l2shim is running") || !strings.Contains(out, "nothing was removed") {
		t.Errorf("cleanup while l2shim runs: err %v, output %q; want exit 1 and the refusal", err, out)
	}
	if links, _ := topo.ShimLinks(); !slices.Equal(links, linksBefore) {
		t.Errorf("l2shim's veths after the refused cleanup: %v, want %v", links, linksBefore)
	}
	if pinned, err := os.ReadDir(filepath.Join(pins, "links")); err != nil || len(pinned) == 0 {
		t.Errorf("pinned hooks after the refused cleanup: %d (%v), want them all", len(pinned), err)
	}
	spreadOK(t, "after the refused cleanup", topo, srv, 40, 2)

	stopShim(t, s)
	out, err = cleanup()
	t.Logf("after SIGTERM: %s", strings.TrimSpace(out))
	if err != nil || strings.Contains(out, " 0 pinned hooks detached") {
		t.Errorf("cleanup after SIGTERM: err %v, output %q; want the pinned hooks detached", err, out)
	}
	if _, err := os.Stat(pins); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the pin directory is still there after cleanup (%v)", err)
	}
}
