"""Hostile input (issue 14, part 1): every input ctkit does not accept is refused with exit 2 and a
located message, quickly, in bounded memory, before any kernel call (no root needed).

Classes: YAML alias expansion; YAML tags and YAML 1.1 readings; messages that would echo an unbounded
value; text that would change the meaning of nft text, libnftables JSON or iptables-restore input;
Unicode tricks on names; paths that are not regular files or are too big; a foreign --state file.

Times are measured in-process as CPU time, and judged as a ratio to the CPU time of loading a valid
1,000-rule YAML policy in the same run (about 0.1 s here), never against a fixed number of seconds:
the machine is shared, and a loaded one must not fail them. The bound (FAST times the reference,
about 4 s here; the issue asks for "well under 2 s") still catches what it is for: each refusal costs
0.1 to 1 s here, and each took from seconds to forever, or a traceback, before.
"""
from __future__ import annotations

import functools
import ipaddress
import json
import os
import signal
import subprocess
import sys
import time
import tracemalloc
from contextlib import contextmanager

import pytest
from goldens import ROOT
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from ctkit import names
from ctkit.audit import run as audit_run
from ctkit.backends.iptables import generate as ipt
from ctkit.backends.iptables import text as ipt_text
from ctkit.backends.nft import generate as nft
from ctkit.backends.nft import text as nft_text
from ctkit.compile.lower import lower
from ctkit.errors import EXIT_INVALID, CompileError, PolicyError, UsageError
from ctkit.ownership import check_prefix, check_table
from ctkit.policy import load
from ctkit.policy.lint import errors_of, lint
from ctkit.policy.load import load_document, load_file, load_text

#: the documented limits (README, "Input")
LIMITS = {name: getattr(load, name, default) for name, default in
          (("MAX_ALIASED", 100_000), ("MAX_PROBLEMS", 100), ("MAX_NODES", 2_000_000),
           ("MAX_YAML_NODES", 500_000), ("MAX_FILE_BYTES", 32 << 20), ("MAX_YAML_BYTES", 4 << 20))}
#: a refusal costs at most this many times reference_seconds() (CPU time, measured in the same run)
FAST = 40.0


@functools.cache
def reference_seconds() -> float:
    """CPU seconds to load a valid 1,000-rule YAML policy (the best of three, after a warm-up)."""
    rules = [{"name": f"r{i}", "protocol": "tcp", "dport": 1000 + i, "saddr": f"10.0.{i // 250}.{i % 250}",
              "action": "accept"} for i in range(1000)]
    text = json.dumps({"version": 1, "chains": {"input": {"policy": "accept", "rules": rules}}}, indent=1)
    load_text(text, "p.yaml", "yaml")
    best = float("inf")
    for _ in range(3):
        start = time.process_time()
        load_text(text, "p.yaml", "yaml")
        best = min(best, time.process_time() - start)
    return best


@contextmanager
def deadline(seconds: float = 20):
    """Fail instead of hanging (a FIFO read, an alias bomb on the old loader)."""
    def expire(*_):
        raise TimeoutError(f"no answer within {seconds} s")
    old = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def refused(call, *args, within: float = FAST, memory: int | None = None) -> tuple[PolicyError, float]:
    """(the PolicyError `call(*args)` raised, CPU seconds it took); it must cost at most `within` times
    reference_seconds() (and allocate at most `memory` bytes at its peak, when given)."""
    reference = reference_seconds()
    if memory:
        tracemalloc.start()
    start = time.process_time()
    try:
        with deadline(120):  # wall clock: only so that a hang fails instead of blocking the suite
            call(*args)
    except PolicyError as exc:
        took = time.process_time() - start
        if memory:
            _, peak = tracemalloc.get_traced_memory()
            assert peak < memory, f"{peak >> 20} MiB at the peak"
        assert exc.exit_code == EXIT_INVALID
        assert took < within * reference, (f"refused after {took:.2f} s of CPU, {took / reference:.0f} times "
                                           f"the reference load ({reference:.3f} s; the bound is {within:.0f}x)")
        assert len(str(exc)) < 40_000, f"the message is {len(str(exc))} characters"
        return exc, took
    else:
        raise AssertionError("accepted")
    finally:
        if memory:
            tracemalloc.stop()


