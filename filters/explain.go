package filters

import "slices"

// RuleCheck is how one rule compared with a packet, for `l2shim explain`.
type RuleCheck struct {
	Rule    int    // index in the configuration
	Name    string // the rule's name
	Matched bool
	// Mismatch names the first key of the rule that the packet does not match: "interface",
	// "direction", "protocol", "src", "dst", "src_port" or "dst_port"; "" when Matched. A
	// packet of the other family than the rule's prefixes mismatches the first of src and dst
	// the rule sets.
	Mismatch string
}

// Explain compares p with the rules in order, up to and including the first that matches (the
// one Match returns), and says for each rule before it which key did not match. It is for
// explain, off the datapath: it allocates, and costs one pass over the rules.
func (s *Set) Explain(p *Packet) []RuleCheck {
	if s == nil {
		return nil
	}
	out := make([]RuleCheck, 0, len(s.specs))
	for i := range s.specs {
		c := RuleCheck{Rule: i, Name: s.rules[i].Name, Mismatch: s.specs[i].mismatch(p)}
		c.Matched = c.Mismatch == ""
		out = append(out, c)
		if c.Matched {
			break
		}
	}
	return out
}

// mismatch returns the first key of the rule that p does not match, "" when it matches.
func (sp *spec) mismatch(p *Packet) string {
	in := func(v uint32, s span) bool { return s.lo <= v && v <= s.hi }
	classes, srcOK, dstOK := &protoClass, in(be32(p.Src), sp.src), in(be32(p.Dst), sp.dst)
	if p.IPv6 {
		classes, srcOK, dstOK = &protoClass6, sp.src6.contains(be128(p.Src6)), sp.dst6.contains(be128(p.Dst6))
	}
	// A rule of the other family: its first prefix is the key that does not match.
	if sp.fam == fam4 && p.IPv6 || sp.fam == fam6 && !p.IPv6 {
		if sp.famKey == "src" {
			srcOK = false
		} else {
			dstOK = false
		}
	}
	switch {
	case !sp.anyIf && !slices.Contains(sp.ifs, p.Iface):
		return "interface"
	case sp.dir != 0 && sp.dir != p.Dir:
		return "direction"
	case !sp.anyProto && sp.proto != int(classes[p.Proto]):
		return "protocol"
	case !srcOK:
		return "src"
	case !dstOK:
		return "dst"
	case !in(uint32(p.SrcPort), sp.sport):
		return "src_port"
	case !in(uint32(p.DstPort), sp.dport):
		return "dst_port"
	}
	return ""
}
