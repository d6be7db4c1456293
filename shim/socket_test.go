package shim

import (
	"net"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/l2shim/l2shim/datapath"
)

// TestReadBatchTruncated: frames recvmmsg cut short (MSG_TRUNC, or a length beyond the buffer)
// are counted and left out; the whole ones keep their order and length.
func TestReadBatchTruncated(t *testing.T) {
	type msg struct {
		n     int
		flags int32
	}
	tests := []struct {
		name      string
		msgs      []msg
		whole     []int // lengths of the frames kept, in order
		truncated int
	}{
		{name: "none", msgs: nil},
		{name: "all whole", msgs: []msg{{100, 0}, {1514, 0}, {datapath.MaxFrame, 0}}, whole: []int{100, 1514, datapath.MaxFrame}},
		{name: "MSG_TRUNC", msgs: []msg{{datapath.MaxFrame, unix.MSG_TRUNC}}, truncated: 1},
		{name: "longer than the buffer", msgs: []msg{{datapath.MaxFrame + 1, 0}, {200000, 0}}, truncated: 2},
		{name: "mixed", msgs: []msg{{60, 0}, {datapath.MaxFrame, unix.MSG_TRUNC}, {70, 0}, {80, unix.MSG_TRUNC | unix.MSG_DONTWAIT}, {90, 0}},
			whole: []int{60, 70, 90}, truncated: 2},
		{name: "other flags", msgs: []msg{{64, unix.MSG_DONTWAIT}}, whole: []int{64}},
	}
	b := newReadBatch(8)
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			for i, m := range tc.msgs {
				b.msgs[i].n = uint32(m.n)
				b.msgs[i].hdr.Flags = m.flags
				b.bufs[i][0] = byte(i)
			}
			b.collect(len(tc.msgs))
			if b.truncated != tc.truncated {
				t.Errorf("truncated %d, want %d", b.truncated, tc.truncated)
			}
			if len(b.frames) != len(tc.whole) {
				t.Fatalf("%d whole frames, want %d", len(b.frames), len(tc.whole))
			}
			for i, f := range b.frames {
				if len(f) != tc.whole[i] {
					t.Errorf("frame %d: %d bytes, want %d", i, len(f), tc.whole[i])
				}
			}
			for i := range tc.msgs {
				if b.msgs[i].hdr.Flags != 0 {
					t.Errorf("message %d: flags %#x left for the next read", i, b.msgs[i].hdr.Flags)
				}
			}
		})
	}
	// The order is the read's: the kept frames are the buffers they were read into.
	b.msgs[0].n, b.msgs[1].n, b.msgs[1].hdr.Flags, b.msgs[2].n = 10, 20, unix.MSG_TRUNC, 30
	b.collect(3)
	if len(b.frames) != 2 || &b.frames[0][0] != &b.bufs[0][0] || &b.frames[1][0] != &b.bufs[2][0] {
		t.Error("kept frames are not their own buffers, in order")
	}
}

// TestSendQueueFullSocket: a socket whose send buffer is full and never drains (a stuck
// uplink) costs a flush no wait: the frames that do not fit are dropped and counted as EAGAIN.
// A TCP connection whose peer never reads stands in for the packet socket; it ignores the
// link-layer address sendmmsg carries.
func TestSendQueueFullSocket(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal("loopback TCP:", err)
	}
	defer ln.Close()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	peer, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer peer.Close()
	_ = peer.(*net.TCPConn).SetReadBuffer(4096)
	_ = c.(*net.TCPConn).SetWriteBuffer(4096)
	rc, err := c.(*net.TCPConn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	pc := &packetConn{name: "stuck", rc: rc}

	var mu sync.Mutex
	dropped := map[syscall.Errno]int{}
	q := newSendQueue(func() *packetConn { return pc }, 64, func(e syscall.Errno) {
		mu.Lock()
		dropped[e]++
		mu.Unlock()
	})
	full := func() int {
		mu.Lock()
		defer mu.Unlock()
		return dropped[unix.EAGAIN]
	}
	frame := make([]byte, 1500)
	deadline := time.Now().Add(10 * time.Second)
	flushes := 0
	for full() == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("no EAGAIN drop after %d flushes of 64 frames", flushes)
		}
		for range 64 {
			q.add(frame)
		}
		done := make(chan error, 1)
		go func() { done <- q.flush() }()
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("flush: %v", err)
			}
		case <-time.After(2 * time.Second):
			t.Fatalf("flush %d waited for the full socket (2 s and counting): it must drop instead", flushes+1)
		}
		flushes++
	}
	mu.Lock()
	defer mu.Unlock()
	t.Logf("full after %d flushes; dropped %v", flushes, dropped)
	for e, n := range dropped {
		if e != unix.EAGAIN {
			t.Errorf("%d frames dropped with %v; only EAGAIN expected", n, e)
		}
	}
	if q.n != 0 {
		t.Errorf("%d frames left queued after the flush", q.n)
	}
}
