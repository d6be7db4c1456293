package filters

import (
	"cmp"
	"encoding/binary"
	"fmt"
	"net/netip"
	"slices"

	"github.com/l2shim/l2shim/conf"
)

// span is an inclusive interval of one dimension's values; a key a rule leaves out is the
// dimension's whole range, so every rule has a span in every dimension.
type span struct{ lo, hi uint32 }

// u128 is an IPv6 address as a number, high and low 64 bits.
type u128 struct{ hi, lo uint64 }

// compare orders two 128-bit values as cmp.Compare does numbers.
func (a u128) compare(b u128) int {
	if c := cmp.Compare(a.hi, b.hi); c != 0 {
		return c
	}
	return cmp.Compare(a.lo, b.lo)
}

// next returns a+1 (wrapping at the top, which callers never reach).
func (a u128) next() u128 {
	if a.lo == ^uint64(0) {
		return u128{a.hi + 1, 0}
	}
	return u128{a.hi, a.lo + 1}
}

// span6 is span for IPv6 addresses.
type span6 struct{ lo, hi u128 }

// mask returns the netmask of a span that is a prefix (lo the network, hi its last address):
// the bits lo and hi share. The whole range's mask is zero.
func (s span6) mask() u128 { return u128{^(s.lo.hi ^ s.hi.hi), ^(s.lo.lo ^ s.hi.lo)} }

func (s span6) contains(v u128) bool { return s.lo.compare(v) <= 0 && v.compare(s.hi) <= 0 }

// Full ranges of the dimensions.
var (
	anyAddr  = span{0, 1<<32 - 1}
	anyAddr6 = span6{u128{}, u128{^uint64(0), ^uint64(0)}}
	anyPort  = span{0, 1<<16 - 1}
)

// The families a rule can be limited to by its prefixes.
const (
	famAny = iota // no src or dst: both families
	fam4          // an IPv4 src or dst
	fam6          // an IPv6 src or dst
)

// spec is a rule reduced to what the classifier needs: numeric spans and the small keys. A
// rule of one family has the whole range in the other family's address spans; meta and meta6
// keep it from the other family's packets.
type spec struct {
	anyIf      bool  // interface "" (any)
	ifs        []int // indices in Compile's ifaces the rule names; empty: never matches
	dir        Direction
	anyProto   bool
	proto      int    // protocol class, when !anyProto
	fam        int    // famAny, fam4 or fam6
	famKey     string // "src" or "dst": the first key with a prefix, for Explain
	src, dst   span
	src6, dst6 span6
	sport      span
	dport      span
}

// acceptsMeta reports whether the rule accepts a packet of interface class ic, direction d and
// protocol class pc; interface class nIf stands for every index outside the list.
func (sp *spec) acceptsMeta(ic, nIf int, d Direction, pc int) bool {
	if !sp.anyIf && (ic >= nIf || !slices.Contains(sp.ifs, ic)) {
		return false
	}
	if sp.dir != 0 && sp.dir != d {
		return false
	}
	return sp.anyProto || sp.proto == pc
}

