"""`ctkit ct events` without root: decoding and formatting recorded events, losses, rates, the command line.

The fixtures (tests/fixtures/ct/capture_events.py) are the raw ctnetlink event messages a
socket received on Linux 6.18 while `conntrack -E` listened to the same groups, and what
conntrack -E printed: TCP/UDP/ICMP over IPv4 and IPv6, state updates, a helper, marks, a
zone, a label, DNAT, counters and timestamps, destroyed by `conntrack -F`; and the ftp
expectation that came and went.
"""
from __future__ import annotations

import errno
import json
import os
import re
import time

import pytest
from typer.testing import CliRunner

from ctkit.cli import ct as cli
from ctkit.kernel import conntrack as ct
from ctkit.kernel import ctnetlink as nl
from ctkit.kernel.conntrack import events

FIX = os.path.join(os.path.dirname(__file__), "fixtures", "ct")


def fixture(name: str, mode: str = "rb"):
    with open(os.path.join(FIX, name), mode) as f:
        return f.read()


def recorded(flt: ct.Filter | None = None, columns=cli.EVENT_TEXT_COLUMNS) -> list[events.Event]:
    return list(events.split(fixture("events.bin"), events.EventDecoder(flt, columns)))


def lines(evs: list[events.Event]) -> list[str]:
    layout = evs[0].layout
    return [cli.event_line(e.kind, e.raw, e.portid, layout.convert, layout.raws.index("mark")) for e in evs]


def reference() -> list[str]:
    return fixture("conntrack-E.txt", "r").splitlines()


@pytest.fixture(autouse=True)
def _progname(monkeypatch):
    """The flush was made by conntrack, long gone: name its port id as conntrack -E did."""
    monkeypatch.setattr(events, "program_name", lambda portid: "conntrack")


def test_every_event_prints_as_conntrack_E_printed_it():
    ours, ref = lines(recorded()), reference()
    assert len(ours) == len(ref) == 45
    for mine, theirs in zip(ours, ref, strict=True):
        # the one addition: ctkit shows connlabels by bit number (conntrack needs a label map for that)
        assert re.sub(r" labels=[\d,]+", "", mine) == theirs


def test_kinds_and_what_an_event_carries():
    evs = recorded()
    tags = [line.split("]")[0].strip() + "]" for line in reference()]
    assert [f"[{e.kind.upper()}]" for e in evs] == tags
    assert {e.kind for e in evs} == {"new", "update", "destroy"}
    first = evs[0].as_dict()
    assert first["event"] == "new" and first["state"] == "SYN_SENT" and first["use"] is None
    assert not evs[0].has("mark") and evs[0].has("status")
    destroys = [e for e in evs if e.kind == "destroy"]
    assert all(e.portid for e in destroys if e.get("state") != "CLOSE" or e.get("dport") != 8081)
    # the RST-closed flow died in the kernel (portid 0); the rest were flushed by conntrack -F
    assert [e.get("dport") for e in destroys if not e.portid] == [8081]
    assert all(e.get("orig_packets") is not None and e.get("start") for e in destroys)
    marked = [e for e in evs if e.has("mark")]
    assert {e.get("mark") for e in marked} == {7, 66}
    assert [e.get("labels") for e in evs if e.get("labels")] == [[3], [3]]


@pytest.mark.parametrize("flt, word", [
    (ct.Filter.parse(proto="udp"), " udp "),
    (ct.Filter.parse(family="ipv6"), "2001:db8::20 dst"),
    (ct.Filter.parse(dport=5353), "dport=5353 "),
    (ct.Filter.parse(zone=3), "zone=3"),
    (ct.Filter.parse(mark="0x42"), "mark=66"),
    (ct.Filter.parse(src="192.0.2.0/24", proto="icmp"), " icmp "),
    (ct.Filter.parse(helper="ftp"), "helper=ftp"),
])
def test_filters_are_those_of_ct_list(flt, word):
    """The same Filter checks as a dump; an event matches on what its message carried."""
    want = [line for line in reference() if word in line.split(" src=", 1)[0] + " " + line]
    got = lines(recorded(flt))
    assert got and [re.sub(r" labels=[\d,]+", "", g) for g in got] == want


def test_state_filter_sees_only_events_that_carry_the_state():
    got = recorded(ct.Filter.parse(state="ESTABLISHED"))
    assert len(got) == 4 and all(e.get("state") == "ESTABLISHED" and e.kind == "update" for e in got)


