"""Print a libnftables JSON document (as ctkit's nft backend writes it) in nft syntax.

The nft backend has one generator (IR -> JSON); this module is only a printer
for the JSON forms that generator emits, so `ctkit compile --format nft` shows
what an administrator would write by hand. An expression it does not know is
a CompileError, never a guess. The printed file starts with the same
add/delete prelude that ctkit's apply uses, so `nft -f FILE` replaces the
table atomically too.
"""
from __future__ import annotations

from typing import Any

from ctkit.errors import CompileError

INDENT = "\t"


def _fail(what: Any) -> None:
    raise CompileError("nft-text", repr(what)[:80], "document", "no nft syntax known for this expression")


def _q(text: str) -> str:
    return '"' + text + '"'


def value(v: Any) -> str:
    if isinstance(v, (int, str)):
        return str(v)
    if isinstance(v, list):
        return ",".join(value(x) for x in v)
    if isinstance(v, dict):
        if "elem" in v:  # first: a set of a million members is a million of these
            e = v["elem"]
            val = e["val"]
            text = val if type(val) is str else value(val)
            if "timeout" in e:
                text += f" timeout {e['timeout']}s"
            return text + f" comment {_q(e['comment'])}" if "comment" in e else text
        if "set" in v:
            return "{ " + ", ".join(value(x) for x in v["set"]) + " }"
        if "prefix" in v:
            return f"{v['prefix']['addr']}/{v['prefix']['len']}"
        if "range" in v:
            lo, hi = v["range"]
            return f"{value(lo)}-{value(hi)}"
        if "concat" in v:
            return " . ".join(value(x) for x in v["concat"])
    _fail(v)


def left(v: dict) -> str:
    if "meta" in v:
        key = v["meta"]["key"]
        return key if key in ("iifname", "oifname") else f"meta {key}"
    if "payload" in v and "base" in v["payload"]:
        return f"@{v['payload']['base']},{v['payload']['offset']},{v['payload']['len']}"
    if "payload" in v:
        return f"{v['payload']['protocol']} {v['payload']['field']}"
    if "concat" in v:
        return " . ".join(left(x) for x in v["concat"])
    if "&" in v:
        inner, mask = v["&"]
        if isinstance(mask, list):  # flags: tcp flags & (syn | rst) == syn
            return f"{left(inner)} & ({' | '.join(mask)}) =="
        return f"{left(inner)} & {hex(mask)} =="
    if "ct" in v:
        return f"ct {v['ct']['key']}"
    if "fib" in v:
        return f"fib {' . '.join(v['fib']['flags'])} {v['fib']['result']}"
    _fail(v)


def _string_right(lhs: dict, v: Any) -> str:
    if "meta" in lhs and lhs["meta"]["key"] in ("iifname", "oifname") and isinstance(v, str):
        return _q(v)
    if isinstance(v, int) and ("&" in lhs or "base" in lhs.get("payload", {})):
        return hex(v)
    return value(v)


def _limit(body: dict) -> str:
    return f"limit rate {body['rate']}/{body['per']} burst {body['burst']} packets"


def expr(e: dict) -> str:
    (key, body), = e.items()
    if key == "match":
        op = "" if body["op"] in ("==", "in") else body["op"] + " "
        return f"{left(body['left'])} {op}{_string_right(body['left'], body['right'])}"
    if key == "counter" and isinstance(body, dict):
        return f"counter packets {body.get('packets', 0)} bytes {body.get('bytes', 0)}"
    if key in ("counter", "notrack", "accept", "drop", "return") and body is None:
        return key
    if key in ("jump", "goto"):
        return f"{key} {body['target']}"
    if key == "ct helper":
        return f"ct helper set {_q(body)}"
    if key == "log":
        parts = ["log"]
        if "prefix" in body:
            parts.append(f"prefix {_q(body['prefix'])}")
        if "level" in body:
            parts.append(f"level {body['level']}")
        return " ".join(parts)
    if key == "limit":
        return _limit(body)
    if key == "ct timeout":
        return f"ct timeout set {_q(body)}"
    if key == "vmap":
        pairs = ", ".join(f"{_string_right(body['key'], k)} : {expr(v)}" for k, v in body["data"]["set"])
        return f"{left(body['key'])} vmap {{ {pairs} }}"
    if key == "queue":
        text = "queue"
        if body.get("flags"):
            text += " flags " + ",".join(body["flags"])
        return text + " to " + value(body["num"])
    if key == "mangle" and "tcp option" in body["key"]:
        v = body["value"]
        return "tcp option maxseg size set " + ("rt mtu" if isinstance(v, dict) else str(v))
    if key == "mangle" and "payload" in body["key"]:
        return f"{left(body['key'])} set {body['value']}"
    if key == "mangle" and "meta" in body["key"]:
        v = body["value"]
        return "meta mark set " + ("ct mark" if isinstance(v, dict) else hex(v))
    if key == "mangle" and "ct" in body["key"] and isinstance(body["value"], dict):
        return "ct mark set meta mark"
    if key == "mangle" and "ct" in body["key"]:
        ct = body["key"]["ct"]
        where = f"ct {ct['dir']} " if "dir" in ct else "ct "
        return f"{where}{ct['key']} set {hex(body['value']) if ct['key'] == 'mark' else body['value']}"
    if key == "meter":
        return (f"meter {body['name']} size {body['size']} {{ {left(body['key'])} "
                f"{_limit(body['stmt']['limit'])} }}")
    if key in ("snat", "dnat", "masquerade", "redirect"):
        return _nat(key, body or {})
    if key == "reject":
        if not body:
            return "reject"
        if body.get("type") == "tcp reset":
            return "reject with tcp reset"
        return f"reject with {body['type']} type {body['expr']}"
    _fail(e)


