#!/usr/bin/env bash
# The live part of make demo: qtables filters real traffic between two
# network namespaces through a third, the router, where `qtables run`
# judges every forwarded packet from NFQUEUE. Everything happens inside
# namespaces this script creates (addresses 10.99.x.x exist only there) and
# deletes on every exit path; the root namespace is never touched.
set -euo pipefail
cd "$(dirname "$0")/.."
Q=$PWD/bin/qtables
RULES=testdata/demo/live.v4
OUT=out/demo
mkdir -p "$OUT"
P="qtdemo-$$"
C="$P-client" R="$P-router" S="$P-server"
pids=()

cleanup() {
	for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
	wait 2>/dev/null || true
	for ns in "$C" "$R" "$S"; do ip netns del "$ns" 2>/dev/null || true; done
}
trap cleanup EXIT INT TERM

step() { printf '\n\033[1m== %s\033[0m\n$ %s\n' "$1" "$2"; }
nsx() { local ns=$1; shift; ip netns exec "$ns" "$@"; }

# wait_for DESCRIPTION TIMEOUT_S COMMAND...: poll until COMMAND succeeds.
wait_for() {
	local what=$1 deadline=$((SECONDS + $2)); shift 2
	until "$@" >/dev/null 2>&1; do
		if [ $SECONDS -ge $deadline ]; then echo "timed out waiting for $what" >&2; return 1; fi
		sleep 0.1
	done
}

step "Build three network namespaces: client -- router -- server" "ip netns add ...; ip link add ... type veth ..."
for ns in "$C" "$R" "$S"; do ip netns add "$ns"; nsx "$ns" ip link set lo up; done
ip link add c0 netns "$C" type veth peer name r0 netns "$R"
ip link add r1 netns "$R" type veth peer name s0 netns "$S"
nsx "$C" ip addr add 10.99.1.2/24 dev c0; nsx "$C" ip link set c0 up; nsx "$C" ip route add default via 10.99.1.1
nsx "$R" ip addr add 10.99.1.1/24 dev r0; nsx "$R" ip link set r0 up
nsx "$R" ip addr add 10.99.2.1/24 dev r1; nsx "$R" ip link set r1 up
nsx "$R" sysctl -qw net.ipv4.ip_forward=1
nsx "$S" ip addr add 10.99.2.2/24 dev s0; nsx "$S" ip link set s0 up; nsx "$S" ip route add default via 10.99.2.1
for port in 80 81; do ip netns exec "$S" nc -lk -s 10.99.2.2 -p "$port" </dev/null >/dev/null 2>&1 & pids+=($!); done
echo "client 10.99.1.2 -> router 10.99.1.1 | 10.99.2.1 -> server 10.99.2.2 (listening on 80 and 81)"

step "Start qtables on the router: FORWARD traffic goes to NFQUEUE, qtables judges it" \
  "ip netns exec router qtables run --rules $RULES --hook FORWARD --log-file $OUT/live.log --counters-file $OUT/live.counters"
ip netns exec "$R" "$Q" run --rules "$RULES" --hook FORWARD --log-file "$OUT/live.log" \
  --counters-file "$OUT/live.counters" --metrics-addr "" 2>"$OUT/live.stderr" & qpid=$!; pids+=($qpid)
wait_for "qtables' hook chain" 10 nsx "$R" iptables -S QTABLES-FORWARD
nsx "$R" iptables -S | grep -i qtables

step "Ping the server through the router (ICMP echo is accepted)" "ip netns exec client ping -c 2 10.99.2.2"
nsx "$C" ping -c 2 -W 2 10.99.2.2

step "Connect to the web port (accepted, and marked 0x80 in mangle)" "ip netns exec client nc -z -w 2 10.99.2.2 80"
nsx "$C" nc -z -w 2 10.99.2.2 80 && echo "port 80: connected"

step "Connect to port 81 (logged, then dropped by the FORWARD policy)" "ip netns exec client nc -z -w 2 10.99.2.2 81"
if nsx "$C" nc -z -w 2 10.99.2.2 81; then echo "unexpected: port 81 connected" >&2; exit 1; fi
echo "port 81: no connection (dropped by qtables)"

step "Stop qtables (SIGTERM): it removes its hooks and writes its counters" "kill -TERM \$qtables"
kill -TERM "$qpid"; wait "$qpid" || true
if nsx "$R" iptables -S QTABLES-FORWARD >/dev/null 2>&1; then echo "unexpected: hook chain left behind" >&2; exit 1; fi
echo "hook chains removed"
cat "$OUT/live.counters"

step "What qtables logged (the kernel's LOG format)" "head -n 2 $OUT/live.log"
head -n 2 "$OUT/live.log"

step "qtables stopped and removed its hooks: the router forwards unfiltered again" "ip netns exec client nc -z -w 2 10.99.2.2 81"
nsx "$C" nc -z -w 2 10.99.2.2 81 && echo "port 81: connected (no filter running)"
