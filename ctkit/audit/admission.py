"""Would the policy admit this flow if it started now? An interpreter over the IR.

Used by the audit to find established flows that a tightened policy no longer
admits, and by `ctkit explain` (ctkit/explain.py) to walk a packet through the
compiled policy. A match the flow cannot answer (conntrack keeps no interface)
makes the audit's answer "unknown" unless a decision came before it: the audit
never flushes a flow it cannot judge.

`run_chain` is the one walk: it records every rule that matched, as the
kernel's trace does. Without a `Context` (the audit) it judges only the
matches it always did, and a rule it cannot judge ends the walk as unknown;
with one (explain) it also judges toggles, declared set members, lengths, SYN
and limits, and a rule it cannot judge is recorded as undecided and passed.
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from ctkit.compile import ir

UNKNOWN = "unknown"
#: the deepest jump chain walked (the policy's loop check keeps real ones far shallower)
MAX_DEPTH = 16


@dataclass(frozen=True)
class Flow:
    family: str  # ipv4 | ipv6
    protocol: str  # tcp udp icmp icmpv6 ...
    saddr: str
    daddr: str
    sport: int | None = None
    dport: int | None = None
    ct_state: str = "new"
    iif: str | None = None
    oif: str | None = None
    not_ifaces: tuple[str, ...] = ()  # interfaces known not to be iif/oif (e.g. lo, for a remote peer)
    length: int | None = None  # the IP packet's length, when known
    syn: bool | None = None  # a TCP segment with SYN set and RST clear, when known
    #: whether the source (destination) address is one of the host's own, when known (explain knows it
    #: from the path: input is addressed to the host, output comes from it, forward is neither)
    saddr_local: bool | None = None
    daddr_local: bool | None = None


@dataclass(frozen=True)
class Context:
    """What explain knows beyond the flow: the toggles' states, the named sets' members, and that a
    rate limit is taken to have a token (the first packet of a quiet flow)."""
    toggles: dict = field(default_factory=dict)  # name -> on
    sets: dict = field(default_factory=dict)  # name -> ir.SetObject
    limits_pass: bool = True


@dataclass(frozen=True)
class Event:
    """One rule that matched (or could not be judged), or the end of a chain, in the kernel trace's terms.

    verdict: continue | accept | drop | reject | queue | jump X | goto X | return | policy accept|drop |
    undecided (rule is not None: the rule might match; the walk went on as if it did not)."""
    chain: str
    rule: ir.Rule | None
    verdict: str
    reason: str | None = None  # why a rule is undecided


@dataclass(frozen=True)
class ChainRun:
    events: tuple[Event, ...]
    outcome: str | None  # accept | drop | reject | queue | unknown | None: fell off the end (or returned)


def _in_networks(text: str | None, networks) -> bool | None:
    if text is None:
        return None
    a = ipaddress.ip_address(text)
    return any(a in ipaddress.ip_network(n, strict=False) for n in networks)


def _address_type(text: str, local: bool | None) -> str | None:
    """The routing table's type of an address, as far as the flow tells it (None: it does not)."""
    a = ipaddress.ip_address(text)
    if a.is_multicast:
        return "multicast"
    if a.version == 4 and a == ipaddress.IPv4Address("255.255.255.255"):
        return "broadcast"
    if a.is_loopback:
        return "local"
    if local is None:
        return None
    return "local" if local else "unicast"  # a subnet's broadcast address is not told apart


def _member(flow: Flow, m: ir.SetLookup, s: ir.SetObject) -> bool | None:
    values = [getattr(flow, f) for f in m.fields]
    if any(v is None for v in values):
        return None
    for member in s.members:
        if all(_part_has(str(v), part, t) for v, part, t in zip(values, member.parts, s.types, strict=False)):
            return True
    return False


def _part_has(value: str, part: str, kind: str) -> bool:
    if kind == "inet_service":
        lo, _, hi = part.partition("-")
        return int(lo) <= int(value) <= int(hi or lo)
    a = ipaddress.ip_address(value)
    if "-" in part:
        lo, hi = part.split("-", 1)
        return ipaddress.ip_address(lo) <= a <= ipaddress.ip_address(hi) if a.version == ipaddress.ip_address(
            lo).version else False
    net = ipaddress.ip_network(part, strict=False)
    return a.version == net.version and a in net


def _match_more(m, flow: Flow, ctx: Context) -> bool | None:
    """The matches only explain judges (it knows the toggles, the sets, the packet's length)."""
    if isinstance(m, ir.Toggle):
        return ctx.toggles.get(m.name)
    if isinstance(m, ir.SetLookup):
        s = ctx.sets.get(m.name)
        if s is None:
            return None
        if m.family is not None and m.family != flow.family:
            return False
        return _member(flow, m, s)
    if isinstance(m, ir.Length):
        if flow.length is None:
            return None
        return any(r.lo <= flow.length <= r.hi for r in m.ranges)
    if isinstance(m, ir.TcpSyn):
        return False if flow.protocol != "tcp" else flow.syn
    if isinstance(m, ir.Limit):
        return ctx.limits_pass if m.family == flow.family else False
    return None  # payload bytes and signatures: the packet description has none