def _nat(key: str, body: dict) -> str:
    text = key
    if "family" in body:
        text += f" {body['family']}"
    if "addr" in body or "port" in body:
        addr = value(body["addr"]) if "addr" in body else ""
        if addr and body.get("family") == "ip6" and "port" in body:
            addr = "[" + addr + "]" if "-" not in addr else "[" + addr.replace("-", "]-[") + "]"
        text += " to " + addr + (":" + value(body["port"]) if "port" in body else "")
    return text


def render(document: dict) -> str:
    cmds = [c["add"] for c in document["nftables"] if "add" in c]
    table = next(c["table"] for c in cmds if "table" in c)
    family, name = table["family"], table["name"]
    out = [f"# ctkit: table {family} {name}; `nft -f` this file replaces the table atomically",
           f"add table {family} {name}", f"delete table {family} {name}", "",
           f"table {family} {name} {{"]
    blocks: list[list[str]] = []
    for c in cmds:
        if "ct timeout" in c:
            t = c["ct timeout"]
            policy = ", ".join(f"{k} : {v}" for k, v in t["policy"].items())
            blocks.append([f"{INDENT}ct timeout {t['name']} {{", f"{INDENT * 2}protocol {t['protocol']}",
                           f"{INDENT * 2}l3proto {t['l3proto']}", f"{INDENT * 2}policy = {{ {policy} }}",
                           f"{INDENT}}}"])
    for c in cmds:
        if "ct helper" in c:
            h = c["ct helper"]
            blocks.append([f"{INDENT}ct helper {h['name']} {{",
                           f"{INDENT * 2}type {_q(h['type'])} protocol {h['protocol']}",
                           f"{INDENT * 2}l3proto {h['l3proto']}", f"{INDENT}}}"])
    elements: dict[str, list] = {}
    for c in cmds:
        if "element" in c:
            elements.setdefault(c["element"]["name"], []).extend(c["element"]["elem"])
    for c in cmds:
        if "set" in c:
            st = c["set"]
            kind = st["type"] if isinstance(st["type"], str) else " . ".join(st["type"])
            lines = [f"{INDENT}set {st['name']} {{", f"{INDENT * 2}type {kind}"]
            if st.get("flags"):
                lines.append(f"{INDENT * 2}flags {','.join(st['flags'])}")
            if "timeout" in st:
                lines.append(f"{INDENT * 2}timeout {st['timeout']}s")
            if elements.get(st["name"]):
                lines.append(f"{INDENT * 2}elements = {{ {', '.join(value(e) for e in elements[st['name']])} }}")
            blocks.append(lines + [f"{INDENT}}}"])
    for c in cmds:
        if "chain" in c:
            ch = c["chain"]
            lines = [f"{INDENT}chain {ch['name']} {{"]
            if "hook" in ch:
                lines.append(f"{INDENT * 2}type {ch['type']} hook {ch['hook']} priority {ch['prio']}; "
                             f"policy {ch['policy']};")
            for r in cmds:
                if "rule" in r and r["rule"]["chain"] == ch["name"]:
                    text = " ".join(expr(e) for e in r["rule"]["expr"])
                    if r["rule"].get("comment"):
                        text += f" comment {_q(r['rule']['comment'])}"
                    lines.append(INDENT * 2 + text)
            lines.append(f"{INDENT}}}")
            blocks.append(lines)
    for i, block in enumerate(blocks):
        if i:
            out.append("")
        out.extend(block)
    out.append("}")
    return "\n".join(out) + "\n"
