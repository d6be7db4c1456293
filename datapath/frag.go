package datapath

import (
	"github.com/l2shim/l2shim/conntrack"
	"github.com/l2shim/l2shim/rewrite"
)

// Fragments: the first fragment carries the ports and finds the flow; the others are matched to
// it by source, destination, protocol and IP ID for a short while.
const (
	fragTimeout = int64(5e9)
	maxFrags    = 4096
)

// fragKey identifies the fragments of one IPv4 datagram in one direction.
type fragKey struct {
	src, dst [4]byte
	id       uint16
	proto    uint8
	dir      uint8
}

type fragEntry struct {
	flow    conntrack.Key // the flow's Orig key
	expires int64
}

// rememberFragment notes that the datagram of first fragment f belongs to the flow orig.
func (e *Engine) rememberFragment(f *rewrite.Frame, dir uint8, orig conntrack.Key, now int64) {
	if e.frags == nil {
		e.frags = make(map[fragKey]fragEntry, maxFrags)
	}
	k := fragKey{src: f.Src, dst: f.Dst, id: f.IPID, proto: f.Proto, dir: dir}
	if _, ok := e.frags[k]; !ok && len(e.frags) >= maxFrags {
		e.c.Add(FragTableFull, 1)
		return
	}
	e.frags[k] = fragEntry{flow: orig, expires: now + fragTimeout}
}

// fragmentFlow returns the flow of a non-first fragment, or nil when its first fragment was
// not seen (it is then left as it is).
func (e *Engine) fragmentFlow(f *rewrite.Frame, dir uint8, now int64) *conntrack.Flow {
	ent, ok := e.frags[fragKey{src: f.Src, dst: f.Dst, id: f.IPID, proto: f.Proto, dir: dir}]
	if !ok || now > ent.expires {
		return nil
	}
	fl := e.table.LookupOrig(ent.flow)
	if fl != nil {
		e.table.Seen(fl, int(dir), len(f.Buf), 0, now)
	}
	return fl
}

// expireFragments forgets fragment entries past their time.
func (e *Engine) expireFragments(now int64) {
	for k, ent := range e.frags {
		if now > ent.expires {
			delete(e.frags, k)
		}
	}
}
