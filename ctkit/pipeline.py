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
    from ctkit.policy.load import load_file
    return _linted(load_file(path))


def _linted(policy: Policy) -> tuple[Policy, list[Problem]]:
    from ctkit.policy.lint import errors_of, lint
    findings = lint(policy)
    if errors_of(findings):
        raise PolicyError(findings)
    return policy, findings


def _compiled(policy: Policy) -> Compiled:
    from ctkit.compile.lower import lower
    policy, warnings = _linted(policy)
    return Compiled(policy, lower(policy), tuple(warnings))


@paused
def compile_file(path: str | Path) -> Compiled:
    """Load, lint and lower a policy file. A file compiled before with the same bytes (and the same
    elements_files, and the same ctkit) is read back from ctkit's cache instead (ctkit/compiled_cache.py).
    The plan carries its identity (ir.Plan.identity) either way."""
    from ctkit import compiled_cache
    from ctkit.paths import Unreadable, read_regular
    path = Path(path)
    try:
        raw = read_regular(path, compiled_cache.MAX_POLICY_BYTES)
    except Unreadable:
        from ctkit.policy.load import load_file
        return _compiled(load_file(path))  # which says what is wrong with the file
    code = compiled_cache.code_identity()  # a walk over ctkit's files: once per compile
    kept = compiled_cache.lookup(path, raw, code)
    if kept is not None:
        return kept
    from dataclasses import replace

    from ctkit.policy.load import load_bytes
    compiled = _compiled(load_bytes(raw, path))
    compiled = replace(compiled, plan=replace(compiled.plan, identity=compiled_cache.identity(raw, compiled, code)))
    compiled_cache.keep(path, raw, compiled, code)
    return compiled
