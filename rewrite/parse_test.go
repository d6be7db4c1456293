package rewrite

import (
	"bytes"
	"encoding/binary"
	"testing"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
)

func TestVnetHdrCodec(t *testing.T) {
	h := VnetHdr{Flags: VnetNeedsCsum, GSOType: GSOTCPv4 | GSOECN, HdrLen: 66, GSOSize: 1448, CsumStart: 34, CsumOffset: 16}
	b := make([]byte, VnetHdrLen)
	h.Encode(b)
	// Host-endian; the test machine is little-endian, as the brief states.
	want := []byte{1, 0x81, 66, 0, 0xa8, 0x05, 34, 0, 16, 0}
	if binary.NativeEndian.Uint16([]byte{1, 0}) == 1 && !bytes.Equal(b, want) {
		t.Errorf("Encode: % x, want % x", b, want)
	}
	var g VnetHdr
	if !g.Decode(b) || g != h {
		t.Errorf("Decode: %+v, want %+v", g, h)
	}
	g = VnetHdr{Flags: 9}
	if g.Decode(b[:VnetHdrLen-1]) || g.Flags != 9 {
		t.Errorf("Decode of a short buffer succeeded or changed the header")
	}
	if !h.IsGSO() || (VnetHdr{}).IsGSO() {
		t.Errorf("IsGSO")
	}
}

func TestReasonString(t *testing.T) {
	seen := map[string]Reason{}
	for r := Reason(0); r < NumReasons; r++ {
		s := r.String()
		if s == "" || s == "unknown" {
			t.Errorf("reason %d has no name", r)
		}
		if o, dup := seen[s]; dup {
			t.Errorf("reasons %d and %d share the name %q", o, r, s)
		}
		seen[s] = r
	}
	if NumReasons.String() != "unknown" || Reason(255).String() != "unknown" {
		t.Errorf("out-of-range reasons should be unknown")
	}
	if OK != 0 {
		t.Errorf("OK must be the zero value")
	}
}

