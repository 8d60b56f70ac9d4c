"""Deleting conntrack entries: exactly the ones given, matched by conntrack id and re-checked by the kernel."""
from __future__ import annotations

import errno
from typing import Iterable, Mapping

from ctkit.errors import KernelError, UsageError
from ctkit.kernel import ctnetlink as nl
from ctkit.kernel.conntrack.columns import AF_INET
from ctkit.kernel.conntrack.dump import raw_rows
from ctkit.kernel.conntrack.layout import Entry, Layout

_DELETE_RAWS = ("id", "family", "proto", "src", "dst", "sport", "dport", "icmp_type", "icmp_code", "icmp_id",
                "zone")


def delete(netns: str | None, targets: Iterable[Mapping[str, object] | Entry]) -> int:
    """Delete exactly these entries (matched by conntrack id); returns how many the kernel removed.

    Each target needs its `id`; other fields it carries (src, dport...) must
    still match, so an id reused by a newer flow is left alone. The kernel
    re-checks the id (CTA_ID) at deletion time. Entries already gone are not
    counted.
    """
    wanted: dict[int, Mapping[str, object]] = {}
    for t in targets:
        d = t.as_dict() if isinstance(t, Entry) else t
        if d.get("id") is None:
            raise UsageError("an entry to delete needs its conntrack id")
        wanted[int(d["id"])] = d  # type: ignore[arg-type]
    if not wanted:
        return 0
    layout = Layout.of(_DELETE_RAWS)
    found = []
    for row in raw_rows(netns, layout.raws, prefetch=False):
        if row[0] in wanted:
            shown = dict(zip(_DELETE_RAWS, layout.convert(row), strict=True))
            given = wanted[row[0]]
            if all(given.get(k) is None or given.get(k) == shown[k] for k in _DELETE_RAWS):
                found.append(row)
    removed = 0
    with nl.open_in(netns) as sock:
        for row in found:
            try:
                for _ in sock.request(nl.NFNL_SUBSYS_CTNETLINK, nl.IPCTNL_MSG_CT_DELETE, row[1],
                                      _delete_payload(row), dump=False, what="deleting a conntrack entry"):
                    pass
                removed += 1
            except KernelError as exc:
                if getattr(exc, "errno", None) != errno.ENOENT:
                    raise
    return removed


def _delete_payload(row: tuple) -> bytes:
    ident, family, proto, src, dst, sport, dport, itype, icode, iid, zone = row
    v4 = family == AF_INET
    ip = nl.nest(nl.CTA_TUPLE_IP, nl.attr(nl.CTA_IP_V4_SRC if v4 else nl.CTA_IP_V6_SRC, src),
                 nl.attr(nl.CTA_IP_V4_DST if v4 else nl.CTA_IP_V6_DST, dst))
    parts = [nl.u8(nl.CTA_PROTO_NUM, proto)]
    if sport is not None:
        parts += [nl.u16(nl.CTA_PROTO_SRC_PORT, sport), nl.u16(nl.CTA_PROTO_DST_PORT, dport)]
    elif itype is not None:
        base = 4 if v4 else 7  # CTA_PROTO_ICMP_ID / CTA_PROTO_ICMPV6_ID, then TYPE, CODE
        parts += [nl.u16(base, iid or 0), nl.u8(base + 1, itype), nl.u8(base + 2, icode or 0)]
    out = nl.nest(nl.CTA_TUPLE_ORIG, ip, nl.nest(nl.CTA_TUPLE_PROTO, *parts)) + nl.u32(nl.CTA_ID, ident)
    if zone:
        out += nl.u16(nl.CTA_ZONE, zone)
    return out
