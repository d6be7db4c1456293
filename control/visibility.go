package control

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"
)

// The requests of `l2shim flows`, `explain`, `events` and `top`, and their answers. Every
// answer is bounded: a page of at most MaxFlows flows, at most MaxEvents events, at most
// MaxHistory samples.
const (
	MaxFlows   = 1000
	MaxEvents  = 200
	MaxHistory = 600
	// MaxWait bounds how long an events request waits for a new event (--follow).
	MaxWait = 5 * time.Second
)

// FlowQuery selects flows for the "flows" command.
type FlowQuery struct {
	Gateway string `json:"gateway,omitempty"` // a gateway's name or address; "none": left to the host's routing
	Addr    string `json:"addr,omitempty"`    // an address or CIDR of either end, as the host or the wire sees it
	Port    int    `json:"port,omitempty"`    // a port of either end
	Proto   string `json:"proto,omitempty"`   // "tcp", "udp" or "icmp"
	State   string `json:"state,omitempty"`   // a flow state (see Flow.State)
	// ActiveWithin keeps flows seen within this many seconds.
	ActiveWithin float64 `json:"active_within,omitempty"`
	// Limit is the most flows to return (at most MaxFlows; 0 means MaxFlows).
	Limit int `json:"limit,omitempty"`
	// Cursor continues a listing where the previous answer's Next left it (0: the start).
	Cursor int `json:"cursor,omitempty"`
	// Sort "bytes" returns the Limit busiest flows (most bytes both ways) of the whole table,
	// busiest first, in one answer (Next is -1); "" lists them in table order, a page at a
	// time.
	Sort string `json:"sort,omitempty"`
}

// FlowList is a page of flows.
type FlowList struct {
	Flows []Flow `json:"flows"`
	// Next is the cursor of the next page, -1 when this was the last.
	Next int `json:"next"`
	// Total is the number of flows in the table when the page was read.
	Total int `json:"total"`
}

// Flow is one flow as `l2shim flows` lists it.
type Flow struct {
	Proto     string `json:"proto"`     // tcp, udp, icmp
	Direction string `json:"direction"` // out: the host opened it; in: the wire did
	// The tuple as the host sees it (HostSrc is the host's end), and as it is on the wire
	// (WireSrc is the host's end after NAT). ADDR:PORT, or ADDR for ICMP (Ident holds the
	// echo identifier, as the host and the wire see it).
	HostSrc    string  `json:"host_src"`
	HostDst    string  `json:"host_dst"`
	WireSrc    string  `json:"wire_src"`
	WireDst    string  `json:"wire_dst"`
	NAT        bool    `json:"nat"`
	Gateway    string  `json:"gateway"` // "" when the host's routing carries it
	HostIf     string  `json:"host_interface"`
	WireIf     string  `json:"wire_interface"`
	State      string  `json:"state"`
	Age        float64 `json:"age"`         // seconds since it was created
	Idle       float64 `json:"idle"`        // seconds since its last frame
	Timeout    float64 `json:"timeout"`     // its idle timeout in its state, seconds
	PacketsOut uint64  `json:"packets_out"` // host to wire
	PacketsIn  uint64  `json:"packets_in"`
	BytesOut   uint64  `json:"bytes_out"`
	BytesIn    uint64  `json:"bytes_in"`
	// Reason is why it has its gateway, one of: rule, source-aware, per-source, balanced,
	// failover-order, affinity, retry-elsewhere, rotated, moved-off-dead, pinned,
	// host-routing; Why says it in words.
	Reason string `json:"reason"`
	Why    string `json:"why"`
	Rule   string `json:"rule,omitempty"` // the rule that matched it
	Moves  int    `json:"moves"`          // how often it moved to another gateway
	Drop   bool   `json:"drop,omitempty"` // a rule drops its frames
}

// ExplainQuery is a hypothetical new flow for the "explain" command.
type ExplainQuery struct {
	Proto     string `json:"proto"`              // tcp, udp, icmp
	Src       string `json:"src"`                // out: the local address; in: the remote one
	Dst       string `json:"dst"`                // out: the remote address; in: the local one
	SrcPort   int    `json:"src_port,omitempty"` // tcp, udp; icmp: the echo identifier
	DstPort   int    `json:"dst_port,omitempty"`
	Direction string `json:"direction,omitempty"` // "out" (default) or "in"
	// Interface is the external interface the host sends the frame on (out; default: the one
	// the host's routing picks) or it arrives on (in; default: the one owning Dst).
	Interface string `json:"interface,omitempty"`
	// Via is, for in, the gateway the connection arrives through (default: the first on the
	// interface); "none" for a neighbour on the link.
	Via string `json:"via,omitempty"`
}

