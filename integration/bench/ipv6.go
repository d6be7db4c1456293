package main

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/l2shim/l2shim/integration"
)

// ipv6Names are the names of the IPv6 bulk measurements.
const ipv6Up, ipv6Down = "tcp_up_ipv6", "tcp_down_ipv6"

// ipv6Bench measures IPv6 TCP bulk up and down through eth1, kernel alone vs l2shim, on a
// dual-stack topology of its own. The kernel runs reach the server through eth1 by a host
// route (source 2001:db8:2::2); the l2shim runs send through eth0 (the host's default route)
// and l2shim, with eth0's gateway off, places the flows on eth1 and translates them to eth1's
// address (NAT66), so the server sees 2001:db8:2::2 in both runs.
func ipv6Bench(ctx context.Context, c config, g *gate, keep func(side, val)) error {
	topo, err := integration.NewTopology(integration.Options{Prefix: "l2b", IPv6: true})
	if err != nil {
		return err
	}
	defer topo.Close()
	srv := &servers{}
	if srv.sink, err = startTCP(topo.Server, netip.AddrPortFrom(topo.ServerAddr6, portSink), serveSink); err != nil {
		return err
	}
	defer srv.sink.Close()
	if srv.source, err = startTCP(topo.Server, netip.AddrPortFrom(topo.ServerAddr6, portSource), serveSource); err != nil {
		return err
	}
	defer srv.source.Close()
	cfgDir, err := os.MkdirTemp("", "l2shim-bench-ipv6-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(cfgDir)
	cfg := topo.Config(integration.ConfigOptions{Mode: "load-balance", Control: filepath.Join(cfgDir, "l2shim.sock"),
		GatewayExtra: [2]string{"address6 = \"fe80::1\"\non = false", "address6 = \"fe80::1\""}})
	e := &env{ctx: ctx, topo: topo, srv: srv, dur: c.dur, server: topo.ServerAddr6}
	route := func(op string) error {
		out, err := topo.Host.Run(nil, "ip", "-6", "route", op, netip.PrefixFrom(topo.ServerAddr6, 128).String(), "via", "fe80::1", "dev", topo.HostIf1)
		if err != nil {
			return fmt.Errorf("ip -6 route %s via %s: %v: %s", op, topo.HostIf1, err, strings.TrimSpace(out))
		}
		return nil
	}
	measureSide := func(round int, sd side) error {
		if sd == kernelSide {
			if err := route("replace"); err != nil {
				return err
			}
			defer route("del")
			logf("round %d: kernel alone, IPv6 through %s", round+1, topo.HostIf1)
		} else {
			sctx, cancel := context.WithTimeout(ctx, integration.DefaultStartTimeout)
			shim, err := topo.StartShimWith(sctx, c.shimBin, cfg, integration.ShimOptions{Dir: cfgDir, Args: []string{"--pin-dir", ""}})
			cancel()
			if err != nil {
				return err
			}
			defer shim.Stop()
			// IPv6 flows are placed once the uplink's router is resolved.
			if _, _, err := shim.WaitLog(0, 10*time.Second, "IPv6 router resolved", "gateway=eth1"); err != nil {
				return err
			}
			logf("round %d: l2shim (pid %d): IPv6 from eth0 placed on %s, NAT66", round+1, shim.Pid(), topo.HostIf1)
		}
		vals, err := measure(ctx, g, fmt.Sprintf("round %d %s %s", round+1, sd, ipv6Up), func() ([]val, error) {
			u, err := e.tcpUp(srv.sink, portSink, 1, topo.HostAddr6_1)
			if err != nil {
				return nil, err
			}
			d, err := e.tcpDown(topo.HostAddr6_1)
			return []val{{ipv6Up, u}, {ipv6Down, d}}, err
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
				return fmt.Errorf("ipv6, round %d, %s: %w", r+1, sd, err)
			}
		}
	}
	return nil
}
