"""`ctkit audit`: how far is the kernel from the policy, and is conntrack healthy?"""
from __future__ import annotations

import signal
import threading
from pathlib import Path
from typing import List, Optional

import typer

from ctkit import pipeline
from ctkit.backends import registry
from ctkit.cli.common import JsonOption, NetnsOption, handle_errors, print_json
from ctkit.errors import KernelError, UsageError
from ctkit.terminal import activity


@handle_errors
def audit(policy: Path = typer.Argument(..., help="Policy file (JSON or YAML)."),
          netns: Optional[str] = NetnsOption,
          state: Optional[Path] = typer.Option(None, "--state", help="State file: drop counters are judged by "
                                               "what rose since the last audit that used it (without one: by "
                                               "their rate over the host's uptime)."),
          flush_denied: bool = typer.Option(False, "--flush-denied", help="Delete the conntrack entries of "
                                            "flows the policy no longer admits (and only those)."),
          no_flows: bool = typer.Option(False, "--no-flows", help="Skip judging every tracked flow "
                                        "against the policy (large tables)."),
          backend: str = typer.Option("nft", "--backend", "-b", help="Backend the policy was applied with: "
                                      "nft or iptables."),
          variant: str = typer.Option("auto", "--iptables-variant", help="iptables backend: nft, legacy or auto."),
          boot: Optional[Path] = typer.Option(None, "--boot", help="Directory `ctkit export` wrote: also say "
                                              "where what boot would load differs from what runs."),
          as_json: bool = JsonOption) -> None:
    """Compare a policy with the live kernel and check conntrack health. Exit 1 on drift or findings."""
    from ctkit import service
    from ctkit.audit.report import render
    chosen = registry.get(backend, variant)
    compiled = pipeline.compile_file(policy)
    label = "auditing: reading the kernel" + ("" if no_flows else ", judging every tracked flow")
    with activity(label) as act:  # on stderr, when it is a terminal
        report = service.audit(compiled, chosen, netns, state, check_flows=not no_flows, flush_denied=flush_denied)
        checked = None
        if boot is not None:
            act.update("auditing: loading the boot files into a scratch namespace")
            checked = service.boot_check(compiled, chosen, boot, netns)
    if as_json:
        print_json(report.as_dict() if checked is None else {**report.as_dict(), "boot": checked.as_dict()})
    else:
        render(report)
        if checked is not None:
            _print_boot(checked)
    raise typer.Exit(max(report.exit_code, 0 if checked is None or checked.clean else 1))


def _print_boot(checked) -> None:
    from ctkit.terminal import printable
    if checked.error:
        print(f"boot: the files in {checked.directory} do not load: {printable(checked.error)}")
    elif checked.clean:
        print(f"boot: the files in {checked.directory} bring back what runs")
    else:
        print(f"boot: the files in {checked.directory} differ from what runs ({len(checked.drift)}):")
    for d in checked.drift:
        print(f"  {d.kind:<16}{printable(d.subject)}")
        if d.expected is not None:
            print(f"    runs now:  {printable(d.expected)}")
        if d.actual is not None:
            print(f"    at boot:   {printable(d.actual)}")


@handle_errors
def exporter(listen: str = typer.Option("127.0.0.1:9630", "--listen", help="ADDR:PORT to serve /metrics on."),
             netns: List[str] = typer.Option([], "--netns", "-n", help="Namespace to export (repeatable); "
                                             "default: the current one."),
             policy: Optional[Path] = typer.Option(None, "--policy", help="Policy to audit on every "
                                                   "scrape (adds drift and findings metrics)."),
             textfile: Optional[Path] = typer.Option(None, "--textfile", help="Write the metrics once to this "
                                                     "file for node_exporter's textfile collector, then exit."),
             table: str = typer.Option("ctkit", "--table", "-t", help="ctkit's table, when no policy is given."),
             backend: str = typer.Option("nft", "--backend", "-b", help="Backend ctkit applied with: nft or "
                                         "iptables (where the rule counters are read)."),
             variant: str = typer.Option("auto", "--iptables-variant", help="iptables backend: nft, legacy or auto.")
             ) -> None:
    """Serve Prometheus metrics for one or more namespaces (or write them once with --textfile)."""
    from prometheus_client import (
        CollectorRegistry,
        start_http_server,
        write_to_textfile,
    )

    from ctkit.audit.metrics import ConntrackCollector

    compiled = pipeline.compile_file(policy) if policy else None
    chosen = registry.get(backend, variant)
    metrics = CollectorRegistry()
    metrics.register(ConntrackCollector(list(netns) or [None], chosen, compiled, table))
    if textfile:
        _check_textfile(textfile)
        try:
            write_to_textfile(str(textfile), metrics)
        except OSError as exc:
            raise UsageError(f"cannot write {textfile}: {exc.strerror}") from None
        return
    host, _, port = listen.rpartition(":")
    if not port.isdigit() or not host:
        raise UsageError(f"--listen wants ADDR:PORT, got {listen!r}")
    try:
        start_http_server(int(port), addr=host.strip("[]"), registry=metrics)
    except OSError as exc:
        raise KernelError(f"cannot listen on {listen}: {exc.strerror}") from None
    print(f"serving metrics on http://{listen}/metrics", flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        while not stop.wait(3600):
            pass
    except KeyboardInterrupt:
        pass


def _check_textfile(path: Path) -> None:
    """The textfile is written to a temporary file and renamed over PATH: only a regular file or a new one."""
    from ctkit.paths import check_writable_target
    check_writable_target(path, f"--textfile {path}", "ctkit")


def register(app: typer.Typer) -> None:
    app.command()(audit)
    app.command()(exporter)
