package filters

import (
	"encoding/binary"
	"fmt"
	"math/bits"

	"github.com/l2shim/l2shim/conf"
)

// Direction says which way a frame travels through the shim; rules may be limited to one way
// because the same 5-tuple means different things leaving the host and arriving from the wire.
type Direction uint8

// The directions a packet can have. The zero value is deliberately not a direction, so that a
// Packet whose Dir was never set matches only rules that accept both directions.
const (
	Out Direction = 1 // host → wire
	In  Direction = 2 // wire → host
)

// String returns the name the configuration uses for the direction, so that logs read like the
// file.
func (d Direction) String() string {
	switch d {
	case Out:
		return conf.DirectionOut
	case In:
		return conf.DirectionIn
	}
	return fmt.Sprintf("Direction(%d)", uint8(d))
}

// Action is what the datapath does with a flow a rule matched.
type Action uint8

// The actions of a rule. The zero value is not an action, so a zero Verdict cannot be mistaken
// for a real one.
const (
	Pass    Action = 1 // leave the flow to the host's routing
	Drop    Action = 2 // drop the flow's frames
	RouteTo Action = 3 // send the flow through Verdict.Gateway
	Balance Action = 4 // place the flow as if no rule matched, with Verdict.Affinity
)

// String returns the name the configuration uses for the action, so that logs and status read
// like the file.
func (a Action) String() string {
	switch a {
	case Pass:
		return conf.ActionPass
	case Drop:
		return conf.ActionDrop
	case RouteTo:
		return conf.ActionRouteTo
	case Balance:
		return conf.ActionBalance
	}
	return fmt.Sprintf("Action(%d)", uint8(a))
}

// Affinity says what the mode's choice hashes when it places a flow: the flow's own 5-tuple,
// or only its two addresses, so that every flow between one local and one remote address
// lands on the same uplink.
type Affinity uint8

// The affinities. The zero value is per flow, l2shim's behaviour without the key.
const (
	AffinityFlow     Affinity = iota // each flow by its 5-tuple
	AffinityHostPair                 // every flow between two addresses together
)

// String returns the name the configuration uses for the affinity.
func (a Affinity) String() string {
	if a == AffinityHostPair {
		return string(conf.AffinityHostPair)
	}
	return string(conf.AffinityFlow)
}

// affinityOf maps a configured affinity to its value; "" (a rule without the key, a Config
// built by hand) is def.
func affinityOf(a conf.Affinity, def Affinity) Affinity {
	switch a {
	case conf.AffinityHostPair:
		return AffinityHostPair
	case conf.AffinityFlow:
		return AffinityFlow
	}
	return def
}

// Packet is what a rule looks at: the first frame of a new flow. It is a plain value the
// datapath fills from its parsed frame, so that this package needs no knowledge of frame layout.
//
// IPv6 says the family: an IPv6 packet's addresses are Src6 and Dst6 (Src and Dst are then
// ignored), an IPv4 packet's Src and Dst. A rule whose src or dst is an IPv4 prefix matches
// IPv4 packets only, one whose src or dst is an IPv6 prefix IPv6 packets only, and one without
// either matches both families.
//
// The IPv6 addresses come last, so that what an IPv4 match reads stays in the first 24 bytes
// as before they were added.
type Packet struct {
	Iface            int       // index of the external interface in the list given to Compile
	Dir              Direction // Out or In
	IPv6             bool      // the family: Src6 and Dst6 hold the addresses
	Proto            uint8     // IP protocol (IPv6: the upper-layer one): 6 TCP, 17 UDP, 1 ICMP, 58 ICMPv6, or any other
	SrcPort, DstPort uint16    // 0 for protocols other than TCP and UDP
	Src, Dst         [4]byte   // IPv4 addresses, network byte order
	Src6, Dst6       [16]byte  // IPv6 addresses, network byte order
}

// Verdict is the outcome of a match; the datapath stores it in the flow so that every later
// frame of the flow follows the same decision without matching again.
type Verdict struct {
	Rule    int    // index of the matching rule in conf.Config.Rules, for the counters and logs
	Action  Action // what to do with the flow
	Gateway int    // RouteTo: index into conf.Config.Gateways; -1 for other actions
	Strict  bool   // RouteTo: drop the flow rather than fail over when the gateway is down
	// Affinity is what the mode's choice hashes for the flows this rule leaves to it (a
	// balance rule's, a route-to's whose gateway is unusable): the rule's own, else the
	// configuration's [shim] affinity.
	Affinity Affinity
}

