#!/bin/sh
# mkdeb.sh: build the l2shim Debian package with dpkg-deb (`make deb` runs it).
#
#   dist/mkdeb.sh [-a ARCH] [-v VERSION] [-o OUTDIR]
#
#   -a ARCH     amd64 or arm64 (default: go env GOARCH); the binary is cross-built for
#               linux/ARCH, static (CGO_ENABLED=0), with -trimpath, stripped (-s -w)
#   -v VERSION  the Debian version (default: dist/version.sh, from git describe)
#   -o OUTDIR   where l2shim_VERSION_ARCH.deb goes (default: dist/out)
#
# The tree is what `make install DESTDIR=... PREFIX=/usr` installs, so the package and a source
# install agree: /usr/sbin/l2shim, /usr/lib/systemd/system/l2shim.service (ExecStart with
# /usr/sbin), /etc/l2shim/l2shim.toml (a conffile: dpkg keeps an edited one on upgrade), and
# /usr/share/doc/l2shim/ (README.md, LICENSE, the example l2shim.toml, docs/*.md), the manual
# page l2shim(8) (compressed here, as Debian policy wants), plus a copyright file with the
# licenses of the Go modules linked into the binary, a changelog, and a lintian override for the
# static binary (lintian then reports only the placeholder maintainer address, which
# DEB_MAINTAINER replaces). The maintainer scripts are dist/deb/{postinst,prerm,postrm}: nothing
# enables or starts l2shim; they stop and restart it through deb-systemd-invoke (policy-rc.d).
# Needs go, make and dpkg-deb; not root (dpkg-deb --root-owner-group makes the files root's).
set -eu
umask 022
cd "$(dirname "$0")/.."

GO=${GO:-go}
arch=
version=
out=dist/out
while getopts a:v:o: opt; do
	case $opt in
	a) arch=$OPTARG ;;
	v) version=$OPTARG ;;
	o) out=$OPTARG ;;
	*) echo "usage: $0 [-a ARCH] [-v VERSION] [-o OUTDIR]" >&2; exit 2 ;;
	esac
done
[ -n "$arch" ] || arch=$($GO env GOARCH)
case $arch in
amd64 | arm64) ;;
*) echo "mkdeb: architecture $arch: only amd64 and arm64 are packaged" >&2; exit 2 ;;
esac
[ -n "$version" ] || version=$(sh dist/version.sh)
if ! printf '%s\n' "$version" | grep -Eq '^([0-9]+:)?[0-9][A-Za-z0-9.+~-]*$'; then
	echo "mkdeb: \"$version\" is not a valid Debian version" >&2
	exit 2
fi

stage=$(mktemp -d "${TMPDIR:-/tmp}/l2shim-deb.XXXXXX")
trap 'rm -rf "$stage"' EXIT
trap 'exit 1' INT TERM HUP
root=$stage/root
install -d -m 0755 "$root"

# make install builds the binary (its build target, with this GOARCH and these flags) and lays
# out the tree; its hints are for a source install, so its standard output is dropped.
CGO_ENABLED=0 GOOS=linux GOARCH=$arch GOFLAGS="${GOFLAGS:+$GOFLAGS }-trimpath" \
	make --no-print-directory install DESTDIR="$root" PREFIX=/usr BIN="$stage/l2shim" \
	GO="$GO" VERSION="$version" GO_LDFLAGS="-s -w -X main.version=$version" >/dev/null

# license_text prints license file $1 for the copyright file. The Apache License 2.0 is in
# /usr/share/common-licenses on every Debian system (Debian policy 12.5 asks to refer to it):
# its terms are replaced by that reference, and what surrounds them (the project's own
# copyright lines, the appendix) is kept.
license_text() {
	if grep -q 'TERMS AND CONDITIONS FOR USE, REPRODUCTION, AND DISTRIBUTION' "$1" &&
		grep -q 'Version 2.0, January 2004' "$1" && grep -q 'END OF TERMS AND CONDITIONS' "$1"; then
		awk '
			/Apache License/ && !seen { seen = 1; skip = 1
				print "Licensed under the Apache License, Version 2.0. On Debian systems the complete"
				print "text is in /usr/share/common-licenses/Apache-2.0." }
			!skip { print }
			/END OF TERMS AND CONDITIONS/ { skip = 0 }
		' "$1"
	else
		cat "$1"
	fi
}

