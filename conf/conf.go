// Package conf reads, checks and holds l2shim's TOML configuration (DESIGN.md §5).
//
// Load and Parse decode a file strictly: an unknown key, a value of the wrong type or out of
// range, a duplicate gateway name or a route-to rule naming an unknown or ambiguous gateway is an
// error naming the file, the line and the key, and every such problem is reported at once.
// CheckHost then checks a loaded configuration against the interfaces of the host it would run
// on.
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
)

// Limits that validation enforces.
const (
	MinHeartbeat     = 200 * time.Millisecond
	MaxHeartbeat     = 60 * time.Second
	MinProbeInterval = 50 * time.Millisecond
	MaxSynRetries    = 10
	MaxWeight        = 1000
	MinMTU           = 576
	MaxMTU           = 65535
)

// Config is a loaded and statically validated configuration file.
type Config struct {
	File     string    // path it was loaded from (or the name given to Parse)
	Shim     Shim      // the [shim] table
	Failover Failover  // the [failover] table
	Gateways []Gateway // the [[gateway]] tables, in file order
	Rules    []Rule    // the [[rule]] tables, in file order

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
}

// Failover holds the [failover] table: health accounting and probing.
type Failover struct {
	SynRetries    int           // a SYN repeated more than this moves on; default 2, 0..10
	FailRatio     float64       // share of failed attempts that benches a gateway; default 0.5, (0,1]
	MinAttempts   int           // attempts needed before benching; default 4, >= 1
	Window        time.Duration // accounting window; default 60s, > 0
	ProbeInterval time.Duration // default 1s; 0 = probing off; otherwise >= 50ms
	ProbeMisses   int           // consecutive misses before a gateway is down; default 3, >= 1
}

// Gateway is one [[gateway]] table: a next hop on an external interface.
type Gateway struct {
	Name      string           // defaults to Interface; unique
	Interface string           // the external interface the gateway is reached through
	Address   netip.Addr       // IPv4 unicast
	MAC       net.HardwareAddr // nil = resolve with ARP; else a 6-byte unicast address
	Weight    int              // default 1, 1..1000
	Comment   string           // free text shown by status
	On        bool             // default true
	Onlink    bool             // the address need not be inside the interface's prefixes
	Probe     []netip.Addr     // IPv4 unicast ICMP targets reached through this gateway
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
	Src, Dst         netip.Prefix // invalid (zero) = any; IPv4 only
	Protocol         string       // "tcp", "udp", "icmp" or "any" (default)
	SrcPort, DstPort PortRange    // zero = any; only with tcp and udp
	Action           string       // "route-to", "pass" or "drop"
	Gateway          string       // route-to only: a gateway's name, or an address exactly one gateway has
	Strict           bool         // route-to only
	Line             int          // line of its [[rule]] header
}

// The actions of a rule.
const (
	ActionRouteTo = "route-to"
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
