package integration

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// End-to-end tests of the flow table and NAT under real traffic and abuse:
// a SYN flood against a bounded table, tuple ownership in both orders, ICMP
// errors both ways, a smaller-MTU uplink, fragments, a VXLAN tunnel placed
// on the NATed uplink and forwarded LAN traffic.
//
// Helpers here are prefixed ct; gateway names are the harness defaults
// ("eth0" for gw0, "eth1" for gw1).

// ICMP types and codes (RFC 792) the tests expect.
const (
	icmpDestUnreachable = 3  // type: destination unreachable
	icmpTimeExceeded    = 11 // type: time exceeded
	icmpCodePort        = 3  // destination unreachable code: port unreachable
	icmpCodeFragNeeded  = 4  // destination unreachable code: fragmentation needed and DF set
)

// ---- memory ----

// ctProcMem returns VmRSS and VmHWM of pid in bytes.
func ctProcMem(pid int) (rss, hwm int64, err error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0, err
	}
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Fields(l)
		if len(f) < 2 {
			continue
		}
		v, _ := strconv.ParseInt(f[1], 10, 64)
		switch f[0] {
		case "VmRSS:":
			rss = v << 10
		case "VmHWM:":
			hwm = v << 10
		}
	}
	return rss, hwm, nil
}

func ctMiB(b int64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }

// ---- namespaces, config ----

// ctSetMTU sets the MTU of a link in ns, failing the test on error.
func ctSetMTU(t *testing.T, ns *NS, ifname string, mtu int) {
	t.Helper()
	if err := setMTU(ns, ifname, mtu); err != nil {
		t.Fatal(err)
	}
}

// ctRule is a route-to rule named "ct PROTO PORT".
func ctRule(proto string, port int, gateway string) string {
	return routeToRule(fmt.Sprintf("ct %s %d", proto, port), proto, port, gateway)
}

// ---- servers that tell the client how they see it ----

// ctStartPeerServer starts, on addr in ns, a TCP server that first writes
// the client's address and port as it sees them ("10.2.0.2:41000\n") and
// then echoes, and a UDP server that answers each datagram with
// "ADDR:PORT|" followed by the datagram. They go with the namespace.
func ctStartPeerServer(t *testing.T, ns *NS, addr netip.AddrPort) {
	t.Helper()
	_, err := startTCP(ns, addr, func(c net.Conn) {
		if _, err := io.WriteString(c, c.RemoteAddr().String()+"\n"); err == nil {
			echoConn(c)
		}
	})
	if err != nil {
		t.Fatalf("peer server: %v", err)
	}
	_, err = startUDP(ns, addr, func(c *net.UDPConn, p []byte, from netip.AddrPort) {
		c.WriteToUDPAddrPort(append([]byte(from.String()+"|"), p...), from)
	})
	if err != nil {
		t.Fatalf("peer server: %v", err)
	}
}

// ctDialPeer connects from ns (socket bound to laddr) to a peer server and
// returns the connection and the client address the server saw.
func ctDialPeer(ctx context.Context, ns *NS, laddr, raddr netip.AddrPort) (net.Conn, netip.AddrPort, error) {
	c, err := dialTCPBound(ctx, ns, laddr, raddr)
	if err != nil {
		return nil, netip.AddrPort{}, err
	}
	c.SetDeadline(time.Now().Add(5 * time.Second))
	line, err := readLine(c)
	if err != nil {
		c.Close()
		return nil, netip.AddrPort{}, fmt.Errorf("read server hello: %w", err)
	}
	seen, err := netip.ParseAddrPort(line)
	if err != nil {
		c.Close()
		return nil, netip.AddrPort{}, fmt.Errorf("bad server hello %q", line)
	}
	c.SetDeadline(time.Time{})
	return c, seen, nil
}

// ---- raw UDP sockets (socket options, error queue) ----

// ctUDP is a connected UDP socket on a plain file descriptor, so that
// IP_RECVERR, IP_TTL, IP_MTU_DISCOVER and the error queue are at hand.
type ctUDP struct{ fd int }

func ctDialUDP(ns *NS, laddr, raddr netip.AddrPort, opts map[int]int) (*ctUDP, error) {
	u := &ctUDP{fd: -1}
	err := ns.Do(func() error {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return err
		}
		u.fd = fd
		unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, 1<<20)
		for k, v := range opts {
			if err := unix.SetsockoptInt(fd, unix.IPPROTO_IP, k, v); err != nil {
				return fmt.Errorf("setsockopt %d=%d: %w", k, v, err)
			}
		}
		if laddr.IsValid() {
			if err := unix.Bind(fd, &unix.SockaddrInet4{Addr: laddr.Addr().As4(), Port: int(laddr.Port())}); err != nil {
				return fmt.Errorf("bind %s: %w", laddr, err)
			}
		}
		return unix.Connect(fd, &unix.SockaddrInet4{Addr: raddr.Addr().As4(), Port: int(raddr.Port())})
	})
	if err != nil {
		u.Close()
		return nil, err
	}
	return u, nil
}

func (u *ctUDP) Close() {
	if u.fd >= 0 {
		unix.Close(u.fd)
		u.fd = -1
	}
}

func (u *ctUDP) Send(b []byte) error {
	_, err := unix.Write(u.fd, b)
	return err
}

var errCTTimeout = errors.New("timeout")

// Recv waits up to timeout for a datagram or a pending socket error.
func (u *ctUDP) Recv(b []byte, timeout time.Duration) (int, error) {
	deadline := time.Now().Add(timeout)
	for {
		ms := int(time.Until(deadline) / time.Millisecond)
		if ms <= 0 {
			return 0, errCTTimeout
		}
		pfd := []unix.PollFd{{Fd: int32(u.fd), Events: unix.POLLIN}}
		n, err := unix.Poll(pfd, ms)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return 0, err
		}
		if n == 0 {
			continue
		}
		k, err := unix.Read(u.fd, b)
		if err == unix.EAGAIN || err == unix.EINTR {
			continue
		}
		return k, err
	}
}

// LocalAddr returns the socket's bound address.
func (u *ctUDP) LocalAddr() netip.AddrPort {
	sa, err := unix.Getsockname(u.fd)
	if err != nil {
		return netip.AddrPort{}
	}
	if s4, ok := sa.(*unix.SockaddrInet4); ok {
		return netip.AddrPortFrom(netip.AddrFrom4(s4.Addr), uint16(s4.Port))
	}
	return netip.AddrPort{}
}

// ctErrQueue is one entry of a socket's error queue (IP_RECVERR).
type ctErrQueue struct {
	Errno            unix.Errno
	Origin           uint8
	Type, Code       uint8
	Info             uint32
	Offender         netip.Addr
	OffenderReported bool
}

func (e ctErrQueue) String() string {
	return fmt.Sprintf("errno=%v origin=%d icmp type=%d code=%d info=%d offender=%v", e.Errno, e.Origin, e.Type, e.Code, e.Info, e.Offender)
}

// ErrQueue reads one entry of the error queue (non-blocking).
func (u *ctUDP) ErrQueue() (ctErrQueue, error) {
	var e ctErrQueue
	buf := make([]byte, 2048)
	oob := make([]byte, 512)
	_, oobn, _, _, err := unix.Recvmsg(u.fd, buf, oob, unix.MSG_ERRQUEUE|unix.MSG_DONTWAIT)
	if err != nil {
		return e, err
	}
	msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
	if err != nil {
		return e, err
	}
	for _, m := range msgs {
		if m.Header.Level != unix.SOL_IP || m.Header.Type != unix.IP_RECVERR || len(m.Data) < 16 {
			continue
		}
		d := m.Data
		e.Errno = unix.Errno(binary.NativeEndian.Uint32(d[0:4]))
		e.Origin, e.Type, e.Code = d[4], d[5], d[6]
		e.Info = binary.NativeEndian.Uint32(d[8:12])
		if len(d) >= 16+8 && binary.NativeEndian.Uint16(d[16:18]) == unix.AF_INET {
			e.Offender = netip.AddrFrom4([4]byte(d[20:24]))
			e.OffenderReported = true
		}
		return e, nil
	}
	return e, errors.New("no IP_RECVERR control message")
}

