"""What every section builder shares: a Builder that collects problems while it converts
values (addresses, ranges), and the readers of fields several sections spell the same way."""
from __future__ import annotations

from typing import Any

from ctkit.errors import Problem
from ctkit.policy.checks import LENGTHS, PORTS, BadValue, RangeKind, parse_network, parse_range
from ctkit.policy.model import NEGATABLE, AddrType, Network
from ctkit.terminal import excerpt
from ctkit.values import PortRange


class Builder:
    """Collects problems while converting values; never raises for bad input."""

    def __init__(self, source: str):
        self.source = source
        self.problems: list[Problem] = []

    def problem(self, pointer: str, message: str, hint: str | None = None) -> None:
        self.problems.append(Problem(pointer, message, hint=hint, source=self.source))

    def networks(self, value: Any, pointer: str) -> tuple[Network, ...]:
        """One address or prefix or a list of them ({"not": ...}: the ones inside; see negated())."""
        value, pointer = _inside_not(value, pointer)
        if value is None:
            return ()
        items = value if isinstance(value, list) else [value]
        out = []
        for i, text in enumerate(items):
            ptr = f"{pointer}/{i}" if isinstance(value, list) else pointer
            if not isinstance(text, str):
                self.problem(ptr, f"{excerpt(text)} is not an address")
                continue
            try:  # parse_network, not ipaddress alone: that takes an IPv6 zone of any text ("fe80::1%...")
                out.append(parse_network(text))
            except BadValue as bad:
                self.problem(ptr, bad.message, bad.hint)
        return tuple(dict.fromkeys(out))

    def lengths(self, value: Any, pointer: str) -> tuple[PortRange, ...]:
        return self.ranges(value, pointer, LENGTHS)

    def ports(self, value: Any, pointer: str) -> tuple[PortRange, ...]:
        return self.ranges(*_inside_not(value, pointer), PORTS)

    def addr_type(self, value: Any, pointer: str) -> AddrType | None:
        """`saddr_type` / `daddr_type`: a type, a list of them, or {"not": ...} of either."""
        if value is None:
            return None
        negated = isinstance(value, dict)
        value = value["not"] if negated else value
        types = tuple(value) if isinstance(value, list) else (value,)
        return AddrType(types, negated)

    def range(self, value: Any, pointer: str, kind: RangeKind) -> PortRange | None:
        """One "N" / "lo-hi" value as a range of kind, or None after a problem at pointer."""
        try:
            return parse_range(value, kind)
        except BadValue as bad:
            self.problem(pointer, bad.message, bad.hint)
            return None

    def ranges(self, value: Any, pointer: str, kind: RangeKind) -> tuple[PortRange, ...]:
        """One value or a list of "N" / "lo-hi" values, each checked; problems named by pointer."""
        if value is None:
            return ()
        items = value if isinstance(value, list) else [value]
        out = [self.range(item, f"{pointer}/{i}" if isinstance(value, list) else pointer, kind)
               for i, item in enumerate(items)]
        return tuple(dict.fromkeys(r for r in out if r is not None))


def _inside_not(value: Any, pointer: str) -> tuple[Any, str]:
    """The list inside {"not": list}, and its pointer."""
    if isinstance(value, dict) and "not" in value:
        return value["not"], pointer + "/not"
    return value, pointer


def negated(item: dict) -> frozenset[str]:
    """The fields of an entry given as {"not": ...} (model.NEGATABLE)."""
    return frozenset(k for k in NEGATABLE if isinstance(item.get(k), dict))


def addr_types(b: Builder, item: dict, pointer: str) -> dict[str, Any]:
    """The saddr_type / daddr_type and negated keywords of a model entry, from the policy's item."""
    return {"saddr_type": b.addr_type(item.get("saddr_type"), pointer + "/saddr_type"),
            "daddr_type": b.addr_type(item.get("daddr_type"), pointer + "/daddr_type"),
            "negated": negated(item)}


def ref(value: Any) -> str | None:
    """The set name of a "@name" reference, else None."""
    return value[1:] if isinstance(value, str) and value.startswith("@") else None


def plain(value: Any) -> Any:
    """The value unless it is a "@name" set reference."""
    return None if ref(value) else value


def protocols(item: dict) -> tuple[str, ...]:
    """`protocol: x` or `protocols: [...]` as one tuple."""
    if "protocol" in item:
        return (item["protocol"],)
    return tuple(item.get("protocols", ()))
