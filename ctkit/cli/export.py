"""`ctkit export`: the files a host loads at boot so that the policy survives a reboot."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ctkit import pipeline, service
from ctkit.backends import registry
from ctkit.cli.common import JsonOption, err, handle_errors, print_json
from ctkit.cli.policy import BackendOption, PolicyArg, VariantOption


@handle_errors
def export(policy: Path = PolicyArg,
           directory: Path = typer.Option(..., "--dir", help="Directory to write the files into "
                                          "(created when missing; nothing under /etc is written unless you "
                                          "name it)."),
           backend: str = BackendOption, variant: str = VariantOption,
           ctkit: Optional[str] = typer.Option(None, "--ctkit", help="Absolute path of the ctkit the systemd "
                                               "unit runs (default: this one)."),
           as_json: bool = JsonOption) -> None:
    """Write boot files: the ruleset for the distribution's tools, sysctl.d, modprobe.d and a systemd unit."""
    chosen = registry.get(backend, variant)
    compiled = pipeline.compile_file(policy)
    for w in compiled.warnings:
        err(w.render())
    args = ("--backend", backend) + (("--iptables-variant", variant) if variant != "auto" else ())
    result = service.export(compiled, chosen, directory, policy, ctkit=(ctkit,) if ctkit else None,
                            apply_args=args)
    if as_json:
        print_json(result.as_dict())
        return
    for f in result.files:
        print(f"wrote {f.path}" + (f"\n  install: {f.install}" if f.install else ""))
    for note in result.notes:
        err(f"note: {note}")


def register(app: typer.Typer) -> None:
    app.command()(export)
