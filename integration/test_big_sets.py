"""Named sets loaded from a block-list file, on real packets, for every backend; and sets far larger than
the old 65,536-element cap, applied and audited clean (issue 12).

A listed client is dropped and an unlisted one passes, as the kernel decides on real TCP handshakes;
dropping the client's line from the file and applying again lets it through.
"""
from __future__ import annotations

import ipaddress
import json
import subprocess
import sys
from pathlib import Path

import pytest
from lab import CLIENT4, backend_args, run
from test_differential import BACKENDS, make_pair
from test_sets import web  # a web request from the client: open, or dropped

#: members around the client's address: a file of block-list size, with prefixes and comments
MEMBERS = 20_000


def ctkit(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ctkit", *args], capture_output=True, text=True, timeout=300)


def policy(tmp: Path, listing: str) -> Path:
    (tmp / "lists").mkdir(exist_ok=True)
    (tmp / "lists" / "blocklist.netset").write_text(listing)
    path = tmp / "policy.json"
    path.write_text(json.dumps({"version": 1, "sets": {"blocklist": {
        "type": "ipv4_addr", "interval": True, "elements_file": "lists/blocklist.netset"}},
        "chains": {"input": {"policy": "accept", "rules": [
            {"name": "blocked", "saddr": "@blocklist", "protocol": "tcp", "dport": 80, "action": "drop"}]}}}))
    return path


def listing(with_client: bool) -> str:
    lines = ["# a block list as downloaded: comments, prefixes, addresses", "198.51.100.0/24", ""]
    lines += [str(ipaddress.IPv4Address(0x0A000000 + i)) + ("  # generated" if i % 1000 == 0 else "")
              for i in range(MEMBERS)]
    lines += ["203.0.113.0/25"] + ([CLIENT4 + "   # the test's client"] if with_client else [])
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_set_from_a_file_blocks_a_listed_address(lab, tmp_path, backend):
    client, server = make_pair(lab)
    args = ["--netns", server, *backend_args(backend)]
    path = policy(tmp_path, listing(with_client=True))
    r = ctkit("apply", str(path), *args)
    assert r.returncode == 0, r.stderr
    assert web(client, server) == "timeout"  # the kernel dropped the listed client's SYN
    members = (run(server, "nft", "list", "set", "inet", "ctkit", "blocklist").stdout if backend == "nft"
               else run(server, "ipset", "list", "ctkit-blocklist").stdout)
    assert CLIENT4 in members and "10.0.78.31" in members  # the file's last generated member too
    path = policy(tmp_path, listing(with_client=False))
    r = ctkit("apply", str(path), *args)
    assert r.returncode == 0, r.stderr
    assert web(client, server) == "open"  # the client's line is gone from the file
    r = ctkit("audit", str(path), *args, "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["drift"] == [], r.stdout + r.stderr


@pytest.mark.parametrize("backend", ["nft", "iptables-nft"])
def test_a_set_of_200000_members_applies_and_audits_clean(lab, tmp_path, backend):
    """Three times the old cap (65,536), from a file; ipset gets a maxelem that fits it. The
    1,000,000-member set is a benchmark (benchmarks/bench_apply.py): nft alone lists it in ~40 s."""
    n = 200_000
    ns = lab.netns("big")
    (tmp_path / "big.netset").write_text("".join(str(ipaddress.IPv4Address(0x0A000000 + i)) + "\n"
                                                 for i in range(n)))
    path = tmp_path / "big.json"
    path.write_text(json.dumps({"version": 1, "sets": {"big": {"type": "ipv4_addr", "elements_file": "big.netset"}},
                                "chains": {"input": {"policy": "accept", "rules": [
                                    {"name": "big", "saddr": "@big", "action": "drop"}]}}}))
    args = ["--netns", ns, *backend_args(backend)]
    r = ctkit("apply", str(path), *args)
    assert r.returncode == 0, r.stderr
    if backend == "nft":
        listed = json.loads(run(ns, "nft", "-j", "list", "set", "inet", "ctkit", "big").stdout)
        (body,) = [item["set"] for item in listed["nftables"] if "set" in item]
        assert len(body["elem"]) == n
    else:
        header = run(ns, "ipset", "list", "-t", "ctkit-big").stdout
        assert "maxelem 524288" in header and f"Number of entries: {n}" in header, header
    r = ctkit("audit", str(path), *args, "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["drift"] == [], r.stdout[:2000] + r.stderr


@pytest.mark.parametrize("backend", ["iptables-nft", "iptables-legacy"])
def test_an_ipset_that_outgrows_the_default_maxelem_is_swapped_for_a_bigger_one(lab, tmp_path, backend):
    """65,536 is ipset's default maxelem: a re-apply with 100,000 members creates a set that holds them
    (and room for run-time members) and swaps it in; shrinking again goes back to the default."""
    ns = lab.netns("grow")
    args = ["--netns", ns, *backend_args(backend)]
    path = tmp_path / "grow.json"
    path.write_text(json.dumps({"version": 1, "sets": {"grow": {"type": "ipv4_addr", "elements_file": "grow.netset"}},
                                "chains": {"input": {"policy": "accept", "rules": [
                                    {"name": "grow", "saddr": "@grow", "action": "drop"}]}}}))
    for n, header in ((1000, "maxelem 65536"), (100_000, "maxelem 262144"), (1000, "maxelem 65536")):
        (tmp_path / "grow.netset").write_text("".join(str(ipaddress.IPv4Address(0x0A000000 + i)) + "\n"
                                                      for i in range(n)))
        r = ctkit("apply", str(path), *args)
        assert r.returncode == 0, r.stderr
        listed = run(ns, "ipset", "list", "-t", "ctkit-grow").stdout
        assert header in listed and f"Number of entries: {n}\n" in listed, listed
    r = ctkit("audit", str(path), *args, "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["drift"] == [], r.stdout[:2000] + r.stderr


def test_nft_refuses_overlapping_interval_members_and_ctkit_says_which_first(lab, tmp_path):
    """The kernel fact behind nft's compile error: nft -f of a set with 10.1.0.0/16 inside 10.0.0.0/8
    fails ("conflicting intervals specified"); ctkit names the two members and sends nothing."""
    ns = lab.netns("ovl")
    text = ("table inet ctkit {\n\tset b {\n\t\ttype ipv4_addr\n\t\tflags interval\n"
            "\t\telements = { 10.0.0.0/8, 10.1.0.0/16 }\n\t}\n}\n")
    (tmp_path / "ovl.nft").write_text(text)
    refused = run(ns, "nft", "-f", str(tmp_path / "ovl.nft"), check=False)
    assert refused.returncode != 0 and "conflicting intervals" in refused.stderr, refused.stderr
    path = policy(tmp_path, "10.0.0.0/8\n10.1.0.0/16\n")
    r = ctkit("apply", str(path), "--netns", ns)
    assert r.returncode == 2 and "10.1.0.0/16 overlaps 10.0.0.0/8" in r.stderr, r.stderr
    assert "ctkit" not in run(ns, "nft", "list", "tables").stdout
