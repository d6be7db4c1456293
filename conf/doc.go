// Package conf reads, checks and holds l2shim's TOML configuration: the [shim], [failover] and
// [conntrack] tables, the [[gateway]] and [[rule]] arrays, their defaults and their limits. The
// command line (check, run) and the shim (every reload) load a file with Load and check it
// against the running host with CheckHost, given a Host that the shim implements from netlink
// and /proc; the datapath, filters and conntrack packages then read the loaded Config. This
// package never touches the host itself and knows nothing of frames. docs/configuration.md is
// the user's reference to what it accepts.
//
// Load and Parse decode a file strictly: an unknown key, a value of the wrong type or out of
// range, a duplicate gateway name or a route-to rule naming an unknown or ambiguous gateway is an
// error naming the file, the line and the key, and every such problem is reported at once.
// CheckHost then checks a loaded configuration against the interfaces of the host it would run
// on.
package conf
