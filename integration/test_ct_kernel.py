"""ct reader against the real kernel: entries, filters, stats, expectations, sysctls.

Real flows in a client/server pair (TCP, UDP, ICMP, IPv4 and IPv6, a helper,
marks, a zone, labels, counters, timestamps, DNAT); `ctkit ct list` must
match `conntrack -L` field by field on the same table.
"""
from __future__ import annotations

import json
import os
import socket
import struct
import time

import pytest
from lab import (
    CLIENT4,
    CLIENT6,
    SERVER4,
    SERVER6,
    icmp_echo,
    run,
    tcp_connect,
    tcp_listen,
    udp_exchange,
    udp_server,
    write_proc,
)
from typer.testing import CliRunner

from ctkit.cli.ct import app, sysctl_app
from ctkit.kernel import conntrack as ct
from ctkit.kernel import procfs
from ctkit.kernel.conntrack.dump import kernel_version
from ctkit.kernel.netns import entered

SERVER_RULES = """
table inet t {
    ct helper ftp-21 { type "ftp" protocol tcp; }
    chain raw {
        type filter hook prerouting priority -300;
        ip saddr %(c4)s udp dport 5300 ct zone set 3
    }
    chain nat {
        type nat hook prerouting priority -100;
        ip daddr %(s4)s tcp dport 9090 dnat ip to %(s4)s:90
    }
    chain in {
        type filter hook input priority 0;
        ct state new counter
        tcp dport 21 ct helper set "ftp-21"
        meta l4proto icmp ct mark set 7
        udp dport 5353 ct mark set 0x42
        tcp dport 8080 ct label set 3
    }
}
""" % {"c4": CLIENT4, "s4": SERVER4}


def _ftp_pasv(client: str, server: str) -> None:
    """A control connection whose server answer makes the ftp helper expect a data flow."""
    listener = tcp_listen(server, SERVER4, 21)
    with entered(client):
        c = socket.socket()
    c.settimeout(1.0)
    try:
        c.connect((SERVER4, 21))
        conn, _ = listener.accept()
        conn.settimeout(1.0)
        # the helper parses only data that follows a line end it saw: a banner first
        conn.sendall(b"220 ctkit\r\n")
        c.recv(64)
        c.sendall(b"PASV\r\n")
        conn.recv(64)
        # 192.0.2.10 port 10000 = 39*256 + 16
        conn.sendall(b"227 Entering Passive Mode (192,0,2,10,39,16).\r\n")
        c.recv(128)
        conn.close()
    finally:
        c.close()
        listener.close()


def build_flows(client: str, server: str) -> None:
    """Every kind of entry the decoder must handle, tracked in `server`."""
    run(server, "nft", "-f", "-", input=SERVER_RULES)
    for name in ("nf_conntrack_acct", "nf_conntrack_timestamp"):
        write_proc(server, f"/proc/sys/net/netfilter/{name}", "1")
    listeners = [tcp_listen(server, SERVER4, 8080), tcp_listen(server, SERVER6, 8080),
                 tcp_listen(server, SERVER4, 90)]
    try:
        assert tcp_connect(client, SERVER4, 8080)
        assert tcp_connect(client, SERVER6, 8080)
        assert tcp_connect(client, SERVER4, 9090)  # DNAT to port 90
        assert not tcp_connect(client, SERVER4, 8081)  # RST: a closed TCP entry
    finally:
        for sock in listeners:
            sock.close()
    for addr, port in ((SERVER4, 5353), (SERVER6, 5353), (SERVER4, 5300)):
        srv = udp_server(server, addr, port)
        try:
            assert udp_exchange(client, srv, addr, port) == (True, True)
        finally:
            srv.close()
    assert icmp_echo(client, SERVER4, timeout=1.0)
    assert icmp_echo(client, SERVER6, timeout=1.0)
    _ftp_pasv(client, server)


# ------------------------------------------------------ conntrack -L parsing

