"""Semantic checks that JSON Schema cannot express.

lint(policy) returns findings; errors make a policy invalid (exit 2), warnings
are printed and do not. Each finding names the place (JSON pointer and line).
"""
from __future__ import annotations

from collections import Counter
from dataclasses import replace
from typing import Iterable

from ctkit.errors import Problem
from ctkit.netfilter import BASE_CHAINS
from ctkit.policy.checks import PORTS, check_range
from ctkit.policy.load import capped, pointer_of
from ctkit.policy.model import (
    IPV4_ONLY_HELPERS,
    PORT_PROTOCOLS,
    AddrType,
    Chain,
    Network,
    Notrack,
    Policy,
    Rule,
    set_family,
)
from ctkit.terminal import excerpt, suggest
from ctkit.values import PortRange


def lint(policy: Policy) -> list[Problem]:
    problems: list[Problem] = []
    for check in (_duplicates, _chain_targets, _jump_loops, _unreachable_chains, _rules,
                  _notrack_entries, _helpers, _helper_untracked, _notrack_dropped, _notrack_icmp_errors,
                  _neighbour_discovery, _settings, _nat,
                  _toggles, _ct_templates, _sets):
        problems.extend(check(policy))
    problems = capped(problems)
    prefetch = getattr(policy.lines, "prefetch", None)
    if prefetch is not None:  # a JSON file's lines are found for all pointers in one pass
        prefetch(p.pointer for p in problems)
    return [replace(p, source=policy.source, line=policy.line_of(p.pointer)) for p in problems]


def errors_of(problems: Iterable[Problem]) -> list[Problem]:
    return [p for p in problems if p.severity == "error"]


def _error(pointer: str, message: str, hint: str | None = None) -> Problem:
    return Problem(pointer, message, "error", hint=hint)


def _warning(pointer: str, message: str, hint: str | None = None, code: str | None = None) -> Problem:
    return Problem(pointer, message, "warning", hint=hint, code=code)


# ------------------------------------------------------------------ structure

def _duplicates(policy: Policy):
    for kind, items, ptr in (("notrack", policy.notrack, "/name"), ("helper", policy.helpers, "/name"),
                             ("timeout", policy.timeouts, "/name"), ("zone", policy.zones, "/name")):
        counts = Counter(i.name for i in items)
        for item in items:
            if counts[item.name] > 1:
                yield _error(item.pointer + ptr, f"{kind} name {item.name!r} is used {counts[item.name]} times",
                             "names identify rules in the kernel, the audit and metrics: make them unique")
                counts[item.name] = 0  # report once
    rules = [r for c in policy.chains for r in c.rules] + list(policy.nat)
    counts = Counter(r.id for r in rules)
    for rule in rules:
        if counts[rule.id] > 1:
            yield _error(rule.pointer + "/name", f"rule name {rule.id!r} is used {counts[rule.id]} times",
                         "rule names must be unique across all chains")
            counts[rule.id] = 0


def _chain_targets(policy: Policy):
    user = [c.name for c in policy.chains if not c.is_base]
    for chain in policy.chains:
        if chain.policy and not chain.is_base:
            yield _error(chain.pointer + "/policy", f"user-defined chain {chain.name!r} cannot have a policy",
                         "only base chains (" + ", ".join(BASE_CHAINS) + ") have a default verdict; "
                         "end the chain with a rule instead")
        for rule in chain.rules:
            if not rule.target:
                continue
            key = "jump" if rule.jump else "goto"
            if rule.target in BASE_CHAINS:
                yield _error(rule.pointer + "/" + key, f"cannot {key} to base chain {excerpt(rule.target)}",
                             "jump and goto lead to user-defined chains")
            elif rule.target not in user:
                close = suggest(rule.target, user)
                hint = f"did you mean {close!r}?" if close else (
                    "defined user chains: " + ", ".join(user) if user else "no user-defined chain exists")
                yield _error(rule.pointer + "/" + key, f"{key} to unknown chain {excerpt(rule.target)}", hint)


def _edges(policy: Policy) -> dict[str, list[Rule]]:
    return {c.name: [r for r in c.rules if r.target and policy.chain(r.target) is not None]
            for c in policy.chains}


def _jump_loops(policy: Policy):
    edges = _edges(policy)
    state: dict[str, int] = {}  # 1 visiting, 2 done
    stack: list[tuple[str, Rule | None]] = []
    found: set[frozenset] = set()

    def visit(name: str):
        state[name] = 1
        for rule in edges.get(name, []):
            stack.append((name, rule))
            if state.get(rule.target) == 1:
                names = [n for n, _ in stack]
                cycle = names[names.index(rule.target):] + [rule.target]
                key = frozenset(cycle)
                if key not in found:
                    found.add(key)
                    yield _error(rule.pointer, "jump loop: " + " -> ".join(cycle),
                                 "the kernel rejects rulesets whose jumps form a loop")
            elif state.get(rule.target) is None:
                yield from visit(rule.target)
            stack.pop()
        state[name] = 2

    for chain in policy.chains:
        if chain.name not in state:
            yield from visit(chain.name)


