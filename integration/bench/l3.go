package main

import (
	"context"
	"net/netip"

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

// l3Bench measures TCP bulk up and down through an L3 uplink of kind k (wg1 or ppp1), kernel
// alone vs l2shim: a strict route-to rule places eth0's flows on the L3 uplink, source NATed, so
// frames go from an Ethernet device to one without a header and back.
func l3Bench(ctx context.Context, c config, g *gate, k integration.LinkKind, keep func(side, int, val)) error {
	up, down := l3Names(k)
	return runUplinkBench(ctx, c, g, uplinkBench{
		what:   k.String(),
		opts:   integration.Options{Prefix: "l2b", Uplinks: [2]integration.LinkKind{integration.LinkVeth, k}},
		up:     up,
		down:   down,
		server: func(t *integration.Topology) netip.Addr { return t.ServerAddr },
		want:   func(t *integration.Topology) netip.Addr { return t.HostAddr1 },
		route: func(t *integration.Topology, op string) []string {
			return []string{"route", op, netip.PrefixFrom(t.ServerAddr, 32).String(), "dev", t.HostIf1}
		},
		config: func(t *integration.Topology, control string) string {
			return t.Config(integration.ConfigOptions{Mode: "load-balance", Control: control, Extra: benchRulesVia(t.HostIf1, t.HostIf0)})
		},
	}, keep)
}
