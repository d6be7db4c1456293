package main

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/net/ipv4"
	"golang.org/x/sys/unix"

	"github.com/l2shim/l2shim/integration"
)

// Ports of the bench's servers on the server's address. In the shim runs,
// strict route-to rules (benchRules) send every flow to a port in
// natLo-natHi through eth1 (source NATed to 10.2.0.2) and every flow to a
// port in directLo-directHi through eth0 (the host's own choice, no NAT), so
// a flow's path is known from its first frame, without redialling. The
// kernel runs send everything through eth0 (the host's routing). Every
// server records the source addresses it sees and every measurement checks
// them.
const (
	portSink       = 6001 // TCP: counts what arrives until EOF, answers the count
	portSource     = 6002 // TCP: sends for the duration the client asks for
	portRR         = 6003 // TCP: answers each rrSize-byte request with rrSize bytes
	portCRR        = 6004 // TCP: answers one crrRequest-byte request with crrResponse bytes, closes
	portUDP        = 6010 // UDP: counts; answers hellos (a stream's first datagram); blasts on request
	portUDPOneway  = 6011 // UDP: counts, never answers
	portSinkDirect = 6101 // TCP: as portSink, through eth0

	natLo, natHi       = 6000, 6099
	directLo, directHi = 6100, 6199
)

// benchRules is the [[rule]] part of the shim runs' configuration: the
// servers' ports pinned to their uplink. strict: a flow the rule cannot
// place is dropped (and the measurement fails) rather than measured on
// another path.
func benchRules() string { return benchRulesVia("eth1", "eth0") }

// benchRulesVia is benchRules with the gateways named nat and direct.
func benchRulesVia(nat, direct string) string {
	var b strings.Builder
	for _, r := range []struct {
		proto  string
		lo, hi int
		gw     string
	}{{"tcp", natLo, natHi, nat}, {"udp", natLo, natHi, nat}, {"tcp", directLo, directHi, direct}, {"udp", directLo, directHi, direct}} {
		fmt.Fprintf(&b, "[[rule]]\nname = \"bench %s %d-%d via %s\"\nprotocol = %q\ndst_port = \"%d-%d\"\naction = \"route-to\"\ngateway = %q\nstrict = true\n\n",
			r.proto, r.lo, r.hi, r.gw, r.proto, r.lo, r.hi, r.gw)
	}
	return b.String()
}

const (
	chunk       = 256 << 10 // TCP bulk write and read size
	rrSize      = 32        // request and response of the request/response test
	crrRequest  = 96        // an HTTP-like request ...
	crrResponse = 320       // ... and its response
	udpHello    = "l2shim-bench hello"
	bufForce    = 8 << 20 // SO_RCVBUFFORCE of the UDP sockets at both ends
	maxBulkTime = 60 * time.Second
)

// sources counts what a server received by the source address it saw.
type sources struct {
	mu sync.Mutex
	m  map[netip.Addr]int64
}

func (s *sources) add(a netip.Addr, n int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.m == nil {
		s.m = make(map[netip.Addr]int64)
	}
	s.m[a.Unmap()] += n
}

func (s *sources) reset() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.m = nil
}

// check reports an error unless everything counted came from want.
func (s *sources) check(want netip.Addr) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	var other []string
	for a, n := range s.m {
		if a != want {
			other = append(other, fmt.Sprintf("%s=%d", a, n))
		}
	}
	if len(other) > 0 {
		sort.Strings(other)
		return fmt.Errorf("server saw sources other than %s: %s (the flow took another path)", want, strings.Join(other, " "))
	}
	if s.m[want] == 0 {
		return fmt.Errorf("server saw nothing from %s", want)
	}
	return nil
}

// tcpServer is an accept loop in the server namespace running handle for
// each connection (closing it afterwards) and recording its source.
type tcpServer struct {
	seen   sources
	ln     net.Listener
	handle func(net.Conn)
	// pin, when set, runs the handler of the measurement's k-th connection
	// (counted from reset) on its CPU.
	pin      func(k int, f func())
	accepted atomic.Int64
	wg       sync.WaitGroup
	mu       sync.Mutex
	conns    map[net.Conn]struct{}
	closed   bool
}

