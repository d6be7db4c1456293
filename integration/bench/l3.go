package main

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"

	"github.com/l2shim/l2shim/integration"
)

// l3Kinds are the uplinks without a link-layer header the bench measures TCP bulk through:
// wireguard-go (MTU 1420, GSO offloads) and a plain tun point-to-point link (PPP-like: no
// offloads, the kernel segments before the device).
var l3Kinds = []integration.LinkKind{integration.LinkWireGuard, integration.LinkTun}

// l3Names are the measurement names of an L3 kind.
func l3Names(k integration.LinkKind) (up, down string) {
	return "tcp_up_" + k.String(), "tcp_down_" + k.String()
}

// l3Bench measures TCP bulk up and down through an L3 uplink of kind k, kernel alone vs
// l2shim, on a topology of its own: eth0 and the L3 uplink (wg1 or ppp1). The kernel runs
// reach the server through the L3 uplink by a host route; the l2shim runs send from eth0 (the
// host's default route) and a strict route-to rule places the flows on the L3 uplink, source
// NATed, so frames go from an Ethernet device to one without a header and back, and the
// server sees the L3 uplink's address in both runs.
func l3Bench(ctx context.Context, c config, g *gate, k integration.LinkKind, keep func(side, val)) error {
	topo, err := integration.NewTopology(integration.Options{Prefix: "l2b", Uplinks: [2]integration.LinkKind{integration.LinkVeth, k}})
	if err != nil {
		return err
	}
	defer topo.Close()
	srv, err := startServers(topo)
	if err != nil {
		return err
	}
	cfgDir, err := os.MkdirTemp("", "l2shim-bench-l3-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(cfgDir)
	cfg := topo.Config(integration.ConfigOptions{Mode: "load-balance", Control: filepath.Join(cfgDir, "l2shim.sock"), Extra: benchRulesVia(topo.HostIf1, topo.HostIf0)})
	e := &env{ctx: ctx, topo: topo, srv: srv, dur: c.dur}
	up, down := l3Names(k)
	route := func(op string) error {
		out, err := topo.Host.Run(nil, "ip", "route", op, netip.PrefixFrom(topo.ServerAddr, 32).String(), "dev", topo.HostIf1)
		if err != nil {
			return fmt.Errorf("ip route %s via %s: %v: %s", op, topo.HostIf1, err, strings.TrimSpace(out))
		}
		return nil
	}
	measureSide := func(round int, sd side) error {
		var shim *integration.Shim
		if sd == kernelSide {
			if err := route("replace"); err != nil {
				return err
			}
			defer route("del")
			logf("round %d: kernel alone through %s (%s)", round+1, topo.HostIf1, k)
		} else {
			o := integration.ShimOptions{Dir: cfgDir, Args: []string{"--pin-dir", ""}}
			sctx, cancel := context.WithTimeout(ctx, integration.DefaultStartTimeout)
			var err error
			shim, err = topo.StartShimWith(sctx, c.shimBin, cfg, o)
			cancel()
			if err != nil {
				return err
			}
			defer shim.Stop()
			logf("round %d: l2shim (pid %d): eth0 -> %s (%s), NATed", round+1, shim.Pid(), topo.HostIf1, k)
		}
		vals, err := measure(ctx, g, fmt.Sprintf("round %d %s %s", round+1, sd, up), func() ([]val, error) {
			u, err := e.tcpUp(srv.sink, portSink, 1, topo.HostAddr1)
			if err != nil {
				return nil, err
			}
			d, err := e.tcpDown(topo.HostAddr1)
			return []val{{up, u}, {down, d}}, err
		})
		if err != nil {
			return err
		}
		for _, v := range vals {
			keep(sd, v)
		}
		return nil
	}
	for r := 0; r < c.rounds; r++ {
		order := []side{kernelSide, shimSide}
		if r%2 == 1 {
			order = []side{shimSide, kernelSide}
		}
		for _, sd := range order {
			if err := measureSide(r, sd); err != nil {
				return fmt.Errorf("%s, round %d, %s: %w", k, r+1, sd, err)
			}
		}
	}
	return nil
}
