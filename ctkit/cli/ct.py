"""`ctkit ct ...` and `ctkit sysctl ...`: read the connection tracker and its settings.

Thin: parsing options into a `conntrack.Filter`, calling ctkit.kernel, printing.
Output streams: `ct list` writes each entry as it is decoded.
"""
from __future__ import annotations

import json
import signal
import sys
import time
from itertools import islice
from typing import Iterable, Optional

import typer

from ctkit.cli.common import JsonOption, NetnsOption, handle_errors, print_json, sysctl_hints
from ctkit.errors import EXIT_FINDINGS, UsageError
from ctkit.kernel import conntrack as ct
from ctkit.kernel import sysctl
from ctkit.kernel.conntrack import events
from ctkit.kernel.conntrack.text import EVENT_TEXT_COLUMNS, conntrack_parts, expect_line
from ctkit.kernel.netns import entered
from ctkit.terminal import activity, counted

app = typer.Typer(help="Read the connection tracker: entries, summaries, counts, stats, expectations.",
                  no_args_is_help=True)
sysctl_app = typer.Typer(help="Show and set net.netfilter conntrack sysctls.", no_args_is_help=True)

# ------------------------------------------------------------------ filters

FamilyOpt = typer.Option(None, "--family", "-f", help="ipv4 or ipv6 (kernel-side).")
ProtoOpt = typer.Option(None, "--proto", "-p", help="tcp, udp, icmp, icmpv6, sctp... or a number.")
SrcOpt = typer.Option(None, "--src", "-s", help="Original source address or CIDR.")
DstOpt = typer.Option(None, "--dst", "-d", help="Original destination address or CIDR.")
RSrcOpt = typer.Option(None, "--reply-src", help="Reply source address or CIDR.")
RDstOpt = typer.Option(None, "--reply-dst", help="Reply destination address or CIDR.")
SportOpt = typer.Option(None, "--sport", help="Original source port.")
DportOpt = typer.Option(None, "--dport", help="Original destination port.")
StateOpt = typer.Option(None, "--state", help="TCP state(s), comma separated, e.g. ESTABLISHED,TIME_WAIT.")
StatusOpt = typer.Option(None, "--status", help="Status flags that must be set, e.g. ASSURED; "
                         "!FLAG for clear; UNREPLIED (kernel-side).")
MarkOpt = typer.Option(None, "--mark", "-m", help="VALUE or VALUE/MASK (kernel-side).")
ZoneOpt = typer.Option(None, "--zone", "-w", help="Conntrack zone (kernel-side since 6.8).")
HelperOpt = typer.Option(None, "--helper", help="Helper name, e.g. ftp.")


def _filter(family, proto, src, dst, reply_src, reply_dst, sport, dport, state, status, mark, zone,
            helper) -> ct.Filter:
    try:
        return ct.Filter.parse(family=family, proto=proto, src=src, dst=dst, reply_src=reply_src,
                               reply_dst=reply_dst, sport=sport, dport=dport, state=state, status=status,
                               mark=mark, zone=zone, helper=helper)
    except ct.FilterError as exc:  # the kernel layer names the field; the user typed an option
        raise UsageError(f"--{exc.field.replace('_', '-')}{exc.detail}") from None


# --------------------------------------------------------- conntrack format
# the text of conntrack(8) is formatted in ctkit/kernel/conntrack/text.py

_conntrack_parts = conntrack_parts


def _write_lines(lines: Iterable[str], sep: str = "\n", lead: str = "") -> int:
    """Write `lines` with `sep` between them (and after the last when it is a newline), `lead` before the
    first, in batches of 256: one write() each, and a batch small enough to stay in the CPU's cache
    (batches of thousands of entries made a 200k-entry dump 20% slower). The number written."""
    write, it, n = sys.stdout.write, iter(lines), 0
    while batch := list(islice(it, 256)):
        write(sep if n else lead)
        write(sep.join(batch))
        n += len(batch)
    if n and sep == "\n":
        write(sep)
    return n


# ------------------------------------------------------------------ commands

