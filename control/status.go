package control

import (
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"
	"time"
)

// Status is a running instance's state, as `l2shim status --json` prints it.
type Status struct {
	Started     time.Time         `json:"started"`
	Mode        string            `json:"mode"`
	SourceAware bool              `json:"source_aware"`
	Config      string            `json:"config"`
	Reloads     uint64            `json:"reloads"`
	Gateways    []GatewayStatus   `json:"gateways"`
	Rules       []RuleStatus      `json:"rules"`
	Conntrack   ConntrackStatus   `json:"conntrack"`
	Datapath    map[string]uint64 `json:"datapath"` // frames_out, frames_in, nated, ...
	Drops       map[string]uint64 `json:"drops"`    // by reason
	// Events are the last state changes (at most 5), oldest first.
	Events []Event `json:"events,omitempty"`
	// Affinity is [shim] affinity: "flow" or "host-pair".
	Affinity string `json:"affinity,omitempty"`
	// Attach is how the kernel hooks are attached: "tcx" or "tc" (see [shim] attach).
	Attach string `json:"attach,omitempty"`
	// Source6 are the uplinks' IPv6 prefixes: packets with a source address in one leave
	// through its uplink's router (IPv6 per-source routing).
	Source6 []Source6Status `json:"source6,omitempty"`
}

// Source6Status is one IPv6 prefix of an uplink.
type Source6Status struct {
	Prefix    string `json:"prefix"`
	Interface string `json:"interface"`
	Router    string `json:"router"` // "" on a link without a link-layer header, or when unknown
	MAC       string `json:"mac"`    // the router's; "" when not resolved yet (or none needed)
	// Active: the kernel steers the prefix (its router's MAC is known, or none is needed).
	Active bool `json:"active"`
}

// GatewayStatus is one row of the gateway table, the heir of IPNetRouterX's Alternate Route
// window.
type GatewayStatus struct {
	Name      string `json:"name"`
	Interface string `json:"interface"`
	Address   string `json:"address"`
	MAC       string `json:"mac"`
	On        bool   `json:"on"`
	Comment   string `json:"comment"`
	Weight    int    `json:"weight"`
	State     string `json:"state"`  // up, degraded, down
	Reason    string `json:"reason"` // why it is not up, or "" when up
	// State6 and Reason6 are the same for IPv6 flows, and MAC6 its IPv6 router's MAC; all ""
	// when its interface has no global IPv6 address.
	State6  string `json:"state6,omitempty"`
	Reason6 string `json:"reason6,omitempty"`
	MAC6    string `json:"mac6,omitempty"`
	// RTT6Millis is RTTMillis for its IPv6 probe targets (0 when none answered, or it has
	// none): with IPv6 targets, State6 is their verdict, kept apart from IPv4's.
	RTT6Millis float64 `json:"rtt6_ms,omitempty"`
	Drained    bool    `json:"drained"`
	// Active and Failed are the connection attempts and the counted failures in the window.
	Active int `json:"active"`
	Failed int `json:"failed"`
	// Flows is the number of the gateway's flows in the table now, Placed how many were
	// placed on it since start.
	Flows      uint64    `json:"flows"`
	Placed     uint64    `json:"placed"`
	PacketsOut uint64    `json:"packets_out"`
	PacketsIn  uint64    `json:"packets_in"`
	BytesOut   uint64    `json:"bytes_out"`
	BytesIn    uint64    `json:"bytes_in"`
	RTTMillis  float64   `json:"rtt_ms"` // last probe round trip, 0 when none
	LastChange time.Time `json:"last_change"`
}

// RuleStatus holds one rule's counters.
type RuleStatus struct {
	Index   int    `json:"index"`
	Name    string `json:"name"`
	Action  string `json:"action"`
	Gateway string `json:"gateway,omitempty"`
	// Affinity is that of the flows the rule leaves to the mode's choice (balance,
	// route-to); "" for pass and drop.
	Affinity string `json:"affinity,omitempty"`
	Flows    uint64 `json:"flows"`
	Packets  uint64 `json:"packets"`
	Bytes    uint64 `json:"bytes"`
}

