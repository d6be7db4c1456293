// Package rewrite parses Ethernet/IPv4 and Ethernet/IPv6 frames in place and rewrites them for
// l2shim: MAC addresses, source and destination NAT (with TCP/UDP ports and ICMP and ICMPv6
// echo identifiers), the addresses and ports quoted inside ICMP and ICMPv6 errors, the TCP MSS
// option, GSO sizing, the software segmentation of tunnels' TSO super-frames, and the checksum
// arithmetic that goes with all of it; it also builds the few frames l2shim makes itself (ICMP
// fragmentation-needed and ICMPv6 packet-too-big errors, TCP resets, probe echo requests) and
// reads and writes virtio-net headers. Parse accepts IPv4 frames only; ParseAny accepts IPv6
// too, whose setters (SetSrc6, SetDst6, SetInnerSrc6, SetInnerDst6) are the IPv4 ones'
// counterparts. The datapath engine calls it for every frame, and the shim uses its virtio-net
// header layout for its sockets. It knows nothing of flows, gateways or decisions: the caller
// says what to write.
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
// Everything on the per-frame path (Parse, ParseAny, SetMACs, SetSrc, SetDst, SetInnerSrc,
// SetInnerDst and their IPv6 counterparts, ClampMSS, FitGSO, BuildFragNeeded,
// BuildPacketTooBig) works on offsets into the caller's buffer: it never copies the frame,
// never allocates and never panics, whatever the bytes.
package rewrite
