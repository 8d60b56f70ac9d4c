"""`ctkit show --json`: one shape for every backend (schemas/show.schema.json), with `backend` in it.

The backends read recorded kernel state here (nft: a `nft -j list table` capture; iptables: the
documents the policy compiles to, as its kernel module would hand them back), so no root is needed;
integration/test_show_json.py checks the same against a real kernel."""
from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
from typer.testing import CliRunner

from ctkit import pipeline
from ctkit.backends import registry
from ctkit.backends.iptables import generate as ipt_gen
from ctkit.backends.iptables import kernel as ipt_kernel
from ctkit.backends.iptables.backend import IptablesBackend
from ctkit.backends.nft import kernel as nft_kernel
from ctkit.cli import app

ROOT = Path(__file__).resolve().parent.parent
SCHEMA = json.loads((ROOT / "schemas" / "show.schema.json").read_text())
NFT_LISTING = json.loads((ROOT / "tests" / "fixtures" / "nft" / "maintenance-toggle.list.json").read_text())


def show_json(*args: str) -> dict:
    r = CliRunner().invoke(app, ["show", "--json", *args])
    assert r.exit_code == 0, r.output
    data = json.loads(r.stdout)
    jsonschema.validate(data, SCHEMA)
    return data


def test_the_schema_is_a_valid_schema_and_installed_with_the_package():
    jsonschema.Draft202012Validator.check_schema(SCHEMA)
    assert json.loads((ROOT / "ctkit" / "schemas" / "show.schema.json").read_text()) == SCHEMA  # package data


@pytest.fixture
def nft_kernel_state(monkeypatch):
    items = [i for i in NFT_LISTING["nftables"] if "metainfo" not in i]
    monkeypatch.setattr(nft_kernel, "list_table", lambda table, netns=None: items if table == "ctkit" else None)
    monkeypatch.setattr(nft_kernel, "list_table_text", lambda table, netns=None: "table inet ctkit {\n}\n")
    monkeypatch.setattr(nft_kernel, "toggle_states", lambda table, netns=None: {"maintenance": (False, False)})
    return items


def test_nft(nft_kernel_state):
    data = show_json("-b", "nft", "-n", "lab")
    assert list(data)[:9] == ["version", "backend", "netns", "table", "owned", "present", "rules", "toggles",
                              "warnings"]
    assert {k: data[k] for k in ("version", "backend", "netns", "table", "owned", "present")} == {
        "version": 1, "backend": "nft", "netns": "lab", "table": "ctkit", "owned": "table inet ctkit",
        "present": True}
    assert data["toggles"] == {"maintenance": {"on": False, "policy": False}}
    assert data["nftables"] == nft_kernel_state  # the backend's own form, as the kernel printed it
    ids = [r["id"] for r in data["rules"]]
    assert ids[:2] == ["maintenance", "established"] and not [i for i in ids if i.startswith("toggle/")]
    assert all(set(r) == {"id", "packets", "bytes"} for r in data["rules"])


def test_nft_absent(nft_kernel_state):
    data = show_json("-b", "nft", "-t", "ctkitother")
    assert (data["present"], data["rules"], data["toggles"], data["nftables"], data["netns"]) == (
        False, [], {}, [], None)


@pytest.fixture
def iptables_kernel_state(monkeypatch):
    """What iptables' kernel module reads back after an apply of examples/dns-server.json."""
    plan = pipeline.compile_file(ROOT / "examples" / "dns-server.json").plan
    ruleset = ipt_gen.generate(plan)
    lives = []
    for family in ("ipv4", "ipv6"):
        doc = ruleset.document(family)
        counters = {(t.name, c.name, i): (7, 700) for t in doc.tables for c in t.chains for i, _ in enumerate(c.rules)}
        lives.append(ipt_kernel.Live(family, f"{'iptables' if family == 'ipv4' else 'ip6tables'}-nft", doc, (),
                                     counters))
    monkeypatch.setattr(ipt_kernel, "show", lambda prefix, netns=None, variant="auto", findings=None:
                        ("nft", lives))
    monkeypatch.setattr(ipt_kernel, "toggle_states", lambda prefix, netns=None, variant="auto": ("nft", {}))
    hits = {r.id: (14, 1400) for c in plan.table.chains for r in c.rules}
    monkeypatch.setattr(IptablesBackend, "rule_hits", lambda self, table, netns: hits)
    return hits


def test_iptables(iptables_kernel_state):
    data = show_json("-b", "iptables")
    assert {k: data[k] for k in ("version", "backend", "netns", "table", "owned", "present")} == {
        "version": 1, "backend": "iptables", "netns": None, "table": "ctkit", "owned": "chains CTKIT-* (iptables)",
        "present": True}
    assert data["rules"] == [{"id": rid, "packets": 14, "bytes": 1400} for rid in iptables_kernel_state]
    assert data["variant"] == "nft" and data["prefix"] == "CTKIT-"
    assert set(data["families"]) == {"ipv4", "ipv6"}


def test_both_backends_say_the_same_in_the_common_fields(nft_kernel_state, iptables_kernel_state):
    nft, ipt = show_json("-b", "nft"), show_json("-b", "iptables")
    common = ["version", "backend", "netns", "table", "owned", "present", "rules", "toggles", "warnings"]
    assert list(nft)[:9] == list(ipt)[:9] == common
    assert set(nft) - set(common) == {"nftables"} and set(ipt) - set(common) == {"variant", "prefix", "families"}


def test_a_third_backend_needs_nothing_but_the_common_fields(monkeypatch, tmp_path):
    from test_service import FakeBackend
    backend = FakeBackend()
    monkeypatch.setitem(registry._FACTORIES, "fake", lambda variant: backend)
    monkeypatch.setattr(backend, "rule_hits", lambda table, netns: {"web": (3, 180), "toggle/maint": (0, 0)})
    assert show_json("-b", "fake", "-n", "lab") == {
        "version": 1, "backend": "fake", "netns": "lab", "table": "ctkit", "owned": "fake table ctkit",
        "present": False, "rules": [], "toggles": {}, "warnings": []}
    backend.kernel["lab"] = {"plan": pipeline.compile_file(ROOT / "examples" / "dns-server.json").plan,
                             "toggles": {"maint": (True, False)}, "members": set()}
    data = show_json("-b", "fake", "-n", "lab")
    assert data["present"] is True and data["rules"] == [{"id": "web", "packets": 3, "bytes": 180}]
    assert data["toggles"] == {"maint": {"on": True, "policy": False}}


def test_the_schema_refuses_a_document_of_another_shape():
    good = {"version": 1, "backend": "nft", "netns": None, "table": "ctkit", "owned": "table inet ctkit",
            "present": False, "rules": [], "toggles": {}, "warnings": [], "nftables": []}
    jsonschema.validate(good, SCHEMA)
    for bad in ({k: v for k, v in good.items() if k != "backend"}, {**good, "families": {}},
                {**good, "backend": "iptables"}, {**good, "rules": [{"id": "x", "packets": -1, "bytes": 0}]}):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(bad, SCHEMA)
