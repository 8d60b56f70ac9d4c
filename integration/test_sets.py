"""Named sets on real packets, for every backend: a blocked source is dropped, and taking it
out of the set (or putting it back) with `ctkit set del|add` takes effect at once, without a
reload; a per-member timeout is visible in the kernel's set."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from lab import CLIENT4, SERVER4, backend_args, run, tcp_listen, tcp_probe
from test_differential import BACKENDS, make_pair

ROOT = Path(__file__).resolve().parent.parent
POLICY = ROOT / "examples" / "blocklist-set.json"


def ctkit(*args: str) -> str:
    proc = subprocess.run([sys.executable, "-m", "ctkit", *args], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def web(client: str, server: str) -> str:
    listener = tcp_listen(server, SERVER4, 80)
    try:
        return tcp_probe(client, SERVER4, 80, timeout=0.5)
    finally:
        listener.close()


@pytest.mark.parametrize("backend", BACKENDS)
def test_set_membership_changes_without_a_reload(lab, backend):
    client, server = make_pair(lab)
    args = ["--netns", server, *backend_args(backend)]
    ctkit("apply", str(POLICY), *args)
    assert web(client, server) == "open"
    ctkit("set", "add", "blocklist", CLIENT4, "--timeout", "600", *args)
    assert web(client, server) == "timeout"  # dropped: the client is in the blocklist
    listing = (run(server, "nft", "list", "set", "inet", "ctkit", "blocklist").stdout if backend == "nft"
               else run(server, "ipset", "list", "ctkit-blocklist").stdout)
    assert CLIENT4 in listing and ("expires" in listing or "timeout 5" in listing), listing
    ctkit("set", "del", "blocklist", CLIENT4, *args)
    assert web(client, server) == "open"
    ctkit("set", "add", "web_ports", "8080", *args)
    listener = tcp_listen(server, SERVER4, 8080)
    try:
        assert tcp_probe(client, SERVER4, 8080, timeout=0.5) == "open"  # a port added at run time
    finally:
        listener.close()
    ctkit("remove", *args)
    if backend != "nft":
        assert run(server, "ipset", "list", "-n").stdout.split() == []  # ctkit's ipsets went with its chains


@pytest.mark.parametrize("backend", BACKENDS)
def test_the_audit_finds_a_declared_member_taken_out_and_not_a_member_added(lab, backend):
    """A member the policy declares, deleted at run time (`ctkit set del`), is drift (exit 1, the set
    named at its pointer); a member added at run time (`ctkit set add`) is not the policy's, not drift."""
    import json
    ns = lab.netns("setaudit")
    args = ["-n", ns, *backend_args(backend)]
    ctkit("apply", str(POLICY), *args)
    ctkit("set", "add", "web_ports", "8080", *args)
    report = json.loads(ctkit("audit", str(POLICY), *args, "--json", "--no-flows"))
    assert report["drift"] == [], report["drift"]
    ctkit("set", "del", "web_ports", "443", *args)
    proc = subprocess.run([sys.executable, "-m", "ctkit", "audit", str(POLICY), *args, "--json", "--no-flows"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1, proc.stderr
    drift = json.loads(proc.stdout)["drift"]
    assert [(d["kind"], d["subject"].split(" ", 1)[-1] if d["subject"].startswith("ipv") else d["subject"],
             d["expected"], d["origin"]) for d in drift] == [
        ("missing-members", "set web_ports", "443", "/sets/web_ports")], drift
