"""`ctkit ct ...` and `ctkit sysctl ...`: read the connection tracker and its settings.

Thin: parsing options into a `conntrack.Filter`, calling ctkit.kernel, printing.
Output streams: `ct list` writes each entry as it is decoded.
"""
from __future__ import annotations

import sys
import time
from typing import Iterable, Optional

import typer

from ctkit.cli.common import JsonOption, NetnsOption, handle_errors, print_json
from ctkit.errors import UsageError
from ctkit.kernel import conntrack as ct
from ctkit.kernel import sysctl
from ctkit.kernel.netns import entered

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

TEXT_COLUMNS = ("proto", "protonum", "timeout", "state", "src", "dst", "sport", "dport", "icmp_type",
                "icmp_code", "icmp_id", "orig_packets", "orig_bytes", "status_bits", "reply_src",
                "reply_dst", "reply_sport", "reply_dport", "reply_icmp_type", "reply_icmp_code",
                "reply_icmp_id", "reply_packets", "reply_bytes", "mark", "secctx", "zone", "helper",
                "labels", "use", "start")
_SEEN_REPLY, _ASSURED = ct.STATUS_VALUES["SEEN_REPLY"], ct.STATUS_VALUES["ASSURED"]
_OFFLOAD, _HW_OFFLOAD = ct.STATUS_VALUES["OFFLOAD"], ct.STATUS_VALUES["HW_OFFLOAD"]


def _l4(parts: list[str], sport, dport, itype, icode, iid) -> None:
    if sport is not None:
        parts.append(f"sport={sport} dport={dport}")
    elif itype is not None:
        parts.append(f"type={itype} code={icode} id={iid}")


def conntrack_line(v: tuple) -> str:
    """One entry in the layout `conntrack -L` prints (values in TEXT_COLUMNS order)."""
    (proto, protonum, timeout, state, src, dst, sport, dport, itype, icode, iid, opk, oby, status,
     rsrc, rdst, rsport, rdport, ritype, ricode, riid, rpk, rby, mark, secctx, zone, helper, labels,
     use, start) = v
    status = status or 0
    parts = [f"{proto:<8} {protonum} {timeout}"]
    if state is not None:
        parts.append(state)
    parts.append(f"src={src} dst={dst}")
    _l4(parts, sport, dport, itype, icode, iid)
    if opk is not None:
        parts.append(f"packets={opk} bytes={oby}")
    if not status & _SEEN_REPLY:
        parts.append("[UNREPLIED]")
    parts.append(f"src={rsrc} dst={rdst}")
    _l4(parts, rsport, rdport, ritype, ricode, riid)
    if rpk is not None:
        parts.append(f"packets={rpk} bytes={rby}")
    if status & _OFFLOAD:
        parts.append("[HW_OFFLOAD]" if status & _HW_OFFLOAD else "[OFFLOAD]")
    if status & _ASSURED:
        parts.append("[ASSURED]")
    parts.append(f"mark={mark or 0}")
    if secctx is not None:
        parts.append(f"secctx={secctx}")
    if zone:
        parts.append(f"zone={zone}")
    if start is not None:
        parts.append(f"delta-time={max(0, int(time.time() - start / 1e9))}")
    if helper:
        parts.append(f"helper={helper}")
    if labels:
        parts.append("labels=" + ",".join(str(b) for b in labels))
    parts.append(f"use={use}")
    return " ".join(parts)


def _write_lines(lines: Iterable[str]) -> int:
    out = sys.stdout
    n = 0
    batch: list[str] = []
    for line in lines:
        batch.append(line)
        n += 1
        if len(batch) >= 512:
            out.write("\n".join(batch) + "\n")
            batch.clear()
    if batch:
        out.write("\n".join(batch) + "\n")
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
        _write_lines(map(conntrack_line, ct.rows(netns, flt, TEXT_COLUMNS)))
        return
    names = tuple(f.strip() for f in fields.split(",")) if fields else ct.DEFAULT_COLUMNS
    for name in names:
        ct.column(name)
    objects = ct.json_rows(netns, flt, names)
    if fmt == "jsonl":
        _write_lines(objects)
        return
    sys.stdout.write("[")
    first = True
    out = sys.stdout
    batch: list[str] = []
    for obj in objects:
        batch.append(obj)
        if len(batch) >= 512:
            out.write(("\n" if first else ",\n") + ",\n".join(batch))
            first = False
            batch.clear()
    if batch:
        out.write(("\n" if first else ",\n") + ",\n".join(batch))
    out.write("\n]\n")


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
        ports = f" sport={e.sport} dport={e.dport}" if e.sport is not None else ""
        mports = f" sport={e.master_sport} dport={e.master_dport}" if e.master_sport is not None else ""
        print(f"{e.timeout} proto={e.proto} src={e.src} dst={e.dst}{ports} "
              f"master-src={e.master_src} master-dst={e.master_dst}{mports} helper={e.helper}")
    print(f"{len(exps)} expectations", file=sys.stderr)


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
        changes = sysctl.plan(pairs)  # every key checked before any is written
        after = sysctl.apply_plan(changes)  # all or nothing: a failed write restores the earlier ones
    for value in after:
        print(f"net.netfilter.{value.name} = {value.value}")
