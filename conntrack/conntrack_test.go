package conntrack

import (
	"testing"
	"time"

	"github.com/l2shim/l2shim/conf"
)

const (
	fin    = tcpFIN
	syn    = tcpSYN
	rst    = tcpRST
	ack    = tcpACK
	synack = tcpSYN | tcpACK
	finack = tcpFIN | tcpACK
	psh    = 0x08 | tcpACK
)

const sec = int64(time.Second)

func key(i int) Key {
	return Key{Src: Addr4([4]byte{10, 1, byte(i >> 8), byte(i)}), Dst: Addr4([4]byte{203, 0, 113, 10}), SrcPort: uint16(1024 + i), DstPort: 80, Proto: 6}
}

func flow(i int, now int64) Flow {
	k := key(i)
	return Flow{Orig: k, Reply: k.Reverse(), Gateway: -1, Created: now, LastSeen: now}
}

func udpFlow(i int, now int64) Flow {
	f := flow(i, now)
	f.Orig.Proto, f.Reply.Proto = 17, 17
	return f
}

func mustInsert(t testing.TB, tb *Table, f Flow) *Flow {
	t.Helper()
	p, err := tb.Insert(f)
	if err != nil {
		t.Fatalf("insert %v: %v", f.Orig, err)
	}
	return p
}

// establish runs an outbound three-way handshake on p at time now.
func establish(tb *Table, p *Flow, now int64) {
	tb.Seen(p, DirOrig, 60, syn, now)
	tb.Seen(p, DirReply, 60, synack, now)
	tb.Seen(p, DirOrig, 52, ack, now)
}

func TestInsertLookupDelete(t *testing.T) {
	tb := New(100, DefaultTimeouts())
	p := mustInsert(t, tb, flow(1, 0))
	if tb.LookupOrig(key(1)) != p || tb.LookupReply(key(1).Reverse()) != p {
		t.Fatal("flow not found by both keys")
	}
	if _, err := tb.Insert(flow(1, 0)); err != ErrExists {
		t.Fatalf("duplicate insert: %v", err)
	}
	other := flow(2, 0)
	other.Reply = key(1).Reverse() // a NAT mapping onto a wire tuple already owned
	if _, err := tb.Insert(other); err != ErrExists {
		t.Fatalf("insert with a reply key in use: %v", err)
	}
	if !tb.ReplyInUse(key(1).Reverse()) {
		t.Fatal("reply key not reported in use")
	}
	tb.Delete(p)
	if tb.Len() != 0 || tb.LookupOrig(key(1)) != nil || tb.ReplyInUse(key(1).Reverse()) {
		t.Fatal("flow still present after delete")
	}
	tb.Delete(p)           // twice: ignored
	tb.Delete(&Flow{})     // not the table's: ignored
	tb.Delete(nil)         // ignored
	tb.Seen(p, 0, 1, 0, 0) // a removed flow: ignored
	if tb.Len() != 0 || tb.C.Inserted.Load() != 1 {
		t.Fatalf("len %d inserted %d", tb.Len(), tb.C.Inserted.Load())
	}
	checkTable(t, tb)
}

func TestNewDefaults(t *testing.T) {
	tb := New(0, Timeouts{TCPClosed: time.Second})
	if tb.Max() != conf.DefaultMaxFlows {
		t.Errorf("max = %d", tb.Max())
	}
	want := DefaultTimeouts()
	want.TCPClosed = time.Second
	if tb.Timeouts() != want {
		t.Errorf("timeouts = %+v, want %+v", tb.Timeouts(), want)
	}
}

// TestTimeoutsFrom checks the conf section maps onto Timeouts field by field, the defaults
// agree, and a hand-built (zero) section gets the defaults.
func TestTimeoutsFrom(t *testing.T) {
	c := conf.Conntrack{MaxFlows: 4096, TCPSynSent: 1, TCPEstablished: 2, TCPClosing: 3, TCPClosed: 4, UDPUnreplied: 5, UDPReplied: 6, ICMP: 7, Other: 8}
	want := Timeouts{1, 2, 3, 4, 5, 6, 7, 8}
	if got := TimeoutsFrom(c); got != want {
		t.Errorf("TimeoutsFrom = %+v, want %+v", got, want)
	}
	if got := TimeoutsFrom(conf.Conntrack{}); got != DefaultTimeouts() {
		t.Errorf("TimeoutsFrom(zero) = %+v", got)
	}
	cfg, err := conf.Parse("x.toml", []byte("[[gateway]]\ninterface = \"eth0\"\naddress = \"10.1.0.1\"\n"))
	if err != nil {
		t.Fatal(err)
	}
	if got := TimeoutsFrom(cfg.Conntrack); got != DefaultTimeouts() {
		t.Errorf("defaults differ: conf %+v, conntrack %+v", got, DefaultTimeouts())
	}
	if DefaultTimeouts().TCPEstablished != 2*time.Hour+4*time.Minute {
		t.Errorf("established timeout %v", DefaultTimeouts().TCPEstablished)
	}
}

