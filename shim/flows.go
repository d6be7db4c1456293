package shim

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/l2shim/l2shim/conf"
	"github.com/l2shim/l2shim/conntrack"
	"github.com/l2shim/l2shim/control"
	"github.com/l2shim/l2shim/datapath"
	"github.com/l2shim/l2shim/filters"
	"github.com/l2shim/l2shim/rewrite"
)

// Flows implements control.FlowsHandler. It reads the flow table a page at a time (the engine
// holds its lock for one page only); with Sort "bytes" it reads every page and keeps the
// busiest flows.
func (s *Shim) Flows(q control.FlowQuery) (*control.FlowList, error) {
	// What the kernel carried since the last sync shows: the counts, and the handshakes
	// and closes it carried.
	s.syncFast()
	// Gateway indexes are the configuration's: a reload between reading the configuration and
	// the last page would misname flows, so the listing is read again (rarely).
	for range 3 {
		cfg := s.config()
		raw, next, err := s.flowPages(cfg, q)
		if err != nil {
			return nil, err
		}
		if s.config() != cfg {
			continue
		}
		out := &control.FlowList{Flows: make([]control.Flow, 0, len(raw)), Next: next}
		if v := s.view.Load(); v != nil {
			out.Total = v.snap.Flows
		}
		names := s.namer(cfg)
		for i := range raw {
			out.Flows = append(out.Flows, names.flow(&raw[i]))
		}
		return out, nil
	}
	return nil, errors.New("flows: the configuration was reloaded while reading; try again")
}

// flowPages reads the flows q selects, a page (one lock of the engine) at a time.
func (s *Shim) flowPages(cfg *conf.Config, q control.FlowQuery) ([]datapath.FlowInfo, int, error) {
	limit := min(max(q.Limit, 1), control.MaxFlows)
	ff, err := s.flowFilter(cfg, q)
	if err != nil {
		return nil, 0, err
	}
	var raw []datapath.FlowInfo
	next := max(q.Cursor, 0)
	switch q.Sort {
	case "":
		for next >= 0 && len(raw) < limit {
			raw, next = s.engine.FlowsPage(next, limit-len(raw), &ff, raw)
		}
	case "bytes":
		busy := func(f *datapath.FlowInfo) uint64 { return f.Bytes[0] + f.Bytes[1] }
		for next >= 0 {
			raw, next = s.engine.FlowsPage(next, datapath.MaxFlowsPage, &ff, raw)
			if len(raw) > 2*limit {
				sort.Slice(raw, func(i, j int) bool { return busy(&raw[i]) > busy(&raw[j]) })
				raw = raw[:limit]
			}
		}
		sort.SliceStable(raw, func(i, j int) bool { return busy(&raw[i]) > busy(&raw[j]) })
		raw = raw[:min(len(raw), limit)]
	default:
		return nil, 0, fmt.Errorf("flows: sort %q: only \"bytes\" (busiest first), or none for table order", q.Sort)
	}
	return raw, next, nil
}

// flowFilter turns a query into the engine's filter, with the gateway indexes of cfg.
func (s *Shim) flowFilter(cfg *conf.Config, q control.FlowQuery) (datapath.FlowFilter, error) {
	ff := datapath.FlowFilter{Gateway: datapath.AnyGateway}
	switch q.Gateway {
	case "":
	case "none":
		ff.Gateway = -1
	default:
		gi, err := gatewayIn(cfg, q.Gateway)
		if err != nil {
			return ff, err
		}
		ff.Gateway = gi
	}
	if q.Addr != "" {
		p, err := parsePrefixOrAddr(q.Addr)
		if err != nil {
			return ff, err
		}
		ff.Addr = p
	}
	if q.Port < 0 || q.Port > 65535 {
		return ff, fmt.Errorf("flows: port %d is out of range", q.Port)
	}
	ff.Port = uint16(q.Port)
	if q.Proto != "" {
		p, err := protoNumber(q.Proto)
		if err != nil {
			return ff, err
		}
		ff.Proto = p
	}
	if q.State != "" {
		if !slices.Contains(datapath.FlowStates(), q.State) {
			return ff, fmt.Errorf("flows: %q is not a state (%s)", q.State, strings.Join(datapath.FlowStates(), ", "))
		}
		ff.State = q.State
	}
	if q.ActiveWithin > 0 {
		ff.ActiveSince = max(s.now()-int64(q.ActiveWithin*float64(time.Second)), 1)
	}
	return ff, nil
}

