"""Sections per family -> one policy document, its header, and the text written (YAML or JSON).

IPv4 and IPv6 rules never see each other's packets, so any interleaving that keeps each family's order
means the same: the two lists are merged on their longest common subsequence, a rule both families have
is written once, and a rule of one family without addresses gets `family`. A chain whose policy differs
between the families keeps the IPv4 one and ends with a rule that gives the IPv6 packets theirs.
"""
from __future__ import annotations

import difflib
import json
from dataclasses import dataclass
from typing import Any

import yaml

from ctkit.importer.idioms import LeftOut, NotExpressed, Sections

ORDER = ("prerouting", "input", "forward", "output", "postrouting")
ADDRESS_KEYS = ("saddr", "daddr", "peers", "to_addr")


@dataclass(frozen=True)
class Imported:
    """An import's result: the policy document and what could not be brought over."""
    document: dict
    sources: tuple[str, ...]
    kind: str  # iptables-save
    expressed: int
    not_expressed: tuple[NotExpressed, ...]
    left_out: tuple[LeftOut, ...]
    notes: tuple[str, ...]

    @property
    def exit_code(self) -> int:
        return 1 if self.not_expressed else 0

    def header(self) -> list[str]:
        out = [f"ctkit policy written by `ctkit import` from {self.kind} output: {', '.join(self.sources)}.",
               f"{self.expressed} rules expressed, {len(self.not_expressed)} not."]
        if self.not_expressed:
            out.append("Not expressed (the policy below lacks them):")
            for n in self.not_expressed:
                out.append(f"  {n.source}:{n.line}: {n.text}")
                out.append(f"    {n.reason}")
        if self.left_out:
            out.append("Left out, not ctkit's to own (`--include CHAIN` imports a chain anyway):")
            for x in self.left_out:
                out.append(f"  {x.source}:{x.line}: {x.owner}: {x.what}")
        for note in self.notes:
            out.append(f"Note: {note}")
        return out

    def render(self, fmt: str) -> str:
        if fmt == "json":
            return json.dumps(self.document, indent=2) + "\n"
        head = "".join(f"# {line}\n" if line else "#\n" for line in self.header())
        return head + yaml.safe_dump(self.document, sort_keys=False, allow_unicode=True, width=120)

    def as_dict(self) -> dict[str, Any]:
        return {"sources": list(self.sources), "kind": self.kind, "expressed": self.expressed,
                "not_expressed": [n.as_dict() for n in self.not_expressed],
                "left_out": [x.as_dict() for x in self.left_out], "notes": list(self.notes),
                "policy": self.document}


def _key(item: dict) -> str:
    return json.dumps(item, sort_keys=True)


def _has_address(item: dict) -> bool:
    return any(k in item for k in ADDRESS_KEYS)


def _tag(item: dict, family: str | None) -> dict:
    if family is None or _has_address(item) or "family" in item:
        return item
    out = dict(item)
    # family goes first after a name: easier to read
    keys = list(out)
    pos = 1 if keys and keys[0] == "name" else 0
    items = list(out.items())
    items.insert(pos, ("family", family))
    return dict(items)


def merge(v4: list[dict], v6: list[dict], families: set) -> list[dict]:
    """One list from each family's, in an order that keeps both; common items once, without family."""
    if families == {"ipv4"}:
        return [_tag(x, "ipv4") for x in v4]
    if families == {"ipv6"}:
        return [_tag(x, "ipv6") for x in v6]
    a, b = [_key(x) for x in v4], [_key(x) for x in v6]
    out: list[dict] = []
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(a=a, b=b, autojunk=False).get_opcodes():
        if op == "equal":
            out += v4[i1:i2]
        else:
            out += [_tag(x, "ipv4") for x in v4[i1:i2]] + [_tag(x, "ipv6") for x in v6[j1:j2]]
    return out


