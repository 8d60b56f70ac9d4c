"""What every command shares: the --netns option, output helpers, error handling.

No Python traceback reaches a user: CtkitError subclasses carry their exit
code; anything else is an internal error (exit 3) with a one-line message.
Set CTKIT_DEBUG=1 to see the traceback.
"""
from __future__ import annotations

import functools
import json
import os
import sys
from typing import Any, Callable, Iterable

import typer

from ctkit.errors import EXIT_KERNEL, CtkitError, PolicyError
from ctkit.terminal import printable, suggest

NetnsOption = typer.Option(None, "--netns", "-n", help="Network namespace (name under /run/netns, a path, "
                           "or pid:N). Default: the current one.", show_default=False)
JsonOption = typer.Option(False, "--json", help="Machine-readable JSON output.")


def err(text: str) -> None:
    print(text, file=sys.stderr)


def warn(text: str) -> None:
    """A warning about something in the kernel (a foreign chain with ctkit's prefix...), on stderr."""
    err(f"warning: {printable(text)}")


def print_toggles(states: dict) -> None:
    """One line per toggle: {name: (on now, the policy file's value or None)}."""
    for name, (on, policy) in sorted(states.items()):
        file = "unknown" if policy is None else ("on" if policy else "off")
        print(f"  toggle {name}: {'on' if on else 'off'} (policy file: {file})")


def print_json(data: Any) -> None:
    json.dump(data, sys.stdout, indent=2, sort_keys=False)
    sys.stdout.write("\n")


def sysctl_hints(names: Iterable[str]) -> str:
    """" (did you mean NAME?)" for the names this kernel lacks and ctkit does not know, when a sysctl of
    this kernel is close (terminal.suggest; with more than one: "NAME for KEY, ..."); "" otherwise.
    Run it in the namespace."""
    from ctkit.kernel import sysctl
    have = sysctl.names()
    unknown = [n for n in names if n not in have and n not in sysctl.ABSENT_MEANS]
    close = [(n, suggest(n, have)) for n in unknown]
    close = [(n, c) for n, c in close if c]
    if not close:
        return ""
    if len(unknown) == 1:
        return f" (did you mean {close[0][1]}?)"
    return " (did you mean " + ", ".join(f"{c} for {n}" for n, c in close) + "?)"


def handle_errors(fn: Callable) -> Callable:
    """Map ctkit errors to messages and exit codes."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except typer.Exit:
            raise
        except PolicyError as exc:
            for p in exc.problems:
                err(p.render())
            raise typer.Exit(exc.exit_code) from None
        except CtkitError as exc:
            err(f"ctkit: {exc}")
            raise typer.Exit(exc.exit_code) from None
        except BrokenPipeError:
            raise typer.Exit(0) from None
        except KeyboardInterrupt:
            raise typer.Exit(130) from None
        except Exception as exc:  # noqa: BLE001 - last line of defence before the user
            if os.environ.get("CTKIT_DEBUG"):
                raise
            err(f"ctkit: internal error: {type(exc).__name__}: {exc} (set CTKIT_DEBUG=1 for details)")
            raise typer.Exit(EXIT_KERNEL) from None
    return wrapper

