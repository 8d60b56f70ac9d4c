"""/proc parsers against real files from this kernel and the stat layouts of older kernels."""
from __future__ import annotations

import ipaddress
import os

import pytest

from ctkit.kernel import procfs

FIX = os.path.join(os.path.dirname(__file__), "fixtures", "ct")


def text(name: str) -> str:
    with open(os.path.join(FIX, name)) as f:
        return f.read()


def test_stat_6_18_by_header_name():
    s = procfs.parse_stat(text("proc-stat-nf_conntrack-6.18.txt"))
    assert s.columns[0] == "entries" and "chainlength" in s.columns and "clashres" in s.columns
    assert len(s.rows) == 2 and [r.cpu for r in s.rows] == [0, 1]
    assert s.entries == 10  # repeated on every line, not summed
    assert "entries" not in s.rows[0].counters
    # renamed columns come out under the ctnetlink names
    assert {"clash_resolve", "chaintoolong", "error"} <= set(s.rows[0].counters)
    assert s.total("expect_create") == 1


def test_stat_6_18_agrees_with_conntrack_S_where_they_overlap():
    s = procfs.parse_stat(text("proc-stat-nf_conntrack-6.18.txt"))
    for line, row in zip(text("conntrack-S.txt").splitlines(), s.rows, strict=True):
        fields = {k: int(v) for k, v in (w.split("=") for w in line.split())}
        assert fields.pop("cpu") == row.cpu
        for name in ("found", "invalid", "insert", "insert_failed", "drop", "early_drop", "error",
                     "search_restart", "clash_resolve", "chaintoolong"):
            assert row.counters[name] == fields[name]


@pytest.mark.parametrize("name, present, absent, entries, totals", [
    ("proc-stat-nf_conntrack-5.10.txt", {"clash_resolve", "delete_list"}, {"searched", "chaintoolong"}, 0x123,
     {"drop": 4, "early_drop": 5, "invalid": 15, "clash_resolve": 3, "search_restart": 8, "insert": 0x83}),
    ("proc-stat-nf_conntrack-4.19.txt", {"searched", "delete_list"}, {"clash_resolve", "chaintoolong"}, 0xA000,
     {"drop": 0x11, "early_drop": 0x20, "insert_failed": 2, "error": 3, "found": 0xFF00 + 0xFF01}),
    ("proc-stat-nf_conntrack-3.10.txt", {"searched"}, {"search_restart", "clash_resolve"}, 0x10,
     {"drop": 6, "early_drop": 7, "new": 0x30}),
])
def test_older_stat_layouts(name, present, absent, entries, totals):
    s = procfs.parse_stat(text(name))
    cols = set(s.rows[0].counters)
    assert present <= cols and not (absent & cols)
    assert s.entries == entries
    for key, value in totals.items():
        assert s.total(key) == value, key


@pytest.mark.parametrize("bad", ["", "cpu found\n1 2\n", "entries found\n00000001\n",
                                 "entries found\n0000000g 00000001\n"])
def test_bad_stat_files(bad):
    with pytest.raises(ValueError):
        procfs.parse_stat(bad)


def test_proc_nf_conntrack_matches_conntrack_L():
    proc = list(procfs.parse_conntrack(text("proc-nf_conntrack-6.18.txt").splitlines()))
    ref = list(procfs.parse_conntrack(text("conntrack-L-extended.txt").splitlines()))
    assert len(proc) == len(ref) == 10

    def norm(e: procfs.ProcEntry) -> tuple:
        side = lambda d: tuple(sorted((k, str(ipaddress.ip_address(v)) if k in ("src", "dst") else v)  # noqa: E731
                                      for k, v in d.items()))
        # /proc does not print the helper; conntrack -L does
        return (e.family, e.proto, e.protonum, e.state, side(e.orig), side(e.reply), e.flags, e.mark, e.zone)
    assert sorted(map(norm, proc)) == sorted(map(norm, ref))


def test_proc_line_fields():
    line = ("ipv4     2 tcp      6 117 TIME_WAIT src=10.0.0.1 dst=10.0.0.2 sport=40000 dport=21 packets=5 "
            "bytes=274 src=10.0.0.2 dst=10.0.0.1 sport=21 dport=40000 packets=6 bytes=378 [ASSURED] mark=3 "
            "secctx=system_u:object_r:unlabeled_t:s0 zone=4 delta-time=2 helper=ftp use=2")
    e = procfs.parse_conntrack_line(line)
    assert (e.family, e.proto, e.protonum, e.timeout, e.state) == ("ipv4", "tcp", 6, 117, "TIME_WAIT")
    assert e.orig == {"src": "10.0.0.1", "dst": "10.0.0.2", "sport": "40000", "dport": "21", "packets": "5",
                      "bytes": "274"}
    assert e.reply["sport"] == "21" and e.reply["packets"] == "6"
    assert e.flags == {"ASSURED"} and (e.mark, e.zone, e.use) == (3, 4, 2)
    assert e.extra["helper"] == "ftp" and e.extra["secctx"].startswith("system_u")
    unreplied = procfs.parse_conntrack_line(
        "ipv6     10 udp      17 28 src=2001:db8::1 dst=2001:db8::2 sport=5 dport=53 [UNREPLIED] "
        "src=2001:db8::2 dst=2001:db8::1 sport=53 dport=5 mark=0 zone=0 use=2")
    assert unreplied.state is None and unreplied.flags == {"UNREPLIED"} and unreplied.reply["dport"] == "5"


def test_bad_proc_line_names_the_line():
    with pytest.raises(ValueError, match="line 2"):
        list(procfs.parse_conntrack(["ipv4 2 udp 17 5 src=1.1.1.1", "ipv4 2 udp x"]))
