package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/l2shim/l2shim/conf"
	"github.com/l2shim/l2shim/control"
)

// callTimeout bounds one control request; an events request waits up to control.MaxWait more.
const callTimeout = 10 * time.Second

// parseInterleaved parses fs over args with flags before, between and after positional
// arguments (`l2shim explain tcp A B --json`), and returns the positional ones.
func parseInterleaved(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for len(args) > 0 {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		args = fs.Args()
		if len(args) > 0 {
			pos = append(pos, args[0])
			args = args[1:]
		}
	}
	return pos, nil
}

func printJSON(w io.Writer, v any) int {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	if err := enc.Encode(v); err != nil {
		return exitRuntime
	}
	return exitOK
}

// cmdFlows lists the running instance's flows, a page at a time.
func cmdFlows(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("l2shim flows", flag.ContinueOnError)
	fs.SetOutput(stderr)
	sock := fs.String("s", conf.DefaultControl, "control `SOCKET` of the running l2shim")
	asJSON := fs.Bool("json", false, "print JSON for scripts")
	var q control.FlowQuery
	fs.StringVar(&q.Gateway, "gateway", "", "only flows on gateway `NAME` (\"none\": left to the host's routing)")
	fs.StringVar(&q.Addr, "addr", "", "only flows with an end at `ADDR` or in CIDR, as the host or the wire sees it")
	fs.IntVar(&q.Port, "port", 0, "only flows with an end on `PORT`")
	fs.StringVar(&q.Proto, "proto", "", "only flows of `PROTO`: tcp, udp, icmp")
	fs.StringVar(&q.State, "state", "", "only flows in `STATE`: syn-sent, syn-recv, established, closing, closed, mid-stream, unreplied, replied, reset")
	limit := fs.Int("limit", 0, "at most `N` flows (0: all)")
	fs.StringVar(&q.Sort, "sort", "", "\"bytes\": the busiest first (with --limit, at most 1000)")
	pos, err := parseInterleaved(fs, args)
	if err != nil {
		return exitUsage
	}
	if len(pos) > 0 {
		fmt.Fprintf(stderr, "l2shim flows: unexpected argument %q\n", pos[0])
		return exitUsage
	}
	if *limit < 0 {
		fmt.Fprintln(stderr, "l2shim flows: --limit must not be negative")
		return exitUsage
	}
	list, err := fetchFlows(*sock, q, *limit)
	if err != nil {
		fmt.Fprintf(stderr, "l2shim flows: %v\n", err)
		return exitRuntime
	}
	if *asJSON {
		return printJSON(stdout, list)
	}
	if err := control.WriteFlows(stdout, list.Flows); err != nil {
		return exitRuntime
	}
	fmt.Fprintf(stdout, "\n%d flows listed of %d in the table\n", len(list.Flows), list.Total)
	return exitOK
}

// fetchFlows asks for flows page by page until limit (0: all) or the end of the table.
func fetchFlows(sock string, q control.FlowQuery, limit int) (*control.FlowList, error) {
	all := &control.FlowList{Flows: []control.Flow{}, Next: -1}
	q.Cursor = 0
	for {
		q.Limit = control.MaxFlows
		if limit > 0 {
			q.Limit = min(limit-len(all.Flows), control.MaxFlows)
		}
		resp, err := control.Call(sock, control.Request{Command: "flows", Flows: &q}, callTimeout)
		if err != nil {
			return nil, err
		}
		if resp.Flows == nil {
			return nil, errors.New("the answer holds no flows (an older l2shim?)")
		}
		all.Flows = append(all.Flows, resp.Flows.Flows...)
		all.Total = resp.Flows.Total
		if resp.Flows.Next < 0 || q.Sort != "" || limit > 0 && len(all.Flows) >= limit {
			return all, nil
		}
		q.Cursor = resp.Flows.Next
	}
}

