"""The ctnetlink decoder and conntrack's text layouts against real dumps recorded on Linux 6.18 (tests/fixtures/ct)."""
from __future__ import annotations

import ipaddress
import json
import os
import re
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ctkit.errors import UsageError
from ctkit.kernel import conntrack as ct
from ctkit.kernel import ctnetlink as nl
from ctkit.kernel import procfs
from ctkit.kernel.conntrack.counters import parse_cpu_stats
from ctkit.kernel.conntrack.dump import decode_dump, filtered
from ctkit.kernel.conntrack.expect import Expectation, parse_expectations
from ctkit.kernel.conntrack.layout import Layout
from ctkit.kernel.conntrack.text import TEXT_COLUMNS, conntrack_line, expect_line

FIX = os.path.join(os.path.dirname(__file__), "fixtures", "ct")


def fixture(name: str, mode: str = "rb"):
    with open(os.path.join(FIX, name), mode) as f:
        return f.read()


def decoded(flt: ct.Filter | None = None) -> list[dict]:
    return [e.as_dict() for e in decode_dump(fixture("dump.bin"), flt)]


def reference() -> list[procfs.ProcEntry]:
    """What conntrack -L -o extended printed for the same table."""
    return list(procfs.parse_conntrack(fixture("conntrack-L-extended.txt", "r").splitlines()))


def key(family, protonum, src, dst, sport, dport, itype, iid) -> tuple:
    s = lambda v: None if v is None else str(v)  # noqa: E731
    return (family, protonum, str(ipaddress.ip_address(src)), str(ipaddress.ip_address(dst)),
            s(sport), s(dport), s(itype), s(iid))


def ours_by_key(entries: list[dict]) -> dict[tuple, dict]:
    return {key(d["family"], d["protonum"], d["src"], d["dst"], d["sport"], d["dport"], d["icmp_type"],
                d["icmp_id"]): d for d in entries}


def ref_key(e: procfs.ProcEntry) -> tuple:
    o = e.orig
    return key(e.family, e.protonum, o["src"], o["dst"], o.get("sport"), o.get("dport"), o.get("type"),
               o.get("id"))


def test_every_entry_and_field_matches_conntrack():
    ours = ours_by_key(decoded())
    ref = reference()
    assert len(ref) == 10 and set(ours) == {ref_key(e) for e in ref}
    for e in ref:
        d = ours[ref_key(e)]
        assert d["proto"] == e.proto
        assert abs(d["timeout"] - e.timeout) <= 1
        assert d["state"] == e.state
        r = e.reply
        assert (d["reply_src"], d["reply_dst"]) == (str(ipaddress.ip_address(r["src"])),
                                                    str(ipaddress.ip_address(r["dst"])))
        if "sport" in r:
            assert (str(d["reply_sport"]), str(d["reply_dport"])) == (r["sport"], r["dport"])
        else:
            assert (str(d["reply_icmp_type"]), str(d["reply_icmp_id"])) == (r["type"], r["id"])
        assert ("UNREPLIED" in e.flags) == ("SEEN_REPLY" not in d["status"])
        assert ("ASSURED" in e.flags) == ("ASSURED" in d["status"])
        assert (d["mark"], d["zone"], d["helper"]) == (e.mark, e.zone, e.extra.get("helper"))
        assert (d["orig_packets"], d["orig_bytes"]) == (int(e.orig["packets"]), int(e.orig["bytes"]))
        assert (d["reply_packets"], d["reply_bytes"]) == (int(r["packets"]), int(r["bytes"]))
        assert d["use"] == e.use
        assert d["start"] > 1.6e18 and d["stop"] in (None, 0)


def test_kinds_present_in_the_recording():
    entries = decoded()
    assert {(d["family"], d["proto"]) for d in entries} == {
        ("ipv4", "tcp"), ("ipv6", "tcp"), ("ipv4", "udp"), ("ipv6", "udp"), ("ipv4", "icmp"), ("ipv6", "icmpv6")}
    dnat = [d for d in entries if d["dport"] == 9090]
    assert len(dnat) == 1 and dnat[0]["reply_sport"] == 90 and "DST_NAT" in dnat[0]["status"]
    assert sorted(d["family"] for d in entries if d["labels"] == [3]) == ["ipv4", "ipv6"]  # tcp 8080
    assert [d["dport"] for d in entries if d["helper"] == "ftp"] == [21]
    assert sorted(d["mark"] for d in entries if d["mark"]) == [7, 66, 66]
    assert [d["dport"] for d in entries if d["zone"] == 3] == [5300]
    assert all(isinstance(d["id"], int) and d["id"] for d in entries)


