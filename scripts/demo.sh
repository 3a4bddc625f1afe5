#!/usr/bin/env bash
# The quick start as one command (as root, on Debian 12): install what is
# missing (iproute2, iptables, nftables, Deno), build cnikit, attach a
# namespace with ptp + host-local through cnitool, show its address, ping
# it, CHECK, DEL, and clean up. It runs inside a throwaway namespace that
# plays the host, so your machine's own links, routes and firewall are left
# alone.
set -euo pipefail
cd "$(dirname "$0")/.."

suffix=$$
host=cnikit-demo-host-$suffix
ctr=cnikit-demo-ctr-$suffix
work=$(mktemp -d)
cleanup() {
  ip netns del "$ctr" 2>/dev/null || true
  ip netns del "$host" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

bash scripts/deps.sh run
deno task build
echo "== build: $(sed -n 's/.*"kind": "\(.*\)".*/\1/p' dist/build-info.json)"

# The example network, with its IPAM store in a temporary directory.
mkdir -p "$work/net.d"
sed "s#\"type\": *\"host-local\"#\"type\": \"host-local\", \"dataDir\": \"$work/ipam\"#" \
  examples/net.d/10-myptp.conflist >"$work/net.d/10-myptp.conflist"

ip netns add "$host"
ip netns add "$ctr"
ip -n "$host" link set lo up
in_host() { ip netns exec "$host" env NETCONFPATH="$work/net.d" CNI_PATH="$PWD/dist/bin" CNI_CACHE_DIR="$work/cache" "$@"; }

echo "== cnitool add myptp /var/run/netns/$ctr"
in_host dist/bin/cnitool add myptp "/var/run/netns/$ctr"
echo
echo "== ip -n $ctr addr show eth0"
ip -n "$ctr" addr show eth0
addr=$(ip -n "$ctr" -j addr show eth0 | sed -n 's/.*"local":"\([0-9.]*\)".*/\1/p' | head -1)
echo "== ping $addr from the host namespace"
ip netns exec "$host" ping -c 2 -W 2 "$addr"
echo "== cnitool check myptp"
in_host dist/bin/cnitool check myptp "/var/run/netns/$ctr" && echo "check: ok"
echo "== cnitool del myptp"
in_host dist/bin/cnitool del myptp "/var/run/netns/$ctr" && echo "del: ok"
ip -n "$ctr" link show eth0 >/dev/null 2>&1 && { echo "eth0 still present"; exit 1; }
echo "== done: eth0 is gone, the lease is released, the namespaces are removed"
