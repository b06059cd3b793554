#!/usr/bin/env bash
# Installs what qtables' build, tests and demo need on a Debian machine and
# is missing: iproute2 (ip netns, veth), iptables (the kernel reference the
# tests compare against), netbase (/etc/protocols, /etc/services), tshark
# (the application-layer parsers are compared with it on ../shared/pcaps);
# with the argument "demo" also ping and nc for the live demo. Go itself must
# already be installed.
set -euo pipefail

need=()
command -v ip >/dev/null 2>&1 || need+=(iproute2)
command -v iptables >/dev/null 2>&1 || need+=(iptables)
command -v iptables-save >/dev/null 2>&1 || need+=(iptables)
# conntrack -F / -L: the stateful conformance cases empty and list the
# kernel's connection table between cases.
command -v conntrack >/dev/null 2>&1 || need+=(conntrack)
[ -f /etc/protocols ] && [ -f /etc/services ] || need+=(netbase)
command -v tshark >/dev/null 2>&1 || need+=(tshark)
# The live demo (scripts/demo.sh, `deps.sh demo`) also pings and opens TCP
# connections between its namespaces.
if [ "${1:-}" = demo ]; then
	command -v ping >/dev/null 2>&1 || need+=(iputils-ping)
	command -v nc >/dev/null 2>&1 || need+=(netcat-openbsd)
fi

# make bench-live (`deps.sh bench-live`) builds a C NFQUEUE consumer against
# libnetfilter_queue as the baseline it measures qtables against, and runs
# the kernel's iptables-legacy and iptables-nft side by side (Debian's
# iptables package ships both).
if [ "${1:-}" = bench-live ]; then
	command -v gcc >/dev/null 2>&1 || need+=(gcc)
	[ -f /usr/include/libnetfilter_queue/libnetfilter_queue.h ] || need+=(libnetfilter-queue-dev)
	for t in iptables-legacy-restore iptables-legacy-save iptables-nft-restore iptables-nft-save; do
		command -v $t >/dev/null 2>&1 || need+=(iptables)
	done
fi

if ! command -v go >/dev/null 2>&1 && [ ! -x /usr/local/go/bin/go ]; then
	echo "deps: Go is not installed (need Go 1.24 or newer in PATH or /usr/local/go)" >&2
	exit 1
fi

if [ ${#need[@]} -eq 0 ]; then
	exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
	echo "deps: missing ${need[*]}; run as root (or install them: apt-get install ${need[*]})" >&2
	exit 1
fi
if ! command -v apt-get >/dev/null 2>&1; then
	echo "deps: missing ${need[*]} and apt-get is not available to install them" >&2
	exit 1
fi
echo "deps: installing ${need[*]}"
export DEBIAN_FRONTEND=noninteractive
# wireshark-common asks whether non-root users may capture; answer no
# beforehand so that the install never stops at the question.
if printf '%s\n' "${need[@]}" | grep -qx tshark; then
	echo wireshark-common wireshark-common/install-setuid boolean false | debconf-set-selections
fi
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
