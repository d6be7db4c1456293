// Package control is l2shim's control socket: `l2shim status`, `reload`, `drain` and `undrain`
// talk to a running instance through it, one JSON request per connection and one JSON
// response. It owns the protocol (Request, Response), the server (Listen, Serve), the client
// (Call), the Status a running instance reports and the table WriteTable prints for a person.
// It holds no state of its own: the shim implements Handler and answers from its published
// snapshot and atomic counters, the command line is the client, and the metrics package reads
// the same Status. docs/commands.md describes the protocol for scripts.
//
// The socket is a Unix stream socket created with mode 0660, so root and the socket's group
// can use it. The server answers from the handler, which must not block the datapath: the shim
// builds a status snapshot from atomic counters and control-plane state only.
package control
