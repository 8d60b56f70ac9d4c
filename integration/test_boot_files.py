"""Boot files on the real kernel: each passes its own tool's check, and loading them into a fresh namespace
that already holds a docker-like foreign table gives a state `ctkit audit` calls clean, foreign rules intact."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from lab import backend_args, run

from ctkit.kernel.netns import entered

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
POLICIES = ["dns-server.json", "blocklist-set.json"]


def ctkit(*args: str) -> subprocess.CompletedProcess:
    r = subprocess.run([sys.executable, "-m", "ctkit", *args], capture_output=True, text=True, timeout=120)
    assert "Traceback" not in r.stderr, r.stderr
    return r


def export(policy: Path, out: Path, *backend: str) -> dict:
    r = ctkit("export", str(policy), "--dir", str(out), "--json", *backend)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def audit(policy: Path, ns: str, *backend: str) -> tuple[int, dict]:
    r = ctkit("audit", str(policy), "--netns", ns, "--json", *backend)
    assert r.returncode in (0, 1), r.stderr
    return r.returncode, json.loads(r.stdout)


def assert_clean(policy: Path, ns: str, *backend: str) -> None:
    code, report = audit(policy, ns, *backend)
    assert report["drift"] == [], report["drift"]
    assert code == 0 or all(f["severity"] == "info" for f in report["findings"]), report["findings"]


def settings_policy(tmp_path: Path) -> Path:
    """dns-server with per-namespace settings that differ from the kernel's defaults (so loading shows)."""
    data = json.loads((EXAMPLES / "dns-server.json").read_text())
    data["conntrack"] = {"helper_autoassign": False, "tcp_loose": False, "timeouts": {"udp": 25, "udp_stream": 100}}
    path = tmp_path / "dns-settings.json"
    path.write_text(json.dumps(data))
    return path


def sysctl_value(ns: str, name: str) -> str:
    with entered(ns):
        with open(f"/proc/sys/net/netfilter/{name}") as f:
            return f.read().strip()


# ------------------------------------------------------------------- nft

def docker_like_nft(ns: str) -> str:
    run(ns, "nft", "add", "table", "ip", "nat")
    run(ns, "nft", "add chain ip nat POSTROUTING { type nat hook postrouting priority srcnat; policy accept; }")
    run(ns, "nft", "add", "rule", "ip", "nat", "POSTROUTING", "oifname", "docker0", "masquerade")
    return run(ns, "nft", "list", "table", "ip", "nat").stdout


@pytest.mark.parametrize("example", POLICIES)
def test_nft_file_checks_loads_twice_and_audits_clean_beside_a_foreign_table(lab, tmp_path, example):
    policy = EXAMPLES / example
    ns = lab.netns("bootnft")
    foreign = docker_like_nft(ns)
    export(policy, tmp_path)
    nft_file = str(tmp_path / "ctkit.nft")
    run(ns, "nft", "-c", "-f", nft_file)  # the kernel checks the transaction, nothing is committed
    assert run(ns, "nft", "list", "tables").stdout.split("\n")[:-1] == ["table ip nat"]
    for _load in range(2):  # at boot (no table yet), then over the table it made: the same state
        run(ns, "nft", "-f", nft_file)
        assert_clean(policy, ns)
        assert run(ns, "nft", "list", "table", "ip", "nat").stdout == foreign
    assert run(ns, "nft", "list", "tables").stdout.split("\n")[:-1] == ["table ip nat", "table inet ctkit"]


def test_nft_file_replaces_a_table_that_ctkit_applied_from_another_policy(lab, tmp_path):
    ns = lab.netns("bootrep")
    foreign = docker_like_nft(ns)
    assert ctkit("apply", str(EXAMPLES / "stateful-client.json"), "--netns", ns).returncode == 0
    export(EXAMPLES / "blocklist-set.json", tmp_path)
    run(ns, "nft", "-f", str(tmp_path / "ctkit.nft"))
    assert_clean(EXAMPLES / "blocklist-set.json", ns)
    code, report = audit(EXAMPLES / "stateful-client.json", ns)
    assert code == 1 and report["drift"]  # the old policy is gone, not merged
    assert run(ns, "nft", "list", "table", "ip", "nat").stdout == foreign