// TestPointersStable checks a *Flow survives the table growing past a chunk.
func TestPointersStable(t *testing.T) {
	tb := New(3*chunkSize, DefaultTimeouts())
	p := mustInsert(t, tb, flow(0, 0))
	for i := 1; i < 2*chunkSize+5; i++ {
		mustInsert(t, tb, flow(i, 0))
	}
	if p.Orig != key(0) || tb.LookupOrig(key(0)) != p {
		t.Fatal("pointer to the first flow went stale")
	}
	checkTable(t, tb)
}

// TestTCPStates walks TCP connections through their states, both origins.
func TestTCPStates(t *testing.T) {
	type step struct {
		dir   int
		flags uint8
		state uint8
	}
	o, r := DirOrig, DirReply
	tests := []struct {
		name    string
		origin  Origin
		steps   []step
		class   Class
		replied bool
		syns    uint8
	}{
		{"handshake", Outbound, []step{{o, syn, TCPSynSent}, {o, syn, TCPSynSent}, {r, synack, TCPSynRecv}, {o, ack, TCPEstablished}}, ClassEstablished, true, 2},
		{"inbound handshake", Inbound, []step{{r, syn, TCPSynSent}, {o, synack, TCPSynRecv}, {r, ack, TCPEstablished}, {o, psh, TCPEstablished}}, ClassEstablished, true, 1},
		{"inbound SYN flood entry", Inbound, []step{{r, syn, TCPSynSent}, {o, synack, TCPSynRecv}, {o, synack, TCPSynRecv}}, ClassUnconfirmed, true, 1},
		{"unanswered SYN", Outbound, []step{{o, syn, TCPSynSent}, {o, syn, TCPSynSent}, {o, syn, TCPSynSent}}, ClassUnconfirmed, false, 3},
		{"SYN-ACK from the initiator is ignored", Outbound, []step{{o, syn, TCPSynSent}, {o, synack, TCPSynSent}}, ClassUnconfirmed, false, 1},
		{"responder's ACK does not complete the handshake", Outbound, []step{{o, syn, TCPSynSent}, {r, synack, TCPSynRecv}, {r, ack, TCPSynRecv}}, ClassUnconfirmed, true, 1},
		{"SYN lost, SYN-ACK retransmitted, SYN retried", Outbound, []step{{o, syn, TCPSynSent}, {r, synack, TCPSynRecv}, {o, syn, TCPSynRecv}, {o, ack, TCPEstablished}}, ClassEstablished, true, 2},
		{"simultaneous SYN ignored", Outbound, []step{{o, syn, TCPSynSent}, {r, syn, TCPSynSent}}, ClassUnconfirmed, true, 1},
		{"refused", Outbound, []step{{o, syn, TCPSynSent}, {r, rst | ack, TCPClosed}}, ClassClosed, true, 1},
		{"FIN in SYN_SENT ignored", Outbound, []step{{o, syn, TCPSynSent}, {o, finack, TCPSynSent}}, ClassUnconfirmed, false, 1},
		{"half-closed by the host, data keeps coming", Outbound, []step{{o, syn, TCPSynSent}, {r, synack, TCPSynRecv}, {o, ack, TCPEstablished}, {o, finack, TCPClosing},
			{r, psh, TCPClosing}, {o, ack, TCPClosing}, {r, psh, TCPClosing}}, ClassClosing, true, 1},
		{"FIN each way", Outbound, []step{{o, syn, TCPSynSent}, {r, synack, TCPSynRecv}, {o, ack, TCPEstablished}, {r, finack, TCPClosing},
			{r, finack, TCPClosing}, {o, finack, TCPClosed}, {r, ack, TCPClosed}, {o, finack, TCPClosed}}, ClassClosed, true, 1},
		{"FIN in SYN_RECV", Inbound, []step{{r, syn, TCPSynSent}, {o, synack, TCPSynRecv}, {o, finack, TCPClosing}}, ClassClosing, true, 1},
		{"RST after FIN", Outbound, []step{{o, syn, TCPSynSent}, {r, synack, TCPSynRecv}, {o, ack, TCPEstablished}, {o, finack, TCPClosing}, {r, rst, TCPClosed}}, ClassClosed, true, 1},
		{"RST ignored by the endpoints", Outbound, []step{{o, syn, TCPSynSent}, {r, synack, TCPSynRecv}, {o, ack, TCPEstablished}, {r, rst, TCPClosed},
			{o, psh, TCPClosed}, {o, psh, TCPClosed}, {r, ack, TCPEstablished}}, ClassEstablished, true, 1},
		{"RST, then stragglers one way only", Outbound, []step{{o, syn, TCPSynSent}, {r, synack, TCPSynRecv}, {o, ack, TCPEstablished}, {r, rst, TCPClosed},
			{o, psh, TCPClosed}, {o, rst, TCPClosed}, {r, psh, TCPClosed}}, ClassClosed, true, 1},
		{"RST ignored while half-closed", Outbound, []step{{o, syn, TCPSynSent}, {r, synack, TCPSynRecv}, {o, ack, TCPEstablished}, {o, finack, TCPClosing},
			{r, rst, TCPClosed}, {r, psh, TCPClosed}, {o, ack, TCPClosing}}, ClassClosing, true, 1},
		{"tuple reused after close", Outbound, []step{{o, syn, TCPSynSent}, {r, synack, TCPSynRecv}, {o, ack, TCPEstablished}, {o, finack, TCPClosing},
			{r, finack, TCPClosed}, {o, ack, TCPClosed}, {o, syn, TCPSynSent}}, ClassUnconfirmed, false, 1},
		{"picked up mid-stream", Outbound, []step{{o, psh, TCPEstablished}, {o, psh, TCPEstablished}}, ClassUnconfirmed, false, 0},
		{"picked up mid-stream, answered", Outbound, []step{{o, psh, TCPEstablished}, {r, ack, TCPEstablished}}, ClassEstablished, true, 0},
		{"picked up while closing", Inbound, []step{{o, finack, TCPClosing}, {r, finack, TCPClosed}}, ClassClosed, true, 0},
		{"SYN on a half-closed flow ignored", Outbound, []step{{o, syn, TCPSynSent}, {r, synack, TCPSynRecv}, {o, ack, TCPEstablished}, {o, finack, TCPClosing}, {o, syn, TCPClosing}}, ClassClosing, true, 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tb := New(16, DefaultTimeouts())
			f := flow(1, 0)
			f.Origin = tc.origin
			p := mustInsert(t, tb, f)
			if p.Class() != ClassUnconfirmed {
				t.Fatalf("new flow in class %v", p.Class())
			}
			for i, s := range tc.steps {
				tb.Seen(p, s.dir, 60, s.flags, int64(i+1)*sec)
				if p.TCPState != s.state {
					t.Fatalf("step %d (dir %d flags %#x): state %d, want %d", i+1, s.dir, s.flags, p.TCPState, s.state)
				}
				checkTable(t, tb)
			}
			if p.Class() != tc.class || p.Replied != tc.replied || p.SynCount != tc.syns {
				t.Errorf("class %v replied %v syns %d; want %v %v %d", p.Class(), p.Replied, p.SynCount, tc.class, tc.replied, tc.syns)
			}
			if tb.ClassLen(tc.class) != 1 {
				t.Errorf("ClassLen(%v) = %d", tc.class, tb.ClassLen(tc.class))
			}
		})
	}
}

