"""ctkit/compiled_cache.py: a compiled policy is used again only for the same bytes, the same
elements_files and the same ctkit, and only from a file nobody else could have written."""
from __future__ import annotations

import json
import os

import pytest
from cachefiles import SPOILS, spoil
from goldens import EXAMPLES

from ctkit import compiled_cache, pipeline
from ctkit.errors import PolicyError

RULES = {"version": 1, "chains": {"input": {"policy": "drop", "rules": [
    {"name": "ssh", "protocol": "tcp", "dport": 22, "saddr": ["192.0.2.0/24", "2001:db8::/32"], "action": "accept"},
    {"name": "web", "protocol": "tcp", "dport": [80, 443], "action": "accept"}]}}}


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """The cache on, in a private directory of this test's own."""
    home = tmp_path / "xdg"
    home.mkdir(mode=0o700)
    monkeypatch.setenv("XDG_CACHE_HOME", str(home))
    monkeypatch.delenv("CTKIT_NO_CACHE", raising=False)
    return home / "ctkit"


def entries(where):
    return sorted(p for p in where.glob("compiled-*.pickle")) if where.exists() else []


def write(path, doc):
    path.write_text(json.dumps(doc))
    return path


def no_compile(monkeypatch):
    """From here on, compiling raises: whatever compile_file returns came from the cache."""
    from ctkit.policy import load

    def refuse(*_a, **_k):
        raise AssertionError("compiled again although the cache holds it")
    monkeypatch.setattr(load, "load_bytes", refuse)


def test_an_unchanged_policy_is_read_back_the_same(tmp_path, cache, monkeypatch):
    path = write(tmp_path / "p.json", RULES)
    first = pipeline.compile_file(path)
    assert len(entries(cache)) == 1 and entries(cache)[0].stat().st_mode & 0o077 == 0
    no_compile(monkeypatch)
    again = pipeline.compile_file(path)
    assert again == first and again is not first
    nets = again.policy.chains[0].rules[0].saddr  # pickled as numbers (_reduce_network), read back whole
    assert nets == first.policy.chains[0].rules[0].saddr and [type(n).__name__ for n in nets] == [
        "IPv4Network", "IPv6Network"]


def test_every_example_reads_back_equal_to_a_fresh_compile(tmp_path, cache):
    for path in EXAMPLES:
        fresh = pipeline.compile_file(path)  # a miss: compiled and kept
        kept = compiled_cache.lookup(path, path.read_bytes(), compiled_cache.code_identity())
        assert kept == fresh, path
        assert kept.warnings == fresh.warnings, path


def test_changed_bytes_compile_again(tmp_path, cache):
    path = write(tmp_path / "p.json", RULES)
    pipeline.compile_file(path)
    changed = json.loads(json.dumps(RULES))
    changed["chains"]["input"]["rules"][1]["dport"] = [80, 8443]
    write(path, changed)
    compiled = pipeline.compile_file(path)
    assert [r.dport for r in compiled.policy.chains[0].rules][1][1].lo == 8443
    assert len(entries(cache)) == 2


def test_a_changed_elements_file_compiles_again(tmp_path, cache, monkeypatch):
    (tmp_path / "block.netset").write_text("192.0.2.1\n")
    path = write(tmp_path / "p.json", {"version": 1, "sets": {"block": {
        "type": "ipv4_addr", "elements_file": "block.netset"}}, "chains": {"input": {"rules": [
            {"saddr": "@block", "action": "drop"}]}}})
    first = pipeline.compile_file(path)
    (tmp_path / "block.netset").write_text("192.0.2.1\n198.51.100.7\n")
    second = pipeline.compile_file(path)  # same policy bytes, another block list
    assert len(second.policy.sets[0].members) == 2 and len(first.policy.sets[0].members) == 1
    no_compile(monkeypatch)
    assert pipeline.compile_file(path) == second
    (tmp_path / "block.netset").unlink()
    with pytest.raises(AssertionError, match="compiled again"):  # a vanished file is read (and refused) anew
        pipeline.compile_file(path)


def test_another_ctkit_compiles_again(tmp_path, cache, monkeypatch):
    path = write(tmp_path / "p.json", RULES)
    pipeline.compile_file(path)
    monkeypatch.setattr(compiled_cache, "code_identity", lambda: b"another version of ctkit")
    pipeline.compile_file(path)
    assert len(entries(cache)) == 2


@pytest.mark.parametrize("name", ["compiled_cache.py", "schemas/policy.schema.json"])
def test_an_edited_module_or_schema_changes_the_code_identity(name):
    """The schema is part of what compiling means (ctkit/schemas may be a symbolic link into the tree)."""
    before = compiled_cache.code_identity()
    module = os.path.join(os.path.dirname(compiled_cache.__file__), name)
    info = os.stat(module)
    try:
        os.utime(module, ns=(info.st_atime_ns, info.st_mtime_ns + 1))
        assert compiled_cache.code_identity() != before
    finally:
        os.utime(module, ns=(info.st_atime_ns, info.st_mtime_ns))
    assert compiled_cache.code_identity() == before


def test_an_invalid_policy_is_never_kept_and_reported_each_time(tmp_path, cache):
    path = write(tmp_path / "p.json", {"version": 1, "chains": {"input": {"rules": [{"action": "maybe"}]}}})
    for _ in range(2):
        with pytest.raises(PolicyError) as info:
            pipeline.compile_file(path)
        assert info.value.problems[0].pointer == "/chains/input/rules/0/action"
    assert entries(cache) == []


