"""`ctkit set add|del` checks a member against the set's type as the kernel has it, for every backend:
a port in an address set, an impossible address or a host name is refused (exit 2) before the
kernel or a resolver sees it, and the set's members stay as they were; a valid address goes in."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from lab import BACKENDS, backend_args, nft_json, run

ROOT = Path(__file__).resolve().parent.parent
CTKIT = str(ROOT / ".venv" / "bin" / "ctkit")
POLICY = ROOT / "examples" / "blocklist-set.json"  # blocklist: ipv4_addr, interval; web_ports: inet_service


def ctkit(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([CTKIT, *args], capture_output=True, text=True, timeout=60)


def kernel_members(ns: str, backend: str, name: str) -> list[str]:
    if backend == "nft":
        items = nft_json(ns, "list", "set", "inet", "ctkit", name)
        elems = next(i["set"] for i in items if "set" in i).get("elem", [])
        values = [e["elem"]["val"] if isinstance(e, dict) and "elem" in e else e for e in elems]  # no expiry
        return sorted(json.dumps(v, sort_keys=True) for v in values)
    listing = run(ns, "ipset", "list", f"ctkit-{name}").stdout
    return sorted(line.split()[0] for line in listing.split("Members:", 1)[1].splitlines() if line.strip())


@pytest.mark.parametrize("backend", BACKENDS)
def test_members_are_checked_against_the_set_type(lab, backend):
    ns = lab.netns("mem")
    args = ["--netns", ns, *backend_args(backend)]
    applied = ctkit("apply", str(POLICY), *args)
    assert applied.returncode == 0, applied.stderr
    before = kernel_members(ns, backend, "blocklist")
    ports_before = kernel_members(ns, backend, "web_ports")
    for bad in ("80", "999.1.1.1", "localhost", "example.invalid", "2001:db8::1", "10.0.0.1/8"):
        for verb in ("add", "del"):
            proc = ctkit("set", verb, "blocklist", bad, *args)
            assert proc.returncode == 2, (bad, verb, proc.stdout, proc.stderr)
            assert repr(bad) in proc.stderr and "ipv4_addr" in proc.stderr, proc.stderr
    assert "host names are not resolved" in ctkit("set", "add", "blocklist", "localhost", *args).stderr
    for bad in ("192.0.2.1", "http", "70000"):
        proc = ctkit("set", "add", "web_ports", bad, *args)
        assert proc.returncode == 2 and "inet_service" in proc.stderr, (bad, proc.stderr)
    assert kernel_members(ns, backend, "blocklist") == before
    assert kernel_members(ns, backend, "web_ports") == ports_before
    missing = ctkit("set", "add", "nosuchset", "192.0.2.1", *args)
    assert missing.returncode == 2 and "no set" in missing.stderr, missing.stderr

    ok = ctkit("set", "add", "blocklist", "192.0.2.33", *args)
    assert ok.returncode == 0, ok.stderr
    after = kernel_members(ns, backend, "blocklist")
    assert after != before and any("192.0.2.33" in m for m in after), after
    prefix = ctkit("set", "add", "blocklist", "203.0.113.64/28", *args)  # the set has the interval flag
    assert prefix.returncode == 0, prefix.stderr
    assert any("203.0.113.64" in m for m in kernel_members(ns, backend, "blocklist"))
    port = ctkit("set", "add", "web_ports", "8080", *args)
    assert port.returncode == 0, port.stderr
    assert any("8080" in m for m in kernel_members(ns, backend, "web_ports"))
    gone = ctkit("set", "del", "blocklist", "192.0.2.33", *args)
    assert gone.returncode == 0, gone.stderr
    assert not any("192.0.2.33" in m for m in kernel_members(ns, backend, "blocklist"))
    ctkit("remove", *args)
