// Package failover holds the policy that decides which gateways may take new flows and which
// one a new flow gets: selection (Pick: stable, weighted per-flow placement with rendezvous
// hashing in load-balance mode, the first usable gateway in failover mode), failure accounting
// (Health: attempts and failures per gateway in a sliding window, benching), probe verdicts
// (ProbeState: up or down from rounds of ARP and ICMP probe results) and a gateway's overall
// state with its reason (Evaluate). It is pure logic on numbers and times the caller supplies:
// the datapath engine calls Pick and Health as it places flows and sees their answers, the
// shim's prober feeds ProbeState with the results of the probes it sends, and the status
// snapshot asks Evaluate for each gateway's state. It sends nothing, reads no clock and
// allocates nothing on the per-flow path.
package failover
