package datapath

// IPv6 probes. A gateway's IPv6 round mirrors its IPv4 one: ICMPv6 echo requests to its IPv6
// probe targets (AddProbe6, ProbeFrame; the replies are consumed by consumeProbe like ICMP
// ones) play ICMP's role, and a neighbour solicitation for its IPv6 router plays ARP's. The
// hooks never divert neighbour discovery, so the solicitation goes out and the advertisement
// comes back through an ICMPv6 socket of the shim's on the uplink; these functions build the
// one and check the other.

// ICMPv6 neighbour discovery (RFC 4861).
const (
	icmp6NeighborSolicit = 135
	icmp6NeighborAdvert  = 136
	ndOptSourceLLA       = 1
	ndOptTargetLLA       = 2
	naFlagSolicited      = 0x40

	// NSLen is the length of the neighbour solicitation BuildNS writes.
	NSLen = 4 + 4 + 16 + 8
)

// SolicitedNode returns the solicited-node multicast address of target (ff02::1:ffXX:XXXX),
// where a neighbour solicitation for it is sent.
func SolicitedNode(target [16]byte) [16]byte {
	a := [16]byte{0: 0xff, 1: 0x02, 11: 0x01, 12: 0xff}
	copy(a[13:], target[13:])
	return a
}

// BuildNS writes into out (at least NSLen bytes) the ICMPv6 message of a neighbour
// solicitation for target from an interface with MAC mac (the source link-layer address
// option, so the router can answer without soliciting back), and returns its length. The
// checksum is left 0: the kernel computes it on an ICMPv6 socket, over the addresses it picks.
func BuildNS(out []byte, target [16]byte, mac [6]byte) int {
	b := out[:NSLen]
	clear(b)
	b[0] = icmp6NeighborSolicit
	copy(b[8:24], target[:])
	b[24], b[25] = ndOptSourceLLA, 1
	copy(b[26:32], mac[:])
	return NSLen
}

// MatchNA checks an ICMPv6 message (from its type on) received on a gateway's link with hop
// limit hopLimit as the router's answer to a neighbour solicitation for router: a neighbour
// advertisement, code 0, with the Solicited flag, for target router, that no router forwarded
// (hop limit 255, RFC 4861 7.1.2), and with a valid option list. It returns the router's MAC
// when the advertisement carries a target link-layer address option. Anything else (an
// unsolicited advertisement, one for another address, a truncated one) is not an answer.
func MatchNA(msg []byte, hopLimit int, router [16]byte) (mac [6]byte, hasMAC, ok bool) {
	if len(msg) < 24 || msg[0] != icmp6NeighborAdvert || msg[1] != 0 || hopLimit != 255 {
		return mac, false, false
	}
	if msg[4]&naFlagSolicited == 0 || [16]byte(msg[8:24]) != router {
		return mac, false, false
	}
	for opts := msg[24:]; len(opts) > 0; {
		if len(opts) < 8 || opts[1] == 0 || int(opts[1])*8 > len(opts) {
			return [6]byte{}, false, false // RFC 4861 7.1.2: a zero or overlong option length
		}
		n := int(opts[1]) * 8
		if opts[0] == ndOptTargetLLA && n == 8 {
			mac, hasMAC = [6]byte(opts[2:8]), true
		}
		opts = opts[n:]
	}
	return mac, hasMAC, true
}

// Probe6Ready reports whether gateway gi can be probed over IPv6: its uplink has a global IPv6
// address for the echoes to leave from, and its IPv6 router's MAC is known (a gateway on an L3
// link needs none). Until then its IPv6 rounds count for nothing: it takes no IPv6 flow anyway.
func (e *Engine) Probe6Ready(gi int) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	g := e.gws[gi]
	ifc := &e.ifaces[g.Iface]
	return ifc.Addr6 != ([16]byte{}) && (ifc.L3 || g.hasMAC6)
}