func TestCounters(t *testing.T) {
	tb := New(100, DefaultTimeouts())
	p := mustInsert(t, tb, flow(1, 0))
	tb.Seen(p, DirOrig, 60, syn, 0)
	tb.Seen(p, DirOrig, 60, syn, 1)
	tb.Seen(p, DirReply, 60, synack, 2)
	tb.Seen(p, DirOrig, 60, ack, 3)
	if p.Packets != [2]uint64{3, 1} || p.Bytes != [2]uint64{180, 60} || p.LastSeen != 3 || p.Created != 0 {
		t.Fatalf("counters %v %v seen %d created %d", p.Packets, p.Bytes, p.LastSeen, p.Created)
	}
}

// TestIdleTimeouts checks each state's timeout, exactly when the LRU order is exact.
func TestIdleTimeouts(t *testing.T) {
	to := Timeouts{TCPSynSent: 11 * time.Second, TCPEstablished: 12 * time.Second, TCPClosing: 13 * time.Second, TCPClosed: 14 * time.Second,
		UDPUnreplied: 15 * time.Second, UDPReplied: 16 * time.Second, ICMP: 17 * time.Second, Other: 18 * time.Second}
	const t0 = 100 * sec
	tests := []struct {
		name  string
		proto uint8
		setup func(tb *Table, p *Flow)
		want  time.Duration
	}{
		{"syn sent", 6, func(tb *Table, p *Flow) { tb.Seen(p, DirOrig, 1, syn, t0) }, to.TCPSynSent},
		{"syn recv", 6, func(tb *Table, p *Flow) { tb.Seen(p, DirOrig, 1, syn, t0); tb.Seen(p, DirReply, 1, synack, t0) }, to.TCPSynSent},
		{"established", 6, func(tb *Table, p *Flow) { establish(tb, p, t0) }, to.TCPEstablished},
		{"closing", 6, func(tb *Table, p *Flow) { establish(tb, p, t0); tb.Seen(p, DirReply, 1, finack, t0) }, to.TCPClosing},
		{"closed", 6, func(tb *Table, p *Flow) { establish(tb, p, t0); tb.Seen(p, DirReply, 1, rst, t0) }, to.TCPClosed},
		{"udp unreplied", 17, func(tb *Table, p *Flow) { tb.Seen(p, DirOrig, 1, 0, t0) }, to.UDPUnreplied},
		{"udp query and answer", 17, func(tb *Table, p *Flow) {
			p.Created = t0 - StreamAfter.Nanoseconds() + 1
			tb.Seen(p, DirOrig, 1, 0, t0)
			tb.Seen(p, DirReply, 1, 0, t0)
		}, to.UDPUnreplied},
		{"udp stream", 17, func(tb *Table, p *Flow) {
			tb.Seen(p, DirOrig, 1, 0, t0-3*sec)
			tb.Seen(p, DirReply, 1, 0, t0-2*sec)
			tb.Seen(p, DirOrig, 1, 0, t0)
		}, to.UDPReplied},
		{"icmp", 1, func(tb *Table, p *Flow) { tb.Seen(p, DirOrig, 1, 0, t0) }, to.ICMP},
		{"icmp replied", 1, func(tb *Table, p *Flow) { tb.Seen(p, DirOrig, 1, 0, t0); tb.Seen(p, DirReply, 1, 0, t0) }, to.ICMP},
		{"gre", 47, func(tb *Table, p *Flow) { tb.Seen(p, DirOrig, 1, 0, t0) }, to.Other},
		{"gre stream", 47, func(tb *Table, p *Flow) {
			tb.Seen(p, DirReply, 1, 0, t0-2*sec)
			tb.Seen(p, DirOrig, 1, 0, t0)
		}, to.Other},
	}
	for _, exact := range []bool{true, false} {
		for _, tc := range tests {
			t.Run(tc.name, func(t *testing.T) {
				tb := New(16, to)
				if exact {
					tb.shift = 0
				}
				f := flow(1, t0-5*sec)
				f.Orig.Proto, f.Reply.Proto = tc.proto, tc.proto
				p := mustInsert(t, tb, f)
				tc.setup(tb, p)
				if got := tb.Timeout(p); got != tc.want {
					t.Fatalf("timeout %v, want %v", got, tc.want)
				}
				slack := int64(0)
				if !exact {
					slack = int64(Resolution)
				}
				if n := tb.Expire(t0+int64(tc.want), 100); n != 0 {
					t.Fatalf("expired at its timeout")
				}
				if n := tb.Expire(t0+int64(tc.want)+1+slack, 100); n != 1 || tb.Len() != 0 {
					t.Fatalf("not expired just after its timeout (%d removed)", n)
				}
				if tb.C.Expired.Load() != 1 {
					t.Fatalf("expired counter %d", tb.C.Expired.Load())
				}
			})
		}
	}
}

