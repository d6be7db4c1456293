package shim

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"syscall"
	"time"

	"golang.org/x/net/ipv6"
	"golang.org/x/sys/unix"

	"github.com/l2shim/l2shim/datapath"
)

// nsConn sends a gateway's IPv6 router neighbour solicitations and reads its advertisements:
// the IPv6 round's counterpart of ARP. It is an ICMPv6 socket bound to the uplink that lets in
// neighbour advertisements only; the kernel picks the source (the uplink's link-local address,
// for the solicited-node multicast destination) and computes the checksum. The hooks never
// divert neighbour discovery, so both go through the host's stack untouched.
type nsConn struct {
	ifname string
	mac    [6]byte
	c      net.PacketConn
	pc     *ipv6.PacketConn
	buf    [1500]byte
	msg    [datapath.NSLen]byte
}

// dialNS opens the socket on interface ifname.
func dialNS(ifname string) (*nsConn, error) {
	ifi, err := net.InterfaceByName(ifname)
	if err != nil {
		return nil, err
	}
	if len(ifi.HardwareAddr) != 6 {
		return nil, errors.New("no Ethernet address")
	}
	lc := net.ListenConfig{Control: func(_, _ string, rc syscall.RawConn) error {
		var serr error
		if err := rc.Control(func(fd uintptr) {
			serr = unix.SetsockoptString(int(fd), unix.SOL_SOCKET, unix.SO_BINDTODEVICE, ifname)
		}); err != nil {
			return err
		}
		return serr
	}}
	c, err := lc.ListenPacket(context.Background(), "ip6:ipv6-icmp", "::")
	if err != nil {
		return nil, err
	}
	pc := ipv6.NewPacketConn(c)
	var f ipv6.ICMPFilter
	f.SetAll(true)
	f.Accept(ipv6.ICMPTypeNeighborAdvertisement)
	for _, set := range []func() error{
		func() error { return pc.SetICMPFilter(&f) },
		func() error { return pc.SetControlMessage(ipv6.FlagHopLimit, true) },
		func() error { return pc.SetMulticastHopLimit(255) },
		func() error { return pc.SetHopLimit(255) },
		func() error { return pc.SetMulticastInterface(ifi) },
		func() error { return pc.SetMulticastLoopback(false) },
	} {
		if err := set(); err != nil {
			c.Close()
			return nil, err
		}
	}
	n := &nsConn{ifname: ifname, c: c, pc: pc}
	copy(n.mac[:], ifi.HardwareAddr)
	return n, nil
}

func (n *nsConn) Close() error { return n.c.Close() }

// solicit forgets any advertisement that arrived before (an answer must come after its
// solicitation) and sends a neighbour solicitation for
// router to its solicited-node multicast address.
func (n *nsConn) solicit(router netip.Addr) error {
	// Without waiting: a read whose deadline has passed would not even look.
	if sc, ok := n.c.(syscall.Conn); ok {
		if rc, err := sc.SyscallConn(); err == nil {
			_ = rc.Read(func(fd uintptr) bool {
				for {
					if _, _, err := unix.Recvfrom(int(fd), n.buf[:], unix.MSG_DONTWAIT); err != nil {
						return true
					}
				}
			})
		}
	}
	l := datapath.BuildNS(n.msg[:], router.As16(), n.mac)
	dst := datapath.SolicitedNode(router.As16())
	_, err := n.pc.WriteTo(n.msg[:l], nil, &net.IPAddr{IP: net.IP(dst[:]), Zone: n.ifname})
	return err
}

// await waits until deadline for the router's answer to a solicitation (datapath.MatchNA) and
// reports whether it came.
func (n *nsConn) await(router netip.Addr, deadline time.Time) bool {
	_ = n.c.SetReadDeadline(deadline)
	for {
		l, cm, _, err := n.pc.ReadFrom(n.buf[:])
		if err != nil {
			return false
		}
		hops := 0
		if cm != nil {
			hops = cm.HopLimit
		}
		if _, _, ok := datapath.MatchNA(n.buf[:l], hops, router.As16()); ok {
			return true
		}
	}
}