// Explanation is what explain answers.
type Explanation struct {
	// Summary says the outcome in one sentence; Steps say how, in order.
	Summary string   `json:"summary"`
	Steps   []string `json:"steps"`
	// The outcome.
	Gateway   string `json:"gateway"` // "" when the host's routing would carry it
	Interface string `json:"interface"`
	Reason    string `json:"reason"`
	Rule      string `json:"rule,omitempty"`
	Drop      bool   `json:"drop"`
	NAT       bool   `json:"nat"`
	HostSrc   string `json:"host_src"`
	HostDst   string `json:"host_dst"`
	WireSrc   string `json:"wire_src"`
	WireDst   string `json:"wire_dst"`
	// What decided it.
	Rules    []ExplainRule    `json:"rules"`
	Gateways []ExplainGateway `json:"gateways"`
	Affinity string           `json:"affinity,omitempty"`
	Hash     string           `json:"hash,omitempty"`
	Ranking  []string         `json:"ranking,omitempty"`
	OnLink   bool             `json:"on_link,omitempty"`
	Existing *Flow            `json:"existing,omitempty"`
}

// ExplainRule is one rule compared with the flow.
type ExplainRule struct {
	Name     string `json:"name"`
	Action   string `json:"action"`
	Matched  bool   `json:"matched"`
	Mismatch string `json:"mismatch,omitempty"` // the first key that did not match
}

// ExplainGateway is a gateway's state as the decision saw it.
type ExplainGateway struct {
	Name   string `json:"name"`
	State  string `json:"state"`
	Reason string `json:"reason,omitempty"`
	Usable bool   `json:"usable"`
}

// Event is one state change the running instance remembers (the last MaxEvents).
type Event struct {
	Seq     uint64    `json:"seq"` // increasing from 1
	Time    time.Time `json:"time"`
	Kind    string    `json:"kind"` // gateway, bench, drain, flows, reload, start, all-down
	Gateway string    `json:"gateway,omitempty"`
	Message string    `json:"message"`
}

// Sample is the gateways' counters at one moment; the instance keeps one a second for the last
// MaxHistory seconds. Rates are the differences of consecutive samples.
type Sample struct {
	Time     time.Time       `json:"time"`
	Gateways []SampleGateway `json:"gateways"`
}

// SampleGateway is one gateway in a Sample.
type SampleGateway struct {
	Name       string `json:"name"`
	State      string `json:"state"`
	Flows      uint64 `json:"flows"`
	BytesOut   uint64 `json:"bytes_out"`
	BytesIn    uint64 `json:"bytes_in"`
	PacketsOut uint64 `json:"packets_out"`
	PacketsIn  uint64 `json:"packets_in"`
}

// The optional parts of a Handler: a server answers "flows", "explain", "events" and
// "history" when its handler has them.
type (
	FlowsHandler interface {
		Flows(q FlowQuery) (*FlowList, error)
	}
	ExplainHandler interface {
		Explain(q ExplainQuery) (*Explanation, error)
	}
	EventsHandler interface {
		// Events returns the remembered events after sequence number after (oldest first),
		// waiting up to wait for one when there is none yet.
		Events(after uint64, wait time.Duration) []Event
	}
	HistoryHandler interface {
		// History returns the samples of the last seconds seconds, oldest first.
		History(seconds int) []Sample
	}
)

