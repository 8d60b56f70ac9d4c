"""ctkit's own chains read back as the policy they came from (a host ctkit manages, imported live).

ctkit's iptables backend writes each base chain of the policy as <PREFIX><BUILT-IN> reached by one jump
from the built-in chain, and ends it with '-j DROP' commented '<chain>: policy drop' when the policy
drops (ctkit/backends/iptables/layout.py). Here that jump is replaced by the chain's rules, the final rule
becomes the chain's policy again when nothing follows the jump, and ctkit's user chains lose the prefix.
The rules keep a mark (SaveRule.own) so that their comments give back the policy's rule names.

An accept is `-j RETURN` in ctkit's top-level chain and, below it, the accept bit's rules
(ctkit/accept_mark.py). With nothing after the jump a RETURN is what the built-in chain's policy says
(ACCEPT, or DROP), so it becomes that; the bit's rules become the accepts they stand for again and the
bookkeeping rules (clear, test after a jump, ACCEPT-END) go. When rules follow ctkit's jump in the
built-in chain, ctkit's RETURN goes on to them, which a rule of the same chain cannot say: that top-level
chain stays a user chain (ctkit_<built-in>) whose RETURNs are `return`, and the bit's rules stay as they
are (the reader lists them: the policy has no packet-mark match). Older ctkit chains (-j ACCEPT) read as
before.
"""
from __future__ import annotations

import re
from dataclasses import replace

from ctkit import accept_mark
from ctkit.importer.save import BUILTINS, Save, SaveRule

_POLICY = re.compile(r"^(prerouting|input|forward|output|postrouting): policy (drop|accept)$")
_SET_BIT = tuple(accept_mark.SET_BIT.split())
_CLEAR = tuple(accept_mark.CLEAR_BIT.split())
_RETURN_IF_SET = tuple(accept_mark.RETURN_IF_SET.split())
_RETURN = ("-j", "RETURN")


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


def _with_target(rule: SaveRule, target: tuple[str, ...], tail: int) -> SaveRule:
    """The rule with its last `tail` tokens (its target) replaced."""
    return replace(rule, tokens=rule.tokens[:-tail] + target)


def _unmarked(rules: list[SaveRule], top: bool, goto_end: tuple[str, ...], verdict: str) -> list[SaveRule]:
    """One chain's rules without the accept bit's: a nested accept (MARK set, then the test) is the verdict
    the built-in chain gives after ctkit's chain again, the test after a jump and the top-level chain's
    clear go."""
    out: list[SaveRule] = []
    for i, r in enumerate(rules):
        if r.tokens in (_CLEAR, goto_end) or (r.tokens == _RETURN_IF_SET and not top):
            continue
        if not top and r.tokens[-len(_SET_BIT):] == _SET_BIT and rules[i + 1:i + 2] \
                and rules[i + 1].tokens == _RETURN_IF_SET:
            out.append(_with_target(r, ("-j", verdict), len(_SET_BIT)))
            continue
        out.append(r)
    return out


def _left_out(save: Save, include: frozenset):
    """Whether the import leaves a rule out (idioms.Importer._rule: a jump into another tool's chain,
    fail2ban's or docker's, or docker's interfaces): after ctkit's jump it is no rule the imported chain
    goes on to."""
    from ctkit.importer.idioms import DOCKER_IFACE, foreign_owner
    from ctkit.importer.rules import read
    user = {(c.table, c.name) for c in save.chains if c.policy is None}

    def left_out(rule: SaveRule) -> bool:
        target = read(rule.tokens).target
        if target and (rule.table, target) in user and foreign_owner(target, include):
            return True
        return "docker" not in include and any(DOCKER_IFACE.match(t) for t in rule.tokens)
    return left_out


