// Package conntrack is l2shim's flow table: every flow the datapath has seen, keyed twice (as the
// host sends it and as the wire returns it), with the decision made for it when it was new (its
// gateway, its NAT mapping, a rule's verdict), its TCP state and its counters. The datapath
// engine is its only user: it looks flows up, inserts, re-keys a flow that moves to another
// gateway, reports each frame with Seen and calls Expire from its periodic tick. The table
// decides nothing about where a flow goes; it keeps the flows within a hard bound and forgets
// them when they have been idle for their state's timeout.
//
// The table is not safe for concurrent use; the datapath serialises access to it (only the
// counters in Table.C may be read from anywhere). Flows live in a chunked slab so a *Flow stays
// valid until the flow is removed, and keys are comparable structs without pointers (16-byte
// addresses: IPv4 and IPv6 flows share the table), found through two indexes that map a hash to
// a slot, so lookups do not allocate and the garbage collector never scans the table.
//
// # Bounded
//
// A table never holds more than its maximum number of flows. When it is full, Insert evicts one
// flow to make room, choosing from the first non-empty group below, the least recently seen
// first:
//
//  1. closed TCP flows (an RST, or a FIN each way): they only wait for stragglers;
//  2. unconfirmed flows: no reply yet, a TCP handshake not complete, a UDP (or other) flow
//     whose replies have not kept it busy for two seconds (a DNS query and its answer); this is
//     where a SYN or UDP flood lands, so the oldest unreplied flow goes first;
//  3. half-closed TCP flows and replied ICMP echo flows;
//  4. assured UDP (or other) flows the wire opened: a host that answers datagrams (a DNS or
//     game server) would otherwise let anyone who spoofs them pin the table.
//
// Established TCP flows and the host's own assured UDP (or other) flows are never evicted:
// when nothing else is left, Insert refuses the new flow with ErrFull. A flood therefore cannot push out the connections that work; it can only compete
// with other unconfirmed flows. That is nf_conntrack's early_drop rule (only flows that are not
// ASSURED may go), made deterministic.
//
// # Expiry
//
// Each flow sits on one of a few intrusive doubly linked lists threaded through the slab by
// int32 indexes, one list per idle timeout (TCP handshake, established, closing, closed; UDP
// unconfirmed, assured; ICMP; other). A list holds flows of a single timeout in the order they
// were last seen, so the flows to expire are always at its head: Expire removes them in
// O(removed), never scans, and the same heads give eviction its victim in O(1).
//
// To keep the per-frame cost down, Seen moves a flow to the tail of its list only when its
// state's list changes or when the frame is the first in a new period of Resolution; within a
// period a flow keeps its place. The order is therefore by last-seen time rounded down to
// Resolution, and a flow is removed at the latest by the first Expire call (with enough budget)
// made more than Resolution after its timeout ran out: with the shim's 100 ms expiry tick, no
// flow outlives its timeout by more than about 170 ms.
package conntrack
