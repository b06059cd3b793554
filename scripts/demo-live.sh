#!/usr/bin/env bash
# The live part of make demo: qtables guards a server. A network namespace
# pair, a client and a server joined by a veth link; `qtables run` hooks the
# server's INPUT with the shipped rules (testdata/demo/live.v4) and judges
# every packet the server receives from NFQUEUE, while the client sends real
# ICMP, TCP and UDP traffic. Everything happens inside the two namespaces
# this script creates (10.99.0.0/24 exists only there), which are deleted
# with every process started in them on every exit path; the root namespace
# is never touched.
set -euo pipefail
cd "$(dirname "$0")/.."
Q=$PWD/bin/qtables
RULES=testdata/demo/live.v4
OUT=out/demo
mkdir -p "$OUT"
P="qtdemo-$$"
C="$P-client" S="$P-server"
CA=10.99.0.1 SA=10.99.0.2
METRICS=127.0.0.1:9617
LOG="$OUT/live.log" STATS="$OUT/live.stats.json" COUNTERS="$OUT/live.counters"
qpid=

cleanup() {
	local rc=$? ns
	trap - EXIT INT TERM
	if [ -n "$qpid" ]; then kill -TERM "$qpid" 2>/dev/null || true; fi
	# Every process still in the demo's namespaces (the responders, a
	# client cut short) was started by this script.
	for ns in "$C" "$S"; do
		ip netns pids "$ns" 2>/dev/null | xargs -r kill 2>/dev/null || true
	done
	wait 2>/dev/null || true
	for ns in "$C" "$S"; do ip netns del "$ns" 2>/dev/null || true; done
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

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

# stat_of KEY: a number from the daemon's statistics file.
stat_of() { sed -n "s/^  \"$1\": \([0-9]*\).*/\1/p" "$STATS"; }

# verdicts: have qtables write its statistics and counters (SIGUSR1) and
# print the verdicts it gave the client's packets since the last call (the
# server's own loopback traffic, accepted by rule 1, left out).
last_acc=0 last_drop=0
verdicts() {
	rm -f "$STATS" "$COUNTERS"
	kill -USR1 "$qpid"
	wait_for "the statistics files" 5 test -s "$STATS" -a -s "$COUNTERS"
	local acc drop lo
	lo=$(sed -n 's/^\[\([0-9]*\):.*-A INPUT -i lo -j ACCEPT$/\1/p' "$COUNTERS")
	acc=$(($(stat_of accepted) - ${lo:-0})) drop=$(stat_of dropped)
	printf 'qtables verdicts for the client: +%d ACCEPT, +%d DROP (so far %d accepted, %d dropped)\n' \
		$((acc - last_acc)) $((drop - last_drop)) "$acc" "$drop"
	last_acc=$acc last_drop=$drop
}

# new_log_lines: print the LOG lines written since the last call.
log_seen=0
new_log_lines() {
	local n
	sleep 0.2 # the LOG sink writes asynchronously
	n=$(wc -l <"$LOG")
	if [ "$n" -gt "$log_seen" ]; then sed -n "$((log_seen + 1)),${n}p" "$LOG" | sed 's/^/  log: /'; fi
	log_seen=$n
}

# scrape: the metrics page, fetched inside the server's namespace (the
# daemon serves it on the namespace's loopback) with bash alone.
scrape() {
	nsx "$S" bash -c 'exec 3<>/dev/tcp/${1%:*}/${1##*:} && printf "GET /metrics HTTP/1.0\r\n\r\n" >&3 && cat <&3' _ "$METRICS"
}

step "Build a network namespace pair: client $CA -- server $SA" \
	"ip netns add ...; ip link add c0 netns client type veth peer name s0 netns server"
ip netns add "$C"
ip netns add "$S"
ip link add c0 netns "$C" type veth peer name s0 netns "$S"
nsx "$C" ip link set lo up
nsx "$S" ip link set lo up
nsx "$C" ip addr add "$CA/24" dev c0
nsx "$S" ip addr add "$SA/24" dev s0
nsx "$C" ip link set c0 up
nsx "$S" ip link set s0 up
rm -f "$OUT/udp.received" "$OUT/tcp.received"
# A web server on TCP 80 and a UDP responder on 53, both answering
# each request (one nc per exchange), and a listener on TCP 81.
ip netns exec "$S" bash -c 'while :; do printf "HTTP/1.0 200 OK\r\n\r\nhello from the server\n" | nc -l -s "$1" -p 80 -q 1 >>"$2" || sleep 0.1; done' _ "$SA" "$OUT/tcp.received" 2>/dev/null &
ip netns exec "$S" bash -c 'while :; do printf "pong\n" | nc -u -l -s "$1" -p 53 -q 1 >>"$2" || sleep 0.1; done' _ "$SA" "$OUT/udp.received" 2>/dev/null &
ip netns exec "$S" nc -lk -s "$SA" -p 81 </dev/null >/dev/null 2>&1 &
wait_for "the server's listeners" 5 bash -c "ip netns exec $S ss -Hltn | grep -q ':80 ' && ip netns exec $S ss -Hlun | grep -q ':53 '"
nsx "$S" ss -Hltun | awk '{print "server listens:", $1, $5}'

step "Start qtables in the server's namespace: its INPUT goes to NFQUEUE, qtables judges it" \
	"ip netns exec server qtables run --rules $RULES --hook INPUT --log-file $LOG --stats-file ... --counters-file ..."
: >"$LOG"
# ip netns exec, not nsx: a function would run in a subshell whose pid $!
# would be, and the signals must reach qtables itself.
ip netns exec "$S" "$Q" run --rules "$RULES" --hook INPUT --log-file "$LOG" --stats-file "$STATS" \
	--counters-file "$COUNTERS" --metrics-addr "$METRICS" 2>"$OUT/live.stderr" &
qpid=$!
if ! wait_for "qtables' hook chain" 10 nsx "$S" iptables -S QTABLES-INPUT; then
	cat "$OUT/live.stderr" >&2
	exit 1
fi
nsx "$S" iptables -S | grep -i qtables
wait_for "the metrics endpoint" 5 scrape

step "Ping the server (ICMP echo-request: accepted)" "ip netns exec client ping -c 3 $SA"
nsx "$C" ping -c 3 -i 0.2 -W 2 "$SA" | grep -E 'transmitted|rtt'
verdicts

step "A TCP request to the web port (accepted, and marked 0x80 in mangle)" \
	"printf 'GET / HTTP/1.0\\r\\n\\r\\n' | ip netns exec client nc -q 1 -w 3 $SA 80"
reply=$(printf 'GET / HTTP/1.0\r\n\r\n' | nsx "$C" nc -q 1 -w 3 "$SA" 80 || true)
printf '%s\n' "$reply" | sed 's/^/  reply: /'
case $reply in *"hello from the server"*) ;; *) echo "unexpected: no reply on TCP 80" >&2; exit 1 ;; esac
verdicts

