package conf

import (
	"errors"
	"io/fs"
	"net"
	"net/netip"
	"os"
	"strings"
	"time"
)

// Mode is how new flows that no rule and no source-aware decision places are spread over the
// gateways.
type Mode string

// The modes of [shim] mode.
const (
	// ModeLoadBalance places new flows on usable gateways by weight.
	ModeLoadBalance Mode = "load-balance"
	// ModeFailover places new flows on the first usable gateway in file order.
	ModeFailover Mode = "failover"
	// ModeOff leaves such flows to host routing; source-aware routing and rules still apply.
	ModeOff Mode = "off"
)

// Attach is how the kernel hooks are attached: [shim] attach.
type Attach string

// The values of [shim] attach.
const (
	// AttachAuto uses TCX when the kernel has it (Linux 6.6 or later), else tc.
	AttachAuto Attach = "auto"
	// AttachTCX attaches TCX links: they die with the process.
	AttachTCX Attach = "tcx"
	// AttachTC attaches direct-action cls_bpf filters under a clsact qdisc: they outlive the
	// process, which the heartbeat makes fail-open.
	AttachTC Attach = "tc"
)

// Affinity is what keeps new connections together on one uplink when the mode's choice places
// them: each flow on its own, or every flow between one local and one remote address.
type Affinity string

// The affinities of [shim] affinity and a rule's affinity.
const (
	// AffinityFlow places each flow by its own 5-tuple: the best balance.
	AffinityFlow Affinity = "flow"
	// AffinityHostPair places every flow between one local and one remote address on the
	// same uplink, for sites that tie a session to the client's address.
	AffinityHostPair Affinity = "host-pair"
)

// Defaults of the keys a file may leave out.
const (
	DefaultMode          = ModeLoadBalance
	DefaultSourceAware   = true
	DefaultControl       = "/run/l2shim/l2shim.sock"
	DefaultMark          = uint32(0xa0)
	DefaultMarkMask      = uint32(0xf0)
	DefaultHeartbeat     = time.Second
	DefaultSynRetries    = 2
	DefaultFailRatio     = 0.5
	DefaultMinAttempts   = 4
	DefaultWindow        = 60 * time.Second
	DefaultProbeInterval = time.Second
	DefaultProbeMisses   = 3
	DefaultWeight        = 1
	DefaultProtocol      = "any"
	DefaultAffinity      = AffinityFlow
	DefaultAttach        = AttachAuto
)

// Defaults of the [conntrack] table. The timeouts are idle timeouts: each frame of a flow
// restarts its clock. They follow the kernel's nf_conntrack where that suits a bounded table
// that sits in front of the host's own conntrack (net/netfilter/nf_conntrack_proto_*.c).
const (
	// DefaultMaxFlows bounds the table: about 230 bytes a flow (the slab and both maps), so
	// 58 MiB when full.
	DefaultMaxFlows = 262144
	// DefaultTCPSynSent covers a connection whose handshake is not complete (SYN sent, SYN-ACK
	// seen, or a picked-up connection not yet answered). nf_conntrack's syn_sent is 2 minutes:
	// Linux retries a SYN six times over 127 s with gaps of up to 64 s, and a shorter timeout
	// would lose the flow's SYN count and placement between two retries. Unconfirmed flows are
	// evicted first, so a SYN flood gains nothing from the length.
	DefaultTCPSynSent = 120 * time.Second
	// DefaultTCPEstablished is 2h4m, not nf_conntrack's 5 days: established flows are never
	// evicted, so flows whose ends vanished without FIN or RST (a peer rebooted, a laptop
	// suspended, a NAT upstream forgot them) would pin the bounded table for days and make it
	// refuse new flows. RFC 5382 (REQ-5) sets 2h4m as the least a NAT may use: Linux's
	// default keepalive probes an idle connection after exactly 2 hours (tcp_keepalive_time
	// 7200 s), and the extra 4 minutes keep a kept-alive connection's flow alive; exactly 2
	// hours would race the first probe.
	DefaultTCPEstablished = 2*time.Hour + 4*time.Minute
	// DefaultTCPClosing is nf_conntrack's fin_wait and time_wait, 2 minutes: a half-closed
	// connection (a FIN one way) stays tracked while the other way keeps sending, and for 2
	// idle minutes after.
	DefaultTCPClosing = 120 * time.Second
	// DefaultTCPClosed is nf_conntrack's close, 10 s, for flows with a FIN each way or an RST:
	// enough for the last ACK and retransmitted FINs; the host's own TIME_WAIT protects the
	// host, and a SYN that reuses the tuple re-opens the flow anyway.
	DefaultTCPClosed = 10 * time.Second
	// DefaultUDPUnreplied is nf_conntrack's udp_timeout, 30 s, for UDP flows without a reply or
	// whose replies stopped within 2 s of the first frame (a DNS query and its answer).
	DefaultUDPUnreplied = 30 * time.Second
	// DefaultUDPReplied is 3 minutes for assured UDP flows (replies, and still busy after 2 s):
	// RFC 4787 (REQ-5) forbids a NAT to drop a UDP mapping in less than 2 minutes and
	// recommends 5; nf_conntrack's udp_timeout_stream is 2 minutes today, 3 in older kernels.
	// 3 minutes leaves a margin over the 2 minutes some applications' keepalives assume.
	DefaultUDPReplied = 180 * time.Second
	// DefaultICMPTimeout is nf_conntrack's icmp_timeout, 30 s, for ICMP echo flows.
	DefaultICMPTimeout = 30 * time.Second
	// DefaultOtherTimeout is nf_conntrack's generic_timeout, 10 minutes, for other protocols.
	DefaultOtherTimeout = 600 * time.Second
)

