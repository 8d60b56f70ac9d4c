"""The iptables backend's side of the policy commands (compile, apply, show, remove).

Kept apart from ctkit/cli/policy.py so that the nft path there stays as it
was; like it, this only wires stages together and prints their results.
"""
from __future__ import annotations

import sys
from pathlib import Path

from ctkit import pipeline
from ctkit.backends.iptables import generate as backend
from ctkit.backends.iptables import kernel as kernel
from ctkit.cli.common import print_json, print_toggles
from ctkit.compile.toggles import LiveToggle, keep_live
from ctkit.errors import UsageError
from ctkit.kernel.settings import apply_settings
from ctkit.names import chain_prefix

FORMATS = ("restore", "json")


def _warn(findings: list[str]) -> None:
    """Foreign chains and sets with ctkit's prefix: left alone, said on stderr."""
    for line in findings:
        print(f"warning: {_printable(line)}", file=sys.stderr)


def _printable(text: str) -> str:
    """A rule as one terminal line: control characters and bytes that are not UTF-8 escaped."""
    raw = text.encode("utf-8", errors="surrogateescape").decode("utf-8", errors="backslashreplace")
    return "".join(c if c.isprintable() or c == " " else c.encode("unicode_escape").decode("ascii")
                   for c in raw)


def _families(family: str | None) -> tuple[str, ...]:
    if family is None:
        return backend.FAMILIES
    if family not in backend.FAMILIES:
        raise UsageError(f"unknown family {family!r} (valid: {', '.join(backend.FAMILIES)})")
    return (family,)


def compile_(compiled: pipeline.Compiled, path: Path, fmt: str, family: str | None) -> None:
    if fmt not in FORMATS:
        raise UsageError(f"unknown format {fmt!r} for --backend iptables (valid: {', '.join(FORMATS)})")
    ruleset = backend.generate(compiled.plan)
    texts = {f: backend.render(ruleset.document(f), Path(path).name) for f in _families(family)}
    if fmt == "json":
        print_json({"backend": "iptables", "prefix": ruleset.prefix, **texts})
    else:
        print("\n".join(texts.values()), end="")


def apply(compiled: pipeline.Compiled, netns: str | None, variant: str, dry_run: bool, as_json: bool):
    plan = compiled.plan
    if plan.table.toggles:  # keep live toggle states unless the file changed them
        _v, states = kernel.toggle_states(chain_prefix(plan.table.name), netns, variant)
        plan = keep_live(plan, {n: LiveToggle(n, on, p) for n, (on, p) in states.items()})
    ruleset = backend.generate(plan)
    findings: list[str] = []
    variant, changes = kernel.apply(ruleset.ipv4, ruleset.ipv6, netns, variant, dry_run=dry_run,
                                    findings=findings)
    _warn(findings)
    results = apply_settings(compiled.plan.settings, netns, dry_run=dry_run)
    counts = {f: ruleset.document(f).rule_count for f in backend.FAMILIES}
    if as_json:
        print_json({"backend": "iptables", "variant": variant, "prefix": ruleset.prefix, "netns": netns,
                    "dry_run": dry_run, "kernel_rules": counts,
                    "changed": {c.family: bool(c.document) for c in changes},
                    "settings": [r.as_dict() for r in results]})
        return results
    verb = "checked (nothing changed)" if dry_run else "applied"
    print(f"{verb}: iptables-{variant} chains {ruleset.prefix}*, {counts['ipv4']} IPv4 and "
          f"{counts['ipv6']} IPv6 rules" + (f" in netns {netns}" if netns else ""))
    print_toggles({t.name: (t.on, t.policy_on) for t in plan.table.toggles})
    return results


def toggle(table: str, name: str, on: bool, netns: str | None, variant: str) -> str:
    prefix = chain_prefix(table)
    variant = kernel.set_toggle(prefix, name, on, netns, variant)
    return f"chains {prefix}TG-{name}-*, iptables-{variant}"


def _live_dict(live: kernel.Live) -> dict:
    tables = {}
    for table in live.document.tables:
        chains = {}
        for chain in table.chains:
            rules = []
            for i, spec in enumerate(chain.rules):
                packets, nbytes = live.counters.get((table.name, chain.name, i), (0, 0))
                rules.append({"spec": spec, "packets": packets, "bytes": nbytes})
            jumps = [r.chain for t, r in live.jumps if t == table.name and r.target == chain.name]
            chains[chain.name] = {"jumped_from": jumps, "rules": rules}
        tables[table.name] = chains
    return {"tool": live.tool, "tables": tables}


def show(table: str, netns: str | None, variant: str, as_json: bool) -> None:
    prefix = chain_prefix(table)
    findings: list[str] = []
    variant, lives = kernel.show(prefix, netns, variant, findings=findings)
    _warn(findings)
    _v, toggles = kernel.toggle_states(prefix, netns, variant)
    if as_json:
        print_json({"backend": "iptables", "variant": variant, "prefix": prefix,
                    "present": any(live.document.tables for live in lives),
                    "families": {live.family: _live_dict(live) for live in lives},
                    "toggles": {n: {"on": on, "policy": p} for n, (on, p) in toggles.items()}})
        return
    if not any(live.document.tables for live in lives):
        print(f"ctkit owns nothing here: no {prefix}* chains (iptables-{variant})")
        return
    for live in lives:
        if not live.document.tables:
            continue
        print(f"# {live.tool}: {live.family}; [packets:bytes]")
        for t in live.document.tables:
            print(f"*{t.name}")
            for name, rule in ((n, r) for n, r in live.jumps if n == t.name):
                print(f"[{rule.packets}:{rule.bytes}] -A {rule.chain} {_printable(rule.spec)}")
            for chain in t.chains:
                for i, spec in enumerate(chain.rules):
                    packets, nbytes = live.counters.get((t.name, chain.name, i), (0, 0))
                    print(f"[{packets}:{nbytes}] -A {chain.name} {_printable(spec)}")
    if toggles:
        print("# toggles")
        print_toggles(toggles)


def remove(table: str, netns: str | None, variant: str) -> None:
    prefix = chain_prefix(table)
    findings: list[str] = []
    variant, changes = kernel.remove(prefix, netns, variant, findings=findings)
    _warn(findings)
    removed = [c.family for c in changes if c.document]
    if removed:
        print(f"removed chains {prefix}* and their jumps ({', '.join(removed)}; iptables-{variant})")
    else:
        print(f"nothing to remove: no {prefix}* chains (iptables-{variant})")
