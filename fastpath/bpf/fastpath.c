// SPDX-License-Identifier: (MIT OR GPL-2.0)
//
// l2shim's TCX programs. Attached at the head of each external interface's TCX chains, they
// finish in the kernel every frame of a flow user space has confirmed and installed (MAC
// rewrite, source NAT on the way out and its reverse on the way in, checksums, redirect), and
// divert to user space (the slow path) only what they cannot finish alone: frames without a
// flow, TCP SYN/FIN/RST, fragments, frames too big for their uplink, UDP GSO (tunnels), and
// anything they do not parse. What l2shim does not own is never touched: frames that carry
// the shim's mark, VLAN-tagged frames, other protocols, other MACs (macvlans, LAN traffic).
//
// Uplinks without a link-layer header (ppp, tun, WireGuard, raw-IP modems: "L3 devices") carry
// bare IP packets. User space and the capture veths speak Ethernet, so a packet diverted from
// an L3 device gets a made-up Ethernet header first (bpf_skb_change_head), with MACs user space
// knows the device and its gateway by; a frame redirected from an Ethernet device to an L3 one
// loses its header in the kernel (bpf_redirect to a device without one pulls it), and a packet
// redirected the other way gets the flow's real MACs pushed in front.
//
// The fast path does not depend on user space being alive: after l2shim stops, established
// flows keep their translation (the maps are pinned), while diverting to the slow path stops
// as soon as the heartbeat is older than cfg_heartbeat_ns, so new flows take the host's own
// routing.

#include <linux/bpf.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

// TCX verdicts (include/uapi/linux/bpf.h of Linux 6.6; Debian's headers predate them).
#define TCX_NEXT -1
#define TCX_PASS 0
#define TCX_DROP 2
#define TCX_REDIRECT 7

#define ETH_HLEN 14
#define ETH_ALEN 6
#define ETH_P_IP 0x0800
#define ETH_P_IPV6 0x86DD
#define IPPROTO_ICMPV6 58
#define IPPROTO_ICMP 1
#define IPPROTO_TCP 6
#define IPPROTO_UDP 17
#define ICMP_ECHOREPLY 0
#define ICMP_ECHO 8
#define ICMPV6_ECHO_REQUEST 128
#define ICMPV6_ECHO_REPLY 129

#define TCP_FIN 0x01
#define TCP_SYN 0x02
#define TCP_RST 0x04
#define TCP_ACK 0x10

#define IP_MF 0x2000
#define IP_OFFMASK 0x1fff

// Flow entry flags.
#define FP_NAT 1    // rewrite the address and port (source out, destination in)
#define FP_DIVERT 2 // in: an answer to a flow the host opened, not yet confirmed: to user space
                    // through the host's queue, never behind frames nobody asked for
#define FP_TO_L3 4  // the device the entry sends to (ifindex) has no link-layer header
#define FP_FIN 8    // set by the programs: they carried a TCP FIN this way
#define FP_SYNACK 16 // in: a connection the host is opening, whose SYN-ACK is carried too

// Interface flags.
#define IFC_L3 1 // no link-layer header: every IPv4 packet on it is l2shim's

// Configuration, set by the loader before the programs load.
volatile const __u32 cfg_mark = 0;           // the shim's mark bits ...
volatile const __u32 cfg_mask = 0;           // ... within this mask
volatile const __u64 cfg_heartbeat_ns = 1e9; // divert nothing when the last beat is older
// An entry idle this long while no l2shim runs (heartbeat stale) is forgotten: after a stop
// with no new start, the kernel carries each flow until it has been quiet this long.
volatile const __u64 cfg_orphan_idle_ns = 7440e9;
// The kernel has bpf_ktime_get_coarse_ns (5.11): the clock a frame reads (CLOCK_MONOTONIC at the
// tick's resolution, which the timeouts it serves need) without reading the clock source, which
// on a VM costs a frame tens of nanoseconds. Older kernels never verify the call: the branch
// on this constant is not taken there.
volatile const __u8 cfg_coarse_clock = 0;

// flow_key is a flow's tuple as a frame carries it. Addresses are 16 bytes (IPv4 as
// ::ffff:a.b.c.d), ports in network byte order; for ICMP echo both ports hold the identifier.
struct flow_key {
	__u8 src[16];
	__u8 dst[16];
	__u16 sport;
	__u16 dport;
	__u8 proto;
	__u8 pad[3];
};

// flow_val says what to do with a frame of a flow in one direction, and counts them.
struct flow_val {
	__u32 ifindex;  // out: the uplink; in: the interface the host sent the flow's frames on (a
	                // frame on another interface is redirected there)
	__u32 flags;    // FP_*
	__u8 addr[16];  // out: the new source address; in: the original destination address
	__u16 port;     // out: the new source port; in: the original destination port
	__u16 mtu;      // out: the largest IP datagram the uplink carries (0: no limit)
	__u8 src_mac[6];
	__u8 dst_mac[6];
	__u64 packets;
	__u64 bytes;
	__u64 last_seen; // clock_now() of the last frame
	// TCP flows. Out entries: what the host's last carried segment said, so user space can
	// still judge the wire's RST and FIN (and build resets the host accepts): the sequence
	// number after it (its data and FIN), its acknowledgment, its window field (unscaled).
	// In entries, with FP_FIN: seq_end is the sequence number after the wire's FIN, which
	// user space holds for true once the host's acknowledgment is exactly there.
	__u32 seq_end;
	__u32 ack;
	__u16 win;
	// What user space needs to adopt the flow after a restart (opaque to the programs).
	__u8 origin;
	__u8 why;
	__s16 rule;
	__u16 pad;
	__u8 gw_ip[4]; // the gateway's address (0: none)
};

// iface_cfg is what the programs know about an external interface (key: its ifindex).
struct iface_cfg {
	__u8 mac[6];        // Ethernet: its MAC; L3: the MAC user space knows the device by
	__u16 flags;        // IFC_*
	__u32 capture;      // ifindex of the near end of the capture veth for frames from the wire
	__u32 capture_host; // ... for the host's frames and the answers to its new flows (0: capture)
	__u8 gw_mac[6];     // L3: the MAC user space knows the device's gateway by
	__u16 pad;
};

