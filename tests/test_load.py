"""Loader and schema: valid examples load, invalid documents fail with a pointer, a line and a message."""

import pytest
import yaml
from cachefiles import SPOILS, spoil
from goldens import EXAMPLES

from ctkit.errors import PolicyError
from ctkit.policy.load import load_document, load_file, load_text, policy_schema
from ctkit.values import PortRange

BASE = {"version": 1}


def problems_of(doc):
    with pytest.raises(PolicyError) as info:
        load_document(doc)
    return info.value.problems


def with_rule(rule, chain="input"):
    return {"version": 1, "chains": {chain: {"rules": [rule]}}}


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_examples_load(path):
    policy = load_file(path)
    assert policy.version == 1


def test_yaml_and_json_mean_the_same(tmp_path):
    for path in EXAMPLES:
        doc = yaml.safe_load(path.read_text())
        y = tmp_path / (path.stem + ".yaml")
        y.write_text(yaml.safe_dump(doc, sort_keys=False))
        assert load_file(y) == load_file(path)


def test_schema_describes_every_property():
    missing = []

    def walk(node, where):
        if isinstance(node, dict):
            for name, sub in node.get("properties", {}).items():
                if isinstance(sub, dict) and "description" not in sub and "$ref" not in sub:
                    missing.append(f"{where}/{name}")
            for key, sub in node.items():
                walk(sub, f"{where}/{key}")
        elif isinstance(node, list):
            for i, sub in enumerate(node):
                walk(sub, f"{where}/{i}")

    walk(policy_schema(), "")
    assert not missing, missing