def conntrack_L(ns: str, *args: str) -> list[procfs.ProcEntry]:
    """`conntrack -L -o extended` parsed (same layout as /proc/net/nf_conntrack)."""
    out = run(ns, "conntrack", "-L", "-o", "extended", *args, check=False).stdout
    return list(procfs.parse_conntrack(out.splitlines()))


def key_of_proc(e: procfs.ProcEntry) -> tuple:
    o = e.orig
    return (e.family, e.protonum, o.get("src"), o.get("dst"), o.get("sport"), o.get("dport"),
            o.get("type"), o.get("id"))


def key_of_ctkit(d: dict) -> tuple:
    def s(v):
        return None if v is None else str(v)
    import ipaddress
    def a(v):
        return None if v is None else str(ipaddress.ip_address(v))
    return (d["family"], d["protonum"], a(d["src"]), a(d["dst"]), s(d["sport"]), s(d["dport"]),
            s(d["icmp_type"]), s(d["icmp_id"]))


def norm_proc_addr(e: procfs.ProcEntry) -> procfs.ProcEntry:
    import ipaddress
    for side in (e.orig, e.reply):
        for k in ("src", "dst"):
            if k in side:
                side[k] = str(ipaddress.ip_address(side[k]))
    return e


def _ctkit_json(*args: str) -> list[dict]:
    result = CliRunner().invoke(app, ["list", "--format", "json", *args])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


@pytest.fixture
def flows(pair):
    client, server = pair
    build_flows(client, server)
    return client, server


def test_list_matches_conntrack_field_by_field(flows):
    _, server = flows
    ours = _ctkit_json("--netns", server)
    theirs = [norm_proc_addr(e) for e in conntrack_L(server)]
    assert len(ours) >= 10
    by_key = {key_of_ctkit(d): d for d in ours}
    assert set(by_key) == {key_of_proc(e) for e in theirs}, "entry sets differ"
    seen_protos = set()
    for e in theirs:
        d = by_key[key_of_proc(e)]
        seen_protos.add((d["family"], d["proto"]))
        assert d["proto"] == e.proto or (e.proto == "unknown")
        assert abs(d["timeout"] - e.timeout) <= 2
        assert d["state"] == e.state or (e.state is None and d["state"] is None)
        assert str(d["reply_src"]) == e.reply["src"] and str(d["reply_dst"]) == e.reply["dst"]
        if "sport" in e.reply:
            assert (str(d["reply_sport"]), str(d["reply_dport"])) == (e.reply["sport"], e.reply["dport"])
        assert ("UNREPLIED" in e.flags) == ("SEEN_REPLY" not in d["status"])
        assert ("ASSURED" in e.flags) == ("ASSURED" in d["status"])
        assert d["mark"] == e.mark
        assert d["zone"] == e.zone
        assert d["use"] == e.use
        assert d["helper"] == e.extra.get("helper")
        assert (d["orig_packets"], d["orig_bytes"]) == (int(e.orig["packets"]), int(e.orig["bytes"]))
        assert (d["reply_packets"], d["reply_bytes"]) == (int(e.reply["packets"]), int(e.reply["bytes"]))
        assert d["start"] and d["start"] > 1_600_000_000 * 10**9
    assert {("ipv4", "tcp"), ("ipv6", "tcp"), ("ipv4", "udp"), ("ipv6", "udp"), ("ipv4", "icmp"),
            ("ipv6", "icmpv6")} <= seen_protos
    dnat = [d for d in ours if d["dport"] == 9090]
    assert dnat and dnat[0]["reply_sport"] == 90 and "DST_NAT" in dnat[0]["status"]
    assert any(d["zone"] == 3 for d in ours)
    assert any(d["labels"] == [3] for d in ours)
    assert any(d["helper"] == "ftp" for d in ours)