def reachable_chains(policy: Policy, start: str) -> list[Chain]:
    """The chain named start and every chain reachable from it by jump/goto."""
    edges = _edges(policy)
    seen, todo = [], [start]
    while todo:
        name = todo.pop()
        if name in seen or policy.chain(name) is None:
            continue
        seen.append(name)
        todo.extend(r.target for r in edges.get(name, []))
    return [policy.chain(n) for n in seen]


def vmap_targets(rule: Rule) -> list[str]:
    return [v.split(" ", 1)[1] for _k, v in (rule.vmap[1] if rule.vmap else ()) if " " in v]


def _unreachable_chains(policy: Policy):
    targets = {r.target for c in policy.chains for r in c.rules if r.target}
    targets |= {t for c in policy.chains for r in c.rules for t in vmap_targets(r)}
    for chain in policy.chains:
        if not chain.is_base and chain.name not in targets:
            yield _warning(chain.pointer, f"user-defined chain {chain.name!r} is never reached",
                           "add a rule with jump or goto to it, or remove it")


# ---------------------------------------------------------------- rules

def _families(nets: tuple[Network, ...]) -> set[str]:
    return {"ipv4" if n.version == 4 else "ipv6" for n in nets}


def _family_conflicts(pointer: str, family: str | None, protocols: tuple[str, ...],
                      addrs: dict[str, tuple[Network, ...]]):
    """Address, family and ICMP combinations that can never match a packet (addrs: the positive lists;
    a negated one excludes only its own family's addresses, see _plain)."""
    fams = {k: _families(v) for k, v in addrs.items() if v}
    if family:
        for key, f in fams.items():
            if family not in f:
                yield _error(f"{pointer}/{key}", f"{key} has only {'/'.join(sorted(f))} addresses "
                             f"but family is {family}", "the rule could never match")
    if len(fams) == 2:
        a, b = fams.values()
        if not a & b:
            yield _error(pointer, "saddr and daddr are of different address families",
                         "a packet is either IPv4 or IPv6; the rule could never match")
        else:
            for key, f in fams.items():
                unused = f - (a & b)
                if unused:  # the rule is split per family; these addresses have no partner on the other side
                    other = "daddr" if key == "saddr" else "saddr"
                    yield _warning(f"{pointer}/{key}", f"the {'/'.join(sorted(unused))} addresses in {key} never "
                                   f"match: {other} has no {'/'.join(sorted(unused))} address",
                                   f"add {'/'.join(sorted(unused))} addresses to {other}, or move these "
                                   "to a rule of their own")
    allowed = set.intersection(*fams.values()) if fams else {"ipv4", "ipv6"}
    if family:
        allowed &= {family}
    if "icmp" in protocols and "ipv4" not in allowed:
        yield _error(pointer + "/protocols", "icmp is IPv4 only but the rule is IPv6 only", "use icmpv6")
    if "icmpv6" in protocols and "ipv6" not in allowed:
        yield _error(pointer + "/protocols", "icmpv6 is IPv6 only but the rule is IPv4 only", "use icmp")


def _plain(entry, addrs: dict[str, tuple[Network, ...]]) -> dict[str, tuple[Network, ...]]:
    """The address lists of an entry that are not negated."""
    return {k: v for k, v in addrs.items() if k not in entry.negated}


#: every address type a policy can name (the routing table has more: unreachable, blackhole, ...)
_ADDR_TYPES = frozenset({"local", "unicast", "multicast", "broadcast"})


def _types_admitted(t: AddrType | None) -> frozenset[str]:
    if t is None:
        return _ADDR_TYPES
    return _ADDR_TYPES - set(t.types) if t.negated else frozenset(t.types)


def _types_overlap(a: AddrType | None, b: AddrType | None) -> bool:
    return bool(_types_admitted(a) & _types_admitted(b))


def _complement(ranges: tuple[PortRange, ...]) -> tuple[PortRange, ...]:
    """The ports outside these ranges, as ranges (0-65535: nft's != matches port 0 too)."""
    out, lo = [], 0
    for r in sorted(ranges, key=lambda r: (r.lo, r.hi)):
        if r.lo > lo:
            out.append(PortRange(lo, r.lo - 1))
        lo = max(lo, r.hi + 1)
    if lo <= 65535:
        out.append(PortRange(lo, 65535))
    return tuple(out)


def _ports_of(entry, key: str) -> tuple[PortRange, ...]:
    """An entry's ports under key as positive ranges: a negated list is its complement (exact)."""
    ranges = getattr(entry, key)
    return _complement(ranges) if ranges and key in entry.negated else ranges


def _nets_may_overlap(a: tuple[Network, ...], b: tuple[Network, ...], a_neg: bool = False, b_neg: bool = False) -> bool:
    """Can an address be in both lists (a negated list: outside all of its networks)?"""
    if not a or not b or (a_neg and b_neg):
        return True
    if not (a_neg or b_neg):
        return _nets_overlap(a, b)
    pos, neg = (b, a) if a_neg else (a, b)
    return any(not any(x.version == y.version and x.subnet_of(y) for y in neg) for x in pos)


