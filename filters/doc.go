// Package filters will evaluate the [[rule]] tables of the configuration for each new flow:
// first match wins, actions route-to, pass and drop, the verdict kept in the flow.
//
// Not yet: conf parses and validates rules today, and `l2shim run` warns that they are not
// applied. The datapath's decide step (shim.Datapath.newOutbound) is where a rule's verdict will
// be consulted, before load balancing.
package filters