// Counters of what the programs did, per CPU.
enum {
	STAT_FAST_OUT,   // frames the fast path finished host → wire
	STAT_FAST_IN,    // ... wire → host
	STAT_DIVERT_OUT, // frames diverted to the slow path host → wire
	STAT_DIVERT_IN,  // ... wire → host
	STAT_SOURCE6,    // IPv6 packets sent out of the uplink their source address belongs to
	STAT_MAX,
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 262144);
	__type(key, struct flow_key);
	__type(value, struct flow_val);
} l2s_flows_out SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 262144);
	__type(key, struct flow_key);
	__type(value, struct flow_val);
} l2s_flows_in SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 256);
	__type(key, __u32);
	__type(value, struct iface_cfg);
} l2s_ifaces SEC(".maps");

// Gateway MACs (6 bytes and 2 zero bytes): frames the host sends to one are l2shim's.
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 256);
	__type(key, __u64);
	__type(value, __u32);
} l2s_gws SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} l2s_heartbeat SEC(".maps");

// inject: capture veth near end's ifindex → the external interface its injections enter (the
// wire pair's near end) or leave through (the host pair's near end, for an L3 device).
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 256);
	__type(key, __u32);
	__type(value, __u32);
} l2s_inject SEC(".maps");

// IPv6 per-source routing: the prefixes of each uplink's addresses, longest match first
// (key: struct prefix6).

// uplink6 is where a packet with a source address in the prefix leaves.
struct uplink6 {
	__u32 ifindex;
	__u32 flags;       // IFC_L3: no link-layer header
	__u8 src_mac[6];   // the uplink's MAC
	__u8 dst_mac[6];   // its IPv6 router's MAC
};

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 1024);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct prefix6);
	__type(value, struct uplink6);
} l2s_source6 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, STAT_MAX);
	__type(key, __u32);
	__type(value, __u64);
} l2s_stats SEC(".maps");

// Array map keys, for lookups with a constant key: a key on the stack is a store there, and
// loaded without CAP_PERFMON (as l2shim's systemd unit loads them) the programs pay a
// speculation barrier for every first store to a stack slot and every register spill. Index
// i holds i.
volatile const __u32 const_keys[STAT_MAX] = {0, 1, 2, 3, 4};

// clock_now is CLOCK_MONOTONIC in nanoseconds, at the tick's resolution where it is cheaper.
static __always_inline __u64 clock_now(void)
{
	if (cfg_coarse_clock)
		return bpf_ktime_get_coarse_ns();
	return bpf_ktime_get_ns();
}

static __always_inline void count(__u32 which)
{
	__u64 *v = bpf_map_lookup_elem(&l2s_stats, (const void *)&const_keys[which]);
	if (v)
		*v += 1;
}

static __always_inline int marked(struct __sk_buff *skb)
{
	return (skb->mark & cfg_mask) == cfg_mark;
}

// shim_alive reports whether user space beat within cfg_heartbeat_ns of now (a beat written
// after now was read counts as alive). A frame the fast path finishes never asks: it costs a
// map lookup.
static __always_inline int shim_alive(__u64 now)
{
	__u64 *beat = bpf_map_lookup_elem(&l2s_heartbeat, (const void *)&const_keys[0]);
	return beat && (__s64)(now - *beat) <= (__s64)cfg_heartbeat_ns;
}

// Headers and MACs are copied and compared in words, not bytes: clang would load every byte
// into a register of its own and spill most (see const_keys). The words may be misaligned
// (behind a frame's destination MAC, or at an entry's MAC), which the verifier lets programs
// on architectures with efficient unaligned access do with packets and map values alike.
typedef __u32 __attribute__((may_alias)) word32;
typedef __u16 __attribute__((may_alias)) word16;

// copy_words copies len bytes (a constant, even) 4 at a time, the last 2 when len is not a
// multiple of 4.
static __always_inline void copy_words(void *dst, const void *src, const __u32 len)
{
#pragma unroll
	for (__u32 i = 0; i + 4 <= len; i += 4)
		*(word32 *)(dst + i) = *(const word32 *)(src + i);
	if (len % 4)
		*(word16 *)(dst + len - 2) = *(const word16 *)(src + len - 2);
}

static __always_inline int mac_equal(const __u8 *a, const __u8 *b)
{
	return *(const word32 *)a == *(const word32 *)b && *(const word16 *)(a + 4) == *(const word16 *)(b + 4);
}

static __always_inline void mac_copy(__u8 *dst, const __u8 *src)
{
	*(word32 *)dst = *(const word32 *)src;
	*(word16 *)(dst + 4) = *(const word16 *)(src + 4);
}

// prefix6 is a key of the IPv6 per-source routing map.
struct prefix6 {
	__u32 prefixlen;
	__u8 addr[16];
};

// frame is the parsed view of an untagged IPv4 or IPv6 frame, or of a bare IP packet, and the
// working memory of the run that parses it. It lives in a per-CPU map (l2s_scratch), not on the
// stack: see const_keys.
struct frame {
	__u32 l3;       // offset of the IP header (ETH_HLEN, or 0 on an L3 device)
	__u32 l4;       // offset of the L4 header
	__u32 ip_len;   // IPv4 total length; IPv6 payload length + 40 (0: a jumbogram or BIG TCP)
	__u8 proto;
	__u8 tcp_flags;
	__u8 icmp_type;
	__u8 v6;        // IPv6: 16-byte addresses at 8 and 24, no header checksum
	__u32 csum_off; // offset of the L4 checksum field
	__u32 ip4[2];   // IPv4: the source and destination address as the frame carries them
	__u16 sport;    // the ports as the frame carries them (ICMP echo: the identifier, twice)
	__u16 dport;
	// The L4 header as parsed (TCP: 20 bytes; UDP, ICMP: the first 8), so the rewrite and the
	// host's sequence tracking need not read the frame again.
	__u8 l4h[20];
	__u32 owned; // l2shim may touch the frame at all (parse_frame)