@app.command("list")
@handle_errors
def list_cmd(
    netns: Optional[str] = NetnsOption,
    family: Optional[str] = FamilyOpt, proto: Optional[str] = ProtoOpt,
    src: Optional[str] = SrcOpt, dst: Optional[str] = DstOpt,
    reply_src: Optional[str] = RSrcOpt, reply_dst: Optional[str] = RDstOpt,
    sport: Optional[int] = SportOpt, dport: Optional[int] = DportOpt,
    state: Optional[str] = StateOpt, status: Optional[str] = StatusOpt,
    mark: Optional[str] = MarkOpt, zone: Optional[int] = ZoneOpt, helper: Optional[str] = HelperOpt,
    as_json: bool = JsonOption,
    fmt: Optional[str] = typer.Option(None, "--format", "-o", show_default=False,
                                      help="conntrack (default: the layout of conntrack -L), json (an array), "
                                           "or jsonl (one object per line)."),
    fields: Optional[str] = typer.Option(None, "--fields", help="Comma-separated fields for json/jsonl "
                                         "(default: all)."),
) -> None:
    """List conntrack entries (both tuples, state, timeout, status, mark, zone, helper, counters...)."""
    if as_json and fmt not in (None, "json"):
        raise UsageError(f"--json and --format {fmt} contradict each other: give one of them")
    fmt = fmt or ("json" if as_json else "conntrack")
    flt = _filter(family, proto, src, dst, reply_src, reply_dst, sport, dport, state, status, mark, zone,
                  helper)
    if fmt not in ("conntrack", "json", "jsonl"):
        raise UsageError(f"--format must be conntrack, json or jsonl, not {fmt!r}")
    if fmt == "conntrack":
        if fields:
            raise UsageError("--fields applies to --format json/jsonl")
        with activity("reading conntrack entries", streaming=True) as act:  # on stderr, when it is a terminal
            _write_lines(counted(ct.lines(netns, flt), act, "conntrack entries"))
        return
    names = tuple(f.strip() for f in fields.split(",")) if fields else ct.DEFAULT_COLUMNS
    for name in names:
        ct.column(name)
    with activity("reading conntrack entries", streaming=True) as act:
        objects = counted(ct.json_rows(netns, flt, names), act, "conntrack entries")
        if fmt == "jsonl":
            _write_lines(objects)
            return
        sys.stdout.write("[")
        _write_lines(objects, ",\n", "\n")
        sys.stdout.write("\n]\n")


@app.command("summary")
@handle_errors
def summary_cmd(
    netns: Optional[str] = NetnsOption,
    by: str = typer.Option("proto,state", "--by", help="Comma-separated fields to group by, e.g. "
                           "proto,state,dport,src,mark,zone,helper,status."),
    top: int = typer.Option(0, "--top", help="Show only the N largest groups (0: all)."),
    family: Optional[str] = FamilyOpt, proto: Optional[str] = ProtoOpt,
    src: Optional[str] = SrcOpt, dst: Optional[str] = DstOpt,
    reply_src: Optional[str] = RSrcOpt, reply_dst: Optional[str] = RDstOpt,
    sport: Optional[int] = SportOpt, dport: Optional[int] = DportOpt,
    state: Optional[str] = StateOpt, status: Optional[str] = StatusOpt,
    mark: Optional[str] = MarkOpt, zone: Optional[int] = ZoneOpt, helper: Optional[str] = HelperOpt,
    as_json: bool = JsonOption,
) -> None:
    """Count entries grouped by any fields, in one streaming pass over the table."""
    names = tuple(f.strip() for f in by.split(",") if f.strip())
    if not names:
        raise UsageError("--by needs at least one field")
    for name in names:
        ct.column(name)
    if top < 0:
        raise UsageError("--top must be 0 or more")
    flt = _filter(family, proto, src, dst, reply_src, reply_dst, sport, dport, state, status, mark, zone,
                  helper)
    with activity("counting conntrack entries"):
        counts = ct.summary(netns, names, flt)
    total = sum(counts.values())
    groups = counts.most_common(top or None)
    if as_json:
        print_json({"by": list(names), "total": total, "groups": [
            {**{n: (list(v) if isinstance(v, list) else v) for n, v in zip(names, key, strict=True)}, "count": n}
            for key, n in groups]})
        return
    shown = [[_text(v) for v in key] + [str(n)] for key, n in groups]
    header = [n.upper() for n in names] + ["COUNT"]
    widths = [max(len(r[i]) for r in [header] + shown) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) if i < len(names) else c.rjust(w) for i, (c, w) in
                       enumerate(zip(row, widths, strict=True))).rstrip() for row in [header] + shown]
    lines.append(f"total {total} entries in {len(counts)} groups")
    sys.stdout.write("\n".join(lines) + "\n")