// handleVisibility answers the commands of this file; ok is false for any other command.
func (s *Server) handleVisibility(req Request) (Response, bool) {
	switch req.Command {
	case "flows":
		h, ok := s.h.(FlowsHandler)
		if !ok {
			return Response{Error: "flows: not supported"}, true
		}
		q := FlowQuery{}
		if req.Flows != nil {
			q = *req.Flows
		}
		if q.Limit <= 0 || q.Limit > MaxFlows {
			q.Limit = MaxFlows
		}
		fl, err := h.Flows(q)
		if err != nil {
			return Response{Error: err.Error()}, true
		}
		return Response{OK: true, Flows: fl}, true
	case "explain":
		h, ok := s.h.(ExplainHandler)
		if !ok || req.Explain == nil {
			return Response{Error: "explain: no flow to explain"}, true
		}
		x, err := h.Explain(*req.Explain)
		if err != nil {
			return Response{Error: err.Error()}, true
		}
		return Response{OK: true, Explain: x}, true
	case "events":
		h, ok := s.h.(EventsHandler)
		if !ok {
			return Response{Error: "events: not supported"}, true
		}
		wait := min(max(time.Duration(req.Wait*float64(time.Second)), 0), MaxWait)
		ev := h.Events(req.After, wait)
		if len(ev) > MaxEvents {
			ev = ev[len(ev)-MaxEvents:]
		}
		return Response{OK: true, Events: ev}, true
	case "history":
		h, ok := s.h.(HistoryHandler)
		if !ok {
			return Response{Error: "history: not supported"}, true
		}
		n := req.Seconds
		if n <= 0 || n > MaxHistory {
			n = MaxHistory
		}
		return Response{OK: true, History: h.History(n)}, true
	}
	return Response{}, false
}

// WriteFlows prints flows as a table for a person: one line a flow, the host's tuple, the
// wire's when NAT changes it, and why it has its gateway.
func WriteFlows(w io.Writer, flows []Flow) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "PROTO\tDIR\tHOST SRC\tDST\tWIRE SRC\tGATEWAY\tSTATE\tAGE\tIDLE\tOUT\tIN\tREASON")
	for _, f := range flows {
		wire := "="
		if f.WireSrc != f.HostSrc {
			wire = f.WireSrc
		}
		gw := f.Gateway
		if gw == "" {
			gw = "(host)"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s/%d\t%s/%d\t%s\n", f.Proto, f.Direction, f.HostSrc, f.HostDst, wire, gw, f.State,
			Seconds(f.Age), Seconds(f.Idle), bytesText(f.BytesOut), f.PacketsOut, bytesText(f.BytesIn), f.PacketsIn, f.Why)
	}
	return tw.Flush()
}

// WriteExplanation prints an explanation for a person.
func WriteExplanation(w io.Writer, x *Explanation) error {
	fmt.Fprintf(w, "%s\n\n", x.Summary)
	for i, s := range x.Steps {
		fmt.Fprintf(w, "%2d. %s\n", i+1, s)
	}
	if len(x.Gateways) > 0 {
		fmt.Fprintln(w)
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "GATEWAY\tSTATE\tNEW FLOWS\tREASON")
		for _, g := range x.Gateways {
			usable := "no"
			if g.Usable {
				usable = "yes"
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", g.Name, g.State, usable, orDash(g.Reason))
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}
	_, err := fmt.Fprintln(w, "\n(explain changes nothing: no flow was created)")
	return err
}

// WriteEvents prints events, one a line.
func WriteEvents(w io.Writer, ev []Event) error {
	for _, e := range ev {
		if _, err := fmt.Fprintln(w, EventLine(e)); err != nil {
			return err
		}
	}
	return nil
}

// EventLine is one event as the status and `l2shim events` print it.
func EventLine(e Event) string {
	var b strings.Builder
	b.WriteString(e.Time.Local().Format("2006-01-02 15:04:05"))
	b.WriteString("  ")
	b.WriteString(e.Kind)
	if e.Gateway != "" {
		b.WriteString(" " + e.Gateway)
	}
	b.WriteString(": " + e.Message)
	return b.String()
}

// Seconds renders a duration in seconds compactly: 0.4s, 12s, 3m4s, 2h5m, 3d4h.
func Seconds(s float64) string {
	d := time.Duration(s * float64(time.Second))
	switch {
	case d < 10*time.Second:
		return fmt.Sprintf("%.1fs", d.Seconds())
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm%ds", int(d.Minutes()), int(d.Seconds())%60)
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh%dm", int(d.Hours()), int(d.Minutes())%60)
	}
	return fmt.Sprintf("%dd%dh", int(d.Hours())/24, int(d.Hours())%24)
}

// BytesText renders a byte count as status does: 512B, 1.5KiB, 3.2MiB.
func BytesText(n uint64) string { return bytesText(n) }