func TestParseFields(t *testing.T) {
	type want struct {
		l4, end          int
		proto            uint8
		src, dst         [4]byte
		sport, dport     uint16
		tcpFlags         uint8
		icmpType         uint8
		fragOff          uint16
		mf, df           bool
		partial, encap   bool
		innerL3, innerL4 int
	}
	tcp := buildTCP(t, ipHost, ipRemote, 40000, 443, tcpOpt{options: true, flags: TCPSyn})
	tcpIPOpt := buildTCP(t, ipHost, ipRemote, 40000, 443, tcpOpt{ipOpts: true, flags: TCPAck | TCPFin, payload: 10})
	udpPad := buildUDP(t, ipHost, ipRemote, 5353, 53, 2)
	icmpReq := buildICMPEcho(t, ipHost, ipRemote, ICMPEchoRequest, 0xbeef, 8)
	quote := buildUDP(t, ipHost2, ipRemote, 61000, 53, 20)[EthHdrLen:]
	icmpErr := buildICMPError(t, ipRemote, ipHost2, ICMPDestUnreach, 3, quote)
	partial := buildTCP(t, ipHost, ipRemote, 40000, 443, tcpOpt{flags: TCPAck, payload: 100})
	pv := makePartial(t, partial, VnetHdr{})
	gsoZero, gv := gsoTCP(t, 3000, true, false)
	frag := buildUDP(t, ipHost, ipRemote, 1, 2, 100)
	binary.BigEndian.PutUint16(frag[EthHdrLen+6:], 0x2000|100) // MF, offset 800 bytes
	vx, vxv := vxlanTSO(t)

	cases := []struct {
		name  string
		frame []byte
		vnet  VnetHdr
		want  want
	}{
		{"tcp syn", tcp, VnetHdr{}, want{l4: 34, end: 14 + 60, proto: 6, src: ipHost, dst: ipRemote, sport: 40000, dport: 443, tcpFlags: TCPSyn, df: true, innerL3: -1, innerL4: -1}},
		{"tcp ip options", tcpIPOpt, VnetHdr{}, want{l4: 38, end: 14 + 24 + 20 + 10, proto: 6, src: ipHost, dst: ipRemote, sport: 40000, dport: 443, tcpFlags: TCPAck | TCPFin, df: true, innerL3: -1, innerL4: -1}},
		{"udp padded", udpPad, VnetHdr{}, want{l4: 34, end: 14 + 30, proto: 17, src: ipHost, dst: ipRemote, sport: 5353, dport: 53, df: true, innerL3: -1, innerL4: -1}},
		{"icmp echo", icmpReq, VnetHdr{}, want{l4: 34, end: 14 + 36, proto: 1, src: ipHost, dst: ipRemote, sport: 0xbeef, dport: 0xbeef, icmpType: 8, df: true, innerL3: -1, innerL4: -1}},
		{"icmp error", icmpErr, VnetHdr{}, want{l4: 34, end: 14 + 28 + len(quote), proto: 1, src: ipRemote, dst: ipHost2, icmpType: 3, innerL3: 42, innerL4: 62}},
		{"tcp partial", partial, pv, want{l4: 34, end: 14 + 140, proto: 6, src: ipHost, dst: ipRemote, sport: 40000, dport: 443, tcpFlags: TCPAck, df: true, partial: true, innerL3: -1, innerL4: -1}},
		{"gso tot_len 0", gsoZero, gv, want{l4: 34, end: len(gsoZero), proto: 6, src: ipHost, dst: ipRemote, sport: 40000, dport: 443, tcpFlags: TCPAck | TCPPsh, df: true, partial: true, innerL3: -1, innerL4: -1}},
		{"non-first fragment", frag, VnetHdr{}, want{l4: -1, end: 14 + 128, proto: 17, src: ipHost, dst: ipRemote, fragOff: 100, mf: true, innerL3: -1, innerL4: -1}},
		{"vxlan tso (encap)", vx, vxv, want{l4: 34, end: len(vx), proto: 17, src: ipHost, dst: ipRemote, sport: 50000, dport: 4789, df: true, encap: true, innerL3: -1, innerL4: -1}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var f Frame
			if r := f.Parse(c.frame, c.vnet); r != OK {
				t.Fatalf("Parse: %v", r)
			}
			got := want{f.L4, f.End, f.Proto, f.Src, f.Dst, f.SrcPort, f.DstPort, f.TCPFlags, f.ICMPType, f.FragOff, f.MoreFrags, f.DontFrag, f.PartialCsum, f.Encap, f.InnerL3, f.InnerL4}
			if got != c.want {
				t.Errorf("got  %+v\nwant %+v", got, c.want)
			}
			if f.L3 != EthHdrLen || f.IPID != 0x1234 || f.Vnet != c.vnet || &f.Buf[0] != &c.frame[0] {
				t.Errorf("L3 %d IPID %#x vnet %+v", f.L3, f.IPID, f.Vnet)
			}
			if f.SrcMAC() != [6]byte(macHost) || f.DstMAC() != [6]byte(macGW) {
				t.Errorf("MACs %x %x", f.SrcMAC(), f.DstMAC())
			}
		})
	}
}

// vxlanTSO builds what a VXLAN tunnel's TSO frame reads back as: GSO_TCPV4 and NEEDS_CSUM with
// csum_start at the inner TCP header, over an outer UDP datagram to port 4789.
func vxlanTSO(t testing.TB) ([]byte, VnetHdr) {
	inner := buildTCP(t, [4]byte{172, 16, 0, 1}, [4]byte{172, 16, 0, 2}, 1234, 80, tcpOpt{flags: TCPAck, payload: 4000})
	vx := append([]byte{0x08, 0, 0, 0, 0, 0, 0x2a, 0}, inner...)
	eth, ip := ethIPv4(ipHost, ipRemote, layers.IPProtocolUDP)
	udp := &layers.UDP{SrcPort: 50000, DstPort: 4789}
	b := serialize(t, eth, ip, udp, gopacket.Payload(vx))
	start := EthHdrLen + 20 + 8 + 8 + EthHdrLen + 20
	return b, VnetHdr{Flags: VnetNeedsCsum, GSOType: GSOTCPv4, GSOSize: 1400, CsumStart: uint16(start), CsumOffset: 16}
}

