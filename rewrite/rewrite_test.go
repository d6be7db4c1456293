package rewrite

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"testing"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
)

// rwCase is one frame the NAT table test rewrites in every way.
type rwCase struct {
	name  string
	build func(t testing.TB) ([]byte, VnetHdr)
}

func full(b []byte) ([]byte, VnetHdr) { return b, VnetHdr{} }

func gsoTCP(t testing.TB, payload int, zeroTotLen bool, ecn bool) ([]byte, VnetHdr) {
	b := buildTCP(t, ipHost, ipRemote, 40000, 443, tcpOpt{options: true, flags: TCPAck | TCPPsh, payload: payload})
	v := VnetHdr{GSOType: GSOTCPv4, GSOSize: 1448, HdrLen: uint16(EthHdrLen + 20 + 40)}
	if ecn {
		v.GSOType |= GSOECN
	}
	if zeroTotLen {
		binary.BigEndian.PutUint16(b[EthHdrLen+2:], 0)
		binary.BigEndian.PutUint16(b[EthHdrLen+10:], 0)
		binary.BigEndian.PutUint16(b[EthHdrLen+10:], Checksum(b[EthHdrLen:EthHdrLen+20], 0))
	}
	return b, makePartial(t, b, v)
}

var rwCases = []rwCase{
	{"tcp syn with options", func(t testing.TB) ([]byte, VnetHdr) {
		return full(buildTCP(t, ipHost, ipRemote, 40000, 443, tcpOpt{options: true, flags: TCPSyn}))
	}},
	{"tcp data with options, odd payload", func(t testing.TB) ([]byte, VnetHdr) {
		return full(buildTCP(t, ipHost, ipRemote, 40001, 80, tcpOpt{options: true, flags: TCPAck | TCPPsh, payload: 333}))
	}},
	{"tcp with ip options", func(t testing.TB) ([]byte, VnetHdr) {
		return full(buildTCP(t, ipHost, ipRemote, 40002, 22, tcpOpt{ipOpts: true, flags: TCPAck, payload: 100}))
	}},
	{"tcp partial", func(t testing.TB) ([]byte, VnetHdr) {
		b := buildTCP(t, ipHost, ipRemote, 40003, 443, tcpOpt{options: true, flags: TCPAck | TCPPsh, payload: 1000})
		return b, makePartial(t, b, VnetHdr{})
	}},
	{"tcp partial syn with ip options", func(t testing.TB) ([]byte, VnetHdr) {
		b := buildTCP(t, ipHost, ipRemote, 40004, 443, tcpOpt{options: true, ipOpts: true, flags: TCPSyn})
		return b, makePartial(t, b, VnetHdr{})
	}},
	{"tcp data_valid from the wire", func(t testing.TB) ([]byte, VnetHdr) {
		b := buildTCP(t, ipRemote, ipHost2, 443, 61000, tcpOpt{flags: TCPAck, payload: 1460})
		return b, VnetHdr{Flags: VnetDataValid}
	}},
	{"udp", func(t testing.TB) ([]byte, VnetHdr) {
		return full(buildUDP(t, ipHost, ipRemote, 5353, 53, 45))
	}},
	{"udp partial", func(t testing.TB) ([]byte, VnetHdr) {
		b := buildUDP(t, ipHost, ipRemote, 5354, 53, 1200)
		return b, makePartial(t, b, VnetHdr{})
	}},
	{"udp checksum 0", func(t testing.TB) ([]byte, VnetHdr) {
		b := buildUDP(t, ipHost, ipRemote, 5355, 4789, 100)
		binary.BigEndian.PutUint16(b[EthHdrLen+20+6:], 0)
		return full(b)
	}},
	{"icmp echo request", func(t testing.TB) ([]byte, VnetHdr) {
		return full(buildICMPEcho(t, ipHost, ipRemote, ICMPEchoRequest, 0x4242, 56))
	}},
	{"icmp echo reply", func(t testing.TB) ([]byte, VnetHdr) {
		return full(buildICMPEcho(t, ipRemote, ipHost2, ICMPEchoReply, 0x9999, 56))
	}},
	{"icmp echo request partial", func(t testing.TB) ([]byte, VnetHdr) {
		b := buildICMPEcho(t, ipHost, ipRemote, ICMPEchoRequest, 0x4243, 57)
		return b, makePartial(t, b, VnetHdr{})
	}},
	{"udp with nonzero ethernet padding", func(t testing.TB) ([]byte, VnetHdr) {
		b := buildUDP(t, ipHost, ipRemote, 5356, 123, 3) // 45 bytes, padded to 60
		for i := EthHdrLen + 31; i < len(b); i++ {
			b[i] = 0xaa
		}
		return full(b)
	}},
	{"tcp syn-ack padded", func(t testing.TB) ([]byte, VnetHdr) {
		b := buildTCP(t, ipRemote, ipHost2, 443, 61001, tcpOpt{flags: TCPSyn | TCPAck}) // 54, padded to 60
		for i := EthHdrLen + 40; i < len(b); i++ {
			b[i] = 0x55
		}
		return full(b)
	}},
	{"gso tcp 60KiB partial", func(t testing.TB) ([]byte, VnetHdr) {
		return gsoTCP(t, 60*1024, false, false)
	}},
	{"gso tcp 60KiB partial ecn, odd payload", func(t testing.TB) ([]byte, VnetHdr) {
		return gsoTCP(t, 60*1024+1, false, true)
	}},
	{"gso tcp 60KiB partial tot_len 0", func(t testing.TB) ([]byte, VnetHdr) {
		return gsoTCP(t, 60*1024, true, false)
	}},
	{"gso udp_l4 partial", func(t testing.TB) ([]byte, VnetHdr) {
		b := buildUDP(t, ipHost, ipRemote, 4433, 443, 30000)
		return b, makePartial(t, b, VnetHdr{GSOType: GSOUDPL4, GSOSize: 1472, HdrLen: 42})
	}},
	{"gso tcp full checksum (no NEEDS_CSUM)", func(t testing.TB) ([]byte, VnetHdr) {
		b := buildTCP(t, ipHost, ipRemote, 40005, 443, tcpOpt{flags: TCPAck, payload: 20000})
		return b, VnetHdr{GSOType: GSOTCPv4, GSOSize: 1460}
	}},
}

