package shim

import (
	"context"
	"fmt"
	"net/netip"
	"path/filepath"
	"sync"
	"time"

	"github.com/l2shim/l2shim/conntrack"
	"github.com/l2shim/l2shim/datapath"
	"github.com/l2shim/l2shim/fastpath"
	"github.com/l2shim/l2shim/rewrite"
	"golang.org/x/sys/unix"
)

// fastSync keeps the kernel's flow maps as the engine wants them and brings the kernel's
// counts back to the engine.
type fastSync struct {
	mu     sync.Mutex // one writer of the kernel's maps at a time
	ops    []datapath.FastOp
	reader fastpath.Reader
	cnts   []datapath.FastCount
	finals []datapath.FastFinal
	fails  uint64 // map updates the kernel refused (logged once)
	// readFails counts syncs that could not read a map (logged once).
	readFails uint64
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
	f.finals = f.finals[:0]
	var offset int64
	for _, op := range f.ops {
		dir := fastpath.Out
		if op.In {
			dir = fastpath.In
		}
		key := fastKey(op.Key)
		if op.Tally.Valid {
			// The entry goes or restarts its counts: what it counted since the last sync
			// is read first.
			if c, ok := s.maps.k.Counts(dir, key); ok && c.Packets > op.Tally.Packets {
				if offset == 0 {
					offset = s.kernelClockOffset()
				}
				f.finals = append(f.finals, datapath.FastFinal{Tally: op.Tally, In: op.In, Packets: c.Packets, Bytes: c.Bytes, LastSeen: c.LastSeen - offset})
			}
		}
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
	if len(f.finals) > 0 {
		s.engine.FastFinals(f.finals)
	}
}

// syncFast reads what the kernel counted for the flows it carries and hands it to the engine:
// every entry of both maps, a chunk per system call (fastpath.Kernel.Each), the out map first
// (a FIN from the wire is judged against the host's acknowledgment its out entry holds).
// The engine takes the counts a chunk at a time, so its lock is never held for long.
func (s *Shim) syncFast() {
	if s.opts.SlowPathOnly || s.maps == nil || s.maps.k == nil {
		return
	}
	f := &s.fast
	f.mu.Lock()
	defer f.mu.Unlock()
	offset := s.kernelClockOffset()
	for _, d := range []fastpath.Direction{fastpath.Out, fastpath.In} {
		f.cnts = f.cnts[:0]
		err := s.maps.k.Each(d, &f.reader, func(e fastpath.Installed) {
			if e.Counts.Packets == 0 || e.Entry.DivertOnly {
				return
			}
			orig := e.Key
			if d == fastpath.In {
				orig = origOf(e)
			}
			c := e.Counts
			f.cnts = append(f.cnts, datapath.FastCount{Orig: engineKey(orig), In: d == fastpath.In, Packets: c.Packets, Bytes: c.Bytes, LastSeen: c.LastSeen - offset, TCP: kernelTCP(c)})
			if len(f.cnts) >= syncChunk {
				s.engine.FastCounts(f.cnts)
				f.cnts = f.cnts[:0]
			}
		})
		s.engine.FastCounts(f.cnts)
		if err != nil {
			if f.readFails == 0 {
				s.log.Warn("fast path: cannot read the kernel's counts", "err", err)
			}
			f.readFails++
		}
	}
}

// syncChunk is how many counts the engine takes under one hold of its lock.
const syncChunk = 1024

// kernelClockOffset is what to subtract from the kernel's time stamps to get the engine's
// clock: the kernel stamps frames with CLOCK_MONOTONIC, the engine's clock started with the shim.
func (s *Shim) kernelClockOffset() int64 { return fastpath.Monotonic() - s.now() }

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

// TCP implements datapath.FastTracker from the flow's entries in the kernel. It runs with the
// engine locked: two map lookups, no waiting.
func (m *maps) TCP(orig, reply datapath.FastKey) (out, in datapath.KernelTCP) {
	if c, ok := m.k.Counts(fastpath.Out, fastKey(orig)); ok && c.Packets > 0 {
		out = kernelTCP(c)
	}
	if c, ok := m.k.Counts(fastpath.In, fastKey(reply)); ok && c.Packets > 0 {
		in = kernelTCP(c)
	}
	return out, in
}

func kernelTCP(c fastpath.Counts) datapath.KernelTCP {
	return datapath.KernelTCP{OK: true, FIN: c.FIN, SeqEnd: c.SeqEnd, Ack: c.Ack, Win: c.Win}
}

// fastKey and engineKey convert keys between the engine and the kernel's maps: both hold 16-byte
// addresses, IPv4-mapped for IPv4 (fastpath.Key as netip.Addr, IPv4 unmapped).
func fastKey(k datapath.FastKey) fastpath.Key {
	return fastpath.Key{Src: conntrack.Addr(k.Src), Dst: conntrack.Addr(k.Dst), SrcPort: k.SrcPort, DstPort: k.DstPort, Proto: k.Proto}
}

func fastEntry(e datapath.FastEntry) fastpath.Entry {
	var gateway netip.Addr // none
	if e.Gateway != ([16]byte{}) {
		gateway = conntrack.Addr(e.Gateway)
	}
	return fastpath.Entry{
		Ifindex:     e.Ifindex,
		DivertOnly:  e.DivertOnly,
		CarrySYNACK: e.CarrySYNACK,
		ToL3:        e.ToL3,
		NAT:         e.NAT,
		Addr:        conntrack.Addr(e.Addr),
		Port:        e.Port,
		MTU:         uint16(min(e.MTU, 65535)),
		SrcMAC:      e.SrcMAC,
		DstMAC:      e.DstMAC,
		Origin:      e.Origin,
		Why:         e.Why,
		Rule:        e.Rule,
		Gateway:     gateway,
	}
}

// adoptFast takes over the flows an earlier l2shim left in the pinned maps: the engine tracks
// them again, and entries that belong to no flow it can take are removed.
func (s *Shim) adoptFast() {
	outs, err := s.maps.k.Entries(fastpath.Out)
	if err != nil {
		s.log.Warn("adopt: cannot read the fast path's flows", "err", err)
		return
	}
	ins, err := s.maps.k.Entries(fastpath.In)
	if err != nil {
		s.log.Warn("adopt: cannot read the fast path's flows", "err", err)
		return
	}
	byOrig := make(map[fastpath.Key]fastpath.Installed, len(outs))
	for _, o := range outs {
		byOrig[o.Key] = o
	}
	var flows []datapath.AdoptedFlow
	for _, in := range ins {
		orig := origOf(in)
		out, ok := byOrig[orig]
		if !ok {
			_ = s.maps.k.Delete(fastpath.In, in.Key)
			continue
		}
		delete(byOrig, orig)
		flows = append(flows, datapath.AdoptedFlow{
			Orig:       engineKey(orig),
			Reply:      engineKey(in.Key),
			Out:        engineEntry(out.Entry),
			In:         engineEntry(in.Entry),
			Origin:     out.Entry.Origin,
			Why:        out.Entry.Why,
			Rule:       out.Entry.Rule,
			HostSeqEnd: out.Counts.SeqEnd,
			HostAck:    out.Counts.Ack,
			HostWin:    out.Counts.Win,
		})
	}
	for key := range byOrig {
		_ = s.maps.k.Delete(fastpath.Out, key)
	}
	n := s.engine.AdoptFast(flows, s.now())
	s.log.Info("adopted the flows an earlier l2shim left in the kernel", "flows", n, "not_adopted", len(ins)+len(outs)-2*n)
}

// origOf returns the host-side tuple of the flow an in entry belongs to.
func origOf(in fastpath.Installed) fastpath.Key {
	o := fastpath.Key{Src: in.Key.Dst, Dst: in.Key.Src, SrcPort: in.Key.DstPort, DstPort: in.Key.SrcPort, Proto: in.Key.Proto}
	if in.Entry.NAT {
		o.Src, o.SrcPort = in.Entry.Addr, in.Entry.Port
		if o.Proto == rewrite.ProtoICMP || o.Proto == rewrite.ProtoICMPv6 { // echo: both ports are the identifier
			o.DstPort = o.SrcPort
		}
	}
	return o
}

func engineKey(k fastpath.Key) datapath.FastKey {
	return datapath.FastKey{Src: k.Src.As16(), Dst: k.Dst.As16(), SrcPort: k.SrcPort, DstPort: k.DstPort, Proto: k.Proto}
}

func engineEntry(e fastpath.Entry) datapath.FastEntry {
	fe := datapath.FastEntry{Ifindex: e.Ifindex, ToL3: e.ToL3, NAT: e.NAT, Port: e.Port, MTU: int(e.MTU), SrcMAC: e.SrcMAC, DstMAC: e.DstMAC, Origin: e.Origin, Why: e.Why, Rule: e.Rule}
	if e.Gateway.IsValid() {
		fe.Gateway = e.Gateway.As16()
	}
	if e.NAT {
		fe.Addr = e.Addr.As16()
	}
	return fe
}

// onBPFFS reports why dir cannot hold pins, or nil: it must be on a bpffs (the pins of a
// directory elsewhere, or of a bpffs that goes away with a mount namespace, do not outlive
// the process).
func onBPFFS(dir string) error {
	p := dir
	for {
		var st unix.Statfs_t
		if err := unix.Statfs(p, &st); err == nil {
			if st.Type != unix.BPF_FS_MAGIC {
				return fmt.Errorf("%s is not on a bpffs (mount -t bpf bpf /sys/fs/bpf)", p)
			}
			return nil
		}
		parent := filepath.Dir(p)
		if parent == p {
			return fmt.Errorf("no bpffs above %s", dir)
		}
		p = parent
	}
}
