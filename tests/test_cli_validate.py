"""`ctkit validate`: the schema's errors and the semantic ones in one run, where the document can
still be read (ctkit/policy/partial.py)."""
from __future__ import annotations

import json

from typer.testing import CliRunner

from ctkit.cli import app
from ctkit.policy import partial

MIXED = """version: 1
table: ctkit
chains:
  input:
    policy: drop
    rules:
      - jump: nowhere
      - saddr: 10.0.0.1/8
      - protocol: tcp
        dprot: 22
        action: accept
      - when: maint
        action: accept
      - jump: logit
  logit:
    rules:
      - action: accept
"""


def validate(tmp_path, text: str, *args: str, name: str = "p.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path, CliRunner().invoke(app, ["validate", *args, str(path)])


def test_schema_errors_in_some_rules_and_semantic_errors_in_others_are_reported_together(tmp_path):
    path, r = validate(tmp_path, MIXED)
    assert r.exit_code == 2
    assert r.stderr.splitlines() == [
        f"{path}:8: error: /chains/input/rules/1/saddr: '10.0.0.1/8' has host bits set (did you mean '10.0.0.0/8'?)",
        f"{path}:9: error: /chains/input/rules/2: unknown property 'dprot' ('dprot': did you mean 'dport'?)",
        f"{path}:7: error: /chains/input/rules/0/jump: jump to unknown chain 'nowhere' (defined user chains: logit)",
        # rule 3 keeps its number in the file although rules 1 and 2 were set aside
        f"{path}:12: error: /chains/input/rules/3/when: unknown toggle 'maint' "
        "(declare it in toggles, e.g. \"toggles\": {\"maint\": false})",
        f"{path}: note: the semantic checks ran without the 2 entries refused above "
        "(/chains/input/rules/1, /chains/input/rules/2)"]
    assert r.stdout == ""


def test_the_json_report_says_what_was_set_aside(tmp_path):
    path, r = validate(tmp_path, MIXED, "--json")
    assert r.exit_code == 2
    (report,) = json.loads(r.stdout)
    assert report["valid"] is False and report["semantic"] == "partial"
    assert report["set_aside"] == ["/chains/input/rules/1", "/chains/input/rules/2"]
    assert [(p["pointer"], p["line"]) for p in report["problems"]] == [
        ("/chains/input/rules/1/saddr", 8), ("/chains/input/rules/2", 9), ("/chains/input/rules/0/jump", 7),
        ("/chains/input/rules/3/when", 12)]


def test_entries_of_every_list_can_be_set_aside(tmp_path):
    doc = {"version": 1,
           "sets": {"blocked": {"type": "ipv4_addr", "elements": ["192.0.2.1", "not-an-address"]}},
           "notrack": [{"name": "dns", "protocol": "udp", "ports": 53, "action": "drop"},
                       {"name": "dns", "protocol": "tcp", "ports": 53}, {"name": "dns", "protocol": "udp",
                                                                           "ports": 5353}],
           "chains": {"input": {"rules": [{"match_set": {"name": "blocke", "key": ["saddr"]}, "action": "drop"},
                                          {"match_set": {"name": "blocke", "keys": ["saddr"]}, "action": "drop"}]}}}
    path, r = validate(tmp_path, json.dumps(doc), "--json", name="p.json")
    (report,) = json.loads(r.stdout)
    # the element is refused by the model builder, after the schema: set aside in a second round
    assert report["set_aside"] == ["/chains/input/rules/0", "/notrack/0", "/sets/blocked/elements/1"]
    found = {(p["pointer"], p["message"]) for p in report["problems"]}
    assert ("/notrack/0", "unknown property 'action'") in found
    assert ("/chains/input/rules/1/match_set", "unknown set 'blocke'") in found
    assert ("/notrack/1/name", "notrack name 'dns' is used 2 times") in found  # 1 as in the file


def test_an_error_outside_every_entry_leaves_the_semantic_checks_for_later(tmp_path):
    path, r = validate(tmp_path, "version: 1\nchains:\n  input:\n    policy: maybe\n    rules:\n"
                                 "      - jump: nowhere\n")
    assert r.exit_code == 2
    assert r.stderr.splitlines() == [
        f"{path}:4: error: /chains/input/policy: 'maybe' is not allowed (valid: 'accept', 'drop')",
        f"{path}: note: the semantic checks run once these errors are fixed"]
    _, r = validate(tmp_path, "version: 1\nchains: [\n", name="broken.yaml")  # not even YAML
    assert r.exit_code == 2 and "note: the semantic checks run once these errors are fixed" in r.stderr


def test_a_valid_policy_and_a_semantic_only_failure_are_unchanged(tmp_path):
    path, r = validate(tmp_path, "version: 1\nchains:\n  input:\n    rules:\n      - action: accept\n")
    assert r.exit_code == 0 and r.stdout == (f"{path}: ok (table ctkit: 1 chains, 1 rules, 0 notrack, 0 helpers, "
                                             "0 nat, 0 warnings)\n")
    path, r = validate(tmp_path, json.dumps({"version": 1, "chains": {"input": {"rules": [{"jump": "a"}]},
                                                                       "a": {"rules": [{"jump": "a"}]}}}),
                       "--json", name="loop.json")
    (report,) = json.loads(r.stdout)
    assert r.exit_code == 2 and report["semantic"] == "all" and report["set_aside"] == []
    assert report["problems"][0]["message"] == "jump loop: a -> a"


def test_pointers_of_the_rest_map_back_to_the_file():
    removed = {"/chains/input/rules": {0, 2}}
    assert partial._original("/chains/input/rules/0/jump", removed) == "/chains/input/rules/1/jump"
    assert partial._original("/chains/input/rules/1", removed) == "/chains/input/rules/3"
    assert partial._original("/chains/output/rules/0", removed) == "/chains/output/rules/0"
    assert partial.entry_of("/chains/a~1b/rules/12/saddr") == ("/chains/a~1b/rules", 12)
    assert partial.entry_of("/chains/input/policy") is None and partial.entry_of("/chains/input/rules") is None


def test_a_value_problem_no_longer_hides_the_schema_errors_of_other_entries(tmp_path):
    """The value checks run before the schema and stop it: the rest is asked the schema again."""
    path, r = validate(tmp_path, "version: 1\nchains:\n  input:\n    rules:\n      - dport: 7.0\n        protocol: tcp\n"
                                 "        action: accept\n      - protocol: tcp\n        dprot: 22\n"
                                 "        action: accept\n      - jump: nowhere\n")
    assert r.exit_code == 2
    errors = [line.split(": error: ")[1] for line in r.stderr.splitlines() if ": error: " in line]
    assert [e.split(": ")[0] for e in errors] == ["/chains/input/rules/0/dport", "/chains/input/rules/1",
                                                  "/chains/input/rules/2/jump"]
    assert "unknown property 'dprot'" in errors[1] and "unknown chain 'nowhere'" in errors[2]


def test_the_rest_reads_a_sets_elements_file_beside_the_policy(tmp_path, monkeypatch):
    (tmp_path / "block.netset").write_text("# a block list\n198.51.100.0/24\n203.0.113.7\n")
    doc = {"version": 1, "sets": {"block": {"type": "ipv4_addr", "interval": True, "elements_file": "block.netset"}},
           "chains": {"input": {"rules": [{"protocol": "tcp", "dprot": 22, "action": "accept"},
                                          {"match_set": {"name": "blok", "keys": ["saddr"]}, "action": "drop"}]}}}
    monkeypatch.chdir("/")  # elsewhere: the file is found beside the policy, as load_file finds it
    path, r = validate(tmp_path, json.dumps(doc), "--json", name="p.json")
    (report,) = json.loads(r.stdout)
    assert report["semantic"] == "partial"
    assert [(p["pointer"], p["message"]) for p in report["problems"]] == [
        ("/chains/input/rules/0", "unknown property 'dprot'"), ("/chains/input/rules/1/match_set", "unknown set 'blok'")]
