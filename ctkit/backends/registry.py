"""The backends ctkit can compile to, by name."""
from __future__ import annotations

from ctkit.errors import UsageError

NAMES = ("nft", "iptables")


def check(name: str) -> str:
    if name not in NAMES:
        raise UsageError(f"unknown backend {name!r} (valid: {', '.join(NAMES)})")
    return name
