"""What every section builder shares: a Builder that collects problems while it converts
values (addresses, ranges), and the readers of fields several sections spell the same way."""
from __future__ import annotations

import ipaddress
from typing import Any

from ctkit.errors import Problem
from ctkit.policy.checks import check_length_range, check_network, check_port_range
from ctkit.policy.model import Network
from ctkit.values import PortRange


class Builder:
    """Collects problems while converting values; never raises for bad input."""

    def __init__(self, source: str):
        self.source = source
        self.problems: list[Problem] = []

    def problem(self, pointer: str, message: str, hint: str | None = None) -> None:
        self.problems.append(Problem(pointer, message, hint=hint, source=self.source))

    def networks(self, value: Any, pointer: str) -> tuple[Network, ...]:
        if value is None:
            return ()
        items = value if isinstance(value, list) else [value]
        out = []
        for i, text in enumerate(items):
            ptr = f"{pointer}/{i}" if isinstance(value, list) else pointer
            try:
                out.append(ipaddress.ip_network(text))
            except (ValueError, TypeError):
                self.problem(ptr, *(check_network(text) or (f"{text!r} is not an address", None)))
        return tuple(dict.fromkeys(out))

    def lengths(self, value: Any, pointer: str) -> tuple[PortRange, ...]:
        return self.ranges(value, pointer, check_length_range)

    def ports(self, value: Any, pointer: str) -> tuple[PortRange, ...]:
        return self.ranges(value, pointer, check_port_range)

    def ranges(self, value: Any, pointer: str, check) -> tuple[PortRange, ...]:
        """One value or a list of "N" / "lo-hi" values, each checked; problems named by pointer."""
        if value is None:
            return ()
        items = value if isinstance(value, list) else [value]
        out = []
        for i, item in enumerate(items):
            bad = check(str(item))
            if bad:
                self.problem(f"{pointer}/{i}" if isinstance(value, list) else pointer, *bad)
                continue
            lo_s, _, hi_s = str(item).partition("-")
            out.append(PortRange(int(lo_s), int(hi_s or lo_s)))
        return tuple(dict.fromkeys(out))


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
