"""A foreign rule after ctkit sees what ctkit accepted, on nft and on iptables alike (issue 13, section 2).

On nft an accept ends ctkit's base chain only: another table's base chain at the same hook, at a later
priority, still sees the packet. On iptables the same place is a rule after ctkit's jump in the built-in
chain (fail2ban's, say). One policy accepts on every path ctkit has: in its top-level chain, in a user
chain behind a jump, two chains deep, behind a verdict map, behind a goto, and in a toggled rule. For each
path one port meets a foreign counter after ctkit and one a foreign drop; the kernel's counters and the
packets delivered must be the same on nft, iptables-nft and iptables-legacy: counted, dropped by the
foreign rule, and never counted for a packet ctkit dropped. A foreign counter on ctkit's accept bit
(ctkit/accept_mark.py) stays 0: the bit never leaves ctkit's chains.
"""
from __future__ import annotations

import json

import pytest
from lab import BACKENDS, CLIENT4, CLIENT6, SERVER4, SERVER6, backend_named, nft_json, run, tcp_listen, tcp_probe
from test_differential import make_pair

from ctkit import accept_mark, pipeline, service

TIMEOUT = 0.5
SEEN, DROPPED = 0, 100  # port offsets: a foreign counter after ctkit | a foreign drop after ctkit
#: path -> its base port (the policy accepts base+SEEN and base+DROPPED on that path)
PATHS = {"top-level accept": 8001, "user chain (jump)": 8002, "toggled rule": 8003, "verdict map -> chain": 8004,
         "two chains deep": 8005, "goto": 8006}
CTKIT_DROPS = 8007  # reaches the end of goto'd chain deep: input's policy drop
BIT = accept_mark.ACCEPT_BIT


def _ports(base: int) -> list[int]:
    return [base + SEEN, base + DROPPED]


POLICY = {
    "version": 1,
    "toggles": {"open": True},
    "chains": {
        "input": {"policy": "drop", "rules": [
            {"name": "established", "ct_state": ["established", "related"], "action": "accept"},
            {"name": "icmp", "protocols": ["icmp", "icmpv6"], "action": "accept"},
            {"name": "top", "protocol": "tcp", "dport": _ports(8001), "action": "accept"},
            {"name": "to-web", "protocol": "tcp", "jump": "web"},
            {"name": "toggled", "when": "open", "protocol": "tcp", "dport": _ports(8003), "action": "accept"},
            {"name": "dispatch", "protocol": "tcp",
             "vmap": {"key": "dport", "map": {str(p): "jump web2" for p in _ports(8004)}}},
            {"name": "to-deep", "protocol": "tcp", "goto": "deep"}]},
        "web": {"rules": [{"name": "web", "protocol": "tcp", "dport": _ports(8002), "action": "accept"},
                          {"name": "to-inner", "jump": "inner"}]},
        "inner": {"rules": [{"name": "inner", "protocol": "tcp", "dport": _ports(8005), "action": "accept"}]},
        "web2": {"rules": [{"name": "web2", "protocol": "tcp", "action": "accept"}]},
        "deep": {"rules": [{"name": "deep", "protocol": "tcp", "dport": _ports(8006), "action": "accept"}]},
    },
}
#: (net, port): the probes; v6 on the nested paths
PROBES = [("v4", p) for base in PATHS.values() for p in _ports(base)] + [("v4", CTKIT_DROPS)] + \
         [("v6", p) for p in (8002 + SEEN, 8002 + DROPPED, 8005 + SEEN, 8003 + DROPPED)]
COUNTED = sorted({p for _n, p in PROBES if p % 1000 < 100} | {CTKIT_DROPS})  # ports with a foreign counter
FOREIGN_DROPS = sorted({p for _n, p in PROBES if p % 1000 >= 100})


def _nft_foreign() -> str:
    """The foreign table: a base chain at hook input, after ctkit's (filter priority 0)."""
    rules = [f'tcp dport {p} counter comment "p{p}"' for p in COUNTED]
    rules += [f'tcp dport {p} counter drop comment "p{p}"' for p in FOREIGN_DROPS]
    rules.append(f'meta mark & {BIT:#x} == {BIT:#x} counter comment "bit"')
    body = "\n".join(f"    {r}" for r in rules)
    return (f"table inet foreign {{\n  chain input {{\n    type filter hook input priority 10; policy accept;\n"
            f"{body}\n  }}\n}}\n")


