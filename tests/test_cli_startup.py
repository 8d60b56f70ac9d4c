"""ctkit runs a command with only its own module imported (ctkit/cli/__init__.py COMMANDS): the map must
name every command of the whole app, and each module must register the words mapped to it."""
from __future__ import annotations

import subprocess
import sys

import typer

from ctkit.cli import COMMANDS, MODULES, build


def _words(app: typer.Typer) -> set[str]:
    return set(typer.main.get_command(app).commands)


def test_the_map_names_every_command_and_each_module_registers_its_own():
    assert _words(build()) == set(COMMANDS)
    for module in MODULES:
        assert _words(build((module,))) == {w for w, m in COMMANDS.items() if m == module}, module


def test_a_command_does_not_import_the_other_commands():
    code = ("import sys; sys.argv = ['ctkit', 'sysctl', 'show', '--help']\n"
            "from ctkit.cli import main\n"
            "try:\n    main()\nexcept SystemExit:\n    pass\n"
            "print(sorted(m for m in sys.modules if m.startswith('ctkit.cli.')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60).stdout
    loaded = out.strip().splitlines()[-1]
    assert "ctkit.cli.ct" in loaded and "ctkit.cli.policy" not in loaded and "ctkit.cli.audit" not in loaded, loaded