def test_expectation_events():
    evs = list(events.split(fixture("events-expect.bin"), events.ExpectDecoder()))
    ref = fixture("conntrack-E-expect.txt", "r").splitlines()
    assert [e.kind for e in evs] == ["new", "destroy"]
    for e, theirs in zip(evs, ref, strict=True):
        x = e.expectation
        assert (x.proto, x.src, x.dst, x.dport, x.helper) == ("tcp", "192.0.2.20", "192.0.2.10", 10000, "ftp")
        assert f"master-src={x.master_src} master-dst={x.master_dst} sport={x.master_sport} dport={x.master_dport}" \
            in theirs
        assert theirs.split()[1] == str(x.timeout)
    assert list(events.split(fixture("events-expect.bin"), events.ExpectDecoder(ct.Filter.parse(dport=21)))) == []
    assert len(list(events.split(fixture("events-expect.bin"),
                                 events.ExpectDecoder(ct.Filter.parse(proto="tcp", dst="192.0.2.10"))))) == 2


def test_expectations_refuse_filters_they_cannot_answer():
    with pytest.raises(ct.FilterError, match="state does not apply to expectations"):
        events.ExpectDecoder(ct.Filter.parse(state="ESTABLISHED"))


# ------------------------------------------------- the subscription loop, scripted

class ScriptedSocket:
    """Stands in for the kernel: recv_into plays `script`: message bytes, None (the queue empty for a
    moment), ("enobufs", n dropped) (a congested socket's overrun) or ("dropped", n) (n messages dropped
    without a word, on a socket with NETLINK_NO_ENOBUFS, whose recv goes on to the next item).
    `no_enobufs`: whether the socket takes NETLINK_NO_ENOBUFS."""

    def __init__(self, script: list, no_enobufs: bool = False) -> None:
        self.script = list(script)
        self.no_enobufs, self.asked_no_enobufs = no_enobufs, False
        self.dropped = 0
        self.joined: list[int] = []
        self.rcvbuf = 0
        self.buf = bytearray(nl.RECV_BUFSIZE)
        self.rfd, self.wfd = os.pipe()  # a descriptor poll() can wait on: never readable
        self.sock = self

    # the socket.socket part
    def recv_into(self, buf: bytearray) -> int:
        if not self.script:
            raise BlockingIOError
        item = self.script.pop(0)
        if isinstance(item, tuple):
            self.dropped += item[1]
            if item[0] == "dropped":
                return self.recv_into(buf)
            raise OSError(errno.ENOBUFS, os.strerror(errno.ENOBUFS))
        if item is None:  # an empty queue for a moment
            raise BlockingIOError
        buf[:len(item)] = item
        return len(item)

    def fileno(self) -> int:
        return self.rfd

    def setblocking(self, flag: bool) -> None:
        pass

    # the NetlinkSocket part
    def set_rcvbuf(self, size: int) -> int:
        self.rcvbuf = 2 * size
        return self.rcvbuf

    def join(self, groups) -> None:
        self.joined += list(groups)

    def set_no_enobufs(self) -> bool:
        self.asked_no_enobufs = True
        return self.no_enobufs

    def drops(self) -> int:
        return self.dropped

    def close(self) -> None:
        for fd in (self.rfd, self.wfd):
            try:
                os.close(fd)
            except OSError:
                pass


def messages() -> list[bytes]:
    data, out, off = fixture("events.bin"), [], 0
    while off < len(data):
        mlen = int.from_bytes(data[off:off + 4], "little")
        out.append(data[off:off + mlen])
        off += (mlen + 3) & ~3
    return out


def test_an_overrun_is_counted_where_the_events_are_missing():
    msgs = messages()
    # 0: new, 1 and 2: updates (not asked for), 3: update, 4: new
    sock = ScriptedSocket([msgs[0], msgs[1], ("enobufs", 7), msgs[2], None, msgs[3], msgs[4]])
    sub = events.Subscription(sock=sock, columns=("proto", "dport"), kinds=("new", "destroy"))
    assert sock.joined == [nl.NFNLGRP_CONNTRACK_NEW, nl.NFNLGRP_CONNTRACK_DESTROY]
    seen = list(sub.events(deadline=time.monotonic() + 0.1, tick=0.01))
    # what was queued before the overrun is read after the ENOBUFS; the loss is placed where the queue ran dry
    assert [type(x).__name__ for x in seen] == ["Event", "Lost", "Event"]
    assert [e.get("dport") for e in seen if isinstance(e, events.Event)] == [8080, 8080]
    lost = seen[1]
    assert (lost.count, lost.total, lost.overruns) == (7, 7, 1)
    assert (sub.lost, sub.overruns) == (7, 1)
    assert lost.as_dict()["event"] == "lost" and lost.as_dict()["lost"] == 7