type op struct {
	dst  bool
	ip   [4]byte
	port uint16
}

func (o op) String() string {
	w := "src"
	if o.dst {
		w = "dst"
	}
	return fmt.Sprintf("%s=%d.%d.%d.%d:%d", w, o.ip[0], o.ip[1], o.ip[2], o.ip[3], o.port)
}

type opSeq struct {
	name      string
	ops       []op
	unchanged bool // the frame must come back byte for byte
}

// opSeqs returns the rewrites applied to every case, relative to the parsed frame f.
func opSeqs(t testing.TB, frame []byte, f *Frame) []opSeq {
	s := []opSeq{
		{name: "src addr", ops: []op{{false, ipHost2, f.SrcPort}}},
		{name: "src port", ops: []op{{false, f.Src, 61000}}},
		{name: "src addr+port", ops: []op{{false, ipHost2, 61001}}},
		{name: "dst addr+port", ops: []op{{true, ipOther, 8443}}},
		{name: "dst port", ops: []op{{true, f.Dst, 8444}}},
		{name: "both ends", ops: []op{{false, ipHost2, 62000}, {true, ipOther, 9000}}},
		{name: "edge values", ops: []op{{false, [4]byte{255, 255, 255, 255}, 0xffff}, {true, [4]byte{}, 0}}},
		{name: "repeated", ops: []op{{false, ipHost2, 1}, {false, ipOther, 2}, {true, ipHost, 3}, {false, ipRemote, 4}}},
		{name: "no-op", ops: []op{{false, f.Src, f.SrcPort}, {true, f.Dst, f.DstPort}}, unchanged: true},
		{name: "round trip", ops: []op{{false, ipHost2, 61002}, {true, ipOther, 8445}, {false, f.Src, f.SrcPort}, {true, f.Dst, f.DstPort}}, unchanged: true},
	}
	if o, ok := zeroOp(frame, f); ok {
		s = append(s, opSeq{name: "result 0/0xffff", ops: []op{o}})
	}
	return s
}

