package integration

import (
	"context"
	"net"
	"net/netip"
	"testing"
	"time"
)

// TestUplinkWithoutAddress: while eth1 has no address (a DHCP lease being renewed), its gateway
// takes no new flows: every new connection goes through eth0 and succeeds. With the address
// back, eth1 takes flows again.
func TestUplinkWithoutAddress(t *testing.T) {
	topo := newTopo(t)
	srv := startServers(t, topo)
	s := startShimCfg(t, topo, ConfigOptions{Extra: failoverTable(`probe_interval = "0s"`)})
	ctx := context.Background()
	mustRun(t, topo.Host, "ip", "addr", "del", topo.HostAddr1.String()+"/24", "dev", topo.HostIf1)
	time.Sleep(200 * time.Millisecond) // netlink reaches l2shim
	srv.echo.Seen.Reset()
	checkTimings(t, "new connections while eth1 has no address", TimedEchoes(ctx, topo.Host, netip.Addr{}, srv.echoAddr(), 20, 4, 2*time.Second), time.Second)
	requireOnly(t, "new connections while eth1 has no address", srv.echo.Seen.Counts(), topo.HostAddr0, 20)
	if st := s.status(t); st.Gateways[1].State != "down" {
		t.Errorf("gateway on eth1 without an address is %s (%s), want down", st.Gateways[1].State, st.Gateways[1].Reason)
	}
	mustRun(t, topo.Host, "ip", "addr", "add", topo.HostAddr1.String()+"/24", "dev", topo.HostIf1)
	time.Sleep(200 * time.Millisecond)
	srv.echo.Seen.Reset()
	checkTimings(t, "new connections with eth1's address back", TimedEchoes(ctx, topo.Host, netip.Addr{}, srv.echoAddr(), 40, 4, 2*time.Second), time.Second)
	if n := srv.echo.Seen.Count(topo.HostAddr1); n == 0 {
		t.Errorf("with its address back eth1 took none of 40 new connections")
	}
	stopShim(t, s)
}

// TestAddressChangeKeepsUDPFlow: a UDP flow NATed onto eth1 keeps sending (a VPN's keepalives)
// while eth1's address changes (DHCP gave another): it carries on from the new address.
func TestAddressChangeKeepsUDPFlow(t *testing.T) {
	topo := newTopo(t)
	srv := startServers(t, topo)
	s := startShimCfg(t, topo, ConfigOptions{Extra: routeToRule("udp via gw1", "udp", int(srv.udpAddr().Port()), "eth1")})
	c, err := dialUDP(topo.Host, netip.AddrPortFrom(topo.HostAddr0, 0), srv.udpAddr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if n := keepalives(c, 5); n != 5 {
		t.Fatalf("before the change %d/5 datagrams answered", n)
	}
	renewed := netip.MustParseAddr("10.2.0.3")
	// As a DHCP client does it: the old lease goes, then the new one comes.
	mustRun(t, topo.Host, "ip", "addr", "del", topo.HostAddr1.String()+"/24", "dev", topo.HostIf1)
	mustRun(t, topo.Host, "ip", "addr", "add", renewed.String()+"/24", "dev", topo.HostIf1)
	// The ISP forgets the old lease: nothing from or to 10.2.0.2 passes gw1 any more.
	mustRun(t, topo.GW1, "nft", "add table ip lease; add chain ip lease forget { type filter hook forward priority -300; }; add rule ip lease forget ip saddr "+topo.HostAddr1.String()+" drop; add rule ip lease forget ip daddr "+topo.HostAddr1.String()+" drop")
	time.Sleep(200 * time.Millisecond)
	srv.udp.Seen.Reset()
	if n := keepalives(c, 10); n < 9 {
		t.Errorf("after eth1's address changed %d/10 datagrams of the flow answered", n)
	}
	requireOnly(t, "the flow after the address change", srv.udp.Seen.Counts(), renewed, srv.udp.Seen.Count(renewed))
	stopShim(t, s)
}

// keepalives sends n datagrams on c, one at a time, and returns how many were answered within
// 300 ms each.
func keepalives(c *net.UDPConn, n int) int {
	ok := 0
	buf := make([]byte, 1500)
	for i := 0; i < n; i++ {
		if _, err := c.Write([]byte("keepalive")); err != nil {
			continue
		}
		c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
		if _, err := c.Read(buf); err == nil {
			ok++
		}
	}
	return ok
}