// TestParseTruncated cuts good frames at every length: each cut must fail with the reason of
// the first header it breaks, and never panic.
func TestParseTruncated(t *testing.T) {
	frames := map[string][]byte{
		"tcp options":    buildTCP(t, ipHost, ipRemote, 1, 2, tcpOpt{options: true, flags: TCPSyn, payload: 3}),
		"tcp ip options": buildTCP(t, ipHost, ipRemote, 1, 2, tcpOpt{ipOpts: true, payload: 9}),
		"udp":            buildUDP(t, ipHost, ipRemote, 1, 2, 17),
		"udp padded":     buildUDP(t, ipHost, ipRemote, 1, 2, 1),
		"icmp":           buildICMPEcho(t, ipHost, ipRemote, 8, 3, 20),
		"icmp error":     buildICMPError(t, ipRemote, ipHost, 3, 3, buildUDP(t, ipHost, ipRemote, 1, 2, 17)[EthHdrLen:]),
	}
	for name, frame := range frames {
		t.Run(name, func(t *testing.T) {
			var f Frame
			if r := f.Parse(frame, VnetHdr{}); r != OK {
				t.Fatalf("whole frame: %v", r)
			}
			ihl, end := f.L4-f.L3, f.End
			for n := 0; n <= len(frame); n++ {
				want := OK
				switch {
				case n < EthHdrLen+20 || n < EthHdrLen+ihl:
					want = ShortFrame
				case n < end:
					want = BadIPLength
				}
				// A fresh copy of exactly n bytes, so that reading past it would be caught.
				b := bytes.Clone(frame[:n])
				if r := f.Parse(b, VnetHdr{}); r != want {
					t.Errorf("cut at %d: %v, want %v", n, r, want)
				}
			}
		})
	}
	// A GSO frame with total length 0 takes its length from the buffer, so cuts reach the L4
	// checks.
	frame, vnet := gsoTCP(t, 100, true, false)
	var f Frame
	for n := 0; n <= len(frame); n++ {
		want := OK
		switch {
		case n < EthHdrLen+20:
			want = ShortFrame
		case n < EthHdrLen+20+20:
			want = ShortL4
		case n < EthHdrLen+20+40:
			want = BadTCPOffset
		}
		if r := f.Parse(bytes.Clone(frame[:n]), vnet); r != want {
			t.Errorf("gso tot_len 0 cut at %d: %v, want %v", n, r, want)
		}
	}
}

