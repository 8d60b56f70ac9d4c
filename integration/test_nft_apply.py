"""The nft backend against the real kernel, each test in its own namespaces."""
from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from lab import (
    CLIENT4,
    CLIENT6,
    CLIENT_LAN4,
    SERVER4,
    SERVER6,
    SERVER_LAN4,
    conntrack_count,
    nft_json,
    rule_counters,
    run,
    tcp_connect,
    tcp_listen,
    udp_exchange,
    udp_server,
)

from ctkit import pipeline
from ctkit.backends.nft import generate as nft_backend
from ctkit.backends.nft import kernel as nft_kernel
from ctkit.backends.nft import text as nft_text
from ctkit.errors import KernelError

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = sorted((ROOT / "examples").glob("*.json")) + sorted((ROOT / "examples").glob("*.yaml"))


def ctkit(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    r = subprocess.run([sys.executable, "-m", "ctkit", *args], capture_output=True, text=True, timeout=60)
    if check:
        assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr
    return r


def kernel_rules(ns: str, table: str = "ctkit") -> list[tuple[str, str]]:
    """(chain, comment) of every rule the kernel holds in ctkit's table, in order."""
    return [(i["rule"]["chain"], i["rule"].get("comment", "")) for i in nft_json(ns, "list", "table", "inet", table)
            if "rule" in i]


def ruleset_text(ns: str) -> str:
    return run(ns, "nft", "list", "ruleset").stdout


def monitor_events(ns: str, action, timeout: float = 20.0) -> list[str]:
    """The `nft monitor` lines that `action` causes, fenced by two marker tables so none is missed."""
    import queue
    import threading
    monitor = subprocess.Popen(["ip", "netns", "exec", ns, "nft", "monitor"], stdout=subprocess.PIPE, text=True)
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line.rstrip("\n")) for line in monitor.stdout], daemon=True).start()

    def wait_for(marker: str, deadline: float) -> list[str] | None:
        seen = []
        while time.monotonic() < deadline:
            try:
                line = lines.get(timeout=0.2)
            except queue.Empty:
                continue
            if marker in line:
                return seen
            seen.append(line)
        return None

    def drain_quiet(quiet: float = 0.5) -> None:
        while True:
            try:
                lines.get(timeout=quiet)
            except queue.Empty:
                return

    markers = []
    try:
        deadline = time.monotonic() + timeout
        while True:  # the monitor subscribes asynchronously: retry with a fresh marker until one shows
            markers.append(f"ctkit_mark_{len(markers)}")
            run(ns, "nft", "add", "table", "inet", markers[-1])
            if wait_for(markers[-1], min(deadline, time.monotonic() + 1)) is not None:
                break
            if time.monotonic() > deadline:
                raise AssertionError("nft monitor never started")
        drain_quiet()  # the marker's own generation line, and any late duplicates
        action()
        markers.append("ctkit_mark_end")
        run(ns, "nft", "add", "table", "inet", markers[-1])
        events = wait_for(markers[-1], time.monotonic() + timeout)
        if events is None:
            raise AssertionError("nft monitor missed the end marker")
    finally:
        monitor.terminate()
        monitor.wait(10)
        for marker in markers:
            run(ns, "nft", "delete", "table", "inet", marker, check=False)
    return events


def add_foreign_table(ns: str) -> str:
    """A table that another owner (docker, firewalld) would have, with a rule and a counter."""
    run(ns, "nft", "-f", "-", input="""
table ip foreign {
    chain forward { type filter hook forward priority 0; policy accept; iifname "docker0" counter accept; }
    chain post { type nat hook postrouting priority 100; oifname "veth0" counter masquerade; }
}
""")
    return run(ns, "nft", "list", "table", "ip", "foreign").stdout


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_every_example_applies_and_reads_back(lab, path):
    ns = lab.netns("ex")
    ctkit("apply", str(path), "--netns", ns)
    document = nft_backend.generate(pipeline.compile_file(path).plan)
    wanted = [(c["add"]["rule"]["chain"], c["add"]["rule"]["comment"]) for c in document["nftables"]
              if "rule" in c.get("add", {})]
    assert kernel_rules(ns) == wanted
    chains = {i["chain"]["name"]: i["chain"] for i in nft_json(ns, "list", "table", "inet", "ctkit") if "chain" in i}
    for cmd in document["nftables"]:
        chain = cmd.get("add", {}).get("chain")
        if chain and "hook" in chain:
            live = chains[chain["name"]]
            assert (live["hook"], live["prio"], live["policy"]) == (chain["hook"], chain["prio"], chain["policy"])
    # the nft-syntax rendering of the same document gives the kernel the same ruleset
    json_view = _no_expiry(ruleset_text(ns))
    ctkit("remove", "--netns", ns)
    run(ns, "nft", "-f", "-", input=nft_text.render(document))
    assert _no_expiry(ruleset_text(ns)) == json_view