// gatewayIn finds a gateway of cfg by name, or by address when that names one gateway.
func gatewayIn(cfg *conf.Config, name string) (int, error) {
	for i, gc := range cfg.Gateways {
		if gc.Name == name {
			return i, nil
		}
	}
	if g, ok := cfg.GatewayByRef(name); ok {
		for i := range cfg.Gateways {
			if &cfg.Gateways[i] == g {
				return i, nil
			}
		}
	}
	return -1, fmt.Errorf("no gateway named %q", name)
}

func parsePrefixOrAddr(v string) (netip.Prefix, error) {
	if p, err := netip.ParsePrefix(v); err == nil && p.Addr().Zone() == "" && !p.Addr().Is4In6() {
		return p.Masked(), nil
	}
	if a, err := netip.ParseAddr(v); err == nil {
		a = a.Unmap().WithZone("")
		return netip.PrefixFrom(a, a.BitLen()), nil
	}
	return netip.Prefix{}, fmt.Errorf("%q is not an IP address or CIDR", v)
}

func protoNumber(p string) (uint8, error) {
	switch p {
	case "tcp":
		return rewrite.ProtoTCP, nil
	case "udp":
		return rewrite.ProtoUDP, nil
	case "icmp":
		return rewrite.ProtoICMP, nil
	}
	return 0, fmt.Errorf("%q is not a protocol: tcp, udp or icmp", p)
}

func protoName(p uint8) string {
	switch p {
	case rewrite.ProtoTCP:
		return "tcp"
	case rewrite.ProtoUDP:
		return "udp"
	case rewrite.ProtoICMP, rewrite.ProtoICMPv6:
		return "icmp" // ICMPv6 in an IPv6 flow, as rules and explain name it
	}
	return strconv.Itoa(int(p))
}

// namer turns the engine's indexes into the names of the configuration in force.
type namer struct {
	cfg        *conf.Config
	ifaces     []string
	now        int64
	synRetries int
}

func (s *Shim) namer(cfg *conf.Config) namer {
	return namer{cfg: cfg, ifaces: s.engine.IfaceNames(), now: s.now(), synRetries: cfg.Failover.SynRetries}
}

func (n namer) gateway(i int) string {
	if i < 0 || i >= len(n.cfg.Gateways) {
		return ""
	}
	return n.cfg.Gateways[i].Name
}

func (n namer) iface(i int) string {
	if i < 0 || i >= len(n.ifaces) {
		return "?"
	}
	return n.ifaces[i]
}

func (n namer) rule(i int) *conf.Rule {
	if i < 0 || i >= len(n.cfg.Rules) {
		return nil
	}
	return &n.cfg.Rules[i]
}

// endpoint renders ADDR:PORT, or [ADDR]:PORT for IPv6, from an address as a flow key holds it
// (for ICMP echo, the port is the identifier).
func endpoint(a [16]byte, port uint16) string {
	return netip.AddrPortFrom(conntrack.Addr(a), port).String()
}

