"""A re-applied policy keeps the live state of its toggles unless the file changed them.

The kernel holds, next to each toggle, its state and the value the policy file
gave it when it was last applied (each backend stores both: see
ctkit/backends). keep_live() is the one place that decides what apply does
with a toggle: the live state when the file still says what it said then, the
file's value when the file changed it (or the toggle is new).
"""
from __future__ import annotations

from dataclasses import dataclass, replace

from ctkit.compile import ir


@dataclass(frozen=True)
class LiveToggle:
    name: str
    on: bool
    policy_on: bool | None  # the file's value at the last apply; None when the kernel does not say


def keep_live(plan: ir.Plan, live: dict[str, LiveToggle]) -> ir.Plan:
    toggles = []
    for t in plan.table.toggles:
        seen = live.get(t.name)
        on = seen.on if seen is not None and seen.policy_on == t.policy_on else t.policy_on
        toggles.append(replace(t, on=on))
    return replace(plan, table=replace(plan.table, toggles=tuple(toggles)))
