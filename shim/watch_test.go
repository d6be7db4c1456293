package shim

import (
	"net"
	"testing"

	"github.com/vishvananda/netlink"
)

func TestLinkChange(t *testing.T) {
	hw := net.HardwareAddr{0x02, 0, 0, 0, 0, 1}
	other := net.HardwareAddr{0x02, 0, 0, 0, 0, 2}
	p := &port{name: "eth1", mtu: 1500, ifi: &net.Interface{Name: "eth1", Index: 7, HardwareAddr: hw}}
	gone := &port{name: "eth1", mtu: 1500, ifi: &net.Interface{Name: "eth1", Index: -1}}
	tests := []struct {
		name string
		p    *port
		a    netlink.LinkAttrs
		want int
	}{
		{"nothing", p, netlink.LinkAttrs{Index: 7, HardwareAddr: hw, MTU: 1500}, linkSame},
		{"only flags", p, netlink.LinkAttrs{Index: 7, HardwareAddr: hw, MTU: 1500, Flags: net.FlagUp}, linkSame},
		{"MTU grows", p, netlink.LinkAttrs{Index: 7, HardwareAddr: hw, MTU: 9000}, linkMTU},
		{"MTU shrinks", p, netlink.LinkAttrs{Index: 7, HardwareAddr: hw, MTU: 1280}, linkMTU},
		{"new ifindex", p, netlink.LinkAttrs{Index: 8, HardwareAddr: hw, MTU: 1500}, linkRecreated},
		{"new MAC", p, netlink.LinkAttrs{Index: 7, HardwareAddr: other, MTU: 1500}, linkRecreated},
		{"new ifindex and MTU", p, netlink.LinkAttrs{Index: 8, HardwareAddr: hw, MTU: 9000}, linkRecreated},
		{"back after removal", gone, netlink.LinkAttrs{Index: 9, HardwareAddr: hw, MTU: 1500}, linkRecreated},
	}
	for _, tc := range tests {
		if got := linkChange(tc.p, &tc.a); got != tc.want {
			t.Errorf("%s: %d, want %d", tc.name, got, tc.want)
		}
	}
}
