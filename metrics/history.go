package metrics

import (
	"sync"
	"time"

	"github.com/l2shim/l2shim/control"
)

// History keeps the last samples of the gateways' counters, one a second, for the status
// page's plots and `l2shim top`. It is a fixed ring: memory does not grow with uptime.
type History struct {
	mu   sync.Mutex
	ring []control.Sample
	head int // the oldest sample
	n    int
}

// NewHistory returns a history that keeps the last size samples.
func NewHistory(size int) *History {
	return &History{ring: make([]control.Sample, max(size, 1))}
}

// Add appends a sample, dropping the oldest when the ring is full. Samples must come in time
// order.
func (h *History) Add(s control.Sample) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.n == len(h.ring) {
		h.ring[h.head] = s
		h.head = (h.head + 1) % len(h.ring)
		return
	}
	h.ring[(h.head+h.n)%len(h.ring)] = s
	h.n++
}

// Since returns the samples taken at or after t, oldest first.
func (h *History) Since(t time.Time) []control.Sample {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []control.Sample
	for i := range h.n {
		s := h.ring[(h.head+i)%len(h.ring)]
		if !s.Time.Before(t) {
			out = append(out, s)
		}
	}
	return out
}

// Len returns how many samples the history holds.
func (h *History) Len() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.n
}

// Rate is one gateway's traffic between two samples.
type Rate struct {
	Time            time.Time // of the later sample
	BitsIn, BitsOut float64   // per second
	PktsIn, PktsOut float64   // per second
	Flows           uint64    // in the table at the later sample
	State           string
}

// Rates returns gateway name's rates between consecutive samples, oldest first. A sample
// without the gateway (before a reload added it) breaks the series: the next rate starts from
// the next pair that has it. A counter that went backwards (the gateway was re-created by a
// reload) counts as zero.
func Rates(samples []control.Sample, name string) []Rate {
	var out []Rate
	var prev *control.SampleGateway
	var prevT time.Time
	for _, s := range samples {
		var cur *control.SampleGateway
		for i := range s.Gateways {
			if s.Gateways[i].Name == name {
				cur = &s.Gateways[i]
			}
		}
		if cur == nil {
			prev = nil
			continue
		}
		if prev != nil {
			dt := s.Time.Sub(prevT).Seconds()
			if dt > 0 {
				d := func(a, b uint64) float64 {
					if b < a {
						return 0
					}
					return float64(b-a) / dt
				}
				out = append(out, Rate{
					Time:    s.Time,
					BitsIn:  8 * d(prev.BytesIn, cur.BytesIn),
					BitsOut: 8 * d(prev.BytesOut, cur.BytesOut),
					PktsIn:  d(prev.PacketsIn, cur.PacketsIn),
					PktsOut: d(prev.PacketsOut, cur.PacketsOut),
					Flows:   cur.Flows,
					State:   cur.State,
				})
			}
		}
		prev, prevT = cur, s.Time
	}
	return out
}