def test_warnings_come_back_with_the_policy(tmp_path, cache, monkeypatch):
    doc = {"version": 1, "chains": {"input": {"rules": [{"action": "accept"}, {"protocol": "tcp", "dport": 22,
                                                                          "action": "accept"}]}}}
    path = write(tmp_path / "p.json", doc)
    first = pipeline.compile_file(path)
    assert first.warnings  # the second rule is shadowed by the first
    no_compile(monkeypatch)
    assert pipeline.compile_file(path).warnings == first.warnings


@pytest.mark.parametrize("how", SPOILS + ("another format",))
def test_an_entry_anyone_else_could_write_is_not_used(tmp_path, cache, how):
    """ctkit runs as root and unpickles the entry: only a file nobody else could write is read."""
    import pickle
    path = write(tmp_path / "p.json", RULES)
    first = pipeline.compile_file(path)
    (kept,) = entries(cache)
    if how == "another format":
        kept.write_bytes(pickle.dumps(("0", (), "not a compiled policy")))
    else:
        spoil(kept, cache, how, b"\x80\x05not a pickle")
    assert compiled_cache.lookup(path, path.read_bytes(), compiled_cache.code_identity()) is None
    assert pipeline.compile_file(path) == first  # compiled again: still right


def test_off_with_ctkit_no_cache(tmp_path, cache, monkeypatch):
    monkeypatch.setenv("CTKIT_NO_CACHE", "1")
    pipeline.compile_file(write(tmp_path / "p.json", RULES))
    assert entries(cache) == []


def test_at_most_keep_entries_the_least_recently_used_go(tmp_path, cache, monkeypatch):
    monkeypatch.setattr(compiled_cache, "KEEP", 3)
    paths = []
    for i in range(4):
        doc = json.loads(json.dumps(RULES))
        doc["chains"]["input"]["rules"][1]["dport"] = 1000 + i
        paths.append(write(tmp_path / f"p{i}.json", doc))
    for p in paths[:3]:
        pipeline.compile_file(p)
        for e in entries(cache):
            os.utime(e, ns=(0, e.stat().st_mtime_ns - 10**9))  # older than what comes next
    pipeline.compile_file(paths[0])  # used again: now the most recent
    pipeline.compile_file(paths[3])
    assert len(entries(cache)) == 3
    no_compile(monkeypatch)
    pipeline.compile_file(paths[0])
    pipeline.compile_file(paths[3])
    with pytest.raises(AssertionError, match="compiled again"):
        pipeline.compile_file(paths[1])  # the least recently used one went


def test_an_unreadable_file_is_refused_as_before(tmp_path, cache):
    with pytest.raises(PolicyError) as info:
        pipeline.compile_file(tmp_path / "missing.json")
    assert "cannot read file" in info.value.problems[0].message


def test_a_policy_of_big_sets_is_not_kept(tmp_path, cache, monkeypatch):
    """Set members pickle slower than they build: such a policy is compiled each time."""
    monkeypatch.setattr(compiled_cache, "MAX_MEMBERS", 3)
    (tmp_path / "block.netset").write_text("".join(f"192.0.2.{i}\n" for i in range(4)))
    path = write(tmp_path / "p.json", {"version": 1, "sets": {"block": {
        "type": "ipv4_addr", "elements_file": "block.netset"}}, "chains": {"input": {"rules": [
            {"saddr": "@block", "action": "drop"}]}}})
    assert len(pipeline.compile_file(path).policy.sets[0].members) == 4
    assert entries(cache) == []


def test_the_plan_carries_an_identity_of_what_it_was_compiled_from(tmp_path, cache, monkeypatch):
    """ir.Plan.identity: the same for the same bytes (compiled or read back, from any path), another for
    other bytes, another elements_file content or another ctkit; the nft backend names its document by it
    and the toggles' states (backends/nft/written.py records that name)."""
    from dataclasses import replace

    from ctkit.backends.nft.backend import NftBackend
    path = write(tmp_path / "p.json", RULES)
    fresh = pipeline.compile_file(path).plan.identity
    assert fresh and pipeline.compile_file(path).plan.identity == fresh  # read back from the cache
    copy = write(tmp_path / "copy.json", RULES)
    assert pipeline.compile_file(copy).plan.identity == fresh  # the plan does not name its path
    doc = json.loads(json.dumps(RULES))
    doc["chains"]["input"]["rules"][0]["dport"] = 2222
    assert pipeline.compile_file(write(tmp_path / "p2.json", doc)).plan.identity != fresh
    (tmp_path / "b.netset").write_text("192.0.2.1\n")
    listed = write(tmp_path / "s.json", dict(RULES, sets={"b": {"type": "ipv4_addr", "elements_file": "b.netset"}}))
    before = pipeline.compile_file(listed).plan.identity
    (tmp_path / "b.netset").write_text("192.0.2.2\n")
    assert pipeline.compile_file(listed).plan.identity != before
    monkeypatch.setattr(compiled_cache, "code_identity", lambda: b"another ctkit")
    assert pipeline.compile_file(path).plan.identity != fresh

    toggled = write(tmp_path / "t.json", {"version": 1, "toggles": {"maint": False}, "chains": {"input": {
        "rules": [{"name": "m", "when": "maint", "action": "drop"}]}}})
    plan = pipeline.compile_file(toggled).plan
    on = replace(plan, table=replace(plan.table, toggles=tuple(replace(t, on=True) for t in plan.table.toggles)))
    backend = NftBackend()
    assert on.identity == plan.identity and backend._digest(on) != backend._digest(plan)
    from ctkit.backends.nft import written
    assert backend._digest(replace(plan, identity=None)) == written.digest(backend._text(plan))  # no identity: the text's
