"""ctkit command line: a thin layer that wires the stages together."""
from __future__ import annotations

import typer

from ctkit.cli import audit, confirm, ct, explain, export, importer, plan, policy

app = typer.Typer(
    help="Declarative netfilter and connection-tracking policy for real Linux kernels.",
    no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import PackageNotFoundError, version
        try:
            print(f"ctkit {version('ctkit')}")
        except PackageNotFoundError:  # run from a source tree that was never installed
            print("ctkit (not installed)")
        raise typer.Exit()


@app.callback()
def _root(show_version: bool = typer.Option(False, "--version", "-V", callback=_version, is_eager=True,
                                            help="Print ctkit's version and exit.")) -> None:
    """Declarative netfilter and connection-tracking policy for real Linux kernels."""


policy.register(app)
plan.register(app)
confirm.register(app)
audit.register(app)
export.register(app)
explain.register(app)
importer.register(app)
app.add_typer(ct.app, name="ct")
app.add_typer(ct.sysctl_app, name="sysctl")


def main() -> None:
    app()
