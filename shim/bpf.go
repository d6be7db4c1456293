package shim

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"slices"
	"sync"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"
	"github.com/l2shim/l2shim/rewrite"
	"golang.org/x/sys/unix"
)

// TCX verdicts (include/uapi/linux/bpf.h): TCX_NEXT lets later programs in the chain run, so
// l2shim sitting at the head of the chain hides nothing it does not divert.
const (
	tcxNext     = -1
	tcxDrop     = 2
	bpfFIngress = 1
)

// Offsets into struct __sk_buff (include/uapi/linux/bpf.h).
const (
	skbPktType     = 4
	skbMark        = 8
	skbProtocol    = 16
	skbVlanPresent = 20
	skbData        = 76
	skbDataEnd     = 80
)

// Program names as bpftool shows them; foreign-program detection skips these.
const (
	progEgress  = "l2shim_egress"
	progIngress = "l2shim_ingress"
	progInject  = "l2shim_inject"
	progSink    = "l2shim_sink"
)

// maps are the BPF maps shared by all of a shim's programs.
type maps struct {
	// gateways holds every gateway MAC (6 bytes + 2 zero bytes) the egress hooks divert to.
	gateways *ebpf.Map
	// heartbeat holds the monotonic time (ns) of the shim's last sign of life.
	heartbeat *ebpf.Map
}

func newMaps() (*maps, error) {
	gw, err := ebpf.NewMap(&ebpf.MapSpec{Name: "l2shim_gws", Type: ebpf.Hash, KeySize: 8, ValueSize: 4, MaxEntries: 256})
	if err != nil {
		return nil, fmt.Errorf("create gateway map: %w", err)
	}
	hb, err := ebpf.NewMap(&ebpf.MapSpec{Name: "l2shim_hb", Type: ebpf.Array, KeySize: 4, ValueSize: 8, MaxEntries: 1})
	if err != nil {
		gw.Close()
		return nil, fmt.Errorf("create heartbeat map: %w", err)
	}
	return &maps{gateways: gw, heartbeat: hb}, nil
}

func (m *maps) Close() {
	m.gateways.Close()
	m.heartbeat.Close()
}

func macKey(mac [6]byte) [8]byte {
	var k [8]byte
	copy(k[:6], mac[:])
	return k
}

// addGateways lets the egress hooks divert frames to each of macs.
func (m *maps) addGateways(macs [][6]byte) error {
	for _, mac := range macs {
		if err := m.gateways.Put(macKey(mac), uint32(1)); err != nil {
			return fmt.Errorf("add gateway MAC %s to the hooks' map: %w", net.HardwareAddr(mac[:]), err)
		}
	}
	return nil
}

// removeGateway stops diverting frames to mac.
func (m *maps) removeGateway(mac [6]byte) {
	_ = m.gateways.Delete(macKey(mac))
}

// gatewayMACs lists the MACs in the hooks' map.
func (m *maps) gatewayMACs() ([][6]byte, error) {
	var out [][6]byte
	var k [8]byte
	var v uint32
	it := m.gateways.Iterate()
	for it.Next(&k, &v) {
		var mac [6]byte
		copy(mac[:], k[:6])
		out = append(out, mac)
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("list the hooks' gateway MACs: %w", err)
	}
	return out, nil
}

// setGateways makes the hooks' map hold exactly macs: MACs of gateways a reload removed (or
// whose MAC changed) are no longer diverted to.
func (m *maps) setGateways(macs [][6]byte) error {
	have, err := m.gatewayMACs()
	if err != nil {
		return err
	}
	add, del := macDiff(have, macs)
	var errs []error
	for _, mac := range del {
		if err := m.gateways.Delete(macKey(mac)); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			errs = append(errs, fmt.Errorf("remove gateway MAC %s from the hooks' map: %w", net.HardwareAddr(mac[:]), err))
		}
	}
	if err := m.addGateways(add); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
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
func (m *maps) beat(lag time.Duration) error {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		return err
	}
	return m.heartbeat.Put(uint32(0), uint64(max(ts.Nano()-int64(lag), 1)))
}

// hookParams are the constants baked into one interface's programs.
type hookParams struct {
	mark, mask uint32
	mac        net.HardwareAddr // the external interface's own MAC
	capture    int              // ifindex of the capture veth's near end
	heartbeat  time.Duration
}

// heartbeatCheck jumps to "next" when the shim's heartbeat is older than timeout or missing.
// It clobbers r0-r5 and r7.
func heartbeatCheck(m *maps, timeout time.Duration) asm.Instructions {
	return concat(
		asm.Instructions{asm.StoreImm(asm.R10, -12, 0, asm.Word)},
		lookupOrNext(m.heartbeat, -12),
		asm.Instructions{
			asm.LoadMem(asm.R7, asm.R0, 0, asm.DWord),
			asm.FnKtimeGetNs.Call(),
			asm.Sub.Reg(asm.R0, asm.R7),
			asm.LoadImm(asm.R1, int64(timeout), asm.DWord),
			asm.JGT.Reg(asm.R0, asm.R1, "next"),
		},
	)
}