// cmdExplain asks which gateway a hypothetical new flow would get, and why.
func cmdExplain(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("l2shim explain", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: l2shim explain [flags] PROTO SRC[:PORT] DST[:PORT]\n\nPROTO is tcp, udp or icmp (for icmp, :PORT is the echo identifier; with IPv6 addresses icmp is\nICMPv6). SRC and DST are both IPv4 (10.0.0.2:40000) or both IPv6 ([2001:db8::2]:40000, or bare\nwithout a port). Out (the default): SRC is the local end; in: SRC is the remote end that opens\nthe connection.\n\nflags:")
		fs.PrintDefaults()
	}
	sock := fs.String("s", conf.DefaultControl, "control `SOCKET` of the running l2shim")
	asJSON := fs.Bool("json", false, "print JSON for scripts")
	var q control.ExplainQuery
	in := fs.Bool("in", false, "a connection arriving from the wire (SRC remote, DST local)")
	fs.StringVar(&q.Interface, "interface", "", "the external interface the host sends on (out; default: its route) or it arrives on (in; default: the one with DST)")
	fs.StringVar(&q.Via, "via", "", "in: the gateway it arrives through (default: the first on the interface; \"none\": a neighbour)")
	pos, err := parseInterleaved(fs, args)
	if err != nil {
		return exitUsage
	}
	if len(pos) != 3 {
		fs.Usage()
		return exitUsage
	}
	q.Proto = pos[0]
	if *in {
		q.Direction = "in"
	}
	for i, p := range []*string{&q.Src, &q.Dst} {
		addr, port, err := hostPort(pos[1+i])
		if err != nil {
			fmt.Fprintf(stderr, "l2shim explain: %v\n", err)
			return exitUsage
		}
		*p = addr
		if i == 0 {
			q.SrcPort = port
		} else {
			q.DstPort = port
		}
	}
	if a, b := netip.MustParseAddr(q.Src).Unmap(), netip.MustParseAddr(q.Dst).Unmap(); a.Is4() != b.Is4() {
		fmt.Fprintf(stderr, "l2shim explain: %s and %s are of different families: both IPv4 or both IPv6\n", pos[1], pos[2])
		return exitUsage
	}
	resp, err := control.Call(*sock, control.Request{Command: "explain", Explain: &q}, callTimeout)
	if err != nil {
		fmt.Fprintf(stderr, "l2shim explain: %v\n", err)
		return exitRuntime
	}
	if resp.Explain == nil {
		fmt.Fprintln(stderr, "l2shim explain: the answer holds no explanation (an older l2shim?)")
		return exitRuntime
	}
	if *asJSON {
		return printJSON(stdout, resp.Explain)
	}
	if err := control.WriteExplanation(stdout, resp.Explain); err != nil {
		return exitRuntime
	}
	return exitOK
}

// hostPort splits ADDR[:PORT]: an IPv4 address with or without :PORT, an IPv6 address bare
// or in brackets ([ADDR] or [ADDR]:PORT).
func hostPort(s string) (string, int, error) {
	if ap, err := netip.ParseAddrPort(s); err == nil {
		return ap.Addr().String(), int(ap.Port()), nil
	}
	if strings.HasPrefix(s, "[") && strings.HasSuffix(s, "]") {
		s = s[1 : len(s)-1]
		if a, err := netip.ParseAddr(s); err == nil && a.Is6() {
			return a.String(), 0, nil
		}
	} else if a, err := netip.ParseAddr(s); err == nil {
		return a.String(), 0, nil
	}
	return "", 0, fmt.Errorf("%q is not ADDR or ADDR:PORT (IPv4), nor ADDR, [ADDR] or [ADDR]:PORT (IPv6)", s)
}

// cmdEvents prints the remembered state changes, and with --follow the new ones as they come.
func cmdEvents(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("l2shim events", flag.ContinueOnError)
	fs.SetOutput(stderr)
	sock := fs.String("s", conf.DefaultControl, "control `SOCKET` of the running l2shim")
	asJSON := fs.Bool("json", false, "print one JSON object a line")
	follow := fs.Bool("follow", false, "keep printing new events until interrupted")
	n := fs.Int("n", 0, "only the last `N` events (0: all remembered, at most 200)")
	pos, err := parseInterleaved(fs, args)
	if err != nil {
		return exitUsage
	}
	if len(pos) > 0 {
		fmt.Fprintf(stderr, "l2shim events: unexpected argument %q\n", pos[0])
		return exitUsage
	}
	print := func(ev []control.Event) error {
		for _, e := range ev {
			var err error
			if *asJSON {
				var b []byte
				if b, err = json.Marshal(e); err == nil {
					_, err = fmt.Fprintf(stdout, "%s\n", b)
				}
			} else {
				_, err = fmt.Fprintln(stdout, control.EventLine(e))
			}
			if err != nil {
				return err
			}
		}
		return nil
	}
	resp, err := control.Call(*sock, control.Request{Command: "events"}, callTimeout)
	if err != nil {
		fmt.Fprintf(stderr, "l2shim events: %v\n", err)
		return exitRuntime
	}
	ev := resp.Events
	var last uint64
	if len(ev) > 0 {
		last = ev[len(ev)-1].Seq
	}
	if *n > 0 && len(ev) > *n {
		ev = ev[len(ev)-*n:]
	}
	if err := print(ev); err != nil {
		return exitRuntime
	}
	if !*follow {
		return exitOK
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	for ctx.Err() == nil {
		resp, err := control.Call(*sock, control.Request{Command: "events", After: last, Wait: control.MaxWait.Seconds()}, callTimeout+control.MaxWait)
		if err != nil {
			if ctx.Err() != nil {
				break
			}
			fmt.Fprintf(stderr, "l2shim events: %v\n", err)
			return exitRuntime
		}
		if len(resp.Events) > 0 {
			if resp.Events[0].Seq > last+1 {
				fmt.Fprintf(stderr, "l2shim events: %d events were missed\n", resp.Events[0].Seq-last-1)
			}
			last = resp.Events[len(resp.Events)-1].Seq
			if err := print(resp.Events); err != nil {
				return exitRuntime
			}
		}
	}
	return exitOK
}
