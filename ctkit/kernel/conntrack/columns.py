"""The fields of a conntrack entry: the kernel's vocabulary, and how raw values are shown.

A `Column` is what a user asks for (`src`, `state`, `labels`...): which raw
ctnetlink fields (ctkit/kernel/ctnetlink.py RAW_FIELDS) it reads and how it
converts them to a display value. `zone` (a zone of both directions) is shown
as 0 when the entry has none; `orig_zone` / `reply_zone` (a zone of one
direction: conntrack's zone-orig / zone-reply) are null when absent; labels are
the numbers of the bits that are set. The default columns carry every field.
"""
from __future__ import annotations

import socket
from dataclasses import dataclass
from typing import Callable

from ctkit.errors import UsageError

AF_INET, AF_INET6 = socket.AF_INET, socket.AF_INET6
FAMILIES = {"ipv4": AF_INET, "ipv6": AF_INET6}
FAMILY_NAMES = {AF_INET: "ipv4", AF_INET6: "ipv6"}
PROTOCOLS = {"icmp": 1, "igmp": 2, "tcp": 6, "udp": 17, "dccp": 33, "gre": 47, "icmpv6": 58,
             "sctp": 132, "udplite": 136}
PROTOCOL_NAMES = {v: k for k, v in PROTOCOLS.items()}
TCP_STATES = ("NONE", "SYN_SENT", "SYN_RECV", "ESTABLISHED", "FIN_WAIT", "CLOSE_WAIT", "LAST_ACK",
              "TIME_WAIT", "CLOSE", "SYN_SENT2")
SCTP_STATES = ("NONE", "CLOSED", "COOKIE_WAIT", "COOKIE_ECHOED", "ESTABLISHED", "SHUTDOWN_SENT",
               "SHUTDOWN_RECD", "SHUTDOWN_ACK_SENT", "HEARTBEAT_SENT", "HEARTBEAT_ACKED")
DCCP_STATES = ("NONE", "REQUEST", "RESPOND", "PARTOPEN", "OPEN", "CLOSEREQ", "CLOSING", "TIMEWAIT",
               "IGNORE", "INVALID")
# enum ip_conntrack_status (include/uapi/linux/netfilter/nf_conntrack_common.h)
STATUS_BITS = ("EXPECTED", "SEEN_REPLY", "ASSURED", "CONFIRMED", "SRC_NAT", "DST_NAT", "SEQ_ADJUST",
               "SRC_NAT_DONE", "DST_NAT_DONE", "DYING", "FIXED_TIMEOUT", "TEMPLATE", "NAT_CLASH",
               "HELPER", "OFFLOAD", "HW_OFFLOAD")
STATUS_VALUES = {name: 1 << bit for bit, name in enumerate(STATUS_BITS)}


# ------------------------------------------------------------- converters

def address(raw: bytes | None) -> str | None:
    if raw is None:
        return None
    return socket.inet_ntop(AF_INET if len(raw) == 4 else AF_INET6, raw)


def cstring(raw: bytes | None) -> str | None:
    return None if raw is None else raw.split(b"\0", 1)[0].decode("utf-8", "replace")


def _labels(raw: bytes | None) -> list[int] | None:
    if raw is None:
        return None
    bits = int.from_bytes(raw, "little")  # the kernel stores labels as a host-order bitmap of longs
    return [i for i in range(len(raw) * 8) if bits >> i & 1]


def _status(raw: int | None) -> list[str] | None:
    if raw is None:
        return None
    return [name for bit, name in enumerate(STATUS_BITS) if raw >> bit & 1]


def _state(tcp: int | None, sctp: int | None, dccp: int | None) -> str | None:
    for value, names in ((tcp, TCP_STATES), (sctp, SCTP_STATES), (dccp, DCCP_STATES)):
        if value is not None:
            return names[value] if value < len(names) else str(value)
    return None


def same(value):
    return value


class Memo(dict):
    """A converter's results for the values seen so far, at most `limit` of them: `memo[raw]`.

    A dict, so that a value seen before costs one lookup in C (a table's addresses, states and
    status words repeat from entry to entry); a new one is converted by `convert` and kept while
    there is room. One per formatter: no global state.
    """

    def __init__(self, convert: Callable[[object], object], limit: int = 16384) -> None:
        super().__init__()
        self.convert, self.limit = convert, limit

    def __missing__(self, raw: object) -> object:
        value = self.convert(raw)
        if len(self) < self.limit:
            self[raw] = value
        return value


# ---------------------------------------------------------------- columns

@dataclass(frozen=True)
class Column:
    """A user-facing field: which raw netlink fields it reads and how it converts them."""

    name: str
    raws: tuple[str, ...]
    convert: Callable[..., object]
    help: str = ""


def _col(name: str, raw: str | None = None, convert: Callable = same, help: str = "") -> Column:
    return Column(name, (raw or name,), convert, help)


COLUMNS: dict[str, Column] = {c.name: c for c in [
    _col("id", help="conntrack id"),
    _col("family", "family", lambda v: FAMILY_NAMES.get(v, str(v))),
    _col("proto", "proto", lambda v: PROTOCOL_NAMES.get(v, str(v)) if v is not None else None),
    _col("protonum", "proto"),
    Column("state", ("tcp_state", "sctp_state", "dccp_state"), _state, "TCP/SCTP/DCCP state"),
    _col("timeout"),
    _col("src", convert=address), _col("dst", convert=address), _col("sport"), _col("dport"),
    _col("icmp_type"), _col("icmp_code"), _col("icmp_id"),
    _col("reply_src", convert=address), _col("reply_dst", convert=address),
    _col("reply_sport"), _col("reply_dport"),
    _col("reply_icmp_type"), _col("reply_icmp_code"), _col("reply_icmp_id"),
    _col("status", "status", _status), _col("status_bits", "status"),
    _col("mark", convert=lambda v: v or 0), _col("zone", convert=lambda v: v or 0),
    _col("orig_zone", "tuple_zone"), _col("reply_zone", "reply_tuple_zone"),
    _col("helper", convert=cstring), _col("secctx", convert=cstring),
    _col("orig_packets"), _col("orig_bytes"), _col("reply_packets"), _col("reply_bytes"),
    _col("start", help="ns since the epoch (nf_conntrack_timestamp)"), _col("stop"),
    _col("labels", convert=_labels), _col("use"),
    _col("master_src", convert=address), _col("master_dst", convert=address),
    _col("master_sport"), _col("master_dport"),
]}
DEFAULT_COLUMNS = ("id", "family", "proto", "protonum", "state", "timeout", "src", "dst", "sport",
                   "dport", "icmp_type", "icmp_code", "icmp_id", "reply_src", "reply_dst",
                   "reply_sport", "reply_dport", "reply_icmp_type", "reply_icmp_code",
                   "reply_icmp_id", "status", "mark", "zone", "orig_zone", "reply_zone", "helper",
                   "orig_packets", "orig_bytes", "reply_packets", "reply_bytes", "start", "stop", "labels",
                   "secctx", "use", "master_src", "master_dst", "master_sport", "master_dport")


def column(name: str) -> Column:
    try:
        return COLUMNS[name]
    except KeyError:
        raise UsageError(f"unknown conntrack field {name!r} (known: {', '.join(COLUMNS)})") from None