// ---- checksums and frames ----

// ctChecksum is the Internet checksum of b (0 when b holds a valid checksum).
func ctChecksum(b []byte, initial uint32) uint16 {
	s := initial
	for i := 0; i+1 < len(b); i += 2 {
		s += uint32(b[i])<<8 | uint32(b[i+1])
	}
	if len(b)%2 == 1 {
		s += uint32(b[len(b)-1]) << 8
	}
	for s > 0xffff {
		s = s>>16 + s&0xffff
	}
	return ^uint16(s)
}

// Sizes and fields of the SYN frames ctFillSYN writes.
const (
	ethHeaderLen = 14
	ipHeaderLen  = 20 // no options
	tcpHeaderLen = 20 // no options
	synFrameLen  = ethHeaderLen + ipHeaderLen + tcpHeaderLen

	ipVersionIHL = 4<<4 | ipHeaderLen/4 // IPv4, header length in 32-bit words
	ipFlagDF     = 0x4000               // don't fragment (flags and fragment offset field)
	ipTTL        = 64
	tcpFlagSYN   = 0x02
	tcpWindow    = 64240
)

// ctFillSYN writes an Ethernet+IPv4+TCP SYN (synFrameLen bytes) into b.
func ctFillSYN(b []byte, dstMAC, srcMAC net.HardwareAddr, src, dst [4]byte, sport, dport uint16, seq uint32, ipid uint16) {
	copy(b[0:6], dstMAC)
	copy(b[6:12], srcMAC)
	binary.BigEndian.PutUint16(b[12:], unix.ETH_P_IP)
	ip := b[ethHeaderLen : ethHeaderLen+ipHeaderLen]
	ip[0], ip[1] = ipVersionIHL, 0
	binary.BigEndian.PutUint16(ip[2:], ipHeaderLen+tcpHeaderLen)
	binary.BigEndian.PutUint16(ip[4:], ipid)
	binary.BigEndian.PutUint16(ip[6:], ipFlagDF)
	ip[8], ip[9] = ipTTL, unix.IPPROTO_TCP
	ip[10], ip[11] = 0, 0
	copy(ip[12:16], src[:])
	copy(ip[16:20], dst[:])
	binary.BigEndian.PutUint16(ip[10:], ctChecksum(ip, 0))
	tcp := b[ethHeaderLen+ipHeaderLen : synFrameLen]
	binary.BigEndian.PutUint16(tcp[0:], sport)
	binary.BigEndian.PutUint16(tcp[2:], dport)
	binary.BigEndian.PutUint32(tcp[4:], seq)
	binary.BigEndian.PutUint32(tcp[8:], 0)
	tcp[12], tcp[13] = tcpHeaderLen/4<<4, tcpFlagSYN // data offset in 32-bit words
	binary.BigEndian.PutUint16(tcp[14:], tcpWindow)
	tcp[16], tcp[17], tcp[18], tcp[19] = 0, 0, 0, 0
	// Pseudo-header: addresses, protocol, TCP length.
	pseudo := uint32(src[0])<<8 | uint32(src[1])
	pseudo += uint32(src[2])<<8 | uint32(src[3])
	pseudo += uint32(dst[0])<<8 | uint32(dst[1])
	pseudo += uint32(dst[2])<<8 | uint32(dst[3])
	pseudo += unix.IPPROTO_TCP + tcpHeaderLen
	binary.BigEndian.PutUint16(tcp[16:], ctChecksum(tcp, pseudo))
}

// ctMmsghdr is struct mmsghdr.
type ctMmsghdr struct {
	Hdr unix.Msghdr
	Len uint32
	_   [4]byte
}

// ctFloodResult is what one SYN flood sender did.
type ctFloodResult struct {
	Sent, NoBufs int64
	Elapsed      time.Duration
}

// ctSYNFlood sends up to total spoofed TCP SYNs from an AF_PACKET socket on
// ifname in ns to dst (MAC dstMAC), sources random in srcNet with
// random ports; half go to listenPort, half to random ports. It paces itself
// to pps and stops at total or when ctx ends (bounded in time).
func ctSYNFlood(ctx context.Context, ns *NS, ifname string, dstMAC net.HardwareAddr, dst netip.Addr, srcNet netip.Prefix, listenPort uint16, total int64, pps float64, seed uint64) (ctFloodResult, error) {
	var res ctFloodResult
	netBase := binary.BigEndian.Uint32(srcNet.Masked().Addr().AsSlice())
	hostMask := uint32(1)<<(32-srcNet.Bits()) - 1
	l, err := ns.Netlink().LinkByName(ifname)
	if err != nil {
		return res, err
	}
	srcMAC := l.Attrs().HardwareAddr
	fd := -1
	err = ns.Do(func() error {
		var err error
		fd, err = unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0) // protocol 0: send only
		if err != nil {
			return err
		}
		if err := unix.Bind(fd, &unix.SockaddrLinklayer{Ifindex: l.Attrs().Index}); err != nil {
			return err
		}
		unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUF, 4<<20)
		return unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_QDISC_BYPASS, 1)
	})
	if fd >= 0 {
		defer unix.Close(fd)
	}
	if err != nil {
		return res, fmt.Errorf("%s: AF_PACKET socket on %s: %w", ns.Name, ifname, err)
	}
	const batch = 64
	const flen = synFrameLen
	bufs := make([]byte, batch*flen)
	iovs := make([]unix.Iovec, batch)
	msgs := make([]ctMmsghdr, batch)
	for i := range batch {
		iovs[i].Base = &bufs[i*flen]
		iovs[i].SetLen(flen)
		msgs[i].Hdr.Iov = &iovs[i]
		msgs[i].Hdr.SetIovlen(1)
	}
	rng := rand.New(rand.NewPCG(seed, seed^0x5eed))
	d4 := dst.As4()
	start := time.Now()
	for res.Sent < total && ctx.Err() == nil {
		n := int(min(int64(batch), total-res.Sent))
		for i := 0; i < n; i++ {
			s := netBase | rng.Uint32()&hostMask
			src := [4]byte{byte(s >> 24), byte(s >> 16), byte(s >> 8), byte(s)}
			dport := listenPort
			if rng.IntN(2) == 0 {
				dport = uint16(1024 + rng.IntN(64000))
			}
			ctFillSYN(bufs[i*flen:(i+1)*flen], dstMAC, srcMAC, src, d4, uint16(1024+rng.IntN(64000)), dport, rng.Uint32(), uint16(rng.Uint32()))
		}
		r, _, errno := unix.Syscall6(unix.SYS_SENDMMSG, uintptr(fd), uintptr(unsafe.Pointer(&msgs[0])), uintptr(n), 0, 0, 0)
		if errno != 0 {
			if errno == unix.ENOBUFS || errno == unix.EAGAIN {
				res.NoBufs++
				time.Sleep(200 * time.Microsecond)
				continue
			}
			return res, fmt.Errorf("sendmmsg: %w", errno)
		}
		res.Sent += int64(r)
		if ahead := time.Duration(float64(res.Sent)/pps*1e9) - time.Since(start); ahead > time.Millisecond {
			select {
			case <-ctx.Done():
			case <-time.After(ahead):
			}
		}
	}
	runtime.KeepAlive(bufs)
	runtime.KeepAlive(iovs)
	runtime.KeepAlive(msgs)
	res.Elapsed = time.Since(start)
	return res, nil
}

// ---- bulk ----

// ctPacedUpload uploads size bytes of the stream for seed to a BulkServer at
// no more than rate bytes/s (so that it lasts), storing its progress, and
// checks the server's sha256 against the sender's.
func ctPacedUpload(ctx context.Context, ns *NS, addr netip.AddrPort, size int64, seed uint64, rate float64, progress *atomic.Int64) (TransferResult, error) {
	start := time.Now()
	return upload(ctx, ns, addr, size, seed, nil, func(sent int64) {
		progress.Store(sent)
		if ahead := time.Duration(float64(sent)/rate*1e9) - time.Since(start); ahead > 0 {
			time.Sleep(ahead)
		}
	})
}

// ---- 1. SYN flood ----

