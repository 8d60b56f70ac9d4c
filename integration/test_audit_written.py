"""The nft audit's short path (issue 12: audit time): when ctkit's last commit wrote the very document the
policy compiles to and nothing was committed in the namespace since (ctkit/backends/nft/written.py), the
audit reads only the other tables. It must still find what they do to ctkit's traffic, and any change
since (a hand edit of ctkit's table, another tool's commit) must send it back to reading everything."""
from __future__ import annotations

import json

import pytest

from ctkit import pipeline, service
from ctkit.backends import registry
from ctkit.backends.nft import kernel

POLICY = {"version": 1, "chains": {"input": {"policy": "accept", "rules": [
    {"name": "ssh", "protocol": "tcp", "dport": 22, "action": "accept"}]}}}
#: another tool's table that drops what ctkit accepts, after ctkit's chain (priority 10)
FOREIGN = ("add table inet guard\n"
           "add chain inet guard input { type filter hook input priority 10; policy accept; }\n"
           "add rule inet guard input tcp dport 22 drop\n")


def audit(path, ns):
    return service.audit(pipeline.compile_file(path), registry.get("nft"), ns, check_flows=False)


@pytest.fixture
def applied(lab, tmp_path):
    ns = lab.netns("aw")
    from lab import run
    run(ns, "nft", "-f", "-", input=FOREIGN)
    path = tmp_path / "p.json"
    path.write_text(json.dumps(POLICY))
    service.apply(pipeline.compile_file(path), registry.get("nft"), ns)
    return ns, path


def test_an_unchanged_table_is_not_listed_and_the_foreign_drop_is_still_found(applied, monkeypatch):
    ns, path = applied

    def no_listing(*_a, **_k):
        raise AssertionError("the audit listed the whole ruleset although ctkit's commit was the last")
    monkeypatch.setattr(kernel, "list_ruleset", no_listing)
    report = audit(path, ns)
    assert report.drift == []
    assert any(f.id == "foreign.later-drop" and "guard" in f.subject for f in report.findings), report.findings


def test_a_hand_edit_of_ctkits_table_is_drift_again(applied):
    ns, path = applied
    from lab import run
    run(ns, "nft", "add", "rule", "inet", "ctkit", "input", "tcp", "dport", "23", "accept")
    report = audit(path, ns)
    assert [d.kind for d in report.drift] == ["extra"], report.drift


def test_another_tools_commit_sends_the_audit_back_to_reading_everything(applied, monkeypatch):
    ns, path = applied
    from lab import run
    run(ns, "nft", "add", "table", "ip", "other")  # a commit elsewhere: the generation id moves
    listed = []
    real = kernel.list_ruleset
    monkeypatch.setattr(kernel, "list_ruleset", lambda netns=None: listed.append(netns) or real(netns))
    report = audit(path, ns)
    assert listed == [ns] and report.drift == []


def test_the_held_audit_generates_nothing_and_another_policy_is_never_held(applied, monkeypatch):
    """The record names the plan by its identity (ir.Plan.identity: the policy's bytes, its elements_files'
    bytes, ctkit's code) and its toggles: a held audit generates no document at all; another policy file
    (here one more rule), or the same file with another block list, is not held: it is read and compared."""
    ns, path = applied
    from ctkit.backends.nft import generate

    real = generate.generate
    monkeypatch.setattr(generate, "generate", lambda plan: (_ for _ in ()).throw(
        AssertionError("generated although the record holds")))
    assert audit(path, ns).drift == []
    monkeypatch.setattr(generate, "generate", real)
    other = path.with_name("other.json")
    doc = json.loads(json.dumps(POLICY))
    doc["chains"]["input"]["rules"].append({"name": "web", "protocol": "tcp", "dport": 80, "action": "accept"})
    other.write_text(json.dumps(doc))
    assert [d.kind for d in audit(other, ns).drift] == ["missing"]
    (path.parent / "block.netset").write_text("192.0.2.1\n")
    listed = dict(POLICY, sets={"block": {"type": "ipv4_addr", "elements_file": "block.netset"}})
    path.write_text(json.dumps(listed))
    service.apply(pipeline.compile_file(path), registry.get("nft"), ns)
    assert audit(path, ns).drift == []
    (path.parent / "block.netset").write_text("192.0.2.1\n192.0.2.2\n")  # the same policy bytes
    listed_in = []
    real_list = kernel.list_ruleset
    monkeypatch.setattr(kernel, "list_ruleset", lambda netns=None: listed_in.append(netns) or real_list(netns))
    audit(path, ns)
    assert listed_in == [ns], "a changed block list was taken as held"


def test_a_no_op_apply_whose_record_holds_generates_nothing(applied, monkeypatch):
    """An apply of the policy ctkit last wrote, with nothing committed since: no document is generated,
    nothing is sent, and the summary still counts the table's rules (generate.rule_count)."""
    ns, path = applied
    from ctkit.backends.nft import generate
    monkeypatch.setattr(generate, "generate", lambda plan: (_ for _ in ()).throw(
        AssertionError("generated although the record holds")))
    result = service.apply(pipeline.compile_file(path), registry.get("nft"), ns)
    assert not result.changed and "unchanged (1 chains, 1 rules)" in result.summary, result.summary
