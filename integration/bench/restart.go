package main

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"time"

	"github.com/l2shim/l2shim/integration"
)

// restartSize is each download's length in the restart measurement: long enough to be running
// when l2shim stops and while the next one starts.
const restartSize = 512 << 20

// restartUnderLoad runs four downloads (two NATed onto eth1, two direct on eth0) while l2shim,
// pinned to a bpffs of its own, is stopped by SIGTERM and started again; it returns how many of
// them did not arrive byte-exact. The kernel alone has nothing to restart: its side is 0.
func restartUnderLoad(ctx context.Context, bin string, caps []string, cfg, cfgDir string, topo *integration.Topology) (lost int, err error) {
	mnt, err := os.MkdirTemp("", "l2shim-bench-bpffs-")
	if err != nil {
		return 0, err
	}
	defer os.Remove(mnt)
	if out, err := exec.Command("mount", "-t", "bpf", "bpf", mnt).CombinedOutput(); err != nil {
		return 0, fmt.Errorf("mount bpffs: %v: %s", err, out)
	}
	defer exec.Command("umount", mnt).Run()
	pins := filepath.Join(mnt, "l2shim")
	// Whatever happens, nothing of l2shim stays: hooks, pins, veths.
	defer exec.Command("ip", "netns", "exec", topo.Host.Name, bin, "cleanup", "--pin-dir", pins).Run()

	start := func() (*integration.Shim, error) {
		sctx, cancel := context.WithTimeout(ctx, integration.DefaultStartTimeout)
		defer cancel()
		return topo.StartShimWith(sctx, bin, cfg, integration.ShimOptions{Dir: cfgDir, Args: []string{"--pin-dir", pins}, Capabilities: caps})
	}
	first, err := start()
	if err != nil {
		return 0, err
	}
	var servers []*integration.BulkServer
	defer func() {
		for _, s := range servers {
			s.Close()
		}
	}()
	ports := []uint16{natLo + 90, natLo + 90, directLo + 90, directLo + 90}
	want := []netip.Addr{topo.HostAddr1, topo.HostAddr1, topo.HostAddr0, topo.HostAddr0}
	for _, p := range []uint16{natLo + 90, directLo + 90} {
		s, err := integration.StartBulkServer(topo.Server, netip.AddrPortFrom(topo.ServerAddr, p))
		if err != nil {
			first.Stop()
			return 0, err
		}
		servers = append(servers, s)
	}
	dctx, cancel := context.WithTimeout(ctx, 90*time.Second)
	defer cancel()
	errs := make([]error, len(ports))
	var wg sync.WaitGroup
	for i, p := range ports {
		wg.Add(1)
		go func() {
			defer wg.Done()
			w := want[i]
			_, errs[i] = integration.Download(dctx, topo.Host, netip.AddrPortFrom(topo.ServerAddr, p), restartSize, uint64(200+i), func(a netip.Addr) bool { return a == w })
		}()
	}
	time.Sleep(300 * time.Millisecond)
	stopErr := first.Stop()
	second, startErr := start()
	wg.Wait()
	if second != nil {
		if err := second.Stop(); err != nil && startErr == nil {
			startErr = err
		}
	}
	for i, e := range errs {
		if e != nil {
			lost++
			logf("restart_under_load: download %d (port %d) across the restart: %v", i, ports[i], e)
		}
	}
	if stopErr != nil {
		return lost, fmt.Errorf("stop: %w", stopErr)
	}
	return lost, startErr
}
