"""ctkit validate compiles a policy that passes its checks for each backend asked (both by default): a
construct one backend cannot express is an error naming the rule and its line, before anything is sent
(issue 13, part 2). Before, `signature` on nft and `payload` without family ipv4 on iptables were
refused only by compile or apply."""
from __future__ import annotations

import json
import subprocess
import sys

from goldens import EXAMPLES

POLICY = """version: 1
chains:
  input:
    policy: accept
    rules:
      - name: ok
        protocol: tcp
        dport: 22
        action: accept
      - name: game-sig
        protocol: udp
        dport: 27015
        signature: {hex: "ffffffff54"}
        action: drop
      - name: pl
        protocol: udp
        dport: 27016
        payload: [{base: th, offset: 8, hex: "ffff"}]
        action: drop
"""


def validate(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ctkit", "validate", *args], capture_output=True, text=True,
                          timeout=120)


def test_what_a_backend_cannot_express_is_named_by_rule_and_line(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text(POLICY)
    both = validate(str(path), "--json")
    assert both.returncode == 2, both.stderr
    (report,) = json.loads(both.stdout)
    found = [(p["pointer"], p["line"], p["message"].split(": backend ")[0], p["message"].split(" cannot")[0])
             for p in report["problems"]]
    assert found == [("/chains/input/rules/1", 10, "rule game-sig", "rule game-sig: backend nft"),
                     ("/chains/input/rules/2", 15, "rule pl", "rule pl: backend iptables")]
    assert not report["valid"]
    nft = validate(str(path), "-b", "nft")
    assert nft.returncode == 2 and "backend nft cannot express signature" in nft.stderr
    assert "rule pl" not in nft.stderr
    ipt = validate(str(path), "--backend", "iptables")
    assert ipt.returncode == 2 and "backend iptables cannot express payload" in ipt.stderr
    assert "rule game-sig" not in ipt.stderr
    assert f"{path}:15: error: /chains/input/rules/2: rule pl: backend iptables" in ipt.stderr
    bad = validate(str(path), "-b", "pf")
    assert bad.returncode == 2 and "unknown backend 'pf'" in bad.stderr


def test_every_example_is_valid_for_both_backends():
    r = validate(*map(str, EXAMPLES))
    assert r.returncode == 0, r.stderr
    assert r.stdout.count(": ok (") == len(EXAMPLES)
