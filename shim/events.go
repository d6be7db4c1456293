package shim

import (
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/l2shim/l2shim/control"
	"github.com/l2shim/l2shim/datapath"
	"github.com/l2shim/l2shim/metrics"
)

// historySeconds is how much traffic history the shim keeps: the status page plots the last
// 10 minutes, top the last minute.
const historySeconds = control.MaxHistory

// observer remembers what the status alone does not: the last state changes (events) and a
// sample of the gateways' counters every second (history). It lives as long as the shim, and
// every published view points to it.
type observer struct {
	mu     sync.Mutex
	ring   [control.MaxEvents]control.Event
	n      int
	seq    uint64
	notify chan struct{} // closed and replaced when an event is recorded

	history    *metrics.History
	lastSample time.Time
}

func newObserver() *observer {
	return &observer{notify: make(chan struct{}), history: metrics.NewHistory(historySeconds)}
}

// record remembers one event, dropping the oldest beyond control.MaxEvents.
func (o *observer) record(at time.Time, kind, gateway, msg string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.seq++
	o.ring[(o.seq-1)%control.MaxEvents] = control.Event{Seq: o.seq, Time: at, Kind: kind, Gateway: gateway, Message: msg}
	o.n = min(o.n+1, control.MaxEvents)
	close(o.notify)
	o.notify = make(chan struct{})
}

// after returns the events with a sequence number above seq, oldest first, and a channel
// closed when the next one is recorded.
func (o *observer) after(seq uint64) ([]control.Event, <-chan struct{}) {
	o.mu.Lock()
	defer o.mu.Unlock()
	var out []control.Event
	for s := o.seq - uint64(o.n) + 1; s <= o.seq; s++ {
		if s > seq {
			out = append(out, o.ring[(s-1)%control.MaxEvents])
		}
	}
	return out, o.notify
}

// last returns the last n events, oldest first.
func (o *observer) last(n int) []control.Event {
	ev, _ := o.after(0)
	if len(ev) > n {
		ev = ev[len(ev)-n:]
	}
	return ev
}

// event records an event in the observer of the view in force (none before the first view).
func (s *Shim) event(kind, gateway, msg string) {
	if v := s.view.Load(); v != nil {
		v.obs.record(time.Now(), kind, gateway, msg)
	}
}

// Events implements control.EventsHandler: the remembered events after sequence number after,
// waiting up to wait for one.
func (s *Shim) Events(after uint64, wait time.Duration) []control.Event {
	v := s.view.Load()
	if v == nil {
		return nil
	}
	ev, next := v.obs.after(after)
	if len(ev) > 0 || wait <= 0 {
		return ev
	}
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-next:
	case <-t.C:
	}
	ev, _ = v.obs.after(after)
	return ev
}

// History implements control.HistoryHandler: the samples of the last seconds seconds.
func (s *Shim) History(seconds int) []control.Sample {
	v := s.view.Load()
	if v == nil {
		return nil
	}
	return v.obs.history.Since(time.Now().Add(-time.Duration(seconds) * time.Second))
}

// observe records what changed between views prev (nil at start) and v, published at wall,
// beside the gateway state changes publishView logs: drains, flows reset or moved, reloads;
// and takes the second's history sample. Only the publisher that installed v calls it.
func (s *Shim) observe(prev, v *view, wall time.Time) {
	o := v.obs
	if prev == nil {
		o.record(wall, "start", "", fmt.Sprintf("l2shim started: %d gateways on %d interfaces, mode %s, affinity %s",
			len(v.cfg.Gateways), len(v.cfg.Interfaces()), v.cfg.Shim.Mode, affinityName(string(v.cfg.Shim.Affinity))))
	} else {
		for _, g := range v.snap.Gateways {
			for _, pg := range prev.snap.Gateways {
				// The same Stats is the same gateway, across reloads too.
				if pg.Stats != g.Stats || pg.Inputs.Drained == g.Inputs.Drained {
					continue
				}
				if g.Inputs.Drained {
					o.record(wall, "drain", g.Name, "drained: it takes no new flows")
				} else {
					o.record(wall, "drain", g.Name, "undrained: it takes new flows when usable")
				}
			}
		}
		if v.reloads != prev.reloads {
			o.record(wall, "reload", "", reloadText(prev, v))
		}
		if r, m := v.tcpReset-prev.tcpReset, v.udpMoved-prev.udpMoved; r+m > 0 {
			o.record(wall, "flows", "", fmt.Sprintf("%d TCP flows reset toward the host, %d UDP flows moved to another gateway", r, m))
		}
	}
	o.mu.Lock()
	due := wall.Sub(o.lastSample) >= time.Second-50*time.Millisecond
	if due {
		o.lastSample = wall
	}
	o.mu.Unlock()
	if due {
		o.history.Add(sampleOf(v, wall))
	}
}

// sampleOf reads the gateways' live counters for the history.
func sampleOf(v *view, wall time.Time) control.Sample {
	sm := control.Sample{Time: wall, Gateways: make([]control.SampleGateway, len(v.snap.Gateways))}
	for i, g := range v.snap.Gateways {
		st := v.states[i].State.String()
		if g.Inputs.Drained {
			st += ",drained"
		}
		sm.Gateways[i] = control.SampleGateway{
			Name:       g.Name,
			State:      st,
			Flows:      uint64(max(g.Stats.Live.Load(), 0)),
			BytesOut:   g.Stats.BytesOut.Load(),
			BytesIn:    g.Stats.BytesIn.Load(),
			PacketsOut: g.Stats.PacketsOut.Load(),
			PacketsIn:  g.Stats.PacketsIn.Load(),
		}
	}
	return sm
}

// reloadText says what a reload changed in the gateway list.
func reloadText(prev, v *view) string {
	var before, after []string
	for _, g := range prev.cfg.Gateways {
		before = append(before, g.Name)
	}
	for _, g := range v.cfg.Gateways {
		after = append(after, g.Name)
	}
	var added, removed []string
	for _, n := range after {
		if !slices.Contains(before, n) {
			added = append(added, n)
		}
	}
	for _, n := range before {
		if !slices.Contains(after, n) {
			removed = append(removed, n)
		}
	}
	msg := fmt.Sprintf("reloaded %s: %d gateways, %d rules, mode %s", v.cfg.File, len(v.cfg.Gateways), len(v.cfg.Rules), v.cfg.Shim.Mode)
	if len(added) > 0 {
		msg += "; added " + strings.Join(added, ", ")
	}
	if len(removed) > 0 {
		msg += "; removed " + strings.Join(removed, ", ")
	}
	return msg
}

func affinityName(a string) string {
	if a == "" {
		return "flow"
	}
	return a
}

// counterValues reads the counters observe compares between views.
func (s *Shim) counterValues(v *view) {
	c := s.engine.Counters()
	v.tcpReset, v.udpMoved = c.Load(datapath.TCPReset), c.Load(datapath.UDPMoved)
	v.reloads = s.reloads.Load()
}
