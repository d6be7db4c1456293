// Package datapath is l2shim's decision engine: for every frame the kernel hands over it
// parses the frame, finds or creates its flow, decides which gateway the flow uses, rewrites
// the frame (MACs, NAT, checksums, MSS, GSO size) and says where it goes. It also keeps what
// those decisions depend on: the gateways' usability (links, ARP, drains, probe verdicts,
// failure accounting), connection-request rotation, the replies to the shim's own probes, and
// the handling of a down gateway's flows.
//
// It does no I/O and imports no kernel plumbing (no netlink, no eBPF, no raw sockets), so it
// is tested without root by feeding it frames built in memory. The shim package owns the
// sockets and calls in through a few methods: ProcessBatch for each batch of frames; for the
// control plane New and Reconfigure (a Plan built by PlanFrom), SetLink and SetAddressing
// (netlink), ResolvedMAC and ARPAnswered (ARP), AddProbe, StartProbeRound, ProbeFrame,
// ProbeResults and ProbeVerdict (probes), SetDrained, HealthTick, Evacuate, Expire, and
// Snapshot and Counters (status). One mutex guards the engine; every method takes it itself,
// and it is never held across I/O.
//
// The files follow a frame: batch.go (one call per batch, segmentation of tunnels'
// super-frames), process.go (decode and direction), egress.go (the host's frames: decide and
// NAT), ingress.go (the wire's frames: reverse NAT, inbound flows), icmp.go (ICMP errors
// quoting a flow), frag.go (later fragments), rotate.go (connection-request rotation and late
// answers), then the control side: health.go (benching, probe verdicts, evacuation), probe.go
// (probe targets and their replies), state.go (links, addresses, MACs, drains), plan.go
// (configuration and reload), snapshot.go (status) and counters.go.
package datapath