def test_conntrack_text_format_matches_conntrack_L(flows):
    _, server = flows
    result = CliRunner().invoke(app, ["list", "--netns", server])
    assert result.exit_code == 0, result.output
    theirs = run(server, "conntrack", "-L", check=False).stdout.splitlines()

    def strip_timeout(line: str) -> str:
        words = line.split()
        return " ".join(w if not w.startswith("delta-time=") else "delta-time" for w in words[:2] + words[3:])
    # conntrack -L prints no labels (only with -o labels, by connlabel.conf's names): neither does ctkit
    ours = result.stdout.splitlines()
    ours, theirs = sorted(map(strip_timeout, ours)), sorted(map(strip_timeout, theirs))
    assert [a for a in ours if a not in theirs] == [b for b in theirs if b not in ours] == []
    assert ours == theirs


def _strip_timeout(line: str) -> str:
    words = line.split()
    return " ".join(words[:2] + words[3:])


def test_a_big_table_lists_as_conntrack_L_lists_it(lab):
    """30,000 entries loaded with conntrack -R (IPv4 and IPv6, TCP states, UDP, marks, many dump chunks):
    `ct list` prints conntrack -L's lines and `ct list --json` one object per entry with the same tuples."""
    ns = lab.netns("big")
    path = f"/tmp/ctkit-big-{os.getpid()}.txt"
    states = ("ESTABLISHED", "TIME_WAIT", "SYN_SENT", "CLOSE_WAIT")
    with open(path, "w") as f:
        for i in range(30000):
            src = f"10.{i >> 8 & 255}.{i & 255}.1" if i % 3 else f"2001:db8:{i:x}::1"
            dst = "192.0.2.1" if i % 3 else "2001:db8:ffff::1"
            if i % 2:
                f.write(f"-A -t 3600 -u SEEN_REPLY,ASSURED -s {src} -d {dst} -p tcp --sport {1024 + i % 60000} "
                        f"--dport 443 --state {states[i % 4]} -m {i % 5}\n")
            else:
                f.write(f"-A -t 3600 -s {src} -d {dst} -p udp --sport {1024 + i % 60000} --dport 53\n")
    try:
        run(ns, "conntrack", "-R", path, check=False, timeout=120)
    finally:
        os.unlink(path)
    assert ct.count(ns).entries == 30000
    result = CliRunner().invoke(app, ["list", "--netns", ns])
    assert result.exit_code == 0, result.output
    theirs = sorted(map(_strip_timeout, run(ns, "conntrack", "-L", check=False).stdout.splitlines()))
    ours = sorted(map(_strip_timeout, result.stdout.splitlines()))
    assert len(ours) == 30000 and ours == theirs
    result = CliRunner().invoke(app, ["list", "--netns", ns, "--format", "jsonl", "--fields", "src,dst,sport,mark"])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.stdout.splitlines()]

    def first(line: str, key: str) -> str:  # the original direction's value: its words come first
        return next(w for w in line.split() if w.startswith(key + "="))[len(key) + 1:]
    assert sorted((r["src"], r["sport"], r["mark"]) for r in rows) == sorted(
        (first(line, "src"), int(first(line, "sport")), int(first(line, "mark"))) for line in theirs)


def test_kernel_side_mark_filter_returns_exactly_the_marked(flows):
    _, server = flows
    marked = [d for d in _ctkit_json("--netns", server) if d["mark"] == 0x42]
    assert len(marked) == 2  # UDP 5353 over IPv4 and IPv6
    got = _ctkit_json("--netns", server, "--mark", "0x42")
    assert sorted(map(key_of_ctkit, got)) == sorted(map(key_of_ctkit, marked))
    assert {key_of_proc(norm_proc_addr(e)) for e in conntrack_L(server, "--mark", "0x42")} \
        == set(map(key_of_ctkit, got))
    masked = _ctkit_json("--netns", server, "--mark", "0x40/0x40")  # 7 & 0x40 == 0
    assert sorted(map(key_of_ctkit, masked)) == sorted(map(key_of_ctkit, marked))
    # and through the kernel filter itself, without ctkit's second check
    flt = ct.Filter.parse(mark="0x42")
    from ctkit.kernel import ctnetlink as nl
    with entered(server):
        sock = nl.NetlinkSocket()
    with sock:
        n = sum(1 for buf, ln in sock.request(nl.NFNL_SUBSYS_CTNETLINK, nl.IPCTNL_MSG_CT_GET, 0,
                                              flt.request(kernel_version()))
                for _ in nl.messages(buf, ln))
    assert n == 2


