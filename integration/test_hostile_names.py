"""Hostile text against a real kernel (issue 14, part 1): a comment and a log prefix made of what
nft text and iptables-restore input treat specially (; { } # ' -j) list back from the kernel as
the same single rules ctkit generated, on every backend and on both nft paths (libnftables JSON, and
nft syntax, which ctkit sends for a table with ct timeout objects); values that would change the
meaning of that text (a vmap interface key that closes nft's quotes or adds `-j ACCEPT`, an IPv6 zone
of any text, $ in a log prefix, which nft expands as a variable) are refused with exit 2 and the
kernel keeps what it had (before, nft took an injected `accept` entry); and an interface wildcard `eth+`
means the same on every backend: every interface whose name starts with eth (nft matched only an
interface called "eth+" before: its wildcard is *).

Each test builds its own namespaces and removes them in `finally`.
"""
from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter

import pytest
from lab import BACKENDS, CLIENT4, SERVER4, Lab, backend_args, nft_json, run, udp_exchange, udp_server

from ctkit import pipeline
from ctkit.backends.iptables import generate as ipt
from ctkit.backends.iptables import text as ipt_text
from ctkit.backends.nft import generate as nft

COMMENT = "a;b{c}#d' -j ACCEPT % \u00e9"
PREFIX = "x;y{z}#' -j DROP %"  # iptables LOG takes at most 29 bytes
PORT = 9999


def ctkit(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ctkit", *args], capture_output=True, text=True, timeout=120)


def _policy(tmp_path, with_timeout: bool):
    doc = {"version": 1, "chains": {"input": {"rules": [
        {"name": "hostile", "comment": COMMENT, "protocol": "udp", "dport": PORT, "log": {"prefix": PREFIX},
         "action": "accept"},
        {"name": "plain", "protocol": "tcp", "dport": 22, "action": "accept"}]}}}
    if with_timeout:  # nft: the table goes to the kernel in nft syntax, not JSON
        doc["timeouts"] = [{"name": "short", "protocol": "udp", "ports": [5353], "policy": {"unreplied": 10}}]
    path = tmp_path / "hostile.json"
    path.write_text(json.dumps(doc))
    return path


def _argv(line: str) -> list[str]:
    """iptables-restore's tokenizer (add_param_to_argv): double quotes group, \\ escapes inside them."""
    out, param, quoted, escaped, has = [], [], False, False, False
    for c in line:
        if quoted:
            if escaped:
                param.append(c)
                escaped = False
            elif c == "\\":
                escaped = True
            elif c == '"':
                quoted = False
            else:
                param.append(c)
        elif c == '"':
            quoted = has = True
        elif c in " \t":
            if param or has:
                out.append("".join(param))
            param, has = [], False
        else:
            param.append(c)
    if param or has:
        out.append("".join(param))
    return out


def _iptables_rules(text: str) -> Counter:
    """(chain, comment, log prefix) of every rule in ctkit's chains, as iptables-save or ctkit writes them."""
    rules: Counter = Counter()
    for line in text.splitlines():
        argv = _argv(line)
        if len(argv) > 1 and argv[0] == "-A" and argv[1].startswith("CTKIT-"):
            after = {argv[i]: argv[i + 1] for i in range(len(argv) - 1)}
            rules[(argv[1], after.get("--comment"), after.get("--log-prefix"))] += 1
    return rules


def _nft_rules(items) -> Counter:
    """(chain, comment, log prefix) of every rule in a libnftables JSON listing or command list."""
    rules: Counter = Counter()
    for item in items:
        rule = item.get("rule") or item.get("add", {}).get("rule")
        if rule:
            prefix = next((e["log"].get("prefix") for e in rule["expr"] if "log" in e), None)
            rules[(rule["chain"], rule.get("comment"), prefix)] += 1
    return rules


@pytest.mark.parametrize("backend, with_timeout", [("nft", False), ("nft", True), ("iptables-nft", False),
                                                     ("iptables-legacy", False)])
def test_a_hostile_comment_and_log_prefix_list_back_as_the_same_single_rules(tmp_path, backend, with_timeout):
    path = _policy(tmp_path, with_timeout)
    plan = pipeline.compile_file(path).plan
    lab = Lab("hst")
    try:
        ns = lab.netns("srv")
        r = ctkit("apply", str(path), "--netns", ns, *backend_args(backend))
        assert r.returncode == 0, r.stderr
        if backend == "nft":
            live = _nft_rules(nft_json(ns, "list", "table", "inet", "ctkit"))
            want = _nft_rules(nft.generate(plan)["nftables"])
        else:
            variant = backend.split("-")[1]
            live = _iptables_rules(run(ns, f"iptables-{variant}-save").stdout)
            want = _iptables_rules(ipt_text.render(ipt.generate(plan).document("ipv4")))
        assert live == want
        hostile = [k for k in live if k[1] == f"hostile: {COMMENT}"]
        assert hostile and all(live[k] == 1 for k in hostile)
        assert any(k[2] == PREFIX for k in hostile)  # the log rule (iptables: its own rule) keeps the prefix
        for rule in ({"name": "inject", "vmap": {"key": "iif", "map": {'x" : accept, "y': "drop"}}},
                     {"name": "inject", "vmap": {"key": "iif", "map": {"eth0 -j ACCEPT": "drop"}}},
                     {"name": "inject", "saddr": "fe80::1%x -j ACCEPT", "action": "drop"},
                     {"name": "inject", "log": {"prefix": "a $x"}, "action": "drop"}):
            doc = json.loads(path.read_text())
            doc["chains"]["input"]["rules"].append(rule)
            bad = tmp_path / "inject.json"
            bad.write_text(json.dumps(doc))
            r = ctkit("apply", str(bad), "--netns", ns, *backend_args(backend))
            assert r.returncode == 2, (rule, r.returncode, r.stderr)
            after = (_nft_rules(nft_json(ns, "list", "table", "inet", "ctkit")) if backend == "nft" else
                     _iptables_rules(run(ns, f"iptables-{backend.split('-')[1]}-save").stdout))
            assert after == live, rule
        r = ctkit("remove", "--netns", ns, *backend_args(backend))
        assert r.returncode == 0, r.stderr
    finally:
        lab.close()


def test_an_interface_wildcard_matches_every_interface_it_names_on_every_backend(tmp_path):
    doc = {"version": 1, "chains": {"input": {"rules": [
        {"name": "other", "iif": "nomatch+", "protocol": "udp", "dport": PORT + 1, "action": "drop"},
        {"name": "wild", "iif": "hxw+", "protocol": "udp", "dport": PORT, "action": "drop"}]}}}
    path = tmp_path / "wildcard.json"
    path.write_text(json.dumps(doc))
    outcome = {}
    for backend in BACKENDS:  # one meaning on all of them
        lab = Lab("hsw")
        try:
            server, client = lab.netns("srv"), lab.netns("cli")
            lab.link(client, server, [f"{CLIENT4}/24"], [f"{SERVER4}/24"], name="hxw0")
            r = ctkit("apply", str(path), "--netns", server, *backend_args(backend))
            assert r.returncode == 0, r.stderr
            for port in (PORT, PORT + 1):
                srv = udp_server(server, SERVER4, port)
                try:
                    outcome[backend, port] = udp_exchange(client, srv, SERVER4, port)[0]
                finally:
                    srv.close()
        finally:
            lab.close()
    # hxw+ names hxw0: dropped; nomatch+ does not: delivered
    assert outcome == {(b, p): p != PORT for b in BACKENDS for p in (PORT, PORT + 1)}
