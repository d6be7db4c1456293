package integration

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
	"golang.org/x/sys/unix"
)

// Well-known ports of the servers the tools start in the server namespace.
const (
	EchoPort = 7    // TCP and UDP echo
	BulkPort = 5001 // bulk transfers (upload, download, sink)
)

// Recorder counts connections or datagrams by the remote address a server
// saw: which uplink (which host address) a flow arrived from.
type Recorder struct {
	mu sync.Mutex
	m  map[netip.Addr]int
}

func (r *Recorder) add(a netip.Addr) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.m == nil {
		r.m = make(map[netip.Addr]int)
	}
	r.m[a.Unmap()]++
}

// Counts returns a copy of the counts.
func (r *Recorder) Counts() map[netip.Addr]int {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make(map[netip.Addr]int, len(r.m))
	for k, v := range r.m {
		out[k] = v
	}
	return out
}

// Count returns the count for a.
func (r *Recorder) Count(a netip.Addr) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.m[a]
}

// waitCount waits up to within until a has been counted (polling every
// 20 ms).
func (r *Recorder) waitCount(a netip.Addr, within time.Duration) {
	for deadline := time.Now().Add(within); r.Count(a) == 0 && time.Now().Before(deadline); {
		time.Sleep(20 * time.Millisecond)
	}
}

// Total returns the sum of all counts.
func (r *Recorder) Total() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, v := range r.m {
		n += v
	}
	return n
}

// Reset forgets everything.
func (r *Recorder) Reset() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.m = nil
}

// String formats the counts as "10.1.0.2=103 10.2.0.2=97", sorted.
func (r *Recorder) String() string { return FormatCounts(r.Counts()) }

// FormatCounts formats counts sorted by address.
func FormatCounts(m map[netip.Addr]int) string {
	keys := make([]netip.Addr, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool { return keys[i].Less(keys[j]) })
	var parts []string
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%s=%d", k, m[k]))
	}
	if len(parts) == 0 {
		return "(none)"
	}
	return strings.Join(parts, " ")
}

// ipNet returns network ("tcp" or "udp") restricted to a's family: "tcp4"
// for an IPv4 address (and for an invalid one, as before), "tcp6" for IPv6.
func ipNet(network string, a netip.Addr) string {
	if a.IsValid() && !a.Unmap().Is4() {
		return network + "6"
	}
	return network + "4"
}

func remoteAddr(a net.Addr) netip.Addr {
	switch a := a.(type) {
	case *net.TCPAddr:
		return a.AddrPort().Addr().Unmap()
	case *net.UDPAddr:
		return a.AddrPort().Addr().Unmap()
	case *net.IPAddr:
		ip, _ := netip.AddrFromSlice(a.IP)
		return ip.Unmap()
	}
	return netip.Addr{}
}

// tcpServer is the accept loop shared by the TCP servers.
type tcpServer struct {
	Addr netip.AddrPort
	Seen *Recorder

	ln     net.Listener
	wg     sync.WaitGroup
	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	closed bool
}

