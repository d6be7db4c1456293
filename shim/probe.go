package shim

import (
	"encoding/binary"
	"math/rand/v2"

	"github.com/l2shim/l2shim/conntrack"
	"github.com/l2shim/l2shim/rewrite"
)

// ProbeTarget is one ICMP echo target probed through one gateway. The datapath consumes its
// replies (the host never sees them) and records them here; the prober reads and resets them
// each round. All fields are guarded by the datapath lock.
type ProbeTarget struct {
	Gateway int
	Target  [4]byte
	ID      uint16 // ICMP echo identifier, unique per target and gateway

	Seq      uint16 // sequence number of the last request sent
	RoundSeq uint16 // sequence number of the first request of the current round
	SentAt   int64  // when it was sent (monotonic ns)
	Replied  bool   // a reply to Seq arrived
	RTT      int64  // round-trip time of the last reply (ns)
	Replies  uint64
	Requests uint64
}

// probeKey identifies a probe reply on the wire: from the target, with the probe's identifier.
type probeKey struct {
	target [4]byte
	id     uint16
}

// RegisterProbe adds a target probed through gateway gw and returns it. The identifier is
// chosen so that no tracked flow and no other probe uses it.
func (d *Datapath) RegisterProbe(gw int, target [4]byte) *ProbeTarget {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.probes == nil {
		d.probes = make(map[probeKey]*ProbeTarget)
	}
	for {
		id := uint16(rand.Uint32())
		k := probeKey{target: target, id: id}
		if _, taken := d.probes[k]; taken || id == 0 {
			continue
		}
		addr := d.Ifaces[d.Gws[gw].Iface].Addr
		if d.table.ReplyInUse(conntrack.Key{Src: target, Dst: addr, SrcPort: id, DstPort: id, Proto: 1}) {
			continue
		}
		pt := &ProbeTarget{Gateway: gw, Target: target, ID: id}
		d.probes[k] = pt
		return pt
	}
}

// probeTaken reports whether a wire tuple belongs to a probe.
func (d *Datapath) probeTaken(k conntrack.Key) bool {
	if k.Proto != 1 || len(d.probes) == 0 {
		return false
	}
	_, ok := d.probes[probeKey{target: k.Src, id: k.DstPort}]
	return ok
}

// consumeProbe records f when it is the reply to one of the shim's probes.
func (d *Datapath) consumeProbe(f *rewrite.Frame, now int64) bool {
	if f.Proto != 1 || f.ICMPType != rewrite.ICMPEchoReply || len(d.probes) == 0 {
		return false
	}
	pt, ok := d.probes[probeKey{target: f.Src, id: f.SrcPort}]
	if !ok {
		return false
	}
	// A reply to any of this round's requests counts (a retry may cross a late answer).
	if f.L4+8 > f.End || pt.Replied {
		return true
	}
	if seq := binary.BigEndian.Uint16(f.Buf[f.L4+6:]); seq-pt.RoundSeq <= pt.Seq-pt.RoundSeq {
		pt.Replied = true
		pt.RTT = now - pt.SentAt
		pt.Replies++
	}
	return true
}

// buildProbe writes into buf (which has room for the virtio-net header and a minimum frame)
// an ICMP echo request for pt with sequence seq, from interface ifc to gateway g, and returns
// its length including the virtio-net header.
func buildProbe(buf []byte, ifc *Iface, g *Gateway, pt *ProbeTarget, seq uint16) int {
	const ipLen = 20 + 8 + 32
	clear(buf[:rewrite.VnetHdrLen+14+ipLen])
	b := buf[rewrite.VnetHdrLen:]
	copy(b[0:6], g.MAC[:])
	copy(b[6:12], ifc.MAC[:])
	binary.BigEndian.PutUint16(b[12:], 0x0800)
	ip := b[14:]
	ip[0] = 0x45
	binary.BigEndian.PutUint16(ip[2:], ipLen)
	binary.BigEndian.PutUint16(ip[4:], seq)
	ip[6] = 0x40 // DF
	ip[8] = 64
	ip[9] = 1
	copy(ip[12:16], ifc.Addr[:])
	copy(ip[16:20], pt.Target[:])
	binary.BigEndian.PutUint16(ip[10:], rewrite.Checksum(ip[:20], 0))
	icmp := ip[20:ipLen]
	icmp[0] = rewrite.ICMPEchoRequest
	binary.BigEndian.PutUint16(icmp[4:], pt.ID)
	binary.BigEndian.PutUint16(icmp[6:], seq)
	copy(icmp[8:], "l2shim gateway probe, not a host")
	binary.BigEndian.PutUint16(icmp[2:], rewrite.Checksum(icmp, 0))
	return rewrite.VnetHdrLen + 14 + ipLen
}
