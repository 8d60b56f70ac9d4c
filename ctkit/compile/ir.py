"""Backend-neutral intermediate representation of what ctkit puts in the kernel.

A backend is a generator from these nodes to a kernel tool's input (see
ctkit/backends). Every node is a small frozen value; a backend looks each
node type up in its own table and raises CompileError for a node it cannot
express.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass, field, replace
from typing import Callable, NamedTuple, Sequence, Union

from ctkit.values import PortRange

#: standard netfilter priorities (include/uapi/linux/netfilter_ipv4.h)
PRIORITY_RAW = -300
PRIORITY_MANGLE = -150  # before destination NAT: where iptables' mangle PREROUTING runs
PRIORITY_DSTNAT = -100
PRIORITY_FILTER = 0
PRIORITY_SRCNAT = 100


# ------------------------------------------------------------------ matches

@dataclass(frozen=True)
class NfProto:
    """Layer-3 family: ipv4 or ipv6."""
    family: str


@dataclass(frozen=True)
class L4Proto:
    """Any of these layer-4 protocols."""
    protocols: tuple[str, ...]


@dataclass(frozen=True)
class Addr:
    """Source, destination, or either ('any') address in these networks of one family
    (negated: the source or destination address is in none of them; never 'any')."""
    field: str  # saddr | daddr | any
    family: str  # ipv4 | ipv6
    networks: tuple[str, ...]  # normalised text: '192.0.2.10' or '10.0.0.0/8'
    negated: bool = False


@dataclass(frozen=True)
class Port:
    """Source, destination, or either ('any') port in these ranges (needs an L4Proto match)
    (negated: the port is in none of them; never 'any')."""
    field: str  # sport | dport | any
    ranges: tuple[PortRange, ...]
    negated: bool = False


@dataclass(frozen=True)
class AddrType:
    """The source or destination address is (negated: is not) of one of these types as this host's
    routing table sees it: local (an address of the host), unicast, multicast, broadcast."""
    field: str  # saddr | daddr
    types: tuple[str, ...]
    negated: bool = False


@dataclass(frozen=True)
class Iface:
    direction: str  # in | out
    name: str


@dataclass(frozen=True)
class CtState:
    states: tuple[str, ...]


@dataclass(frozen=True)
class Length:
    """The IP packet's length (header and payload) is in one of these inclusive ranges."""
    ranges: tuple[PortRange, ...]


@dataclass(frozen=True)
class Payload:
    """(size bytes at base + offset) & mask == value; size 1-4, integers big-endian."""
    base: str  # nh | th
    offset: int  # bytes
    size: int  # bytes
    value: int
    mask: int | None = None


@dataclass(frozen=True)
class Signature:
    """This byte string occurs between offsets start and end (from the IP header)."""
    pattern: bytes
    algo: str  # bm | kmp
    start: int = 0
    end: int = 65535


@dataclass(frozen=True)
class Limit:
    """True while the token bucket has a token: rate per `per`, bucket size burst.

    One bucket for the rule (by None) or one per source or destination address,
    always of one family; `name` names the bucket (table) and is unique in the
    ruleset. Placed last among the matches so that only packets that match
    everything else take a token.
    """
    rate: int
    per: str  # second | minute | hour | day
    burst: int
    by: str | None  # saddr | daddr | None
    family: str  # ipv4 | ipv6
    name: str


@dataclass(frozen=True)
class SetLookup:
    """The packet's fields (saddr, daddr, sport, dport; in this order) form a member of the named set.
    family: the family of the address fields, when there are any."""
    name: str
    fields: tuple[str, ...]
    family: str | None = None


@dataclass(frozen=True)
class TcpSyn:
    """A TCP segment with SYN set and RST clear (the two segments of a handshake that carry MSS)."""


@dataclass(frozen=True)
class Toggle:
    """True while the named toggle is on (see ToggleObject)."""
    name: str


Match = Union[NfProto, L4Proto, Addr, Port, AddrType, Iface, CtState, Length, Payload, Signature, Limit, TcpSyn, Toggle,
              SetLookup]


# --------------------------------------------------------------- statements

@dataclass(frozen=True)
class Counter:
    pass


@dataclass(frozen=True)
class Log:
    prefix: str | None
    level: str


@dataclass(frozen=True)
class Notrack:
    pass


