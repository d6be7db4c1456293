package datapath

import (
	"bytes"
	"testing"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/l2shim/l2shim/conntrack"
	"github.com/l2shim/l2shim/failover"
)

func fastEngine(t *testing.T) *Engine {
	t.Helper()
	return New(testIfaces(), testPlan(failover.LoadBalance, 1, 1000), Options{Seed: 42, FastPath: true})
}

// TestFastPathEntries: a NATed TCP flow becomes a fast-path flow once its handshake completes,
// with the entries the slow path's rewrite amounts to; its counts come back to the flow and
// its gateway; resetting it removes the entries.
func TestFastPathEntries(t *testing.T) {
	d := fastEngine(t)
	fl := natedConnection(t, d, 7200)
	ops := d.FastChanges(nil)
	if len(ops) != 2 || ops[0].Delete || ops[1].Delete || ops[0].In || !ops[1].In {
		t.Fatalf("ops after the handshake: %+v", ops)
	}
	out, in := ops[0], ops[1]
	wantOut := FastEntry{Orig: fl.Orig, Ifindex: 3, NAT: true, Addr: conntrack.Addr4(addr1), Port: 7200, SrcMAC: mac1, DstMAC: gwMAC1, Why: uint8(ReasonBalanced), Rule: -1, Gateway: conntrack.Addr4([4]byte{10, 2, 0, 1})}
	wantIn := FastEntry{Orig: fl.Orig, Ifindex: 2, NAT: true, Addr: conntrack.Addr4(addr0), Port: 7200, SrcMAC: gwMAC0, DstMAC: mac0, Why: uint8(ReasonBalanced), Rule: -1, Gateway: conntrack.Addr4([4]byte{10, 2, 0, 1}), CarrySYNACK: true}
	if out.Key != fl.Orig || out.Entry != wantOut || in.Key != fl.Reply || in.Entry != wantIn {
		t.Fatalf("entries\n out %+v %+v\n in  %+v %+v\nwant %+v\n     %+v", out.Key, out.Entry, in.Key, in.Entry, wantOut, wantIn)
	}
	if fl.Fast != conntrack.FastCarry || d.FastPending() || len(d.FastChanges(nil)) != 0 {
		t.Fatal("installed flow not marked, or changes left over")
	}

	// The kernel counted 10 frames out, 20 in.
	before := fl.Packets
	last := fl.LastSeen + int64(time.Second)
	d.FastCounts([]FastCount{{Orig: fl.Orig, Packets: 10, Bytes: 15000, LastSeen: last}, {Orig: fl.Orig, In: true, Packets: 20, Bytes: 30000, LastSeen: last}})
	d.FastCounts([]FastCount{{Orig: fl.Orig, Packets: 10, Bytes: 15000, LastSeen: last}}) // counted once
	st := d.Snapshot(last).Gateways[1].Stats
	if fl.Packets[0]-before[0] != 10 || fl.Packets[1]-before[1] != 20 || fl.LastSeen != last ||
		st.BytesOut.Load() < 15000 || st.BytesIn.Load() < 30000 || d.Counters().Load(FastOut) != 10 || d.Counters().Load(FastIn) != 20 {
		t.Fatalf("after the counts: packets %v (before %v), last seen %d (want %d), gateway out %d in %d", fl.Packets, before, fl.LastSeen, last, st.BytesOut.Load(), st.BytesIn.Load())
	}

	// Its gateway goes down: the flow is reset toward the host and leaves the fast path. The
	// removals carry what the engine counted so far, so the shim can credit what the kernel
	// counted after the last sync.
	d.Evacuate(1, last)
	ops = d.FastChanges(nil)
	if len(ops) != 2 || !ops[0].Delete || !ops[1].Delete || ops[0].Key != fl.Orig || ops[1].Key != fl.Reply || fl.Fast != conntrack.FastNone {
		t.Fatalf("ops after the reset: %+v", ops)
	}
	wantTally := FastTally{Valid: true, Orig: fl.Orig, Gateway: 1, Rule: -1, Packets: 10, Bytes: 15000}
	if ops[0].Tally != wantTally {
		t.Fatalf("tally of the out entry %+v, want %+v", ops[0].Tally, wantTally)
	}
	outBefore, inBefore := st.BytesOut.Load(), st.BytesIn.Load()
	d.FastFinals([]FastFinal{{Tally: ops[0].Tally, Packets: 14, Bytes: 21000, LastSeen: last}, {Tally: ops[1].Tally, In: true, Packets: 20, Bytes: 30000, LastSeen: last}})
	if st.BytesOut.Load()-outBefore != 6000 || st.BytesIn.Load() != inBefore || d.Counters().Load(FastOut) != 14 || d.Counters().Load(FastIn) != 20 {
		t.Fatalf("after the final counts: gateway out +%d in +%d, fast out %d in %d; want +6000, +0, 14, 20",
			st.BytesOut.Load()-outBefore, st.BytesIn.Load()-inBefore, d.Counters().Load(FastOut), d.Counters().Load(FastIn))
	}
}

