"""nft backend: IR -> libnftables JSON document (the input of `nft -j -f`).

One function per IR node type, looked up in a table; a node with no entry is a
CompileError naming the construct. The document only adds things; replacing
ctkit's table atomically is the kernel stage's job (ctkit/backends/nft/kernel.py).
"""
from __future__ import annotations

import ipaddress
import socket
from typing import Any, Callable

from ctkit import names as kname
from ctkit.backends.nft.table import BACKEND, FAMILY, TOGGLE_ON, toggle_element_commands  # noqa: F401 (shared)
from ctkit.bulk import without_cycle_collection
from ctkit.compile import ir
from ctkit.errors import CompileError
from ctkit.netfilter import DSCP_NAMES

_ADDR_PROTO = {"ipv4": "ip", "ipv6": "ip6"}
#: policy reject_with -> nft icmpx code (icmpx has no net-unreachable: no-route is its family-neutral form)
_ICMPX = {"port-unreachable": "port-unreachable", "host-unreachable": "host-unreachable",
          "net-unreachable": "no-route", "admin-prohibited": "admin-prohibited"}


def _addr_value(text: str) -> Any:
    if "/" not in text:
        return text
    addr, length = text.split("/")
    return {"prefix": {"addr": addr, "len": int(length)}}


def _set_or_one(values: list[Any]) -> Any:
    return values[0] if len(values) == 1 else {"set": values}


def _port_value(r) -> Any:
    return r.lo if r.lo == r.hi else {"range": [r.lo, r.hi]}


def _eq(left: dict, right: Any, op: str = "==") -> dict:
    return {"match": {"op": op, "left": left, "right": right}}


# ------------------------------------------------------------------ matches

def _nfproto(m: ir.NfProto, rule: ir.Rule) -> list[dict]:
    if any((isinstance(x, ir.Limit) and x.by or isinstance(x, ir.SetLookup) and set(x.fields) & {"saddr", "daddr"})
           and x.family == m.family for x in rule.matches):
        return []  # an ip/ip6 address field (meter key, set lookup) implies it: nft lists the rule without
    return [_eq({"meta": {"key": "nfproto"}}, m.family)]


def _has_port_field(rule: ir.Rule) -> bool:
    return any(isinstance(x, ir.Port) or (isinstance(x, ir.SetLookup) and set(x.fields) & {"sport", "dport"})
               for x in rule.matches)


def _l4proto(m: ir.L4Proto, rule: ir.Rule) -> list[dict]:
    # a single protocol with ports is written `tcp dport ...`: the port match implies it
    if len(m.protocols) == 1 and _has_port_field(rule):
        return []
    if m.protocols == ("tcp",) and any(isinstance(x, ir.TcpSyn) for x in rule.matches):
        return []  # `tcp flags` implies it
    return [_eq({"meta": {"key": "l4proto"}}, _set_or_one(list(m.protocols)))]


def _addr(m: ir.Addr, rule: ir.Rule) -> list[dict]:
    left = {"payload": {"protocol": _ADDR_PROTO[m.family], "field": m.field}}
    return [_eq(left, _set_or_one([_addr_value(n) for n in m.networks]), "!=" if m.negated else "==")]


def _port(m: ir.Port, rule: ir.Rule) -> list[dict]:
    protos = next((x.protocols for x in rule.matches if isinstance(x, ir.L4Proto)), ())
    proto = protos[0] if len(protos) == 1 else "th"
    left = {"payload": {"protocol": proto, "field": m.field}}
    return [_eq(left, _set_or_one([_port_value(r) for r in m.ranges]), "!=" if m.negated else "==")]


def _addr_type(m: ir.AddrType, rule: ir.Rule) -> list[dict]:
    """`fib daddr type local`: the routing table's type of the address (a lookup in the packet's netns)."""
    left = {"fib": {"result": "type", "flags": [m.field]}}
    return [_eq(left, _set_or_one(list(m.types)), "!=" if m.negated else "==")]


def _ifname(name: str) -> str:
    """A policy interface name as nft matches it: a trailing + is iptables' wildcard (eth+: every name that
    starts with eth), and nft's is * ("eth+" would match only an interface called that)."""
    return name[:-1] + "*" if name.endswith("+") else name