def yaml_refused(text: str, **kw) -> PolicyError:
    return refused(load_text, text, "p.yaml", "yaml", **kw)[0]


def one(exc: PolicyError):
    assert exc.problems, exc
    return exc.problems[0]


# ------------------------------------------------------------------ YAML alias expansion

def _bomb(levels: int, fanout: int, shape: str) -> str:
    """The "billion laughs" shape: each anchor refers to the previous one `fanout` times."""
    lines = ["version: 1", "description: x", "chains:", "  input:", "    rules:",
             '      - {name: a0, comment: &a0 "lol"}']
    for i in range(1, levels + 1):
        if shape == "list":
            body = "[" + ", ".join([f"*a{i - 1}"] * fanout) + "]"
        elif shape == "map":
            body = "{" + ", ".join(f"k{j}: *a{i - 1}" for j in range(fanout)) + "}"
        else:  # merge keys: each mapping merges the previous one and adds its own keys
            body = "{" + ", ".join(f"k{j}: {{<<: *a{i - 1}, z{j}: 1}}" for j in range(fanout)) + "}"
            if i == 1:
                body = "{" + ", ".join(f"k{j}: [*a0]" for j in range(fanout)) + "}"
        lines.append(f"      - {{name: a{i}, comment: &a{i} {body}}}")
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("shape", ["list", "map", "merge"])
def test_billion_laughs_is_refused_at_once_with_its_line(shape):
    """Ten anchors each referring to the previous one ten times: 10^10 values if expanded (the old
    loader ran for more than 60 s at full CPU on it: it expanded it, then walked it)."""
    exc = yaml_refused(_bomb(10, 10, shape), memory=64 << 20)
    problem = one(exc)
    assert "YAML aliases expand" in problem.message
    assert problem.line is not None and problem.pointer.startswith("/chains/input/rules/")


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(levels=st.integers(4, 12), fanout=st.integers(6, 30), shape=st.sampled_from(["list", "map", "merge"]))
def test_every_alias_bomb_beyond_the_limits_is_refused_fast(levels, fanout, shape):
    expanded = fanout ** levels
    if expanded <= LIMITS['MAX_ALIASED']:
        return
    exc = yaml_refused(_bomb(levels, fanout, shape))
    assert "YAML aliases" in one(exc).message


def test_an_alias_that_contains_itself_is_refused():
    for text in ("version: 1\ndescription: &a [*a]\n", "version: 1\nchains: &c {input: {rules: [*c]}}\n",
                 "version: 1\nsets: &m {s: {<<: *m, type: ipv4_addr}}\n"):
        problem = one(yaml_refused(text))
        assert "contains it" in problem.message or "recursive" in problem.message, problem
        assert problem.line == 2
    # aliases in ordinary use still load
    text = ("version: 1\nchains:\n  input:\n    rules:\n"
            "      - {name: office, saddr: &office [192.0.2.1, 192.0.2.2], action: accept}\n"
            "      - {name: office-ssh, saddr: *office, protocol: tcp, dport: 22, action: accept}\n")
    a, b = load_text(text, "p.yaml", "yaml").chains[0].rules
    assert a.saddr == b.saddr and len(a.saddr) == 2




# ------------------------------------------------------------------ YAML tags, YAML 1.1 readings, keys

RULE_YAML = "version: 1\nchains:\n  input:\n    rules:\n      - {{name: r, protocol: tcp, {field}, action: accept}}\n"


@pytest.mark.parametrize("value, words", [
    ("!!python/object/apply:os.system [echo pwned]", "tag"),
    ("!!python/name:os.system", "tag"),
    ("!!binary aGVsbG8=", "binary"),
    ("2024-01-01", "read by YAML as a date"),
    ("!!set {a: null}", "tag"),
    ("!!omap [{a: 1}]", "tag"),
    ("!local x", "tag"),
])
def test_yaml_tags_that_construct_objects_or_binary_are_refused_where_they_are(value, words):
    problem = one(yaml_refused(f"version: 1\ndescription: {value}\n"))
    assert problem.pointer == "/description" and problem.line == 2, problem
    assert words in problem.message