def _no_expiry(text: str) -> str:
    """Set members with a timeout list the time left ("expires 59m59s916ms"), which moves."""
    import re
    return re.sub(r" expires [0-9dhms]+", "", text)


def test_reapply_is_one_transaction_and_leaves_foreign_tables(lab):
    ns = lab.netns("re")
    foreign = add_foreign_table(ns)
    policy = str(ROOT / "examples" / "server-baseline.json")
    ctkit("apply", policy, "--netns", ns)
    first = kernel_rules(ns)
    events = monitor_events(ns, lambda: ctkit("apply", policy, "--netns", ns))
    assert events == []  # unchanged: nothing reaches the kernel
    assert kernel_rules(ns) == first
    other = str(ROOT / "examples" / "dns-server.json")
    events = monitor_events(ns, lambda: ctkit("apply", other, "--netns", ns))
    generations = [line for line in events if line.startswith("# new generation")]
    assert len(generations) == 1, events  # every change reached the kernel as one batch
    assert run(ns, "nft", "list", "table", "ip", "foreign").stdout == foreign
    ctkit("apply", policy, "--netns", ns)
    by_chain = lambda rules: sorted(rules, key=lambda r: r[0])  # noqa: E731 - chains list in creation order
    assert by_chain(kernel_rules(ns)) == by_chain(first)
    assert run(ns, "nft", "list", "table", "ip", "foreign").stdout == foreign
    ctkit("remove", "--netns", ns)
    assert run(ns, "nft", "list", "table", "ip", "foreign").stdout == foreign
    assert "ctkit" not in ruleset_text(ns)


def test_rejected_apply_changes_nothing(lab):
    ns = lab.netns("rj")
    add_foreign_table(ns)
    compiled = pipeline.compile_file(ROOT / "examples" / "ftp-helper.json")
    document = nft_backend.generate(compiled.plan)
    bad = json.loads(json.dumps(document))
    for cmd in bad["nftables"]:
        if "ct helper" in cmd.get("add", {}):
            cmd["add"]["ct helper"]["type"] = "no-such-helper"  # the kernel has no such helper: -ENOENT at commit
    # first apply rejected: no table appears
    before = ruleset_text(ns)
    with pytest.raises(KernelError):
        nft_kernel.apply("ctkit", bad, ns)
    assert ruleset_text(ns) == before
    # over a live table: the old table stays, whole
    nft_kernel.apply("ctkit", nft_backend.generate(pipeline.compile_file(ROOT / "examples" / "dns-server.json").plan), ns)
    before = ruleset_text(ns)
    with pytest.raises(KernelError):
        nft_kernel.apply("ctkit", bad, ns)
    assert ruleset_text(ns) == before


def test_dry_run_changes_nothing(lab):
    ns = lab.netns("dr")
    before = ruleset_text(ns)
    r = ctkit("apply", str(ROOT / "examples" / "dns-server.json"), "--netns", ns, "--dry-run")
    assert "checked (nothing changed)" in r.stdout
    assert ruleset_text(ns) == before


def test_permission_error_exits_3(lab):
    ns = lab.netns("pe")
    r = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all",
                        sys.executable, "-m", "ctkit", "apply", str(ROOT / "examples" / "dns-server.json"),
                        "--netns", ns], capture_output=True, text=True, timeout=60)
    assert r.returncode == 3, (r.stdout, r.stderr)
    assert "Traceback" not in r.stderr and "root" in r.stderr
    assert "ctkit" not in ruleset_text(ns)


def _track_everything(ns: str) -> None:
    """A foreign rule that needs conntrack, so tracking runs in the namespace (docs/ARCHITECTURE.md, kernel facts)."""
    run(ns, "nft", "-f", "-", input="table inet probe { chain in { type filter hook input priority 10; "
                                    "ct state new counter; } }")


