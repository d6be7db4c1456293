package shim

import (
	"context"
	"net/netip"
	"sync"
	"time"

	"github.com/l2shim/l2shim/datapath"
	"github.com/l2shim/l2shim/fastpath"
)

// fastSync keeps the kernel's flow maps as the engine wants them and brings the kernel's
// counts back to the engine.
type fastSync struct {
	mu    sync.Mutex // one writer of the kernel's maps at a time
	ops   []datapath.FastOp
	flows []datapath.FastFlow
	cnts  []datapath.FastCount
	fails uint64 // map updates the kernel refused (logged once)
}

// applyFast installs and removes the fast path's entries the engine asks for.
func (s *Shim) applyFast() {
	if s.opts.SlowPathOnly {
		return
	}
	f := &s.fast
	f.mu.Lock()
	defer f.mu.Unlock()
	f.ops = s.engine.FastChanges(f.ops[:0])
	for _, op := range f.ops {
		dir := fastpath.Out
		if op.In {
			dir = fastpath.In
		}
		key := fastKey(op.Key)
		var err error
		if op.Delete {
			err = s.maps.k.Delete(dir, key)
		} else {
			err = s.maps.k.Put(dir, key, fastEntry(op.Entry))
		}
		if err != nil {
			if f.fails == 0 {
				s.log.Warn("fast path: a flow stays in the slow path", "err", err)
			}
			f.fails++
		}
	}
}

// syncFast reads what the kernel counted for every flow it carries and hands it to the engine.
func (s *Shim) syncFast() {
	if s.opts.SlowPathOnly {
		return
	}
	f := &s.fast
	f.mu.Lock()
	defer f.mu.Unlock()
	f.flows = s.engine.FastFlows(f.flows[:0])
	f.cnts = f.cnts[:0]
	// The kernel stamps frames with CLOCK_MONOTONIC; the engine's clock started with the shim.
	offset := fastpath.Monotonic() - s.now()
	for _, fl := range f.flows {
		for _, in := range []bool{false, true} {
			dir, key := fastpath.Out, fl.Orig
			if in {
				dir, key = fastpath.In, fl.Reply
			}
			c, ok := s.maps.k.Counts(dir, fastKey(key))
			if !ok || c.Packets == 0 {
				continue
			}
			f.cnts = append(f.cnts, datapath.FastCount{Orig: fl.Orig, In: in, Packets: c.Packets, Bytes: c.Bytes, LastSeen: c.LastSeen - offset})
		}
	}
	s.engine.FastCounts(f.cnts)
}

// fastLoop applies pending changes every 100 ms (those the control plane caused) and syncs
// the counts every second.
func (s *Shim) fastLoop(ctx context.Context) {
	n := 0
	every(ctx, 100*time.Millisecond, func() {
		s.applyFast()
		if n++; n%10 == 0 {
			s.syncFast()
		}
	})
}

// HostTCP implements datapath.FastTracker from the flow's out entry in the kernel. It runs
// with the engine locked: a map lookup, no waiting.
func (m *maps) HostTCP(orig datapath.FastKey) (seqEnd, ack uint32, win uint16, ok bool) {
	c, ok := m.k.Counts(fastpath.Out, fastKey(orig))
	if !ok || c.Packets == 0 {
		return 0, 0, 0, false
	}
	return c.HostSeqEnd, c.HostAck, c.HostWin, true
}

func fastKey(k datapath.FastKey) fastpath.Key {
	return fastpath.Key{Src: netip.AddrFrom4(k.Src), Dst: netip.AddrFrom4(k.Dst), SrcPort: k.SrcPort, DstPort: k.DstPort, Proto: k.Proto}
}

func fastEntry(e datapath.FastEntry) fastpath.Entry {
	return fastpath.Entry{
		Ifindex: e.Ifindex,
		NAT:     e.NAT,
		Addr:    netip.AddrFrom4(e.Addr),
		Port:    e.Port,
		MTU:     uint16(min(e.MTU, 65535)),
		SrcMAC:  e.SrcMAC,
		DstMAC:  e.DstMAC,
	}
}