// Set is a compiled, immutable rule set plus its counters. Match and the counters are safe for
// concurrent use; a configuration reload compiles a new Set rather than changing this one, so
// that frames in flight never see half a rule set.
//
// A nil *Set behaves as a set without rules, so that a datapath without rules needs no special
// case.
type Set struct {
	rules    []conf.Rule // copies, for Stats
	gwNames  []string    // per rule: the resolved gateway's name, "" unless route-to
	verdicts []Verdict   // per rule
	counters []counter   // per rule
	specs    []spec      // per rule, for Explain
	affinity Affinity    // [shim] affinity: flows no rule places

	// The classifier. Each rule is one bit (rule i is bit i%64 of word i/64); every dimension
	// maps a packet's value to the set of rules that accept it, and the rules matching a packet
	// are the AND of its dimensions' sets.
	words int      // bitset length in 64-bit words
	nIf   int      // len(ifaces): interface indices outside [0, nIf) use class nIf
	meta  []bitset // IPv4: interface × direction × protocol class → rules, see metaIndex
	src   dim      // IPv4 source address
	dst   dim      // IPv4 destination address
	sport dim      // source port
	dport dim      // destination port

	// The family is a dimension too, folded into the meta sets: meta holds only the rules an
	// IPv4 packet can match (IPv4 prefixes or none), meta6 only those an IPv6 packet can
	// (IPv6 prefixes or none). So the IPv4 lookup is the one it always was, and in each
	// family's address dimensions a rule of the other family is simply "any address".
	meta6 []bitset // IPv6: as meta, with protoClass6
	src6  dim6     // IPv6 source address
	dst6  dim6     // IPv6 destination address

	// linear is set for small rule sets: the meta set alone already narrows the candidates
	// to a few rules, and checking their addresses and ports directly is faster than four
	// binary searches (see linearMax).
	linear  bool
	lrules  []linRule  // per rule, for the linear path
	lrules6 []linRule6 // per rule, for the linear path of IPv6 packets
}

// bitset is a set of rule indices; all bitsets of a Set have the same length, Set.words.
type bitset []uint64

// linRule is a rule's address and port bounds in the form the linear path compares them.
type linRule struct {
	srcLo, srcHi uint32
	dstLo, dstHi uint32
	spLo, spHi   uint16
	dpLo, dpHi   uint16
}

// linRule6 is a rule's IPv6 prefixes as network and mask, two 64-bit halves each: on the
// linear path a prefix test is then two ANDs and two compares. A rule without an IPv6 prefix
// (none, or an IPv4 one, which meta6 already excludes) has a zero mask and matches any address.
type linRule6 struct {
	srcNet, srcMask u128
	dstNet, dstMask u128
}

// linearMax is the largest rule count matched by the linear path. The path works up to 64
// rules (one word of meta set), but BenchmarkMatchPaths puts the crossover near a dozen: with
// 12 rules it is ahead on a mix of packets (14 ns against 16) and behind by 3 ns on the worst
// case, while by 16 it loses the worst case by 6 ns and at 24 everywhere.
const linearMax = 12

// Protocol classes of the meta dimension: rules only distinguish these four.
const (
	classOther = iota
	classICMP
	classTCP
	classUDP
	numClasses
)

// protoClass maps an IPv4 protocol number to its class without a branch on the hot path.
var protoClass = func() (t [256]uint8) {
	t[1] = classICMP
	t[6] = classTCP
	t[17] = classUDP
	return t
}()

// protoClass6 is protoClass for IPv6: protocol = "icmp" means ICMPv6 (58) there, as ICMP
// proper (1) does not ride on IPv6; so one family-less "icmp" rule covers both families' pings.
var protoClass6 = func() (t [256]uint8) {
	t[58] = classICMP
	t[6] = classTCP
	t[17] = classUDP
	return t
}()

// numDirs counts the direction classes of the meta dimension: 0 (neither Out nor In), Out, In.
const numDirs = 3

// Len returns the number of rules, so that callers can skip matching altogether when there are
// none.
func (s *Set) Len() int {
	if s == nil {
		return 0
	}
	return len(s.verdicts)
}

// Affinity returns the affinity of a flow rule placed (a Verdict.Rule), or, for -1 or an
// index that is not a rule of this Set, the configuration's [shim] affinity. A nil Set's is
// AffinityFlow.
func (s *Set) Affinity(rule int) Affinity {
	if s == nil {
		return AffinityFlow
	}
	if uint(rule) < uint(len(s.verdicts)) {
		return s.verdicts[rule].Affinity
	}
	return s.affinity
}

// FailsClosed reports whether rule forbids its flows to leave any way but its own: a drop, or
// a strict route-to. When such a flow cannot be tracked (the flow table is full), its frames
// must be dropped rather than left to the host's routing.
func (s *Set) FailsClosed(rule int) bool {
	if rule < 0 || rule >= s.Len() {
		return false
	}
	v := s.verdicts[rule]
	return v.Action == Drop || v.Action == RouteTo && v.Strict
}