# (document, pointer, words the message must contain)
INVALID = [
    ([], "", "not of type object"),
    ({}, "", "'version' is a required property"),
    ({"version": 2}, "/version", "must be 1"),
    ({"version": 1, "tabel": "x"}, "", "did you mean 'table'"),
    ({"version": 1, "table": "has space"}, "/table", "expected form"),
    ({"version": 1, "table": "x" * 40}, "/table", "expected form"),
    ({"version": 1, "conntrack": {"max": 0}}, "/conntrack/max", "minimum"),
    ({"version": 1, "conntrack": {"max": "big"}}, "/conntrack/max", "not of type integer"),
    ({"version": 1, "conntrack": {"helper_autoassign": "no"}}, "/conntrack/helper_autoassign", "boolean"),
    ({"version": 1, "conntrack": {"timeouts": {"tcp_establised": 5}}}, "/conntrack/timeouts", "did you mean 'tcp_established'"),
    ({"version": 1, "conntrack": {"timeouts": {"udp": 0}}}, "/conntrack/timeouts/udp", "minimum"),
    ({"version": 1, "notrack": [{"ports": [53]}]}, "/notrack/0", "'name' is a required property"),
    ({"version": 1, "notrack": [{"name": "d", "protocols": ["tcp"], "ports": [70000]}]}, "/notrack/0/ports/0", "65535"),
    ({"version": 1, "notrack": [{"name": "d", "protocols": ["tpc"], "ports": [53]}]}, "/notrack/0/protocols/0", "'tpc' is not allowed"),
    ({"version": 1, "notrack": [{"name": "d", "protocol": "tcp", "protocols": ["udp"]}]}, "/notrack/0", "exclude each other"),
    ({"version": 1, "notrack": [{"name": "d", "protocols": ["tcp"], "ports": ["90-80"]}]}, "/notrack/0/ports/0", "runs backwards"),
    ({"version": 1, "notrack": [{"name": "d", "protocols": ["tcp"], "ports": [53], "peers": ["10.0.0.1/8"]}]}, "/notrack/0/peers/0", "host bits set"),
    ({"version": 1, "notrack": [{"name": "d", "direction": "sideways"}]}, "/notrack/0/direction", "'sideways' is not allowed"),
    ({"version": 1, "helpers": [{"name": "f", "helper": "ftp", "protocol": "tcp"}]}, "/helpers/0", "'ports' is a required property"),
    ({"version": 1, "helpers": [{"name": "f", "helper": "http", "protocol": "tcp", "ports": [80]}]}, "/helpers/0/helper", "'http' is not allowed"),
    ({"version": 1, "helpers": [{"name": "f", "helper": "ftp", "protocol": "udp", "ports": [21]}]}, "/helpers/0/protocol", "does not work over udp"),
    ({"version": 1, "chains": {"in put": {}}}, "/chains/in put", "not allowed"),
    ({"version": 1, "chains": {"input": {"policy": "reject"}}}, "/chains/input/policy", "'reject' is not allowed"),
    ({"version": 1, "chains": {"input": {"rules": {}}}}, "/chains/input/rules", "not of type array"),
    (with_rule({"action": "allow"}), "/chains/input/rules/0/action", "'allow' is not allowed"),
    (with_rule({"action": "accept", "dprot": 22}), "/chains/input/rules/0", "did you mean 'dport'"),
    (with_rule({"action": "accept", "jump": "web"}), "/chains/input/rules/0", "exclude each other"),
    (with_rule({"protocol": "tcp", "dport": "22-"}), "/chains/input/rules/0/dport", "expected form"),
    (with_rule({"protocol": "tcp", "dport": 0}), "/chains/input/rules/0/dport", "less than the minimum of 1"),
    (with_rule({"protocol": "tcp", "dport": ["99999"]}), "/chains/input/rules/0/dport/0", "out of range"),
    (with_rule({"protocol": "tcp", "dport": "0-1023"}), "/chains/input/rules/0/dport", "ports are 1-65535"),
    # set members of type inet_service take the same ports as rules: port 0 is refused in both
    ({"version": 1, "sets": {"p": {"type": "inet_service", "elements": [0]}}}, "/sets/p/elements/0",
     "ports are 1-65535"),
    ({"version": 1, "sets": {"p": {"type": "inet_service", "interval": True, "elements": ["0-1023"]}}},
     "/sets/p/elements/0", "ports are 1-65535"),
    ({"version": 1, "sets": {"p": {"type": ["ipv4_addr", "inet_service"], "elements": [["192.0.2.1", "0"]]}}},
     "/sets/p/elements/0", "ports are 1-65535"),
    ({"version": 1, "sets": {"p": {"type": "inet_service", "interval": True, "elements": ["9-1"]}}},
     "/sets/p/elements/0", "runs backwards"),
    ({"version": 1, "sets": {"p": {"type": "inet_service", "elements": ["http"]}}}, "/sets/p/elements/0",
     "is not a port or port range"),
    (with_rule({"saddr": "300.1.1.1"}), "/chains/input/rules/0/saddr", "not an IPv4 or IPv6 address"),
    (with_rule({"saddr": ["2001:db8::1/32"]}), "/chains/input/rules/0/saddr/0", "did you mean '2001:db8::/32'"),
    (with_rule({"ct_state": ["establish"]}), "/chains/input/rules/0/ct_state/0", "'establish' is not allowed"),
    (with_rule({"ct_state": []}), "/chains/input/rules/0/ct_state", "should be non-empty"),
    (with_rule({"iif": "an-interface-name-too-long"}), "/chains/input/rules/0/iif", "expected form"),
    (with_rule({"log": {"level": "loud"}}), "/chains/input/rules/0/log/level", "'loud' is not allowed"),
    (with_rule({"counter": "yes"}), "/chains/input/rules/0/counter", "boolean"),
    (with_rule({"name": "has space"}), "/chains/input/rules/0/name", "expected form"),
    (with_rule({"comment": 'say "hi"'}), "/chains/input/rules/0/comment", "expected form"),
    ({"version": 1, "description": 5}, "/description", "not of type string"),
    ({"version": 1.5}, "/version", "must be 1"),
]


