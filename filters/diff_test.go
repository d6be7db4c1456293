package filters

import (
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"testing"

	"github.com/l2shim/l2shim/conf"
)

// ref is the specification written as plainly as possible: the rules in order, each key checked
// with conf's own types. Match must always agree with it.
func ref(rules []conf.Rule, ifaces []string, p *Packet) int {
	src, dst, icmp := netip.AddrFrom4(p.Src), netip.AddrFrom4(p.Dst), uint8(1)
	if p.IPv6 {
		src, dst, icmp = netip.AddrFrom16(p.Src6), netip.AddrFrom16(p.Dst6), 58
	}
	for i := range rules {
		r := &rules[i]
		if r.Interface != "" && (p.Iface < 0 || p.Iface >= len(ifaces) || ifaces[p.Iface] != r.Interface) {
			continue
		}
		if (r.Direction == conf.DirectionOut && p.Dir != Out) || (r.Direction == conf.DirectionIn && p.Dir != In) {
			continue
		}
		if (r.Protocol == "tcp" && p.Proto != 6) || (r.Protocol == "udp" && p.Proto != 17) || (r.Protocol == "icmp" && p.Proto != icmp) {
			continue
		}
		// Contains is false for an address of the other family.
		if (r.Src.IsValid() && !r.Src.Contains(src)) || (r.Dst.IsValid() && !r.Dst.Contains(dst)) {
			continue
		}
		if !r.SrcPort.Contains(p.SrcPort) || !r.DstPort.Contains(p.DstPort) {
			continue
		}
		return i
	}
	return -1
}

var diffGateways = []conf.Gateway{
	{Name: "eth0", Interface: "eth0", Address: netip.MustParseAddr("10.1.0.1")},
	{Name: "isp-b", Interface: "eth1", Address: netip.MustParseAddr("10.2.0.1")},
	{Name: "isp-c", Interface: "eth2", Address: netip.MustParseAddr("10.3.0.1")},
}

// addrPool holds the addresses random prefixes and packets are drawn near, so that rules
// overlap, nest and share edges far more often than uniformly random ones would.
var addrPool = []uint32{0, 0xffffffff, 0x0a000000, 0x0a0001ff, 0x0a000100, 0xc0a80101, 0x80000000, 0x7fffffff}

// portPool does the same for ports.
var portPool = []uint16{0, 1, 22, 25, 53, 80, 443, 1000, 2000, 65534, 65535}

func randAddr(r *rand.Rand) uint32 {
	if r.IntN(4) == 0 {
		return r.Uint32()
	}
	return addrPool[r.IntN(len(addrPool))] + uint32(r.IntN(3)) - 1
}

// addrPool6 is addrPool for IPv6: both ends of the space, the middle, and addresses on either
// side of the 64-bit boundary between the halves the classifier stores.
var addrPool6 = []u128{
	{0, 0}, {^uint64(0), ^uint64(0)}, {0x8000000000000000, 0}, {0x7fffffffffffffff, ^uint64(0)},
	{0x20010db800000000, 0}, {0x20010db800000000, ^uint64(0)}, {0x20010db800000001, 0},
	{0x20010db8000001ff, 0xffff000000000000}, {0xfe80000000000000, 1},
}

// add adds a small signed delta to v, with carry across the halves.
func (a u128) add(d int) u128 {
	switch {
	case d > 0:
		for range d {
			a = a.next()
		}
	case d < 0:
		for range -d {
			if a.lo == 0 {
				a.hi--
			}
			a.lo--
		}
	}
	return a
}

func randAddr6(r *rand.Rand) u128 {
	if r.IntN(4) == 0 {
		return u128{r.Uint64(), r.Uint64()}
	}
	return addrPool6[r.IntN(len(addrPool6))].add(r.IntN(3) - 1)
}

func addrFrom128(v u128) netip.Addr {
	var b [16]byte
	binary.BigEndian.PutUint64(b[:8], v.hi)
	binary.BigEndian.PutUint64(b[8:], v.lo)
	return netip.AddrFrom16(b)
}

