package shim

import (
	"errors"
	"fmt"
	"net"
	"os"
	"syscall"
	"unsafe"

	"github.com/mdlayher/packet"
	"golang.org/x/sys/unix"

	"github.com/l2shim/l2shim/datapath"
	"github.com/l2shim/l2shim/rewrite"
)

// packetConn is an AF_PACKET socket opened with PACKET_VNET_HDR (every frame read or written
// carries a virtio-net header, so GSO super-frames and partial checksums cross user space
// intact) and SO_MARK (so the shim's hooks recognise its own frames).
type packetConn struct {
	name string
	c    *packet.Conn
	rc   syscall.RawConn
	// to is the destination written into every sendmmsg header: the bound interface and
	// protocol IPv4, so the kernel never has to guess the frame's protocol.
	to unix.RawSockaddrLinklayer
}

// openPacket opens a packet socket on ifi. With recv false the socket is bound with protocol
// 0 and receives nothing; with recv true it receives every frame (ETH_P_ALL) but not its own
// sends.
func openPacket(ifi *net.Interface, mark uint32, recv bool) (*packetConn, error) {
	proto := 0
	if recv {
		proto = unix.ETH_P_ALL
	}
	c, err := packet.Listen(ifi, packet.Raw, proto, nil)
	if err != nil {
		return nil, fmt.Errorf("open packet socket on %s: %w", ifi.Name, err)
	}
	rc, err := c.SyscallConn()
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("packet socket on %s: %w", ifi.Name, err)
	}
	var serr error
	set := func(fd int, level, opt, val int, what string) {
		if serr != nil {
			return
		}
		if err := unix.SetsockoptInt(fd, level, opt, val); err != nil {
			serr = os.NewSyscallError("setsockopt "+what, err)
		}
	}
	err = rc.Control(func(fd uintptr) {
		set(int(fd), unix.SOL_PACKET, unix.PACKET_VNET_HDR, 1, "PACKET_VNET_HDR")
		set(int(fd), unix.SOL_SOCKET, unix.SO_MARK, int(mark), "SO_MARK")
		set(int(fd), unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, 8<<20, "SO_SNDBUFFORCE")
		if recv {
			set(int(fd), unix.SOL_PACKET, unix.PACKET_IGNORE_OUTGOING, 1, "PACKET_IGNORE_OUTGOING")
			set(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 32<<20, "SO_RCVBUFFORCE")
		}
	})
	if err == nil {
		err = serr
	}
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("configure packet socket on %s: %w", ifi.Name, err)
	}
	pc := &packetConn{name: ifi.Name, c: c, rc: rc}
	pc.to.Family = unix.AF_PACKET
	pc.to.Protocol = htons(unix.ETH_P_IP)
	pc.to.Ifindex = int32(ifi.Index)
	return pc, nil
}

func (pc *packetConn) Close() error { return pc.c.Close() }

// mmsghdr is struct mmsghdr from <sys/socket.h>.
type mmsghdr struct {
	hdr unix.Msghdr
	n   uint32
	_   [4]byte
}

// readBatch receives up to len(bufs) frames with one recvmmsg, each into its own buffer. The
// header, iovec and callback are built once, so a read allocates nothing.
type readBatch struct {
	bufs [][]byte
	msgs []mmsghdr
	iovs []unix.Iovec

	// frames are the whole frames of the last read, in order; truncated counts the frames
	// of that read that did not fit their buffer (MSG_TRUNC) and were left out.
	frames    [][]byte
	truncated int

	n     int
	errno syscall.Errno
	fd    func(fd uintptr) bool
}

func newReadBatch(size int) *readBatch {
	b := &readBatch{
		bufs:   make([][]byte, size),
		msgs:   make([]mmsghdr, size),
		iovs:   make([]unix.Iovec, size),
		frames: make([][]byte, 0, size),
	}
	for i := range b.bufs {
		b.bufs[i] = make([]byte, datapath.MaxFrame)
		b.iovs[i].Base = &b.bufs[i][0]
		b.iovs[i].SetLen(datapath.MaxFrame)
		b.msgs[i].hdr.Iov = &b.iovs[i]
		b.msgs[i].hdr.SetIovlen(1)
	}
	b.fd = b.recv
	return b
}

func (b *readBatch) recv(fd uintptr) bool {
	for {
		n, _, errno := unix.Syscall6(unix.SYS_RECVMMSG, fd, uintptr(unsafe.Pointer(&b.msgs[0])), uintptr(len(b.msgs)), unix.MSG_DONTWAIT, 0, 0)
		switch errno {
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			return false
		}
		b.n, b.errno = int(n), errno
		return true
	}
}

// read fills the batch and returns how many frames arrived, whole or not: b.frames holds the
// whole ones and b.truncated counts the others. A frame the kernel could not describe with a
// virtio-net header (EINVAL) is lost and reported as errFrameLost so the caller can count it
// and go on.
func (pc *packetConn) read(b *readBatch) (int, error) {
	b.n, b.errno = 0, 0
	b.frames, b.truncated = b.frames[:0], 0
	if err := pc.rc.Read(b.fd); err != nil {
		return 0, err
	}
	if b.errno != 0 {
		if b.errno == unix.EINVAL {
			return 0, errFrameLost
		}
		return 0, os.NewSyscallError("recvmmsg", b.errno)
	}
	b.collect(b.n)
	return b.n, nil
}