// compileRule checks one rule and reduces it to its spec, its verdict (without the rule index)
// and the name of the gateway a route-to resolves to.
func compileRule(cfg *conf.Config, r *conf.Rule, ifaces []string) (spec, Verdict, string, error) {
	sp := spec{src: anyAddr, dst: anyAddr, src6: anyAddr6, dst6: anyAddr6, sport: anyPort, dport: anyPort}
	v := Verdict{Gateway: -1}

	if r.Interface == "" {
		sp.anyIf = true
	} else {
		for i, name := range ifaces {
			if name == r.Interface {
				sp.ifs = append(sp.ifs, i)
			}
		}
	}

	switch r.Direction {
	case "":
	case conf.DirectionOut:
		sp.dir = Out
	case conf.DirectionIn:
		sp.dir = In
	default:
		return sp, v, "", fmt.Errorf("direction %q is neither %q nor %q", r.Direction, conf.DirectionOut, conf.DirectionIn)
	}

	hasPorts := false
	switch r.Protocol {
	case "", "any":
		sp.anyProto = true
	case "icmp":
		sp.proto = classICMP
	case "tcp":
		sp.proto, hasPorts = classTCP, true
	case "udp":
		sp.proto, hasPorts = classUDP, true
	default:
		return sp, v, "", fmt.Errorf("protocol %q is not tcp, udp, icmp or any", r.Protocol)
	}

	for k, p := range []netip.Prefix{r.Src, r.Dst} {
		if !p.IsValid() {
			continue
		}
		f := fam4
		if p.Addr().Is6() {
			f = fam6
		}
		if sp.fam != famAny && sp.fam != f {
			return sp, v, "", fmt.Errorf("dst: %s and src %s are of different families: a flow has one, so the rule could never match", r.Dst, r.Src)
		}
		if sp.fam == famAny {
			sp.fam, sp.famKey = f, [...]string{"src", "dst"}[k]
		}
	}
	sp.src, sp.src6 = prefixSpans(r.Src)
	sp.dst, sp.dst6 = prefixSpans(r.Dst)
	var err error
	if sp.sport, err = portSpan(r.SrcPort, hasPorts, r.Protocol); err != nil {
		return sp, v, "", fmt.Errorf("src_port: %w", err)
	}
	if sp.dport, err = portSpan(r.DstPort, hasPorts, r.Protocol); err != nil {
		return sp, v, "", fmt.Errorf("dst_port: %w", err)
	}

	gwName := ""
	switch r.Action {
	case conf.ActionPass:
		v.Action = Pass
	case conf.ActionDrop:
		v.Action = Drop
	case conf.ActionBalance:
		v.Action = Balance
	case conf.ActionRouteTo:
		v.Action, v.Strict = RouteTo, r.Strict
		g, ok := cfg.GatewayByRef(r.Gateway)
		if !ok {
			return sp, v, "", fmt.Errorf("route-to gateway %q: no gateway has that name, and no single gateway has that address", r.Gateway)
		}
		for i := range cfg.Gateways {
			if &cfg.Gateways[i] == g {
				v.Gateway = i
			}
		}
		gwName = g.Name
	default:
		return sp, v, "", fmt.Errorf("action %q is not route-to, balance, pass or drop", r.Action)
	}
	return sp, v, gwName, nil
}

// prefixSpans turns a prefix into the interval of addresses it covers in its family, and the
// whole range in the other; the zero Prefix is every address of both. Host bits are ignored
// rather than refused, as conf has already refused them in files. An IPv4-mapped IPv6 prefix
// (which conf refuses) is an IPv6 one, as netip.Prefix.Contains has it.
func prefixSpans(p netip.Prefix) (span, span6) {
	switch {
	case !p.IsValid():
		return anyAddr, anyAddr6
	case p.Addr().Is4():
		lo := be32(p.Masked().Addr().As4())
		return span{lo, lo | ^uint32(0)>>p.Bits()}, anyAddr6
	}
	lo := be128(p.Masked().Addr().As16())
	var host u128 // the host bits: ones below the prefix length
	switch b := p.Bits(); {
	case b == 0:
		host = anyAddr6.hi
	case b < 64:
		host = u128{^uint64(0) >> b, ^uint64(0)}
	case b < 128:
		host = u128{0, ^uint64(0) >> (b - 64)}
	}
	return anyAddr, span6{lo, u128{lo.hi | host.hi, lo.lo | host.lo}}
}

// portSpan turns a port range into an interval; ports only make sense for TCP and UDP.
func portSpan(r conf.PortRange, hasPorts bool, proto string) (span, error) {
	if r.Any() {
		return anyPort, nil
	}
	if !hasPorts {
		return span{}, fmt.Errorf("protocol %q has no ports", proto)
	}
	if r.Lo > r.Hi {
		return span{}, fmt.Errorf("range %d-%d is empty", r.Lo, r.Hi)
	}
	return span{uint32(r.Lo), uint32(r.Hi)}, nil
}

// dim is one dimension of the classifier: its value space cut into elementary intervals at
// every rule boundary, so that all values of an interval are accepted by the same rules.
type dim struct {
	bounds []uint32 // sorted; bounds[0] == 0; interval k is [bounds[k], bounds[k+1])
	sets   []bitset // sets[k]: the rules accepting interval k
}