func startTCP(ns *integration.NS, addr netip.AddrPort, handle func(net.Conn), pin func(k int, f func())) (*tcpServer, error) {
	s := &tcpServer{handle: handle, pin: pin, conns: map[net.Conn]struct{}{}}
	err := ns.Do(func() error {
		var err error
		s.ln, err = net.Listen(tcpNet(addr.Addr()), addr.String())
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("%s: listen tcp %s: %w", ns.Name, addr, err)
	}
	s.wg.Add(1)
	go s.accept()
	ns.AddCloser(s)
	return s, nil
}

func (s *tcpServer) accept() {
	defer s.wg.Done()
	for {
		c, err := s.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			time.Sleep(time.Millisecond) // EMFILE and the like: do not spin
			continue
		}
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			c.Close()
			return
		}
		s.conns[c] = struct{}{}
		s.wg.Add(1)
		s.mu.Unlock()
		s.seen.add(c.RemoteAddr().(*net.TCPAddr).AddrPort().Addr(), 1)
		k := int(s.accepted.Add(1) - 1)
		go func() {
			defer s.wg.Done()
			if s.pin != nil {
				s.pin(k, func() { s.handle(c) })
			} else {
				s.handle(c)
			}
			c.Close()
			s.mu.Lock()
			delete(s.conns, c)
			s.mu.Unlock()
		}()
	}
}

// reset starts a measurement: no sources seen, no connection accepted.
func (s *tcpServer) reset() {
	s.seen.reset()
	s.accepted.Store(0)
}

// Close stops accepting, closes the open connections and waits for the
// handlers.
func (s *tcpServer) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	s.ln.Close()
	for c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
	return nil
}

// serveSink reads until EOF and answers the byte count (8 bytes, BE).
func serveSink(c net.Conn) {
	c.SetDeadline(time.Now().Add(maxBulkTime + 30*time.Second))
	buf := make([]byte, chunk)
	var n int64
	for i := 0; i < 1<<30; i++ {
		k, err := c.Read(buf)
		n += int64(k)
		if err != nil {
			if err != io.EOF {
				return
			}
			break
		}
	}
	var out [8]byte
	binary.BigEndian.PutUint64(out[:], uint64(n))
	c.Write(out[:])
}

// serveSource reads a duration (8 bytes, BE nanoseconds, at most
// maxBulkTime) and sends for that long, then closes.
func serveSource(c net.Conn) {
	c.SetDeadline(time.Now().Add(maxBulkTime + 30*time.Second))
	var req [8]byte
	if _, err := io.ReadFull(c, req[:]); err != nil {
		return
	}
	d := min(time.Duration(binary.BigEndian.Uint64(req[:])), maxBulkTime)
	buf := make([]byte, chunk)
	integration.NewStream(2).Fill(buf)
	end := time.Now().Add(d)
	for i := 0; i < 1<<30 && time.Now().Before(end); i++ {
		if _, err := c.Write(buf); err != nil {
			return
		}
	}
}

// serveRR answers every rrSize-byte request with rrSize bytes.
func serveRR(c net.Conn) {
	c.SetDeadline(time.Now().Add(2 * time.Minute))
	buf := make([]byte, rrSize)
	for i := 0; i < 1<<26; i++ {
		if _, err := io.ReadFull(c, buf); err != nil {
			return
		}
		if _, err := c.Write(buf); err != nil {
			return
		}
	}
}

// serveCRR answers one request and closes, as an HTTP/1.0 server does.
func serveCRR(c net.Conn) {
	c.SetDeadline(time.Now().Add(5 * time.Second))
	var req [crrRequest]byte
	if _, err := io.ReadFull(c, req[:]); err != nil {
		return
	}
	var resp [crrResponse]byte
	copy(resp[:], "HTTP/1.0 200 OK\r\nContent-Length: 280\r\n\r\n")
	c.Write(resp[:])
}

// udpServer counts the datagrams arriving on its socket (recvmmsg batches)
// by source. With answer set, it answers every hello (the first datagram of
// each of the bench's streams) with "ok ADDR:PORT", the source it saw.
type udpServer struct {
	seen   sources
	count  atomic.Int64
	conn   *net.UDPConn
	pc     *ipv4.PacketConn
	answer bool
	wg     sync.WaitGroup
}

func startUDP(ns *integration.NS, addr netip.AddrPort, answer bool, place placement) (*udpServer, error) {
	s := &udpServer{answer: answer}
	err := ns.Do(func() error {
		var err error
		s.conn, err = net.ListenUDP("udp4", net.UDPAddrFromAddrPort(addr))
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("%s: listen udp %s: %w", ns.Name, addr, err)
	}
	if err := forceBuffers(s.conn); err != nil {
		s.conn.Close()
		return nil, err
	}
	s.pc = ipv4.NewPacketConn(s.conn)
	s.wg.Add(1)
	go place.run(place.receiverCPU(0), s.loop)
	ns.AddCloser(s)
	return s, nil
}

// forceBuffers sets both socket buffers to bufForce, past rmem_max and
// wmem_max (root): the same in every run, so the kernel's default limits are
// not what is measured.
func forceBuffers(c *net.UDPConn) error {
	rc, err := c.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	err = rc.Control(func(fd uintptr) {
		if serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, bufForce); serr == nil {
			serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, bufForce)
		}
	})
	if err == nil {
		err = serr
	}
	if err != nil {
		return fmt.Errorf("udp socket buffers: %w", err)
	}
	return nil
}

