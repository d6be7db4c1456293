// Package rewrite parses Ethernet/IPv4 frames in place and rewrites them for l2shim: MAC
// addresses, IPv4 source and destination NAT (with TCP/UDP ports and ICMP echo identifiers),
// the addresses and ports quoted inside ICMP errors, the TCP MSS option, and the checksum
// arithmetic that goes with all of it.
//
// The datapath reads frames from AF_PACKET sockets opened with PACKET_VNET_HDR, so the kernel
// keeps its offloads on: a frame may be a TSO/GRO super-frame of up to 64 KiB and may be
// CHECKSUM_PARTIAL. Such a frame's L4 checksum field does not hold a checksum at all but the
// uncomplemented, folded pseudo-header sum, which the device (or the kernel's software fallback)
// later completes by summing everything from csum_start and storing the complement. NAT must
// therefore update each kind of field by its own rule (RFC 1624 in both cases, but a complemented
// field for a full checksum and an uncomplemented one for a partial sum, and only the
// pseudo-header fields for the latter). Frame.Parse finds out which rule applies and the setters
// follow it, so that the frame written back with the same virtio-net header is exactly what the
// kernel would have produced for the new addresses.
//
// Everything on the per-frame path (Parse, SetMACs, SetSrc, SetDst, SetInnerSrc, SetInnerDst,
// ClampMSS, FitGSO, BuildFragNeeded) works on offsets into the caller's buffer: it never copies
// the frame, never allocates and never panics, whatever the bytes.
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
