// Package dist holds what `make install` puts on a host besides the binary: the example
// configuration l2shim.toml (installed as /etc/l2shim/l2shim.toml), the systemd unit
// l2shim.service, the manual page l2shim.8 (cmd/l2shim's TestManPage keeps it naming every
// command and flag), and captest.sh, which proves the unit's capability set; and the Debian
// package `make deb` builds: mkdeb.sh (the same tree as `make install PREFIX=/usr`, packed by
// dpkg-deb), version.sh (git describe as a Debian version) and the maintainer scripts in deb/.
// It has no Go code of its own; its tests check that the example loads, names every key the
// conf package knows and agrees with the defaults, that the unit agrees with the command line
// and the example, and (as root) run captest.sh; deb_test.go builds the amd64 and arm64
// packages and inspects, installs (dpkg --root), upgrades, removes and purges them.
package dist
