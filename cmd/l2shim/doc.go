// Command l2shim lets a Linux host with several uplinks use all of them: per-flow load balancing,
// failover, source-aware routing and route-to rules, below IP and beside an unmodified host
// stack. This package is only the command line: it parses the subcommands and their flags (run,
// check, status, flows, explain, top, events, drain, undrain, reload, demo), draws top's terminal
// view, loads and checks the configuration with conf, hands a checked configuration to shim for
// run, turns SIGINT and SIGTERM into an orderly stop and SIGHUP into a reload, talks to a running
// instance through control, and maps every outcome to an exit code: 0 success, 1 runtime failure,
// 2 bad usage or configuration. It makes no decision about frames. docs/commands.md is the user's
// reference.
package main