def _unique_names(entries: list[dict]) -> list[dict]:
    seen: dict[str, int] = {}
    out = []
    for e in entries:
        name = e.get("name")
        if name is None:
            out.append(e)
            continue
        seen[name] = seen.get(name, 0) + 1
        if seen[name] > 1:
            e = {**e, "name": f"{name[:28]}-{seen[name]}"}
        out.append(e)
    return out


def _section(pairs: list[tuple[str, dict]], families: set) -> list[dict]:
    v4 = [e for f, e in pairs if f == "ipv4"]
    v6 = [e for f, e in pairs if f == "ipv6"]
    return _unique_names(merge(v4, v6, families))


def _chains(s: Sections) -> tuple[dict, list[str]]:
    notes: list[str] = []
    names: list[str] = []
    for fam in ("ipv4", "ipv6"):
        for table in (s.mangle.get(fam, {}), s.chains.get(fam, {})):
            for n in table:
                if n not in names:
                    names.append(n)
    first_seen = {n: i for i, n in enumerate(names)}
    names.sort(key=lambda n: (ORDER.index(n) if n in ORDER else len(ORDER), first_seen[n]))
    chains: dict[str, dict] = {}
    for name in names:
        per = {fam: s.mangle.get(fam, {}).get(name, []) + s.chains.get(fam, {}).get(name, [])
               for fam in ("ipv4", "ipv6")}
        rules = merge(per["ipv4"], per["ipv6"], s.families)
        chain: dict[str, Any] = {}
        if name in ORDER:
            pols = {fam: s.policies.get(fam, {}).get(name, "accept") for fam in s.families}
            first = pols.get("ipv4", pols.get("ipv6", "accept"))
            if len(set(pols.values())) > 1:
                rules.append({"family": "ipv6", "action": pols["ipv6"],
                              "comment": "the IPv6 chain's policy (ip6tables-save)"})
                notes.append(f"chain {name}: the IPv4 and IPv6 policies differ: the IPv6 one is its last rule")
            if first != "accept":
                chain["policy"] = first
                if len(s.families) == 1:  # the other family's chain was left as it was: empty, accept
                    other = "ipv6" if "ipv4" in s.families else "ipv4"
                    rules.insert(0, {"family": other, "action": "accept",
                                     "comment": f"no {'ip6tables' if other == 'ipv6' else 'iptables'} rules "
                                                "were imported: this family passes"})
            if not rules and first == "accept":
                continue  # an empty accept chain is what no chain means
        chain["rules"] = rules
        chains[name] = chain
    return chains, notes


def document(s: Sections, sources: tuple[str, ...], table: str, kind: str = "iptables-save") -> Imported:
    doc: dict[str, Any] = {"version": 1, "table": table,
                           "description": f"Imported by ctkit import from {kind} output ({', '.join(sources)})."}
    for key, pairs in (("notrack", s.notrack), ("helpers", s.helpers), ("zones", s.zones), ("nat", s.nat)):
        entries = _section(pairs, s.families)
        if entries:
            doc[key] = entries
    chains, notes = _chains(s)
    if chains:
        doc["chains"] = chains
    notes = list(s.notes) + notes
    if s.families == {"ipv4"}:
        notes.append("the input had IPv4 rules only: entries without addresses say family: ipv4, and a chain "
                     "that drops first accepts IPv6 (as the empty ip6tables chain did); give ip6tables-save "
                     "output too, or edit both to cover IPv6")
    elif s.families == {"ipv6"}:
        notes.append("the input had IPv6 rules only: entries without addresses say family: ipv6, and a chain "
                     "that drops first accepts IPv4 (as the empty iptables chain did)")
    order = {src: i for i, src in enumerate(sources)}
    not_expressed = sorted(s.not_expressed, key=lambda n: (order.get(n.source, len(order)), n.line))
    left_out = sorted(s.left_out, key=lambda x: (order.get(x.source, len(order)), x.line))
    return Imported(doc, sources, kind, s.expressed, tuple(not_expressed), tuple(left_out), tuple(notes))
