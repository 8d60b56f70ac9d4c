"""What an apply would change in ctkit's nft table, and the smallest batch that does it.

changes() compares the compiled document with one `list table` (with handles) and returns the items
a reviewer reads (base.PlanItem) and one libnftables batch that carries them out: rules deleted or
inserted before a kept rule's handle (appended after the last one), chains, sets, set elements and
ct helpers added or deleted by name, a base chain's policy changed in place. Kept rules keep their
handles, so their counters keep counting; all of it is still one transaction.

Set members: elements the policy declares carry the comment names.NFT_DECLARED_ELEMENT. An apply
adds the declared elements that are missing and deletes declared ones the file no longer has;
members without that comment (added by `ctkit set add` or fail2ban) are left alone.

Where nft cannot change a thing in place (a base chain's type, hook or priority; a set's type, flags
or timeout; a ct helper or timeout object's content; a ct timeout added, which only nft syntax carries
whole, or removed, which libnftables 1.0.6 aborts on in JSON), the batch is the whole-table replace of
kernel.apply, and the plan says why.
"""
from __future__ import annotations

import hashlib
import json
from collections import defaultdict, deque
from dataclasses import dataclass, field
from typing import Any

from ctkit import names
from ctkit.audit.drift import SHOWN_MEMBERS, longest_in_order, members_text
from ctkit.backends.base import CREATE, INCREMENTAL, NONE, REPLACE, Pending, PlanItem
from ctkit.backends.nft import text as nft_text
from ctkit.backends.nft.normal import (
    canonical_chain,
    canonical_helper,
    canonical_member,
    canonical_rule,
    canonical_set,
    element_value,
    is_declared,
)
from ctkit.backends.nft.table import FAMILY
from ctkit.backends.nft.view import chain_text, rule_text
from ctkit.compile import ir

_OBJECTS = ("ct helper", "ct timeout")


@dataclass
class _State:
    """ctkit's table, from the compiled document or from the kernel's listing."""
    chains: dict[str, dict] = field(default_factory=dict)
    sets: dict[str, dict] = field(default_factory=dict)  # without their elements
    elements: dict[str, list] = field(default_factory=lambda: defaultdict(list))
    objects: dict[tuple[str, str], dict] = field(default_factory=dict)  # (kind, name) -> body
    rules: dict[str, list[dict]] = field(default_factory=lambda: defaultdict(list))  # chain -> rules in order


def _state(items: list[dict]) -> _State:
    st = _State()
    for item in items:
        if "add" in item:
            item = item["add"]
        (kind, body), = item.items()
        if kind == "chain":
            st.chains[body["name"]] = body
        elif kind == "set":
            st.sets[body["name"]] = {k: v for k, v in body.items() if k != "elem"}
            st.elements[body["name"]].extend(body.get("elem", []))
        elif kind == "element":
            st.elements[body["name"]].extend(body["elem"])
        elif kind in _OBJECTS:
            st.objects[(kind, body["name"])] = body
        elif kind == "rule":
            st.rules[body["chain"]].append(body)
    return st


# ---------------------------------------------------------------- canonical forms

def _object(kind: str, body: dict) -> tuple:
    if kind == "ct timeout":
        return (body.get("protocol"), body.get("l3proto"), tuple(sorted(body.get("policy", {}).items())))
    return canonical_helper(body)


def _rule_key(rule: dict) -> tuple:
    return (rule.get("comment"), canonical_rule(rule.get("expr", [])))


def fingerprint(st: _State | None) -> str:
    """ctkit's table without counters, handles and set members: what a concurrent change would alter."""
    if st is None:
        return "absent"
    data = {"chains": {n: canonical_chain(c) for n, c in sorted(st.chains.items())},
            "sets": {n: canonical_set(s) for n, s in sorted(st.sets.items())},
            "objects": sorted((k, n, _object(k, b)) for (k, n), b in st.objects.items()),
            "rules": {c: [_rule_key(r) for r in rs] for c, rs in sorted(st.rules.items())}}
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()


# ------------------------------------------------------------------------ diff

def _ident(table: str, **more: Any) -> dict:
    return {"family": FAMILY, "table": table, **more}


def _value_text(values: list) -> str:
    return members_text([nft_text.value(v) for v in values[:SHOWN_MEMBERS]], len(values))


