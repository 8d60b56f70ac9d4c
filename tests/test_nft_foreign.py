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