// TestFastPathFollowsMoves: a UDP flow the fast path carries that moves to another gateway
// gets new entries, and its old wire tuple's entry goes; one that leaves the table loses both.
func TestFastPathFollowsMoves(t *testing.T) {
	d := fastEngine(t)
	q := pkt{srcMAC: mac0, dstMAC: gwMAC0, src: addr0, dst: server, proto: 17, sport: 7300, dport: 53}
	if v := process(d, 0, q.build(t)); v.Iface != 1 {
		t.Fatalf("query placed on %d", v.Iface)
	}
	process(d, 1, pkt{srcMAC: gwMAC1, dstMAC: mac1, src: server, dst: addr1, proto: 17, sport: 53, dport: 7300}.build(t))
	if ops := d.FastChanges(nil); len(ops) != 2 {
		t.Fatalf("answered UDP flow: ops %+v", ops)
	}
	fl := d.table.LookupOrig(conntrack.Key4(addr0, server, 7300, 53, 17))
	oldReply := fl.Reply
	d.ProbeVerdict(1, failover.ProbeSummary{Up: false}, 5)
	d.Evacuate(1, 5) // moves to gw0: no NAT there
	ops := d.FastChanges(nil)
	if len(ops) != 3 || !ops[0].Delete || !ops[0].In || ops[0].Key != oldReply ||
		ops[1].Delete || ops[1].Entry.NAT || ops[1].Entry.Ifindex != 2 ||
		ops[2].Key != fl.Reply {
		t.Fatalf("ops after the move: %+v", ops)
	}
	orig, reply := fl.Orig, fl.Reply
	d.table.Delete(fl)
	ops = d.FastChanges(nil)
	if len(ops) != 2 || !ops[0].Delete || ops[0].Key != orig || !ops[1].Delete || ops[1].Key != reply {
		t.Fatalf("ops after the flow left: %+v", ops)
	}
}

// TestFastPathOffWithoutOption: without Options.FastPath nothing is ever queued.
func TestFastPathOffWithoutOption(t *testing.T) {
	d := testDatapath(t, failover.LoadBalance, 1, 1000)
	natedConnection(t, d, 7201)
	if d.FastPending() || len(d.FastChanges(nil)) != 0 {
		t.Fatal("fast path changes without the option")
	}
}

// fakeTracker is what the kernel saw of carried TCP flows: out entries by the flow's tuple, in
// entries by its reply tuple.
type fakeTracker struct{ out, in map[FastKey]KernelTCP }

func newFakeTracker() fakeTracker {
	return fakeTracker{out: map[FastKey]KernelTCP{}, in: map[FastKey]KernelTCP{}}
}

func (f fakeTracker) TCP(orig, reply FastKey) (KernelTCP, KernelTCP) {
	return f.out[orig], f.in[reply]
}

// hostSide is an out entry's view of the host's side.
func hostSide(seqEnd, ack uint32, win uint16) KernelTCP {
	return KernelTCP{OK: true, SeqEnd: seqEnd, Ack: ack, Win: win}
}

// TestFastPathKeepsHostSequence: while the kernel carries a flow, the host's sequence space
// moves on without user space; an RST from the peer at the sequence number the host expects
// now still closes the flow, and a reset toward the host carries it.
func TestFastPathKeepsHostSequence(t *testing.T) {
	tr := newFakeTracker()
	d := New(testIfaces(), testPlan(failover.LoadBalance, 1, 1000), Options{Seed: 42, FastPath: true, Tracker: tr})
	fl := natedConnection(t, d, 7210)
	d.FastChanges(nil)
	// The kernel carried a megabyte from the server; the host acknowledged it all.
	tr.out[fl.Orig] = hostSide(5001, 90101+1<<20, 512)
	ev := d.Evacuate(1, 10)
	rst := checkFrame(t, ev.Resets[0].Frame).Layer(layers.LayerTypeTCP).(*layers.TCP)
	if rst.Seq != 90101+1<<20 {
		t.Fatalf("reset toward the host has seq %d, want %d", rst.Seq, 90101+1<<20)
	}

	fl2 := natedConnection(t, d, 7211)
	d.FastChanges(nil)
	tr.out[fl2.Orig] = hostSide(5001, 90101+1<<22, 512)
	process(d, 1, wireSeg(7211, pkt{rst: true, seq: 90101 + 1<<22}))
	if fl2.TCPState != conntrack.TCPClosed {
		t.Fatalf("the peer's RST at what the host expects left the flow in state %d", fl2.TCPState)
	}
}

