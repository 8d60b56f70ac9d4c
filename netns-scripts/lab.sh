#!/usr/bin/env bash
# Build or tear down a two-namespace lab: client <-veth-> server.
#   lab.sh up CLIENT SERVER     addresses: client 192.0.2.20 10.0.0.20 2001:db8::20
#                                          server 192.0.2.10 10.0.0.10 2001:db8::10
#   lab.sh down CLIENT SERVER
set -euo pipefail
cmd=${1:?usage: lab.sh up|down CLIENT SERVER}; cli=${2:?client namespace}; srv=${3:?server namespace}

case "$cmd" in
up)
  ip netns add "$cli"
  ip netns add "$srv"
  for ns in "$cli" "$srv"; do
    ip -n "$ns" link set lo up
    ip netns exec "$ns" sysctl -qw net.ipv6.conf.default.accept_dad=0
  done
  ip link add "lab$$a" type veth peer name "lab$$b"
  ip link set "lab$$a" netns "$cli" name veth0
  ip link set "lab$$b" netns "$srv" name veth0
  ip -n "$cli" addr add 192.0.2.20/24 dev veth0
  ip -n "$cli" addr add 10.0.0.20/24 dev veth0
  ip -n "$cli" addr add 2001:db8::20/64 dev veth0 nodad
  ip -n "$srv" addr add 192.0.2.10/24 dev veth0
  ip -n "$srv" addr add 10.0.0.10/24 dev veth0
  ip -n "$srv" addr add 2001:db8::10/64 dev veth0 nodad
  ip -n "$cli" link set veth0 up
  ip -n "$srv" link set veth0 up
  ;;
down)
  ip netns del "$cli" 2>/dev/null || true
  ip netns del "$srv" 2>/dev/null || true
  ;;
*) echo "usage: lab.sh up|down CLIENT SERVER" >&2; exit 2 ;;
esac
