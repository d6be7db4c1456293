package conf

import (
	"errors"
	"fmt"
	"math"
	"net"
	"net/netip"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode"

	"github.com/BurntSushi/toml"
)

// decoder turns one file into a Config, collecting every problem on the way.
//
// The file is decoded by BurntSushi/toml into a generic tree (map[string]any), which only fails
// on TOML syntax; the tree is then walked against the schema above. Decoding straight into typed
// structs would stop at the first value of the wrong type and would match key names
// case-insensitively; the walk instead reports every problem, and every key it does not consume
// (the equivalent of toml.MetaData.Undecoded) is reported as unknown.
type decoder struct {
	file  string
	src   string
	lines lineIndex
	errs  Errors
}

func newDecoder(name string, data []byte) *decoder {
	return &decoder{file: name, src: string(data)}
}

// errorf records a problem.
func (d *decoder) errorf(line int, key, format string, args ...any) {
	d.errs = append(d.errs, &Error{File: d.file, Line: line, Key: key, Msg: fmt.Sprintf(format, args...)})
}

// gatewayInfo is what cross-gateway checks need beyond the Gateway itself.
type gatewayInfo struct {
	t         *table
	named     bool // the file gives a name
	ifaceOK   bool // interface decoded and valid
	addressOK bool // address decoded and valid
}

// decode decodes and validates the whole file. The result is meaningful only when d.errs is
// empty.
func (d *decoder) decode() *Config {
	var tree map[string]any
	if _, err := toml.Decode(d.src, &tree); err != nil {
		var pe toml.ParseError
		if errors.As(err, &pe) {
			d.errorf(pe.Position.Line, "", "TOML syntax: %s", strings.TrimSuffix(pe.Message, "."))
		} else {
			d.errorf(0, "", "TOML: %s", strings.TrimPrefix(err.Error(), "toml: "))
		}
		return nil
	}
	d.lines = indexLines(d.src)

	c := &Config{
		File:  d.file,
		lines: d.lines,
		Shim: Shim{
			Mode:        DefaultMode,
			SourceAware: DefaultSourceAware,
			Control:     DefaultControl,
			Mark:        DefaultMark,
			MarkMask:    DefaultMarkMask,
			Heartbeat:   DefaultHeartbeat,
			Affinity:    DefaultAffinity,
			Attach:      DefaultAttach,
		},
		Failover: Failover{
			SynRetries:    DefaultSynRetries,
			FailRatio:     DefaultFailRatio,
			MinAttempts:   DefaultMinAttempts,
			Window:        DefaultWindow,
			ProbeInterval: DefaultProbeInterval,
			ProbeMisses:   DefaultProbeMisses,
		},
		Conntrack: Conntrack{
			MaxFlows:       DefaultMaxFlows,
			TCPSynSent:     DefaultTCPSynSent,
			TCPEstablished: DefaultTCPEstablished,
			TCPClosing:     DefaultTCPClosing,
			TCPClosed:      DefaultTCPClosed,
			UDPUnreplied:   DefaultUDPUnreplied,
			UDPReplied:     DefaultUDPReplied,
			ICMP:           DefaultICMPTimeout,
			Other:          DefaultOtherTimeout,
		},
	}
	top := &table{d: d, m: tree, used: map[string]bool{}}
	if t := top.subtable("shim"); t != nil {
		d.shim(t, &c.Shim)
	}
	if t := top.subtable("failover"); t != nil {
		d.failover(t, &c.Failover)
	}
	if t := top.subtable("conntrack"); t != nil {
		d.conntrack(t, &c.Conntrack)
	}
	var infos []gatewayInfo
	gateways, ok := top.tables("gateway", "gateway")
	for i, t := range gateways {
		g, info := d.gateway(i, t)
		c.Gateways = append(c.Gateways, g)
		infos = append(infos, info)
	}
	if ok && len(gateways) == 0 {
		d.errorf(top.line("gateway"), "gateway", "no [[gateway]] tables: l2shim needs at least one gateway")
	}
	d.crossGateways(c, infos)
	rules, _ := top.tables("rule", "rule")
	for i, t := range rules {
		c.Rules = append(c.Rules, d.rule(c, infos, i, t))
	}
	d.crossRules(c)
	top.finish()
	return c
}

// table is one TOML table being decoded.
type table struct {
	d     *decoder
	m     map[string]any
	path  []string        // path in the line index
	label string          // prefix of keys in messages: "shim", "gateway[2]", `rule "x"`; "" at top level
	used  map[string]bool // keys the schema knows (looked at, present or not)
}

// child returns the path of key k in the line index.
func (t *table) child(k ...string) []string {
	return append(append(make([]string, 0, len(t.path)+len(k)), t.path...), k...)
}

// line returns the line of key k, or of the table when k is not in the file.
func (t *table) line(k string) int { return t.d.lines.lookup(t.child(k)...) }

// key renders key k for messages.
func (t *table) key(k string) string {
	k = toml.Key{k}.String()
	if t.label == "" {
		return k
	}
	return t.label + "." + k
}

// errorf records a problem with key k of the table.
func (t *table) errorf(k, format string, args ...any) {
	t.d.errorf(t.line(k), t.key(k), format, args...)
}

