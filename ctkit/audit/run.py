"""One audit: read the kernel once, compare with the compiled policy, check health."""
from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

from ctkit.audit import health
from ctkit.audit.admission import Flow, verdict
from ctkit.audit.drift import Drift, compare
from ctkit.audit.findings import Finding, at_least
from ctkit.audit.settings import SettingState, read_settings
from ctkit.errors import EXIT_FINDINGS, EXIT_OK, UsageError
from ctkit.kernel import sysctl
from ctkit.kernel.netns import entered
from ctkit.paths import Unreadable, read_regular
from ctkit.pipeline import Compiled

if TYPE_CHECKING:
    from ctkit.backends.base import Backend


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
    owned: str  # what ctkit owns, in the backend's words ("table inet ctkit")
    drift: list[Drift]
    settings: list[SettingState]
    findings: list[Finding]
    figures: HostFigures
    denied: tuple[DeniedFlow, ...] = ()  # tracked flows the policy would not admit now (for a flush)

    def with_flushed(self, flushed: int) -> AuditReport:
        """The report after the denied flows' conntrack entries were deleted: the warning becomes a note."""
        kept = [f for f in self.findings if f.id != "flows.denied"]
        return replace(self, findings=_ordered(kept + flows_finding(list(self.denied), flushed)))

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
    from ctkit.kernel import conntrack  # the conntrack reader (ctnetlink), see ctkit/kernel/conntrack/
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
    for obj in compiled.plan.table.helpers:
        origins[f"helper/{obj.name}"] = obj.origin
    for s in compiled.plan.table.sets:
        origins[f"set/{s.name}"] = s.origin
    return origins


def ruleset_drift(compiled: Compiled, backend: Backend, netns: str | None) -> tuple[list[Drift], list[Finding]]:
    """Drift of what ctkit owns against the compiled policy, and foreign rules that interfere (one read)."""
    inspection = backend.inspect(compiled.plan, netns)
    origins = _origins(compiled)
    drifts: list[Drift] = []
    for v in inspection.views:
        if v.held:
            continue  # the backend knows the kernel holds what it compiled (nft: written.py), nothing to compare
        for d in compare(v.want, v.have, origins, v.where):
            drifts.append(replace(d, subject=v.subject_prefix + d.subject) if v.subject_prefix else d)
    return drifts, list(inspection.foreign)


# ------------------------------------------------------------------ toggles

def toggle_findings(compiled: Compiled, netns: str | None, backend: Backend) -> list[Finding]:
    """Toggles switched away from the policy file's value (by `ctkit toggle`): worth knowing, not drift."""
    toggles = compiled.plan.table.toggles
    if not toggles:
        return []
    states = backend.toggle_states(compiled.plan.table.name, netns)
    out = []
    for t in toggles:
        if t.name not in states:
            continue  # not applied yet: the table drift says so
        on, _ = states[t.name]
        if on != t.policy_on:
            word = {True: "on", False: "off"}
            out.append(Finding(
                "toggles.switched", "info", f"toggle/{t.name}",
                f"toggle {t.name} is {word[on]}; the policy file says {word[t.policy_on]}",
                f"ctkit toggle {t.name} {word[t.policy_on]} when the switch is no longer needed; "
                "ctkit apply keeps the live state while the file's value is unchanged",
                {"live": on, "policy": t.policy_on}))
    return out


# ------------------------------------------------------------------ flows

FLOW_COLUMNS = ("family", "proto", "src", "dst", "sport", "dport", "master_src", "zone", "id")
SAMPLE = 20


@dataclass(frozen=True)
class DeniedFlow:
    entry: dict
    chain: str
    verdict: str

    def describe(self) -> str:
        e = self.entry
        ports = f":{e['sport']} -> {e['dst']}:{e['dport']}" if e.get("dport") is not None else f" -> {e['dst']}"
        return f"{e['proto']} {e['src']}{ports} ({self.chain}: {self.verdict})"


def _local_addresses(netns: str | None) -> set[str]:
    """The namespace's addresses as conntrack's text writes them (inet_ntop's, which ipaddress's str is)."""
    import ipaddress

    from pyroute2 import IPRoute
    with entered(netns):
        with IPRoute() as ipr:
            return {str(ipaddress.ip_address(a.get_attr("IFA_ADDRESS"))) for a in ipr.get_addr()}