def _text(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, list):
        return ",".join(str(v) for v in value) or "-"
    return str(value)


@app.command("count")
@handle_errors
def count_cmd(netns: Optional[str] = NetnsOption, as_json: bool = JsonOption) -> None:
    """Number of entries in the table (and the host-wide maximum), without dumping it."""
    c = ct.count(netns)
    if as_json:
        print_json({"entries": c.entries, "max": c.max_entries})
    elif c.max_entries is None:
        print(f"{c.entries} entries")
    else:
        print(f"{c.entries} entries, nf_conntrack_max {c.max_entries} (host-wide)")


STAT_ORDER = ("found", "invalid", "insert", "insert_failed", "drop", "early_drop", "error",
              "search_restart", "clash_resolve", "chaintoolong", "expect_new", "expect_create",
              "expect_delete")


@app.command("stats")
@handle_errors
def stats_cmd(netns: Optional[str] = NetnsOption, as_json: bool = JsonOption) -> None:
    """Per-CPU conntrack counters and totals (ctnetlink, else /proc/net/stat/nf_conntrack)."""
    s = ct.stats(netns)
    names = [n for n in STAT_ORDER if n in s.totals] + sorted(set(s.totals) - set(STAT_ORDER))
    if as_json:
        print_json({"source": s.source, "entries": s.entries, "totals": {n: s.totals[n] for n in names},
                    "per_cpu": [{"cpu": cpu, **{n: v.get(n, 0) for n in names}} for cpu, v in s.per_cpu]})
        return
    header = ["CPU"] + names
    table = [[str(cpu)] + [str(v.get(n, 0)) for n in names] for cpu, v in s.per_cpu]
    table.append(["total"] + [str(s.totals[n]) for n in names])
    widths = [max(len(r[i]) for r in [header] + table) for i in range(len(header))]
    for row in [header] + table:
        print("  ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)))
    print(f"entries {s.entries} (source: {s.source})")


@app.command("expect")
@handle_errors
def expect_cmd(netns: Optional[str] = NetnsOption, as_json: bool = JsonOption) -> None:
    """The expectation table: related flows that helpers (ftp, sip...) are waiting for."""
    exps = ct.expectations(netns)
    if as_json:
        print_json([e.as_dict() for e in exps])
        return
    for e in exps:
        print(expect_line(e))
    print(f"{len(exps)} expectations", file=sys.stderr)


# ------------------------------------------------------------------- events

_TAGS = {kind: f"{'[' + kind.upper() + ']':>9}" for kind in events.KINDS}
LINGER = 0.005  # seconds between an idle queue's first message and reading on: bursts, not a syscall per event
_SIZE_SUFFIXES = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}


class _Terminated(Exception):
    """SIGTERM: end the event stream like Ctrl-C does, with its final counts."""


def _size(text: str) -> int:
    t = text.strip().upper().removesuffix("B").removesuffix("I")
    number, suffix = (t[:-1], t[-1]) if t and t[-1] in "KMG" else (t, "")
    if not number.isdigit() or not 1 << 12 <= int(number) * _SIZE_SUFFIXES[suffix] <= 1 << 30:
        raise UsageError(f"--buffer-size must be bytes from 4K to 1G (e.g. 64M), not {text!r}")
    return int(number) * _SIZE_SUFFIXES[suffix]


def event_line(kind: str, raw: tuple, portid: int, convert, mark_at: int) -> str:
    """One conntrack event as `conntrack -E` prints it, from its raw row (a layout of EVENT_TEXT_COLUMNS,
    whose `convert` is given; the raw mark sits at `mark_at`: an event without one shows none)."""
    v = convert(raw)
    parts = _conntrack_parts(v, True, raw[mark_at])
    if portid:  # the event was caused by a process's request (conntrack -D, a flush...)
        parts.append(f"[USERSPACE] portid={portid}")
        name = events.program_name(portid)
        if name:
            parts.append(f"progname={name}")
    return f"{_TAGS[kind]} " + " ".join(parts)


def _table(header: list[str], rows: list[list[str]], left: int) -> list[str]:
    """Columns padded to their widest cell; the first `left` columns left-aligned, the rest right-aligned."""
    widths = [max(len(r[i]) for r in [header] + rows) for i in range(len(header))]
    return ["  ".join(c.ljust(w) if i < left else c.rjust(w) for i, (c, w) in
                      enumerate(zip(row, widths, strict=True))).rstrip() for row in [header] + rows]


