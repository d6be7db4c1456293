package failover

import "fmt"

// Active probes: the up/down verdict of one gateway from its probe rounds.
//
// Every probe_interval the prober sends an ARP request to the gateway and an ICMP echo to each
// of the gateway's probe targets through it, and at the start of the next round reports for
// each whether it was answered (Round). Rules:
//
//   - Voters. With ICMP targets configured the targets vote and ARP does not: the gateway's LAN
//     side answering ARP proves nothing about its upstream (the hard case is exactly an upstream
//     that silently drops everything while the router still answers ARP), and a gateway that no
//     longer answers ARP cannot forward echoes either, so the targets already see that failure.
//     ARP is still tracked, for the reason text and for State (degraded when the targets answer
//     but ARP does not). Without ICMP targets ARP is the single voter (ARP-only liveness).
//   - Down when more than half of the voters have each missed probe_misses rounds in a row
//     (1 voter: it; 2: both; 3: two; 4: three). One flaky or retired target cannot take a link
//     out, and targets missing in different rounds do not add up.
//   - Up again after probe_misses consecutive good rounds, a good round being one in which
//     at least half of the voters answered (the complement of "most missed": with 2 targets
//     one answering is enough, so a gateway whose second target was retired still comes back).
//   - A new ProbeState starts up: a gateway is assumed healthy until probes say otherwise, so
//     starting the shim does not hold every flow back for probe_misses rounds.
//
// Detection time. A silent loss at time L makes every round that starts after L miss; the
// round in progress at L may still have been answered. The probe_misses-th missed round is
// reported when the round after it starts, so the gateway is down at most
// (probe_misses + 1) × probe_interval after L: 0.8 s with 200 ms and 3 misses (within the
// 1.5 s l2shim aims for at that interval), 4 s with the defaults (1 s, 3).
//
// False alarms, and why a round must carry more than one echo. Losses are independent with
// probability p per echo. If a round's result is a single echo, a round misses with q = p and a
// healthy link goes down when a run of probe_misses (M) misses occurs. The exact probability of
// such a run within N rounds follows from the Markov chain on the current run length (see
// falseDownExact in the tests); for M = 3:
//
//	p = 0.2,  one echo per round,     N = 150 (30 s at 200 ms): 62 %   (q^3 = 0.8 % per round)
//
// So with one echo per round, the integration test "20 % probe loss on a single target,
// 200 ms, 30 s, never down" fails most of the time, and no counting rule over the same samples
// helps: detection within 1.5 s allows at most ~6 rounds of misses, and even 6 in a row
// happen in 0.7 % of such runs. Voting ARP with the target ("down only when everything of a
// round misses") would make it q = p^2, but then an upstream that drops everything while the
// router answers ARP is never detected, so that is not an option either.
//
// The answer is more samples per round: within a round the prober re-sends an unanswered echo
// (and an unanswered ARP request) at 1/3 and 2/3 of the interval, up to EchoesPerRound echoes,
// and a target's result is true when any of them was answered before the next round starts. A
// healthy link sends one echo per round, as before; the retries cost only lost probes. Then
// q = p^EchoesPerRound and, for M = 3:
//
//	p = 0.2  (20 % of echoes dropped),   q = 0.008: N = 150 rounds: 7.5e-5; a day at 1 s: 4.3 %
//	p = 0.36 (20 % in each direction),   q = 0.047: N = 150 rounds: 1.4 %
//
// With 3 targets two must miss probe_misses rounds together, about 3 pairs × N × q^6 in N
// rounds: 2.9 % for one echo per round at p = 0.2, 1e-10 with three echoes (5e-6 at p = 0.36).
// The detection time is unchanged: a dead path fails every echo of a round. (With two echoes
// per round, p = 0.2 gives 0.9 % per 150 rounds: not reliable enough for a test run often.)
// TestProbeFalseDownMonteCarlo checks these numbers with 1000 seeded trials.

// EchoesPerRound is how many echoes (and ARP requests) the prober may send to one target in
// one round: the first at the round's start, a retry at each further third of the interval
// while none has been answered.
const EchoesPerRound = 3

// ProbeState is the probe verdict of one gateway for one address family. Not safe for
// concurrent use.
//
// Health is kept per family: an ISP can lose IPv6 and keep IPv4. A gateway with IPv6 probe
// targets has a second ProbeState (NewProbeState6) fed by its IPv6 rounds: a neighbour
// solicitation to its IPv6 router plays ARP's role (result 0) and ICMPv6 echoes to its IPv6
// targets play the ICMP targets'. The rules above are the same for both families.
type ProbeState struct {
	targets int   // ICMP targets
	misses  int   // probe_misses
	run     []int // consecutive misses per result: [0] ARP (IPv6: NS), [1:] targets
	good    int   // consecutive good rounds while down
	up      bool
	v6      bool // IPv6 probes: result 0 is the router's answer to a neighbour solicitation
}

