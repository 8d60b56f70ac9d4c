"""Policy commands: validate, compile, apply, show, remove."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from ctkit import pipeline
from ctkit.backends import registry
from ctkit.backends.nft import generate as nft_backend
from ctkit.backends.nft import kernel as nft_kernel
from ctkit.backends.nft import text as nft_text
from ctkit.cli import iptables_cmd
from ctkit.cli.common import JsonOption, NetnsOption, err, handle_errors, print_json, print_toggles
from ctkit.compile.toggles import LiveToggle, keep_live
from ctkit.errors import EXIT_INVALID, PolicyError, UsageError
from ctkit.kernel.settings import apply_settings

PolicyArg = typer.Argument(..., help="Policy file (JSON or YAML).", exists=False)
BackendOption = typer.Option("nft", "--backend", "-b", help="Kernel backend: nft or iptables.")
VariantOption = typer.Option("auto", "--iptables-variant",
                             help="iptables backend: nft (iptables-nft), legacy (iptables-legacy), or auto "
                                  "(what the host's iptables command is).")
TableOption = typer.Option("ctkit", "--table", "-t", help="Name of ctkit's table.")


def _print_warnings(compiled: pipeline.Compiled) -> None:
    for w in compiled.warnings:
        err(w.render())


@handle_errors
def validate(policies: List[Path] = typer.Argument(..., help="Policy files (JSON or YAML)."),
             as_json: bool = JsonOption) -> None:
    """Check policy files against the schema and the semantic rules; print every problem."""
    report, failed = [], False
    for path in policies:
        try:
            policy, warnings = pipeline.check(path)
        except PolicyError as exc:
            failed = True
            report.append({"file": str(path), "valid": False, "problems": [p.as_dict() for p in exc.problems]})
            if not as_json:
                for p in exc.problems:
                    err(p.render())
            continue
        rules = sum(len(c.rules) for c in policy.chains)
        report.append({"file": str(path), "valid": True, "problems": [w.as_dict() for w in warnings]})
        if not as_json:
            for w in warnings:
                err(w.render())
            print(f"{path}: ok (table {policy.table}: {len(policy.chains)} chains, {rules} rules, "
                  f"{len(policy.notrack)} notrack, {len(policy.helpers)} helpers, {len(policy.nat)} nat, "
                  f"{len(warnings)} warnings)")
    if as_json:
        print_json(report)
    if failed:
        raise typer.Exit(EXIT_INVALID)


@handle_errors
def compile_(policy: Path = PolicyArg, backend: str = BackendOption,
             fmt: Optional[str] = typer.Option(None, "--format", "-f", show_default=False,
                                               help="json (default): libnftables JSON (nft -j -f); nft: nft "
                                                    "syntax (nft -f); plan: ruleset and host settings as JSON. "
                                                    "--backend iptables: restore (default): iptables-restore "
                                                    "input; json: the documents as JSON."),
             family: Optional[str] = typer.Option(None, "--family",
                                                  help="iptables backend: only ipv4 (iptables-restore) or "
                                                       "ipv6 (ip6tables-restore). Default: both.")) -> None:
    """Compile a policy and print what the backend would send to the kernel."""
    registry.check(backend)
    compiled = pipeline.compile_file(policy)
    _print_warnings(compiled)
    if family is not None and backend != "iptables":
        raise UsageError("--family is for --backend iptables (the nft table is inet: both families)")
    if backend == "iptables":
        iptables_cmd.compile_(compiled, policy, fmt or "restore", family)
        return
    fmt = fmt or "json"
    document = nft_backend.generate(compiled.plan)
    if fmt == "json":
        print_json(document)
    elif fmt == "nft":
        print(nft_text.render(document), end="")
    elif fmt == "plan":
        print_json({"backend": backend, "table": compiled.plan.table.name, "ruleset": document,
                    "settings": [{"key": s.key, "sysctl": f"net.netfilter.{s.sysctl}", "value": s.value,
                                  "absent_ok": s.absent_ok} for s in compiled.plan.settings]})
    else:
        err(f"ctkit: unknown format {fmt!r} (valid: json, nft, plan)")
        raise typer.Exit(EXIT_INVALID)


@handle_errors
def apply(policy: Path = PolicyArg, netns: Optional[str] = NetnsOption, backend: str = BackendOption,
          dry_run: bool = typer.Option(False, "--dry-run", "--check",
                                       help="Let the kernel validate the transaction; change nothing."),
          as_json: bool = JsonOption, variant: str = VariantOption) -> None:
    """Apply a policy atomically: ctkit's table is replaced in one kernel transaction."""
    registry.check(backend)
    compiled = pipeline.compile_file(policy)
    _print_warnings(compiled)
    if backend == "iptables":
        results = iptables_cmd.apply(compiled, netns, variant, dry_run, as_json)
        if not as_json:
            _print_settings(results)
        return
    table = compiled.plan.table.name
    plan = compiled.plan
    if plan.table.toggles:  # keep live toggle states unless the file changed them
        plan = keep_live(plan, _live(nft_kernel.toggle_states(table, netns)))
    document = nft_backend.generate(plan)
    nft_kernel.apply(table, document, netns, dry_run=dry_run)
    results = apply_settings(compiled.plan.settings, netns, dry_run=dry_run)
    rules = sum(1 for c in document["nftables"] if "rule" in c.get("add", {}))
    if as_json:
        print_json({"table": f"inet {table}", "netns": netns, "dry_run": dry_run, "kernel_rules": rules,
                    "settings": [r.as_dict() for r in results]})
        return
    verb = "checked (nothing changed)" if dry_run else "applied"
    print(f"{verb}: table inet {table}, {len(compiled.plan.table.chains)} chains, {rules} rules"
          + (f" in netns {netns}" if netns else ""))
    print_toggles({t.name: (t.on, t.policy_on) for t in plan.table.toggles})
    _print_settings(results)


