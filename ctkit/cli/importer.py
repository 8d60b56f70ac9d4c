"""`ctkit import`: an existing ruleset as a ctkit policy (ctkit/importer/)."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from ctkit.cli.common import JsonOption, err, handle_errors, print_json


@handle_errors
def import_(iptables_save: List[Path] = typer.Option([], "--iptables-save", help="iptables-save (or ip6tables-save) "
                                                     "output; give it twice for both families."),
            ip6tables_save: List[Path] = typer.Option([], "--ip6tables-save", help="ip6tables-save output (read "
                                                      "as IPv6 whatever its header says)."),
            nft_json: List[Path] = typer.Option([], "--nft-json", help="`nft -j list ruleset` output."),
            output: Optional[Path] = typer.Option(None, "--output", help="Write the policy here (.json: JSON, "
                                                  "else YAML with a header comment). Default: standard output."),
            table: str = typer.Option("ctkit", "--table", "-t", help="The policy's table name."),
            include: List[str] = typer.Option([], "--include", help="Import this chain of another tool "
                                              "(DOCKER-USER, ...) instead of leaving it out (repeatable)."),
            netns: Optional[str] = typer.Option(None, "--netns", "-n", help="Import the rules live in this "
                                                "namespace (--backend: which ruleset; ctkit's own read back as their "
                                                "policy)."),
            backend: str = typer.Option("nft", "--backend", "-b", help="With --netns: the ruleset to read, "
                                        "nft or iptables."),
            variant: str = typer.Option("auto", "--iptables-variant", help="With --netns: nft, legacy or auto "
                                        "(the system's iptables-save)."),
            as_json: bool = JsonOption) -> None:
    """Write a ctkit policy that means the same as an existing ruleset. Exit 1 when some rules cannot be
    expressed (each is listed with its line and the reason), 0 when all were."""
    from ctkit.backends import registry
    from ctkit.errors import UsageError
    from ctkit.importer import LIVE, from_iptables_save, from_nft_json
    from ctkit.ownership import check_table
    given = [bool(iptables_save or ip6tables_save), bool(nft_json), netns is not None]
    if sum(given) != 1:
        raise UsageError("name one ruleset: --iptables-save FILE and/or --ip6tables-save FILE (repeatable), "
                         "--nft-json FILE, or --netns NS [--backend nft|iptables] (the live rules)")
    check_table(table)
    if netns is not None:
        result = LIVE[registry.check(backend)](netns, table, tuple(include), variant)
    elif nft_json:
        result = from_nft_json(list(nft_json), table, tuple(include))
    else:
        result = from_iptables_save(list(iptables_save), table, tuple(include), list(ip6tables_save))
    if as_json:
        print_json(result.as_dict())
        raise typer.Exit(result.exit_code)
    text = result.render("json" if output is not None and output.suffix == ".json" else "yaml")
    if output is None:
        print(text, end="")
    else:
        from ctkit.paths import check_writable_target
        check_writable_target(output, f"--output {output}", "ctkit import")
        output.write_text(text, encoding="utf-8", errors="surrogateescape")
        err(f"wrote {output}")
    _summary(result)
    raise typer.Exit(result.exit_code)


def _summary(result) -> None:
    from ctkit.terminal import printable
    err(f"{result.expressed} rules expressed, {len(result.not_expressed)} not")
    for n in result.not_expressed:
        err(f"  not expressed: {printable(n.source)}:{n.line}: {printable(n.text)}\n    {printable(n.reason)}")
    for x in result.left_out:
        err(f"  left out ({x.owner}): {printable(x.source)}:{x.line}: {printable(x.what)}")


def register(app: typer.Typer) -> None:
    app.command("import")(import_)
