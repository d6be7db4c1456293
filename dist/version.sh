#!/bin/sh
# version.sh: print l2shim's version as a valid Debian version, from git.
#
#   dist/version.sh                   # from `git describe --tags --always --dirty` of this tree
#   dist/version.sh DESCRIBE DATE     # map a given describe string (DATE: YYYYMMDD; for tests)
#
#   v1.2.3                  -> 1.2.3
#   v1.2.3-rc1              -> 1.2.3~rc1              (a pre-release sorts before 1.2.3)
#   v1.2.3-4-gabcdef1       -> 1.2.3+4.gabcdef1       (4 commits after the tag)
#   abcdef1 (no tag)        -> 0.0.0~git20261201.abcdef1   (the commit's date, UTC)
#   ...-dirty               -> ...+dirty, or ...dirty after a "+" as ".dirty"
#
# Outside a git tree (a tarball) it prints 0.0.0~unknown; `make deb VERSION=...` overrides it.
# A tag that does not map to a valid version (it must start with a digit after the "v") fails.
set -eu

if [ $# -ge 1 ]; then
	desc=$1
	date=${2:-00000000}
else
	cd "$(dirname "$0")/.."
	if ! desc=$(git describe --tags --always --dirty 2>/dev/null); then
		echo "0.0.0~unknown"
		exit 0
	fi
	date=$(TZ=UTC git log -1 --format=%cd --date=format-local:%Y%m%d)
fi

dirty=
case $desc in
*-dirty) dirty=1; desc=${desc%-dirty} ;;
esac

if printf '%s\n' "$desc" | grep -Eq '^[0-9a-f]{4,40}$'; then
	# No tag reachable: --always gave the abbreviated hash.
	v="0.0.0~git$date.$desc"
elif m=$(printf '%s\n' "$desc" | sed -En 's/^(.*)-([0-9]+)-g([0-9a-f]+)$/\1 \2 \3/p') && [ -n "$m" ]; then
	# shellcheck disable=SC2086
	set -- $m
	tag=$(printf '%s\n' "$1" | sed -e 's/^v//' -e 's/-/~/g')
	v="$tag+$2.g$3"
else
	v=$(printf '%s\n' "$desc" | sed -e 's/^v//' -e 's/-/~/g')
fi

if [ -n "$dirty" ]; then
	case $v in
	*+*) v="$v.dirty" ;;
	*) v="$v+dirty" ;;
	esac
fi

# Debian policy 5.6.12: an upstream version without a revision has only alphanumerics and
# . + ~, and starts with a digit.
if ! printf '%s\n' "$v" | grep -Eq '^[0-9][A-Za-z0-9.+~]*$'; then
	echo "version.sh: \"$desc\" does not give a valid Debian version (got \"$v\"); tag releases vX.Y.Z" >&2
	exit 1
fi
printf '%s\n' "$v"