// Limits that validation enforces.
const (
	MinHeartbeat        = 200 * time.Millisecond
	MaxHeartbeat        = 60 * time.Second
	MinProbeInterval    = 50 * time.Millisecond
	MaxSynRetries       = 10
	MaxWeight           = 1000
	MinMTU              = 576
	MaxMTU              = 65535
	MinMaxFlows         = 1024
	MaxMaxFlows         = 16 << 20
	MinConntrackTimeout = time.Second         // least [conntrack] timeout
	MaxConntrackTimeout = 30 * 24 * time.Hour // greatest [conntrack] timeout
)

// Config is a loaded and statically validated configuration file.
type Config struct {
	File      string    // path it was loaded from (or the name given to Parse)
	Shim      Shim      // the [shim] table
	Failover  Failover  // the [failover] table
	Conntrack Conntrack // the [conntrack] table
	Gateways  []Gateway // the [[gateway]] tables, in file order
	Rules     []Rule    // the [[rule]] tables, in file order

	lines lineIndex // where each key is, for CheckHost's messages; nil for a Config built by hand
}

// Shim holds the [shim] table: global behaviour of the shim.
type Shim struct {
	Mode        Mode          // default load-balance
	SourceAware bool          // default true
	Control     string        // status socket path, default "/run/l2shim/l2shim.sock"
	Metrics     string        // "" = off; else "host:port" of the Prometheus endpoint
	Mark        uint32        // skb mark of the shim's own frames, default 0xa0
	MarkMask    uint32        // bits the shim owns, default 0xf0; Mark&^MarkMask == 0
	Heartbeat   time.Duration // hooks pass everything when the shim is silent this long; default 1s
	Affinity    Affinity      // default flow
	Attach      Attach        // how the kernel hooks are attached; default auto
}

// Failover holds the [failover] table: health accounting and probing.
type Failover struct {
	SynRetries    int           // a SYN sent more than this many times moves on; default 2, 1..10
	FailRatio     float64       // share of failed attempts that benches a gateway; default 0.5, (0,1]
	MinAttempts   int           // attempts needed before benching; default 4, >= 1
	Window        time.Duration // accounting window; default 60s, > 0
	ProbeInterval time.Duration // default 1s; 0 = probing off; otherwise >= 50ms
	ProbeMisses   int           // consecutive misses before a gateway is down; default 3, >= 1
}

// Conntrack holds the [conntrack] table: the flow table's bound and idle timeouts (see the
// Default* constants for the defaults and why). Every timeout is from 1s to 720h.
type Conntrack struct {
	MaxFlows       int           // hard bound on tracked flows; default 262144, 1024..16777216
	TCPSynSent     time.Duration // handshake not complete; default 2m
	TCPEstablished time.Duration // default 2h4m
	TCPClosing     time.Duration // a FIN one way (half-closed); default 2m
	TCPClosed      time.Duration // a FIN each way, or an RST; default 10s
	UDPUnreplied   time.Duration // UDP without replies, or with replies for less than 2s; default 30s
	UDPReplied     time.Duration // UDP with replies and still busy after 2s; default 3m
	ICMP           time.Duration // ICMP echo; default 30s
	Other          time.Duration // other protocols; default 10m
}