def inline(save: Save, prefix: str, include: frozenset = frozenset()) -> Save:
    """The save with ctkit's chains (names starting with `prefix`) folded back into the built-in ones.
    `include`: the other tools' chains the import keeps (Importer.include)."""
    own = {(c.table, c.name) for c in save.chains if c.policy is None and c.name.startswith(prefix)}
    if not own:
        return save
    end = accept_mark.accept_end(prefix)
    left_out = _left_out(save, include)
    goto_end = tuple(accept_mark.goto_end_if_set(prefix).split())
    policy_of = {(c.table, c.name): c.policy for c in save.chains if c.policy is not None}
    body: dict[tuple[str, str], list[SaveRule]] = {}
    for r in save.rules:
        if (r.table, r.chain) in own:
            body.setdefault((r.table, r.chain), []).append(replace(r, own=True))
    builtin_rules: dict[tuple[str, str], list[SaveRule]] = {}
    for r in save.rules:
        if (r.table, r.chain) not in own:
            builtin_rules.setdefault((r.table, r.chain), []).append(r)
    # the top-level chains: (table, ctkit chain) -> the jump to it; inlined unless rules follow the jump and
    # ctkit's chain can go on to them (a RETURN, or the accept bit's test)
    jumps: dict[tuple[str, str], SaveRule] = {}
    for key, rules in builtin_rules.items():
        table, chain = key
        target = prefix + chain
        if chain in BUILTINS.get(table, ()) and (table, target) in own:
            jump = next((r for r in rules if r.tokens == ("-j", target)), None)
            if jump is not None:
                jumps[(table, target)] = jump
    kept = set()
    for (table, target), jump in jumps.items():
        rest = builtin_rules[(table, jump.chain)]
        last = not [x for x in rest[rest.index(jump) + 1:] if not left_out(x)]
        ends = any(x.tokens[-2:] == _RETURN or x.tokens == goto_end for x in body.get((table, target), []))
        if not last and ends:
            kept.add((table, target))
    # the accept bit's rules fold back where every top-level chain of the table that tests it is inlined, and
    # those built-in chains agree on what follows (their policy: a nested accept under policy DROP drops)
    after: dict[str, set[str]] = {}
    for (t, c), jump in jumps.items():
        if goto_end in [x.tokens for x in body.get((t, c), [])]:
            after.setdefault(t, set()).add("kept" if (t, c) in kept else policy_of.get((t, jump.chain)) or "ACCEPT")
    fold = {t for t, _c in own if len(after.get(t, {"ACCEPT"})) == 1 and "kept" not in after.get(t, set())}
    for key in list(body):
        if key[0] in fold:
            body[key] = _unmarked(body[key], key in jumps and key not in kept, goto_end,
                                  next(iter(after.get(key[0], {"ACCEPT"}))))
    inlined: set[tuple[str, str]] = set()
    policies: dict[tuple[str, str], str] = {}
    user_names = {name: name[len(prefix):] for _t, name in own}
    for _t, name in kept:
        user_names[name] = prefix.lower().rstrip("-") + "_" + name[len(prefix):].lower()
    dropped = {(t, end) for t in fold if (t, end) in own}
    rules: list[SaveRule] = []
    for r in save.rules:
        key = (r.table, r.chain)
        if key in own:
            continue
        target = prefix + r.chain
        if jumps.get((r.table, target)) is r and (r.table, target) not in kept:
            inlined.add((r.table, target))
            part = body.get((r.table, target), [])
            here = builtin_rules[key]
            last_here = not [x for x in here[here.index(r) + 1:] if not left_out(x)]
            if last_here:  # a RETURN is the built-in chain's policy
                verdict = ("-j", policy_of.get(key) or "ACCEPT")
                part = [_with_target(x, verdict, 2) if x.tokens[-2:] == _RETURN else x for x in part]
            if part and last_here and r.table == "filter":
                m = _POLICY.match(_comment(part[-1].tokens) or "")
                if m and part[-1].tokens[-2:] in (("-j", "DROP"), ("-j", "ACCEPT")):
                    policies[key] = m.group(2).upper()
                    part = part[:-1]
            rules += [_retarget(replace(x, chain=r.chain), user_names) for x in part]
            continue
        rules.append(_retarget(r, user_names))
    for key in sorted(own - inlined - dropped):
        rules += [_retarget(replace(x, chain=user_names[x.chain]), user_names) for x in body.get(key, [])]
    chains = []
    for c in save.chains:
        if (c.table, c.name) in inlined or (c.table, c.name) in dropped:
            continue
        if (c.table, c.name) in own:
            chains.append(replace(c, name=user_names[c.name]))
        elif (c.table, c.name) in policies:
            chains.append(replace(c, policy=policies[(c.table, c.name)]))
        else:
            chains.append(c)
    return replace(save, chains=tuple(chains), rules=tuple(rules))