// flow converts one flow for the list.
func (n namer) flow(fi *datapath.FlowInfo) control.Flow {
	f := control.Flow{
		Proto:      protoName(fi.Orig.Proto),
		Direction:  "out",
		HostSrc:    endpoint(fi.Orig.Src, fi.Orig.SrcPort),
		HostDst:    endpoint(fi.Orig.Dst, fi.Orig.DstPort),
		WireSrc:    endpoint(fi.Reply.Dst, fi.Reply.DstPort),
		WireDst:    endpoint(fi.Reply.Src, fi.Reply.SrcPort),
		NAT:        fi.NAT,
		Gateway:    n.gateway(fi.Gateway),
		HostIf:     n.iface(fi.HostIf),
		WireIf:     n.iface(fi.WireIf),
		State:      fi.State(),
		Age:        float64(max(n.now-fi.Created, 0)) / 1e9,
		Idle:       float64(max(n.now-fi.LastSeen, 0)) / 1e9,
		Timeout:    fi.Timeout.Seconds(),
		PacketsOut: fi.Packets[conntrack.DirOrig],
		PacketsIn:  fi.Packets[conntrack.DirReply],
		BytesOut:   fi.Bytes[conntrack.DirOrig],
		BytesIn:    fi.Bytes[conntrack.DirReply],
		Reason:     fi.Why.String(),
		Moves:      fi.Moves,
		Drop:       fi.Drop,
	}
	if fi.Origin == conntrack.Inbound {
		f.Direction = "in"
	}
	if r := n.rule(fi.Rule); r != nil {
		f.Rule = r.Name
	}
	f.Why = n.why(fi, f.Gateway)
	return f
}

// why says in words why a flow has its gateway.
func (n namer) why(fi *datapath.FlowInfo, gw string) string {
	rule := ""
	if r := n.rule(fi.Rule); r != nil {
		rule = fmt.Sprintf("rule %q", r.Name)
	}
	moves := ""
	if fi.Moves > 1 {
		moves = fmt.Sprintf(", moved %d times", fi.Moves)
	}
	switch fi.Why {
	case datapath.ReasonRule:
		switch {
		case rule == "":
			return "a rule (since reloaded away)"
		case fi.Drop:
			return rule + ": dropped"
		case fi.Gateway < 0:
			return rule + ": pass (the host's routing)"
		}
		return rule + ": route-to " + gw
	case datapath.ReasonSourceAware:
		return "source-aware: it arrived through " + gw
	case datapath.ReasonPerSource:
		return fmt.Sprintf("per-source: %s is an address of %s", conntrack.Addr(fi.Orig.Src), n.iface(fi.WireIf))
	case datapath.ReasonBalanced, datapath.ReasonAffinity, datapath.ReasonFailover:
		what := map[datapath.Reason]string{
			datapath.ReasonBalanced: "balanced (weighted hash of the flow)",
			datapath.ReasonAffinity: "host-pair affinity (weighted hash of both addresses)",
			datapath.ReasonFailover: "failover: the first usable gateway",
		}[fi.Why]
		if rule != "" {
			what += ", by " + rule
		}
		return what
	case datapath.ReasonRetry:
		return "retry-elsewhere: an earlier attempt to the same service went unanswered"
	case datapath.ReasonRotated:
		return fmt.Sprintf("rotated: its request went unanswered %d times%s", n.synRetries+1, moves)
	case datapath.ReasonMoved:
		return "moved off a gateway that went down" + moves
	case datapath.ReasonPinned:
		return "pinned: it predates l2shim (no SYN seen); it leaves as the host sent it"
	case datapath.ReasonHostRouting:
		if fi.Origin == conntrack.Inbound {
			return "the host's routing (from a neighbour, or source_aware off)"
		}
		return "the host's routing: no usable gateway"
	}
	return "-"
}

// Explain implements control.ExplainHandler: which gateway a new flow would get now, and every
// step that decides it. It changes nothing.
func (s *Shim) Explain(q control.ExplainQuery) (*control.Explanation, error) {
	for range 3 {
		cfg := s.config()
		h, err := s.hypothetical(cfg, q)
		if err != nil {
			return nil, err
		}
		s.cfgMu.RLock()
		same := s.cfg == cfg
		var x datapath.Explanation
		if same {
			x, err = s.engine.Explain(h, s.now())
		}
		s.cfgMu.RUnlock()
		if !same {
			continue
		}
		if err != nil {
			return nil, err
		}
		return s.namer(cfg).explanation(h, &x), nil
	}
	return nil, errors.New("explain: the configuration was reloaded meanwhile; try again")
}

