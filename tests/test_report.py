"""ctkit/audit/report.py and AuditReport.as_dict: a report built by hand, rendered as text and JSON."""
from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest

from ctkit.audit import report as render
from ctkit.audit.drift import Drift
from ctkit.audit.findings import Finding
from ctkit.audit.run import AuditReport, HostFigures
from ctkit.audit.settings import SettingState
from ctkit.compile.ir import SysctlSetting

SCHEMA = Path(__file__).resolve().parent.parent / "ctkit" / "schemas" / "audit-report.schema.json"
FIGURES = HostFigures(count=1200, maximum=262144, buckets=65536, max_writable=True, expect_max=1024,
                      helper_sysctl="0", stats={"drop": 0, "insert_failed": 3}, expectations=2)
MAX = SysctlSetting("max", "nf_conntrack_max", 262144, "/conntrack/max")
UDP = SysctlSetting("timeouts.udp", "nf_conntrack_udp_timeout", 10, "/conntrack/timeouts/udp")
DRIFT = Drift("changed", "ipv4 filter/CTKIT-INPUT/ssh", "/chains/input/rules/1",
              "-s 10.0.0.0/8 -p tcp -m tcp --dport 22 -m comment --comment ssh -j ACCEPT",
              "-s 10.0.0.0/8 -p tcp -m tcp --dport 2222 -m comment --comment ssh -j ACCEPT")
FINDING = Finding("foreign.earlier-rule", "warning", "ipv4 filter/INPUT",
                  "1 foreign rule(s) before ctkit's jump in INPUT accept or drop traffic before the policy sees it",
                  "move ctkit's jump first", {"rules": ["-s 203.0.113.0/24 -j ACCEPT"]})
NOTE = Finding("toggles.switched", "info", "toggle/maint", "toggle maint is on; the policy file says off",
               "ctkit toggle maint off", {"live": True, "policy": False})


def report(**changes) -> AuditReport:
    fields = dict(netns="lab", backend="iptables", table="ctkit", owned="chains CTKIT-* (iptables)", drift=[DRIFT],
                  settings=[SettingState(MAX, "262144", True, True), SettingState(UDP, "30", True, False)],
                  findings=[FINDING, NOTE], figures=FIGURES)
    return AuditReport(**{**fields, **changes})


def test_plain_text_with_drift_settings_and_findings():
    assert render.plain(report()) == (
        "ctkit audit: chains CTKIT-* (iptables) in netns lab: needs attention\n"
        "conntrack: 1200 of 262144 entries, 2 expectations\n"
        "drift (1):\n"
        "  changed         ipv4 filter/CTKIT-INPUT/ssh  [/chains/input/rules/1]\n"
        "      expected: -s 10.0.0.0/8 -p tcp -m tcp --dport 22 -m comment --comment ssh -j ACCEPT\n"
        "      actual:   -s 10.0.0.0/8 -p tcp -m tcp --dport 2222 -m comment --comment ssh -j ACCEPT\n"
        "setting ok  nf_conntrack_max wanted 262144, live 262144\n"
        "setting NOT nf_conntrack_udp_timeout wanted 10, live 30 (host-wide, read-only in this namespace: "
        "set it in the initial namespace)\n"
        "warning (1):\n"
        "  [foreign.earlier-rule] ipv4 filter/INPUT: 1 foreign rule(s) before ctkit's jump in INPUT accept or "
        "drop traffic before the policy sees it\n"
        "      do: move ctkit's jump first\n"
        "info (1):\n"
        "  [toggles.switched] toggle/maint: toggle maint is on; the policy file says off\n"
        "      do: ctkit toggle maint off\n")


def test_plain_text_of_a_clean_nft_report():
    clean = report(netns=None, backend="nft", owned="table inet ctkit", drift=[], settings=[], findings=[NOTE])
    assert clean.exit_code == 0  # an info finding is no reason to act
    assert render.plain(clean) == (
        "ctkit audit: table inet ctkit in this namespace: clean\n"
        "conntrack: 1200 of 262144 entries, 2 expectations\n"
        "drift: none (the kernel holds exactly the compiled policy)\n"
        "info (1):\n"
        "  [toggles.switched] toggle/maint: toggle maint is on; the policy file says off\n"
        "      do: ctkit toggle maint off\n")


def test_json_report():
    data = json.loads(json.dumps(report().as_dict()))
    assert data == {
        "version": 1, "netns": "lab", "backend": "iptables", "table": "ctkit", "status": "attention",
        "drift": [{"kind": "changed", "subject": "ipv4 filter/CTKIT-INPUT/ssh", "origin": "/chains/input/rules/1",
                   "expected": "-s 10.0.0.0/8 -p tcp -m tcp --dport 22 -m comment --comment ssh -j ACCEPT",
                   "actual": "-s 10.0.0.0/8 -p tcp -m tcp --dport 2222 -m comment --comment ssh -j ACCEPT"}],
        "settings": [
            {"key": "max", "sysctl": "net.netfilter.nf_conntrack_max", "wanted": 262144, "live": "262144",
             "exists": True, "writable": True, "met": True, "note": ""},
            {"key": "timeouts.udp", "sysctl": "net.netfilter.nf_conntrack_udp_timeout", "wanted": 10, "live": "30",
             "exists": True, "writable": False, "met": False,
             "note": "host-wide, read-only in this namespace: set it in the initial namespace"}],
        "findings": [
            {"id": "foreign.earlier-rule", "severity": "warning", "subject": "ipv4 filter/INPUT",
             "message": "1 foreign rule(s) before ctkit's jump in INPUT accept or drop traffic before the policy "
                        "sees it",
             "evidence": {"rules": ["-s 203.0.113.0/24 -j ACCEPT"]}, "remedy": "move ctkit's jump first"},
            {"id": "toggles.switched", "severity": "info", "subject": "toggle/maint",
             "message": "toggle maint is on; the policy file says off",
             "evidence": {"live": True, "policy": False}, "remedy": "ctkit toggle maint off"}],
        "conntrack": {"count": 1200, "max": 262144, "buckets": 65536, "expectations": 2,
                      "stats": {"drop": 0, "insert_failed": 3}},
    }


@pytest.mark.parametrize("changes", [{}, {"netns": None, "backend": "nft", "drift": [], "findings": []}],
                         ids=["attention", "clean"])
def test_json_report_follows_its_schema(changes):
    schema = json.loads(SCHEMA.read_text())
    jsonschema.validate(report(**changes).as_dict(), schema)


def test_exit_code_follows_drift_and_warnings():
    assert report().exit_code == 1
    assert report(drift=[]).exit_code == 1  # the warning alone
    assert report(findings=[NOTE]).exit_code == 1  # the drift alone
    assert report(drift=[], findings=[NOTE]).exit_code == 0


def test_render_writes_plain_text_when_not_a_terminal(capsys):
    render.render(report())
    assert capsys.readouterr().out == render.plain(report())
