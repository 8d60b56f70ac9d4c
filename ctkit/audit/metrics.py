"""Prometheus metrics for one or more namespaces, read fresh on every scrape.

Names follow node_exporter's conntrack metrics where one exists (see the
README's table): ctkit_conntrack_entries ~ node_nf_conntrack_entries,
ctkit_conntrack_entries_limit ~ node_nf_conntrack_entries_limit, the per-CPU
statistics ~ node_nf_conntrack_stat_* (ctkit exports them as counters).
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from ctkit.audit.findings import SEVERITIES
from ctkit.audit.run import audit, read_figures
from ctkit.backends.base import Backend
from ctkit.pipeline import Compiled


@dataclass(eq=False)
class ConntrackCollector(Collector):
    namespaces: list[str | None]
    backend: Backend  # where the rule counters are read (and the policy audited)
    compiled: Compiled | None = None
    table: str = "ctkit"
    #: prometheus_client serves each scrape in its own thread, and libnftables is not safe to use
    #: from two threads at once (two concurrent scrapes aborted the process in json.c): one at a time
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def collect(self):
        with self._lock:
            yield from list(self._collect())

    def _collect(self):
        entries = GaugeMetricFamily("ctkit_conntrack_entries", "Conntrack entries in the namespace "
                                    "(node_nf_conntrack_entries).", labels=["netns"])
        limit = GaugeMetricFamily("ctkit_conntrack_entries_limit", "nf_conntrack_max, host-wide "
                                  "(node_nf_conntrack_entries_limit).", labels=["netns"])
        fill = GaugeMetricFamily("ctkit_conntrack_fill_ratio", "entries / nf_conntrack_max.", labels=["netns"])
        expect = GaugeMetricFamily("ctkit_conntrack_expectations", "Pending expectations created by helpers.",
                                   labels=["netns"])
        stats = CounterMetricFamily("ctkit_conntrack_stat", "Per-CPU conntrack statistics "
                                    "(node_nf_conntrack_stat_*), as counters.", labels=["netns", "cpu", "stat"])
        drift = GaugeMetricFamily("ctkit_policy_drift", "Differences between the policy and the kernel "
                                  "at the last audit.", labels=["netns"])
        findings = GaugeMetricFamily("ctkit_audit_findings", "Findings of the last audit by severity.",
                                     labels=["netns", "severity"])
        packets = CounterMetricFamily("ctkit_rule_packets", "Packets counted by the kernel rules of a policy rule.",
                                      labels=["netns", "rule"])
        octets = CounterMetricFamily("ctkit_rule_bytes", "Bytes counted by the kernel rules of a policy rule.",
                                     labels=["netns", "rule"])
        up = GaugeMetricFamily("ctkit_up", "1 when the namespace could be read.", labels=["netns"])
        for ns in self.namespaces:
            label = ns or ""
            try:
                if self.compiled is not None:
                    report = audit(self.compiled, self.backend, ns, check_flows=False)
                    figures = report.figures
                    drift.add_metric([label], len(report.drift))
                    for sev in SEVERITIES:
                        findings.add_metric([label, sev], sum(1 for f in report.findings if f.severity == sev))
                    table = self.compiled.plan.table.name
                else:
                    figures = read_figures(ns)
                    table = self.table
                hits = self.backend.rule_hits(table, ns)
            except Exception:  # noqa: BLE001 - one unreadable namespace must not break the scrape
                up.add_metric([label], 0)
                continue
            up.add_metric([label], 1)
            entries.add_metric([label], figures.count)
            limit.add_metric([label], figures.maximum)
            fill.add_metric([label], figures.count / figures.maximum if figures.maximum else 0)
            expect.add_metric([label], figures.expectations)
            for cpu, row in figures.per_cpu:
                for name, value in row.items():
                    stats.add_metric([label, str(cpu), name], value)
            for rule, (p, b) in sorted(hits.items()):
                packets.add_metric([label, rule], p)
                octets.add_metric([label, rule], b)
        yield from (up, entries, limit, fill, expect, stats, packets, octets)
        if self.compiled is not None:
            yield from (drift, findings)
