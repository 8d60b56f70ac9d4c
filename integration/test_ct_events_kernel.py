"""`ctkit ct events` against `conntrack -E` on the same traffic, in a namespace pair made for the test.

Both listen in the server namespace (ctkit from outside, through --netns: its socket is opened after
entering the namespace); the client opens UDP flows from many source ports (IPv4 and IPv6, some
answered) and a few TCP connections, then every entry is deleted. Both tools must print the same
new, update and destroy events. Traffic and deletions are paced in small steps because conntrack -E
keeps the kernel's default receive buffer (about 160 events; in conntrack-tools 1.4.7 its -b option
sets the buffer of its other netlink socket, not of the one that joined the event groups), and every
loop is bounded in count and time. A separate test overruns a 4K buffer on loopback and checks what
ctkit reports against the kernel's own figures.
"""
from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
import sys
import time

import pytest
from lab import CLIENT4, CLIENT6, SERVER4, SERVER6, nft_json, run, sock, tcp_listen
from test_ct_kernel import _ftp_pasv

from ctkit.kernel import conntrack as ct
from ctkit.kernel import ctnetlink as nl
from ctkit.kernel.netns import entered

TRACK = """table inet t {
    ct helper ftp-21 { type "ftp" protocol tcp; }
    chain in {
        type filter hook input priority 0;
        ct state new counter
        tcp dport 21 ct helper set "ftp-21"
    }
}
"""
UDP4, UDP6, TCP, STEP = 600, 200, 10, 10  # flows; STEP flows (or deletions) per 10 ms
LINE = re.compile(r"^\s*\[(NEW|UPDATE|DESTROY)\] (\S+)\s+\d+ .*?src=(\S+) dst=(\S+) (?:sport=(\d+) dport=(\d+))?")


def event_sockets(ns: str) -> list[tuple[int, int]]:
    """(bytes queued, messages dropped) of every ctnetlink socket in `ns` that joined an event group."""
    with entered(ns):
        with open("/proc/thread-self/net/netlink") as f:
            rows = [line.split() for line in f.read().splitlines()[1:]]
    return [(int(r[4]), int(r[8])) for r in rows if int(r[1]) == nl.NETLINK_NETFILTER and int(r[3], 16)]


def wait_for(what: str, check, timeout: float = 20.0) -> None:
    end = time.monotonic() + timeout
    while not check():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def drained(ns: str) -> bool:
    """Every listener has read its queue empty, and stays so for 0.3 s."""
    for _ in range(6):
        if any(queued for queued, _ in event_sockets(ns)):
            return False
        time.sleep(0.05)
    return True


class Listeners:
    """ctkit ct events (conntrack lines and jsonl) and conntrack -E in `ns`, writing to files."""

    def __init__(self, ns: str, tmp, expect: bool = False, *extra: str) -> None:
        self.ns, self.tmp, self.procs = ns, tmp, {}
        before = len(event_sockets(ns))
        ck = [sys.executable, "-m", "ctkit", "ct", "events", "--netns", ns, *(["--expect"] if expect else []), *extra]
        self._start("text", ck)
        self._start("jsonl", ck + ["--format", "jsonl"])
        self._start("conntrack", ["ip", "netns", "exec", ns, "conntrack", "-E", *(["expect"] if expect else [])])
        wait_for("the three listeners to subscribe", lambda: len(event_sockets(ns)) >= before + 3)

    def _start(self, name: str, argv: list[str]) -> None:
        out, err = (open(self.tmp / f"{name}.{k}", "w+") for k in ("out", "err"))
        self.procs[name] = (subprocess.Popen(argv, stdout=out, stderr=err, text=True), out, err)

    def stop(self) -> dict[str, tuple[int, str, str]]:
        wait_for("the listeners to read everything", lambda: drained(self.ns), timeout=30)
        results = {}
        for name, (proc, out, err) in self.procs.items():
            proc.send_signal(signal.SIGTERM)
            try:
                code = proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                code = proc.wait(timeout=5)
            out.seek(0)
            err.seek(0)
            results[name] = (code, out.read(), err.read())
            out.close()
            err.close()
        return results

    def kill(self) -> None:
        for proc, out, err in self.procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=5)
            out.close()
            err.close()


