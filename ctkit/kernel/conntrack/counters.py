"""The table's counters: its size (`count`) and the per-CPU statistics (`stats`), without dumping it.

/proc/net/stat/nf_conntrack changed its columns across kernels, so the
statistics are read over ctnetlink (GET_STATS_CPU, also for the expectation
counters); the /proc file (ctkit/kernel/procfs.py) is the fallback where
ctnetlink cannot answer.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Iterable

from ctkit.errors import KernelError
from ctkit.kernel import ctnetlink as nl
from ctkit.kernel import procfs
from ctkit.kernel.netns import entered


@dataclass(frozen=True)
class Count:
    entries: int
    max_entries: int | None  # host-wide nf_conntrack_max (None on kernels before 5.x)


def count(netns: str | None = None) -> Count:
    """Entries in the namespace's table (IPCTNL_MSG_CT_GET_STATS), without dumping it."""
    with nl.open_in(netns) as sock:
        for buf, length in sock.request(nl.NFNL_SUBSYS_CTNETLINK, nl.IPCTNL_MSG_CT_GET_STATS, 0,
                                        dump=False, what="reading the conntrack count"):
            for off in nl.messages(buf, length):
                a = nl.message_attrs(buf, off)
                return Count(nl.be32(buf, a.get(1)) or 0, nl.be32(buf, a.get(2)))
    raise KernelError("the kernel sent no conntrack statistics")


STAT_FIELDS = {2: "found", 4: "invalid", 8: "insert", 9: "insert_failed", 10: "drop",
               11: "early_drop", 12: "error", 13: "search_restart", 14: "clash_resolve",
               15: "chaintoolong"}
EXP_STAT_FIELDS = {1: "expect_new", 2: "expect_create", 3: "expect_delete"}


@dataclass(frozen=True)
class Stats:
    """Per-CPU conntrack counters and their totals; `entries` is the table size (not a sum)."""

    per_cpu: tuple[tuple[int, dict[str, int]], ...]
    entries: int
    source: str  # "ctnetlink" or "procfs"
    totals: dict[str, int] = field(default_factory=dict)

    def total(self, name: str) -> int:
        return self.totals.get(name, 0)


def stats(netns: str | None = None) -> Stats:
    """Per-CPU stats from ctnetlink GET_STATS_CPU, else /proc/net/stat/nf_conntrack."""
    try:
        per_cpu = _cpu_stats(netns, nl.NFNL_SUBSYS_CTNETLINK, nl.IPCTNL_MSG_CT_GET_STATS_CPU, STAT_FIELDS)
        exp = dict(_cpu_stats(netns, nl.NFNL_SUBSYS_CTNETLINK_EXP, nl.IPCTNL_MSG_EXP_GET_STATS_CPU,
                              EXP_STAT_FIELDS))
        merged = tuple((cpu, {**values, **exp.get(cpu, {})}) for cpu, values in per_cpu)
        return _with_totals(merged, count(netns).entries, "ctnetlink")
    except KernelError:
        with entered(netns):
            parsed = procfs.read_stat()
        if parsed is None:
            raise
        return _with_totals(tuple((r.cpu, r.counters) for r in parsed.rows), parsed.entries, "procfs")


def _with_totals(per_cpu: tuple[tuple[int, dict[str, int]], ...], entries: int, source: str) -> Stats:
    totals: dict[str, int] = {}
    for _, values in per_cpu:
        for k, v in values.items():
            totals[k] = totals.get(k, 0) + v
    return Stats(per_cpu, entries, source, totals)


def _cpu_stats(netns: str | None, subsys: int, msg: int, names: dict[int, str]
               ) -> list[tuple[int, dict[str, int]]]:
    with nl.open_in(netns) as sock:
        return parse_cpu_stats(sock.request(subsys, msg, 0, what="reading conntrack statistics"), names)


def parse_cpu_stats(chunks: Iterable[tuple[bytes | bytearray, int]], names: dict[int, str] = STAT_FIELDS
                    ) -> list[tuple[int, dict[str, int]]]:
    """(cpu, counters) per GET_STATS_CPU message; the CPU number is the nfgenmsg res_id."""
    out = []
    for buf, length in chunks:
        for off in nl.messages(buf, length):
            cpu = struct.unpack_from(">H", buf, off + 18)[0]
            a = nl.message_attrs(buf, off)
            out.append((cpu, {name: nl.be32(buf, a.get(t)) or 0 for t, name in names.items()}))
    return out