@pytest.mark.parametrize("doc,pointer,words", INVALID, ids=[f"{i}:{c[1] or '/'}" for i, c in enumerate(INVALID)])
def test_invalid_documents(doc, pointer, words):
    problems = problems_of(doc)
    text = [f"{p.message} ({p.hint})" for p in problems if p.pointer == pointer]
    assert text, f"no problem at {pointer!r}; got {[(p.pointer, p.message) for p in problems]}"
    assert any(words in t for t in text), text


def test_several_problems_reported_at_once():
    doc = {"version": 1, "table": "a b", "chains": {"input": {"policy": "nope", "rules": [{"action": "x"}]}}}
    pointers = {p.pointer for p in problems_of(doc)}
    assert {"/table", "/chains/input/policy", "/chains/input/rules/0/action"} <= pointers


def test_json_problems_carry_line_numbers():
    text = '{\n  "version": 1,\n  "chains": {\n    "input": {\n      "policy": "nope"\n    }\n  }\n}\n'
    with pytest.raises(PolicyError) as info:
        load_text(text, "p.json", "json")
    (problem,) = info.value.problems
    assert (problem.pointer, problem.line) == ("/chains/input/policy", 5)
    assert problem.render().startswith("p.json:5: error: /chains/input/policy:")


def test_yaml_problems_carry_line_numbers():
    text = "version: 1\nchains:\n  input:\n    rules:\n      - action: accept\n      - saddr: 10.0.0.1/8\n"
    with pytest.raises(PolicyError) as info:
        load_text(text, "p.yaml", "yaml")
    (problem,) = info.value.problems
    assert (problem.pointer, problem.line) == ("/chains/input/rules/1/saddr", 6)


def test_duplicate_keys_are_errors():
    text = '{"version": 1, "table": "a", "table": "b"}'
    with pytest.raises(PolicyError) as info:
        load_text(text, "p.json", "json")
    assert any("duplicate key 'table'" in p.message for p in info.value.problems)


def test_syntax_errors_name_the_line():
    with pytest.raises(PolicyError) as info:
        load_text('{\n "version": 1,\n}', "p.json", "json")
    assert info.value.problems[0].line == 3
    with pytest.raises(PolicyError) as info:
        load_text("version: 1\nchains: [\n", "p.yaml", "yaml")
    assert "not valid YAML" in info.value.problems[0].message


def test_missing_file_is_a_clean_error(tmp_path):
    with pytest.raises(PolicyError) as info:
        load_file(tmp_path / "nope.json")
    assert "cannot read file" in info.value.problems[0].message


def test_values_are_normalised():
    policy = load_document({"version": 1, "notrack": [
        {"name": "d", "protocols": ["udp"], "ports": [53, "1000-2000", 53], "peers": "2001:db8::/32"}]})
    (n,) = policy.notrack
    assert n.ports == (PortRange(53, 53), PortRange(1000, 2000))
    assert str(n.peers[0]) == "2001:db8::/32"
    assert policy.table == "ctkit"


def test_one_range_parser_for_ports_lengths_and_queues():
    from ctkit.policy.checks import LENGTHS, PORTS, QUEUES, BadValue, parse_range
    assert parse_range(80, PORTS) == PortRange(80, 80)
    assert parse_range("1000-2000", PORTS) == PortRange(1000, 2000)
    assert parse_range("0-32", LENGTHS) == PortRange(0, 32)
    assert parse_range("0-3", QUEUES) == PortRange(0, 3)
    for value, kind, words in [("0", PORTS, "ports are 1-65535"), ("65536", LENGTHS, "0-65535"),
                               ("3-3", QUEUES, "lo < hi"), ("5-1", PORTS, "did you mean '1-5'?"),
                               ("+80", PORTS, "e.g. 53"), ("8_0", PORTS, "e.g. 53"), (" 80", PORTS, "e.g. 53")]:
        with pytest.raises(BadValue) as info:
            parse_range(value, kind)
        assert words in f"{info.value.message} {info.value.hint}"