@pytest.mark.parametrize("flt, pred", [
    (ct.Filter.parse(mark="0x42"), lambda d: d["mark"] == 0x42),
    (ct.Filter.parse(mark="0x40/0x40"), lambda d: d["mark"] & 0x40),
    (ct.Filter.parse(family="ipv6"), lambda d: d["family"] == "ipv6"),
    (ct.Filter.parse(src="192.0.2.0/25", proto="tcp"), lambda d: d["family"] == "ipv4" and d["proto"] == "tcp"
     and d["src"] == "192.0.2.20"),
    (ct.Filter.parse(dst="2001:db8::10"), lambda d: d["dst"] == "2001:db8::10"),
    (ct.Filter.parse(reply_src="192.0.2.10", dport=9090, proto="tcp"), lambda d: d["dport"] == 9090),
    (ct.Filter.parse(state="close,time_wait"), lambda d: d["state"] in ("CLOSE", "TIME_WAIT")),
    (ct.Filter.parse(status="UNREPLIED"), lambda d: "SEEN_REPLY" not in d["status"]),
    (ct.Filter.parse(status="ASSURED,!DST_NAT"), lambda d: "ASSURED" in d["status"] and "DST_NAT" not in d["status"]),
    (ct.Filter.parse(zone=3), lambda d: d["zone"] == 3),
    (ct.Filter.parse(zone=0, proto="icmpv6"), lambda d: d["proto"] == "icmpv6"),
    (ct.Filter.parse(helper="ftp"), lambda d: d["helper"] == "ftp"),
    (ct.Filter.parse(sport=5300), lambda d: d["sport"] == 5300),
])
def test_filters_checked_in_ctkit(flt, pred):
    everything = decoded()
    want = [d for d in everything if pred(d)]
    assert want
    assert decoded(flt) == want


@pytest.mark.parametrize("kwargs, fragment", [
    ({"family": "ipx"}, "unknown family"),
    ({"proto": "tcpx"}, "unknown protocol"),
    ({"src": "10.0.0.300"}, "not an address"),
    ({"family": "ipv6", "src": "10.0.0.1"}, "not an ipv6"),
    ({"state": "ESTABLISHD"}, "unknown state"),
    ({"state": "COOKIE_WAIT"}, "SCTP or DCCP state; the state filter selects TCP states only"),
    ({"mark": "0x41/0x40"}, "mark 0x41 has bits outside its mask 0x40, so it can never match"),
    ({"status": "ASURED"}, "unknown status"),
    ({"mark": "0xzz"}, "VALUE/MASK"),
    ({"mark": "1/0x1ffffffff"}, "32 bits"),
    ({"dport": 70000}, "0-65535"),
    ({"zone": -1}, "0-65535"),
])
def test_bad_filters_are_usage_errors(kwargs, fragment):
    with pytest.raises(UsageError, match=fragment):
        ct.Filter.parse(**kwargs)


@pytest.mark.parametrize("kwargs, args, kernel, cli", [
    ({"src": "10.0.0.300"}, ["--src", "10.0.0.300"], "src: not an address or CIDR: '10.0.0.300'",
     "--src: not an address or CIDR: '10.0.0.300'"),
    ({"family": "ipv6", "reply_dst": "10.0.0.1"}, ["--family", "ipv6", "--reply-dst", "10.0.0.1"],
     "reply_dst 10.0.0.1 is not an ipv6 address", "--reply-dst 10.0.0.1 is not an ipv6 address"),
    ({"sport": 70000}, ["--sport", "70000"], "sport must be 0-65535, not 70000", "--sport must be 0-65535, not 70000"),
    ({"mark": "1/0x1ffffffff"}, ["--mark", "1/0x1ffffffff"], "mark value and mask must fit in 32 bits",
     "--mark value and mask must fit in 32 bits"),
    ({"zone": 70000}, ["--zone", "70000"], "zone must be 0-65535, not 70000", "--zone must be 0-65535, not 70000"),
])
def test_filter_errors_name_the_field_and_the_cli_its_option(kwargs, args, kernel, cli):
    """The kernel layer knows no command line; `ctkit ct list` still names the option the user typed."""
    from typer.testing import CliRunner

    from ctkit.cli.ct import app
    with pytest.raises(ct.FilterError) as info:
        ct.Filter.parse(**kwargs)
    assert str(info.value) == kernel
    result = CliRunner().invoke(app, ["list", *args])  # refused before any socket is opened
    assert result.exit_code == 2
    assert f"ctkit: {cli}" in result.output


