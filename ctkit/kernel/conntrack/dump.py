"""Reading the conntrack table: one streaming ctnetlink dump, decoded chunk by chunk.

Memory does not grow with the table: entries are decoded from one reused
receive buffer by ctkit/kernel/ctnetlink.py's `Decoder` (which says why ctkit
decodes dumps itself), and values are converted only when read.

Two ways through: `raw_rows` hands out raw tuples that callers convert (`rows`, `entries`,
`summary`); `formatted` gives the decoder a per-shape formatter (text.LineFormat,
layout.JsonFormat) so that an entry goes from its bytes to its text in one step (`lines`,
`json_rows`: what `ct list` prints, the same text as the first way).
"""
from __future__ import annotations

import contextlib
import os
from collections import Counter
from typing import Callable, Iterable, Iterator, Sequence

from ctkit.kernel import ctnetlink as nl
from ctkit.kernel.conntrack.columns import DEFAULT_COLUMNS
from ctkit.kernel.conntrack.filters import Filter
from ctkit.kernel.conntrack.layout import Entry, JsonFormat, Layout
from ctkit.kernel.conntrack.text import LineFormat


def kernel_version() -> tuple[int, int]:
    release = os.uname().release
    try:
        major, minor = release.split(".")[:2]
        return int(major), int("".join(ch for ch in minor if ch.isdigit()) or 0)
    except ValueError:
        return (0, 0)


@contextlib.contextmanager
def _dump(netns: str | None, flt: Filter, prefetch: bool) -> Iterator[Iterable[tuple[bytes | bytearray, int]]]:
    """The chunks (buffer, length) of one conntrack dump of `netns` asked with `flt`'s kernel-side filter."""
    payload = flt.request(kernel_version())
    with nl.open_in(netns) as sock:
        chunks = sock.request(nl.NFNL_SUBSYS_CTNETLINK, nl.IPCTNL_MSG_CT_GET, flt.family or 0, payload,
                              what="reading the conntrack table", prefetch=prefetch)
        try:
            yield chunks
        finally:
            chunks.close()


def raw_rows(netns: str | None, raws: Sequence[str], flt: Filter | None = None,
             prefetch: bool = True) -> Iterator[tuple]:
    """Raw value tuples of `raws` for every entry that passes `flt` (the hot path)."""
    flt = flt or Filter()
    with _dump(netns, flt, prefetch) as chunks:
        yield from filtered(chunks, raws, flt)


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


def formatted(netns: str | None, flt: Filter | None, make: Callable[[nl.ShapeFields], Callable[[tuple], object]],
              raws: Sequence[str], keys: Sequence[str] = (), prefetch: bool = True) -> Iterator[list]:
    """The dump formatted chunk by chunk: per chunk, the list of what `make`'s per-shape functions give for
    each entry passing `flt` (`make` is a `Decoder` finish factory reading `raws`, e.g. text.LineFormat)."""
    flt = flt or Filter()
    with _dump(netns, flt, prefetch) as chunks:
        yield from formatted_chunks(chunks, make, raws, keys, flt)


def formatted_chunks(chunks: Iterable[tuple[bytes | bytearray, int]],
                     make: Callable[[nl.ShapeFields], Callable[[tuple], object]], raws: Sequence[str],
                     keys: Sequence[str] = (), flt: Filter | None = None) -> Iterator[list]:
    """`formatted` over given chunks (buffer, length): a saved dump, or the socket's."""
    checks = (flt or Filter()).checks()
    names = list(raws) + [raw for raw, _ in checks if raw not in raws]
    if not checks:
        decoder = nl.Decoder(names, keys, make)
        for buf, length in chunks:
            yield list(decoder.rows(buf, length))
        return

    def checked(fields: nl.ShapeFields) -> Callable[[tuple], object]:
        out = make(fields)
        tests = [(fields.at.get(raw), test) for raw, test in checks]  # None: the shape lacks it
        return lambda v: out(v) if all(test(None if i is None else v[i]) for i, test in tests) else None

    decoder = nl.Decoder(names, keys, checked)
    for buf, length in chunks:
        yield [x for x in decoder.rows(buf, length) if x is not None]


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
    """One compact JSON object per entry passing `flt` (the `ct list --json` path): Layout.to_json's text,
    made by layout.JsonFormat's per-shape templates."""
    make = JsonFormat(columns)
    for chunk in formatted(netns, flt, make, make.raws, make.keys):
        yield from chunk


def lines(netns: str | None = None, flt: Filter | None = None) -> Iterator[str]:
    """Every entry passing `flt` as the line `conntrack -L` prints (text.conntrack_line's text, made by
    text.LineFormat's per-shape templates): what `ct list` prints."""
    make = LineFormat()
    for chunk in formatted(netns, flt, make, make.raws, make.keys):
        yield from chunk


def summary(netns: str | None, by: Sequence[str], flt: Filter | None = None) -> Counter:
    """Entry counts keyed by the display values of `by`, in one pass (grouped on raw values, a chunk at a time)."""
    layout = Layout.of(by)
    raw_counts: Counter = Counter()
    for chunk in formatted(netns, flt, nl.reorder(layout.raws), layout.raws):
        raw_counts.update(chunk)
    out: Counter = Counter()
    for row, n in raw_counts.items():
        out[layout.convert(row)] += n
    return out
