"""The nftables backend behind the seam (ctkit/backends/base.py): one inet table that ctkit owns whole."""
from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from ctkit.backends.base import (
    BOOT_INSTALL,
    BOOT_NOTE,
    INCREMENTAL,
    NONE,
    REPLACE,
    Applied,
    Inspection,
    LiveView,
    Pending,
    Removed,
    Shown,
    ToggleStates,
)
from ctkit.backends.nft import kernel, written
from ctkit.backends.nft.table import BACKEND, FAMILY

# generate (and with it the IR), diff, foreign, text and view are imported by the methods that use
# them: `ctkit set add` and `ctkit toggle` start without them (issue 12: start-up)
from ctkit.errors import UsageError

if TYPE_CHECKING:
    from ctkit.compile import ir


def _generate(plan: ir.Plan) -> dict:
    from ctkit.backends.nft import generate
    return generate.generate(plan)


def _in_table(item: dict, name: str) -> bool:
    (kind, body), = item.items()
    if kind == "table":
        return body["family"] == FAMILY and body["name"] == name
    return body.get("family") == FAMILY and body.get("table") == name


def _json(data: Any) -> str:
    return json.dumps(data, indent=2) + "\n"


def _generation(netns: str | None) -> int | None:
    from ctkit.errors import KernelError
    from ctkit.kernel.nf_tables import generation
    try:
        return generation(netns)
    except KernelError:
        return None  # no shortcut then: the table is listed and compared