// TestUDPAssured checks replied UDP flows become assured only when still busy after
// StreamAfter, and that Replied means "the other end answered" for both origins.
func TestUDPAssured(t *testing.T) {
	tb := New(16, DefaultTimeouts())
	dns := mustInsert(t, tb, udpFlow(1, 0))
	tb.Seen(dns, DirOrig, 80, 0, 0)
	tb.Seen(dns, DirReply, 200, 0, int64(StreamAfter)-1)
	if !dns.Replied || dns.Class() != ClassUnconfirmed {
		t.Fatalf("DNS exchange: replied %v class %v", dns.Replied, dns.Class())
	}
	tb.Seen(dns, DirOrig, 80, 0, int64(StreamAfter))
	if dns.Class() != ClassEstablished {
		t.Fatalf("busy after %v: class %v", StreamAfter, dns.Class())
	}

	f := udpFlow(2, 0)
	f.Origin = Inbound
	in := mustInsert(t, tb, f)
	for i := int64(0); i < 5; i++ {
		tb.Seen(in, DirReply, 100, 0, i*sec) // the wire end opened it: not a reply
	}
	if in.Replied || in.Class() != ClassUnconfirmed {
		t.Fatalf("inbound flow without an answer from the host: replied %v class %v", in.Replied, in.Class())
	}
	tb.Seen(in, DirOrig, 100, 0, 5*sec)
	if !in.Replied || in.Class() != ClassWire {
		t.Fatalf("inbound flow answered: replied %v class %v, want %v (evicted before the host's own)", in.Replied, in.Class(), ClassWire)
	}
	checkTable(t, tb)
}