def test_without_enobufs_drops_are_found_as_the_stream_goes(monkeypatch):
    """NETLINK_NO_ENOBUFS: no error marks an overrun, so the drop counter is read every CHECK_EVERY
    datagrams while the queue never runs empty, and when it does; each run of drops is one overrun."""
    monkeypatch.setattr(events, "CHECK_EVERY", 2)
    news = [x for x in messages() if is_new(x)]
    assert len(news) >= 6
    sock = ScriptedSocket([news[0], ("dropped", 4), news[1], news[2], news[3], ("dropped", 2), news[4], None,
                           news[5], ("dropped", 1)], no_enobufs=True)
    sub = events.Subscription(sock=sock, columns=("proto",), kinds=("new",))
    assert sock.asked_no_enobufs and not sub.enobufs
    seen = list(sub.events(deadline=time.monotonic() + 0.1, tick=0.01))
    kinds = [x.kind if isinstance(x, events.Event) else f"lost {x.count} ({x.overruns})" for x in seen]
    # looks after the 2nd and the 4th datagram (clean), where the queue ran empty (the None), at the quiet
    # tick after it (clean), and where it ran empty at the end: three runs of drops, each counted where found
    assert kinds == ["new", "new", "lost 4 (1)", "new", "new", "new", "lost 2 (2)", "new", "lost 1 (3)"]
    assert (sub.received, sub.lost, sub.overruns) == (6, 7, 3)


def test_a_socket_that_keeps_enobufs_keeps_the_enobufs_accounting():
    sock = ScriptedSocket([])
    sub = events.Subscription(sock=sock)
    assert sock.asked_no_enobufs and sub.enobufs


def is_new(msg: bytes) -> bool:
    """Whether a recorded message is a NEW event (IPCTNL_MSG_CT_NEW with NLM_F_CREATE)."""
    _, mtype, flags, _, _ = nl._NLMSGHDR.unpack_from(msg, 0)
    return mtype == nl.NFNL_SUBSYS_CTNETLINK << 8 | nl.IPCTNL_MSG_CT_NEW and bool(flags & nl.NLM_F_CREATE)


def test_drops_seen_only_at_a_quiet_tick_are_reported_too():
    sock = ScriptedSocket([])
    sub = events.Subscription(sock=sock)
    sock.dropped = 3  # e.g. dropped while nobody read, the ENOBUFS already consumed elsewhere
    seen = list(sub.events(deadline=time.monotonic() + 0.05, tick=0.01))
    assert [x.count for x in seen] == [3] and sub.lost == 3


# ----------------------------------------------------------------- rates

def test_rates_over_a_window():
    evs = recorded(columns=events.SUMMARY_COLUMNS)
    rates = events.Rates(window=10, step=1, start=1000.0)
    for i, e in enumerate(evs):  # one event every half second: 45 events over 22.5 s
        rates.add_row(e.kind, e.raw, 1000.0 + i * 0.5, e.layout)
    snap = rates.snapshot(1000.0 + 22.5)
    assert snap["totals"]["new"] == sum(e.kind == "new" for e in evs)
    assert 10 <= snap["window"] <= 11  # the window, plus the part of its oldest bucket
    in_window = sum(1 for i in range(len(evs)) if 1000.0 + i * 0.5 >= 1000.0 + 22.5 - snap["window"])
    total_rate = sum(snap["rates"][k] for k in events.KINDS)
    assert total_rate == pytest.approx(in_window / snap["window"], abs=0.2)
    udp = [r for r in snap["by_proto_state"] if r["proto"] == "udp"]
    assert udp and udp[0]["state"] is None
    assert snap["top_sources"][0]["src"] in ("192.0.2.20", "2001:db8::20", "192.0.2.10")
    quiet = rates.snapshot(1000.0 + 500)  # long after: nothing in the window any more
    assert all(v == 0 for v in quiet["rates"].values()) and quiet["top_ports"] == []
    rates.add_lost(events.Lost(5, 5, 1, 1000.0 + 500))
    assert rates.snapshot(1000.0 + 501)["totals"]["lost"] == 5


# ------------------------------------------------------------- the command

def run_cli(monkeypatch, script: list, *args: str):
    made = {}

    def fake_subscribe(netns, flt, columns, kinds, expect, rcvbuf):
        sock = ScriptedSocket(script)
        made["sub"] = events.Subscription(netns, flt, columns, kinds, expect, rcvbuf, sock=sock)
        return made["sub"]
    monkeypatch.setattr(cli.events, "subscribe", fake_subscribe)
    result = CliRunner().invoke(cli.app, ["events", "--seconds", "0.2", *args])
    return result, made.get("sub")


