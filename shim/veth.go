package shim

import (
	"fmt"
	"strings"

	"github.com/vishvananda/netlink"
)

// aliasPrefix marks the shim's own links, so a later start can find and remove what a killed
// instance left behind without touching anything else.
const aliasPrefix = "l2shim:"

// vethPair is the capture/inject pair of one external interface.
//
// The hooks on the external interface redirect diverted frames to near's egress; they arrive at
// far, where the shim's packet socket reads them before far's ingress hook drops them. The shim
// writes frames meant for the host to far; they arrive at near, whose ingress hook redirects
// them into the external interface's ingress. One pair per interface serves both directions,
// so there is no MAC-to-interface map to keep current: the near end's program carries the
// external interface's ifindex.
type vethPair struct {
	near, far netlink.Link
}

// vethNames names an interface's capture pairs: l2sNn/l2sNf for the frames from the wire (and
// the injections), l2sNo/l2sNp for the host's own frames and the answers to its new flows.
func vethNames(extIndex int, host bool) (near, far string) {
	if host {
		return fmt.Sprintf("l2s%do", extIndex), fmt.Sprintf("l2s%dp", extIndex)
	}
	return fmt.Sprintf("l2s%dn", extIndex), fmt.Sprintf("l2s%df", extIndex)
}

// createVethPair makes a capture pair for ext, with no addresses, IPv6 disabled and MTU mtu.
func createVethPair(ext string, extIndex, mtu int, host bool) (*vethPair, error) {
	nearName, farName := vethNames(extIndex, host)
	// A leftover of the same name (a crash between cleanup and now) is replaced.
	if l, err := netlink.LinkByName(nearName); err == nil {
		_ = netlink.LinkDel(l)
	}
	v := &netlink.Veth{
		LinkAttrs: netlink.LinkAttrs{Name: nearName, MTU: mtu, TxQLen: 1000},
		PeerName:  farName,
	}
	if err := netlink.LinkAdd(v); err != nil {
		return nil, fmt.Errorf("create veth pair %s/%s for %s: %w", nearName, farName, ext, err)
	}
	p := &vethPair{}
	ok := false
	defer func() {
		if !ok {
			p.delete()
			if p.near == nil {
				if l, err := netlink.LinkByName(nearName); err == nil {
					_ = netlink.LinkDel(l)
				}
			}
		}
	}()
	var err error
	if p.near, err = netlink.LinkByName(nearName); err != nil {
		return nil, fmt.Errorf("find %s: %w", nearName, err)
	}
	if p.far, err = netlink.LinkByName(farName); err != nil {
		return nil, fmt.Errorf("find %s: %w", farName, err)
	}
	for _, l := range []netlink.Link{p.near, p.far} {
		name := l.Attrs().Name
		if err := netlink.LinkSetAlias(l, aliasPrefix+ext); err != nil {
			return nil, fmt.Errorf("set alias of %s: %w", name, err)
		}
		// Best effort: without IPv6 the pair never sends router solicitations or gets
		// link-local addresses the host could route to.
		_ = writeSysctl("net/ipv6/conf/"+name+"/disable_ipv6", "1")
		if err := netlink.LinkSetMTU(l, mtu); err != nil {
			return nil, fmt.Errorf("set MTU %d on %s: %w", mtu, name, err)
		}
		if err := netlink.LinkSetUp(l); err != nil {
			return nil, fmt.Errorf("set %s up: %w", name, err)
		}
	}
	ok = true
	return p, nil
}

// setMTU sets both ends' MTU.
func (p *vethPair) setMTU(mtu int) error {
	for _, l := range []netlink.Link{p.near, p.far} {
		if err := netlink.LinkSetMTU(l, mtu); err != nil {
			return fmt.Errorf("set MTU %d on %s: %w", mtu, l.Attrs().Name, err)
		}
	}
	return nil
}

func (p *vethPair) delete() {
	if p.near != nil {
		_ = netlink.LinkDel(p.near) // deleting one end removes the pair
		p.near = nil
	}
}

// removeLeftovers deletes every link carrying the shim's alias: the veths of an instance that
// was killed. It returns their names.
func removeLeftovers() ([]string, error) {
	links, err := netlink.LinkList()
	if err != nil {
		return nil, fmt.Errorf("list links: %w", err)
	}
	var removed []string
	for _, l := range links {
		a := l.Attrs()
		if !strings.HasPrefix(a.Alias, aliasPrefix) {
			continue
		}
		if err := netlink.LinkDel(l); err == nil {
			removed = append(removed, a.Name)
		}
	}
	return removed, nil
}
