package rewrite

import "encoding/binary"

// VnetHdrLen is the size of struct virtio_net_hdr, which precedes every frame read from or
// written to a PACKET_VNET_HDR socket.
const VnetHdrLen = 10

// Flags and GSO types of struct virtio_net_hdr (include/uapi/linux/virtio_net.h).
const (
	// VnetNeedsCsum marks a CHECKSUM_PARTIAL frame: the checksum at CsumStart+CsumOffset holds
	// the pseudo-header sum and must be completed over the bytes from CsumStart to the end.
	VnetNeedsCsum = 1
	// VnetDataValid marks a frame whose checksum the receiving device already verified.
	VnetDataValid = 2

	GSONone   = 0    // not a super-frame
	GSOTCPv4  = 1    // TCP over IPv4, to be segmented by gso_size
	GSOUDP    = 3    // UDP fragmentation offload (the datagram is IP-fragmented)
	GSOTCPv6  = 4    // TCP over IPv6 (on an IPv4 frame only as a tunnel's inner packet)
	GSOUDPL4  = 5    // UDP segmentation offload (one UDP datagram per gso_size)
	GSOECN    = 0x80 // flag: the TCP stream uses ECN (CWR must only appear on the first segment)
	gsoTypeMk = ^uint8(GSOECN)
)

// VnetHdr is struct virtio_net_hdr as AF_PACKET exchanges it: host-endian 16-bit fields.
type VnetHdr struct {
	Flags, GSOType                         uint8
	HdrLen, GSOSize, CsumStart, CsumOffset uint16
}

// Decode fills h from the first VnetHdrLen bytes of b. It reports false, leaving h untouched,
// when b is shorter than that.
func (h *VnetHdr) Decode(b []byte) bool {
	if len(b) < VnetHdrLen {
		return false
	}
	h.Flags = b[0]
	h.GSOType = b[1]
	h.HdrLen = binary.NativeEndian.Uint16(b[2:])
	h.GSOSize = binary.NativeEndian.Uint16(b[4:])
	h.CsumStart = binary.NativeEndian.Uint16(b[6:])
	h.CsumOffset = binary.NativeEndian.Uint16(b[8:])
	return true
}

// Encode writes h into the first VnetHdrLen bytes of b, which must be at least that long. The
// byte order is the host's, which is what the kernel expects from a packet socket (it uses
// little-endian only for virtio devices; for AF_PACKET the header is native).
func (h VnetHdr) Encode(b []byte) {
	_ = b[VnetHdrLen-1]
	b[0] = h.Flags
	b[1] = h.GSOType
	binary.NativeEndian.PutUint16(b[2:], h.HdrLen)
	binary.NativeEndian.PutUint16(b[4:], h.GSOSize)
	binary.NativeEndian.PutUint16(b[6:], h.CsumStart)
	binary.NativeEndian.PutUint16(b[8:], h.CsumOffset)
}

// IsGSO reports whether the header describes a super-frame that the kernel will segment.
func (h VnetHdr) IsGSO() bool { return h.GSOType != GSONone }