def _port_protocols(pointer: str, protocols: tuple[str, ...], has_ports: bool, key: str):
    if not has_ports:
        return
    if not protocols:
        yield _error(f"{pointer}/{key}", f"{key} needs a protocol",
                     "add protocol or protocols: one of " + ", ".join(sorted(PORT_PROTOCOLS)))
    elif not set(protocols) <= PORT_PROTOCOLS:
        bad = ", ".join(sorted(set(protocols) - PORT_PROTOCOLS))
        yield _error(f"{pointer}/{key}", f"{key} given but {bad} has no ports",
                     "ports exist for " + ", ".join(sorted(PORT_PROTOCOLS)))


def _is_catch_all(rule: Rule) -> bool:
    return (rule.action in ("accept", "drop", "reject") or bool(rule.goto)) and not any((
        rule.protocols, rule.family, rule.saddr, rule.daddr, rule.sport, rule.dport, rule.iif,
        rule.oif, rule.ct_state, rule.length, rule.payload, rule.signature, rule.limit,
        rule.when, rule.saddr_set, rule.daddr_set, rule.sport_set, rule.dport_set, rule.match_set, rule.vmap,
        rule.saddr_type, rule.daddr_type))


def _rules(policy: Policy):
    for chain in policy.chains:
        shadowed_by = None
        for rule in chain.rules:
            p = rule.pointer
            if shadowed_by is not None:
                yield _warning(p, "rule is never reached",
                               f"rule {shadowed_by.id!r} above it decides every packet")
            elif _is_catch_all(rule) and chain.rules[-1] is not rule:
                shadowed_by = rule
            yield from _port_protocols(p, rule.protocols, bool(rule.sport), "sport")
            yield from _port_protocols(p, rule.protocols, bool(rule.dport), "dport")
            yield from _family_conflicts(p, rule.family, rule.protocols,
                                         _plain(rule, {"saddr": rule.saddr, "daddr": rule.daddr}))
            yield from _broadcast_family(p, rule)
            if rule.reject_with and rule.action != "reject":
                yield _error(p + "/reject_with", "reject_with needs action reject")
            if rule.reject_with == "tcp-reset" and rule.protocols != ("tcp",):
                yield _error(p + "/reject_with", "tcp-reset needs protocol tcp",
                             "add \"protocol\": \"tcp\", or use an ICMP type such as port-unreachable")
            yield from _payload_checks(p, rule)
            yield from _mangle_checks(p, rule, chain)
            if rule.iif and chain.name == "output":
                yield _error(p + "/iif", "iif never matches in chain output",
                             "packets this host sends have no input interface; use oif")
            if rule.oif and chain.name in ("input", "prerouting"):
                yield _error(p + "/oif", f"oif never matches in chain {chain.name}",
                             "the output interface is not known yet; use iif")


def _mangle_checks(p: str, rule: Rule, chain: Chain):
    if rule.action == "queue" and rule.queue is None:
        yield _error(p + "/queue", "action queue needs queue", "e.g. \"queue\": {\"num\": 0, \"bypass\": true}")
    if rule.queue is not None and rule.action != "queue":
        yield _error(p + "/queue", "queue needs action queue")
    if rule.queue is not None and rule.queue.fanout and rule.queue.lo == rule.queue.hi:
        yield _error(p + "/queue/fanout", "fanout needs a range of queues")
    if rule.mss is not None and rule.protocols != ("tcp",):
        yield _error(p + "/mss", "mss needs protocol tcp", "add \"protocol\": \"tcp\"")
    if rule.mss == 0 and chain.name in ("input", "prerouting"):
        yield _error(p + "/mss", f"clamping to the path MTU needs a route, which chain {chain.name} has not "
                     "looked up yet", "use chain forward, output or postrouting")


def _payload_checks(p: str, rule: Rule):
    for i, m in enumerate(rule.payload):
        if m.mask is not None and len(m.mask) != len(m.value):
            yield _error(f"{p}/payload/{i}/mask", f"mask has {len(m.mask)} bytes, hex has {len(m.value)}",
                         "give the mask the same length as the value")
        elif m.mask is not None and any(v & ~k & 0xFF for v, k in zip(m.value, m.mask, strict=True)):
            yield _error(f"{p}/payload/{i}/hex", "hex has bits set that the mask clears",
                         "the match could never hold: clear those bits in hex")
    sig = rule.signature
    if sig is not None and sig.start > sig.end:
        yield _error(f"{p}/signature/to", f"to ({sig.end}) is before from ({sig.start})")
    if sig is not None and sig.end - sig.start + 1 < len(sig.pattern) and sig.end != 65535:
        yield _error(f"{p}/signature", f"the window from {sig.start} to {sig.end} is shorter than the "
                     f"{len(sig.pattern)}-byte signature", "the match could never hold")


# --------------------------------------------------------------- conntrack