def test_other_filters(flows):
    _, server = flows
    everything = _ctkit_json("--netns", server)
    cases = [
        (["--family", "ipv6"], lambda d: d["family"] == "ipv6"),
        (["-p", "udp", "--dport", "5353"], lambda d: d["proto"] == "udp" and d["dport"] == 5353),
        (["--src", f"{CLIENT6}"], lambda d: d["src"] == CLIENT6),
        (["--src", "192.0.2.0/24", "-p", "tcp"], lambda d: d["family"] == "ipv4" and d["proto"] == "tcp"),
        (["--state", "CLOSE,TIME_WAIT"], lambda d: d["state"] in ("CLOSE", "TIME_WAIT")),
        (["--status", "ASSURED"], lambda d: "ASSURED" in d["status"]),
        (["--zone", "3"], lambda d: d["zone"] == 3),
        (["--helper", "ftp"], lambda d: d["helper"] == "ftp"),
        (["--reply-src", f"{SERVER4}", "--dst", SERVER4, "--dport", "9090", "-p", "tcp"],
         lambda d: d["dport"] == 9090),
    ]
    for args, pred in cases:
        want = sorted(map(key_of_ctkit, filter(pred, everything)))
        assert want, args
        assert sorted(map(key_of_ctkit, _ctkit_json("--netns", server, *args))) == want, args