def _live(states: dict) -> dict:
    return {name: LiveToggle(name, on, policy) for name, (on, policy) in states.items()}


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
    """Show what ctkit owns in the kernel, with rule counters."""
    if registry.check(backend) == "iptables":
        iptables_cmd.show(table, netns, variant, as_json)
        return
    if as_json:
        items = nft_kernel.list_table(table, netns)
        toggles = nft_kernel.toggle_states(table, netns) if items is not None else {}
        print_json({"table": f"inet {table}", "present": items is not None, "nftables": items or [],
                    "toggles": {n: {"on": on, "policy": p} for n, (on, p) in toggles.items()}})
        return
    text = nft_kernel.list_table_text(table, netns)
    if text is None:
        print(f"ctkit owns nothing here: no table inet {table}")
        return
    print(text, end="")
    toggles = nft_kernel.toggle_states(table, netns)
    if toggles:
        print("# toggles")
        print_toggles(toggles)


@handle_errors
def toggle(name: str = typer.Argument(..., help="Toggle name (declared in the policy's toggles)."),
           state: str = typer.Argument(..., help="on or off."),
           netns: Optional[str] = NetnsOption, table: str = TableOption, backend: str = BackendOption,
           variant: str = VariantOption, as_json: bool = JsonOption) -> None:
    """Switch a toggle on or off: one small atomic kernel update, no policy reload."""
    if state not in ("on", "off"):
        raise UsageError(f"state must be on or off, not {state!r}")
    on = state == "on"
    if registry.check(backend) == "iptables":
        where = iptables_cmd.toggle(table, name, on, netns, variant)
    else:
        nft_kernel.set_toggle(table, name, on, netns)
        where = f"table inet {table}"
    if as_json:
        print_json({"toggle": name, "on": on, "where": where, "netns": netns})
    else:
        print(f"toggle {name}: {state} ({where}" + (f", netns {netns})" if netns else ")"))


@handle_errors
def remove(netns: Optional[str] = NetnsOption, table: str = TableOption, backend: str = BackendOption,
           variant: str = VariantOption) -> None:
    """Remove everything ctkit owns (its table); nothing else is touched."""
    if registry.check(backend) == "iptables":
        iptables_cmd.remove(table, netns, variant)
        return
    if nft_kernel.delete_table(table, netns):
        print(f"removed table inet {table}")
    else:
        print(f"nothing to remove: no table inet {table}")


set_app = typer.Typer(help="Change the members of a named set at run time (no reload; an apply resets them "
                           "to the policy file).", no_args_is_help=True)


def _member_types(name: str, netns: Optional[str], table: str, backend: str):
    """The set's member type as the kernel has it (nft: `list set` type and flags; ipset: its header)."""
    from ctkit import members
    from ctkit.errors import KernelError
    from ctkit.kernel.netns import entered
    members.check_set_name(name)
    if backend == "iptables":
        from ctkit.backends.iptables import ipset as ipset_kernel
        from ctkit.names import chain_prefix, ipset_name
        set_name = ipset_name(chain_prefix(table), name)
        proc = ipset_kernel._run(["list", "-t", set_name], netns, f"cannot read ipset {set_name}", check=False)
        if proc.returncode != 0:
            if "does not exist" in proc.stderr:
                raise UsageError(f"no set {set_name} (apply a policy that declares it)")
            raise KernelError(f"cannot read ipset {set_name}: {proc.stderr.strip()}")
        return members.set_type_from_ipset(proc.stdout, set_name)
    nft_kernel.check_table(table)
    with entered(netns):  # the libnftables context must be created inside
        ctx = nft_kernel._context()
        items = nft_kernel._cmd_json(ctx, f"list set {nft_kernel.FAMILY} {table} {name}")
    if not items:
        raise UsageError(f"no set {name!r} in table {nft_kernel.FAMILY} {table} (apply a policy that declares it)")
    return members.set_type_from_nft(items, name)


def _set_change(name: str, value: str, add: bool, timeout: Optional[int], netns: Optional[str], table: str,
                backend: str, variant: str) -> str:
    """Parse `value` with the set's own type (never a name lookup), then add or delete it."""
    from ctkit import members
    kind = registry.check(backend)
    member = members.parse(value, _member_types(name, netns, table, kind))
    if kind == "iptables":
        from ctkit.backends.iptables import ipset as ipset_kernel
        from ctkit.names import chain_prefix, ipset_name
        set_name = ipset_name(chain_prefix(table), name)
        if add:
            ipset_kernel.add(set_name, member.text(), timeout, netns)
        else:
            ipset_kernel.delete(set_name, member.text(), netns)
        return f"ipset {set_name}"
    nft_kernel.set_element(table, name, member.nft(), add, timeout, netns)
    return f"set inet {table} {name}"


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
    where = _set_change(name, value, True, timeout, netns, table, backend, variant)
    print(f"added {value} to {where}" + (f" (netns {netns})" if netns else ""))


@set_app.command("del")
@handle_errors
def set_del(name: str = typer.Argument(..., help="Set name."), value: str = typer.Argument(..., help="Member."),
            netns: Optional[str] = NetnsOption, table: str = TableOption, backend: str = BackendOption,
            variant: str = VariantOption) -> None:
    """Delete a member from a named set."""
    where = _set_change(name, value, False, None, netns, table, backend, variant)
    print(f"deleted {value} from {where}" + (f" (netns {netns})" if netns else ""))


def register(app: typer.Typer) -> None:
    app.command()(validate)
    app.command("compile")(compile_)
    app.command()(apply)
    app.command()(show)
    app.command()(remove)
    app.command()(toggle)
    app.add_typer(set_app, name="set")
