"""The kernel behaviour behind the do-not-track lints (ctkit/policy/lint.py), with real packets, on every backend.

- An ICMP error about an untracked flow is related to no conntrack entry: it arrives as ct state
  invalid, so an invalid drop before the ICMP accept loses it (the lint's warning), and after it not.
- IPv6 neighbour discovery is untracked: a default-drop input chain that accepts only tracked
  states cuts IPv6 off while IPv4 works (the lint's warning); an ICMPv6 accept brings it back.
(The client-side trap, replies to the host's own connections to an untracked port, is in the
packet matrix: dns-server's and web-server-notrack's probes towards the peer.)
"""
from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
from lab import CLIENT4, CLIENT6, SERVER4, SERVER6, sock, tcp_listen, tcp_probe
from test_differential import BACKENDS, apply, make_pair

from ctkit.policy.lint import lint
from ctkit.policy.load import load_file

ROOT = Path(__file__).resolve().parent.parent
DNS = ROOT / "examples" / "dns-server.json"


def icmp_error_delivered(server: str) -> bool:
    """The server sends from untracked port 53 to a closed port of the client: does the port unreachable
    that comes back reach the server's socket (ECONNREFUSED on its next receive)?"""
    s = sock(server, socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(1.0)
    try:
        s.bind((SERVER4, 53))
        s.connect((CLIENT4, 4444))
        s.send(b"answer")
        try:
            s.recv(64)
        except ConnectionRefusedError:
            return True
        except OSError:
            return False
        return False
    finally:
        s.close()


def warnings(path: Path) -> list[str]:
    return [p.message for p in lint(load_file(path)) if p.severity == "warning"]


@pytest.mark.parametrize("backend", BACKENDS)
def test_icmp_errors_about_untracked_flows_are_invalid(lab, tmp_path, backend):
    client, server = make_pair(lab)
    apply(backend, DNS, server)
    assert icmp_error_delivered(server), "the example accepts ICMP before its invalid drop"
    # the order the lint warns about: invalid dropped before ICMP is accepted
    doc = json.loads(DNS.read_text())
    rules = doc["chains"]["input"]["rules"]
    icmp = next(r for r in rules if r["name"] == "icmp")
    rules.remove(icmp)
    rules.insert(next(i for i, r in enumerate(rules) if r["name"] == "invalid") + 1, icmp)
    swapped = tmp_path / "dns-invalid-first.json"
    swapped.write_text(json.dumps(doc))
    assert any(m.startswith("ICMP errors about the untracked flows of 'dns'") for m in warnings(swapped))
    client, server = make_pair(lab)
    apply(backend, swapped, server)
    assert not icmp_error_delivered(server)


@pytest.mark.parametrize("backend", BACKENDS)
def test_neighbour_discovery_is_untracked(lab, tmp_path, backend):
    doc = {"version": 1, "chains": {"input": {"policy": "drop", "rules": [
        {"name": "established", "ct_state": ["established", "related"], "action": "accept"},
        {"name": "web", "protocol": "tcp", "dport": 80, "action": "accept"}]}}}
    stateful = tmp_path / "no-icmpv6.json"
    stateful.write_text(json.dumps(doc))
    assert any("drops IPv6 neighbour discovery" in m for m in warnings(stateful))
    client, server = make_pair(lab)
    apply(backend, stateful, server)
    listeners = [tcp_listen(server, SERVER4, 80), tcp_listen(server, SERVER6, 80)]
    try:
        assert tcp_probe(client, SERVER4, 80, src=CLIENT4) == "open"
        assert tcp_probe(client, SERVER6, 80, src=CLIENT6, timeout=2.0) == "timeout"  # no neighbour answer
    finally:
        for s in listeners:
            s.close()
    doc["chains"]["input"]["rules"].append({"name": "icmpv6-nd", "protocol": "icmpv6", "action": "accept"})
    stateful.write_text(json.dumps(doc))
    assert warnings(stateful) == []
    client, server = make_pair(lab)
    apply(backend, stateful, server)
    listener = tcp_listen(server, SERVER6, 80)
    try:
        assert tcp_probe(client, SERVER6, 80, src=CLIENT6, timeout=2.0) == "open"
    finally:
        listener.close()
