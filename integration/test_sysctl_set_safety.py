"""`ctkit sysctl set` in a namespace: host-wide keys are refused, and a refused multi-key set
changes nothing (not even the keys that alone would have been fine).

Only sysctls of the lab's namespaces are written; the host's are only read.
"""
from __future__ import annotations

import subprocess
from pathlib import Path

from lab import run

CTKIT = str(Path(__file__).resolve().parent.parent / ".venv" / "bin" / "ctkit")
HOST = "/proc/sys/net/netfilter"


def ctkit(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([CTKIT, *args], capture_output=True, text=True, timeout=60)


def host_value(name: str) -> str:
    with open(f"{HOST}/{name}") as f:  # read only
        return f.read().strip()


def ns_value(ns: str, name: str) -> str:
    return run(ns, "cat", f"{HOST}/{name}").stdout.strip()


def test_host_wide_key_refuses_the_whole_set(lab):
    ns = lab.netns("sysc")
    run(ns, "nft", "add", "table", "inet", "probe")  # conntrack's sysctls appear once it is loaded
    run(ns, "nft", "add", "chain", "inet", "probe", "c", "{ type filter hook input priority 0; ct state new; }")
    host_lwt = host_value("nf_hooks_lwtunnel")
    before = ns_value(ns, "nf_conntrack_tcp_loose")
    assert before == "1"
    proc = ctkit("sysctl", "set", "nf_conntrack_tcp_loose=0", "nf_hooks_lwtunnel=1", "--netns", ns)
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert "nf_hooks_lwtunnel" in proc.stderr and "host-wide" in proc.stderr and "reboot" in proc.stderr
    assert "nothing was changed" in proc.stderr
    assert ns_value(ns, "nf_conntrack_tcp_loose") == before  # the per-namespace key was not written either
    assert host_value("nf_hooks_lwtunnel") == host_lwt
    assert ns_value(ns, "nf_hooks_lwtunnel") == host_lwt  # one value for the machine


def test_each_refusal_is_named_and_nothing_changes(lab):
    ns = lab.netns("sysc")
    run(ns, "nft", "add", "table", "inet", "probe")
    run(ns, "nft", "add", "chain", "inet", "probe", "c", "{ type filter hook input priority 0; ct state new; }")
    host_max = host_value("nf_conntrack_max")
    udp = ns_value(ns, "nf_conntrack_udp_timeout")
    proc = ctkit("sysctl", "set", "nf_conntrack_udp_timeout=45", "nf_conntrack_max=1000",
                 "nf_conntrack_tcp_loose=off", "nf_log_all_netns=1", "--netns", ns)
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert "nf_conntrack_max is host-wide" in proc.stderr
    assert "integer" in proc.stderr
    assert "nf_log_all_netns does not exist" in proc.stderr  # registered in the initial namespace only
    assert ns_value(ns, "nf_conntrack_udp_timeout") == udp
    assert host_value("nf_conntrack_max") == host_max
    ok = ctkit("sysctl", "set", "nf_conntrack_udp_timeout=45", "nf_conntrack_tcp_loose=0", "--netns", ns)
    assert ok.returncode == 0, ok.stderr
    assert ns_value(ns, "nf_conntrack_udp_timeout") == "45" and ns_value(ns, "nf_conntrack_tcp_loose") == "0"
    assert "net.netfilter.nf_conntrack_udp_timeout = 45" in ok.stdout
