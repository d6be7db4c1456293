package rewrite

import (
	"bytes"
	"encoding/binary"
	"testing"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
)

func buildTCPWithOptions(t testing.TB, flags uint8, opts []layers.TCPOption, payload int) []byte {
	eth, ip := ethIPv4(ipHost, ipRemote, layers.IPProtocolTCP)
	tcp := &layers.TCP{SrcPort: 40000, DstPort: 443, Seq: 1, Window: 1000, Options: opts}
	tcp.SYN = flags&TCPSyn != 0
	tcp.ACK = flags&TCPAck != 0
	return serialize(t, eth, ip, tcp, gopacket.Payload(payloadBytes(payload, 1)))
}

func TestClampMSS(t *testing.T) {
	mss := func(v uint16) layers.TCPOption {
		return layers.TCPOption{OptionType: layers.TCPOptionKindMSS, OptionLength: 4, OptionData: []byte{byte(v >> 8), byte(v)}}
	}
	nop := layers.TCPOption{OptionType: layers.TCPOptionKindNop, OptionLength: 1}
	sack := layers.TCPOption{OptionType: layers.TCPOptionKindSACKPermitted, OptionLength: 2}
	ws := layers.TCPOption{OptionType: layers.TCPOptionKindWindowScale, OptionLength: 3, OptionData: []byte{7}}
	cases := []struct {
		name    string
		flags   uint8
		opts    []layers.TCPOption
		partial bool
		clamp   uint16
		changed bool
		wantMSS uint16 // 0: no MSS option to check
	}{
		{"syn, mss at even offset", TCPSyn, []layers.TCPOption{mss(1460), sack}, false, 1400, true, 1400},
		{"syn, mss at odd offset", TCPSyn, []layers.TCPOption{nop, mss(1460), ws}, false, 1357, true, 1357},
		{"syn-ack, mss after sack", TCPSyn | TCPAck, []layers.TCPOption{sack, mss(65495)}, false, 1452, true, 1452},
		{"syn partial, odd offset", TCPSyn, []layers.TCPOption{ws, mss(1460)}, true, 1400, true, 1400},
		{"syn partial, even offset", TCPSyn, []layers.TCPOption{mss(8960), sack}, true, 1400, true, 1400},
		{"mss already lower", TCPSyn, []layers.TCPOption{mss(1200)}, false, 1400, false, 1200},
		{"mss equal", TCPSyn, []layers.TCPOption{mss(1400)}, false, 1400, false, 1400},
		{"not a syn", TCPAck, []layers.TCPOption{mss(1460)}, false, 1400, false, 1460},
		{"no mss option", TCPSyn, []layers.TCPOption{sack, ws}, false, 1400, false, 0},
		{"no options", TCPSyn, nil, false, 1400, false, 0},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			orig := buildTCPWithOptions(t, c.flags, c.opts, 0)
			vnet := VnetHdr{}
			if c.partial {
				vnet = makePartial(t, orig, vnet)
			}
			buf := bytes.Clone(orig)
			var f Frame
			if r := f.Parse(buf, vnet); r != OK {
				t.Fatalf("parse: %v", r)
			}
			if got := f.ClampMSS(c.clamp); got != c.changed {
				t.Errorf("ClampMSS = %v, want %v", got, c.changed)
			}
			if !c.changed && !bytes.Equal(buf, orig) {
				t.Errorf("frame changed")
			}
			if c.wantMSS != 0 {
				if got := findMSS(buf[f.L4:f.End]); got != c.wantMSS {
					t.Errorf("MSS %d, want %d", got, c.wantMSS)
				}
			}
			if c.partial && !bytes.Equal(buf[f.L4+16:f.L4+18], orig[f.L4+16:f.L4+18]) {
				t.Errorf("partial sum touched")
			}
			work := bytes.Clone(buf)
			if c.partial {
				nicComplete(work, f.End, vnet, ProtoTCP)
			}
			re := recompute(t, work)
			cmpField(t, "TCP", work, re, f.L4+16)
		})
	}
	// A malformed option list is left alone.
	for _, opts := range [][]byte{
		{2, 0, 5, 0xb4},       // length 0
		{3, 3, 7, 2, 9, 1, 1}, // the MSS option runs past the header (padded: 3 3 7 2 9 ...)
		{0, 2, 4, 5, 0xb4, 1, 1, 1},
	} {
		b := buildTCPWithOptions(t, TCPSyn, nil, 0)
		hdr := append(bytes.Clone(b[:EthHdrLen+40]), append(opts, make([]byte, (4-len(opts)%4)%4)...)...)
		hdr[EthHdrLen+20+12] = byte((20+len(hdr)-EthHdrLen-40)/4) << 4
		binary.BigEndian.PutUint16(hdr[EthHdrLen+2:], uint16(len(hdr)-EthHdrLen))
		var f Frame
		if r := f.Parse(hdr, VnetHdr{}); r != OK {
			t.Fatalf("malformed options frame: %v", r)
		}
		before := bytes.Clone(hdr)
		if f.ClampMSS(100) || !bytes.Equal(before, hdr) {
			t.Errorf("ClampMSS changed a frame with options % x", opts)
		}
	}
}