// randPrefix draws no prefix half the time, else a prefix of the family v6 says.
func randPrefix(r *rand.Rand, v6 bool) netip.Prefix {
	if r.IntN(2) == 0 {
		return netip.Prefix{}
	}
	if v6 {
		bits := r.IntN(129)
		if r.IntN(2) == 0 {
			bits = 56 + r.IntN(17) // around the halves' boundary
		}
		return netip.PrefixFrom(addrFrom128(randAddr6(r)), bits).Masked()
	}
	a := randAddr(r)
	bits := r.IntN(33)
	if r.IntN(2) == 0 {
		bits = 24 + r.IntN(9)
	}
	p := netip.PrefixFrom(netip.AddrFrom4([4]byte{byte(a >> 24), byte(a >> 16), byte(a >> 8), byte(a)}), bits)
	return p.Masked()
}

func randPort(r *rand.Rand) uint16 {
	if r.IntN(4) == 0 {
		return uint16(r.Uint32())
	}
	return portPool[r.IntN(len(portPool))]
}

func randRange(r *rand.Rand) conf.PortRange {
	if r.IntN(2) == 0 {
		return conf.PortRange{}
	}
	lo := max(randPort(r), 1)
	hi := lo
	if r.IntN(2) == 0 {
		hi = uint16(min(int(lo)+r.IntN(2000), 65535))
	}
	return conf.PortRange{Lo: lo, Hi: hi}
}

// randRules builds n rules the way conf would accept them, with keys drawn from small pools;
// a third of the rules have IPv6 prefixes, and a rule without src and dst is of both families.
// With narrow set, every rule has a destination of /16 or longer (IPv6: /48), so that large
// sets still leave packets unmatched and the no-match path is compared too.
func randRules(r *rand.Rand, n int, narrow bool) []conf.Rule {
	rules := make([]conf.Rule, n)
	for i := range rules {
		ru := conf.Rule{Name: fmt.Sprintf("rule %d", i+1), Index: i, Protocol: "any"}
		if r.IntN(3) == 0 {
			ru.Interface = []string{"eth0", "eth1", "eth2", "eth9"}[r.IntN(4)]
		}
		ru.Direction = []string{"", "", conf.DirectionOut, conf.DirectionIn}[r.IntN(4)]
		ru.Protocol = []string{"any", "tcp", "udp", "icmp"}[r.IntN(4)]
		v6 := r.IntN(3) == 0
		ru.Src, ru.Dst = randPrefix(r, v6), randPrefix(r, v6)
		for narrow && (ru.Dst.Bits() < 16 || v6 && ru.Dst.Bits() < 48) {
			ru.Dst = randPrefix(r, v6)
		}
		if ru.Protocol == "tcp" || ru.Protocol == "udp" {
			ru.SrcPort, ru.DstPort = randRange(r), randRange(r)
		}
		switch r.IntN(3) {
		case 0:
			ru.Action = conf.ActionPass
		case 1:
			ru.Action = conf.ActionDrop
		default:
			ru.Action = conf.ActionRouteTo
			ru.Gateway = []string{"eth0", "isp-b", "10.3.0.1"}[r.IntN(3)]
			ru.Strict = r.IntN(2) == 0
		}
		rules[i] = ru
	}
	return rules
}

// edge returns a value at, just inside or just outside one end of a span, where an off-by-one
// in the classifier would show.
func edge(r *rand.Rand, s span) uint32 {
	v := s.lo
	if r.IntN(2) == 0 {
		v = s.hi
	}
	return v + uint32(r.IntN(3)) - 1
}

// edge6 is edge for IPv6.
func edge6(r *rand.Rand, s span6) u128 {
	v := s.lo
	if r.IntN(2) == 0 {
		v = s.hi
	}
	return v.add(r.IntN(3) - 1)
}

