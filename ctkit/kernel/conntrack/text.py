"""conntrack(8)'s text: entries as `conntrack -L` / `-E` print them, expectations as `conntrack -L expect`.

The layout is libnetfilter_conntrack's (1.0.9, the library conntrack-tools 1.4.7 prints
with), word for word, checked against conntrack's own output on the same table
(integration/test_ct_fidelity.py, tests/test_ctnetlink_decode.py):
- the protocol is named only for the protocols conntrack knows; any other prints
  `unknown` and its number;
- what follows the addresses depends on the protocol number, not on what the kernel
  sent: ports for tcp/udp/udplite/sctp/dccp (0 when absent), GRE keys in hex, ICMP
  type/code/id;
- a zone of one direction prints after that direction's tuple (`zone-orig=`,
  `zone-reply=`); a zone of both after the mark (`zone=`);
- connlabels are not printed: `conntrack -L` names them only with `-o labels`
  through /etc/xtables/connlabel.conf. Their bits are in the JSON (`labels`).
"""
from __future__ import annotations

import time

from ctkit.kernel.conntrack.columns import STATUS_VALUES

#: the columns conntrack_line reads, in this order (a `Layout` of them converts a raw row); labels are
#: read for callers that look at them, not printed
TEXT_COLUMNS = ("proto", "protonum", "timeout", "state", "src", "dst", "sport", "dport", "icmp_type",
                "icmp_code", "icmp_id", "orig_packets", "orig_bytes", "status_bits", "reply_src",
                "reply_dst", "reply_sport", "reply_dport", "reply_icmp_type", "reply_icmp_code",
                "reply_icmp_id", "reply_packets", "reply_bytes", "mark", "secctx", "zone", "helper",
                "labels", "use", "start", "orig_zone", "reply_zone")
#: events also read the stop time (a destroyed entry's delta-time runs to it)
EVENT_TEXT_COLUMNS = TEXT_COLUMNS + ("stop",)

# libnetfilter_conntrack's proto2str: every other protocol prints as "unknown"
CONNTRACK_PROTOCOLS = {6: "tcp", 17: "udp", 136: "udplite", 1: "icmp", 58: "icmpv6", 132: "sctp", 47: "gre",
                       33: "dccp"}
PORT_PROTOCOLS = frozenset({6, 17, 136, 132, 33})
GRE, ICMP, ICMPV6 = 47, 1, 58
_SEEN_REPLY, _ASSURED = STATUS_VALUES["SEEN_REPLY"], STATUS_VALUES["ASSURED"]
_OFFLOAD, _HW_OFFLOAD = STATUS_VALUES["OFFLOAD"], STATUS_VALUES["HW_OFFLOAD"]
# enum ip_conntrack_expect_flags (include/uapi/linux/netfilter/nf_conntrack_common.h)
EXPECT_FLAGS = ((1, "PERMANENT"), (2, "INACTIVE"), (4, "USERSPACE"))


def protocol_words(protonum: int) -> str:
    """`tcp      6`: conntrack's name (or `unknown`) padded to 8, and the number."""
    return f"{CONNTRACK_PROTOCOLS.get(protonum, 'unknown'):<8} {protonum}"


def l4_words(protonum: int | None, sport, dport, itype=None, icode=None, iid=None) -> str | None:
    """What conntrack prints after a tuple's addresses, chosen by the protocol number."""
    if protonum in PORT_PROTOCOLS:
        return f"sport={sport or 0} dport={dport or 0}"
    if protonum == GRE:
        return f"srckey={sport or 0:#x} dstkey={dport or 0:#x}"
    if protonum in (ICMP, ICMPV6):
        return f"type={itype or 0} code={icode or 0} id={iid or 0}"
    return None


def conntrack_line(v: tuple, now: float | None = None) -> str:
    """One entry in the layout `conntrack -L` prints (values in TEXT_COLUMNS order)."""
    return " ".join(conntrack_parts(v, now=now))


