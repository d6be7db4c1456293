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

// Full ranges of the dimensions.
var (
	anyAddr = span{0, 1<<32 - 1}
	anyPort = span{0, 1<<16 - 1}
)

// spec is a rule reduced to what the classifier needs: numeric spans and the small keys.
type spec struct {
	anyIf    bool  // interface "" (any)
	ifs      []int // indices in Compile's ifaces the rule names; empty: never matches
	dir      Direction
	anyProto bool
	proto    int // protocol class, when !anyProto
	src, dst span
	sport    span
	dport    span
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
	sp := spec{src: anyAddr, dst: anyAddr, sport: anyPort, dport: anyPort}
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

	var err error
	if sp.src, err = prefixSpan(r.Src); err != nil {
		return sp, v, "", fmt.Errorf("src: %w", err)
	}
	if sp.dst, err = prefixSpan(r.Dst); err != nil {
		return sp, v, "", fmt.Errorf("dst: %w", err)
	}
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

// prefixSpan turns a prefix into the interval of addresses it covers; the zero Prefix is every
// address. Host bits are ignored rather than refused, as conf has already refused them in files.
func prefixSpan(p netip.Prefix) (span, error) {
	if !p.IsValid() {
		return anyAddr, nil
	}
	if !p.Addr().Is4() {
		return span{}, fmt.Errorf("%s is not an IPv4 prefix", p)
	}
	a := p.Masked().Addr().As4()
	lo := be32(a)
	return span{lo, lo | ^uint32(0)>>p.Bits()}, nil
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

// buildDim cuts a dimension at the edges of every rule's span and sweeps the edges in order,
// adding a rule's bit where its span starts and clearing it where it ends, which costs one
// bitset copy per interval rather than one pass over the intervals per rule.
// maxv is the dimension's largest value: no interval starts past it.
func buildDim(specs []spec, get func(*spec) span, maxv uint32, pool *pool) dim {
	type edge struct {
		at   uint32
		rule int
		add  bool
	}
	edges := make([]edge, 0, 2*len(specs))
	bounds := []uint32{0}
	for i := range specs {
		s := get(&specs[i])
		edges = append(edges, edge{s.lo, i, true})
		bounds = append(bounds, s.lo)
		if s.hi != maxv {
			edges = append(edges, edge{s.hi + 1, i, false})
			bounds = append(bounds, s.hi+1)
		}
	}
	slices.SortFunc(edges, func(a, b edge) int { return cmp.Compare(a.at, b.at) })
	slices.Sort(bounds)
	bounds = slices.Compact(bounds)

	d := dim{bounds: bounds, sets: make([]bitset, len(bounds))}
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
		d.sets[k] = pool.intern(cur)
	}
	return d
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
