package integration

import (
	"context"
	"net/netip"
	"testing"
	"time"
)

// TestWildcardUDPServer: a UDP server on the host bound to 0.0.0.0 answers a request that came
// to its second address (10.2.0.2, eth1) from the address the host's routing picks (10.1.0.2,
// eth0). A client with a connected socket, as most resolvers and VPN clients use, discards such
// an answer. With l2shim the answer leaves through gw1, from 10.2.0.2.
func TestWildcardUDPServer(t *testing.T) {
	topo := newTopo(t)
	_, udp := echoServices(t, topo.Host, netip.AddrPortFrom(netip.IPv4Unspecified(), EchoPort))
	ctx := context.Background()
	to := netip.AddrPortFrom(topo.HostAddr1, EchoPort)
	primeARP(t, topo)

	if r := UDPExchangeFrom(ctx, topo.Server, topo.ServerAddr, to, 5, 0, 500*time.Millisecond); r.Answered != 0 {
		t.Fatalf("without l2shim %d/5 requests to %s were answered: the topology proves nothing", r.Answered, to)
	}
	if udp.Seen.Count(topo.ServerAddr) == 0 {
		t.Fatalf("without l2shim the host's UDP server saw no request from %s", topo.ServerAddr)
	}
	t.Logf("without l2shim: the server answered %d requests, none accepted by the connected client", udp.Seen.Count(topo.ServerAddr))

	s := startShimCfg(t, topo, ConfigOptions{Mode: "load-balance"})
	r := UDPExchangeFrom(ctx, topo.Server, topo.ServerAddr, to, 20, 1, time.Second)
	if r.Answered != 20 {
		t.Errorf("with l2shim %d/20 requests to the wildcard-bound server answered from %s:%s", r.Answered, topo.HostAddr1, firstErrs(r.Errors, 5))
	}
	stopShim(t, s)
}
