// Package conntrack is l2shim's flow table: every flow the datapath has seen, keyed twice (as the
// host sends it and as the wire returns it), with the decision made for it when it was new.
//
// The table is not safe for concurrent use; the datapath serialises access to it. Flows live in a
// chunked slab so a *Flow stays valid until the flow is deleted, and keys are small comparable
// structs without pointers, so lookups do not allocate and the garbage collector never scans them.
package conntrack

import (
	"errors"
	"time"
)

// Key is a flow's 5-tuple in one direction. For ICMP echo both ports hold the identifier.
type Key struct {
	Src, Dst         [4]byte
	SrcPort, DstPort uint16
	Proto            uint8
}

// Reverse returns the key of the same flow seen from the other end.
func (k Key) Reverse() Key {
	return Key{Src: k.Dst, Dst: k.Src, SrcPort: k.DstPort, DstPort: k.SrcPort, Proto: k.Proto}
}

// Hash returns a well-mixed 64-bit hash of the key, stable for the life of the process and
// independent of direction-specific fields other than the tuple itself.
func (k Key) Hash(seed uint64) uint64 {
	a := uint64(k.Src[0])<<24 | uint64(k.Src[1])<<16 | uint64(k.Src[2])<<8 | uint64(k.Src[3])
	b := uint64(k.Dst[0])<<24 | uint64(k.Dst[1])<<16 | uint64(k.Dst[2])<<8 | uint64(k.Dst[3])
	h := seed ^ (a<<32 | b)
	h = mix(h)
	h ^= uint64(k.SrcPort)<<24 | uint64(k.DstPort)<<8 | uint64(k.Proto)
	return mix(h)
}

// mix is the splitmix64 finaliser.
func mix(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}

// Origin says which side opened a flow.
type Origin uint8

const (
	// Outbound flows were opened by the host (or a LAN client it forwards for).
	Outbound Origin = iota
	// Inbound flows were opened from the wire towards the host.
	Inbound
)

// TCP states, coarse on purpose: enough to pick an idle timeout.
const (
	TCPNone uint8 = iota
	TCPSynSent
	TCPEstablished
	TCPClosing // a FIN was seen
	TCPClosed  // an RST was seen or both FINs
)

// Direction indexes per-direction counters.
const (
	DirOrig  = 0 // host → wire
	DirReply = 1 // wire → host
)

// Flow is one tracked connection and the decision the datapath made for it.
type Flow struct {
	Orig  Key // as the host sends it
	Reply Key // as it arrives from the wire (after NAT, when NATed)

	Origin Origin
	// HostIf is the interface the host sent the first frame on (outbound) or the flow arrived on
	// (inbound); WireIf the one its frames leave through. They are indexes into the shim's list.
	HostIf, WireIf int16
	// Gateway is the index of the gateway the flow is placed on, or -1 when the flow is left to
	// the host's routing.
	Gateway int16
	// NAT is true when the flow's source address (and maybe port) is rewritten on the wire.
	NAT bool
	// HostGatewayMAC is the MAC the host addressed its first frame to, put back as the source
	// of injected replies so the host's view of its neighbour never changes.
	HostGatewayMAC [6]byte

	TCPState uint8
	finSeen  [2]bool
	Replied  bool
	// SynCount counts connection requests seen for this flow (for SYN-retry rotation later).
	SynCount uint8

	Created, LastSeen int64 // monotonic nanoseconds
	Packets, Bytes    [2]uint64

	live bool
}

// Timeouts are the idle timeouts by state.
type Timeouts struct {
	TCPSynSent, TCPEstablished, TCPClosing, TCPClosed time.Duration
	UDPUnreplied, UDPReplied                          time.Duration
	ICMP, Other                                       time.Duration
}

// DefaultTimeouts returns timeouts close to the kernel's nf_conntrack defaults, except that an
// established TCP flow idles out after two hours rather than five days so a bounded table does
// not fill with flows whose ends vanished.
func DefaultTimeouts() Timeouts {
	return Timeouts{
		TCPSynSent:     60 * time.Second,
		TCPEstablished: 2 * time.Hour,
		TCPClosing:     120 * time.Second,
		TCPClosed:      10 * time.Second,
		UDPUnreplied:   30 * time.Second,
		UDPReplied:     180 * time.Second,
		ICMP:           30 * time.Second,
		Other:          600 * time.Second,
	}
}

// ErrFull is returned by Insert when the table holds its maximum number of flows.
var ErrFull = errors.New("conntrack: table full")

// ErrExists is returned by Insert when either key is already in use.
var ErrExists = errors.New("conntrack: tuple in use")

const chunkSize = 4096

// Table is a bounded flow table.
type Table struct {
	max      int
	timeouts Timeouts
	orig     map[Key]int32
	reply    map[Key]int32
	chunks   [][]Flow
	free     []int32
	n        int
	cursor   int
}

// New returns a table that holds at most max flows.
func New(max int, timeouts Timeouts) *Table {
	if max <= 0 {
		max = 1
	}
	return &Table{
		max:      max,
		timeouts: timeouts,
		orig:     make(map[Key]int32, min(max, 65536)),
		reply:    make(map[Key]int32, min(max, 65536)),
	}
}

