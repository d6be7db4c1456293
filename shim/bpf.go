package shim

import (
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"

	"github.com/l2shim/l2shim/conf"
	"github.com/l2shim/l2shim/fastpath"
)

// Program names as bpftool shows them; foreign-program detection skips these.
const (
	progEgress  = "l2shim_egress"
	progIngress = "l2shim_ingress"
	progInject  = "l2shim_inject"
	progSink    = "l2shim_sink"
	progWire    = "l2shim_wire"
)

// maps are the kernel side of l2shim: the programs of package fastpath and the maps they
// share with the shim (external interfaces, gateway MACs, heartbeat, capture veths, flows).
type maps struct {
	k *fastpath.Kernel
}

func newMaps(o fastpath.Options) (*maps, error) {
	k, err := fastpath.Load(o)
	if err != nil {
		return nil, err
	}
	return &maps{k: k}, nil
}

func (m *maps) Close() { _ = m.k.Close() }

// addGateways lets the egress hooks divert frames to each of macs.
func (m *maps) addGateways(macs [][6]byte) error {
	for _, mac := range macs {
		if err := m.k.AddGateway(mac); err != nil {
			return err
		}
	}
	return nil
}

// removeGateway stops diverting frames to mac.
func (m *maps) removeGateway(mac [6]byte) { m.k.RemoveGateway(mac) }

// gatewayMACs lists the MACs in the hooks' map.
func (m *maps) gatewayMACs() ([][6]byte, error) { return m.k.GatewayMACs() }

// setGateways makes the hooks' map hold exactly macs: MACs of gateways a reload removed (or
// whose MAC changed) are no longer diverted to.
func (m *maps) setGateways(macs [][6]byte) error {
	have, err := m.gatewayMACs()
	if err != nil {
		return err
	}
	add, del := macDiff(have, macs)
	for _, mac := range del {
		m.removeGateway(mac)
	}
	return m.addGateways(add)
}

// macDiff returns the MACs of want that have lacks (add) and those of have that want lacks
// (del), each once.
func macDiff(have, want [][6]byte) (add, del [][6]byte) {
	in := func(set [][6]byte, mac [6]byte) bool { return slices.Contains(set, mac) }
	for _, mac := range want {
		if !in(have, mac) && !in(add, mac) {
			add = append(add, mac)
		}
	}
	for _, mac := range have {
		if !in(want, mac) && !in(del, mac) {
			del = append(del, mac)
		}
	}
	return add, del
}

// beat records that the shim was alive lag ago (see Shim.heartbeat).
func (m *maps) beat(lag time.Duration) error { return m.k.BeatLagging(lag) }

// rememberOwn records prog's ID in own. Without CAP_SYS_ADMIN the names of attached programs
// cannot be read back, and a reload's host check must not take ours for someone else's.
func rememberOwn(prog *ebpf.Program, own *sync.Map) {
	if info, err := prog.Info(); err == nil {
		if id, ok := info.ID(); ok {
			own.Store(id, true)
		}
	}
}

// foreignTCX lists the TCX programs attached to ifindex that are not l2shim's, as
// "ingress: NAME (id N)" strings. own, when not nil, holds the IDs of this instance's programs.
func foreignTCX(ifindex int, own *sync.Map) ([]string, error) {
	var out []string
	for _, at := range []struct {
		typ  ebpf.AttachType
		name string
	}{{ebpf.AttachTCXIngress, "ingress"}, {ebpf.AttachTCXEgress, "egress"}} {
		res, err := link.QueryPrograms(link.QueryOptions{Target: ifindex, Attach: at.typ})
		if err != nil {
			if errors.Is(err, ebpf.ErrNotSupported) {
				return nil, nil
			}
			return nil, fmt.Errorf("query TCX %s programs on ifindex %d: %w", at.name, ifindex, err)
		}
		for _, ap := range res.Programs {
			if own != nil {
				if _, mine := own.Load(ap.ID); mine {
					continue
				}
			}
			name := "?"
			if prog, err := ebpf.NewProgramFromID(ap.ID); err == nil {
				if info, err := prog.Info(); err == nil {
					name = info.Name
				}
				prog.Close()
			}
			switch name {
			case progEgress, progIngress, progInject, progSink, progWire:
				continue
			}
			out = append(out, fmt.Sprintf("%s: %s (id %d)", at.name, name, ap.ID))
		}
	}
	return out, nil
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// CheckKernel reports the attach mode this kernel gets for [shim] attach = want, or why l2shim
// cannot attach: "auto" is TCX when the kernel has it (Linux 6.6 or later), else tc (clsact
// and direct-action cls_bpf filters).
func CheckKernel(want conf.Attach) (fastpath.Mode, error) {
	err := fastpath.HaveTCX()
	if err != nil && !errors.Is(err, fastpath.ErrNoTCX) {
		return "", err
	}
	switch want {
	case conf.AttachTC:
		return fastpath.ModeTC, nil
	case conf.AttachTCX:
		if err != nil {
			return "", fmt.Errorf("attach = \"tcx\": %w; use \"auto\" or \"tc\"", err)
		}
		return fastpath.ModeTCX, nil
	}
	if err != nil {
		return fastpath.ModeTC, nil
	}
	return fastpath.ModeTCX, nil
}

// FailOpen says what the attach mode means when l2shim stops, dies or hangs.
func FailOpen(mode fastpath.Mode, heartbeat time.Duration) string {
	if mode == fastpath.ModeTC {
		return fmt.Sprintf("clsact qdisc and cls_bpf filters (priority %d); they stay attached when l2shim exits or dies: diverting stops within heartbeat (%v) of its last beat, and the next start or `l2shim cleanup` replaces or removes them", fastpath.TCPriority, heartbeat)
	}
	return fmt.Sprintf("TCX links; they die with l2shim (pinned ones stay, like a hung l2shim's, and divert nothing once heartbeat (%v) has passed)", heartbeat)
}