func TestParseErrors(t *testing.T) {
	set16 := func(off int, v uint16) func([]byte) []byte {
		return func(b []byte) []byte { binary.BigEndian.PutUint16(b[off:], v); return b }
	}
	setByte := func(off int, v byte) func([]byte) []byte {
		return func(b []byte) []byte { b[off] = v; return b }
	}
	ip := EthHdrLen
	tcpSyn := func(t testing.TB) []byte { return buildTCP(t, ipHost, ipRemote, 1, 2, tcpOpt{flags: TCPSyn}) }
	tcpData := func(t testing.TB) []byte {
		return buildTCP(t, ipHost, ipRemote, 1, 2, tcpOpt{flags: TCPAck, payload: 200})
	}
	udp := func(t testing.TB) []byte { return buildUDP(t, ipHost, ipRemote, 1, 2, 100) }
	icmp := func(t testing.TB) []byte { return buildICMPEcho(t, ipHost, ipRemote, 8, 1, 100) }
	vlan := func(tpid uint16) func([]byte) []byte {
		return func(b []byte) []byte {
			// Insert a tag after the MACs: TPID, TCI, then the original ethertype.
			out := append(bytes.Clone(b[:12]), byte(tpid>>8), byte(tpid), 0, 5)
			return append(out, b[12:]...)
		}
	}
	cases := []struct {
		name   string
		build  func(testing.TB) []byte
		mutate func([]byte) []byte
		vnet   VnetHdr
		want   Reason
	}{
		{"empty", tcpSyn, func(b []byte) []byte { return nil }, VnetHdr{}, ShortFrame},
		{"802.1Q tagged", tcpSyn, vlan(0x8100), VnetHdr{}, VLANTagged},
		{"802.1ad tagged", tcpSyn, vlan(0x88a8), VnetHdr{}, VLANTagged},
		{"ipv6 ethertype", tcpSyn, set16(12, 0x86dd), VnetHdr{}, NotIPv4},
		{"arp ethertype", tcpSyn, set16(12, 0x0806), VnetHdr{}, NotIPv4},
		{"version 6", tcpSyn, setByte(ip, 0x65), VnetHdr{}, BadIPVersion},
		{"version 0", tcpSyn, setByte(ip, 0x05), VnetHdr{}, BadIPVersion},
		{"ihl 4", tcpSyn, setByte(ip, 0x44), VnetHdr{}, BadIPHeader},
		{"ihl 0", tcpSyn, setByte(ip, 0x40), VnetHdr{}, BadIPHeader},
		{"ihl 15 beyond tot_len", tcpData, func(b []byte) []byte { b[ip] = 0x4f; binary.BigEndian.PutUint16(b[ip+2:], 40); return b }, VnetHdr{}, BadIPLength},
		{"ihl 15 beyond the frame", tcpSyn, func(b []byte) []byte { b[ip] = 0x4f; return b[:EthHdrLen+40] }, VnetHdr{}, ShortFrame},
		{"tot_len beyond the frame", tcpData, set16(ip+2, 20+20+201), VnetHdr{}, BadIPLength},
		{"tot_len below ihl", tcpData, set16(ip+2, 19), VnetHdr{}, BadIPLength},
		{"tot_len 0 without gso", tcpData, set16(ip+2, 0), VnetHdr{}, BadIPLength},
		{"tcp data offset 4", tcpData, setByte(ip+20+12, 0x40), VnetHdr{}, BadTCPOffset},
		{"tcp data offset 0", tcpData, setByte(ip+20+12, 0x00), VnetHdr{}, BadTCPOffset},
		{"tcp data offset beyond the frame", tcpSyn, setByte(ip+20+12, 0xf0), VnetHdr{}, BadTCPOffset},
		{"tcp data offset beyond tot_len", tcpData, func(b []byte) []byte { b[ip+20+12] = 0xf0; binary.BigEndian.PutUint16(b[ip+2:], 20+59); return b }, VnetHdr{}, BadTCPOffset},
		{"tcp header cut by tot_len", tcpData, set16(ip+2, 20+19), VnetHdr{}, ShortL4},
		{"udp header cut by tot_len", udp, set16(ip+2, 20+7), VnetHdr{}, ShortL4},
		{"icmp header cut by tot_len", icmp, set16(ip+2, 20+7), VnetHdr{}, ShortL4},
		{"needs_csum wrong offset", tcpData, nil, VnetHdr{Flags: VnetNeedsCsum, CsumStart: 34, CsumOffset: 6}, BadVnetHdr},
		{"needs_csum beyond datagram", udp, nil, VnetHdr{Flags: VnetNeedsCsum, CsumStart: 14 + 128 - 1, CsumOffset: 0}, BadVnetHdr},
		{"needs_csum far beyond", udp, nil, VnetHdr{Flags: VnetNeedsCsum, CsumStart: 0xffff, CsumOffset: 0xffff}, BadVnetHdr},
		{"gso tcpv4 on udp", udp, nil, VnetHdr{GSOType: GSOTCPv4, GSOSize: 1000}, BadVnetHdr},
		{"gso udp_l4 on tcp", tcpData, nil, VnetHdr{GSOType: GSOUDPL4, GSOSize: 1000}, BadVnetHdr},
		{"gso ufo on tcp", tcpData, nil, VnetHdr{GSOType: GSOUDP, GSOSize: 1000}, BadVnetHdr},
		{"gso tcpv6 not encapsulated", tcpData, nil, VnetHdr{Flags: VnetNeedsCsum, GSOType: GSOTCPv6, GSOSize: 1000, CsumStart: 34, CsumOffset: 16}, BadVnetHdr},
		{"gso type 2", tcpData, nil, VnetHdr{GSOType: 2, GSOSize: 1000}, BadVnetHdr},
		{"gso ecn alone", tcpData, nil, VnetHdr{GSOType: GSOECN, GSOSize: 1000}, BadVnetHdr},
		{"gso size 0", tcpData, nil, VnetHdr{Flags: VnetNeedsCsum, GSOType: GSOTCPv4, CsumStart: 34, CsumOffset: 16}, BadVnetHdr},
		{"gso on a fragment", udp, set16(ip+6, 0x2000), VnetHdr{GSOType: GSOUDPL4, GSOSize: 1000}, BadVnetHdr},
		// Not errors:
		{"gso tcpv4 ecn", tcpData, nil, VnetHdr{Flags: VnetNeedsCsum, GSOType: GSOTCPv4 | GSOECN, GSOSize: 100, CsumStart: 34, CsumOffset: 16}, OK},
		{"gso ufo on udp", udp, nil, VnetHdr{Flags: VnetNeedsCsum, GSOType: GSOUDP, GSOSize: 50, CsumStart: 34, CsumOffset: 6}, OK},
		{"needs_csum elsewhere (encap)", udp, nil, VnetHdr{Flags: VnetNeedsCsum, CsumStart: 60, CsumOffset: 16}, OK},
		{"gso tcpv6 encapsulated", udp, nil, VnetHdr{Flags: VnetNeedsCsum, GSOType: GSOTCPv6, GSOSize: 1000, CsumStart: 60, CsumOffset: 16}, OK},
		{"data_valid", tcpData, nil, VnetHdr{Flags: VnetDataValid}, OK},
		{"evil bit", tcpData, set16(ip+6, 0x8000), VnetHdr{}, OK},
		{"tot_len 0 with gso", tcpData, set16(ip+2, 0), VnetHdr{Flags: VnetNeedsCsum, GSOType: GSOTCPv4, GSOSize: 100, CsumStart: 34, CsumOffset: 16}, OK},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			b := c.build(t)
			if c.mutate != nil {
				b = c.mutate(b)
			}
			var f Frame
			if r := f.Parse(b, c.vnet); r != c.want {
				t.Errorf("Parse: %v, want %v", r, c.want)
			}
			if c.want != OK {
				// The setters must be harmless on a rejected frame.
				before := bytes.Clone(b)
				f.SetSrc(ipOther, 9)
				f.SetDst(ipOther, 9)
				f.SetInnerSrc(ipOther, 9)
				f.ClampMSS(500)
				if !bytes.Equal(before, b) {
					t.Errorf("setters changed a rejected frame")
				}
			}
		})
	}
}