doc=$root/usr/share/doc/l2shim
{
	printf 'l2shim %s\n\nCopyright (c) 2026 The l2shim authors, under the MIT License:\n\n' "$version"
	cat LICENSE
	printf '\n/usr/sbin/l2shim is a static Go binary: it contains the Go standard library and\n'
	printf 'the Go modules below. Their licenses follow.\n'
	goroot=$($GO env GOROOT)
	printf '\n========== the Go standard library (%s) ==========\n\n' "$($GO env GOVERSION)"
	cat "$goroot/LICENSE"
	CGO_ENABLED=0 GOOS=linux GOARCH=$arch $GO list -deps \
		-f '{{with .Module}}{{if not .Main}}{{.Path}} {{.Version}} {{.Dir}}{{end}}{{end}}' ./cmd/l2shim |
		sort -u | while read -r path ver dir; do
			[ -n "$path" ] || continue
			printf '\n========== %s %s ==========\n\n' "$path" "$ver"
			found=
			for f in $(find "$dir" -maxdepth 1 -type f \( -iname 'licen[cs]e*' -o -iname 'copying*' \
				-o -iname 'notice*' -o -iname patents \) | sort); do
				[ -z "$found" ] || printf '\n---------- %s ----------\n\n' "${f##*/}"
				license_text "$f"
				found=1
			done
			if [ -z "$found" ]; then
				echo "mkdeb: $path $ver has no license file in $dir" >&2
				exit 1
			fi
		done
} >"$doc/copyright"
chmod 0644 "$doc/copyright"

# A native package's changelog (Debian policy 12.7): one entry for this build, dated by its
# commit when there is one, so the same commit gives the same package.
when=$(git log -1 --format=%aD 2>/dev/null || date -R)
maintainer=${DEB_MAINTAINER:-The l2shim authors <l2shim@localhost>}
printf 'l2shim (%s) unstable; urgency=medium\n\n  * Built from %s. What it does: /usr/share/doc/l2shim/README.md.\n\n -- %s  %s\n' \
	"$version" "$(git describe --always --dirty 2>/dev/null || echo "version $version")" "$maintainer" "$when" |
	gzip -9n >"$doc/changelog.gz"
chmod 0644 "$doc/changelog.gz"

gzip -9n "$root/usr/share/man/man8/l2shim.8"

# A Go binary is static by design (CGO_ENABLED=0); the modules it links are listed, with their
# licenses, in the copyright file.
install -d -m 0755 "$root/usr/share/lintian/overrides"
printf '%s\n' 'l2shim: statically-linked-binary [usr/sbin/l2shim]' >"$root/usr/share/lintian/overrides/l2shim"
chmod 0644 "$root/usr/share/lintian/overrides/l2shim"

size=$(du -sk "$root" | cut -f1)
install -d -m 0755 "$root/DEBIAN"
# (An unquoted here-document: no backquotes in it, they would run.)
cat >"$root/DEBIAN/control" <<EOF
Package: l2shim
Version: $version
Architecture: $arch
Maintainer: $maintainer
Installed-Size: $size
Section: net
Priority: optional
Description: per-flow load balancing and failover across several uplinks
 l2shim spreads a Linux host's new flows over several internet uplinks
 (gateways on Ethernet or L3 links), moves them off a failed uplink and
 answers connections through the uplink they arrived on. eBPF TCX programs
 carry established flows in the kernel; a daemon places new ones.
 .
 The package does not enable or start l2shim: name the gateways in
 /etc/l2shim/l2shim.toml, run "l2shim check", then
 "systemctl enable --now l2shim".
EOF
echo /etc/l2shim/l2shim.toml >"$root/DEBIAN/conffiles"
# md5sums of everything but the conffile (dpkg --verify and debsums read it).
(cd "$root" && find usr -type f | LC_ALL=C sort | xargs md5sum) >"$root/DEBIAN/md5sums"
for s in postinst prerm postrm; do
	install -m 0755 "dist/deb/$s" "$root/DEBIAN/$s"
done
chmod 0644 "$root/DEBIAN/control" "$root/DEBIAN/conffiles" "$root/DEBIAN/md5sums"

mkdir -p "$out"
deb=$out/l2shim_${version#*:}_$arch.deb
dpkg-deb --root-owner-group -Zxz --build "$root" "$deb" >/dev/null
echo "$deb"