def _notrack_entries(policy: Policy):
    for n in policy.notrack:
        p = n.pointer
        yield from _port_protocols(p, n.protocols, bool(n.ports), "ports")
        yield from _family_conflicts(p, n.family, n.protocols,
                                     _plain(n, {"saddr": n.saddr, "daddr": n.daddr, "peers": n.peers}))
        yield from _broadcast_family(p, n)
        if n.iif and n.direction == "out":
            yield _error(p + "/iif", "iif never matches packets this host sends (direction out)")
        if n.oif and n.direction == "in":
            yield _error(p + "/oif", "oif never matches arriving packets (direction in)")
        if n.direction == "both" and bool(n.iif) != bool(n.oif):
            key = "iif" if n.iif else "oif"
            yield _warning(p + "/" + key, f"{key} narrows only one direction of the exemption",
                           "give both iif and oif, so the same flows are untracked both ways")
        if n.direction == "both" and (n.saddr or n.daddr):
            key = "saddr" if n.saddr else "daddr"
            yield _warning(p + "/" + key, f"{key} is matched literally in both directions, so replies "
                           "do not match and the exemption is not symmetric",
                           "use peers for the other side's addresses")
        if not any((n.protocols, n.ports, n.peers, n.saddr, n.daddr, n.iif, n.oif, n.saddr_type, n.daddr_type)):
            yield _warning(p, "this exemption untracks all traffic",
                           "stateful filtering, NAT and helpers stop working for every flow")


def _ranges_overlap(a: tuple[PortRange, ...], b: tuple[PortRange, ...]) -> bool:
    if not a or not b:
        return True
    return any(x.lo <= y.hi and y.lo <= x.hi for x in a for y in b)


def _nets_overlap(a: tuple[Network, ...], b: tuple[Network, ...]) -> bool:
    if not a or not b:
        return True
    return any(x.version == y.version and x.overlaps(y) for x in a for y in b)


def _helpers(policy: Policy):
    for h in policy.helpers:
        p = h.pointer
        if h.helper in IPV4_ONLY_HELPERS:
            if h.family == "ipv6":
                yield _error(p + "/family", f"the kernel's {h.helper} helper is IPv4 only")
            for key in ("saddr", "daddr"):
                if any(n.version == 6 for n in getattr(h, key)):
                    yield _error(p + "/" + key, f"the kernel's {h.helper} helper is IPv4 only",
                                 "remove the IPv6 addresses")
        yield from _family_conflicts(p, h.family, (), _plain(h, {"saddr": h.saddr, "daddr": h.daddr}))
        yield from _broadcast_family(p, h)
        if not h.daddr and h.direction in ("in", "both"):
            yield _warning(p, f"helper {h.helper!r} is assigned for every destination address",
                           "name the servers that need it in daddr: a helper opens related flows "
                           "that an attacker can trigger", code="helpers.all-addresses")


def _helper_untracked(policy: Policy):
    for h in policy.helpers:
        for n in policy.notrack:
            if n.protocols and h.protocol not in n.protocols:
                continue
            if not _ranges_overlap(h.ports, _ports_of(n, "ports")):
                continue
            if h.family and n.family and h.family != n.family:
                continue
            if not (_may_share(h, "daddr", n, ("peers", "daddr", "saddr"))
                    and _may_share(h, "saddr", n, ("peers", "saddr", "daddr"))):
                continue
            if not (_types_overlap(h.daddr_type, n.daddr_type) and _types_overlap(h.saddr_type, n.saddr_type)):
                continue
            yield _error(h.pointer + "/ports",
                         f"helper {h.name!r} port is untracked by notrack {n.name!r}",
                         "untracked flows get no helper: remove the port from one of them")


def _may_share(h, key: str, n: Notrack, keys: tuple[str, ...]) -> bool:
    """Can the helper's addresses under key be among the notrack entry's (its lists under keys, the
    positive ones taken together as before, each negated one on its own)?"""
    mine, neg = getattr(h, key), key in h.negated
    pos = tuple(x for k in keys if k not in n.negated for x in getattr(n, k))
    return _nets_may_overlap(mine, pos, neg) and all(
        _nets_may_overlap(mine, getattr(n, k), neg, True) for k in keys if k in n.negated)


def _broadcast_family(pointer: str, entry, family: str | None = None):
    """broadcast addresses exist only in IPv4: an entry that asks for them must be IPv4 (excluding them,
    with not, is harmless: in IPv6 it excludes nothing)."""
    family = family or entry.family
    for key in ("saddr_type", "daddr_type"):
        t = getattr(entry, key)
        if t is not None and "broadcast" in t.types and not t.negated and family != "ipv4":
            yield _error(f"{pointer}/{key}", "broadcast addresses exist only in IPv4",
                         'add "family": "ipv4": IPv6 has none, and ip6tables cannot match the type')


# ---------------------------------------------- do-not-track: what the filter has to accept
#
# An untracked packet is accepted only by a rule that matches ct state untracked (or no
# ct state at all): `established` never matches it. A notrack entry's ports match the
# source and the destination port, so a flow of it has up to four halves the filter
# sees: as a server, requests in input and replies in output; as a client (this host's
# own connections to the port), requests in output and replies in input.

