"""`ctkit show --json` against a real kernel, on every backend: the document follows
schemas/show.schema.json, names its backend, and its per-rule counters are the ones the
kernel's own tool reports for the packets this test sent."""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
from lab import backend_args, run, tcp_listen, tcp_probe
from test_differential import BACKENDS

ROOT = Path(__file__).resolve().parent.parent
SCHEMA = json.loads((ROOT / "schemas" / "show.schema.json").read_text())
POLICY = ROOT / "examples" / "maintenance-toggle.json"
PROBES = 3


def ctkit(*args: str) -> str:
    proc = subprocess.run([sys.executable, "-m", "ctkit", *args], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def kernel_packets(ns: str, backend: str, comment: str) -> int:
    """Packets of the kernel rules whose comment starts with `comment`, as nft or iptables-save -c count them."""
    if backend == "nft":
        total = 0
        for item in json.loads(run(ns, "nft", "-j", "list", "table", "inet", "ctkit").stdout)["nftables"]:
            rule = item.get("rule")
            if rule and rule.get("comment", "").split(": ")[0] == comment:
                total += sum(e["counter"]["packets"] for e in rule["expr"] if "counter" in e)
        return total
    variant = backend.partition("-")[2]
    total = 0
    for tool in ("iptables", "ip6tables"):
        for line in run(ns, f"{tool}-{variant}-save", "-c").stdout.splitlines():
            found = re.search(r'--comment (?:"([^"]*)"|(\S+))', line)
            if line.startswith("[") and found and (found.group(1) or found.group(2)).split(": ")[0] == comment:
                total += int(line[1:].split(":")[0])
    return total


@pytest.mark.parametrize("backend", BACKENDS)
def test_show_json_follows_the_schema_on_every_backend(lab, backend):
    ns = lab.netns("show")
    args = ["--netns", ns, *backend_args(backend)]
    absent = json.loads(ctkit("show", "--json", *args))
    jsonschema.validate(absent, SCHEMA)
    assert absent["present"] is False and absent["rules"] == [] and absent["netns"] == ns
    ctkit("apply", str(POLICY), *args)
    for _ in range(PROBES):  # loopback SYNs to port 80: rule "web" accepts each
        listener = tcp_listen(ns, "127.0.0.1", 80)
        try:
            assert tcp_probe(ns, "127.0.0.1", 80) == "open"
        finally:
            listener.close()
    data = json.loads(ctkit("show", "--json", *args))
    jsonschema.validate(data, SCHEMA)
    assert data["backend"] == backend.partition("-")[0] and data["present"] is True
    assert data["toggles"] == {"maintenance": {"on": False, "policy": False}}
    rules = {r["id"]: r for r in data["rules"]}
    assert {"maintenance", "established", "web", "ssh-lan", "icmp"} <= set(rules)
    assert rules["web"]["packets"] == kernel_packets(ns, backend, "web") >= PROBES
    assert rules["web"]["bytes"] > 0
