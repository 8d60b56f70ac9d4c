"""ctkit command line: a thin layer that wires the stages together."""
from __future__ import annotations

import typer

from ctkit.cli import audit, ct, export, policy

app = typer.Typer(
    help="Declarative netfilter and connection-tracking policy for real Linux kernels.",
    no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
policy.register(app)
audit.register(app)
export.register(app)
app.add_typer(ct.app, name="ct")
app.add_typer(ct.sysctl_app, name="sysctl")


def main() -> None:
    app()