#: (role, chain) -> (which port of the packet is the entry's port, which address is the peer's)
_HALVES = {
    ("server", "input"): ("dport", "saddr"),
    ("server", "output"): ("sport", "daddr"),
    ("client", "output"): ("dport", "daddr"),
    ("client", "input"): ("sport", "saddr"),
}
_OTHER_PORT = {"sport": "dport", "dport": "sport"}
#: the peer's side of a flow uses an ephemeral port: Linux's default ip_local_port_range
_EPHEMERAL = PortRange(32768, 60999)
_ICMP_OF = {"ipv4": "icmp", "ipv6": "icmpv6"}


def _spans(ranges: tuple[PortRange, ...], want: PortRange) -> bool:
    return not ranges or any(r.lo <= want.lo and want.hi <= r.hi for r in ranges)


def _accepts_untracked(rule: Rule, n: Notrack) -> bool:
    """Does `rule` accept untracked packets of `n`'s protocols and family at all (ports and addresses aside)?"""
    if rule.action != "accept" or (rule.ct_state and "untracked" not in rule.ct_state):
        return False
    if rule.protocols and n.protocols and not set(rule.protocols) & set(n.protocols):
        return False
    return not (rule.family and n.family and rule.family != n.family)


def _accepts_half(rule: Rule, n: Notrack, role: str, chain: str) -> bool:
    """Can `rule` accept the untracked packets of `n`'s flows in this half (role, chain)?"""
    if not _accepts_untracked(rule, n):
        return False
    if (rule.iif and rule.iif != n.iif) or (rule.oif and rule.oif != n.oif):
        return False  # a loopback accept does not accept the peers' traffic
    port_key, addr_key = _HALVES[role, chain]
    if n.ports and not (_ranges_overlap(_ports_of(rule, port_key), _ports_of(n, "ports"))
                        and _spans(_ports_of(rule, _OTHER_PORT[port_key]), _EPHEMERAL)):
        return False
    return _nets_may_overlap(getattr(rule, addr_key), n.peers, addr_key in rule.negated, "peers" in n.negated)


def _accepts_transit(rule: Rule, n: Notrack) -> bool:
    """Can `rule` (in forward) accept untracked packets of `n`'s forwarded flows, one way or the other?"""
    if not _accepts_untracked(rule, n):
        return False
    return not n.ports or any(_ranges_overlap(_ports_of(rule, k), _ports_of(n, "ports")) for k in ("sport", "dport"))


def _paths(n: Notrack) -> list[str]:
    """The filter chains an entry's untracked packets reach: from prerouting, input when they may be
    addressed to this host and forward when they cannot be (daddr_type excludes local: transit, the router's
    case; an entry that does not say is judged on input, as a host's); from output, output."""
    out = []
    if "in" in _dirs(n.direction):
        out.append("input" if "local" in _types_admitted(n.daddr_type) else "forward")
    if "out" in _dirs(n.direction):
        out.append("output")
    return out


def _chain_rules(policy: Policy, name: str) -> list[Rule]:
    return [r for c in reachable_chains(policy, name) for r in c.rules]


def _drops_by_default(policy: Policy, name: str) -> bool:
    chain = policy.chain(name)
    return chain is not None and chain.policy == "drop"


def _ports_text(n: Notrack) -> str:
    return ",".join(str(p) for p in n.ports)


def _proto_json(n: Notrack) -> str:
    if len(n.protocols) == 1:
        return f'"protocol": "{n.protocols[0]}", '
    return ('"protocols": [' + ", ".join(f'"{p}"' for p in n.protocols) + "], ") if n.protocols else ""


def _half_rule(n: Notrack, role: str, chain: str) -> str:
    """The rule that accepts a half, as the user would write it in the policy."""
    port_key, addr_key = _HALVES[role, chain]
    ports = ", ".join(str(p.lo) if p.lo == p.hi else f'"{p}"' for p in n.ports)
    text = '{"ct_state": ["untracked"], ' + _proto_json(n)
    if n.ports:
        text += f'"{port_key}": ' + _negated_json(ports if len(n.ports) == 1 else f"[{ports}]", "ports" in n.negated)
    if n.peers:
        peers = "[" + ", ".join(f'"{a}"' for a in n.peers[:2]) + (", ..." if len(n.peers) > 2 else "") + "]"
        text += f'"{addr_key}": ' + _negated_json(peers, "peers" in n.negated)
    return text + '"action": "accept"}'


def _negated_json(value: str, negated: bool) -> str:
    return (f'{{"not": {value}}}' if negated else value) + ", "


def _may_connect(policy: Policy, n: Notrack, client_out: bool, output: list[Rule]) -> bool:
    """Does the output chain let this host open connections to `n`'s ports? When `n` untracks output
    too, its connection attempts are untracked (`client_out`: the filter accepts those); else tracked."""
    if not _drops_by_default(policy, "output"):
        return True
    if "out" in _dirs(n.direction):
        return client_out
    return any(r.action == "accept" and (not r.ct_state or "new" in r.ct_state) and not r.oif and not r.sport
               and (not r.protocols or not n.protocols or set(r.protocols) & set(n.protocols))
               and _ranges_overlap(_ports_of(r, "dport"), _ports_of(n, "ports")) for r in output)


