"""The policy as ctkit understands it: small frozen, typed objects.

build.build_policy() turns a schema-valid document into these objects (one
builder per section: build_conntrack, build_rules, build_nat, build_sets);
checks.py holds the checks of single values (addresses, ranges). Checks that
relate several parts of a policy live in lint.py.
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Mapping, NamedTuple, Union

from ctkit.netfilter import BASE_CHAINS
from ctkit.values import PortRange

Network = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]

PORT_PROTOCOLS = frozenset({"tcp", "udp", "udplite", "sctp", "dccp"})

#: policy helper name -> {control protocol: kernel helper name}
HELPER_KERNEL_NAMES: dict[str, dict[str, str]] = {
    "ftp": {"tcp": "ftp"},
    "irc": {"tcp": "irc"},
    "tftp": {"udp": "tftp"},
    "amanda": {"udp": "amanda"},
    "sip": {"udp": "sip", "tcp": "sip"},
    "h323": {"tcp": "Q.931", "udp": "RAS"},
    "pptp": {"tcp": "pptp"},
    "snmp": {"udp": "snmp"},
    "sane": {"tcp": "sane"},
    "netbios-ns": {"udp": "netbios-ns"},
}
#: helpers the kernel registers for IPv4 only
IPV4_ONLY_HELPERS = frozenset({"irc", "pptp", "snmp", "netbios-ns"})


@dataclass(frozen=True)
class AddrType:
    """The address is (negated: is not) of one of these types, as the routing table sees it."""
    types: tuple[str, ...]  # local | unicast | multicast | broadcast
    negated: bool = False


#: fields of an entry that a policy may negate with {"not": ...}
NEGATABLE = ("saddr", "daddr", "peers", "ports", "sport", "dport")


@dataclass(frozen=True)
class Limit:
    """A token bucket: `rate` packets per `per`, at most `burst` at once; by: one bucket per address."""
    rate: int
    per: str = "second"
    burst: int = 5
    by: str | None = None  # saddr | daddr


@dataclass(frozen=True)
class Log:
    prefix: str | None = None
    level: str = "warn"
    limit: Limit | None = None


@dataclass(frozen=True)
class Queue:
    lo: int
    hi: int
    bypass: bool = False
    fanout: bool = False


@dataclass(frozen=True)
class Payload:
    """(bytes at base+offset, len(value) of them) & mask == value."""
    base: str  # nh | th
    offset: int
    value: bytes
    mask: bytes | None = None


@dataclass(frozen=True)
class Signature:
    """A byte string searched between offsets start and end of the packet."""
    pattern: bytes
    algo: str = "bm"
    start: int = 0
    end: int = 65535


@dataclass(frozen=True)
class Setting:
    """One host conntrack setting: the policy key, its sysctl and the wanted value."""

    key: str
    sysctl: str
    value: int
    pointer: str


@dataclass(frozen=True)
class Notrack:
    name: str
    pointer: str
    protocols: tuple[str, ...] = ()
    ports: tuple[PortRange, ...] = ()
    peers: tuple[Network, ...] = ()
    saddr: tuple[Network, ...] = ()
    daddr: tuple[Network, ...] = ()
    iif: str | None = None
    oif: str | None = None
    direction: str = "both"
    family: str | None = None
    counter: bool = True
    comment: str | None = None
    saddr_type: AddrType | None = None
    daddr_type: AddrType | None = None
    #: the NEGATABLE fields given as {"not": ...}: the entry matches addresses (ports) outside them
    negated: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Helper:
    name: str
    helper: str
    protocol: str
    ports: tuple[PortRange, ...]
    pointer: str
    saddr: tuple[Network, ...] = ()
    daddr: tuple[Network, ...] = ()
    direction: str = "in"
    family: str | None = None
    comment: str | None = None
    saddr_type: AddrType | None = None
    daddr_type: AddrType | None = None
    #: the NEGATABLE fields given as {"not": ...}: the entry matches addresses (ports) outside them
    negated: frozenset[str] = frozenset()

    @property
    def kernel_name(self) -> str:
        return HELPER_KERNEL_NAMES[self.helper][self.protocol]


@dataclass(frozen=True)
class Rule:
    id: str  # the user's name, or <chain>[<index>]
    pointer: str
    chain: str
    protocols: tuple[str, ...] = ()
    family: str | None = None
    saddr: tuple[Network, ...] = ()
    daddr: tuple[Network, ...] = ()
    sport: tuple[PortRange, ...] = ()
    dport: tuple[PortRange, ...] = ()
    iif: str | None = None
    oif: str | None = None
    ct_state: tuple[str, ...] = ()
    action: str | None = None  # accept drop reject return, or None with jump/goto
    reject_with: str | None = None
    jump: str | None = None
    goto: str | None = None
    counter: bool = True
    log: Log | None = None
    comment: str | None = None
    length: tuple[PortRange, ...] = ()  # inclusive ranges of packet length
    payload: tuple[Payload, ...] = ()
    signature: Signature | None = None
    limit: Limit | None = None
    when: str | None = None  # a toggle: the rule applies only while it is on
    ct_mark_set: int | None = None
    ct_label_set: int | None = None
    saddr_set: str | None = None  # "@name" references
    daddr_set: str | None = None
    sport_set: str | None = None
    dport_set: str | None = None
    match_set: tuple[str, tuple[str, ...]] | None = None  # (set, packet fields)
    vmap: tuple[str, tuple[tuple[str, str], ...]] | None = None  # (key, ((value, verdict), ...))
    queue: Queue | None = None
    mss: int | None = None  # 0: clamp to the path MTU
    dscp: int | None = None
    mark_set: int | None = None
    connmark: str | None = None  # save | restore
    saddr_type: AddrType | None = None
    daddr_type: AddrType | None = None
    #: the NEGATABLE fields given as {"not": ...}: the entry matches addresses (ports) outside them
    negated: frozenset[str] = frozenset()

    @property
    def target(self) -> str | None:
        return self.jump or self.goto


@dataclass(frozen=True)
class AddrRange:
    """An inclusive range of addresses of one family (lo == hi: one address)."""
    lo: ipaddress.IPv4Address | ipaddress.IPv6Address
    hi: ipaddress.IPv4Address | ipaddress.IPv6Address

    @property
    def family(self) -> str:
        return "ipv4" if self.lo.version == 4 else "ipv6"


@dataclass(frozen=True)
class Nat:
    """One NAT rule (policy `nat`): matches on a flow's first packet and how to rewrite it."""
    id: str
    pointer: str
    type: str  # snat | masquerade | dnat | redirect
    protocols: tuple[str, ...] = ()
    family: str | None = None
    saddr: tuple[Network, ...] = ()
    daddr: tuple[Network, ...] = ()
    sport: tuple[PortRange, ...] = ()
    dport: tuple[PortRange, ...] = ()
    iif: str | None = None
    oif: str | None = None
    to_addr: AddrRange | None = None
    to_port: PortRange | None = None
    counter: bool = True
    comment: str | None = None
    saddr_type: AddrType | None = None
    daddr_type: AddrType | None = None
    #: the NEGATABLE fields given as {"not": ...}: the entry matches addresses (ports) outside them
    negated: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Timeout:
    """A conntrack timeout policy and the flows it is attached to."""
    name: str
    pointer: str
    protocol: str
    policy: tuple[tuple[str, int], ...]  # (state, seconds) in ctkit.netfilter.TIMEOUT_STATES order
    ports: tuple[PortRange, ...] = ()
    saddr: tuple[Network, ...] = ()
    daddr: tuple[Network, ...] = ()
    direction: str = "in"
    family: str | None = None
    comment: str | None = None
    saddr_type: AddrType | None = None
    daddr_type: AddrType | None = None
    #: the NEGATABLE fields given as {"not": ...}: the entry matches addresses (ports) outside them
    negated: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Zone:
    """A conntrack zone for the flows that match."""
    name: str
    pointer: str
    zone: int
    zone_direction: str = "both"
    protocols: tuple[str, ...] = ()
    ports: tuple[PortRange, ...] = ()
    saddr: tuple[Network, ...] = ()
    daddr: tuple[Network, ...] = ()
    iif: str | None = None
    oif: str | None = None
    direction: str = "in"
    family: str | None = None
    comment: str | None = None
    saddr_type: AddrType | None = None
    daddr_type: AddrType | None = None
    #: the NEGATABLE fields given as {"not": ...}: the entry matches addresses (ports) outside them
    negated: frozenset[str] = frozenset()