// get returns the value of key k and marks k as known.
func (t *table) get(k string) (any, bool) {
	t.used[k] = true
	v, ok := t.m[k]
	return v, ok
}

// str returns the string value of k; ok is false when k is absent or not a string (reported).
func (t *table) str(k string) (s string, ok bool) {
	v, present := t.get(k)
	if !present {
		return "", false
	}
	if s, ok = v.(string); !ok {
		t.errorf(k, "must be a string, not %s", describe(v))
	}
	return s, ok
}

// boolean returns the boolean value of k; ok is false when k is absent or not a boolean.
func (t *table) boolean(k string) (b bool, ok bool) {
	v, present := t.get(k)
	if !present {
		return false, false
	}
	if b, ok = v.(bool); !ok {
		t.errorf(k, "must be true or false, not %s", describe(v))
	}
	return b, ok
}

// integer returns the integer value of k when it lies in [lo, hi]; ok is false when k is absent
// or invalid (reported).
func (t *table) integer(k string, lo, hi int64) (int64, bool) {
	v, present := t.get(k)
	if !present {
		return 0, false
	}
	n, isInt := v.(int64)
	if !isInt {
		t.errorf(k, "must be an integer, not %s", describe(v))
		return 0, false
	}
	if n < lo || n > hi {
		switch {
		case hi == math.MaxInt32:
			t.errorf(k, "%d is out of range: must be at least %d", n, lo)
		default:
			t.errorf(k, "%d is out of range: must be from %d to %d", n, lo, hi)
		}
		return 0, false
	}
	return n, true
}

// duration returns the duration value of k, written as a Go duration string such as "1s".
func (t *table) duration(k string) (time.Duration, bool) {
	s, ok := t.str(k)
	if !ok {
		return 0, false
	}
	dur, err := time.ParseDuration(strings.TrimSpace(s))
	if err != nil {
		t.errorf(k, "%q is not a duration; write it like \"1s\", \"200ms\" or \"1m30s\"", s)
		return 0, false
	}
	return dur, true
}

// subtable returns the table under key k, or nil when absent or not a table (reported).
func (t *table) subtable(k string) *table {
	v, present := t.get(k)
	if !present {
		return nil
	}
	m, ok := v.(map[string]any)
	if !ok {
		if _, isArr := v.([]map[string]any); isArr {
			t.errorf(k, "must be a single table: write [%s], not [[%s]]", k, k)
		} else {
			t.errorf(k, "must be a table ([%s]), not %s", k, describe(v))
		}
		return nil
	}
	return &table{d: t.d, m: m, path: t.child(k), label: t.key(k), used: map[string]bool{}}
}

// tables returns the tables of the array of tables under key k; label is the prefix of their
// keys in messages, to which "[N]" is appended. A non-table element is reported and skipped, but
// keeps its place in the numbering. ok is false when the key holds something other than an array
// (reported).
func (t *table) tables(k, label string) (tables []*table, ok bool) {
	v, present := t.get(k)
	if !present {
		return nil, true
	}
	var elems []any
	switch v := v.(type) {
	case []map[string]any:
		for _, m := range v {
			elems = append(elems, m)
		}
	case []any:
		elems = v
	case map[string]any:
		t.errorf(k, "must be an array of tables: write [[%s]], not [%s]", k, k)
		return nil, false
	default:
		t.errorf(k, "must be an array of tables ([[%s]]), not %s", k, describe(v))
		return nil, false
	}
	var out []*table
	for i, e := range elems {
		path := t.child(k, elem(i))
		m, ok := e.(map[string]any)
		if !ok {
			t.d.errorf(t.d.lines.lookup(path...), fmt.Sprintf("%s[%d]", label, i+1), "must be a table, not %s", describe(e))
			m = map[string]any{}
		}
		out = append(out, &table{d: t.d, m: m, path: path, label: fmt.Sprintf("%s[%d]", label, i+1), used: map[string]bool{}})
	}
	return out, true
}

// finish reports the keys of the table that the schema does not know, suggesting the closest
// known key.
func (t *table) finish() {
	var unknown []string
	for k := range t.m {
		if !t.used[k] {
			unknown = append(unknown, k)
		}
	}
	sort.Slice(unknown, func(i, j int) bool {
		li, lj := t.line(unknown[i]), t.line(unknown[j])
		if li != lj {
			return li < lj
		}
		return unknown[i] < unknown[j]
	})
	known := make([]string, 0, len(t.used))
	for k := range t.used {
		known = append(known, k)
	}
	sort.Strings(known)
	for _, k := range unknown {
		what := "key"
		switch t.m[k].(type) {
		case map[string]any, []map[string]any:
			what = "table"
		}
		msg := "unknown " + what
		if s := suggest(k, known); s != "" {
			msg += fmt.Sprintf("; did you mean %q?", s)
		} else {
			msg += " (known: " + strings.Join(known, ", ") + ")"
		}
		t.d.errorf(t.d.lines.lookup(t.child(k)...), t.key(k), "%s", msg)
	}
}

