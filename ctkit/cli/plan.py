"""`ctkit plan`: what an apply would change, as a reviewer reads it in a pull request.

The plan is read from the kernel once (ctkit/service.py: plan); nothing is written. Lines start
with + (added), - (removed), ~ (changed: the old form, then the new), > (moved); colour only on a
terminal (click drops it elsewhere, and NO_COLOR turns it off). Exit 0 when nothing would change,
1 when changes are pending, 2 and 3 as everywhere.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import typer

from ctkit import pipeline, service
from ctkit.backends import registry
from ctkit.backends.base import CREATE, INCREMENTAL, NONE, REPLACE, Pending
from ctkit.cli.common import JsonOption, NetnsOption, handle_errors, print_json
from ctkit.cli.policy import BackendOption, PolicyArg, VariantOption, print_warnings
from ctkit.errors import EXIT_FINDINGS
from ctkit.kernel.settings import CHANGED, WOULD_CHANGE
from ctkit.terminal import printable

_MARK = {"add": "+", "remove": "-", "change": "~", "move": ">"}
_COLOUR = {"+": "green", "-": "red", "~": "yellow", ">": "cyan"}


def _echo(mark: str, text: str) -> None:
    line = f"{mark} {printable(text)}"
    if os.environ.get("NO_COLOR"):
        typer.echo(line)
    else:
        typer.echo(typer.style(line, fg=_COLOUR.get(mark)))


def _method(p: Pending) -> str:
    n = f"{len(p.items)} change" + ("" if len(p.items) == 1 else "s")
    if p.method == NONE:
        return "no changes: an apply sends nothing to the kernel"
    if p.method == CREATE:
        return f"{n}: not in the kernel yet, created in one transaction"
    if p.method == INCREMENTAL:
        return f"{n}, sent as one transaction: " + (
            p.reason or "only they are touched (other rules keep their counters)")
    assert p.method == REPLACE
    return f"{n}; replaced whole in one transaction, because {p.reason}"


def print_pending(p: Pending, netns: str | None) -> None:
    where = p.where + (f" in netns {netns}" if netns else "")
    typer.echo(f"plan for {printable(where)}: {_method(p)}")
    for item in p.items:
        mark = _MARK[item.action]
        origin = f"  [{item.origin}]" if item.origin else ""
        if item.action == "move":
            _echo(mark, f"{item.kind} {item.subject} moves{origin}")
            continue
        if item.kind == "rule":
            _echo(mark, f"rule {item.subject}{origin}")
        else:
            head = f"{item.subject}{origin}"
            if item.action in ("add", "remove") and item.kind in ("elements", "toggle"):
                head += f": {item.after if item.action == 'add' else item.before}"
                _echo(mark, head)
                continue
            _echo(mark, head)
        if item.before is not None and item.action in ("remove", "change"):
            _echo("-", f"    {item.before}")
        if item.after is not None and item.action in ("add", "change"):
            _echo("+", f"    {item.after}")


def print_settings(results) -> None:
    for r in results:
        key = f"setting net.netfilter.{r.setting.sysctl}"
        if r.result in (WOULD_CHANGE, CHANGED):
            _echo("~", f"{key}: {r.before} -> {r.setting.value}" + (" (done)" if r.result == CHANGED else ""))
        elif r.result == "read-only" and not r.ok:
            typer.echo(f"! {key}: {r.before}, wanted {r.setting.value}: read-only here (host-wide: set it in the "
                       "initial namespace)")


@handle_errors
def plan(policy: Path = PolicyArg, netns: Optional[str] = NetnsOption, backend: str = BackendOption,
         as_json: bool = JsonOption, variant: str = VariantOption) -> None:
    """Show what `ctkit apply` would change in the kernel, rule by rule; change nothing.
    Exit 0: nothing would change; 1: changes are pending."""
    compiled = pipeline.compile_file(policy)
    print_warnings(compiled)
    result = service.plan(compiled, registry.get(backend, variant), netns)
    if as_json:
        print_json(result.as_dict())
    else:
        print_pending(result.pending, netns)
        print_settings(result.settings)
    if result.changed:
        raise typer.Exit(EXIT_FINDINGS)


def register(app: typer.Typer) -> None:
    app.command()(plan)
