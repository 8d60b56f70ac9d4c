"""The Prometheus collector on fixed figures and a fake backend's counters (no root, no kernel)."""
from __future__ import annotations

import json

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from test_service import POLICY, FakeBackend

from ctkit import lock, pipeline, service
from ctkit.audit import health, metrics, run
from ctkit.kernel import settings as kernel_settings

FIGURES = run.HostFigures(count=3000, maximum=12000, buckets=4096, max_writable=True, expect_max=256,
                          helper_sysctl="0", stats={"drop": 2}, per_cpu=((0, {"drop": 2, "found": 7}),
                                                                          (1, {"drop": 0, "found": 1})),
                          expectations=4)


class CountingBackend(FakeBackend):
    def rule_hits(self, table, netns):
        if netns == "broken":
            raise OSError("no such namespace")
        return {"web": (12, 720), "established": (100, 9000)}


@pytest.fixture(autouse=True)
def fixed_host(monkeypatch, tmp_path):
    monkeypatch.setattr(run, "read_figures", lambda netns: FIGURES)
    monkeypatch.setattr(metrics, "read_figures", lambda netns: FIGURES)
    monkeypatch.setattr(health, "host_uptime", lambda: 60.0)  # 2 drops in the first minute: critical
    monkeypatch.setattr(run, "read_settings", lambda settings, netns: [])
    monkeypatch.setattr(kernel_settings, "apply_settings", lambda settings, netns, dry_run=False: [])
    monkeypatch.setenv("CTKIT_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setattr(lock, "netns_id", lambda netns: f"test-{netns}")


def scrape(collector) -> dict[str, float]:
    registry = CollectorRegistry()
    registry.register(collector)
    out = {}
    for line in generate_latest(registry).decode().splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


def test_figures_and_rule_counters_per_namespace():
    got = scrape(metrics.ConntrackCollector(["lab", "broken"], CountingBackend()))
    assert got['ctkit_up{netns="lab"}'] == 1 and got['ctkit_up{netns="broken"}'] == 0
    assert got['ctkit_conntrack_entries{netns="lab"}'] == 3000
    assert got['ctkit_conntrack_entries_limit{netns="lab"}'] == 12000
    assert got['ctkit_conntrack_fill_ratio{netns="lab"}'] == 0.25
    assert got['ctkit_conntrack_expectations{netns="lab"}'] == 4
    assert got['ctkit_conntrack_stat_total{cpu="0",netns="lab",stat="found"}'] == 7
    assert got['ctkit_rule_packets_total{netns="lab",rule="web"}'] == 12
    assert got['ctkit_rule_bytes_total{netns="lab",rule="established"}'] == 9000
    assert not any('netns="broken"' in k for k in got if not k.startswith("ctkit_up"))
    assert not any(k.startswith("ctkit_policy_drift") for k in got)  # no policy: no audit metrics


def test_with_a_policy_drift_and_findings_are_exported(tmp_path):
    path = tmp_path / "p.json"
    path.write_text(json.dumps(POLICY))
    compiled = pipeline.compile_file(path)
    backend = CountingBackend()
    got = scrape(metrics.ConntrackCollector(["lab"], backend, compiled))
    assert got['ctkit_policy_drift{netns="lab"}'] == 1  # nothing applied: the table is missing
    service.apply(compiled, backend, netns="lab")
    got = scrape(metrics.ConntrackCollector(["lab"], backend, compiled))
    assert got['ctkit_policy_drift{netns="lab"}'] == 0
    report = run.audit(compiled, backend, "lab", check_flows=False)
    for severity in ("critical", "warning", "info"):
        assert got[f'ctkit_audit_findings{{netns="lab",severity="{severity}"}}'] == sum(
            1 for f in report.findings if f.severity == severity)
    assert got['ctkit_audit_findings{netns="lab",severity="critical"}'] == 1  # conntrack drops since boot