@pytest.mark.parametrize("field, pointer, words", [
    ("dport: 010", "dport", "octal"),             # YAML 1.1: 8
    ("dport: 0x50", "dport", "hexadecimal"),      # 80
    ("dport: 0b1010000", "dport", "binary"),      # 80
    ("dport: 1:30", "dport", "sexagesimal"),      # 90
    ("dport: 8_0", "dport", "a number"),          # 80
    ("counter: yes", "counter", "as true"),
    ("counter: off", "counter", "as false"),
    ("mark_set: 7.0", "mark_set", "fraction"),    # JSON Schema takes 7.0 for an integer
    ("mark_set: " + "9" * 5000, "mark_set", "5000 digits"),  # int() of it fails: an internal error before
])
def test_yaml_1_1_readings_are_refused_with_line_and_pointer(field, pointer, words):
    problem = one(yaml_refused(RULE_YAML.format(field=field)))
    assert problem.pointer == f"/chains/input/rules/0/{pointer}", problem
    assert problem.line == 5 and words in problem.message, problem


@settings(max_examples=60, deadline=None)
@given(st.one_of(
    st.integers(0, 65535).map(lambda n: f"0{n:o}" if n > 7 else "010"),
    st.integers(1, 65535).map(hex),
    st.integers(1, 65535).map(bin),
    st.tuples(st.integers(1, 59), st.integers(0, 59)).map(lambda t: f"{t[0]}:{t[1]:02d}"),
    st.integers(10, 65535).map(lambda n: f"{str(n)[0]}_{str(n)[1:]}"),
))
def test_no_non_decimal_integer_spelling_is_guessed(spelling):
    problem = one(yaml_refused(RULE_YAML.format(field=f"dport: {spelling}")))
    assert problem.pointer == "/chains/input/rules/0/dport" and "YAML 1.1" in problem.message
    # quoted, or plain decimal, it means what it says
    policy = load_text(RULE_YAML.format(field=f"dport: 8080, counter: false, comment: '{spelling}'"), "p.yaml", "yaml")
    (rule,) = policy.chains[0].rules
    assert rule.dport[0].lo == 8080 and rule.counter is False and rule.comment == spelling




@pytest.mark.parametrize("key", ["1", "on", "null", "~", "1.5", "[a]", "{a: 1}"])
def test_mapping_keys_that_are_not_text_are_refused(key):
    problem = one(yaml_refused(f"version: 1\ntoggles: {{? {key} : true}}\n"))
    assert problem.pointer == "/toggles" and problem.line == 2, problem
    assert "key" in problem.message


@pytest.mark.parametrize("text, pointer", [
    ('{"version": 1, "zones": [{"name": "z", "zone": 7.0}]}', "/zones/0/zone"),  # was "ct zone set 7.0"
    ('{"version": 1, "conntrack": {"max": 1e3}}', "/conntrack/max"),
    ('{"version": 1.0}', "/version"),
])
def test_integers_written_as_floats_are_refused(text, pointer):
    problem = one(refused(load_text, text, "p.json", "json")[0])
    assert problem.pointer == pointer and problem.line == 1 and "fraction or with an exponent" in problem.message


# ------------------------------------------------------------------ size and nesting

@pytest.mark.parametrize("fmt, text", [
    ("json", "[" * 1_000_000 + "]" * 1_000_000),
    ("json", '{"a":' * 600 + "1" + "}" * 600),
    ("json", '{"version": 1, "description": ' + "[" * 40 + "]" * 40 + "}"),
    ("yaml", "[" * 999 + "]" * 999),  # an internal error (RecursionError) before
    ("yaml", "version: 1\ndescription:\n" + "".join("  " * (i + 1) + "- \n" for i in range(40))),
])
def test_deep_nesting_is_refused_quickly(fmt, text):
    exc, _ = refused(load_text, text, f"p.{fmt}", fmt, memory=64 << 20)
    assert "levels deep" in one(exc).message


def test_too_many_values_are_refused_before_the_schema():
    doc = {"version": 1, "description": "x",
           "chains": {"input": {"rules": [{"ct_state": [0] * (LIMITS['MAX_NODES'] + 100_000)}]}}}
    exc, _ = refused(load_document, doc)
    assert f"at most {LIMITS['MAX_NODES']}" in one(exc).message