// shim decodes the [shim] table over the defaults in s.
func (d *decoder) shim(t *table, s *Shim) {
	if v, ok := t.str("mode"); ok {
		switch m := Mode(v); m {
		case ModeLoadBalance, ModeFailover, ModeOff:
			s.Mode = m
		default:
			t.errorf("mode", "%q is not a mode: use \"load-balance\", \"failover\" or \"off\"", v)
		}
	}
	if v, ok := t.boolean("source_aware"); ok {
		s.SourceAware = v
	}
	if a, ok := affinity(t); ok && a != "" {
		s.Affinity = a
	}
	if v, ok := t.str("control"); ok {
		switch {
		case v == "":
			t.errorf("control", "must not be empty: it is the path of the status socket")
		case strings.ContainsRune(v, 0):
			t.errorf("control", "must not contain a NUL byte")
		case len(v) > 107:
			t.errorf("control", "%q is %d bytes long; a unix socket path holds at most 107", v, len(v))
		default:
			s.Control = v
		}
	}
	if v, ok := t.str("metrics"); ok {
		if msg := checkHostPort(v); msg != "" {
			t.errorf("metrics", "%s", msg)
		} else {
			s.Metrics = v
		}
	}
	mark, markOK := t.integer("mark", 0, math.MaxUint32)
	mask, maskOK := t.integer("mark_mask", 0, math.MaxUint32)
	if markOK {
		if mark == 0 {
			t.errorf("mark", "must not be 0: the mark tells the shim's own frames apart")
			markOK = false
		} else {
			s.Mark = uint32(mark)
		}
	}
	if maskOK {
		if mask == 0 {
			t.errorf("mark_mask", "must not be 0")
			maskOK = false
		} else {
			s.MarkMask = uint32(mask)
		}
	}
	_, markSet := t.m["mark"]
	_, maskSet := t.m["mark_mask"]
	if (markOK || !markSet) && (maskOK || !maskSet) && s.Mark&^s.MarkMask != 0 {
		k := "mark"
		if !markSet {
			k = "mark_mask"
		}
		t.errorf(k, "mark %#x has bits outside mark_mask %#x", s.Mark, s.MarkMask)
	}
	if v, ok := t.str("attach"); ok {
		switch a := Attach(v); a {
		case AttachAuto, AttachTCX, AttachTC:
			s.Attach = a
		default:
			t.errorf("attach", "%q is not an attach mode: use \"auto\" (TCX when the kernel has it, else tc), \"tcx\" (Linux 6.6 or later) or \"tc\" (clsact and cls_bpf)", v)
		}
	}
	if v, ok := t.duration("heartbeat"); ok {
		if v < MinHeartbeat || v > MaxHeartbeat {
			t.errorf("heartbeat", "%v is out of range: must be from %v to %v", v, MinHeartbeat, MaxHeartbeat)
		} else {
			s.Heartbeat = v
		}
	}
	t.finish()
}

// failover decodes the [failover] table over the defaults in f.
func (d *decoder) failover(t *table, f *Failover) {
	if v, ok := t.integer("syn_retries", 1, MaxSynRetries); ok {
		f.SynRetries = int(v)
	}
	if v, present := t.get("fail_ratio"); present {
		var r float64
		ok := true
		switch v := v.(type) {
		case float64:
			r = v
		case int64:
			r = float64(v)
		default:
			ok = false
			t.errorf("fail_ratio", "must be a number, not %s", describe(v))
		}
		if ok {
			if r > 0 && r <= 1 {
				f.FailRatio = r
			} else {
				t.errorf("fail_ratio", "%v is out of range: must be above 0 and at most 1", r)
			}
		}
	}
	if v, ok := t.integer("min_attempts", 1, math.MaxInt32); ok {
		f.MinAttempts = int(v)
	}
	if v, ok := t.duration("window"); ok {
		if v <= 0 {
			t.errorf("window", "%v is out of range: must be above 0", v)
		} else {
			f.Window = v
		}
	}
	if v, ok := t.duration("probe_interval"); ok {
		if v != 0 && v < MinProbeInterval {
			t.errorf("probe_interval", "%v is out of range: must be \"0s\" (probing off) or at least %v", v, MinProbeInterval)
		} else {
			f.ProbeInterval = v
		}
	}
	if v, ok := t.integer("probe_misses", 1, math.MaxInt32); ok {
		f.ProbeMisses = int(v)
	}
	t.finish()
}

// conntrack decodes the [conntrack] table over the defaults in c.
func (d *decoder) conntrack(t *table, c *Conntrack) {
	if v, ok := t.integer("max_flows", MinMaxFlows, MaxMaxFlows); ok {
		c.MaxFlows = int(v)
	}
	for _, k := range []struct {
		key string
		dst *time.Duration
	}{
		{"tcp_syn_sent", &c.TCPSynSent},
		{"tcp_established", &c.TCPEstablished},
		{"tcp_closing", &c.TCPClosing},
		{"tcp_closed", &c.TCPClosed},
		{"udp_unreplied", &c.UDPUnreplied},
		{"udp_replied", &c.UDPReplied},
		{"icmp", &c.ICMP},
		{"other", &c.Other},
	} {
		if v, ok := t.duration(k.key); ok {
			if v < MinConntrackTimeout || v > MaxConntrackTimeout {
				t.errorf(k.key, "%v is out of range: must be from %v to %v", v, MinConntrackTimeout, MaxConntrackTimeout)
			} else {
				*k.dst = v
			}
		}
	}
	t.finish()
}