def paced_udp(client: str, server: str, addr: str, first_port: int, n: int, answer_every: int) -> None:
    family = socket.AF_INET6 if ":" in addr else socket.AF_INET
    srv = sock(server, family, socket.SOCK_DGRAM)
    srv.bind((addr, 5353))
    srv.settimeout(1.0)
    local = CLIENT6 if ":" in addr else CLIENT4
    try:
        for i in range(n):
            c = sock(client, family, socket.SOCK_DGRAM)
            try:
                c.bind((local, first_port + i))
                c.sendto(b"q", (addr, 5353))
                if answer_every and i % answer_every == 0:
                    _, peer = srv.recvfrom(64)
                    srv.sendto(b"a", peer)  # an answer: SEEN_REPLY, an update event
            finally:
                c.close()
            if i % STEP == STEP - 1:
                time.sleep(0.01)
    finally:
        srv.close()


def paced_tcp(client: str, server: str, n: int) -> None:
    listener = tcp_listen(server, SERVER4, 8080)
    listener.settimeout(2.0)
    try:
        for _ in range(n):
            c = sock(client, socket.AF_INET, socket.SOCK_STREAM)
            c.settimeout(2.0)
            try:
                c.connect((SERVER4, 8080))
                conn, _ = listener.accept()
                conn.close()
            finally:
                c.close()
            time.sleep(0.02)
    finally:
        listener.close()


def paced_delete(server: str) -> int:
    """Delete every entry of `server`, STEP at a time; returns how many went."""
    cols = ("id", "family", "proto", "src", "dst", "sport", "dport", "icmp_type", "icmp_code", "icmp_id", "zone")
    todo = [e.as_dict() for e in ct.entries(server, columns=cols)]
    removed = 0
    deadline = time.monotonic() + 60
    for i in range(0, len(todo), STEP):
        removed += ct.delete(server, todo[i:i + STEP])
        time.sleep(0.01)
        assert time.monotonic() < deadline, "deleting took more than 60 s"
    return removed


def conntrack_events(text: str) -> list[tuple]:
    out = []
    for line in text.splitlines():
        m = LINE.match(line)
        if m:
            kind, proto, src, dst, sport, dport = m.groups()
            out.append((kind.lower(), proto, src, dst, int(sport) if sport else None, int(dport) if dport else None))
    return out


def normal(line: str) -> str:
    """A line without what depends on the moment: the program name of a port id, connlabels."""
    return re.sub(r" (progname=\S+|labels=[\d,]+)", "", line)


def collected(out, err) -> tuple[list[dict], str]:
    """What a `ct events --format jsonl` child wrote to its two temporary files: the records, stderr."""
    out.seek(0)
    err.seek(0)
    try:
        return [json.loads(line) for line in out.read().splitlines()], err.read()
    finally:
        out.close()
        err.close()

def test_same_events_as_conntrack_E(pair, tmp_path):
    client, server = pair
    run(server, "nft", "-f", "-", input=TRACK)
    listeners = Listeners(server, tmp_path)
    try:
        paced_udp(client, server, SERVER4, 20000, UDP4, answer_every=4)
        paced_udp(client, server, SERVER6, 30000, UDP6, answer_every=4)
        paced_tcp(client, server, TCP)
        time.sleep(0.2)
        assert paced_delete(server) >= UDP4 + UDP6 + TCP
        results = listeners.stop()
    except BaseException:
        listeners.kill()
        raise
    code, text, err = results["conntrack"]
    assert "ENOBUFS" not in err, f"conntrack -E lost events (a loaded machine): {err}"
    theirs = conntrack_events(text)
    for name in ("text", "jsonl"):
        code, _, err = results[name]
        assert code == 0, err
        assert "0 lost (0 overruns)" in err, err
    ours_text = results["text"][1]
    ours = [json.loads(line) for line in results["jsonl"][1].splitlines()]
    mine = [(o["event"], o["proto"], o["src"], o["dst"], o["sport"], o["dport"]) for o in ours]
    for kind in ("new", "update", "destroy"):
        assert sorted(e for e in mine if e[0] == kind) == sorted(e for e in theirs if e[0] == kind), kind
    # every flow was seen to come and to go, by both
    news = {e[1:] for e in mine if e[0] == "new"}
    assert news == {e[1:] for e in mine if e[0] == "destroy"}
    assert len([e for e in news if e[0] == "udp"]) == UDP4 + UDP6 and len([e for e in news if e[0] == "tcp"]) == TCP
    assert len([e for e in mine if e[0] == "update" and e[1] == "udp"]) == (UDP4 + UDP6) // 4
    # and the conntrack-style lines are conntrack -E's lines
    assert sorted(map(normal, ours_text.splitlines())) == sorted(map(normal, text.splitlines()))


