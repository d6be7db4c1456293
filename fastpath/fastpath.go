package fastpath

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/features"
	"golang.org/x/sys/unix"
)

// Options configure the programs and their maps.
type Options struct {
	// Mark and Mask are the skb mark bits of l2shim's own frames.
	Mark, Mask uint32
	// Heartbeat: the programs divert nothing to the slow path once the last Beat is older.
	Heartbeat time.Duration
	// MaxFlows sizes each direction's flow map.
	MaxFlows int
	// OrphanIdle: while no l2shim runs, an entry idle this long is forgotten (0: 2h4m).
	OrphanIdle time.Duration
	// PinDir, when set, is a directory on a bpffs where the maps (and, through Attach, the
	// hooks' links) are pinned, so they outlive this process and a later one adopts them.
	PinDir string
	// Attach is how Kernel.Attach attaches the programs (default ModeTCX).
	Attach Mode
}

// Kernel holds the loaded programs and maps.
type Kernel struct {
	objs   fastpathObjects
	pinDir string
	mode   Mode
	// Adopted says the maps were pinned by an earlier l2shim and are used as they are.
	Adopted bool
}

// Load loads the programs and creates their maps, or, with Options.PinDir, opens the maps an
// earlier l2shim pinned there. Pinned maps that do not fit these programs (another layout or
// size) are removed and made afresh: the flows they held are not adopted.
func Load(o Options) (*Kernel, error) {
	k, err := load(o)
	if errors.Is(err, ebpf.ErrMapIncompatible) && o.PinDir != "" {
		for _, name := range mapNames {
			_ = os.Remove(filepath.Join(o.PinDir, name))
		}
		k, err = load(o)
		if k != nil {
			k.Adopted = false
		}
	}
	return k, err
}

// mapNames are the programs' maps, as pinned.
var mapNames = []string{fastpathMapL2sFlowsOut, fastpathMapL2sFlowsIn, fastpathMapL2sIfaces, fastpathMapL2sGws, fastpathMapL2sHeartbeat, fastpathMapL2sInject, fastpathMapL2sStats}

func load(o Options) (*Kernel, error) {
	spec, err := loadFastpath()
	if err != nil {
		return nil, err
	}
	if o.OrphanIdle <= 0 {
		o.OrphanIdle = 2*time.Hour + 4*time.Minute
	}
	var coarse uint8
	if features.HaveProgramHelper(ebpf.SchedCLS, asm.FnKtimeGetCoarseNs) == nil {
		coarse = 1
	}
	for name, v := range map[string]any{
		fastpathVarCfgMark:         o.Mark,
		fastpathVarCfgMask:         o.Mask,
		fastpathVarCfgHeartbeatNs:  uint64(o.Heartbeat),
		fastpathVarCfgOrphanIdleNs: uint64(o.OrphanIdle),
		fastpathVarCfgCoarseClock:  coarse,
	} {
		if err := spec.Variables[name].Set(v); err != nil {
			return nil, fmt.Errorf("fastpath: set %s: %w", name, err)
		}
	}
	if o.MaxFlows > 0 {
		spec.Maps[fastpathMapL2sFlowsOut].MaxEntries = uint32(o.MaxFlows)
		spec.Maps[fastpathMapL2sFlowsIn].MaxEntries = uint32(o.MaxFlows)
	}
	if o.Attach == ModeTC {
		// cls_bpf programs are sched_cls without an expected attach type (kernels before
		// TCX know none of the TCX ones).
		for _, p := range spec.Programs {
			p.AttachType = ebpf.AttachNone
		}
	} else {
		o.Attach = ModeTCX
	}
	k := &Kernel{pinDir: o.PinDir, mode: o.Attach}
	var opts *ebpf.CollectionOptions
	if o.PinDir != "" {
		if err := os.MkdirAll(filepath.Join(o.PinDir, "links"), 0o700); err != nil {
			return nil, fmt.Errorf("fastpath: pin directory: %w", err)
		}
		if _, err := os.Stat(filepath.Join(o.PinDir, fastpathMapL2sFlowsOut)); err == nil {
			k.Adopted = true
		}
		for _, name := range mapNames {
			spec.Maps[name].Pinning = ebpf.PinByName
		}
		opts = &ebpf.CollectionOptions{Maps: ebpf.MapOptions{PinPath: o.PinDir}}
	}
	raiseMemlock()
	if err := spec.LoadAndAssign(&k.objs, opts); err != nil {
		var ve *ebpf.VerifierError
		if errors.As(err, &ve) {
			return nil, fmt.Errorf("fastpath: load: %+v", ve)
		}
		return nil, fmt.Errorf("fastpath: load: %w", err)
	}
	return k, nil
}