// lookupOrNext looks up the key at r10+keyOff in m, leaving the value's address in r0, and
// jumps to "next" when there is none. It clobbers r0-r5.
func lookupOrNext(m *ebpf.Map, keyOff int16) asm.Instructions {
	return asm.Instructions{
		asm.LoadMapPtr(asm.R1, m.FD()),
		asm.Mov.Reg(asm.R2, asm.R10),
		asm.Add.Imm(asm.R2, int32(keyOff)),
		asm.FnMapLookupElem.Call(),
		asm.JEq.Imm(asm.R0, 0, "next"),
	}
}

// packetStart loads data and data_end into r2 and r3 and jumps to "next" unless a full
// Ethernet header is present.
func packetStart() asm.Instructions {
	return asm.Instructions{
		asm.LoadMem(asm.R2, asm.R6, skbData, asm.Word),
		asm.LoadMem(asm.R3, asm.R6, skbDataEnd, asm.Word),
		asm.Mov.Reg(asm.R4, asm.R2),
		asm.Add.Imm(asm.R4, rewrite.EthHdrLen),
		asm.JGT.Reg(asm.R4, asm.R3, "next"),
	}
}

// macEquals jumps to "next" unless the 6 bytes at r2+off equal mac. It clobbers r4.
func macEquals(off int16, mac net.HardwareAddr) asm.Instructions {
	lo := binary.LittleEndian.Uint32(mac[0:4])
	hi := binary.LittleEndian.Uint16(mac[4:6])
	return asm.Instructions{
		asm.LoadMem(asm.R4, asm.R2, off, asm.Word),
		asm.JNE.Imm32(asm.R4, int32(lo), "next"),
		asm.LoadMem(asm.R4, asm.R2, off+4, asm.Half),
		asm.JNE.Imm32(asm.R4, int32(hi), "next"),
	}
}

// untaggedIPv4 jumps to "next" for VLAN-tagged or non-IPv4 frames. VLAN sub-interfaces of the
// same NIC show up at the parent's hooks with protocol IPv4 and vlan_present set, so both
// conditions are needed.
func untaggedIPv4() asm.Instructions {
	return asm.Instructions{
		asm.LoadMem(asm.R2, asm.R6, skbVlanPresent, asm.Word),
		asm.JNE.Imm32(asm.R2, 0, "next"),
		asm.LoadMem(asm.R2, asm.R6, skbProtocol, asm.Word),
		asm.JNE.Imm32(asm.R2, int32(htons(unix.ETH_P_IP)), "next"),
	}
}

// notMarked jumps to "next" when the frame carries the shim's mark.
func notMarked(p hookParams) asm.Instructions {
	return asm.Instructions{
		asm.LoadMem(asm.R2, asm.R6, skbMark, asm.Word),
		asm.And.Imm32(asm.R2, int32(p.mask)),
		asm.JEq.Imm32(asm.R2, int32(p.mark), "next"),
	}
}

func redirectTo(ifindex int, flags int32) asm.Instructions {
	return asm.Instructions{
		asm.Mov.Imm(asm.R1, int32(ifindex)),
		asm.Mov.Imm(asm.R2, flags),
		asm.FnRedirect.Call(),
		asm.Return(),
	}
}

func nextBlock() asm.Instructions {
	return asm.Instructions{
		asm.Mov.Imm(asm.R0, tcxNext).WithSymbol("next"),
		asm.Return(),
	}
}

