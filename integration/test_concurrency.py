"""Two ctkit commands at once never lose each other's change (ctkit/lock.py), on the real kernel.

Without the lock an apply reads the live toggle states, a `ctkit toggle` lands, and the apply then
writes its older reading back: the toggle is lost. These tests race real processes and read the
result back from the kernel (nft's own listing of the toggle set and the named set).
"""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from lab import run

ROOT = Path(__file__).resolve().parent.parent
TOGGLE = ROOT / "examples" / "maintenance-toggle.json"
BLOCKLIST = ROOT / "examples" / "blocklist-set.json"


def ctkit(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "ctkit", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def finished(proc: subprocess.Popen) -> str:
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    return out


def toggle_is_on(ns: str) -> bool:
    items = json.loads(run(ns, "nft", "-j", "list", "set", "inet", "ctkit", "toggle_maintenance").stdout)["nftables"]
    return bool(next(i["set"] for i in items if "set" in i).get("elem"))


def big_toggle_policy(tmp_path: Path) -> Path:
    """The maintenance example with 3000 more rules: an apply's read-to-write window of about a second."""
    doc = json.loads(TOGGLE.read_text())
    doc["chains"]["input"]["rules"] += [{"name": f"r{i}", "protocol": "tcp", "dport": 10000 + i, "action": "accept"}
                                        for i in range(3000)]
    path = tmp_path / "big-toggle.json"
    path.write_text(json.dumps(doc))
    return path


def test_a_toggle_flipped_during_an_apply_survives(lab, tmp_path):
    ns = lab.netns("race")
    policy = big_toggle_policy(tmp_path)
    finished(ctkit("apply", str(policy), "--netns", ns))
    for round_ in range(10):
        want = round_ % 2 == 0  # on, off, on, ...: each round changes the state
        apply = ctkit("apply", str(policy), "--netns", ns)
        time.sleep(0.15 * round_)  # the toggle lands at a different moment of the apply each round
        toggle = ctkit("toggle", "maintenance", "on" if want else "off", "--netns", ns)
        finished(apply)
        finished(toggle)
        assert toggle_is_on(ns) == want, f"round {round_}: the toggle was lost"


def test_a_hundred_parallel_set_adds_are_all_in_the_set(lab):
    ns = lab.netns("adds")
    finished(ctkit("apply", str(BLOCKLIST), "--netns", ns))
    members = [f"192.0.2.{i}" for i in range(1, 101)]
    procs = [ctkit("set", "add", "blocklist", m, "--netns", ns) for m in members]
    for p in procs:
        finished(p)
    listing = run(ns, "nft", "list", "set", "inet", "ctkit", "blocklist").stdout
    missing = [m for m in members if f"{m} " not in listing and f"{m}," not in listing and f"{m}\n" not in listing]
    assert missing == []
