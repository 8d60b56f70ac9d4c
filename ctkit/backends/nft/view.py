"""TableViews of ctkit's nft table: from the compiled document and from the kernel's listing."""
from __future__ import annotations

import json

from ctkit import names
from ctkit.audit.drift import RuleView, SetView, TableView
from ctkit.backends.nft import normal
from ctkit.backends.nft import text as nft_text
from ctkit.errors import CompileError

rule_id = names.rule_id
TOGGLE_SET = names.NFT_TOGGLE_SET_PREFIX


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
    decls: dict[str, dict] = {}
    declared: dict[str, dict[str, str]] = {}
    for item in items:
        if "add" in item:
            item = item["add"]
        if "set" in item or "element" in item:
            body = item.get("set") or item["element"]
            if body["name"].startswith(TOGGLE_SET):
                continue  # a toggle's switch: its state is the toggles' finding, not drift
            if "set" in item:
                decls[body["name"]] = body
            members = declared.setdefault(body["name"], {})
            for e in body.get("elem", []):
                if normal.is_declared(e):
                    val = normal.element_value(e)
                    members[normal.canonical_member(val)] = nft_text.value(val)
        elif "chain" in item:
            c = item["chain"]
            chains[c["name"]] = normal.canonical_chain(c)
            texts[c["name"]] = chain_text(c)
            rules.setdefault(c["name"], [])
        elif "ct helper" in item:
            o = item["ct helper"]
            objects[o["name"]] = normal.canonical_helper(o)
        elif "rule" in item:
            r = item["rule"]
            rules.setdefault(r["chain"], []).append(
                RuleView(r["chain"], rule_id(r.get("comment"), known_ids), normal.canonical_rule(r.get("expr", [])),
                         r, rule_text))
    sets = {name: SetView(normal.canonical_set(body), _set_text(body), declared.get(name, {}))
            for name, body in decls.items()}
    return TableView(True, chains, rules, objects, texts, sets=sets)


def _set_text(body: dict) -> str:
    kind = body["type"] if isinstance(body["type"], str) else " . ".join(body["type"])
    flags = f" flags {','.join(sorted(body['flags']))}" if body.get("flags") else ""
    timeout = f" timeout {body['timeout']}s" if "timeout" in body else ""
    return f"type {kind}{flags}{timeout}"


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
