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

`conntrack_line` is the reference, one entry at a time. `LineFormat` is the same text for a
whole dump, the way `ct list` prints it: compiled once per shape of the decoder (entries with
the same attributes and protocol number) into one %-template whose words are fixed and whose
holes are filled straight from the raw values; tests/test_ct_fast_paths.py checks that it
prints what `conntrack_line` prints.
"""
from __future__ import annotations

import time
from typing import Callable

from ctkit.kernel import ctnetlink as nl
from ctkit.kernel.conntrack.columns import DCCP_STATES, SCTP_STATES, STATUS_VALUES, TCP_STATES, Memo, address, cstring
from ctkit.kernel.conntrack.layout import Layout

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


# ------------------------------------------------- the same text, compiled per shape

_STATE_TABLES = {raw: tuple(names[k] if k < len(names) else str(k) for k in range(256))
                 for raw, names in (("tcp_state", TCP_STATES), ("sctp_state", SCTP_STATES),
                                    ("dccp_state", DCCP_STATES))}  # the `state` column's rule, as a table
_FLAG_MASK = _OFFLOAD | _HW_OFFLOAD | _ASSURED


def _flag_words(status: int) -> str:
    """The status words after the reply tuple (conntrack_parts' [OFFLOAD]/[HW_OFFLOAD] and [ASSURED])."""
    words = ""
    if status & _OFFLOAD:
        words += " [HW_OFFLOAD]" if status & _HW_OFFLOAD else " [OFFLOAD]"
    if status & _ASSURED:
        words += " [ASSURED]"
    return words


class _Template:
    """A %-template and the expressions that fill it, written piece by piece. An expression names the raw
    fields it reads (`src`, `status`...): the generated function unpacks a shape's values into them."""

    def __init__(self, at: dict[str, int]) -> None:
        self.at, self.text, self.args = at, [], []

    def word(self, text: str) -> None:
        self.text.append(text.replace("%", "%%"))

    def put(self, text: str, raw: str, absent: str, hole: str = "%s", expr: str = "{}") -> None:
        """`text` then the raw field through `expr` into `hole`, or the literal `absent` when the shape lacks it."""
        if raw in self.at:
            self.hole(text, hole, expr.format(raw))
        else:
            self.word(text + absent)

    def hole(self, text: str, hole: str, expr: str) -> None:
        self.text.append(text.replace("%", "%%") + hole)
        self.args.append(expr)


def _l4_template(t: _Template, protonum: int, prefix: str) -> None:
    """l4_words of one direction (the absent values print as l4_words prints None)."""
    if protonum in PORT_PROTOCOLS:
        t.put(" sport=", prefix + "sport", "0")
        t.put(" dport=", prefix + "dport", "0")
    elif protonum == GRE:
        t.put(" srckey=", prefix + "sport", "0x0", "%#x")
        t.put(" dstkey=", prefix + "dport", "0x0", "%#x")
    elif protonum in (ICMP, ICMPV6):
        t.put(" type=", prefix + "icmp_type", "0")
        t.put(" code=", prefix + "icmp_code", "0")
        t.put(" id=", prefix + "icmp_id", "0")


def _line_template(at: dict[str, int], protonum: int) -> _Template:
    """conntrack_parts (not an event) for the entries of one shape, word by word in its order."""
    t = _Template(at)
    t.word(protocol_words(protonum))
    t.put(" ", "timeout", "None")
    state = next((raw for raw in _STATE_TABLES if raw in at), None)
    if state is not None:
        t.hole(" ", "%s", f"STATES[{state!r}][{state}]")
    for prefix in ("", "reply_"):
        t.put(" src=", prefix + "src", "None", expr="ADDR[{}]")
        t.put(" dst=", prefix + "dst", "None", expr="ADDR[{}]")
        _l4_template(t, protonum, prefix)
        if prefix + "tuple_zone" in at:
            t.put(" zone-orig=" if not prefix else " zone-reply=", prefix + "tuple_zone", "")
        counters = prefix or "orig_"  # orig_packets/orig_bytes, reply_packets/reply_bytes
        if counters + "packets" in at:
            t.put(" packets=", counters + "packets", "")
            t.put(" bytes=", counters + "bytes", "None")
        if not prefix:
            if "status" in at:
                t.hole("", "%s", f'("" if status & {_SEEN_REPLY} else " [UNREPLIED]")')
            else:
                t.word(" [UNREPLIED]")
    if "status" in at:
        t.hole("", "%s", f"FLAGS[status & {_FLAG_MASK}]")
    t.put(" mark=", "mark", "0")
    if "secctx" in at:
        t.put(" secctx=", "secctx", "", expr="cstring({})")
    if "zone" in at:
        t.hole("", "%s", '(" zone=%d" % zone if zone else "")')
    if "start" in at:
        t.put(" delta-time=", "start", "", expr="max(0, int(clock() - {} / 1e9))")
    if "helper" in at:
        t.hole("", "%s", "HELPER[helper]")
    t.put(" use=", "use", "None")
    return t


class LineFormat:
    """A `Decoder` finish factory: each entry as the line `conntrack_line` makes of it.

    For a shape with a protocol number (the decoder's key field `proto`) the line is one
    %-template filled from the raw values (addresses and helper names through `Memo`s: they
    repeat); for any other, the reference path. `clock` gives the time for delta-time.
    """

    raws = tuple(r for r in Layout.of(TEXT_COLUMNS).raws if r != "labels")
    keys = ("proto",)

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.env = {"ADDR": Memo(address), "STATES": _STATE_TABLES, "FLAGS": {k: _flag_words(k) for k in
                                                                                  range(_FLAG_MASK + 1)},
                    "HELPER": Memo(lambda raw: f" helper={h}" if (h := cstring(raw)) else ""),
                    "cstring": cstring, "clock": clock}
        self.clock = clock
        self.made: dict[tuple, Callable[[tuple], str]] = {}

    def __call__(self, fields: nl.ShapeFields) -> Callable[[tuple], str]:
        signature = (tuple(fields.at.items()), fields.keys.get("proto"))
        line = self.made.get(signature)
        if line is None:
            line = self._compile(fields)
            if len(self.made) < nl.SHAPE_CACHE_MAX:
                self.made[signature] = line
        return line

    def _compile(self, fields: nl.ShapeFields) -> Callable[[tuple], str]:
        protonum = fields.keys.get("proto")
        if protonum is None:  # no protocol attribute: not a shape the template knows
            layout, clock = Layout.of(TEXT_COLUMNS), self.clock
            order = nl.reorder(layout.raws)(fields)
            return lambda v: conntrack_line(layout.convert(order(v)), clock())
        t = _line_template(fields.at, protonum)
        # e.g. def line(v):
        #          src, dst, proto, sport, dport, ..., use, = v
        #          return T % (timeout, STATES['tcp_state'][tcp_state], ADDR[src], ADDR[dst], sport, ...)
        src = (f"def line(v):\n    {''.join(f'{raw}, ' for raw in fields.at)}= v\n"
               f"    return T % ({''.join(f'{a}, ' for a in t.args)})\n")
        env = dict(self.env, T="".join(t.text))
        exec(compile(src, "<ctkit.conntrack.LineFormat>", "exec"), env)  # noqa: S102 - generated from the layout
        return env["line"]  # type: ignore[return-value]


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