// Mode is how Attach attaches the programs.
func (k *Kernel) Mode() Mode { return k.mode }

// Close releases the programs and maps this process holds.
func (k *Kernel) Close() error { return k.objs.Close() }

// Programs, for attaching.
func (k *Kernel) Egress() *ebpf.Program  { return k.objs.L2shimEgress }
func (k *Kernel) Ingress() *ebpf.Program { return k.objs.L2shimIngress }
func (k *Kernel) Inject() *ebpf.Program  { return k.objs.L2shimInject }
func (k *Kernel) Sink() *ebpf.Program    { return k.objs.L2shimSink }
func (k *Kernel) Wire() *ebpf.Program    { return k.objs.L2shimWire }

// Key is a flow's tuple as a frame carries it in one direction.
type Key struct {
	Src, Dst         netip.Addr
	SrcPort, DstPort uint16 // ICMP echo: the identifier, in both
	Proto            uint8
}

// Entry says what the programs do with a frame of a flow in one direction.
type Entry struct {
	// Ifindex is where the frame goes: out, the uplink; in, the interface the host sent the
	// flow's frames on. A frame on another interface is redirected there.
	Ifindex int
	// NAT rewrites, out, the source to Addr:Port; in, the destination.
	NAT  bool
	Addr netip.Addr
	Port uint16
	// MTU is the largest IP datagram out of the uplink (0: no check); larger frames go to
	// the slow path, which answers or shrinks them.
	MTU uint16
	// DivertOnly (in entries): the flow is the host's, not confirmed yet; its answers go to
	// user space through the host's capture queue, untouched.
	DivertOnly bool
	// CarrySYNACK (in entries of a connection the host is opening): the peer's SYN-ACK is
	// carried too, not diverted (user space found no MSS to clamp in it).
	CarrySYNACK bool
	// ToL3: Ifindex has no link-layer header (ppp, tun, WireGuard); otherwise the frame
	// leaves with SrcMAC and DstMAC.
	ToL3           bool
	SrcMAC, DstMAC [6]byte
	// Opaque to the programs: what user space needs to adopt the flow after a restart.
	Origin, Why uint8
	Rule        int16
	Gateway     netip.Addr // IPv4; invalid: none
}

// Counts are what the programs counted for an entry.
type Counts struct {
	Packets, Bytes uint64
	// LastSeen is CLOCK_MONOTONIC nanoseconds of the last frame (at the kernel tick's
	// resolution where the kernel has a coarse clock for programs), 0 for none.
	LastSeen int64
	// TCP flows. FIN: the kernel carried a FIN this way. An out entry's SeqEnd, Ack and Win
	// are what the host's last segment the kernel carried said: the sequence number after it
	// (its data and FIN), its acknowledgment, its (unscaled) window. An in entry's SeqEnd,
	// with FIN, is the sequence number after the wire's FIN.
	FIN         bool
	SeqEnd, Ack uint32
	Win         uint16
}

const (
	flagNAT    = 1
	flagDivert = 2
	flagToL3   = 4
	flagFIN    = 8
	flagSYNACK = 16

	ifaceL3 = 1
)

func keyOf(k Key) fastpathFlowKey {
	var fk fastpathFlowKey
	fk.Src = k.Src.As16()
	fk.Dst = k.Dst.As16()
	fk.Sport, fk.Dport = htons(k.SrcPort), htons(k.DstPort)
	fk.Proto = k.Proto
	return fk
}

