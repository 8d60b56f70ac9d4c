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

from ctkit.importer.idioms import MERGE_KEY, LeftOut, NotExpressed, Sections
from ctkit.netfilter import FAMILY_ONLY_PROTOCOLS

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
    """An address that pins the family: a negated list ({"not": ...}) does not (it takes the other family whole)."""
    return any(k in item and not isinstance(item[k], dict) for k in ADDRESS_KEYS)


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
    if families == {"inet"}:  # nft: one list already, each rule with the family it had
        return list(v4)
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
    v4 = [e for f, e in pairs if f in ("ipv4", "inet")]
    v6 = [e for f, e in pairs if f == "ipv6"]
    entries, seen = [], set()
    for e in merge(v4, v6, families):
        e = {k: v for k, v in e.items() if k != MERGE_KEY}
        if _key(e) not in seen:  # nft writes a rule per family and per port field: one entry each
            seen.add(_key(e))
            entries.append(e)
    return _unique_names(entries)


def _protocols(rule: dict) -> list[str]:
    return list(rule.get("protocols", [rule["protocol"]] if "protocol" in rule else []))


def _merged(a: dict, b: dict) -> dict | None:
    """One rule for two adjacent rules ctkit wrote for one policy rule (its backends split a rule by
    protocol, by family and by address family), when one rule says exactly their union; else None."""
    keys = set(a) | set(b)
    differ = {k for k in keys if a.get(k) != b.get(k)}
    if not differ:
        return a
    if differ == {"family"} and {a.get("family"), b.get("family")} == {"ipv4", "ipv6"}:
        return {k: v for k, v in a.items() if k != "family"}  # the same rule for each family
    if differ == {"log", "action"} | ({"reject_with"} & keys) | ({"queue"} & keys) and "log" in a \
            and "limit" in a["log"] and "action" not in a and "log" not in b:
        return {**b, "log": a["log"]}  # a log with its own limit: ctkit writes it as a rule before the rule
    statements = {"log", "ct_mark_set", "ct_label_set", "mark_set", "connmark", "mss", "dscp", "action",
                  "reject_with", "queue", "jump", "goto"}
    if differ <= statements and "action" not in a and "jump" not in a and "goto" not in a \
            and not any(k in a and k in b for k in differ):
        return {**a, **{k: b[k] for k in b if k not in a}}  # iptables: one target per rule, ctkit split them
    for k in ("dport", "sport", "length"):
        if differ == {k} and k in a and k in b:
            la = a[k] if isinstance(a[k], list) else [a[k]]
            lb = b[k] if isinstance(b[k], list) else [b[k]]
            return {**a, k: la + [x for x in lb if x not in la]}
    protocol_keys, family_keys = {"protocol", "protocols"}, {"family"}
    if differ <= protocol_keys | family_keys and (differ & protocol_keys):
        pa, pb = _protocols(a), _protocols(b)
        if not pa or not pb:
            return None
        if "family" in differ:  # only icmp (IPv4) beside icmpv6 (IPv6): each exists in its family alone
            fams = {a.get("family"), b.get("family")}
            if fams != {"ipv4", "ipv6"} or any(FAMILY_ONLY_PROTOCOLS.get(p) != r.get("family")
                                               for r, ps in ((a, pa), (b, pb)) for p in ps):
                return None
        out = {k: v for k, v in a.items() if k not in protocol_keys | ({"family"} if "family" in differ else set())}
        merged = pa + [p for p in pb if p not in pa]
        return _put_protocols(out, merged, a)
    for addr in ("saddr", "daddr"):
        if differ <= {addr, "family"} and addr in a and addr in b:
            va, vb = a[addr], b[addr]
            negated = isinstance(va, dict)
            if negated != isinstance(vb, dict):
                return None  # one family's rule excludes, the other's includes: two rules
            va, vb = (va["not"], vb["not"]) if negated else (va, vb)
            la = va if isinstance(va, list) else [va]
            lb = vb if isinstance(vb, list) else [vb]
            out = {k: v for k, v in a.items() if k != "family"}
            merged = la + [x for x in lb if x not in la]
            out[addr] = {"not": merged} if negated else merged
            return out
    return None