def test_dns_example_stops_tracking_port_53(pair):
    client, server = pair
    ctkit("apply", str(ROOT / "examples" / "dns-server.json"), "--netns", server)
    udp = [udp_server(server, addr, 53) for addr in (SERVER4, SERVER6)]
    listeners = [tcp_listen(server, addr, 53) for addr in (SERVER4, SERVER6)]
    try:
        results = []
        for i in range(40):  # bounded: 40 exchanges, 1 s timeout each
            addr, srv = (SERVER4, udp[0]) if i % 2 == 0 else (SERVER6, udp[1])
            results.append(udp_exchange(client, srv, addr, 53, payload=b"q%d" % i))
        assert results == [(True, True)] * 40  # untracked, yet accepted both ways
        assert tcp_connect(client, SERVER4, 53) and tcp_connect(client, SERVER6, 53)
        assert conntrack_count(server) == 0
        counters = rule_counters(server)
        key = "notrack/dns: no conntrack entries for DNS"
        assert counters[key] >= 2 * 40 + 4  # 40 requests in prerouting, 40 replies in output, TCP handshakes
        assert counters["dns-untracked"] >= 40
        # tracking is on for everything else: ssh from the LAN creates an entry
        ssh = tcp_listen(server, SERVER_LAN4, 22)
        try:
            assert tcp_connect(client, SERVER_LAN4, 22, src=CLIENT_LAN4)
        finally:
            ssh.close()
        assert conntrack_count(server) >= 1
        assert not re.search(r"port=53\b", run(server, "conntrack", "-L", check=False).stdout)
    finally:
        for s in udp + listeners:
            s.close()


def test_default_drop_input(pair):
    client, server = pair
    ctkit("apply", str(ROOT / "examples" / "dns-server.json"), "--netns", server)
    listeners = [tcp_listen(server, "0.0.0.0", 22), tcp_listen(server, "0.0.0.0", 8080),
                 tcp_listen(server, "::", 2222)]
    try:
        assert tcp_connect(client, SERVER_LAN4, 22, src=CLIENT_LAN4)  # 10.0.0.0/8: accepted
        assert not tcp_connect(client, SERVER4, 22, src=CLIENT4, timeout=0.5)  # 192.0.2.0/24: dropped
        assert not tcp_connect(client, SERVER_LAN4, 8080, src=CLIENT_LAN4, timeout=0.5)  # closed-off port
        assert not tcp_connect(client, SERVER6, 2222, src=CLIENT6, timeout=0.5)
    finally:
        for s in listeners:
            s.close()
    # the drops happened in the kernel, by policy: the accepted SYN was counted, the others were not
    counters = rule_counters(server)
    assert counters["ssh-lan: ssh from lan"] >= 1
    assert conntrack_count(server) >= 1


def test_stateful_client_opens_but_cannot_be_reached(pair):
    client, server = pair
    ctkit("apply", str(ROOT / "examples" / "stateful-client.json"), "--netns", client)
    srv_tcp = tcp_listen(server, SERVER4, 8000)
    srv_udp = udp_server(server, SERVER6, 5000)
    cli_tcp = tcp_listen(client, "0.0.0.0", 8000)
    cli_udp = udp_server(client, CLIENT4, 5000)
    try:
        assert tcp_connect(client, SERVER4, 8000)  # out: new, replies: established
        assert udp_exchange(client, srv_udp, SERVER6, 5000) == (True, True)
        assert not tcp_connect(server, CLIENT4, 8000, timeout=0.5)  # in: new is dropped
        assert udp_exchange(server, cli_udp, CLIENT4, 5000, timeout=0.5) == (False, False)
    finally:
        for s in (srv_tcp, srv_udp, cli_tcp, cli_udp):
            s.close()
    assert rule_counters(client)["replies"] >= 2