_HALF_WORDS = {("server", "input"): "requests to port", ("server", "output"): "replies from port",
               ("client", "output"): "own connections to port", ("client", "input"): "replies from port"}


def _notrack_dropped(policy: Policy):
    if not policy.notrack:
        return
    rules = {c: _chain_rules(policy, c) for c in ("input", "output", "forward")}  # once: there may be thousands
    for n in policy.notrack:
        chains = [c for c in _paths(n) if c != "forward"]
        if ("forward" in _paths(n) and _drops_by_default(policy, "forward")
                and not any(_accepts_transit(r, n) for r in rules["forward"])):
            yield _warning(n.pointer, f"untracked traffic of {n.name!r} is dropped by chain 'forward'",
                           "forwarded packets of it never match established: add to chain 'forward' rules "
                           "without ct_state that accept both directions")
        accepted = {(role, c): any(_accepts_half(r, n, role, c) for r in rules[c])
                    for role, c in _HALVES if c in chains}
        for base in chains:
            if not _drops_by_default(policy, base):
                continue
            other = "output" if base == "input" else "input"
            missing = [role for role in ("server", "client") if not accepted[role, base]]
            mirrored = [role for role in missing if accepted.get((role, other))]
            for role in mirrored:
                yield _warning(n.pointer, f"untracked traffic of {n.name!r} is accepted in chain {other!r} but not "
                               f"in chain {base!r}, which drops the other half of the same flows "
                               f"({_HALF_WORDS[role, base]} {_ports_text(n) or 'any'})",
                               f"add to chain {base!r}: {_half_rule(n, role, base)}")
            if len(missing) == 2 and not mirrored:
                yield _warning(n.pointer, f"untracked traffic of {n.name!r} is dropped by chain {base!r}",
                               f"chain {base!r} drops by default and no rule accepts ct_state untracked "
                               "for this traffic; add {\"ct_state\": [\"untracked\"], ..., "
                               "\"action\": \"accept\"}")
            elif (base == "input" and "client" in missing and "client" not in mirrored and n.ports
                  and _may_connect(policy, n, accepted.get(("client", "output"), False), rules["output"])):
                ports = _ports_text(n)
                yield _warning(n.pointer, f"this host's own connections to port {ports} are untracked by {n.name!r} "
                               f"too (its ports match source and destination), and chain 'input' drops their "
                               f"replies (source port {ports})",
                               f"add to chain 'input': {_half_rule(n, 'client', 'input')}")


# ------------------------------------------------------------ what a packet meets first

def _decisive(rule: Rule) -> bool:
    """Does the rule decide every packet it can match (no narrowing beyond protocol, family, ct state)?"""
    return not any((rule.saddr, rule.daddr, rule.sport, rule.dport, rule.iif, rule.oif, rule.length,
                    rule.payload, rule.signature, rule.limit, rule.when, rule.saddr_set, rule.daddr_set,
                    rule.sport_set, rule.dport_set, rule.match_set, rule.vmap, rule.saddr_type, rule.daddr_type))


def _first_verdict(policy: Policy, name: str, protocol: str, family: str, state: str,
                   seen: frozenset = frozenset()) -> tuple[str | None, Rule | None]:
    """What chain `name` does with every packet of `protocol`/`family` in ct state `state`:
    ("accept" | "drop" | "return", the rule) for the first rule that decides all of them, (None, None)
    when the chain's rules leave it to the caller (or to the base chain's policy)."""
    chain = policy.chain(name)
    if chain is None or name in seen:
        return None, None
    for rule in chain.rules:
        if rule.protocols and protocol not in rule.protocols:
            continue
        if (rule.family and rule.family != family) or (rule.ct_state and state not in rule.ct_state):
            continue
        if rule.target and not rule.vmap:
            verdict, by = _first_verdict(policy, rule.target, protocol, family, state, seen | {name})
            if verdict in ("accept", "drop") and _decisive(rule):
                return verdict, by
            if rule.goto and _decisive(rule):
                return None, None
            continue
        if not _decisive(rule):
            continue
        if rule.action == "accept":
            return "accept", rule
        if rule.action in ("drop", "reject"):
            return "drop", rule
        if rule.action == "return":
            return "return", rule
    return None, None


def _dropped_by(policy: Policy, name: str, protocol: str, family: str, state: str) -> tuple[bool, Rule | None]:
    """(True, rule or None for the policy) when default-drop chain `name` drops all such packets."""
    if not _drops_by_default(policy, name):
        return False, None
    verdict, rule = _first_verdict(policy, name, protocol, family, state)
    if verdict == "accept":
        return False, None
    return True, rule if verdict == "drop" else None