@dataclass(frozen=True)
class SetCtHelper:
    """Attach the named ct helper object to the flow."""
    object_name: str


@dataclass(frozen=True)
class SetCtTimeout:
    """Attach the named timeout policy (CtTimeoutObject) to the new flow (before conntrack)."""
    object_name: str


@dataclass(frozen=True)
class SetCtZone:
    """Track the new flow in this zone (before conntrack); direction: both | original | reply."""
    zone: int
    direction: str = "both"


@dataclass(frozen=True)
class SetCtMark:
    """Set the flow's conntrack mark (the packet still goes on to the verdict)."""
    value: int


@dataclass(frozen=True)
class SetCtLabel:
    """Set one conntrack label bit on the flow."""
    bit: int


@dataclass(frozen=True)
class ClampMss:
    """Lower (never raise) the TCP MSS option to size, or to the route's MTU less headers (size None)."""
    size: int | None


@dataclass(frozen=True)
class SetDscp:
    value: int  # 0-63
    family: str  # ipv4 | ipv6: the header it is written into


@dataclass(frozen=True)
class SetMark:
    """Set the packet mark."""
    value: int


@dataclass(frozen=True)
class Connmark:
    """save: packet mark -> conntrack mark; restore: conntrack mark -> packet mark."""
    op: str


@dataclass(frozen=True)
class Queue:
    """Verdict: hand the packet to NFQUEUE queue lo (or balance over lo..hi). bypass: accept it
    when nobody listens (else it is dropped); fanout: choose by CPU instead of flow hash."""
    lo: int
    hi: int
    bypass: bool = False
    fanout: bool = False


@dataclass(frozen=True)
class VerdictMap:
    """Verdict by looking a key (iif, oif, sport, dport) up: ((value, Verdict), ...). No match: go on."""
    key: str
    entries: tuple


@dataclass(frozen=True)
class Nat:
    """Translate the flow (first packet only; the rest follow its conntrack entry). Terminal.

    snat/dnat: to addr_lo..addr_hi of `family`, optionally ports; masquerade: to the
    outgoing interface's address, optionally ports; redirect: to this host, optionally a port.
    """
    kind: str  # snat | masquerade | dnat | redirect
    family: str | None = None  # ipv4 | ipv6 for snat and dnat
    addr_lo: str | None = None
    addr_hi: str | None = None
    ports: PortRange | None = None


@dataclass(frozen=True)
class Verdict:
    kind: str  # accept | drop | reject | return | jump | goto
    target: str | None = None  # chain, for jump/goto
    reject_with: str | None = None  # port-unreachable ... tcp-reset


Statement = Union[Counter, Log, Notrack, SetCtHelper, SetCtTimeout, SetCtZone, SetCtMark, SetCtLabel, ClampMss,
                  SetDscp, SetMark, Connmark, Queue, Nat, VerdictMap, Verdict]


# ---------------------------------------------------------------- structure

@dataclass(frozen=True)
class Rule:
    id: str  # stable policy rule id, carried into the kernel (comment)
    origin: str  # JSON pointer in the policy
    matches: tuple[Match, ...]
    statements: tuple[Statement, ...]
    comment: str | None = None  # the user's free text (the kernel comment: ctkit.names.rule_comment)

    def split(self, alternatives: Callable[[Match], Sequence[Match]]) -> list[Rule]:
        """One rule per combination of the alternatives each match stands for, in order. A backend that
        cannot say "A or B" in one rule (nft: saddr or daddr; iptables: one protocol per rule) splits
        the rule this way; `alternatives(m)` is (m,) for a match it can express as it is."""
        choices = [alternatives(m) for m in self.matches]
        if all(len(c) == 1 for c in choices):
            return [self]  # nothing to split (most rules): dataclasses.replace was a third of nft generation
        return [replace(self, matches=tuple(c)) for c in itertools.product(*choices)]


@dataclass(frozen=True)
class Hook:
    hook: str  # prerouting input forward output postrouting
    priority: int
    type: str = "filter"  # filter | nat


#: what a chain is: a base chain of the policy, a user-defined chain of the policy (no hook),
#: or a base chain ctkit adds for a section of the policy (notrack, zones, timeouts, helpers, nat)
CHAIN_KINDS = ("base", "user", "section")