// Compile builds a matcher from cfg.Rules. ifaces lists the external interface names in the
// order the datapath indexes them in Packet.Iface: a rule whose interface is "" matches any
// interface, and a rule naming an interface not in the list never matches (the interface may
// appear later, and a reload will compile a new Set then).
//
// conf validates rules already; Compile re-checks what would make a rule meaningless (an
// unknown action, protocol or direction, an IPv4 src with an IPv6 dst or the reverse, ports on
// a protocol without ports, a route-to gateway that does not resolve), because a Config may
// also be built by hand, and returns an error naming the rule. A nil cfg compiles to a Set
// without rules.
func Compile(cfg *conf.Config, ifaces []string) (*Set, error) {
	return compile(cfg, ifaces, linearMax)
}

// compile is Compile with the linear-path threshold as a parameter, so that tests can drive
// both paths over the same rule sets.
func compile(cfg *conf.Config, ifaces []string, linMax int) (*Set, error) {
	var rules []conf.Rule
	def := AffinityFlow
	if cfg != nil {
		rules = cfg.Rules
		def = affinityOf(cfg.Shim.Affinity, AffinityFlow)
	}
	n := len(rules)
	s := &Set{
		affinity: def,
		rules:    append([]conf.Rule(nil), rules...),
		gwNames:  make([]string, n),
		verdicts: make([]Verdict, n),
		counters: make([]counter, n),
		words:    (n + 63) / 64,
		nIf:      len(ifaces),
		linear:   n <= linMax && n <= 64,
	}
	specs := make([]spec, n)
	for i := range rules {
		sp, v, gw, err := compileRule(cfg, &rules[i], ifaces)
		if err != nil {
			if rules[i].Line > 0 {
				return nil, fmt.Errorf("%s:%d: rule %q: %w", cfg.File, rules[i].Line, rules[i].Name, err)
			}
			return nil, fmt.Errorf("rule %q (number %d): %w", rules[i].Name, i+1, err)
		}
		v.Rule = i
		v.Affinity = affinityOf(rules[i].Affinity, def)
		specs[i], s.verdicts[i], s.gwNames[i] = sp, v, gw
	}
	s.specs = specs
	if n == 0 {
		return s, nil
	}

	pool := newPool(s.words)
	s.meta = make([]bitset, (s.nIf+1)*numDirs*numClasses)
	s.meta6 = make([]bitset, len(s.meta))
	for ic := 0; ic <= s.nIf; ic++ {
		for dc := 0; dc < numDirs; dc++ {
			for pc := 0; pc < numClasses; pc++ {
				b := make(bitset, s.words)
				b6 := make(bitset, s.words)
				for i := range specs {
					if specs[i].acceptsMeta(ic, s.nIf, Direction(dc), pc) {
						if specs[i].fam != fam6 {
							b.set(i)
						}
						if specs[i].fam != fam4 {
							b6.set(i)
						}
					}
				}
				s.meta[(ic*numDirs+dc)*numClasses+pc] = pool.intern(b)
				s.meta6[(ic*numDirs+dc)*numClasses+pc] = pool.intern(b6)
			}
		}
	}
	if s.linear {
		s.lrules = make([]linRule, n)
		s.lrules6 = make([]linRule6, n)
		for i, sp := range specs {
			s.lrules[i] = linRule{
				srcLo: sp.src.lo, srcHi: sp.src.hi,
				dstLo: sp.dst.lo, dstHi: sp.dst.hi,
				spLo: uint16(sp.sport.lo), spHi: uint16(sp.sport.hi),
				dpLo: uint16(sp.dport.lo), dpHi: uint16(sp.dport.hi),
			}
			s.lrules6[i] = linRule6{
				srcNet: sp.src6.lo, srcMask: sp.src6.mask(),
				dstNet: sp.dst6.lo, dstMask: sp.dst6.mask(),
			}
		}
		return s, nil
	}
	s.src = buildDim(specs, func(sp *spec) span { return sp.src }, anyAddr.hi, pool)
	s.dst = buildDim(specs, func(sp *spec) span { return sp.dst }, anyAddr.hi, pool)
	s.sport = buildDim(specs, func(sp *spec) span { return sp.sport }, anyPort.hi, pool)
	s.dport = buildDim(specs, func(sp *spec) span { return sp.dport }, anyPort.hi, pool)
	s.src6 = buildDim6(specs, func(sp *spec) span6 { return sp.src6 }, pool)
	s.dst6 = buildDim6(specs, func(sp *spec) span6 { return sp.dst6 }, pool)
	return s, nil
}

