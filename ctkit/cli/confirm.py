"""`ctkit confirm` and `ctkit rollback`: the second half of `ctkit apply --confirm-within`."""
from __future__ import annotations

from typing import Optional

import typer

from ctkit import service
from ctkit.cli.common import JsonOption, NetnsOption, handle_errors, print_json
from ctkit.cli.policy import TableOption
from ctkit.errors import EXIT_FINDINGS


def _report(result: service.RollbackResult, as_json: bool) -> None:
    if as_json:
        print_json(result.as_dict())
    else:
        print(result.message)
    if not result.done:
        raise typer.Exit(EXIT_FINDINGS)


@handle_errors
def confirm(netns: Optional[str] = NetnsOption, table: str = TableOption, as_json: bool = JsonOption) -> None:
    """Keep the policy the last `apply --confirm-within` put in place. Exit 1 when no rollback was armed
    (it may have run already: the message says what happened last)."""
    _report(service.confirm(table, netns), as_json)


@handle_errors
def rollback(netns: Optional[str] = NetnsOption, table: str = TableOption, as_json: bool = JsonOption) -> None:
    """Put back now what ctkit owned before the armed `apply --confirm-within`. Exit 1 when none is armed."""
    _report(service.rollback(table, netns), as_json)


def register(app: typer.Typer) -> None:
    app.command()(confirm)
    app.command()(rollback)