def _notrack_icmp_errors(policy: Policy):
    """ICMP errors about an untracked flow are related to no conntrack entry: they arrive as ct state invalid."""
    verdicts = {(c, f): _dropped_by(policy, c, _ICMP_OF[f], f, "invalid")
                for c in ("input", "forward") for f in _ICMP_OF} if policy.notrack else {}
    for n in policy.notrack:
        if not n.protocols or not set(n.protocols) & PORT_PROTOCOLS:
            continue
        # errors about the host's own flows arrive on input; about the flows it forwards, on forward
        chain = "forward" if _paths(n) == ["forward"] else "input"
        families = _families(sum(_plain(n, {"p": n.peers, "s": n.saddr, "d": n.daddr}).values(), ())) or {"ipv4", "ipv6"}
        if n.family:
            families &= {n.family}
        lost = [(_ICMP_OF[f], verdicts[chain, f][1]) for f in sorted(families) if verdicts[chain, f][0]]
        if not lost:
            continue
        protos = [p for p, _ in lost]
        droppers = list(dict.fromkeys(rule for _, rule in lost))  # in the order of the protocols they drop
        where = " and ".join(
            (f"rule {rule.id!r} of chain {chain!r}" if rule else f"chain {chain!r} (its policy)") + " drops "
            + " and ".join(p for p, r in lost if r is rule) for rule in droppers)
        first = next((rule for _, rule in lost if rule is not None), None)
        before = f" before rule {first.id!r}" if first else ""
        accept = ('{"protocols": ["icmp", "icmpv6"]' if len(protos) == 2 else f'{{"protocol": "{protos[0]}"')
        yield _warning(n.pointer, f"ICMP errors about the untracked flows of {n.name!r} (unreachable, packet too big) "
                       f"are related to no conntrack entry: they arrive as ct_state invalid and {where} ones",
                       f"add{before}, without ct_state: {accept}, \"action\": \"accept\"}}")


def _neighbour_discovery(policy: Policy):
    """IPv6 neighbour discovery is untracked: a default-drop chain needs an accept for it."""
    for name in ("input", "output"):
        dropped, rule = _dropped_by(policy, name, "icmpv6", "ipv6", "untracked")
        if not dropped:
            continue
        chain = policy.chain(name)
        by = f"rule {rule.id!r}" if rule else "by its policy"
        before = f" before rule {rule.id!r}" if rule else ""
        yield _warning(rule.pointer if rule else chain.pointer + "/policy",
                       f"chain {name!r} drops IPv6 neighbour discovery ({by}): it is untracked, so no ct_state "
                       "rule accepts it, and IPv6 stops working",
                       f'add{before}: {{"name": "icmpv6-nd", "protocol": "icmpv6", "action": "accept"}}')


def _settings(policy: Policy):
    for s in policy.settings:
        if s.key == "helper_autoassign" and s.value:
            yield _warning(s.pointer, "automatic helper assignment is unsafe and gone since Linux 6.0",
                           "set helper_autoassign to false and assign helpers explicitly in helpers")


# --------------------------------------------------------------------- nat

_SOURCE_NAT = ("snat", "masquerade")


def _nat(policy: Policy):
    for n in policy.nat:
        p = n.pointer
        if n.type in ("snat", "dnat") and n.to_addr is None:
            yield _error(p, f"{n.type} needs to_addr", "the address (or range first-last) to translate to")
        if n.type in ("masquerade", "redirect") and n.to_addr is not None:
            yield _error(p + "/to_addr", f"{n.type} takes no to_addr",
                         "masquerade uses the outgoing interface's address, redirect this host's; "
                         "use snat or dnat to name an address")
        yield from _port_protocols(p, n.protocols, bool(n.sport), "sport")
        yield from _port_protocols(p, n.protocols, bool(n.dport), "dport")
        yield from _port_protocols(p, n.protocols, n.to_port is not None, "to_port")
        if n.iif and n.type in _SOURCE_NAT:
            yield _error(p + "/iif", f"{n.type} runs at postrouting, where iptables has no input interface",
                         "match the source address instead, or use oif")
        if n.oif and n.type not in _SOURCE_NAT:
            yield _error(p + "/oif", f"{n.type} runs at prerouting, before the output interface is known",
                         "use iif")
        family = n.family
        if n.to_addr is not None:
            if family and family != n.to_addr.family:
                yield _error(p + "/to_addr", f"to_addr is {n.to_addr.family} but family is {family}")
            family = n.to_addr.family
        yield from _family_conflicts(p, family, n.protocols, _plain(n, {"saddr": n.saddr, "daddr": n.daddr}))
        yield from _broadcast_family(p, n, family)


# ----------------------------------------------------------------- toggles

def _toggles(policy: Policy):
    names = [t.name for t in policy.toggles]
    used = set()
    for chain in policy.chains:
        for rule in chain.rules:
            if rule.when is None:
                continue
            used.add(rule.when)
            if rule.when not in names:
                close = suggest(rule.when, names)
                yield _error(rule.pointer + "/when", f"unknown toggle {rule.when!r}",
                             f"did you mean {close!r}?" if close else
                             "declare it in toggles, e.g. \"toggles\": {\"" + rule.when + "\": false}")
    for t in policy.toggles:
        if t.name not in used:
            yield _warning(t.pointer, f"toggle {t.name!r} guards no rule", "add \"when\": \"" + t.name
                           + "\" to the rules it should switch, or remove it")


# ----------------------------------------------------- conntrack templates

def _dirs(direction: str) -> set[str]:
    return {"in", "out"} if direction == "both" else {direction}


