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
		if err := s.loop(i); err != nil {
			select {
			case s.loopErr <- err:
			default:
			}
		}
	}()
}

// loop moves the frames diverted at port in through the engine to their sockets: read a
// batch, process it, send what it produced. The engine's lock is held only while it
// processes; no socket is ever waited on with it held.
func (s *Shim) loop(in int) error {
	p := (*s.portsSnap.Load())[in]
	counters := s.engine.Counters()
	dropped := func(errno syscall.Errno) {
		counters.Add(datapath.SendErrors, 1)
		if errno == unix.EMSGSIZE {
			counters.Add(datapath.SendTooBig, 1)
		}
	}
	// One queue per destination socket; interfaces a reload adds get theirs when they show
	// up (indexes never change).
	var wireQ, hostQ []*sendQueue
	var gen uint64
	addQueues := func() {
		gen = s.portsGen.Load()
		ports := *s.portsSnap.Load()
		for j := len(wireQ); j < len(ports); j++ {
			wireQ = append(wireQ, newSendQueue(s.portSocket(j, wireConn), s.opts.Batch, dropped))
			hostQ = append(hostQ, newSendQueue(s.portSocket(j, captureConn), s.opts.Batch, dropped))
		}
	}
	addQueues()

	rb := newReadBatch(s.opts.Batch)
	batch := datapath.NewBatch(s.opts.Batch)
	for {
		n, err := p.capture.read(rb)
		if err != nil {
			if errors.Is(err, errFrameLost) {
				counters.Add(datapath.Lost, 1)
				continue
			}
			if p.closing.Load() || errors.Is(err, net.ErrClosed) || errors.Is(err, os.ErrClosed) {
				return nil
			}
			return fmt.Errorf("read %s: %w", p.capture.name, err)
		}
		if s.portsGen.Load() != gen {
			addQueues()
		}

		batch.Reset()
		for i := 0; i < n; i++ {
			batch.Add(rb.bufs[i][:rb.lens[i]])
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
		// A failed write (a socket closed while its interface is being re-created, or at
		// shutdown) has been counted; reading decides when the loop ends.
		for j := range wireQ {
			_ = wireQ[j].flush()
			_ = hostQ[j].flush()
		}
	}
}

// heartbeat tells the hooks the shim is alive every 100 ms; if the process hangs the hooks
// stop diverting once the last beat is older than [shim] heartbeat.
func (s *Shim) heartbeat(ctx context.Context) {
	every(ctx, 100*time.Millisecond, func() {
		if err := s.maps.beat(); err != nil {
			s.log.Error("heartbeat", "err", err)
		}
	})
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