// NewProbeState returns the state of a gateway with targets ICMP probe targets (0: ARP only)
// and probe_misses misses. It starts up.
func NewProbeState(targets, misses int) *ProbeState {
	return &ProbeState{
		targets: max(targets, 0),
		misses:  max(misses, 1),
		run:     make([]int, max(targets, 0)+1),
		up:      true,
	}
}

// NewProbeState6 is NewProbeState for a gateway's IPv6 probes: result 0 of a round is whether
// its IPv6 router answered a neighbour solicitation, the others its IPv6 probe targets.
func NewProbeState6(targets, misses int) *ProbeState {
	p := NewProbeState(targets, misses)
	p.v6 = true
	return p
}

// Round takes one round's results: results[0] is ARP, results[1:] the ICMP targets in config
// order (len = targets + 1); true means answered. It returns whether the verdict changed, the
// verdict, and when it changed a reason for the log, such as
// "2 of 3 probe targets missed 3 rounds in a row (the gateway answers ARP)".
func (p *ProbeState) Round(results []bool) (changed, up bool, reason string) {
	if len(results) != len(p.run) {
		panic(fmt.Sprintf("failover: ProbeState.Round got %d results, want %d (ARP + %d targets)", len(results), len(p.run), p.targets))
	}
	missed := 0
	for i, ok := range results {
		if ok {
			p.run[i] = 0
			continue
		}
		p.run[i]++
		if i > 0 || p.targets == 0 {
			missed++
		}
	}
	voters := p.voters()
	if p.up {
		if 2*p.missing() > voters {
			p.up, p.good = false, 0
			return true, false, p.downReason()
		}
		return false, true, ""
	}
	if 2*missed <= voters {
		p.good++
	} else {
		p.good = 0
	}
	if p.good >= p.misses {
		p.up, p.good = true, 0
		return true, true, fmt.Sprintf("probes answered %d rounds in a row", p.misses)
	}
	return false, false, ""
}

// Up reports the current verdict.
func (p *ProbeState) Up() bool { return p.up }

// ProbeSummary is a ProbeState's verdict and details for State and the status table.
type ProbeSummary struct {
	Up         bool
	Targets    int  // ICMP targets; 0: ARP is the only voter
	Missing    int  // voters (targets, or ARP without targets) that missed Misses rounds in a row or more
	ARPMissing bool // the gateway missed Misses ARP rounds in a row (with targets: not a voter)
	GoodRounds int  // while down: consecutive good rounds so far, Misses needed
	Misses     int  // probe_misses
	// IPv6: the verdict of the gateway's IPv6 probes (NewProbeState6); ARPMissing then means
	// its IPv6 router did not answer neighbour solicitations.
	IPv6 bool
}

// Summary returns the current verdict and details.
func (p *ProbeState) Summary() ProbeSummary {
	return ProbeSummary{
		Up:         p.up,
		Targets:    p.targets,
		Missing:    p.missing(),
		ARPMissing: p.run[0] >= p.misses,
		GoodRounds: p.good,
		Misses:     p.misses,
		IPv6:       p.v6,
	}
}

func (p *ProbeState) voters() int { return max(p.targets, 1) }

// missing counts the voters with at least misses consecutive misses.
func (p *ProbeState) missing() int {
	v := p.run[1:]
	if p.targets == 0 {
		v = p.run[:1]
	}
	n := 0
	for _, r := range v {
		if r >= p.misses {
			n++
		}
	}
	return n
}

func (p *ProbeState) downReason() string {
	if p.targets == 0 && p.v6 {
		return fmt.Sprintf("the IPv6 router did not answer neighbour solicitations %d rounds in a row", p.misses)
	}
	if p.targets == 0 {
		return fmt.Sprintf("the gateway did not answer ARP %d rounds in a row", p.misses)
	}
	arp := "the gateway answers ARP"
	if p.run[0] > 0 {
		arp = "the gateway does not answer ARP either"
	}
	if p.v6 {
		arp = "the IPv6 router answers neighbour solicitations"
		if p.run[0] > 0 {
			arp = "the IPv6 router does not answer neighbour solicitations either"
		}
	}
	noun := "probe targets"
	if p.targets == 1 {
		noun = "probe target"
	}
	if p.v6 {
		noun = "IPv6 " + noun
	}
	return fmt.Sprintf("%d of %d %s missed %d rounds in a row (%s)", p.missing(), p.targets, noun, p.misses, arp)
}