class SetAddress(NamedTuple):
    """An address or prefix in a named set: its canonical text ("192.0.2.1", "10.0.0.0/8", "2001:db8::/32",
    as ipaddress writes it), IP version and prefix length.

    Not an ipaddress network: a set may hold a million members, and an IPv4Network took about 500
    bytes and 3 us to make (it keeps a closure for hosts()); this compares and hashes as a tuple, and
    its text is the one the backends write, shared with the IR instead of formatted again."""
    text: str
    version: int
    length: int

    @classmethod
    def of(cls, network: Network) -> SetAddress:
        plain = network.prefixlen == network.max_prefixlen
        return cls(str(network.network_address) if plain else str(network), network.version, network.prefixlen)

    @property
    def is_prefix(self) -> bool:
        return self.length != (32 if self.version == 4 else 128)

    def __str__(self) -> str:
        return self.text


class SetMember(NamedTuple):
    """One member: one value per part of the set's type (addresses and prefixes as SetAddress, address
    ranges as AddrRange, ports as PortRange). A NamedTuple like SetAddress: made, hashed and compared
    in C, 56 bytes (a dataclass took about 150 and a Python-level __init__ and __hash__)."""
    parts: tuple
    timeout: int | None = None


def set_family(types: tuple[str, ...]) -> str | None:
    """ipv4 or ipv6 when a set's address parts are of one family; None without address parts."""
    fams = {{"ipv4_addr": "ipv4", "ipv6_addr": "ipv6"}[t] for t in types if t != "inet_service"}
    return fams.pop() if len(fams) == 1 else None