// TestEviction checks the order in which a full table makes room, and that established flows
// are never evicted.
func TestEviction(t *testing.T) {
	tb := New(8, DefaultTimeouts())
	var removed []Key
	var reasons []RemoveReason
	tb.OnRemove(func(f *Flow, why RemoveReason) {
		removed = append(removed, f.Orig)
		reasons = append(reasons, why)
	})
	now := int64(0)
	next := 0
	add := func(setup func(p *Flow)) *Flow {
		now += sec
		p := mustInsert(t, tb, flow(next, now))
		next++
		setup(p)
		return p
	}
	est := func(p *Flow) { establish(tb, p, now) }
	closing := func(p *Flow) { est(p); tb.Seen(p, DirOrig, 1, finack, now) }
	closed := func(p *Flow) { est(p); tb.Seen(p, DirOrig, 1, rst, now) }
	synSent := func(p *Flow) { tb.Seen(p, DirOrig, 1, syn, now) }

	e1 := add(est)
	c1 := add(closing)
	u1 := add(synSent)
	x1 := add(closed)
	u2 := add(synSent)
	e2 := add(est)
	c2 := add(closing)
	x2 := add(closed)
	tb.Seen(u1, DirOrig, 1, syn, now+sec) // u1 is now more recent than u2
	now += sec
	want := []*Flow{x1, x2, u2, u1, c1, c2}
	wantKeys := make([]Key, len(want))
	for i, f := range want {
		wantKeys[i] = f.Orig
	}
	for i := range want {
		p := add(est)
		if tb.Len() != 8 {
			t.Fatalf("len %d", tb.Len())
		}
		if len(removed) != i+1 || removed[i] != wantKeys[i] || reasons[i] != Evicted {
			t.Fatalf("eviction %d removed %v (%v), want %v", i+1, removed, reasons, wantKeys[:i+1])
		}
		if tb.LookupOrig(p.Orig) != p {
			t.Fatal("new flow not found")
		}
		checkTable(t, tb)
	}
	if tb.LookupOrig(e1.Orig) != e1 || tb.LookupOrig(e2.Orig) != e2 {
		t.Fatal("an established flow was evicted")
	}
	if _, err := tb.Insert(flow(100, now)); err != ErrFull {
		t.Fatalf("insert into a table of established flows: %v", err)
	}
	if tb.C.Evicted.Load() != 6 || tb.C.Refused.Load() != 1 || tb.ClassLen(ClassEstablished) != 8 {
		t.Fatalf("evicted %d refused %d established %d", tb.C.Evicted.Load(), tb.C.Refused.Load(), tb.ClassLen(ClassEstablished))
	}
	// A close frees a slot for eviction again.
	e1key := e1.Orig
	tb.Seen(e1, DirReply, 1, finack, now)
	if _, err := tb.Insert(flow(100, now)); err != nil || tb.LookupOrig(e1key) != nil {
		t.Fatalf("insert after a close: %v", err)
	}
	// Delete and Expire report their reasons.
	tb.Delete(e2)
	tb.Expire(now+int64(7*time.Hour), 1)
	if n := len(reasons); reasons[n-2] != Deleted || reasons[n-1] != Expired {
		t.Fatalf("reasons %v", reasons)
	}
	checkTable(t, tb)
}

