package datapath

import (
	"sync/atomic"

	"github.com/l2shim/l2shim/rewrite"
)

// Counter names one of the engine's running totals. The same list feeds the status table,
// the log line at stop and the Prometheus endpoint.
type Counter uint8

// The counters, by what they count.
const (
	FramesOut      Counter = iota // frames from the host (direction host → wire)
	FramesIn                      // frames from the wire (direction wire → host)
	FlowsCreated                  // flows entered into the table
	NATed                         // frames whose addresses or ports were translated
	Passed                        // frames left exactly as the host sent them
	Rotations                     // connection requests moved to the next gateway
	LateAnswers                   // wire frames for a tuple a flow rotated away from
	Segmented                     // tunnels' TSO super-frames cut in software
	Fragmented                    // IPv4 datagrams without DF cut into fragments for a smaller path MTU
	TCPReset                      // TCP flows of a down gateway reset toward the host
	UDPMoved                      // UDP flows of a down gateway moved to a live one
	ProbeReplies                  // replies to the shim's own probes, consumed
	TableFull                     // new flows the full table could not take
	FragTableFull                 // first fragments whose followers could not be remembered
	InboundRefused                // flows from the wire over their share of the table, not tracked
	FastOut                       // frames the kernel\'s fast path carried host → wire
	FastIn                        // ... wire → host
	SendErrors                    // frames the kernel refused to send
	SendTooBig                    // ... of which EMSGSIZE
	Lost                          // frames the kernel could not hand over with a virtio-net header
	numCounters
)

func (c Counter) String() string {
	switch c {
	case FramesOut:
		return "frames_out"
	case FramesIn:
		return "frames_in"
	case FlowsCreated:
		return "flows_created"
	case NATed:
		return "nated"
	case Passed:
		return "passed"
	case Rotations:
		return "rotations"
	case LateAnswers:
		return "late_answers"
	case Segmented:
		return "segmented"
	case Fragmented:
		return "fragmented"
	case TCPReset:
		return "tcp_reset"
	case UDPMoved:
		return "udp_moved"
	case ProbeReplies:
		return "probe_replies"
	case TableFull:
		return "table_full"
	case FragTableFull:
		return "frag_table_full"
	case InboundRefused:
		return "inbound_refused"
	case FastOut:
		return "fast_out"
	case FastIn:
		return "fast_in"
	case SendErrors:
		return "send_errors"
	case SendTooBig:
		return "send_too_big"
	case Lost:
		return "lost"
	}
	return "unknown"
}

// DropReason says why a frame was dropped.
type DropReason uint8

// The drop reasons.
const (
	DropNone DropReason = iota
	// DropMalformed: the frame could not be parsed (see the malformed counters by reason), or
	// a tunnel's super-frame could not be segmented.
	DropMalformed
	// DropUnknownDirection: neither MAC is the interface's own.
	DropUnknownDirection
	// DropTooBig: a DF frame larger than its uplink's MTU; the host got an ICMP
	// fragmentation-needed instead.
	DropTooBig
	// DropRotated: a late frame for a tuple its flow rotated away from.
	DropRotated
	// DropRule: a frame of a flow a rule drops (or a strict route-to whose gateway is down).
	DropRule
	// DropReset: a frame of a flow l2shim reset toward the host when its gateway went down.
	DropReset
	// DropUnsegmentable: a tunnel's super-frame the kernel will not send back as it is and
	// l2shim cannot cut either (UDP fragmentation offload, an inner routing or fragment
	// header, an encapsulation it does not know).
	DropUnsegmentable
	// DropNoRoom: a tunnel's super-frame cut into more segments than its batch still had room
	// for.
	DropNoRoom
	numDropReasons
)

func (r DropReason) String() string {
	switch r {
	case DropMalformed:
		return "malformed"
	case DropUnknownDirection:
		return "unknown-direction"
	case DropTooBig:
		return "too-big"
	case DropRotated:
		return "rotated"
	case DropRule:
		return "rule"
	case DropReset:
		return "reset"
	case DropUnsegmentable:
		return "unsegmentable"
	case DropNoRoom:
		return "no-room"
	}
	return "none"
}

// Counters are the engine's running totals. Every field is atomic, so readers (status,
// metrics, the frame loops' I/O errors) never take the engine's lock.
type Counters struct {
	totals    [numCounters]atomic.Uint64
	drops     [numDropReasons]atomic.Uint64
	malformed [rewrite.NumReasons]atomic.Uint64
}

// Add adds n to counter c.
func (c *Counters) Add(which Counter, n uint64) { c.totals[which].Add(n) }

// Load returns counter c.
func (c *Counters) Load(which Counter) uint64 { return c.totals[which].Load() }

// Dropped returns how many frames were dropped for reason r.
func (c *Counters) Dropped(r DropReason) uint64 { return c.drops[r].Load() }

func (c *Counters) drop(r DropReason) { c.drops[r].Add(1) }

// Group says which table of the status a counter belongs to.
type Group uint8

// The groups Each reports.
const (
	GroupTotals    Group = iota // Counter values, by Counter.String
	GroupDrops                  // frames dropped, by DropReason.String
	GroupMalformed              // frames that failed to parse, by rewrite.Reason.String
)

// Each calls fn for every counter in a fixed order: the totals, the drop reasons (from
// DropMalformed on), then the parse failures by reason.
func (c *Counters) Each(fn func(g Group, name string, v uint64)) {
	for i := Counter(0); i < numCounters; i++ {
		fn(GroupTotals, i.String(), c.totals[i].Load())
	}
	for r := DropMalformed; r < numDropReasons; r++ {
		fn(GroupDrops, r.String(), c.drops[r].Load())
	}
	for r := rewrite.Reason(1); r < rewrite.NumReasons; r++ {
		fn(GroupMalformed, r.String(), c.malformed[r].Load())
	}
}
