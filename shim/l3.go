package shim

import (
	"fmt"

	"github.com/vishvananda/netlink"
)

// The MACs the hooks give an L3 device (one without a link-layer header: ppp, tun, WireGuard,
// a raw-IP modem) and its gateway in the Ethernet header they push in front of its diverted
// packets, so the engine sees Ethernet frames on every interface. Locally administered; they
// never reach a wire: frames for an L3 device lose the header before they leave.
var (
	l3IfaceMAC   = [6]byte{0x02, 0x6c, 0x33, 0x00, 0x00, 0x01}
	l3GatewayMAC = [6]byte{0x02, 0x6c, 0x33, 0x00, 0x00, 0x02}
)

// linkIsL3 reports whether a link has no link-layer header: ARPHRD_PPP (ppp, PPPoE),
// ARPHRD_NONE (tun, WireGuard, qmi_wwan in raw-IP mode) or ARPHRD_RAWIP (519: mhi_net and other
// WWAN drivers; the netlink library has no name for it and says "unknown519").
func linkIsL3(a *netlink.LinkAttrs) bool {
	switch a.EncapType {
	case "ppp", "none", "rawip", "unknown519":
		return true
	}
	return false
}

// isL3 reports whether interface ifindex has no link-layer header.
func isL3(ifindex int) (bool, error) {
	l, err := netlink.LinkByIndex(ifindex)
	if err != nil {
		return false, fmt.Errorf("interface %d: %w", ifindex, err)
	}
	return linkIsL3(l.Attrs()), nil
}