class _Diff:
    def __init__(self, plan: ir.Plan, want: _State, have: _State) -> None:
        self.table = plan.table.name
        self.want, self.have = want, have
        self.items: list[PlanItem] = []
        self.reasons: list[str] = []
        self.first: list[dict] = []  # objects, sets, elements, chains: before the rules that use them
        self.deletes: list[dict] = []  # rule deletes
        self.adds: list[dict] = []  # rule inserts and appends
        self.last: list[dict] = []  # then chains, sets, objects no rule uses any more, in that order
        self.last_sets: list[dict] = []
        self.last_objects: list[dict] = []
        self.toggles = {names.nft_toggle_set(t.name): t.name for t in plan.table.toggles}
        self.origins: dict[str, str] = {r.id: r.origin for c in plan.table.chains for r in c.rules}
        self.origins.update({f"chain {c.name}": c.origin for c in plan.table.chains if c.origin})
        self.origins.update({f"set {s.name}": s.origin for s in plan.table.sets})

    def item(self, kind: str, action: str, subject: str, before: str | None = None, after: str | None = None,
             rule_id: str | None = None) -> None:
        origin = None if action == "remove" else self.origins.get(rule_id or subject)  # gone from the file
        self.items.append(PlanItem(kind, action, subject, before, after, origin))

    # --------------------------------------------------------------- objects

    def objects(self) -> None:
        for key, body in self.want.objects.items():
            kind, name = key
            old = self.have.objects.get(key)
            if old is None:
                self.item("object", "add", f"{kind} {name}", None, json.dumps(_object(kind, body)))
                if kind == "ct timeout":
                    self.reasons.append(f"a new ct timeout object ({name}) is sent in nft syntax, as a whole table")
                self.first.append({"add": {kind: body}})
            elif _object(kind, old) != _object(kind, body):
                self.item("object", "change", f"{kind} {name}", json.dumps(_object(kind, old)),
                          json.dumps(_object(kind, body)))
                self.reasons.append(f"{kind} {name} changed: nft cannot change an object in place")
        for key, body in self.have.objects.items():
            if key not in self.want.objects:
                kind, name = key
                self.item("object", "remove", f"{kind} {name}", json.dumps(_object(kind, body)))
                if kind == "ct timeout":  # libnftables 1.0.6 aborts (an assertion) on this delete in JSON
                    self.reasons.append(f"ct timeout {name} goes, and libnftables cannot delete one from JSON")
                self.last_objects.append({"delete": {kind: _ident(self.table, name=name)}})

    # ------------------------------------------------------------------ sets

    def sets(self) -> None:
        for name, body in self.want.sets.items():
            old = self.have.sets.get(name)
            elements = self.want.elements.get(name, [])
            if name in self.toggles:
                self.toggle(name, old is not None, elements)
                continue
            subject = f"set {name}"
            if old is None:
                self.item("set", "add", subject, None, f"{{ {_value_text(elements)} }}" if elements else "{}")
                self.first.append({"add": {"set": body}})
                if elements:
                    self.first.append({"add": {"element": _ident(self.table, name=name, elem=elements)}})
            elif canonical_set(old) != canonical_set(body):
                self.item("set", "change", subject, json.dumps(canonical_set(old)), json.dumps(canonical_set(body)))
                self.reasons.append(f"set {name}'s type, flags or timeout changed: nft cannot change them in place "
                                    "(its members are reset to the declared ones)")
            else:
                self.members(name, elements)
        for name in self.have.sets:
            if name not in self.want.sets:
                self.item("set", "remove", f"set {name}")
                self.last_sets.append({"delete": {"set": _ident(self.table, name=name)}})

    def members(self, name: str, wanted: list) -> None:
        live = {canonical_member(element_value(e)): e for e in self.have.elements.get(name, [])}
        declared = {c for c, e in live.items() if is_declared(e)}
        want = {canonical_member(element_value(e)): e for e in wanted}
        ident = _ident(self.table, name=name)
        added = [e for c, e in want.items() if c not in declared]
        unmarked = [element_value(live[c]) for c, e in want.items() if c in live and c not in declared]
        gone = [element_value(live[c]) for c in declared if c not in want]
        if unmarked:  # a member added at run time that the file now declares: re-added with the mark
            self.first.append({"delete": {"element": dict(ident, elem=unmarked)}})
        if gone:
            self.item("elements", "remove", f"set {name}", _value_text(gone))
            self.first.append({"delete": {"element": dict(ident, elem=gone)}})
        if added:
            self.item("elements", "add", f"set {name}", None, _value_text([element_value(e) for e in added]))
            self.first.append({"add": {"element": dict(ident, elem=added)}})

    def runtime_members(self) -> list[dict]:
        """Members added at run time to sets whose declaration stays, as commands that put them back after
        a whole-table replace (with what is left of their timeouts)."""
        out = []
        for name, body in self.want.sets.items():
            old = self.have.sets.get(name)
            if name in self.toggles or old is None or canonical_set(old) != canonical_set(body):
                continue
            keep = []
            for e in self.have.elements.get(name, []):
                if is_declared(e):
                    continue
                if isinstance(e, dict) and "elem" in e:
                    left = e["elem"].get("expires", e["elem"].get("timeout"))
                    keep.append({"elem": {"val": e["elem"]["val"], "timeout": left}} if left else e["elem"]["val"])
                else:
                    keep.append(e)
            if keep:
                out.append({"add": {"element": _ident(self.table, name=name, elem=keep)}})
        return out

    def toggle(self, set_name: str, exists: bool, wanted: list) -> None:
        from ctkit.backends.nft.table import toggle_element_commands
        name = self.toggles[set_name]
        on, was = bool(wanted), bool(self.have.elements.get(set_name))
        if not exists:
            self.first.append({"add": {"set": self.want.sets[set_name]}})
            self.first += [c for c in toggle_element_commands(self.table, name, on) if "flush" not in c]
            self.item("toggle", "add", f"toggle {name}", None, "on" if on else "off")
        elif on != was:
            self.first += toggle_element_commands(self.table, name, on)
            self.item("toggle", "change", f"toggle {name}", "on" if was else "off", "on" if on else "off")

    # ---------------------------------------------------------------- chains

    def chains(self) -> None:
        for name, body in self.want.chains.items():
            old = self.have.chains.get(name)
            if old is None:
                if name != names.NFT_TOGGLE_CHAIN:
                    self.item("chain", "add", f"chain {name}", None, chain_text(body))
                self.first.append({"add": {"chain": body}})
            elif canonical_chain(old) != canonical_chain(body):
                self.item("chain", "change", f"chain {name}", chain_text(old), chain_text(body))
                if canonical_chain(old)[:3] == canonical_chain(body)[:3]:
                    self.first.append({"add": {"chain": body}})  # the policy alone changes in place
                else:
                    self.reasons.append(f"chain {name}'s type, hook or priority changed: nft cannot change it "
                                        "in place")
            self.rules(name, self.want.rules.get(name, []), self.have.rules.get(name, []))
        for name, body in self.have.chains.items():
            if name not in self.want.chains:
                self.item("chain", "remove", f"chain {name}", chain_text(body))
                for r in self.have.rules.get(name, []):
                    self.rule_item("remove", name, r, None)
                    self.deletes.append({"delete": {"rule": _ident(self.table, chain=name, handle=r["handle"])}})
                self.last.append({"delete": {"chain": _ident(self.table, name=name)}})

    def rule_item(self, action: str, chain: str, before: dict | None, after: dict | None) -> None:
        comment = (after or before or {}).get("comment")
        if chain == names.NFT_TOGGLE_CHAIN:
            marker = names.parse_toggle_comment(comment or "")
            known = marker is not None and any(i.subject == f"toggle {marker[0]}" for i in self.items)
            if marker is not None and action in ("change", "add") and not known:
                self.item("toggle", "change" if before else "add", f"toggle {marker[0]}",
                          before and before.get("comment"), comment)
            return
        rid = names.rule_id(comment)
        self.item("rule", action, f"{chain}/{rid or '(no ctkit comment)'}",
                  before and rule_text(before), after and rule_text(after), rid)

    def rules(self, chain: str, want: list[dict], have: list[dict]) -> None:
        """Align the chain's rules by what they do (not by comment: an unnamed rule's id is its position,
        and it moves when a rule is inserted above it). The longest run that keeps its order stays where
        it is; a kept rule whose comment changed is replaced in place, a moved one deleted and inserted,
        both with their counters carried over."""
        slots: dict[tuple, deque] = defaultdict(deque)
        for hi, h in enumerate(have):
            slots[canonical_rule(h.get("expr", []))].append(hi)
        pairs = []
        for wi, w in enumerate(want if slots else ()):  # a new chain: no rule of it to pair
            q = slots.get(canonical_rule(w.get("expr", [])))
            if q:
                pairs.append((wi, q.popleft()))
        in_order = longest_in_order([hi for _, hi in pairs])
        kept = {wi: hi for k, (wi, hi) in enumerate(pairs) if k in in_order}
        moved = {wi: hi for k, (wi, hi) in enumerate(pairs) if k not in in_order}
        # libnftables 1.0.6 (Debian 12) aborts the whole process on a `replace rule` whose rule has an
        # anonymous interval set (evaluate.c interval_set_eval: "BUG: unhandled op 2"): such a rule whose
        # comment changed is deleted and inserted at its place instead, its counters carried the same way
        recommented = {wi for wi, hi in kept.items()
                       if want[wi].get("comment") != have[hi].get("comment") and _has_interval_set(want[wi])}
        moved.update({wi: kept.pop(wi) for wi in recommented})
        kept_have = set(kept.values())
        for wi, hi in kept.items():
            if want[wi].get("comment") != have[hi].get("comment"):
                body = _with_counters(want[wi], have[hi], handle=have[hi]["handle"])
                self.adds.append({"replace": {"rule": body}})
                if chain == names.NFT_TOGGLE_CHAIN:  # a toggle's marker: the policy file's value changed
                    self.rule_item("change", chain, have[hi], want[wi])
                    continue
                self.item("rule", "change", f"{chain}/{names.rule_id(want[wi].get('comment'))}",
                          f"comment {json.dumps(have[hi].get('comment'))}",
                          f"comment {json.dumps(want[wi].get('comment'))}", names.rule_id(want[wi].get("comment")))
        gone = [hi for hi in range(len(have)) if hi not in kept_have]
        for hi in gone:
            self.deletes.append({"delete": {"rule": _ident(self.table, chain=chain, handle=have[hi]["handle"])}})
        next_kept = None
        anchors: dict[int, int | None] = {}
        for wi in range(len(want) - 1, -1, -1):  # each new rule goes before the next kept one
            if wi in kept:
                next_kept = have[kept[wi]]["handle"]
            else:
                anchors[wi] = next_kept
        for wi in sorted(anchors):
            body = _with_counters(want[wi], have[moved[wi]]) if wi in moved else dict(want[wi])
            if anchors[wi] is None:
                self.adds.append({"add": {"rule": body}})
            else:
                self.adds.append({"insert": {"rule": dict(body, handle=anchors[wi])}})
        for wi, hi in moved.items():
            rid = names.rule_id(want[wi].get("comment"))
            if wi in recommented:
                self.item("rule", "change", f"{chain}/{rid}", f"comment {json.dumps(have[hi].get('comment'))}",
                          f"comment {json.dumps(want[wi].get('comment'))}", rid)
                continue
            self.item("rule", "move", f"{chain}/{rid}", rule_text(have[hi]), rule_text(want[wi]), rid)
        moved_have = set(moved.values())
        self.rule_items(chain, [have[hi] for hi in gone if hi not in moved_have],
                        [want[wi] for wi in sorted(anchors) if wi not in moved])

    def rule_items(self, chain: str, gone: list[dict], new: list[dict]) -> None:
        """Name the differences by policy rule: one id on both sides is a change, the rest are adds and
        removes."""
        by_id: dict[str | None, deque] = defaultdict(deque)
        for r in gone:
            by_id[names.rule_id(r.get("comment"))].append(r)
        for w in new:
            rid = names.rule_id(w.get("comment"))
            named = rid is not None and not _positional(rid)  # "input[3]" is a position, not a name
            old = by_id[rid].popleft() if named and by_id.get(rid) else None
            self.rule_item("add" if old is None else "change", chain, old, w)
        for rest in by_id.values():
            for r in rest:
                self.rule_item("remove", chain, r, None)


