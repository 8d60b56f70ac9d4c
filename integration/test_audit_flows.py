"""The audit's flow check judges each distinct flow once (ctkit/audit/run.py denied_flows): its verdicts must
be exactly those of judging every conntrack entry on its own, on a real table that mixes what the policy
admits and refuses, with source ports inside and outside the ranges the rules test."""
from __future__ import annotations

import ipaddress
import json

from lab import run

from ctkit import pipeline
from ctkit.audit import run as audit_run
from ctkit.audit.admission import Flow, verdict
from ctkit.kernel import conntrack

POLICY = {"version": 1, "chains": {
    "input": {"policy": "drop", "rules": [
        {"name": "dns-answers", "protocol": "udp", "sport": 53, "action": "accept"},
        {"name": "ssh-lan", "protocol": "tcp", "dport": 22, "saddr": "10.0.0.0/8", "action": "accept"},
        {"name": "web", "protocol": "tcp", "dport": [80, 443], "sport": {"not": "1-1023"}, "action": "accept"}]},
    "forward": {"policy": "drop", "rules": [
        {"daddr_type": {"not": "local"}, "protocol": "tcp", "dport": 80, "action": "accept"}]}}}
HOST = "192.0.2.10"


def _entries(n: int):
    """conntrack -R lines: clients from three networks to this host's ports and to a transit address."""
    for i in range(n):
        src = ("10.0.0.%d", "198.51.100.%d", "203.0.113.%d")[i % 3] % (i % 50 + 1)
        dst = HOST if i % 4 else "192.0.2.99"  # not the host's: a forwarded flow
        if i % 5 == 0:
            yield f"-A -t 600 -s {src} -d {dst} -p udp --sport {(53, 5353, 40000 + i)[i // 11 % 3]} --dport 5353\n"
        else:
            sport = (22, 1000, 40000 + i, 1023, 1024)[i // 7 % 5]  # apart from the rest of the key
            yield (f"-A -t 600 -u SEEN_REPLY,ASSURED -s {src} -d {dst} -p tcp --sport {sport} "
                   f"--dport {(22, 80, 443, 8080)[i % 4]} --state ESTABLISHED\n")


def _one_by_one(table, ns, local):
    """The reference: every entry judged on its own, as the check did before it grouped them."""
    out = set()
    for e in conntrack.entries(ns, columns=audit_run.FLOW_COLUMNS):
        d = e.as_dict()
        src_local, dst_local = ipaddress.ip_address(d["src"]) in local, ipaddress.ip_address(d["dst"]) in local
        for hook in [h for h, on in (("input", dst_local), ("output", src_local)) if on] or ["forward"]:
            flow = Flow(d["family"], d["proto"], d["src"], d["dst"], d["sport"], d["dport"],
                        "related" if d["master_src"] else "new",
                        iif="lo" if hook == "input" and src_local else None,
                        oif="lo" if hook == "output" and dst_local else None,
                        not_ifaces=() if (src_local and dst_local) else ("lo",),
                        saddr_local=src_local, daddr_local=dst_local)
            v = verdict(table, hook, flow)
            if v in ("drop", "reject"):
                out.add((d["id"], hook, v))
                break
    return out


def test_grouped_verdicts_are_the_verdicts_of_each_entry(lab, tmp_path):
    ns = lab.netns("fl")
    run(ns, "ip", "addr", "add", f"{HOST}/32", "dev", "lo")  # the host's own address
    lines = tmp_path / "ct.txt"
    lines.write_text("".join(_entries(3000)))
    run(ns, "conntrack", "-R", str(lines))
    path = tmp_path / "p.json"
    path.write_text(json.dumps(POLICY))
    compiled = pipeline.compile_file(path)
    local = {ipaddress.ip_address(a) for a in audit_run._local_addresses(ns)}
    got = {(f.entry["id"], f.chain, f.verdict) for f in audit_run.denied_flows(compiled, ns)}
    want = _one_by_one(compiled.plan.table, ns, local)
    assert got == want
    admitted = conntrack.count(ns).entries - len(want)
    assert len(want) > 100 and admitted > 100, (len(want), admitted)  # both kinds are there