def _iface(m: ir.Iface, rule: ir.Rule) -> list[dict]:
    return [_eq({"meta": {"key": "iifname" if m.direction == "in" else "oifname"}}, _ifname(m.name))]


def _ctstate(m: ir.CtState, rule: ir.Rule) -> list[dict]:
    states = list(m.states)
    return [_eq({"ct": {"key": "state"}}, states[0] if len(states) == 1 else states, op="in")]


def _length(m: ir.Length, rule: ir.Rule) -> list[dict]:
    return [_eq({"meta": {"key": "length"}}, _set_or_one([_port_value(r) for r in m.ranges]))]


def _payload(m: ir.Payload, rule: ir.Rule) -> list[dict]:
    raw: dict = {"payload": {"base": m.base, "offset": m.offset * 8, "len": m.size * 8}}
    left = raw if m.mask is None else {"&": [raw, m.mask]}
    return [_eq(left, m.value)]


def _signature(m: ir.Signature, rule: ir.Rule) -> list[dict]:
    raise CompileError(BACKEND, "signature", rule.origin,
                       "nft has no search for bytes anywhere in a packet; match them at a fixed offset "
                       "with payload (e.g. {\"base\": \"th\", \"offset\": 8, \"hex\": \"ffffffff\"}), "
                       "or use --backend iptables (-m string)")


_METER_SIZE = 65535  # nft's default, written out because the kernel lists it


def _limit(m: ir.Limit, rule: ir.Rule) -> list[dict]:
    limit = {"limit": {"rate": m.rate, "burst": m.burst, "per": m.per}}
    if m.by is None:
        return [limit]
    key = {"payload": {"protocol": _ADDR_PROTO[m.family], "field": m.by}}  # one family: lower split the rule
    return [{"meter": {"key": key, "stmt": limit, "size": _METER_SIZE, "name": m.name}}]


def _field(name: str, family: str | None, rule: ir.Rule) -> dict:
    if name in ("saddr", "daddr"):
        return {"payload": {"protocol": _ADDR_PROTO[family], "field": name}}
    protos = next((x.protocols for x in rule.matches if isinstance(x, ir.L4Proto)), ())
    return {"payload": {"protocol": protos[0] if len(protos) == 1 else "th", "field": name}}


def _set_lookup(m: ir.SetLookup, rule: ir.Rule) -> list[dict]:
    fields = [_field(f, m.family, rule) for f in m.fields]
    return [_eq(fields[0] if len(fields) == 1 else {"concat": fields}, "@" + m.name)]


def member_value(types: tuple[str, ...], parts: tuple[str, ...]) -> Any:
    """A set member in libnftables JSON: 80, "192.0.2.1", a prefix, a range, or a concatenation."""
    if len(parts) == 1 and len(types) == 1:
        return _part_value(types[0], parts[0])
    return {"concat": [_part_value(kind, text) for kind, text in zip(types, parts, strict=True)]}


def _part_value(kind: str, text: str) -> Any:
    if kind == "inet_service":
        lo, _, hi = text.partition("-")
        return int(lo) if not hi else {"range": [int(lo), int(hi)]}
    if "/" in text:
        return _addr_value(text)
    if "-" in text:
        return {"range": text.split("-", 1)}
    return text


def _members(s: ir.SetObject) -> list[dict]:
    """The declared members, each marked with the comment that tells them from run-time ones
    (backends/nft/diff.py). A set may hold a million: one pass, the cycle collector paused."""
    declared = kname.NFT_DECLARED_ELEMENT
    with without_cycle_collection():
        return [{"elem": {"val": member_value(s.types, m.parts), "comment": declared} if m.timeout is None else
                 {"val": member_value(s.types, m.parts), "timeout": m.timeout, "comment": declared}}
                for m in s.members]


def _span(kind: str, text: str) -> tuple[int, int]:
    """The first and the last value a member of a single-part interval set covers (texts as lowered:
    canonical, checked)."""
    if kind == "inet_service":
        lo, _, hi = text.partition("-")
        return int(lo), int(hi or lo)
    if "-" in text:
        lo, hi = text.split("-", 1)
        return int(ipaddress.ip_address(lo)), int(ipaddress.ip_address(hi))
    address, _, length = text.partition("/")
    bits = 32 if kind == "ipv4_addr" else 128
    value = int.from_bytes(socket.inet_aton(address), "big") if bits == 32 else int(ipaddress.IPv6Address(address))
    return value, value | ((1 << (bits - int(length or bits))) - 1)


