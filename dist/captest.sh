#!/bin/sh
# captest.sh: prove the capability set of dist/l2shim.service.
#
# Run as root:   dist/captest.sh [-b BINARY] [-c CAPS] [-m] [-s STRACE_OUT]
#
#   -b BINARY  the l2shim binary (default bin/l2shim); it must be readable and executable by
#              uid 65534, so build it somewhere like /tmp:
#                go build -o /tmp/l2shim-cap ./cmd/l2shim
#   -c CAPS    comma-separated capabilities to grant (default net_admin,net_raw,bpf)
#   -m         minimality: also run once without each capability of CAPS and expect failure
#   -s FILE    run under strace -f and write the sorted list of syscalls to FILE (to check a
#              SystemCallFilter= against what l2shim really calls)
#
# It builds a throwaway topology: a "host" namespace with two veth uplinks u0 (10.201.0.2/24)
# and u1 (10.202.0.2/24), default route via 10.201.0.1, their peers in a "gateway" namespace
# that holds both gateway addresses and 192.0.2.1 on its loopback. Then, inside the host
# namespace, as uid/gid 65534 with no groups, no_new_privs, and exactly CAPS as inheritable,
# ambient and bounding capabilities (what systemd's AmbientCapabilities= and
# CapabilityBoundingSet= give a non-root service), it runs `l2shim check`, then `l2shim run`,
# waits for msg=running and both "gateway resolved" lines, checks the veths got IPv6 disabled,
# waits for both gateways to be up in `l2shim status` (ARP and ICMP probes), sends 16 ICMP echo
# flows through the shim, reads the Prometheus endpoint, drains and undrains a gateway, reloads
# with SIGHUP, sends SIGTERM and requires exit status 0 and a totals line showing NATed flows
# and no send errors. Everything is removed on exit.
set -eu

BIN=bin/l2shim
CAPS=net_admin,net_raw,bpf
MINIMAL=0
STRACE_OUT=
while getopts b:c:ms: opt; do
	case $opt in
	b) BIN=$OPTARG ;;
	c) CAPS=$OPTARG ;;
	m) MINIMAL=1 ;;
	s) STRACE_OUT=$OPTARG ;;
	*) echo "usage: $0 [-b BINARY] [-c CAPS] [-m] [-s STRACE_OUT]" >&2; exit 2 ;;
	esac
done
[ "$(id -u)" = 0 ] || { echo "captest: run as root (it creates network namespaces)" >&2; exit 2; }
BIN=$(readlink -f "$BIN")
[ -x "$BIN" ] || { echo "captest: no executable $BIN (build it first)" >&2; exit 2; }
for t in ip setpriv ping curl mountpoint; do
	command -v $t >/dev/null || { echo "captest: needs $t" >&2; exit 2; }
done

id=$$
H=l2cap-host-$id
G=l2cap-gw-$id
T=$(mktemp -d /tmp/l2cap.XXXXXX)
PID=

