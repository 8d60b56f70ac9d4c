"""Drift on captured `nft -j list table` documents: the kernel's re-spelling is not drift; edits are."""
import json

import pytest
from goldens import EXAMPLES, ROOT

from ctkit import pipeline
from ctkit.audit.drift import compare
from ctkit.backends.nft import generate as nft
from ctkit.backends.nft.view import view

FIXTURES = ROOT / "tests" / "fixtures" / "nft"


def desired(path):
    compiled = pipeline.compile_file(path)
    ids = {r.id for c in compiled.plan.table.chains for r in c.rules}
    return view(nft.generate(compiled.plan)["nftables"], ids), ids


def live(name, ids):
    return view(json.loads((FIXTURES / name).read_text())["nftables"], ids)


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_applied_examples_show_no_drift(path):
    want, ids = desired(path)
    assert compare(want, live(f"{path.stem}.list.json", ids)) == []


def test_respelled_rules_are_not_drift():
    want, ids = desired(ROOT / "examples" / "web-server-notrack.json")
    assert compare(want, live("respelled.list.json", ids)) == []


def test_hand_edits_are_named_by_policy_rule():
    want, ids = desired(ROOT / "examples" / "dns-server.json")
    drifts = {(d.kind, d.subject) for d in compare(want, live("hand-edited.list.json", ids))}
    assert drifts == {("extra", "input/(no ctkit comment)"), ("missing", "input/icmp"), ("changed", "input/ssh-lan")}


def test_changed_rule_shows_expected_and_actual():
    want, ids = desired(ROOT / "examples" / "dns-server.json")
    (d,) = [d for d in compare(want, live("hand-edited.list.json", ids)) if d.kind == "changed"]
    assert "10.0.0.0/8" in d.expected and "10.0.0.0/16" in d.actual


def test_reordered_rules():
    want, ids = desired(ROOT / "examples" / "dns-server.json")
    doc = json.loads((FIXTURES / "dns-server.list.json").read_text())["nftables"]
    rules = [i for i in doc if "rule" in i and i["rule"]["chain"] == "input"]
    a, b = doc.index(rules[0]), doc.index(rules[1])
    doc[a], doc[b] = doc[b], doc[a]
    drifts = [(d.kind, d.subject) for d in compare(want, view(doc, ids))]
    assert len(drifts) == 1 and drifts[0][0] == "reordered"


def test_missing_table_chain_and_helper():
    want, ids = desired(ROOT / "examples" / "ftp-helper.json")
    assert [d.kind for d in compare(want, view(None, ids))] == ["missing-table"]
    doc = [i for i in json.loads((FIXTURES / "ftp-helper.list.json").read_text())["nftables"]
           if "ct helper" not in i and i.get("chain", {}).get("name") != "helper-pre"
           and i.get("rule", {}).get("chain") != "helper-pre"]
    kinds = sorted(d.kind for d in compare(want, view(doc, ids)))
    assert kinds == ["missing-chain", "missing-object"]


def test_changed_chain_policy():
    want, ids = desired(ROOT / "examples" / "dns-server.json")
    doc = json.loads((FIXTURES / "dns-server.list.json").read_text())["nftables"]
    for i in doc:
        if i.get("chain", {}).get("name") == "input":
            i["chain"]["policy"] = "accept"
    (d,) = compare(want, view(doc, ids))
    assert (d.kind, d.subject) == ("changed-chain", "input") and "policy drop" in d.expected


def test_raw_payload_offset_change_is_drift():
    path = ROOT / "examples" / "game-server-flood.json"
    want, ids = desired(path)
    doc = json.loads((FIXTURES / "game-server-flood.list.json").read_text())["nftables"]
    changed = False
    for item in doc:
        for e in item.get("rule", {}).get("expr", []):
            left = e.get("match", {}).get("left", {})
            raw = left.get("payload") or left.get("&", [{}])[0].get("payload") if isinstance(left, dict) else None
            if raw and "base" in raw and not changed:
                raw["offset"] += 8
                changed = True
    assert changed, "the example has a raw payload match"
    assert [d.kind for d in compare(want, view(doc, ids))] == ["changed"]


def _edited_sets(edit):
    listing = json.loads((FIXTURES / "blocklist-set.list.json").read_text())["nftables"]
    for item in listing:
        if "set" in item:
            edit(item["set"])
    return listing


@pytest.mark.parametrize("edit, kinds", [
    (lambda s: s["name"] == "web_ports" and s["elem"].pop(0), {("missing-members", "set web_ports")}),
    (lambda s: s["name"] == "web_ports" and s["elem"].append(8080), set()),  # a run-time member: not drift
    (lambda s: s["name"] == "web_ports" and s["elem"].append({"elem": {"val": 8080, "comment": "policy"}}),
     {("extra-members", "set web_ports")}),
    (lambda s: s["name"] == "blocklist6" and s.update(flags=[]), {("changed-set", "set blocklist6")}),
    (lambda s: s["name"] == "web_ports" and s.update(name="gone"),
     {("missing-set", "set web_ports"), ("extra-set", "set gone")}),
], ids=["declared member gone", "run-time member", "declared member left over", "flags", "renamed"])
def test_named_sets_drift_by_declaration_and_declared_members(edit, kinds):
    """The audit compares named sets: declarations and the members the policy declared (marked with the
    declared comment); members added at run time are not drift."""
    want, ids = desired(ROOT / "examples" / "blocklist-set.json")
    drifts = compare(want, view(_edited_sets(edit), ids), {"set/web_ports": "/sets/web_ports"})
    assert {(d.kind, d.subject) for d in drifts} == kinds
    assert all(d.origin == "/sets/web_ports" for d in drifts if d.subject == "set web_ports")