// TestFastPathSynAfterKernelClose: the kernel carried a connection's FINs and no sync has read
// them yet when the host opens a new connection on the tuple: its SYN reads them first, so it
// opens a new connection (with fresh entries), not a repeat of the old one's SYN.
func TestFastPathSynAfterKernelClose(t *testing.T) {
	tr := newFakeTracker()
	d := New(testIfaces(), testPlan(failover.LoadBalance, 1, 1000), Options{Seed: 42, FastPath: true, Tracker: tr})
	fl := natedConnection(t, d, 7230)
	d.FastChanges(nil)
	fin := hostSide(5002, 90102, 512)
	fin.FIN = true
	tr.out[fl.Orig] = fin
	tr.in[fl.Reply] = KernelTCP{OK: true, FIN: true, SeqEnd: 90102}
	syn := pkt{srcMAC: mac0, dstMAC: gwMAC0, src: addr0, dst: server, proto: 6, sport: 7230, dport: 80, syn: true, seq: 9000}
	if v := process(d, 0, syn.build(t)); v.To != ToWire || v.Iface != 1 {
		t.Fatalf("the new SYN: %+v, want it out of eth1 like the tuple's flow", v)
	}
	if fl.TCPState != conntrack.TCPSynSent || fl.SynCount != 1 {
		t.Fatalf("after the new SYN: state %d, SYNs %d; want a new connection (syn sent, 1)", fl.TCPState, fl.SynCount)
	}
	if ops := d.FastChanges(nil); fl.Fast != conntrack.FastCarry || len(ops) != 2 || ops[0].Delete || ops[1].Delete {
		t.Fatalf("after the new SYN: fast %d, ops %+v; want both entries replaced", fl.Fast, ops)
	}
}

// TestFastPathSynAfterKernelConnection: a whole short connection ran in the kernel (handshake,
// request, FINs) before any sync, so the table still has it opening; the host's next SYN on the
// tuple reads the entries, finds it closed and opens a new connection (no retry, no rotation);
// counts read from the old entries before they are replaced move nothing.
func TestFastPathSynAfterKernelConnection(t *testing.T) {
	tr := newFakeTracker()
	d := New(testIfaces(), testPlan(failover.LoadBalance, 1, 1000), Options{Seed: 42, FastPath: true, Tracker: tr})
	s := pkt{srcMAC: mac0, dstMAC: gwMAC0, src: addr0, dst: server, proto: 6, sport: 7240, dport: 80, syn: true, seq: 5000}
	v := processAt(d, 0, s.build(t), 0)
	d.FastChanges(nil)
	fl := d.table.LookupOrig(conntrack.Key4(addr0, server, 7240, 80, 6))
	if fl == nil || fl.Fast != conntrack.FastCarry || fl.TCPState != conntrack.TCPSynSent {
		t.Fatalf("after the SYN: %+v (verdict %+v)", fl, v)
	}
	fin := hostSide(5102, 90102, 512)
	fin.FIN = true
	tr.out[fl.Orig] = fin
	tr.in[fl.Reply] = KernelTCP{OK: true, FIN: true, SeqEnd: 90102}
	s.seq = 9000
	if v := processAt(d, 0, s.build(t), int64(2*time.Second)); v.To != ToWire || v.Iface != 1 {
		t.Fatalf("the new SYN: %+v, want it out of eth1 like the tuple's flow", v)
	}
	if fl.TCPState != conntrack.TCPSynSent || fl.SynCount != 1 || fl.Moves != 0 {
		t.Fatalf("after the new SYN: state %d, SYNs %d, moves %d; want a new connection", fl.TCPState, fl.SynCount, fl.Moves)
	}
	d.FastCounts([]FastCount{{Orig: fl.Orig, Packets: 3, Bytes: 300, TCP: fin}, {Orig: fl.Orig, In: true, Packets: 3, Bytes: 300, TCP: tr.in[fl.Reply]}})
	if fl.TCPState != conntrack.TCPSynSent || fl.Replied {
		t.Fatalf("the old entries' counts moved the new connection: state %d, replied %v", fl.TCPState, fl.Replied)
	}
	if ops := d.FastChanges(nil); len(ops) != 2 || ops[0].Delete || ops[1].Delete {
		t.Fatalf("after the new SYN: ops %+v; want both entries replaced", ops)
	}
}