func (s *udpServer) loop() {
	defer s.wg.Done()
	ms := make([]ipv4.Message, 64)
	for i := range ms {
		ms[i].Buffers = [][]byte{make([]byte, 2048)}
	}
	hello := []byte(udpHello)
	for {
		n, err := s.pc.ReadBatch(ms, 0)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		s.count.Add(int64(n))
		var last netip.Addr
		var run int64
		for i := 0; i < n; i++ {
			ua, ok := ms[i].Addr.(*net.UDPAddr)
			if !ok {
				continue
			}
			from := ua.AddrPort()
			if a := from.Addr().Unmap(); a != last {
				if run > 0 {
					s.seen.add(last, run)
				}
				last, run = a, 0
			}
			run++
			if s.answer && ms[i].N >= len(hello) && string(ms[i].Buffers[0][:len(hello)]) == udpHello {
				s.conn.WriteToUDPAddrPort([]byte("ok "+netip.AddrPortFrom(from.Addr().Unmap(), from.Port()).String()), from)
			}
		}
		if run > 0 {
			s.seen.add(last, run)
		}
	}
}

func (s *udpServer) reset() {
	s.count.Store(0)
	s.seen.reset()
}

// blast sends size-byte datagrams to to as fast as the socket takes them
// (sendmmsg batches of 64) for d, and returns how many the kernel took.
func (s *udpServer) blast(to netip.AddrPort, size int, d time.Duration) (int64, error) {
	return blast(s.pc, net.UDPAddrFromAddrPort(to), size, d)
}

// blast is the sending loop of both directions: dst nil on a connected
// socket. It stops after d, or after 1<<32 batches.
func blast(pc *ipv4.PacketConn, dst net.Addr, size int, d time.Duration) (int64, error) {
	payload := make([]byte, size)
	integration.NewStream(7).Fill(payload)
	ms := make([]ipv4.Message, 64)
	for i := range ms {
		ms[i].Buffers = [][]byte{payload}
		ms[i].Addr = dst
	}
	var sent int64
	end := time.Now().Add(d)
	for i := int64(0); i < 1<<32; i++ {
		if i%16 == 0 && !time.Now().Before(end) {
			break
		}
		n, err := pc.WriteBatch(ms, 0)
		sent += int64(n)
		if err != nil && !errors.Is(err, syscall.ENOBUFS) && !errors.Is(err, syscall.ECONNREFUSED) {
			return sent, err
		}
	}
	return sent, nil
}

// Close stops the server.
func (s *udpServer) Close() error {
	err := s.conn.Close()
	s.wg.Wait()
	return err
}

// servers are the bench's servers in the server namespace.
type servers struct {
	sink, sinkDirect, source, rr, crr *tcpServer
	udp, oneway                       *udpServer
}

func startServers(topo *integration.Topology, place placement) (*servers, error) {
	s := &servers{}
	at := func(port uint16) netip.AddrPort { return netip.AddrPortFrom(topo.ServerAddr, port) }
	for _, t := range []struct {
		srv    **tcpServer
		port   uint16
		handle func(net.Conn)
		pin    func(k int, f func())
	}{
		{&s.sink, portSink, serveSink, place.receivers()},
		{&s.sinkDirect, portSinkDirect, serveSink, place.receivers()},
		{&s.source, portSource, serveSource, place.senders()},
		{&s.rr, portRR, serveRR, nil},
		{&s.crr, portCRR, serveCRR, nil},
	} {
		var err error
		if *t.srv, err = startTCP(topo.Server, at(t.port), t.handle, t.pin); err != nil {
			return nil, err
		}
	}
	var err error
	if s.udp, err = startUDP(topo.Server, at(portUDP), true, place); err != nil {
		return nil, err
	}
	if s.oneway, err = startUDP(topo.Server, at(portUDPOneway), false, place); err != nil {
		return nil, err
	}
	return s, nil
}

// tcpNet is "tcp4" or "tcp6" for a's family.
func tcpNet(a netip.Addr) string {
	if a.Is4() {
		return "tcp4"
	}
	return "tcp6"
}
