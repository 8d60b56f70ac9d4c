"""`ctkit ct ...` and `ctkit sysctl ...`: read the connection tracker and its settings."""
from __future__ import annotations

import typer

app = typer.Typer(help="Read the connection tracker: entries, summaries, counts, stats, expectations.",
                  no_args_is_help=True)
sysctl_app = typer.Typer(help="Show and set net.netfilter conntrack sysctls.", no_args_is_help=True)