// TestConntrackSYNFlood: max_flows = 65536; while a paced 256 MiB
// upload runs host → server through the shim, gw0 and gw1 each send 500,000
// spoofed SYNs (random sources in 100.64.0.0/10, random ports; half to a
// port the host listens on, half to closed ports) to the host's addresses,
// bounded to 30 s. The upload completes byte-exact, the shim's memory stays
// bounded, the table never exceeds its bound and evicts, and new connections
// succeed afterwards.
func TestConntrackSYNFlood(t *testing.T) {
	topo := newTopo(t)
	srv := startServers(t, topo)
	const (
		maxFlows   = 65536
		floodTotal = 1_000_000
		floodPPS   = 150_000.0 // both senders together: more than the shim takes in on 2 cores
		floodLimit = 30 * time.Second
		upSize     = 256 << 20
		upRate     = 12 << 20 // bytes/s: the upload lasts through the flood
		listenPort = 8022
		rssBound   = 400 << 20
	)
	ctx, cancel := context.WithTimeout(context.Background(), 150*time.Second)
	defer cancel()

	// The host listens on one port (the flood's SYN-ACKs); its answers to the
	// spoofed sources are counted and dropped at the gateways.
	if _, err := StartTCPEcho(topo.Host, netip.AddrPortFrom(netip.IPv4Unspecified(), listenPort)); err != nil {
		t.Fatal(err)
	}
	// Disjoint spoofed sources per uplink: the host's answers to SYNs that
	// came through gw1 must go back through gw1 (source-aware, un-NATed),
	// never through gw0, and the other way round.
	flood0 := netip.MustParsePrefix("100.64.0.0/11") // sent by gw0 to 10.1.0.2
	flood1 := netip.MustParsePrefix("100.96.0.0/11") // sent by gw1 to 10.2.0.2
	gwRules := func(other netip.Prefix) [][2]string {
		return [][2]string{
			{"cross", "ip daddr " + other.String()},
			{"rst", "ip daddr 100.64.0.0/10 tcp flags & rst == rst => drop"},
			{"synack", "ip daddr 100.64.0.0/10 tcp flags & (syn | ack) == syn | ack => drop"},
			{"other", "ip daddr 100.64.0.0/10 => drop"},
		}
	}
	gw0 := nftCounters(t, topo.GW0, "ctflood", "prerouting", gwRules(flood1))
	gw1 := nftCounters(t, topo.GW1, "ctflood", "prerouting", gwRules(flood0))
	host := nftCounters(t, topo.Host, "ctflood", "prerouting", [][2]string{
		{"syn", "ip saddr 100.64.0.0/10 tcp flags & (syn | ack) == syn"},
	})

	s := startShimCfg(t, topo, ConfigOptions{Mode: "load-balance", Extra: fmt.Sprintf("[conntrack]\nmax_flows = %d\n", maxFlows)})
	rss0, _, err := ctProcMem(s.Pid())
	if err != nil {
		t.Fatal(err)
	}

	// The established transfer.
	var progress atomic.Int64
	type upResult struct {
		res     TransferResult
		err     error
		elapsed time.Duration
	}
	upDone := make(chan upResult, 1)
	upStart := time.Now()
	go func() {
		res, err := ctPacedUpload(ctx, topo.Host, srv.bulkAddr(), upSize, 0xc0ffee, upRate, &progress)
		upDone <- upResult{res, err, time.Since(upStart)}
	}()
	for progress.Load() < 8<<20 {
		select {
		case r := <-upDone:
			t.Fatalf("upload ended before the flood started: %v", r.err)
		case <-time.After(20 * time.Millisecond):
		}
		if time.Since(upStart) > 15*time.Second {
			t.Fatalf("upload made no progress: %d bytes in 15 s", progress.Load())
		}
	}
	t.Logf("upload of %d MiB running (%d MiB sent); flood starts", upSize>>20, progress.Load()>>20)

	// Sample memory and the flow table while flooding.
	var (
		peakRSS   atomic.Int64
		maxSeen   atomic.Int64
		statusErr atomic.Value
	)
	peakRSS.Store(rss0)
	sampCtx, stopSamp := context.WithCancel(ctx)
	var sampWG sync.WaitGroup
	sampWG.Add(1)
	go func() {
		defer sampWG.Done()
		tick := time.NewTicker(250 * time.Millisecond)
		defer tick.Stop()
		for i := 0; ; i++ {
			select {
			case <-sampCtx.Done():
				return
			case <-tick.C:
			}
			if rss, _, err := ctProcMem(s.Pid()); err == nil && rss > peakRSS.Load() {
				peakRSS.Store(rss)
			}
			if i%4 == 0 {
				st, err := s.queryStatus()
				if err != nil {
					if sampCtx.Err() == nil {
						statusErr.Store(err.Error())
					}
					continue
				}
				if n := int64(st.Conntrack.Flows); n > maxSeen.Load() {
					maxSeen.Store(n)
				}
			}
		}
	}()

	// Legitimate new connections during the flood, four a second: the host's own frames have a
	// capture queue of their own, so the flood on the wire's queue must not starve them.
	var duringOK, duringN atomic.Int64
	floodCtx, stopFlood := context.WithTimeout(ctx, floodLimit)
	defer stopFlood()
	var duringWG sync.WaitGroup
	duringWG.Add(1)
	go func() {
		defer duringWG.Done()
		for floodCtx.Err() == nil {
			duringN.Add(1)
			if TCPEcho(ctx, topo.Host, srv.echoAddr(), []byte("during the flood"), 3*time.Second) == nil {
				duringOK.Add(1)
			}
			select {
			case <-floodCtx.Done():
			case <-time.After(250 * time.Millisecond):
			}
		}
	}()

	floodStart := time.Now()
	var fwg sync.WaitGroup
	fres := make([]ctFloodResult, 2)
	ferr := make([]error, 2)
	for i, f := range []struct {
		ns     *NS
		dstMAC net.HardwareAddr
		dst    netip.Addr
		src    netip.Prefix
	}{{topo.GW0, macHostEth0, topo.HostAddr0, flood0}, {topo.GW1, macHostEth1, topo.HostAddr1, flood1}} {
		fwg.Add(1)
		go func() {
			defer fwg.Done()
			fres[i], ferr[i] = ctSYNFlood(floodCtx, f.ns, "lan", f.dstMAC, f.dst, f.src, listenPort, floodTotal/2, floodPPS/2, uint64(i+1)*0x9e3779b97f4a7c15)
		}()
	}
	fwg.Wait()
	floodElapsed := time.Since(floodStart)
	stopFlood()
	duringWG.Wait()
	for i := range ferr {
		if ferr[i] != nil {
			t.Errorf("flood sender %d: %v", i, ferr[i])
		}
	}
	sent := fres[0].Sent + fres[1].Sent
	t.Logf("MEASURED flood: %d spoofed SYNs sent in %v (%.0f/s; gw0 %d, gw1 %d; ENOBUFS batches %d); host stack received %d of them",
		sent, floodElapsed.Round(time.Millisecond), float64(sent)/floodElapsed.Seconds(), fres[0].Sent, fres[1].Sent, fres[0].NoBufs+fres[1].NoBufs, host("syn"))
	t.Logf("during the flood: %d/%d new echo connections succeeded; upload at %d MiB", duringOK.Load(), duringN.Load(), progress.Load()>>20)
	// The target is 95 %; on a sample of a few dozen one unlucky attempt is more than 5 %, so
	// one failure is tolerated. Before the host had its own queue, 1 in 4 failed.
	if ok, n := duringOK.Load(), duringN.Load(); n == 0 || (ok*100 < n*95 && n-ok > 1) {
		t.Errorf("during the flood only %d of %d of the host's new connections succeeded; want >= 95%%", ok, n)
	}
	if sent < floodTotal*9/10 {
		t.Errorf("the flood sent only %d of %d SYNs within %v: the test did not flood", sent, floodTotal, floodLimit)
	}

	// The transfer completes byte-exact.
	var up upResult
	select {
	case up = <-upDone:
	case <-time.After(90 * time.Second):
		t.Fatalf("upload still running 90 s after the flood (%d of %d MiB sent)", progress.Load()>>20, upSize>>20)
	}
	if up.err != nil {
		t.Errorf("upload during the flood failed after %d MiB (via %s): %v", progress.Load()>>20, up.res.Seen, up.err)
	} else {
		t.Logf("MEASURED upload during the flood: %d MiB via %s byte-exact in %v, sha256 %s…", upSize>>20, up.res.Seen, up.elapsed.Round(time.Millisecond), up.res.SHA256[:16])
	}

	// Memory, table bound, evictions.
	stopSamp()
	sampWG.Wait()
	rss1, hwm, err := ctProcMem(s.Pid())
	if err != nil {
		t.Fatal(err)
	}
	if rss1 > peakRSS.Load() {
		peakRSS.Store(rss1)
	}
	st, err := s.queryStatus()
	if err != nil {
		t.Fatal(err)
	}
	if v := statusErr.Load(); v != nil {
		t.Logf("a status request during the flood failed: %v", v)
	}
	t.Logf("MEASURED shim memory: VmRSS before %s, peak sampled %s, after %s, VmHWM %s (bound %s)", ctMiB(rss0), ctMiB(peakRSS.Load()), ctMiB(rss1), ctMiB(hwm), ctMiB(rssBound))
	t.Logf("MEASURED conntrack: max flows seen %d, now %d (max %d), evictions %d, table_full %d, flows created %d; host answers at gw0: rst %d synack %d other %d; at gw1: rst %d synack %d other %d",
		maxSeen.Load(), st.Conntrack.Flows, st.Conntrack.Max, st.Conntrack.Evictions, st.Datapath["table_full"], st.Datapath["flows_created"],
		gw0("rst"), gw0("synack"), gw0("other"), gw1("rst"), gw1("synack"), gw1("other"))
	if c0, c1 := gw0("cross"), gw1("cross"); c0 != 0 || c1 != 0 {
		t.Errorf("the host's answers to flood SYNs left through the other uplink: %d answers to SYNs that came via gw1 (to 10.2.0.2) left via gw0, %d answers to SYNs that came via gw0 left via gw1 (source-aware routing and per-source placement broken; such answers are NATed to the wrong address)", c0, c1)
	}
	t.Logf("datapath: %v; drops: %v", st.Datapath, st.Drops)
	if hwm > rssBound || peakRSS.Load() > rssBound {
		t.Errorf("shim memory not bounded: VmHWM %s, peak VmRSS %s (bound %s)", ctMiB(hwm), ctMiB(peakRSS.Load()), ctMiB(rssBound))
	}
	if st.Conntrack.Max != maxFlows {
		t.Errorf("status reports max %d flows, config says %d", st.Conntrack.Max, maxFlows)
	}
	if maxSeen.Load() > maxFlows || st.Conntrack.Flows > maxFlows {
		t.Errorf("flow table exceeded its bound: %d (then %d) > %d", maxSeen.Load(), st.Conntrack.Flows, maxFlows)
	}
	// The flood is bounded twice: flows from the wire to one local port get an eighth of the
	// table (the rest are not tracked, inbound_refused), and within the table a new flow
	// evicts an unreplied or closing one.
	if st.Datapath["inbound_refused"] == 0 || st.Conntrack.Flows > maxFlows/2+64 {
		t.Errorf("%d spoofed SYNs to one port: %d not tracked (inbound_refused), %d flows in a table of %d: the wire's share of the table did not bite", sent, st.Datapath["inbound_refused"], st.Conntrack.Flows, maxFlows)
	}
	if s.Exited() {
		t.Fatalf("l2shim exited during the flood")
	}

	// New legitimate connections still succeed afterwards.
	srv.echo.Seen.Reset()
	ok, errs := TCPEchoMany(ctx, topo.Host, srv.echoAddr(), 40, 4, 3*time.Second)
	if ok != 40 {
		t.Errorf("after the flood: %d/40 new TCP connections succeeded:%s", ok, firstErrs(errs, 5))
	}
	r := UDPExchange(ctx, topo.Host, srv.udpAddr(), 20, 1, time.Second)
	if r.Answered != 20 {
		t.Errorf("after the flood: %d/20 UDP requests answered:%s", r.Answered, firstErrs(r.Errors, 5))
	}
	t.Logf("after the flood: %d/40 TCP (server saw %s), %d/20 UDP", ok, srv.echo.Seen, r.Answered)
	stopShim(t, s)
}

