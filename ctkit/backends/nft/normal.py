"""Canonical forms of libnftables JSON, so a rule compares equal however nft prints it.

The kernel (and nft's printer) re-spell what ctkit sends: a one-element set
becomes a scalar, `ct state` matches use op "in", /32 prefixes become plain
addresses, icmpv6 is printed as ipv6-icmp, counters carry values, a bare
reject gets its default type. canonical_rule() maps both ctkit's document
and `nft -j list` output to the same value; anything unknown is kept whole,
so an unfamiliar expression still compares exactly.
"""
from __future__ import annotations

import ipaddress
import json
from typing import Any

_ALIASES = {"icmpv6": "ipv6-icmp", "ipv6-icmp": "ipv6-icmp"}
_DEFAULT_REJECT = ("reject", "icmpx", "port-unreachable")


def _address(text: str) -> str:
    """IPv4 text is already canonical as nft prints it; IPv6 text is normalised (RFC 5952)."""
    if ":" not in text:
        return text
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        return text


def _atom(v: Any) -> Any:
    if isinstance(v, dict):
        if "prefix" in v:
            addr, length = _address(v["prefix"]["addr"]), int(v["prefix"]["len"])
            full = 128 if ":" in addr else 32
            return addr if length == full else f"{addr}/{length}"  # a /32 (/128) is the host itself
        if "range" in v:
            lo, hi = (_atom(x) for x in v["range"])
            return lo if lo == hi else ("range", lo, hi)
        return json.dumps(v, sort_keys=True)
    if isinstance(v, str):
        return _ALIASES.get(v) or _address(v)
    return v


def _values(v: Any) -> frozenset:
    if isinstance(v, dict) and "set" in v:
        v = v["set"]
    if isinstance(v, list):
        return frozenset(_atom(x) for x in v)
    return frozenset([_atom(v)])


def _left(v: dict) -> tuple:
    if "payload" in v:
        p = v["payload"]
        if "base" in p:  # a raw payload: where and how many bits
            return ("payload", p.get("base"), p.get("offset"), p.get("len"))
        return ("payload", p.get("protocol"), p.get("field"))
    if "meta" in v:
        return ("meta", v["meta"]["key"])
    if "ct" in v:
        return ("ct", v["ct"]["key"], v["ct"].get("dir"))
    return ("expr", json.dumps(v, sort_keys=True))


def canonical_expr(e: dict) -> tuple:
    (key, body), = e.items()
    if key == "match":
        op = "==" if body["op"] in ("==", "in") else body["op"]
        return ("match", _left(body["left"]), op, _values(body["right"]))
    if key == "counter":
        return ("counter",)
    if key in ("accept", "drop", "return", "notrack", "continue"):
        return (key,)
    if key in ("jump", "goto"):
        return (key, body["target"])
    if key == "ct helper":
        return ("ct helper", body)
    if key == "log":
        body = body or {}
        return ("log", body.get("prefix"), body.get("level", "warn"))
    if key == "reject":
        if not body:
            return _DEFAULT_REJECT
        if body.get("type") == "tcp reset":
            return ("reject", "tcp reset", None)
        return ("reject", body.get("type"), body.get("expr"))
    return (key, json.dumps(body, sort_keys=True))


def canonical_rule(expr: list[dict]) -> tuple:
    """Order-preserving canonical form of a rule's expressions (matches first, as nft evaluates them)."""
    return tuple(canonical_expr(e) for e in expr)


def canonical_chain(chain: dict) -> tuple:
    if "hook" not in chain:
        return ("user",)
    return (chain.get("type"), chain.get("hook"), chain.get("prio"), chain.get("policy", "accept"))


def canonical_helper(obj: dict) -> tuple:
    return (obj.get("type"), obj.get("protocol"), obj.get("l3proto"))


def canonical_set(body: dict) -> tuple:
    """A set's declaration (type, flags, timeout), without its elements."""
    return (json.dumps(body.get("type")), tuple(sorted(body.get("flags", []))), body.get("timeout"))


def element_value(e: Any) -> Any:
    """An element's value, with or without its {"elem": {"val": ..., "comment": ...}} wrapper."""
    return e["elem"]["val"] if isinstance(e, dict) and "elem" in e else e


def is_declared(e: Any) -> bool:
    """Whether an element carries the comment that marks the policy file's members
    (names.NFT_DECLARED_ELEMENT); members added at run time have none."""
    from ctkit import names
    return isinstance(e, dict) and "elem" in e and e["elem"].get("comment") == names.NFT_DECLARED_ELEMENT


def canonical_member(v: Any) -> str:
    """An element's value as one comparable text, however nft prints it."""
    if isinstance(v, dict) and "concat" in v:
        return json.dumps([canonical_member(x) for x in v["concat"]])
    return json.dumps(_atom(v), default=list)