// hypothetical turns a query into the engine's terms, finding the interface the host would
// send on (its routing) or the frame would arrive on (the one with the destination address).
func (s *Shim) hypothetical(cfg *conf.Config, q control.ExplainQuery) (datapath.Hypothetical, error) {
	var h datapath.Hypothetical
	proto, err := protoNumber(q.Proto)
	if err != nil {
		return h, fmt.Errorf("explain: %w", err)
	}
	src, err := explainAddr("src", q.Src)
	if err != nil {
		return h, err
	}
	dst, err := explainAddr("dst", q.Dst)
	if err != nil {
		return h, err
	}
	if src.Is4() != dst.Is4() {
		return h, fmt.Errorf("explain: src %s and dst %s are of different families: both IPv4 or both IPv6", src, dst)
	}
	if q.SrcPort < 0 || q.SrcPort > 65535 || q.DstPort < 0 || q.DstPort > 65535 {
		return h, errors.New("explain: ports are from 0 to 65535")
	}
	if proto == rewrite.ProtoICMP && src.Is6() {
		proto = rewrite.ProtoICMPv6 // "icmp" is ICMPv6 in IPv6, as in rules
	}
	h.Key = conntrack.Key{Src: src.As16(), Dst: dst.As16(), SrcPort: uint16(q.SrcPort), DstPort: uint16(q.DstPort), Proto: proto}
	if proto == rewrite.ProtoICMP || proto == rewrite.ProtoICMPv6 {
		h.Key.DstPort = h.Key.SrcPort // an echo's identifier, both ways
	}
	names := s.engine.IfaceNames()
	h.Iface, h.Via = -1, -1
	if q.Interface != "" {
		for i, n := range names {
			if n == q.Interface {
				h.Iface = i
			}
		}
		if h.Iface < 0 {
			return h, fmt.Errorf("explain: %s is not an interface l2shim watches (%s)", q.Interface, strings.Join(names, ", "))
		}
	}
	switch q.Direction {
	case "", "out":
		h.Dir = filters.Out
		if h.Iface < 0 {
			if h.Iface, err = s.routeIface(src, dst); err != nil {
				return h, err
			}
		}
	case "in":
		h.Dir = filters.In
		if h.Iface < 0 {
			if h.Iface = s.engine.IfaceOwning(dst); h.Iface < 0 {
				return h, fmt.Errorf("explain: %s is no address of an interface l2shim watches: give --interface", dst)
			}
		}
		switch q.Via {
		case "none":
		case "":
			for i, g := range cfg.Gateways {
				if g.Interface == names[h.Iface] {
					h.Via = i
					break
				}
			}
		default:
			if h.Via, err = gatewayIn(cfg, q.Via); err != nil {
				return h, fmt.Errorf("explain: --via: %w", err)
			}
		}
	default:
		return h, fmt.Errorf("explain: direction %q: out or in", q.Direction)
	}
	return h, nil
}

// explainAddr parses an explain query's address, IPv4 or IPv6 (an IPv4-mapped IPv6 address is
// the IPv4 one, as a flow key holds it; a zone is dropped, as a flow key has none).
func explainAddr(which, s string) (netip.Addr, error) {
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("explain: %s %q is not an IPv4 or IPv6 address", which, s)
	}
	a = a.Unmap().WithZone("")
	if a.IsUnspecified() {
		return netip.Addr{}, fmt.Errorf("explain: %s %s is the unspecified address", which, a)
	}
	return a, nil
}

// routeIface returns the engine's index of the interface the host routes dst through (from
// src), or an error saying the host does not send it through an interface l2shim watches.
func (s *Shim) routeIface(src, dst netip.Addr) (int, error) {
	ifindex, err := hostRoute(src, dst)
	if err != nil {
		return -1, fmt.Errorf("explain: the host's route to %s: %w; give --interface", dst, err)
	}
	i := s.engine.IfaceByIndex(ifindex)
	if i < 0 {
		return -1, fmt.Errorf("explain: the host routes %s through interface index %d, which l2shim does not watch: l2shim never sees the flow", dst, ifindex)
	}
	return i, nil
}
