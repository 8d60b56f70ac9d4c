"""The iptables backend means what the nft backend means, on real packets.

For every case of the packet matrix (integration/matrix.py) the same policy is
applied with the nft backend in one namespace pair and with the iptables
backend, through iptables-nft and through iptables-legacy, in two others. The
same probes run against each; the outcome vectors (delivered or not, conntrack
entry or not, helper or not) must be identical, and must also meet the
matrix's absolute expectations.
"""
from __future__ import annotations

from pathlib import Path

import pytest
from lab import (
    BACKENDS,
    CLIENT4,
    CLIENT6,
    CLIENT_LAN4,
    SERVER4,
    SERVER6,
    SERVER_LAN4,
    backend_named,
    conntrack_list,
    ftp_passive,
    icmp_echo,
    run,
    tcp_listen,
    tcp_probe,
    udp_exchange,
    udp_server,
)
from matrix import CASES, NETS, Case, Outcome, Probe

from ctkit import pipeline

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT = 0.5  # a lost packet on a veth between two namespaces does not take longer


def make_pair(lab, tag: str = "d") -> tuple[str, str]:
    """A client and a server namespace on one veth (`tag`: two pairs in one test get other names)."""
    server = lab.netns(f"{tag}srv")
    client = lab.netns(f"{tag}cli")
    lab.link(client, server, [f"{CLIENT4}/24", f"{CLIENT_LAN4}/24", f"{CLIENT6}/64"],
             [f"{SERVER4}/24", f"{SERVER_LAN4}/24", f"{SERVER6}/64"])
    return client, server


def apply(name: str, policy: Path, ns: str) -> None:
    """The policy's ruleset into namespace `ns` with one backend (no host settings, no toggle keeping)."""
    backend_named(name).apply(pipeline.compile_file(policy).plan, ns)


def _conntrack(ns: str, probe: Probe) -> str:
    family = ["-f", "ipv6"] if probe.net == "v6" else []
    if probe.kind == "icmp":
        return conntrack_list(ns, *family, "-p", "icmpv6" if probe.net == "v6" else "icmp")
    proto = "udp" if probe.kind == "udp" else "tcp"
    return conntrack_list(ns, *family, "-p", proto, "--dport", str(probe.port))


def run_probe(client: str, server: str, side: str, probe: Probe) -> Outcome:
    """One probe between the pair; `side` (server | client) is the namespace that holds the policy."""
    policy_ns = server if side == "server" else client
    other_ns = client if policy_ns == server else server
    initiator, target = (other_ns, policy_ns) if probe.to == "policy" else (policy_ns, other_ns)
    server_addr, client_addr = NETS[probe.net]
    addr = server_addr if target == server else client_addr
    src = server_addr if initiator == server else client_addr
    run(policy_ns, "conntrack", "-F", check=False)
    if probe.kind == "tcp":
        listener = tcp_listen(target, addr, probe.port)
        try:
            result = tcp_probe(initiator, addr, probe.port, timeout=TIMEOUT, src=src)
        finally:
            listener.close()
    elif probe.kind == "udp":
        srv = udp_server(target, addr, probe.port)
        try:
            request, reply = udp_exchange(initiator, srv, addr, probe.port, timeout=TIMEOUT, src=src,
                                          **({"payload": probe.payload} if probe.payload is not None else {}))
        finally:
            srv.close()
        result = "reply" if reply else ("request-only" if request else "none")
    elif probe.kind == "icmp":
        result = "reply" if icmp_echo(initiator, addr, src=src, timeout=TIMEOUT) else "none"
    elif probe.kind == "ftp":
        result = "/".join(ftp_passive(initiator, target, addr, probe.port, timeout=TIMEOUT * 2, src=src))
    else:
        raise AssertionError(f"unknown probe kind {probe.kind}")
    entries = _conntrack(policy_ns, probe)
    return Outcome(result, bool(entries.strip()), "helper=ftp" in entries)


def run_matrix(client: str, server: str, case: Case) -> list[Outcome]:
    return [run_probe(client, server, case.side, p) for p in case.probes]


def _table(case: Case, results: dict[str, list[Outcome]]) -> str:
    lines = []
    for i, probe in enumerate(case.probes):
        cells = [f"{results[b][i].result},{'T' if results[b][i].tracked else '-'}"
                 f"{',helper' if results[b][i].helper else ''}" for b in BACKENDS]
        lines.append(f"  {probe.name:<22} " + " | ".join(f"{c:<22}" for c in cells))
    return "\n".join([f"  {'probe':<22} " + " | ".join(f"{b:<22}" for b in BACKENDS)] + lines)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.policy)
def test_backends_agree_on_real_packets(lab, case):
    results: dict[str, list[Outcome]] = {}
    for backend in BACKENDS:
        client, server = make_pair(lab)
        apply(backend, ROOT / "examples" / case.policy, server if case.side == "server" else client)
        results[backend] = run_matrix(client, server, case)
    table = _table(case, results)
    print(f"\n{case.policy} (policy on the {case.side})\n{table}")  # shown with pytest -s
    for backend in BACKENDS[1:]:
        assert results[backend] == results["nft"], f"{backend} differs from nft:\n{table}"
    wrong = []
    for probe, got in zip(case.probes, results["nft"], strict=True):
        for key, want in probe.expect.items():
            if getattr(got, key) != want:
                wrong.append(f"  {probe.name}: {key} is {getattr(got, key)!r}, the policy means {want!r}"
                             + (f" ({probe.note})" if probe.note else ""))
    assert not wrong, "every backend agrees, but not with the policy:\n" + "\n".join(wrong) + "\n" + table