// TestAdoptFast: a new engine (after a restart) takes over the flows the old one left in the
// kernel: same NAT, same gateway, still carried, and a frame of such a flow that reaches the
// new engine's slow path (the host's FIN) is translated like the kernel translates it.
func TestAdoptFast(t *testing.T) {
	old := fastEngine(t)
	fl := natedConnection(t, old, 7220)
	ops := old.FastChanges(nil)
	a := AdoptedFlow{Orig: ops[0].Key, Reply: ops[1].Key, Out: ops[0].Entry, In: ops[1].Entry,
		Origin: ops[0].Entry.Origin, Why: ops[0].Entry.Why, Rule: ops[0].Entry.Rule, HostSeqEnd: 5001, HostAck: 90101, HostWin: 512}
	bogus := a
	bogus.Orig.SrcPort, bogus.Out.Ifindex = 1, 99 // an interface this engine does not have

	d := fastEngine(t)
	if n := d.AdoptFast([]AdoptedFlow{a, bogus}, 1); n != 1 {
		t.Fatalf("adopted %d flows, want 1", n)
	}
	got := d.table.LookupOrig(fl.Orig)
	if got == nil || got.Reply != fl.Reply || !got.NAT || got.Gateway != 1 || got.Fast != conntrack.FastCarry || got.TCPState != conntrack.TCPEstablished {
		t.Fatalf("adopted flow %+v", got)
	}
	ops = d.FastChanges(nil)
	var puts, dels int
	for _, op := range ops {
		if op.Delete {
			dels++
		} else {
			puts++
		}
	}
	if puts != 2 || dels != 2 {
		t.Fatalf("after adoption: %d puts, %d deletes (%+v); want the flow's 2 entries again and the stray's 2 removed", puts, dels, ops)
	}
	fin := pkt{srcMAC: mac0, dstMAC: gwMAC0, src: addr0, dst: server, proto: 6, sport: 7220, dport: 80, fin: true, ack: true, seq: 5001, ackNum: 90101}.build(t)
	if v := process(d, 0, fin); v.To != ToWire || v.Iface != 1 {
		t.Fatalf("the host's FIN of an adopted flow: %+v", v)
	}
	ip := gopacket.NewPacket(fin, layers.LayerTypeEthernet, gopacket.Default).Layer(layers.LayerTypeIPv4).(*layers.IPv4)
	if !bytes.Equal(ip.SrcIP.To4(), addr1[:]) {
		t.Fatalf("the FIN leaves from %v, want the flow's NAT address %v", ip.SrcIP, addr1)
	}
}

// TestFastPathDivertsUnconfirmed: a host's new UDP flow gets only an in entry that diverts its
// answers to the host's queue; once answered the kernel carries it with both entries.
func TestFastPathDivertsUnconfirmed(t *testing.T) {
	d := fastEngine(t)
	req := pkt{srcMAC: mac0, dstMAC: gwMAC0, src: addr0, dst: server, proto: 17, sport: 7300, dport: 53, payload: []byte("q")}
	if v := process(d, 0, req.build(t)); v.Iface != 1 {
		t.Fatalf("datagram not placed on eth1: %+v", v)
	}
	ops := d.FastChanges(nil)
	d.mu.Lock()
	fl := d.table.LookupOrig(conntrack.Key4(addr0, server, 7300, 53, 17))
	d.mu.Unlock()
	if fl == nil || len(ops) != 1 || ops[0].Delete || !ops[0].In || ops[0].Key != fl.Reply ||
		ops[0].Entry != (FastEntry{Orig: fl.Orig, Ifindex: 2, DivertOnly: true}) || fl.Fast != conntrack.FastDivert {
		t.Fatalf("after the request: ops %+v, flow %+v", ops, fl)
	}
	process(d, 0, req.build(t))
	if len(d.FastChanges(nil)) != 0 {
		t.Fatal("a repeated request's flow was installed again")
	}
	answer := pkt{srcMAC: gwMAC1, dstMAC: mac1, src: server, dst: addr1, proto: 17, sport: 53, dport: 7300, payload: []byte("a")}
	process(d, 1, answer.build(t))
	ops = d.FastChanges(nil)
	if len(ops) != 2 || ops[0].Delete || ops[1].Delete || ops[1].Entry.DivertOnly || ops[1].Entry.CarrySYNACK || fl.Fast != conntrack.FastCarry {
		t.Fatalf("after the answer: ops %+v, fast %v", ops, fl.Fast)
	}
}

