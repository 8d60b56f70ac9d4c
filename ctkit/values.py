"""Small value types shared by the stages (the policy model, the IR, the backends).

They live apart from ctkit.policy so that the IR, the backends and the kernel
stage never import the policy package (see docs/ARCHITECTURE.md: one direction of flow).
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, order=True)
class PortRange:
    """An inclusive range of ports (or of packet lengths): lo-hi, a single value when lo == hi."""
    lo: int
    hi: int

    def __str__(self) -> str:
        return str(self.lo) if self.lo == self.hi else f"{self.lo}-{self.hi}"