def _attrs_of(payload: bytes) -> dict[int, bytes]:
    return {t: payload[p:p + n] for t, p, n in nl.attrs(payload, 0, len(payload))}


def test_kernel_request_attributes():
    flt = ct.Filter.parse(mark="5/0xff", status="ASSURED,!DST_NAT", zone=2, src="192.0.2.20", proto="tcp",
                          dport=80)
    a = _attrs_of(flt.request((6, 18)))
    assert a[nl.CTA_MARK] == struct.pack(">I", 5) and a[nl.CTA_MARK_MASK] == struct.pack(">I", 0xFF)
    assert a[nl.CTA_STATUS] == struct.pack(">I", 4) and a[nl.CTA_STATUS_MASK] == struct.pack(">I", 4 | 32)
    assert a[nl.CTA_ZONE] == struct.pack(">H", 2)
    flags = _attrs_of(a[nl.CTA_FILTER])
    assert struct.unpack("=I", flags[nl.CTA_FILTER_ORIG_FLAGS])[0] == (
        nl.FILTER_IP_SRC | nl.FILTER_PROTO_NUM | nl.FILTER_DST_PORT)
    # older kernels get only what they understand; ctkit still checks everything itself
    old = _attrs_of(flt.request((5, 4)))
    assert set(old) == {nl.CTA_MARK, nl.CTA_MARK_MASK}


def test_ipv6_and_cidr_addresses_are_never_sent_to_the_kernel():
    for flt in (ct.Filter.parse(src="2001:db8::1"), ct.Filter.parse(src="192.0.2.0/24")):
        assert nl.CTA_FILTER not in _attrs_of(flt.request((6, 18)))
    v6 = _attrs_of(ct.Filter.parse(src="2001:db8::1", proto="udp").request((6, 18)))
    assert struct.unpack("=I", _attrs_of(v6[nl.CTA_FILTER])[nl.CTA_FILTER_ORIG_FLAGS])[0] == nl.FILTER_PROTO_NUM


def test_expectations_match_conntrack():
    exps = parse_expectations([(fixture("expect.bin"), len(fixture("expect.bin")))])
    text = fixture("conntrack-L-expect.txt", "r")
    assert len(exps) == 1
    e = exps[0]
    assert (e.proto, e.src, e.dst, e.dport, e.helper) == ("tcp", "192.0.2.20", "192.0.2.10", 10000, "ftp")
    assert f"master-src={e.master_src} master-dst={e.master_dst} sport={e.master_sport} dport={e.master_dport}" in text
    assert abs(int(text.split()[0]) - e.timeout) <= 1


def test_cpu_stats_match_conntrack_S():
    data = fixture("stats-cpu.bin")
    per_cpu = parse_cpu_stats([(data, len(data))])
    for line, (cpu, values) in zip(fixture("conntrack-S.txt", "r").splitlines(), per_cpu, strict=True):
        fields = dict(w.split("=") for w in line.split())
        assert int(fields.pop("cpu")) == cpu
        assert {k: int(v) for k, v in fields.items()} == values


def test_unknown_field_is_a_usage_error():
    with pytest.raises(UsageError, match="unknown conntrack field"):
        ct.column("dprot")


# ------------------------------------------------- shape cache soundness

def _message(attrs: list[bytes], family: int = 2) -> bytes:
    return nl.message(nl.NFNL_SUBSYS_CTNETLINK, nl.IPCTNL_MSG_CT_NEW, nl.NLM_F_MULTI, family, b"".join(attrs))


def _tuple(kind: int, src: bytes, dst: bytes, proto: int, sport: int, dport: int) -> bytes:
    v4 = len(src) == 4
    return nl.nest(kind,
                   nl.nest(nl.CTA_TUPLE_IP, nl.attr(1 if v4 else 3, src), nl.attr(2 if v4 else 4, dst)),
                   nl.nest(nl.CTA_TUPLE_PROTO, nl.u8(1, proto), nl.u16(2, sport), nl.u16(3, dport)))


optional = st.sampled_from(["mark", "zone", "helper", "labels", "counters", "protoinfo", "filler"])