// listenTCP opens a TCP listener on addr inside ns.
func listenTCP(ns *NS, addr netip.AddrPort) (net.Listener, error) {
	var ln net.Listener
	err := ns.Do(func() error {
		var err error
		ln, err = net.Listen(ipNet("tcp", addr.Addr()), addr.String())
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("%s: listen tcp %s: %w", ns.Name, addr, err)
	}
	return ln, nil
}

// startTCP listens on addr inside ns and runs handle for every connection
// (closing it afterwards), recording who connected. The namespace closes the
// server when it is closed.
func startTCP(ns *NS, addr netip.AddrPort, handle func(net.Conn)) (*tcpServer, error) {
	ln, err := listenTCP(ns, addr)
	if err != nil {
		return nil, err
	}
	s := &tcpServer{Addr: addr, Seen: &Recorder{}, ln: ln, conns: map[net.Conn]struct{}{}}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for {
			c, err := s.ln.Accept()
			if err != nil {
				return
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
			s.Seen.add(remoteAddr(c.RemoteAddr()))
			go func() {
				defer s.wg.Done()
				defer func() {
					c.Close()
					s.mu.Lock()
					delete(s.conns, c)
					s.mu.Unlock()
				}()
				handle(c)
			}()
		}
	}()
	ns.AddCloser(s)
	return s, nil
}

// Close stops accepting, closes open connections and waits for handlers.
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

// TCPEchoServer echoes every TCP connection back and records who connected.
type TCPEchoServer struct{ *tcpServer }

// StartTCPEcho starts a TCP echo server on addr inside ns.
func StartTCPEcho(ns *NS, addr netip.AddrPort) (*TCPEchoServer, error) {
	s, err := startTCP(ns, addr, echoConn)
	if err != nil {
		return nil, err
	}
	return &TCPEchoServer{s}, nil
}

// echoConn echoes what c sends for at most a minute.
func echoConn(c net.Conn) {
	c.SetDeadline(time.Now().Add(60 * time.Second))
	io.Copy(c, c)
}

// udpServer is the receive loop shared by the UDP servers.
type udpServer struct {
	Addr netip.AddrPort

	conn *net.UDPConn
	wg   sync.WaitGroup
}

// listenUDP opens a UDP socket bound to addr inside ns.
func listenUDP(ns *NS, addr netip.AddrPort) (*net.UDPConn, error) {
	var c *net.UDPConn
	err := ns.Do(func() error {
		var err error
		c, err = net.ListenUDP(ipNet("udp", addr.Addr()), net.UDPAddrFromAddrPort(addr))
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("%s: listen udp %s: %w", ns.Name, addr, err)
	}
	return c, nil
}

// startUDP listens on addr inside ns and calls handle with every datagram
// (valid only during the call), the socket to answer on and the sender. The
// namespace closes the server when it is closed.
func startUDP(ns *NS, addr netip.AddrPort, handle func(c *net.UDPConn, p []byte, from netip.AddrPort)) (*udpServer, error) {
	c, err := listenUDP(ns, addr)
	if err != nil {
		return nil, err
	}
	c.SetReadBuffer(4 << 20)
	s := &udpServer{Addr: addr, conn: c}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		buf := make([]byte, 65536)
		for {
			n, from, err := c.ReadFromUDPAddrPort(buf)
			if err != nil {
				if errors.Is(err, net.ErrClosed) {
					return
				}
				continue
			}
			handle(c, buf[:n], netip.AddrPortFrom(from.Addr().Unmap(), from.Port()))
		}
	}()
	ns.AddCloser(s)
	return s, nil
}

// Close stops the server.
func (s *udpServer) Close() error {
	err := s.conn.Close()
	s.wg.Wait()
	return err
}

// whoamiRequest asks a UDPEchoServer for the source address it sees.
const whoamiRequest = "?whoami"

// UDPEchoServer echoes datagrams and records their source. A datagram
// starting with "?whoami" is answered with the source address it came from.
type UDPEchoServer struct {
	*udpServer
	Seen *Recorder
	// Packets counts every datagram received (for sink-style use).
	Packets atomic.Int64

	// Silent: count and record only, do not answer (except ?whoami).
	silent atomic.Bool
}

// StartUDPEcho starts a UDP echo server on addr inside ns.
func StartUDPEcho(ns *NS, addr netip.AddrPort) (*UDPEchoServer, error) {
	s := &UDPEchoServer{Seen: &Recorder{}}
	u, err := startUDP(ns, addr, s.serve)
	if err != nil {
		return nil, err
	}
	s.udpServer = u
	return s, nil
}

func (s *UDPEchoServer) serve(c *net.UDPConn, p []byte, from netip.AddrPort) {
	s.Packets.Add(1)
	if bytes.HasPrefix(p, []byte(whoamiRequest)) {
		c.WriteToUDPAddrPort([]byte(from.Addr().String()), from)
		return
	}
	if s.silent.Load() {
		return
	}
	s.Seen.add(from.Addr())
	c.WriteToUDPAddrPort(p, from)
}

// SetSilent makes the server count datagrams without recording or answering
// them (a sink for packet-rate measurements).
func (s *UDPEchoServer) SetSilent(on bool) { s.silent.Store(on) }

// ---- deterministic data stream ----

// Stream is a deterministic pseudo-random byte stream (splitmix64). Fill
// must be called with lengths that are multiples of 8, except possibly the
// last call.
type Stream struct{ x uint64 }

// NewStream returns the stream for seed.
func NewStream(seed uint64) *Stream { return &Stream{x: seed} }

func (s *Stream) next() uint64 {
	s.x += 0x9e3779b97f4a7c15
	z := s.x
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	return z ^ (z >> 31)
}

// Fill fills b with the next len(b) bytes of the stream.
func (s *Stream) Fill(b []byte) {
	i := 0
	for ; i+8 <= len(b); i += 8 {
		binary.LittleEndian.PutUint64(b[i:], s.next())
	}
	if i < len(b) {
		var w [8]byte
		binary.LittleEndian.PutUint64(w[:], s.next())
		copy(b[i:], w[:])
	}
}

// ---- bulk server ----

const (
	opUpload   = 'U' // client sends size bytes; server answers sha256
	opDownload = 'D' // server sends size bytes then their sha256
	opSink     = 'S' // client sends until it half-closes; server answers the byte count
)

const chunk = 256 << 10

// BulkServer serves byte-exact transfers. On accept it first writes the
// client's address as it sees it ("10.2.0.2\n") so a client can keep only a
// connection on the uplink it wants, then reads a 17-byte header: op, size
// (uint64 BE), seed (uint64 BE).
type BulkServer struct{ *tcpServer }

// StartBulkServer starts the bulk server on addr inside ns.
func StartBulkServer(ns *NS, addr netip.AddrPort) (*BulkServer, error) {
	s, err := startTCP(ns, addr, serveBulk)
	if err != nil {
		return nil, err
	}
	return &BulkServer{s}, nil
}

// servers are the standard servers in the server namespace: TCP and UDP
// echo on EchoPort, bulk on BulkPort, all on the server's address.
type servers struct {
	echo *TCPEchoServer
	udp  *UDPEchoServer
	bulk *BulkServer
}

func (s servers) echoAddr() netip.AddrPort { return s.echo.Addr }
func (s servers) udpAddr() netip.AddrPort  { return s.udp.Addr }
func (s servers) bulkAddr() netip.AddrPort { return s.bulk.Addr }

// startServers starts the standard servers in the topology's server
// namespace; they go when it is closed.
func (t *Topology) startServers() (servers, error) {
	var s servers
	var err error
	if s.echo, err = StartTCPEcho(t.Server, netip.AddrPortFrom(t.ServerAddr, EchoPort)); err != nil {
		return s, err
	}
	if s.udp, err = StartUDPEcho(t.Server, netip.AddrPortFrom(t.ServerAddr, EchoPort)); err != nil {
		return s, err
	}
	s.bulk, err = StartBulkServer(t.Server, netip.AddrPortFrom(t.ServerAddr, BulkPort))
	return s, err
}

func serveBulk(c net.Conn) {
	c.SetDeadline(time.Now().Add(10 * time.Minute))
	if _, err := io.WriteString(c, remoteAddr(c.RemoteAddr()).String()+"\n"); err != nil {
		return
	}
	var hdr [17]byte
	if _, err := io.ReadFull(c, hdr[:]); err != nil {
		return // client chose another connection
	}
	size := int64(binary.BigEndian.Uint64(hdr[1:9]))
	seed := binary.BigEndian.Uint64(hdr[9:17])
	switch hdr[0] {
	case opUpload:
		h := sha256.New()
		if _, err := io.CopyBuffer(h, io.LimitReader(c, size), make([]byte, chunk)); err != nil {
			return
		}
		c.Write(h.Sum(nil))
	case opDownload:
		if _, sum, err := sendStream(c, size, seed, nil); err == nil {
			c.Write(sum)
		}
	case opSink:
		buf := make([]byte, chunk)
		var n int64
		for {
			k, err := c.Read(buf)
			n += int64(k)
			if err != nil {
				break
			}
		}
		var out [8]byte
		binary.BigEndian.PutUint64(out[:], uint64(n))
		c.Write(out[:])
	}
}

// sendStream writes size bytes of the stream for seed to w, a chunk at a
// time, calling after (when set) with the running total after each write,
// and returns what it wrote and the sha256 of the whole stream.
func sendStream(w io.Writer, size int64, seed uint64, after func(sent int64)) (int64, []byte, error) {
	h := sha256.New()
	st := NewStream(seed)
	buf := make([]byte, min(size, chunk))
	var sent int64
	for sent < size {
		b := buf[:min(int64(len(buf)), size-sent)]
		st.Fill(b)
		h.Write(b)
		k, err := w.Write(b)
		sent += int64(k)
		if after != nil {
			after(sent)
		}
		if err != nil {
			return sent, nil, err
		}
	}
	return sent, h.Sum(nil), nil
}

// readServerSum reads the sha256 a bulk server sends after a transfer.
func readServerSum(r io.Reader) ([]byte, error) {
	sum := make([]byte, sha256.Size)
	_, err := io.ReadFull(r, sum)
	return sum, err
}

// ---- clients ----

// dialIn dials addr with d from a thread inside ns; the connection stays in
// ns and may be used from anywhere.
func dialIn(ctx context.Context, ns *NS, d *net.Dialer, network, addr string) (net.Conn, error) {
	var c net.Conn
	err := ns.Do(func() error {
		var err error
		c, err = d.DialContext(ctx, network, addr)
		return err
	})
	return c, err
}

// DialTCP dials addr over TCP from inside ns.
func DialTCP(ctx context.Context, ns *NS, addr netip.AddrPort) (net.Conn, error) {
	return DialTCPFrom(ctx, ns, netip.Addr{}, addr)
}

// DialTCPFrom dials addr over TCP from inside ns with a socket bound to src
// (invalid: the kernel chooses).
func DialTCPFrom(ctx context.Context, ns *NS, src netip.Addr, addr netip.AddrPort) (net.Conn, error) {
	var laddr netip.AddrPort
	if src.IsValid() {
		laddr = netip.AddrPortFrom(src, 0)
	}
	return dialTCPBound(ctx, ns, laddr, addr)
}

// dialTCPBound dials addr over TCP from inside ns with a socket bound to
// laddr, port included (invalid: the kernel chooses).
func dialTCPBound(ctx context.Context, ns *NS, laddr, addr netip.AddrPort) (net.Conn, error) {
	var d net.Dialer
	if laddr.IsValid() {
		d.LocalAddr = net.TCPAddrFromAddrPort(laddr)
	}
	return dialIn(ctx, ns, &d, ipNet("tcp", addr.Addr()), addr.String())
}

// dialUDP opens a UDP socket inside ns connected to dst, bound to src when
// it is valid (port 0: any).
func dialUDP(ns *NS, src, dst netip.AddrPort) (*net.UDPConn, error) {
	var laddr *net.UDPAddr
	if src.IsValid() {
		laddr = net.UDPAddrFromAddrPort(src)
	}
	var c *net.UDPConn
	err := ns.Do(func() error {
		var err error
		c, err = net.DialUDP(ipNet("udp", dst.Addr()), laddr, net.UDPAddrFromAddrPort(dst))
		return err
	})
	return c, err
}

// listenICMP opens a raw ICMP socket inside ns (it receives every ICMP
// message the namespace gets).
func listenICMP(ns *NS) (*icmp.PacketConn, error) { return listenICMPFamily(ns, false) }

// listenICMPFamily is listenICMP, ICMPv6 when v6 is set.
func listenICMPFamily(ns *NS, v6 bool) (*icmp.PacketConn, error) {
	network, laddr := "ip4:icmp", "0.0.0.0"
	if v6 {
		network, laddr = "ip6:ipv6-icmp", "::"
	}
	var c *icmp.PacketConn
	err := ns.Do(func() error {
		var err error
		c, err = icmp.ListenPacket(network, laddr)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("%s: icmp socket: %w", ns.Name, err)
	}
	return c, nil
}

// readLine reads one line (without its '\n', at most 128 bytes) from c a
// byte at a time, so nothing after it is consumed.
func readLine(c net.Conn) (string, error) {
	var line []byte
	var one [1]byte
	for len(line) < 128 {
		if _, err := c.Read(one[:]); err != nil {
			return "", err
		}
		if one[0] == '\n' {
			return string(line), nil
		}
		line = append(line, one[0])
	}
	return "", fmt.Errorf("line too long: %q", line)
}

// TCPEcho makes one short connection to an echo server: connect, send
// payload, read it back, close; all within timeout.
func TCPEcho(ctx context.Context, ns *NS, addr netip.AddrPort, payload []byte, timeout time.Duration) error {
	return TCPEchoFrom(ctx, ns, netip.Addr{}, addr, payload, timeout)
}

// TCPEchoFrom is TCPEcho from a socket bound to src (invalid: any).
func TCPEchoFrom(ctx context.Context, ns *NS, src netip.Addr, addr netip.AddrPort, payload []byte, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	c, err := DialTCPFrom(ctx, ns, src, addr)
	if err != nil {
		return err
	}
	defer c.Close()
	dl, _ := ctx.Deadline()
	c.SetDeadline(dl)
	if _, err := c.Write(payload); err != nil {
		return fmt.Errorf("write: %w", err)
	}
	got := make([]byte, len(payload))
	if _, err := io.ReadFull(c, got); err != nil {
		return fmt.Errorf("read echo: %w", err)
	}
	if !bytes.Equal(got, payload) {
		return fmt.Errorf("echo mismatch: sent %q got %q", payload, got)
	}
	return nil
}

// TCPEchoMany makes n short echo connections with the given concurrency and
// returns how many succeeded and the errors of the others.
func TCPEchoMany(ctx context.Context, ns *NS, addr netip.AddrPort, n, workers int, timeout time.Duration) (int, []error) {
	ok, _, _, errs := TimingStats(TimedEchoes(ctx, ns, netip.Addr{}, addr, n, workers, timeout))
	return ok, errs
}

// UDPResult is the outcome of UDPExchange.
type UDPResult struct {
	Answered, Retried int
	Errors            []error
}

// UDPExchange sends n request datagrams to an echo server, each from its own
// socket (a distinct source port: a distinct flow), and waits for each
// answer; a request is resent up to retries times after timeout.
func UDPExchange(ctx context.Context, ns *NS, addr netip.AddrPort, n, retries int, timeout time.Duration) UDPResult {
	return UDPExchangeFrom(ctx, ns, netip.Addr{}, addr, n, retries, timeout)
}

// UDPExchangeFrom is UDPExchange from sockets bound to src (invalid: any).
func UDPExchangeFrom(ctx context.Context, ns *NS, src netip.Addr, addr netip.AddrPort, n, retries int, timeout time.Duration) UDPResult {
	var res UDPResult
	var laddr netip.AddrPort
	if src.IsValid() {
		laddr = netip.AddrPortFrom(src, 0)
	}
	for i := 0; i < n && ctx.Err() == nil; i++ {
		c, err := dialUDP(ns, laddr, addr)
		if err != nil {
			res.Errors = append(res.Errors, fmt.Errorf("request %d: %w", i, err))
			continue
		}
		payload := []byte(fmt.Sprintf("udp request %04d", i))
		buf := make([]byte, 1500)
		answered := false
		for try := 0; try <= retries && !answered; try++ {
			if try > 0 {
				res.Retried++
			}
			if _, err := c.Write(payload); err != nil {
				res.Errors = append(res.Errors, fmt.Errorf("request %d: write: %w", i, err))
				break
			}
			c.SetReadDeadline(time.Now().Add(timeout))
			for {
				k, err := c.Read(buf)
				if err != nil {
					break
				}
				if bytes.Equal(buf[:k], payload) {
					answered = true
					break
				}
			}
		}
		c.Close()
		if answered {
			res.Answered++
		} else {
			res.Errors = append(res.Errors, fmt.Errorf("request %d from %s: no answer after %d tries", i, c.LocalAddr(), retries+1))
		}
	}
	return res
}

// UDPSendFrom sends payload count times to dst from a socket bound to src
// (port 0: any) inside ns, without waiting for answers.
func UDPSendFrom(ns *NS, src netip.Addr, dst netip.AddrPort, payload []byte, count int) error {
	c, err := dialUDP(ns, netip.AddrPortFrom(src, 0), dst)
	if err != nil {
		return err
	}
	defer c.Close()
	for i := 0; i < count; i++ {
		if _, err := c.Write(payload); err != nil {
			return err
		}
	}
	return nil
}

// Ping sends count ICMP echo requests to dst from inside ns (raw socket), one
// at a time, waiting up to timeout for each reply, and returns the number of
// replies and their round-trip times. An IPv6 dst is pinged with ICMPv6; a
// link-local one needs its zone (the interface name in ns, "fe80::1%eth0").
func Ping(ctx context.Context, ns *NS, dst netip.Addr, count int, timeout time.Duration) (int, []time.Duration, error) {
	dst = dst.Unmap()
	v6 := dst.Is6()
	var echo, reply icmp.Type = ipv4.ICMPTypeEcho, ipv4.ICMPTypeEchoReply
	proto := unix.IPPROTO_ICMP
	if v6 {
		echo, reply, proto = ipv6.ICMPTypeEchoRequest, ipv6.ICMPTypeEchoReply, unix.IPPROTO_ICMPV6
	}
	to := &net.IPAddr{IP: dst.AsSlice()}
	if z := dst.Zone(); z != "" {
		// The zone is an interface of ns: resolve it there, not in the
		// namespace of whichever thread writes.
		l, err := ns.Netlink().LinkByName(z)
		if err != nil {
			return 0, nil, fmt.Errorf("%s: zone %s: %w", ns.Name, z, err)
		}
		to.Zone = strconv.Itoa(l.Attrs().Index)
		dst = dst.WithZone("")
	}
	c, err := listenICMPFamily(ns, v6)
	if err != nil {
		return 0, nil, err
	}
	defer c.Close()
	id := int(rand.Uint32() & 0xffff)
	var rtts []time.Duration
	buf := make([]byte, 1500)
	for seq := 1; seq <= count && ctx.Err() == nil; seq++ {
		m := icmp.Message{Type: echo, Body: &icmp.Echo{ID: id, Seq: seq, Data: []byte("l2shim integration ping")}}
		b, err := m.Marshal(nil) // ICMPv6: the kernel fills in the checksum
		if err != nil {
			return len(rtts), rtts, err
		}
		start := time.Now()
		if _, err := c.WriteTo(b, to); err != nil {
			return len(rtts), rtts, fmt.Errorf("send echo: %w", err)
		}
		c.SetReadDeadline(start.Add(timeout))
		for {
			n, peer, err := c.ReadFrom(buf)
			if err != nil {
				break // timeout: lost
			}
			rm, err := icmp.ParseMessage(proto, buf[:n])
			if err != nil || rm.Type != reply || remoteAddr(peer) != dst {
				continue
			}
			if e, ok := rm.Body.(*icmp.Echo); ok && e.ID == id && e.Seq == seq {
				rtts = append(rtts, time.Since(start))
				break
			}
		}
		if seq < count {
			time.Sleep(50 * time.Millisecond)
		}
	}
	return len(rtts), rtts, ctx.Err()
}

// TransferResult describes a bulk transfer.
type TransferResult struct {
	Bytes   int64
	Elapsed time.Duration
	Seen    netip.Addr // the client address the server saw (the uplink)
	Tries   int        // connections made until one was on the wanted uplink
	SHA256  string     // hex, equal at both ends
}

// Gbps is the goodput in Gbit/s.
func (r TransferResult) Gbps() float64 {
	if r.Elapsed <= 0 {
		return 0
	}
	return float64(r.Bytes) * 8 / r.Elapsed.Seconds() / 1e9
}

// dialBulk connects to a bulk server until the server sees a client address
// accepted by want (nil: any), at most tries times.
func dialBulk(ctx context.Context, ns *NS, addr netip.AddrPort, want func(netip.Addr) bool, tries int) (net.Conn, netip.Addr, int, error) {
	var seen []string
	for i := 1; i <= tries; i++ {
		dctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		c, err := DialTCP(dctx, ns, addr)
		cancel()
		if err != nil {
			return nil, netip.Addr{}, i, err
		}
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		line, err := readLine(c)
		if err != nil {
			c.Close()
			return nil, netip.Addr{}, i, fmt.Errorf("read server hello: %w", err)
		}
		c.SetReadDeadline(time.Time{})
		a, err := netip.ParseAddr(line)
		if err != nil {
			c.Close()
			return nil, netip.Addr{}, i, fmt.Errorf("bad server hello %q", line)
		}
		if want == nil || want(a) {
			return c, a, i, nil
		}
		seen = append(seen, a.String())
		c.Close()
	}
	return nil, netip.Addr{}, tries, fmt.Errorf("no connection on the wanted uplink in %d tries (server saw %s)", tries, strings.Join(seen, ","))
}

// From returns a predicate accepting exactly a (for Upload/Download's want).
func From(a netip.Addr) func(netip.Addr) bool {
	return func(b netip.Addr) bool { return a == b }
}

func writeHeader(c net.Conn, op byte, size int64, seed uint64) error {
	var hdr [17]byte
	hdr[0] = op
	binary.BigEndian.PutUint64(hdr[1:9], uint64(size))
	binary.BigEndian.PutUint64(hdr[9:17], seed)
	_, err := c.Write(hdr[:])
	return err
}

func setCtxDeadline(ctx context.Context, c net.Conn) {
	if dl, ok := ctx.Deadline(); ok {
		c.SetDeadline(dl)
	}
	go func() {
		<-ctx.Done()
		c.SetDeadline(time.Unix(1, 0))
	}()
}

// bulkTransfer connects from ns to a bulk server over a connection whose
// client address satisfies want, sends the request header (op, size, seed)
// and runs fn on the connection, all bounded by ctx. The result's Elapsed
// runs from the header to fn's return; fn fills in the rest.
func bulkTransfer(ctx context.Context, ns *NS, addr netip.AddrPort, want func(netip.Addr) bool, op byte, size int64, seed uint64, fn func(c net.Conn, res *TransferResult) error) (TransferResult, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	c, seen, tries, err := dialBulk(ctx, ns, addr, want, 32)
	res := TransferResult{Seen: seen, Tries: tries}
	if err != nil {
		return res, err
	}
	defer c.Close()
	setCtxDeadline(ctx, c)
	start := time.Now()
	if err := writeHeader(c, op, size, seed); err != nil {
		return res, err
	}
	err = fn(c, &res)
	res.Elapsed = time.Since(start)
	return res, err
}

// Upload sends size bytes of the stream for seed from ns to a bulk server
// over a connection whose client address satisfies want, and checks the
// server's sha256 of what it received against the sender's.
func Upload(ctx context.Context, ns *NS, addr netip.AddrPort, size int64, seed uint64, want func(netip.Addr) bool) (TransferResult, error) {
	return upload(ctx, ns, addr, size, seed, want, nil)
}

// upload is Upload calling after (when set) with the bytes sent so far after
// every write; after may sleep to pace the transfer.
func upload(ctx context.Context, ns *NS, addr netip.AddrPort, size int64, seed uint64, want func(netip.Addr) bool, after func(sent int64)) (TransferResult, error) {
	return bulkTransfer(ctx, ns, addr, want, opUpload, size, seed, func(c net.Conn, res *TransferResult) error {
		var mine []byte
		var err error
		res.Bytes, mine, err = sendStream(c, size, seed, after)
		if err != nil {
			return fmt.Errorf("upload write after %d bytes: %w", res.Bytes, err)
		}
		sum, err := readServerSum(c)
		if err != nil {
			return fmt.Errorf("upload: read server hash after %d bytes sent: %w", res.Bytes, err)
		}
		res.SHA256 = hex.EncodeToString(mine)
		if !bytes.Equal(sum, mine) {
			return fmt.Errorf("upload corrupted: sender sha256 %x, receiver sha256 %x (%d bytes)", mine, sum, size)
		}
		return nil
	})
}

// Download receives size bytes of the stream for seed from a bulk server in
// ns over a connection whose client address satisfies want, and checks the
// receiver's sha256 against the server's.
func Download(ctx context.Context, ns *NS, addr netip.AddrPort, size int64, seed uint64, want func(netip.Addr) bool) (TransferResult, error) {
	return bulkTransfer(ctx, ns, addr, want, opDownload, size, seed, func(c net.Conn, res *TransferResult) error {
		h := sha256.New()
		n, err := io.CopyBuffer(h, io.LimitReader(c, size), make([]byte, chunk))
		res.Bytes = n
		if err == nil && n < size {
			err = io.ErrUnexpectedEOF
		}
		if err != nil {
			return fmt.Errorf("download: read after %d of %d bytes: %w", n, size, err)
		}
		sum, err := readServerSum(c)
		if err != nil {
			return fmt.Errorf("download: read server hash: %w", err)
		}
		mine := h.Sum(nil)
		res.SHA256 = hex.EncodeToString(mine)
		if !bytes.Equal(sum, mine) {
			return fmt.Errorf("download corrupted: sender sha256 %x, receiver sha256 %x (%d bytes)", sum, mine, size)
		}
		return nil
	})
}

// Sink sends data as fast as possible for d over a connection whose client
// address satisfies want and returns the bytes the server received and the
// time until the server confirmed them.
func Sink(ctx context.Context, ns *NS, addr netip.AddrPort, d time.Duration, want func(netip.Addr) bool) (TransferResult, error) {
	buf := make([]byte, chunk)
	NewStream(1).Fill(buf)
	return bulkTransfer(ctx, ns, addr, want, opSink, 0, 0, func(c net.Conn, res *TransferResult) error {
		for end := time.Now().Add(d); time.Now().Before(end); {
			if _, err := c.Write(buf); err != nil {
				return fmt.Errorf("sink write: %w", err)
			}
		}
		if err := c.(*net.TCPConn).CloseWrite(); err != nil {
			return err
		}
		var out [8]byte
		if _, err := io.ReadFull(c, out[:]); err != nil {
			return fmt.Errorf("sink: read count: %w", err)
		}
		res.Bytes = int64(binary.BigEndian.Uint64(out[:]))
		return nil
	})
}

// FirstSuccess repeats short echo connections (each bounded by attempt) until
// one succeeds or within elapses, and returns the time from since to that
// success and the number of attempts.
func FirstSuccess(ctx context.Context, ns *NS, addr netip.AddrPort, since time.Time, attempt, within time.Duration) (time.Duration, int, error) {
	deadline := since.Add(within)
	var last error
	for n := 1; ; n++ {
		err := TCPEcho(ctx, ns, addr, []byte("are you there?"), attempt)
		if err == nil {
			return time.Since(since), n, nil
		}
		last = err
		if time.Now().After(deadline) || ctx.Err() != nil {
			return time.Since(since), n, fmt.Errorf("no connection succeeded within %v (%d attempts, last: %v)", within, n, last)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// whoami asks a UDPEchoServer, over c's flow, which address it sees the flow
// coming from: up to tries requests, each waiting up to wait for the answer.
// It returns the answer ("" when none came) and the first error sending a
// request met, if any.
func whoami(c *net.UDPConn, tries int, wait time.Duration) (string, error) {
	defer c.SetReadDeadline(time.Time{})
	var werr error
	buf := make([]byte, 128)
	for try := 0; try < tries; try++ {
		if _, err := c.Write([]byte(whoamiRequest)); err != nil && werr == nil {
			werr = err
		}
		c.SetReadDeadline(time.Now().Add(wait))
		if n, err := c.Read(buf); err == nil {
			return string(buf[:n]), werr
		}
	}
	return "", werr
}

// DialUDPPath opens a UDP socket in ns connected to a UDPEchoServer at addr
// whose flow the server sees coming from an address accepted by want (nil:
// any), trying at most tries source ports.
func DialUDPPath(ns *NS, addr netip.AddrPort, want func(netip.Addr) bool, tries int) (*net.UDPConn, netip.Addr, error) {
	var seen []string
	for i := 0; i < tries; i++ {
		c, err := dialUDP(ns, netip.AddrPort{}, addr)
		if err != nil {
			return nil, netip.Addr{}, err
		}
		answer, _ := whoami(c, 3, 500*time.Millisecond)
		a, _ := netip.ParseAddr(answer)
		if a.IsValid() && (want == nil || want(a)) {
			return c, a, nil
		}
		seen = append(seen, a.String())
		c.Close()
	}
	return nil, netip.Addr{}, fmt.Errorf("no UDP flow on the wanted uplink in %d tries (server saw %s)", tries, strings.Join(seen, ","))
}

// UDPBlast sends size-byte datagrams on c as fast as it can for d, in
// batches (sendmmsg), and returns how many were handed to the kernel.
func UDPBlast(ctx context.Context, c *net.UDPConn, size int, d time.Duration) (int64, error) {
	var pc interface {
		WriteBatch([]ipv4.Message, int) (int, error)
	} = ipv4.NewPacketConn(c)
	if remoteAddr(c.RemoteAddr()).Is6() {
		pc = ipv6.NewPacketConn(c) // ipv6.Message is ipv4.Message (socket.Message)
	}
	const batch = 64
	payload := make([]byte, size)
	NewStream(7).Fill(payload)
	ms := make([]ipv4.Message, batch)
	for i := range ms {
		ms[i].Buffers = [][]byte{payload}
	}
	var sent int64
	end := time.Now().Add(d)
	for i := 0; ctx.Err() == nil; i++ {
		if i%16 == 0 && time.Now().After(end) {
			break
		}
		n, err := pc.WriteBatch(ms, 0)
		sent += int64(n)
		if err != nil {
			if errors.Is(err, unix.ENOBUFS) {
				continue
			}
			return sent, err
		}
	}
	return sent, ctx.Err()
}

// ConnTiming is the outcome of one timed echo connection.
type ConnTiming struct {
	Elapsed time.Duration // from dial to the echo read back (or to the error)
	Err     error
}

// TimedEchoes makes n echo connections from ns (sockets bound to src when
// valid) with the given concurrency, each bounded by timeout, and returns
// each one's outcome in order.
func TimedEchoes(ctx context.Context, ns *NS, src netip.Addr, addr netip.AddrPort, n, workers int, timeout time.Duration) []ConnTiming {
	if workers < 1 {
		workers = 1
	}
	res := make([]ConnTiming, n)
	var next atomic.Int64
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				if ctx.Err() != nil {
					res[i].Err = ctx.Err()
					continue
				}
				start := time.Now()
				err := TCPEchoFrom(ctx, ns, src, addr, []byte(fmt.Sprintf("timed %04d", i)), timeout)
				res[i] = ConnTiming{Elapsed: time.Since(start), Err: err}
			}
		}()
	}
	wg.Wait()
	return res
}

// TimingStats summarises timed connections: how many succeeded, the slowest
// and the median of the successful ones, and the errors of the others.
func TimingStats(ts []ConnTiming) (ok int, worst, median time.Duration, errs []error) {
	var d []time.Duration
	for i, t := range ts {
		if t.Err != nil {
			errs = append(errs, fmt.Errorf("connection %d (after %v): %w", i, t.Elapsed.Round(time.Millisecond), t.Err))
			continue
		}
		ok++
		d = append(d, t.Elapsed)
	}
	sort.Slice(d, func(i, j int) bool { return d[i] < d[j] })
	if len(d) > 0 {
		worst, median = d[len(d)-1], d[len(d)/2]
	}
	return ok, worst, median, errs
}

// UplinkConn is a TCP connection to a BulkServer that the server sees
// coming from a known client address (its uplink), left open.
type UplinkConn struct {
	net.Conn
	Seen netip.Addr
}

// DialUplink connects from ns to a BulkServer at addr until the server sees
// the client address want (at most tries connections) and returns the
// connection idle, the server waiting for a request header.
func DialUplink(ctx context.Context, ns *NS, addr netip.AddrPort, want netip.Addr, tries int) (*UplinkConn, error) {
	c, seen, _, err := dialBulk(ctx, ns, addr, From(want), tries)
	if err != nil {
		return nil, err
	}
	return &UplinkConn{Conn: c, Seen: seen}, nil
}

// Upload sends size bytes of the stream for seed over the connection and
// checks the server's sha256 of them, all within timeout.
func (u *UplinkConn) Upload(size int64, seed uint64, timeout time.Duration) error {
	u.SetDeadline(time.Now().Add(timeout))
	defer u.SetDeadline(time.Time{})
	if err := writeHeader(u, opUpload, size, seed); err != nil {
		return err
	}
	_, mine, err := sendStream(u, size, seed, nil)
	if err != nil {
		return fmt.Errorf("upload write: %w", err)
	}
	sum, err := readServerSum(u)
	if err != nil {
		return fmt.Errorf("upload: read server hash: %w", err)
	}
	if !bytes.Equal(sum, mine) {
		return errors.New("upload corrupted")
	}
	return nil
}