def _match(m, flow: Flow, ctx: Context | None = None) -> bool | None:
    if isinstance(m, ir.NfProto):
        return flow.family == m.family
    if isinstance(m, ir.L4Proto):
        return flow.protocol in m.protocols
    if isinstance(m, ir.Addr):
        if flow.family != m.family:
            return False
        fields = ("saddr", "daddr") if m.field == "any" else (m.field,)
        addrs = [ipaddress.ip_address(getattr(flow, f)) for f in fields]
        return any(a in ipaddress.ip_network(n) for a in addrs for n in m.networks) != m.negated
    if isinstance(m, ir.Port):
        fields = ("sport", "dport") if m.field == "any" else (m.field,)
        values = [getattr(flow, f) for f in fields]
        if m.negated:
            return None if values[0] is None else not any(r.lo <= values[0] <= r.hi for r in m.ranges)
        return any(v is not None and r.lo <= v <= r.hi for v in values for r in m.ranges)
    if isinstance(m, ir.AddrType):
        kind = _address_type(getattr(flow, m.field), flow.saddr_local if m.field == "saddr" else flow.daddr_local)
        return None if kind is None else (kind in m.types) != m.negated
    if isinstance(m, ir.Iface):
        name = flow.iif if m.direction == "in" else flow.oif
        if name is None:
            return False if m.name in flow.not_ifaces else None
        if m.name.endswith("+"):  # iptables' wildcard, nft's *
            return name.startswith(m.name[:-1])
        return name == m.name
    if isinstance(m, ir.CtState):
        return flow.ct_state in m.states
    if ctx is not None:
        return _match_more(m, flow, ctx)
    return None  # a match this interpreter does not know: cannot judge


def _rule_matches(rule: ir.Rule, flow: Flow, ctx: Context | None = None) -> bool | None:
    result: bool | None = True
    for m in rule.matches:
        r = _match(m, flow, ctx)
        if r is False:
            return False
        if r is None:
            result = None
    return result


def _undecided_reason(rule: ir.Rule, flow: Flow, ctx: Context | None) -> str:
    names = sorted({type(m).__name__ for m in rule.matches if _match(m, flow, ctx) is None})
    return "cannot judge " + ", ".join(names) + " from the packet description"


def _vmap_key(flow: Flow, key: str):
    return {"iif": flow.iif, "oif": flow.oif, "sport": flow.sport, "dport": flow.dport}.get(key)


def _decision(rule: ir.Rule, flow: Flow, ctx: Context | None) -> ir.Verdict | ir.Queue | None:
    """The rule's verdict for this flow: its Verdict, (explain) its queue or verdict map entry."""
    if ctx is None:
        return next((s for s in rule.statements if isinstance(s, ir.Verdict)), None)
    for s in rule.statements:
        if isinstance(s, (ir.Verdict, ir.Queue)):
            return s
        if isinstance(s, ir.Nat):
            return ir.Verdict("accept")  # a translation ends the nat chain for the packet
        if isinstance(s, ir.VerdictMap):
            value = _vmap_key(flow, s.key)
            for k, v in s.entries:
                if value is not None and _vmap_hit(str(value), str(k)):
                    return v
    return None


def _vmap_hit(value: str, key: str) -> bool:
    lo, sep, hi = key.partition("-")
    if sep and lo.isdigit() and hi.isdigit() and value.isdigit():
        return int(lo) <= int(value) <= int(hi)
    return value == key


def _label(v: ir.Verdict | ir.Queue) -> str:
    if isinstance(v, ir.Queue):
        return "queue"
    return f"{v.kind} {v.target}" if v.target else v.kind


def run_chain(table: ir.Table, chain_name: str, flow: Flow, ctx: Context | None = None,
              level: int = 0) -> ChainRun:
    """Walk one chain (and the chains it jumps to) for a flow: the events and the outcome."""
    chains = {c.name: c for c in table.chains}
    events: list[Event] = []

    def walk(chain: ir.Chain, depth: int) -> str | None:
        if depth > MAX_DEPTH:
            return UNKNOWN
        for rule in chain.rules:
            hit = _rule_matches(rule, flow, ctx)
            if hit is False:
                continue
            v = _decision(rule, flow, ctx)
            if v is None and ctx is not None and any(isinstance(s, ir.VerdictMap) for s in rule.statements):
                continue  # no entry for the key: the lookup fails and the rule does not match
            if hit is None:
                if ctx is None:
                    if v is None:
                        continue
                    return UNKNOWN
                events.append(Event(chain.name, rule, "undecided", _undecided_reason(rule, flow, ctx)))
                continue
            if v is None:
                if ctx is not None:
                    events.append(Event(chain.name, rule, "continue"))
                continue
            events.append(Event(chain.name, rule, _label(v)))
            if isinstance(v, ir.Queue):
                return "queue"
            if v.kind in ("accept", "drop", "reject"):
                return v.kind
            if v.kind == "return":
                return None
            target = chains.get(v.target or "")
            if target is None:
                return UNKNOWN
            sub = walk(target, depth + 1)
            if v.kind == "goto" or sub is not None:
                return sub
        if ctx is not None and depth > level:  # the end of a jumped-to chain: back to the caller
            events.append(Event(chain.name, None, "return"))
        return None

    base = chains.get(chain_name)
    if base is None:
        return ChainRun((), None)
    outcome = walk(base, level)
    return ChainRun(tuple(events), outcome)


def verdict(table: ir.Table, chain_name: str, flow: Flow, depth: int = 0) -> str:
    """accept | drop | reject | unknown for a flow entering base chain `chain_name`."""
    chains = {c.name: c for c in table.chains}
    base = chains.get(chain_name)
    if base is None:
        return "accept"
    return run_chain(table, chain_name, flow, None, depth).outcome or base.policy or "accept"