@st.composite
def messages(draw):
    v6 = draw(st.booleans())
    width = 16 if v6 else 4
    src, dst = draw(st.binary(min_size=width, max_size=width)), draw(st.binary(min_size=width, max_size=width))
    proto = draw(st.sampled_from([6, 17]))
    sport, dport = draw(st.integers(0, 65535)), draw(st.integers(0, 65535))
    attrs = [_tuple(nl.CTA_TUPLE_ORIG, src, dst, proto, sport, dport),
             _tuple(nl.CTA_TUPLE_REPLY, dst, src, proto, dport, sport),
             nl.u32(nl.CTA_STATUS, draw(st.integers(0, 2**16 - 1)))]
    extras = []
    for kind in draw(st.lists(optional, max_size=5, unique=True)):
        if kind == "mark":
            extras.append(nl.u32(nl.CTA_MARK, draw(st.integers(0, 2**32 - 1))))
        elif kind == "zone":
            extras.append(nl.u16(nl.CTA_ZONE, draw(st.integers(0, 65535))))
        elif kind == "helper":
            extras.append(nl.nest(nl.CTA_HELP, nl.attr(1, draw(st.sampled_from([b"ftp\0", b"irc\0", b"sip\0"])))))
        elif kind == "labels":
            extras.append(nl.attr(nl.CTA_LABELS, draw(st.binary(min_size=16, max_size=16))))
        elif kind == "counters":
            extras.append(nl.nest(nl.CTA_COUNTERS_ORIG, nl.attr(1, struct.pack(">Q", draw(st.integers(0, 2**40)))),
                                  nl.attr(2, struct.pack(">Q", draw(st.integers(0, 2**40))))))
        elif kind == "protoinfo":
            extras.append(nl.nest(nl.CTA_PROTOINFO, nl.nest(1, nl.u8(1, draw(st.integers(0, 9))))))
        else:  # an attribute ctkit does not know, of the same size as a mark
            extras.append(nl.u32(30, draw(st.integers(0, 2**32 - 1))))
    attrs += draw(st.permutations(extras))
    return _message(attrs, 10 if v6 else 2)


FIELDS = ["family", "proto", "src", "dst", "sport", "dport", "reply_src", "reply_dport", "status", "mark",
          "zone", "helper", "labels", "orig_packets", "orig_bytes", "tcp_state"]


@settings(max_examples=300, deadline=None)
@given(st.lists(messages(), min_size=1, max_size=30))
def test_cached_shapes_read_what_a_fresh_walk_reads(msgs):
    """Same-length messages with other layouts must never be read through a wrong shape."""
    stream = bytearray(b"".join(msgs))
    shared = list(nl.Decoder(FIELDS).rows(stream, len(stream)))
    fresh = []
    for m in msgs:
        fresh += list(nl.Decoder(FIELDS).rows(bytearray(m), len(m)))
    assert shared == fresh
    # and against the walk itself, field by field
    for m, row in zip(msgs, fresh, strict=True):
        _, found = nl.walk(m, 0)
        for name, value in zip(FIELDS, row, strict=True):
            if name == "family":
                assert value == m[16]
            elif name not in found:
                assert value is None
            else:
                off, n = found[name]
                raw = m[off:off + n]
                code = nl.RAW_BY_NAME[name].code
                assert value == (raw if code in "asb" else struct.unpack(">" + code, raw)[0])


def test_truncated_message_is_a_kernel_error():
    m = bytearray(_message([nl.u32(nl.CTA_MARK, 1)]))
    struct.pack_into("=H", m, 20, 200)  # attribute longer than the message
    from ctkit.errors import KernelError
    with pytest.raises(KernelError, match="malformed"):
        list(nl.Decoder(["mark"]).rows(m, len(m)))


# ------------------------------------------------ conntrack's text, word for word (fidelity-* fixtures)

def fidelity_lines() -> list[str]:
    """ctkit's `--format conntrack` lines for the recorded table (capture_fidelity.py)."""
    layout = Layout.of(TEXT_COLUMNS)
    data = fixture("fidelity-dump.bin")
    return [conntrack_line(layout.convert(row)) for row in filtered([(data, len(data))], layout.raws)]


def test_text_equals_conntrack_L_for_the_same_messages():
    theirs = fixture("fidelity-conntrack-L.txt", "r").splitlines()
    assert sorted(fidelity_lines()) == sorted(theirs)


@pytest.mark.parametrize("dst, words", [
    ("198.51.100.2", "sport=1000 dport=2000 zone-orig=4 packets=0 bytes=0 [UNREPLIED]"),
    ("198.51.100.3", "sport=2000 dport=1000 zone-reply=5 packets=0 bytes=0 mark=0"),
    ("198.51.100.4", "[ASSURED] mark=0 zone=6 use=1"),
    ("198.51.100.5", "unknown  99 "),
    ("198.51.100.6", "unknown  2 "),  # igmp: conntrack has no name for it
    ("2001:db8:1::3", "unknown  253 "),
    ("198.51.100.7", "srckey=0x1a dstkey=0x2b packets=0"),
    ("198.51.100.9", "dccp     33 "),
])
def test_each_kind_prints_as_conntrack_prints_it(dst, words):
    (line,) = [line for line in fidelity_lines() if re.search(r"src=\S+ dst=(\S+)", line).group(1) == dst]
    assert words in line
    assert line in fixture("fidelity-conntrack-L.txt", "r").splitlines()


