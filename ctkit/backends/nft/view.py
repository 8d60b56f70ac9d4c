"""TableViews of ctkit's nft table: from the compiled document and from the kernel's listing."""
from __future__ import annotations

import json

from ctkit import names
from ctkit.audit.drift import RuleView, TableView
from ctkit.backends.nft import text as nft_text
from ctkit.backends.nft.normal import canonical_chain, canonical_helper, canonical_rule
from ctkit.errors import CompileError

rule_id = names.rule_id


def chain_text(c: dict) -> str:
    if "hook" not in c:
        return "user chain"
    return f"type {c.get('type')} hook {c.get('hook')} priority {c.get('prio')}; policy {c.get('policy', 'accept')}"


def rule_text(rule: dict) -> str:
    try:
        return " ".join(nft_text.expr(e) for e in rule.get("expr", []))
    except CompileError:  # a form ctkit never writes (added by hand): show it raw
        return json.dumps(rule.get("expr"))


def view(items: list[dict] | None, known_ids: set[str]) -> TableView:
    """Build a view from libnftables JSON objects: `add` commands or `list` output alike."""
    if items is None:
        return TableView(False)
    chains, rules, objects, texts = {}, {}, {}, {}
    for item in items:
        if "add" in item:
            item = item["add"]
        if "chain" in item:
            c = item["chain"]
            chains[c["name"]] = canonical_chain(c)
            texts[c["name"]] = chain_text(c)
            rules.setdefault(c["name"], [])
        elif "ct helper" in item:
            o = item["ct helper"]
            objects[o["name"]] = canonical_helper(o)
        elif "rule" in item:
            r = item["rule"]
            rules.setdefault(r["chain"], []).append(
                RuleView(r["chain"], rule_id(r.get("comment"), known_ids), canonical_rule(r.get("expr", [])),
                         r, rule_text))
    return TableView(True, chains, rules, objects, texts)


def rule_hits(items: list[dict]) -> dict[str, tuple[int, int]]:
    """(packets, bytes) per policy rule id, summed over its kernel rules, from a table listing."""
    hits: dict[str, tuple[int, int]] = {}
    for item in items:
        rule = item.get("rule")
        if not rule or not rule.get("comment"):
            continue
        rid = names.rule_id(rule["comment"])
        counters = [e["counter"] for e in rule.get("expr", []) if isinstance(e.get("counter"), dict)]
        old = hits.get(rid, (0, 0))
        hits[rid] = (old[0] + sum(c.get("packets", 0) for c in counters),
                     old[1] + sum(c.get("bytes", 0) for c in counters))
    return hits
