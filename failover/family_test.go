package failover

import (
	"strings"
	"testing"
	"time"
)

// TestProbeFamilies: a gateway's IPv4 and IPv6 probe verdicts are kept apart. IPv6 rounds that
// miss (the ISP lost IPv6) take the IPv6 verdict down after probe_misses rounds while IPv4,
// answering, stays up; the IPv6 Inputs evaluate down and the IPv4 ones up, each with its
// family's words; IPv6 comes back after probe_misses good rounds.
func TestProbeFamilies(t *testing.T) {
	const misses = 3
	v4 := NewProbeState(1, misses)  // ARP + one IPv4 target
	v6 := NewProbeState6(1, misses) // NS + one IPv6 target
	for r := 1; r <= misses; r++ {
		if changed, up, _ := v4.Round([]bool{true, true}); changed || !up {
			t.Fatalf("round %d: IPv4 verdict changed=%v up=%v", r, changed, up)
		}
		changed, up, reason := v6.Round([]bool{true, false}) // the router answers NS, the target not
		if r < misses && (changed || !up) {
			t.Fatalf("round %d: IPv6 down too early", r)
		}
		if r == misses {
			if !changed || up {
				t.Fatalf("round %d: IPv6 verdict changed=%v up=%v, want down", r, changed, up)
			}
			if want := "1 of 1 IPv6 probe target missed 3 rounds in a row (the IPv6 router answers neighbour solicitations)"; reason != want {
				t.Errorf("IPv6 down reason %q, want %q", reason, want)
			}
		}
	}
	base := Inputs{On: true, LinkUp: true, MACKnown: true, Probing: true, Window: time.Minute}
	in4, in6 := base, base
	in4.Probe = v4.Summary()
	in6.IPv6, in6.Probe = true, v6.Summary()
	if !in4.Usable() || Evaluate(in4).State != Up {
		t.Errorf("IPv4: usable %v, %v", in4.Usable(), Evaluate(in4))
	}
	st6 := Evaluate(in6)
	if in6.Usable() || st6.State != Down || st6.Reason != "probes: 1 of 1 IPv6 target missed 3 rounds in a row" {
		t.Errorf("IPv6: usable %v, %v", in6.Usable(), st6)
	}
	for r := 1; r <= misses; r++ {
		changed, up, _ := v6.Round([]bool{true, true})
		if (r == misses) != changed || up != (r == misses) {
			t.Fatalf("recovery round %d: changed=%v up=%v", r, changed, up)
		}
	}
	if !v4.Up() || !v6.Up() {
		t.Fatal("not both up after recovery")
	}
}

// TestProbeFamilyNSTexts: the IPv6 verdict speaks of neighbour solicitations where the IPv4
// one speaks of ARP: a router that stopped answering NS while the IPv6 targets answer is
// degraded, and without IPv6 targets NS alone votes.
func TestProbeFamilyNSTexts(t *testing.T) {
	v6 := NewProbeState6(2, 2)
	for range 2 {
		if changed, _, _ := v6.Round([]bool{false, true, true}); changed {
			t.Fatal("NS does not vote when there are IPv6 targets")
		}
	}
	in := Inputs{On: true, LinkUp: true, MACKnown: true, Probing: true, IPv6: true, Probe: v6.Summary()}
	if st := Evaluate(in); st.State != Degraded || !strings.Contains(st.Reason, "no neighbour advertisement from the IPv6 router 2 rounds in a row (probe targets answer)") {
		t.Errorf("NS missing, targets answer: %v", st)
	}
	only := NewProbeState6(0, 2)
	only.Round([]bool{false})
	changed, up, reason := only.Round([]bool{false})
	if !changed || up || reason != "the IPv6 router did not answer neighbour solicitations 2 rounds in a row" {
		t.Errorf("NS only: changed=%v up=%v %q", changed, up, reason)
	}
	in.Probe = only.Summary()
	if st := Evaluate(in); st.State != Down || st.Reason != "probes: no neighbour advertisement from the IPv6 router 2 rounds in a row" {
		t.Errorf("NS only: %v", st)
	}
	// IPv4 texts are unchanged.
	v4 := NewProbeState(0, 1)
	if _, _, reason := v4.Round([]bool{false}); reason != "the gateway did not answer ARP 1 rounds in a row" {
		t.Errorf("IPv4 ARP-only reason %q", reason)
	}
}
