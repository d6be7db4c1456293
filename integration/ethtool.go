package integration

import (
	"errors"
	"fmt"
	"runtime"
	"strings"
	"unsafe"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"
)

// Legacy ethtool commands (linux/ethtool.h); enough for GRO and needing no
// ethtool binary.
const (
	ethtoolGGRO = 0x0000002b
	ethtoolSGRO = 0x0000002c
)

type ethtoolValue struct {
	cmd  uint32
	data uint32
}

type ifreqData struct {
	name [unix.IFNAMSIZ]byte
	data uintptr
	_    [16]byte // pad to sizeof(struct ifreq)
}

func ethtoolIoctl(ns *NS, ifname string, v *ethtoolValue) error {
	if len(ifname) >= unix.IFNAMSIZ {
		return fmt.Errorf("interface name %q too long", ifname)
	}
	return ns.Do(func() error {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		ifr := new(ifreqData)
		copy(ifr.name[:], ifname)
		ifr.data = uintptr(unsafe.Pointer(v))
		_, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.SIOCETHTOOL, uintptr(unsafe.Pointer(ifr)))
		runtime.KeepAlive(v)
		runtime.KeepAlive(ifr)
		if errno != 0 {
			return errno
		}
		return nil
	})
}

// GRO reports whether generic receive offload is on for ifname in ns.
func GRO(ns *NS, ifname string) (bool, error) {
	v := &ethtoolValue{cmd: ethtoolGGRO}
	if err := ethtoolIoctl(ns, ifname, v); err != nil {
		return false, fmt.Errorf("%s: %s: ETHTOOL_GGRO: %w", ns.Name, ifname, err)
	}
	return v.data != 0, nil
}

// SetGRO turns generic receive offload on or off for ifname in ns (the
// equivalent of `ethtool -K IF gro on|off`) and checks the result. The tests
// only ever turn it on: veth has GRO off by default, real NICs have it on.
func SetGRO(ns *NS, ifname string, on bool) error {
	v := &ethtoolValue{cmd: ethtoolSGRO}
	if on {
		v.data = 1
	}
	if err := ethtoolIoctl(ns, ifname, v); err != nil {
		return fmt.Errorf("%s: %s: ETHTOOL_SGRO: %w", ns.Name, ifname, err)
	}
	got, err := GRO(ns, ifname)
	if err != nil {
		return err
	}
	if got != on {
		return fmt.Errorf("%s: %s: GRO is %v after setting it %v", ns.Name, ifname, got, on)
	}
	return nil
}

// TCXPrograms returns the number of TCX programs attached to ifname in ns at
// ingress and at egress.
func TCXPrograms(ns *NS, ifname string) (ingress, egress int, err error) {
	l, err := ns.Netlink().LinkByName(ifname)
	if err != nil {
		return 0, 0, fmt.Errorf("%s: %s: %w", ns.Name, ifname, err)
	}
	idx := l.Attrs().Index
	err = ns.Do(func() error {
		// The target ifindex is resolved in the calling thread's netns.
		for _, q := range []struct {
			at ebpf.AttachType
			n  *int
		}{{ebpf.AttachTCXIngress, &ingress}, {ebpf.AttachTCXEgress, &egress}} {
			res, err := link.QueryPrograms(link.QueryOptions{Target: idx, Attach: q.at})
			if err != nil {
				if errors.Is(err, unix.ENOENT) {
					continue // nothing attached
				}
				return fmt.Errorf("query %v: %w", q.at, err)
			}
			*q.n = len(res.Programs)
		}
		return nil
	})
	return ingress, egress, err
}

// hostTCXPrograms counts the TCX programs attached to the host's eth0 and
// eth1 (both directions) and describes them per interface; err joins the
// queries that failed.
func (t *Topology) hostTCXPrograms() (total int, desc string, err error) {
	var parts []string
	var errs []error
	for _, ifn := range []string{t.HostIf0, t.HostIf1} {
		in, eg, err := TCXPrograms(t.Host, ifn)
		if err != nil {
			errs = append(errs, err)
		}
		total += in + eg
		parts = append(parts, fmt.Sprintf("%s ingress=%d egress=%d", ifn, in, eg))
	}
	return total, strings.Join(parts, ", "), errors.Join(errs...)
}
