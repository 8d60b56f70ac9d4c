"""ctkit audit against the real kernel: every finding provoked for real, and a clean policy audited clean."""
from __future__ import annotations

import ftplib
import json
import os
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest
from lab import (
    CLIENT4,
    CLIENT_LAN4,
    SERVER4,
    SERVER_LAN4,
    conntrack_list,
    run,
    tcp_connect,
    tcp_listen,
    udp_exchange,
    udp_server,
)

from ctkit.kernel.netns import entered

ROOT = Path(__file__).resolve().parent.parent
DNS = ROOT / "examples" / "dns-server.json"
FTP = ROOT / "examples" / "ftp-helper.json"


def ctkit(*args: str) -> subprocess.CompletedProcess:
    r = subprocess.run([sys.executable, "-m", "ctkit", *args], capture_output=True, text=True, timeout=120)
    assert "Traceback" not in r.stderr, r.stderr
    return r


def audit(policy: Path, ns: str, *extra: str) -> tuple[int, dict]:
    r = ctkit("audit", str(policy), "--netns", ns, "--json", *extra)
    assert r.returncode in (0, 1), r.stderr
    return r.returncode, json.loads(r.stdout)


def finding_ids(report: dict) -> set[str]:
    return {f["id"] for f in report["findings"]}


def applied(ns: str, policy: Path) -> None:
    r = ctkit("apply", str(policy), "--netns", ns)
    assert r.returncode == 0, r.stderr


def test_clean_policy_audits_clean(lab):
    ns = lab.netns("clean")
    applied(ns, DNS)
    code, report = audit(DNS, ns)
    assert (code, report["status"], report["drift"]) == (0, "clean", [])
    jsonschema = pytest.importorskip("jsonschema")
    jsonschema.validate(report, json.loads((ROOT / "schemas" / "audit-report.schema.json").read_text()))


def test_not_applied_is_drift(lab):
    ns = lab.netns("none")
    code, report = audit(DNS, ns)
    assert code == 1 and [d["kind"] for d in report["drift"]] == ["missing-table"]


def test_hand_edit_is_drift_named_by_rule(lab):
    ns = lab.netns("edit")
    applied(ns, DNS)
    run(ns, "nft", "insert", "rule", "inet", "ctkit", "input", "tcp", "dport", "8080", "accept")
    handle = next(i["rule"]["handle"] for i in json.loads(run(ns, "nft", "-j", "-a", "list", "chain", "inet",
                                                               "ctkit", "input").stdout)["nftables"]
                  if i.get("rule", {}).get("comment", "").split(":")[0] == "icmp")  # "<rule id>: <comment>"
    run(ns, "nft", "delete", "rule", "inet", "ctkit", "input", "handle", str(handle))
    code, report = audit(DNS, ns)
    assert code == 1
    drifts = {(d["kind"], d["subject"]) for d in report["drift"]}
    assert drifts == {("extra", "input/(no ctkit comment)"), ("missing", "input/icmp")}
    missing = next(d for d in report["drift"] if d["kind"] == "missing")
    assert missing["origin"] == "/chains/input/rules/4"


def test_foreign_early_drop_chain(lab):
    ns = lab.netns("frgn")
    applied(ns, DNS)
    run(ns, "nft", "-f", "-", input="table ip other { chain in { type filter hook input priority -10; "
                                    "tcp dport 22 drop; }; }")
    code, report = audit(DNS, ns)
    assert code == 1 and "foreign.earlier-drop" in finding_ids(report)
    assert "table ip other" in run(ns, "nft", "list", "tables").stdout  # reported, not touched


def test_foreign_notrack_overrides_helper(lab):
    ns = lab.netns("fnot")
    applied(ns, FTP)
    run(ns, "nft", "-f", "-", input="table inet raw2 { chain pre { type filter hook prerouting priority -300; "
                                    "tcp dport 21 notrack; }; }")
    _, report = audit(FTP, ns)
    assert "foreign.notrack-overrides-helper" in finding_ids(report)


def test_setting_changed_in_namespace(lab, tmp_path):
    policy = tmp_path / "loose.json"
    doc = json.loads(DNS.read_text())
    doc["conntrack"]["tcp_loose"] = False
    policy.write_text(json.dumps(doc))
    ns = lab.netns("sysc")
    applied(ns, policy)
    assert audit(policy, ns)[0] == 0
    with entered(ns):
        Path("/proc/sys/net/netfilter/nf_conntrack_tcp_loose").write_text("1\n")
    code, report = audit(policy, ns)
    assert code == 1
    (d,) = report["drift"]
    assert (d["kind"], d["subject"], d["expected"], d["actual"]) == (
        "setting", "net.netfilter.nf_conntrack_tcp_loose", "0", "1")


