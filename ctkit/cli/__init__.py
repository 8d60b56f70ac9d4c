"""ctkit command line: a thin layer that wires the stages together.

A command runs with only its own module imported (COMMANDS: the first word picks it), so `ctkit ct
count` or `ctkit set add` do not pay for importing every other command's stages (issue 12: start-up);
`ctkit --help`, an unknown word and `from ctkit.cli import app` build the whole app."""
from __future__ import annotations

import importlib
import sys

import typer

#: the first command word -> the module under ctkit.cli whose register() adds it
COMMANDS = {
    "validate": "policy", "compile": "policy", "apply": "policy", "show": "policy", "remove": "policy",
    "toggle": "policy", "set": "policy", "plan": "plan", "confirm": "confirm", "rollback": "confirm",
    "audit": "audit", "exporter": "audit", "export": "export", "explain": "explain", "import": "importer",
    "ct": "ct", "sysctl": "ct",
}
#: the order of the whole app's help
MODULES = ("policy", "plan", "confirm", "audit", "export", "explain", "importer", "ct")


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import PackageNotFoundError, version
        try:
            print(f"ctkit {version('ctkit')}")
        except PackageNotFoundError:  # run from a source tree that was never installed
            print("ctkit (not installed)")
        raise typer.Exit()


def _root(show_version: bool = typer.Option(False, "--version", "-V", callback=_version, is_eager=True,
                                            help="Print ctkit's version and exit.")) -> None:
    """Declarative netfilter and connection-tracking policy for real Linux kernels."""


def build(modules: tuple[str, ...] = MODULES) -> typer.Typer:
    """The typer app with the commands of these modules (all of them: the whole command line)."""
    app = typer.Typer(
        help="Declarative netfilter and connection-tracking policy for real Linux kernels.",
        no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
        context_settings={"help_option_names": ["-h", "--help"]},
    )
    app.callback()(_root)
    for name in modules:
        importlib.import_module(f"ctkit.cli.{name}").register(app)
    return app


def __getattr__(name: str):
    if name == "app":  # the whole app, built on first use (tests, documentation)
        globals()["app"] = build()
        return globals()["app"]
    raise AttributeError(name)


def main() -> None:
    module = COMMANDS.get(sys.argv[1]) if len(sys.argv) > 1 else None  # an option first: the whole app
    build((module,) if module else MODULES)()
