"""The iptables backend deletes only what it created, each test in its own namespace:
chains and ipsets named with ctkit's prefix that ctkit did not create (foreign) survive
apply and remove with their rules and the jumps to them, a foreign chain or set of a
name ctkit needs is refused, and foreign rules whose comments hold \\r, \\f, U+0085 or
bytes that are not UTF-8 do not break apply, show or remove."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from lab import run

ROOT = Path(__file__).resolve().parent.parent
VARIANTS = ("nft", "legacy")
TOOL = {"ipv4": "iptables", "ipv6": "ip6tables"}
DNS = ROOT / "examples" / "dns-server.json"
BLOCKLIST = ROOT / "examples" / "blocklist-set.json"


def ctkit(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ctkit", *args], capture_output=True, text=True,
                          errors="surrogateescape", timeout=120)


def ipt(ns: str, family: str, variant: str, *args: str | bytes) -> None:
    proc = subprocess.run(["ip", "netns", "exec", ns, f"{TOOL[family]}-{variant}", "-w", "10", *args],
                          capture_output=True, timeout=30)
    assert proc.returncode == 0, proc.stderr


def save_lines(ns: str, family: str, variant: str) -> list[bytes]:
    """iptables-save as raw lines (split on \\n only)."""
    proc = subprocess.run(["ip", "netns", "exec", ns, f"{TOOL[family]}-{variant}-save"],
                          capture_output=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    return [ln for ln in proc.stdout.split(b"\n") if ln and not ln.startswith(b"#")]


def ipsets(ns: str) -> list[str]:
    return run(ns, "ipset", "list", "-n").stdout.split()


def policy(variant: str, ns: str, *args: str) -> list[str]:
    return [*args, "--backend", "iptables", "--iptables-variant", variant, "--netns", ns]


@pytest.fixture
def ns(lab):
    return lab.netns("own")


def add_foreign(ns: str, variant: str) -> dict[str, list[bytes]]:
    """A chain CTKIT-foreign with a rule and a jump from INPUT to it (both families), an ipset
    ctkit-foreign; returns the lines that must survive."""
    for family, addr in (("ipv4", "198.51.100.9"), ("ipv6", "2001:db8:f::9")):
        ipt(ns, family, variant, "-N", "CTKIT-foreign")
        ipt(ns, family, variant, "-A", "CTKIT-foreign", "-s", addr, "-j", "DROP")
        ipt(ns, family, variant, "-A", "INPUT", "-j", "CTKIT-foreign")
    run(ns, "ipset", "create", "ctkit-foreign", "hash:ip")
    run(ns, "ipset", "add", "ctkit-foreign", "198.51.100.9")
    return {
        "ipv4": [b":CTKIT-foreign - [0:0]", b"-A INPUT -j CTKIT-foreign",
                 b"-A CTKIT-foreign -s 198.51.100.9/32 -j DROP"],
        "ipv6": [b":CTKIT-foreign - [0:0]", b"-A INPUT -j CTKIT-foreign",
                 b"-A CTKIT-foreign -s 2001:db8:f::9/128 -j DROP"],
    }


def assert_foreign_intact(ns: str, variant: str, want: dict[str, list[bytes]]) -> None:
    for family, lines in want.items():
        now = save_lines(ns, family, variant)
        for line in lines:
            assert now.count(line) == 1, f"{family}: {line!r} gone or doubled"
    assert "ctkit-foreign" in ipsets(ns)
    assert "198.51.100.9" in run(ns, "ipset", "list", "ctkit-foreign").stdout


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("path", [DNS, BLOCKLIST], ids=lambda p: p.name)
def test_foreign_prefixed_chain_jump_and_ipset_survive_apply_and_remove(ns, variant, path):
    want = add_foreign(ns, variant)
    r = ctkit(*policy(variant, ns, "apply", str(path)))
    assert r.returncode == 0, r.stderr
    assert_foreign_intact(ns, variant, want)
    assert "CTKIT-foreign" in r.stderr and "ipset ctkit-foreign" in r.stderr  # reported, left alone
    assert b"-A INPUT -j CTKIT-INPUT" in save_lines(ns, "ipv4", variant)
    # show lists ctkit's chains only
    r = ctkit(*policy(variant, ns, "show", "--json"))
    assert r.returncode == 0, r.stderr
    shown = json.loads(r.stdout)["families"]["ipv4"]["tables"]
    assert "CTKIT-foreign" not in shown.get("filter", {}) and "CTKIT-INPUT" in shown["filter"]
    # a chain with the prefix made after the apply is not ctkit's either
    for family in TOOL:
        ipt(ns, family, variant, "-N", "CTKIT-LATER")
        ipt(ns, family, variant, "-A", "CTKIT-LATER", "-j", "RETURN")
    r = ctkit(*policy(variant, ns, "apply", str(path)))  # re-apply: the same
    assert r.returncode == 0, r.stderr
    r = ctkit(*policy(variant, ns, "remove"))
    assert r.returncode == 0, r.stderr
    assert_foreign_intact(ns, variant, want)
    for family in TOOL:
        now = save_lines(ns, family, variant)
        assert b":CTKIT-LATER - [0:0]" in now and b"-A CTKIT-LATER -j RETURN" in now
        ours = [ln for ln in now if b"CTKIT-" in ln and b"foreign" not in ln and b"LATER" not in ln]
        assert ours == [], f"{family}: ctkit left {ours}"
    assert "CTKIT-LATER" in r.stderr
    assert [n for n in ipsets(ns) if n.startswith("ctkit-")] == ["ctkit-foreign"]


@pytest.mark.parametrize("variant", VARIANTS)
def test_a_foreign_chain_of_a_name_ctkit_needs_is_refused_and_kept(ns, variant):
    ipt(ns, "ipv4", variant, "-N", "CTKIT-INPUT")
    ipt(ns, "ipv4", variant, "-A", "CTKIT-INPUT", "-s", "198.51.100.7", "-j", "ACCEPT")
    before = {f: save_lines(ns, f, variant) for f in TOOL}
    r = ctkit(*policy(variant, ns, "apply", str(DNS)))
    assert r.returncode != 0
    assert "CTKIT-INPUT" in r.stderr and "did not create" in r.stderr and "Traceback" not in r.stderr
    assert {f: save_lines(ns, f, variant) for f in TOOL} == before
    r = ctkit(*policy(variant, ns, "remove"))
    assert r.returncode == 0, r.stderr
    assert {f: save_lines(ns, f, variant) for f in TOOL} == before


@pytest.mark.parametrize("variant", VARIANTS)
def test_a_foreign_ipset_of_a_name_ctkit_needs_is_refused_and_kept(ns, variant):
    run(ns, "ipset", "create", "ctkit-blocklist", "hash:ip")
    run(ns, "ipset", "add", "ctkit-blocklist", "198.51.100.3")
    r = ctkit(*policy(variant, ns, "apply", str(BLOCKLIST)))
    assert r.returncode != 0
    assert "ipset ctkit-blocklist" in r.stderr and "did not create" in r.stderr
    assert "198.51.100.3" in run(ns, "ipset", "list", "ctkit-blocklist").stdout
    assert all(b"CTKIT-" not in ln for f in TOOL for ln in save_lines(ns, f, variant))
    assert ctkit(*policy(variant, ns, "remove")).returncode == 0
    assert "ctkit-blocklist" in ipsets(ns)


@pytest.mark.parametrize("variant", VARIANTS)
def test_ctkits_own_sets_are_still_destroyed(ns, variant):
    assert ctkit(*policy(variant, ns, "apply", str(BLOCKLIST))).returncode == 0
    assert "ctkit-blocklist" in ipsets(ns)
    r = ctkit(*policy(variant, ns, "apply", str(DNS)))  # no sets any more
    assert r.returncode == 0, r.stderr
    assert [n for n in ipsets(ns) if n.startswith("ctkit-")] == []


#: \r alone (valid UTF-8: str.splitlines cut the line), then \f, U+0085, \x1c and a byte that is not UTF-8
COMMENTS = (b"a\rb", b"a\rb\x0cc\xc2\x85d\x1ce\xffz")


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("comment", COMMENTS, ids=("cr", "mixed"))
def test_foreign_comments_with_line_breaking_and_invalid_bytes_are_data(ns, variant, comment):
    COMMENT = comment
    for family in TOOL:
        ipt(ns, family, variant, "-A", "INPUT", "-m", "comment", "--comment", COMMENT, "-j", "ACCEPT")
    foreign = b'-A INPUT -m comment --comment "' + COMMENT + b'" -j ACCEPT'
    assert foreign in save_lines(ns, "ipv4", variant)
    r = ctkit(*policy(variant, ns, "apply", str(DNS)))
    assert r.returncode == 0, r.stderr
    r = ctkit(*policy(variant, ns, "show"))
    assert r.returncode == 0, r.stderr
    assert "-A INPUT -j CTKIT-INPUT" in r.stdout and "\r" not in r.stdout
    r = ctkit(*policy(variant, ns, "show", "--json"))
    assert r.returncode == 0 and json.loads(r.stdout)["present"]
    r = ctkit(*policy(variant, ns, "apply", str(ROOT / "examples" / "server-baseline.json")))
    assert r.returncode == 0, r.stderr
    r = ctkit(*policy(variant, ns, "remove"))
    assert r.returncode == 0, r.stderr
    for family in TOOL:
        now = save_lines(ns, family, variant)
        assert now.count(foreign) == 1, family
        assert not [ln for ln in now if b"CTKIT" in ln]