# ------------------------------------------------------------------ bounded messages

def _rendered(exc: PolicyError) -> list[str]:
    return [p.render() for p in exc.problems]


@pytest.mark.parametrize("doc, words", [
    ({"version": 1, "chains": {"input": {"rules": [{"saddr": [f"10.0.{i >> 8 & 255}.{i & 255}"
                                                              for i in range(100_000)]}]}}}, "100000 items"),
    ({"version": 1, "chains": {"input": {"rules": [{"name": "x" * 1_000_000}]}}}, "1000000 characters"),
    ({"version": 1, "chains": {"x" * 1_000_000: {}}}, "1000000 characters"),
    ({"version": 1, **{f"k{i}": 1 for i in range(100_000)}}, "99995 more"),
    ({"version": 1, "sets": {"s": {"type": "ipv4_addr", "elements": ["x" * 1_000_000]}}}, "1000000 characters"),
    ({"version": 1, "chains": {"input": {"rules": [{"jump": "x" * 1_000_000}]}}}, "characters"),
])
def test_messages_show_an_excerpt_and_the_size_never_the_value(doc, words):
    """A too-long list of addresses printed 1.5 MB before."""
    def check(doc):
        policy = load_document(doc)
        problems = lint(policy)
        if errors_of(problems):
            raise PolicyError(problems)
    exc, _ = refused(check, doc)
    lines = _rendered(exc)
    assert all(len(line) < 1000 for line in lines), max(map(len, lines))
    assert any(words in line for line in lines), lines[:3]


def test_many_problems_are_counted_not_all_printed():
    doc = {"version": 1, "chains": {"input": {"rules": [{"action": "nope"}] * 100_000}}}
    exc, _ = refused(load_document, doc)
    assert len(exc.problems) == LIMITS['MAX_PROBLEMS'] + 1
    assert "more problems not shown" in exc.problems[-1].message
    exc = yaml_refused("version: 1\n" + "description: x\n" * 100_000)  # 100,000 duplicate keys
    assert len(exc.problems) <= LIMITS['MAX_PROBLEMS'] + 2


def test_a_big_policy_with_one_bad_rule_is_refused_quickly():
    """jsonschema alone took about 8 s to name the one bad rule of 10,000 (benchmarks/bench_audit.py's shape)."""
    rules = [{"name": f"r{i}", "protocol": "tcp" if i % 2 else "udp", "dport": 1024 + i,
              "saddr": f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}", "action": "accept"} for i in range(10_000)]
    rules[-1]["action"] = "nope"
    text = json.dumps({"version": 1, "chains": {"input": {"rules": rules}}}, indent=1)
    exc, _ = refused(load_text, text, "p.json", "json")
    problem = one(exc)
    assert problem.pointer == "/chains/input/rules/9999/action" and problem.line == text[:text.index('"nope"')].count("\n") + 1


#: text without control characters (those are refused before any message could echo them)
printable = st.characters(blacklist_categories=("Cc", "Cs", "Zl", "Zp"))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st.sampled_from(["name", "comment", "saddr", "dport", "iif", "jump", "ct_state", "log"]),
       st.one_of(st.text(printable, min_size=300, max_size=2000),
                 st.lists(st.text(printable, max_size=30), min_size=500, max_size=3000),
                 st.dictionaries(st.text(printable, min_size=1, max_size=200), st.integers(), min_size=50,
                                 max_size=300)))
def test_no_message_line_grows_with_the_value(field, value):
    try:
        load_document({"version": 1, "chains": {"input": {"rules": [{field: value}]}}})
    except PolicyError as exc:
        assert all(len(line) < 1000 for line in _rendered(exc))


# ------------------------------------------------------------------ text that reaches the kernel

