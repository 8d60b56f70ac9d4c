"""`ct list`'s per-shape formatters print what the reference path prints, byte for byte.

text.LineFormat (conntrack -L's text) and layout.JsonFormat (the JSON objects) compile one
template per shape of the decoder; the reference is text.conntrack_line over a Layout's
converted row and Layout.to_json, entry by entry. Both are run on the recorded dumps
(tests/fixtures/ct) and on generated messages that cover every branch of the text layout:
protocols with ports, GRE keys, ICMP, unknown ones and none, zones of one direction and of
both, counters, timestamps, helpers, security contexts, every status bit, absent attributes.
"""
from __future__ import annotations

import os
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ctkit.kernel import conntrack as ct
from ctkit.kernel import ctnetlink as nl
from ctkit.kernel.conntrack.dump import filtered, formatted_chunks
from ctkit.kernel.conntrack.layout import JsonFormat, Layout
from ctkit.kernel.conntrack.text import TEXT_COLUMNS, LineFormat, conntrack_line

FIX = os.path.join(os.path.dirname(__file__), "fixtures", "ct")
NOW = 1.9e9  # delta-time is computed against this on both paths
DUMPS = ["dump.bin", "fidelity-dump.bin", "events.bin"]
JSON_FIELDS = [ct.DEFAULT_COLUMNS, ("src", "state"), ("proto",), ("status", "labels", "helper", "mark"),
               ("family", "protonum", "zone", "orig_zone", "reply_zone", "start", "secctx", "use")]


def fixture(name: str) -> bytes:
    with open(os.path.join(FIX, name), "rb") as f:
        return f.read()


def plain_lines(data: bytes, flt: ct.Filter | None = None) -> list[str]:
    layout = Layout.of(TEXT_COLUMNS)
    return [conntrack_line(layout.convert(row), now=NOW) for row in filtered([(data, len(data))], layout.raws, flt)]


def fast_lines(data: bytes, flt: ct.Filter | None = None, chunks: int = 1) -> list[str]:
    make = LineFormat(clock=lambda: NOW)
    return [line for chunk in formatted_chunks(split(data, chunks), make, make.raws, make.keys, flt)
            for line in chunk]


def plain_json(data: bytes, columns, flt: ct.Filter | None = None) -> list[str]:
    layout = Layout.of(columns)
    return [layout.to_json(row) for row in filtered([(data, len(data))], layout.raws, flt)]


def fast_json(data: bytes, columns, flt: ct.Filter | None = None, chunks: int = 1) -> list[str]:
    make = JsonFormat(columns)
    return [obj for chunk in formatted_chunks(split(data, chunks), make, make.raws, make.keys, flt) for obj in chunk]