// gateway decodes the i-th (0-based) [[gateway]] table.
func (d *decoder) gateway(i int, t *table) (Gateway, gatewayInfo) {
	g := Gateway{Weight: DefaultWeight, On: true, Line: d.lines.lookup(t.path...)}
	info := gatewayInfo{t: t}
	if v, ok := t.str("interface"); ok {
		if msg := checkIfname(v); msg != "" {
			t.errorf("interface", "%s", msg)
		} else {
			g.Interface = v
			info.ifaceOK = true
		}
	} else if _, present := t.m["interface"]; !present {
		t.errorf("interface", "is required: the interface the gateway is reached through")
	}
	if v, ok := t.str("name"); ok {
		info.named = true
		if msg := checkName(v); msg != "" {
			t.errorf("name", "%s", msg)
		} else if _, err := netip.ParseAddr(v); err == nil {
			t.errorf("name", "%q must not be an IP address: rules name a gateway by its name or its address", v)
		}
		g.Name = v
	} else if _, present := t.m["name"]; present {
		info.named = true
	} else {
		g.Name = g.Interface
	}
	if v, ok := t.str("address"); ok {
		if a, msg := parseUnicast4(v); msg != "" {
			t.errorf("address", "%s", msg)
		} else {
			g.Address = a
			info.addressOK = true
		}
	}
	// A missing address is checked against the interface (CheckHost): an Ethernet gateway
	// needs one for ARP, a point-to-point link's (ppp, WireGuard) does not.
	if v, ok := t.str("address6"); ok {
		if a, msg := parseUnicast6(v); msg != "" {
			t.errorf("address6", "%s", msg)
		} else {
			g.Address6 = a
		}
	}
	if v, ok := t.str("mac"); ok {
		if mac, msg := parseMAC(v); msg != "" {
			t.errorf("mac", "%s", msg)
		} else {
			g.MAC = mac
		}
	}
	if v, ok := t.integer("weight", 1, MaxWeight); ok {
		g.Weight = int(v)
	}
	if v, ok := t.str("comment"); ok {
		g.Comment = v
	}
	if v, ok := t.boolean("on"); ok {
		g.On = v
	}
	if v, ok := t.boolean("onlink"); ok {
		g.Onlink = v
	}
	if v, present := t.get("probe"); present {
		g.Probe = d.probes(t, v)
	}
	if v, present := t.get("mtu"); present {
		if n, ok := v.(int64); !ok {
			t.errorf("mtu", "must be an integer, not %s", describe(v))
		} else if n != 0 && (n < MinMTU || n > MaxMTU) {
			t.errorf("mtu", "%d is out of range: must be from %d to %d (or 0 for the interface's MTU)", n, MinMTU, MaxMTU)
		} else {
			g.MTU = int(n)
		}
	}
	t.finish()
	return g, info
}

// probes decodes a gateway's probe targets: IPv4 and IPv6 unicast addresses, mixed.
func (d *decoder) probes(t *table, v any) []netip.Addr {
	arr, ok := v.([]any)
	if !ok {
		t.errorf("probe", "must be an array of IP addresses such as [\"192.0.2.10\", \"2001:db8::10\"], not %s", describe(v))
		return nil
	}
	var out []netip.Addr
	seen := map[netip.Addr]int{}
	for j, e := range arr {
		key := fmt.Sprintf("%s[%d]", t.key("probe"), j+1)
		line := d.lines.lookup(t.child("probe", elem(j))...)
		s, ok := e.(string)
		if !ok {
			d.errorf(line, key, "must be a string with an IPv4 or IPv6 address, not %s", describe(e))
			continue
		}
		a, msg := parseProbeTarget(s)
		if msg != "" {
			d.errorf(line, key, "%s", msg)
			continue
		}
		if first, dup := seen[a]; dup {
			d.errorf(line, key, "%v is already probe[%d]", a, first)
			continue
		}
		seen[a] = j + 1
		out = append(out, a)
	}
	return out
}

// parseProbeTarget parses a probe target: an IPv4 unicast address, or an IPv6 global unicast
// one (an echo to it leaves from the uplink's global IPv6 address through its router, so a
// link-local target, which needs a zone and is on the link itself, cannot be one).
func parseProbeTarget(s string) (netip.Addr, string) {
	a, err := netip.ParseAddr(s)
	switch {
	case err != nil && strings.Contains(s, "/"):
		return a, fmt.Sprintf("%q is not an IP address: write the address alone, without a prefix length", s)
	case err != nil:
		return a, fmt.Sprintf("%q is not an IPv4 or IPv6 address", s)
	case a.Is4():
		return parseUnicast4(s)
	case a.Zone() != "":
		return a, fmt.Sprintf("%q has a zone: a probe target is a global address, without one", s)
	case a.Is4In6():
		return a, fmt.Sprintf("%q is an IPv4-mapped IPv6 address: write the IPv4 address (%v)", s, a.Unmap())
	case a.IsUnspecified():
		return a, fmt.Sprintf("%v is the unspecified address, not a unicast address", a)
	case a.IsLoopback():
		return a, fmt.Sprintf("%v is a loopback address", a)
	case a.IsMulticast():
		return a, fmt.Sprintf("%v is a multicast address, not a unicast address", a)
	case a.IsLinkLocalUnicast():
		return a, fmt.Sprintf("%v is a link-local address: IPv6 probe targets are global unicast addresses beyond the router", a)
	case !a.IsGlobalUnicast():
		return a, fmt.Sprintf("%v is not a global unicast address", a)
	}
	return a, ""
}