def _iptables_foreign(ns: str, variant: str) -> None:
    """The same rules appended to the built-in INPUT chain, after ctkit's jump."""
    for tool in (f"iptables-{variant}", f"ip6tables-{variant}"):
        for p in COUNTED:
            run(ns, tool, "-A", "INPUT", "-p", "tcp", "--dport", str(p), "-m", "comment", "--comment", f"p{p}")
        for p in FOREIGN_DROPS:
            run(ns, tool, "-A", "INPUT", "-p", "tcp", "--dport", str(p), "-m", "comment", "--comment", f"p{p}",
                "-j", "DROP")
        run(ns, tool, "-A", "INPUT", "-m", "mark", "--mark", f"{BIT:#x}/{BIT:#x}", "-m", "comment", "--comment",
            "bit")


def _counters(ns: str, backend: str) -> dict[str, int]:
    """Packets per foreign rule comment (both families summed)."""
    out: dict[str, int] = {}
    if backend == "nft":
        for item in nft_json(ns, "list", "table", "inet", "foreign"):
            rule = item.get("rule")
            if rule and "comment" in rule:
                out[rule["comment"]] = sum(e["counter"]["packets"] for e in rule["expr"] if "counter" in e)
        return out
    variant = backend.partition("-")[2]
    for tool in (f"iptables-{variant}-save", f"ip6tables-{variant}-save"):
        for line in run(ns, tool, "-c", "-t", "filter").stdout.splitlines():
            if line.startswith("[") and " -A INPUT " in line and "--comment" in line:
                packets = int(line[1:line.index(":")])
                comment = line.split("--comment ", 1)[1].split()[0].strip('"')
                out[comment] = out.get(comment, 0) + packets
    return out


def _run(lab, backend: str, tmp_path) -> tuple[dict, dict, set]:
    client, server = make_pair(lab, backend[:1] + backend[-1])
    policy = tmp_path / f"foreign-after-{backend}.json"
    policy.write_text(json.dumps(POLICY))
    compiled = pipeline.compile_file(policy)
    backend_named(backend).apply(compiled.plan, server)
    if backend == "nft":
        run(server, "nft", "-f", "-", input=_nft_foreign())
    else:
        _iptables_foreign(server, backend.partition("-")[2])
    results = {}
    for net, port in PROBES:
        addr, src = (SERVER4, CLIENT4) if net == "v4" else (SERVER6, CLIENT6)
        listener = tcp_listen(server, addr, port)
        try:
            results[(net, port)] = tcp_probe(client, addr, port, timeout=TIMEOUT, src=src)
        finally:
            listener.close()
    report = service.audit(compiled, backend_named(backend), server, check_flows=False)
    return results, _counters(server, backend), {f.id for f in report.findings}


def test_a_foreign_rule_after_ctkit_sees_what_ctkit_accepted_on_every_backend(lab, tmp_path):
    outcomes = {}
    for backend in BACKENDS:
        results, counters, findings = _run(lab, backend, tmp_path)
        # the audit says so on every backend: the foreign drops after ctkit drop what it accepts
        assert "foreign.later-drop" in findings, (backend, findings)
        # per port: (what the client saw, whether the foreign rule after ctkit counted a packet)
        outcomes[backend] = {k: (v, counters.get(f"p{k[1]}", 0) > 0) for k, v in results.items()}
        outcomes[backend]["bit"] = counters.get("bit", -1)
    table = "\n".join(f"  {k!s:<16} " + " | ".join(f"{outcomes[b][k]!s:<18}" for b in BACKENDS)
                      for k in outcomes["nft"])
    print(f"\n  {'probe':<16} " + " | ".join(f"{b:<18}" for b in BACKENDS) + "\n" + table)
    for backend in BACKENDS[1:]:
        assert outcomes[backend] == outcomes["nft"], f"{backend} differs from nft:\n{table}"
    want = {}
    for net, port in PROBES:
        if port == CTKIT_DROPS:
            want[(net, port)] = ("timeout", False)  # ctkit dropped it: the foreign rule never sees it
        elif port % 1000 >= 100:
            want[(net, port)] = ("timeout", True)  # ctkit accepted it, the foreign rule after ctkit dropped it
        else:
            want[(net, port)] = ("open", True)  # ctkit accepted it and the foreign counter after ctkit saw it
    want["bit"] = 0
    wrong = [f"  {k}: {outcomes['nft'][k]}, expected {v}" for k, v in want.items() if outcomes["nft"][k] != v]
    assert not wrong, "every backend agrees, but not with what the policy means:\n" + "\n".join(wrong) + "\n" + table


