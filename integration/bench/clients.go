package main

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"runtime"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vishvananda/netns"
	"golang.org/x/net/ipv4"

	"github.com/l2shim/l2shim/integration"
)

// env is what the measurements share: the topology, the servers and the
// sizes. Every client socket lives in the host namespace.
type env struct {
	ctx        context.Context
	topo       *integration.Topology
	srv        *servers
	dur        time.Duration // each throughput measurement
	udpSize    int           // UDP payload bytes
	rrMax      int           // request/response exchanges at most (and dur at most)
	crrWorkers int           // concurrent connection makers
	crrMax     int           // connections at most (and dur at most)
	cpuBytes   int64         // the paced transfer's volume
	cpuRate    float64       // its rate, bit/s
	shimPid    int           // the shim's pid in shim runs, else 0 (for its own CPU time, logged)
	place      placement     // where bulk senders and receivers run
	server     netip.Addr    // the server's address the clients use; invalid: its IPv4 one
}

func (e *env) at(port uint16) netip.AddrPort {
	if e.server.IsValid() {
		return netip.AddrPortFrom(e.server, port)
	}
	return netip.AddrPortFrom(e.topo.ServerAddr, port)
}

func (e *env) dial(port uint16) (*net.TCPConn, error) {
	ctx, cancel := context.WithTimeout(e.ctx, 5*time.Second)
	defer cancel()
	c, err := integration.DialTCP(ctx, e.topo.Host, e.at(port))
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", e.at(port), err)
	}
	return c.(*net.TCPConn), nil
}

// closeOnCancel closes cs when ctx ends before the returned stop is called.
func closeOnCancel(ctx context.Context, cs ...io.Closer) (stop func()) {
	done := make(chan struct{})
	go func() {
		select {
		case <-ctx.Done():
			for _, c := range cs {
				c.Close()
			}
		case <-done:
		}
	}()
	return func() { close(done) }
}

// tcpUp opens streams connections to a sink and sends on each as fast as
// it can for e.dur, then half-closes; the result is what the sink counted
// (goodput), in Gbit/s, over the time from the first write to the last count.
func (e *env) tcpUp(srv *tcpServer, port uint16, streams int, want netip.Addr) (float64, error) {
	srv.reset()
	conns := make([]*net.TCPConn, 0, streams)
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for i := 0; i < streams; i++ {
		c, err := e.dial(port)
		if err != nil {
			return 0, err
		}
		conns = append(conns, c)
	}
	closers := make([]io.Closer, len(conns))
	for i, c := range conns {
		closers[i] = c
	}
	defer closeOnCancel(e.ctx, closers...)()
	buf := make([]byte, chunk)
	integration.NewStream(1).Fill(buf)
	start := time.Now()
	end := start.Add(e.dur)
	var total atomic.Int64
	errs := make([]error, streams)
	var wg sync.WaitGroup
	for i, c := range conns {
		wg.Add(1)
		go e.place.run(e.place.senderCPU(i), func() {
			defer wg.Done()
			c.SetDeadline(end.Add(30 * time.Second))
			for n := 0; n < 1<<30 && time.Now().Before(end); n++ {
				if _, err := c.Write(buf); err != nil {
					errs[i] = fmt.Errorf("stream %d: write: %w", i, err)
					return
				}
			}
			if err := c.CloseWrite(); err != nil {
				errs[i] = err
				return
			}
			var cnt [8]byte
			if _, err := io.ReadFull(c, cnt[:]); err != nil {
				errs[i] = fmt.Errorf("stream %d: read the sink's count: %w", i, err)
				return
			}
			total.Add(int64(binary.BigEndian.Uint64(cnt[:])))
		})
	}
	wg.Wait()
	el := time.Since(start)
	if err := errors.Join(errs...); err != nil {
		return 0, err
	}
	if err := srv.seen.check(want); err != nil {
		return 0, err
	}
	return float64(total.Load()) * 8 / el.Seconds() / 1e9, nil
}

// tcpDown asks the source server to send for e.dur and counts what arrives
// until it closes: Gbit/s over the time from the request to the close.
func (e *env) tcpDown(want netip.Addr) (float64, error) {
	e.srv.source.reset()
	c, err := e.dial(portSource)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	defer closeOnCancel(e.ctx, c)()
	c.SetDeadline(time.Now().Add(e.dur + 30*time.Second))
	var req [8]byte
	binary.BigEndian.PutUint64(req[:], uint64(e.dur))
	var n int64
	var el time.Duration
	e.place.run(e.place.receiverCPU(0), func() {
		start := time.Now()
		if _, err = c.Write(req[:]); err != nil {
			return
		}
		buf := make([]byte, chunk)
		for i := 0; i < 1<<30; i++ {
			var k int
			k, err = c.Read(buf)
			n += int64(k)
			if err == io.EOF {
				err = nil
				break
			}
			if err != nil {
				err = fmt.Errorf("read after %d bytes: %w", n, err)
				return
			}
		}
		el = time.Since(start)
	})
	if err != nil {
		return 0, err
	}
	if err := e.srv.source.seen.check(want); err != nil {
		return 0, err
	}
	return float64(n) * 8 / el.Seconds() / 1e9, nil
}

