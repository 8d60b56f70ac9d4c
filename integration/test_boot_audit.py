"""`ctkit audit POLICY --boot DIR` on the real kernel: the exported boot files are loaded into a scratch
namespace and compared with what runs. Clean right after apply + export; a change made after the export
(a rule edited by an apply of another file, a rule added by hand) is named; files that cannot load (an
iptables file naming a cttimeout object no boot tool creates) are reported, not hidden; no scratch
namespace is left behind."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from lab import backend_args, run

from ctkit.kernel.netns import known

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
BACKENDS = ("nft", "iptables-nft")


def ctkit(*args: str) -> subprocess.CompletedProcess:
    r = subprocess.run([sys.executable, "-m", "ctkit", *args], capture_output=True, text=True, timeout=120)
    assert "Traceback" not in r.stderr, r.stderr
    return r


def boot_report(policy: Path, ns: str, out: Path, backend: list[str]) -> dict:
    r = ctkit("audit", str(policy), "--netns", ns, "--no-flows", "--json", "--boot", str(out), *backend)
    assert r.returncode in (0, 1), r.stderr
    return json.loads(r.stdout)["boot"]


@pytest.mark.parametrize("backend", BACKENDS)
def test_boot_files_are_compared_with_what_runs(lab, tmp_path, backend):
    ns = lab.netns("bt")
    args = backend_args(backend)
    policy = EXAMPLES / "server-baseline.json"
    assert ctkit("apply", str(policy), "--netns", ns, *args).returncode == 0
    assert ctkit("export", str(policy), "--dir", str(tmp_path / "boot"), *args[:2]).returncode == 0
    report = boot_report(policy, ns, tmp_path / "boot", args)
    assert report["clean"] and report["loaded"], report
    doc = json.loads(policy.read_text())
    doc["chains"]["input"]["rules"][4]["saddr"] = ["10.1.0.0/16"]  # ssh from another LAN, after the export
    edited = tmp_path / "edited.json"
    edited.write_text(json.dumps(doc))
    assert ctkit("apply", str(edited), "--netns", ns, *args).returncode == 0
    report = boot_report(policy, ns, tmp_path / "boot", args)
    assert not report["clean"]
    changed = [d for d in report["drift"] if d["kind"] == "changed"]
    assert changed and all("10.1.0.0/16" in d["expected"] and "10.0.0.0/8" in d["actual"] for d in changed), report
    assert not [n for n in known() if n.startswith("ctkit-boot")]


def test_a_rule_added_by_hand_is_not_brought_back_by_boot(lab, tmp_path):
    ns = lab.netns("bh")
    policy = EXAMPLES / "dns-server.json"
    assert ctkit("apply", str(policy), "--netns", ns).returncode == 0
    assert ctkit("export", str(policy), "--dir", str(tmp_path / "boot")).returncode == 0
    run(ns, "nft", "add", "rule", "inet", "ctkit", "input", "tcp", "dport", "8080", "accept")
    report = boot_report(policy, ns, tmp_path / "boot", [])
    assert [d["kind"] for d in report["drift"]] == ["missing"], report  # runs now, boot would not load it


def test_iptables_files_that_cannot_load_say_why(lab, tmp_path):
    ns = lab.netns("bx")
    policy = EXAMPLES / "dns-short-timeouts.json"
    args = backend_args("iptables-nft")
    assert ctkit("apply", str(policy), "--netns", ns, *args).returncode == 0
    assert ctkit("export", str(policy), "--dir", str(tmp_path / "boot"), *args[:2]).returncode == 0
    report = boot_report(policy, ns, tmp_path / "boot", args)
    assert not report["clean"] and report["error"], report
    assert not [n for n in known() if n.startswith("ctkit-boot")]