// Gateway is one [[gateway]] table: a next hop on an external interface.
type Gateway struct {
	Name      string           // defaults to Interface; unique
	Interface string           // the external interface the gateway is reached through
	Address   netip.Addr       // IPv4 unicast; optional on an L3 interface (invalid: none)
	Address6  netip.Addr       // IPv6 router (link-local or global); invalid: the kernel's IPv6 default route on Interface
	MAC       net.HardwareAddr // nil = resolve with ARP; else a 6-byte unicast address (Ethernet only)
	Weight    int              // default 1, 1..1000
	Comment   string           // free text shown by status
	On        bool             // default true
	Onlink    bool             // the address need not be inside the interface's prefixes
	Probe     []netip.Addr     // IPv4 unicast and IPv6 global unicast echo targets reached through this gateway
	MTU       int              // 0 = the interface's; else 576..65535
	Line      int              // line of its [[gateway]] header
}

// PortRange is an inclusive range of TCP or UDP ports. The zero value means any port; a single
// port has Lo == Hi.
type PortRange struct{ Lo, Hi uint16 }

// Any reports whether the range is the zero value, which matches every port.
func (r PortRange) Any() bool { return r.Lo == 0 && r.Hi == 0 }

// Contains reports whether port p is inside the range; the zero range contains every port.
func (r PortRange) Contains(p uint16) bool { return r.Any() || (r.Lo <= p && p <= r.Hi) }

// String renders the range as written in a file: "25", "1000-2000", or "any".
func (r PortRange) String() string {
	switch {
	case r.Any():
		return "any"
	case r.Lo == r.Hi:
		return itoa(int(r.Lo))
	default:
		return itoa(int(r.Lo)) + "-" + itoa(int(r.Hi))
	}
}

// Rule is one [[rule]] table: a filter evaluated in file order, first match wins.
type Rule struct {
	Name             string       // defaults to "rule N" (1-based)
	Index            int          // 0-based position in the file
	Interface        string       // "" = any
	Direction        string       // "out" (host → wire), "in" (wire → host), or "" = both
	Src, Dst         netip.Prefix // invalid (zero) = any; IPv4 or IPv6, both of one family when both are set
	Protocol         string       // "tcp", "udp", "icmp" or "any" (default)
	SrcPort, DstPort PortRange    // zero = any; only with tcp and udp
	Action           string       // "route-to", "balance", "pass" or "drop"
	Gateway          string       // route-to only: a gateway's name, or an address exactly one gateway has
	Strict           bool         // route-to only
	Affinity         Affinity     // balance and route-to only: "" = [shim] affinity
	Line             int          // line of its [[rule]] header
}

// The actions of a rule.
const (
	ActionRouteTo = "route-to"
	ActionBalance = "balance" // placed as if no rule matched, with the rule's affinity
	ActionPass    = "pass"
	ActionDrop    = "drop"
)

// The directions of a rule.
const (
	DirectionOut = "out"
	DirectionIn  = "in"
)

// Load reads and validates the file at path statically, without looking at the host. On any
// problem it returns a nil *Config and an Errors value listing every problem found.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		var pe *fs.PathError
		if errors.As(err, &pe) {
			err = pe.Err
		}
		return nil, Errors{{File: path, Msg: "cannot read the file: " + err.Error()}}
	}
	return Parse(path, data)
}

// Parse is Load on the contents of a file; name stands for the file in messages and in
// Config.File.
func Parse(name string, data []byte) (*Config, error) {
	d := newDecoder(name, data)
	c := d.decode()
	if len(d.errs) > 0 {
		d.errs.sort()
		return nil, d.errs
	}
	return c, nil
}

// GatewayByRef returns the gateway a route-to rule names: the gateway with that name, or else
// the only gateway with that address.
func (c *Config) GatewayByRef(ref string) (*Gateway, bool) {
	for i := range c.Gateways {
		if c.Gateways[i].Name == ref {
			return &c.Gateways[i], true
		}
	}
	a, err := netip.ParseAddr(strings.TrimSpace(ref))
	if err != nil {
		return nil, false
	}
	var found *Gateway
	for i := range c.Gateways {
		if c.Gateways[i].Address == a {
			if found != nil {
				return nil, false
			}
			found = &c.Gateways[i]
		}
	}
	return found, found != nil
}

// Gateway returns the gateway with the given name.
func (c *Config) Gateway(name string) (*Gateway, bool) {
	for i := range c.Gateways {
		if c.Gateways[i].Name == name {
			return &c.Gateways[i], true
		}
	}
	return nil, false
}

// Interfaces returns the external interfaces the gateways use, each once, in file order.
func (c *Config) Interfaces() []string {
	var out []string
	seen := map[string]bool{}
	for _, g := range c.Gateways {
		if !seen[g.Interface] {
			seen[g.Interface] = true
			out = append(out, g.Interface)
		}
	}
	return out
}