def test_sysctl_file_loads_in_a_namespace_and_meets_the_policy(lab, tmp_path):
    policy = settings_policy(tmp_path)
    ns = lab.netns("bootsys")
    out = tmp_path / "out"
    export(policy, out)
    conf = (out / "90-ctkit.conf").read_text()
    assert "net.netfilter.nf_conntrack_helper" not in [ln.split(" =")[0] for ln in conf.split("\n")]  # Linux 6.18
    run(ns, "nft", "-f", str(out / "ctkit.nft"))
    code, report = audit(policy, ns)
    assert {d["subject"] for d in report["drift"]} == {
        "net.netfilter.nf_conntrack_tcp_loose", "net.netfilter.nf_conntrack_udp_timeout",
        "net.netfilter.nf_conntrack_udp_timeout_stream"}  # the ruleset alone does not meet the settings
    run(ns, "sysctl", "-p", str(out / "90-ctkit.conf"))  # inside the namespace: per-namespace keys only
    assert [sysctl_value(ns, n) for n in ("nf_conntrack_udp_timeout", "nf_conntrack_udp_timeout_stream",
                                          "nf_conntrack_tcp_loose")] == ["25", "100", "0"]
    assert_clean(policy, ns)


# ------------------------------------------------------------- iptables

IPTABLES = ["iptables-nft", "iptables-legacy"]


def docker_like_iptables(ns: str, variant: str) -> dict[str, str]:
    ipt = f"iptables-{variant}"
    for table, builtin in (("filter", "FORWARD"), ("nat", "PREROUTING")):
        run(ns, ipt, "-t", table, "-N", "DOCKER")
        run(ns, ipt, "-t", table, "-A", "DOCKER", "-p", "tcp", "--dport", "8080", "-j",
            "ACCEPT" if table == "filter" else "RETURN")
        run(ns, ipt, "-t", table, "-A", builtin, "-j", "DOCKER")
    return foreign_rules(ns, variant)


def foreign_rules(ns: str, variant: str) -> dict[str, str]:
    """Every rule and chain that is not ctkit's, per table, as iptables-save prints it."""
    out = {}
    for table in ("filter", "nat", "raw"):
        text = run(ns, f"iptables-{variant}-save", "-t", table).stdout
        out[table] = "\n".join(ln for ln in text.split("\n") if ln and not ln.startswith("#")
                               and "CTKIT-" not in ln)
    return out


def load_iptables(ns: str, variant: str, out: Path) -> None:
    if (out / "ctkit.ipset").exists():
        run(ns, "ipset", "restore", "-exist", input=(out / "ctkit.ipset").read_text())
    for tool, name in (("iptables", "ctkit.rules.v4"), ("ip6tables", "ctkit.rules.v6")):
        text = (out / name).read_text()
        run(ns, f"{tool}-{variant}-restore", "--test", "--noflush", input=text)
        run(ns, f"{tool}-{variant}-restore", "--noflush", input=text)


@pytest.mark.parametrize("backend", IPTABLES)
@pytest.mark.parametrize("example", POLICIES)
def test_iptables_files_check_load_and_audit_clean_beside_docker(lab, tmp_path, backend, example):
    variant = backend.split("-")[1]
    policy = EXAMPLES / example
    ns = lab.netns("bootipt")
    foreign = docker_like_iptables(ns, variant)
    report = export(policy, tmp_path, *backend_args(backend))
    assert [f["name"] for f in report["files"]][:3] == (
        ["ctkit.ipset", "ctkit.rules.v4", "ctkit.rules.v6"] if example == "blocklist-set.json"
        else ["ctkit.rules.v4", "ctkit.rules.v6", "90-ctkit.conf"])
    assert audit(policy, ns, *backend_args(backend))[1]["drift"]  # nothing loaded yet: drift
    load_iptables(ns, variant, tmp_path)
    assert_clean(policy, ns, *backend_args(backend))
    assert foreign_rules(ns, variant) == foreign  # docker's chains, rules and jumps as they were
    save = run(ns, f"iptables-{variant}-save", "-t", "filter").stdout.split("\n")
    assert save.index("-A INPUT -j CTKIT-INPUT") >= 0 and save.count("-A FORWARD -j DOCKER") == 1


def test_iptables_file_chains_are_foreign_to_a_later_apply_as_the_files_say(lab, tmp_path):
    """The note in the rules files: ctkit's ownership record does not list chains that came from them."""
    ns = lab.netns("bootown")
    export(EXAMPLES / "dns-server.json", tmp_path, "--backend", "iptables", "--iptables-variant", "nft")
    assert "ownership record" in (tmp_path / "ctkit.rules.v4").read_text()
    load_iptables(ns, "nft", tmp_path)
    r = ctkit("apply", str(EXAMPLES / "dns-server.json"), "--netns", ns, "--backend", "iptables",
              "--iptables-variant", "nft")
    assert r.returncode == 3 and "ctkit did not create it" in r.stderr
    assert_clean(EXAMPLES / "dns-server.json", ns, "--backend", "iptables", "--iptables-variant", "nft")