func findMSS(tcp []byte) uint16 {
	opts := tcp[20 : int(tcp[12]>>4)*4]
	for i := 0; i < len(opts); {
		switch opts[i] {
		case 0:
			return 0
		case 1:
			i++
			continue
		}
		if opts[i] == 2 {
			return binary.BigEndian.Uint16(opts[i+2:])
		}
		i += int(opts[i+1])
	}
	return 0
}

func TestFitGSO(t *testing.T) {
	tcp, tv := gsoTCP(t, 10000, false, false) // TCP header with options: 40 bytes
	udp := buildUDP(t, ipHost, ipRemote, 1, 2, 10000)
	uv := makePartial(t, udp, VnetHdr{GSOType: GSOUDPL4, GSOSize: 1472})
	ufo := makePartial(t, bytes.Clone(udp), VnetHdr{GSOType: GSOUDP, GSOSize: 1480})
	plain := buildTCP(t, ipHost, ipRemote, 1, 2, tcpOpt{payload: 1000})
	vx, vxv := vxlanTSO(t)
	cases := []struct {
		name    string
		frame   []byte
		vnet    VnetHdr
		mtu     int
		changed bool
		want    uint16
	}{
		{"tcp fits", tcp, tv, 1600, false, 1448},
		{"tcp 1500 with 20 bytes of options", tcp, tv, 1500, true, 1440},
		{"tcp lowered", tcp, tv, 1400, true, 1340},
		{"tcp pppoe", tcp, tv, 1492, true, 1432},
		{"tcp mtu too small", tcp, tv, 60, false, 1448},
		{"udp_l4 lowered", udp, uv, 1280, true, 1252},
		{"udp_l4 fits", udp, uv, 9000, false, 1472},
		{"ufo left alone", udp, ufo, 1280, false, 1480},
		{"not gso", plain, VnetHdr{}, 576, false, 0},
		{"encap left alone", vx, vxv, 1000, false, 1400},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var f Frame
			if r := f.Parse(c.frame, c.vnet); r != OK {
				t.Fatalf("parse: %v", r)
			}
			if got := f.FitGSO(c.mtu); got != c.changed || f.Vnet.GSOSize != c.want {
				t.Errorf("FitGSO(%d) = %v, gso_size %d; want %v, %d", c.mtu, got, f.Vnet.GSOSize, c.changed, c.want)
			}
		})
	}
}

func TestBuildFragNeeded(t *testing.T) {
	big := buildTCP(t, ipHost, ipRemote, 40000, 443, tcpOpt{options: true, flags: TCPAck, payload: 1400})
	partial := bytes.Clone(big)
	pv := makePartial(t, partial, VnetHdr{})
	udp := buildUDP(t, ipHost, ipRemote, 5000, 53, 1400)
	tiny := buildUDP(t, ipHost, ipRemote, 5000, 53, 2) // padded: the quote must stop at the datagram
	icmpErr := buildICMPError(t, ipRemote, ipHost, 3, 3, udp[EthHdrLen:EthHdrLen+28])
	ping := buildICMPEcho(t, ipHost, ipRemote, ICMPEchoRequest, 1, 1400)
	frag := bytes.Clone(udp)
	binary.BigEndian.PutUint16(frag[EthHdrLen+6:], 0x4000|10)
	from := [4]byte{10, 1, 0, 1}
	cases := []struct {
		name  string
		frame []byte
		vnet  VnetHdr
		ok    bool
	}{
		{"tcp", big, VnetHdr{}, true},
		{"tcp partial", partial, pv, true},
		{"udp", udp, VnetHdr{}, true},
		{"small udp", tiny, VnetHdr{}, true},
		{"ping", ping, VnetHdr{}, true},
		{"icmp error", icmpErr, VnetHdr{}, false},
		{"non-first fragment", frag, VnetHdr{}, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var f Frame
			if r := f.Parse(c.frame, c.vnet); r != OK {
				t.Fatalf("parse: %v", r)
			}
			out := make([]byte, 200)
			n := f.BuildFragNeeded(out, 1400, from)
			if !c.ok {
				if n != 0 || f.FragNeededLen() != 0 {
					t.Fatalf("built %d bytes about a frame that must get no ICMP error", n)
				}
				return
			}
			if n == 0 || n != f.FragNeededLen() {
				t.Fatalf("BuildFragNeeded = %d, FragNeededLen %d", n, f.FragNeededLen())
			}
			if f.BuildFragNeeded(out[:n-1], 1400, from) != 0 {
				t.Errorf("built into a short buffer")
			}
			out = out[:n]
			var g Frame
			if r := g.Parse(out, VnetHdr{}); r != OK {
				t.Fatalf("parse built frame: %v", r)
			}
			if g.SrcMAC() != f.DstMAC() || g.DstMAC() != f.SrcMAC() || g.Src != from || g.Dst != f.Src ||
				g.ICMPType != ICMPDestUnreach || g.ICMPCode != ICMPFragNeededCode || g.InnerL3 != EthHdrLen+28 ||
				g.InnerSrc != f.Src || g.InnerDst != f.Dst || g.End != n {
				t.Errorf("built frame: %+v", g)
			}
			if mtu := binary.BigEndian.Uint16(out[EthHdrLen+26:]); mtu != 1400 {
				t.Errorf("next-hop MTU %d", mtu)
			}
			ihl := f.L4 - f.L3
			if !bytes.Equal(out[EthHdrLen+28:], c.frame[f.L3:min(f.End, f.L3+ihl+8)]) {
				t.Errorf("quote differs")
			}
			re := recompute(t, out)
			cmpField(t, "IPv4 header", out, re, EthHdrLen+10)
			cmpField(t, "ICMP", out, re, EthHdrLen+22)
			if !bytes.Equal(out, re[:n]) {
				t.Errorf("differs from gopacket's reserialization")
			}
		})
	}
}

