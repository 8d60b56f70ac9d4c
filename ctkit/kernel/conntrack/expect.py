"""The expectation table: related flows a helper (ftp, sip...) is waiting for. Small: decoded generically."""
from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Iterable

from ctkit.kernel import ctnetlink as nl
from ctkit.kernel.conntrack.columns import FAMILY_NAMES, PROTOCOL_NAMES, address, cstring


@dataclass(frozen=True)
class Expectation:
    """A pending related flow a helper expects (e.g. an FTP data connection)."""

    family: str
    proto: str | None
    src: str | None
    dst: str | None
    sport: int | None
    dport: int | None
    master_src: str | None
    master_dst: str | None
    master_sport: int | None
    master_dport: int | None
    timeout: int | None
    helper: str | None
    zone: int | None
    flags: int | None
    klass: int | None
    id: int | None

    def as_dict(self) -> dict[str, object]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def _tuple(buf: bytearray, start: int, end: int) -> dict[str, object]:
    out: dict[str, object] = {}
    for t, p, n in nl.attrs(buf, start, end):
        if t == nl.CTA_TUPLE_IP:
            for t2, p2, n2 in nl.attrs(buf, p, p + n):
                key = "src" if t2 in (1, 3) else "dst"
                out[key] = address(bytes(buf[p2:p2 + n2]))
        elif t == nl.CTA_TUPLE_PROTO:
            for t2, p2, _n2 in nl.attrs(buf, p, p + n):
                if t2 == 1:
                    out["proto"] = buf[p2]
                elif t2 in (2, 3):
                    out["sport" if t2 == 2 else "dport"] = struct.unpack_from(">H", buf, p2)[0]
    return out


def expectations(netns: str | None = None) -> list[Expectation]:
    """The expectation table (IPCTNL_MSG_EXP_GET dump); small, decoded generically."""
    with nl.open_in(netns) as sock:
        return parse_expectations(sock.request(nl.NFNL_SUBSYS_CTNETLINK_EXP, nl.IPCTNL_MSG_EXP_GET, 0,
                                               what="reading the expectation table"))


def parse_expectations(chunks: Iterable[tuple[bytes | bytearray, int]]) -> list[Expectation]:
    out = []
    for buf, length in chunks:
        for off in nl.messages(buf, length):
            family = buf[off + 16]
            a = nl.message_attrs(buf, off)
            tup = _tuple(buf, a[2][0], sum(a[2])) if 2 in a else {}
            master = _tuple(buf, a[1][0], sum(a[1])) if 1 in a else {}
            helper = bytes(buf[a[6][0]:sum(a[6])]) if 6 in a else None
            zone = struct.unpack_from(">H", buf, a[7][0])[0] if 7 in a else None
            proto = tup.get("proto")
            out.append(Expectation(
                family=FAMILY_NAMES.get(family, str(family)),
                proto=PROTOCOL_NAMES.get(proto, str(proto)) if proto is not None else None,
                src=tup.get("src"), dst=tup.get("dst"), sport=tup.get("sport"), dport=tup.get("dport"),
                master_src=master.get("src"), master_dst=master.get("dst"),
                master_sport=master.get("sport"), master_dport=master.get("dport"),
                timeout=nl.be32(buf, a.get(4)), helper=cstring(helper), zone=zone,
                flags=nl.be32(buf, a.get(8)), klass=nl.be32(buf, a.get(9)), id=nl.be32(buf, a.get(5))))
    return out