def _template_entries(policy: Policy):
    """(kind, entry, protocols, ports, directions) of everything that sets a conntrack template."""
    for t in policy.timeouts:
        yield "timeout", t, (t.protocol,), _ports_of(t, "ports"), _dirs(t.direction)
    for z in policy.zones:
        yield "zone", z, z.protocols, _ports_of(z, "ports"), _dirs(z.direction)
    for h in policy.helpers:
        yield "helper", h, (h.protocol,), h.ports, _dirs(h.direction)


def _ct_templates(policy: Policy):
    for z in policy.zones:
        p = z.pointer
        yield from _port_protocols(p, z.protocols, bool(z.ports), "ports")
        yield from _family_conflicts(p, z.family, z.protocols, _plain(z, {"saddr": z.saddr, "daddr": z.daddr}))
        yield from _broadcast_family(p, z)
        if z.iif and z.direction == "out":
            yield _error(p + "/iif", "iif never matches packets this host sends (direction out)")
        if z.oif and z.direction == "in":
            yield _error(p + "/oif", "oif never matches arriving packets (direction in)")
    for t in policy.timeouts:
        yield from _family_conflicts(t.pointer, t.family, (t.protocol,), _plain(t, {"saddr": t.saddr, "daddr": t.daddr}))
        yield from _broadcast_family(t.pointer, t)
    entries = list(_template_entries(policy))
    for i, (kind_a, a, protos_a, ports_a, dirs_a) in enumerate(entries):
        for kind_b, b, protos_b, ports_b, dirs_b in entries[i + 1:]:
            if kind_a == kind_b == "helper" or not dirs_a & dirs_b:
                continue
            if protos_a and protos_b and not set(protos_a) & set(protos_b):
                continue
            if not (_ranges_overlap(ports_a, ports_b)
                    and all(_nets_may_overlap(getattr(a, k), getattr(b, k), k in a.negated, k in b.negated)
                            and _types_overlap(getattr(a, k + "_type"), getattr(b, k + "_type"))
                            for k in ("saddr", "daddr"))):
                continue
            yield _error(b.pointer, f"{kind_b} {b.name!r} may match the same flows as {kind_a} {a.name!r}",
                         "a flow gets one conntrack template (iptables: the first CT target; nft: the first "
                         "ct zone/timeout set before conntrack), so one of them would not apply: make their "
                         "ports or addresses disjoint")


# -------------------------------------------------------------------- sets

_ADDR_KEYS, _PORT_KEYS = ("saddr", "daddr"), ("sport", "dport")


def _sets(policy: Policy):
    sets = {s.name: s for s in policy.sets}
    for s in policy.sets:
        if len({t for t in s.types if t != "inet_service"}) > 1:
            yield _error(s.pointer + "/type", "a member cannot hold IPv4 and IPv6 addresses at once")
    for chain in policy.chains:
        for rule in chain.rules:
            p = rule.pointer
            refs = [(k, getattr(rule, k + "_set")) for k in _ADDR_KEYS + _PORT_KEYS]
            if rule.match_set:
                refs.append(("match_set", rule.match_set[0]))
            for key, name in refs:
                if name is None:
                    continue
                s = sets.get(name)
                if s is None:
                    close = suggest(name, sets)
                    yield _error(f"{p}/{key}", f"unknown set {name!r}", f"did you mean {close!r}?" if close
                                 else "declare it in sets")
                    continue
                keys = rule.match_set[1] if key == "match_set" else (key,)
                if len(keys) != len(s.types):
                    yield _error(f"{p}/{key}", f"set {name!r} has {len(s.types)} part(s), the match gives {len(keys)}")
                    continue
                for k, t in zip(keys, s.types, strict=True):
                    if (k in _ADDR_KEYS) != (t != "inet_service"):
                        yield _error(f"{p}/{key}", f"{k} cannot be looked up in the {t} part of set {name!r}")
                if any(k in _PORT_KEYS for k in keys):
                    yield from _port_protocols(p, rule.protocols, True, key)
                fam = set_family(s.types)
                if fam and rule.family and fam != rule.family:
                    yield _error(f"{p}/{key}", f"set {name!r} holds {fam} addresses but family is {rule.family}")
            if rule.vmap is not None:
                key, entries = rule.vmap
                if rule.action or rule.jump or rule.goto:
                    yield _error(p + "/vmap", "vmap decides the verdict: it excludes action, jump and goto")
                if key in _PORT_KEYS:
                    yield from _port_protocols(p, rule.protocols, True, "vmap")
                    for value, _v in entries:
                        # one port, read by the one port parser ("²".isdigit() is True)
                        bad = ("", "a map key is one port") if "-" in value else check_range(value, PORTS)
                        if bad is not None:
                            yield _error(f"{p}/vmap/map{pointer_of([value])}", f"{excerpt(value)} is not a port",
                                         bad[1])
                for value, verdict in entries:
                    target = verdict.split(" ", 1)[1] if " " in verdict else None
                    if target is not None and (policy.chain(target) is None or target in BASE_CHAINS):
                        yield _error(f"{p}/vmap/map{pointer_of([value])}",
                                     f"{verdict!r}: no user-defined chain {target!r}")