def _nft_tokens(text: str) -> list[tuple[str, str]]:
    """nft's scanner, as far as structure goes: a double-quoted string has no escapes and ends at the
    next quote; # starts a comment to the end of the line; ; { } , and newlines are separators (an
    IPv6 address is one word);
    a quoted log prefix with $ in it is expanded by nft as a variable, so it is not a literal."""
    out: list[tuple[str, str]] = []
    i = 0
    while i < len(text):
        c = text[i]
        if c in " \t":
            i += 1
        elif c == "#":
            while i < len(text) and text[i] != "\n":
                i += 1
        elif c == '"':
            end = text.index('"', i + 1)
            kind = "VAR" if "$" in text[i + 1:end] and out and out[-1] == ("WORD", "prefix") else "STR"
            out.append((kind, text[i + 1:end]))
            i = end + 1
        elif c in ";{},\n":
            out.append(("PUNCT", c))
            i += 1
        else:
            j = i
            while j < len(text) and text[j] not in ' \t#";{},\n':
                j += 1
            out.append(("WORD", text[i:j]))
            i = j
    return out


def _restore_argv(line: str) -> list[str]:
    """iptables-restore's add_param_to_argv (iptables/xshared.c, 1.8.9): double quotes group, a
    backslash escapes only inside them, space, tab and newline separate."""
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
            continue
        if c == '"':
            quoted = has = True
        elif c in " \t\n":
            if param or has:
                out.append("".join(param))
            param, has = [], False
        else:
            param.append(c)
    if param or has:
        out.append("".join(param))
    return out


def _restore_tokens(text: str) -> list[list[str]]:
    lines = text.split("\n")
    # iptables-restore reads with fgets: \n ends a line; \r, NUL, U+2028 are bytes inside it
    return [_restore_argv(line) for line in lines if line and not line.startswith("#")]


#: what a hostile value is made of
PIECES = ['"', "'", ";", "{", "}", "#", "\\", "$x", "%", "@", "*", "+", ":", "/", " ", " -j ACCEPT", "\n", "\r",
          "\x00", "\x1b[31m", "\u2028", "\u0085", "\t", "é", "\u202e", "fe80::1", "eth0", "a", "0", "-", ".", "_",
          "192.0.2.1", "\u200b"]
hostile = st.lists(st.sampled_from(PIECES), min_size=1, max_size=8).map("".join)

def _address_stand_in(value: str) -> str:
    """An address of the value's family and prefix length, or any address when it is none."""
    try:
        net = ipaddress.ip_network(value)
    except ValueError:
        return "2001:db8::99"
    base = "198.18.0.0" if net.version == 4 else "2001:db8::"
    return str(ipaddress.ip_network(f"{base}/{net.prefixlen}", strict=False))


def _address_spellings(value: str) -> set[str]:
    try:
        net = ipaddress.ip_network(value)
    except ValueError:
        return {value}
    return {str(net), str(net.network_address), f"{net.network_address}/{net.prefixlen}"}


def _iface_spellings(value: str) -> set[str]:
    return {value, value[:-1] + "*"} if value.endswith("+") else {value}


#: field -> (the policy with the value in it, the value's benign stand-in, how the kernel's input spells it)
FIELDS = {
    "comment": (lambda v: {"chains": {"input": {"rules": [{"name": "r", "comment": v, "action": "accept"}]}}},
                lambda v: "benign", lambda v: {f"r: {v}"}),
    "prefix": (lambda v: {"chains": {"input": {"rules": [{"name": "r", "log": {"prefix": v}, "action": "drop"}]}}},
               lambda v: "benign", lambda v: {v}),
    "iif": (lambda v: {"chains": {"input": {"rules": [{"name": "r", "iif": v, "action": "accept"}]}}},
            lambda v: "benign+" if v.endswith("+") else "benign0", _iface_spellings),
    "vmap": (lambda v: {"chains": {"input": {"rules": [{"name": "r", "vmap": {"key": "iif", "map": {v: "drop"}}}]}}},
             lambda v: "benign+" if v.endswith("+") else "benign0", _iface_spellings),
    "saddr": (lambda v: {"chains": {"input": {"rules": [{"name": "r", "saddr": v, "action": "accept"}]}}},
              _address_stand_in, _address_spellings),
    "element": (lambda v: {"sets": {"s": {"type": "ipv6_addr", "elements": [v]}},
                           "chains": {"input": {"rules": [{"name": "r", "saddr": "@s", "action": "accept"}]}}},
                _address_stand_in, _address_spellings),
    "nat": (lambda v: {"nat": [{"name": "n", "type": "masquerade", "oif": "wan0", "comment": v}]},
            lambda v: "benign", lambda v: {f"nat/n: {v}"}),
}


