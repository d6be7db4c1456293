package integration

import (
	"context"
	"testing"
	"time"
)

// TestL3Spread balances flows over uplinks without a link-layer header: Ethernet + tun
// (PPP-like), Ethernet + WireGuard, and two tun links; TCP, UDP and ICMP get through and both
// uplinks carry flows, the gateways of the L3 links configured by interface alone.
func TestL3Spread(t *testing.T) {
	requireRoot(t)
	for _, tc := range []struct {
		name    string
		uplinks [2]LinkKind
	}{
		{"eth+tun", [2]LinkKind{LinkVeth, LinkTun}},
		{"eth+wireguard", [2]LinkKind{LinkVeth, LinkWireGuard}},
		{"tun+tun", [2]LinkKind{LinkTun, LinkTun}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			topo := newTopoWith(t, Options{Uplinks: tc.uplinks})
			srv := startServers(t, topo)
			s := startShim(t, topo, "load-balance")
			ctx := context.Background()
			if n, _, err := Ping(ctx, topo.Host, topo.ServerAddr, 5, time.Second); n != 5 {
				t.Errorf("ICMP echo through l2shim: %d/5 replies (%v)", n, err)
			}
			ok, errs := TCPEchoMany(ctx, topo.Host, srv.echoAddr(), 200, 4, 3*time.Second)
			if ok != 200 {
				t.Errorf("TCP: %d/200 connections succeeded:%s", ok, firstErrs(errs, 10))
			}
			splitOK(t, "TCP", topo, srv.echo.Seen.Counts(), srv.echo.Seen.Total())
			res := UDPExchange(ctx, topo.Host, srv.udpAddr(), 100, 2, time.Second)
			if res.Answered != 100 {
				t.Errorf("UDP: %d/100 requests answered:%s", res.Answered, firstErrs(res.Errors, 10))
			}
			splitOK(t, "UDP", topo, srv.udp.Seen.Counts(), srv.udp.Seen.Total())
			st := s.status(t)
			for _, g := range st.Gateways {
				t.Logf("gateway %s on %s: state %s, %d flows placed, address %q, MAC %q", g.Name, g.Interface, g.State, g.Placed, g.Address, g.MAC)
			}
			stopShim(t, s)
		})
	}
}
