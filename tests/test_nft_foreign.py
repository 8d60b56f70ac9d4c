"""The audit's judgement of a foreign nft chain that drops at the hook of one of ctkit's chains: its
priority says before or after, and an equal priority says that the order is not defined by it (issue
13, part 4: an equal priority was described as running after ctkit)."""
from __future__ import annotations

import pytest

from ctkit.backends.nft.foreign import interference
from ctkit.compile.lower import lower
from ctkit.policy.load import load_document

POLICY = {"version": 1, "chains": {"input": {"policy": "accept", "rules": [
    {"name": "web", "protocol": "tcp", "dport": 80, "action": "accept"}]}}}


def foreign_drop(prio: int) -> list[dict]:
    return [{"chain": {"family": "inet", "table": "other", "name": "in", "type": "filter", "hook": "input",
                       "prio": prio, "policy": "accept"}},
            {"rule": {"family": "inet", "table": "other", "chain": "in",
                      "expr": [{"match": {"op": "==", "left": {"payload": {"protocol": "tcp", "field": "dport"}},
                                          "right": 80}}, {"drop": None}]}}]


@pytest.mark.parametrize(("offset", "finding", "words"), [
    (-10, "foreign.earlier-drop", "runs before ctkit's input chain"),
    (10, "foreign.later-drop", "runs after ctkit's input chain"),
    (0, "foreign.earlier-drop", "has the same priority as ctkit's input chain"),
])
def test_a_foreign_drop_is_placed_by_its_priority(offset, finding, words):
    table = lower(load_document(POLICY)).table
    ours = next(c.hook.priority for c in table.chains if c.name == "input")
    (found,) = interference(foreign_drop(ours + offset), table)
    assert found.id == finding and words in found.message, found.message
    if offset == 0:
        assert "not defined by the priority" in found.message


def _chain(family: str, table: str, name: str, **hook) -> dict:
    return {"chain": {"family": family, "table": table, "name": name, **hook}}


def _rule(family: str, table: str, chain: str, *expr) -> dict:
    return {"rule": {"family": family, "table": table, "chain": chain, "expr": list(expr)}}


DPORT_80 = {"match": {"op": "==", "left": {"payload": {"protocol": "tcp", "field": "dport"}}, "right": 80}}
HOOK = {"type": "filter", "hook": "input", "prio": -10, "policy": "accept"}


@pytest.mark.parametrize("shape", ["jump", "goto", "anonymous vmap", "named vmap", "vmap to a jump"])
def test_a_foreign_drop_behind_a_jump_or_a_verdict_map_is_reported(shape):
    """The same drop written directly was reported; behind a jump, a goto or a verdict map it was not."""
    table = lower(load_document(POLICY)).table
    f, t = "ip", "other"
    ruleset = [_chain(f, t, "in", **HOOK), _chain(f, t, "deny"), _rule(f, t, "deny", {"drop": None})]
    if shape in ("jump", "goto"):
        ruleset.append(_rule(f, t, "in", DPORT_80, {shape: {"target": "deny"}}))
    elif shape == "anonymous vmap":
        ruleset.append(_rule(f, t, "in", {"vmap": {"key": {"payload": {"protocol": "tcp", "field": "dport"}},
                                                   "data": {"set": [[80, {"drop": None}], [22, {"accept": None}]]}}}))
    else:
        verdict = {"drop": None} if shape == "named vmap" else {"jump": {"target": "deny"}}
        ruleset += [{"map": {"family": f, "table": t, "name": "ports", "type": "inet_service", "map": "verdict",
                             "elem": [[80, verdict]]}},
                    _rule(f, t, "in", {"vmap": {"key": {"payload": {"protocol": "tcp", "field": "dport"}},
                                                "data": "@ports"}})]
    found = interference(ruleset, table)
    assert [x.id for x in found] == ["foreign.earlier-drop"], found
    if shape in ("jump", "goto", "vmap to a jump"):  # the same chain accepting instead: nothing to report
        accept_only = [r for r in ruleset if "rule" not in r or r["rule"]["chain"] != "deny"] + [
            _rule(f, t, "deny", {"accept": None})]
        assert interference(accept_only, table) == []


@pytest.mark.parametrize(("family", "hook", "finding"), [
    ("netdev", "ingress", "foreign.earlier-drop"), ("netdev", "egress", "foreign.later-drop"),
    ("bridge", "input", "foreign.earlier-drop")])
def test_a_foreign_drop_at_a_link_layer_hook_is_reported(family, hook, finding):
    table = lower(load_document(POLICY)).table
    ruleset = [_chain(family, "lk", "c", type="filter", hook=hook, prio=0, policy="accept", dev="eth0"),
               _rule(family, "lk", "c", DPORT_80, {"drop": None})]
    (found,) = interference(ruleset, table)
    assert found.id == finding and f"{family} chain at hook {hook} on eth0" in found.message, found.message


FTP_HELPER = {"version": 1, "helpers": [{"name": "ftp-server", "helper": "ftp", "protocol": "tcp", "ports": [21],
                                         "daddr": ["192.0.2.10"]}],
              "chains": {"input": {"policy": "accept", "rules": []}}}


def _m(op: str, left: dict, right) -> dict:
    return {"match": {"op": op, "left": left, "right": right}}


def _p(protocol: str, field: str) -> dict:
    return {"payload": {"protocol": protocol, "field": field}}


NOTRACK = {"notrack": None}


@pytest.mark.parametrize(("expr", "touches"), [
    ([_m("==", _p("tcp", "dport"), 21)], True),
    ([_m("==", _p("udp", "dport"), 21)], False),  # another protocol
    ([_m("!=", _p("tcp", "dport"), 21)], False),  # every port but the helper's
    ([_m("!=", _p("tcp", "dport"), 22)], True),
    ([_m("==", _p("tcp", "dport"), {"range": [1, 1000]})], True),
    ([_m("!=", _p("tcp", "dport"), {"range": [20, 30]})], False),
    ([_m("==", _p("tcp", "dport"), {"set": [20, 22]})], False),
    ([_m("==", _p("ip", "daddr"), "198.51.100.1"), _m("==", _p("tcp", "dport"), 21)], False),  # another address
    ([_m("!=", _p("ip", "daddr"), "192.0.2.10")], False),
    ([_m("==", _p("ip", "daddr"), {"prefix": {"addr": "192.0.2.0", "len": 24}})], True),
    ([_m("==", {"meta": {"key": "l4proto"}}, "udp")], False),
    ([_m("!=", {"meta": {"key": "l4proto"}}, "udp")], True),
    ([], True),  # every packet
])
def test_a_foreign_notrack_is_judged_by_the_flows_it_can_touch(expr, touches):
    """Negation, protocol and addresses count: a notrack that does untrack the helper's flows was missed
    (a negated range), and rules that cannot touch them (another protocol or address) were reported."""
    table = lower(load_document(FTP_HELPER)).table
    ruleset = [_chain("inet", "raw2", "pre", type="filter", hook="prerouting", prio=-300, policy="accept"),
               _rule("inet", "raw2", "pre", *expr, NOTRACK)]
    ids = [f.id for f in interference(ruleset, table)]
    assert ids == (["foreign.notrack-overrides-helper"] if touches else []), ids