def _positional(rule_id: str) -> bool:
    return rule_id.endswith("]")


def _has_interval_set(value: Any) -> bool:
    """Whether a rule (or part of one) holds an anonymous set with a prefix or a range in it."""
    if isinstance(value, dict):
        members = value.get("set")
        if isinstance(members, list) and any(isinstance(m, dict) and ("prefix" in m or "range" in m) for m in members):
            return True
        return any(_has_interval_set(v) for v in value.values())
    if isinstance(value, list):
        return any(_has_interval_set(v) for v in value)
    return False


def _with_counters(body: dict, live: dict, **more: Any) -> dict:
    """`body` with the live rule's counter values: a rule that moves or is renamed keeps counting."""
    values = iter([e["counter"] for e in live.get("expr", []) if isinstance(e.get("counter"), dict)])
    expr = [{"counter": next(values, None)} if "counter" in e else e for e in body.get("expr", [])]
    return dict(body, expr=expr, **more)


def changes(plan: ir.Plan, document: dict, live: list[dict] | None) -> Pending:
    """The plan of an apply of `document` (generate's output for `plan`) over `live` (list_table with
    handles, None when the table is absent). Pending.work: INCREMENTAL, the batch for kernel.apply_batch;
    REPLACE, the commands that put run-time set members back after the whole-table replace."""
    where = f"table {FAMILY} {plan.table.name}"
    want = _state(document["nftables"])
    if live is None:
        d = _Diff(plan, want, _State())
        d.objects()
        d.sets()
        d.chains()
        return Pending(where, tuple(d.items), CREATE, "", fingerprint(None), None)
    have = _state(live)
    d = _Diff(plan, want, have)
    d.objects()
    d.sets()
    d.chains()
    print_ = fingerprint(have)
    if d.reasons:
        return Pending(where, tuple(d.items), REPLACE, "; ".join(dict.fromkeys(d.reasons)), print_,
                       d.runtime_members())
    batch = d.first + d.deletes + d.adds + d.last + d.last_sets + d.last_objects
    if not batch:
        return Pending(where, (), NONE, "", print_, None)
    return Pending(where, tuple(d.items), INCREMENTAL, "", print_, {"nftables": batch})