// dialUDP opens a UDP socket in the host namespace connected to port, with
// the same forced buffers as the servers'.
func (e *env) dialUDP(port uint16) (*net.UDPConn, error) {
	var c *net.UDPConn
	err := e.topo.Host.Do(func() error {
		var err error
		c, err = net.DialUDP("udp4", nil, net.UDPAddrFromAddrPort(e.at(port)))
		return err
	})
	if err != nil {
		return nil, err
	}
	if err := forceBuffers(c); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

// hello sends the stream's first datagram until the server answers (at most
// 10 tries of 300 ms) and returns the source the server saw.
func hello(c *net.UDPConn) (netip.AddrPort, error) {
	defer c.SetReadDeadline(time.Time{})
	buf := make([]byte, 256)
	for try := 0; try < 10; try++ {
		if _, err := c.Write([]byte(udpHello)); err != nil {
			return netip.AddrPort{}, err
		}
		c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
		n, err := c.Read(buf)
		if err != nil {
			continue
		}
		if s, ok := strings.CutPrefix(string(buf[:n]), "ok "); ok {
			return netip.ParseAddrPort(s)
		}
	}
	return netip.AddrPort{}, errors.New("no answer to 10 hellos")
}

// settle is how long a receiver keeps counting after the sender stopped.
const settle = 300 * time.Millisecond

// udpResult is a UDP stream's outcome: datagrams delivered to the receiving
// socket per second of sending, and the share of those sent that never
// arrived.
type udpResult struct{ kpps, loss float64 }

func udpOutcome(sent, got int64, el time.Duration) udpResult {
	r := udpResult{kpps: float64(got) / el.Seconds() / 1e3}
	if sent > 0 {
		r.loss = max(0, 100*(1-float64(got)/float64(sent)))
	}
	return r
}

// udpUp sends e.udpSize-byte datagrams from the host to port as fast as the
// socket takes them for e.dur. answered: the stream starts with a hello the
// server answers (the flow is confirmed, as a DNS, QUIC or VPN flow is by
// its first answer); otherwise the server never answers.
func (e *env) udpUp(answered bool, want netip.Addr) (udpResult, error) {
	srv, port := e.srv.oneway, uint16(portUDPOneway)
	if answered {
		srv, port = e.srv.udp, portUDP
	}
	c, err := e.dialUDP(port)
	if err != nil {
		return udpResult{}, err
	}
	defer c.Close()
	defer closeOnCancel(e.ctx, c)()
	if answered {
		seen, err := hello(c)
		if err != nil {
			return udpResult{}, err
		}
		if seen.Addr() != want {
			return udpResult{}, fmt.Errorf("the server saw the stream from %s, want %s", seen, want)
		}
		time.Sleep(50 * time.Millisecond)
	}
	srv.reset()
	start := time.Now()
	var sent int64
	e.place.run(e.place.senderCPU(0), func() { sent, err = blast(ipv4.NewPacketConn(c), nil, e.udpSize, e.dur) })
	el := time.Since(start)
	if err != nil {
		return udpResult{}, fmt.Errorf("send: %w", err)
	}
	time.Sleep(settle)
	got := srv.count.Load()
	if err := srv.seen.check(want); err != nil {
		return udpResult{}, err
	}
	logf("  %d of %d datagrams delivered", got, sent)
	return udpOutcome(sent, got, el), nil
}

// udpDown opens the flow from the host with a hello the server answers,
// then has the server send e.udpSize-byte datagrams to the source it saw as
// fast as its socket takes them for e.dur, counted by the host's socket.
func (e *env) udpDown(want netip.Addr) (udpResult, error) {
	c, err := e.dialUDP(portUDP)
	if err != nil {
		return udpResult{}, err
	}
	defer c.Close()
	defer closeOnCancel(e.ctx, c)()
	seen, err := hello(c)
	if err != nil {
		return udpResult{}, err
	}
	if seen.Addr() != want {
		return udpResult{}, fmt.Errorf("the server saw the stream from %s, want %s", seen, want)
	}
	time.Sleep(50 * time.Millisecond)
	var got atomic.Int64
	done := make(chan struct{})
	c.SetReadDeadline(time.Now().Add(e.dur + 10*time.Second))
	go e.place.run(e.place.receiverCPU(0), func() {
		defer close(done)
		pc := ipv4.NewPacketConn(c)
		ms := make([]ipv4.Message, 64)
		for i := range ms {
			ms[i].Buffers = [][]byte{make([]byte, 2048)}
		}
		for i := int64(0); i < 1<<32; i++ {
			n, err := pc.ReadBatch(ms, 0)
			if err != nil {
				var ne net.Error
				if errors.As(err, &ne) && ne.Timeout() || errors.Is(err, net.ErrClosed) {
					return
				}
				continue
			}
			got.Add(int64(n))
		}
	})
	start := time.Now()
	var sent int64
	e.place.run(e.place.senderCPU(0), func() { sent, err = e.srv.udp.blast(seen, e.udpSize, e.dur) })
	el := time.Since(start)
	time.Sleep(settle)
	c.SetReadDeadline(time.Unix(1, 0))
	<-done
	if err != nil {
		return udpResult{}, fmt.Errorf("server send: %w", err)
	}
	logf("  %d of %d datagrams delivered", got.Load(), sent)
	return udpOutcome(sent, got.Load(), el), nil
}

// rr exchanges rrSize-byte requests and responses on one connection, one
// at a time, after 500 to warm up (the fast path takes a connection over
// once its handshake is done): at most e.rrMax exchanges within e.dur. It
// returns the median and the 99th percentile round trip, in µs.
func (e *env) rr(want netip.Addr) (p50, p99 float64, err error) {
	e.srv.rr.seen.reset()
	c, err := e.dial(portRR)
	if err != nil {
		return 0, 0, err
	}
	defer c.Close()
	defer closeOnCancel(e.ctx, c)()
	c.SetDeadline(time.Now().Add(e.dur + 30*time.Second))
	buf := make([]byte, rrSize)
	one := func() error {
		if _, err := c.Write(buf); err != nil {
			return err
		}
		_, err := io.ReadFull(c, buf)
		return err
	}
	for i := 0; i < 500; i++ {
		if err := one(); err != nil {
			return 0, 0, fmt.Errorf("warm-up exchange %d: %w", i, err)
		}
	}
	lat := make([]time.Duration, 0, e.rrMax)
	end := time.Now().Add(e.dur)
	for len(lat) < e.rrMax && time.Now().Before(end) {
		t0 := time.Now()
		if err := one(); err != nil {
			return 0, 0, fmt.Errorf("exchange %d: %w", len(lat), err)
		}
		lat = append(lat, time.Since(t0))
	}
	if len(lat) < 1000 {
		return 0, 0, fmt.Errorf("only %d exchanges in %v", len(lat), e.dur)
	}
	if err := e.srv.rr.seen.check(want); err != nil {
		return 0, 0, err
	}
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	us := func(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }
	logf("  %d exchanges", len(lat))
	return us(lat[len(lat)/2]), us(lat[len(lat)*99/100]), nil
}

// crr makes e.crrWorkers connection makers run for e.dur (or e.crrMax
// connections in all): each connects, sends a crrRequest-byte request, reads
// the crrResponse-byte answer until the server closes, and closes. The
// result is completed connections per second. The makers run on OS threads
// that stay in the host namespace, so a connection costs no namespace
// switch.
func (e *env) crr(want netip.Addr) (float64, error) {
	e.srv.crr.seen.reset()
	addr := e.at(portCRR).String()
	var ok, failed atomic.Int64
	var mu sync.Mutex
	var firstErr error
	fail := func(err error) {
		failed.Add(1)
		mu.Lock()
		if firstErr == nil {
			firstErr = err
		}
		mu.Unlock()
	}
	shim0, _ := procCPU(e.shimPid)
	busy0, _ := machineBusy()
	start := time.Now()
	end := start.Add(e.dur)
	var wg sync.WaitGroup
	for w := 0; w < e.crrWorkers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// Never unlocked: the thread stays in the host's namespace and
			// the runtime destroys it with this goroutine.
			runtime.LockOSThread()
			if err := netns.Set(e.topo.Host.Handle()); err != nil {
				fail(fmt.Errorf("enter %s: %w", e.topo.Host.Name, err))
				return
			}
			d := net.Dialer{Timeout: 2 * time.Second}
			req := make([]byte, crrRequest)
			copy(req, "GET / HTTP/1.0\r\nHost: bench\r\n\r\n")
			resp := make([]byte, crrResponse+64)
			for ok.Load()+failed.Load() < int64(e.crrMax) && failed.Load() < 100 && time.Now().Before(end) && e.ctx.Err() == nil {
				if err := crrOne(&d, addr, req, resp); err != nil {
					fail(err)
				} else {
					ok.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	el := time.Since(start)
	busy1, _ := machineBusy()
	shim1, _ := procCPU(e.shimPid)
	if n := failed.Load(); n > 0 {
		return 0, fmt.Errorf("%d of %d connections failed; first: %w", n, n+ok.Load(), firstErr)
	}
	if err := e.srv.crr.seen.check(want); err != nil {
		return 0, err
	}
	msg := fmt.Sprintf("  %d connections, machine busy %.2f of %.2f cpu-s", ok.Load(), busy1-busy0, float64(runtime.NumCPU())*el.Seconds())
	if e.shimPid > 0 {
		msg += fmt.Sprintf(", l2shim's own %.2f cpu-s", shim1-shim0)
	}
	logf("%s", msg)
	return float64(ok.Load()) / el.Seconds(), nil
}

func crrOne(d *net.Dialer, addr string, req, resp []byte) error {
	c, err := d.Dial("tcp4", addr)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := c.Write(req); err != nil {
		return err
	}
	n := 0
	for i := 0; i < 64 && n < len(resp); i++ {
		k, err := c.Read(resp[n:])
		n += k
		if err == io.EOF {
			break
		}
		if err != nil {
			return err
		}
	}
	if n != crrResponse {
		return fmt.Errorf("response of %d bytes, want %d", n, crrResponse)
	}
	return nil
}

// cpuPerGB sends e.cpuBytes to the sink at e.cpuRate (paced by the sender,
// 64 KiB writes on a schedule) and returns the whole machine's busy CPU time
// during the transfer (/proc/stat: user, nice, system, irq, softirq; not
// idle, iowait or steal) per 10^9 bytes. Everything counts: the sender, the
// receiver, both kernels' softirqs, l2shim.
func (e *env) cpuPerGB(want netip.Addr) (float64, error) {
	e.srv.sink.reset()
	c, err := e.dial(portSink)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	defer closeOnCancel(e.ctx, c)()
	bytesPerSec := e.cpuRate / 8
	plan := time.Duration(float64(e.cpuBytes) / bytesPerSec * float64(time.Second))
	c.SetDeadline(time.Now().Add(3*plan + 30*time.Second))
	buf := make([]byte, 64<<10)
	integration.NewStream(3).Fill(buf)
	// What the machine does without the transfer, for the log: other work
	// running now counts in the measurement too.
	bg0, err := machineBusy()
	if err != nil {
		return 0, err
	}
	time.Sleep(500 * time.Millisecond)
	shim0, _ := procCPU(e.shimPid)
	busy0, err := machineBusy()
	if err != nil {
		return 0, err
	}
	background := (busy0 - bg0) / 0.5
	start := time.Now()
	var sent int64
	e.place.run(e.place.senderCPU(0), func() {
		for i := 0; sent < e.cpuBytes && i < 1<<30; i++ {
			var k int
			k, err = c.Write(buf[:min(int64(len(buf)), e.cpuBytes-sent)])
			sent += int64(k)
			if err != nil {
				err = fmt.Errorf("write after %d bytes: %w", sent, err)
				return
			}
			if ahead := time.Duration(float64(sent)/bytesPerSec*float64(time.Second)) - time.Since(start); ahead > 0 {
				time.Sleep(ahead)
			}
		}
	})
	if err != nil {
		return 0, err
	}
	if err := c.CloseWrite(); err != nil {
		return 0, err
	}
	var cnt [8]byte
	if _, err := io.ReadFull(c, cnt[:]); err != nil {
		return 0, fmt.Errorf("read the sink's count: %w", err)
	}
	el := time.Since(start)
	busy1, err := machineBusy()
	if err != nil {
		return 0, err
	}
	shim1, _ := procCPU(e.shimPid)
	if got := int64(binary.BigEndian.Uint64(cnt[:])); got != e.cpuBytes {
		return 0, fmt.Errorf("the sink counted %d bytes, %d sent", got, e.cpuBytes)
	}
	if err := e.srv.sink.seen.check(want); err != nil {
		return 0, err
	}
	gbps := float64(e.cpuBytes) * 8 / el.Seconds() / 1e9
	busy := busy1 - busy0
	msg := fmt.Sprintf("  %.2f GB in %v (%.2f Gbit/s), machine busy %.2f cpu-s (%.2f cpu-s/GB; idle before: %.2f cpu-s/s)", float64(e.cpuBytes)/1e9, el.Round(time.Millisecond), gbps, busy, busy/(float64(e.cpuBytes)/1e9), background)
	if e.shimPid > 0 {
		msg += fmt.Sprintf(", l2shim's own %.2f cpu-s", shim1-shim0)
	}
	logf("%s", msg)
	if gbps < 0.95*e.cpuRate/1e9 {
		logf("  WARNING: the paced transfer reached only %.2f of %.2f Gbit/s", gbps, e.cpuRate/1e9)
	}
	return busy / (float64(e.cpuBytes) / 1e9), nil
}
