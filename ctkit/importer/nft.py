"""`nft -j list ruleset` -> the policy's sections (ctkit/importer/idioms.Sections, family "inet").

One table is imported: ctkit's own (`inet <table>`) when it is there, else every ip, ip6 and inet table
that is not another tool's. Each rule's expressions become policy fields as the iptables reader's
matches do; a rule whose statements only exempt from tracking or set a helper, zone or timeout becomes
an entry of that section; nat chains give nat entries; the rest are the policy's chains. Rules of one
policy rule that ctkit wrote apart (either-port rules, the family split, a log with its own limit) carry
their comment's rule id, so document.py merges them back. What has no policy word is listed with the
rule's handle and the reason.
"""
from __future__ import annotations

import re
from typing import Any

from ctkit.importer.idioms import (
    HELPERS,
    MERGE_KEY,
    LeftOut,
    NotExpressed,
    Sections,
    _notrack_name,
    clean_comment,
    own_comment,
)

FOREIGN_TABLES = (("firewalld", re.compile(r"firewalld.*")), ("docker", re.compile(r"docker.*")),
                  ("kube-proxy", re.compile(r"kube-proxy.*")), ("iptables-nft", re.compile(r"(filter|nat|mangle|raw|security)$")))
_PROTOCOLS = {"ipv6-icmp": "icmpv6", "icmpv6": "icmpv6"}
_LEVELS = {"emerg": "emerg", "alert": "alert", "crit": "crit", "err": "err", "warn": "warn", "warning": "warn",
           "notice": "notice", "info": "info", "debug": "debug"}
_REJECT = {"port-unreachable": "port-unreachable", "host-unreachable": "host-unreachable",
           "net-unreachable": "net-unreachable", "admin-prohibited": "admin-prohibited"}
_DSCP: dict = {}  # filled lazily from ctkit.netfilter
#: the mark of a notrack rule not yet grouped into an entry (group_notrack)
PENDING = "pending-notrack"


class Unsaid(Exception):
    """An expression the policy has no word for (the message says which)."""


def _text(x: Any) -> str:
    import json
    return json.dumps(x, separators=(",", ":"))[:200]


def _addr(v: Any) -> str | list:
    if isinstance(v, str):
        return v
    if isinstance(v, dict) and "prefix" in v:
        return f"{v['prefix']['addr']}/{v['prefix']['len']}"
    if isinstance(v, dict) and "set" in v:
        return [_addr(x) for x in v["set"]]
    raise Unsaid(f"address {_text(v)}")


def _ports(v: Any, floor: int = 1) -> int | str | list:
    if isinstance(v, int):
        return v
    if isinstance(v, dict) and "range" in v:
        lo, hi = v["range"]
        return f"{max(lo, floor)}-{hi}"
    if isinstance(v, dict) and "set" in v:
        return [_ports(x, floor) for x in v["set"]]
    raise Unsaid(f"port or length {_text(v)}")


def _names(v: Any) -> list[str]:
    if isinstance(v, str):
        return [v]
    if isinstance(v, list):
        return list(v)
    if isinstance(v, dict) and "set" in v:
        return list(v["set"])
    raise Unsaid(f"value {_text(v)}")


def _negatable(left: Any) -> bool:
    """Whether the policy can say `!=` of this left side: addresses, ports, address types ({"not": ...})."""
    if isinstance(left, dict) and "fib" in left:
        return True
    p = left.get("payload", {}) if isinstance(left, dict) else {}
    return p.get("field") in ("saddr", "daddr", "sport", "dport") and "base" not in p


#: nft's fib address types the policy names
_ADDRESS_TYPES = ("local", "unicast", "multicast", "broadcast")


