package failover

import (
	"fmt"
	"strings"
	"time"
)

// State is a gateway's condition as the status table and the logs show it.
type State uint8

const (
	// Up: usable, nothing wrong seen.
	Up State = iota
	// Degraded: usable for new flows, but something is off (a probe target or ARP not
	// answering, connection attempts failing, failures pending).
	Degraded
	// Down: gets no new flows.
	Down
)

func (s State) String() string {
	switch s {
	case Up:
		return "up"
	case Degraded:
		return "degraded"
	case Down:
		return "down"
	}
	return fmt.Sprintf("State(%d)", uint8(s))
}

// Inputs is everything that decides a gateway's State.
type Inputs struct {
	On      bool // on = true in the config
	Drained bool // l2shim drain
	LinkUp  bool // the gateway's interface is up (netlink)
	// NoAddress: the gateway's interface has no IPv4 address (a DHCP lease being renewed), so
	// nothing could leave through it with a source address of its own.
	NoAddress bool
	MACKnown  bool // the gateway's MAC is configured or resolved by ARP
	// IPv6: the inputs are the gateway's for IPv6 flows (NoAddress: no global IPv6 address;
	// MACKnown: its IPv6 router's MAC); only the reason texts differ.
	IPv6 bool
	// PeerSilent, when not empty, says why the tunnel the gateway is reached through (its
	// link is a WireGuard one) counts as down: its peer does not answer (PeerWatch).
	PeerSilent string
	Probing    bool // probe_interval > 0: Probe is meaningful
	Probe      ProbeSummary
	Health     GatewayHealth
	Window     time.Duration // [failover] window, for the reason text
}

// Usable reports whether the gateway may get new flows: the one definition of usable, the same
// as Evaluate(in).State != Down without building a reason.
func (in *Inputs) Usable() bool {
	return in.On && !in.Drained && in.LinkUp && !in.NoAddress && in.MACKnown && in.PeerSilent == "" &&
		(!in.Probing || in.Probe.Up) && !in.Health.Benched
}

// Status is a gateway's State with the reason for it ("" when up).
type Status struct {
	State  State
	Reason string
}

func (s Status) String() string {
	if s.Reason == "" {
		return s.State.String()
	}
	return s.State.String() + ": " + s.Reason
}

// Evaluate combines the inputs into a Status. Every cause applies, joined with "; ": all
// reasons for Down when any, otherwise all reasons for Degraded. It allocates: call it when an
// input changes (or for the status table), and Inputs.Usable on hot paths.
func Evaluate(in Inputs) Status {
	var down, degraded []string
	if !in.On {
		down = append(down, "off in the config")
	}
	if in.Drained {
		down = append(down, "drained")
	}
	if !in.LinkUp {
		down = append(down, "interface down")
	}
	if in.NoAddress && in.IPv6 {
		down = append(down, "interface has no global IPv6 address")
	} else if in.NoAddress {
		down = append(down, "interface has no IPv4 address")
	}
	if in.PeerSilent != "" {
		down = append(down, in.PeerSilent)
	}
	if !in.MACKnown && in.LinkUp && in.IPv6 {
		down = append(down, "IPv6 router not resolved (no neighbour entry)")
	} else if !in.MACKnown && in.LinkUp {
		// (while the link is down that says it all, and an L3 link has no ARP at all)
		down = append(down, "gateway MAC not resolved (no ARP reply)")
	}
	pr := in.Probe
	if in.Probing {
		switch {
		case !pr.Up && pr.Missing > 0:
			down = append(down, "probes: "+probeMissingText(pr))
		case !pr.Up:
			down = append(down, fmt.Sprintf("probes: recovering, %d of %d good rounds", pr.GoodRounds, pr.Misses))
		case pr.Missing > 0:
			degraded = append(degraded, "probes: "+probeMissingText(pr))
		}
		if pr.Up && pr.ARPMissing && pr.Targets > 0 && pr.IPv6 {
			degraded = append(degraded, fmt.Sprintf("no neighbour advertisement from the IPv6 router %d rounds in a row (probe targets answer)", pr.Misses))
		} else if pr.Up && pr.ARPMissing && pr.Targets > 0 {
			// with targets ARP does not vote, so it can miss while the gateway is up
			degraded = append(degraded, fmt.Sprintf("no ARP reply %d rounds in a row (probe targets answer)", pr.Misses))
		}
	}
	hl := in.Health
	switch {
	case hl.Benched && hl.AwaitingProbe:
		down = append(down, "benched: failures aged out ("+FailureText(hl.Attempts, hl.Failures, in.Window)+"), waiting for a probe to confirm")
	case hl.Benched:
		down = append(down, "benched: "+FailureText(hl.Attempts, hl.Failures, in.Window))
	case hl.Failures > 0:
		degraded = append(degraded, FailureText(hl.Attempts, hl.Failures, in.Window))
	}
	if hl.Pending > 0 && !hl.Benched {
		noun := "failures"
		if hl.Pending == 1 {
			noun = "failure"
		}
		degraded = append(degraded, fmt.Sprintf("%d unconfirmed %s (destination not yet reached through another gateway)", hl.Pending, noun))
	}
	switch {
	case len(down) > 0:
		return Status{Down, strings.Join(down, "; ")}
	case len(degraded) > 0:
		return Status{Degraded, strings.Join(degraded, "; ")}
	}
	return Status{Up, ""}
}

func probeMissingText(pr ProbeSummary) string {
	if pr.Targets == 0 && pr.IPv6 {
		return fmt.Sprintf("no neighbour advertisement from the IPv6 router %d rounds in a row", pr.Misses)
	}
	if pr.Targets == 0 {
		return fmt.Sprintf("no ARP reply %d rounds in a row", pr.Misses)
	}
	noun := "targets"
	if pr.Targets == 1 {
		noun = "target"
	}
	if pr.IPv6 {
		noun = "IPv6 " + noun
	}
	return fmt.Sprintf("%d of %d %s missed %d rounds in a row", pr.Missing, pr.Targets, noun, pr.Misses)
}