// zeroOp finds a rewrite after which the checksum field lands on the ones-complement zero
// corner: a full checksum that computes to 0 (sent as 0xffff for UDP) or a partial sum of 0xffff.
func zeroOp(frame []byte, f *Frame) (op, bool) {
	if f.L4 < 0 {
		return op{}, false
	}
	field := binary.BigEndian.Uint16(frame[f.L4+l4CsumOffset(f.Proto):])
	switch {
	case f.PartialCsum && f.Proto != ProtoICMP:
		for x := 0; x < 0x10000; x++ {
			ip := [4]byte{10, 3, byte(x >> 8), byte(x)}
			if updatePartialAddr(field, f.Src, ip) == 0xffff {
				return op{false, ip, f.SrcPort}, true
			}
		}
	case f.PartialCsum:
	case f.Proto == ProtoUDP && field == 0:
	case f.Proto == ProtoTCP || f.Proto == ProtoUDP || (f.Proto == ProtoICMP && f.ICMPType == ICMPEchoRequest):
		for p := 0; p < 0x10000; p++ {
			if uint16(p) != f.SrcPort && updateFull(field, f.SrcPort, uint16(p)) == 0 {
				return op{false, f.Src, uint16(p)}, true
			}
		}
	case f.Proto == ProtoICMP && f.ICMPType == ICMPEchoReply:
		for p := 0; p < 0x10000; p++ {
			if uint16(p) != f.DstPort && updateFull(field, f.DstPort, uint16(p)) == 0 {
				return op{true, f.Dst, uint16(p)}, true
			}
		}
	}
	return op{}, false
}

type endpoints struct {
	src, dst         [4]byte
	srcPort, dstPort uint16
}

// model applies o to e the way SetSrc/SetDst are documented to.
func model(e endpoints, f *Frame, o op) endpoints {
	portsApply := f.L4 >= 0 && (f.Proto == ProtoTCP || f.Proto == ProtoUDP)
	echoID := f.L4 >= 0 && f.Proto == ProtoICMP &&
		((!o.dst && f.ICMPType == ICMPEchoRequest) || (o.dst && f.ICMPType == ICMPEchoReply))
	if o.dst {
		e.dst = o.ip
		if portsApply {
			e.dstPort = o.port
		}
	} else {
		e.src = o.ip
		if portsApply {
			e.srcPort = o.port
		}
	}
	if echoID {
		e.srcPort, e.dstPort = o.port, o.port
	}
	return e
}

func apply(f *Frame, o op) {
	if o.dst {
		f.SetDst(o.ip, o.port)
	} else {
		f.SetSrc(o.ip, o.port)
	}
}

func TestRewriteAgainstGopacket(t *testing.T) {
	for _, tc := range rwCases {
		t.Run(tc.name, func(t *testing.T) {
			orig, vnet := tc.build(t)
			var f0 Frame
			if r := f0.Parse(orig, vnet); r != OK {
				t.Fatalf("parse: %v", r)
			}
			for _, seq := range opSeqs(t, orig, &f0) {
				t.Run(seq.name, func(t *testing.T) {
					buf := bytes.Clone(orig)
					var f Frame
					if r := f.Parse(buf, vnet); r != OK {
						t.Fatalf("parse: %v", r)
					}
					e := endpoints{f.Src, f.Dst, f.SrcPort, f.DstPort}
					for _, o := range seq.ops {
						apply(&f, o)
						e = model(e, &f, o)
					}
					checkRewritten(t, orig, buf, vnet, &f, e, seq.unchanged)
				})
			}
		})
	}
}