func valOf(e Entry) fastpathFlowVal {
	v := fastpathFlowVal{Ifindex: uint32(e.Ifindex), Port: htons(e.Port), Mtu: e.MTU, SrcMac: e.SrcMAC, DstMac: e.DstMAC, Origin: e.Origin, Why: e.Why, Rule: e.Rule}
	if e.Gateway.Is4() {
		v.GwIp = e.Gateway.As4()
	}
	if e.NAT {
		v.Flags |= flagNAT
		v.Addr = e.Addr.As16()
	}
	if e.DivertOnly {
		v.Flags |= flagDivert
	}
	if e.CarrySYNACK {
		v.Flags |= flagSYNACK
	}
	if e.ToL3 {
		v.Flags |= flagToL3
	}
	return v
}

// Direction selects a flow map.
type Direction uint8

// The directions.
const (
	Out Direction = iota // host → wire, keyed by the tuple the host sends
	In                   // wire → host, keyed by the tuple the wire delivers
)

func (k *Kernel) flowMap(d Direction) *ebpf.Map {
	if d == In {
		return k.objs.L2sFlowsIn
	}
	return k.objs.L2sFlowsOut
}

// Put installs or replaces an entry. Replacing keeps nothing of the old one's counts.
func (k *Kernel) Put(d Direction, key Key, e Entry) error {
	fk, v := keyOf(key), valOf(e)
	if err := k.flowMap(d).Put(&fk, &v); err != nil {
		return fmt.Errorf("fastpath: install %v: %w", key, err)
	}
	return nil
}

// Delete removes an entry; a missing one is no error.
func (k *Kernel) Delete(d Direction, key Key) error {
	fk := keyOf(key)
	if err := k.flowMap(d).Delete(&fk); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return fmt.Errorf("fastpath: remove %v: %w", key, err)
	}
	return nil
}

// Counts returns an entry's counts, and false when there is no such entry.
func (k *Kernel) Counts(d Direction, key Key) (Counts, bool) {
	fk := keyOf(key)
	var v fastpathFlowVal
	if err := k.flowMap(d).Lookup(&fk, &v); err != nil {
		return Counts{}, false
	}
	return countsOf(&v), true
}

func countsOf(v *fastpathFlowVal) Counts {
	return Counts{Packets: v.Packets, Bytes: v.Bytes, LastSeen: int64(v.LastSeen), FIN: v.Flags&flagFIN != 0, SeqEnd: v.SeqEnd, Ack: v.Ack, Win: v.Win}
}

// Iface is what the programs know about an external interface.
type Iface struct {
	// MAC is the interface's; on an L3 device (no link-layer header) the MAC the Ethernet
	// header pushed in front of its diverted packets gives the device, and GatewayMAC the
	// one it gives the device's gateway.
	MAC, GatewayMAC [6]byte
	L3              bool
	// Capture is the capture veth end diverted frames from the wire go to; CaptureHost the
	// one for the host's frames and the answers to its new flows (0: Capture too).
	Capture, CaptureHost int
}

// SetIface tells the programs that ifindex is an external interface.
func (k *Kernel) SetIface(ifindex int, ifc Iface) error {
	key := uint32(ifindex)
	v := fastpathIfaceCfg{Mac: ifc.MAC, GwMac: ifc.GatewayMAC, Capture: uint32(ifc.Capture), CaptureHost: uint32(ifc.CaptureHost)}
	if ifc.L3 {
		v.Flags |= ifaceL3
	}
	if err := k.objs.L2sIfaces.Put(&key, &v); err != nil {
		return fmt.Errorf("fastpath: interface %d: %w", ifindex, err)
	}
	return nil
}

// DeleteIface forgets an external interface: its frames are no longer l2shim's.
func (k *Kernel) DeleteIface(ifindex int) {
	key := uint32(ifindex)
	_ = k.objs.L2sIfaces.Delete(&key)
}

// SetInject tells the inject program on capture veth end near to send what arrives there
// into external interface ext's ingress.
func (k *Kernel) SetInject(near, ext int) error {
	key, v := uint32(near), uint32(ext)
	if err := k.objs.L2sInject.Put(&key, &v); err != nil {
		return fmt.Errorf("fastpath: inject %d → %d: %w", near, ext, err)
	}
	return nil
}