class NftBackend:
    name = BACKEND
    formats = ("json", "nft", "plan")

    def __init__(self) -> None:
        self._generated: tuple[ir.Plan, dict, list[str]] | None = None

    def _made(self, plan: ir.Plan) -> tuple[dict, list[str]]:
        if self._generated is None or not (self._generated[0] is plan or self._generated[0] == plan):
            self._generated = (plan, _generate(plan), [])
        return self._generated[1], self._generated[2]

    def _document(self, plan: ir.Plan) -> dict:
        """_generate(plan), once per plan: an apply plans, may plan again under the lock, then applies the
        same plan."""
        return self._made(plan)[0]

    def _text(self, plan: ir.Plan) -> str:
        """The document's nft text (what an apply sends), rendered once per plan and only when asked: an
        audit or a plan reads the document, not its text."""
        from ctkit.backends.nft import text as nft_text
        document, text = self._made(plan)
        if not text:
            text.append(nft_text.render(document))
        return text[0]

    def _digest(self, plan: ir.Plan) -> str:
        """What names the document generated for `plan` in written.py's record: from the plan's identity
        and its toggles' states when the plan has one (the document is a function of those and of ctkit's
        code, which the identity covers), so that an audit that finds the record holding generates
        nothing; else the digest of the document's text."""
        if plan.identity is None:
            return written.digest(self._text(plan))
        import hashlib
        return "plan-" + hashlib.sha256(f"{plan.identity}\0{plan.table.toggles!r}".encode()).hexdigest()

    def owned(self, table: str) -> str:
        return f"table {FAMILY} {table}"

    def generate(self, plan: ir.Plan) -> dict:
        return _generate(plan)

    def render(self, plan: ir.Plan, fmt: str, family: str | None = None, source: str | None = None) -> str:
        from ctkit.backends.nft import text as nft_text
        if family is not None:
            raise UsageError("--family is for --backend iptables (the nft table is inet: both families)")
        document = _generate(plan)
        if fmt == "json":
            return _json(document)
        if fmt == "nft":
            return nft_text.render(document)
        if fmt == "plan":
            return _json({"backend": self.name, "table": plan.table.name, "ruleset": document,
                          "settings": [{"key": s.key, "sysctl": f"net.netfilter.{s.sysctl}", "value": s.value,
                                        "absent_ok": s.absent_ok} for s in plan.settings]})
        raise UsageError(f"unknown format {fmt!r} (valid: {', '.join(self.formats)})")

    def changes(self, plan: ir.Plan, netns: str | None) -> Pending:
        """Nothing to do, without reading the table, when ctkit's last commit wrote this very document and
        nothing was committed in the namespace since (written.py); else the table listed and compared."""
        from ctkit.backends.nft import diff
        table = plan.table.name
        digest = self._digest(plan)
        seen = _generation(netns)
        if written.holds(table, netns, digest, seen):
            return Pending(f"table {FAMILY} {table}", (), NONE, "", f"written {digest}")
        pending = diff.changes(plan, self._document(plan), kernel.list_table(table, netns))
        if pending.method == NONE and seen is not None and _generation(netns) == seen:
            written.remember(table, netns, digest, seen)  # read whole between two equal ids: it holds
        return pending

    def generation(self, netns: str | None) -> int | None:
        from ctkit.kernel.nf_tables import generation
        return generation(netns)

    def apply(self, plan: ir.Plan, netns: str | None, dry_run: bool = False,
              pending: Pending | None = None) -> Applied:
        from ctkit.backends.nft import diff
        from ctkit.backends.nft.generate import rule_count
        table = plan.table.name
        digest = self._digest(plan)
        if pending is None:
            pending = diff.changes(plan, self._document(plan), kernel.list_table(table, netns))
        before = _generation(netns) if pending.method != NONE and not dry_run else None
        if pending.method == INCREMENTAL:
            kernel.apply_batch(table, pending.work, netns, dry_run=dry_run)
        elif pending.work:  # REPLACE: the whole table, run-time set members put back
            kernel.apply(table, {"nftables": self._document(plan)["nftables"] + list(pending.work)}, netns,
                         dry_run=dry_run)
        elif pending.method != NONE:  # CREATE, REPLACE: the whole table, rendered once
            kernel.apply(table, self._document(plan), netns, dry_run=dry_run, text=self._text(plan))
        if pending.method != NONE and not dry_run:
            written.record(table, netns, digest, before, _generation(netns))
        rules = rule_count(plan.table)
        size = f"{len(plan.table.chains)} chains, {rules} rules"
        if pending.method == NONE:
            summary = f"{self.owned(table)} unchanged ({size}): nothing sent to the kernel"
        elif pending.method == INCREMENTAL:
            summary = (f"{self.owned(table)}, {size}: {len(pending.items)} changes sent as one transaction "
                       "(unchanged rules keep their counters)")
        else:
            summary = f"{self.owned(table)}, {size}" + (
                f" (replaced whole: {pending.reason})" if pending.method == REPLACE else "")
        return Applied(summary, {"table": f"{FAMILY} {table}", "netns": netns, "dry_run": dry_run,
                                 "kernel_rules": rules, "changed": pending.changed, "method": pending.method})

    def snapshot(self, table: str, netns: str | None) -> str:
        return kernel.list_table_text(table, netns) or ""

    def restore(self, table: str, snapshot: str, netns: str | None) -> str:
        kernel.restore_text(table, snapshot, netns)
        return f"{self.owned(table)} as saved" if snapshot.strip() else f"{self.owned(table)} removed (it did not exist)"

    def present(self, table: str, netns: str | None) -> bool:
        return kernel.has_table(table, netns)

    def remove(self, table: str, netns: str | None) -> Removed:
        written.forget(table, netns)
        if kernel.delete_table(table, netns):
            return Removed(True, f"removed {self.owned(table)}")
        return Removed(False, f"nothing to remove: no {self.owned(table)}")

    def show(self, table: str, netns: str | None) -> Shown:
        items = kernel.list_table(table, netns)
        absent = f"ctkit owns nothing here: no {self.owned(table)}"
        if items is None:
            return Shown(False, "", absent, {"table": f"{FAMILY} {table}", "present": False, "nftables": []})
        listing = kernel.list_table_text(table, netns) or ""
        return Shown(True, listing, absent, {"table": f"{FAMILY} {table}", "present": True, "nftables": items},
                     kernel.toggle_states(table, netns))

    def toggle_states(self, table: str, netns: str | None) -> ToggleStates:
        return kernel.toggle_states(table, netns)

    def set_toggle(self, table: str, name: str, on: bool, netns: str | None) -> str:
        kernel.set_toggle(table, name, on, netns)
        return self.owned(table)

    def member_type(self, table: str, name: str, netns: str | None):
        from ctkit import members
        items = kernel.list_set(table, name, netns)
        if not items:
            raise UsageError(f"no set {name!r} in {self.owned(table)} (apply a policy that declares it)")
        return members.set_type_from_nft(items, name)

    def set_member(self, table: str, name: str, member, add: bool, timeout: int | None,
                   netns: str | None) -> str:
        kernel.set_element(table, name, member.nft(), add, timeout, netns)
        return f"set {FAMILY} {table} {name}"

    def inspect(self, plan: ir.Plan, netns: str | None) -> Inspection:
        from ctkit.backends.nft import foreign
        from ctkit.backends.nft import view as nft_view
        table = plan.table
        ids = {r.id for c in table.chains for r in c.rules}
        seen = _generation(netns)
        if written.holds(table.name, netns, self._digest(plan), seen):
            # ctkit's last commit wrote this very document and nothing was committed since (written.py): the
            # table holds it, so only the other tables are read, for what interferes with ctkit's rules
            others = kernel.list_other_tables(table.name, netns)
            if _generation(netns) == seen:
                return Inspection((LiveView(table.name, "", None, None, held=True),),
                                  tuple(foreign.interference(others, table)))
        want = nft_view.view(self._document(plan)["nftables"], ids)
        ruleset = kernel.list_ruleset(netns)
        mine = [i for i in ruleset if _in_table(i, table.name)]
        have = nft_view.view(mine if any("table" in i for i in mine) else None, ids)
        return Inspection((LiveView(table.name, "", want, have),), tuple(foreign.interference(ruleset, table)))

    def rule_hits(self, table: str, netns: str | None) -> dict[str, tuple[int, int]]:
        from ctkit.backends.nft import view as nft_view
        return nft_view.rule_hits(kernel.list_table(table, netns) or [])

    def load_boot(self, table: str, directory: str, netns: str) -> tuple[str, ...]:
        import os
        path = os.path.join(directory, f"{table}.nft")
        try:
            with open(path, encoding="utf-8") as f:
                text = f.read()
        except OSError as exc:
            raise UsageError(f"cannot read the boot file {path}: {exc.strerror}") from None
        kernel.load_text(text, netns, f"nft -f {path}")
        return (path,)

    def boot_files(self, plan: ir.Plan, source: str | None) -> dict[str, str]:
        """One nft file that replaces only `table inet <name>`: the renderer's `add table; delete table;
        table {...}` is one transaction that works whether the table exists or not, so loading the file
        twice, or at boot, ends in the same table and leaves every other table alone."""
        from ctkit.backends.nft import text as nft_text
        table = plan.table.name
        owned = self.owned(table)
        head = [f"# ctkit boot file: {owned}" + (f" from {source}" if source else ""),
                f"{BOOT_INSTALL}/etc/nftables.d/{table}.nft, included from /etc/nftables.conf "
                f"(include \"/etc/nftables.d/{table}.nft\"), or loaded with nft -f",
                f"# nft -f replaces {owned} in one transaction (idempotent: it works when the table exists and "
                "when it does not); other tables (docker's, firewalld's) are not touched"]
        if plan.table.sets:
            head.append(f"{BOOT_NOTE}loading this file resets the sets of {owned} to their declared elements "
                        "(members added with `ctkit set add` are not in it)")
        if plan.table.toggles:
            head.append(f"{BOOT_NOTE}toggles of {owned} come up as the policy file sets them "
                        "(a state switched with `ctkit toggle` is not in it)")
        return {f"{table}.nft": "\n".join(head) + "\n" + nft_text.render(_generate(plan))}
