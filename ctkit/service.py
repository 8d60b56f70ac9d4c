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

from ctkit.backends.base import Applied, Backend, Pending, Removed, Shown, ToggleStates
from ctkit.bulk import paused
from ctkit.errors import KernelError
from ctkit.names import TOGGLE_PREFIX

if TYPE_CHECKING:  # imported where used: a command loads only what it runs
    from ctkit.audit.boot import BootCheck
    from ctkit.audit.run import AuditReport
    from ctkit.compile import ir
    from ctkit.export import ExportResult, HostFacts
    from ctkit.kernel.settings import SettingResult
    from ctkit.pipeline import Compiled
    from ctkit.policy.partial import Checked

__all__ = ["ApplyResult", "PlanResult", "ToggleResult", "MemberResult", "RollbackResult", "ConcurrentChange",
           "ShowResult", "plan", "apply", "confirm", "rollback", "remove", "show", "validate", "toggle",
           "set_member", "audit", "boot_check", "export", "Removed", "Shown"]


class ConcurrentChange(KernelError):
    """ctkit's part of the kernel changed between an apply's plan and its write (exit 3)."""


def _settings_pending(settings) -> bool:
    from ctkit.kernel.settings import CHANGED, WOULD_CHANGE
    return any(r.result in (CHANGED, WOULD_CHANGE) for r in settings)


@dataclass(frozen=True)
class PlanResult:
    """What an apply of the policy would change now (`ctkit plan`)."""
    backend: str
    netns: str | None
    pending: Pending  # the ruleset
    settings: tuple[SettingResult, ...]  # host settings as a dry run sees them ("would change", "read-only")
    toggles: ToggleStates

    @property
    def changed(self) -> bool:
        return self.pending.changed or _settings_pending(self.settings)

    def as_dict(self) -> dict[str, Any]:
        return {"backend": self.backend, "netns": self.netns, "changed": self.changed, **self.pending.as_dict(),
                "toggles": {n: {"on": on, "policy": p} for n, (on, p) in self.toggles.items()},
                "settings": [r.as_dict() for r in self.settings]}


@dataclass(frozen=True)
class ApplyResult:
    backend: str
    netns: str | None
    dry_run: bool
    applied: Applied  # what the backend did with the ruleset
    toggles: ToggleStates  # each toggle as applied: (on, the policy file's value)
    settings: tuple[SettingResult, ...]  # host settings, after the ruleset
    pending: Pending | None = None  # the plan the apply carried out
    rollback_at: float | None = None  # apply --confirm-within: time.time() of the rollback unless confirmed
    migrated: tuple[Removed, ...] = ()  # apply with migrate: ctkit's rules of the other backends, removed

    @property
    def changed(self) -> bool:
        return (self.pending is None or self.pending.changed) or _settings_pending(self.settings) \
            or any(r.removed for r in self.migrated)

    @property
    def summary(self) -> str:
        return self.applied.summary

    @property
    def warnings(self) -> tuple[str, ...]:
        return self.applied.warnings

    def as_dict(self) -> dict[str, Any]:
        out = {**self.applied.details, "changed": self.changed}
        if self.pending is not None:
            out["plan"] = self.pending.as_dict()
        if self.rollback_at is not None:
            out["rollback_at"] = self.rollback_at
        if self.migrated:
            out["migrated"] = [r.message for r in self.migrated if r.removed]
        return {**out, "settings": [r.as_dict() for r in self.settings]}


class OtherBackendLive(KernelError):
    """ctkit's rules of another backend are live where this apply would put its own."""


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


def _desired(compiled: Compiled, backend: Backend, netns: str | None) -> tuple[ir.Plan, ToggleStates]:
    """The policy's IR with each toggle at its live state (unless the file changed its value)."""
    from ctkit.compile.toggles import LiveToggle, keep_live
    desired = compiled.plan
    if desired.table.toggles:
        states = backend.toggle_states(desired.table.name, netns)
        desired = keep_live(desired, {n: LiveToggle(n, on, p) for n, (on, p) in states.items()})
    return desired, {t.name: (t.on, t.policy_on) for t in desired.table.toggles}


