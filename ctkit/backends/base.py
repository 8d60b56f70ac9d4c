"""The backend seam: what every kernel backend does, and the results it hands back.

A backend turns the IR (ctkit/compile/ir.py) into one kernel tool's input and owns
that tool's kernel access: apply, remove, show, toggles, set members, and the
canonical views the audit compares. ctkit/service.py and ctkit/audit call a
backend only through this protocol; ctkit/backends/registry.py picks one by name.
A new backend is a package under ctkit/backends/ with a class that has these
methods, plus one line in the registry (docs/ARCHITECTURE.md, "The backend seam").

Results carry the backend's own words for what it owns ("table inet ctkit",
"chains CTKIT-*"), so the CLI prints them without knowing which backend it has.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from ctkit.audit.drift import TableView
    from ctkit.audit.findings import Finding
    from ctkit.compile import ir
    from ctkit.members import Member, SetType

#: {toggle: (on now, the policy file's value at the last apply, or None when unknown)}
ToggleStates = dict[str, tuple[bool, "bool | None"]]

#: Header lines of a boot file (Backend.boot_files) that `ctkit export` reads back and prints:
#: where the file goes and how it is loaded, and what its user must know (said once per text).
BOOT_INSTALL, BOOT_NOTE = "# install: ", "# note: "


@dataclass(frozen=True)
class Applied:
    """One apply (or dry run) of a ruleset, before host settings."""
    summary: str  # what was applied, in the backend's words: "table inet ctkit, 3 chains, 12 rules"
    details: dict[str, Any]  # `ctkit apply --json` fields, in order (settings are added after them)
    warnings: tuple[str, ...] = ()  # foreign objects left alone, said on stderr


@dataclass(frozen=True)
class PlanItem:
    """One difference between what ctkit owns in the kernel and what the policy compiles to."""
    kind: str  # table | chain | rule | set | elements | object | toggle
    action: str  # add | remove | change | move
    subject: str  # "input/ssh", "chain input", "set blocklist", "toggle maintenance"
    before: str | None = None  # the kernel's form now (None: nothing)
    after: str | None = None  # the form after the apply
    origin: str | None = None  # JSON pointer of the policy construct

    def as_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "action": self.action, "subject": self.subject, "origin": self.origin,
                "before": self.before, "after": self.after}


#: how an apply reaches the policy: nothing to do, create what is absent, change only what differs,
#: or replace everything ctkit owns in one transaction (where the kernel cannot change a thing in place)
NONE, CREATE, INCREMENTAL, REPLACE = "none", "create", "incremental", "replace"


@dataclass(frozen=True)
class Pending:
    """What an apply would change, from one reading of the kernel (Backend.changes)."""
    where: str  # in the backend's words: "table inet ctkit"
    items: tuple[PlanItem, ...]
    method: str  # NONE | CREATE | INCREMENTAL | REPLACE
    reason: str = ""  # REPLACE: what the kernel cannot change in place; INCREMENTAL: what is touched
    #: ctkit's part of the kernel as read, without counters and set members: an apply compares it with
    #: a second reading under the change lock, so a change made in between is never overwritten
    fingerprint: str = ""
    work: Any = field(default=None, compare=False, repr=False)  # the backend's transaction, from the same read

    @property
    def changed(self) -> bool:
        return self.method != NONE

    def as_dict(self) -> dict[str, Any]:
        return {"where": self.where, "method": self.method, "reason": self.reason or None,
                "items": [i.as_dict() for i in self.items]}


@dataclass(frozen=True)
class Removed:
    removed: bool  # False: there was nothing of ctkit's to remove
    message: str
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True)
class Shown:
    """What ctkit owns in one namespace, as `ctkit show` prints it."""
    present: bool
    listing: str  # the owned ruleset with counters, printable text ending in a newline ("" when absent)
    absent: str  # the sentence printed when nothing is owned
    details: dict[str, Any]  # `ctkit show --json` fields, in order (toggles are added after them)
    toggles: ToggleStates = field(default_factory=dict)
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True)
class LiveView:
    """The compiled and the live form of one owned unit (nft: the table; iptables: one family). `held`:
    the backend knows the kernel holds what it compiled, without reading it back (nft: written.py);
    then there is nothing to compare, and want and have are None (neither is made)."""
    where: str  # names the unit in drift: "ctkit", "CTKIT-* (ipv4)"
    subject_prefix: str  # put before every drift subject of this unit ("" or "ipv4 ")
    want: TableView | None
    have: TableView | None
    held: bool = False


@dataclass(frozen=True)
class Inspection:
    """One read of the kernel for the audit: views to compare, and foreign rules that interfere."""
    views: tuple[LiveView, ...]
    foreign: tuple[Finding, ...] = ()


class Backend(Protocol):
    """A kernel backend. Every method that touches the kernel takes the namespace it runs in."""

    name: str  # as on the command line: nft, iptables
    formats: tuple[str, ...]  # what `render` can write; the first is the default

    def owned(self, table: str) -> str:
        """What ctkit owns under this table name, in the backend's words."""

    def generate(self, plan: ir.Plan) -> Any:
        """IR -> the backend's document (what its kernel tool accepts). Raises CompileError."""

    def render(self, plan: ir.Plan, fmt: str, family: str | None = None, source: str | None = None) -> str:
        """The text `ctkit compile` prints. `family` narrows to ipv4 or ipv6 where the backend splits them."""

    def changes(self, plan: ir.Plan, netns: str | None) -> Pending:
        """Read the kernel once: what an apply of `plan` would change, and the transaction that does it."""

    def generation(self, netns: str | None) -> int | None:
        """A number the kernel changes with every ruleset change in this namespace (nf_tables' generation
        id), or None where the backend's rules have none (iptables-legacy)."""

    def apply(self, plan: ir.Plan, netns: str | None, dry_run: bool = False,
              pending: Pending | None = None) -> Applied:
        """Make the kernel hold exactly `plan`'s ruleset in one transaction (dry run: let it check).
        `pending`: this backend's changes() for `plan`, read under the change lock: only what differs
        is sent (nothing at all when nothing differs)."""

    def snapshot(self, table: str, netns: str | None) -> str:
        """What ctkit owns under `table` now, as text restore() takes back (for confirm-or-rollback)."""

    def restore(self, table: str, snapshot: str, netns: str | None) -> str:
        """Put back what snapshot() saved, in one change of what ctkit owns; returns what, in words."""

    def remove(self, table: str, netns: str | None) -> Removed:
        """Delete everything ctkit owns under `table`, nothing else."""

    def present(self, table: str, netns: str | None) -> bool:
        """Whether ctkit owns anything under `table` in the namespace (a cheap read: no listing)."""

    def show(self, table: str, netns: str | None) -> Shown: ...

    def toggle_states(self, table: str, netns: str | None) -> ToggleStates: ...

    def set_toggle(self, table: str, name: str, on: bool, netns: str | None) -> str:
        """Flip one toggle in one small kernel update; returns where, in the backend's words."""

    def member_type(self, table: str, name: str, netns: str | None) -> SetType:
        """The named set's member type as the kernel holds it."""

    def set_member(self, table: str, name: str, member: Member, add: bool, timeout: int | None,
                   netns: str | None) -> str:
        """Add or delete one member of a named set; returns where, in the backend's words."""

    def inspect(self, plan: ir.Plan, netns: str | None) -> Inspection:
        """Read the kernel once for the audit: canonical views of `plan` and of the live rules."""

    def rule_hits(self, table: str, netns: str | None) -> dict[str, tuple[int, int]]:
        """(packets, bytes) per policy rule id, summed over its kernel rules."""

    def load_boot(self, table: str, directory: str, netns: str) -> tuple[str, ...]:
        """Load the files boot_files() wrote into `directory` as the distribution's tools would, into
        namespace `netns` (a scratch one: ctkit audit --boot); returns the files loaded."""

    def boot_files(self, plan: ir.Plan, source: str | None) -> dict[str, str]:
        """What the distribution's own tools load at boot to recreate `plan`'s ruleset (file name ->
        content; no kernel access): only what ctkit owns, nothing that flushes foreign rules. Each file
        says where it goes and how it is loaded in a BOOT_INSTALL line, and caveats in BOOT_NOTE lines."""