// checkRewritten checks a rewritten frame: the Frame's copies and a fresh Parse agree with the
// model, and every checksum equals gopacket's recomputation (after the NIC's completion for a
// partial checksum).
func checkRewritten(t *testing.T, orig, buf []byte, vnet VnetHdr, f *Frame, e endpoints, unchanged bool) {
	t.Helper()
	if got := (endpoints{f.Src, f.Dst, f.SrcPort, f.DstPort}); got != e {
		t.Errorf("Frame fields after rewrite: %+v, want %+v", got, e)
	}
	var g Frame
	if r := g.Parse(buf, vnet); r != OK {
		t.Fatalf("re-parse after rewrite: %v", r)
	}
	if got := (endpoints{g.Src, g.Dst, g.SrcPort, g.DstPort}); got != e {
		t.Errorf("re-parsed fields: %+v, want %+v", got, e)
	}
	if g.PartialCsum != f.PartialCsum || g.End != f.End || g.L4 != f.L4 {
		t.Errorf("re-parse differs: partial %v/%v end %d/%d l4 %d/%d", g.PartialCsum, f.PartialCsum, g.End, f.End, g.L4, f.L4)
	}
	if unchanged && !bytes.Equal(buf, orig) {
		t.Errorf("frame changed although the rewrite was a no-op overall")
	}
	if !bytes.Equal(buf[f.End:], orig[f.End:]) {
		t.Errorf("Ethernet padding changed")
	}
	csumOff := -1
	if f.L4 >= 0 {
		csumOff = f.L4 + l4CsumOffset(f.Proto)
	}
	work := bytes.Clone(buf)
	if f.PartialCsum {
		field := binary.BigEndian.Uint16(buf[csumOff:])
		if f.Proto != ProtoICMP {
			want := Fold(PseudoHeaderSum(e.src, e.dst, f.Proto, f.End-f.L4))
			if field != want && !(field == 0xffff && want == 0) && !(field == 0 && want == 0xffff) {
				t.Errorf("partial sum field %#04x, pseudo-header sum of the new addresses %#04x", field, want)
			}
		}
		nicComplete(work, f.End, vnet, f.Proto)
	}
	want := recompute(t, work)
	cmpField(t, "IPv4 header", work, want, EthHdrLen+10)
	if f.Proto == ProtoUDP && binary.BigEndian.Uint16(orig[csumOff:]) == 0 {
		if c := binary.BigEndian.Uint16(buf[csumOff:]); c != 0 {
			t.Errorf("UDP checksum 0 (none) became %#04x", c)
		}
		copy(work[csumOff:], want[csumOff:csumOff+2]) // for the whole-frame comparison below
	} else if csumOff >= 0 {
		cmpField(t, "L4", work, want, csumOff)
	}
	if !bytes.Equal(work[:f.End], want[:f.End]) {
		t.Errorf("frame differs from gopacket's reserialization beyond the checksums")
	}
}

func TestFragments(t *testing.T) {
	// A UDP datagram of 2000 bytes of payload, fragmented at 1480 bytes of IP payload. The
	// first fragment carries the UDP header, whose checksum covers the whole datagram.
	whole := buildUDP(t, ipHost, ipRemote, 5000, 6000, 2000)
	udp := whole[EthHdrLen+20:]
	mk := func(off int, more bool, part []byte) []byte {
		eth, ip := ethIPv4(ipHost, ipRemote, 17)
		ip.Flags = 0
		if more {
			ip.Flags = layers.IPv4MoreFragments
		}
		ip.FragOffset = uint16(off / 8)
		return serialize(t, eth, ip, gopacket.Payload(part))
	}
	first := mk(0, true, udp[:1480])
	second := mk(1480, false, udp[1480:])

	for _, seq := range []opSeq{
		{name: "src addr+port", ops: []op{{false, ipHost2, 61000}}},
		{name: "both ends", ops: []op{{false, ipHost2, 61000}, {true, ipOther, 53}}},
		{name: "no-op", ops: []op{{false, ipHost, 5000}, {true, ipRemote, 6000}}, unchanged: true},
	} {
		t.Run(seq.name, func(t *testing.T) {
			b1, b2 := bytes.Clone(first), bytes.Clone(second)
			var f1, f2 Frame
			if r := f1.Parse(b1, VnetHdr{}); r != OK || f1.L4 != EthHdrLen+20 || !f1.MoreFrags || f1.FragOff != 0 {
				t.Fatalf("first fragment: %v %+v", r, f1)
			}
			if r := f2.Parse(b2, VnetHdr{}); r != OK || f2.L4 != -1 || f2.FragOff != 185 || f2.SrcPort != 0 {
				t.Fatalf("second fragment: %v %+v", r, f2)
			}
			for _, o := range seq.ops {
				apply(&f1, o)
				apply(&f2, o)
			}
			if seq.unchanged && (!bytes.Equal(b1, first) || !bytes.Equal(b2, second)) {
				t.Fatalf("no-op changed a fragment")
			}
			// IPv4 header checksums of both fragments.
			for i, b := range [][]byte{b1, b2} {
				want := recomputeIPv4(t, b[EthHdrLen:], false)
				cmpField(t, fmt.Sprintf("fragment %d IPv4 header", i+1), b[EthHdrLen:], want, 10)
			}
			// The non-first fragment's payload is untouched.
			if !bytes.Equal(b2[EthHdrLen+20:], second[EthHdrLen+20:]) {
				t.Errorf("non-first fragment payload changed")
			}
			if b2[EthHdrLen+12] != b1[EthHdrLen+12] || !bytes.Equal(b2[EthHdrLen+12:EthHdrLen+20], b1[EthHdrLen+12:EthHdrLen+20]) {
				t.Errorf("fragments disagree on addresses")
			}
			// Reassemble and let gopacket compute the UDP checksum over the whole datagram.
			re := append(bytes.Clone(b1[EthHdrLen:EthHdrLen+20]), b1[EthHdrLen+20:]...)
			re = append(re, b2[EthHdrLen+20:]...)
			binary.BigEndian.PutUint16(re[2:], uint16(len(re)))
			binary.BigEndian.PutUint16(re[6:], 0)
			want := recomputeIPv4(t, re, true)
			cmpField(t, "reassembled UDP", re, want, 20+6)
		})
	}
}

