"""`ctkit explain`: what the compiled policy does to one packet, chain by chain (ctkit/explain.py)."""
from __future__ import annotations

from pathlib import Path

import typer

from ctkit.cli.common import JsonOption, err, handle_errors, print_json


@handle_errors
def explain(policy: Path = typer.Argument(..., help="Policy file (JSON or YAML)."),
            packet: str = typer.Option(..., "--packet", help="The packet: 'PROTO SRC[:PORT] -> DST[:PORT] "
                                       "[iif IFACE] [oif IFACE] [state new|established|related|invalid|untracked] "
                                       "[len BYTES] [path input|output|forward]'."),
            backend: str = typer.Option("nft", "--backend", "-b", help="Backend that names ctkit's part: nft or "
                                        "iptables (both compile the same rules, so the path is the same)."),
            variant: str = typer.Option("auto", "--iptables-variant", help="iptables backend: nft, legacy or auto."),
            as_json: bool = JsonOption) -> None:
    """Walk a packet through the compiled policy the way the kernel would: each hook and chain in priority
    order, the rules that matched, the verdict, conntrack (tracked, zone, helper, timeout policy) and NAT."""
    from ctkit import pipeline
    from ctkit.backends import registry
    from ctkit.explain import explain as run
    from ctkit.explain import lines, parse_packet
    parsed = parse_packet(packet)  # before the policy: a bad --packet is named first
    chosen = registry.get(backend, variant)
    compiled = pipeline.compile_file(policy)
    for w in compiled.warnings:
        err(w.render())
    result = run(compiled.plan, parsed, chosen.owned(compiled.plan.table.name))
    if as_json:
        print_json(result.as_dict())
        return
    from ctkit.terminal import printable
    for line in lines(result):
        print(printable(line))


def register(app: typer.Typer) -> None:
    app.command()(explain)