// TestSynFlood fills a table with unanswered SYNs while established flows live in it: every
// established flow survives, and a legitimate connection still gets in.
func TestSynFlood(t *testing.T) {
	const max = 4096
	tb := New(max, DefaultTimeouts())
	now := int64(0)
	var est []*Flow
	for i := 0; i < 100; i++ {
		p := mustInsert(t, tb, flow(i, now))
		establish(tb, p, now)
		est = append(est, p)
	}
	for i := 0; i < 50*max; i++ {
		now += 1000
		k := Key{Src: Addr4([4]byte{198, 51, byte(i >> 16), byte(i >> 8)}), Dst: Addr4([4]byte{10, 1, 0, 2}), SrcPort: uint16(i), DstPort: 22, Proto: 6}
		f := Flow{Orig: k.Reverse(), Reply: k, Origin: Inbound, LastSeen: now}
		p, err := tb.Insert(f)
		if err != nil {
			t.Fatalf("flood SYN %d: %v", i, err)
		}
		tb.Seen(p, DirReply, 60, syn, now)
		tb.Seen(p, DirOrig, 60, synack, now)
		if i%1000 == 0 {
			tb.Expire(now, 8192)
		}
	}
	if tb.Len() != max {
		t.Fatalf("len %d", tb.Len())
	}
	for _, p := range est {
		if tb.LookupOrig(p.Orig) != p || p.Class() != ClassEstablished {
			t.Fatal("an established flow was lost to the flood")
		}
	}
	p := mustInsert(t, tb, flow(1000, now))
	establish(tb, p, now)
	if p.Class() != ClassEstablished {
		t.Fatal("legitimate connection not established")
	}
	checkTable(t, tb)
}

// TestExpireBudget checks Expire never removes more than its budget, spreads the work over
// calls, removes only expired flows, and its slots are reused.
func TestExpireBudget(t *testing.T) {
	tb := New(1<<16, DefaultTimeouts())
	for i := 0; i < 10000; i++ {
		mustInsert(t, tb, udpFlow(i, 0))
	}
	for i := 10000; i < 10100; i++ {
		p := mustInsert(t, tb, flow(i, 0))
		establish(tb, p, 0)
	}
	late := int64(time.Hour)
	if n := tb.Expire(late, 1000); n != 1000 {
		t.Fatalf("expired %d with a budget of 1000", n)
	}
	for i := 0; i < 20 && tb.Len() > 100; i++ {
		if n := tb.Expire(late, 1000); n > 1000 {
			t.Fatalf("expired %d with a budget of 1000", n)
		}
	}
	if tb.Len() != 100 || tb.ClassLen(ClassEstablished) != 100 {
		t.Fatalf("%d flows left, %d established; want the 100 established", tb.Len(), tb.ClassLen(ClassEstablished))
	}
	if n := tb.Expire(late, 1000); n != 0 {
		t.Fatalf("expired %d established flows after an hour", n)
	}
	if _, err := tb.Insert(flow(1, late)); err != nil {
		t.Fatal(err)
	}
	if len(tb.chunks) != 3 {
		t.Fatalf("%d chunks: slots not reused", len(tb.chunks))
	}
	checkTable(t, tb)
}

// TestExpireFair checks a small budget does not starve one list behind another.
func TestExpireFair(t *testing.T) {
	tb := New(1<<16, DefaultTimeouts())
	for i := 0; i < 1000; i++ {
		mustInsert(t, tb, udpFlow(i, 0))
		mustInsert(t, tb, flow(1000+i, 0))
	}
	late := int64(time.Hour)
	for i := 0; i < 2*numLists; i++ {
		tb.Expire(late, 10)
	}
	if u, c := int(tb.lists[listUDPNew].n), int(tb.lists[listTCPNew].n); u == 1000 || c == 1000 {
		t.Fatalf("one list starved: udp %d tcp %d left", u, c)
	}
}

