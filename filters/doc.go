// Package filters evaluates the [[rule]] tables of the configuration, the step that comes right
// after the on-link check when a new flow is decided: the datapath asks it once per new flow
// which rule, if any, the flow's first frame matches, and keeps the verdict in the flow so that
// later frames never pay for matching again. Acting on the verdict (placing, passing or
// dropping the flow) is the datapath's business, not this package's.
//
// Rules are evaluated in file order and the first match wins, as in IPNetRouterX's filter table.
// A configuration may hold hundreds or thousands of rules (generated block lists, per-customer
// pins), so matching must not cost a scan of every rule: Compile turns the rules into a
// bit-vector classifier whose lookup is a handful of binary searches and an AND of short
// bitsets, and which allocates nothing, so it can sit on the frame loop's hot path.
//
// Rules cover both families: a rule whose src or dst is an IPv4 prefix matches IPv4 flows, one
// with IPv6 prefixes IPv6 flows, and one with neither matches both; protocol "icmp" is ICMPv6
// for IPv6 flows.
//
// The package also keeps per-rule counters (flows, packets, bytes) that the datapath bumps with
// atomic adds and that status reads without stopping it.
package filters
