"""Would the policy admit this flow if it started now? An interpreter over the IR.

Used to find established flows that a tightened policy no longer admits. A
match the flow cannot answer (conntrack keeps no interface) makes the answer
"unknown" unless a decision came before it: the audit never flushes a flow
it cannot judge.
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from ctkit.compile import ir

UNKNOWN = "unknown"


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


def _match(m, flow: Flow) -> bool | None:
    if isinstance(m, ir.NfProto):
        return flow.family == m.family
    if isinstance(m, ir.L4Proto):
        return flow.protocol in m.protocols
    if isinstance(m, ir.Addr):
        if flow.family != m.family:
            return False
        fields = ("saddr", "daddr") if m.field == "any" else (m.field,)
        addrs = [ipaddress.ip_address(getattr(flow, f)) for f in fields]
        return any(a in ipaddress.ip_network(n) for a in addrs for n in m.networks)
    if isinstance(m, ir.Port):
        fields = ("sport", "dport") if m.field == "any" else (m.field,)
        values = [getattr(flow, f) for f in fields]
        return any(v is not None and r.lo <= v <= r.hi for v in values for r in m.ranges)
    if isinstance(m, ir.Iface):
        name = flow.iif if m.direction == "in" else flow.oif
        if name is None:
            return False if m.name in flow.not_ifaces else None
        return name == m.name
    if isinstance(m, ir.CtState):
        return flow.ct_state in m.states
    return None  # a match this interpreter does not know: cannot judge


def _rule_matches(rule: ir.Rule, flow: Flow) -> bool | None:
    result: bool | None = True
    for m in rule.matches:
        r = _match(m, flow)
        if r is False:
            return False
        if r is None:
            result = None
    return result


def verdict(table: ir.Table, chain_name: str, flow: Flow, depth: int = 0) -> str:
    """accept | drop | reject | unknown for a flow entering base chain `chain_name`."""
    chains = {c.name: c for c in table.chains}
    base = chains.get(chain_name)
    if base is None:
        return "accept"

    def walk(chain: ir.Chain, level: int) -> str | None:
        if level > 16:
            return UNKNOWN
        for rule in chain.rules:
            hit = _rule_matches(rule, flow)
            if hit is False:
                continue
            v = next((s for s in rule.statements if isinstance(s, ir.Verdict)), None)
            if v is None:
                continue
            if hit is None:
                return UNKNOWN
            if v.kind in ("accept", "drop", "reject"):
                return v.kind
            if v.kind == "return":
                return None
            sub = walk(chains[v.target], level + 1)
            if v.kind == "goto" or sub is not None:
                return sub
        return None

    return walk(base, depth) or base.policy or "accept"
