"""A 100,000-rule policy is applied and audited clean (issue 12): the input limits refused its file
before (9.8 MB, 1.1 million values, over 4 MiB / 500,000). Read back from the kernel: every rule is
in ctkit's table. About 15 s to apply and as much to audit on this machine."""
from __future__ import annotations

import json
import subprocess
import sys

from lab import run

RULES = 100_000


def ctkit(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ctkit", *args], capture_output=True, text=True, timeout=600)


def test_a_100000_rule_policy_applies_and_audits_clean(lab, tmp_path):
    ns = lab.netns("big")
    rules = [{"name": f"r{i}", "protocol": "tcp" if i % 2 else "udp", "dport": 1024 + (i % 60000),
              "saddr": f"10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}", "action": "accept" if i % 3 else "drop"}
             for i in range(RULES)]
    policy = tmp_path / "big.json"
    policy.write_text(json.dumps({"version": 1, "chains": {"input": {"policy": "accept", "rules": rules}}}))
    r = ctkit("apply", str(policy), "-n", ns)
    assert r.returncode == 0, r.stderr
    listed = json.loads(run(ns, "nft", "-j", "list", "chain", "inet", "ctkit", "input").stdout)["nftables"]
    assert sum(1 for item in listed if "rule" in item) == RULES
    r = ctkit("audit", str(policy), "-n", ns, "--no-flows", "--json")
    report = json.loads(r.stdout)
    assert r.returncode == 0 and report["status"] == "clean" and report["drift"] == [], r.stderr