	// Working memory, not cleared between frames (everything above is: FRAME_PARSED).
	__u8 hdr[ETH_HLEN + 40] __attribute__((aligned(8))); // headers as loaded, and rewritten
	__u8 eth[ETH_HLEN] __attribute__((aligned(8)));      // a link-layer header to write
	__u32 word;                                          // a value a helper stores or looks up
	__u16 half;
	// What the run needs across helper calls, here rather than in registers the compiler
	// would spill to the stack. (After the parse, f->l3 and f->v6 say the same as l3_off and
	// is_v6; using them instead left the programs with 28 and 34 barriers, not 27.)
	__u64 now;    // clock_now() at the start of the run
	__u32 l3_off; // where the IP header starts on this device (0 or ETH_HLEN)
	__u32 is_v6;  // skb->protocol is IPv6
	struct prefix6 p6;
};

#define FRAME_PARSED __builtin_offsetof(struct frame, hdr)

// scratch is a program run's frame and flow key: one per CPU and program direction (egress
// and ingress never run nested on a CPU, but a slot each costs nothing).
struct scratch {
	struct frame f;
	struct flow_key k;
};

enum { SCRATCH_OUT, SCRATCH_IN, SCRATCH_MAX };

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, SCRATCH_MAX);
	__type(key, __u32);
	__type(value, struct scratch);
} l2s_scratch SEC(".maps");

// scratch returns this CPU's working memory for a program of direction which (SCRATCH_*).
static __always_inline struct scratch *scratch(__u32 which)
{
	return bpf_map_lookup_elem(&l2s_scratch, (const void *)&const_keys[which]);
}

// load_hdr copies len bytes at off into dst: directly when off is direct_off (a constant: the
// offset behind an Ethernet header and an IP header without options, where the frames the fast
// path carries most have it) and the bytes are in the linear part, so those frames pay no
// helper call; else through the helper (packet pointer arithmetic at a variable offset needs
// CAP_PERFMON, which l2shim does without). len is a constant too. (A second direct offset, for
// devices without a link-layer header, compiles to such arithmetic: clang merges the copies.)
static __always_inline int load_hdr(struct __sk_buff *skb, __u32 off, const __u32 direct_off, void *dst, const __u32 len)
{
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	if (off == direct_off && data + direct_off + len <= end) {
		copy_words(dst, data + direct_off, len);
		return 0;
	}
	return bpf_skb_load_bytes(skb, off, dst, len);
}

// load_l4 copies the frame's L4 header into f->l4h: 20 bytes for TCP, 8 for the others.
static __always_inline int load_l4(struct __sk_buff *skb, struct frame *f, const __u32 direct_off)
{
	if (f->proto == IPPROTO_TCP)
		return load_hdr(skb, f->l4, direct_off, f->l4h, 20);
	return load_hdr(skb, f->l4, direct_off, f->l4h, 8);
}

// parse_l4 reads the ports (for ICMP echo, the identifier) of the frame's L4 header (f->l4h)
// into k. echo_req and echo_rep are the echo types of the frame's ICMP (ICMPv4 or ICMPv6);
// ICMP errors quote a flow and return 0: the slow path translates them.
static __always_inline int parse_l4(struct frame *f, struct flow_key *k, __u8 icmp, __u8 echo_req, __u8 echo_rep)
{
	const __u8 *l4 = f->l4h;
	k->proto = f->proto;
	if (f->proto == IPPROTO_TCP) {
		f->sport = *(__u16 *)l4;
		f->dport = *(__u16 *)(l4 + 2);
		f->tcp_flags = l4[13];
		f->csum_off = f->l4 + 16;
	} else if (f->proto == IPPROTO_UDP) {
		f->sport = *(__u16 *)l4;
		f->dport = *(__u16 *)(l4 + 2);
		f->csum_off = f->l4 + 6;
	} else if (f->proto == icmp) {
		if (l4[0] != echo_req && l4[0] != echo_rep)
			return 0;
		f->icmp_type = l4[0];
		f->sport = *(__u16 *)(l4 + 4);
		f->dport = f->sport;
		f->csum_off = f->l4 + 2;
	} else {
		return 0;
	}
	k->sport = f->sport;
	k->dport = f->dport;
	return 1;
}

// parse4 reads the headers of the IPv4 frame whose header starts at l3 into f and its tuple
// into k. It returns 0 when the frame is not one a flow entry could cover.
static __always_inline int parse4(struct __sk_buff *skb, __u32 l3, struct frame *f, struct flow_key *k)
{
	const __u8 *ip = f->hdr;
	if (load_hdr(skb, l3, ETH_HLEN, f->hdr, 20))
		return 0;
	if ((ip[0] & 0xf0) != 0x40)
		return 0;
	__u32 ihl = (ip[0] & 0x0f) * 4;
	if (ihl < 20)
		return 0;
	f->l3 = l3;
	f->l4 = l3 + ihl;
	f->proto = ip[9];
	f->ip_len = bpf_ntohs(*(__u16 *)(ip + 2));
	if (bpf_ntohs(*(__u16 *)(ip + 6)) & (IP_MF | IP_OFFMASK))
		return 0; // fragments follow their first fragment in the slow path
	__builtin_memset(k, 0, sizeof(*k));
	k->src[10] = 0xff;
	k->src[11] = 0xff;
	k->dst[10] = 0xff;
	k->dst[11] = 0xff;
	__builtin_memcpy(&k->src[12], ip + 12, 4);
	__builtin_memcpy(&k->dst[12], ip + 16, 4);
	__builtin_memcpy(f->ip4, ip + 12, 8);
	if (f->proto != IPPROTO_TCP && f->proto != IPPROTO_UDP && f->proto != IPPROTO_ICMP)
		return 0;
	if (load_l4(skb, f, ETH_HLEN + 20))
		return 0;
	return parse_l4(f, k, IPPROTO_ICMP, ICMP_ECHO, ICMP_ECHOREPLY);
}

// parse6 is parse4 for the IPv6 packet whose fixed header (ip6) starts at l3. Only a TCP, UDP
// or ICMPv6 echo header right behind it is one a flow entry covers: extension headers
// (fragments above all) and ICMPv6 errors are the slow path's.
static __always_inline int parse6(struct __sk_buff *skb, __u32 l3, const __u8 *ip6, struct frame *f, struct flow_key *k)
{
	f->v6 = 1;
	f->l3 = l3;
	f->l4 = l3 + 40;
	f->proto = ip6[6];
	__u32 plen = bpf_ntohs(*(__u16 *)(ip6 + 4));
	f->ip_len = plen ? plen + 40 : 0;
	__builtin_memset(k, 0, sizeof(*k));
	__builtin_memcpy(k->src, ip6 + 8, 16);
	__builtin_memcpy(k->dst, ip6 + 24, 16);
	if (f->proto != IPPROTO_TCP && f->proto != IPPROTO_UDP && f->proto != IPPROTO_ICMPV6)
		return 0;
	if (load_l4(skb, f, ETH_HLEN + 40))
		return 0;
	return parse_l4(f, k, IPPROTO_ICMPV6, ICMPV6_ECHO_REQUEST, ICMPV6_ECHO_REPLY);
}

