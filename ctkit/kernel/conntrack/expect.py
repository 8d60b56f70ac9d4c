"""The expectation table: related flows a helper (ftp, sip...) is waiting for. Small: decoded generically.

Every attribute the kernel sends for an expectation is kept (ctnetlink_exp_dump_expect):
the expected tuple, its mask, the master's tuple, timeout, id, helper, zone, flags,
class, the NAT tuple and direction, and the expectfn name.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass, fields
from typing import Iterable

from ctkit.kernel import ctnetlink as nl
from ctkit.kernel.conntrack.columns import FAMILY_NAMES, PROTOCOL_NAMES, address, cstring

# enum ctattr_expect and ctattr_expect_nat (include/uapi/linux/netfilter/nfnetlink_conntrack.h)
CTA_EXPECT_MASTER, CTA_EXPECT_TUPLE, CTA_EXPECT_MASK, CTA_EXPECT_TIMEOUT, CTA_EXPECT_ID = 1, 2, 3, 4, 5
CTA_EXPECT_HELP_NAME, CTA_EXPECT_ZONE, CTA_EXPECT_FLAGS, CTA_EXPECT_CLASS = 6, 7, 8, 9
CTA_EXPECT_NAT, CTA_EXPECT_FN = 10, 11
CTA_EXPECT_NAT_DIR, CTA_EXPECT_NAT_TUPLE = 1, 2
_TUPLE_PROTO_FIELDS = {nl.CTA_PROTO_NUM: ("protonum", "B"), nl.CTA_PROTO_SRC_PORT: ("sport", ">H"),
                       nl.CTA_PROTO_DST_PORT: ("dport", ">H")}


@dataclass(frozen=True)
class Expectation:
    """A pending related flow a helper expects (e.g. an FTP data connection).

    `mask_*` say which bits of the expected tuple must match (a port mask of 0 matches
    any port); `class_` is the helper's expectation class (JSON key `class`); `flags`
    the NF_CT_EXPECT_* bits; `nat_*` where a NATed master sends the related flow.
    """

    family: str
    proto: str | None
    protonum: int | None
    src: str | None
    dst: str | None
    sport: int | None
    dport: int | None
    mask_src: str | None
    mask_dst: str | None
    mask_sport: int | None
    mask_dport: int | None
    master_protonum: int | None
    master_src: str | None
    master_dst: str | None
    master_sport: int | None
    master_dport: int | None
    timeout: int | None
    helper: str | None
    zone: int | None
    flags: int | None
    class_: int | None
    fn: str | None
    nat_dir: int | None
    nat_src: str | None
    nat_dst: str | None
    nat_sport: int | None
    nat_dport: int | None
    id: int | None

    def as_dict(self) -> dict[str, object]:
        return {f.name.rstrip("_"): getattr(self, f.name) for f in fields(self)}


def _tuple(buf: bytes | bytearray, start: int, end: int) -> dict[str, object]:
    out: dict[str, object] = {}
    for t, p, n in nl.attrs(buf, start, end):
        if t == nl.CTA_TUPLE_IP:
            for t2, p2, n2 in nl.attrs(buf, p, p + n):
                key = "src" if t2 in (nl.CTA_IP_V4_SRC, nl.CTA_IP_V6_SRC) else "dst"
                out[key] = address(bytes(buf[p2:p2 + n2]))
        elif t == nl.CTA_TUPLE_PROTO:
            for t2, p2, _n2 in nl.attrs(buf, p, p + n):
                if t2 in _TUPLE_PROTO_FIELDS:
                    key, code = _TUPLE_PROTO_FIELDS[t2]
                    out[key] = struct.unpack_from(code, buf, p2)[0]
    return out


def _nest(buf: bytes | bytearray, a: dict[int, tuple[int, int]], kind: int) -> dict[str, object]:
    return _tuple(buf, a[kind][0], sum(a[kind])) if kind in a else {}


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
            tup, mask, master = (_nest(buf, a, k) for k in (CTA_EXPECT_TUPLE, CTA_EXPECT_MASK, CTA_EXPECT_MASTER))
            nat: dict[str, object] = {}
            if CTA_EXPECT_NAT in a:
                sub = {t: (p, n) for t, p, n in nl.attrs(buf, a[CTA_EXPECT_NAT][0], sum(a[CTA_EXPECT_NAT]))}
                nat = _nest(buf, sub, CTA_EXPECT_NAT_TUPLE)
                nat["dir"] = nl.be32(buf, sub.get(CTA_EXPECT_NAT_DIR))
            helper = bytes(buf[a[CTA_EXPECT_HELP_NAME][0]:sum(a[CTA_EXPECT_HELP_NAME])]) \
                if CTA_EXPECT_HELP_NAME in a else None
            fn = bytes(buf[a[CTA_EXPECT_FN][0]:sum(a[CTA_EXPECT_FN])]) if CTA_EXPECT_FN in a else None
            zone = struct.unpack_from(">H", buf, a[CTA_EXPECT_ZONE][0])[0] if CTA_EXPECT_ZONE in a else None
            proto = tup.get("protonum")
            out.append(Expectation(
                family=FAMILY_NAMES.get(family, str(family)),
                proto=PROTOCOL_NAMES.get(proto, str(proto)) if proto is not None else None, protonum=proto,
                src=tup.get("src"), dst=tup.get("dst"), sport=tup.get("sport"), dport=tup.get("dport"),
                mask_src=mask.get("src"), mask_dst=mask.get("dst"),
                mask_sport=mask.get("sport"), mask_dport=mask.get("dport"),
                master_protonum=master.get("protonum"), master_src=master.get("src"), master_dst=master.get("dst"),
                master_sport=master.get("sport"), master_dport=master.get("dport"),
                timeout=nl.be32(buf, a.get(CTA_EXPECT_TIMEOUT)), helper=cstring(helper), zone=zone,
                flags=nl.be32(buf, a.get(CTA_EXPECT_FLAGS)), class_=nl.be32(buf, a.get(CTA_EXPECT_CLASS)),
                fn=cstring(fn), nat_dir=nat.get("dir"), nat_src=nat.get("src"), nat_dst=nat.get("dst"),
                nat_sport=nat.get("sport"), nat_dport=nat.get("dport"),
                id=nl.be32(buf, a.get(CTA_EXPECT_ID))))
    return out