// macKey lays a MAC out as the programs read it: its 6 bytes in memory order, then 2 zeros.
func macKey(mac [6]byte) uint64 {
	var b [8]byte
	copy(b[:], mac[:])
	return binary.NativeEndian.Uint64(b[:])
}

// AddGateway lets the egress program divert frames the host sends to mac.
func (k *Kernel) AddGateway(mac [6]byte) error {
	key, one := macKey(mac), uint32(1)
	if err := k.objs.L2sGws.Put(&key, &one); err != nil {
		return fmt.Errorf("fastpath: gateway MAC %x: %w", mac, err)
	}
	return nil
}

// RemoveGateway stops diverting frames to mac.
func (k *Kernel) RemoveGateway(mac [6]byte) {
	key := macKey(mac)
	_ = k.objs.L2sGws.Delete(&key)
}

// Beat records that the slow path is alive.
func (k *Kernel) Beat() error { return k.BeatLagging(0) }

// BeatLagging records that the slow path was last known alive lag ago.
func (k *Kernel) BeatLagging(lag time.Duration) error {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		return err
	}
	zero, at := uint32(0), uint64(max(ts.Nano()-int64(lag), 1))
	if err := k.objs.L2sHeartbeat.Put(&zero, &at); err != nil {
		return fmt.Errorf("fastpath: heartbeat: %w", err)
	}
	return nil
}

// GatewayMACs lists the MACs the egress program diverts to.
func (k *Kernel) GatewayMACs() ([][6]byte, error) {
	var out [][6]byte
	var key uint64
	var v uint32
	it := k.objs.L2sGws.Iterate()
	for it.Next(&key, &v) {
		var b [8]byte
		binary.NativeEndian.PutUint64(b[:], key)
		out = append(out, [6]byte(b[:6]))
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("fastpath: list gateway MACs: %w", err)
	}
	return out, nil
}

// Monotonic returns CLOCK_MONOTONIC in nanoseconds, the clock of Counts.LastSeen.
func Monotonic() int64 {
	var ts unix.Timespec
	_ = unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	return ts.Nano()
}

// Stats are the programs' totals over all CPUs.
type Stats struct {
	FastOut, FastIn     uint64 // frames finished in the kernel
	DivertOut, DivertIn uint64 // frames sent to the slow path
	Source6             uint64 // IPv6 packets sent out of the uplink their source belongs to
}

// Stats sums the programs' per-CPU counters.
func (k *Kernel) Stats() (Stats, error) {
	var s Stats
	for i, dst := range []*uint64{&s.FastOut, &s.FastIn, &s.DivertOut, &s.DivertIn, &s.Source6} {
		var per []uint64
		if err := k.objs.L2sStats.Lookup(uint32(i), &per); err != nil {
			return s, fmt.Errorf("fastpath: stats: %w", err)
		}
		for _, v := range per {
			*dst += v
		}
	}
	return s, nil
}

// htons lays a port out as the frame holds it (network byte order) in a host-order field.
func htons(v uint16) uint16 {
	return binary.NativeEndian.Uint16([]byte{byte(v >> 8), byte(v)})
}

// Installed is an entry read back from the kernel.
type Installed struct {
	Key    Key
	Entry  Entry
	Counts Counts
}

// Entries lists the entries of one direction (those an earlier l2shim left, to adopt).
func (k *Kernel) Entries(d Direction) ([]Installed, error) {
	var out []Installed
	err := k.Each(d, nil, func(e Installed) { out = append(out, e) })
	return out, err
}

// Reader holds the buffers Each reads a map's entries into, so a sync every second allocates
// nothing once they have grown.
type Reader struct {
	keys   []fastpathFlowKey
	vals   []fastpathFlowVal
	cursor ebpf.MapBatchCursor
}

// readChunk is how many entries one batch read returns at most.
const readChunk = 1024