// fits reports whether the frame (each segment, for a GSO super-frame) fits an MTU of mtu.
static __always_inline int fits(struct __sk_buff *skb, struct frame *f, __u16 mtu)
{
	if (!mtu)
		return 1;
	if (skb->gso_segs > 1) {
		// l4 header length: TCP's data offset, else 8.
		__u32 hl = 8;
		if (f->proto == IPPROTO_TCP)
			hl = (f->l4h[12] >> 4) * 4;
		return (f->l4 - f->l3) + hl + skb->gso_size <= mtu;
	}
	return skb->len - f->l3 <= mtu;
}

// tcp_seq_end returns the sequence number after a TCP segment: its data, and its FIN.
static __always_inline __u32 tcp_seq_end(struct __sk_buff *skb, struct frame *f)
{
	const __u8 *h = f->l4h;
	__u32 seq = bpf_ntohl(*(__u32 *)(h + 4));
	__u32 doff = (h[12] >> 4) * 4;
	// The IP total length, not the skb's: a short frame carries Ethernet padding. A GSO
	// frame's total length may be 0 (BIG TCP): then the skb is the datagram.
	__u32 end = f->ip_len ? f->l3 + f->ip_len : skb->len;
	__u32 payload = end > f->l4 + doff ? end - f->l4 - doff : 0;
	return seq + payload + (f->tcp_flags & TCP_FIN ? 1 : 0);
}

// needs_slow_path reports whether a frame of an installed flow must go to user space anyway
// (in: it came from the wire).
static __always_inline int needs_slow_path(struct __sk_buff *skb, struct frame *f, struct flow_val *v, __u64 now, int in)
{
	// A SYN (a new connection on the tuple) or an RST (which must be judged against the
	// host's sequence numbers at once) is user space's while it runs; after it stopped, the
	// kernel carries the connection to its end. A FIN is carried and marked in the entry
	// (mark_fin), which user space reads; so is the answer to a connection the host is
	// opening when user space said so (FP_SYNACK: it needs no MSS clamping), which the
	// entry's counts show.
	if (f->proto == IPPROTO_TCP && (f->tcp_flags & (TCP_SYN | TCP_RST))) {
		if ((v->flags & FP_SYNACK) && (f->tcp_flags & (TCP_SYN | TCP_ACK | TCP_RST)) == (TCP_SYN | TCP_ACK))
			return 0;
		return shim_alive(now);
	}
	// The wire's FIN is recorded once (mark_fin). A FIN that ends elsewhere is a forgery or
	// the real one behind a forgery: user space judges it against the host's window.
	if (in && f->proto == IPPROTO_TCP && (f->tcp_flags & TCP_FIN) && (v->flags & FP_FIN) && tcp_seq_end(skb, f) != v->seq_end)
		return shim_alive(now);
	// A UDP super-frame is a tunnel's (its checksum is the inner packet's) or UDP GSO.
	if (f->proto == IPPROTO_UDP && skb->gso_segs > 1)
		return 1;
	return 0;
}

// l4_csum_flags returns the flags for bpf_l4_csum_replace on the frame's L4 checksum, and 0
// when it must not be touched: a UDP datagram without a checksum keeps 0 (and a result of 0
// is written as 0xffff, BPF_F_MARK_MANGLED_0).
static __always_inline __u64 l4_csum_flags(struct frame *f, __u64 flags, int *skip)
{
	*skip = 0;
	if (f->proto == IPPROTO_UDP) {
		// As parsed: a rewrite never makes a UDP checksum 0 (BPF_F_MARK_MANGLED_0).
		*skip = *(__u16 *)(f->l4h + 6) == 0;
		flags |= BPF_F_MARK_MANGLED_0;
	}
	return flags;
}

// rewrite_ip4 replaces the IPv4 address at off of the IP header with the last 4 bytes of
// addr16 and fixes the IP checksum and the L4 one (its pseudo-header; ICMP has none).
static __always_inline int rewrite_ip4(struct __sk_buff *skb, struct frame *f, __u32 off, const __u8 *addr16)
{
	__u32 old_ip = off == 12 ? f->ip4[0] : f->ip4[1], new_ip;
	__builtin_memcpy(&new_ip, addr16 + 12, 4);
	f->word = new_ip;
	if (old_ip == new_ip)
		return 0;
	if (f->proto != IPPROTO_ICMP) {
		int skip;
		__u64 flags = l4_csum_flags(f, BPF_F_PSEUDO_HDR | 4, &skip);
		if (flags == (__u64)-1 || (!skip && bpf_l4_csum_replace(skb, f->csum_off, old_ip, new_ip, flags)))
			return -1;
	}
	if (bpf_l3_csum_replace(skb, f->l3 + 10, old_ip, new_ip, 4))
		return -1;
	return bpf_skb_store_bytes(skb, f->l3 + off, &f->word, 4, 0);
}

// rewrite_ip6 replaces the IPv6 address at off of the IP header (old16, as parsed) with addr16
// and fixes the L4 checksum's pseudo-header (ICMPv6 has one too). IPv6 has no header checksum,
// so the address is stored with BPF_F_RECOMPUTE_CSUM: for a CHECKSUM_COMPLETE frame, skb->csum
// then follows the new bytes, as bpf_l4_csum_replace makes it follow the checksum field
// (without BPF_F_IPV6, which kernels before 6.16 refuse, the two together are exact).
static __always_inline int rewrite_ip6(struct __sk_buff *skb, struct frame *f, __u32 off, const __u8 *old16, const __u8 *addr16)
{
	const __u16 *from = (const __u16 *)old16, *to = (const __u16 *)addr16;
	// The difference of the two addresses' sums, for the pseudo-header: what bpf_csum_diff
	// would return, without the call.
	__u32 diff = 0, same = 1;
#pragma unroll
	for (int i = 0; i < 8; i++) {
		diff += (__u16)~from[i] + to[i];
		same &= from[i] == to[i];
	}
	if (same)
		return 0;
	int skip;
	__u64 flags = l4_csum_flags(f, BPF_F_PSEUDO_HDR, &skip);
	if (flags == (__u64)-1)
		return -1;
	if (!skip && bpf_l4_csum_replace(skb, f->csum_off, 0, diff, flags))
		return -1;
	return bpf_skb_store_bytes(skb, f->l3 + off, addr16, 16, BPF_F_RECOMPUTE_CSUM);
}