def conntrack_parts(v: tuple, event: bool = False, raw_mark: int | None = None, now: float | None = None
                    ) -> list[str]:
    """The words of conntrack_line. An `event` (values in EVENT_TEXT_COLUMNS order) shows only what its
    message carried: no timeout in some destroys, a mark only when set or changed (`raw_mark`, None when
    the message had none), no use count; a destroyed entry's delta-time runs to its stop time."""
    if event:
        stop, mark = v[len(TEXT_COLUMNS)], raw_mark
        v = v[:len(TEXT_COLUMNS)]
    else:
        stop = None
    (_proto, protonum, timeout, state, src, dst, sport, dport, itype, icode, iid, opk, oby, status,
     rsrc, rdst, rsport, rdport, ritype, ricode, riid, rpk, rby, mark_shown, secctx, zone, helper, _labels,
     use, start, orig_zone, reply_zone) = v
    if not event:
        mark = mark_shown
    status = status or 0
    head = protocol_words(protonum)
    parts = [head if event and timeout is None else f"{head} {timeout}"]
    if state is not None:
        parts.append(state)
    parts.append(f"src={src} dst={dst}")
    words = l4_words(protonum, sport, dport, itype, icode, iid)
    if words:
        parts.append(words)
    if orig_zone is not None:
        parts.append(f"zone-orig={orig_zone}")
    if opk is not None:
        parts.append(f"packets={opk} bytes={oby}")
    if not status & _SEEN_REPLY:
        parts.append("[UNREPLIED]")
    parts.append(f"src={rsrc} dst={rdst}")
    words = l4_words(protonum, rsport, rdport, ritype, ricode, riid)
    if words:
        parts.append(words)
    if reply_zone is not None:
        parts.append(f"zone-reply={reply_zone}")
    if rpk is not None:
        parts.append(f"packets={rpk} bytes={rby}")
    if status & _OFFLOAD:
        parts.append("[HW_OFFLOAD]" if status & _HW_OFFLOAD else "[OFFLOAD]")
    if status & _ASSURED:
        parts.append("[ASSURED]")
    if not event or mark is not None:
        parts.append(f"mark={mark or 0}")
    if secctx is not None:
        parts.append(f"secctx={secctx}")
    if zone:
        parts.append(f"zone={zone}")
    if start is not None:
        if stop:
            parts.append(f"delta-time={max(0, stop // 10**9 - start // 10**9)}")
        else:
            parts.append(f"delta-time={max(0, int((time.time() if now is None else now) - start / 1e9))}")
    if helper:
        parts.append(f"helper={helper}")
    if not event or use is not None:
        parts.append(f"use={use}")
    return parts


def expect_line(e) -> str:
    """One expectation (a conntrack.expect.Expectation) as `conntrack -L expect` prints it."""
    out = "" if e.timeout is None else f"{e.timeout} "
    out += f"proto={e.protonum} src={e.src} dst={e.dst} "
    for words in (l4_words(e.protonum, e.sport, e.dport),):
        out += f"{words} " if words else ""
    out += f"mask-src={e.mask_src} mask-dst={e.mask_dst} "
    words = l4_words(e.protonum, e.mask_sport, e.mask_dport)
    out += f"{words} " if words else ""
    out += f"master-src={e.master_src} master-dst={e.master_dst} "
    words = l4_words(e.master_protonum, e.master_sport, e.master_dport)
    out += f"{words} " if words else ""
    if e.zone is not None:
        out += f"zone={e.zone} "
    flags = e.flags or 0
    out += ",".join(name for bit, name in EXPECT_FLAGS if flags & bit)
    if flags:
        out += " "
    if e.class_ is not None:
        out += f"class={e.class_} "
    if e.helper is not None:
        out += f"helper={e.helper}"
    return out[:-1] if out.endswith(" ") else out