def test_memcached_untracked_only_for_whitelisted_clients(lab):
    server, good, bad = lab.netns("mc"), lab.netns("ok"), lab.netns("no")
    lab.link(good, server, ["192.0.2.20/24", "2001:db8::20/64"], ["192.0.2.10/24", "2001:db8::10/64"], "veth0")
    lab.link(bad, server, ["198.51.100.20/24"], ["198.51.100.10/24"], "veth1")
    ctkit("apply", str(ROOT / "examples" / "memcached-notrack.yaml"), "--netns", server)
    udp4, udp6 = udp_server(server, "0.0.0.0", 11211), udp_server(server, "::", 11212)
    listener = tcp_listen(server, "::", 11211)
    try:
        assert udp_exchange(good, udp4, SERVER4, 11211) == (True, True)
        assert tcp_connect(good, SERVER6, 11211)
        assert conntrack_count(server) == 0  # whitelisted: untracked both ways, yet delivered
        assert not tcp_connect(bad, "198.51.100.10", 11211, timeout=0.5)  # not whitelisted: dropped
        assert udp_exchange(bad, udp4, "198.51.100.10", 11211, timeout=0.5) == (False, False)
    finally:
        for s in (udp4, udp6, listener):
            s.close()
    counters = rule_counters(server)
    assert counters["notrack/memcached: whitelisted cache clients"] >= 4
    assert counters["memcached-replies"] >= 2


def test_every_reject_type_is_accepted_by_the_kernel(lab, tmp_path):
    ns = lab.netns("rej")
    rules = [{"name": f"r{i}", "action": "reject", "reject_with": kind} for i, kind in enumerate(
        ("port-unreachable", "host-unreachable", "net-unreachable", "admin-prohibited"))]
    rules.append({"name": "rst", "protocol": "tcp", "action": "reject", "reject_with": "tcp-reset"})
    policy = tmp_path / "reject.json"
    policy.write_text(json.dumps({"version": 1, "chains": {"input": {"rules": [rules[-1]] + rules[:-1]}}}))
    ctkit("apply", str(policy), "--netns", ns, "--dry-run")
    ctkit("apply", str(policy), "--netns", ns)
    assert [c for _, c in kernel_rules(ns)] == ["rst", "r0", "r1", "r2", "r3"]


def test_generation_id_is_the_kernels_and_moves_with_each_commit(lab):
    """ctkit/kernel/nf_tables.py reads NFT_MSG_GETGEN itself: the same number pyroute2's NFTSocket reads
    in that namespace, raised by exactly one for one nft commit, untouched by a read."""
    from pyroute2 import netns as pr_netns
    from pyroute2.netlink import NLM_F_REQUEST
    from pyroute2.netlink.nfnetlink.nftsocket import NFT_MSG_GETGEN, NFTSocket, nft_gen_msg

    from ctkit.kernel.nf_tables import generation
    ns = lab.netns("gen")

    def pyroute2_reading() -> int:
        pr_netns.pushns(ns)
        try:
            sock = NFTSocket()
            try:
                return int(next(m.get_attr("NFTA_GEN_ID") for m in
                                sock.request_get(nft_gen_msg(), NFT_MSG_GETGEN, NLM_F_REQUEST)))
            finally:
                sock.close()
        finally:
            pr_netns.popns()

    first = generation(ns)
    assert first == pyroute2_reading()
    run(ns, "nft", "list", "ruleset")
    assert generation(ns) == first
    run(ns, "nft", "add", "table", "inet", "gen_probe")
    assert generation(ns) == first + 1 == pyroute2_reading()


def test_table_names_are_the_ones_nft_lists(lab):
    """ctkit/kernel/nf_tables.py lists the tables over netlink (NFT_MSG_GETTABLE): the same families and
    names, in the same order, as `nft -j list tables`; ctkit's own table is told by has_table."""
    from ctkit.kernel.nf_tables import tables
    ns = lab.netns("tabs")
    assert tables(ns) == []
    run(ns, "nft", "-f", "-", input="table inet ctkit {}\ntable ip filter {}\ntable ip6 t6 {}\ntable bridge br {}\n"
                                     "table netdev nd {}\ntable arp a {}\n")
    listed = [(i["table"]["family"], i["table"]["name"]) for i in nft_json(ns, "list", "tables") if "table" in i]
    assert tables(ns) == listed and len(listed) == 6
    assert nft_kernel.has_table("ctkit", ns) and not nft_kernel.has_table("ctkit_other", ns)
    assert {(i["table"]["family"], i["table"]["name"]) for i in nft_kernel.list_other_tables("ctkit", ns)
            if "table" in i} == set(listed) - {("inet", "ctkit")}
