// Package dist holds what `make install` puts on a host besides the binary: the example
// configuration l2shim.toml (installed as /etc/l2shim/l2shim.toml), the systemd unit
// l2shim.service, and captest.sh, which proves the unit's capability set. It has no Go code of
// its own; its tests check that the example loads, names every key the conf package knows and
// agrees with the defaults, that the unit agrees with the command line and the example, and (as
// root) run captest.sh.
package dist
