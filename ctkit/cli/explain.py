"""`ctkit explain`: what the compiled policy does to one packet, chain by chain (ctkit/explain.py)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ctkit.cli.common import JsonOption, NetnsOption, err, handle_errors, print_json
from ctkit.errors import UsageError


@handle_errors
def explain(policy: Optional[Path] = typer.Argument(None, help="Policy file (JSON or YAML); with --netns, "
                                                    "the path it gives is compared with the live one (drift)."),
            packet: str = typer.Option(..., "--packet", help="The packet: 'PROTO SRC\\[:PORT] -> DST\\[:PORT] "
                                       "\\[iif IFACE] \\[oif IFACE] \\[state new|established|related|invalid|"
                                       "untracked] \\[len BYTES] \\[path input|output|forward]'."),
            backend: str = typer.Option("nft", "--backend", "-b", help="Backend that names ctkit's part: nft or "
                                        "iptables (both compile the same rules, so the path is the same); with "
                                        "--netns, the ruleset that is read."),
            variant: str = typer.Option("auto", "--iptables-variant", help="iptables backend: nft, legacy or auto."),
            netns: Optional[str] = NetnsOption,
            as_json: bool = JsonOption) -> None:
    """Walk a packet through the compiled policy the way the kernel would: each hook and chain in priority
    order, the rules that matched, the verdict, conntrack (tracked, zone, helper, timeout policy) and NAT.
    With --netns, through the live ruleset (read back by ctkit import); with both, exit 1 on drift."""
    from ctkit import pipeline
    from ctkit.backends import registry
    from ctkit.explain import explain as run
    from ctkit.explain import lines, parse_packet
    parsed = parse_packet(packet)  # before the policy: a bad --packet is named first
    chosen = registry.get(backend, variant)
    if policy is None and netns is None:
        raise UsageError("name a policy file, or --netns NS to explain the live ruleset (or both: drift)")
    compiled = pipeline.compile_file(policy) if policy is not None else None
    for w in compiled.warnings if compiled else ():
        err(w.render())
    if netns is not None:
        from ctkit.explain import explain_live, live_lines
        from ctkit.importer import LIVE
        table = compiled.plan.table.name if compiled else "ctkit"
        read = LIVE[registry.check(backend)]
        live = explain_live(netns, lambda ns, t: read(ns, t, (), variant), parsed, chosen.owned(table), table,
                            compiled.plan if compiled else None)
        if as_json:
            print_json(live.as_dict())
        else:
            from ctkit.terminal import printable
            for line in live_lines(live):
                print(printable(line))
        raise typer.Exit(live.exit_code)
    result = run(compiled.plan, parsed, chosen.owned(compiled.plan.table.name))
    if as_json:
        print_json(result.as_dict())
        return
    from ctkit.terminal import printable
    for line in lines(result):
        print(printable(line))


def register(app: typer.Typer) -> None:
    app.command()(explain)