// rewrite_port replaces the frame's source port with port on the way out (dst 0), its
// destination port on the way in (dst 1), and fixes the L4 checksum. For ICMP the port is the
// echo identifier, which the checksum covers without a pseudo-header, and it is rewritten only
// in an echo request on the way out (its sender's choice) and in an echo reply on the way in
// (the identifier the peer answered).
static __always_inline int rewrite_port(struct __sk_buff *skb, struct frame *f, int dst, __u16 port)
{
	__u8 id_type = f->v6 ? (dst ? ICMPV6_ECHO_REPLY : ICMPV6_ECHO_REQUEST) : (dst ? ICMP_ECHOREPLY : ICMP_ECHO);
	int icmp = f->proto == IPPROTO_ICMP || f->proto == IPPROTO_ICMPV6;
	if (icmp && f->icmp_type != id_type)
		return 0;
	__u32 port_off = icmp ? f->l4 + 4 : f->l4 + (dst ? 2 : 0);
	__u16 old_port = dst ? f->dport : f->sport; // dst is a constant where this is inlined
	if (old_port == port)
		return 0;
	int skip;
	__u64 flags = l4_csum_flags(f, 2, &skip);
	if (flags == (__u64)-1 || (!skip && bpf_l4_csum_replace(skb, f->csum_off, old_port, port, flags)))
		return -1;
	f->half = port;
	return bpf_skb_store_bytes(skb, port_off, &f->half, 2, 0);
}

// rewrite_addr replaces the frame's source address and port with addr16 and port on the way
// out (dst 0), its destination's on the way in (dst 1), and fixes the checksums.
static __always_inline int rewrite_addr(struct __sk_buff *skb, struct frame *f, const struct flow_key *k, int dst, const __u8 *addr16, __u16 port)
{
	int err = f->v6 ? rewrite_ip6(skb, f, dst ? 24 : 8, dst ? k->dst : k->src, addr16) : rewrite_ip4(skb, f, dst ? 16 : 12, addr16);
	if (err)
		return -1;
	return rewrite_port(skb, f, dst, port);
}