// TestAdoptFastIPv6: an IPv6 flow NAT66ed onto eth1 is adopted by a new engine that has not
// resolved eth1's IPv6 router yet: the entry names its router by MAC only, so the interface's
// one gateway takes it, with that MAC, and the flow stays carried, translated as before.
func TestAdoptFastIPv6(t *testing.T) {
	old := New(testIfaces6(), testPlan(failover.LoadBalance, 0, 1), Options{Seed: 42, FastPath: true})
	old.ResolvedMAC6(0, gw6MAC0)
	old.ResolvedMAC6(1, gw6MAC1)
	syn := pkt6{srcMAC: mac0, dstMAC: gw6MAC0, src: host6, dst: server6, proto: 6, sport: 4300, dport: 443, syn: true}.build(t)
	if v := process(old, 0, syn); v.To != ToWire || v.Iface != 1 {
		t.Fatalf("SYN verdict %+v, want eth1", v)
	}
	synack := pkt6{srcMAC: gw6MAC1, dstMAC: mac1, src: server6, dst: host6b, proto: 6, sport: 443, dport: 4300, syn: true, ack: true}.build(t)
	process(old, 1, synack)
	process(old, 0, pkt6{srcMAC: mac0, dstMAC: gw6MAC0, src: host6, dst: server6, proto: 6, sport: 4300, dport: 443, ack: true}.build(t))
	ops := old.FastChanges(nil)
	if len(ops) != 2 || !ops[0].Entry.NAT || ops[0].Entry.DstMAC != gw6MAC1 {
		t.Fatalf("old engine's ops %+v", ops)
	}
	a := AdoptedFlow{Orig: ops[0].Key, Reply: ops[1].Key, Out: ops[0].Entry, In: ops[1].Entry, Origin: ops[0].Entry.Origin, Why: ops[0].Entry.Why, Rule: ops[0].Entry.Rule}

	d := New(testIfaces6(), testPlan(failover.LoadBalance, 0, 1), Options{Seed: 42, FastPath: true})
	if n := d.AdoptFast([]AdoptedFlow{a}, 1); n != 1 {
		t.Fatalf("adopted %d flows, want 1", n)
	}
	got := d.table.LookupOrig(a.Orig)
	if got == nil || got.Gateway != 1 || !got.NAT || got.Fast != conntrack.FastCarry {
		t.Fatalf("adopted flow %+v", got)
	}
	ops = d.FastChanges(nil)
	if len(ops) != 2 || ops[0].Delete || ops[0].Entry.DstMAC != gw6MAC1 || ops[0].Entry.Addr != a.Out.Addr || ops[1].Entry.Addr != a.In.Addr {
		t.Fatalf("after adoption: %+v; want the flow's two entries as the old engine had them", ops)
	}
}

