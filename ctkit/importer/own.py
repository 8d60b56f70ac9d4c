"""ctkit's own chains read back as the policy they came from (a host ctkit manages, imported live).

ctkit's iptables backend writes each base chain of the policy as <PREFIX><BUILT-IN> reached by one jump
from the built-in chain, and ends it with '-j DROP' commented '<chain>: policy drop' when the policy
drops (ctkit/backends/iptables/layout.py). Here that jump is replaced by the chain's rules, the final rule
becomes the chain's policy again when nothing follows the jump, and ctkit's user chains lose the prefix.
The rules keep a mark (SaveRule.own) so that their comments give back the policy's rule names.
"""
from __future__ import annotations

import re
from dataclasses import replace

from ctkit.importer.save import BUILTINS, Save, SaveRule

_POLICY = re.compile(r"^(prerouting|input|forward|output|postrouting): policy (drop|accept)$")


def _comment(tokens: tuple[str, ...]) -> str | None:
    for i, t in enumerate(tokens[:-1]):
        if t == "--comment":
            return tokens[i + 1]
    return None


def _retarget(rule: SaveRule, names: dict[str, str]) -> SaveRule:
    tokens = list(rule.tokens)
    for i, t in enumerate(tokens[:-1]):
        if t in ("-j", "--jump", "-g", "--goto") and tokens[i + 1] in names:
            tokens[i + 1] = names[tokens[i + 1]]
    return replace(rule, tokens=tuple(tokens))


def inline(save: Save, prefix: str) -> Save:
    """The save with ctkit's chains (names starting with `prefix`) folded back into the built-in ones."""
    own = {(c.table, c.name) for c in save.chains if c.policy is None and c.name.startswith(prefix)}
    if not own:
        return save
    body: dict[tuple[str, str], list[SaveRule]] = {}
    for r in save.rules:
        if (r.table, r.chain) in own:
            body.setdefault((r.table, r.chain), []).append(replace(r, own=True))
    builtin_rules: dict[tuple[str, str], list[SaveRule]] = {}
    for r in save.rules:
        if (r.table, r.chain) not in own:
            builtin_rules.setdefault((r.table, r.chain), []).append(r)
    inlined: set[tuple[str, str]] = set()
    policies: dict[tuple[str, str], str] = {}
    user_names = {name: name[len(prefix):] for _t, name in own}
    rules: list[SaveRule] = []
    for r in save.rules:
        key = (r.table, r.chain)
        if key in own:
            continue
        target = prefix + r.chain
        if r.tokens == ("-j", target) and (r.table, target) in own and r.chain in BUILTINS.get(r.table, ()):
            inlined.add((r.table, target))
            part = body.get((r.table, target), [])
            last_here = builtin_rules[key][-1] is r
            if part and last_here and r.table == "filter":
                m = _POLICY.match(_comment(part[-1].tokens) or "")
                if m and part[-1].tokens[-2:] in (("-j", "DROP"), ("-j", "ACCEPT")):
                    policies[key] = m.group(2).upper()
                    part = part[:-1]
            rules += [_retarget(replace(x, chain=r.chain), user_names) for x in part]
            continue
        rules.append(_retarget(r, user_names))
    for key in sorted(own - inlined):
        rules += [_retarget(replace(x, chain=user_names[x.chain]), user_names) for x in body.get(key, [])]
    chains = []
    for c in save.chains:
        if (c.table, c.name) in inlined:
            continue
        if (c.table, c.name) in own:
            chains.append(replace(c, name=user_names[c.name]))
        elif (c.table, c.name) in policies:
            chains.append(replace(c, policy=policies[(c.table, c.name)]))
        else:
            chains.append(c)
    return replace(save, chains=tuple(chains), rules=tuple(rules))