def _sport_lists(table) -> list[tuple]:
    """The source-port ranges the rules the flow check walks can test (input, output, forward and the chains
    they reach). Without a context the interpreter reads a flow's source port only through these (sets and
    verdict maps are not judged), so flows whose ports fall in the same of them get the same verdict."""
    from ctkit.compile import ir
    chains = {c.name: c for c in table.chains}
    walked = {n for n in ("input", "output", "forward") if n in chains}
    walked |= {x for n in list(walked) for x in ir.reachable(n, chains)}
    lists = [m.ranges for c in table.chains if c.name in walked for r in c.rules for m in r.matches
             if isinstance(m, ir.Port) and m.field in ("sport", "any")]
    return list(dict.fromkeys(lists))


def denied_flows(compiled: Compiled, netns: str | None) -> list[DeniedFlow]:
    """Tracked flows that the policy, as it stands, would not admit if they started now.

    One pass over the dump, a chunk at a time, on raw values (ct summary's path): each distinct value is
    converted once (an address's text by its bytes), an address is local when its text is one of the
    namespace's, and flows that differ only in what no rule reads (a client's source port, usually) are judged
    once (the source port counts only as the port ranges the rules test that hold it)."""
    from ctkit.kernel import ctnetlink as nl
    from ctkit.kernel.conntrack import dump
    from ctkit.kernel.conntrack.layout import Layout
    table = compiled.plan.table
    local = _local_addresses(netns)
    layout = Layout.of(FLOW_COLUMNS)
    convert = {c.name: c.convert for c in layout.columns}
    memo: dict[tuple[str, object], object] = {}

    def text(name: str, raw):
        key = (name, raw)
        if key not in memo:
            memo[key] = convert[name](raw)
        return memo[key]

    sport_lists = _sport_lists(table)
    judged: dict[tuple, tuple[str, str] | None] = {}
    out = []
    for chunk in dump.formatted(netns, None, nl.reorder(layout.raws), layout.raws):
        for raw in chunk:
            family_r, proto_r, src_r, dst_r, sport, dport, master_r = raw[:7]
            if src_r is None or dst_r is None:
                continue
            port_class = tuple(sport is not None and any(r.lo <= sport <= r.hi for r in ranges)
                               for ranges in sport_lists)
            key = (family_r, proto_r, src_r, dst_r, port_class, dport, master_r is not None)
            if key not in judged:
                judged[key] = _judge(table, text("family", family_r), text("proto", proto_r), text("src", src_r),
                                     text("dst", dst_r), sport, dport, "related" if master_r is not None else "new",
                                     local)
            if judged[key] is not None:
                hook, v = judged[key]
                row = layout.convert(raw)
                out.append(DeniedFlow(dict(zip(FLOW_COLUMNS, row, strict=True)), hook, v))
    return out


def _judge(table, family: str, proto: str, src: str, dst: str, sport: int | None, dport: int | None, state: str,
           local: set[str]) -> tuple[str, str] | None:
    """(hook, verdict) when the policy would refuse this flow if it started now, else None."""
    src_local, dst_local = src in local, dst in local
    hooks = [h for h, on in (("input", dst_local), ("output", src_local)) if on] or ["forward"]
    for hook in hooks:
        flow = Flow(family, proto, src, dst, sport, dport, state,
                    iif="lo" if hook == "input" and src_local else None,
                    oif="lo" if hook == "output" and dst_local else None,
                    not_ifaces=() if (src_local and dst_local) else ("lo",),
                    saddr_local=src_local, daddr_local=dst_local)  # what daddr_type: local asks
        v = verdict(table, hook, flow)
        if v in ("drop", "reject"):
            return hook, v
    return None


def flows_finding(denied: list[DeniedFlow], flushed: int | None) -> list[Finding]:
    if not denied:
        return []
    sample = [f.describe() for f in denied[:SAMPLE]]
    if flushed is not None:
        return [Finding("flows.denied-flushed", "info", "conntrack entries",
                        f"{flushed} tracked flows the policy no longer admits were deleted",
                        "none: their next packet is judged as a new flow", {"flushed": flushed, "flows": sample})]
    return [Finding("flows.denied", "warning", "conntrack entries",
                    f"{len(denied)} tracked flows started under an earlier policy that the current policy "
                    "would not admit; they go on because established traffic is accepted",
                    "ctkit audit --flush-denied deletes exactly these entries",
                    {"count": len(denied), "flows": sample})]


# ------------------------------------------------------------------ state

#: the largest state file read: it holds a few figures per namespace
MAX_STATE_BYTES = 1 << 20


