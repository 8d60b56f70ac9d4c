#!/usr/bin/env bash
# The main job in a throwaway lab: apply examples/dns-server.json to a server
# namespace, send DNS traffic from a client namespace, and prove that port 53
# was not tracked while other traffic was. The lab is removed on any exit.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
CTKIT="$VENV/bin/ctkit"
PY="$VENV/bin/python"
CLI="ctkit-demo-cli-$$"
SRV="ctkit-demo-srv-$$"

cleanup() { bash netns-scripts/lab.sh down "$CLI" "$SRV"; }
trap cleanup EXIT INT TERM

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
count() { ip netns exec "$SRV" cat /proc/sys/net/netfilter/nf_conntrack_count; }

say "lab: client namespace $CLI <-> server namespace $SRV"
bash netns-scripts/lab.sh up "$CLI" "$SRV"

say "ctkit validate examples/dns-server.json"
"$CTKIT" validate examples/dns-server.json

say "ctkit apply examples/dns-server.json --netns $SRV"
"$CTKIT" apply examples/dns-server.json --netns "$SRV"
before=$(count)

say "DNS-like traffic from the client to port 53 (UDP and TCP, IPv4 and IPv6)"
"$PY" netns-scripts/traffic.py dns "$CLI" "$SRV" --count 200
after_dns=$(count)

say "one SSH-like TCP connection from the LAN to port 22 (tracked as usual)"
"$PY" netns-scripts/traffic.py tcp "$CLI" "$SRV" 22 --src 10.0.0.20
after_ssh=$(count)

say "ctkit show --netns $SRV (what ctkit owns, with counters)"
"$CTKIT" show --netns "$SRV"

say "proof"
notrack=$(ip netns exec "$SRV" nft -j list chain inet ctkit notrack-pre | "$PY" -c '
import json, sys
print(sum(e["counter"]["packets"] for i in json.load(sys.stdin)["nftables"] if "rule" in i
          for e in i["rule"]["expr"] if "counter" in e))')
echo "conntrack entries in $SRV: $before before, $after_dns after the DNS traffic, $after_ssh after one SSH connection"
echo "packets through the notrack rules (prerouting): $notrack"
if [ "$after_dns" -eq 0 ] && [ "$notrack" -gt 0 ] && [ "$after_ssh" -gt 0 ]; then
  echo "OK: port 53 was not tracked (count stayed 0, notrack counters rose); other traffic still is."
else
  echo "UNEXPECTED: see the numbers above" >&2
  exit 1
fi

say "ctkit audit examples/dns-server.json --netns $SRV (policy vs kernel, conntrack health)"
"$CTKIT" audit examples/dns-server.json --netns "$SRV" || echo "(the audit has findings: see above)"

say "ctkit ct summary --netns $SRV --by proto,dport (what conntrack holds)"
"$CTKIT" ct summary --netns "$SRV" --by proto,dport

say "ctkit remove --netns $SRV"
"$CTKIT" remove --netns "$SRV"