def test_labels_are_in_the_json_not_in_the_text():
    # conntrack -L prints no labels (only with -o labels, by the names of connlabel.conf)
    assert not any("labels" in line for line in fidelity_lines())
    data = fixture("fidelity-dump.bin")
    labelled = [e for e in decode_dump(data) if e.get("labels")]
    assert sorted((e.get("family"), e.get("dport"), e.get("labels")) for e in labelled) == \
        [("ipv4", 8080, [3]), ("ipv6", 8080, [3])]


def test_json_carries_directional_zones_and_master_tuples():
    rows = {d["dst"]: d for d in (json.loads(t) for t in _json_texts())}
    assert (rows["198.51.100.2"]["orig_zone"], rows["198.51.100.2"]["reply_zone"], rows["198.51.100.2"]["zone"]) \
        == (4, None, 0)
    assert (rows["198.51.100.3"]["orig_zone"], rows["198.51.100.3"]["reply_zone"]) == (None, 5)
    assert (rows["198.51.100.4"]["zone"], rows["198.51.100.4"]["orig_zone"]) == (6, None)
    assert set(ct.DEFAULT_COLUMNS) >= {"orig_zone", "reply_zone", "master_src", "master_dst", "master_sport",
                                       "master_dport", "labels", "secctx"}
    assert all(set(d) == set(ct.DEFAULT_COLUMNS) for d in rows.values())


def _json_texts() -> list[str]:
    layout = Layout.of(ct.DEFAULT_COLUMNS)
    data = fixture("fidelity-dump.bin")
    return [layout.to_json(row) for row in filtered([(data, len(data))], layout.raws)]


def test_expectations_print_as_conntrack_L_expect():
    data = fixture("fidelity-expect.bin")
    exps = parse_expectations([(data, len(data))])
    assert sorted(map(expect_line, exps)) == sorted(fixture("fidelity-conntrack-L-expect.txt", "r").splitlines())
    v4 = next(e.as_dict() for e in exps if e.family == "ipv4")
    assert (v4["mask_src"], v4["mask_dst"], v4["mask_sport"], v4["mask_dport"], v4["class"]) == \
        ("255.255.255.255", "255.255.255.255", 0, 65535, 0)
    assert (v4["protonum"], v4["master_protonum"], v4["master_dport"], v4["helper"]) == (6, 6, 21, "ftp")
    assert "klass" not in v4 and "class_" not in v4


def _exp(**kw) -> Expectation:
    base = {f: None for f in Expectation.__dataclass_fields__}
    base.update(family="ipv4", proto="udp", protonum=17, src="192.0.2.1", dst="192.0.2.2", sport=0, dport=69,
                mask_src="255.255.255.255", mask_dst="255.255.255.255", mask_sport=0, mask_dport=65535,
                master_protonum=17, master_src="192.0.2.1", master_dst="192.0.2.2", master_sport=5000,
                master_dport=69, timeout=5, flags=0, class_=0, helper="tftp")
    base.update(kw)
    return Expectation(**base)


@pytest.mark.parametrize("kw, tail", [
    ({}, "dport=69 class=0 helper=tftp"),
    ({"zone": 3}, "dport=69 zone=3 class=0 helper=tftp"),
    ({"flags": 1}, "dport=69 PERMANENT class=0 helper=tftp"),
    ({"flags": 7}, "dport=69 PERMANENT,INACTIVE,USERSPACE class=0 helper=tftp"),
    ({"flags": 8}, "dport=69  class=0 helper=tftp"),  # an unnamed flag leaves libnetfilter_conntrack's blank
    ({"class_": None, "helper": None}, "dport=69"),
    ({"protonum": 47, "master_protonum": 6, "sport": 1, "dport": 2, "mask_sport": 65535, "mask_dport": 65535},
     "srckey=0x1 dstkey=0x2 mask-src=255.255.255.255 mask-dst=255.255.255.255 srckey=0xffff dstkey=0xffff "
     "master-src=192.0.2.1 master-dst=192.0.2.2 sport=5000 dport=69 class=0 helper=tftp"),
])
def test_expect_line_follows_libnetfilter_conntrack(kw, tail):
    line = expect_line(_exp(**kw))
    assert line.startswith("5 proto=")
    assert line.endswith(tail), line