// Match returns the first rule, in configuration order, that matches p, and false when none
// does. It allocates nothing, and its cost grows with the number of rules only through four
// binary searches (logarithmic) and one five-way AND of 64-bit words per 64 rules, which stops
// at the first word holding a match; so it can run for every new flow however long the rule
// list is.
//
// An IPv6 packet takes its own path (match6), so the IPv4 one pays a single predictable branch
// for the second family.
func (s *Set) Match(p *Packet) (Verdict, bool) {
	if s == nil || len(s.verdicts) == 0 {
		return Verdict{}, false
	}
	if p.IPv6 {
		return s.match6(p)
	}
	m := s.meta[s.metaIndex(p, &protoClass)]
	src, dst := be32(p.Src), be32(p.Dst)
	if s.linear {
		w := m[0]
		for w != 0 {
			i := bits.TrailingZeros64(w)
			w &= w - 1
			r := &s.lrules[i]
			if src-r.srcLo <= r.srcHi-r.srcLo && dst-r.dstLo <= r.dstHi-r.dstLo &&
				p.SrcPort-r.spLo <= r.spHi-r.spLo && p.DstPort-r.dpLo <= r.dpHi-r.dpLo {
				return s.verdicts[i], true
			}
		}
		return Verdict{}, false
	}
	return s.first(m, s.src.lookup(src), s.dst.lookup(dst), p)
}

// first returns the verdict of the first rule whose bit is set in the meta bitmap m, the
// address bitmaps a and b and the port dimensions' bitmaps for p: the decision-tree path of
// match4 and match6.
func (s *Set) first(m, a, b []uint64, p *Packet) (Verdict, bool) {
	c := s.sport.lookup(uint32(p.SrcPort))
	d := s.dport.lookup(uint32(p.DstPort))
	// Equal lengths let the compiler drop the bounds checks in the loop.
	a, b, c, d = a[:len(m)], b[:len(m)], c[:len(m)], d[:len(m)]
	for w := range m {
		if x := m[w] & a[w] & b[w] & c[w] & d[w]; x != 0 {
			return s.verdicts[w*64+bits.TrailingZeros64(x)], true
		}
	}
	return Verdict{}, false
}

// match6 is Match for an IPv6 packet: the same two paths, over meta6 and the IPv6 address
// dimensions.
//
// The IPv6 address dimensions are the IPv4 ones widened to 128-bit values (two uint64): the
// same elementary intervals and binary search, so that a long list of IPv6 prefixes (block
// lists, per-customer pins) costs a lookup logarithmic in its length, as IPv4 prefixes do,
// rather than a scan of every IPv6 rule. The price is a second pair of dimensions built at
// compile time; with no IPv6 prefix in the rules each is a single interval.
func (s *Set) match6(p *Packet) (Verdict, bool) {
	m := s.meta6[s.metaIndex(p, &protoClass6)]
	src, dst := be128(p.Src6), be128(p.Dst6)
	if s.linear {
		w := m[0]
		for w != 0 {
			i := bits.TrailingZeros64(w)
			w &= w - 1
			r, r6 := &s.lrules[i], &s.lrules6[i]
			if src.hi&r6.srcMask.hi == r6.srcNet.hi && src.lo&r6.srcMask.lo == r6.srcNet.lo &&
				dst.hi&r6.dstMask.hi == r6.dstNet.hi && dst.lo&r6.dstMask.lo == r6.dstNet.lo &&
				p.SrcPort-r.spLo <= r.spHi-r.spLo && p.DstPort-r.dpLo <= r.dpHi-r.dpLo {
				return s.verdicts[i], true
			}
		}
		return Verdict{}, false
	}
	return s.first(m, s.src6.lookup(src), s.dst6.lookup(dst), p)
}

// metaIndex folds the three small dimensions into one table index, so that they cost one
// lookup and one AND together instead of three; classes is the family's protocol classes.
func (s *Set) metaIndex(p *Packet, classes *[256]uint8) int {
	ic := p.Iface
	if uint(ic) >= uint(s.nIf) {
		ic = s.nIf
	}
	dc := int(p.Dir)
	if dc >= numDirs {
		dc = 0
	}
	return (ic*numDirs+dc)*numClasses + int(classes[p.Proto])
}

// be32 reads an address as a number, so that prefixes become numeric intervals.
func be32(a [4]byte) uint32 {
	return uint32(a[0])<<24 | uint32(a[1])<<16 | uint32(a[2])<<8 | uint32(a[3])
}

// be128 reads an IPv6 address as a 128-bit number.
func be128(a [16]byte) u128 {
	return u128{binary.BigEndian.Uint64(a[:8]), binary.BigEndian.Uint64(a[8:])}
}

func (b bitset) set(i int) { b[i/64] |= 1 << (i % 64) }
