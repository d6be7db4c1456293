package filters

import "sync/atomic"

// counter holds one rule's totals. It fills a 64-byte cache line so that cores counting
// different rules do not contend for the same line.
type counter struct {
	flows, packets, bytes atomic.Uint64
	_                     [64 - 3*8]byte
}

// CountFlow records a new flow placed by rule (a Verdict.Rule). The datapath calls it on its hot
// path, so it is one atomic add; an index that is not a rule of this Set (a verdict kept from
// before a reload, or -1) is ignored rather than trusted.
func (s *Set) CountFlow(rule int) {
	if s == nil || uint(rule) >= uint(len(s.counters)) {
		return
	}
	s.counters[rule].flows.Add(1)
}

// CountPackets adds packets and bytes forwarded under rule's verdict; like CountFlow it is
// lock-free and ignores an index that is not a rule of this Set.
func (s *Set) CountPackets(rule int, packets, bytes uint64) {
	if s == nil || uint(rule) >= uint(len(s.counters)) {
		return
	}
	c := &s.counters[rule]
	c.packets.Add(packets)
	c.bytes.Add(bytes)
}

// RuleStats is one rule's identity and totals as status shows them.
type RuleStats struct {
	Name    string // the rule's name ("rule N" when the file gives none)
	Index   int    // 0-based position in the configuration
	Action  string // "route-to", "balance", "pass" or "drop", as in the file
	Gateway string // route-to: the resolved gateway's name; else ""
	// Affinity is the affinity of the flows the rule leaves to the mode's choice (balance,
	// route-to): "flow" or "host-pair"; "" for pass and drop.
	Affinity string
	Flows    uint64 // flows the rule matched and the datapath counted
	Packets  uint64
	Bytes    uint64
}

// Stats returns every rule's totals, in configuration order. It reads the counters while the
// datapath updates them, so the three numbers of a rule are each exact but not taken at one
// instant; that is enough for status and metrics and keeps the datapath free of locks.
func (s *Set) Stats() []RuleStats {
	if s == nil {
		return nil
	}
	out := make([]RuleStats, len(s.rules))
	for i := range s.rules {
		c := &s.counters[i]
		aff := ""
		if a := s.verdicts[i].Action; a == Balance || a == RouteTo {
			aff = s.verdicts[i].Affinity.String()
		}
		out[i] = RuleStats{
			Affinity: aff,
			Name:     s.rules[i].Name,
			Index:    i,
			Action:   s.verdicts[i].Action.String(),
			Gateway:  s.gwNames[i],
			Flows:    c.flows.Load(),
			Packets:  c.packets.Load(),
			Bytes:    c.bytes.Load(),
		}
	}
	return out
}