// TestZeroAlloc checks that the per-frame path never allocates.
func TestZeroAlloc(t *testing.T) {
	tcp := buildTCP(t, ipHost, ipRemote, 40000, 443, tcpOpt{options: true, flags: TCPSyn})
	gso, gv := gsoTCP(t, 60000, false, false)
	icmpErr := buildICMPError(t, ipRemote, ipHost2, 3, 3, buildUDP(t, ipHost2, ipRemote, 61000, 53, 20)[EthHdrLen:])
	out := make([]byte, 200)
	var f Frame
	frames := []struct {
		b []byte
		v VnetHdr
	}{{tcp, VnetHdr{}}, {gso, gv}, {icmpErr, VnetHdr{}}}
	i := 0
	allocs := testing.AllocsPerRun(1000, func() {
		fr := frames[i%len(frames)]
		i++
		if f.Parse(fr.b, fr.v) != OK {
			panic("parse")
		}
		f.SetMACs([6]byte(macGW), [6]byte(macHost))
		_ = f.SrcMAC()
		_ = f.DstMAC()
		f.SetSrc(ipHost2, uint16(i))
		f.SetDst(ipOther, uint16(i>>1))
		f.SetInnerSrc(ipHost, uint16(i))
		f.SetInnerDst(ipOther, 7)
		f.ClampMSS(1400)
		f.FitGSO(1400)
		f.BuildFragNeeded(out, 1400, ipHost2)
		_ = Reason(i % int(NumReasons)).String()
	})
	if allocs != 0 {
		t.Errorf("%v allocations per frame, want 0", allocs)
	}
}

func BenchmarkParseRewrite(b *testing.B) {
	tcp := buildTCP(b, ipHost, ipRemote, 40000, 443, tcpOpt{options: true, flags: TCPAck | TCPPsh, payload: 1448})
	partial := bytes.Clone(tcp)
	pv := makePartial(b, partial, VnetHdr{})
	gso, gv := gsoTCP(b, 64000, false, false)
	udp := buildUDP(b, ipHost, ipRemote, 5353, 53, 100)
	icmpErr := buildICMPError(b, ipRemote, ipHost2, 3, 3, buildUDP(b, ipHost2, ipRemote, 61000, 53, 20)[EthHdrLen:])
	for _, c := range []struct {
		name  string
		frame []byte
		vnet  VnetHdr
	}{
		{"tcp1500", tcp, VnetHdr{}},
		{"tcp1500partial", partial, pv},
		{"gso64k", gso, gv},
		{"udp", udp, VnetHdr{}},
		{"icmperror", icmpErr, VnetHdr{}},
	} {
		b.Run(c.name, func(b *testing.B) {
			var f Frame
			src, dst := [6]byte(macGW), [6]byte(macHost)
			b.ReportAllocs()
			b.SetBytes(int64(len(c.frame)))
			for i := 0; b.Loop(); i++ {
				if f.Parse(c.frame, c.vnet) != OK {
					b.Fatal("parse")
				}
				f.SetMACs(src, dst)
				// Alternate between two mappings so that every iteration really rewrites.
				if i&1 == 0 {
					f.SetSrc(ipHost2, 61000)
					f.SetDst(ipOther, 8443)
				} else {
					f.SetSrc(ipHost, 40000)
					f.SetDst(ipRemote, 443)
				}
				if f.InnerL3 >= 0 {
					f.SetInnerSrc(ipHost, uint16(i))
				}
			}
		})
	}
}

func BenchmarkChecksum1500(b *testing.B) {
	buf := payloadBytes(1500, 9)
	b.SetBytes(1500)
	for b.Loop() {
		_ = Checksum(buf, 0)
	}
}
