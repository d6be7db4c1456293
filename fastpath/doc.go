// Package fastpath is l2shim's in-kernel datapath: the TCX programs attached to each external
// interface (bpf/fastpath.c) and the maps they share with user space. The programs finish
// every frame of an installed flow in the kernel (MACs, source NAT and its reverse, checksums
// for full and partial sums, redirect) and divert the rest to the slow path, the AF_PACKET
// sockets and the decision engine. The engine decides; this package only installs, removes
// and reads flow entries, and says which interfaces and gateway MACs l2shim owns.
//
// Its lifecycle reads load, attach, close: Load builds the programs and maps from the embedded
// objects (pinned under a directory when asked, so a later process adopts them), Attach puts
// the programs at the head of an interface's TCX chains, Close lets go of everything this
// process holds (pinned maps stay).
package fastpath