// TestFastPathTCPLifetime: an outbound TCP connection is carried from the host's SYN on (so the
// peer's SYN-ACK, the host's ACK and its request never cross user space); the counts show it
// answered, then established; it stays carried while the kernel carries its FINs, which close
// it once the host's side accepted them; a new connection on the tuple gets fresh entries; an
// RST ends the carrying.
func TestFastPathTCPLifetime(t *testing.T) {
	tr := newFakeTracker()
	d := New(testIfaces(), testPlan(failover.LoadBalance, 1, 1000), Options{Seed: 42, FastPath: true, Tracker: tr})
	const sport = 7300
	host := func(p pkt) []byte {
		p.srcMAC, p.dstMAC, p.src, p.dst, p.proto, p.sport, p.dport = mac0, gwMAC0, addr0, server, 6, sport, 80
		return p.build(t)
	}
	if v := process(d, 0, host(pkt{syn: true, seq: 5000})); v.Iface != 1 {
		t.Fatalf("SYN verdict %+v", v)
	}
	ops := d.FastChanges(nil)
	fl := d.table.LookupOrig(conntrack.Key4(addr0, server, sport, 80, 6))
	if len(ops) != 2 || ops[0].Delete || ops[1].Entry.DivertOnly || !ops[1].Entry.CarrySYNACK || fl.Fast != conntrack.FastCarry || fl.TCPState != conntrack.TCPSynSent {
		t.Fatalf("after the SYN: state %d, ops %+v; want both entries installed, the SYN-ACK carried", fl.TCPState, ops)
	}
	// The kernel carried the SYN-ACK: answered.
	d.FastCounts([]FastCount{{Orig: fl.Orig, In: true, Packets: 1, Bytes: 60, LastSeen: fl.LastSeen + 1, TCP: KernelTCP{OK: true}}})
	if fl.TCPState != conntrack.TCPSynRecv || !fl.Replied {
		t.Fatalf("after the carried SYN-ACK: state %d, replied %v; want syn-recv, replied", fl.TCPState, fl.Replied)
	}
	// The kernel carried the host's ACK and a 100-byte request.
	tr.out[fl.Orig] = hostSide(5101, 90001, 512)
	d.FastCounts([]FastCount{{Orig: fl.Orig, Packets: 2, Bytes: 200, LastSeen: fl.LastSeen + 1, TCP: hostSide(5101, 90001, 512)}})
	if fl.TCPState != conntrack.TCPEstablished {
		t.Fatalf("after the host's carried ACK: state %d, want established", fl.TCPState)
	}
	// The kernel carries the server's FIN, and a forged one further on: neither counts while
	// the host has not acknowledged it.
	wireFIN := func(end uint32) KernelTCP { return KernelTCP{OK: true, FIN: true, SeqEnd: end} }
	sync := func(out, in KernelTCP) {
		t.Helper()
		d.FastCounts([]FastCount{{Orig: fl.Orig, Packets: 2, Bytes: 200, TCP: out}, {Orig: fl.Orig, In: true, Packets: 1, Bytes: 60, TCP: in}})
	}
	sync(hostSide(5101, 90001, 512), wireFIN(90002))
	sync(hostSide(5101, 90001, 512), wireFIN(123457))
	// Nor does one behind the host's acknowledgment (old data, which the host drops).
	sync(hostSide(5101, 90001, 512), wireFIN(90000))
	if fl.TCPState != conntrack.TCPEstablished {
		t.Fatalf("after FINs from the wire the host did not acknowledge: state %d, want established", fl.TCPState)
	}
	// The host acknowledges the server's FIN, then closes: the entries stay.
	sync(hostSide(5101, 90002, 512), wireFIN(90002))
	if fl.TCPState != conntrack.TCPClosing {
		t.Fatalf("after the server's acknowledged FIN: state %d, want closing", fl.TCPState)
	}
	fin := hostSide(5102, 90002, 512)
	fin.FIN = true
	sync(fin, wireFIN(90002))
	if fl.TCPState != conntrack.TCPClosed || fl.Fast != conntrack.FastCarry || d.FastPending() {
		t.Fatalf("after a FIN each way: state %d, fast %d, changes pending %v; want closed and still carried", fl.TCPState, fl.Fast, d.FastPending())
	}
	// A new connection on the same tuple reopens it, with fresh entries (the old ones' FIN
	// marks are not the new connection's).
	process(d, 0, host(pkt{syn: true, seq: 7000}))
	ops = d.FastChanges(nil)
	if fl.Fast != conntrack.FastCarry || fl.TCPState != conntrack.TCPSynSent || len(ops) != 2 || ops[0].Delete || ops[1].Delete || !ops[0].Tally.Valid {
		t.Fatalf("a new SYN on a closed carried tuple: fast %d, state %d, ops %+v; want both entries replaced", fl.Fast, fl.TCPState, ops)
	}
	process(d, 1, wireSeg(sport, pkt{syn: true, ack: true, seq: 190000, ackNum: 7001}))
	d.FastChanges(nil)
	// An RST ends the carrying.
	process(d, 0, host(pkt{rst: true, seq: 7001}))
	ops = d.FastChanges(nil)
	if fl.Fast != conntrack.FastNone || len(ops) != 2 || !ops[0].Delete || !ops[1].Delete {
		t.Fatalf("after an RST: fast %d, ops %+v; want both entries removed", fl.Fast, ops)
	}
}

