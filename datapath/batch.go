package datapath

import "github.com/l2shim/l2shim/rewrite"

// Where says where a processed frame goes.
type Where uint8

// The destinations of a frame.
const (
	// Drop discards the frame (counted by reason).
	Drop Where = iota
	// ToWire sends the frame out of external interface Output.Iface.
	ToWire
	// ToHost injects the frame into the host as if it arrived on Output.Iface.
	ToHost
	// Consumed means the shim itself was the frame's destination (a probe reply).
	Consumed
)

// Output is one frame the engine is done with: where it goes and its bytes (virtio-net header
// included).
type Output struct {
	To    Where
	Iface int
	// Reason says why a frame was dropped, or, with To == ToHost and DropTooBig, that the
	// host's frame was replaced by an ICMP fragmentation-needed answer.
	Reason DropReason
	Frame  []byte
}

// Frame sizes the engine works with.
const (
	// MaxFrame is the largest frame a batch buffer holds: a 64 KiB GSO super-frame plus its
	// Ethernet header and the virtio-net header in front.
	MaxFrame = rewrite.VnetHdrLen + rewrite.EthHdrLen + 65535 + 64
	// segmentRoom is the arena space a batch sets aside per frame for the segments of a
	// tunnel's super-frame: its payload once more plus a copy of the headers (outer and inner,
	// up to ~200 bytes with options) for each of up to ~90 segments of 1 KiB or more. A batch
	// of such frames never runs out; a super-frame cut into many more, smaller segments may
	// use the room of several frames.
	segmentRoom = 64<<10 + 64<<10/4
	// answerRoom is what one answer the engine writes instead of a frame needs at most
	// (an ICMP fragmentation-needed quoting 576 bytes, an ICMPv6 Packet Too Big of up to
	// 1280 bytes, or an RST).
	answerRoom = rewrite.VnetHdrLen + max(rewrite.EthHdrLen+576, rewrite.PacketTooBigMaxLen)
	// maxSegments bounds the segments of one super-frame (gso_size of 64 bytes or more).
	maxSegments = 1024
)

// Batch carries one read's worth of frames through the engine. The frame loop fills it with
// Add, ProcessBatch fills Out, the loop sends Out, then Resets it. Frames are rewritten in
// place; segments of tunnels' super-frames and answers the engine writes live in the batch's
// arena until Reset.
type Batch struct {
	in    [][]byte
	Out   []Output
	arena []byte
	used  int
	lens  []int
}

// NewBatch returns a batch for up to size frames.
func NewBatch(size int) *Batch {
	return &Batch{
		in:    make([][]byte, 0, size),
		Out:   make([]Output, 0, 4*size),
		arena: make([]byte, size*(segmentRoom+answerRoom)),
		lens:  make([]int, maxSegments),
	}
}

// Add queues a captured frame (virtio-net header, then the Ethernet frame). The batch keeps
// b until Reset.
func (b *Batch) Add(frame []byte) { b.in = append(b.in, frame) }

// Len returns how many frames were added since the last Reset.
func (b *Batch) Len() int { return len(b.in) }

// Reset empties the batch for the next read.
func (b *Batch) Reset() {
	b.in = b.in[:0]
	b.Out = b.Out[:0]
	b.used = 0
}

// room returns the free part of the arena.
func (b *Batch) room() []byte { return b.arena[b.used:] }

// ProcessBatch handles every frame of b, captured at external interface in, under one lock,
// and appends to b.Out where each goes. A tunnel's TSO super-frame, which the kernel will not
// send as it is, is cut into ordinary segments in the batch's arena, and each segment is
// processed like any frame.
func (e *Engine) ProcessBatch(in int, b *Batch, now int64) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.lastNow = now
	for _, pkt := range b.in {
		if !e.decode(pkt) {
			b.Out = append(b.Out, Output{To: Drop, Reason: DropMalformed})
			continue
		}
		if e.frame.Encap && e.frame.Vnet.IsGSO() {
			e.segment(in, b, now)
			continue
		}
		e.handle(in, pkt, b, now)
	}
}

// handle processes the frame just decoded from pkt and appends where it goes to b.Out: one
// output, or the fragments of a datagram without DF cut for a smaller path MTU.
func (e *Engine) handle(in int, pkt []byte, b *Batch, now int64) {
	out, fragMTU := e.process(in, pkt, b, now)
	if fragMTU > 0 {
		e.fragment(out, fragMTU, b)
		return
	}
	b.Out = append(b.Out, out)
}

// dropOut counts a frame dropped for why and says so in b.Out.
func (e *Engine) dropOut(b *Batch, why DropReason) {
	e.c.drop(why)
	b.Out = append(b.Out, Output{To: Drop, Reason: why})
}

// segment cuts the super-frame just decoded into the arena and processes each segment.
func (e *Engine) segment(in int, b *Batch, now int64) {
	start := b.used
	n := e.frame.SegmentEncap(b.room(), b.lens)
	if n == 0 {
		// Not a super-frame SegmentEncap understands (UFO, an inner routing header, an
		// unknown encapsulation), or, rarely, one cut into more segments than the batch's
		// arena or lens still hold.
		why := DropUnsegmentable
		if need := e.frame.SegmentEncapSize(); need > 0 && (need > len(b.room()) || e.frame.SegmentEncapCount() > len(b.lens)) {
			why = DropNoRoom
		}
		e.dropOut(b, why)
		return
	}
	e.c.Add(Segmented, 1)
	for _, l := range b.lens[:n] {
		b.used += l
	}
	off := start
	for j := 0; j < n; j++ {
		seg := b.arena[off : off+b.lens[j]]
		off += b.lens[j]
		if !e.decode(seg) {
			b.Out = append(b.Out, Output{To: Drop, Reason: DropMalformed})
			continue
		}
		e.handle(in, seg, b, now)
	}
}
