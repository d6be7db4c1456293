package main

import (
	"context"
	"net/netip"
	"time"

	"github.com/l2shim/l2shim/integration"
)

// ipv6Names are the names of the IPv6 bulk measurements.
const ipv6Up, ipv6Down = "tcp_up_ipv6", "tcp_down_ipv6"

// ipv6Bench measures IPv6 TCP bulk up and down through eth1 on a dual-stack topology, kernel
// alone (source 2001:db8:2::2) vs l2shim, which, eth0's gateway being off, places eth0's flows
// on eth1 translated to eth1's address (NAT66).
func ipv6Bench(ctx context.Context, c config, g *gate, keep func(side, int, val)) error {
	return runUplinkBench(ctx, c, g, uplinkBench{
		what:   "ipv6",
		opts:   integration.Options{Prefix: "l2b", IPv6: true},
		up:     ipv6Up,
		down:   ipv6Down,
		server: func(t *integration.Topology) netip.Addr { return t.ServerAddr6 },
		want:   func(t *integration.Topology) netip.Addr { return t.HostAddr6_1 },
		route: func(t *integration.Topology, op string) []string {
			return []string{"-6", "route", op, netip.PrefixFrom(t.ServerAddr6, 128).String(), "via", "fe80::1", "dev", t.HostIf1}
		},
		config: func(t *integration.Topology, control string) string {
			return t.Config(integration.ConfigOptions{Mode: "load-balance", Control: control,
				GatewayExtra: [2]string{"address6 = \"fe80::1\"\non = false", "address6 = \"fe80::1\""}})
		},
		// IPv6 flows are placed once the uplink's router is resolved.
		ready: func(s *integration.Shim) error {
			_, _, err := s.WaitLog(0, 10*time.Second, "IPv6 router resolved", "gateway=eth1")
			return err
		},
	}, keep)
}