@paused
def plan(compiled: Compiled, backend: Backend, netns: str | None = None) -> PlanResult:
    """What an apply would change, read from the kernel once; nothing is written."""
    from ctkit.kernel.settings import apply_settings
    desired, toggles = _desired(compiled, backend, netns)
    pending = backend.changes(desired, netns)
    return PlanResult(backend.name, netns, pending, tuple(apply_settings(compiled.plan.settings, netns, dry_run=True)),
                      toggles)


def _present(backend: Backend, table: str, netns: str | None) -> bool:
    """Whether ctkit owns rules of `backend` here; False when that cannot be read (no such namespace, a
    tool missing): the apply's own backend then says what is wrong, or carries on where it can."""
    from ctkit.errors import CtkitError
    try:
        return backend.present(table, netns)
    except CtkitError:
        return False


@paused
def apply(compiled: Compiled, backend: Backend, netns: str | None = None, dry_run: bool = False,
          confirm_within: float | None = None, others: tuple[Backend, ...] = (),
          migrate: bool = False) -> ApplyResult:
    """Bring what ctkit owns to the compiled policy, changing only what differs, in one kernel transaction
    (nothing at all when nothing differs); then set the host's netfilter sysctls. Toggles keep their live
    state unless the policy file changed their value.

    The plan is read first, then again under the change lock unless the kernel's generation id shows
    that nothing changed in between. When ctkit's part changed in between (another apply won the race,
    or someone edited it), nothing is written and ConcurrentChange (exit 3) says so.

    confirm_within: seconds; what ctkit owned before is saved and put back then unless confirm() is
    called first (ctkit/rollback.py). A plain apply confirms a rollback that is armed.

    others: the other backends (registry.others): when ctkit owns rules of one of them in the namespace,
    both would be active (an nft table and iptables chains see the same packets), so the apply stops
    (OtherBackendLive, exit 3) unless `migrate`: then they are removed right after this apply succeeds,
    in the same run (never before: the namespace is not left without ctkit's rules in between)."""
    from ctkit import rollback
    from ctkit.kernel.settings import apply_settings
    table = compiled.plan.table.name
    live = [o for o in others if _present(o, table, netns)]
    if live and not migrate:
        raise OtherBackendLive(
            f"ctkit's rules of another backend are live in this namespace ({', '.join(o.owned(table) for o in live)}): "
            f"applying with {backend.name} would leave both active; apply with --migrate to remove them in the "
            f"same run, or remove them first (ctkit remove --backend {live[0].name})")
    generation = backend.generation(netns)
    desired, toggles = _desired(compiled, backend, netns)
    first = backend.changes(desired, netns)
    with _changing(netns, compiled.plan.table.name, "apply", dry_run):
        pending = first
        if not dry_run and (generation is None or backend.generation(netns) != generation):
            desired, toggles = _desired(compiled, backend, netns)  # read again, under the lock
            pending = backend.changes(desired, netns)
            # a first reading of "nothing to do" that still holds needs no equal fingerprint (a backend
            # may know it without reading the table: ctkit/backends/nft/written.py)
            if pending.fingerprint != first.fingerprint and (first.changed or pending.changed):
                raise ConcurrentChange(
                    f"{pending.where} changed while this apply waited for it (another ctkit apply, or a change "
                    "made by hand): nothing was applied; see `ctkit plan`, then apply again")
        armed = None
        if confirm_within is not None and not dry_run:
            was_armed = rollback.load(netns, table) is not None
            armed = rollback.arm(backend.name, getattr(backend, "variant", "auto"), table, netns,
                                 backend.snapshot(table, netns), confirm_within)
        elif not dry_run:
            rollback.disarm(netns, table, "confirmed by a plain apply")
        try:
            applied = backend.apply(desired, netns, dry_run=dry_run, pending=pending)
        except BaseException:
            if armed is not None and not was_armed:
                rollback.disarm(netns, table, "apply failed: nothing to roll back")
            raise
        if armed is not None:
            armed = rollback.start_clock(armed, confirm_within)
        settings = apply_settings(compiled.plan.settings, netns, dry_run=dry_run)
    migrated = tuple(o.remove(table, netns) for o in live) if not dry_run else ()
    return ApplyResult(backend.name, netns, dry_run, applied, toggles, tuple(settings), pending,
                       armed.deadline if armed else None, migrated)