// crossGateways checks what involves several gateways: names, shared interfaces, duplicates.
func (d *decoder) crossGateways(c *Config, infos []gatewayInfo) {
	// Gateways sharing an interface must each be named.
	byIface := map[string][]int{}
	for i, info := range infos {
		if info.ifaceOK {
			byIface[c.Gateways[i].Interface] = append(byIface[c.Gateways[i].Interface], i)
		}
	}
	for i, info := range infos {
		if !info.ifaceOK || info.named {
			continue
		}
		if group := byIface[c.Gateways[i].Interface]; len(group) > 1 {
			info.t.errorf("name", "is required: %s share interface %q, so give each a unique name",
				gatewayList(group), c.Gateways[i].Interface)
		}
	}
	// Names must be unique.
	firstByName := map[string]int{}
	for i, g := range c.Gateways {
		if g.Name == "" {
			continue
		}
		j, dup := firstByName[g.Name]
		if !dup {
			firstByName[g.Name] = i
			continue
		}
		if !infos[i].named && !infos[j].named {
			continue // already reported: unnamed gateways sharing an interface
		}
		if infos[i].named {
			infos[i].t.errorf("name", "%q is already the name of gateway[%d] (line %d)", g.Name, j+1, c.Gateways[j].Line)
		} else {
			infos[i].t.errorf("name", "is required: the default, the interface name %q, is already the name of gateway[%d] (line %d)",
				g.Name, j+1, c.Gateways[j].Line)
		}
	}
	// The same gateway twice.
	type ifaceAddr struct {
		iface string
		addr  netip.Addr
	}
	seen := map[ifaceAddr]int{}
	for i, g := range c.Gateways {
		if !infos[i].ifaceOK || !infos[i].addressOK {
			continue
		}
		k := ifaceAddr{g.Interface, g.Address}
		if j, dup := seen[k]; dup {
			infos[i].t.errorf("address", "gateway[%d] (line %d) is already %v on %s", j+1, c.Gateways[j].Line, g.Address, g.Interface)
			continue
		}
		seen[k] = i
	}
}

// gatewayList renders 0-based gateway indices for messages: "gateway[1] and gateway[3]".
func gatewayList(idx []int) string {
	parts := make([]string, len(idx))
	for i, n := range idx {
		parts[i] = fmt.Sprintf("gateway[%d]", n+1)
	}
	if len(parts) <= 2 {
		return strings.Join(parts, " and ")
	}
	return strings.Join(parts[:len(parts)-1], ", ") + " and " + parts[len(parts)-1]
}