def _check_disjoint(s: ir.SetObject) -> None:
    """nft refuses members of an interval set that overlap (10.1.0.0/16 inside 10.0.0.0/8: "conflicting
    intervals specified", at no line of the policy), as block lists put together from several often do;
    name the two before anything is sent. iptables' hash:net takes them, so this is nft's error."""
    if not s.interval or len(s.types) != 1 or not any("/" in m.parts[0] or "-" in m.parts[0] for m in s.members):
        return  # without prefixes or ranges, members are distinct single values
    kind = s.types[0]
    reach, widest = -1, ""  # the highest value covered so far, and by which member
    for lo, hi, text in sorted((*_span(kind, m.parts[0]), m.parts[0]) for m in s.members):
        if lo <= reach:
            raise CompileError(BACKEND, "overlapping members of an interval set", s.origin,
                               f"{text} overlaps {widest} (nft refuses them as conflicting intervals); "
                               "drop one, or merge them into one prefix or range")
        if hi > reach:
            reach, widest = hi, text


def _set_commands(table: str, sets: tuple[ir.SetObject, ...]) -> list[dict]:
    cmds: list[dict] = []
    for s in sets:
        _check_disjoint(s)
        body: dict[str, Any] = {"family": FAMILY, "table": table, "name": s.name,
                                "type": s.types[0] if len(s.types) == 1 else list(s.types)}
        flags = [f for f, on in (("interval", s.interval), ("timeout", s.timeout is not None)) if on]
        if flags:
            body["flags"] = flags
        if s.timeout is not None:
            body["timeout"] = s.timeout
        cmds.append({"add": {"set": body}})
        if s.members:
            cmds.append({"add": {"element": {"family": FAMILY, "table": table, "name": s.name,
                                             "elem": _members(s)}}})
    return cmds


_VMAP_KEYS = {"iif": {"meta": {"key": "iifname"}}, "oif": {"meta": {"key": "oifname"}}}


def _verdict_map(s: ir.VerdictMap, rule: ir.Rule) -> list[dict]:
    if s.key in _VMAP_KEYS:
        key, values = _VMAP_KEYS[s.key], [_ifname(k) for k, _v in s.entries]
    else:
        key, values = _field(s.key, None, rule), [int(k) for k, _v in s.entries]
    data = [[value, _verdict(v, rule)[0]] for value, (_k, v) in zip(values, s.entries, strict=True)]
    return [{"vmap": {"key": key, "data": {"set": data}}}]




def _toggle_lookup(name: str) -> dict:
    return _eq({"meta": {"key": "nfproto"}}, "@" + kname.nft_toggle_set(name))


def _toggle(m: ir.Toggle, rule: ir.Rule) -> list[dict]:
    return [_toggle_lookup(m.name)]


# --------------------------------------------------------------- statements

def _counter(s: ir.Counter, rule: ir.Rule) -> list[dict]:
    return [{"counter": None}]


def _log(s: ir.Log, rule: ir.Rule) -> list[dict]:
    body: dict[str, Any] = {}
    if s.prefix is not None:
        body["prefix"] = s.prefix
    body["level"] = s.level
    return [{"log": body}]


def _notrack(s: ir.Notrack, rule: ir.Rule) -> list[dict]:
    return [{"notrack": None}]


def _set_helper(s: ir.SetCtHelper, rule: ir.Rule) -> list[dict]:
    return [{"ct helper": s.object_name}]


def _set_timeout(s: ir.SetCtTimeout, rule: ir.Rule) -> list[dict]:
    return [{"ct timeout": s.object_name}]


def _ct_set(key: str, value: int, direction: str | None = None) -> dict:
    ct: dict[str, Any] = {"key": key}
    if direction:
        ct["dir"] = direction
    return {"mangle": {"key": {"ct": ct}, "value": value}}


def _set_zone(s: ir.SetCtZone, rule: ir.Rule) -> list[dict]:
    return [_ct_set("zone", s.zone, None if s.direction == "both" else s.direction)]