def summary_text(snap: dict, netns: str | None) -> str:
    """A refresh of `ct events --format summary`: rates per second over the window, top ports and sources."""
    r, t = snap["rates"], snap["totals"]
    when = time.strftime("%H:%M:%S", time.localtime(snap["time"]))
    lines = [f"ctkit ct events{' in ' + netns if netns else ''}  {when}  rates over the last {snap['window']:.1f} s "
             f"(running {snap['elapsed']:.0f} s)",
             f"events/s: new {r['new']:.1f}  update {r['update']:.1f}  destroy {r['destroy']:.1f}",
             f"since start: new {t['new']}  update {t['update']}  destroy {t['destroy']}"]
    if t["lost"] or t["overruns"]:
        lines.append(f"LOST: {t['lost']} events ({t['overruns']} overruns), {r['lost']:.1f}/s in the window: the "
                     "kernel dropped them (receive queue full)")
    else:
        lines.append("lost: 0")
    lines.append("")
    rows = [[_text(g["proto"]), _text(g["state"])] + [f"{g[k]:.1f}" for k in events.KINDS]
            for g in snap["by_proto_state"]]
    lines += _table(["PROTO", "STATE", "NEW/s", "UPDATE/s", "DESTROY/s"], rows, 2)
    if snap["top_ports"]:
        lines.append("")
        lines += _table(["PROTO", "DPORT", "NEW/s"],
                        [[_text(p["proto"]), _text(p["dport"]), f"{p['new']:.1f}"] for p in snap["top_ports"]], 1)
    if snap["top_sources"]:
        lines.append("")
        lines += _table(["TOP SOURCE", "NEW/s"], [[_text(p["src"]), f"{p['new']:.1f}"] for p in snap["top_sources"]],
                        1)
    return "\n".join(lines) + "\n"


class _LossReport:
    """Losses on stderr as they happen, at most one line a second (the rest is summed into the next)."""

    def __init__(self, rcvbuf: int) -> None:
        self.rcvbuf, self.pending, self.last, self.total, self.overruns = rcvbuf, 0, 0.0, 0, 0

    def add(self, lost: "events.Lost") -> None:
        self.pending += lost.count
        self.total, self.overruns = lost.total, lost.overruns
        if lost.time - self.last >= 1.0:
            self.flush(lost.time)

    def flush(self, now: float | None = None) -> None:
        if self.pending:
            print(f"ctkit: lost {self.pending} events: the kernel's receive queue for this socket was full "
                  f"(ENOBUFS); {self.total} lost in total, {self.overruns} overruns (buffer {self.rcvbuf} bytes: "
                  "raise --buffer-size, or ask for fewer with --event)", file=sys.stderr, flush=True)
            self.pending, self.last = 0, time.time() if now is None else now


