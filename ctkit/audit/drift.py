"""Ruleset drift: ctkit's table in the kernel against the compiled policy.

The comparison is backend-neutral: each backend's reader turns its desired
output and the kernel's listing into TableViews (rules keyed by the policy
rule id carried in their comment, with a canonical form that ignores how the
kernel re-prints them); compare() names every difference by the policy rule
it belongs to: missing, changed, extra, reordered, and the same for chains
and ct helper objects.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

MISSING_TABLE = "missing-table"


@dataclass(frozen=True)
class RuleView:
    chain: str
    rule_id: str | None  # None: a rule without ctkit's comment (added by hand)
    canon: Any
    raw: Any  # the backend's own form of the rule
    show: Callable[[Any], str] = str  # raw -> text for humans, only run for rules that drifted

    @property
    def text(self) -> str:
        return self.show(self.raw)


@dataclass(frozen=True)
class SetView:
    """A named set as the audit compares it: its declaration, and the members the policy declared
    (canonical text -> text for humans). Members added at run time (`ctkit set add`, fail2ban) are not
    the policy's and are left out."""
    decl: Any
    decl_text: str
    declared: dict[str, str] = field(default_factory=dict)


#: the set members a drift or a plan item lists: a set of a million is told by its first ones and its
#: size (the whole list was a 15 MB line in `ctkit plan` and took most of planning it)
SHOWN_MEMBERS = 32


def members_text(texts: Sequence[str], total: int) -> str:
    """The first SHOWN_MEMBERS of `texts`, and the count when there are more (`total` in all)."""
    shown = ", ".join(texts[:SHOWN_MEMBERS])
    return shown if total <= SHOWN_MEMBERS else f"{shown}, ... ({total} in all)"


@dataclass(frozen=True)
class TableView:
    present: bool
    chains: dict[str, Any] = field(default_factory=dict)  # name -> canonical chain
    rules: dict[str, list[RuleView]] = field(default_factory=dict)  # chain -> rules in order
    objects: dict[str, Any] = field(default_factory=dict)  # helper name -> canonical object
    chain_text: dict[str, str] = field(default_factory=dict)
    #: chain -> JSON pointer of its policy chain, where the view's chain names are not the policy's
    #: (iptables: filter/CTKIT-INPUT is chain input); otherwise origins["chain/<name>"] is used
    chain_origins: dict[str, str] = field(default_factory=dict)
    #: named sets (a backend that does not view them leaves this empty on both sides)
    sets: dict[str, SetView] = field(default_factory=dict)


@dataclass(frozen=True)
class Drift:
    kind: str  # missing | changed | extra | reordered | missing-chain | extra-chain | changed-chain |
    #          missing-object | changed-object | extra-object | missing-table | missing-set | changed-set |
    #          extra-set | missing-members | extra-members
    subject: str  # chain/rule id, chain, or object name
    origin: str | None = None  # JSON pointer of the policy construct
    expected: str | None = None
    actual: str | None = None

    def as_dict(self) -> dict:
        return {"kind": self.kind, "subject": self.subject, "origin": self.origin,
                "expected": self.expected, "actual": self.actual}


def longest_in_order(seq: list[int]) -> set[int]:
    """Indexes (into seq) of one longest increasing subsequence."""
    import bisect
    tails: list[int] = []
    tails_idx: list[int] = []
    prev = [-1] * len(seq)
    for i, v in enumerate(seq):
        k = bisect.bisect_left(tails, v)
        if k == len(tails):
            tails.append(v)
            tails_idx.append(i)
        else:
            tails[k] = v
            tails_idx[k] = i
        prev[i] = tails_idx[k - 1] if k else -1
    out, i = set(), tails_idx[-1] if tails_idx else -1
    while i >= 0:
        out.add(i)
        i = prev[i]
    return out


def _compare_chain(chain: str, want: list[RuleView], have: list[RuleView],
                   origins: dict[str, str]) -> list[Drift]:
    drifts: list[Drift] = []
    used = [False] * len(have)
    pairs: list[tuple[int, int]] = []  # (want index, have index) exact matches
    exact: dict[tuple, list[int]] = {}  # (id, canon) -> live positions, in order
    by_id: dict[str | None, list[int]] = {}
    for hi, h in enumerate(have):
        exact.setdefault((h.rule_id, h.canon), []).append(hi)
        by_id.setdefault(h.rule_id, []).append(hi)
    for wi, w in enumerate(want):
        slots = exact.get((w.rule_id, w.canon))
        if slots:
            hi = slots.pop(0)
            used[hi] = True
            pairs.append((wi, hi))
    matched_w = {wi for wi, _ in pairs}
    # same id, different content: changed
    for wi, w in enumerate(want):
        if wi in matched_w:
            continue
        hi = next((i for i in by_id.get(w.rule_id, ()) if not used[i]), None)
        if hi is None:
            drifts.append(Drift("missing", f"{chain}/{w.rule_id}", origins.get(w.rule_id), w.text, None))
        else:
            used[hi] = True
            drifts.append(Drift("changed", f"{chain}/{w.rule_id}", origins.get(w.rule_id), w.text, have[hi].text))
    for hi, h in enumerate(have):
        if not used[hi]:
            who = h.rule_id if h.rule_id else "(no ctkit comment)"
            drifts.append(Drift("extra", f"{chain}/{who}", origins.get(h.rule_id or ""), None, h.text))
    # exact matches out of order: the ones outside a longest in-order run
    in_order = longest_in_order([hi for _, hi in pairs])
    for k, (wi, hi) in enumerate(pairs):
        if k not in in_order:
            w = want[wi]
            drifts.append(Drift("reordered", f"{chain}/{w.rule_id}", origins.get(w.rule_id),
                                f"position {wi + 1}", f"position {hi + 1}"))
    return drifts