@dataclass(frozen=True)
class NamedSet:
    name: str
    pointer: str
    types: tuple[str, ...]
    interval: bool = False
    timeout: int | None = None
    #: the policy's members, then those of elements_file (each once, in the order first given)
    members: tuple[SetMember, ...] = ()
    #: the file the members after the inline ones came from, as resolved when loading (None: none)
    elements_file: str | None = None
    #: sha256 (hex) of the bytes read from elements_file: ctkit/compiled_cache.py uses a kept compiled
    #: policy again only while the file still holds them
    elements_digest: str | None = None


@dataclass(frozen=True)
class Toggle:
    """A runtime switch and the value the policy file gives it."""
    name: str
    value: bool
    pointer: str


@dataclass(frozen=True)
class Chain:
    name: str
    pointer: str
    policy: str | None = None
    rules: tuple[Rule, ...] = ()
    comment: str | None = None

    @property
    def is_base(self) -> bool:
        return self.name in BASE_CHAINS


@dataclass(frozen=True)
class Policy:
    version: int
    table: str
    source: str = field(compare=False)
    settings: tuple[Setting, ...] = ()
    notrack: tuple[Notrack, ...] = ()
    helpers: tuple[Helper, ...] = ()
    chains: tuple[Chain, ...] = field(default=())
    nat: tuple[Nat, ...] = ()
    toggles: tuple[Toggle, ...] = ()
    timeouts: tuple[Timeout, ...] = ()
    zones: tuple[Zone, ...] = ()
    sets: tuple[NamedSet, ...] = ()
    description: str | None = None
    #: JSON pointer -> line in the source file (for messages only)
    lines: Mapping[str, int] = field(default_factory=dict, compare=False, repr=False)

    def chain(self, name: str) -> Chain | None:
        return next((c for c in self.chains if c.name == name), None)

    def line_of(self, pointer: str) -> int | None:
        while pointer not in self.lines and pointer:
            pointer = pointer.rsplit("/", 1)[0]
        return self.lines.get(pointer)