// ---- 2. tuple ownership ----

// TestConntrackTupleOwnership: a flow NATed to 10.2.0.2:P (a
// socket bound to 10.1.0.2:P, route-to gw1) and a host socket bound to
// 10.2.0.2:P toward the same server address and port, in both orders, TCP
// and UDP: both work and exchange data independently, the server sees two
// different source ports, the one that arrived second is remapped to a port
// outside the host's ip_local_port_range, and the first keeps P.
func TestConntrackTupleOwnership(t *testing.T) {
	topo := newTopo(t)
	const port = 7100
	srvAddr := netip.AddrPortFrom(topo.ServerAddr, port)
	ctStartPeerServer(t, topo.Server, srvAddr)
	s := startShimCfg(t, topo, ConfigOptions{Mode: "load-balance", Extra: ctRule("tcp", port, "eth1") + "\n" + ctRule("udp", port, "eth1")})
	rng, err := topo.Host.ReadSysctl("net.ipv4.ip_local_port_range")
	if err != nil {
		t.Fatal(err)
	}
	var lo, hi int
	if _, err := fmt.Sscan(rng, &lo, &hi); err != nil {
		t.Fatalf("ip_local_port_range %q: %v", rng, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	nextPort := 20000 + rand.IntN(5000)

	check := func(t *testing.T, p int, first, second netip.AddrPort) {
		t.Helper()
		want := netip.AddrPortFrom(topo.HostAddr1, uint16(p))
		if first != want {
			t.Errorf("first flow: server saw %s, want %s (the first flow keeps its port)", first, want)
		}
		if second.Addr() != topo.HostAddr1 {
			t.Errorf("second flow: server saw %s, want address %s", second, topo.HostAddr1)
		}
		if second.Port() == first.Port() {
			t.Errorf("both flows on the same external tuple %s", first)
		}
		if q := int(second.Port()); q >= lo && q <= hi {
			t.Errorf("second flow remapped to port %d, inside the host's ip_local_port_range %d-%d", q, lo, hi)
		}
	}

	for _, order := range []struct {
		name          string
		first, second netip.Addr
	}{
		{"nat-first", topo.HostAddr0, topo.HostAddr1},
		{"host-first", topo.HostAddr1, topo.HostAddr0},
	} {
		t.Run(order.name+"/tcp", func(t *testing.T) {
			p := nextPort
			nextPort += 7
			a, seenA, err := ctDialPeer(ctx, topo.Host, netip.AddrPortFrom(order.first, uint16(p)), srvAddr)
			if err != nil {
				t.Fatalf("first connection from %s:%d: %v", order.first, p, err)
			}
			defer a.Close()
			b, seenB, err := ctDialPeer(ctx, topo.Host, netip.AddrPortFrom(order.second, uint16(p)), srvAddr)
			if err != nil {
				t.Fatalf("second connection from %s:%d (first seen as %s): %v", order.second, p, seenA, err)
			}
			defer b.Close()
			t.Logf("%s:%d → server saw %s; %s:%d → server saw %s", order.first, p, seenA, order.second, p, seenB)
			check(t, p, seenA, seenB)
			// Interleaved, independent data on both.
			for round := 0; round < 20; round++ {
				msgA := bytes.Repeat([]byte{'a', byte(round)}, 700+round*100)
				msgB := bytes.Repeat([]byte{'b', byte(round)}, 500+round*150)
				a.SetDeadline(time.Now().Add(3 * time.Second))
				b.SetDeadline(time.Now().Add(3 * time.Second))
				if _, err := a.Write(msgA); err != nil {
					t.Fatalf("round %d: write first: %v", round, err)
				}
				if _, err := b.Write(msgB); err != nil {
					t.Fatalf("round %d: write second: %v", round, err)
				}
				gotB := make([]byte, len(msgB))
				if _, err := io.ReadFull(b, gotB); err != nil || !bytes.Equal(gotB, msgB) {
					t.Fatalf("round %d: second connection's echo: %v (equal %v)", round, err, bytes.Equal(gotB, msgB))
				}
				gotA := make([]byte, len(msgA))
				if _, err := io.ReadFull(a, gotA); err != nil || !bytes.Equal(gotA, msgA) {
					t.Fatalf("round %d: first connection's echo: %v (equal %v)", round, err, bytes.Equal(gotA, msgA))
				}
			}
		})
		t.Run(order.name+"/udp", func(t *testing.T) {
			p := nextPort
			nextPort += 7
			ask := func(u *ctUDP, payload string) (netip.AddrPort, error) {
				buf := make([]byte, 2048)
				for try := 0; try < 3; try++ {
					if err := u.Send([]byte(payload)); err != nil {
						return netip.AddrPort{}, err
					}
					deadline := time.Now().Add(time.Second)
					for time.Now().Before(deadline) {
						n, err := u.Recv(buf, time.Until(deadline))
						if err != nil {
							if err == errCTTimeout {
								break
							}
							return netip.AddrPort{}, err
						}
						who, rest, ok := strings.Cut(string(buf[:n]), "|")
						if !ok || rest != payload {
							continue // a late answer to an earlier try
						}
						return netip.ParseAddrPort(who)
					}
				}
				return netip.AddrPort{}, errors.New("no answer after 3 tries")
			}
			a, err := ctDialUDP(topo.Host, netip.AddrPortFrom(order.first, uint16(p)), srvAddr, nil)
			if err != nil {
				t.Fatal(err)
			}
			defer a.Close()
			seenA, err := ask(a, "first hello")
			if err != nil {
				t.Fatalf("first flow from %s:%d: %v", order.first, p, err)
			}
			b, err := ctDialUDP(topo.Host, netip.AddrPortFrom(order.second, uint16(p)), srvAddr, nil)
			if err != nil {
				t.Fatal(err)
			}
			defer b.Close()
			seenB, err := ask(b, "second hello")
			if err != nil {
				t.Fatalf("second flow from %s:%d (first seen as %s): %v", order.second, p, seenA, err)
			}
			t.Logf("%s:%d → server saw %s; %s:%d → server saw %s", order.first, p, seenA, order.second, p, seenB)
			check(t, p, seenA, seenB)
			for round := 0; round < 10; round++ {
				ra, err := ask(a, fmt.Sprintf("first %d", round))
				if err != nil || ra != seenA {
					t.Fatalf("round %d: first flow: %v, seen as %s (was %s)", round, err, ra, seenA)
				}
				rb, err := ask(b, fmt.Sprintf("second %d", round))
				if err != nil || rb != seenB {
					t.Fatalf("round %d: second flow: %v, seen as %s (was %s)", round, err, rb, seenB)
				}
			}
		})
	}
	stopShim(t, s)
}

// ---- 3. ICMP errors ----

// TestConntrackICMPErrors: errors about flows NATed via gw1
// (route-to rules) are translated both ways.
//   - from the wire: the server's port unreachable (the host's connected UDP
//     socket gets ECONNREFUSED, offender the server), gw1's time exceeded
//     for a TTL-1 datagram (EHOSTUNREACH, offender 10.2.0.1) and gw1's
//     fragmentation needed when its upstream MTU drops to 1300 (EMSGSIZE,
//     the host's path MTU becomes 1300);
//   - from the host: its port unreachable for a datagram arriving on a NATed
//     flow whose socket is closed reaches the server from 10.2.0.2, quoting
//     10.2.0.2 and the NAT port, checksums valid; its RST for data arriving
//     after it closed a NATed TCP connection resets the server's side.
func TestConntrackICMPErrors(t *testing.T) {
	topo := newTopo(t)
	const (
		closedPort = 7200 // nothing listens
		echoPort   = 7201
		latePort   = 7202
		rstPort    = 7203
	)
	srvAt := func(p int) netip.AddrPort { return netip.AddrPortFrom(topo.ServerAddr, uint16(p)) }
	if _, err := StartUDPEcho(topo.Server, srvAt(echoPort)); err != nil {
		t.Fatal(err)
	}
	extra := ctRule("udp", closedPort, "eth1") + ctRule("udp", echoPort, "eth1") + ctRule("udp", latePort, "eth1") + ctRule("tcp", rstPort, "eth1")
	gw0 := nftCounters(t, topo.GW0, "ctic", "forward", [][2]string{
		{"icmp-err", "icmp type { destination-unreachable, time-exceeded }"},
		{"rst", "tcp flags & rst == rst"},
		{"udp", "udp dport { 7200, 7201, 7202 }"},
	})
	gw1 := nftCounters(t, topo.GW1, "ctic", "forward", [][2]string{
		{"icmp-err-out", "ip saddr 10.2.0.2 icmp type destination-unreachable"},
		{"udp-out", "ip saddr 10.2.0.2 udp dport { 7200, 7201, 7202 }"},
		{"rst-out", "ip saddr 10.2.0.2 tcp flags & rst == rst"},
	})
	s := startShimCfg(t, topo, ConfigOptions{Mode: "load-balance", Extra: extra})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	// expectErr sends payload on u until a read returns an error (at most 3
	// tries, 1.5 s each) and returns it with the error queue entry.
	expectErr := func(u *ctUDP, payload []byte) (error, ctErrQueue, error) {
		buf := make([]byte, 65536)
		for try := 0; try < 3; try++ {
			if err := u.Send(payload); err != nil {
				// A pending error may surface on send too.
				eq, qerr := u.ErrQueue()
				return err, eq, qerr
			}
			_, err := u.Recv(buf, 1500*time.Millisecond)
			if err == errCTTimeout {
				continue
			}
			if err == nil {
				continue // an answer: not what we wait for
			}
			eq, qerr := u.ErrQueue()
			return err, eq, qerr
		}
		return errCTTimeout, ctErrQueue{}, errors.New("no error")
	}

	t.Run("wire/port-unreachable", func(t *testing.T) {
		u, err := ctDialUDP(topo.Host, netip.AddrPort{}, srvAt(closedPort), map[int]int{unix.IP_RECVERR: 1})
		if err != nil {
			t.Fatal(err)
		}
		defer u.Close()
		rerr, eq, qerr := expectErr(u, []byte("anyone there?"))
		t.Logf("socket %s → %s: read error %v; error queue: %v (%v)", u.LocalAddr(), srvAt(closedPort), rerr, eq, qerr)
		if !errors.Is(rerr, unix.ECONNREFUSED) {
			t.Errorf("connected UDP socket got %v, want ECONNREFUSED: the server's port unreachable about the NATed flow was not translated to the host", rerr)
		}
		if qerr == nil && (eq.Origin != unix.SO_EE_ORIGIN_ICMP || eq.Type != icmpDestUnreachable || eq.Code != icmpCodePort || eq.Offender != topo.ServerAddr) {
			t.Errorf("error queue: %v, want ICMP type 3 code 3 from %s", eq, topo.ServerAddr)
		}
		if n := gw1("udp-out"); n == 0 {
			t.Errorf("gw1 forwarded no datagram from 10.2.0.2: the flow was not NATed via gw1")
		}
	})

	t.Run("wire/time-exceeded", func(t *testing.T) {
		u, err := ctDialUDP(topo.Host, netip.AddrPort{}, srvAt(echoPort), map[int]int{unix.IP_RECVERR: 1, unix.IP_TTL: 1})
		if err != nil {
			t.Fatal(err)
		}
		defer u.Close()
		rerr, eq, qerr := expectErr(u, []byte("ttl 1"))
		t.Logf("socket %s, TTL 1 → %s: read error %v; error queue: %v (%v)", u.LocalAddr(), srvAt(echoPort), rerr, eq, qerr)
		if !errors.Is(rerr, unix.EHOSTUNREACH) {
			t.Errorf("TTL-1 datagram: socket got %v, want EHOSTUNREACH (gw1's time exceeded, translated)", rerr)
		}
		if qerr != nil || eq.Type != icmpTimeExceeded || eq.Offender != topo.GW1Addr {
			t.Errorf("error queue: %v (%v), want ICMP type 11 from %s", eq, qerr, topo.GW1Addr)
		}
	})

	t.Run("host/port-unreachable", func(t *testing.T) {
		late, err := listenUDP(topo.Server, srvAt(latePort))
		if err != nil {
			t.Fatal(err)
		}
		defer late.Close()
		ic, err := listenICMP(topo.Server)
		if err != nil {
			t.Fatal(err)
		}
		defer ic.Close()
		u, err := ctDialUDP(topo.Host, netip.AddrPort{}, srvAt(latePort), nil)
		if err != nil {
			t.Fatal(err)
		}
		hostSide := u.LocalAddr()
		if err := u.Send([]byte("hello, then gone")); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 2048)
		late.SetReadDeadline(time.Now().Add(3 * time.Second))
		_, nat, err := late.ReadFromUDPAddrPort(buf)
		if err != nil {
			t.Fatalf("server did not get the datagram: %v", err)
		}
		nat = netip.AddrPortFrom(nat.Addr().Unmap(), nat.Port())
		t.Logf("host socket %s seen by the server as %s; host closes it", hostSide, nat)
		if nat.Addr() != topo.HostAddr1 {
			t.Fatalf("flow not NATed to %s: server saw %s", topo.HostAddr1, nat)
		}
		u.Close()
		var found bool
		for try := 0; try < 3 && !found; try++ {
			if _, err := late.WriteToUDPAddrPort([]byte("late answer"), nat); err != nil {
				t.Fatal(err)
			}
			deadline := time.Now().Add(1500 * time.Millisecond)
			for !found && time.Now().Before(deadline) {
				ic.SetReadDeadline(deadline)
				n, peer, err := ic.ReadFrom(buf)
				if err != nil {
					break
				}
				m := buf[:n]
				if len(m) < 8+20+8 || m[0] != icmpDestUnreachable || m[1] != icmpCodePort {
					continue
				}
				inner := m[8:]
				ihl := int(inner[0]&0x0f) * 4
				if inner[9] != unix.IPPROTO_UDP || len(inner) < ihl+8 {
					continue
				}
				isrc := netip.AddrFrom4([4]byte(inner[12:16]))
				idst := netip.AddrFrom4([4]byte(inner[16:20]))
				sport := binary.BigEndian.Uint16(inner[ihl:])
				dport := binary.BigEndian.Uint16(inner[ihl+2:])
				if isrc != topo.ServerAddr || sport != latePort {
					continue
				}
				found = true
				var from netip.Addr
				if ia, ok := peer.(*net.IPAddr); ok {
					from, _ = netip.AddrFromSlice(ia.IP.To4())
				}
				t.Logf("server got ICMP port unreachable from %s quoting %s:%d → %s:%d", from, isrc, sport, idst, dport)
				if from != nat.Addr() {
					t.Errorf("the host's ICMP error reached the server from %s, want the flow's external address %s", from, nat.Addr())
				}
				if idst != nat.Addr() || dport != nat.Port() {
					t.Errorf("the ICMP error quotes destination %s:%d, want the NAT tuple %s", idst, dport, nat)
				}
				if c := ctChecksum(m, 0); c != 0 {
					t.Errorf("ICMP checksum wrong (folds to %#04x)", c)
				}
				if c := ctChecksum(inner[:ihl], 0); c != 0 {
					t.Errorf("quoted IP header checksum wrong (folds to %#04x)", c)
				}
			}
		}
		if !found {
			t.Errorf("no ICMP port unreachable about %s reached the server (gw0 forwarded %d ICMP errors, gw1 %d from 10.2.0.2)", nat, gw0("icmp-err"), gw1("icmp-err-out"))
		}
	})

	t.Run("host/rst", func(t *testing.T) {
		type res struct {
			peer netip.Addr
			err  error
		}
		got := make(chan res, 1)
		ln, err := listenTCP(topo.Server, srvAt(rstPort))
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		go func() {
			c, err := ln.Accept()
			if err != nil {
				got <- res{err: err}
				return
			}
			defer c.Close()
			peer := remoteAddr(c.RemoteAddr())
			c.SetDeadline(time.Now().Add(5 * time.Second))
			io.Copy(io.Discard, c) // until the host's FIN
			// Data after the host closed: the host answers with an RST,
			// after which a write here fails (EPIPE in CLOSE_WAIT). A read
			// cannot tell: after the FIN it returns EOF whatever follows.
			var werr error
			for i := 0; i < 40 && werr == nil; i++ {
				time.Sleep(50 * time.Millisecond)
				_, werr = c.Write([]byte("late data after your close"))
			}
			got <- res{peer, werr}
		}()
		c, err := DialTCP(ctx, topo.Host, srvAt(rstPort))
		if err != nil {
			t.Fatal(err)
		}
		c.Write([]byte("bye"))
		c.Close()
		r := <-got
		t.Logf("server side of a NATed connection (peer %s), writing to the closed host socket: %v; gw1 forwarded %d RSTs from 10.2.0.2, gw0 %d RSTs", r.peer, r.err, gw1("rst-out"), gw0("rst"))
		if r.peer != topo.HostAddr1 {
			t.Errorf("connection not NATed to %s: server saw %s", topo.HostAddr1, r.peer)
		}
		if !errors.Is(r.err, unix.EPIPE) && !errors.Is(r.err, unix.ECONNRESET) {
			t.Errorf("server's writes after the host closed: %v, want EPIPE or ECONNRESET within 2 s (the host's RST about the NATed flow must leave with 10.2.0.2)", r.err)
		}
		if n := gw0("rst"); n != 0 {
			t.Errorf("gw0 forwarded %d RSTs: the host's RST left untranslated", n)
		}
	})

	// Last: it changes the host's path MTU toward the server.
	t.Run("wire/fragmentation-needed", func(t *testing.T) {
		ctSetMTU(t, topo.GW1, "wan", 1300)
		defer ctSetMTU(t, topo.GW1, "wan", 1500)
		u, err := ctDialUDP(topo.Host, netip.AddrPort{}, srvAt(echoPort), map[int]int{unix.IP_RECVERR: 1, unix.IP_MTU_DISCOVER: unix.IP_PMTUDISC_DO})
		if err != nil {
			t.Fatal(err)
		}
		defer u.Close()
		rerr, eq, qerr := expectErr(u, make([]byte, 1400))
		mtu, merr := unix.GetsockoptInt(u.fd, unix.IPPROTO_IP, unix.IP_MTU)
		t.Logf("socket %s, DF 1428-byte datagram via gw1 (upstream MTU 1300): error %v; error queue: %v (%v); IP_MTU %d (%v)", u.LocalAddr(), rerr, eq, qerr, mtu, merr)
		if !errors.Is(rerr, unix.EMSGSIZE) {
			t.Errorf("socket got %v, want EMSGSIZE (gw1's fragmentation needed, translated)", rerr)
		}
		if qerr == nil && (eq.Type != icmpDestUnreachable || eq.Code != icmpCodeFragNeeded || eq.Info != 1300) {
			t.Errorf("error queue: %v, want ICMP type 3 code 4 mtu 1300", eq)
		}
		if mtu != 1300 {
			t.Errorf("host's path MTU toward the server is %d, want 1300", mtu)
		}
	})
	stopShim(t, s)
}

// ---- 4. MTU ----

// TestConntrackMTU: the second uplink (host eth1, gw1's LAN
// side) at MTU 1400, the first at 1500; 64 MiB uploads and downloads placed
// on the second (route-to, NATed) complete byte-exact, with the host's GRO
// off (veth default) and on (a real NIC); a DF datagram too big
// for it gets the host an ICMP fragmentation-needed (its path MTU becomes
// 1400) and a fitting one is answered.
func TestConntrackMTU(t *testing.T) {
	topo := newTopo(t)
	srv := startServers(t, topo)
	const udpPort = 7300
	if _, err := StartUDPEcho(topo.Server, netip.AddrPortFrom(topo.ServerAddr, udpPort)); err != nil {
		t.Fatal(err)
	}
	ctSetMTU(t, topo.Host, "eth1", 1400)
	ctSetMTU(t, topo.GW1, "lan", 1400)
	s := startShimCfg(t, topo, ConfigOptions{Mode: "load-balance", Extra: ctRule("tcp", BulkPort, "eth1") + ctRule("udp", udpPort, "eth1")})
	const size = 64 << 20
	for _, gro := range []bool{false, true} {
		// GRO on the host's veths mimics a real NIC (veth has it off).
		for _, ifname := range []string{"eth0", "eth1"} {
			if err := SetGRO(topo.Host, ifname, gro); err != nil {
				t.Fatal(err)
			}
		}
		for _, dir := range []string{"upload", "download"} {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			var res TransferResult
			var err error
			if dir == "upload" {
				res, err = Upload(ctx, topo.Host, srv.bulkAddr(), size, 0x1400, From(topo.HostAddr1))
			} else {
				res, err = Download(ctx, topo.Host, srv.bulkAddr(), size, 0x1401, From(topo.HostAddr1))
			}
			cancel()
			if err != nil {
				t.Errorf("GRO %v: %s of %d MiB on the MTU-1400 uplink: %v (%d bytes in %v, server saw %s)", gro, dir, size>>20, err, res.Bytes, res.Elapsed.Round(time.Millisecond), res.Seen)
				continue
			}
			if res.Tries != 1 {
				t.Errorf("GRO %v: %s: %d connections until one was on eth1: the route-to rule did not place it", gro, dir, res.Tries)
			}
			t.Logf("MEASURED GRO %v: %s on the MTU-1400 uplink: %d MiB byte-exact in %v (%.2f Gbit/s), server saw %s", gro, dir, size>>20, res.Elapsed.Round(time.Millisecond), res.Gbps(), res.Seen)
		}
	}

	// UDP without DF (a DNS server's answers, a LAN client's datagrams): 1450 bytes fit eth0
	// (the host's choice), not eth1; l2shim cuts them as a router on the path would, and the
	// server gets them whole. OMIT: the socket ignores any path MTU the host learned. The
	// first echo may be lost: the server's answer has DF, and gw1's LAN side (1400) teaches
	// the server its path MTU with it.
	nodf, err := ctDialUDP(topo.Host, netip.AddrPort{}, netip.AddrPortFrom(topo.ServerAddr, udpPort), map[int]int{unix.IP_MTU_DISCOVER: unix.IP_PMTUDISC_OMIT})
	if err != nil {
		t.Fatal(err)
	}
	defer nodf.Close()
	nodfData := bytes.Repeat([]byte("nodf "), 1450/5)
	reply := make([]byte, 4096)
	var echoed bool
	for try := 1; try <= 3 && !echoed; try++ {
		if err := nodf.Send(nodfData); err != nil {
			t.Errorf("send %d bytes without DF: %v", len(nodfData), err)
			break
		}
		n, err := nodf.Recv(reply, time.Second)
		echoed = err == nil && bytes.Equal(reply[:n], nodfData)
		t.Logf("datagram of %d bytes without DF toward the MTU-1400 uplink, try %d: echo of %d bytes (%v), whole %v", len(nodfData)+28, try, n, err, echoed)
	}
	if !echoed {
		t.Errorf("a %d-byte datagram without DF on the MTU-1400 uplink was not echoed whole", len(nodfData))
	}

	// UDP with DF: 1450 bytes fit eth0 (the host's choice), not eth1.
	u, err := ctDialUDP(topo.Host, netip.AddrPort{}, netip.AddrPortFrom(topo.ServerAddr, udpPort), map[int]int{unix.IP_RECVERR: 1, unix.IP_MTU_DISCOVER: unix.IP_PMTUDISC_DO})
	if err != nil {
		t.Fatal(err)
	}
	defer u.Close()
	big := make([]byte, 1450)
	buf := make([]byte, 4096)
	var rerr error
	for try := 0; try < 3; try++ {
		if rerr = u.Send(big); rerr != nil {
			break
		}
		if _, rerr = u.Recv(buf, time.Second); rerr != errCTTimeout {
			break
		}
	}
	mtu, _ := unix.GetsockoptInt(u.fd, unix.IPPROTO_IP, unix.IP_MTU)
	eq, qerr := u.ErrQueue()
	t.Logf("DF datagram of 1478 bytes toward the MTU-1400 uplink: %v; error queue %v (%v); path MTU now %d", rerr, eq, qerr, mtu)
	if !errors.Is(rerr, unix.EMSGSIZE) || mtu != 1400 {
		t.Errorf("oversized DF datagram on the MTU-1400 uplink: socket got %v and path MTU %d, want EMSGSIZE and 1400 (an ICMP fragmentation-needed injected to the host)", rerr, mtu)
	}
	small := bytes.Repeat([]byte("fits "), 1300/5)
	var answered bool
	for try := 0; try < 3 && !answered; try++ {
		if err := u.Send(small); err != nil {
			t.Errorf("send %d bytes: %v", len(small), err)
			break
		}
		n, err := u.Recv(buf, time.Second)
		answered = err == nil && bytes.Equal(buf[:n], small)
	}
	if !answered {
		t.Errorf("a %d-byte datagram that fits the uplink was not echoed", len(small))
	}
	totals := stopShim(t, s)
	if n, _ := strconv.Atoi(totals["fragmented"]); n < 1 {
		t.Errorf("l2shim's fragmented counter is %q, want the datagrams without DF it cut", totals["fragmented"])
	}
}

// ---- 5. fragments ----

// TestConntrackFragments: UDP datagrams larger than the MTU
// (DF off, fragmented by the kernels) on a flow NATed via gw1 cross whole
// both ways: the server echoes each and the bytes match; the gateways carry
// the non-first fragments, from and to 10.2.0.2 only.
func TestConntrackFragments(t *testing.T) {
	topo := newTopo(t)
	const port = 7400
	echo, err := StartUDPEcho(topo.Server, netip.AddrPortFrom(topo.ServerAddr, port))
	if err != nil {
		t.Fatal(err)
	}
	gw0 := nftCounters(t, topo.GW0, "ctfrag", "forward", [][2]string{
		{"frag", "ip frag-off & 0x1fff != 0"},
	})
	gw1 := nftCounters(t, topo.GW1, "ctfrag", "forward", [][2]string{
		{"frag-out", "ip saddr 10.2.0.2 ip frag-off & 0x1fff != 0"},
		{"frag-in", "ip daddr 10.2.0.2 ip frag-off & 0x1fff != 0"},
	})
	s := startShimCfg(t, topo, ConfigOptions{Mode: "load-balance", Extra: ctRule("udp", port, "eth1")})
	// l2shim runs before ARP answered for gw1: until then the route-to rule's gateway is not
	// usable and the flow would be placed by the mode (and stay there).
	waitGatewayState(t, s, topo.HostIf1, "up", 5*time.Second)
	u, err := ctDialUDP(topo.Host, netip.AddrPort{}, netip.AddrPortFrom(topo.ServerAddr, port), map[int]int{unix.IP_MTU_DISCOVER: unix.IP_PMTUDISC_DONT})
	if err != nil {
		t.Fatal(err)
	}
	defer u.Close()
	buf := make([]byte, 65536)
	for i, size := range []int{1473, 2000, 4000, 9000, 30000, 65000} {
		payload := make([]byte, size)
		NewStream(uint64(size)).Fill(payload)
		ok := false
		var last string
		for try := 0; try < 3 && !ok; try++ {
			if err := u.Send(payload); err != nil {
				t.Fatalf("send %d bytes: %v", size, err)
			}
			n, err := u.Recv(buf, 1500*time.Millisecond)
			switch {
			case err != nil:
				last = err.Error()
			case n != size:
				last = fmt.Sprintf("echo of %d bytes, want %d", n, size)
			case !bytes.Equal(buf[:n], payload):
				last = "echo differs"
			default:
				ok = true
			}
		}
		t.Logf("datagram %d: %d bytes (%d fragments at MTU 1500) → %v %s", i, size, (size+8+1479)/1480, ok, last)
		if !ok {
			t.Errorf("%d-byte datagram on the NATed flow not echoed whole after 3 tries: %s (server received %d datagrams in all)", size, last, echo.Packets.Load())
		}
	}
	seen := echo.Seen.Counts()
	t.Logf("server saw %s; non-first fragments: gw1 from 10.2.0.2 %d, gw1 to 10.2.0.2 %d, gw0 %d", FormatCounts(seen), gw1("frag-out"), gw1("frag-in"), gw0("frag"))
	if len(seen) != 1 || seen[topo.HostAddr1] == 0 {
		t.Errorf("server saw %s, want only %s (NATed via gw1)", FormatCounts(seen), topo.HostAddr1)
	}
	if gw1("frag-out") == 0 || gw1("frag-in") == 0 {
		t.Errorf("gw1 forwarded no non-first fragments (out %d, in %d): nothing was fragmented", gw1("frag-out"), gw1("frag-in"))
	}
	if n := gw0("frag"); n != 0 {
		t.Errorf("gw0 forwarded %d non-first fragments: fragments of the NATed flow left untranslated", n)
	}
	stopShim(t, s)
}

// ---- 6. VXLAN ----

// TestConntrackVXLAN: a VXLAN tunnel host (192.168.77.1) ↔
// server (192.168.77.2), VNI 42, UDP 4789. The host's outer flows (source
// 10.1.0.2 by the host's routing) are placed on gw1 by a route-to rule on
// udp dst_port 4789 and NATed to 10.2.0.2, so the server's VXLAN remote is
// 10.2.0.2 (nolearning on both ends). 64 MiB up and 64 MiB down inside the
// tunnel complete byte-exact, and no outer frame leaves through gw0.
func TestConntrackVXLAN(t *testing.T) {
	topo := newTopo(t)
	mustRun(t, topo.Host, "ip", "link", "add", "vx0", "type", "vxlan", "id", "42", "remote", topo.ServerAddr.String(), "dstport", "4789", "nolearning")
	mustRun(t, topo.Host, "ip", "addr", "add", "192.168.77.1/24", "dev", "vx0")
	mustRun(t, topo.Host, "ip", "link", "set", "vx0", "up")
	mustRun(t, topo.Server, "ip", "link", "add", "vx0", "type", "vxlan", "id", "42", "local", topo.ServerAddr.String(), "remote", topo.HostAddr1.String(), "dstport", "4789", "nolearning")
	mustRun(t, topo.Server, "ip", "addr", "add", "192.168.77.2/24", "dev", "vx0")
	mustRun(t, topo.Server, "ip", "link", "set", "vx0", "up")
	inner := netip.MustParseAddr("192.168.77.2")
	bulk, err := StartBulkServer(topo.Server, netip.AddrPortFrom(inner, BulkPort))
	if err != nil {
		t.Fatal(err)
	}
	gw0 := nftCounters(t, topo.GW0, "ctvx", "forward", [][2]string{{"vxlan", "udp dport 4789"}})
	gw1 := nftCounters(t, topo.GW1, "ctvx", "forward", [][2]string{
		{"vxlan-nat", "ip saddr 10.2.0.2 udp dport 4789"},
		{"vxlan-to-host", "ip daddr 10.2.0.2 udp dport 4789"},
	})
	srvIn := nftCounters(t, topo.Server, "ctvx", "input", [][2]string{
		{"from-10.1.0.2", "ip saddr 10.1.0.2 udp dport 4789"},
		{"from-10.2.0.2", "ip saddr 10.2.0.2 udp dport 4789"},
	})
	s := startShimCfg(t, topo, ConfigOptions{Mode: "load-balance", Extra: ctRule("udp", 4789, "eth1")})
	ctx := context.Background()
	if n, _, err := Ping(ctx, topo.Host, inner, 3, time.Second); n == 0 {
		t.Fatalf("no ping through the tunnel to %s: %v", inner, err)
	}
	const size = 64 << 20
	counters := func() map[string]uint64 {
		st, err := s.queryStatus()
		if err != nil {
			t.Logf("status: %v", err)
			return nil
		}
		return st.Datapath
	}
	before := counters()
	for _, dir := range []string{"upload", "download"} {
		tctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		var res TransferResult
		var err error
		if dir == "upload" {
			res, err = Upload(tctx, topo.Host, bulk.Addr, size, 0x77, nil)
		} else {
			res, err = Download(tctx, topo.Host, bulk.Addr, size, 0x78, nil)
		}
		cancel()
		after := counters()
		var delta []string
		for _, k := range []string{"frames_out", "frames_in", "passed", "nated", "send_errors", "lost"} {
			delta = append(delta, fmt.Sprintf("%s+%d", k, after[k]-before[k]))
		}
		before = after
		if err != nil {
			t.Errorf("%s of %d MiB inside the VXLAN tunnel: %v (%d bytes in %v); shim counters meanwhile: %s", dir, size>>20, err, res.Bytes, res.Elapsed.Round(time.Millisecond), strings.Join(delta, " "))
			continue
		}
		t.Logf("MEASURED %s inside the VXLAN tunnel: %d MiB byte-exact in %v (%.2f Gbit/s); shim counters meanwhile: %s", dir, size>>20, res.Elapsed.Round(time.Millisecond), res.Gbps(), strings.Join(delta, " "))
	}
	t.Logf("outer VXLAN packets: host → server via gw0 %d, via gw1 NATed to 10.2.0.2 %d; server → host via gw1 %d; server received from 10.1.0.2 %d, from 10.2.0.2 %d",
		gw0("vxlan"), gw1("vxlan-nat"), gw1("vxlan-to-host"), srvIn("from-10.1.0.2"), srvIn("from-10.2.0.2"))
	if n := gw0("vxlan"); n != 0 {
		t.Errorf("%d outer VXLAN packets left through gw0 (unplaced, source 10.1.0.2): every frame of the outer flow must be placed on gw1, encapsulated TSO super-frames (segmented in software) and small frames with a partial inner checksum (pure ACKs) alike", n)
	}
	if gw1("vxlan-nat") == 0 {
		t.Errorf("no outer VXLAN packet left through gw1 NATed to 10.2.0.2")
	}
	stopShim(t, s)
}

// ---- 7. forwarded traffic ----

// TestConntrackForwarded: a LAN client (192.168.60.10) behind
// the host, which forwards and masquerades on eth0 only (nftables): its 40
// TCP connections and 40 UDP exchanges all succeed, and the server sees
// both 10.1.0.2 and 10.2.0.2 (nothing else).
func TestConntrackForwarded(t *testing.T) {
	topo := newTopo(t)
	srv := startServers(t, topo)
	lan, err := topo.AddLAN("ctlan", "lan0", netip.MustParsePrefix("192.168.60.1/24"), netip.MustParsePrefix("192.168.60.10/24"))
	if err != nil {
		t.Fatal(err)
	}
	if err := topo.Host.Sysctl("net.ipv4.ip_forward", "1"); err != nil {
		t.Fatal(err)
	}
	if err := Nft(topo.Host, `table ip ctnat {
	chain post {
		type nat hook postrouting priority 100; policy accept;
		oifname "eth0" masquerade
	}
}`); err != nil {
		t.Fatal(err)
	}
	s := startShimCfg(t, topo, ConfigOptions{Mode: "load-balance"})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	ok, errs := TCPEchoMany(ctx, lan, srv.echoAddr(), 40, 4, 3*time.Second)
	if ok != 40 {
		t.Errorf("LAN client: %d/40 TCP connections succeeded:%s", ok, firstErrs(errs, 5))
	}
	r := UDPExchange(ctx, lan, srv.udpAddr(), 40, 2, time.Second)
	if r.Answered != 40 {
		t.Errorf("LAN client: %d/40 UDP exchanges answered (%d retries):%s", r.Answered, r.Retried, firstErrs(r.Errors, 5))
	}
	for _, p := range []struct {
		what   string
		counts map[netip.Addr]int
		n      int
	}{{"TCP", srv.echo.Seen.Counts(), ok}, {"UDP", srv.udp.Seen.Counts(), r.Answered}} {
		t.Logf("LAN client %s: server saw %s", p.what, FormatCounts(p.counts))
		if p.counts[topo.HostAddr0] == 0 || p.counts[topo.HostAddr1] == 0 {
			t.Errorf("LAN client %s: server saw %s, want both %s and %s", p.what, FormatCounts(p.counts), topo.HostAddr0, topo.HostAddr1)
		}
		if len(p.counts) > 2 || p.counts[topo.HostAddr0]+p.counts[topo.HostAddr1] < p.n {
			t.Errorf("LAN client %s: server saw other addresses: %s", p.what, FormatCounts(p.counts))
		}
	}
	stopShim(t, s)
}