// TestUnansweredAsksKernel: before a connection the kernel carries counts as its gateway's
// failed attempt (unanswered after a second), the engine asks the kernel: one whose SYN-ACK the
// kernel carried since the last sync is answered, not failed; one without an answer fails.
func TestUnansweredAsksKernel(t *testing.T) {
	tr := newFakeTracker()
	d := New(testIfaces(), testPlan(failover.Failover, 1, 1), Options{Seed: 42, FastPath: true, Tracker: tr})
	reconfigure(t, d, func(p *Plan) {
		p.Config.Health = failover.HealthConfig{Window: time.Minute, FailRatio: 0.5, MinAttempts: 4}
	})
	answered, unanswered := syn(33000), syn(33001)
	for _, s := range []pkt{answered, unanswered} {
		if v := processAt(d, 0, s.build(t), 0); v.To != ToWire || v.Iface != 0 {
			t.Fatalf("SYN %d: %+v, want it out of eth0", s.sport, v)
		}
	}
	d.FastChanges(nil)
	fl := d.table.LookupOrig(conntrack.Key4(addr0, server, answered.sport, 80, 6))
	if fl == nil || fl.Fast != conntrack.FastCarry {
		t.Fatalf("connection not carried from its SYN: %+v", fl)
	}
	tr.in[fl.Reply] = KernelTCP{OK: true} // the kernel carried its SYN-ACK
	d.HealthTick(int64(1100 * time.Millisecond))
	if !fl.Replied || fl.TCPState != conntrack.TCPSynRecv || fl.Failed {
		t.Fatalf("connection answered in the kernel: replied %v, state %d, failed %v; want answered", fl.Replied, fl.TCPState, fl.Failed)
	}
	if fl2 := d.table.LookupOrig(conntrack.Key4(addr0, server, unanswered.sport, 80, 6)); fl2 == nil || fl2.Replied || !fl2.Failed {
		t.Fatalf("connection without an answer: %+v, want failed", fl2)
	}
}

// TestFastPathReplaceReadsFINs: entries replaced before a sync (here: the gateway's MAC
// changed) are read first, so FINs the kernel carried on them still close the connection.
func TestFastPathReplaceReadsFINs(t *testing.T) {
	tr := newFakeTracker()
	d := New(testIfaces(), testPlan(failover.LoadBalance, 1, 1000), Options{Seed: 42, FastPath: true, Tracker: tr})
	const sport = 7310
	host := pkt{srcMAC: mac0, dstMAC: gwMAC0, src: addr0, dst: server, proto: 6, sport: sport, dport: 80, syn: true, seq: 5000}
	if v := process(d, 0, host.build(t)); v.Iface != 1 {
		t.Fatalf("SYN verdict %+v", v)
	}
	d.FastChanges(nil)
	fl := d.table.LookupOrig(conntrack.Key4(addr0, server, sport, 80, 6))
	d.FastCounts([]FastCount{{Orig: fl.Orig, In: true, Packets: 1, Bytes: 60, LastSeen: fl.LastSeen + 1, TCP: KernelTCP{OK: true}}})
	d.FastCounts([]FastCount{{Orig: fl.Orig, Packets: 2, Bytes: 200, LastSeen: fl.LastSeen + 1, TCP: hostSide(5101, 90001, 512)}})
	if fl.TCPState != conntrack.TCPEstablished {
		t.Fatalf("state %d, want established", fl.TCPState)
	}
	// Since the last sync the kernel carried the server's FIN, the host's acknowledgment of
	// it and the host's FIN.
	hostFIN := hostSide(5102, 90002, 512)
	hostFIN.FIN = true
	tr.out[fl.Orig] = hostFIN
	tr.in[fl.Reply] = KernelTCP{OK: true, FIN: true, SeqEnd: 90002}
	d.ResolvedMAC(1, [6]byte{0x02, 0, 0, 0, 0, 0x22})
	ops := d.FastChanges(nil)
	if len(ops) != 2 || ops[0].Delete || ops[0].Entry.DstMAC != [6]byte{0x02, 0, 0, 0, 0, 0x22} {
		t.Fatalf("ops after the MAC change: %+v; want both entries replaced with the new MAC", ops)
	}
	if fl.TCPState != conntrack.TCPClosed {
		t.Fatalf("state %d after the entries were replaced; want closed (the FINs they held were read)", fl.TCPState)
	}
}