def split(data: bytes, parts: int) -> list[tuple[bytearray, int]]:
    """The messages in `parts` chunks, as a socket would hand them over (one decoder reads them all)."""
    offsets = [0]
    while offsets[-1] + 16 <= len(data):
        offsets.append(offsets[-1] + ((struct.unpack_from("=I", data, offsets[-1])[0] + 3) & ~3))
    cuts = sorted({offsets[len(offsets) * k // parts] for k in range(parts)} | {len(data)})
    return [(bytearray(data[a:b]), b - a) for a, b in zip(cuts, cuts[1:], strict=False)]


# ----------------------------------------------------------- recorded dumps

@pytest.mark.parametrize("name", DUMPS)
def test_lines_are_the_reference_text_on_recorded_dumps(name):
    data = fixture(name)
    plain = plain_lines(data)
    assert plain and fast_lines(data) == plain
    assert fast_lines(data, chunks=3) == plain


@pytest.mark.parametrize("name", DUMPS)
@pytest.mark.parametrize("columns", JSON_FIELDS)
def test_json_is_the_reference_json_on_recorded_dumps(name, columns):
    data = fixture(name)
    plain = plain_json(data, columns)
    assert plain and fast_json(data, columns) == plain
    assert fast_json(data, columns, chunks=4) == plain


@pytest.mark.parametrize("flt", [
    ct.Filter.parse(proto="udp"), ct.Filter.parse(family="ipv6"), ct.Filter.parse(dport=8080),
    ct.Filter.parse(dst="198.51.100.0/24"), ct.Filter.parse(src="2001:db8::/32"), ct.Filter.parse(mark="0x42"),
    ct.Filter.parse(state="ESTABLISHED"), ct.Filter.parse(status="ASSURED"), ct.Filter.parse(zone=6),
    ct.Filter.parse(helper="ftp"), ct.Filter.parse(proto="tcp", status="!ASSURED"),
])
def test_filters_select_the_same_entries_on_both_paths(flt):
    for name in ("dump.bin", "fidelity-dump.bin"):
        data = fixture(name)
        assert fast_lines(data, flt) == plain_lines(data, flt)
        assert fast_json(data, ct.DEFAULT_COLUMNS, flt) == plain_json(data, ct.DEFAULT_COLUMNS, flt)


def test_a_shape_is_compiled_once_per_protocol():
    """proto is a key field: same attribute layout, other protocol number -> another shape (other words)."""
    data = fixture("fidelity-dump.bin")
    make = LineFormat(clock=lambda: NOW)
    decoder = nl.Decoder(make.raws, make.keys, make)
    list(decoder.rows(bytearray(data), len(data)))
    protocols = {shape.expected for shapes in decoder.shapes.values() for shape in shapes}
    assert len(protocols) == decoder.nshapes
    assert len(make.made) <= decoder.nshapes


def test_the_default_finish_is_unchanged_by_key_fields():
    data = fixture("fidelity-dump.bin")
    names = ["proto", "src", "dport", "mark", "tcp_state"]
    plain = list(nl.Decoder(names).rows(bytearray(data), len(data)))
    assert list(nl.Decoder(names, keys=("proto",)).rows(bytearray(data), len(data))) == plain
    with pytest.raises(ValueError, match="key fields"):
        nl.Decoder(names, keys=("zone",))


# ------------------------------------------------------- generated messages

def _tuple(kind: int, v6: bool, src: bytes, dst: bytes, proto: int | None, l4: list[bytes], zone: int | None) -> bytes:
    ip = nl.nest(nl.CTA_TUPLE_IP, nl.attr(3 if v6 else 1, src), nl.attr(4 if v6 else 2, dst))
    protos = ([nl.u8(nl.CTA_PROTO_NUM, proto)] if proto is not None else []) + l4
    parts = [ip, nl.nest(nl.CTA_TUPLE_PROTO, *protos)]
    if zone is not None:
        parts.append(nl.u16(nl.CTA_TUPLE_ZONE, zone))
    return nl.nest(kind, *parts)


def _l4(draw, proto: int | None, v6: bool) -> list[bytes]:
    if proto in (1, 58):  # ICMP(V6) id, type, code
        base = 7 if v6 or proto == 58 else 4
        kinds = [(base, "H"), (base + 1, "B"), (base + 2, "B")]
    else:  # ports, or GRE keys (the same attributes)
        kinds = [(nl.CTA_PROTO_SRC_PORT, "H"), (nl.CTA_PROTO_DST_PORT, "H")]
    out = []
    for kind, code in kinds:
        if draw(st.integers(0, 9)):  # now and then one is missing
            value = draw(st.integers(0, 255 if code == "B" else 65535))
            out.append(nl.u8(kind, value) if code == "B" else nl.u16(kind, value))
    return out


def _counters(kind: int, draw) -> bytes:
    parts = [nl.attr(1, struct.pack(">Q", draw(st.integers(0, 2**40))))]
    if draw(st.booleans()):
        parts.append(nl.attr(2, struct.pack(">Q", draw(st.integers(0, 2**40)))))
    return nl.nest(kind, *parts)


OPTIONAL = ["timeout", "mark", "zone", "helper", "secctx", "labels", "orig_counters", "reply_counters",
            "timestamp", "protoinfo", "use", "status", "orig_zone", "reply_zone", "filler"]


@st.composite
def entries(draw):
    """One conntrack message: any protocol (or none), each optional attribute present or not."""
    v6 = draw(st.booleans())
    width = 16 if v6 else 4
    addrs = [draw(st.binary(min_size=width, max_size=width)) for _ in range(2)]
    proto = draw(st.sampled_from([6, 17, 136, 132, 33, 47, 1, 58, 2, 99, 253, None]))
    extras = set(draw(st.lists(st.sampled_from(OPTIONAL), unique=True)))
    attrs = [_tuple(nl.CTA_TUPLE_ORIG, v6, addrs[0], addrs[1], proto, _l4(draw, proto, v6),
                    draw(st.integers(0, 65535)) if "orig_zone" in extras else None),
             _tuple(nl.CTA_TUPLE_REPLY, v6, addrs[1], addrs[0], proto, _l4(draw, proto, v6),
                    draw(st.integers(0, 65535)) if "reply_zone" in extras else None)]
    if "status" in extras:
        attrs.append(nl.u32(nl.CTA_STATUS, draw(st.integers(0, 2**16 - 1))))
    if "timeout" in extras:
        attrs.append(nl.u32(nl.CTA_TIMEOUT, draw(st.integers(0, 2**32 - 1))))
    if "mark" in extras:
        attrs.append(nl.u32(nl.CTA_MARK, draw(st.integers(0, 2**32 - 1))))
    if "zone" in extras:
        attrs.append(nl.u16(nl.CTA_ZONE, draw(st.integers(0, 65535))))
    if "helper" in extras:
        attrs.append(nl.nest(nl.CTA_HELP, nl.attr(1, draw(st.sampled_from([b"ftp\0", b"sip\0", b"\0", b"x%s\0"])))))
    if "secctx" in extras:
        attrs.append(nl.nest(nl.CTA_SECCTX, nl.attr(1, draw(st.sampled_from([b"system_u:object_r:x:s0\0", b"50%\0"])))))
    if "labels" in extras:
        attrs.append(nl.attr(nl.CTA_LABELS, draw(st.binary(min_size=16, max_size=16))))
    if "orig_counters" in extras:
        attrs.append(_counters(nl.CTA_COUNTERS_ORIG, draw))
    if "reply_counters" in extras:
        attrs.append(_counters(nl.CTA_COUNTERS_REPLY, draw))
    if "timestamp" in extras:
        start = draw(st.integers(0, int(NOW * 1e9) + 10**12))
        attrs.append(nl.nest(nl.CTA_TIMESTAMP, nl.attr(1, struct.pack(">Q", start))))
    if "protoinfo" in extras:  # TCP, SCTP and/or DCCP states, whatever the protocol says
        kinds = draw(st.lists(st.sampled_from([1, 2, 3]), min_size=1, max_size=2, unique=True))
        attrs.append(nl.nest(nl.CTA_PROTOINFO, *[nl.nest(kind, nl.u8(1, draw(st.integers(0, 255))))
                                                 for kind in kinds]))
    if "use" in extras:
        attrs.append(nl.u32(nl.CTA_USE, draw(st.integers(0, 9))))
    if "filler" in extras:  # an attribute ctkit does not know
        attrs.append(nl.u32(30, draw(st.integers(0, 2**32 - 1))))
    attrs.append(nl.u32(nl.CTA_ID, draw(st.integers(0, 2**32 - 1))))
    attrs = attrs[:2] + draw(st.permutations(attrs[2:]))
    return nl.message(nl.NFNL_SUBSYS_CTNETLINK, nl.IPCTNL_MSG_CT_NEW, nl.NLM_F_MULTI, 10 if v6 else 2,
                      b"".join(attrs))


@settings(max_examples=400, deadline=None)
@given(st.lists(entries(), min_size=1, max_size=25), st.integers(1, 3))
def test_lines_are_the_reference_text_on_any_message(msgs, chunks):
    data = b"".join(msgs)
    assert fast_lines(data, chunks=chunks) == plain_lines(data)


@settings(max_examples=300, deadline=None)
@given(st.lists(entries(), min_size=1, max_size=25), st.sampled_from(JSON_FIELDS))
def test_json_is_the_reference_json_on_any_message(msgs, columns):
    data = b"".join(msgs)
    assert fast_json(data, columns, chunks=2) == plain_json(data, columns)
