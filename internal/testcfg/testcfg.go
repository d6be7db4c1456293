// Package testcfg holds the configuration text the project's unit tests share: two uplinks,
// eth0 and eth1, with one gateway each. It exists so that the fixture lives once; nothing but
// tests imports it.
package testcfg

// TwoGateways is two [[gateway]] tables: eth0's gateway 10.1.0.1 (named "eth0" by default) and
// "isp-b", 10.2.0.1 on eth1. isp-b comes last, so a test may append keys to it. Line 1 is the
// first [[gateway]] header.
const TwoGateways = `[[gateway]]
interface = "eth0"
address = "10.1.0.1"

[[gateway]]
name = "isp-b"
interface = "eth1"
address = "10.2.0.1"
`