def test_invalid_packets_are_reported(pair, tmp_path):
    client, server = pair
    applied(server, DNS)
    state = tmp_path / "state.json"
    audit(DNS, server, "--state", str(state))
    with entered(server):
        Path("/proc/sys/net/netfilter/nf_conntrack_tcp_loose").write_text("0\n")
    with entered(client):
        raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_TCP)
    try:
        for _ in range(5):  # a bare ACK for no connection: invalid once tcp_loose is off
            raw.sendto(struct.pack("!HHIIBBHHH", 40000, 8080, 1, 1, 5 << 4, 0x10, 1024, 0, 0), (SERVER4, 0))
    finally:
        raw.close()
    from ctkit.kernel import conntrack
    deadline = time.monotonic() + 5  # the kernel counts as it processes the packets: poll, bounded
    while conntrack.stats(server).total("invalid") < 5 and time.monotonic() < deadline:
        time.sleep(0.05)
    _, report = audit(DNS, server, "--state", str(state))
    (f,) = [f for f in report["findings"] if f["id"] == "conntrack.invalid"]
    assert f["evidence"]["since_last_audit"] >= 5
    # judged against the state: the same counters are not reported again
    _, again = audit(DNS, server, "--state", str(state))
    assert "conntrack.invalid" not in finding_ids(again)


def test_ftp_expectation_through_explicit_helper(pair, tmp_path):
    pyftpdlib = pytest.importorskip("pyftpdlib")  # noqa: F841
    from pyftpdlib.authorizers import DummyAuthorizer
    from pyftpdlib.handlers import FTPHandler
    from pyftpdlib.servers import FTPServer

    client, server = pair
    applied(server, FTP)
    (tmp_path / "hello.txt").write_text("hello through the ftp helper\n")
    authorizer = DummyAuthorizer()
    authorizer.add_anonymous(str(tmp_path))
    handler = type("Handler", (FTPHandler,), {"authorizer": authorizer, "passive_ports": range(40000, 40010)})
    with entered(server):
        ftpd = FTPServer((SERVER4, 21), handler)
    stop = threading.Event()

    def serve():
        with entered(server):  # passive data sockets are opened by this thread
            while not stop.is_set():
                ftpd.serve_forever(timeout=0.1, blocking=False)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        with entered(client):
            ftp = ftplib.FTP()
            ftp.connect(SERVER4, 21, timeout=5)
            ftp.login()
            reply = ftp.sendcmd("PASV")  # the helper reads the 227 reply and expects a data connection
            assert reply.startswith("227")
            _, report = audit(FTP, server)
            assert report["conntrack"]["expectations"] >= 1
            lines = []
            ftp.retrlines("RETR hello.txt", lines.append)  # only admitted as related: input drops the rest
            assert lines == ["hello through the ftp helper"]
            ftp.quit()
        assert "helper=ftp" in conntrack_list(server)
    finally:
        stop.set()
        thread.join(5)
        ftpd.close_all()


def test_established_flows_denied_by_tightened_policy(pair, tmp_path):
    client, server = pair
    open_policy = tmp_path / "open.json"
    doc = json.loads(DNS.read_text())
    doc["chains"]["input"]["rules"].append({"name": "app", "protocol": "tcp", "dport": 8080, "action": "accept"})
    open_policy.write_text(json.dumps(doc))
    applied(server, open_policy)
    app = tcp_listen(server, SERVER4, 8080)
    ssh = tcp_listen(server, SERVER_LAN4, 22)
    keep = []
    try:
        for addr, port, src in ((SERVER4, 8080, CLIENT4), (SERVER_LAN4, 22, CLIENT_LAN4)):
            with entered(client):
                c = socket.create_connection((addr, port), timeout=2, source_address=(src, 0))
            keep.append(c)
        applied(server, DNS)  # tightened: 8080 no longer admitted, ssh from the LAN still is
        _, report = audit(DNS, server)
        (f,) = [f for f in report["findings"] if f["id"] == "flows.denied"]
        assert f["evidence"]["count"] == 1 and "8080" in f["evidence"]["flows"][0]
        before = conntrack_list(server)
        assert "dport=8080" in before and "dport=22 " in before
        _, report = audit(DNS, server, "--flush-denied")
        assert "flows.denied-flushed" in finding_ids(report)
        after = conntrack_list(server)
        assert "dport=8080" not in after and "dport=22 " in after  # exactly the denied flow went
    finally:
        for s in keep + [app, ssh]:
            s.close()