@pytest.mark.parametrize("backend", BACKENDS[1:])
def test_ctkits_own_view_stays_clean_beside_the_foreign_rules(lab, backend, tmp_path):
    """Drift: none (the accept bit's rules read back as written); rule hits: each accepted flow counts once
    on the rule that accepted it, the mark tests count for no policy rule."""
    client, server = make_pair(lab, "v")
    policy = tmp_path / "foreign-after.json"
    policy.write_text(json.dumps(POLICY))
    b = backend_named(backend)
    compiled = pipeline.compile_file(policy)
    b.apply(compiled.plan, server)
    _iptables_foreign(server, backend.partition("-")[2])
    listener = tcp_listen(server, SERVER4, 8005)
    try:
        assert tcp_probe(client, SERVER4, 8005, timeout=TIMEOUT, src=CLIENT4) == "open"
    finally:
        listener.close()
    assert b.changes(compiled.plan, server).items == (), "an apply now would change something"
    report = service.audit(compiled, b, server, check_flows=False)
    assert report.drift == [], report.drift
    hits = b.rule_hits(compiled.plan.table.name, server)
    assert hits.get("inner", (0, 0))[0] == 1, hits  # the SYN; the rest of the flow is established
    assert hits.get("established", (0, 0))[0] >= 1, hits
    assert hits.get("to-inner", (0, 0))[0] >= 1 and hits.get("to-web", (0, 0))[0] >= 1, hits
    # the toggle off: its switch chain is empty, the test after the jump to it finds no bit, input drops
    service.toggle(b, "open", False, compiled.plan.table.name, server)
    before = _counters(server, backend).get("p8003", 0)
    listener = tcp_listen(server, SERVER4, 8003)
    try:
        assert tcp_probe(client, SERVER4, 8003, timeout=TIMEOUT, src=CLIENT4) == "timeout"
        assert _counters(server, backend).get("p8003", 0) == before  # ctkit dropped it: unseen after ctkit
        service.toggle(b, "open", True, compiled.plan.table.name, server)
        assert tcp_probe(client, SERVER4, 8003, timeout=TIMEOUT, src=CLIENT4) == "open"
        assert _counters(server, backend).get("p8003", 0) > before
    finally:
        listener.close()


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_policy_drop_after_ctkit_drops_what_ctkit_accepted(lab, backend, tmp_path):
    """nft: another table's base chain at hook input with policy drop; iptables: the built-in INPUT chain's
    policy DROP, which ctkit's RETURN falls through to. The same packet is dropped on all three, and an
    iptables apply says why."""
    client, server = make_pair(lab, "p")
    policy = tmp_path / "policy-drop-after.json"
    policy.write_text(json.dumps(POLICY))
    if backend == "nft":
        run(server, "nft", "-f", "-",
            input="table inet foreign {\n  chain input {\n    type filter hook input priority 10; policy drop;\n"
                  "  }\n}\n")
    else:
        variant = backend.partition("-")[2]
        for tool in (f"iptables-{variant}", f"ip6tables-{variant}"):
            run(server, tool, "-P", "INPUT", "DROP")
    applied = backend_named(backend).apply(pipeline.compile_file(policy).plan, server)
    if backend != "nft":
        assert any("policy DROP" in w and "INPUT" in w for w in applied.warnings), applied.warnings
    listener = tcp_listen(server, SERVER4, 8002)
    try:
        assert tcp_probe(client, SERVER4, 8002, timeout=TIMEOUT, src=CLIENT4) == "timeout"
    finally:
        listener.close()


@pytest.mark.parametrize("backend", BACKENDS[1:])
def test_a_rollback_puts_the_accept_bit_chains_back(lab, backend, tmp_path):
    """confirm-or-rollback's snapshot holds CTKIT-ACCEPT-END and the bit's rules like any chain of ctkit's: a
    policy without nested accepts (no such chain) replaced by the snapshot gives the nested accepts back."""
    client, server = make_pair(lab, "r")
    b = backend_named(backend)
    policy = tmp_path / "nested.json"
    policy.write_text(json.dumps(POLICY))
    plain = tmp_path / "plain.json"
    plain.write_text(json.dumps({"version": 1, "chains": {"input": {"policy": "drop", "rules": [
        {"name": "established", "ct_state": ["established", "related"], "action": "accept"}]}}}))
    b.apply(pipeline.compile_file(policy).plan, server)
    saved = b.snapshot("ctkit", server)
    b.apply(pipeline.compile_file(plain).plan, server)
    _iptables_foreign(server, backend.partition("-")[2])
    listener = tcp_listen(server, SERVER4, 8005)
    try:
        assert tcp_probe(client, SERVER4, 8005, timeout=TIMEOUT, src=CLIENT4) == "timeout"
        b.restore("ctkit", saved, server)
        assert tcp_probe(client, SERVER4, 8005, timeout=TIMEOUT, src=CLIENT4) == "open"
    finally:
        listener.close()
    assert _counters(server, backend).get("p8005", 0) > 0  # accepted two chains deep, seen after ctkit
    assert b.changes(pipeline.compile_file(policy).plan, server).items == ()