@dataclass(frozen=True)
class RollbackResult:
    done: bool  # False: nothing was armed
    message: str
    netns: str | None

    def as_dict(self) -> dict[str, Any]:
        return {"done": self.done, "message": self.message, "netns": self.netns}


def confirm(table: str = "ctkit", netns: str | None = None) -> RollbackResult:
    """Keep the policy an `apply --confirm-within` put in place: the armed rollback is dropped."""
    from ctkit import rollback
    with _changing(netns, table, "confirm"):
        armed = rollback.disarm(netns, table, "confirmed")
    if armed is None:
        last = rollback.last_event(netns, table)
        return RollbackResult(False, "nothing to confirm: no rollback is armed" + (
            f" (last: {last})" if last else ""), netns)
    return RollbackResult(True, "confirmed: the policy stays, the rollback is off", netns)


def rollback(table: str = "ctkit", netns: str | None = None, backend: Backend | None = None,
             token: str | None = None, why: str = "rolled back by hand") -> RollbackResult:
    """Put back what ctkit owned before the armed `apply --confirm-within`, now. `backend`: default,
    the one that applied; `token`: only that arming (the watcher's own)."""
    from ctkit import rollback as armed_state
    with _changing(netns, table, "rollback"):
        armed = armed_state.load(netns, table)
        if armed is None or (token is not None and armed.token != token):
            return RollbackResult(False, "nothing to roll back: no rollback is armed", netns)
        if backend is None:
            from ctkit.backends import registry
            backend = registry.get(armed.backend, armed.variant)
        what = backend.restore(table, armed.snapshot, netns)
        armed_state.disarm(netns, table, f"{why}: {what}")
    return RollbackResult(True, f"rolled back: {what}", netns)


def remove(backend: Backend, table: str = "ctkit", netns: str | None = None) -> Removed:
    """Delete everything ctkit owns under `table`; nothing else is touched."""
    with _changing(netns, table, "remove"):
        return backend.remove(table, netns)


def validate(path: str | Path, backends: tuple[str, ...] = ()) -> Checked:
    """Every problem of one policy file in one run: the schema's, and the semantic checks' (build, lint)
    of what can still be read (ctkit/policy/partial.py); then, for a policy that passes them, what each
    of `backends` cannot express (CompileError: the construct and the rule's pointer), before anything
    is sent. Nothing is raised for an invalid policy."""
    from dataclasses import replace

    from ctkit.backends import registry
    from ctkit.compile.lower import lower
    from ctkit.errors import CompileError, Problem
    from ctkit.policy.partial import check_file, with_lines
    checked = check_file(path)
    if checked.policy is None or not backends:
        return checked
    plan = lower(checked.policy)
    named = {r.origin: r.id for c in plan.table.chains for r in c.rules if r.origin}
    refused = []
    for name in backends:
        try:
            registry.get(name).generate(plan)
        except CompileError as exc:
            others = [b for b in registry.NAMES if b != name]
            detail = str(exc).removeprefix(f"{exc.where}: ")
            if exc.where in named:
                detail = f"rule {named[exc.where]}: {detail}"
            refused.append(Problem(exc.where or "", detail, "error", source=str(path), code="backend.cannot-express",
                                   hint=f"remove or change it, or check only the backend you use (--backend "
                                        f"{' or '.join(others) if others else name})"))
    if not refused:
        return checked
    return replace(checked, policy=None, problems=checked.problems + with_lines(path, tuple(refused)))