// randPacket draws a packet, IPv6 a third of the time, near the edges of random rules'
// prefixes of its family and ports, or anywhere.
func randPacket(r *rand.Rand, rules []conf.Rule) Packet {
	pick := func() *conf.Rule { return &rules[r.IntN(len(rules))] }
	addr := func(p netip.Prefix) [4]byte {
		v := randAddr(r)
		if s, _ := prefixSpans(p); p.IsValid() && p.Addr().Is4() && r.IntN(4) != 0 {
			v = edge(r, s)
		}
		return [4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)}
	}
	addr6 := func(p netip.Prefix) [16]byte {
		v := randAddr6(r)
		if _, s := prefixSpans(p); p.IsValid() && p.Addr().Is6() && r.IntN(4) != 0 {
			v = edge6(r, s)
		}
		return addrFrom128(v).As16()
	}
	port := func(pr conf.PortRange) uint16 {
		if pr.Any() || r.IntN(4) == 0 {
			return randPort(r)
		}
		return uint16(edge(r, span{uint32(pr.Lo), uint32(pr.Hi)}))
	}
	if r.IntN(3) == 0 {
		p := Packet{
			Iface: r.IntN(6) - 1,
			Dir:   Direction(r.IntN(4)),
			IPv6:  true,
			Proto: []uint8{0, 1, 6, 6, 17, 17, 47, 58, 58}[r.IntN(9)],
			Src6:  addr6(pick().Src),
			Dst6:  addr6(pick().Dst),
		}
		if p.Proto == 6 || p.Proto == 17 {
			p.SrcPort, p.DstPort = port(pick().SrcPort), port(pick().DstPort)
		}
		return p
	}
	p := Packet{
		Iface: r.IntN(6) - 1,
		Dir:   Direction(r.IntN(4)),
		Proto: []uint8{0, 1, 6, 6, 17, 17, 47, 58}[r.IntN(8)],
		Src:   addr(pick().Src),
		Dst:   addr(pick().Dst),
	}
	if p.Proto == 6 || p.Proto == 17 {
		p.SrcPort, p.DstPort = port(pick().SrcPort), port(pick().DstPort)
	}
	return p
}

// TestDifferential compares Match, on both paths, with ref over random rule sets of 1 to 300
// rules and packets aimed at their edges.
func TestDifferential(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	ifaces := []string{"eth0", "eth1", "eth2", "eth0"}
	sets, packets := 300, 400
	if testing.Short() {
		sets = 50
	}
	cases, hits, bigMisses := 0, 0, 0
	hits6 := 0 // IPv6 packets matching a rule with an IPv6 prefix
	for k := range sets {
		n := 1 + r.IntN(300)
		if k%3 == 0 {
			n = 1 + r.IntN(80) // around the linear/bit-vector boundary and the one-word case
		}
		cfg := &conf.Config{Gateways: diffGateways, Rules: randRules(r, n, k%2 == 1)}
		compiled := both(t, cfg, ifaces)
		for range packets {
			p := randPacket(r, cfg.Rules)
			want := ref(cfg.Rules, ifaces, &p)
			if want >= 0 {
				hits++
				if ru := &cfg.Rules[want]; p.IPv6 && (ru.Src.IsValid() || ru.Dst.IsValid()) {
					hits6++
				}
			} else if n > 100 {
				bigMisses++
			}
			for path, s := range compiled {
				v, ok := s.Match(&p)
				got := -1
				if ok {
					got = v.Rule
				}
				cases++
				if got != want {
					t.Fatalf("%s, %d rules: Match(%+v) = %d, reference %d\nrule %d: %+v", path, n, p, got, want, want, ruleAt(cfg.Rules, want))
				}
				if ok && (v.Action.String() != cfg.Rules[got].Action || v.Strict != (cfg.Rules[got].Strict && v.Action == RouteTo)) {
					t.Fatalf("%s: verdict %+v for rule %+v", path, v, cfg.Rules[got])
				}
			}
		}
	}
	t.Logf("%d comparisons, %d of %d packets matched a rule (%d IPv6 ones by an IPv6 prefix), %d packets against more than 100 rules matched none",
		cases, hits, sets*packets, hits6, bigMisses)
	if hits6 < sets*packets/50 {
		t.Errorf("only %d IPv6 packets matched a rule by an IPv6 prefix: the IPv6 dimensions are barely compared", hits6)
	}
	if hits < sets*packets/10 || hits > sets*packets*9/10 {
		t.Errorf("%d of %d packets matched: the generator no longer exercises both outcomes", hits, sets*packets)
	}
	if bigMisses < sets*packets/20 {
		t.Errorf("only %d packets missed large rule sets: the no-match path of the bit vectors is barely compared", bigMisses)
	}
}

func ruleAt(rules []conf.Rule, i int) any {
	if i < 0 {
		return nil
	}
	return rules[i]
}

// benchIfaces is the datapath's interface list in the benchmarks.
var benchIfaces = []string{"eth0", "eth1"}