// Each calls fn with every entry of one direction, read a chunk at a time with
// BPF_MAP_LOOKUP_BATCH (one system call per chunk, not one per entry); on a kernel without
// batch reads, entry by entry. r may be nil. Entries that come or go meanwhile may be missed
// or seen twice.
func (k *Kernel) Each(d Direction, r *Reader, fn func(Installed)) error {
	if r == nil {
		r = &Reader{}
	}
	if r.keys == nil {
		r.keys, r.vals = make([]fastpathFlowKey, readChunk), make([]fastpathFlowVal, readChunk)
	}
	m := k.flowMap(d)
	r.cursor = ebpf.MapBatchCursor{}
	for {
		n, err := m.BatchLookup(&r.cursor, r.keys, r.vals, nil)
		for i := range n {
			fn(installedOf(&r.keys[i], &r.vals[i]))
		}
		switch {
		case errors.Is(err, ebpf.ErrKeyNotExist):
			return nil
		case errors.Is(err, ebpf.ErrNotSupported):
			return k.eachByKey(m, fn)
		case err != nil:
			return fmt.Errorf("fastpath: read flows: %w", err)
		}
	}
}

// eachByKey is Each on a kernel without batch reads.
func (k *Kernel) eachByKey(m *ebpf.Map, fn func(Installed)) error {
	var fk fastpathFlowKey
	var v fastpathFlowVal
	it := m.Iterate()
	for it.Next(&fk, &v) {
		fn(installedOf(&fk, &v))
	}
	if err := it.Err(); err != nil {
		return fmt.Errorf("fastpath: list flows: %w", err)
	}
	return nil
}

func installedOf(fk *fastpathFlowKey, v *fastpathFlowVal) Installed {
	e := Entry{Ifindex: int(v.Ifindex), NAT: v.Flags&flagNAT != 0, DivertOnly: v.Flags&flagDivert != 0, CarrySYNACK: v.Flags&flagSYNACK != 0, ToL3: v.Flags&flagToL3 != 0, Port: ntohs(v.Port), MTU: v.Mtu, SrcMAC: v.SrcMac, DstMAC: v.DstMac, Origin: v.Origin, Why: v.Why, Rule: v.Rule}
	if v.GwIp != ([4]byte{}) {
		e.Gateway = netip.AddrFrom4(v.GwIp)
	}
	if e.NAT {
		e.Addr = netip.AddrFrom16(v.Addr).Unmap()
	}
	return Installed{
		Key:    Key{Src: netip.AddrFrom16(fk.Src).Unmap(), Dst: netip.AddrFrom16(fk.Dst).Unmap(), SrcPort: ntohs(fk.Sport), DstPort: ntohs(fk.Dport), Proto: fk.Proto},
		Entry:  e,
		Counts: countsOf(v),
	}
}

func ntohs(v uint16) uint16 { return htons(v) }

// Uplink6 is where the programs send an IPv6 packet whose source address is in one of an
// uplink's prefixes (IPv6 per-source routing): out of Ifindex, from SrcMAC (the uplink's) to
// DstMAC (its IPv6 router's); L3 says the uplink has no link-layer header, and then the MACs
// are unused.
type Uplink6 struct {
	Ifindex        int
	L3             bool
	SrcMAC, DstMAC [6]byte
}

// SetSource6 makes packets with a source address in p leave through u.
func (k *Kernel) SetSource6(p netip.Prefix, u Uplink6) error {
	key := prefix6Key(p)
	v := fastpathUplink6{Ifindex: uint32(u.Ifindex), SrcMac: u.SrcMAC, DstMac: u.DstMAC}
	if u.L3 {
		v.Flags |= ifaceL3
	}
	if err := k.objs.L2sSource6.Put(&key, &v); err != nil {
		return fmt.Errorf("fastpath: source prefix %v: %w", p, err)
	}
	return nil
}

// DeleteSource6 forgets prefix p.
func (k *Kernel) DeleteSource6(p netip.Prefix) error {
	key := prefix6Key(p)
	if err := k.objs.L2sSource6.Delete(&key); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return fmt.Errorf("fastpath: source prefix %v: %w", p, err)
	}
	return nil
}

func prefix6Key(p netip.Prefix) fastpathPrefix6 {
	p = p.Masked()
	return fastpathPrefix6{Prefixlen: uint32(p.Bits()), Addr: p.Addr().As16()}
}