// Len returns the number of live flows.
func (t *Table) Len() int { return t.n }

func (t *Table) at(i int32) *Flow { return &t.chunks[i/chunkSize][i%chunkSize] }

// LookupOrig finds a flow by its key as the host sends it.
func (t *Table) LookupOrig(k Key) *Flow {
	if i, ok := t.orig[k]; ok {
		return t.at(i)
	}
	return nil
}

// LookupReply finds a flow by its key as the wire returns it.
func (t *Table) LookupReply(k Key) *Flow {
	if i, ok := t.reply[k]; ok {
		return t.at(i)
	}
	return nil
}

// ReplyInUse reports whether some flow already owns k as its wire-side key, which a NAT
// mapping must not reuse.
func (t *Table) ReplyInUse(k Key) bool {
	_, ok := t.reply[k]
	return ok
}

// Insert adds f and returns a pointer to the stored copy.
func (t *Table) Insert(f Flow) (*Flow, error) {
	if _, ok := t.orig[f.Orig]; ok {
		return nil, ErrExists
	}
	if _, ok := t.reply[f.Reply]; ok {
		return nil, ErrExists
	}
	if t.n >= t.max {
		return nil, ErrFull
	}
	var i int32
	if n := len(t.free); n > 0 {
		i = t.free[n-1]
		t.free = t.free[:n-1]
	} else {
		i = int32(len(t.chunks) * chunkSize)
		t.chunks = append(t.chunks, make([]Flow, chunkSize))
		for j := int32(chunkSize - 1); j > 0; j-- {
			t.free = append(t.free, i+j)
		}
	}
	p := t.at(i)
	*p = f
	p.live = true
	t.orig[f.Orig] = i
	t.reply[f.Reply] = i
	t.n++
	return p, nil
}

// Delete removes the flow stored at p.
func (t *Table) Delete(p *Flow) {
	i, ok := t.orig[p.Orig]
	if !ok || t.at(i) != p {
		return
	}
	delete(t.orig, p.Orig)
	delete(t.reply, p.Reply)
	*p = Flow{}
	t.free = append(t.free, i)
	t.n--
}

// Seen updates a flow's counters, TCP state and idle clock for one frame.
func (t *Table) Seen(f *Flow, dir int, bytes int, tcpFlags uint8, now int64) {
	f.LastSeen = now
	f.Packets[dir]++
	f.Bytes[dir] += uint64(bytes)
	if dir == DirReply {
		f.Replied = true
	}
	if f.Orig.Proto != 6 {
		return
	}
	const fin, syn, rst, ack = 0x01, 0x02, 0x04, 0x10
	switch {
	case tcpFlags&rst != 0:
		f.TCPState = TCPClosed
	case tcpFlags&fin != 0:
		f.finSeen[dir] = true
		if f.finSeen[0] && f.finSeen[1] {
			f.TCPState = TCPClosed
		} else {
			f.TCPState = TCPClosing
		}
	case tcpFlags&syn != 0 && tcpFlags&ack == 0:
		if dir == DirOrig && f.Origin == Outbound || dir == DirReply && f.Origin == Inbound {
			if f.SynCount < 255 {
				f.SynCount++
			}
		}
		if f.TCPState == TCPNone {
			f.TCPState = TCPSynSent
		}
	default:
		if f.TCPState == TCPNone || f.TCPState == TCPSynSent && f.Replied {
			f.TCPState = TCPEstablished
		}
	}
}

// timeout returns how long f may stay idle.
func (t *Table) timeout(f *Flow) time.Duration {
	switch f.Orig.Proto {
	case 6:
		switch f.TCPState {
		case TCPSynSent:
			return t.timeouts.TCPSynSent
		case TCPClosing:
			return t.timeouts.TCPClosing
		case TCPClosed:
			return t.timeouts.TCPClosed
		default:
			return t.timeouts.TCPEstablished
		}
	case 17:
		if f.Replied {
			return t.timeouts.UDPReplied
		}
		return t.timeouts.UDPUnreplied
	case 1:
		return t.timeouts.ICMP
	}
	return t.timeouts.Other
}

// Expire looks at up to budget slots from where the last call stopped and deletes the flows
// that have been idle longer than their timeout. Calling it often with a small budget spreads
// the work so no frame ever waits behind a full sweep. It returns how many flows it removed.
func (t *Table) Expire(now int64, budget int) int {
	total := len(t.chunks) * chunkSize
	if total == 0 {
		return 0
	}
	removed := 0
	for ; budget > 0; budget-- {
		if t.cursor >= total {
			t.cursor = 0
		}
		f := t.at(int32(t.cursor))
		t.cursor++
		if f.live && now-f.LastSeen > int64(t.timeout(f)) {
			t.Delete(f)
			removed++
		}
	}
	return removed
}

// Range calls fn for every live flow until fn returns false.
func (t *Table) Range(fn func(*Flow) bool) {
	for _, c := range t.chunks {
		for i := range c {
			if c[i].live && !fn(&c[i]) {
				return
			}
		}
	}
}