def _compiled(doc: dict):
    """(nft text, libnftables JSON, iptables-restore texts) of a policy, or None when ctkit refuses it."""
    try:
        policy = load_document({"version": 1, **doc})
        if errors_of(lint(policy)):
            return None
        plan = lower(policy)
        document = nft.generate(plan)
        ruleset = ipt.generate(plan)
        restore = [ipt_text.render(ruleset.document(f)) for f in ("ipv4", "ipv6")]
        return nft_text.render(document), document, restore
    except (PolicyError, CompileError):
        return None


#: the iptables options whose argument a hostile value may be
_OPTIONS = {"--comment", "--log-prefix", "-i", "-o", "-s", "-d"}


def _abstract_nft(tokens, spellings: set[str], word: bool):
    """nft tokens with the value (as the kernel's input should spell it) replaced by one marker: a
    quoted string, or (addresses, which nft writes bare) a word; a VAR is never the value."""
    kinds = ("WORD",) if word else ("STR",)
    return [("VALUE",) if tok[0] in kinds and tok[1] in spellings else tok for tok in tokens]


def _abstract_argv(argv: list[str], spellings: set[str]):
    return [("VALUE",) if i and argv[i - 1] in _OPTIONS and arg in spellings else arg for i, arg in enumerate(argv)]


def _references(node, inside: bool = False):
    """The strings libnftables JSON reads as references: a value (right of a match, a set element, a
    vmap key) that starts with @ (a set) or $ (a variable)."""
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _references(v, inside or k in ("right", "elem", "data"))
    elif isinstance(node, list):
        for v in node:
            yield from _references(v, inside)
    elif inside and isinstance(node, str) and node[:1] in "@$":
        yield node


def _json_strings(node):
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _json_strings(k)
            yield from _json_strings(v)
    elif isinstance(node, list):
        for v in node:
            yield from _json_strings(v)
    elif isinstance(node, str):
        yield node


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(sorted(FIELDS)), hostile)
@example("vmap", "eth0 -j ACCEPT")            # became -i eth0 -j ACCEPT ... -j DROP
@example("vmap", 'x" : accept, "y')           # an accept entry injected into nft's vmap
@example("saddr", "fe80::1%x -j ACCEPT")     # ip6 saddr fe80::1%x -j ACCEPT (an IPv6 zone of any text)
@example("element", 'fe80::1%x" } ; {')     # closed the elements of nft's set
@example("prefix", "drop $x")                 # nft reads $x in a log prefix as a variable
@example("iif", "@s")                         # libnftables JSON reads "@s" as a set reference
@example("comment", "a;b{c}#d' -j ACCEPT")
def test_hostile_text_never_changes_the_generated_structure(field, value):
    make, stand_in_of, spell = FIELDS[field]
    got = _compiled(make(value))
    if got is None:
        return  # refused: the kernel sees nothing
    stand_in = stand_in_of(value)
    benign = _compiled(make(stand_in))
    assert benign is not None, stand_in
    mine, theirs = spell(value), spell(stand_in)
    nft_text_, document, restore = got
    b_text, b_document, b_restore = benign
    word = field in ("saddr", "element")
    assert _abstract_nft(_nft_tokens(nft_text_), mine, word) == _abstract_nft(_nft_tokens(b_text), theirs, word), \
        nft_text_
    for text, b in zip(restore, b_restore, strict=True):
        assert [_abstract_argv(line, mine) for line in _restore_tokens(text)] == \
            [_abstract_argv(line, theirs) for line in _restore_tokens(b)], text
    # libnftables JSON: a value that starts with @ names a set and $ a variable; ctkit writes only its own
    assert set(_references(document)) == set(_references(b_document)), set(_references(document))


def test_an_interface_wildcard_means_the_same_on_both_backends():
    """iptables -i eth+ is every interface whose name starts with eth; nft's wildcard is eth*, and
    iifname "eth+" matched only an interface called eth+ (checked on Linux 6.18, integration/)."""
    doc = FIELDS["iif"][0]("veth+")
    doc["chains"]["input"]["rules"].append({"name": "m", "vmap": {"key": "oif", "map": {"wg+": "accept"}}})
    text, document, restore = _compiled(doc)
    assert 'iifname "veth*"' in text and 'oifname vmap { "wg*" : accept }' in text
    assert "-i veth+ " in restore[0] and "-o wg+ " in restore[0]
    names = set(_json_strings(document))
    assert "veth*" in names and "veth+" not in names