// collect sorts the first n messages recvmmsg filled into whole frames (b.frames) and frames
// that were cut short (b.truncated): a frame larger than its buffer (a BIG TCP super-frame over
// 64 KiB) arrives with MSG_TRUNC and only its first MaxFrame bytes; sent on, it would be
// corrupt, so it is left out for the caller to count.
func (b *readBatch) collect(n int) {
	b.frames, b.truncated = b.frames[:0], 0
	for i := 0; i < n; i++ {
		m := &b.msgs[i]
		size := int(m.n)
		cut := m.hdr.Flags&unix.MSG_TRUNC != 0 || size > len(b.bufs[i])
		m.hdr.Flags = 0
		if cut {
			b.truncated++
			continue
		}
		b.frames = append(b.frames, b.bufs[i][:size])
	}
}

var errFrameLost = errors.New("frame lost: no virtio-net header possible")

// sendQueue collects frames for one socket and writes them with sendmmsg. It asks get for the
// socket at every flush, so a socket replaced under it (an interface re-created with a new
// ifindex) is picked up without the frame loops knowing; while get returns nil the queued frames
// are dropped and counted.
type sendQueue struct {
	get func() *packetConn
	cur *packetConn
	// to and to6 are the destinations of IPv4 and IPv6 frames: the socket's interface with
	// the frame's protocol, which the kernel takes as the skb's (checksum offload and GSO go
	// by it).
	to, to6 unix.RawSockaddrLinklayer
	msgs    []mmsghdr
	iovs    []unix.Iovec
	n       int

	off     int
	sent    int
	errno   syscall.Errno
	fd      func(fd uintptr) bool
	dropped func(err syscall.Errno)
}

func newSendQueue(get func() *packetConn, size int, dropped func(syscall.Errno)) *sendQueue {
	q := &sendQueue{get: get, msgs: make([]mmsghdr, size), iovs: make([]unix.Iovec, size), dropped: dropped}
	for i := range q.msgs {
		q.msgs[i].hdr.Iov = &q.iovs[i]
		q.msgs[i].hdr.SetIovlen(1)
		q.msgs[i].hdr.Name = (*byte)(unsafe.Pointer(&q.to))
		q.msgs[i].hdr.Namelen = uint32(unsafe.Sizeof(q.to))
	}
	q.fd = q.send
	return q
}

// add queues b (virtio-net header and frame); the caller keeps b unchanged until flush. A
// full queue is flushed first.
func (q *sendQueue) add(b []byte) {
	if q.n == len(q.msgs) {
		_ = q.flush()
	}
	to := &q.to
	if et := rewrite.VnetHdrLen + 12; len(b) >= et+2 && b[et] == 0x86 && b[et+1] == 0xdd {
		to = &q.to6
	}
	q.msgs[q.n].hdr.Name = (*byte)(unsafe.Pointer(to))
	q.iovs[q.n].Base = &b[0]
	q.iovs[q.n].SetLen(len(b))
	q.n++
}

func (q *sendQueue) send(fd uintptr) bool {
	for {
		n, _, errno := unix.Syscall6(unix.SYS_SENDMMSG, fd, uintptr(unsafe.Pointer(&q.msgs[q.off])), uintptr(q.n-q.off), unix.MSG_DONTWAIT, 0, 0)
		if errno == unix.EINTR {
			continue
		}
		// EAGAIN (the send buffer is full) is returned too, never waited on: see flush.
		q.sent, q.errno = int(n), errno
		return true
	}
}

// flush writes every queued frame without ever waiting. A frame the kernel refuses (EMSGSIZE,
// EINVAL, ...) is counted through dropped and skipped; the rest still go out. When the socket's
// send buffer is full (EAGAIN: its interface does not drain, a stuck or very slow uplink), the
// rest of the queue is dropped and counted: waiting would stall the frame loop, and with it
// every flow it carries to other interfaces. A socket closed under the queue (its interface
// went away) drops what was queued.
func (q *sendQueue) flush() error {
	if q.n == 0 {
		return nil
	}
	pc := q.get()
	if pc == nil {
		for i := 0; i < q.n; i++ {
			q.dropped(unix.ENODEV)
		}
		q.n = 0
		return nil
	}
	if pc != q.cur {
		q.cur, q.to, q.to6 = pc, pc.to, pc.to
		q.to6.Protocol = htons(unix.ETH_P_IPV6)
	}
	q.off = 0
	for q.off < q.n {
		q.sent, q.errno = 0, 0
		if err := pc.rc.Write(q.fd); err != nil {
			for ; q.off < q.n; q.off++ {
				q.dropped(unix.EBADF)
			}
			q.n = 0
			return fmt.Errorf("write %s: %w", pc.name, err)
		}
		switch {
		case q.errno == unix.EAGAIN:
			for ; q.off < q.n; q.off++ {
				q.dropped(unix.EAGAIN)
			}
		case q.errno != 0 || q.sent <= 0:
			// sendmmsg reports an error only for the first frame it could not send.
			q.dropped(q.errno)
			q.off++
		default:
			q.off += q.sent
		}
	}
	q.n = 0
	return nil
}
