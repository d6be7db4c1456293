package failover

import (
	"testing"
	"time"
)

func TestStateString(t *testing.T) {
	for s, want := range map[State]string{Up: "up", Degraded: "degraded", Down: "down", 7: "State(7)"} {
		if s.String() != want {
			t.Errorf("%d: %q", s, s.String())
		}
	}
	if got := (Status{Down, "drained"}).String(); got != "down: drained" {
		t.Errorf("%q", got)
	}
	if got := (Status{Up, ""}).String(); got != "up" {
		t.Errorf("%q", got)
	}
}

func TestEvaluate(t *testing.T) {
	healthy := Inputs{
		On: true, LinkUp: true, MACKnown: true, Probing: true,
		Probe:  ProbeSummary{Up: true, Targets: 2, Misses: 3},
		Window: 60 * time.Second,
	}
	for _, tc := range []struct {
		name   string
		edit   func(*Inputs)
		state  State
		reason string
	}{
		{"healthy", func(*Inputs) {}, Up, ""},
		{"probing off", func(in *Inputs) { in.Probing, in.Probe = false, ProbeSummary{} }, Up, ""},
		{"off", func(in *Inputs) { in.On = false }, Down, "off in the config"},
		{"drained", func(in *Inputs) { in.Drained = true }, Down, "drained"},
		{"interface down", func(in *Inputs) { in.LinkUp = false }, Down, "interface down"},
		{"no MAC", func(in *Inputs) { in.MACKnown = false }, Down, "gateway MAC not resolved (no ARP reply)"},
		{"drained and interface down", func(in *Inputs) { in.Drained, in.LinkUp = true, false }, Down, "drained; interface down"},
		{"probes down", func(in *Inputs) { in.Probe.Up, in.Probe.Missing = false, 2 }, Down,
			"probes: 2 of 2 targets missed 3 rounds in a row"},
		{"probes down, ARP only", func(in *Inputs) { in.Probe = ProbeSummary{Missing: 1, ARPMissing: true, Misses: 3} }, Down,
			"probes: no ARP reply 3 rounds in a row"},
		{"probes recovering", func(in *Inputs) { in.Probe.Up, in.Probe.GoodRounds = false, 1 }, Down,
			"probes: recovering, 1 of 3 good rounds"},
		{"probes down but probing off", func(in *Inputs) { in.Probing, in.Probe.Up = false, false }, Up, ""},
		{"a target missing", func(in *Inputs) { in.Probe.Missing = 1 }, Degraded,
			"probes: 1 of 2 targets missed 3 rounds in a row"},
		{"ARP missing, targets answer", func(in *Inputs) { in.Probe.ARPMissing = true }, Degraded,
			"no ARP reply 3 rounds in a row (probe targets answer)"},
		{"benched", func(in *Inputs) { in.Health = GatewayHealth{Attempts: 8, Failures: 5, Benched: true} }, Down,
			"benched: 5 of 8 connection attempts failed in 60s"},
		{"benched, awaiting a probe", func(in *Inputs) {
			in.Health = GatewayHealth{Attempts: 3, Failures: 1, Pending: 1, Benched: true, AwaitingProbe: true}
		}, Down, "benched: failures aged out (1 of 3 connection attempts failed in 60s), waiting for a probe to confirm"},
		{"some failures", func(in *Inputs) { in.Health = GatewayHealth{Attempts: 10, Failures: 2} }, Degraded,
			"2 of 10 connection attempts failed in 60s"},
		{"pending failures", func(in *Inputs) { in.Health = GatewayHealth{Attempts: 1, Pending: 1} }, Degraded,
			"1 unconfirmed failure (destination not yet reached through another gateway)"},
		{"several degraded causes", func(in *Inputs) {
			in.Probe.Missing = 1
			in.Health = GatewayHealth{Attempts: 10, Failures: 1, Pending: 3}
			in.Window = 1500 * time.Millisecond
		}, Degraded, "probes: 1 of 2 targets missed 3 rounds in a row; 1 of 10 connection attempts failed in 1.5s; " +
			"3 unconfirmed failures (destination not yet reached through another gateway)"},
		{"down hides degraded", func(in *Inputs) { in.Probe.Missing, in.Drained = 1, true }, Down, "drained"},
	} {
		in := healthy
		tc.edit(&in)
		got := Evaluate(in)
		if got.State != tc.state || got.Reason != tc.reason {
			t.Errorf("%s: %v, want %v: %q", tc.name, got, tc.state, tc.reason)
		}
		if in.Usable() != (got.State != Down) || in.Usable() != (tc.state != Down) {
			t.Errorf("%s: Inputs.Usable %v, state %v", tc.name, in.Usable(), got.State)
		}
	}
}

// TestEvaluateFromParts wires a ProbeState and a Health into Inputs as the shim would.
func TestEvaluateFromParts(t *testing.T) {
	p := NewProbeState(1, 3)
	h := defaultHealth(2)
	in := func(now int64) Inputs {
		return Inputs{On: true, LinkUp: true, MACKnown: true, Probing: true,
			Probe: p.Summary(), Health: h.Stats(0, now), Window: h.Config().Window}
	}
	if s := Evaluate(in(0)); s.State != Up {
		t.Fatalf("%v", s)
	}
	for range 3 {
		p.Round([]bool{true, false})
	}
	if s := Evaluate(in(sec)); s.State != Down || s.Reason != "probes: 1 of 1 target missed 3 rounds in a row" {
		t.Fatalf("%v", s)
	}
}

// TestEvaluateIPv6Texts: the IPv6 inputs of a gateway name what IPv6 lacks.
func TestEvaluateIPv6Texts(t *testing.T) {
	in := Inputs{On: true, LinkUp: true, MACKnown: false, NoAddress: true, IPv6: true}
	st := Evaluate(in)
	if st.State != Down || st.Reason != "interface has no global IPv6 address; IPv6 router not resolved (no neighbour entry)" {
		t.Fatalf("IPv6 without address or router: %v", st)
	}
	in.IPv6 = false
	if st := Evaluate(in); st.Reason != "interface has no IPv4 address; gateway MAC not resolved (no ARP reply)" {
		t.Fatalf("IPv4 texts changed: %v", st)
	}
}
