package shim

import (
	"net/netip"
	"testing"

	"github.com/l2shim/l2shim/conntrack"
	"github.com/l2shim/l2shim/datapath"
	"github.com/l2shim/l2shim/rewrite"
)

// TestFlowsFilterFamilies: `flows --addr` takes IPv4 and IPv6 addresses and CIDRs (an
// IPv4-mapped address is its IPv4 address), and `--proto icmp` selects ICMPv6 flows too, which
// are listed as icmp.
func TestFlowsFilterFamilies(t *testing.T) {
	for in, want := range map[string]string{
		"10.2.0.2":            "10.2.0.2/32",
		"10.2.0.0/16":         "10.2.0.0/16",
		"10.2.3.4/16":         "10.2.0.0/16",
		"2001:db8:2::2":       "2001:db8:2::2/128",
		"2001:db8:2::1/64":    "2001:db8:2::/64",
		"::ffff:10.2.0.2":     "10.2.0.2/32",
		"fe80::1%eth0":        "fe80::1/128",
		"not an address":      "",
		"2001:db8::/129":      "",
		"::ffff:10.2.0.0/120": "",
	} {
		p, err := parsePrefixOrAddr(in)
		if got := p.String(); want == "" && err == nil || want != "" && (err != nil || got != want) {
			t.Errorf("parsePrefixOrAddr(%q) = %s, %v; want %q", in, got, err, want)
		}
	}
	ping6 := datapath.FlowInfo{Orig: conntrack.Key{Src: netip.MustParseAddr("2001:db8:1::2").As16(), Dst: netip.MustParseAddr("2001:db8:ff::10").As16(), SrcPort: 7, DstPort: 7, Proto: rewrite.ProtoICMPv6}}
	ping6.Reply = ping6.Orig.Reverse()
	ff := datapath.FlowFilter{Gateway: datapath.AnyGateway, Proto: rewrite.ProtoICMP, Addr: netip.MustParsePrefix("2001:db8:1::/64")}
	if !ff.Matches(&ping6) || protoName(ping6.Orig.Proto) != "icmp" {
		t.Errorf("an ICMPv6 echo flow: matches --proto icmp --addr 2001:db8:1::/64 %v, listed as %q", ff.Matches(&ping6), protoName(ping6.Orig.Proto))
	}
	ff.Proto = rewrite.ProtoUDP
	if ff.Matches(&ping6) {
		t.Error("an ICMPv6 echo flow matches --proto udp")
	}
}