func concat(parts ...asm.Instructions) asm.Instructions {
	var out asm.Instructions
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

// egressInsns diverts a frame the host sends when the shim is alive, the frame is not the
// shim's own, it is untagged IPv4, it comes from the interface's own MAC (not a macvlan's) and
// it goes to a gateway's MAC.
func egressInsns(p hookParams, m *maps) asm.Instructions {
	return concat(
		asm.Instructions{asm.Mov.Reg(asm.R6, asm.R1)},
		notMarked(p),
		untaggedIPv4(),
		packetStart(),
		macEquals(6, p.mac),
		asm.Instructions{
			// Key: destination MAC plus two zero bytes, built on the stack.
			asm.LoadMem(asm.R4, asm.R2, 0, asm.Word),
			asm.StoreMem(asm.R10, -8, asm.R4, asm.Word),
			asm.LoadMem(asm.R4, asm.R2, 4, asm.Half),
			asm.StoreMem(asm.R10, -4, asm.R4, asm.Half),
			asm.StoreImm(asm.R10, -2, 0, asm.Half),
		},
		lookupOrNext(m.gateways, -8),
		heartbeatCheck(m, p.heartbeat),
		redirectTo(p.capture, 0),
		nextBlock(),
	)
}

// ingressInsns clears the mark of frames the shim re-injected and passes them; it diverts
// untagged IPv4 addressed to the interface's own MAC when the shim is alive.
func ingressInsns(p hookParams, m *maps) asm.Instructions {
	return concat(
		asm.Instructions{
			asm.Mov.Reg(asm.R6, asm.R1),
			asm.LoadMem(asm.R2, asm.R6, skbMark, asm.Word),
			asm.Mov.Reg(asm.R3, asm.R2),
			asm.And.Imm32(asm.R3, int32(p.mask)),
			asm.JNE.Imm32(asm.R3, int32(p.mark), "wire"),
			asm.And.Imm32(asm.R2, int32(^p.mask)),
			asm.StoreMem(asm.R6, skbMark, asm.R2, asm.Word),
			asm.Mov.Imm(asm.R0, tcxNext),
			asm.Return(),
			asm.LoadMem(asm.R2, asm.R6, skbPktType, asm.Word).WithSymbol("wire"),
			asm.JNE.Imm32(asm.R2, unix.PACKET_HOST, "next"),
		},
		untaggedIPv4(),
		packetStart(),
		macEquals(0, p.mac),
		heartbeatCheck(m, p.heartbeat),
		redirectTo(p.capture, 0),
		nextBlock(),
	)
}

// injectInsns sends everything that arrives at the capture veth's near end (the shim's
// injections, written on the far end) into the external interface's ingress, so the host sees
// it arrive on that interface.
func injectInsns(extIfindex int) asm.Instructions {
	return redirectTo(extIfindex, bpfFIngress)
}

// sinkInsns drops everything at the capture veth's far end after the shim's packet socket has
// seen it, so the host never receives a diverted frame twice.
func sinkInsns() asm.Instructions {
	return asm.Instructions{
		asm.Mov.Imm(asm.R0, tcxDrop),
		asm.Return(),
	}
}

func loadProgram(name string, insns asm.Instructions) (*ebpf.Program, error) {
	prog, err := ebpf.NewProgramWithOptions(&ebpf.ProgramSpec{
		Name:         name,
		Type:         ebpf.SchedCLS,
		Instructions: insns,
		License:      "Dual MIT/GPL",
	}, ebpf.ProgramOptions{LogLevel: ebpf.LogLevelBranch})
	if err != nil {
		var ve *ebpf.VerifierError
		if errors.As(err, &ve) {
			return nil, fmt.Errorf("load %s: %+v", name, ve)
		}
		return nil, fmt.Errorf("load %s: %w", name, err)
	}
	return prog, nil
}

// attach loads insns and attaches them at the head of ifindex's TCX chain. The link and the
// program belong to this process: when it dies, even by SIGKILL, the kernel detaches them.
func attach(name string, insns asm.Instructions, ifindex int, typ ebpf.AttachType, own *sync.Map) (link.Link, error) {
	prog, err := loadProgram(name, insns)
	if err != nil {
		return nil, err
	}
	defer prog.Close()
	// Remember our own programs by ID: without CAP_SYS_ADMIN the names of attached programs
	// cannot be read back, and a reload's host check must not take ours for someone else's.
	if info, err := prog.Info(); err == nil {
		if id, ok := info.ID(); ok {
			own.Store(id, true)
		}
	}
	l, err := link.AttachTCX(link.TCXOptions{Interface: ifindex, Program: prog, Attach: typ, Anchor: link.Head()})
	if err != nil {
		if errors.Is(err, ebpf.ErrNotSupported) {
			return nil, fmt.Errorf("attach %s to ifindex %d: this kernel has no TCX (Linux 6.6 or later is needed): %w", name, ifindex, err)
		}
		return nil, fmt.Errorf("attach %s to ifindex %d: %w", name, ifindex, err)
	}
	return l, nil
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
			case progEgress, progIngress, progInject, progSink:
				continue
			}
			out = append(out, fmt.Sprintf("%s: %s (id %d)", at.name, name, ap.ID))
		}
	}
	return out, nil
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// CheckKernel reports whether this kernel has what l2shim needs: BPF programs of type
// sched_cls and TCX attachment (Linux 6.6 or later).
func CheckKernel() error {
	lo, err := net.InterfaceByName("lo")
	if err != nil {
		return fmt.Errorf("check kernel: %w", err)
	}
	_, err = link.QueryPrograms(link.QueryOptions{Target: lo.Index, Attach: ebpf.AttachTCXIngress})
	switch {
	case errors.Is(err, ebpf.ErrNotSupported):
		return errors.New("this kernel has no TCX (Linux 6.6 or later is needed); l2shim cannot attach")
	case errors.Is(err, unix.EPERM):
		return errors.New("not allowed to use BPF here: l2shim needs CAP_BPF, CAP_NET_ADMIN and CAP_NET_RAW (or root)")
	}
	return nil
}