func TestParseICMPQuote(t *testing.T) {
	udpQ := buildUDP(t, ipHost2, ipRemote, 61000, 53, 20)[EthHdrLen:]
	fragQ := bytes.Clone(udpQ)
	binary.BigEndian.PutUint16(fragQ[6:], 10) // a non-first fragment
	pingQ := buildICMPEcho(t, ipHost2, ipRemote, ICMPEchoRequest, 0x5151, 0)[EthHdrLen:]
	v6 := bytes.Clone(udpQ)
	v6[0] = 0x65
	badIHL := bytes.Clone(udpQ)
	badIHL[0] = 0x43
	cases := []struct {
		name             string
		typ              uint8
		quote            []byte
		innerL3, innerL4 int
		sport, dport     uint16
	}{
		{"udp", ICMPDestUnreach, udpQ, 42, 62, 61000, 53},
		{"udp, 8 bytes", ICMPTimeExceeded, udpQ[:28], 42, 62, 61000, 53},
		{"udp, 2 bytes", ICMPParamProblem, udpQ[:22], 42, 62, 0, 0},
		{"header only", ICMPSourceQuench, udpQ[:20], 42, 62, 0, 0},
		{"non-first fragment", ICMPRedirect, fragQ, 42, -1, 0, 0},
		{"ping", ICMPTimeExceeded, pingQ, 42, 62, 0x5151, 0x5151},
		{"short", ICMPDestUnreach, udpQ[:19], -1, -1, 0, 0},
		{"ipv6 inside", ICMPDestUnreach, v6, -1, -1, 0, 0},
		{"bad ihl", ICMPDestUnreach, badIHL, -1, -1, 0, 0},
		{"not an error type", 13, udpQ, -1, -1, 0, 0},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			b := buildICMPError(t, ipRemote, ipHost2, c.typ, 0, c.quote)
			var f Frame
			if r := f.Parse(b, VnetHdr{}); r != OK {
				t.Fatalf("Parse: %v", r)
			}
			if f.InnerL3 != c.innerL3 || f.InnerL4 != c.innerL4 || f.InnerSrcPort != c.sport || f.InnerDstPort != c.dport {
				t.Errorf("inner %d %d ports %d %d, want %d %d %d %d", f.InnerL3, f.InnerL4, f.InnerSrcPort, f.InnerDstPort, c.innerL3, c.innerL4, c.sport, c.dport)
			}
			if c.innerL3 >= 0 && (f.InnerSrc != ipHost2 || f.InnerDst != ipRemote) {
				t.Errorf("inner addresses %v %v", f.InnerSrc, f.InnerDst)
			}
			// A rewrite of a short or missing quote must keep every checksum right.
			f.SetInnerSrc(ipHost, 4000)
			re := recompute(t, b)
			cmpField(t, "outer ICMP", b, re, EthHdrLen+22)
		})
	}
}