def _set_mark(s: ir.SetCtMark, rule: ir.Rule) -> list[dict]:
    return [_ct_set("mark", s.value)]


def _set_label(s: ir.SetCtLabel, rule: ir.Rule) -> list[dict]:
    return [_ct_set("label", s.bit)]


def _tcp_syn(m: ir.TcpSyn, rule: ir.Rule) -> list[dict]:
    flags = {"&": [{"payload": {"protocol": "tcp", "field": "flags"}}, ["syn", "rst"]]}
    return [_eq(flags, "syn")]


def _clamp_mss(s: ir.ClampMss, rule: ir.Rule) -> list[dict]:
    # the kernel never raises an MSS through this statement (nft_exthdr_tcp_set_eval), like TCPMSS
    value: Any = {"rt": {"key": "mtu"}} if s.size is None else s.size
    return [{"mangle": {"key": {"tcp option": {"name": "maxseg", "field": "size"}}, "value": value}}]


def _set_dscp(s: ir.SetDscp, rule: ir.Rule) -> list[dict]:
    value = DSCP_NAMES.get(s.value, s.value)  # nft lists a named value by name: written the same way
    return [{"mangle": {"key": {"payload": {"protocol": _ADDR_PROTO[s.family], "field": "dscp"}}, "value": value}}]


def _set_meta_mark(s: ir.SetMark, rule: ir.Rule) -> list[dict]:
    return [{"mangle": {"key": {"meta": {"key": "mark"}}, "value": s.value}}]


def _connmark(s: ir.Connmark, rule: ir.Rule) -> list[dict]:
    ct, meta = {"ct": {"key": "mark"}}, {"meta": {"key": "mark"}}
    key, value = (ct, meta) if s.op == "save" else (meta, ct)
    return [{"mangle": {"key": key, "value": value}}]


def _queue(s: ir.Queue, rule: ir.Rule) -> list[dict]:
    body: dict[str, Any] = {"num": s.lo if s.lo == s.hi else {"range": [s.lo, s.hi]}}
    flags = [f for f, on in (("bypass", s.bypass), ("fanout", s.fanout)) if on]
    if flags:
        body["flags"] = flags
    return [{"queue": body}]


def _nat(s: ir.Nat, rule: ir.Rule) -> list[dict]:
    body: dict[str, Any] = {}
    if s.family is not None:
        body["family"] = _ADDR_PROTO[s.family]
        body["addr"] = s.addr_lo if s.addr_lo == s.addr_hi else {"range": [s.addr_lo, s.addr_hi]}
    if s.ports is not None:
        body["port"] = _port_value(s.ports)
    return [{s.kind: body or None}]


def _verdict(s: ir.Verdict, rule: ir.Rule) -> list[dict]:
    if s.kind in ("jump", "goto"):
        return [{s.kind: {"target": s.target}}]
    if s.kind == "reject":
        if s.reject_with == "tcp-reset":
            return [{"reject": {"type": "tcp reset"}}]
        return [{"reject": {"type": "icmpx", "expr": _ICMPX[s.reject_with or "port-unreachable"]}}]
    return [{s.kind: None}]


RENDERERS: dict[type, Callable[[Any, ir.Rule], list[dict]]] = {
    ir.NfProto: _nfproto, ir.L4Proto: _l4proto, ir.Addr: _addr, ir.Port: _port, ir.AddrType: _addr_type,
    ir.Iface: _iface, ir.CtState: _ctstate, ir.Length: _length, ir.Payload: _payload,
    ir.Signature: _signature, ir.Limit: _limit, ir.Toggle: _toggle, ir.TcpSyn: _tcp_syn,
    ir.SetLookup: _set_lookup, ir.VerdictMap: _verdict_map,
    ir.ClampMss: _clamp_mss, ir.SetDscp: _set_dscp, ir.SetMark: _set_meta_mark, ir.Connmark: _connmark, ir.Queue: _queue,
    ir.Counter: _counter, ir.Log: _log, ir.Notrack: _notrack, ir.SetCtHelper: _set_helper,
    ir.SetCtTimeout: _set_timeout, ir.SetCtZone: _set_zone, ir.SetCtMark: _set_mark, ir.SetCtLabel: _set_label,
    ir.Nat: _nat, ir.Verdict: _verdict,
}


