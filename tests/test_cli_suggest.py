"""Did-you-mean: one rule for every suggestion ctkit makes (terminal.suggest), and a missing
namespace named without listing every namespace on the host."""
from __future__ import annotations

import subprocess
import sys

import pytest

from ctkit import terminal
from ctkit.errors import PolicyError, UsageError
from ctkit.kernel import netns
from ctkit.policy.load import load_text

ROOT = __import__("pathlib").Path(__file__).resolve().parent.parent


@pytest.mark.parametrize(("typed", "known", "offered"), [
    ("nf_conntrack_tcp_loos", ["nf_conntrack_tcp_loose", "nf_conntrack_tcp_be_liberal"], "nf_conntrack_tcp_loose"),
    ("dprot", ["dport", "sport", "daddr"], "dport"),  # two neighbours swapped: one edit
    ("protcol", ["protocol", "protocols"], "protocol"),
    ("ct-state", ["ct_state", "ct_mark_set"], "ct_state"),
    ("action", ["direction", "name", "ports"], None),  # 4 edits in 6 characters: misleading, not offered
    ("x", ["dport", "saddr"], None),
    ("polcy", ["policy", "rules"], "policy"),
    ("dport" + "x" * 10**6, ["dport"], None),  # a key of a megabyte costs what 40 characters cost
])
def test_one_threshold_relative_to_the_length(typed, known, offered):
    assert terminal.suggest(typed, known) == offered


def test_the_threshold_is_one_edit_per_three_characters():
    assert terminal.CHARS_PER_EDIT == 3
    assert terminal.suggest("abcdef", ["abcdXY"]) == "abcdXY"  # 2 edits in 6
    assert terminal.suggest("abcdef", ["abXYZf"]) is None  # 3 edits in 6
    assert terminal.edits("action", "direction") == 4 and terminal.edits("ab", "ba") == 1


def test_an_unknown_policy_key_gets_a_close_suggestion_or_the_allowed_keys():
    with pytest.raises(PolicyError) as bad:
        load_text("version: 1\nnotrack:\n  - name: dns\n    action: drop\n    protocol: udp\n    ports: 53\n",
                  "p.yaml")
    (problem,) = bad.value.problems
    assert problem.message == "unknown property 'action'" and "did you mean" not in problem.hint
    assert problem.hint.startswith("allowed: comment, counter, daddr, daddr_type, direction,")
    with pytest.raises(PolicyError) as bad:
        load_text('{"version": 1, "chains": {"input": {"rules": [{"protocol": "tcp", "dprot": 22, '
                  '"action": "accept"}]}}}', "p.json")
    (problem,) = bad.value.problems
    assert problem.render() == ("p.json:1: error: /chains/input/rules/0: unknown property 'dprot' "
                                "('dprot': did you mean 'dport'?)")


def test_sysctl_set_suggests_the_sysctl_it_did_not_find():
    """Refused before anything is written (sysctl.plan checks every key first), so this runs anywhere."""
    r = subprocess.run([sys.executable, "-m", "ctkit", "sysctl", "set", "nf_conntrack_tcp_loos=1"],
                       capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert r.returncode == 2
    assert r.stderr == ("ctkit: nothing was changed: net.netfilter.nf_conntrack_tcp_loos does not exist on this "
                        "kernel (did you mean nf_conntrack_tcp_loose?)\n")
    r = subprocess.run([sys.executable, "-m", "ctkit", "sysctl", "set", "nf_conntrack_tcp_loos=1",
                        "net.netfilter.nf_conntrack_udp_timeot=30", "nothing_like_it=1"],
                       capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert r.returncode == 2 and r.stderr.endswith(
        "(did you mean nf_conntrack_tcp_loose for nf_conntrack_tcp_loos, nf_conntrack_udp_timeout for "
        "nf_conntrack_udp_timeot?)\n")


@pytest.fixture
def many_namespaces(monkeypatch):
    names = [f"tenant-{i:04d}" for i in range(800)] + ["lab-client", "lab-server"]
    monkeypatch.setattr(netns, "known", lambda: sorted(names))
    monkeypatch.setattr(netns, "NETNS_RUN_DIR", "/nonexistent/run/netns")
    return names


def test_a_missing_namespace_is_named_without_the_list_of_every_namespace(many_namespaces):
    with pytest.raises(UsageError) as missing:
        with netns.entered("nosuch"):
            pass
    assert str(missing.value) == "network namespace 'nosuch' does not exist (`ip netns list` shows them)"
    with pytest.raises(UsageError) as close:
        with netns.entered("lab-sever"):
            pass
    assert str(close.value) == ("network namespace 'lab-sever' does not exist (did you mean 'lab-server'? "
                                "`ip netns list` shows them)")
    assert "tenant-0001" not in str(close.value)
    with pytest.raises(UsageError, match=r"^network namespace 'pid:999999999' does not exist "
                                         r"\(no /proc/999999999/ns/net\)$"):
        with netns.entered("pid:999999999"):
            pass


def test_lint_suggests_chains_toggles_and_sets_by_the_same_rule():
    def problems(doc):
        from ctkit.policy.lint import lint
        from ctkit.policy.load import load_document
        return {p.pointer: p.hint for p in lint(load_document(doc))}
    chains = {"logit": {"rules": [{"action": "accept"}]}}
    near = problems({"version": 1, "toggles": {"maint": False}, "sets": {"blocked": {"type": "ipv4_addr"}},
                     "chains": {**chains, "input": {"rules": [
                         {"jump": "logti"}, {"when": "mainr", "action": "drop"},
                         {"match_set": {"name": "blokced", "keys": ["saddr"]}, "action": "drop"}]}}})
    assert near["/chains/input/rules/0/jump"] == "did you mean 'logit'?"
    assert near["/chains/input/rules/1/when"] == "did you mean 'maint'?"
    assert near["/chains/input/rules/2/match_set"] == "did you mean 'blocked'?"
    far = problems({"version": 1, "chains": {**chains, "input": {"rules": [{"jump": "logs"}]}}})
    assert far["/chains/input/rules/0/jump"] == "defined user chains: logit"  # 2 edits in 4: not offered