def test_summary_count_and_expectations(flows):
    _, server = flows
    everything = _ctkit_json("--netns", server)
    result = CliRunner().invoke(app, ["summary", "--netns", server, "--by", "family,proto", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["total"] == len(everything)
    for g in data["groups"]:
        assert g["count"] == sum(1 for d in everything if (d["family"], d["proto"]) == (g["family"], g["proto"]))
    c = ct.count(server)
    assert c.entries == len(everything) == int(run(server, "cat", "/proc/sys/net/netfilter/nf_conntrack_count").stdout)
    exps = ct.expectations(server)
    assert [(e.proto, e.dst, e.dport, e.helper) for e in exps] == [("tcp", SERVER4, 10000, "ftp")]
    listing = run(server, "conntrack", "-L", "expect", check=False).stdout
    assert "dport=10000" in listing


def test_stats_see_invalid_packets(pair):
    client, server = pair
    run(server, "nft", "-f", "-", input=SERVER_RULES)
    write_proc(server, "/proc/sys/net/netfilter/nf_conntrack_tcp_loose", "0")
    before = ct.stats(server)
    assert before.source == "ctnetlink"
    # a bare ACK with no connection is invalid once tcp_loose is off
    with entered(client):
        raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_TCP)
    try:
        for _ in range(5):
            tcp = struct.pack("!HHIIBBHHH", 40000, 8080, 1, 1, 5 << 4, 0x10, 1024, 0, 0)
            raw.sendto(tcp, (SERVER4, 0))
    finally:
        raw.close()
    deadline = time.monotonic() + 2
    after = ct.stats(server)
    while after.total("invalid") < before.total("invalid") + 5 and time.monotonic() < deadline:
        time.sleep(0.05)
        after = ct.stats(server)
    assert after.total("invalid") >= before.total("invalid") + 5
    with entered(server):
        proc = procfs.read_stat()
    assert proc is not None and proc.total("invalid") == after.total("invalid")
    result = CliRunner().invoke(app, ["stats", "--netns", server, "--json"])
    assert result.exit_code == 0
    assert json.loads(result.stdout)["totals"]["invalid"] == after.total("invalid")


def test_count_says_the_count_and_the_maximum(lab):
    ns = lab.netns("cnt")  # a new namespace tracks nothing yet
    with open("/proc/sys/net/netfilter/nf_conntrack_max") as f:
        host_max = int(f.read())
    result = CliRunner().invoke(app, ["count", "--netns", ns])
    assert result.exit_code == 0 and result.stdout == f"0 entries, nf_conntrack_max {host_max} (host-wide)\n"


def test_table_full_makes_drop_rise(lab):
    """Fill one namespace's table to the host-wide max; its new flows are dropped."""
    with open("/proc/sys/net/netfilter/nf_conntrack_max") as f:
        host_max = int(f.read())
    if host_max > 300_000:
        pytest.skip(f"nf_conntrack_max is {host_max}: too large to fill in a test")
    server = lab.netns("full")
    client = lab.netns("fcli")
    lab.link(client, server, [f"{CLIENT4}/24"], [f"{SERVER4}/24"])
    run(server, "nft", "-f", "-", input=SERVER_RULES)
    # ASSURED entries cannot be evicted early: the table stays full and new flows drop
    lines = (f"-A -t 600 -u SEEN_REPLY,ASSURED -s 10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255} -d 10.255.0.1 -p udp "
             f"--sport 1 --dport 2\n" for i in range(host_max))
    path = f"/tmp/ctkit-fill-{os.getpid()}.txt"
    try:
        with open(path, "w") as f:
            f.writelines(lines)
        run(server, "conntrack", "-R", path, check=False, timeout=120)
    finally:
        os.unlink(path)
    assert ct.count(server).entries >= host_max - 10
    before = ct.stats(server).total("drop")
    for port in range(20000, 20020):
        tcp_connect(client, SERVER4, port, timeout=0.2)
    after = ct.stats(server)
    assert after.total("drop") > before
    result = CliRunner().invoke(app, ["count", "--netns", server, "--json"])
    assert json.loads(result.stdout)["entries"] >= host_max - 10


def test_sysctl_show_and_set(lab):
    ns = lab.netns("sys")
    result = CliRunner().invoke(sysctl_app, ["show", "--netns", ns, "--json"])
    assert result.exit_code == 0, result.output
    rows = {r["name"]: r for r in json.loads(result.stdout)}
    helper = rows["net.netfilter.nf_conntrack_helper"]
    assert helper["exists"] is False and "off" in helper["note"]
    assert rows["net.netfilter.nf_conntrack_max"]["writable"] is False
    assert rows["net.netfilter.nf_conntrack_max"]["host_wide"] is True
    assert rows["net.netfilter.nf_conntrack_tcp_loose"]["writable"] is True
    ok = CliRunner().invoke(sysctl_app, ["set", "--netns", ns, "net.netfilter.nf_conntrack_tcp_loose=0"])
    assert ok.exit_code == 0, ok.output
    assert run(ns, "cat", "/proc/sys/net/netfilter/nf_conntrack_tcp_loose").stdout.strip() == "0"
    with open("/proc/sys/net/netfilter/nf_conntrack_tcp_loose") as f:
        assert f.read().strip() == "1"  # the host's own setting is untouched
    refused = CliRunner().invoke(sysctl_app, ["set", "--netns", ns, "nf_conntrack_max=1000"])
    assert refused.exit_code == 2 and "host-wide" in refused.output
    absent = CliRunner().invoke(sysctl_app, ["set", "--netns", ns, "nf_conntrack_helper=1"])
    assert absent.exit_code == 2 and "removed in Linux 6.0" in absent.output
    bad = CliRunner().invoke(sysctl_app, ["set", "--netns", ns, "nf_conntrack_tcp_loose"])
    assert bad.exit_code == 2


def test_delete_removes_exactly_the_given_entries(flows):
    _, server = flows
    everything = _ctkit_json("--netns", server)
    doomed = [d for d in everything if d["dport"] == 5353] + [d for d in everything if d["proto"] == "icmp"]
    assert len(doomed) == 3
    stale = dict(doomed[0], sport=1)  # same id, other tuple: must be left alone
    assert ct.delete(server, [stale]) == 0
    assert ct.delete(server, doomed) == 3
    assert ct.delete(server, doomed) == 0  # already gone
    left = {key_of_proc(norm_proc_addr(e)) for e in conntrack_L(server)}
    assert left == {key_of_ctkit(d) for d in everything if d not in doomed}