// benchRules builds n realistic rules: per-destination pins and blocks inside 10/8 and
// 172.16/12, service ports, some limited to an interface, a direction or a source network. The
// last rule is the only one for 198.51.100.7 tcp/4444, so hit matches it alone after trying
// every other rule; miss (GRE to 8.8.8.8) matches none.
func benchRules(n int) (cfg *conf.Config, hit, miss Packet) {
	r := rand.New(rand.NewPCG(uint64(n), 7))
	rules := make([]conf.Rule, n)
	services := []conf.PortRange{{Lo: 22, Hi: 22}, {Lo: 25, Hi: 25}, {Lo: 80, Hi: 80}, {Lo: 443, Hi: 443}, {Lo: 8000, Hi: 8999}, {Lo: 5060, Hi: 5061}}
	for i := range rules {
		ru := conf.Rule{Name: fmt.Sprintf("rule %d", i+1), Index: i, Protocol: "any"}
		base := uint32(0x0a000000) | r.Uint32()&0x00ffffff
		if r.IntN(3) == 0 {
			base = 0xac100000 | r.Uint32()&0x000fffff
		}
		ru.Dst = netip.PrefixFrom(netip.AddrFrom4([4]byte{byte(base >> 24), byte(base >> 16), byte(base >> 8), byte(base)}), 16+r.IntN(17)).Masked()
		switch r.IntN(4) {
		case 0, 1:
			ru.Protocol = []string{"tcp", "udp"}[r.IntN(2)]
			ru.DstPort = services[r.IntN(len(services))]
		case 2:
			ru.Src = netip.PrefixFrom(netip.AddrFrom4([4]byte{192, 168, byte(r.IntN(256)), 0}), 24)
		}
		if r.IntN(5) == 0 {
			ru.Interface = benchIfaces[r.IntN(2)]
		}
		if r.IntN(5) == 0 {
			ru.Direction = conf.DirectionOut
		}
		switch r.IntN(4) {
		case 0:
			ru.Action = conf.ActionDrop
		case 1:
			ru.Action = conf.ActionPass
		default:
			ru.Action, ru.Gateway = conf.ActionRouteTo, []string{"eth0", "isp-b"}[r.IntN(2)]
		}
		rules[i] = ru
	}
	rules[n-1] = conf.Rule{
		Name: "last", Index: n - 1, Protocol: "tcp", Dst: netip.MustParsePrefix("198.51.100.7/32"),
		DstPort: conf.PortRange{Lo: 4444, Hi: 4444}, Action: conf.ActionRouteTo, Gateway: "isp-b",
	}
	cfg = &conf.Config{Gateways: diffGateways[:2], Rules: rules}
	hit = pk(0, Out, tcp, "10.1.0.2", "198.51.100.7", 40000, 4444)
	miss = pk(0, Out, gre, "10.1.0.2", "8.8.8.8", 0, 0)
	return cfg, hit, miss
}

// benchPackets draws packets inside the rules' space (their destinations, ports and sources),
// so that the "mixed" benchmark sees matches at every depth and mispredicted branches.
func benchPackets(cfg *conf.Config) []Packet {
	r := rand.New(rand.NewPCG(3, 3))
	out := make([]Packet, 1024)
	for i := range out {
		ru := cfg.Rules[r.IntN(len(cfg.Rules))]
		s, _ := prefixSpans(ru.Dst)
		d := s.lo + r.Uint32N(s.hi-s.lo+1)
		p := pk(r.IntN(2), Out, []uint8{tcp, udp, icmp}[r.IntN(3)], "192.168.1.9", "0.0.0.0", 40000, ru.DstPort.Lo)
		p.Dst = [4]byte{byte(d >> 24), byte(d >> 16), byte(d >> 8), byte(d)}
		p.Src[2] = byte(r.IntN(256))
		out[i] = p
	}
	return out
}

var sinkVerdict Verdict

// BenchmarkMatch measures Match and the linear reference on 10, 100 and 1,000 rules for a packet
// that matches only the last rule, one that matches none, and a mix of packets.
func BenchmarkMatch(b *testing.B) {
	for _, n := range []int{10, 100, 1000} {
		cfg, hit, miss := benchRules(n)
		s, err := Compile(cfg, benchIfaces)
		if err != nil {
			b.Fatal(err)
		}
		mixed := benchPackets(cfg)
		cases := []struct {
			name string
			p    func(i int) *Packet
		}{
			{"last", func(int) *Packet { return &hit }},
			{"nomatch", func(int) *Packet { return &miss }},
			{"mixed", func(i int) *Packet { return &mixed[i&1023] }},
		}
		for _, c := range cases {
			b.Run(fmt.Sprintf("set/rules=%d/%s", n, c.name), func(b *testing.B) {
				for i := 0; b.Loop(); i++ {
					sinkVerdict, _ = s.Match(c.p(i))
				}
			})
		}
		for _, c := range cases {
			b.Run(fmt.Sprintf("reference/rules=%d/%s", n, c.name), func(b *testing.B) {
				for i := 0; b.Loop(); i++ {
					sinkVerdict.Rule = ref(cfg.Rules, benchIfaces, c.p(i))
				}
			})
		}
	}
}

