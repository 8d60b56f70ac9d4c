"""The iptables backend's output model: what ctkit owns in one family, as iptables-restore sees it.

generate.py builds these from the IR, text.py prints them, kernel.py applies them and parses
iptables-save back into them, view.py compares them. Nothing here knows the IR.
"""
from __future__ import annotations

from dataclasses import dataclass, field

BACKEND = "iptables"
FAMILIES = ("ipv4", "ipv6")
TABLE_ORDER = ("raw", "mangle", "nat", "filter")  # iptables-restore input and iptables-save output order


@dataclass(frozen=True)
class Chain:
    """One chain ctkit owns; rules are iptables-save specs without the leading `-A NAME`."""
    name: str
    rules: tuple[str, ...]
    builtin: str | None = None  # the built-in chain that jumps here, or None (user-defined)
    #: JSON pointer of the policy chain behind it, for drift; not part of what the kernel holds
    origin: str | None = field(default=None, compare=False)


@dataclass(frozen=True)
class Table:
    name: str  # raw | mangle | filter
    chains: tuple[Chain, ...]


@dataclass(frozen=True)
class TimeoutObject:
    """A conntrack timeout policy the kernel stage creates over nfnetlink_cttimeout."""
    name: str  # as -j CT --timeout names it
    protocol: str  # tcp | udp
    policy: tuple[tuple[str, int], ...]


@dataclass(frozen=True)
class IpSet:
    """An ipset the kernel stage creates (ctkit/backends/iptables/ipset.py): kind hash:ip | hash:net | bitmap:port."""
    name: str
    kind: str
    family: str | None  # ipv4 | ipv6; None for bitmap:port
    timeout: int | None
    elements: tuple  # ((ipset member text, timeout or None), ...)


@dataclass(frozen=True)
class Document:
    """What ctkit owns in one family (iptables or ip6tables)."""
    family: str
    prefix: str
    tables: tuple[Table, ...]
    timeouts: tuple[TimeoutObject, ...] = ()
    ipsets: tuple[IpSet, ...] = ()

    @property
    def rule_count(self) -> int:
        return sum(len(c.rules) for t in self.tables for c in t.chains)

    def table(self, name: str) -> Table | None:
        return next((t for t in self.tables if t.name == name), None)


@dataclass(frozen=True)
class Ruleset:
    prefix: str
    ipv4: Document
    ipv6: Document

    def document(self, family: str) -> Document:
        return self.ipv4 if family == "ipv4" else self.ipv6


def jump_spec(chain: Chain) -> str:
    """The rule in a built-in chain that sends packets to one of ctkit's chains."""
    return f"-j {chain.name}"