// csum_replace4 returns an Internet checksum (as stored) after the 4 bytes it covers changed
// from from to to (as stored): RFC 1624's HC' = ~(~HC + ~m + m'), 16 bits at a time. The sum
// is the same in either byte order, so the words are taken as they lie in memory.
static __always_inline __u16 csum_replace4(__u16 check, __u32 from, __u32 to)
{
	__u32 sum = (__u16)~check;
	sum += (__u16)~(from & 0xffff) + (__u16)~(from >> 16);
	sum += (to & 0xffff) + (to >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return ~sum;
}

// How rewrite_head4 treats a frame's Ethernet header.
enum link_header {
	LINK_KEEP,   // as it is: the frame goes to a device without one (bpf_redirect pulls it)
	LINK_SET,    // the entry's MACs, written only when the frame's differ
	LINK_PUSHED, // just pushed in front of a bare IP packet (zeros): the MACs and the type
};

// rewrite_head4 translates an IPv4 frame with an Ethernet header and an IP header without
// options, the frames the fast path carries most: the L4 checksum through the helper (it knows
// how the skb's checksum is kept), then the MACs, the address and the IP checksum in one store
// of both headers. The IP header sums to the same before and after, so a CHECKSUM_COMPLETE
// skb's sum stays right; a frame that needs no change is not written (a clone's headers are
// then not copied). It returns 0, -1 when the L4 rewrite failed, -2 when the headers could not
// be written.
static __always_inline int rewrite_head4(struct __sk_buff *skb, struct frame *f, struct flow_val *v, int dst, enum link_header link)
{
	__u8 *h = f->hdr;
	if (load_hdr(skb, 0, 0, h, ETH_HLEN + 20))
		return -1;
	int dirty = 0;
	if (v->flags & FP_NAT) {
		__u32 old_ip = dst ? f->ip4[1] : f->ip4[0], new_ip;
		__builtin_memcpy(&new_ip, v->addr + 12, 4);
		if (old_ip != new_ip) {
			if (f->proto != IPPROTO_ICMP) {
				int skip;
				__u64 flags = l4_csum_flags(f, BPF_F_PSEUDO_HDR | 4, &skip);
				if (!skip && bpf_l4_csum_replace(skb, f->csum_off, old_ip, new_ip, flags))
					return -1;
			}
			__u16 *check = (__u16 *)(h + ETH_HLEN + 10);
			*check = csum_replace4(*check, old_ip, new_ip);
			__builtin_memcpy(h + ETH_HLEN + (dst ? 16 : 12), &new_ip, 4);
			dirty = 1;
		}
		if (rewrite_port(skb, f, dst, v->port))
			return -1;
	}
	if (link == LINK_PUSHED) {
		h[12] = ETH_P_IP >> 8;
		h[13] = ETH_P_IP & 0xff;
	}
	if (link != LINK_KEEP && (link == LINK_PUSHED || !mac_equal(h, v->dst_mac) || !mac_equal(h + ETH_ALEN, v->src_mac))) {
		mac_copy(h, v->dst_mac);
		mac_copy(h + ETH_ALEN, v->src_mac);
		dirty = 1;
	}
	if (dirty && bpf_skb_store_bytes(skb, 0, h, ETH_HLEN + 20, 0))
		return -2;
	return 0;
}

static __always_inline void account(struct __sk_buff *skb, struct flow_val *v, __u64 now)
{
	__sync_fetch_and_add(&v->packets, skb->gso_segs > 1 ? skb->gso_segs : 1);
	__sync_fetch_and_add(&v->bytes, skb->len);
	v->last_seen = now;
}

// track_host records, for an out entry, what the host's TCP segment says about its side.
static __always_inline void track_host(struct __sk_buff *skb, struct frame *f, struct flow_val *v)
{
	const __u8 *h = f->l4h;
	v->seq_end = tcp_seq_end(skb, f);
	v->ack = bpf_ntohl(*(__u32 *)(h + 8));
	v->win = bpf_ntohs(*(__u16 *)(h + 14));
}

// mark_fin records in the entry that the kernel carried a TCP FIN this way (and, for the wire's
// first, where it ends), for user space to read: it tracks the connection's close without
// seeing it. The wire's FIN counts once the host acknowledges exactly its end, so a forged FIN
// carried after the real one must not move that end (needs_slow_path gives user space those
// that differ; with no user space they are carried and change nothing).
static __always_inline void mark_fin(struct __sk_buff *skb, struct frame *f, struct flow_val *v, int in)
{
	if (f->proto != IPPROTO_TCP || !(f->tcp_flags & TCP_FIN))
		return;
	if (in && !(v->flags & FP_FIN))
		v->seq_end = tcp_seq_end(skb, f);
	// A plain store: only the programs write an installed entry's flags, and every writer
	// sets the same bit (user space replaces whole entries).
	if (!(v->flags & FP_FIN))
		v->flags |= FP_FIN;
}

// orphaned reports whether an entry is one no l2shim will remove: the flow has been quiet for
// cfg_orphan_idle_ns and user space is gone.
static __always_inline int orphaned(struct flow_val *v, __u64 now)
{
	return v->last_seen && (__s64)(now - v->last_seen) > (__s64)cfg_orphan_idle_ns && !shim_alive(now);
}

// reopened_orphan reports whether a frame is the SYN of a new connection on the tuple of one
// the host closed (its FIN is marked in the out entry) while no l2shim runs: a new flow, which
// takes the host's routing, not the old connection's translation.
static __always_inline int reopened_orphan(struct flow_val *v, struct frame *f, __u64 now)
{
	return f->proto == IPPROTO_TCP && (v->flags & FP_FIN) && (f->tcp_flags & (TCP_SYN | TCP_ACK)) == TCP_SYN && !shim_alive(now);
}

// push_eth_proto puts an Ethernet header (dst, src, proto) in front of a bare IP packet; f is
// the frame's working memory.
static __always_inline int push_eth_proto(struct __sk_buff *skb, struct frame *f, const __u8 *dst, const __u8 *src, __u16 proto)
{
	__u8 *h = f->eth;
	mac_copy(h, dst);
	mac_copy(h + ETH_ALEN, src);
	h[12] = proto >> 8;
	h[13] = proto & 0xff;
	if (bpf_skb_change_head(skb, ETH_HLEN, 0))
		return -1;
	return bpf_skb_store_bytes(skb, 0, h, ETH_HLEN, 0);
}

// set_macs writes an Ethernet frame's destination and source MAC with one store.
static __always_inline int set_macs(struct __sk_buff *skb, struct frame *f, const __u8 *dst, const __u8 *src)
{
	__u8 *macs = f->eth;
	mac_copy(macs, dst);
	mac_copy(macs + ETH_ALEN, src);
	return bpf_skb_store_bytes(skb, 0, macs, 2 * ETH_ALEN, 0);
}

// set_link_header gives a frame of a flow the link-layer header the entry's device needs: its
// MACs on an Ethernet device (pushed first when the frame came bare from an L3 device), none on
// an L3 device (bpf_redirect to a device without one pulls it).
static __always_inline int set_link_header(struct __sk_buff *skb, struct flow_val *v, struct frame *f)
{
	if (v->flags & FP_TO_L3)
		return 0;
	if (f->l3 == 0)
		return push_eth_proto(skb, f, v->dst_mac, v->src_mac, f->v6 ? ETH_P_IPV6 : ETH_P_IP);
	// Already right (a flow placed where the host sent it): no write, which for a clone (a
	// TCP segment the host keeps for retransmission) would copy its headers.
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	if (data + 2 * ETH_ALEN <= end && mac_equal(data, v->dst_mac) && mac_equal((__u8 *)data + ETH_ALEN, v->src_mac))
		return 0;
	return set_macs(skb, f, v->dst_mac, v->src_mac);
}

// translate gives a frame of a flow its entry's translation (dst: the destination's, on the
// way in) and the link-layer header of the device it goes to. It returns 0; -1 when the
// translation failed (the slow path takes the frame); -2 when the frame is translated but its
// link-layer header could not be written (never let out half translated: drop it).
static __always_inline int translate(struct __sk_buff *skb, struct frame *f, const struct flow_key *k, struct flow_val *v, int dst)
{
	if (!f->v6 && f->l4 == f->l3 + 20) {
		int to_l3 = v->flags & FP_TO_L3;
		if (f->l3 == ETH_HLEN)
			return rewrite_head4(skb, f, v, dst, to_l3 ? LINK_KEEP : LINK_SET);
		if (!to_l3) {
			// A bare packet from an L3 device to an Ethernet one: its header first, then
			// the same single store. Past the push the frame cannot go back (-2).
			if (bpf_skb_change_head(skb, ETH_HLEN, 0))
				return -1;
			f->l3 += ETH_HLEN;
			f->l4 += ETH_HLEN;
			f->csum_off += ETH_HLEN;
			return rewrite_head4(skb, f, v, dst, LINK_PUSHED) ? -2 : 0;
		}
	}
	if ((v->flags & FP_NAT) && rewrite_addr(skb, f, k, dst, v->addr, v->port))
		return -1;
	if (set_link_header(skb, v, f))
		return -2;
	return 0;
}

// divert redirects a frame (IPv6 when v6) to the slow path through capture veth near end
// ifindex. A packet from an L3 device first gets the Ethernet header user space expects: from
// the device to its gateway (egress) or the other way (ingress). When that fails the packet
// passes.
static __always_inline int divert(struct __sk_buff *skb, struct frame *f, struct iface_cfg *ifc, __u32 ifindex, int egress, __u32 stat, int v6)
{
	if (ifc->flags & IFC_L3) {
		__u16 proto = v6 ? ETH_P_IPV6 : ETH_P_IP;
		int err = egress ? push_eth_proto(skb, f, ifc->gw_mac, ifc->mac, proto) : push_eth_proto(skb, f, ifc->mac, ifc->gw_mac, proto);
		if (err)
			return TCX_NEXT;
	}
	count(stat);
	return bpf_redirect(ifindex, 0);
}

// host_queue is the capture veth of the host's frames: a flood from the wire fills the other.
static __always_inline __u32 host_queue(struct iface_cfg *ifc)
{
	return ifc->capture_host ? ifc->capture_host : ifc->capture;
}

// is_link_local reports whether a 16-byte address is in fe80::/10.
static __always_inline int is_link_local(const __u8 *a)
{
	return a[0] == 0xfe && (a[1] & 0xc0) == 0x80;
}

// owned6 reports whether an IPv6 packet (its header in ip6, at offset nh) is one l2shim may
// take: not multicast, not link-local at either end, not MLD, router or neighbour discovery.
static __always_inline int owned6(struct __sk_buff *skb, __u32 nh, const __u8 *ip6)
{
	const __u8 *src = ip6 + 8, *dst = ip6 + 24;
	if ((ip6[0] >> 4) != 6 || dst[0] == 0xff || is_link_local(dst) || is_link_local(src))
		return 0;
	if (ip6[6] == IPPROTO_ICMPV6) {
		__u8 type;
		if (bpf_skb_load_bytes(skb, nh + 40, &type, 1))
			return 0;
		if (type >= 130 && type <= 143)
			return 0; // MLD, router and neighbour discovery, redirects
	}
	return 1;
}

// iface_of returns what the programs know about the interface the frame is on (nil: not an
// external interface), its key in f's working memory.
static __always_inline struct iface_cfg *iface_of(struct __sk_buff *skb, struct frame *f)
{
	f->word = skb->ifindex;
	return bpf_map_lookup_elem(&l2s_ifaces, &f->word);
}

// host_frame reports whether a frame leaving ifc is the host's own: on Ethernet, not a
// macvlan's or a bridged one (its source is ifc's MAC); on an L3 device, every packet.
static __always_inline int host_frame(struct __sk_buff *skb, struct iface_cfg *ifc)
{
	if (ifc->flags & IFC_L3)
		return 1;
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	return data + ETH_HLEN <= end && mac_equal((__u8 *)data + ETH_ALEN, ifc->mac);
}

// to_gateway reports whether a host's frame leaving ifc goes to a gateway's MAC (on an L3
// device, every packet goes to its one gateway). Only the slow path asks.
static __always_inline int to_gateway(struct __sk_buff *skb, struct iface_cfg *ifc)
{
	if (ifc->flags & IFC_L3)
		return 1;
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	if (data + ETH_ALEN > end)
		return 0;
	__u64 gw = 0;
	__builtin_memcpy(&gw, data, ETH_ALEN);
	return bpf_map_lookup_elem(&l2s_gws, &gw) != 0;
}

// parse_frame clears f's parsed part and parses the frame's IP header at l3 and what follows
// into f and k, and records whether l2shim may touch the frame at all (f->owned): every IPv4
// packet, IPv6 ones but for what owned6 leaves alone. It returns 1 when a flow entry could
// cover the frame.
static __always_inline int parse_frame(struct __sk_buff *skb, __u32 l3, int v6, struct frame *f, struct flow_key *k)
{
	__builtin_memset(f, 0, FRAME_PARSED);
	f->owned = 1;
	if (!v6)
		return parse4(skb, l3, f, k);
	const __u8 *ip6 = f->hdr;
	if (load_hdr(skb, l3, ETH_HLEN, f->hdr, 40))
		return f->owned = 0;
	if (!owned6(skb, l3, ip6))
		return f->owned = 0;
	return parse6(skb, l3, ip6, f, k);
}

// source6 sends an IPv6 packet whose source address belongs to another uplink's prefixes out
// through that uplink's router, whatever interface the host's routing chose (that uplink's ISP
// is the one that accepts the address), without user space. It returns -1 when the packet's
// source is of no other uplink.
static __always_inline int source6(struct __sk_buff *skb, struct frame *f, __u32 l3)
{
	f->p6.prefixlen = 128;
	if (bpf_skb_load_bytes(skb, l3 + 8, f->p6.addr, 16))
		return -1;
	struct uplink6 *u = bpf_map_lookup_elem(&l2s_source6, &f->p6);
	if (!u || u->ifindex == skb->ifindex)
		return -1;
	if (!(u->flags & IFC_L3)) {
		if (l3 == 0) {
			if (push_eth_proto(skb, f, u->dst_mac, u->src_mac, ETH_P_IPV6))
				return TCX_NEXT;
		} else if (set_macs(skb, f, u->dst_mac, u->src_mac)) {
			return TCX_NEXT;
		}
	}
	count(STAT_SOURCE6);
	skb->mark = (skb->mark & ~cfg_mask) | cfg_mark;
	return bpf_redirect(u->ifindex, 0);
}

// l2shim_egress handles what the host sends. A frame of a flow with an out entry is finished
// here; an IPv6 packet from another uplink's address leaves through that uplink (source6);
// other frames to a gateway's MAC go to user space, which places their flows. Neighbour
// discovery, MLD, router solicitations, link-local and multicast IPv6 traffic (DHCPv6
// included) are never touched.
SEC("tcx/egress")
int l2shim_egress(struct __sk_buff *skb)
{
	if (marked(skb) || skb->vlan_present)
		return TCX_NEXT;
	struct scratch *s = scratch(SCRATCH_OUT);
	if (!s)
		return TCX_NEXT;
	struct frame *f = &s->f;
	struct flow_key *k = &s->k;
	struct iface_cfg *ifc = iface_of(skb, f);
	if (!ifc)
		return TCX_NEXT;
	int v6 = skb->protocol == bpf_htons(ETH_P_IPV6);
	if (!v6 && skb->protocol != bpf_htons(ETH_P_IP))
		return TCX_NEXT;
	if (!host_frame(skb, ifc))
		return TCX_NEXT;
	f->l3_off = (ifc->flags & IFC_L3) ? 0 : ETH_HLEN;
	f->is_v6 = v6;
	f->now = clock_now();

	if (parse_frame(skb, f->l3_off, v6, f, k)) {
		struct flow_val *v = bpf_map_lookup_elem(&l2s_flows_out, k);
		if (v && (orphaned(v, f->now) || reopened_orphan(v, f, f->now))) {
			bpf_map_delete_elem(&l2s_flows_out, k);
			v = 0;
		}
		if (v && !needs_slow_path(skb, f, v, f->now, 0) && fits(skb, f, v->mtu)) {
			int err = translate(skb, f, k, v, 0);
			if (err == -1)
				goto slow;
			if (err)
				return TCX_DROP;
			if (f->proto == IPPROTO_TCP)
				track_host(skb, f, v);
			mark_fin(skb, f, v, 0);
			account(skb, v, f->now);
			count(STAT_FAST_OUT);
			if (v->ifindex != skb->ifindex) {
				// Out of another uplink than the host chose (or than the one it sends
				// a connection's answers on): that uplink's egress program passes it.
				skb->mark = (skb->mark & ~cfg_mask) | cfg_mark;
				return bpf_redirect(v->ifindex, 0);
			}
			return TCX_NEXT;
		}
	}
	if (!f->owned)
		return TCX_NEXT;
slow:
	// Once l2shim is gone (or hung), the host's own routing: nothing is diverted, and IPv6
	// leaves where the host sent it.
	if (!shim_alive(f->now))
		return TCX_NEXT;
	if (f->is_v6) {
		int ret = source6(skb, f, f->l3_off);
		if (ret >= 0)
			return ret;
	}
	if (to_gateway(skb, ifc))
		return divert(skb, f, ifc, host_queue(ifc), 1, STAT_DIVERT_OUT, f->is_v6);
	return TCX_NEXT;
}

// l2shim_ingress handles what the wire delivers to the host: a frame of a flow with an in entry
// is finished here, the others go to user space (IPv6 but for what owned6 leaves alone).
SEC("tcx/ingress")
int l2shim_ingress(struct __sk_buff *skb)
{
	if (marked(skb)) {
		// Re-injected by the shim or redirected here by the fast path: the host gets it,
		// without l2shim's mark bits.
		skb->mark &= ~cfg_mask;
		return TCX_NEXT;
	}
	if (skb->vlan_present || skb->pkt_type != 0 /* PACKET_HOST */)
		return TCX_NEXT;
	struct scratch *s = scratch(SCRATCH_IN);
	if (!s)
		return TCX_NEXT;
	struct frame *f = &s->f;
	struct flow_key *k = &s->k;
	struct iface_cfg *ifc = iface_of(skb, f);
	if (!ifc)
		return TCX_NEXT;
	int v6 = skb->protocol == bpf_htons(ETH_P_IPV6);
	if (!v6 && skb->protocol != bpf_htons(ETH_P_IP))
		return TCX_NEXT;
	f->l3_off = 0;
	if (!(ifc->flags & IFC_L3)) {
		void *data = (void *)(long)skb->data;
		void *end = (void *)(long)skb->data_end;
		if (data + ETH_HLEN > end || !mac_equal(data, ifc->mac))
			return TCX_NEXT;
		f->l3_off = ETH_HLEN;
	}
	f->is_v6 = v6;
	f->now = clock_now();

	if (parse_frame(skb, f->l3_off, v6, f, k)) {
		struct flow_val *v = bpf_map_lookup_elem(&l2s_flows_in, k);
		if (v && orphaned(v, f->now)) {
			bpf_map_delete_elem(&l2s_flows_in, k);
			v = 0;
		}
		if (v && (v->flags & FP_DIVERT)) {
			if (shim_alive(f->now))
				return divert(skb, f, ifc, host_queue(ifc), 0, STAT_DIVERT_IN, f->is_v6);
			return TCX_NEXT;
		}
		if (v && !needs_slow_path(skb, f, v, f->now, 1)) {
			int err = translate(skb, f, k, v, 1);
			if (err == -1)
				goto slow;
			if (err)
				return TCX_DROP;
			mark_fin(skb, f, v, 1);
			account(skb, v, f->now);
			count(STAT_FAST_IN);
			if (v->ifindex != skb->ifindex) {
				// Into the interface the host sent the flow's frames on; its ingress
				// program clears the mark and lets the frame up.
				skb->mark = (skb->mark & ~cfg_mask) | cfg_mark;
				return bpf_redirect(v->ifindex, BPF_F_INGRESS);
			}
			return TCX_NEXT;
		}
	}
	if (!f->owned)
		return TCX_NEXT;
slow:
	if (shim_alive(f->now))
		return divert(skb, f, ifc, ifc->capture, 0, STAT_DIVERT_IN, f->is_v6);
	return TCX_NEXT;
}

// l2shim_inject sits on a capture veth's near end: what the shim writes to the far end enters
// the external interface the veth belongs to, as if it came from the wire.
SEC("tcx/ingress")
int l2shim_inject(struct __sk_buff *skb)
{
	__u32 ifindex = skb->ifindex;
	__u32 *ext = bpf_map_lookup_elem(&l2s_inject, &ifindex);
	if (!ext)
		return TCX_DROP;
	return bpf_redirect(*ext, BPF_F_INGRESS);
}

// l2shim_wire sits on the near end of an L3 device's host capture pair: what the shim writes
// to the far end leaves through the device. AF_PACKET cannot write it there itself with a
// virtio-net header (PACKET_VNET_HDR needs SOCK_RAW, and SOCK_RAW takes the first bytes for a
// PPP device's header); bpf_redirect drops the Ethernet header, and the device's queue
// segments and checksums what the device cannot.
SEC("tcx/ingress")
int l2shim_wire(struct __sk_buff *skb)
{
	__u32 ifindex = skb->ifindex;
	__u32 *ext = bpf_map_lookup_elem(&l2s_inject, &ifindex);
	if (!ext)
		return TCX_DROP;
	return bpf_redirect(*ext, 0);
}

// l2shim_sink sits on a capture veth's far end: the shim's packet socket has read the frame
// (packet taps run first); the host must not receive it a second time.
SEC("tcx/ingress")
int l2shim_sink(struct __sk_buff *skb)
{
	return TCX_DROP;
}

char __license[] SEC("license") = "Dual MIT/GPL";
