package datapath

import "github.com/l2shim/l2shim/conntrack"

// Flows the wire opens are bounded, so that nobody outside can fill the table: anyone can send
// a SYN, a datagram or an echo request from any address, and each opens a flow. The bounds are
// shares of the table: all flows the wire opened together, those to one local port (a server's,
// the only ports where the host answers and a spoofed flow lives on), and those from one
// remote network (an IPv4 /24, an IPv6 /48). A flow over a bound is not tracked: its frame
// reaches the host as it came, and the host's answers leave without a flow either, through the
// gateway the frame came from (refused remembers the tuple and that gateway in a fixed array: a
// flood overwrites its own entries, nothing grows).
type inboundBudget struct {
	total, perPort, perPrefix int // the bounds
	n                         int
	byPort                    map[uint16]int
	byPrefix                  map[[16]byte]int // by remotePrefix
	refused                   *[refusedSlots]refusedFlow
}

// refusedFlow is a flow not admitted: the hash of its Orig key (| 1, so 0 is empty) and the
// gateway its answers take (-1: the host's routing).
type refusedFlow struct {
	hash    uint64
	gateway int16
}

const refusedSlots = 1 << 14

func newInboundBudget(maxFlows int) inboundBudget {
	return inboundBudget{
		total:     maxFlows / 2,
		perPort:   max(maxFlows/8, 256),
		perPrefix: max(maxFlows/64, 256),
		byPort:    make(map[uint16]int),
		byPrefix:  make(map[[16]byte]int),
		refused:   new([refusedSlots]refusedFlow),
	}
}

// refuse remembers a flow not admitted, by the hash of its Orig key, with the gateway its
// answers take.
func (b *inboundBudget) refuse(h uint64, gateway int16) {
	b.refused[h%refusedSlots] = refusedFlow{hash: h | 1, gateway: gateway}
}

// refusedAnswer reports whether the host's frame with Orig key hash h answers a flow not
// admitted, and the gateway it takes.
func (b *inboundBudget) refusedAnswer(h uint64) (gateway int16, ok bool) {
	r := b.refused[h%refusedSlots]
	return r.gateway, r.hash == h|1
}

// remotePrefix is the network of a flow's remote end that shares one budget, as a flow key
// holds an address with the rest zeroed: an IPv4 address's /24, an IPv6 address's /48 (a
// site's allocation, RFC 6177: one sender may hold every address in it).
func remotePrefix(fl *conntrack.Flow) [16]byte {
	d := fl.Orig.Dst
	if conntrack.Is4(d) {
		d[15] = 0
		return d
	}
	clear(d[6:])
	return d
}

// admit reports whether one more flow the wire opens, with Orig key orig, fits the bounds.
func (b *inboundBudget) admit(fl *conntrack.Flow) bool {
	return b.n < b.total && b.byPort[fl.Orig.SrcPort] < b.perPort && b.byPrefix[remotePrefix(fl)] < b.perPrefix
}

// add counts a flow the wire opened, remove uncounts it.
func (b *inboundBudget) add(fl *conntrack.Flow) {
	b.n++
	b.byPort[fl.Orig.SrcPort]++
	b.byPrefix[remotePrefix(fl)]++
}

func (b *inboundBudget) remove(fl *conntrack.Flow) {
	b.n--
	decr(b.byPort, fl.Orig.SrcPort)
	decr(b.byPrefix, remotePrefix(fl))
}

func decr[K comparable](m map[K]int, k K) {
	if n := m[k] - 1; n > 0 {
		m[k] = n
	} else {
		delete(m, k)
	}
}
