"""One audit: read the kernel once, compare with the compiled policy, check health."""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from ctkit import names
from ctkit.audit import health
from ctkit.audit.drift import Drift, compare
from ctkit.audit.findings import Finding, at_least
from ctkit.audit.settings import SettingState, read_settings
from ctkit.backends.nft import foreign
from ctkit.backends.nft import generate as nft_backend
from ctkit.backends.nft import kernel as nft_kernel
from ctkit.backends.nft.view import view
from ctkit.errors import EXIT_FINDINGS, EXIT_OK, UsageError
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
    def owned(self) -> str:
        """What ctkit owns, in the backend's words."""
        if self.backend == "iptables":
            return f"chains {self.table.upper()}-* (iptables)"
        return f"table inet {self.table}"

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
    for obj in compiled.plan.table.helpers:
        origins[f"helper/{obj.name}"] = obj.origin
    return origins


def ruleset_drift(compiled: Compiled, netns: str | None) -> tuple[list[Drift], list[dict]]:
    """nft: drift of ctkit's table, and the whole ruleset (for foreign interference)."""
    table = compiled.plan.table
    ids = {r.id for c in table.chains for r in c.rules}
    want = view(nft_backend.generate(compiled.plan)["nftables"], ids)
    ruleset = nft_kernel.list_ruleset(netns)
    mine = [i for i in ruleset if _in_table(i, table.name)]
    have = view(mine if any("table" in i for i in mine) else None, ids)
    return compare(want, have, _origins(compiled), table.name), ruleset


def iptables_drift(compiled: Compiled, netns: str | None, variant: str) -> tuple[list[Drift], list[Finding]]:
    """iptables: drift of ctkit's chains per family, and foreign rules ahead of ctkit's jumps."""
    from ctkit.backends.iptables import generate as ipt_backend
    from ctkit.backends.iptables import kernel as ipt_kernel
    from ctkit.backends.iptables import view as iptables_view
    ruleset = ipt_backend.generate(compiled.plan)
    variant = ipt_kernel.resolve_variant(variant)
    table = compiled.plan.table
    # a base chain's policy rule carries the chain name as its id ("input: policy drop")
    ids = {r.id for c in table.chains for r in c.rules} | {c.name for c in table.chains}
    origins = _origins(compiled)
    drifts: list[Drift] = []
    findings: list[Finding] = []
    for family in ipt_backend.FAMILIES:
        current = ipt_kernel.parse_save(ipt_kernel.save(family, variant, netns))
        want = iptables_view.view(ruleset.document(family), None, ids)
        have = iptables_view.live(current, ruleset.prefix, family, ids)
        if not want.present and not have.present:
            continue
        for d in compare(want, have, origins, f"{ruleset.prefix}* ({family})"):
            drifts.append(Drift(d.kind, f"{family} {d.subject}", d.origin, d.expected, d.actual))
        findings += iptables_view.foreign_first(current, ruleset.prefix, family)
    return drifts, findings


def rule_hits(items: list[dict]) -> dict[str, tuple[int, int]]:
    """(packets, bytes) per policy rule id, summed over its kernel rules, from a table listing."""
    hits: dict[str, tuple[int, int]] = {}
    for item in items:
        rule = item.get("rule")
        if not rule or not rule.get("comment"):
            continue
        rid = names.rule_id(rule["comment"])
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


# ------------------------------------------------------------------ toggles

def toggle_findings(compiled: Compiled, netns: str | None, backend: str, variant: str) -> list[Finding]:
    """Toggles switched away from the policy file's value (by `ctkit toggle`): worth knowing, not drift."""
    toggles = compiled.plan.table.toggles
    if not toggles:
        return []
    if backend == "iptables":
        from ctkit.backends.iptables import kernel as ipt_kernel
        _, states = ipt_kernel.toggle_states(names.chain_prefix(compiled.plan.table.name), netns, variant)
    else:
        states = nft_kernel.toggle_states(compiled.plan.table.name, netns)
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


def _local_addresses(netns: str | None) -> set:
    import ipaddress

    from pyroute2 import IPRoute
    with entered(netns):
        with IPRoute() as ipr:
            return {ipaddress.ip_address(a.get_attr("IFA_ADDRESS")) for a in ipr.get_addr()}


def denied_flows(compiled: Compiled, netns: str | None) -> list[DeniedFlow]:
    """Tracked flows that the policy, as it stands, would not admit if they started now."""
    import ipaddress

    from ctkit.audit.admission import Flow, verdict
    from ctkit.kernel import conntrack
    table = compiled.plan.table
    local = _local_addresses(netns)
    out = []
    for e in conntrack.entries(netns, columns=FLOW_COLUMNS):
        d = e.as_dict()
        if d["src"] is None or d["dst"] is None:
            continue
        src_local = ipaddress.ip_address(d["src"]) in local
        dst_local = ipaddress.ip_address(d["dst"]) in local
        state = "related" if d["master_src"] else "new"
        hooks = [h for h, on in (("input", dst_local), ("output", src_local)) if on] or ["forward"]
        for hook in hooks:
            flow = Flow(d["family"], d["proto"], d["src"], d["dst"], d["sport"], d["dport"], state,
                        iif="lo" if hook == "input" and src_local else None,
                        oif="lo" if hook == "output" and dst_local else None,
                        not_ifaces=() if (src_local and dst_local) else ("lo",))
            v = verdict(table, hook, flow)
            if v in ("drop", "reject"):
                out.append(DeniedFlow(d, hook, v))
                break
    return out


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
    try:
        tmp.write_text(json.dumps(data, indent=1) + "\n")
        os.replace(tmp, path)
    except OSError as exc:
        raise UsageError(f"cannot write the state file {path}: {exc.strerror}") from None


# ------------------------------------------------------------------ audit

def audit(compiled: Compiled, netns: str | None, state: Path | None = None, check_flows: bool = True,
          flush_denied: bool = False, backend: str = "nft", variant: str = "auto") -> AuditReport:
    if backend == "iptables":
        drift, interference = iptables_drift(compiled, netns, variant)
    else:
        drift, ruleset = ruleset_drift(compiled, netns)
        interference = foreign.interference(ruleset, compiled.plan.table)
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
    findings += interference
    findings += health.fill(figures.count, figures.maximum, figures.buckets, peak,
                            health.entry_size(figures.slabinfo), figures.max_writable)
    findings += health.drops(figures.stats, previous, seconds)
    findings += health.autoassign(figures.helper_sysctl)
    findings += health.helpers_everywhere(compiled.policy)
    findings += health.expectations(figures.expectations, figures.expect_max)
    findings += health.untracked_icmp(compiled.policy)
    findings += toggle_findings(compiled, netns, backend, variant)
    if (check_flows or flush_denied) and figures.count:
        denied = denied_flows(compiled, netns)
        flushed = None
        if flush_denied and denied:
            from ctkit.kernel import conntrack
            flushed = conntrack.delete(netns, [f.entry for f in denied])
        findings += flows_finding(denied, flushed)
    if state is not None:
        save_state(state, netns, figures, peak)
    order = {"critical": 0, "warning": 1, "info": 2}
    findings.sort(key=lambda f: order[f.severity])
    return AuditReport(netns, backend, compiled.plan.table.name, drift, settings, findings, figures)