# ------------------------------------------------- compiled validators kept on disk (schema_code.py)

def _compile(where, schema=None, **kw):
    from ctkit.policy import schema_code
    schema = schema or {"$schema": "http://json-schema.org/draft-07/schema#", "type": "object",
                        "properties": {"a": {"type": "string", "format": "even"}}}
    return schema_code.compile_validator(schema, {"even": lambda v: len(v) % 2 == 0}, {}, where=where, **kw)


def _rejects(check, value):
    try:
        check(value)
    except Exception:  # noqa: BLE001 - fastjsonschema's JsonSchemaValueException
        return True
    return False


def test_a_compiled_validator_is_kept_and_used_again(tmp_path, monkeypatch):
    import fastjsonschema
    where = tmp_path / "ctkit"
    check = _compile(where)
    assert not _rejects(check, {"a": "xx"}) and _rejects(check, {"a": "x"}) and _rejects(check, {"a": 1})
    (kept,) = where.iterdir()
    assert kept.stat().st_mode & 0o077 == 0 and where.stat().st_mode & 0o077 == 0

    def refuse(*_a, **_k):
        raise AssertionError("compiled again although the cache holds it")
    monkeypatch.setattr(fastjsonschema, "compile_to_code", refuse)
    again = _compile(where)  # from the file; the format check is passed at call time, not cached
    assert not _rejects(again, {"a": "xx"}) and _rejects(again, {"a": "x"})


def test_another_schema_or_part_gets_another_file(tmp_path):
    where = tmp_path / "ctkit"
    _compile(where)
    _compile(where, {"$schema": "http://json-schema.org/draft-07/schema#", "type": "array"})
    _compile(where, {"$schema": "http://json-schema.org/draft-07/schema#", "type": "array",
                     "$defs": {"x": {"type": "string"}}}, ref="#/$defs/x")
    assert len(list(where.iterdir())) == 3


@pytest.mark.parametrize("how", SPOILS)
def test_a_cache_anyone_else_could_write_is_not_used(tmp_path, how):
    """ctkit runs as root and executes the cached code: only a file nobody else could write is read."""
    where = tmp_path / "ctkit"
    _compile(where)
    (kept,) = where.iterdir()
    spoil(kept, where, how, b"not marshal")
    check = _compile(where)  # compiled in memory instead: still right
    assert not _rejects(check, {"a": "xx"}) and _rejects(check, {"a": "x"})


def test_the_cache_lives_in_the_users_cache_directory(tmp_path, monkeypatch):
    from ctkit.policy import schema_code
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert schema_code.cache_dir() == tmp_path / "ctkit"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/dir")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert schema_code.cache_dir() == tmp_path / "home" / ".cache" / "ctkit"
    # a missing cache directory under a private home is made, private (a fresh root account has none)
    (tmp_path / "fresh").mkdir(mode=0o700)
    monkeypatch.setenv("HOME", str(tmp_path / "fresh"))
    monkeypatch.delenv("XDG_CACHE_HOME")
    _compile(None)
    assert (tmp_path / "fresh" / ".cache").stat().st_mode & 0o777 == 0o700
    assert list((tmp_path / "fresh" / ".cache" / "ctkit").iterdir())
    # under a directory others may write to: nothing is created, the validator still works
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    monkeypatch.setenv("XDG_CACHE_HOME", str(shared / "missing"))
    check = _compile(None)
    assert not _rejects(check, {"a": "xx"}) and not (shared / "missing").exists()


def test_a_valid_policy_loads_without_importing_jsonschema():
    """jsonschema (0.1 s to import) only words the problems of an invalid document."""
    import subprocess
    import sys
    code = ("import sys; from ctkit.policy.load import load_file; load_file(sys.argv[1]); "
            "print('jsonschema' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code, str(EXAMPLES[0])], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
