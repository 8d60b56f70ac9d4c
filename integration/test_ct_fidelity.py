"""`ctkit ct list --format conntrack` and `ctkit ct expect` against conntrack(8) on the same table, line by line.

One server namespace holds every kind of entry the text layout distinguishes: real TCP,
UDP and ICMP flows over IPv4 and IPv6 (counters on), a label set by a rule, marks, and
entries made with `conntrack -I`: zones of both directions and of one (zone-orig,
zone-reply), protocols conntrack has no name for (igmp, 99), GRE keys, SCTP, DCCP and
UDP-Lite; and ftp expectations (PASV over IPv4, EPSV over IPv6). Each listing is taken
between two `conntrack -L` runs that agree, so the table did not move (timeouts tick
once a second) and the lines must be equal, sorted, word for word.
"""
from __future__ import annotations

import json
import socket
import time

from lab import SERVER4, SERVER6, icmp_echo, run, tcp_connect, tcp_listen, udp_exchange, udp_server, write_proc
from typer.testing import CliRunner

from ctkit.cli.ct import app
from ctkit.kernel import conntrack as ct
from ctkit.kernel import ctnetlink as nl
from ctkit.kernel.conntrack.dump import filtered, formatted_chunks
from ctkit.kernel.conntrack.layout import JsonFormat, Layout
from ctkit.kernel.conntrack.text import TEXT_COLUMNS, LineFormat, conntrack_line
from ctkit.kernel.netns import entered

RULES = """
table inet t {
    ct helper ftp-21 { type "ftp" protocol tcp; }
    chain in {
        type filter hook input priority 0;
        ct state new counter
        tcp dport 21 ct helper set "ftp-21"
        udp dport 5353 ct mark set 0x42
        tcp dport 8080 ct label set 3
    }
}
"""

# entries made by conntrack -I: (arguments, what they exercise)
INSERTS = [
    ("-s 198.51.100.1 -d 198.51.100.2 -p udp --sport 1000 --dport 2000 --orig-zone 4", "zone-orig"),
    ("-s 198.51.100.1 -d 198.51.100.3 -p udp --sport 1000 --dport 2000 --reply-zone 5", "zone-reply"),
    ("-s 198.51.100.1 -d 198.51.100.4 -p tcp --sport 1000 --dport 2000 --state ESTABLISHED -w 6 "
     "-u SEEN_REPLY,ASSURED", "zone of both directions"),
    ("-s 198.51.100.1 -d 198.51.100.5 -p 99", "a protocol without a name: unknown 99"),
    ("-s 198.51.100.1 -d 198.51.100.6 -p igmp", "igmp, which conntrack does not name"),
    ("-s 198.51.100.1 -d 198.51.100.7 -p gre --srckey 0x1a --dstkey 0x2b", "GRE keys in hex"),
    ("-s 198.51.100.1 -d 198.51.100.8 -p sctp --sport 1000 --dport 2000 --state ESTABLISHED "
     "--orig-vtag 1 --reply-vtag 2", "SCTP state"),
    ("-s 198.51.100.1 -d 198.51.100.9 -p dccp --sport 1000 --dport 2000 --state OPEN --role client",
     "DCCP without ports from the kernel: 0"),
    ("-s 198.51.100.1 -d 198.51.100.10 -p udplite --sport 1000 --dport 2000", "UDP-Lite"),
    ("-s 2001:db8:1::1 -d 2001:db8:1::2 -p udp --sport 1000 --dport 2000 --orig-zone 7 -m 9", "IPv6, zone-orig, mark"),
    ("-s 2001:db8:1::1 -d 2001:db8:1::3 -p 253", "IPv6, unknown 253"),
]


def _ftp(client: str, server: str, addr: str, command: bytes, answer: bytes) -> None:
    """A control connection whose server answer makes the ftp helper expect a data flow."""
    listener = tcp_listen(server, addr, 21)
    with entered(client):
        c = socket.socket(socket.AF_INET6 if ":" in addr else socket.AF_INET)
    c.settimeout(1.0)
    try:
        c.connect((addr, 21))
        conn, _ = listener.accept()
        conn.settimeout(1.0)
        conn.sendall(b"220 ctkit\r\n")  # the helper reads only what follows a line end it saw
        c.recv(64)
        c.sendall(command)
        conn.recv(64)
        conn.sendall(answer)
        c.recv(128)
        conn.close()
    finally:
        c.close()
        listener.close()


def build_table(client: str, server: str) -> None:
    """Every kind of entry and expectation the text layouts distinguish, in `server`."""
    run(server, "nft", "-f", "-", input=RULES)
    write_proc(server, "/proc/sys/net/netfilter/nf_conntrack_acct", "1")
    listeners = [tcp_listen(server, SERVER4, 8080), tcp_listen(server, SERVER6, 8080)]
    try:
        assert tcp_connect(client, SERVER4, 8080) and tcp_connect(client, SERVER6, 8080)
        assert not tcp_connect(client, SERVER4, 8081)  # RST: a CLOSE entry
    finally:
        for s in listeners:
            s.close()
    for addr in (SERVER4, SERVER6):
        srv = udp_server(server, addr, 5353)
        try:
            assert udp_exchange(client, srv, addr, 5353) == (True, True)
        finally:
            srv.close()
        assert icmp_echo(client, addr, timeout=1.0)
    _ftp(client, server, SERVER4, b"PASV\r\n", b"227 Entering Passive Mode (192,0,2,10,39,16).\r\n")
    _ftp(client, server, SERVER6, b"EPSV\r\n", b"229 Entering Extended Passive Mode (|||10002|)\r\n")
    for args, what in INSERTS:
        proc = run(server, "conntrack", "-I", *args.split(), "-t", "3000", check=False)
        assert proc.returncode == 0, f"conntrack -I for {what}: {proc.stderr.strip()}"