def test_table_full_is_reported_with_sizing(lab):
    with open("/proc/sys/net/netfilter/nf_conntrack_max") as f:
        host_max = int(f.read())
    if host_max > 300_000:
        pytest.skip(f"nf_conntrack_max is {host_max}: too large to fill in a test")
    server, client = lab.netns("full"), lab.netns("fcli")
    lab.link(client, server, [f"{CLIENT4}/24"], [f"{SERVER4}/24"])
    applied(server, DNS)
    path = f"/tmp/ctkit-audit-fill-{os.getpid()}.txt"
    try:
        with open(path, "w") as f:
            # ASSURED entries cannot be evicted early: new flows find no room and are dropped
            f.writelines(f"-A -t 600 -u ASSURED -s 10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255} -d 10.255.0.1 "
                         f"-p udp --sport 1 --dport 2\n" for i in range(host_max))
        run(server, "conntrack", "-R", path, check=False, timeout=120)
    finally:
        os.unlink(path)
    # the baseline before the drops: without one, a total is judged by its rate over the host's uptime
    state = f"/tmp/ctkit-audit-fill-{os.getpid()}.state"
    try:
        audit(DNS, server, "--no-flows", "--state", state)
        for port in range(20000, 20010):  # new flows: the table is full, the kernel drops them
            tcp_connect(client, SERVER4, port, timeout=0.2)
        code, report = audit(DNS, server, "--no-flows", "--state", state)
    finally:
        if os.path.exists(state):
            os.unlink(state)
    assert code == 1
    by_id = {f["id"]: f for f in report["findings"]}
    assert "conntrack.drop" in by_id, (report["findings"], report["conntrack"])
    assert by_id["conntrack.drop"]["severity"] == "critical"
    fill = by_id["conntrack.table-fill"]
    assert fill["severity"] == "critical" and fill["evidence"]["suggested_max"] > host_max
    assert "initial namespace" in fill["remedy"]


def test_exporter_over_http(lab):
    from prometheus_client.parser import text_string_to_metric_families
    ns = lab.netns("exp")
    applied(ns, DNS)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "ctkit", "exporter", "--listen", f"127.0.0.1:{port}",
                             "--netns", ns, "--policy", str(DNS)], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        text = None
        deadline = time.monotonic() + 20
        while text is None and time.monotonic() < deadline:
            try:
                text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
            except OSError:
                time.sleep(0.2)
        assert text is not None, proc.stderr.read1().decode() if proc.poll() is not None else "no answer"
    finally:
        proc.terminate()
        proc.wait(10)
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for fam in text_string_to_metric_families(text) for s in fam.samples}
    assert samples[("ctkit_up", (("netns", ns),))] == 1
    assert samples[("ctkit_conntrack_entries_limit", (("netns", ns),))] > 0
    assert samples[("ctkit_policy_drift", (("netns", ns),))] == 0
    assert ("ctkit_conntrack_stat_total", (("cpu", "0"), ("netns", ns), ("stat", "drop"))) in samples
    assert ("ctkit_rule_packets_total", (("netns", ns), ("rule", "dns-untracked"))) in samples


@pytest.mark.parametrize("variant", ["nft", "legacy"])
def test_iptables_backend_drift(lab, variant):
    ns = lab.netns("ipt")
    r = ctkit("apply", str(DNS), "--netns", ns, "--backend", "iptables", "--iptables-variant", variant)
    assert r.returncode == 0, r.stderr
    args = ("--backend", "iptables", "--iptables-variant", variant, "--no-flows")
    assert audit(DNS, ns, *args)[0] == 0
    tool = f"iptables-{variant}"
    run(ns, tool, "-A", "CTKIT-INPUT", "-p", "tcp", "--dport", "99", "-j", "ACCEPT")  # by hand, in ctkit's chain
    run(ns, tool, "-I", "INPUT", "1", "-p", "tcp", "--dport", "22", "-j", "ACCEPT")  # foreign, before ctkit's jump
    code, report = audit(DNS, ns, *args)
    assert code == 1
    assert {(d["kind"], d["subject"]) for d in report["drift"]} == {
        ("extra", "ipv4 filter/CTKIT-INPUT/(no ctkit comment)")}
    assert "foreign.earlier-rule" in finding_ids(report)