@dataclass(frozen=True)
class Chain:
    name: str
    rules: tuple[Rule, ...]
    hook: Hook | None = None  # None: a user-defined chain
    policy: str | None = None  # base chains: accept | drop
    origin: str | None = None  # the policy chain's pointer; None for a section chain
    kind: str = "section"  # one of CHAIN_KINDS


@dataclass(frozen=True)
class CtHelperObject:
    name: str
    helper: str  # kernel helper name: ftp, Q.931, RAS, ...
    protocol: str  # tcp | udp
    l3proto: str  # inet | ip | ip6
    origin: str


@dataclass(frozen=True)
class CtTimeoutObject:
    """A conntrack timeout policy. Where the kernel's names are per namespace (nfnetlink_cttimeout,
    used by iptables), the backend derives one from the table and this name (ctkit.names.timeout_name)."""
    name: str
    protocol: str  # tcp | udp
    l3proto: str  # inet | ip | ip6
    policy: tuple[tuple[str, int], ...]  # (state, seconds)
    origin: str


class SetMember(NamedTuple):
    """One declared element of a named set: one text per part of the set's type, in order
    ("192.0.2.1", "10.0.0.0/8", "192.0.2.1-192.0.2.9", "80", "1000-2000"), and its own timeout.
    A NamedTuple, not a dataclass: a set may hold a million (made in C, 56 bytes each)."""
    parts: tuple[str, ...]
    timeout: int | None = None


@dataclass(frozen=True)
class SetObject:
    """A named set. types: ipv4_addr | ipv6_addr | inet_service per part."""
    name: str
    types: tuple[str, ...]
    interval: bool
    timeout: int | None
    members: tuple[SetMember, ...]
    origin: str


@dataclass(frozen=True)
class ToggleObject:
    """A runtime switch: its state now (on) and the value the policy file gave it (policy_on).

    Each backend keeps both in the kernel, so `ctkit toggle` flips `on` without the
    policy, and a later apply can tell whether the file changed the value
    (ctkit.compile.toggles.keep_live)."""
    name: str
    on: bool
    policy_on: bool
    origin: str


@dataclass(frozen=True)
class Table:
    name: str
    chains: tuple[Chain, ...]
    helpers: tuple[CtHelperObject, ...] = ()
    timeouts: tuple[CtTimeoutObject, ...] = ()
    toggles: tuple[ToggleObject, ...] = ()
    sets: tuple[SetObject, ...] = ()


def reachable(start: str, chains: dict[str, Chain]) -> set[str]:
    """The chains (of `chains`, by name) that chain `start` reaches by jump, goto or verdict map, at any
    depth; `start` itself only when a loop leads back to it."""
    seen: set[str] = set()
    todo = [start]
    while todo:
        name = todo.pop()
        for rule in chains[name].rules:
            for s in rule.statements:
                verdicts = [v for _k, v in s.entries] if isinstance(s, VerdictMap) else [s]
                for v in verdicts:
                    if isinstance(v, Verdict) and v.target and v.target not in seen and v.target in chains:
                        seen.add(v.target)
                        todo.append(v.target)
    return seen


@dataclass(frozen=True)
class SysctlSetting:
    """A net.netfilter sysctl the policy wants; absent_ok: a kernel without it meets the wish."""
    key: str  # policy key, e.g. timeouts.udp
    sysctl: str  # name under net.netfilter
    value: int
    origin: str
    absent_ok: bool = False

    def met_by(self, live: str | None) -> bool:
        """Whether a live value meets the wish (None: the kernel has no such sysctl). Compared as numbers:
        the one rule for `ctkit apply` (change it or not) and for the audit (met or drift)."""
        if live is None:
            return self.absent_ok
        try:
            return int(live.strip()) == self.value
        except ValueError:
            return False


@dataclass(frozen=True)
class Plan:
    """Everything compile produces: the ruleset and the host settings."""
    table: Table
    settings: tuple[SysctlSetting, ...] = ()
    #: what this plan was compiled from, as a digest (ctkit/compiled_cache.py identity: the policy file's
    #: bytes, its elements_files' bytes and ctkit's code): two plans of one identity and the same toggle
    #: states are the same plan, so a backend may name what it generates for it without generating it.
    #: None: not known (a plan built from a document or in Python)
    identity: str | None = field(default=None, compare=False)