def conntrack_text(ns: str, *args: str) -> list[str]:
    return sorted(run(ns, "conntrack", "-L", *args, check=False).stdout.splitlines())


def steady(theirs, ours, attempts: int = 5) -> tuple[list[str], list[str]]:
    """(their lines, our lines) where `ours` ran between two readings of `theirs` that agree."""
    for _ in range(attempts):
        before = theirs()
        mine = ours()
        if theirs() == before:
            return before, mine
        time.sleep(0.2)
    raise AssertionError(f"the table kept changing over {attempts} attempts")


def ctkit(*args: str) -> str:
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result.stdout


def test_list_text_equals_conntrack_L_line_by_line(pair):
    client, server = pair
    build_table(client, server)
    theirs, ours = steady(lambda: conntrack_text(server),
                          lambda: sorted(ctkit("list", "--netns", server, "--format", "conntrack").splitlines()))
    assert len(theirs) >= len(INSERTS) + 8
    # each kind is in the table, as conntrack prints it
    for word in ("zone-orig=4", "zone-reply=5", "zone=6", "unknown  99", "unknown  2 ", "unknown  253",
                 "srckey=0x1a dstkey=0x2b", "sctp     132", "dccp     33", "udplite  136", "icmpv6   58",
                 "packets=", "mark=66", "helper=ftp"):
        assert any(word in line for line in theirs), word
    assert [a for a in ours if a not in theirs] == [b for b in theirs if b not in ours] == []
    assert ours == theirs


def test_json_carries_every_field(pair):
    client, server = pair
    build_table(client, server)
    rows = json.loads(ctkit("list", "--netns", server, "--format", "json"))
    by_dst = {r["dst"]: r for r in rows}
    assert (by_dst["198.51.100.2"]["orig_zone"], by_dst["198.51.100.2"]["reply_zone"]) == (4, None)
    assert (by_dst["198.51.100.3"]["orig_zone"], by_dst["198.51.100.3"]["reply_zone"]) == (None, 5)
    assert (by_dst["198.51.100.4"]["zone"], by_dst["198.51.100.4"]["orig_zone"]) == (6, None)
    assert (by_dst["198.51.100.5"]["proto"], by_dst["198.51.100.5"]["protonum"]) == ("99", 99)
    assert (by_dst["198.51.100.7"]["sport"], by_dst["198.51.100.7"]["dport"]) == (0x1a, 0x2b)
    assert (by_dst["2001:db8:1::2"]["orig_zone"], by_dst["2001:db8:1::2"]["mark"]) == (7, 9)
    assert sorted(r["family"] for r in rows if r["labels"] == [3]) == ["ipv4", "ipv6"]


def test_the_listing_templates_print_what_the_reference_prints(pair):
    """ct list's per-shape templates (text.LineFormat, layout.JsonFormat) against the entry-by-entry
    reference (conntrack_line, Layout.to_json) on one dump of this table, read once from the kernel."""
    client, server = pair
    build_table(client, server)
    with nl.open_in(server) as sock:
        chunks = [(bytearray(buf[:n]), n) for buf, n in sock.request(
            nl.NFNL_SUBSYS_CTNETLINK, nl.IPCTNL_MSG_CT_GET, 0, what="reading the conntrack table")]
    now = time.time()
    text = Layout.of(TEXT_COLUMNS)
    line = LineFormat(clock=lambda: now)
    for flt in (None, ct.Filter.parse(proto="udp"), ct.Filter.parse(src="2001:db8::/32")):
        reference = [conntrack_line(text.convert(row), now=now) for row in filtered(chunks, text.raws, flt)]
        fast = [x for chunk in formatted_chunks(chunks, line, line.raws, line.keys, flt) for x in chunk]
        assert reference and fast == reference
        for columns in (ct.DEFAULT_COLUMNS, ("proto", "state", "src", "helper", "labels")):
            layout, obj = Layout.of(columns), JsonFormat(columns)
            reference = [layout.to_json(row) for row in filtered(chunks, layout.raws, flt)]
            assert [x for chunk in formatted_chunks(chunks, obj, obj.raws, obj.keys, flt) for x in chunk] == reference


def test_expect_text_equals_conntrack_L_expect(pair):
    client, server = pair
    build_table(client, server)
    # conntrack -L expect lists one family at a time (ipv4 unless told); ctkit lists them all
    theirs, ours = steady(lambda: sorted(conntrack_text(server, "expect", "-f", "ipv4")
                                         + conntrack_text(server, "expect", "-f", "ipv6")),
                          lambda: sorted(ctkit("expect", "--netns", server).splitlines()))
    assert len(theirs) == 2 and all("mask-src=" in line and "class=0" in line for line in theirs), theirs
    assert ours == theirs
    exps = json.loads(ctkit("expect", "--netns", server, "--json"))
    v4 = next(e for e in exps if e["family"] == "ipv4")
    assert (v4["mask_src"], v4["mask_dst"], v4["mask_sport"], v4["mask_dport"]) == \
        ("255.255.255.255", "255.255.255.255", 0, 65535)
    assert (v4["class"], v4["protonum"], v4["dport"], v4["master_dport"]) == (0, 6, 10000, 21)
    assert "klass" not in v4
    v6 = next(e for e in exps if e["family"] == "ipv6")
    assert (v6["mask_src"], v6["dport"]) == ("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", 10002)
