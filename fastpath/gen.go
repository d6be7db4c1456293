package fastpath

// The programs are C (bpf/fastpath.c), compiled for both byte orders by clang through
// cilium/ebpf's bpf2go; the objects are committed, so building l2shim needs no clang.
// `make generate` runs this and CI checks the committed objects are current.
//go:generate go tool bpf2go -cc clang-14 -cflags "-O2 -g -Wall -Werror -Ibpf/include" -type flow_key -type flow_val -type iface_cfg fastpath bpf/fastpath.c