@pytest.mark.parametrize("name", ["eth0:1", "@set", "$var", ".", "-j"])
def test_interface_names_the_kernel_or_a_backend_reads_otherwise_are_refused(name):
    for doc in (FIELDS["iif"][0](name), FIELDS["vmap"][0](name)):
        with pytest.raises(PolicyError):
            load_document({"version": 1, **doc})


def test_the_schema_patterns_end_at_the_end_of_the_text():
    """Python's `$` matches before a final newline; the validator's own patterns must not (the control
    character check in front of it is not the only guard)."""
    validator = load._validator()
    for doc in ({"version": 1, "table": "ctkit\n"}, {"version": 1, "toggles": {"maint\n": True}},
                {"version": 1, "chains": {"input": {"rules": [{"iif": "eth0\n"}]}}},
                {"version": 1, "chains": {"input": {"rules": [{"name": "r\n"}]}}}):
        assert not validator.is_valid(doc), doc
    assert validator.is_valid({"version": 1, "table": "ctkit_lab"})


def test_a_toggle_name_from_the_command_line_is_checked_before_it_becomes_a_name():
    for name in ("maint\n", "x -j ACCEPT", "a\"b", "maint\u212a", "A" * 13):
        with pytest.raises(UsageError):
            names.check_toggle_name(name)
        with pytest.raises(UsageError):
            names.toggle_chain_names("CTKIT-", name, 0)
        with pytest.raises(UsageError):
            nft.toggle_element_commands("ctkit", name, True)
    assert names.toggle_chain_names("CTKIT-", "maint", 0) == ("CTKIT-TG-maint-0", "CTKIT-TR-maint-0")


# ------------------------------------------------------------------ Unicode tricks on ownership

TRICKS = ["\u0131", "\u017f", "\u212a", "\u200b", "\u0441", "\uff43", "\ufb00", "\u0301", "\u00df", "\u0130"]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(list("ctkiCTKI_0") + TRICKS), min_size=1, max_size=12).map("".join))
@example("ctk\u0131t")      # dotless i: upper() is CTKIT
@example("ctkit\u017f")     # long s: upper() is CTKITS
def test_only_ascii_names_are_ownable_and_no_case_mapping_reaches_an_ascii_prefix(name):
    name = "ctkit" + name if not name.startswith("ctkit") else name
    try:
        check_table(name)
    except UsageError:
        with pytest.raises(UsageError):  # the iptables prefix of a name that is not ownable
            check_prefix(names.chain_prefix(name))
        return
    assert name.isascii()
    assert check_prefix(names.chain_prefix(name)) == name.upper() + "-"


# ------------------------------------------------------------------ paths

def test_paths_that_are_not_a_small_regular_file_are_refused_unread(tmp_path):
    fifo = tmp_path / "fifo.json"
    os.mkfifo(fifo)
    (tmp_path / "dir.json").mkdir()
    (tmp_path / "loop1.json").symlink_to(tmp_path / "loop2.json")
    (tmp_path / "loop2.json").symlink_to(tmp_path / "loop1.json")
    big = tmp_path / "big.json"
    with open(big, "wb") as f:  # sparse: 60 MB that take no disk
        f.truncate(60 << 20)
    big_yaml = tmp_path / "big.yaml"
    with open(big_yaml, "wb") as f:
        f.truncate(8 << 20)
    secret = tmp_path / "secret.json"
    secret.write_text('{"version": 1}')
    secret.chmod(0)
    cases = [
        (fifo, "FIFO"),                           # the old reader blocked for ever
        ("/dev/null", "device"),
        ("/dev/zero", "device"),                  # the old reader read until memory ran out
        (tmp_path / "dir.json", "directory"),
        (tmp_path / "loop1.json", "symbolic links"),
        (big, f"at most {LIMITS['MAX_FILE_BYTES']}"),  # read whole before (60 MB, then the text walked)
        (big_yaml, f"at most {LIMITS['MAX_YAML_BYTES']}"),  # YAML parses 20 times slower: a lower bound
        ("/proc/self/mem", "cannot read file"),   # a file the kernel does not read even for root
    ]
    if os.geteuid() != 0:  # root reads anything
        cases.append((secret, "Permission denied"))
    for path, words in cases:
        exc, _ = refused(load_file, path, memory=16 << 20)
        problem = one(exc)
        assert words in problem.message and problem.source == str(path), (path, problem)


