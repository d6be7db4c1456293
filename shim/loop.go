package shim

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/l2shim/l2shim/datapath"
)

// startLoop runs the frame loop of port i until its capture socket closes.
func (s *Shim) startLoop(i int) {
	s.loops.Add(1)
	go func() {
		defer s.loops.Done()
		if err := s.loop(i, false); err != nil {
			select {
			case s.loopErr <- err:
			default:
			}
		}
	}()
	s.loops.Add(1)
	go func() {
		defer s.loops.Done()
		if err := s.loop(i, true); err != nil {
			select {
			case s.loopErr <- err:
			default:
			}
		}
	}()
}

// loop moves the frames diverted at port in through the engine to their sockets: read a
// batch, process it, send what it produced. The engine's lock is held only while it
// processes; no socket is ever waited on with it held, and no write waits at all (a full
// socket drops, see sendQueue.flush). While the loop works on a batch, p.busy says since when,
// so the heartbeat can tell a stuck loop from an idle one.
func (s *Shim) loop(in int, host bool) error {
	p := (*s.portsSnap.Load())[in]
	// Two loops per port: the wire's frames, and the host's (its own queue, see port).
	sock, busy := p.capture, &p.busy
	if host {
		sock, busy = p.captureHost, &p.busyHost
	}
	defer busy.Store(0)
	counters := s.engine.Counters()
	// One queue per destination socket; interfaces a reload adds get theirs when they show
	// up (indexes never change).
	var wireQ, hostQ []*sendQueue
	var gen uint64
	addQueues := func() {
		gen = s.portsGen.Load()
		ports := *s.portsSnap.Load()
		for j := len(wireQ); j < len(ports); j++ {
			wireQ = append(wireQ, newSendQueue(s.portSocket(j, wireConn), s.opts.Batch, s.sendDropped))
			hostQ = append(hostQ, newSendQueue(s.portSocket(j, captureConn), s.opts.Batch, s.sendDropped))
		}
	}
	addQueues()

	rb := newReadBatch(s.opts.Batch)
	batch := datapath.NewBatch(s.opts.Batch)
	for {
		busy.Store(0)
		_, err := sock.read(rb)
		busy.Store(max(s.now(), 1))
		if err != nil {
			if errors.Is(err, errFrameLost) {
				counters.Add(datapath.Lost, 1)
				continue
			}
			if p.closing.Load() || errors.Is(err, net.ErrClosed) || errors.Is(err, os.ErrClosed) {
				return nil
			}
			return fmt.Errorf("read %s: %w", sock.name, err)
		}
		if rb.truncated > 0 {
			counters.Add(datapath.Lost, uint64(rb.truncated))
			if s.truncated.Add(uint64(rb.truncated)) == uint64(rb.truncated) {
				s.log.Warn("frames larger than 64 KiB dropped (counted as truncated): turn BIG TCP off on the external interfaces (ip link set IFACE gso_ipv4_max_size 65536 gro_ipv4_max_size 65536)", "interface", p.name)
			}
		}
		if len(rb.frames) == 0 {
			continue
		}
		if s.portsGen.Load() != gen {
			addQueues()
		}

		batch.Reset()
		for _, f := range rb.frames {
			batch.Add(f)
		}
		s.engine.ProcessBatch(in, batch, s.now())

		for _, out := range batch.Out {
			switch out.To {
			case datapath.ToWire:
				wireQ[out.Iface].add(out.Frame)
			case datapath.ToHost:
				hostQ[out.Iface].add(out.Frame)
			}
		}
		// Flows this batch confirmed leave user space from their next frame on: their
		// entries are in the kernel before the frames that confirmed them go on (the host
		// answers a SYN-ACK at once).
		if s.engine.FastPending() {
			s.applyFast()
		}
		// A failed write (a socket closed while its interface is being re-created, or at
		// shutdown) has been counted; reading decides when the loop ends.
		for j := range wireQ {
			_ = wireQ[j].flush()
			_ = hostQ[j].flush()
		}
	}
}

// sendDropped counts a frame the kernel did not take: as a send error, and by cause when
// the cause has a counter of its own.
func (s *Shim) sendDropped(errno syscall.Errno) {
	c := s.engine.Counters()
	c.Add(datapath.SendErrors, 1)
	switch errno {
	case unix.EMSGSIZE:
		c.Add(datapath.SendTooBig, 1)
	case unix.EAGAIN:
		s.sendFull.Add(1)
	}
}

// heartbeat tells the hooks every 100 ms that the shim is alive, as of the oldest batch a
// frame loop is still working on: a loop stuck (on a lock, in the kernel, starved) is no sign
// of life, so once one has been stuck for [shim] heartbeat the hooks stop diverting, exactly
// as when the whole process hangs. A loop waiting for frames is idle, not stuck.
func (s *Shim) heartbeat(ctx context.Context) {
	w := watchdog{limit: int64(s.config().Shim.Heartbeat)}
	var busy []int64
	every(ctx, 100*time.Millisecond, func() {
		ports := *s.portsSnap.Load()
		busy = busy[:0]
		for _, p := range ports {
			busy = append(busy, p.busy.Load(), p.busyHost.Load())
		}
		now := s.now()
		lag, stuck, moving := w.check(now, busy)
		for _, i := range stuck {
			s.log.Error("frame loop stuck: the hooks stop diverting until it moves again", "interface", ports[i/2].name, "stuck_for", time.Duration(now-busy[i]).Round(time.Millisecond))
		}
		for _, i := range moving {
			s.log.Info("frame loop moving again: the hooks divert again", "interface", ports[i/2].name)
		}
		if err := s.maps.beat(time.Duration(lag)); err != nil {
			s.log.Error("heartbeat", "err", err)
		}
	})
}

// watchdog follows the frame loops' progress for the heartbeat.
type watchdog struct {
	limit int64 // a loop busy with one batch for longer than this is stuck ([shim] heartbeat)
	stuck []bool
}

// check takes each loop's busy mark at now (when it took its current batch, on the shim's
// clock; 0 while it waits for frames) and returns how far the heartbeat must lag behind now:
// the age of the oldest batch still in the works (0 when every loop is idle or fresh). It also
// returns the loops that have just become stuck and those that were stuck and move again.
func (w *watchdog) check(now int64, busy []int64) (lag int64, stuck, moving []int) {
	for len(w.stuck) < len(busy) {
		w.stuck = append(w.stuck, false)
	}
	for i, since := range busy {
		age := int64(0)
		if since > 0 && since < now {
			age = now - since
		}
		lag = max(lag, age)
		switch over := age > w.limit; {
		case over && !w.stuck[i]:
			stuck = append(stuck, i)
		case !over && w.stuck[i]:
			moving = append(moving, i)
		}
		w.stuck[i] = age > w.limit
	}
	return lag, stuck, moving
}

// expiry removes idle flows a slice at a time, so no frame ever waits behind a full sweep.
func (s *Shim) expiry(ctx context.Context) {
	every(ctx, 100*time.Millisecond, func() { s.engine.Expire(s.now(), 8192) })
}

// every runs fn every period until ctx is done.
func every(ctx context.Context, period time.Duration, fn func()) {
	t := time.NewTicker(period)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			fn()
		}
	}
}