// rule decodes the i-th (0-based) [[rule]] table.
func (d *decoder) rule(c *Config, infos []gatewayInfo, i int, t *table) Rule {
	r := Rule{Index: i, Protocol: DefaultProtocol, Line: d.lines.lookup(t.path...), Name: fmt.Sprintf("rule %d", i+1)}
	if v, ok := t.str("name"); ok {
		if msg := checkName(v); msg != "" {
			t.errorf("name", "%s", msg)
		} else {
			r.Name = v
			t.label = "rule " + strconv.Quote(v)
		}
	}
	if v, ok := t.str("interface"); ok && v != "" {
		if msg := checkIfname(v); msg != "" {
			t.errorf("interface", "%s", msg)
		} else {
			r.Interface = v
			used := false
			for j, g := range c.Gateways {
				used = used || g.Interface == v || !infos[j].ifaceOK
			}
			if !used && len(c.Gateways) > 0 {
				t.errorf("interface", "no gateway uses interface %q, and l2shim only sees frames on its gateways' interfaces (%s)",
					v, strings.Join(c.Interfaces(), ", "))
			}
		}
	}
	if v, ok := t.str("direction"); ok {
		switch v {
		case DirectionOut, DirectionIn, "":
			r.Direction = v
		default:
			t.errorf("direction", "%q is not a direction: use \"out\" (host to wire) or \"in\" (wire to host), or leave it out for both", v)
		}
	}
	srcText := ""
	for _, k := range []string{"src", "dst"} {
		if v, ok := t.str(k); ok {
			p, msg := parsePrefix(v)
			switch {
			case msg != "":
				t.errorf(k, "%s", msg)
			case k == "src":
				r.Src, srcText = p, v
			case r.Src.IsValid() && r.Src.Addr().Is4() != p.Addr().Is4():
				// A flow is IPv4 or IPv6, so it cannot match both prefixes.
				t.errorf(k, "%q is %s but src %q is %s, and a flow is one or the other: this rule could never match; write one rule per family",
					v, familyName(p), srcText, familyName(r.Src))
			default:
				r.Dst = p
			}
		}
	}
	protoOK := true
	if v, ok := t.str("protocol"); ok {
		switch v {
		case "tcp", "udp", "icmp", "any":
			r.Protocol = v
		default:
			protoOK = false
			t.errorf("protocol", "%q is not a protocol: use \"tcp\", \"udp\", \"icmp\" or \"any\"", v)
		}
	} else if _, present := t.m["protocol"]; present {
		protoOK = false
	}
	for _, k := range []string{"src_port", "dst_port"} {
		v, present := t.get(k)
		if !present {
			continue
		}
		pr, msg := parsePortRange(v)
		if msg != "" {
			t.errorf(k, "%s", msg)
			continue
		}
		if protoOK && r.Protocol != "tcp" && r.Protocol != "udp" {
			how := "is"
			if _, set := t.m["protocol"]; !set {
				how = "defaults to"
			}
			t.errorf(k, "ports need protocol = \"tcp\" or \"udp\"; this rule's protocol %s %q", how, r.Protocol)
			continue
		}
		if k == "src_port" {
			r.SrcPort = pr
		} else {
			r.DstPort = pr
		}
	}
	actionOK := false
	if v, ok := t.str("action"); ok {
		switch v {
		case ActionRouteTo, ActionBalance, ActionPass, ActionDrop:
			r.Action = v
			actionOK = true
		default:
			t.errorf("action", "%q is not an action: use \"route-to\", \"balance\", \"pass\" or \"drop\"", v)
		}
	} else if _, present := t.m["action"]; !present {
		t.errorf("action", "is required: \"route-to\", \"balance\", \"pass\" or \"drop\"")
	}
	if a, ok := affinity(t); ok && a != "" && actionOK {
		switch r.Action {
		case ActionRouteTo, ActionBalance:
			r.Affinity = a
		default:
			t.errorf("affinity", "only applies to balance and route-to rules (the flows they leave to the mode's choice); this rule's action is %q", r.Action)
		}
	}
	ref, refOK := t.str("gateway")
	_, refSet := t.m["gateway"]
	strict, strictOK := t.boolean("strict")
	_, strictSet := t.m["strict"]
	switch {
	case !actionOK:
	case r.Action == ActionRouteTo:
		if refOK {
			r.Gateway = ref
			d.checkRef(c, t, ref)
		} else if !refSet {
			t.errorf("gateway", "is required with action = \"route-to\": a gateway's name, or its address when unique")
		}
		if strictOK {
			r.Strict = strict
		}
	default:
		if refSet {
			t.errorf("gateway", "only route-to rules name a gateway; this rule's action is %q", r.Action)
		}
		if strictSet {
			t.errorf("strict", "only applies to route-to rules; this rule's action is %q", r.Action)
		}
	}
	t.finish()
	return r
}

// affinity decodes the affinity key of t: ok when it is absent ("") or valid.
func affinity(t *table) (Affinity, bool) {
	v, ok := t.str("affinity")
	if !ok {
		_, present := t.m["affinity"]
		return "", !present
	}
	switch a := Affinity(v); a {
	case AffinityFlow, AffinityHostPair:
		return a, true
	}
	t.errorf("affinity", "%q is not an affinity: use \"flow\" (each connection on its own) or \"host-pair\" (every connection between two addresses on one uplink)", v)
	return "", false
}

// checkRef reports a route-to rule's gateway reference that names no gateway or is ambiguous.
func (d *decoder) checkRef(c *Config, t *table, ref string) {
	if _, ok := c.Gateway(ref); ok {
		return
	}
	a, err := netip.ParseAddr(strings.TrimSpace(ref))
	if err != nil {
		names := make([]string, 0, len(c.Gateways))
		for _, g := range c.Gateways {
			if g.Name != "" {
				names = append(names, strconv.Quote(g.Name))
			}
		}
		msg := fmt.Sprintf("no gateway is named %q", ref)
		if len(names) > 0 {
			msg += " (gateways: " + strings.Join(names, ", ") + ")"
		}
		t.errorf("gateway", "%s", msg)
		return
	}
	var idx []int
	for i, g := range c.Gateways {
		if g.Address == a {
			idx = append(idx, i)
		}
	}
	switch len(idx) {
	case 0:
		t.errorf("gateway", "no gateway has address %v", a)
	case 1:
	default:
		names := make([]string, len(idx))
		for i, n := range idx {
			names[i] = strconv.Quote(c.Gateways[n].Name)
		}
		t.errorf("gateway", "%v is ambiguous: %s all have this address; name one of %s instead",
			a, gatewayList(idx), strings.Join(names, ", "))
	}
}

// crossRules checks what involves several rules: unique names.
func (d *decoder) crossRules(c *Config) {
	first := map[string]int{}
	for i, r := range c.Rules {
		if j, dup := first[r.Name]; dup {
			d.errorf(d.lines.lookup("rule", elem(i), "name"), fmt.Sprintf("rule[%d].name", i+1),
				"%q is already the name of rule[%d] (line %d)", r.Name, j+1, c.Rules[j].Line)
			continue
		}
		first[r.Name] = i
	}
}

