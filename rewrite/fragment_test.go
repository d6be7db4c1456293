package rewrite

import (
	"bytes"
	"encoding/binary"
	"testing"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
)

// buildUDPNoDF builds a UDP datagram without DF carrying payload bytes; with options, its IP
// header holds a router alert (copied into every fragment) and a record route (first
// fragment only); flags and fragOff set the IP header's MF flag and offset (a fragment).
func buildUDPNoDF(t testing.TB, payload int, options, mf bool, fragOff uint16) []byte {
	eth, ip := ethIPv4(ipHost, ipRemote, layers.IPProtocolUDP)
	ip.Flags = 0
	if mf {
		ip.Flags = layers.IPv4MoreFragments
	}
	ip.FragOffset = fragOff
	if options {
		ip.Options = []layers.IPv4Option{
			{OptionType: 148, OptionLength: 4, OptionData: []byte{0, 0}},
			{OptionType: 7, OptionLength: 11, OptionData: []byte{4, 0, 0, 0, 0, 0, 0, 0, 0}},
			{OptionType: 0, OptionLength: 1},
		}
	}
	udp := &layers.UDP{SrcPort: 40000, DstPort: 53}
	return serialize(t, eth, ip, udp, gopacket.Payload(payloadBytes(payload, 5)))
}

// TestFragment4 cuts datagrams without DF for smaller MTUs and checks every fragment as a
// receiver would, then reassembles them into the original datagram.
func TestFragment4(t *testing.T) {
	for _, c := range []struct {
		name    string
		payload int
		options bool
		partial bool
		mf      bool
		fragOff uint16
		mtu     int
	}{
		{"1472 bytes for 1492", 1472, false, false, false, 0, 1492},
		{"1472 bytes for 576", 1472, false, false, false, 0, 576},
		{"odd length for 1280", 3001, false, false, false, 0, 1280},
		{"options for 576", 1400, true, false, false, 0, 576},
		{"partial checksum for 1000", 1472, false, true, false, 0, 1000},
		{"partial checksum, options, for 68", 300, true, true, false, 0, 68},
		{"a first fragment cut again", 1472, false, false, true, 0, 600},
		{"a middle fragment cut again", 1480, false, false, true, 185, 600},
		{"a last fragment cut again", 999, false, false, false, 370, 600},
	} {
		t.Run(c.name, func(t *testing.T) {
			frame := buildUDPNoDF(t, c.payload, c.options, c.mf, c.fragOff)
			var vnet VnetHdr
			want := bytes.Clone(frame) // the datagram with its full checksum
			if c.partial {
				vnet = makePartial(t, frame, vnet)
			}
			var f Frame
			if r := f.Parse(frame, vnet); r != OK {
				t.Fatalf("parse: %v", r)
			}
			size, count := f.Fragment4Size(c.mtu)
			dst := make([]byte, size)
			lens := make([]int, count)
			n := f.Fragment4(dst, lens, c.mtu)
			if n != count || n < 2 {
				t.Fatalf("Fragment4 wrote %d fragments, Fragment4Size said %d (want at least 2)", n, count)
			}
			ihl := int(want[EthHdrLen]&0x0f) * 4
			wantData := want[EthHdrLen+ihl:]
			got := make([]byte, len(wantData))
			covered := 0
			off := 0
			for i := 0; i < n; i++ {
				fr := dst[off : off+lens[i]]
				off += lens[i]
				var v VnetHdr
				v.Decode(fr)
				if v != (VnetHdr{}) {
					t.Errorf("fragment %d: virtio-net header %+v, want none", i, v)
				}
				eth, ip := fr[VnetHdrLen:VnetHdrLen+EthHdrLen], fr[VnetHdrLen+EthHdrLen:]
				if !bytes.Equal(eth, want[:EthHdrLen]) {
					t.Errorf("fragment %d: Ethernet header %x, want %x", i, eth, want[:EthHdrLen])
				}
				if int(ip[0]&0x0f)*4 != ihl {
					t.Fatalf("fragment %d: IHL %d, want %d", i, ip[0]&0x0f, ihl/4)
				}
				total := int(binary.BigEndian.Uint16(ip[2:]))
				if total != len(ip) || total > c.mtu {
					t.Errorf("fragment %d: total length %d, frame holds %d, MTU %d", i, total, len(ip), c.mtu)
				}
				if Checksum(ip[:ihl], 0) != 0 {
					t.Errorf("fragment %d: bad header checksum", i)
				}
				if !bytes.Equal(ip[4:6], want[EthHdrLen+4:EthHdrLen+6]) || ip[8] != want[EthHdrLen+8] || ip[1] != want[EthHdrLen+1] {
					t.Errorf("fragment %d: ID, TTL or TOS changed", i)
				}
				fo := binary.BigEndian.Uint16(ip[6:])
				mf := fo&ipFlagMF != 0
				if wantMF := i < n-1 || c.mf; mf != wantMF {
					t.Errorf("fragment %d of %d: MF %v, want %v", i, n, mf, wantMF)
				}
				if fo&0x4000 != 0 {
					t.Errorf("fragment %d: DF set", i)
				}
				at := int(fo&ipFragOffMask)*8 - int(c.fragOff)*8
				data := ip[ihl:]
				if i < n-1 && len(data)%8 != 0 {
					t.Errorf("fragment %d: %d bytes of data, not a multiple of 8", i, len(data))
				}
				if at != covered {
					t.Fatalf("fragment %d starts at %d, want %d", i, at, covered)
				}
				copy(got[at:], data)
				covered += len(data)
				if c.options {
					opts := ip[20:ihl]
					if !bytes.Equal(opts[:4], []byte{148, 4, 0, 0}) {
						t.Errorf("fragment %d: router alert %x, want it copied", i, opts[:4])
					}
					if i == 0 && opts[4] != 7 || i > 0 && !bytes.Equal(opts[4:15], bytes.Repeat([]byte{ipOptNOP}, 11)) {
						t.Errorf("fragment %d: record route %x; want it in the first fragment only, NOPs after", i, opts[4:15])
					}
				}
			}
			if covered != len(wantData) || !bytes.Equal(got, wantData) {
				t.Fatalf("reassembled %d of %d bytes; equal %v", covered, len(wantData), bytes.Equal(got, wantData))
			}
		})
	}
}