cleanup() {
	if [ -n "$PID" ] && kill -0 "$PID" 2>/dev/null; then kill -KILL "$PID" 2>/dev/null || true; fi
	if mountpoint -q "$T/bpf" 2>/dev/null; then
		"$BIN" cleanup --pin-dir "$T/bpf/l2shim" >/dev/null 2>&1 || true
		umount "$T/bpf" 2>/dev/null || true
	fi
	ip netns del "$H" 2>/dev/null || true
	ip netns del "$G" 2>/dev/null || true
	rm -rf "$T"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

say() { echo "captest: $*"; }
fail() { echo "captest: FAIL: $*" >&2; exit 1; }

# The topology.
ip netns add "$H"
ip netns add "$G"
ip -n "$H" link add u0 type veth peer name g0 netns "$G"
ip -n "$H" link add u1 type veth peer name g1 netns "$G"
ip -n "$H" addr add 10.201.0.2/24 dev u0
ip -n "$H" addr add 10.202.0.2/24 dev u1
ip -n "$G" addr add 10.201.0.1/24 dev g0
ip -n "$G" addr add 10.202.0.1/24 dev g1
ip -n "$G" addr add 192.0.2.1/32 dev lo
for l in lo u0 u1; do ip -n "$H" link set "$l" up; done
for l in lo g0 g1; do ip -n "$G" link set "$l" up; done
ip -n "$H" route add default via 10.201.0.1 dev u0
ip netns exec "$H" sysctl -qw net.ipv4.conf.all.rp_filter=2 net.ipv4.conf.u0.rp_filter=2 net.ipv4.conf.u1.rp_filter=2
# Let unprivileged ping (uid 0 here anyway) work in the host namespace.
ip netns exec "$H" sysctl -qw net.ipv4.ping_group_range="0 2147483647"

# The configuration and the runtime directory, as systemd would give them to the service.
mkdir -p "$T/run"
chown 65534:65534 "$T/run"
chmod 0755 "$T" "$T/run"
cat >"$T/l2shim.toml" <<EOF
[shim]
control = "$T/run/l2shim.sock"
metrics = "127.0.0.1:9617"

[[gateway]]
name = "isp-a"
interface = "u0"
address = "10.201.0.1"
probe = ["192.0.2.1"]

[[gateway]]
name = "isp-b"
interface = "u1"
address = "10.202.0.1"
probe = ["192.0.2.1"]

[[rule]]
name = "no test-net-2"
dst = "198.51.100.0/24"
action = "drop"
EOF
chmod 0644 "$T/l2shim.toml"

# The pin directory, as the unit gives it: a directory of the service user's own on a bpffs that
# outlives the process (here a bpffs of this test's, mounted in the root mount namespace, since
# `ip netns exec` gives every command a mount namespace of its own).
mkdir -p "$T/bpf"
mount -t bpf bpf "$T/bpf"
chmod 0755 "$T/bpf"
mkdir "$T/bpf/l2shim"
chown 65534:65534 "$T/bpf/l2shim"
chmod 0700 "$T/bpf/l2shim"

# caplist CAPS -> "+a,+b,+c" (setpriv syntax after -all).
caplist() { echo "$1" | tr ',' '\n' | sed '/^$/d; s/^/+/' | paste -sd, -; }

# asuser CAPS CMD...: run CMD in the host namespace as 65534 with exactly CAPS. The process
# ip starts execs setpriv, which execs CMD: one pid from the shell's fork to CMD.
asuser() {
	c=$(caplist "$1")
	shift
	if [ -n "$c" ]; then c=",$c"; fi
	exec ip netns exec "$H" setpriv --reuid=65534 --regid=65534 --clear-groups --no-new-privs \
		--inh-caps="-all$c" --ambient-caps="-all$c" --bounding-set="-all$c" "$@"
}

# attempt CAPS: check + run + traffic + SIGTERM with exactly CAPS. Returns 0 on full success.
# Leaves the log in $T/run.log.
attempt() {
	caps=$1
	log=$T/run.log
	: >"$log"
	say "--- capabilities: ${caps:-none}"
	if ! (asuser "$caps" "$BIN" check -c "$T/l2shim.toml") >"$T/check.log" 2>&1; then
		sed 's/^/  check: /' "$T/check.log"
		say "l2shim check failed with ${caps:-no capabilities}"
		return 1
	fi
	sed 's/^/  check: /' "$T/check.log"
	if [ -n "$STRACE_OUT" ]; then
		# strace (root, outside) traces ip, setpriv and l2shim; its exit status is l2shim's.
		(asuser "$caps" strace -f -qq -o "$T/run/strace" "$BIN" run -c "$T/l2shim.toml" --pin-dir "$T/bpf/l2shim") 2>"$log" &
	else
		(asuser "$caps" "$BIN" run -c "$T/l2shim.toml" --pin-dir "$T/bpf/l2shim") 2>"$log" &
	fi
	PID=$!
	i=0
	until grep -q 'msg=running' "$log"; do
		if ! kill -0 "$PID" 2>/dev/null; then
			sed 's/^/  run: /' "$log"
			wait "$PID" || say "l2shim run exited with status $?"
			PID=
			return 1
		fi
		i=$((i + 1))
		[ $i -lt 150 ] || { sed 's/^/  run: /' "$log"; fail "no msg=running within 15 s"; }
		sleep 0.1
	done
	i=0
	until [ "$(grep -c 'msg="gateway resolved"' "$log")" -ge 2 ]; do
		i=$((i + 1))
		[ $i -lt 100 ] || { sed 's/^/  run: /' "$log"; say "gateways not resolved within 10 s"; kill -TERM "$PID"; wait "$PID" || true; PID=; return 1; }
		sleep 0.1
	done
	# Both gateways up in l2shim status (probes answered), asked as root over the socket.
	i=0
	until [ "$(ip netns exec "$H" "$BIN" status -s "$T/run/l2shim.sock" 2>/dev/null | grep -c ' up ')" -ge 2 ]; do
		i=$((i + 1))
		[ $i -lt 100 ] || { ip netns exec "$H" "$BIN" status -s "$T/run/l2shim.sock" 2>&1 | sed 's/^/  status: /'; sed 's/^/  run: /' "$log"; say "gateways not up in l2shim status within 10 s"; kill -TERM "$PID"; wait "$PID" || true; PID=; return 1; }
		sleep 0.1
	done
	# The process to signal: l2shim itself (under strace, strace's child).
	TPID=$PID
	if [ -n "$STRACE_OUT" ]; then TPID=$(pgrep -P "$PID" | head -1); fi
	# Its credentials as the kernel sees them.
	grep -E '^(Uid|Gid|Groups|Cap(Inh|Prm|Eff|Bnd|Amb)|NoNewPrivs)' "/proc/$TPID/status" | sed 's/^/  proc: /'
	# The veths l2shim made: IPv6 must be off (a /proc/sys write).
	v6ok=1
	for l in $(ip -n "$H" -o link show | sed -n 's/^[0-9]*: \(l2s[0-9]*[nf]\)@.*/\1/p'); do
		v=$(ip netns exec "$H" cat "/proc/sys/net/ipv6/conf/$l/disable_ipv6")
		say "  $l disable_ipv6=$v"
		[ "$v" = 1 ] || v6ok=0
	done
	# 16 ICMP echo flows (each ping has its own identifier), spread over both uplinks.
	lost=0
	for n in $(seq 16); do
		ip netns exec "$H" ping -q -n -c 2 -i 0.2 -W 2 192.0.2.1 >/dev/null 2>&1 || lost=$((lost + 1))
	done
	# The operator surface: status, metrics, drain/undrain, reload by SIGHUP.
	ip netns exec "$H" "$BIN" status -s "$T/run/l2shim.sock" >"$T/status.out" 2>&1 || true
	sed 's/^/  status: /' "$T/status.out"
	metrics=$(ip netns exec "$H" curl -s -m 2 http://127.0.0.1:9617/metrics | grep -c '^l2shim_' || true)
	say "  metrics: $metrics l2shim_ samples"
	ip netns exec "$H" "$BIN" drain isp-b -s "$T/run/l2shim.sock" >"$T/drain.out" 2>&1 &&
		ip netns exec "$H" "$BIN" undrain isp-b -s "$T/run/l2shim.sock" >>"$T/drain.out" 2>&1
	drained=$?
	sed 's/^/  drain: /' "$T/drain.out"
	kill -HUP "$TPID"
	i=0
	until grep -q 'msg="reloaded' "$log" || [ $i -ge 50 ]; do i=$((i + 1)); sleep 0.1; done
	kill -TERM "$TPID"
	status=0
	wait "$PID" || status=$?
	PID=
	sed 's/^/  run: /' "$log"
	[ "$status" = 0 ] || { say "l2shim run exited with status $status after SIGTERM"; return 1; }
	grep -q 'msg=totals' "$log" || { say "no totals line"; return 1; }
	[ $v6ok = 1 ] || { say "IPv6 was not disabled on the veths (the /proc/sys write failed)"; return 1; }
	[ $lost = 0 ] || { say "$lost of 16 ping flows got no reply"; return 1; }
	grep -q 'msg=totals.* nated=[1-9]' "$log" || { say "no flow was NATed to u1 (load balancing did not happen)"; return 1; }
	grep -q 'msg=totals.* send_errors=0 ' "$log" || { say "send errors"; return 1; }
	[ "$(grep -c ' up ' "$T/status.out")" -ge 2 ] || { say "l2shim status does not show both gateways up"; return 1; }
	[ "$metrics" -gt 0 ] || { say "no metrics served on 127.0.0.1:9617"; return 1; }
	[ $drained = 0 ] || { say "drain/undrain failed"; return 1; }
	grep -q 'msg="reloaded' "$log" || { say "SIGHUP did not reload"; return 1; }
	if grep -q 'not pinning' "$log"; then say "it did not pin into its own directory"; return 1; fi
	if [ -n "$STRACE_OUT" ]; then
		# Syscalls after setpriv's execve of l2shim (setpriv's own are not l2shim's).
		awk '/execve\(".*l2shim/ {on=1} on {sub(/^[0-9]+ +/, ""); if (match($0, /^[a-z0-9_]+\(/)) print substr($0, 1, RLENGTH-1)}' "$T/run/strace" |
			sort -u >"$STRACE_OUT"
		grep -o "socket(AF_[A-Z0-9]*" "$T/run/strace" | sort | uniq -c | sed "s/^/  families: /"
		say "syscalls written to $STRACE_OUT ($(wc -l <"$STRACE_OUT") distinct)"
	fi
	say "OK with ${caps:-no capabilities}"
	return 0
}

# restart CAPS: a run with exactly CAPS pins into its directory; SIGKILL it while 8 ICMP echo
# flows run through it (about half NATed to u1), start again: the new run adopts the kernel's
# flows and no echo is lost; then root's `l2shim cleanup` leaves no pin behind.
restart() {
	caps=$1
	say "--- restart with pins, capabilities: $caps"
	start_run() {
		: >"$1"
		(asuser "$caps" "$BIN" run -c "$T/l2shim.toml" --pin-dir "$T/bpf/l2shim") 2>"$1" &
		PID=$!
		i=0
		until grep -q 'msg=running' "$1"; do
			kill -0 "$PID" 2>/dev/null || { sed 's/^/  run: /' "$1"; PID=; return 1; }
			i=$((i + 1))
			[ $i -lt 150 ] || { sed 's/^/  run: /' "$1"; return 1; }
			sleep 0.1
		done
	}
	start_run "$T/run1.log" || { say "the first run did not start"; return 1; }
	pids=
	for n in $(seq 8); do
		ip netns exec "$H" ping -n -c 20 -i 0.2 -W 2 192.0.2.1 >"$T/ping.$n" 2>&1 &
		pids="$pids $!"
	done
	sleep 1.5 # past a sync: the flows are carried in the kernel
	kill -KILL "$PID"
	wait "$PID" 2>/dev/null || true
	start_run "$T/run2.log" || { say "the second run did not start"; return 1; }
	for p in $pids; do wait "$p" || true; done
	kill -TERM "$PID"
	wait "$PID" || true
	PID=
	grep -v 'level=DEBUG' "$T/run2.log" | sed 's/^/  run2: /'
	if grep -q 'not pinning' "$T/run1.log" "$T/run2.log"; then say "a run did not pin"; return 1; fi
	grep -q 'msg="adopted the flows an earlier l2shim left in the kernel" flows=[1-9]' "$T/run2.log" || { say "the second run adopted no flow"; return 1; }
	lost=0
	for n in $(seq 8); do
		grep -q ' 20 received' "$T/ping.$n" || { lost=$((lost + 1)); sed 's/^/  ping: /' "$T/ping.$n"; }
	done
	[ $lost = 0 ] || { say "$lost of 8 echo flows lost replies across the SIGKILL and restart"; return 1; }
	"$BIN" cleanup --pin-dir "$T/bpf/l2shim" | sed 's/^/  /'
	# (progs.debug and maps.debug are the bpffs's own.)
	left=$(find "$T/bpf" -mindepth 1 ! -name '*.debug' | wc -l)
	[ "$left" = 0 ] || { find "$T/bpf" | sed 's/^/  left: /'; say "cleanup left $left pins"; return 1; }
	if grep -q "TCX programs that are not l2shim's" "$T/run2.log"; then say "the second run took the first one's pinned hooks for foreign ones"; return 1; fi
	say "OK: pinned as an unprivileged user, adopted after SIGKILL, nothing lost, cleaned up"
	return 0
}

attempt "$CAPS" || fail "l2shim does not run with $CAPS"
restart "$CAPS" || fail "l2shim with $CAPS does not keep flows across a restart"
if [ $MINIMAL = 1 ]; then
	for drop in $(echo "$CAPS" | tr ',' ' '); do
		less=$(echo "$CAPS" | tr ',' '\n' | grep -vx "$drop" | paste -sd, -)
		if attempt "$less"; then
			fail "l2shim also runs without $drop: $CAPS is not minimal"
		fi
		say "needed: $drop (without it l2shim fails, above)"
	done
fi
say "PASS: $CAPS is sufficient$([ $MINIMAL = 1 ] && echo ' and each one is necessary')"
