package main

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"

	"github.com/l2shim/l2shim/integration"
)

// uplinkBench is one TCP bulk comparison on a topology of its own, through the host's second
// uplink: the kernel alone reaches the server there by a host route, and l2shim gets the host's
// frames on eth0 (its default route) and places them there, translated to that uplink's
// address, so the server sees the same source in both runs.
type uplinkBench struct {
	what     string // for the logs
	opts     integration.Options
	up, down string // the measurements' names
	// server is the server's address the clients use, want the source the server must see,
	// route the arguments of `ip` that add (op "replace") or remove (op "del") the kernel runs'
	// host route to the server through the uplink.
	server, want func(*integration.Topology) netip.Addr
	route        func(t *integration.Topology, op string) []string
	// config is the l2shim runs' configuration; ready, when set, waits until l2shim places
	// the flows as wanted.
	config func(t *integration.Topology, control string) string
	ready  func(*integration.Shim) error
}

func runUplinkBench(ctx context.Context, c config, g *gate, b uplinkBench, keep func(side, int, val)) error {
	topo, err := integration.NewTopology(b.opts)
	if err != nil {
		return err
	}
	defer topo.Close()
	server := b.server(topo)
	srv := &servers{}
	if srv.sink, err = startTCP(topo.Server, netip.AddrPortFrom(server, portSink), serveSink, c.place.receivers()); err != nil {
		return err
	}
	defer srv.sink.Close()
	if srv.source, err = startTCP(topo.Server, netip.AddrPortFrom(server, portSource), serveSource, c.place.senders()); err != nil {
		return err
	}
	defer srv.source.Close()
	cfgDir, err := os.MkdirTemp("", "l2shim-bench-uplink-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(cfgDir)
	cfg := b.config(topo, filepath.Join(cfgDir, "l2shim.sock"))
	e := &env{ctx: ctx, topo: topo, srv: srv, dur: c.dur, place: c.place, server: server}
	want := b.want(topo)
	route := func(op string) error {
		args := b.route(topo, op)
		if out, err := topo.Host.Run(nil, "ip", args...); err != nil {
			return fmt.Errorf("ip %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(out))
		}
		return nil
	}
	measureSide := func(round int, sd side, down bool) error {
		if sd == kernelSide {
			if err := route("replace"); err != nil {
				return err
			}
			defer route("del")
			logf("round %d: %s: kernel alone through %s", round+1, b.what, topo.HostIf1)
		} else {
			sctx, cancel := context.WithTimeout(ctx, integration.DefaultStartTimeout)
			shim, err := topo.StartShimWith(sctx, c.shimBin, cfg, integration.ShimOptions{Dir: cfgDir, Args: []string{"--pin-dir", ""}, Capabilities: c.caps})
			cancel()
			if err != nil {
				return err
			}
			defer shim.Stop()
			if b.ready != nil {
				if err := b.ready(shim); err != nil {
					return err
				}
			}
			logf("round %d: %s: l2shim (pid %d), eth0's flows placed on %s", round+1, b.what, shim.Pid(), topo.HostIf1)
		}
		name := b.up
		if down {
			name = b.down
		}
		vals, err := measure(ctx, g, fmt.Sprintf("round %d %s %s", round+1, sd, name), func() ([]val, error) {
			if down {
				d, err := e.tcpDown(want)
				return []val{{b.down, d}}, err
			}
			u, err := e.tcpUp(srv.sink, portSink, 1, want)
			return []val{{b.up, u}}, err
		})
		if err != nil {
			return err
		}
		for _, v := range vals {
			keep(sd, round, v)
		}
		return nil
	}
	// As in the main rounds, each measurement runs on both sides back to back.
	for r := 0; r < c.rounds; r++ {
		for i, down := range []bool{false, true} {
			order := []side{kernelSide, shimSide}
			if (r+i)%2 == 1 {
				order = []side{shimSide, kernelSide}
			}
			for _, sd := range order {
				if err := measureSide(r, sd, down); err != nil {
					return fmt.Errorf("%s, round %d, %s: %w", b.what, r+1, sd, err)
				}
			}
		}
	}
	return nil
}
