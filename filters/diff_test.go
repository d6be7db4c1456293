package filters

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"testing"

	"github.com/l2shim/l2shim/conf"
)

// ref is the specification written as plainly as possible: the rules in order, each key checked
// with conf's own types. Match must always agree with it.
func ref(rules []conf.Rule, ifaces []string, p *Packet) int {
	src, dst := netip.AddrFrom4(p.Src), netip.AddrFrom4(p.Dst)
	for i := range rules {
		r := &rules[i]
		if r.Interface != "" && (p.Iface < 0 || p.Iface >= len(ifaces) || ifaces[p.Iface] != r.Interface) {
			continue
		}
		if (r.Direction == conf.DirectionOut && p.Dir != Out) || (r.Direction == conf.DirectionIn && p.Dir != In) {
			continue
		}
		if (r.Protocol == "tcp" && p.Proto != 6) || (r.Protocol == "udp" && p.Proto != 17) || (r.Protocol == "icmp" && p.Proto != 1) {
			continue
		}
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

func randPrefix(r *rand.Rand) netip.Prefix {
	if r.IntN(2) == 0 {
		return netip.Prefix{}
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

// randRules builds n rules the way conf would accept them, with keys drawn from small pools.
// With narrow set, every rule has a destination of /16 or longer, so that large sets still leave
// packets unmatched and the no-match path is compared too.
func randRules(r *rand.Rand, n int, narrow bool) []conf.Rule {
	rules := make([]conf.Rule, n)
	for i := range rules {
		ru := conf.Rule{Name: fmt.Sprintf("rule %d", i+1), Index: i, Protocol: "any"}
		if r.IntN(3) == 0 {
			ru.Interface = []string{"eth0", "eth1", "eth2", "eth9"}[r.IntN(4)]
		}
		ru.Direction = []string{"", "", conf.DirectionOut, conf.DirectionIn}[r.IntN(4)]
		ru.Protocol = []string{"any", "tcp", "udp", "icmp"}[r.IntN(4)]
		ru.Src, ru.Dst = randPrefix(r), randPrefix(r)
		for narrow && ru.Dst.Bits() < 16 {
			ru.Dst = randPrefix(r)
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

// randPacket draws a packet near the edges of random rules' prefixes and ports, or anywhere.
func randPacket(r *rand.Rand, rules []conf.Rule) Packet {
	pick := func() *conf.Rule { return &rules[r.IntN(len(rules))] }
	addr := func(p netip.Prefix) [4]byte {
		v := randAddr(r)
		if s, err := prefixSpan(p); err == nil && p.IsValid() && r.IntN(4) != 0 {
			v = edge(r, s)
		}
		return [4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)}
	}
	port := func(pr conf.PortRange) uint16 {
		if pr.Any() || r.IntN(4) == 0 {
			return randPort(r)
		}
		return uint16(edge(r, span{uint32(pr.Lo), uint32(pr.Hi)}))
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
	t.Logf("%d comparisons, %d of %d packets matched a rule, %d packets against more than 100 rules matched none",
		cases, hits, sets*packets, bigMisses)
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
		s, _ := prefixSpan(ru.Dst)
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
