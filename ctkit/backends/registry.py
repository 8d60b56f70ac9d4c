"""The backends ctkit can compile to, by name: the one place that chooses a backend.

Everything else holds a Backend (ctkit/backends/base.py) and asks it; adding a
backend is its package under ctkit/backends/ and one entry here.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable

from ctkit.errors import UsageError

if TYPE_CHECKING:
    from ctkit.backends.base import Backend


def _nft(iptables_variant: str) -> Backend:
    from ctkit.backends.nft.backend import NftBackend
    return NftBackend()


def _iptables(iptables_variant: str) -> Backend:
    from ctkit.backends.iptables.backend import IptablesBackend
    return IptablesBackend(iptables_variant)


#: name -> factory; imported when chosen (libnftables costs start-up time a command may not need)
_FACTORIES: dict[str, Callable[[str], Backend]] = {"nft": _nft, "iptables": _iptables}
NAMES = tuple(_FACTORIES)


def check(name: str) -> str:
    if name not in _FACTORIES:
        raise UsageError(f"unknown backend {name!r} (valid: {', '.join(NAMES)})")
    return name


def others(name: str, iptables_variant: str = "auto") -> tuple[Backend, ...]:
    """Every backend but `name`: where ctkit's rules of another backend may live in a namespace."""
    return tuple(_FACTORIES[n](iptables_variant) for n in NAMES if n != check(name))


def get(name: str, iptables_variant: str = "auto") -> Backend:
    """The backend called `name`; `iptables_variant` (auto, nft, legacy) is for the iptables backend."""
    return _FACTORIES[check(name)](iptables_variant)