def _put_protocols(out: dict, protocols: list[str], like: dict) -> dict:
    items = list(out.items())
    pos = next((i for i, k in enumerate(like) if k in ("protocol", "protocols")), len(items))
    pos = min(pos, len(items))
    value = ("protocols", protocols) if len(protocols) > 1 else ("protocol", protocols[0])
    return dict(items[:pos] + [value] + items[pos:])


def _merge_split(rules: list[dict]) -> list[dict]:
    out: list[dict] = []
    for r in rules:
        out.append(r)
        while len(out) > 1 and out[-1].get(MERGE_KEY) is not None and out[-2].get(MERGE_KEY) == out[-1].get(MERGE_KEY):
            m = _merged(out[-2], out[-1])
            if m is None:
                break
            out[-2:] = [m]
    return [{k: v for k, v in r.items() if k != MERGE_KEY} for r in out]


def _unique_rule_names(chains: dict, notes: list[str]) -> None:
    """Rule names are unique across chains: a name that still repeats (rules that could not be merged
    back into one) gets -2, -3 ..."""
    seen: dict[str, int] = {}
    for name, chain in chains.items():
        for i, r in enumerate(chain["rules"]):
            n = r.get("name")
            if n is None:
                continue
            seen[n] = seen.get(n, 0) + 1
            if seen[n] > 1:
                new = f"{n[:28]}-{seen[n]}"
                chain["rules"][i] = {"name": new, **{k: v for k, v in r.items() if k != "name"}}
                notes.append(f"chain {name}: rule {n} stands for several rules: this one is {new}")


def _chains(s: Sections) -> tuple[dict, list[str]]:
    notes: list[str] = []
    names: list[str] = []
    for fam in ("ipv4", "ipv6", "inet"):
        for table in (s.mangle.get(fam, {}), s.chains.get(fam, {})):
            for n in table:
                if n not in names:
                    names.append(n)
    first_seen = {n: i for i, n in enumerate(names)}
    names.sort(key=lambda n: (ORDER.index(n) if n in ORDER else len(ORDER), first_seen[n]))
    chains: dict[str, dict] = {}
    for name in names:
        per = {fam: s.mangle.get(fam, {}).get(name, []) + s.chains.get(fam, {}).get(name, [])
               for fam in ("ipv4", "ipv6", "inet")}
        rules = _merge_split(merge(per["inet"] if "inet" in s.families else per["ipv4"], per["ipv6"], s.families))
        chain: dict[str, Any] = {}
        if name in ORDER:
            pols = {fam: s.policies.get(fam, {}).get(name, "accept") for fam in s.families}
            first = pols.get("ipv4", pols.get("ipv6", pols.get("inet", "accept")))
            if len(set(pols.values())) > 1:
                rules.append({"family": "ipv6", "action": pols["ipv6"],
                              "comment": "the IPv6 chain's policy (ip6tables-save)"})
                notes.append(f"chain {name}: the IPv4 and IPv6 policies differ: the IPv6 one is its last rule")
            if first != "accept":
                chain["policy"] = first
                if len(s.families) == 1 and "inet" not in s.families:  # the other family's chain was left as it was: empty, accept
                    other = "ipv6" if "ipv4" in s.families else "ipv4"
                    rules.insert(0, {"family": other, "action": "accept",
                                     "comment": f"no {'ip6tables' if other == 'ipv6' else 'iptables'} rules "
                                                "were imported: this family passes"})
            if not rules and first == "accept":
                continue  # an empty accept chain is what no chain means
        chain["rules"] = rules
        chains[name] = chain
    _unique_rule_names(chains, notes)
    return chains, notes


def document(s: Sections, sources: tuple[str, ...], table: str, kind: str = "iptables-save") -> Imported:
    """The policy document of what was read; `kind` names the input in the header."""
    doc: dict[str, Any] = {"version": 1, "table": table,
                           "description": f"Imported by ctkit import from {kind} output ({', '.join(sources)})."}
    for key, pairs in (("notrack", s.notrack), ("helpers", s.helpers), ("zones", s.zones),
                       ("timeouts", s.timeouts), ("nat", s.nat)):
        entries = _section(pairs, s.families)
        if entries:
            doc[key] = entries
    if s.sets:
        doc["sets"] = s.sets
    if s.toggles:
        doc["toggles"] = s.toggles
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
