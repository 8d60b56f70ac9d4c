"""One audit: read the kernel once, compare with the compiled policy, check health."""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from ctkit.audit import foreign, health
from ctkit.audit.drift import Drift, compare
from ctkit.audit.findings import Finding, at_least
from ctkit.audit.nft_view import view
from ctkit.audit.settings import SettingState, read_settings
from ctkit.backends import nft as nft_backend
from ctkit.errors import EXIT_FINDINGS, EXIT_OK, UsageError
from ctkit.kernel import nft as nft_kernel
from ctkit.kernel import sysctl
from ctkit.kernel.netns import entered
from ctkit.pipeline import Compiled


@dataclass(frozen=True)
class HostFigures:
    """What the audit reads from the connection tracker of one namespace."""
    count: int
    maximum: int
    buckets: int | None
    max_writable: bool
    expect_max: int | None
    helper_sysctl: str | None
    stats: dict[str, int] = field(default_factory=dict)  # totals over CPUs
    per_cpu: tuple[tuple[int, dict[str, int]], ...] = ()  # (cpu, counters)
    expectations: int = 0
    slabinfo: str | None = None


@dataclass(frozen=True)
class AuditReport:
    netns: str | None
    backend: str
    table: str
    drift: list[Drift]
    settings: list[SettingState]
    findings: list[Finding]
    figures: HostFigures

    @property
    def exit_code(self) -> int:
        return EXIT_FINDINGS if self.drift or at_least(self.findings, "warning") else EXIT_OK

    def as_dict(self) -> dict:
        return {
            "version": 1, "netns": self.netns, "backend": self.backend, "table": self.table,
            "status": "clean" if self.exit_code == EXIT_OK else "attention",
            "drift": [d.as_dict() for d in self.drift],
            "settings": [s.as_dict() for s in self.settings],
            "findings": [f.as_dict() for f in self.findings],
            "conntrack": {"count": self.figures.count, "max": self.figures.maximum,
                          "buckets": self.figures.buckets, "expectations": self.figures.expectations,
                          "stats": self.figures.stats},
        }


def read_figures(netns: str | None) -> HostFigures:
    from ctkit.kernel import conntrack  # the conntrack reader (ctnetlink), see ctkit/kernel/conntrack.py
    with entered(netns):
        values = {n: sysctl.read(n) for n in ("nf_conntrack_count", "nf_conntrack_max", "nf_conntrack_buckets",
                                               "nf_conntrack_expect_max", "nf_conntrack_helper")}
        try:
            with open("/proc/slabinfo") as f:
                slabinfo = f.read()
        except OSError:
            slabinfo = None
    stats = conntrack.stats(netns)
    return HostFigures(
        count=values["nf_conntrack_count"].int_value or 0,
        maximum=values["nf_conntrack_max"].int_value or 0,
        buckets=values["nf_conntrack_buckets"].int_value,
        max_writable=values["nf_conntrack_max"].writable,
        expect_max=values["nf_conntrack_expect_max"].int_value,
        helper_sysctl=values["nf_conntrack_helper"].value,
        stats=dict(stats.totals),
        per_cpu=stats.per_cpu,
        expectations=len(conntrack.expectations(netns)),
        slabinfo=slabinfo,
    )


def _origins(compiled: Compiled) -> dict[str, str]:
    origins = {}
    for chain in compiled.plan.table.chains:
        if chain.origin:
            origins[f"chain/{chain.name}"] = chain.origin
        for rule in chain.rules:
            origins[rule.id] = rule.origin
    for obj in compiled.plan.table.objects:
        origins[f"helper/{obj.name}"] = obj.origin
    return origins


def ruleset_drift(compiled: Compiled, netns: str | None) -> tuple[list[Drift], list[dict]]:
    table = compiled.plan.table
    ids = {r.id for c in table.chains for r in c.rules}
    want = view(nft_backend.generate(compiled.plan)["nftables"], ids)
    ruleset = nft_kernel.list_ruleset(netns)
    mine = [i for i in ruleset if _in_table(i, table.name)]
    have = view(mine if any("table" in i for i in mine) else None, ids)
    return compare(want, have, _origins(compiled), table.name), ruleset


def rule_hits(items: list[dict]) -> dict[str, tuple[int, int]]:
    """(packets, bytes) per policy rule id, summed over its kernel rules, from a table listing."""
    hits: dict[str, tuple[int, int]] = {}
    for item in items:
        rule = item.get("rule")
        if not rule or not rule.get("comment"):
            continue
        rid = rule["comment"].split(": ", 1)[0]
        p = sum(e["counter"].get("packets", 0) for e in rule.get("expr", []) if isinstance(e.get("counter"), dict))
        b = sum(e["counter"].get("bytes", 0) for e in rule.get("expr", []) if isinstance(e.get("counter"), dict))
        old = hits.get(rid, (0, 0))
        hits[rid] = (old[0] + p, old[1] + b)
    return hits


def _in_table(item: dict, name: str) -> bool:
    (kind, body), = item.items()
    if kind == "table":
        return body["family"] == "inet" and body["name"] == name
    return body.get("family") == "inet" and body.get("table") == name


# ------------------------------------------------------------------ state

def load_state(path: Path | None, netns: str | None) -> tuple[dict | None, float | None, int]:
    """Previous stats, seconds since then, previous peak count."""
    if path is None or not path.exists():
        return None, None, 0
    try:
        data = json.loads(path.read_text())
        entry = data["namespaces"][netns or ""]
        return dict(entry["stats"]), time.time() - float(entry["time"]), int(entry.get("peak", 0))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise UsageError(f"state file {path} is not one ctkit wrote ({type(exc).__name__}); "
                         "remove it to start afresh") from None


def save_state(path: Path, netns: str | None, figures: HostFigures, peak: int) -> None:
    try:
        data = json.loads(path.read_text()) if path.exists() else {}
    except ValueError:
        data = {}
    data.setdefault("version", 1)
    data.setdefault("namespaces", {})[netns or ""] = {
        "time": time.time(), "stats": figures.stats, "peak": max(peak, figures.count)}
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1) + "\n")
    os.replace(tmp, path)


# ------------------------------------------------------------------ audit

def audit(compiled: Compiled, netns: str | None, state: Path | None = None) -> AuditReport:
    drift, ruleset = ruleset_drift(compiled, netns)
    settings = read_settings(compiled.plan.settings, netns)
    for s in settings:
        if not s.met:
            drift.append(Drift("setting", f"net.netfilter.{s.setting.sysctl}", s.setting.origin,
                               str(s.setting.value), s.live if s.exists else "absent"))
    figures = read_figures(netns)
    previous, seconds, peak = load_state(state, netns)
    findings: list[Finding] = []
    findings += [Finding("policy." + ("lint"), "warning", w.pointer, w.message, w.hint or "", {"line": w.line})
                 for w in compiled.warnings]
    findings += foreign.interference(ruleset, compiled.plan.table)
    findings += health.fill(figures.count, figures.maximum, figures.buckets, peak,
                            health.entry_size(figures.slabinfo), figures.max_writable)
    findings += health.drops(figures.stats, previous, seconds)
    findings += health.autoassign(figures.helper_sysctl)
    findings += health.helpers_everywhere(compiled.policy)
    findings += health.expectations(figures.expectations, figures.expect_max)
    findings += health.untracked_icmp(compiled.policy)
    if state is not None:
        save_state(state, netns, figures, peak)
    order = {"critical": 0, "warning": 1, "info": 2}
    findings.sort(key=lambda f: order[f.severity])
    return AuditReport(netns, "nft", compiled.plan.table.name, drift, settings, findings, figures)
