"""Policy commands: validate, compile, apply, show, remove, toggle, set.

Each command parses its arguments, picks the backend (ctkit/backends/registry.py),
calls ctkit/service.py and prints the result; none knows which backend it has.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import List, Optional

import typer

from ctkit import pipeline, service
from ctkit.backends import registry
from ctkit.cli.common import (
    JsonOption,
    NetnsOption,
    err,
    handle_errors,
    print_json,
    print_toggles,
    warn,
)
from ctkit.errors import EXIT_INVALID, UsageError
from ctkit.terminal import activity

PolicyArg = typer.Argument(..., help="Policy file (JSON or YAML).", exists=False)
BackendOption = typer.Option("nft", "--backend", "-b", help="Kernel backend: nft or iptables.")
VariantOption = typer.Option("auto", "--iptables-variant",
                             help="iptables backend: nft (iptables-nft), legacy (iptables-legacy), or auto "
                                  "(what the host's iptables command is).")
TableOption = typer.Option("ctkit", "--table", "-t", help="Name of ctkit's table.")


def print_warnings(compiled: pipeline.Compiled) -> None:
    for w in compiled.warnings:
        err(w.render())


@handle_errors
def validate(policies: List[Path] = typer.Argument(..., help="Policy files (JSON or YAML)."),
             backend: str = typer.Option("both", "--backend", "-b",
                                         help="Also check what this backend can express: nft, iptables, "
                                              "or both."),
             as_json: bool = JsonOption) -> None:
    """Check policy files against the schema and the semantic rules; print every problem, in one run:
    entries the schema refuses are set aside and the rest is checked too. A policy that passes is
    compiled for the backend(s) too: a construct one cannot express is an error naming the rule."""
    from ctkit.policy.partial import PARTIAL, WAITING
    backends = registry.NAMES if backend == "both" else (registry.check(backend),)
    report, failed = [], False
    for path in policies:
        checked = service.validate(path, backends)
        failed |= not checked.valid
        report.append({"file": str(path), "valid": checked.valid, "problems": [p.as_dict() for p in checked.problems],
                       "semantic": checked.semantic, "set_aside": list(checked.set_aside)})
        if as_json:
            continue
        for p in checked.problems:
            err(p.render())
        if checked.semantic == PARTIAL:
            shown = ", ".join(checked.set_aside[:5]) + (f" and {len(checked.set_aside) - 5} more"
                                                        if len(checked.set_aside) > 5 else "")
            err(f"{path}: note: the semantic checks ran without the {len(checked.set_aside)} "
                f"entr{'y' if len(checked.set_aside) == 1 else 'ies'} refused above ({shown})")
        elif checked.semantic == WAITING:
            err(f"{path}: note: the semantic checks run once these errors are fixed")
        policy = checked.policy
        if policy is not None:
            rules = sum(len(c.rules) for c in policy.chains)
            warnings = len(checked.problems)
            print(f"{path}: ok (table {policy.table}: {len(policy.chains)} chains, {rules} rules, "
                  f"{len(policy.notrack)} notrack, {len(policy.helpers)} helpers, {len(policy.nat)} nat, "
                  f"{warnings} warnings)")
    if as_json:
        print_json(report)
    if failed:
        raise typer.Exit(EXIT_INVALID)


@handle_errors
def compile_(policy: Path = PolicyArg, backend: str = BackendOption,
             fmt: Optional[str] = typer.Option(None, "--format", "-o", show_default=False,
                                               help="json (default): libnftables JSON (nft -j -f); nft: nft "
                                                    "syntax (nft -f); plan: ruleset and host settings as JSON. "
                                                    "--backend iptables: restore (default): iptables-restore "
                                                    "input; json: the documents as JSON."),
             family: Optional[str] = typer.Option(None, "--family",
                                                  help="iptables backend: only ipv4 (iptables-restore) or "
                                                       "ipv6 (ip6tables-restore). Default: both.")) -> None:
    """Compile a policy and print what the backend would send to the kernel."""
    chosen = registry.get(backend)
    compiled = pipeline.compile_file(policy)
    print_warnings(compiled)
    sys.stdout.write(chosen.render(compiled.plan, fmt or chosen.formats[0], family, Path(policy).name))


def _in_netns(netns: Optional[str]) -> str:
    return f" in netns {netns}" if netns else ""


@handle_errors
def apply(policy: Path = PolicyArg, netns: Optional[str] = NetnsOption, backend: str = BackendOption,
          dry_run: bool = typer.Option(False, "--dry-run", "--check",
                                       help="Print the plan and let the kernel validate its transaction; "
                                            "change nothing."),
          as_json: bool = JsonOption, variant: str = VariantOption,
          confirm_within: Optional[float] = typer.Option(
              None, "--confirm-within", min=1, max=86400, show_default=False,
              help="Seconds: put back what ctkit owned before unless `ctkit confirm` arrives in time (the "
                   "rollback survives this command being killed or the SSH session dropping)."),
          migrate: bool = typer.Option(False, "--migrate",
                                       help="Remove ctkit's rules of the other backend from the namespace once "
                                            "this apply succeeds (without it, their presence stops the apply).")
          ) -> None:
    """Apply a policy atomically: only what differs from the kernel changes, in one transaction."""
    from ctkit.cli.plan import print_pending, print_settings
    chosen = registry.get(backend, variant)
    compiled = pipeline.compile_file(policy)
    print_warnings(compiled)
    if dry_run and confirm_within is not None:
        raise UsageError("--confirm-within changes the kernel; --dry-run does not: use one of them")
    with activity(f"{'checking' if dry_run else 'applying'} {policy}{_in_netns(netns)}"):  # stderr, a terminal
        result = service.apply(compiled, chosen, netns, dry_run=dry_run, confirm_within=confirm_within,
                               others=registry.others(backend, variant), migrate=migrate)
    for line in result.warnings:
        warn(line)
    if as_json:
        print_json(result.as_dict())
        return
    if dry_run:
        print_pending(result.pending, netns)
        print_settings(result.settings)
        print(f"checked (nothing changed): {result.summary}{_in_netns(netns)}")
        return
    print(f"{'applied' if result.changed else 'unchanged'}: {result.summary}{_in_netns(netns)}")
    for removed in result.migrated:
        if removed.removed:
            print(f"migrated: {removed.message}")
    print_toggles(result.toggles)
    _print_settings(result.settings)
    if result.rollback_at is not None:
        import time
        at = time.strftime("%H:%M:%S", time.localtime(result.rollback_at))
        print(f"rollback armed: what ctkit owned before comes back at {at} unless `ctkit confirm"
              + (f" -n {netns}" if netns else "") + "` runs first")


def _print_settings(results) -> None:
    for r in results:
        note = ""
        if r.result == "read-only" and not r.ok:
            note = " (host-wide: set it in the initial namespace; the audit will report it)"
        print(f"  net.netfilter.{r.setting.sysctl} = {r.setting.value}: {r.result}"
              + (f" (was {r.before})" if r.result in ("changed", "would change") else "") + note)


@handle_errors
def show(netns: Optional[str] = NetnsOption, table: str = TableOption, as_json: bool = JsonOption,
         backend: str = BackendOption, variant: str = VariantOption) -> None:
    """Show what ctkit owns in the kernel, with rule counters (--json: schemas/show.schema.json)."""
    shown = service.show(registry.get(backend, variant), table, netns)
    for line in shown.warnings:
        warn(line)
    if as_json:
        print_json(shown.as_dict())
        return
    if not shown.present:
        print(shown.absent)
        return
    sys.stdout.write(shown.listing)
    if shown.toggles:
        print("# toggles")
        print_toggles(shown.toggles)


@handle_errors
def toggle(name: str = typer.Argument(..., help="Toggle name (declared in the policy's toggles)."),
           state: str = typer.Argument(..., help="on or off."),
           netns: Optional[str] = NetnsOption, table: str = TableOption, backend: str = BackendOption,
           variant: str = VariantOption, as_json: bool = JsonOption) -> None:
    """Switch a toggle on or off: one small atomic kernel update, no policy reload."""
    if state not in ("on", "off"):
        raise UsageError(f"state must be on or off, not {state!r}")
    result = service.toggle(registry.get(backend, variant), name, state == "on", table, netns)
    if as_json:
        print_json(result.as_dict())
    else:
        print(f"toggle {name}: {state} ({result.where}" + (f", netns {netns})" if netns else ")"))


@handle_errors
def remove(netns: Optional[str] = NetnsOption, table: str = TableOption, backend: str = BackendOption,
           variant: str = VariantOption) -> None:
    """Remove everything ctkit owns (its table); nothing else is touched."""
    removed = service.remove(registry.get(backend, variant), table, netns)
    for line in removed.warnings:
        warn(line)
    print(removed.message)


set_app = typer.Typer(help="Change the members of a named set at run time (no reload). A later apply keeps "
                           "them: it adds and deletes only the members the policy file declares.",
                      no_args_is_help=True)


@set_app.command("add")
@handle_errors
def set_add(name: str = typer.Argument(..., help="Set name (declared in the policy's sets)."),
            value: str = typer.Argument(..., help="Member: 192.0.2.1, 10.0.0.0/8, 80, 1000-2000, or "
                                                  "'192.0.2.1 . 80' for a concatenation."),
            timeout: Optional[int] = typer.Option(None, "--timeout", help="Seconds until the member expires "
                                                  "(the set needs a timeout)."),
            netns: Optional[str] = NetnsOption, table: str = TableOption, backend: str = BackendOption,
            variant: str = VariantOption) -> None:
    """Add a member to a named set."""
    result = service.set_member(registry.get(backend, variant), name, value, True, timeout, table, netns)
    print(f"added {value} to {result.where}" + (f" (netns {netns})" if netns else ""))


@set_app.command("del")
@handle_errors
def set_del(name: str = typer.Argument(..., help="Set name."), value: str = typer.Argument(..., help="Member."),
            netns: Optional[str] = NetnsOption, table: str = TableOption, backend: str = BackendOption,
            variant: str = VariantOption) -> None:
    """Delete a member from a named set."""
    result = service.set_member(registry.get(backend, variant), name, value, False, None, table, netns)
    print(f"deleted {value} from {result.where}" + (f" (netns {netns})" if netns else ""))


def register(app: typer.Typer) -> None:
    app.command()(validate)
    app.command("compile")(compile_)
    app.command()(apply)
    app.command()(show)
    app.command()(remove)
    app.command()(toggle)
    app.add_typer(set_app, name="set")