// describe renders a decoded TOML value and its type for messages.
func describe(v any) string {
	switch v := v.(type) {
	case string:
		return "the string " + strconv.Quote(v)
	case int64:
		return fmt.Sprintf("the integer %d", v)
	case float64:
		return fmt.Sprintf("the float %v", v)
	case bool:
		return fmt.Sprintf("the boolean %v", v)
	case []map[string]any:
		return "an array of tables"
	case []any:
		return "an array"
	case map[string]any:
		return "a table"
	case nil:
		return "nothing"
	default:
		return fmt.Sprintf("the date/time %v", v)
	}
}

// checkIfname returns why s is not a valid Linux interface name, or "".
func checkIfname(s string) string {
	switch {
	case s == "":
		return "must not be empty"
	case len(s) > 15:
		return fmt.Sprintf("%q is not an interface name: Linux allows at most 15 bytes", s)
	case s == "." || s == "..":
		return fmt.Sprintf("%q is not an interface name", s)
	case strings.ContainsAny(s, "/:") || strings.IndexFunc(s, unicode.IsSpace) >= 0 || strings.ContainsRune(s, 0):
		return fmt.Sprintf("%q is not an interface name: it may not contain '/', ':' or spaces", s)
	}
	return ""
}

// checkName returns why s is not a usable gateway or rule name, or "".
func checkName(s string) string {
	switch {
	case s == "":
		return "must not be empty; leave the key out for the default"
	case strings.IndexFunc(s, unicode.IsControl) >= 0:
		return fmt.Sprintf("%q must not contain control characters", s)
	case strings.TrimSpace(s) != s:
		return fmt.Sprintf("%q must not start or end with spaces", s)
	}
	return ""
}

// parseUnicast6 parses an IPv6 router address (link-local ones included, without a zone: the
// gateway's interface is the zone); msg says why s is not one.
func parseUnicast6(s string) (netip.Addr, string) {
	a, err := netip.ParseAddr(s)
	switch {
	case err != nil && strings.Contains(s, "/"):
		return a, fmt.Sprintf("%q is not an IPv6 address: write the address alone, without a prefix length", s)
	case err != nil:
		return a, fmt.Sprintf("%q is not an IPv6 address", s)
	case a.Zone() != "":
		return a, fmt.Sprintf("%q has a zone: write the address alone, the gateway's interface is its zone", s)
	case a.Is4() || a.Is4In6():
		return a, fmt.Sprintf("%q is an IPv4 address: address6 is the gateway's IPv6 router (address takes the IPv4 one)", s)
	case a.IsUnspecified(), a.IsLoopback(), a.IsMulticast():
		return a, fmt.Sprintf("%v is not a unicast address", a)
	}
	return a, ""
}

// parseUnicast4 parses an IPv4 unicast address; msg says why s is not one.
func parseUnicast4(s string) (a netip.Addr, msg string) {
	a, err := netip.ParseAddr(s)
	switch {
	case err != nil && strings.Contains(s, "/"):
		return a, fmt.Sprintf("%q is not an IPv4 address: write the address alone, without a prefix length", s)
	case err != nil:
		return a, fmt.Sprintf("%q is not an IPv4 address", s)
	case !a.Is4():
		return a, fmt.Sprintf("%q is an IPv6 address; l2shim handles IPv4 only", s)
	case a.IsUnspecified():
		return a, fmt.Sprintf("%v is the unspecified address, not a unicast address", a)
	case a.As4()[0] == 0:
		return a, fmt.Sprintf("%v is in 0.0.0.0/8 (\"this network\"), not a unicast address", a)
	case a.IsLoopback():
		return a, fmt.Sprintf("%v is a loopback address", a)
	case a.IsMulticast():
		return a, fmt.Sprintf("%v is a multicast address, not a unicast address", a)
	case a == netip.AddrFrom4([4]byte{255, 255, 255, 255}):
		return a, fmt.Sprintf("%v is the broadcast address, not a unicast address", a)
	case a.As4()[0] >= 240:
		return a, fmt.Sprintf("%v is in the reserved range 240.0.0.0/4", a)
	}
	return a, ""
}