def test_expectation_events_as_conntrack_E_expect(pair, tmp_path):
    client, server = pair
    run(server, "nft", "-f", "-", input=TRACK)
    listeners = Listeners(server, tmp_path, True)
    try:
        _ftp_pasv(client, server)
        time.sleep(0.2)
        run(server, "conntrack", "-F", "expect")
        results = listeners.stop()
    except BaseException:
        listeners.kill()
        raise
    theirs = results["conntrack"][1].splitlines()
    assert [line.split()[0] for line in theirs] == ["[NEW]", "[DESTROY]"]
    ours = results["text"][1].splitlines()
    assert [line.split()[0] for line in ours] == ["[NEW]", "[DESTROY]"]
    objs = [json.loads(line) for line in results["jsonl"][1].splitlines()]
    assert [(o["event"], o["proto"], o["src"], o["dst"], o["dport"], o["helper"]) for o in objs] == [
        ("new", "tcp", CLIENT4, SERVER4, 10000, "ftp"), ("destroy", "tcp", CLIENT4, SERVER4, 10000, "ftp")]
    for line, o in zip(theirs, objs, strict=True):
        assert f"src={o['src']} dst={o['dst']} sport={o['sport']} dport={o['dport']}" in line
        assert f"master-src={o['master_src']} master-dst={o['master_dst']} sport={o['master_sport']} " \
               f"dport={o['master_dport']}" in line


def test_a_full_queue_is_a_counted_loss(pair, tmp_path):
    """A 4K receive buffer and a burst of destroys: the kernel drops events; ctkit says how many."""
    client, server = pair
    run(server, "nft", "-f", "-", input=TRACK)
    n = 400
    out, err = open(tmp_path / "out", "w+"), open(tmp_path / "err", "w+")
    before = len(event_sockets(server))
    proc = subprocess.Popen([sys.executable, "-m", "ctkit", "ct", "events", "--netns", server, "--json",
                             "--event", "destroy", "--buffer-size", "4K", "--seconds", "20"],
                            stdout=out, stderr=err, text=True)
    try:
        wait_for("ctkit to subscribe", lambda: len(event_sockets(server)) > before)
        with entered(server):
            sock_ = nl.NetlinkSocket()
        with sock_:
            for i in range(n):  # entries made over ctnetlink: fast, and no traffic needed
                src = bytes((10, 9, i >> 8, i & 255))
                tup = nl.nest(nl.CTA_TUPLE_IP, nl.attr(nl.CTA_IP_V4_SRC, src),
                              nl.attr(nl.CTA_IP_V4_DST, socket.inet_aton(SERVER4)))
                proto = nl.nest(nl.CTA_TUPLE_PROTO, nl.u8(nl.CTA_PROTO_NUM, 17), nl.u16(nl.CTA_PROTO_SRC_PORT, 999),
                                nl.u16(nl.CTA_PROTO_DST_PORT, 53))
                rtup = nl.nest(nl.CTA_TUPLE_IP, nl.attr(nl.CTA_IP_V4_SRC, socket.inet_aton(SERVER4)),
                               nl.attr(nl.CTA_IP_V4_DST, src))
                rproto = nl.nest(nl.CTA_TUPLE_PROTO, nl.u8(nl.CTA_PROTO_NUM, 17), nl.u16(nl.CTA_PROTO_SRC_PORT, 53),
                                 nl.u16(nl.CTA_PROTO_DST_PORT, 999))
                payload = (nl.nest(nl.CTA_TUPLE_ORIG, tup, proto) + nl.nest(nl.CTA_TUPLE_REPLY, rtup, rproto)
                           + nl.u32(nl.CTA_TIMEOUT, 300))
                for _ in sock_.request(nl.NFNL_SUBSYS_CTNETLINK, nl.IPCTNL_MSG_CT_NEW, socket.AF_INET, payload,
                                       dump=False, flags=nl.NLM_F_CREATE, what="creating a test entry"):
                    pass
            assert ct.count(server).entries >= n
            for _ in sock_.request(nl.NFNL_SUBSYS_CTNETLINK, nl.IPCTNL_MSG_CT_DELETE, 0, dump=False,
                                   what="flushing"):  # n destroy events at once
                pass
        wait_for("ctkit to read what it could", lambda: drained(server), timeout=30)
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=5)
    objs, text = collected(out, err)
    destroys = [o for o in objs if o["event"] == "destroy"]
    losses = [o for o in objs if o["event"] == "lost"]
    lost = sum(o["lost"] for o in losses)
    assert losses and lost > 0, text
    assert len(destroys) + lost == n  # every event is either shown or counted as lost
    assert code == 1 and "ENOBUFS" in text and f"{len(destroys)} events shown" in text and f"{lost} lost" in text