func TestICMPErrorQuote(t *testing.T) {
	udpOut := buildUDP(t, ipHost2, ipRemote, 61000, 53, 30)[EthHdrLen:] // as it left, after SNAT
	tcpOut := buildTCP(t, ipHost2, ipRemote, 61001, 443, tcpOpt{options: true, flags: TCPSyn})
	tcpOut = tcpOut[EthHdrLen:]
	pingOut := buildICMPEcho(t, ipHost2, ipRemote, ICMPEchoRequest, 0x7777, 16)[EthHdrLen:]
	udpNoCsum := bytes.Clone(udpOut)
	binary.BigEndian.PutUint16(udpNoCsum[26:], 0)
	udpIn := buildUDP(t, ipRemote, ipHost, 53, 5353, 30)[EthHdrLen:] // as the host got it, after reverse NAT

	type tc struct {
		name      string
		outerSrc  [4]byte
		outerDst  [4]byte
		typ, code uint8
		quote     []byte
		fullQuote bool // the quote holds the whole packet, so its L4 checksum can be recomputed
		outer     op   // outer rewrite
		inner     op   // inner rewrite (dst: SetInnerDst)
		innerPort bool // the inner port/identifier is expected to change
		unchanged bool
	}
	cases := []tc{
		{"port unreachable quoting udp", ipRemote, ipHost2, 3, 3, udpOut, true,
			op{true, ipHost, 0}, op{false, ipHost, 5353}, true, false},
		{"frag needed quoting tcp syn", ipOther, ipHost2, 3, 4, tcpOut, true,
			op{true, ipHost, 0}, op{false, ipHost, 40000}, true, false},
		{"time exceeded quoting 8 bytes of tcp", ipOther, ipHost2, 11, 0, tcpOut[:28], false,
			op{true, ipHost, 0}, op{false, ipHost, 40001}, true, false},
		{"time exceeded quoting 12 bytes of tcp", ipOther, ipHost2, 11, 0, tcpOut[:32], false,
			op{true, ipHost, 0}, op{false, ipHost, 40001}, true, false},
		{"time exceeded quoting ping", ipOther, ipHost2, 11, 0, pingOut, true,
			op{true, ipHost, 0}, op{false, ipHost, 0x1111}, true, false},
		{"host unreachable quoting udp without checksum", ipRemote, ipHost2, 3, 1, udpNoCsum, true,
			op{true, ipHost, 0}, op{false, ipHost, 5353}, true, false},
		{"host's port unreachable about a reverse-NATed packet", ipHost, ipRemote, 3, 3, udpIn, true,
			op{false, ipHost2, 0}, op{true, ipHost2, 61000}, true, false},
		{"inner address only", ipRemote, ipHost2, 3, 3, udpOut, true,
			op{true, ipHost, 0}, op{false, ipHost, 61000}, false, false},
		{"no-op", ipRemote, ipHost2, 3, 3, udpOut, true,
			op{true, ipHost2, 0}, op{false, ipHost2, 61000}, false, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			orig := buildICMPError(t, c.outerSrc, c.outerDst, c.typ, c.code, c.quote)
			buf := bytes.Clone(orig)
			var f Frame
			if r := f.Parse(buf, VnetHdr{}); r != OK {
				t.Fatalf("parse: %v", r)
			}
			q := EthHdrLen + 28
			if f.InnerL3 != q || f.InnerL4 != q+20 {
				t.Fatalf("InnerL3 %d InnerL4 %d", f.InnerL3, f.InnerL4)
			}
			qi := endpoints{[4]byte(c.quote[12:16]), [4]byte(c.quote[16:20]), binary.BigEndian.Uint16(c.quote[20:]), binary.BigEndian.Uint16(c.quote[22:])}
			if c.quote[9] == ProtoICMP {
				qi.srcPort = binary.BigEndian.Uint16(c.quote[24:])
				qi.dstPort = qi.srcPort
			}
			if got := (endpoints{f.InnerSrc, f.InnerDst, f.InnerSrcPort, f.InnerDstPort}); got != qi {
				t.Fatalf("inner endpoints %+v, want %+v", got, qi)
			}
			apply(&f, c.outer)
			want := qi
			if c.inner.dst {
				f.SetInnerDst(c.inner.ip, c.inner.port)
				want.dst = c.inner.ip
				want.dstPort = c.inner.port
			} else {
				f.SetInnerSrc(c.inner.ip, c.inner.port)
				want.src = c.inner.ip
				want.srcPort = c.inner.port
			}
			if c.quote[9] == ProtoICMP {
				want.dstPort = want.srcPort
			}
			if !c.innerPort {
				want.srcPort, want.dstPort = qi.srcPort, qi.dstPort
			}
			var g Frame
			if r := g.Parse(buf, VnetHdr{}); r != OK {
				t.Fatalf("re-parse: %v", r)
			}
			for _, x := range []*Frame{&f, &g} {
				if got := (endpoints{x.InnerSrc, x.InnerDst, x.InnerSrcPort, x.InnerDstPort}); got != want {
					t.Errorf("inner endpoints %+v, want %+v", got, want)
				}
			}
			if c.unchanged && !bytes.Equal(buf, orig) {
				t.Errorf("no-op changed the frame")
			}
			// Outer IPv4 and ICMP checksums (ICMP over the whole quote).
			re := recompute(t, buf)
			cmpField(t, "outer IPv4 header", buf, re, EthHdrLen+10)
			cmpField(t, "outer ICMP", buf, re, EthHdrLen+20+2)
			// Quoted IPv4 header, and the quoted L4 checksum when the whole packet is quoted.
			quote := buf[q:f.End]
			reQ := recomputeIPv4(t, quote, c.fullQuote)
			cmpField(t, "quoted IPv4 header", quote, reQ, 10)
			if c.fullQuote {
				off := 20 + l4CsumOffset(quote[9])
				if quote[9] == ProtoUDP && binary.BigEndian.Uint16(c.quote[26:]) == 0 {
					if binary.BigEndian.Uint16(quote[26:]) != 0 {
						t.Errorf("quoted UDP checksum 0 changed")
					}
				} else {
					cmpField(t, "quoted L4", quote, reQ, off)
				}
			}
			if !bytes.Equal(buf[:EthHdrLen+28], re[:EthHdrLen+28]) {
				t.Errorf("outer headers differ from gopacket's")
			}
		})
	}
}

func TestICMPErrorPartial(t *testing.T) {
	// An ICMP error marked CHECKSUM_PARTIAL: the outer ICMP field is a sum the device completes,
	// so the inner rewrite leaves it alone and the completed checksum must be right.
	udpOut := buildUDP(t, ipHost2, ipRemote, 61000, 53, 30)[EthHdrLen:]
	buf := buildICMPError(t, ipRemote, ipHost2, 3, 3, udpOut)
	vnet := makePartial(t, buf, VnetHdr{})
	var f Frame
	if r := f.Parse(buf, vnet); r != OK || !f.PartialCsum {
		t.Fatalf("parse: %v partial %v", r, f.PartialCsum)
	}
	f.SetDst(ipHost, 0)
	f.SetInnerSrc(ipHost, 5353)
	if c := binary.BigEndian.Uint16(buf[EthHdrLen+22:]); c != 0 {
		t.Errorf("partial ICMP field touched: %#04x", c)
	}
	nicComplete(buf, f.End, vnet, ProtoICMP)
	re := recompute(t, buf)
	cmpField(t, "outer ICMP", buf, re, EthHdrLen+22)
}