def test_exporter_textfile_with_iptables_rule_hits(pair, tmp_path):
    from prometheus_client.parser import text_string_to_metric_families
    client, server = pair
    r = ctkit("apply", str(DNS), "--netns", server, "--backend", "iptables", "--iptables-variant", "legacy")
    assert r.returncode == 0, r.stderr
    srv = udp_server(server, SERVER4, 53)
    try:
        assert udp_exchange(client, srv, SERVER4, 53) == (True, True)
    finally:
        srv.close()
    out = tmp_path / "ctkit.prom"
    r = ctkit("exporter", "--netns", server, "--policy", str(DNS), "--backend", "iptables",
              "--iptables-variant", "legacy", "--textfile", str(out))
    assert r.returncode == 0, r.stderr
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for fam in text_string_to_metric_families(out.read_text()) for s in fam.samples}
    # the kernel counted the exchange in ctkit's raw notrack rules and the filter accept
    assert samples[("ctkit_rule_packets_total", (("netns", server), ("rule", "notrack/dns")))] >= 2
    assert samples[("ctkit_rule_packets_total", (("netns", server), ("rule", "dns-untracked")))] >= 1
    assert samples[("ctkit_policy_drift", (("netns", server),))] == 0


def test_foreign_later_drop_chain(lab):
    ns = lab.netns("late")
    applied(ns, DNS)
    run(ns, "nft", "-f", "-", input="table ip late { chain in { type filter hook input priority 10; "
                                    "tcp dport 22 drop; }; }")
    code, report = audit(DNS, ns)
    assert code == 1 and "foreign.later-drop" in finding_ids(report)


def test_unwritable_outputs_are_clean_errors(lab):
    ns = lab.netns("unw")
    applied(ns, DNS)
    r = ctkit("exporter", "--netns", ns, "--textfile", "/nonexistent-dir/x.prom")
    assert r.returncode == 2 and "cannot write" in r.stderr
    r = ctkit("audit", str(DNS), "--netns", ns, "--state", "/nonexistent-dir/state.json")
    assert r.returncode == 2 and "cannot write the state file" in r.stderr


@pytest.mark.parametrize("backend", ["nft", "iptables"])
def test_switched_toggle_is_reported_not_drift(lab, backend):
    ns = lab.netns("tgl")
    policy = ROOT / "examples" / "maintenance-toggle.json"
    args = ("--backend", backend)
    assert ctkit("apply", str(policy), "--netns", ns, *args).returncode == 0
    assert audit(policy, ns, *args, "--no-flows")[0] == 0
    assert ctkit("toggle", "maintenance", "on", "--netns", ns, *args).returncode == 0
    code, report = audit(policy, ns, *args, "--no-flows")
    assert code == 0 and report["drift"] == []  # a switched toggle is the policy working as designed
    (f,) = [f for f in report["findings"] if f["id"] == "toggles.switched"]
    assert f["evidence"] == {"live": True, "policy": False}


def test_exporter_survives_20_concurrent_scrapers(lab):
    """libnftables is not thread-safe: concurrent scrapes once aborted the exporter (json.c)."""
    import threading

    from prometheus_client.parser import text_string_to_metric_families
    ns = lab.netns("exc")
    applied(ns, DNS)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "ctkit", "exporter", "--listen", f"127.0.0.1:{port}",
                             "--netns", ns, "--policy", str(DNS)], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}/metrics"
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(url, timeout=5).read()
                break
            except OSError:
                time.sleep(0.2)
        results: list = []

        def scrape():
            for _ in range(3):
                try:
                    with urllib.request.urlopen(url, timeout=60) as r:
                        results.append((r.status, r.read().decode()))
                except OSError as exc:
                    results.append((None, str(exc)))

        threads = [threading.Thread(target=scrape) for _ in range(20)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert proc.poll() is None, proc.stderr.read1().decode()
    finally:
        proc.terminate()
        proc.wait(10)
    assert len(results) == 60
    assert all(status == 200 for status, _ in results), [r for r in results if r[0] != 200][:2]
    for _status, text in results:
        names = {fam.name for fam in text_string_to_metric_families(text)}
        assert "ctkit_up" in names