// TestClockClamp checks a frame with an older time than the table has seen does not break
// the LRU order.
func TestClockClamp(t *testing.T) {
	tb := New(16, DefaultTimeouts())
	tb.shift = 0
	a := mustInsert(t, tb, udpFlow(1, 10*sec))
	b := mustInsert(t, tb, udpFlow(2, 5*sec)) // older than the clock: raised to 10s
	if b.LastSeen != 10*sec {
		t.Fatalf("LastSeen %d", b.LastSeen)
	}
	tb.Seen(a, DirOrig, 1, 0, 3*sec)
	if a.LastSeen != 10*sec {
		t.Fatalf("LastSeen went back to %d", a.LastSeen)
	}
	checkTable(t, tb)
}

// TestWireAssuredEvictedBeforeOwn: in a table of established and assured flows, a new flow
// takes the place of an assured UDP flow the wire opened (anyone can make one with spoofed
// datagrams the host answers), never the host's own assured flow or an established one.
func TestWireAssuredEvictedBeforeOwn(t *testing.T) {
	tb := New(3, DefaultTimeouts())
	assure := func(p *Flow, from, to int) {
		tb.Seen(p, from, 80, 0, 0)
		tb.Seen(p, to, 80, 0, int64(StreamAfter))
	}
	own := mustInsert(t, tb, udpFlow(1, 0))
	w := udpFlow(2, 0)
	w.Origin = Inbound
	wire := mustInsert(t, tb, w)
	wireKey := wire.Orig
	est := mustInsert(t, tb, flow(3, 0))
	establish(tb, est, 0)
	assure(own, DirOrig, DirReply)
	assure(wire, DirReply, DirOrig)
	if own.Class() != ClassEstablished || wire.Class() != ClassWire || est.Class() != ClassEstablished {
		t.Fatalf("classes: own %v, wire %v, tcp %v", own.Class(), wire.Class(), est.Class())
	}
	mustInsert(t, tb, udpFlow(4, int64(StreamAfter)))
	if tb.LookupOrig(wireKey) != nil || tb.LookupOrig(own.Orig) != own || tb.LookupOrig(est.Orig) != est {
		t.Fatal("the new flow did not take the wire-opened assured flow's place")
	}
	if _, err := tb.Insert(udpFlow(5, int64(StreamAfter))); err != nil {
		// The flow just inserted is unconfirmed: it goes first.
		t.Fatalf("insert with an unconfirmed flow to evict: %v", err)
	}
	checkTable(t, tb)
}

// TestCarriedHandshake: a connection opened by the host is answered by a frame the kernel
// carried from the responder (its SYN-ACK) and completes its handshake with one from the
// initiator (the kernel carries none of its SYNs), moving to the established timeout; Touch only
// counts; a flow in another state does not move; FINs the kernel carried close it.
func TestCarriedHandshake(t *testing.T) {
	tb := New(100, DefaultTimeouts())
	p := mustInsert(t, tb, flow(1, 0))
	tb.Seen(p, DirOrig, 60, syn, 0)
	tb.Touch(p, DirReply, 1, 60, sec)
	if p.TCPState != TCPSynSent || p.Replied {
		t.Fatalf("after Touch: state %d, replied %v; want it unchanged", p.TCPState, p.Replied)
	}
	tb.Carried(p, DirReply)
	if p.TCPState != TCPSynRecv || !p.Replied {
		t.Fatalf("after the responder's carried frame: state %d, replied %v; want TCPSynRecv, replied", p.TCPState, p.Replied)
	}
	tb.Carried(p, DirOrig)
	if p.TCPState != TCPEstablished || p.Class() != ClassEstablished {
		t.Fatalf("after the initiator's carried frame: state %d class %d", p.TCPState, p.Class())
	}
	tb.FIN(p, DirOrig)
	tb.Carried(p, DirOrig)
	if p.TCPState != TCPClosing {
		t.Fatalf("the host's carried FIN, then frames: state %d, want TCPClosing", p.TCPState)
	}
	tb.FIN(p, DirReply)
	if p.TCPState != TCPClosed {
		t.Fatalf("a carried FIN each way: state %d, want TCPClosed", p.TCPState)
	}
	checkTable(t, tb)
}