// TestFragment4Refuses: what Fragment4 leaves alone, writing nothing.
func TestFragment4Refuses(t *testing.T) {
	df := buildUDP(t, ipHost, ipRemote, 40000, 53, 1472)
	noDF := buildUDPNoDF(t, 1472, false, false, 0)
	for _, c := range []struct {
		name  string
		frame []byte
		vnet  VnetHdr
		mtu   int
		room  int
	}{
		{"DF set", df, VnetHdr{}, 576, 1 << 16},
		{"a GSO frame", noDF, VnetHdr{GSOType: GSOUDPL4, GSOSize: 500}, 576, 1 << 16},
		{"an MTU without room for 8 bytes", noDF, VnetHdr{}, 27, 1 << 16},
		{"too little room", noDF, VnetHdr{}, 576, 1500},
	} {
		t.Run(c.name, func(t *testing.T) {
			var f Frame
			if r := f.Parse(bytes.Clone(c.frame), c.vnet); r != OK {
				t.Fatalf("parse: %v", r)
			}
			dst := make([]byte, c.room)
			if n := f.Fragment4(dst, make([]int, 64), c.mtu); n != 0 || !bytes.Equal(dst, make([]byte, c.room)) {
				t.Fatalf("Fragment4 wrote %d fragments, want none and nothing written", n)
			}
		})
	}
}

func TestFragment4Allocs(t *testing.T) {
	frame := buildUDPNoDF(t, 1472, true, false, 0)
	var f Frame
	if r := f.Parse(frame, VnetHdr{}); r != OK {
		t.Fatal(r)
	}
	dst := make([]byte, 1<<16)
	lens := make([]int, 64)
	if a := testing.AllocsPerRun(100, func() { f.Fragment4(dst, lens, 576) }); a != 0 {
		t.Fatalf("Fragment4 allocates %v times a call", a)
	}
}

// FuzzFragment4: whatever the frame and MTU, Fragment4 never panics, and the fragments it
// writes are each at most mtu bytes of IP with a valid header checksum, and together carry
// exactly the datagram's data.
func FuzzFragment4(f *testing.F) {
	add := func(b []byte, v VnetHdr, mtu uint16) {
		vb := make([]byte, VnetHdrLen)
		v.Encode(vb)
		f.Add(vb, b, mtu)
	}
	add(buildUDPNoDF(f, 300, true, false, 0), VnetHdr{}, 128)
	add(buildUDPNoDF(f, 300, false, true, 40), VnetHdr{}, 100)
	p := buildUDPNoDF(f, 200, false, false, 0)
	add(p, makePartial(f, p, VnetHdr{}), 68)
	add(nil, VnetHdr{}, 576)
	f.Fuzz(func(t *testing.T, vb, frame []byte, mtu uint16) {
		var v VnetHdr
		v.Decode(vb)
		var fr Frame
		if fr.Parse(frame, v) != OK {
			return
		}
		dst := make([]byte, 1<<17)
		lens := make([]int, 1024)
		n := fr.Fragment4(dst, lens, int(mtu))
		if n == 0 {
			return
		}
		ihl := int(frame[fr.L3]&0x0f) * 4
		data := frame[fr.L3+ihl : fr.End]
		off, at := 0, 0
		for i := 0; i < n; i++ {
			ip := dst[off+VnetHdrLen+fr.L3 : off+lens[i]]
			off += lens[i]
			if len(ip) > int(mtu) || int(binary.BigEndian.Uint16(ip[2:])) != len(ip) || Checksum(ip[:ihl], 0) != 0 {
				t.Fatalf("fragment %d: %d bytes for MTU %d, total length %d, checksum ok %v", i, len(ip), mtu, binary.BigEndian.Uint16(ip[2:]), Checksum(ip[:ihl], 0) == 0)
			}
			chunk := ip[ihl:]
			if at+len(chunk) > len(data) || !bytes.Equal(chunk, data[at:at+len(chunk)]) {
				t.Fatalf("fragment %d: data at %d differs from the datagram's", i, at)
			}
			at += len(chunk)
		}
		if at != len(data) {
			t.Fatalf("fragments carry %d of %d bytes", at, len(data))
		}
	})
}
