"""What ctkit does, as plain functions over a Backend: the Python API under the CLI.

    from ctkit import pipeline, service
    from ctkit.backends import registry

    compiled = pipeline.compile_file("policy.yaml")        # load -> model -> lint -> IR
    backend = registry.get("nft")                           # or registry.get("iptables", "legacy")
    result = service.apply(compiled, backend, netns="lab")  # one kernel transaction, then host settings
    report = service.audit(compiled, backend, netns="lab")  # drift, settings, conntrack health

Every function takes the namespace it works in (None: the current one), returns a
frozen result object and raises ctkit.errors.CtkitError subclasses (PolicyError,
CompileError, UsageError, KernelError), each with its exit code. Nothing here
prints: the CLI (ctkit/cli/) parses arguments, calls these and prints the results,
and the Ansible modules and the tests call them the same way.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ctkit.backends.base import Applied, Backend, Removed, Shown, ToggleStates

if TYPE_CHECKING:  # imported where used: a command loads only what it runs
    from ctkit.audit.run import AuditReport
    from ctkit.export import ExportResult, HostFacts
    from ctkit.kernel.settings import SettingResult
    from ctkit.pipeline import Compiled

__all__ = ["ApplyResult", "ToggleResult", "MemberResult", "apply", "remove", "show", "toggle", "set_member",
           "audit", "export", "Removed", "Shown"]


@dataclass(frozen=True)
class ApplyResult:
    backend: str
    netns: str | None
    dry_run: bool
    applied: Applied  # what the backend did with the ruleset
    toggles: ToggleStates  # each toggle as applied: (on, the policy file's value)
    settings: tuple[SettingResult, ...]  # host settings, after the ruleset

    @property
    def summary(self) -> str:
        return self.applied.summary

    @property
    def warnings(self) -> tuple[str, ...]:
        return self.applied.warnings

    def as_dict(self) -> dict[str, Any]:
        return {**self.applied.details, "settings": [r.as_dict() for r in self.settings]}


@dataclass(frozen=True)
class ToggleResult:
    name: str
    on: bool
    where: str  # in the backend's words: "table inet ctkit"
    netns: str | None

    def as_dict(self) -> dict[str, Any]:
        return {"toggle": self.name, "on": self.on, "where": self.where, "netns": self.netns}


@dataclass(frozen=True)
class MemberResult:
    set: str  # the policy's set name
    member: str  # as given
    added: bool  # False: deleted
    where: str  # in the backend's words: "set inet ctkit blocklist", "ipset ctkit-blocklist"
    netns: str | None


def _changing(netns: str | None, table: str, what: str, dry_run: bool = False):
    """The change lock (ctkit/lock.py); a dry run changes nothing and does not wait for it."""
    from ctkit import lock
    return contextlib.nullcontext() if dry_run else lock.change(netns, table, what)


def apply(compiled: Compiled, backend: Backend, netns: str | None = None, dry_run: bool = False) -> ApplyResult:
    """Replace what ctkit owns with the compiled policy in one kernel transaction, then set the host's
    netfilter sysctls. Toggles keep their live state unless the policy file changed their value."""
    from ctkit.compile.toggles import LiveToggle, keep_live
    from ctkit.kernel.settings import apply_settings
    plan = compiled.plan
    # the live toggles are read and the ruleset written under one lock: a toggle cannot fall in between
    with _changing(netns, plan.table.name, "apply", dry_run):
        if plan.table.toggles:
            states = backend.toggle_states(plan.table.name, netns)
            plan = keep_live(plan, {n: LiveToggle(n, on, p) for n, (on, p) in states.items()})
        applied = backend.apply(plan, netns, dry_run=dry_run)
        settings = apply_settings(compiled.plan.settings, netns, dry_run=dry_run)
    return ApplyResult(backend.name, netns, dry_run, applied, {t.name: (t.on, t.policy_on) for t in plan.table.toggles},
                       tuple(settings))


def remove(backend: Backend, table: str = "ctkit", netns: str | None = None) -> Removed:
    """Delete everything ctkit owns under `table`; nothing else is touched."""
    with _changing(netns, table, "remove"):
        return backend.remove(table, netns)


def show(backend: Backend, table: str = "ctkit", netns: str | None = None) -> Shown:
    """What ctkit owns, with the kernel's counters and the toggles' states."""
    return backend.show(table, netns)


def toggle(backend: Backend, name: str, on: bool, table: str = "ctkit", netns: str | None = None) -> ToggleResult:
    """Switch one toggle: a small atomic update, no policy reload."""
    with _changing(netns, table, f"toggle {name}"):
        return ToggleResult(name, on, backend.set_toggle(table, name, on, netns), netns)


def set_member(backend: Backend, name: str, value: str, add: bool, timeout: int | None = None,
               table: str = "ctkit", netns: str | None = None) -> MemberResult:
    """Add (or delete) one member of a named set. The value is parsed with the set's type as the kernel
    has it (an address set takes addresses, never a host name to look up)."""
    from ctkit import members
    members.check_set_name(name)
    with _changing(netns, table, f"set {'add' if add else 'del'} {name}"):
        member = members.parse(value, backend.member_type(table, name, netns))
        return MemberResult(name, value, add, backend.set_member(table, name, member, add, timeout, netns), netns)


def audit(compiled: Compiled, backend: Backend, netns: str | None = None, state: Path | None = None,
          check_flows: bool = True, flush_denied: bool = False) -> AuditReport:
    """Compare the kernel with the policy and check conntrack health. With flush_denied, delete the
    conntrack entries of tracked flows the policy would no longer admit (those, and no others)."""
    from ctkit.audit import run
    report = run.audit(compiled, backend, netns, state, check_flows=check_flows or flush_denied)
    if flush_denied and report.denied:
        from ctkit.kernel import conntrack
        report = report.with_flushed(conntrack.delete(netns, [f.entry for f in report.denied]))
    return report


def export(compiled: Compiled, backend: Backend, directory: str | Path, policy_path: str | Path, *,
           ctkit: tuple[str, ...] | None = None, apply_args: tuple[str, ...] | None = None,
           host: HostFacts | None = None) -> ExportResult:
    """Write the boot files (the backend's ruleset files, sysctl.d, modules-load.d, modprobe.d, a systemd
    unit running `ctkit apply POLICY`) into `directory`, each atomically; the kernel is not touched.
    `ctkit`: the command the unit runs (default: this ctkit); `apply_args`: its options after the policy
    (default: --backend NAME); `host`: the kernel the files are for (default: this one)."""
    from ctkit.export import export as write
    return write(compiled, backend, directory, policy_path, ctkit=ctkit, apply_args=apply_args, host=host)