// lookup returns the rules accepting value v. The search has a fixed number of steps and a
// branch the compiler can turn into a conditional move, so it costs the same for any v.
func (d *dim) lookup(v uint32) bitset {
	b := d.bounds
	lo, n := 0, len(b)
	for n > 1 {
		half := n / 2
		if b[lo+half] <= v {
			lo += half
		}
		n -= half
	}
	return d.sets[lo]
}

// dim6 is dim for IPv6 addresses.
type dim6 struct {
	bounds []u128 // sorted; bounds[0] == 0; interval k is [bounds[k], bounds[k+1])
	sets   []bitset
}

// lookup is dim.lookup over 128-bit values.
func (d *dim6) lookup(v u128) bitset {
	b := d.bounds
	lo, n := 0, len(b)
	for n > 1 {
		half := n / 2
		if m := b[lo+half]; m.hi < v.hi || m.hi == v.hi && m.lo <= v.lo {
			lo += half
		}
		n -= half
	}
	return d.sets[lo]
}

// buildDim builds an IPv4 address or a port dimension; maxv is its largest value.
func buildDim(specs []spec, get func(*spec) span, maxv uint32, pool *pool) dim {
	bounds, sets := cut(specs, func(sp *spec) (uint32, uint32) { s := get(sp); return s.lo, s.hi },
		maxv, func(v uint32) uint32 { return v + 1 }, cmp.Compare[uint32], pool)
	return dim{bounds, sets}
}

// buildDim6 builds an IPv6 address dimension.
func buildDim6(specs []spec, get func(*spec) span6, pool *pool) dim6 {
	bounds, sets := cut(specs, func(sp *spec) (u128, u128) { s := get(sp); return s.lo, s.hi },
		anyAddr6.hi, u128.next, u128.compare, pool)
	return dim6{bounds, sets}
}

// cut cuts a dimension at the edges of every rule's span and sweeps the edges in order,
// adding a rule's bit where its span starts and clearing it where it ends, which costs one
// bitset copy per interval rather than one pass over the intervals per rule. It returns the
// intervals' starts, the first the zero value, and the rules accepting each interval.
// maxv is the dimension's largest value (no interval starts past it), next(v) is v+1 and
// compare orders values.
func cut[T comparable](specs []spec, get func(*spec) (lo, hi T), maxv T, next func(T) T, compare func(a, b T) int, pool *pool) ([]T, []bitset) {
	type edge struct {
		at   T
		rule int
		add  bool
	}
	edges := make([]edge, 0, 2*len(specs))
	var zero T
	bounds := []T{zero}
	for i := range specs {
		lo, hi := get(&specs[i])
		edges = append(edges, edge{lo, i, true})
		bounds = append(bounds, lo)
		if hi != maxv {
			edges = append(edges, edge{next(hi), i, false})
			bounds = append(bounds, next(hi))
		}
	}
	slices.SortFunc(edges, func(a, b edge) int { return compare(a.at, b.at) })
	slices.SortFunc(bounds, compare)
	bounds = slices.Compact(bounds)

	sets := make([]bitset, len(bounds))
	cur := make(bitset, pool.words)
	e := 0
	for k, at := range bounds {
		for ; e < len(edges) && edges[e].at == at; e++ {
			i := edges[e].rule
			if edges[e].add {
				cur[i/64] |= 1 << (i % 64)
			} else {
				cur[i/64] &^= 1 << (i % 64)
			}
		}
		sets[k] = pool.intern(cur)
	}
	return bounds, sets
}

// pool shares identical bitsets between intervals and dimensions: with many rules that leave a
// key out, most intervals of that dimension accept the same rules, and sharing keeps the
// classifier's memory and cache footprint close to what distinct sets need.
type pool struct {
	words int
	m     map[string]bitset
	key   []byte
}

func newPool(words int) *pool {
	return &pool{words: words, m: map[string]bitset{}}
}

// intern returns the pooled bitset equal to b, copying b into the pool when it is new, so b
// may be reused by the caller.
func (p *pool) intern(b bitset) bitset {
	p.key = p.key[:0]
	for _, w := range b {
		p.key = binary.LittleEndian.AppendUint64(p.key, w)
	}
	if s, ok := p.m[string(p.key)]; ok {
		return s
	}
	s := slices.Clone(b)
	p.m[string(p.key)] = s
	return s
}
