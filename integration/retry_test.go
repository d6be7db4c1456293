package integration

import (
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// dnsAnswer is the address the test's DNS server gives every name.
const dnsAnswer = "192.0.2.53"

// startDNS answers every A query sent to addr in ns with dnsAnswer, and counts the queries.
func startDNS(t *testing.T, ns *NS, addr netip.AddrPort) *atomic.Int64 {
	t.Helper()
	var n atomic.Int64
	a := netip.MustParseAddr(dnsAnswer).As4()
	_, err := startUDP(ns, addr, func(c *net.UDPConn, q []byte, from netip.AddrPort) {
		if len(q) < 12 {
			return
		}
		n.Add(1)
		// End of the (single) question: the name, then type and class.
		i := 12
		for i < len(q) && q[i] != 0 {
			i += int(q[i]) + 1
		}
		i += 5
		if i > len(q) {
			return
		}
		r := append([]byte(nil), q[:i]...)
		r[2] = 0x80 | q[2]&0x01               // QR, RD copied
		r[3] = 0x80                           // RA, NOERROR
		binary.BigEndian.PutUint16(r[6:], 1)  // ANCOUNT
		binary.BigEndian.PutUint16(r[8:], 0)  // NSCOUNT
		binary.BigEndian.PutUint16(r[10:], 0) // ARCOUNT
		r = append(r, 0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4)
		r = append(r, a[:]...)
		c.WriteToUDPAddrPort(r, from)
	})
	if err != nil {
		t.Fatal(err)
	}
	return &n
}

// TestRetriesFromNewSockets: after gw0's upstream dies silently, with probes off, a resolver
// that retries from a new source port (real dig, +tries=3 +time=1) and a TCP client that
// reconnects from a new port keep working: each retry goes through gw1, the unanswered tries
// count as gw0's failures, and gw0 is benched within 10 s.
func TestRetriesFromNewSockets(t *testing.T) {
	topo := newTopo(t)
	srv := startServers(t, topo)
	dnsAddr := netip.AddrPortFrom(topo.ServerAddr, 53)
	queries := startDNS(t, topo.Server, dnsAddr)
	s := startShimCfg(t, topo, ConfigOptions{Extra: failoverTable(`probe_interval = "0s"`)})

	dig := func(i int) (bool, time.Duration) {
		start := time.Now()
		out, err := topo.Host.Run(nil, "dig", "@"+topo.ServerAddr.String(), "+tries=3", "+time=1", "+short", fmt.Sprintf("q%d.example.test", i), "A")
		// dig prints a line for each try that timed out, then the answer.
		lines := strings.Split(strings.TrimSpace(out), "\n")
		return err == nil && lines[len(lines)-1] == dnsAnswer, time.Since(start)
	}
	if ok, _ := dig(-1); !ok {
		t.Fatal("dig fails before the cut")
	}
	if err := topo.CutUpstream(0); err != nil {
		t.Fatal(err)
	}
	cut := time.Now()
	benched := time.Duration(0)
	checkBench := func() {
		if benched != 0 {
			return
		}
		if st, err := s.queryStatus(); err == nil && st.Gateways[0].State == "down" && strings.Contains(st.Gateways[0].Reason, "benched") {
			benched = time.Since(cut)
		}
	}
	answered, slowest := 0, time.Duration(0)
	for i := 0; i < 50; i++ {
		ok, took := dig(i)
		if ok {
			answered++
		}
		slowest = max(slowest, took)
		checkBench()
	}
	t.Logf("MEASURED dig after a silent cut, probes off: %d/50 answered, slowest %v, %d queries reached the server; gw0 benched after %v",
		answered, slowest.Round(time.Millisecond), queries.Load(), benched.Round(time.Millisecond))
	if answered < 49 {
		t.Errorf("dig: %d/50 queries answered after gw0's upstream died, want at least 49", answered)
	}

	// A TCP client that gives up on a connection after a second and reconnects from a new port.
	reconnected := 0
	for i := 0; i < 10; i++ {
		for try := 0; try < 3; try++ {
			err := topo.Host.Do(func() error {
				c, err := net.DialTimeout("tcp4", srv.echoAddr().String(), time.Second)
				if err != nil {
					return err
				}
				defer c.Close()
				c.SetDeadline(time.Now().Add(time.Second))
				if _, err := c.Write([]byte("ping\n")); err != nil {
					return err
				}
				_, err = c.Read(make([]byte, 16))
				return err
			})
			if err == nil {
				reconnected++
				break
			}
		}
		checkBench()
	}
	if reconnected != 10 {
		t.Errorf("TCP client reconnecting from new ports: %d/10 connections made within 3 tries", reconnected)
	}
	if benched == 0 || benched > 10*time.Second {
		t.Errorf("gw0 benched after %v, want within 10 s of the cut (0: never)", benched)
	}
	stopShim(t, s)
}
