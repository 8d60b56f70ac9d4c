"""Reading the conntrack table: one streaming ctnetlink dump, decoded chunk by chunk.

Memory does not grow with the table: entries are decoded from one reused
receive buffer by ctkit/kernel/ctnetlink.py's `Decoder` (which says why ctkit
decodes dumps itself), and values are converted only when read.
"""
from __future__ import annotations

import os
from collections import Counter
from typing import Iterable, Iterator, Sequence

from ctkit.kernel import ctnetlink as nl
from ctkit.kernel.conntrack.columns import DEFAULT_COLUMNS
from ctkit.kernel.conntrack.filters import Filter
from ctkit.kernel.conntrack.layout import Entry, Layout


def kernel_version() -> tuple[int, int]:
    release = os.uname().release
    try:
        major, minor = release.split(".")[:2]
        return int(major), int("".join(ch for ch in minor if ch.isdigit()) or 0)
    except ValueError:
        return (0, 0)


def raw_rows(netns: str | None, raws: Sequence[str], flt: Filter | None = None,
             prefetch: bool = True) -> Iterator[tuple]:
    """Raw value tuples of `raws` for every entry that passes `flt` (the hot path)."""
    flt = flt or Filter()
    payload = flt.request(kernel_version())
    with nl.open_in(netns) as sock:
        chunks = sock.request(nl.NFNL_SUBSYS_CTNETLINK, nl.IPCTNL_MSG_CT_GET, flt.family or 0, payload,
                              what="reading the conntrack table", prefetch=prefetch)
        try:
            yield from filtered(chunks, raws, flt)
        finally:
            chunks.close()


def filtered(chunks: Iterable[tuple[bytes | bytearray, int]], raws: Sequence[str],
             flt: Filter | None = None) -> Iterator[tuple]:
    """Decode ctnetlink chunks (buffer, length) into raw tuples of `raws`, checking `flt`."""
    checks = (flt or Filter()).checks()
    names = list(raws)
    for raw, _ in checks:
        if raw not in names:
            names.append(raw)
    decoder = nl.Decoder(names)
    pos = {n: i for i, n in enumerate(names)}
    tests = [(pos[raw], test) for raw, test in checks]
    width = len(raws)
    for buf, length in chunks:
        if not tests:
            yield from decoder.rows(buf, length)
            continue
        for row in decoder.rows(buf, length):
            if all(test(row[i]) for i, test in tests):
                yield row[:width] if len(row) > width else row


def decode_dump(data: bytes, flt: Filter | None = None,
                columns: Sequence[str] = DEFAULT_COLUMNS) -> Iterator[Entry]:
    """Entries of a saved ctnetlink dump (messages back to back, as the kernel sent them)."""
    layout = Layout.of(columns)
    for row in filtered([(data, len(data))], layout.raws, flt):
        yield Entry(row, layout)


def entries(netns: str | None = None, flt: Filter | None = None,
            columns: Sequence[str] = DEFAULT_COLUMNS) -> Iterator[Entry]:
    """Every conntrack entry of `netns` passing `flt`, with lazily converted `columns`."""
    layout = Layout.of(columns)
    for row in raw_rows(netns, layout.raws, flt):
        yield Entry(row, layout)


def rows(netns: str | None = None, flt: Filter | None = None,
         columns: Sequence[str] = DEFAULT_COLUMNS) -> Iterator[tuple]:
    """Display-value tuples of `columns` for every entry passing `flt`."""
    layout = Layout.of(columns)
    convert = layout.convert
    for row in raw_rows(netns, layout.raws, flt):
        yield convert(row)


def json_rows(netns: str | None = None, flt: Filter | None = None,
              columns: Sequence[str] = DEFAULT_COLUMNS) -> Iterator[str]:
    """One compact JSON object per entry passing `flt` (the `ct list --json` path)."""
    layout = Layout.of(columns)
    to_json = layout.to_json
    for row in raw_rows(netns, layout.raws, flt):
        yield to_json(row)


def summary(netns: str | None, by: Sequence[str], flt: Filter | None = None) -> Counter:
    """Entry counts keyed by the display values of `by`, in one pass (grouped on raw values)."""
    layout = Layout.of(by)
    raw_counts: Counter = Counter()
    if len(layout.raws) == 1:
        for row in raw_rows(netns, layout.raws, flt):
            raw_counts[row] += 1
    else:
        raw_counts.update(raw_rows(netns, layout.raws, flt))
    out: Counter = Counter()
    for row, n in raw_counts.items():
        out[layout.convert(row)] += n
    return out