def _read_state(path: Path) -> dict | None:
    """The state file's content, None if there is none yet; UsageError naming it if it is not one ctkit
    wrote: never a silent fresh start, which would lose the baseline the audit judges drops by."""
    if not os.path.lexists(path):
        return None
    try:
        data = json.loads(read_regular(path, MAX_STATE_BYTES).decode("utf-8"))
    except Unreadable as exc:
        raise UsageError(f"state file {path}: {exc.reason}") from None
    except (ValueError, RecursionError) as exc:  # not UTF-8, not JSON, nested without end
        raise UsageError(f"state file {path} is not one ctkit wrote (not JSON: {type(exc).__name__}); "
                         "remove it to start afresh") from None
    if not (isinstance(data, dict) and data.get("version") == 1 and isinstance(data.get("namespaces"), dict)):
        raise UsageError(f"state file {path} is not one ctkit wrote (no version 1 and namespaces); "
                         "remove it to start afresh")
    return data


def _figures(entry: object) -> tuple[dict[str, int], float, int] | None:
    """(stats, time, peak) of one namespace's entry, or None if it is not what ctkit writes."""
    if not isinstance(entry, dict):
        return None
    stats, when, peak = entry.get("stats"), entry.get("time"), entry.get("peak", 0)
    if not (isinstance(stats, dict) and all(isinstance(k, str) and type(v) is int for k, v in stats.items())):
        return None
    if type(when) not in (int, float) or not math.isfinite(when) or type(peak) is not int or peak < 0:
        return None
    return stats, float(when), peak


def load_state(path: Path | None, netns: str | None) -> tuple[dict | None, float | None, int]:
    """Previous stats, seconds since then, previous peak count; no baseline when the file does not exist
    or does not hold this namespace yet."""
    if path is None:
        return None, None, 0
    data, figures = _state_of(path, netns)
    if figures is None:
        return None, None, 0
    stats, when, peak = figures
    return dict(stats), time.time() - when, peak


def _state_of(path: Path, netns: str | None) -> tuple[dict, tuple[dict[str, int], float, int] | None]:
    """(the state file's content, this namespace's figures or None when it has none yet)."""
    data = _read_state(path) or {"version": 1, "namespaces": {}}
    if (netns or "") not in data["namespaces"]:
        return data, None
    figures = _figures(data["namespaces"][netns or ""])
    if figures is None:
        raise UsageError(f"state file {path} is not one ctkit wrote (namespace {netns or 'current'!r}: "
                         "stats, time or peak of the wrong kind); remove it to start afresh")
    return data, figures


def save_state(path: Path, netns: str | None, figures: HostFigures, peak: int) -> None:
    data, _ = _state_of(path, netns)
    data["namespaces"][netns or ""] = {
        "time": time.time(), "stats": figures.stats, "peak": max(peak, figures.count)}
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_text(json.dumps(data, indent=1) + "\n")
        os.replace(tmp, path)
    except OSError as exc:
        raise UsageError(f"cannot write the state file {path}: {exc.strerror}") from None


# ------------------------------------------------------------------ audit

def _ordered(findings: list[Finding]) -> list[Finding]:
    order = {"critical": 0, "warning": 1, "info": 2}
    return sorted(findings, key=lambda f: order[f.severity])


def audit(compiled: Compiled, backend: Backend, netns: str | None, state: Path | None = None,
          check_flows: bool = True) -> AuditReport:
    """Read the kernel and report; changes nothing but the state file (ctkit/service.py flushes)."""
    previous, seconds, peak = load_state(state, netns)  # a bad state file stops the audit before the kernel
    drift, interference = ruleset_drift(compiled, backend, netns)
    settings = read_settings(compiled.plan.settings, netns)
    for s in settings:
        if not s.met:
            drift.append(Drift("setting", f"net.netfilter.{s.setting.sysctl}", s.setting.origin,
                               str(s.setting.value), s.live if s.exists else "absent"))
    figures = read_figures(netns)
    findings: list[Finding] = []
    # the policy's lint warnings, once (a warning with a code is known to the audit by that id)
    findings += [Finding(w.code or "policy.lint", "warning", w.pointer, w.message, w.hint or "", {"line": w.line})
                 for w in compiled.warnings]
    findings += interference
    findings += health.fill(figures.count, figures.maximum, figures.buckets, peak,
                            health.entry_size(figures.slabinfo), figures.max_writable)
    findings += health.drops(figures.stats, previous, seconds)
    findings += health.autoassign(figures.helper_sysctl)
    findings += health.expectations(figures.expectations, figures.expect_max)
    findings += health.untracked_icmp(compiled.policy)
    findings += toggle_findings(compiled, netns, backend)
    denied: list[DeniedFlow] = []
    if check_flows and figures.count:
        denied = denied_flows(compiled, netns)
        findings += flows_finding(denied, None)
    if state is not None:
        save_state(state, netns, figures, peak)
    table = compiled.plan.table.name
    return AuditReport(netns, backend.name, table, backend.owned(table), drift, settings, _ordered(findings),
                       figures, tuple(denied))