@app.command("events")
@handle_errors
def events_cmd(
    netns: Optional[str] = NetnsOption,
    family: Optional[str] = FamilyOpt, proto: Optional[str] = ProtoOpt,
    src: Optional[str] = SrcOpt, dst: Optional[str] = DstOpt,
    reply_src: Optional[str] = RSrcOpt, reply_dst: Optional[str] = RDstOpt,
    sport: Optional[int] = SportOpt, dport: Optional[int] = DportOpt,
    state: Optional[str] = StateOpt, status: Optional[str] = StatusOpt,
    mark: Optional[str] = MarkOpt, zone: Optional[int] = ZoneOpt, helper: Optional[str] = HelperOpt,
    kinds: Optional[str] = typer.Option(None, "--event", help="Event kinds, comma separated: new, update, destroy "
                                        "(default: all; expectations have new and destroy)."),
    expect: bool = typer.Option(False, "--expect", help="Expectation events instead (like conntrack -E expect)."),
    as_json: bool = JsonOption,
    fmt: Optional[str] = typer.Option(None, "--format", "-o", show_default=False,
                                      help="conntrack (default: the lines of conntrack -E), jsonl (one object per "
                                           "event, as --json), or summary (rates over --window, refreshed every "
                                           "--interval; with --json one object per refresh)."),
    fields: Optional[str] = typer.Option(None, "--fields", help="Comma-separated fields for jsonl (default: all)."),
    count: Optional[int] = typer.Option(None, "--count", help="Stop after N events (those that pass the filters)."),
    seconds: Optional[float] = typer.Option(None, "--seconds", help="Stop after S seconds."),
    buffer_size: str = typer.Option("32M", "--buffer-size", help="Receive buffer to ask for (bytes, K/M/G). When "
                                    "it is full the kernel drops events; ctkit counts and reports every loss."),
    interval: float = typer.Option(1.0, "--interval", help="summary: seconds between refreshes."),
    window: float = typer.Option(10.0, "--window", help="summary: seconds the rates are taken over."),
    top: int = typer.Option(10, "--top", help="summary: how many ports and sources to show."),
) -> None:
    """Live conntrack events (new, update, destroy), filtered like `ct list`, until --count or --seconds.

    Events the kernel drops (its queue overran: ENOBUFS) are counted: on stderr, as `lost` in jsonl and the summary.

    Exit status 1 when events were lost. Ctrl-C ends the stream.
    """
    if as_json:
        if fmt not in (None, "jsonl", "summary"):
            raise UsageError(f"--json and --format {fmt} contradict each other: give one of them")
        fmt = fmt or "jsonl"
    fmt = fmt or "conntrack"
    if fmt not in ("conntrack", "jsonl", "summary"):
        raise UsageError(f"--format must be conntrack, jsonl or summary, not {fmt!r}")
    if count is not None and count < 1:
        raise UsageError("--count must be 1 or more")
    if seconds is not None and seconds <= 0:
        raise UsageError("--seconds must be more than 0")
    if interval <= 0 or window <= 0:
        raise UsageError("--interval and --window must be more than 0")
    if top < 0:
        raise UsageError("--top must be 0 or more")
    rcvbuf = _size(buffer_size)
    wanted = tuple(k.strip().lower() for k in kinds.split(",") if k.strip()) if kinds else \
        (events.EXPECT_KINDS if expect else events.KINDS)
    flt = _filter(family, proto, src, dst, reply_src, reply_dst, sport, dport, state, status, mark, zone,
                  helper)
    if fields and fmt != "jsonl":
        raise UsageError("--fields applies to --format jsonl")
    if expect:
        if fmt == "summary":
            raise UsageError("--format summary counts conntrack events; expectations have conntrack or jsonl")
        if fields:
            raise UsageError("--fields applies to conntrack events, not to --expect")
        try:
            events.expect_filter_checks(flt)
        except ct.FilterError as exc:
            raise UsageError(f"--{exc.field.replace('_', '-')}{exc.detail}") from None
    if fmt == "conntrack":
        columns: tuple[str, ...] = EVENT_TEXT_COLUMNS
    elif fmt == "summary":
        columns = events.SUMMARY_COLUMNS
    else:
        columns = tuple(f.strip() for f in fields.split(",")) if fields else ct.DEFAULT_COLUMNS
        for name in columns:
            ct.column(name)
    sub = events.subscribe(netns, flt, columns, wanted, expect, rcvbuf)
    _stream(sub, fmt, as_json, count, seconds, interval, window, top, netns)