def _match(m: dict, out: dict, flags: dict) -> None:
    op, left, right = m.get("op"), m.get("left"), m.get("right")
    if op == "!=" and _negatable(left) and not (isinstance(right, str) and right.startswith("@")):
        inner: dict = {}
        _match({"op": "==", "left": left, "right": right}, inner, flags)
        for k, v in inner.items():
            out[k] = {"not": v} if k in ("saddr", "daddr", "sport", "dport", "saddr_type", "daddr_type") else v
        proto = left.get("payload", {}).get("protocol") if isinstance(left, dict) else None
        if proto in ("ip", "ip6"):  # `ip saddr != X` is an IPv4 rule; the policy's not would take all of IPv6
            out.setdefault("family", "ipv4" if proto == "ip" else "ipv6")
        return
    if op not in ("==", "in"):
        raise Unsaid(f"the comparison {op!r}: the policy has no ordered matches, and negates only addresses, "
                     "ports and address types")
    if isinstance(left, dict) and "fib" in left:
        fib = left["fib"]
        types = _names(right)
        if fib.get("result") != "type" or fib.get("flags") not in (["saddr"], ["daddr"]) \
                or any(t not in _ADDRESS_TYPES for t in types):
            raise Unsaid(f"fib {_text(fib)} {_text(right)}: the policy matches the type ({', '.join(_ADDRESS_TYPES)}) "
                         "of the source or destination address")
        out[fib["flags"][0] + "_type"] = types[0] if len(types) == 1 else types
        return
    if isinstance(right, str) and right.startswith("@"):
        _lookup(left, right[1:], out, flags)
        return
    if isinstance(left, dict) and "meta" in left:
        key = left["meta"]["key"]
        if key == "l4proto":
            protos = [_PROTOCOLS.get(p, p) for p in _names(right)]
            out.update({"protocol": protos[0]} if len(protos) == 1 else {"protocols": protos})
        elif key == "nfproto":
            out["family"] = right
        elif key in ("iifname", "oifname"):
            out["iif" if key == "iifname" else "oif"] = right[:-1] + "+" if right.endswith("*") else right
        elif key == "length":
            out["length"] = _ports(right, floor=0)
        else:
            raise Unsaid(f"meta {key}: no policy equivalent")
    elif isinstance(left, dict) and "payload" in left:
        p = left["payload"]
        if "base" in p:
            if p.get("len", 0) % 8 or p.get("offset", 0) % 8 or not isinstance(right, int):
                raise Unsaid(f"payload {_text(p)}: the policy matches whole bytes")
            entry = {"base": p["base"], "offset": p["offset"] // 8, "hex": f"{right:0{p['len'] // 4}x}"}
            if flags.get("mask") is not None:
                entry["mask"] = f"{flags.pop('mask'):0{p['len'] // 4}x}"
            out.setdefault("payload", []).append(entry)
        elif p.get("field") in ("saddr", "daddr") and p.get("protocol") in ("ip", "ip6"):
            out[p["field"]] = _addr(right)
        elif p.get("field") in ("sport", "dport"):
            proto = p.get("protocol")
            if proto != "th" and "protocol" not in out and "protocols" not in out:
                out["protocol"] = proto
            out[p["field"]] = _ports(right)
        else:
            raise Unsaid(f"payload {p.get('protocol')} {p.get('field')}: no policy equivalent")
    elif isinstance(left, dict) and "ct" in left and left["ct"].get("key") == "state":
        out["ct_state"] = _names(right)
    elif isinstance(left, dict) and "&" in left:
        inner, mask = left["&"]
        if isinstance(inner, dict) and inner.get("payload", {}).get("field") == "flags" \
                and sorted(mask) == ["rst", "syn"] and right == "syn":
            flags["syn"] = True
            if "protocol" not in out and "protocols" not in out:
                out["protocol"] = inner["payload"].get("protocol", "tcp")
        elif isinstance(inner, dict) and "payload" in inner and "base" in inner["payload"] and isinstance(mask, int):
            flags["mask"] = mask
            _match({"op": "==", "left": inner, "right": right}, out, flags)
        else:
            raise Unsaid(f"the bitwise match {_text(left)}")
    else:
        raise Unsaid(f"the match on {_text(left)}")


def _lookup(left: Any, name: str, out: dict, flags: dict) -> None:
    """A named set lookup: ctkit's toggle sets (`when`), or one field in a set of the policy's sets."""
    known = flags.get("sets", {})
    if isinstance(left, dict) and left.get("meta", {}).get("key") == "nfproto" and name.startswith("toggle_"):
        out["when"] = name[len("toggle_"):]
        return
    if name not in known:
        raise Unsaid(f"the set lookup @{name}: the set is not one the policy can declare")
    p = left.get("payload", {}) if isinstance(left, dict) else {}
    if p.get("field") in ("saddr", "daddr") and p.get("protocol") in ("ip", "ip6"):
        out[p["field"]] = f"@{name}"
    elif p.get("field") in ("sport", "dport"):
        if p.get("protocol") not in ("th", None) and "protocol" not in out and "protocols" not in out:
            out["protocol"] = p["protocol"]
        out[p["field"]] = f"@{name}"
    else:
        raise Unsaid(f"the set lookup @{name} on {_text(left)}")


def _element(v: Any) -> str | int:
    if isinstance(v, dict) and "prefix" in v:
        return f"{v['prefix']['addr']}/{v['prefix']['len']}"
    if isinstance(v, dict) and "range" in v:
        return f"{v['range'][0]}-{v['range'][1]}"
    if isinstance(v, (str, int)):
        return v
    raise Unsaid(f"set element {_text(v)}")


def _sets(items: list, chosen: set, own: bool, s: Sections, source: str) -> dict:
    """The policy's sets from the tables' named sets (ctkit's own table: the members the policy file declared;
    members added at run time are noted) and ctkit's toggles with their live state."""
    from ctkit.names import NFT_DECLARED_ELEMENT
    sets: dict = {}
    for i in items:
        o = i.get("set")
        if not o or (o["family"], o["table"]) not in chosen:
            continue
        elems = [e.get("elem", e) if isinstance(e, dict) else e for e in o.get("elem", [])]
        if o["name"].startswith("toggle_") and o.get("type") == "nf_proto":
            s.toggles[o["name"][len("toggle_"):]] = bool(elems)
            continue
        if not isinstance(o.get("type"), str) or o["type"] not in ("ipv4_addr", "ipv6_addr", "inet_service"):
            s.notes.append(f"set {o['name']} of type {_text(o.get('type'))}: not one the policy declares; "
                           "rules that use it are listed")
            continue
        entry: dict = {"type": o["type"]}
        if "interval" in o.get("flags", []):
            entry["interval"] = True
        if "timeout" in o:
            entry["timeout"] = o["timeout"]
        members, runtime = [], 0
        for e in elems:
            val = e.get("val") if isinstance(e, dict) else e
            if own and isinstance(e, dict) and e.get("comment") != NFT_DECLARED_ELEMENT:
                runtime += 1
                continue
            member = _element(val)
            if isinstance(e, dict) and "timeout" in e and e["timeout"] != o.get("timeout"):
                member = {"value": member, "timeout": e["timeout"]}
            members.append(member)
        entry["elements"] = members
        if runtime:
            s.notes.append(f"set {o['name']}: {runtime} members added at run time (ctkit set add) are not in "
                           "the policy; they are the kernel's until the next apply")
        sets[o["name"]] = entry
    return sets


def _statement(s: dict, out: dict, flags: dict, table: str) -> None:
    (kind, body), = s.items()
    if kind == "counter":
        return
    if kind in ("accept", "drop", "return"):
        out["action"] = kind
    elif kind in ("jump", "goto"):
        out[kind] = body["target"]
    elif kind == "reject":
        out["action"] = "reject"
        if body and body.get("type") == "tcp reset":
            out["reject_with"] = "tcp-reset"
        elif body and body.get("expr") not in (None, "port-unreachable"):
            if body.get("expr") not in _REJECT:
                raise Unsaid(f"reject with {body.get('expr')}")
            out["reject_with"] = _REJECT[body["expr"]]
    elif kind == "log":
        log: dict = {}
        if body and "prefix" in body:
            log["prefix"] = body["prefix"]
        log["level"] = _LEVELS.get((body or {}).get("level", "warn"), "warn")
        if "limit" in out:
            log["limit"] = out.pop("limit")
        out["log"] = log
    elif kind == "limit":
        out["limit"] = {"rate": body["rate"], "per": body.get("per", "second"), "burst": body.get("burst", 5)}
    elif kind == "meter":
        key = body.get("key", {}).get("payload", {})
        stmt = body.get("stmt", {}).get("limit")
        if key.get("field") not in ("saddr", "daddr") or stmt is None:
            raise Unsaid(f"the meter {_text(body)}: the policy limits per source or destination address")
        out["limit"] = {"rate": stmt["rate"], "per": stmt.get("per", "second"), "burst": stmt.get("burst", 5),
                        "by": key["field"]}
    elif kind == "notrack":
        flags["notrack"] = True
    elif kind == "ct helper":
        flags["helper"] = body
    elif kind == "ct timeout":
        flags["timeout"] = body
    elif kind == "mangle":
        _mangle(body, out, flags)
    elif kind in ("dnat", "snat", "masquerade", "redirect"):
        flags["nat"] = (kind, body or {})
    elif kind == "queue":
        num = body.get("num", 0)
        q: dict = {"num": f"{num['range'][0]}-{num['range'][1]}" if isinstance(num, dict) else num}
        fl = body.get("flags", [])
        fl = [fl] if isinstance(fl, str) else fl
        if "bypass" in fl:
            q["bypass"] = True
        if "fanout" in fl:
            q["fanout"] = True
        out["action"], out["queue"] = "queue", q
    elif kind == "vmap":
        key = body["key"]
        names = {"iifname": "iif", "oifname": "oif"}
        if "meta" in key and key["meta"]["key"] in names:
            k = names[key["meta"]["key"]]
        elif "payload" in key and key["payload"].get("field") in ("sport", "dport"):
            k = key["payload"]["field"]
            if key["payload"].get("protocol") not in ("th", None) and "protocol" not in out:
                out["protocol"] = key["payload"]["protocol"]
        else:
            raise Unsaid(f"the verdict map on {_text(key)}")
        entries = {}
        for value, verdict in body["data"]["set"]:
            (vk, vb), = verdict.items()
            entries[str(value if not isinstance(value, dict) else _ports(value))] = \
                f"{vk} {vb['target']}" if vk in ("jump", "goto") else vk
        out["vmap"] = {"key": k, "map": entries}
    else:
        raise Unsaid(f"the statement {kind}: no policy equivalent")


def _mangle(body: dict, out: dict, flags: dict) -> None:
    key, value = body["key"], body["value"]
    if "ct" in key and key["ct"]["key"] == "zone":
        flags["zone"] = (value, key["ct"].get("dir"))
    elif "ct" in key and key["ct"]["key"] == "mark":
        if isinstance(value, dict) and value.get("meta", {}).get("key") == "mark":
            out["connmark"] = "save"
        elif isinstance(value, int):
            out["ct_mark_set"] = value
        else:
            raise Unsaid(f"ct mark set {_text(value)}")
    elif "meta" in key and key["meta"]["key"] == "mark":
        if isinstance(value, dict) and value.get("ct", {}).get("key") == "mark":
            out["connmark"] = "restore"
        elif isinstance(value, int):
            out["mark_set"] = value
        else:
            raise Unsaid(f"meta mark set {_text(value)}")
    elif "payload" in key and key["payload"].get("field") == "dscp":
        if not _DSCP:
            from ctkit.netfilter import DSCP_CLASSES
            _DSCP.update(DSCP_CLASSES)
        out["dscp"] = _DSCP.get(value, value) if isinstance(value, str) else value
    elif "tcp option" in key and key["tcp option"].get("name") == "maxseg":
        out["mss"] = "pmtu" if isinstance(value, dict) and value.get("rt", {}).get("key") == "mtu" else value
        flags.pop("syn", None)
    elif "ct" in key and key["ct"]["key"] == "label":
        out["ct_label_set"] = value
    else:
        raise Unsaid(f"the statement that sets {_text(key)}")


def read(doc: dict, table: str, include: tuple[str, ...], source: str, s: Sections) -> None:
    """Fill `s` from a `nft -j list ruleset` document."""
    items = doc.get("nftables", [])
    tables = [(i["table"]["family"], i["table"]["name"]) for i in items if "table" in i]
    own = ("inet", table)
    if own in tables:
        chosen = {own}
    else:
        chosen = set()
        for fam, name in tables:
            owner = next((o for o, p in FOREIGN_TABLES if p.fullmatch(name)), None)
            if fam in ("ip", "ip6", "inet") and (owner is None or name in include):
                chosen.add((fam, name))
    for fam, name in tables:
        if (fam, name) not in chosen:
            owner = next((o for o, p in FOREIGN_TABLES if p.fullmatch(name)), "another table")
            s.left_out.append(LeftOut(source, 0, f"table {fam} {name}", owner if (fam, name) != own else "ctkit"))
    for i in items:
        for kind in ("ct helper", "ct timeout"):
            o = i.get(kind)
            if o and (o["family"], o["table"]) in chosen:
                if kind == "ct helper":
                    s.helper_types[o["name"]] = o["type"]
                else:
                    s.timeout_objects[o["name"]] = {"protocol": o["protocol"], "policy": o.get("policy", {})}
    s.sets.update(_sets(items, chosen, own in chosen, s, source))
    chains = {}
    for i in items:
        c = i.get("chain")
        if c and (c["family"], c["table"]) in chosen:
            chains[(c["family"], c["table"], c["name"])] = c
            if "hook" in c and c.get("type") == "filter" and not c["name"].startswith(("notrack-", "zone-",
                                                                                        "timeout-", "helper-")):
                s.policies.setdefault("inet", {})[c["hook"]] = c.get("policy", "accept")
                s.chains.setdefault("inet", {}).setdefault(c["hook"], [])
            elif "hook" not in c and c["name"] != "toggle-state":
                s.chains.setdefault("inet", {}).setdefault(c["name"], [])
    for i in items:
        r = i.get("rule")
        if not r or (r["family"], r["table"]) not in chosen:
            continue
        chain = chains.get((r["family"], r["table"], r["chain"]))
        if chain is None or chain["name"] == "toggle-state":
            continue
        _rule(r, chain, table_family=r["family"], s=s, source=source)


def _rule(r: dict, chain: dict, table_family: str, s: Sections, source: str) -> None:
    where = r.get("handle", 0)
    text = f"{chain['name']}: {r.get('comment') or ''} {_text(r['expr'])}".strip()
    out: dict = {}
    flags: dict = {"sets": s.sets}
    try:
        for e in r["expr"]:
            if "match" in e:
                _match(e["match"], out, flags)
            else:
                _statement(e, out, flags, chain["table"])
    except Unsaid as exc:
        s.not_expressed.append(NotExpressed(source, where, text, f"{exc} (rule handle {where})"))
        return
    if table_family in ("ip", "ip6") and "family" not in out:
        out["family"] = "ipv4" if table_family == "ip" else "ipv6"
    comment = r.get("comment")
    name, rest = own_comment(comment)
    raw_id = (comment or "").partition(": ")[0]
    if flags.get("syn") and "mss" not in out:
        s.not_expressed.append(NotExpressed(source, where, text, "tcp flags: the policy matches them only to "
                                                                 f"clamp the MSS (rule handle {where})"))
        return
    hook = chain.get("hook")
    ct = [k for k in ("notrack", "helper", "zone", "timeout") if k in flags]
    if ct:
        _entry(ct, flags, out, name, rest, hook, s, source, where, text)
        return
    if "nat" in flags:
        _nat(flags["nat"], out, name, rest, s, source, where, text)
        return
    rule = dict(out)
    if name:
        rule = {"name": name, **rule}
    if rest:
        c = clean_comment(rest, s.notes, f"{source}: rule handle {where}")
        if c:
            rule["comment"] = c
    if raw_id:
        rule[MERGE_KEY] = raw_id
    key = hook if hook and chain.get("type") == "filter" else chain["name"]
    s.chains.setdefault("inet", {}).setdefault(key, []).append(rule)
    s.expressed += 1


def _entry(ct, flags, out, name, rest, hook, s, source, where, text) -> None:
    if len(ct) > 1 or any(k in out for k in ("action", "jump", "goto", "log", "ct_state", "length", "payload",
                                                 "limit", "mark_set", "vmap")):
        s.not_expressed.append(NotExpressed(source, where, text, "a rule that sets conntrack's template and does "
                                                                 f"more: ctkit keeps them apart (rule handle {where})"))
        return
    direction = "in" if hook == "prerouting" else "out" if hook == "output" else None
    if direction is None:
        s.not_expressed.append(NotExpressed(source, where, text, f"{ct[0]} at the {hook} hook: ctkit sets it in "
                                                                 f"prerouting or output (rule handle {where})"))
        return
    kind = ct[0]
    entry: dict = {}
    if kind == "notrack":
        neither = isinstance(out.get("sport"), dict) and out.get("sport") == out.get("dport")
        if neither:  # ctkit's negated `ports`: neither port is one of them, in one rule
            out["ports"] = out.pop("sport")
            out.pop("dport")
        if isinstance(out.get("saddr"), dict) and out.get("saddr") == out.get("daddr"):
            out["peers"] = out.pop("saddr")  # negated peers: neither address
            out.pop("daddr")
        if "sport" in out and "dport" in out:
            s.not_expressed.append(NotExpressed(source, where, text, "notrack on sport and dport together: a "
                                                                     f"notrack entry's ports are either (rule handle {where})"))
            return
        fld = "sport" if "sport" in out else "dport" if "dport" in out else None
        ports = out.pop(fld) if fld else out.pop("ports", None)
        negated = isinstance(ports, dict)
        if negated:
            ports = ports["not"]
        entry = {"name": name or _notrack_name(tuple(ports) if isinstance(ports, list) else (ports,) if ports else ()),
                 **{k: v for k, v in out.items() if k in ("family", "protocol", "protocols", "saddr", "daddr",
                                                          "peers", "iif", "oif", "saddr_type", "daddr_type")}}
        if ports is not None:
            entry["ports"] = ports if isinstance(ports, list) else [ports]
            if negated:
                entry["ports"] = {"not": entry["ports"]}
        if rest:
            entry["comment"] = clean_comment(rest, s.notes, f"{source}: rule handle {where}")
        s.notrack.append((PENDING, (direction, fld, entry, NotExpressed(source, where, text, ""))))
        s.expressed += 1
        return
    elif kind == "helper":
        proto = out.get("protocol")
        helper = HELPERS.get((_helper_type(flags["helper"], s), proto))
        entry = {"name": name or flags["helper"], "helper": helper or flags["helper"], "protocol": proto,
                 "ports": out.get("dport")}
        for k in ("saddr", "daddr", "family", "saddr_type", "daddr_type"):
            if k in out:
                entry[k] = out[k]
        if direction == "out":
            entry["direction"] = "out"
        section = s.helpers
    elif kind == "zone":
        zone, zdir = flags["zone"]
        entry = {"name": name or f"zone{zone}", "zone": zone}
        if zdir:
            entry["zone_direction"] = zdir
        for k, n in (("family", "family"), ("protocol", "protocol"), ("dport", "ports"), ("saddr", "saddr"),
                     ("daddr", "daddr"), ("iif", "iif"), ("oif", "oif"), ("saddr_type", "saddr_type"),
                     ("daddr_type", "daddr_type")):
            if k in out:
                entry[n] = out[k]
        if direction == "out":
            entry["direction"] = "out"
        section = s.zones
    else:
        obj = s.timeout_objects.get(flags["timeout"])
        if obj is None:
            s.not_expressed.append(NotExpressed(source, where, text, f"ct timeout {flags['timeout']}: its object is "
                                                                     f"not in the ruleset (rule handle {where})"))
            return
        entry = {"name": name or flags["timeout"], "protocol": obj["protocol"], "policy": dict(obj["policy"])}
        for k, n in (("family", "family"), ("dport", "ports"), ("saddr", "saddr"), ("daddr", "daddr"),
                     ("saddr_type", "saddr_type"), ("daddr_type", "daddr_type")):
            if k in out:
                entry[n] = out[k]
        if direction == "out":
            entry["direction"] = "out"
        section = s.timeouts
    if rest:
        entry["comment"] = clean_comment(rest, s.notes, f"{source}: rule handle {where}")
    entry[MERGE_KEY] = name or ""
    section.append(("inet", entry))
    s.expressed += 1


def _helper_type(obj_name: str, s: Sections) -> str:
    return s.helper_types.get(obj_name, obj_name)


def _nat(nat, out, name, rest, s, source, where, text) -> None:
    kind, body = nat
    entry: dict = {"type": kind}
    if name:
        entry = {"name": name, **entry}
    for k in ("family", "protocol", "protocols", "saddr", "daddr", "sport", "dport", "iif", "oif", "saddr_type",
              "daddr_type"):
        if k in out:
            entry[k] = out[k]
    if "addr" in body:
        a = body["addr"]
        entry["to_addr"] = f"{a['range'][0]}-{a['range'][1]}" if isinstance(a, dict) and "range" in a else a
        entry.pop("family", None)
    if "port" in body:
        entry["to_port"] = _ports(body["port"])
    if rest:
        entry["comment"] = clean_comment(rest, s.notes, f"{source}: rule handle {where}")
    s.nat.append(("inet", entry))
    s.expressed += 1


def group_notrack(s: Sections) -> None:
    """Notrack rules -> entries: an entry with ports stands for both the sport and the dport rule (per
    direction); both directions with the same entry are direction both."""
    raw = [x for f, x in s.notrack if f == PENDING]
    s.notrack = [(f, x) for f, x in s.notrack if f != PENDING]
    import json
    groups: dict[str, dict] = {}
    order: list[str] = []
    for direction, fld, entry, where in raw:
        k = json.dumps(entry, sort_keys=True)
        if k not in groups:
            groups[k] = {"entry": entry, "seen": {}, "where": []}
            order.append(k)
        groups[k]["seen"].setdefault(direction, set()).add(fld)
        groups[k]["where"].append(where)
    for k in order:
        g = groups[k]
        dirs = []
        for d, fields in g["seen"].items():
            if fields == {None} or fields == {"sport", "dport"}:
                dirs.append(d)
            else:
                for w in g["where"]:
                    s.not_expressed.append(NotExpressed(w.source, w.line, w.text, "notrack on one port field: a "
                                                        "notrack entry's ports are source or destination"))
                    s.expressed -= 1
        if not dirs:
            continue
        entry = dict(g["entry"])
        if len(dirs) == 1:
            entry["direction"] = dirs[0]
        s.notrack.append(("inet", entry))
