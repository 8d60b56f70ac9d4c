"""The iptables backend behind the seam (ctkit/backends/base.py): chains named with ctkit's prefix,
one jump into each from the built-in chain it extends, ipsets and cttimeout objects beside them.

One object per variant: iptables-nft and iptables-legacy are different rulesets in the kernel, and
`auto` means what the host's iptables command is (resolved at each kernel call, never at start).
"""
from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

from ctkit import members
from ctkit.audit.drift import TableView, compare, plan_items
from ctkit.audit.findings import Finding
from ctkit.backends.base import (
    BOOT_INSTALL,
    BOOT_NOTE,
    CREATE,
    INCREMENTAL,
    NONE,
    Applied,
    Inspection,
    LiveView,
    Pending,
    PlanItem,
    Removed,
    Shown,
    ToggleStates,
)
from ctkit.backends.iptables import generate as gen
from ctkit.backends.iptables import ipset, kernel
from ctkit.backends.iptables import text as ipt_text
from ctkit.backends.iptables import view as ipt_view
from ctkit.backends.iptables.document import BACKEND, FAMILIES, Ruleset
from ctkit.compile import ir
from ctkit.errors import UsageError
from ctkit.names import chain_prefix, ipset_name


def _live_dict(live: kernel.Live) -> dict:
    tables = {}
    for table in live.document.tables:
        chains = {}
        for chain in table.chains:
            rules = []
            for i, spec in enumerate(chain.rules):
                packets, nbytes = live.counters.get((table.name, chain.name, i), (0, 0))
                rules.append({"spec": spec, "packets": packets, "bytes": nbytes})
            jumps = [r.chain for t, r in live.jumps if t == table.name and r.target == chain.name]
            chains[chain.name] = {"jumped_from": jumps, "rules": rules}
        tables[table.name] = chains
    return {"tool": live.tool, "tables": tables}


def _set_items(lines: tuple[str, ...]) -> list[PlanItem]:
    """ipset restore lines -> plan items: declared members added or deleted, or a set refilled."""
    out: list[PlanItem] = []
    for line in lines:
        verb, name, *rest = line.split(" ")
        if verb in ("add", "del") and not name.endswith("-new"):
            value = " ".join(w for w in rest if w != "-exist")
            out.append(PlanItem("elements", "add" if verb == "add" else "remove", f"ipset {name}",
                                None if verb == "add" else value, value if verb == "add" else None))
        elif verb == "swap":
            target = rest[0]
            out.append(PlanItem("set", "change", f"ipset {target}", None,
                                "filled with the declared members and swapped in (members added at run time "
                                "are dropped)"))
    return out


def _toggle_items(plan: ir.Plan, live: dict[str, tuple[bool, bool | None]]) -> list[PlanItem]:
    """The toggles whose switch state or policy value an apply changes (the chain view leaves switch
    chains and markers out: they are the toggles' state, not policy rules)."""
    def word(on: bool) -> str:
        return "on" if on else "off"
    out: list[PlanItem] = []
    for t in plan.table.toggles:
        subject = f"toggle {t.name}"
        if t.name not in live:
            out.append(PlanItem("toggle", "add", subject, None, word(t.on), t.origin))
            continue
        on, policy = live[t.name]
        if on != t.on:
            out.append(PlanItem("toggle", "change", subject, word(on), word(t.on), t.origin))
        elif policy != t.policy_on:
            before = "policy " + ("unknown" if policy is None else word(policy))
            out.append(PlanItem("toggle", "change", subject, before, f"policy {word(t.policy_on)}", t.origin))
    wanted = {t.name for t in plan.table.toggles}
    out += [PlanItem("toggle", "remove", f"toggle {name}", word(on), None) for name, (on, _p) in live.items()
            if name not in wanted]
    return out


