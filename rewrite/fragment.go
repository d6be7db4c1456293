package rewrite

import "encoding/binary"

// IPv4 header fields of fragmentation.
const (
	ipFlagDF      = 0x4000 // don't fragment
	ipFlagMF      = 0x2000 // more fragments
	ipFragOffMask = 0x1fff // fragment offset, in 8-byte units
	ipOptEnd      = 0      // end of the option list
	ipOptNOP      = 1      // no operation (one byte)
	ipOptCopied   = 0x80   // the option is copied into every fragment
)

// canFragment4 reports whether Fragment4 can cut f: an IPv4 frame without DF that is not a GSO
// super-frame (its segments would each need cutting; the kernel sends such frames itself).
func (f *Frame) canFragment4() bool {
	return f.valid4() && !f.DontFrag && !f.Vnet.IsGSO()
}

// Fragment4Size returns how many bytes Fragment4 writes for f at mtu and how many fragments, or
// 0, 0 when it would write none (see Fragment4).
func (f *Frame) Fragment4Size(mtu int) (size, count int) {
	if !f.canFragment4() {
		return 0, 0
	}
	ihl := int(f.Buf[f.L3]&0x0f) * 4
	per := (mtu - ihl) &^ 7
	payload := f.End - f.L3 - ihl
	if per < 8 || payload <= 0 {
		return 0, 0
	}
	count = (payload + per - 1) / per
	return count*(VnetHdrLen+f.L3+ihl) + payload, count
}

// Fragment4 cuts f, an IPv4 datagram without DF larger than mtu, into fragments whose IP
// datagrams are at most mtu bytes, as a router on a path with that MTU would (RFC 791; Linux's
// ip_do_fragment): each fragment is written to dst as a frame for a packet socket (a
// virtio-net header without flags, then f's link-layer header and the IP header), one after
// the other, with its length in lens. It returns how many fragments it wrote, 0 when f cannot
// be cut (see canFragment4; an mtu too small for 8 bytes of data behind the header) or dst or
// lens are too short (Fragment4Size says what they need).
//
// A CHECKSUM_PARTIAL frame's checksum (NEEDS_CSUM: the field holds the pseudo-header sum) is
// completed first, over the whole datagram, as the kernel does before it fragments (a result
// of 0 goes out as 0xffff). In every fragment the total length, the flags and offset (MF on
// all but the last, which keeps f's own MF: a fragment may be cut again) and the header
// checksum are set; the ID, TOS and TTL are copied. Options go whole into the first fragment;
// the later ones keep those with the copied flag and have the others overwritten with NOPs,
// so every header is as long as f's. Ethernet padding after the datagram is not copied.
func (f *Frame) Fragment4(dst []byte, lens []int, mtu int) int {
	size, count := f.Fragment4Size(mtu)
	if count == 0 || len(dst) < size || len(lens) < count {
		return 0
	}
	b := f.Buf
	if f.Vnet.Flags&VnetNeedsCsum != 0 {
		start, field := int(f.Vnet.CsumStart), int(f.Vnet.CsumStart)+int(f.Vnet.CsumOffset)
		if start < f.L3 || field+2 > f.End {
			return 0
		}
		// The field holds the seed (the pseudo-header sum), so the sum over the range is the
		// checksum's complement.
		c := Checksum(b[start:f.End], 0)
		if c == 0 {
			c = 0xffff
		}
		binary.BigEndian.PutUint16(b[field:], c)
		f.Vnet.Flags &^= VnetNeedsCsum
		f.Vnet.CsumStart, f.Vnet.CsumOffset = 0, 0
	}
	l3 := f.L3
	ihl := int(b[l3]&0x0f) * 4
	hdrs := l3 + ihl
	per := (mtu - ihl) &^ 7
	flagsOff := binary.BigEndian.Uint16(b[l3+6:])
	firstOff := int(flagsOff & ipFragOffMask)
	lastMF := flagsOff & ipFlagMF
	keep := flagsOff &^ (ipFlagMF | ipFragOffMask) // reserved bit; DF is clear
	// The options of every fragment after the first: only the copied ones.
	var later [40]byte
	laterOpts := later[:ihl-20]
	copy(laterOpts, b[l3+20:hdrs])
	stripUncopiedOptions(laterOpts)
	data := b[hdrs:f.End]
	n := 0
	for i := 0; i < count; i++ {
		chunk := data[i*per : min((i+1)*per, len(data))]
		out := dst[n : n+VnetHdrLen+hdrs+len(chunk)]
		VnetHdr{}.Encode(out)
		frame := out[VnetHdrLen:]
		copy(frame, b[:hdrs])
		ip := frame[l3:]
		if i > 0 {
			copy(ip[20:ihl], laterOpts)
		}
		mf := uint16(ipFlagMF)
		if i == count-1 {
			mf = lastMF
		}
		binary.BigEndian.PutUint16(ip[2:], uint16(ihl+len(chunk)))
		binary.BigEndian.PutUint16(ip[6:], keep|mf|uint16(firstOff+i*per/8))
		ip[10], ip[11] = 0, 0
		binary.BigEndian.PutUint16(ip[10:], Checksum(ip[:ihl], 0))
		copy(frame[hdrs:], chunk)
		lens[i] = len(out)
		n += len(out)
	}
	return count
}

// stripUncopiedOptions overwrites, in the IPv4 options opts, every option without the copied
// flag with NOPs (Linux's ip_options_fragment). A malformed list is NOPed from where it breaks.
func stripUncopiedOptions(opts []byte) {
	for i := 0; i < len(opts); {
		switch opts[i] {
		case ipOptEnd:
			return
		case ipOptNOP:
			i++
			continue
		}
		l := 0
		if i+1 < len(opts) {
			l = int(opts[i+1])
		}
		if l < 2 || i+l > len(opts) {
			for ; i < len(opts); i++ {
				opts[i] = ipOptNOP
			}
			return
		}
		if opts[i]&ipOptCopied == 0 {
			for j := i; j < i+l; j++ {
				opts[j] = ipOptNOP
			}
		}
		i += l
	}
}
