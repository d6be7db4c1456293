package shim

import (
	"errors"
	"fmt"
	"github.com/l2shim/l2shim/fastpath"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/l2shim/l2shim/conf"
)

// Host reads the facts conf.CheckHost needs from the running kernel (netlink, /proc/sys) of the
// current network namespace.
type Host struct {
	// own holds the IDs of a running instance's own TCX programs (ebpf.ProgramID keys), so a
	// reload's check does not report them as foreign.
	own *sync.Map
}

// PinnedHost is the host as l2shim sees it when an earlier l2shim may have left its hooks
// pinned in pinDir: their programs are l2shim's own, not foreign ones (without
// CAP_SYS_ADMIN their names cannot be read to tell).
func PinnedHost(pinDir string) Host {
	own := &sync.Map{}
	if pinDir != "" {
		for _, id := range fastpath.PinnedPrograms(pinDir) {
			own.Store(id, true)
		}
	}
	return Host{own: own}
}

// linkByName looks interface name up; one the host does not have is a
// *conf.NoInterfaceError, for the host check and the start alike.
func linkByName(name string) (netlink.Link, error) {
	l, err := netlink.LinkByName(name)
	if err != nil && errors.As(err, new(netlink.LinkNotFoundError)) {
		err = &conf.NoInterfaceError{Err: err}
	}
	return l, err
}

// Interface implements conf.Host.
func (h Host) Interface(name string) (conf.HostInterface, error) {
	nh := &netlink.Handle{}
	l, err := linkByName(name)
	if err != nil {
		return conf.HostInterface{}, fmt.Errorf("no interface %q on this host: %w", name, err)
	}
	a := l.Attrs()
	hi := conf.HostInterface{
		Name:     a.Name,
		Index:    a.Index,
		MTU:      a.MTU,
		MAC:      a.HardwareAddr,
		Ethernet: a.EncapType == "ether",
		L3:       linkIsL3(a),
		Kind:     l.Type(),
		Up:       a.Flags&net.FlagUp != 0 && a.OperState != netlink.OperDown,

		GSOIPv4Max: int(a.GSOIPv4MaxSize),
		GROIPv4Max: int(a.GROIPv4MaxSize),
	}
	if a.MasterIndex != 0 {
		if m, err := nh.LinkByIndex(a.MasterIndex); err == nil {
			hi.Master = m.Attrs().Name
			hi.MasterKind = m.Type()
		}
	}
	addrs, err := nh.AddrList(l, unix.AF_INET)
	if err != nil {
		return conf.HostInterface{}, fmt.Errorf("list addresses of %s: %w", name, err)
	}
	for _, ad := range addrs {
		ip, ok := netip.AddrFromSlice(ad.IP.To4())
		if !ok {
			continue
		}
		ones, _ := ad.Mask.Size()
		hi.Prefixes = append(hi.Prefixes, netip.PrefixFrom(ip, ones))
	}
	hi.RPFilter = max(readSysctlInt("net/ipv4/conf/all/rp_filter"), readSysctlInt("net/ipv4/conf/"+name+"/rp_filter"))
	if foreign, err := foreignTCX(a.Index, h.own); err == nil {
		hi.ForeignTCX = foreign
	}
	return hi, nil
}

// FwmarkRules implements conf.Host: the IPv4 policy routing rules that match a firewall mark.
func (h Host) FwmarkRules() ([]conf.FwmarkRule, error) {
	rules, err := (&netlink.Handle{}).RuleList(unix.AF_INET)
	if err != nil {
		return nil, fmt.Errorf("list ip rules: %w", err)
	}
	var out []conf.FwmarkRule
	for _, r := range rules {
		if r.Mark == 0 && r.Mask == nil {
			continue // no fwmark selector
		}
		mask := ^uint32(0)
		if r.Mask != nil {
			mask = *r.Mask
		}
		out = append(out, conf.FwmarkRule{Priority: r.Priority, Mark: r.Mark, Mask: mask, Table: r.Table, Invert: r.Invert})
	}
	return out, nil
}

func readSysctlInt(path string) int {
	b, err := os.ReadFile("/proc/sys/" + path)
	if err != nil {
		return 0
	}
	v, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	return v
}

func writeSysctl(path, value string) error {
	return os.WriteFile("/proc/sys/"+path, []byte(value), 0o644)
}