// to6 maps an IPv4 prefix into 2001:db8::/32 (the IPv4 address as bits 32-63), so that the
// IPv6 benchmark has the same rule structure as the IPv4 one.
func to6(p netip.Prefix) netip.Prefix {
	if !p.IsValid() {
		return p
	}
	a := p.Addr().As4()
	return netip.PrefixFrom(netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, a[0], a[1], a[2], a[3]}), 32+p.Bits())
}

// BenchmarkMatch6 is BenchmarkMatch's set cases with the rules' prefixes and the packets'
// addresses moved to IPv6 by to6.
func BenchmarkMatch6(b *testing.B) {
	for _, n := range []int{10, 100, 1000} {
		cfg, hit, miss := benchRules(n)
		mixed := benchPackets(cfg)
		for i := range cfg.Rules {
			cfg.Rules[i].Src, cfg.Rules[i].Dst = to6(cfg.Rules[i].Src), to6(cfg.Rules[i].Dst)
		}
		s, err := Compile(cfg, benchIfaces)
		if err != nil {
			b.Fatal(err)
		}
		six := func(p *Packet) {
			p.IPv6 = true
			p.Src6 = to6(netip.PrefixFrom(netip.AddrFrom4(p.Src), 32)).Addr().As16()
			p.Dst6 = to6(netip.PrefixFrom(netip.AddrFrom4(p.Dst), 32)).Addr().As16()
		}
		hit6, miss6 := hit, miss
		six(&hit6)
		six(&miss6)
		for i := range mixed {
			six(&mixed[i])
		}
		if v, ok := s.Match(&hit6); !ok || v.Rule != n-1 {
			b.Fatalf("hit matches %+v, %v", v, ok)
		}
		for name, p := range map[string]func(i int) *Packet{
			"last":    func(int) *Packet { return &hit6 },
			"nomatch": func(int) *Packet { return &miss6 },
			"mixed":   func(i int) *Packet { return &mixed[i&1023] },
		} {
			b.Run(fmt.Sprintf("set/rules=%d/%s", n, name), func(b *testing.B) {
				for i := 0; b.Loop(); i++ {
					sinkVerdict, _ = s.Match(p(i))
				}
			})
		}
	}
}

// BenchmarkMatchPaths compares the linear path and the bit-vector path on the same small rule
// sets, up to the 64 rules the linear path can take; linearMax is chosen from it.
func BenchmarkMatchPaths(b *testing.B) {
	for _, n := range []int{4, 8, 12, 16, 24, 32, 64} {
		cfg, hit, miss := benchRules(n)
		mixed := benchPackets(cfg)
		for path, lin := range map[string]int{"linear": 64, "bitvector": 0} {
			s, err := compile(cfg, benchIfaces, lin)
			if err != nil {
				b.Fatal(err)
			}
			for name, p := range map[string]func(int) *Packet{
				"last":    func(int) *Packet { return &hit },
				"nomatch": func(int) *Packet { return &miss },
				"mixed":   func(i int) *Packet { return &mixed[i&1023] },
			} {
				b.Run(fmt.Sprintf("%s/rules=%d/%s", path, n, name), func(b *testing.B) {
					for i := 0; b.Loop(); i++ {
						sinkVerdict, _ = s.Match(p(i))
					}
				})
			}
		}
	}
}

// BenchmarkCompile shows what a reload costs in time and memory.
func BenchmarkCompile(b *testing.B) {
	for _, n := range []int{100, 1000, 5000} {
		cfg, _, _ := benchRules(n)
		b.Run(fmt.Sprintf("rules=%d", n), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := Compile(cfg, benchIfaces); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkCount measures the counters the datapath bumps per flow and per batch of packets.
func BenchmarkCount(b *testing.B) {
	cfg, _, _ := benchRules(100)
	s, _ := Compile(cfg, benchIfaces)
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			s.CountFlow(7)
			s.CountPackets(7, 1, 1500)
		}
	})
}
