"""Builder of the `sets` section: named sets and their members, each part parsed by the set's type."""
from __future__ import annotations

import ipaddress
from typing import Any

from ctkit.policy.builder import Builder
from ctkit.policy.checks import PORTS, check_nat_address, check_network, parse_nat_address
from ctkit.policy.model import NamedSet, SetMember
from ctkit.terminal import excerpt


def build_sets(b: Builder, sets: dict) -> tuple[NamedSet, ...]:
    return tuple(_named_set(b, name, body) for name, body in sets.items())


def _named_set(b: Builder, name: str, body: dict) -> NamedSet:
    p = f"/sets/{name}"
    types = tuple(body["type"]) if isinstance(body["type"], list) else (body["type"],)
    interval = body.get("interval", False)
    members = []
    for i, item in enumerate(body.get("elements", [])):
        ptr = f"{p}/elements/{i}"
        value, timeout = (item["value"], item.get("timeout")) if isinstance(item, dict) else (item, None)
        if timeout is not None and body.get("timeout") is None:
            b.problem(ptr + "/timeout", "a member timeout needs the set's timeout", "give the set a timeout")
        values = value if isinstance(value, list) else [value]
        if len(values) != len(types):
            b.problem(ptr, f"the set's type has {len(types)} part(s), this member {len(values)}")
            continue
        parts = tuple(_member_part(b, k, v, interval, ptr) for k, v in zip(types, values, strict=True))
        if all(x is not None for x in parts):
            members.append(SetMember(parts, timeout))
    return NamedSet(name, p, types, interval, body.get("timeout"), tuple(members))


def _member_part(b: Builder, kind: str, value: Any, interval: bool, pointer: str):
    if kind in ("ipv4_addr", "ipv6_addr"):
        text = str(value)
        if "-" in text and interval:
            bad = check_nat_address(text)
            if bad:
                b.problem(pointer, *bad)
                return None
            rng = parse_nat_address(text)
            ok = rng.family == ("ipv4" if kind == "ipv4_addr" else "ipv6")
            if not ok:
                b.problem(pointer, f"{text!r} is not of type {kind}")
                return None
            return rng
        bad = check_network(text)
        if bad:
            b.problem(pointer, *bad)
            return None
        net = ipaddress.ip_network(text)
        if (net.version == 4) != (kind == "ipv4_addr"):
            b.problem(pointer, f"{text!r} is not of type {kind}")
            return None
        if net.prefixlen != net.max_prefixlen and not interval:
            b.problem(pointer, f"{text!r} is a prefix but the set has no interval flag", "add \"interval\": true")
            return None
        return net
    text = str(value)
    if "-" in text and not interval:
        b.problem(pointer, f"{excerpt(text)} is a range but the set has no interval flag", "add \"interval\": true")
        return None
    return b.range(text, pointer, PORTS)