LOOPBACK_TRACK = """table inet t {
    chain out {
        type filter hook output priority 0;
        ct state new counter
    }
    chain in {
        type filter hook input priority 0;
        meta l4proto udp udp dport 1024-61023 drop
    }
}
"""


def new_flows_counted(ns: str) -> int:
    """Packets the kernel's `ct state new counter` rule counted: one per entry conntrack created."""
    for item in nft_json(ns, "list", "chain", "inet", "t", "out"):
        for expr in item.get("rule", {}).get("expr", []):
            if "counter" in expr:
                return expr["counter"]["packets"]
    raise AssertionError("the ct state new counter is missing")


def test_an_overrun_is_counted_against_the_kernels_figures(lab, tmp_path):
    """Flows sent as fast as possible and then flushed, at a listener with a 4K buffer: what ctkit shows plus
    what it reports lost is every event the kernel made (the entries it counted creating and flushing), and
    its lost figure is the kernel's own drop counter for its socket."""
    ns = lab.netns("ev")
    run(ns, "nft", "-f", "-", input=LOOPBACK_TRACK)  # tracked in output, dropped in input: no ICMP answers
    n = 3000
    out, err = open(tmp_path / "out", "w+"), open(tmp_path / "err", "w+")
    proc = subprocess.Popen([sys.executable, "-m", "ctkit", "ct", "events", "--netns", ns, "--json",
                             "--buffer-size", "4K", "--seconds", "60"], stdout=out, stderr=err, text=True)
    try:
        wait_for("ctkit to subscribe", lambda: len(event_sockets(ns)) == 1)
        udp = sock(ns, socket.AF_INET, socket.SOCK_DGRAM)
        with udp:
            for i in range(n):  # n new flows (one socket, n destinations on 127/8), unpaced: a burst
                udp.sendto(b"x", (f"127.0.{1 + i // 1000}.1", 1024 + i % 1000))
        wait_for("ctkit to read the new events", lambda: drained(ns), timeout=30)
        created, in_table = new_flows_counted(ns), ct.count(ns).entries
        with entered(ns):
            flusher = nl.NetlinkSocket()
        with flusher:
            for _ in flusher.request(nl.NFNL_SUBSYS_CTNETLINK, nl.IPCTNL_MSG_CT_DELETE, 0, dump=False,
                                     what="flushing"):  # a destroy event for every entry, at once
                pass
        destroyed = in_table - ct.count(ns).entries
        wait_for("ctkit to read the destroy events", lambda: drained(ns), timeout=30)
        ((_, kernel_drops),) = event_sockets(ns)  # the only listener: ctkit's socket, before it closes
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=5)
    objs, text = collected(out, err)
    assert created == in_table == n and destroyed == n  # the kernel made n entries, then removed them
    shown = {kind: sum(1 for o in objs if o["event"] == kind) for kind in ("new", "update", "destroy")}
    lost = sum(o["lost"] for o in objs if o["event"] == "lost")
    assert kernel_drops > 0, "the 4K buffer did not overrun: the test proves nothing"
    assert lost == kernel_drops, text  # every drop the kernel counted is reported, none invented
    assert shown["new"] + shown["destroy"] + lost == created + destroyed and shown["update"] == 0
    assert code == 1 and f"{shown['new'] + shown['destroy']} events shown" in text and f"{lost} lost" in text


@pytest.mark.parametrize("args", [["--count", "3"], ["--seconds", "1"]])
def test_bounded_by_count_or_time(pair, tmp_path, args):
    client, server = pair
    run(server, "nft", "-f", "-", input=TRACK)
    start = time.monotonic()
    before = len(event_sockets(server))
    proc = subprocess.Popen([sys.executable, "-m", "ctkit", "ct", "events", "--netns", server, "-o", "jsonl", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for("ctkit to subscribe", lambda: len(event_sockets(server)) > before)
        if args[0] == "--count":
            paced_udp(client, server, SERVER4, 40000, 5, answer_every=0)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=5)
    assert proc.returncode == 0, err
    shown = out.splitlines()
    if args[0] == "--count":
        assert len(shown) == 3 and all(json.loads(line)["event"] == "new" for line in shown)
    else:
        assert shown == [] and time.monotonic() - start < 15