#: `ctkit show --json`'s format version (schemas/show.schema.json)
SHOW_VERSION = 1
#: keys of a backend's Shown.details that the common part of the show document states itself
_SHOW_COMMON = ("version", "backend", "netns", "table", "owned", "present", "rules", "toggles", "warnings")


@dataclass(frozen=True)
class ShowResult:
    """What ctkit owns in one namespace: the backend's listing, and one shape for every backend
    (`as_dict`, schemas/show.schema.json) with the counters of each policy rule."""
    backend: str
    netns: str | None
    table: str  # the policy's table name (nft table; iptables chain prefix source)
    owned: str  # in the backend's words: "table inet ctkit", "chains CTKIT-* (iptables)"
    shown: Shown
    hits: dict[str, tuple[int, int]]  # policy rule id -> (packets, bytes), summed over its kernel rules

    @property
    def present(self) -> bool:
        return self.shown.present

    @property
    def listing(self) -> str:
        return self.shown.listing

    @property
    def absent(self) -> str:
        return self.shown.absent

    @property
    def details(self) -> dict[str, Any]:
        return self.shown.details

    @property
    def toggles(self) -> ToggleStates:
        return self.shown.toggles

    @property
    def warnings(self) -> tuple[str, ...]:
        return self.shown.warnings

    def as_dict(self) -> dict[str, Any]:
        """The common fields first, then the backend's own form of the same state (nft: `nftables`, the
        table as `nft -j list table` prints it; iptables: `variant`, `prefix`, `families`)."""
        return {"version": SHOW_VERSION, "backend": self.backend, "netns": self.netns, "table": self.table,
                "owned": self.owned, "present": self.present,
                "rules": [{"id": rid, "packets": p, "bytes": b} for rid, (p, b) in self.hits.items()
                          if not rid.startswith(TOGGLE_PREFIX)],  # a toggle's marker rule is no policy rule
                "toggles": {n: {"on": on, "policy": p} for n, (on, p) in self.toggles.items()},
                "warnings": list(self.warnings),
                **{k: v for k, v in self.details.items() if k not in _SHOW_COMMON}}


def show(backend: Backend, table: str = "ctkit", netns: str | None = None) -> ShowResult:
    """What ctkit owns, with the kernel's counters and the toggles' states."""
    shown = backend.show(table, netns)
    hits = backend.rule_hits(table, netns) if shown.present else {}
    return ShowResult(backend.name, netns, table, backend.owned(table), shown, dict(hits))


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


@paused
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


def boot_check(compiled: Compiled, backend: Backend, directory: str | Path, netns: str | None = None) -> BootCheck:
    """Would a reboot bring back what runs? Load the boot files in `directory` (ctkit export) into a
    scratch namespace and compare what ctkit owns there with what it owns in `netns`."""
    from ctkit.audit.boot import check
    return check(compiled, backend, str(directory), netns)


def export(compiled: Compiled, backend: Backend, directory: str | Path, policy_path: str | Path, *,
           ctkit: tuple[str, ...] | None = None, apply_args: tuple[str, ...] | None = None,
           host: HostFacts | None = None) -> ExportResult:
    """Write the boot files (the backend's ruleset files, sysctl.d, modules-load.d, modprobe.d, a systemd
    unit running `ctkit apply POLICY`) into `directory`, each atomically; the kernel is not touched.
    `ctkit`: the command the unit runs (default: this ctkit); `apply_args`: its options after the policy
    (default: --backend NAME); `host`: the kernel the files are for (default: this one)."""
    from ctkit.export import export as write
    return write(compiled, backend, directory, policy_path, ctkit=ctkit, apply_args=apply_args, host=host)