def _render(node: Any, rule: ir.Rule) -> list[dict]:
    fn = RENDERERS.get(type(node))
    if fn is None:
        raise CompileError(BACKEND, type(node).__name__, rule.origin, "no nft equivalent")
    return fn(node, rule)


def _either_field(m: ir.Match) -> tuple[ir.Match, ...]:
    """nft has no 'source or destination' match: an `any` address or port is two alternatives."""
    if isinstance(m, ir.Addr) and m.field == "any":
        return (ir.Addr("saddr", m.family, m.networks), ir.Addr("daddr", m.family, m.networks))
    if isinstance(m, ir.Port) and m.field == "any":
        return (ir.Port("sport", m.ranges), ir.Port("dport", m.ranges))
    return (m,)


def rule_commands(table: str, chain: str, rule: ir.Rule) -> list[dict]:
    out = []
    for concrete in rule.split(_either_field):
        expr = [e for node in concrete.matches + concrete.statements for e in _render(node, concrete)]
        out.append({"add": {"rule": {"family": FAMILY, "table": table, "chain": chain,
                                     "comment": kname.rule_comment(concrete.id, concrete.comment), "expr": expr}}})
    return out


def rule_count(table: ir.Table) -> int:
    """How many rules table_commands writes for `table` (each policy rule split as rule_commands splits
    it, and the toggles' marker rules), without writing them."""
    return sum(len(r.split(_either_field)) for c in table.chains for r in c.rules) + len(table.toggles)


def _chain(table: str, chain: ir.Chain) -> dict:
    body: dict[str, Any] = {"family": FAMILY, "table": table, "name": chain.name}
    if chain.hook is not None:
        body.update(type=chain.hook.type, hook=chain.hook.hook, prio=chain.hook.priority,
                    policy=chain.policy or "accept")
    return {"add": {"chain": body}}


def _helper_object(table: str, obj) -> dict:
    if isinstance(obj, ir.CtTimeoutObject):
        return {"add": {"ct timeout": {"family": FAMILY, "table": table, "name": obj.name, "protocol": obj.protocol,
                                       "l3proto": obj.l3proto, "policy": dict(obj.policy)}}}
    return {"add": {"ct helper": {"family": FAMILY, "table": table, "name": obj.name, "type": obj.helper,
                                  "protocol": obj.protocol, "l3proto": obj.l3proto}}}


def _toggle_commands(table: str, toggles: tuple[ir.ToggleObject, ...]) -> list[dict]:
    if not toggles:
        return []
    cmds: list[dict] = []
    for t in toggles:
        cmds.append({"add": {"set": {"family": FAMILY, "table": table, "name": kname.nft_toggle_set(t.name),
                                     "type": "nf_proto"}}})
        if t.on:
            cmds.append({"add": {"element": {"family": FAMILY, "table": table, "name": kname.nft_toggle_set(t.name),
                                             "elem": list(TOGGLE_ON)}}})
    cmds.append({"add": {"chain": {"family": FAMILY, "table": table, "name": kname.NFT_TOGGLE_CHAIN}}})
    for t in toggles:
        cmds.append({"add": {"rule": {"family": FAMILY, "table": table, "chain": kname.NFT_TOGGLE_CHAIN,
                                      "comment": kname.toggle_comment(t.name, t.policy_on),
                                      "expr": [_toggle_lookup(t.name)]}}})
    return cmds


def table_commands(table: ir.Table) -> list[dict]:
    cmds: list[dict] = [{"add": {"table": {"family": FAMILY, "name": table.name}}}]
    cmds += [_helper_object(table.name, o) for o in table.helpers + table.timeouts]
    cmds += _toggle_commands(table.name, table.toggles)
    cmds += _set_commands(table.name, table.sets)
    cmds += [_chain(table.name, c) for c in table.chains]
    for chain in table.chains:
        for rule in chain.rules:
            cmds += rule_commands(table.name, chain.name, rule)
    return cmds


def generate(plan: ir.Plan) -> dict:
    """The libnftables JSON document that creates ctkit's table."""
    return {"nftables": [{"metainfo": {"json_schema_version": 1}}] + table_commands(plan.table)}