def test_the_cli_refuses_hostile_files_with_exit_2_and_short_messages(tmp_path):
    files = {"fifo.json": None, "bomb.yaml": _bomb(10, 10, "list"), "deep.yaml": "[" * 999 + "]" * 999,
             "tag.yaml": "version: 1\ndescription: !!python/object/apply:os.system [id]\n",
             "hugeint.yaml": "version: 1\nconntrack: {max: " + "9" * 5000 + "}\n",
             "intkey.yaml": "version: 1\ntoggles: {1: true}\n"}
    for name, text in files.items():
        if text is None:
            os.mkfifo(tmp_path / name)
        else:
            (tmp_path / name).write_text(text)
        r = subprocess.run([sys.executable, "-m", "ctkit", "validate", str(tmp_path / name)], capture_output=True,
                           text=True, cwd=ROOT, timeout=60)
        assert r.returncode == 2, (name, r.returncode, r.stderr[:300])
        assert r.stderr.startswith(str(tmp_path / name)) and len(r.stderr) < 2000, r.stderr[:300]
        assert "Traceback" not in r.stderr and "internal error" not in r.stderr


# ------------------------------------------------------------------ audit --state

class _Figures:
    stats = {"drop": 3, "insert_failed": 0}
    count = 5


@pytest.mark.parametrize("content, words", [
    (b"\xff\xfe garbage", "not JSON"),
    (b"[1, 2, 3]", "not one ctkit wrote"),
    (b'{"prometheus": "state"}', "not one ctkit wrote"),
    (b"[" * 100_000 + b"]" * 100_000, "not JSON"),   # a traceback (RecursionError) before
    (b'{"version": 1, "namespaces": {"": {"time": 1, "stats": {"drop": "many"}}}}', "wrong kind"),
    (b'{"version": 1, "namespaces": {"": {"time": "noon", "stats": {}}}}', "wrong kind"),
    (b'{"version": 1, "namespaces": {"": {"time": 1, "stats": {}, "peak": -1}}}', "wrong kind"),
])
def test_a_corrupt_or_foreign_state_file_is_an_error_naming_it(tmp_path, content, words):
    state = tmp_path / "state.json"
    state.write_bytes(content)
    with pytest.raises(UsageError) as info:
        audit_run.load_state(state, None)
    assert str(state) in str(info.value) and words in str(info.value)
    with pytest.raises(UsageError):  # nor is it replaced by a fresh baseline
        audit_run.save_state(state, None, _Figures(), 0)
    assert state.read_bytes() == content


def test_a_state_file_that_is_not_a_regular_file_is_refused_unread(tmp_path):
    fifo = tmp_path / "state.fifo"
    os.mkfifo(fifo)
    big = tmp_path / "big.json"
    with open(big, "wb") as f:
        f.truncate(60 << 20)
    for path, words in ((fifo, "FIFO"), (big, "at most"), (tmp_path, "directory")):
        with deadline(), pytest.raises(UsageError) as info:
            audit_run.load_state(path, None)
        assert str(path) in str(info.value) and words in str(info.value)


def test_a_state_file_of_other_namespaces_is_kept_and_extended(tmp_path):
    state = tmp_path / "state.json"
    audit_run.save_state(state, "a", _Figures(), 0)
    assert audit_run.load_state(state, "b") == (None, None, 0)  # no baseline yet: not an error
    audit_run.save_state(state, "b", _Figures(), 0)
    data = json.loads(state.read_text())
    assert set(data["namespaces"]) == {"a", "b"}
    stats, seconds, peak = audit_run.load_state(state, "a")
    assert stats == _Figures.stats and seconds >= 0 and peak == 5
