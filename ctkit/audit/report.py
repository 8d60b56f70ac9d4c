"""Render an audit report: rich tables on a terminal, plain lines otherwise."""
from __future__ import annotations

import sys

from ctkit.audit.run import AuditReport

_SEVERITY_STYLE = {"critical": "bold red", "warning": "yellow", "info": "cyan"}


def plain(report: AuditReport) -> str:
    lines = []
    where = f"netns {report.netns}" if report.netns else "this namespace"
    status = "clean" if report.exit_code == 0 else "needs attention"
    f = report.figures
    lines.append(f"ctkit audit: {report.owned} in {where}: {status}")
    lines.append(f"conntrack: {f.count} of {f.maximum} entries, {f.expectations} expectations")
    if report.drift:
        lines.append(f"drift ({len(report.drift)}):")
        for d in report.drift:
            lines.append(f"  {d.kind:<15} {d.subject}" + (f"  [{d.origin}]" if d.origin else ""))
            if d.expected:
                lines.append(f"      expected: {d.expected}")
            if d.actual:
                lines.append(f"      actual:   {d.actual}")
    else:
        lines.append("drift: none (the kernel holds exactly the compiled policy)")
    for s in report.settings:
        mark = "ok " if s.met else "NOT"
        lines.append(f"setting {mark} {s.setting.sysctl} wanted {s.setting.value}, live "
                     f"{s.live if s.exists else 'absent'}" + (f" ({s.note})" if s.note else ""))
    for sev in ("critical", "warning", "info"):
        group = [x for x in report.findings if x.severity == sev]
        if group:
            lines.append(f"{sev} ({len(group)}):")
            for x in group:
                lines.append(f"  [{x.id}] {x.subject}: {x.message}")
                lines.append(f"      do: {x.remedy}")
    return "\n".join(lines) + "\n"


def rich_render(report: AuditReport) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    f = report.figures
    status = "[green]clean[/]" if report.exit_code == 0 else "[yellow]needs attention[/]"
    console.print(f"[bold]ctkit audit[/] {report.owned} "
                  f"in {'netns ' + report.netns if report.netns else 'this namespace'}: {status}")
    console.print(f"conntrack: {f.count} of {f.maximum} entries, {f.expectations} expectations")
    if report.drift:
        t = Table(title="drift", show_lines=False)
        for col in ("kind", "subject", "policy", "expected", "actual"):
            t.add_column(col, overflow="fold")
        for d in report.drift:
            t.add_row(d.kind, d.subject, d.origin or "", d.expected or "", d.actual or "")
        console.print(t)
    else:
        console.print("drift: [green]none[/]")
    if report.settings:
        t = Table(title="settings")
        for col in ("sysctl", "wanted", "live", "met", "note"):
            t.add_column(col, overflow="fold")
        for s in report.settings:
            t.add_row(s.setting.sysctl, str(s.setting.value), s.live if s.exists else "absent",
                      "[green]yes[/]" if s.met else "[red]no[/]", s.note)
        console.print(t)
    if report.findings:
        t = Table(title="findings")
        for col in ("severity", "id", "subject", "finding", "remedy"):
            t.add_column(col, overflow="fold")
        for x in report.findings:
            t.add_row(f"[{_SEVERITY_STYLE[x.severity]}]{x.severity}[/]", x.id, x.subject, x.message, x.remedy)
        console.print(t)


def render(report: AuditReport) -> None:
    if sys.stdout.isatty():
        rich_render(report)
    else:
        sys.stdout.write(plain(report))