class IptablesBackend:
    name = BACKEND
    formats = ("restore", "json")

    def __init__(self, variant: str = "auto") -> None:
        self.variant = variant  # auto | nft | legacy; checked by kernel.resolve_variant when used
        self._generated: tuple[ir.Plan, Ruleset, dict] | None = None

    def _ruleset(self, plan: ir.Plan) -> Ruleset:
        """gen.generate(plan), once per plan: an apply plans, plans again under the lock and applies the
        same plan (generating a 10,000-rule policy's documents costs about a second each time)."""
        if self._generated is not None and (self._generated[0] is plan or self._generated[0] == plan):
            return self._generated[1]
        ruleset = gen.generate(plan)
        self._generated = (plan, ruleset, {})
        return ruleset

    def _wanted(self, plan: ir.Plan, family: str) -> TableView:
        """The plan's view of one family's chains for changes(), once per plan like _ruleset."""
        ruleset = self._ruleset(plan)
        views = self._generated[2]
        if family not in views:
            views[family] = ipt_view.view(ruleset.document(family), None, None)
        return views[family]

    def owned(self, table: str) -> str:
        return f"chains {chain_prefix(table)}* (iptables)"

    def generate(self, plan: ir.Plan) -> Ruleset:
        return self._ruleset(plan)

    def render(self, plan: ir.Plan, fmt: str, family: str | None = None, source: str | None = None) -> str:
        if fmt not in self.formats:
            raise UsageError(f"unknown format {fmt!r} for --backend iptables (valid: {', '.join(self.formats)})")
        ruleset = self._ruleset(plan)
        if family is not None and family not in FAMILIES:
            raise UsageError(f"unknown family {family!r} (valid: {', '.join(FAMILIES)})")
        texts = {f: ipt_text.render(ruleset.document(f), source)
                 for f in (FAMILIES if family is None else (family,))}
        if fmt == "json":
            return json.dumps({"backend": self.name, "prefix": ruleset.prefix, **texts}, indent=2) + "\n"
        return "\n".join(texts.values())

    def changes(self, plan: ir.Plan, netns: str | None) -> Pending:
        """Per family, ctkit's chains against the compiled documents (only chains whose rules differ are
        flushed and refilled), and the declared members of each ipset."""
        ruleset = self._ruleset(plan)
        pv = kernel.preview(ruleset.ipv4, ruleset.ipv6, netns, self.variant)
        items: list[PlanItem] = []
        present = False
        for family in FAMILIES:
            want = self._wanted(plan, family)
            have = ipt_view.live(pv.current[family], ruleset.prefix, family, None)
            present |= have.present
            if want.present or have.present:
                items += plan_items(compare(want, have if have.present else TableView(True)), f"{family} ")
        items += _toggle_items(plan, kernel.states_in(pv.current, ruleset.prefix, pv.mine))
        items += _set_items(pv.sets)
        items += [PlanItem("object", "change", f"cttimeout {n}", None, "created or updated with the policy's "
                           "timeouts") for n in pv.timeouts]
        where = f"iptables-{pv.variant} chains {ruleset.prefix}*"
        if not any(pv.texts.values()) and not pv.sets and not pv.timeouts:
            return Pending(where, (), NONE, "", pv.fingerprint)
        how = "only the chains whose rules differ are flushed and refilled (the others keep their counters)"
        return Pending(where, tuple(items), INCREMENTAL if present else CREATE, how if present else "",
                       pv.fingerprint)

    def generation(self, netns: str | None) -> int | None:
        if kernel.resolve_variant(self.variant, netns) != "nft":
            return None  # iptables-legacy rules are not nf_tables': no generation id
        from ctkit.kernel.nf_tables import generation
        return generation(netns)

    def apply(self, plan: ir.Plan, netns: str | None, dry_run: bool = False,
              pending: Pending | None = None) -> Applied:
        ruleset = self._ruleset(plan)
        counts = {f: ruleset.document(f).rule_count for f in FAMILIES}
        size = f"{counts['ipv4']} IPv4 and {counts['ipv6']} IPv6 rules"
        if pending is not None and pending.method == NONE:
            details = {"backend": self.name, "variant": kernel.resolve_variant(self.variant, netns, ruleset.prefix),
                       "prefix": ruleset.prefix, "netns": netns, "dry_run": dry_run, "kernel_rules": counts,
                       "changed": False, "method": NONE, "families_changed": {f: False for f in FAMILIES}}
            return Applied(f"{pending.where} unchanged ({size}): nothing sent to the kernel", details)
        findings: list[str] = []
        variant, changes = kernel.apply(ruleset.ipv4, ruleset.ipv6, netns, self.variant, dry_run=dry_run,
                                        findings=findings)
        method = pending.method if pending is not None else INCREMENTAL
        details: dict[str, Any] = {
            "backend": self.name, "variant": variant, "prefix": ruleset.prefix, "netns": netns,
            "dry_run": dry_run, "kernel_rules": counts, "changed": True, "method": method,
            "families_changed": {c.family: bool(c.document) for c in changes}}
        note = " (only the chains that differ were refilled)" if method == INCREMENTAL else ""
        return Applied(f"iptables-{variant} chains {ruleset.prefix}*, {size}{note}", details, tuple(findings))

    def snapshot(self, table: str, netns: str | None) -> str:
        from ctkit.backends.iptables import snapshot
        return snapshot.take(chain_prefix(table), netns, self.variant)

    def restore(self, table: str, snapshot: str, netns: str | None) -> str:
        from ctkit.backends.iptables import snapshot as saved
        return saved.restore(chain_prefix(table), snapshot, netns, self.variant)

    def present(self, table: str, netns: str | None) -> bool:
        """ctkit's ownership record lists chains or ipsets under this prefix (any variant)."""
        return not kernel.load_record(netns, chain_prefix(table)).empty()

    def remove(self, table: str, netns: str | None) -> Removed:
        prefix = chain_prefix(table)
        findings: list[str] = []
        variant, changes = kernel.remove(prefix, netns, self.variant, findings=findings)
        removed = [c.family for c in changes if c.document]
        if removed:
            return Removed(True, f"removed chains {prefix}* and their jumps ({', '.join(removed)}; "
                                 f"iptables-{variant})", tuple(findings))
        return Removed(False, f"nothing to remove: no {prefix}* chains (iptables-{variant})", tuple(findings))

    def show(self, table: str, netns: str | None) -> Shown:
        prefix = chain_prefix(table)
        findings: list[str] = []
        variant, lives = kernel.show(prefix, netns, self.variant, findings=findings)
        _v, toggles = kernel.toggle_states(prefix, netns, variant)
        present = any(live.document.tables for live in lives)
        details = {"backend": self.name, "variant": variant, "prefix": prefix, "present": present,
                   "families": {live.family: _live_dict(live) for live in lives}}
        return Shown(present, ipt_text.listing(lives), f"ctkit owns nothing here: no {prefix}* chains "
                     f"(iptables-{variant})", details, toggles, tuple(findings))

    def toggle_states(self, table: str, netns: str | None) -> ToggleStates:
        return kernel.toggle_states(chain_prefix(table), netns, self.variant)[1]

    def set_toggle(self, table: str, name: str, on: bool, netns: str | None) -> str:
        prefix = chain_prefix(table)
        variant = kernel.set_toggle(prefix, name, on, netns, self.variant)
        return f"chains {prefix}TG-{name}-*, iptables-{variant}"

    def member_type(self, table: str, name: str, netns: str | None) -> members.SetType:
        set_name = ipset_name(chain_prefix(table), name)
        return members.set_type_from_ipset(ipset.header(set_name, netns), set_name)

    def set_member(self, table: str, name: str, member: members.Member, add: bool, timeout: int | None,
                   netns: str | None) -> str:
        set_name = ipset_name(chain_prefix(table), name)
        if add:
            ipset.add(set_name, member.text(), timeout, netns)
        else:
            ipset.delete(set_name, member.text(), netns)
        return f"ipset {set_name}"

    def inspect(self, plan: ir.Plan, netns: str | None) -> Inspection:
        """Per family: ctkit's chains against the compiled documents, and foreign rules ahead of the jumps."""
        ruleset = self._ruleset(plan)
        variant = kernel.resolve_variant(self.variant, netns, ruleset.prefix)
        table = plan.table
        # a base chain's policy rule carries the chain name as its id ("input: policy drop")
        ids = {r.id for c in table.chains for r in c.rules} | {c.name for c in table.chains}
        views, found = [], []
        want_sets, have_sets = self._set_views(ruleset, netns)
        for family in FAMILIES:
            current = kernel.parse_save(kernel.save(family, variant, netns))
            want = ipt_view.view(ruleset.document(family), None, ids)
            have = ipt_view.live(current, ruleset.prefix, family, ids)
            if not want.present and not have.present:
                continue  # neither the policy nor the kernel has ctkit chains in this family
            if not views:  # the sets are compared once, in the first family's view (port sets serve both)
                want, have = replace(want, sets=want_sets), replace(have, sets=have_sets)
            views.append(LiveView(f"{ruleset.prefix}* ({family})", f"{family} ", want, have))
            found += ipt_view.foreign_first(current, ruleset.prefix, family)
        mixed = kernel.mixed_variants(netns, variant)
        if mixed:
            found.append(Finding("foreign.other-iptables-variant", "warning", "iptables", mixed,
                                 "keep one iptables variant per namespace, or audit the other with "
                                 f"--iptables-variant {'legacy' if variant == 'nft' else 'nft'}"))
        return Inspection(tuple(views), tuple(found))

    def _set_views(self, ruleset: Ruleset, netns: str | None):
        """The audit's views of ctkit's ipsets (view.set_views): the policy's, and the kernel's that are
        ctkit's (declared now, or listed in the ownership record)."""
        sets = list({s.name: s for f in FAMILIES for s in ruleset.document(f).ipsets}.values())
        rec = kernel.load_record(netns, ruleset.prefix)
        if not sets and not rec.ipsets:
            return {}, {}
        existing = set(ipset.names(netns))
        mine = ({s.name for s in sets} | rec.ipsets) & existing
        live = {name: ipset.saved(name, netns) for name in sorted(mine)}
        return ipt_view.set_views(sets, live, rec.ipsets, rec.declared, ruleset.prefix)

    def rule_hits(self, table: str, netns: str | None) -> dict[str, tuple[int, int]]:
        variant = kernel.resolve_variant(self.variant, netns, chain_prefix(table))
        current = {f: kernel.parse_save(kernel.save(f, variant, netns, counters=True)) for f in FAMILIES}
        return ipt_view.rule_hits(current, chain_prefix(table))

    def load_boot(self, table: str, directory: str, netns: str) -> tuple[str, ...]:
        """The ipset file first (ipset restore -exist), then each family's rules with --noflush."""
        import os
        variant = kernel.resolve_variant(self.variant, netns, chain_prefix(table))
        loaded = []
        for name in (f"{table}.ipset", f"{table}.rules.v4", f"{table}.rules.v6"):
            path = os.path.join(directory, name)
            if not os.path.exists(path):
                if name.endswith(".ipset"):
                    continue
                raise UsageError(f"no boot file {path} (ctkit export --backend iptables writes it)")
            with open(path, encoding="utf-8") as f:
                text = f.read()
            if name.endswith(".ipset"):
                body = "".join(line + "\n" for line in text.split("\n") if line and not line.startswith("#"))
                ipset._run(["restore", "-exist"], netns, f"ipset restore < {path} failed", input=body)
            else:
                family = "ipv4" if name.endswith("v4") else "ipv6"
                kernel.restore_noflush(family, variant, netns, text)
            loaded.append(path)
        return tuple(loaded)

    def boot_files(self, plan: ir.Plan, source: str | None) -> dict[str, str]:
        """iptables-restore input per family that creates ctkit's chains and their jumps and nothing else
        (for `iptables-restore --noflush`), and an `ipset restore` file when the policy has sets.

        Not idempotent, by the nature of iptables-restore: a second --noflush load refills ctkit's chains
        but inserts a second jump. cttimeout objects have no file: no distribution tool loads them."""
        ruleset = self._ruleset(plan)
        table = plan.table.name
        prefix = ruleset.prefix
        origin = f" from {source}" if source else ""
        sets = list({s.name: s for f in FAMILIES for s in ruleset.document(f).ipsets}.values())  # bitmap:port: both
        timeouts = sorted({t.name for f in FAMILIES for t in ruleset.document(f).timeouts})
        files: dict[str, str] = {}
        if sets:
            lines = [f"# ctkit boot file: the ipsets of chains {prefix}*{origin}",
                     f"{BOOT_INSTALL}/etc/iptables/ipsets (Debian's ipset-persistent), or loaded with "
                     f"`ipset restore -exist < {table}.ipset`: before the iptables files, whose rules name these sets",
                     "# -exist: a set that exists already is kept (with its members); declared members are added"]
            for s in sets:
                lines.append(ipset._create_line(s.name, s) + " -exist")
                lines += [line + " -exist" for line in ipset._add_lines(s.name, s)]
            files[f"{table}.ipset"] = "\n".join(lines) + "\n"
        for family, suffix in zip(FAMILIES, ("v4", "v6"), strict=True):
            doc = ruleset.document(family)
            tool = "iptables-restore" if suffix == "v4" else "ip6tables-restore"
            head = [f"# ctkit boot file: chains {prefix}* and the jumps to them ({family}){origin}",
                    f"{BOOT_INSTALL}loaded once per boot with `{tool} --noflush < {table}.rules.{suffix}` (from a "
                    f"unit of your own); as /etc/iptables/rules.{suffix} only where it is the whole file (see below)",
                    "# --noflush: only ctkit's chains are created and one jump into each inserted at the top of its "
                    "built-in chain; every other rule (docker's, fail2ban's) stays where it is",
                    f"{BOOT_NOTE}iptables-persistent and RHEL's iptables service load their rules files without "
                    "--noflush, "
                    "which flushes every table a file names (and docker's rules in them); at boot, before "
                    "docker starts, that loses nothing, but a reload of those services while docker runs does",
                    f"{BOOT_NOTE}load it once per boot: a second --noflush load adds a second jump into each "
                    f"chain; `ctkit apply` (or the unit ctkit-{table}.service) re-applies safely",
                    f"{BOOT_NOTE}ctkit's ownership record (/run/ctkit) does not list chains loaded from these "
                    "files: `ctkit apply`, `toggle` and `remove` treat them as foreign and leave them alone; "
                    f"the unit ctkit-{table}.service is the way when ctkit must manage them after boot"]
            if sets:
                head.append(f"{BOOT_NOTE}the rules name ipsets: load {table}.ipset first (ipset restore -exist)")
            if timeouts:
                head.append(f"{BOOT_NOTE}the rules name conntrack timeout objects ({', '.join(timeouts)}) that "
                            "no distribution tool creates (Debian has no nfct): without them these files do not "
                            f"load; use the unit ctkit-{table}.service, which creates them")
            if not doc.tables:
                head.append(f"# the policy puts nothing in {family}")
            body = [line for line in ipt_text.render(doc, source).split("\n") if line and not line.startswith("#")]
            files[f"{table}.rules.{suffix}"] = "\n".join(head + body) + "\n"
        return files