def compare(want: TableView, have: TableView, origins: dict[str, str] | None = None,
            table: str = "ctkit") -> list[Drift]:
    """Every difference between the desired and the live table."""
    origins = origins or {}
    if not have.present:
        return [Drift(MISSING_TABLE, table, None, "policy applied", "table absent: nothing of ctkit is in the kernel")]
    drifts: list[Drift] = []
    for name, obj in want.objects.items():
        if name not in have.objects:
            drifts.append(Drift("missing-object", name, origins.get(f"helper/{name}"), str(obj), None))
        elif have.objects[name] != obj:
            drifts.append(Drift("changed-object", name, origins.get(f"helper/{name}"), str(obj),
                                str(have.objects[name])))
    for name, obj in have.objects.items():
        if name not in want.objects:
            drifts.append(Drift("extra-object", name, None, None, str(obj)))
    drifts += _compare_sets(want.sets, have.sets, origins)
    for name, chain in want.chains.items():
        origin = want.chain_origins.get(name, origins.get(f"chain/{name}"))
        if name not in have.chains:
            drifts.append(Drift("missing-chain", name, origin,
                                want.chain_text.get(name, str(chain)), None))
            continue
        if have.chains[name] != chain:
            drifts.append(Drift("changed-chain", name, origin,
                                want.chain_text.get(name, str(chain)), have.chain_text.get(name, str(have.chains[name]))))
        drifts.extend(_compare_chain(name, want.rules.get(name, []), have.rules.get(name, []), origins))
    for name in have.chains:
        if name not in want.chains:
            drifts.append(Drift("extra-chain", name, None, None, have.chain_text.get(name, str(have.chains[name]))))
    return drifts


def _compare_sets(want: dict[str, SetView], have: dict[str, SetView], origins: dict[str, str]) -> list[Drift]:
    """Sets missing, extra or declared otherwise, and declared members missing or left over (a member the
    policy no longer lists but that still carries the policy's mark)."""
    drifts = []
    for name, s in want.items():
        subject, origin, live = f"set {name}", origins.get(f"set/{name}"), have.get(name)
        if live is None:
            drifts.append(Drift("missing-set", subject, origin, s.decl_text, None))
            continue
        if live.decl != s.decl:
            drifts.append(Drift("changed-set", subject, origin, s.decl_text, live.decl_text))
        gone = [t for k, t in s.declared.items() if k not in live.declared]
        if gone:
            drifts.append(Drift("missing-members", subject, origin, members_text(sorted(gone), len(gone)), None))
        extra = [t for k, t in live.declared.items() if k not in s.declared]
        if extra:
            drifts.append(Drift("extra-members", subject, origin, None, members_text(sorted(extra), len(extra))))
    drifts += [Drift("extra-set", f"set {name}", None, None, s.decl_text) for name, s in have.items() if name not in want]
    return drifts


#: drift kind -> (plan item kind, action): what an apply does about each difference
_PLAN = {"missing": ("rule", "add"), "extra": ("rule", "remove"), "changed": ("rule", "change"),
         "reordered": ("rule", "move"), "missing-chain": ("chain", "add"), "extra-chain": ("chain", "remove"),
         "changed-chain": ("chain", "change"), "missing-object": ("object", "add"),
         "changed-object": ("object", "change"), "extra-object": ("object", "remove"),
         "missing-set": ("set", "add"), "changed-set": ("set", "change"), "extra-set": ("set", "remove"),
         "missing-members": ("elements", "add"), "extra-members": ("elements", "remove")}


def plan_items(drifts: list[Drift], prefix: str = ""):
    """The differences as the plan of an apply (backends/base.PlanItem): the kernel's form before,
    the policy's after."""
    from ctkit.backends.base import PlanItem
    out = []
    for d in drifts:
        if d.kind == MISSING_TABLE:
            continue
        kind, action = _PLAN[d.kind]
        subject = prefix + d.subject if kind == "rule" else f"{kind} {prefix}{d.subject}"
        out.append(PlanItem(kind, action, subject, d.actual, d.expected, d.origin))
    return out
