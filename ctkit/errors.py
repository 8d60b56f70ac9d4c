"""Errors a user can act on, and the exit code each maps to.

Exit codes: 0 ok, 1 drift or findings, 2 invalid input, 3 kernel or permission error.
"""
from __future__ import annotations

from dataclasses import dataclass

from ctkit.terminal import clip

EXIT_OK = 0
EXIT_FINDINGS = 1
EXIT_INVALID = 2
EXIT_KERNEL = 3


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a policy: where (JSON pointer, line), what, and what would be valid."""

    pointer: str
    message: str
    severity: str = "error"  # "error" | "warning"
    line: int | None = None
    hint: str | None = None
    source: str | None = None  # file name
    code: str | None = None  # a stable id where the audit reports this warning too ("helpers.all-addresses")

    def render(self) -> str:
        """One line; each part clipped (a pointer can hold a key of a megabyte, a message a value)."""
        where = clip(self.source or "<policy>")
        if self.line is not None:
            where += f":{self.line}"
        text = f"{where}: {self.severity}: {clip(self.pointer or '/', 160)}: {clip(self.message, 300)}"
        if self.hint:
            text += f" ({clip(self.hint, 200)})"
        return text

    def as_dict(self) -> dict:
        return {
            "severity": self.severity,
            "source": self.source if self.source is None else clip(self.source),
            "pointer": clip(self.pointer, 160),
            "line": self.line,
            "message": clip(self.message, 300),
            "hint": self.hint if self.hint is None else clip(self.hint, 200),
        }


class CtkitError(Exception):
    """Base of every error ctkit reports to a user."""

    exit_code = EXIT_KERNEL


class PolicyError(CtkitError):
    """The policy is invalid; carries every problem found, not just the first."""

    exit_code = EXIT_INVALID

    def __init__(self, problems: list[Problem] | tuple[Problem, ...]):
        self.problems = tuple(problems)
        super().__init__("\n".join(p.render() for p in self.problems))


class CompileError(CtkitError):
    """A construct the chosen backend cannot express."""

    exit_code = EXIT_INVALID

    def __init__(self, backend: str, construct: str, where: str, detail: str):
        self.backend, self.construct, self.where = backend, construct, where
        super().__init__(f"{where}: backend {backend} cannot express {construct}: {detail}")


class KernelError(CtkitError):
    """The kernel or a kernel tool refused, or we lack the permission to ask."""

    exit_code = EXIT_KERNEL


class UsageError(CtkitError):
    """Bad command-line input (unknown namespace, bad KEY=VALUE...)."""

    exit_code = EXIT_INVALID
