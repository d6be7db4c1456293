// Package metrics exports a running l2shim's state to Prometheus ([shim] metrics =
// "HOST:PORT", served at /metrics). The shim creates the Exporter, serves it and feeds it probe
// round-trip times; every other series is read at scrape time from the same control.Status
// `l2shim status` shows, so scraping never touches the datapath and the package keeps no state
// beyond the round-trip histogram. docs/commands.md lists the series.
package metrics