// ConntrackStatus describes the flow table.
type ConntrackStatus struct {
	Flows     int    `json:"flows"`
	Max       int    `json:"max"`
	Evictions uint64 `json:"evictions"`
	Expired   uint64 `json:"expired"`
}

// WriteTable prints s for a person.
func WriteTable(w io.Writer, s *Status, now time.Time) error {
	aff := ""
	if s.Affinity != "" && s.Affinity != "flow" {
		aff = ", affinity " + s.Affinity
	}
	att := ""
	if s.Attach != "" {
		att = ", attach " + s.Attach
	}
	fmt.Fprintf(w, "l2shim: mode %s%s, source-aware %v%s, up %s, config %s, reloads %d\n\n",
		s.Mode, aff, s.SourceAware, att, now.Sub(s.Started).Round(time.Second), s.Config, s.Reloads)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "INTERFACE\tGATEWAY\tADDRESS\tMAC\tON\tSTATE\tACTIVE\tFAILED\tFLOWS\tOUT\tIN\tRTT\tSINCE\tCOMMENT")
	for _, g := range s.Gateways {
		state := g.State
		if g.Drained {
			state += ",drained"
		}
		rtt := "-"
		if g.RTTMillis > 0 {
			rtt = fmt.Sprintf("%.1fms", g.RTTMillis)
		}
		since := "-"
		if !g.LastChange.IsZero() {
			since = now.Sub(g.LastChange).Round(time.Second).String()
		}
		on := "yes"
		if !g.On {
			on = "no"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%d\t%d\t%d\t%s/%d\t%s/%d\t%s\t%s\t%s\n",
			g.Interface, g.Name, orDash(g.Address), orDash(g.MAC), on, state, g.Active, g.Failed, g.Flows,
			bytesText(g.BytesOut), g.PacketsOut, bytesText(g.BytesIn), g.PacketsIn, rtt, since, g.Comment)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, g := range s.Gateways {
		if g.Reason != "" {
			fmt.Fprintf(w, "  %s: %s\n", g.Name, g.Reason)
		}
	}
	for _, g := range s.Gateways {
		if g.State6 == "" {
			continue
		}
		line := "  " + g.Name + " IPv6: " + g.State6
		if g.Reason6 != "" {
			line += ": " + g.Reason6
		}
		if g.MAC6 != "" {
			line += " (router " + g.MAC6 + ")"
		}
		if g.RTT6Millis > 0 {
			line += fmt.Sprintf(", rtt %.1fms", g.RTT6Millis)
		}
		fmt.Fprintln(w, line)
	}
	if len(s.Rules) > 0 {
		fmt.Fprintln(w)
		tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "RULE\tACTION\tGATEWAY\tFLOWS\tPACKETS\tBYTES")
		for _, r := range s.Rules {
			action := r.Action
			if r.Affinity == "host-pair" {
				action += " (host-pair)"
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d\t%s\n", r.Name, action, orDash(r.Gateway), r.Flows, r.Packets, bytesText(r.Bytes))
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}
	if len(s.Source6) > 0 {
		fmt.Fprintln(w)
		tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "IPV6 SOURCE PREFIX\tINTERFACE\tROUTER\tMAC\tSTEERED")
		for _, p := range s.Source6 {
			steered := "yes"
			if !p.Active {
				steered = "no: router not resolved"
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", p.Prefix, p.Interface, orDash(p.Router), orDash(p.MAC), steered)
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}
	fmt.Fprintf(w, "\nconntrack: %d flows (max %d), %d evicted, %d expired\n", s.Conntrack.Flows, s.Conntrack.Max, s.Conntrack.Evictions, s.Conntrack.Expired)
	fmt.Fprintf(w, "datapath: %s\n", kv(s.Datapath))
	_, err := fmt.Fprintf(w, "drops: %s\n", kv(s.Drops))
	if len(s.Events) > 0 && err == nil {
		fmt.Fprintln(w, "\nrecent events (l2shim events for more):")
		for _, e := range s.Events {
			fmt.Fprintf(w, "  %s\n", EventLine(e))
		}
	}
	return err
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func kv(m map[string]uint64) string {
	if len(m) == 0 {
		return "none"
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s=%d", k, m[k])
	}
	return strings.Join(parts, " ")
}

func bytesText(n uint64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%dB", n)
	}
	div, exp := uint64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f%ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
