package datapath

import (
	"github.com/l2shim/l2shim/conntrack"
	"github.com/l2shim/l2shim/rewrite"
)

// Fragments: the first fragment carries the ports and finds the flow; the others are matched to
// it by source, destination, protocol and IP ID until the last one arrives or fragTimeout
// passes. Each direction has its own budget, so fragments from the wire, whoever sends them,
// can never crowd out the host's own datagrams; within the wire's budget one source address
// holds at most maxFragsPerSource datagrams. At 16,384 datagrams in flight per direction, a
// tunnel fragmenting 1 Gbit/s of 3 KB datagrams needs a few hundred entries, since each is
// removed when its last fragment passes.
const (
	fragTimeout       = int64(5e9)
	maxFragsPerDir    = 16384
	maxFragsPerSource = 256
)

// fragKey identifies the fragments of one datagram in one direction. Addresses are as flow
// keys hold them; id is 32 bits for IPv6's fragment header (IPv4's is 16).
type fragKey struct {
	src, dst [16]byte
	id       uint32
	proto    uint8
	dir      uint8
}

// fragKeyOf returns the key of the datagram fragment f belongs to, going in direction dir.
func fragKeyOf(f *rewrite.Frame, dir uint8) fragKey {
	if f.IPv6 {
		return fragKey{src: f.Src6, dst: f.Dst6, id: f.FragID, proto: f.Proto, dir: dir}
	}
	return fragKey{src: conntrack.Addr4(f.Src), dst: conntrack.Addr4(f.Dst), id: uint32(f.IPID), proto: f.Proto, dir: dir}
}

type fragEntry struct {
	flow    conntrack.Key // the flow's Orig key
	expires int64
}

// fragTable remembers the first fragments of datagrams in flight.
type fragTable struct {
	entries  map[fragKey]fragEntry
	perDir   [2]int
	perWireS map[[16]byte]int // wire-direction entries by source address
}

func newFragTable() fragTable {
	return fragTable{entries: make(map[fragKey]fragEntry), perWireS: make(map[[16]byte]int)}
}

func (t *fragTable) remove(k fragKey) {
	if _, ok := t.entries[k]; !ok {
		return
	}
	delete(t.entries, k)
	t.perDir[k.dir]--
	if k.dir == conntrack.DirReply {
		if n := t.perWireS[k.src] - 1; n > 0 {
			t.perWireS[k.src] = n
		} else {
			delete(t.perWireS, k.src)
		}
	}
}

// rememberFragment notes that the datagram of first fragment f belongs to the flow orig. A
// datagram over its direction's or its source's budget is not remembered (counted): its later
// fragments then leave as they are.
func (e *Engine) rememberFragment(f *rewrite.Frame, dir uint8, orig conntrack.Key, now int64) {
	t := &e.frags
	k := fragKeyOf(f, dir)
	if _, ok := t.entries[k]; !ok {
		if t.perDir[dir] >= maxFragsPerDir || dir == conntrack.DirReply && t.perWireS[k.src] >= maxFragsPerSource {
			e.c.Add(FragTableFull, 1)
			return
		}
		t.perDir[dir]++
		if dir == conntrack.DirReply {
			t.perWireS[k.src]++
		}
	}
	t.entries[k] = fragEntry{flow: orig, expires: now + fragTimeout}
}

// fragmentFlow returns the flow of a non-first fragment, or nil when its first fragment was
// not seen (it is then left as it is). The last fragment ends the datagram's entry.
func (e *Engine) fragmentFlow(f *rewrite.Frame, dir uint8, now int64) *conntrack.Flow {
	k := fragKeyOf(f, dir)
	ent, ok := e.frags.entries[k]
	if !ok || now > ent.expires {
		return nil
	}
	if !f.MoreFrags {
		e.frags.remove(k)
	}
	fl := e.table.LookupOrig(ent.flow)
	if fl != nil {
		e.table.Seen(fl, int(dir), len(f.Buf), 0, now)
	}
	return fl
}

// expireFragments forgets fragment entries past their time.
func (e *Engine) expireFragments(now int64) {
	for k, ent := range e.frags.entries {
		if now > ent.expires {
			e.frags.remove(k)
		}
	}
}
