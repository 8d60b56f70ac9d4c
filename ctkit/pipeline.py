"""The stages in order, for callers that want a policy file turned into a plan.

load -> model -> lint -> compile (IR). Backends and the kernel come after and
are chosen by the caller.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ctkit.bulk import paused
from ctkit.errors import PolicyError, Problem

if TYPE_CHECKING:  # imported when used: jsonschema and friends cost ~150 ms at start-up
    from ctkit.compile import ir
    from ctkit.policy.model import Policy


@dataclass(frozen=True)
class Compiled:
    policy: Policy
    plan: ir.Plan
    warnings: tuple[Problem, ...]


@paused
def check(path: str | Path) -> tuple[Policy, list[Problem]]:
    """Load and lint; raise PolicyError on any error, return the warnings."""
    from ctkit.policy.lint import errors_of, lint
    from ctkit.policy.load import load_file
    policy = load_file(path)
    findings = lint(policy)
    if errors_of(findings):
        raise PolicyError(findings)
    return policy, findings


@paused
def compile_file(path: str | Path) -> Compiled:
    from ctkit.compile.lower import lower
    policy, warnings = check(path)
    return Compiled(policy, lower(policy), tuple(warnings))