step "A UDP datagram to port 53 (accepted; the responder answers)" \
	"echo ping | ip netns exec client nc -u -w 1 $SA 53"
reply=$(echo ping | nsx "$C" nc -u -w 1 "$SA" 53 || true)
printf '  reply: %s\n' "$reply"
[ "$reply" = pong ] || { echo "unexpected: no UDP reply" >&2; exit 1; }
verdicts

step "Connect to TCP port 81 (logged, then REJECTed with a TCP reset: refused at once)" \
	"ip netns exec client nc -z -w 2 $SA 81"
if out=$(nsx "$C" nc -vz -w 2 "$SA" 81 2>&1); then
	echo "unexpected: port 81 connected" >&2
	exit 1
fi
printf '  client: %s\n' "$out"
verdicts
new_log_lines

step "A UDP datagram to port 5353 (logged, then dropped by the policy: no answer)" \
	"echo ping | ip netns exec client nc -u -w 1 $SA 5353"
reply=$(echo ping | nsx "$C" nc -u -w 1 "$SA" 5353 || true)
[ -z "$reply" ] || { echo "unexpected: a reply from port 5353: $reply" >&2; exit 1; }
echo "  no reply (dropped by qtables)"
verdicts
new_log_lines

step "qtables' metrics while it runs" "ip netns exec server curl -s http://$METRICS/metrics | grep ..."
scrape | grep -E '^qtables_(packets_received_total|verdicts_total|packets_total|packets_marked_total|log_events_total|reject_replies_total\{outcome="sent"|verdict_latency_seconds_count)|^qtables_rule_packets_total\{chain="INPUT",rule="[1-6]",table="filter"' || true

step "Stop qtables (SIGTERM): it removes its hooks and writes its counters" "kill -TERM \$qtables"
kill -TERM "$qpid"
wait "$qpid" || true
qpid=
if nsx "$S" iptables -S QTABLES-INPUT >/dev/null 2>&1; then echo "unexpected: hook chain left behind" >&2; exit 1; fi
echo "hook chains removed; the rules with their counters (iptables-save -c):"
sed -n '/^\*filter/,/^COMMIT/p' "$COUNTERS"

step "Every LOG line qtables wrote (the kernel's LOG format)" "cat $LOG"
cat "$LOG"