def _stream(sub: "events.Subscription", fmt: str, as_json: bool, count: int | None, seconds: float | None,
            interval: float, window: float, top: int, netns: str | None) -> None:
    out = sys.stdout
    batch: list[str] = []
    losses = _LossReport(sub.rcvbuf)
    shown = 0
    summary = fmt == "summary"
    rates = events.Rates(window, min(1.0, window / 10)) if summary else None
    tty = summary and not as_json and out.isatty()
    next_refresh = time.time() + interval

    def flush() -> None:
        if batch:
            out.write("\n".join(batch) + "\n")
            batch.clear()
        out.flush()

    def refresh(now: float) -> None:
        nonlocal next_refresh
        snap = rates.snapshot(now, top)
        if as_json:
            out.write(json.dumps(snap, separators=(",", ":")) + "\n")
        else:
            out.write(("\x1b[H\x1b[J" if tty else "") + summary_text(snap, netns) + ("" if tty else "\n"))
        out.flush()
        next_refresh = now + interval

    def idle() -> None:
        if summary:
            now = time.time()
            if now >= next_refresh:
                refresh(now)
        else:
            flush()

    def lost(item: "events.Lost") -> None:
        if summary:
            rates.add_lost(item)
        else:
            if fmt == "jsonl":
                batch.append(json.dumps(item.as_dict(), separators=(",", ":")))
            flush()
        losses.add(item)

    def terminate(_signum, _frame):
        raise _Terminated()

    try:
        previous, restore = signal.signal(signal.SIGTERM, terminate), True
    except ValueError:  # not the main thread (an embedding program): it handles its signals itself
        previous, restore = None, False
    deadline = None if seconds is None else time.monotonic() + seconds
    stream = sub.events(deadline, idle, min(1.0, interval), linger=LINGER, raw=True)
    layout = getattr(sub.decoder, "layout", None)
    try:
        if summary:
            add = rates.add_row
            for ev in stream:
                if ev.__class__ is events.Lost:
                    lost(ev)
                    continue
                kind, raw, _portid, at = ev
                add(kind, raw, at, layout)
                shown += 1
                if at >= next_refresh:
                    refresh(at)
                if shown == count:
                    break
        elif sub.expect:
            for ev in stream:
                if ev.__class__ is events.Lost:
                    lost(ev)
                    continue
                if fmt == "jsonl":
                    batch.append(json.dumps(ev.as_dict(), separators=(",", ":")))
                else:
                    batch.append(f"{_TAGS[ev.kind]} " + expect_line(ev.expectation))
                shown += 1
                if shown == count:
                    break
        elif fmt == "jsonl":
            to_json = layout.to_json
            for ev in stream:
                if ev.__class__ is events.Lost:
                    lost(ev)
                    continue
                kind, raw, portid, at = ev
                batch.append('{"event":"%s","time":%.6f,"portid":%d,%s' % (kind, at, portid, to_json(raw)[1:]))
                shown += 1
                if len(batch) >= 512:
                    flush()
                if shown == count:
                    break
        else:
            convert, mark_at = layout.convert, layout.raws.index("mark")
            for ev in stream:
                if ev.__class__ is events.Lost:
                    lost(ev)
                    continue
                batch.append(event_line(ev[0], ev[1], ev[2], convert, mark_at))
                shown += 1
                if len(batch) >= 512:
                    flush()
                if shown == count:
                    break
    except (KeyboardInterrupt, _Terminated):
        pass
    finally:
        stream.close()
        if restore:
            signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)
        try:
            last = sub.check_losses()
            if last is not None:
                lost(last)
            if summary:
                refresh(time.time())
            flush()
        finally:
            sub.close()
            losses.flush()
    print(f"ctkit: {shown} events shown, {sub.received} received, {sub.lost} lost ({sub.overruns} overruns)",
          file=sys.stderr)
    if sub.lost:
        raise typer.Exit(EXIT_FINDINGS)


# ------------------------------------------------------------------- sysctl

@sysctl_app.command("show")
@handle_errors
def sysctl_show(netns: Optional[str] = NetnsOption, as_json: bool = JsonOption) -> None:
    """Every net.netfilter.nf_conntrack_* setting: value, writable here, exists on this kernel."""
    with entered(netns):
        settings = sysctl.conntrack_settings()
    if as_json:
        print_json([s.as_dict() for s in settings])
        return
    width = max(len(s.value.name) for s in settings) + len("net.netfilter.")
    for s in settings:
        v = s.value
        if not v.exists:
            text, mode = "(absent)", "--"
        else:
            text, mode = v.value or "", "rw" if v.writable else "ro"
        note = f"  # {s.note}" if s.note else ""
        print(f"{('net.netfilter.' + v.name).ljust(width)}  {mode}  {text}{note}")


@sysctl_app.command("set")
@handle_errors
def sysctl_set(assignments: list[str] = typer.Argument(..., metavar="KEY=VALUE...",
                                                        help="e.g. nf_conntrack_tcp_loose=0"),
               netns: Optional[str] = NetnsOption) -> None:
    """Set net.netfilter sysctls in a namespace; host-wide keys are refused outside the initial one."""
    pairs = [sysctl.parse_assignment(a) for a in assignments]
    with entered(netns):  # scope is checked inside: entering moves only this thread
        try:
            changes = sysctl.plan(pairs)  # every key checked before any is written
        except UsageError as exc:
            raise UsageError(f"{exc}{sysctl_hints(n for n, _ in pairs)}") from None
        after = sysctl.apply_plan(changes)  # all or nothing: a failed write restores the earlier ones
    for value in after:
        print(f"net.netfilter.{value.name} = {value.value}")


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="ct")
    root.add_typer(sysctl_app, name="sysctl")