// parsePrefix parses a rule's src or dst: an IPv4 address (as a /32), an IPv6 one (as a /128),
// or an IPv4 or IPv6 CIDR whose host bits are clear. It refuses zones and IPv4-mapped IPv6
// addresses (::ffff:a.b.c.d), which no IPv6 flow carries: such a rule is almost certainly
// meant for IPv4.
func parsePrefix(s string) (netip.Prefix, string) {
	const examples = `such as "192.0.2.0/24" or "2001:db8::/32"`
	t := strings.TrimSpace(s)
	var p netip.Prefix
	if !strings.Contains(t, "/") {
		a, err := netip.ParseAddr(t)
		switch {
		case err != nil:
			return netip.Prefix{}, fmt.Sprintf("%q is not an IP address or CIDR %s", s, examples)
		case a.Zone() != "":
			return netip.Prefix{}, fmt.Sprintf("%q has a zone: write the address alone", s)
		}
		p = netip.PrefixFrom(a, a.BitLen())
	} else {
		var err error
		if p, err = netip.ParsePrefix(t); err != nil {
			return netip.Prefix{}, fmt.Sprintf("%q is not a CIDR %s", s, examples)
		}
	}
	if a := p.Addr(); a.Is4In6() {
		alt := "an IPv4 prefix"
		if !strings.Contains(t, "/") {
			alt = strconv.Quote(a.Unmap().String())
		} else if p.Bits() >= 96 {
			alt = strconv.Quote(netip.PrefixFrom(a.Unmap(), p.Bits()-96).Masked().String())
		}
		return netip.Prefix{}, fmt.Sprintf("%q is an IPv4-mapped IPv6 address, which no flow carries: write %s", s, alt)
	}
	if m := p.Masked(); m != p {
		return netip.Prefix{}, fmt.Sprintf("%q has host bits set; did you mean %q?", s, m.String())
	}
	return p, ""
}

// familyName says "IPv4" or "IPv6" for p, for messages.
func familyName(p netip.Prefix) string {
	if p.Addr().Is4() {
		return "IPv4"
	}
	return "IPv6"
}

// parsePortRange parses a port (integer or string) or a "lo-hi" range.
func parsePortRange(v any) (PortRange, string) {
	switch v := v.(type) {
	case int64:
		if v < 1 || v > 65535 {
			return PortRange{}, fmt.Sprintf("port %d is out of range: must be from 1 to 65535", v)
		}
		return PortRange{uint16(v), uint16(v)}, ""
	case string:
		lo, hi, isRange := strings.Cut(v, "-")
		l, msg := parsePort(lo, v)
		if msg != "" {
			return PortRange{}, msg
		}
		if !isRange {
			return PortRange{l, l}, ""
		}
		h, msg := parsePort(hi, v)
		if msg != "" {
			return PortRange{}, msg
		}
		if l > h {
			return PortRange{}, fmt.Sprintf("%q goes from high to low; write \"%d-%d\"", v, h, l)
		}
		return PortRange{l, h}, ""
	default:
		return PortRange{}, fmt.Sprintf("must be a port (25) or a range (\"1000-2000\"), not %s", describe(v))
	}
}

// parsePort parses one port of the value whole.
func parsePort(s, whole string) (uint16, string) {
	s = strings.TrimSpace(s)
	n, err := strconv.ParseUint(s, 10, 64)
	if err != nil || s == "" || s[0] == '+' {
		return 0, fmt.Sprintf("%q is not a port (25) or a range (\"1000-2000\")", whole)
	}
	if n < 1 || n > 65535 {
		return 0, fmt.Sprintf("%q: port %s is out of range: must be from 1 to 65535", whole, s)
	}
	return uint16(n), ""
}

// parseMAC parses a 6-byte unicast MAC address.
func parseMAC(s string) (net.HardwareAddr, string) {
	mac, err := net.ParseMAC(s)
	switch {
	case err != nil || len(mac) != 6:
		return nil, fmt.Sprintf("%q is not a MAC address such as \"02:00:00:00:00:01\"", s)
	case mac[0]&1 != 0:
		return nil, fmt.Sprintf("%v is a multicast or broadcast MAC address; a gateway has a unicast one", mac)
	case string(mac) == "\x00\x00\x00\x00\x00\x00":
		return nil, fmt.Sprintf("%v is the zero MAC address", mac)
	}
	return mac, ""
}

// checkHostPort returns why s is not a listen address "host:port", or "".
func checkHostPort(s string) string {
	if s == "" {
		return "" // explicitly off
	}
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return fmt.Sprintf("%q is not host:port, e.g. \"127.0.0.1:9617\"", s)
	}
	if n, err := strconv.ParseUint(port, 10, 16); err != nil || n == 0 || port[0] == '+' {
		return fmt.Sprintf("%q: port %q must be a number from 1 to 65535", s, port)
	}
	if host == "" {
		return ""
	}
	if _, err := netip.ParseAddr(host); err == nil {
		return ""
	}
	if len(host) > 253 {
		return fmt.Sprintf("%q: %q is not an IP address or host name", s, host)
	}
	for _, label := range strings.Split(host, ".") {
		ok := len(label) >= 1 && len(label) <= 63 && label[0] != '-' && label[len(label)-1] != '-'
		for i := 0; ok && i < len(label); i++ {
			c := label[i]
			ok = c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-'
		}
		if !ok {
			return fmt.Sprintf("%q: %q is not an IP address or host name", s, host)
		}
	}
	return ""
}

// suggest returns the known key closest to k when it is close enough to be a typo, or "".
func suggest(k string, known []string) string {
	best, bestDist := "", max(1, len(k)/3)+1
	for _, c := range known {
		if dist := editDistance(strings.ToLower(k), c); dist < bestDist {
			best, bestDist = c, dist
		}
	}
	return best
}

// editDistance is the Levenshtein distance between a and b.
func editDistance(a, b string) int {
	if len(a) > 64 || len(b) > 64 {
		if a == b {
			return 0
		}
		return 64
	}
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