def test_cli_conntrack_lines(monkeypatch):
    result, _ = run_cli(monkeypatch, messages())
    assert result.exit_code == 0, result.output
    out = [line for line in result.stdout.splitlines() if not line.startswith("ctkit:")]
    assert [re.sub(r" labels=[\d,]+", "", line) for line in out] == reference()
    assert "ctkit: 45 events shown, 45 received, 0 lost (0 overruns)" in result.output


def test_cli_jsonl_with_a_loss(monkeypatch):
    msgs = messages()
    result, _ = run_cli(monkeypatch, msgs[:3] + [("enobufs", 11)] + msgs[3:5], "--json", "--fields",
                        "proto,sport,dport,state", "--proto", "tcp")
    assert result.exit_code == 1  # events were lost
    objs = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    # the two messages queued before the overrun come first, then the loss where the queue ran dry
    assert [o["event"] for o in objs] == ["new", "update", "update", "update", "new", "lost"]
    assert objs[0] == {"event": "new", "time": objs[0]["time"], "portid": 0, "proto": "tcp", "sport": 52458,
                       "dport": 8080, "state": "SYN_SENT"}
    assert objs[5]["lost"] == 11 and objs[5]["overruns"] == 1
    assert "ctkit: lost 11 events" in result.output and "ENOBUFS" in result.output
    assert "5 events shown, 5 received, 11 lost (1 overruns)" in result.output


def test_cli_count_stops_early(monkeypatch):
    result, sub = run_cli(monkeypatch, messages(), "--count", "3", "--event", "new,destroy")
    assert result.exit_code == 0
    assert len([line for line in result.stdout.splitlines() if line.startswith("    [NEW]")]) == 3
    assert sub.kinds == ("new", "destroy")


def test_cli_summary_json(monkeypatch):
    result, _ = run_cli(monkeypatch, messages(), "-o", "summary", "--json", "--interval", "0.05")
    assert result.exit_code == 0, result.output
    snaps = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    last = snaps[-1]
    assert last["totals"] == {"new": 11, "update": 23, "destroy": 11, "lost": 0, "overruns": 0}
    assert {p["dport"] for p in last["top_ports"]} >= {8080, 5353}


def test_cli_summary_text(monkeypatch):
    result, _ = run_cli(monkeypatch, messages(), "-o", "summary")
    assert result.exit_code == 0, result.output
    assert "events/s: new" in result.stdout and "since start: new 11  update 23  destroy 11" in result.stdout
    assert re.search(r"PROTO +STATE +NEW/s +UPDATE/s +DESTROY/s", result.stdout)
    assert re.search(r"icmpv6 +- +\d", result.stdout) and "TOP SOURCE" in result.stdout and "lost: 0" in result.stdout


def test_cli_expect(monkeypatch):
    data = fixture("events-expect.bin")
    mlen = int.from_bytes(data[:4], "little")
    result, _ = run_cli(monkeypatch, [data[:mlen], data[mlen:]], "--expect")
    assert result.exit_code == 0, result.output
    out = result.stdout.splitlines()
    assert out == fixture("conntrack-E-expect.txt", "r").splitlines()  # conntrack -E expect's lines, exactly


@pytest.mark.parametrize("args, message", [
    (["--json", "--format", "conntrack"], "--json and --format conntrack contradict each other"),
    (["--format", "json"], "--format must be conntrack, jsonl or summary"),
    (["--count", "0"], "--count must be 1 or more"),
    (["--seconds", "0"], "--seconds must be more than 0"),
    (["--buffer-size", "12Q"], "--buffer-size must be bytes from 4K to 1G"),
    (["--buffer-size", "2G"], "--buffer-size must be bytes from 4K to 1G"),
    (["--fields", "src"], "--fields applies to --format jsonl"),
    (["--fields", "srcx", "--json"], "unknown conntrack field 'srcx'"),
    (["--event", "new,create"], "unknown event kind create"),
    (["--expect", "--event", "update"], "unknown event kind update (known for expectations: new, destroy)"),
    (["--expect", "--state", "ESTABLISHED"], "--state does not apply to expectations"),
    (["--expect", "-o", "summary"], "--format summary counts conntrack events"),
    (["--dport", "70000"], "--dport must be 0-65535"),
])
def test_cli_refuses_bad_options_before_listening(monkeypatch, args, message):
    def never(*a, **k):
        raise AssertionError("no socket may be opened for a bad command line")
    if "unknown event kind" not in message:
        monkeypatch.setattr(cli.events, "subscribe", never)
    result = CliRunner().invoke(cli.app, ["events", *args])
    assert result.exit_code == 2, result.output
    assert message in result.output


def test_buffer_sizes():
    assert cli._size("64M") == 64 << 20 and cli._size("4096") == 4096 and cli._size("1g") == 1 << 30
    assert cli._size("512KiB") == 512 << 10
