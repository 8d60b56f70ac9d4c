"""The iptables backend against the kernel, with iptables-nft and iptables-legacy,
each test in its own namespace: what iptables-save shows after apply, re-apply,
a change of policy and remove, next to foreign rules (docker, fail2ban)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from lab import run, tcp_connect

from ctkit import pipeline
from ctkit.backends.iptables import generate as backend
from ctkit.backends.iptables import kernel as kernel
from ctkit.backends.iptables import text as ipt_text
from ctkit.backends.iptables.document import FAMILIES
from ctkit.errors import KernelError

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = sorted((ROOT / "examples").glob("*.json")) + sorted((ROOT / "examples").glob("*.yaml"))
VARIANTS = ("nft", "legacy")
TOOL = {"ipv4": "iptables", "ipv6": "ip6tables"}

# rules another program put there first, the way docker and fail2ban write them
FOREIGN = {
    "ipv4": """*raw
:PREROUTING ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
-A PREROUTING -d 172.17.0.2/32 ! -i docker0 -j DROP
COMMIT
*filter
:INPUT ACCEPT [0:0]
:FORWARD DROP [0:0]
:OUTPUT ACCEPT [0:0]
:DOCKER-USER - [0:0]
:f2b-sshd - [0:0]
-A INPUT -p tcp -m multiport --dports 22 -j f2b-sshd
-A INPUT -s 198.51.100.0/24 -j DROP
-A FORWARD -j DOCKER-USER
-A OUTPUT -d 203.0.113.99/32 -j REJECT --reject-with icmp-port-unreachable
-A DOCKER-USER -j RETURN
-A f2b-sshd -s 203.0.113.7/32 -j REJECT --reject-with icmp-port-unreachable
-A f2b-sshd -j RETURN
COMMIT
""",
    "ipv6": """*raw
:PREROUTING ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
-A PREROUTING -d fd00:17::2/128 ! -i docker0 -j DROP
COMMIT
*filter
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:f2b-sshd - [0:0]
-A INPUT -p tcp -m multiport --dports 22 -j f2b-sshd
-A f2b-sshd -s 2001:db8:bad::7/128 -j REJECT --reject-with icmp6-port-unreachable
-A f2b-sshd -j RETURN
COMMIT
""",
}


def save(ns: str, family: str, variant: str) -> str:
    """iptables-save without its timestamp comments."""
    out = run(ns, f"{TOOL[family]}-{variant}-save").stdout
    return "\n".join(ln for ln in out.splitlines() if not ln.startswith("#")) + "\n"


def content(text: str) -> list[str]:
    """Rules and user-defined chains: iptables-legacy instantiates empty tables on any read."""
    return [ln for ln in text.splitlines() if ln.startswith("-A") or (ln.startswith(":") and " - " in ln)]


def foreign_lines(text: str) -> list[str]:
    return [ln for ln in text.splitlines() if "CTKIT-" not in ln]


def ctkit(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ctkit", *args], capture_output=True, text=True, timeout=120)


def ruleset(path: Path) -> backend.Ruleset:
    return backend.generate(pipeline.compile_file(path).plan)


def check_owned_is_generated(ns: str, variant: str, rs: backend.Ruleset) -> None:
    """The kernel holds exactly the generated chains, rules in order, and one jump per chain."""
    for family in FAMILIES:
        current = kernel.parse_save(save(ns, family, variant))
        live = kernel.owned(current, rs.prefix, family)
        want = rs.document(family)
        def shape(doc):  # iptables-save lists chains in its own order: compare by name
            return {t.name: {c.name: c for c in t.chains} for t in doc.tables if t.chains}
        assert shape(live) == shape(want), f"{family}: kernel and generator differ"
        jumps = sorted((t, r.chain, r.target, r.spec) for t, r in kernel.jumps(current, rs.prefix))
        assert jumps == sorted((t.name, c.builtin, c.name, f"-j {c.name}")
                               for t in want.tables for c in t.chains if c.builtin)


@pytest.fixture
def ns(lab):
    return lab.netns("ipt")


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_restore_test_accepts_every_golden(ns, variant, path):
    """iptables-restore --test (which needs the kernel's tables) accepts each generated document."""
    rs = ruleset(path)
    sets = {s.name: s for f in FAMILIES for s in rs.document(f).ipsets}
    if sets:  # -m set needs the sets, which the kernel stage creates before the restore
        from ctkit.backends.iptables import ipset
        ipset.sync(sets.values(), rs.prefix.lower(), ns)
    for family in FAMILIES:
        text = ipt_text.render(rs.document(family))
        proc = run(ns, f"{TOOL[family]}-{variant}-restore", "--noflush", "--test", input=text, check=False)
        assert proc.returncode == 0, f"{family}: {proc.stderr}"


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_every_example_applies_and_reads_back(ns, variant, path):
    r = ctkit("apply", str(path), "--backend", "iptables", "--iptables-variant", variant, "--netns", ns)
    assert r.returncode == 0, r.stderr
    check_owned_is_generated(ns, variant, ruleset(path))
    r = ctkit("remove", "--backend", "iptables", "--iptables-variant", variant, "--netns", ns)
    assert r.returncode == 0, r.stderr
    for family in FAMILIES:
        assert "CTKIT" not in save(ns, family, variant)


@pytest.mark.parametrize("variant", VARIANTS)
def test_reapply_leaves_iptables_save_identical(ns, variant):
    path = ROOT / "examples" / "server-baseline.json"
    rs = ruleset(path)
    kernel.apply(rs.ipv4, rs.ipv6, ns, variant)
    first = {f: save(ns, f, variant) for f in FAMILIES}
    for _ in range(2):
        kernel.apply(rs.ipv4, rs.ipv6, ns, variant)
        assert {f: save(ns, f, variant) for f in FAMILIES} == first
    assert first["ipv4"].count("-j CTKIT-INPUT") == 1


@pytest.mark.parametrize("variant", VARIANTS)
def test_foreign_rules_survive_apply_reapply_change_and_remove(ns, variant):
    for family in FAMILIES:
        run(ns, f"{TOOL[family]}-{variant}-restore", input=FOREIGN[family])
    before = {f: save(ns, f, variant) for f in FAMILIES}
    assert before["ipv4"].count("\n-A ") == 8
    for name in ("server-baseline.json", "server-baseline.json", "ftp-helper.json", "dns-server.json"):
        rs = ruleset(ROOT / "examples" / name)
        kernel.apply(rs.ipv4, rs.ipv6, ns, variant)
        check_owned_is_generated(ns, variant, rs)
        for family in FAMILIES:
            now = save(ns, family, variant)
            assert foreign_lines(now) == foreign_lines(before[family]), f"{name} {family}"
            # ctkit decides first: its jump is the first rule of each built-in chain it extends
            for chain in ("PREROUTING", "INPUT"):
                rules = [ln for ln in now.splitlines() if ln.startswith(f"-A {chain} ")]
                if any("CTKIT-" in ln for ln in rules):
                    assert rules[0] == f"-A {chain} -j CTKIT-{chain}"
    kernel.remove(rs.prefix, ns, variant)
    assert {f: save(ns, f, variant) for f in FAMILIES} == before


def nft_tables(ns: str) -> list[str]:
    return sorted(ln for ln in run(ns, "nft", "list", "tables").stdout.splitlines() if ln.strip())


def test_remove_deletes_the_iptables_nft_tables_its_apply_created(ns):
    """iptables-nft makes ip/ip6 tables on first use; a remove left them behind, empty, in a namespace
    that had none. Tables that another tool's rules use since stay, with those rules."""
    assert nft_tables(ns) == []
    for name in ("server-baseline.json", "ftp-helper.json", "router-nat.json"):
        rs = ruleset(ROOT / "examples" / name)
        kernel.apply(rs.ipv4, rs.ipv6, ns, "nft")
    assert "table ip filter" in nft_tables(ns) and "table ip6 raw" in nft_tables(ns)
    kernel.remove(rs.prefix, ns, "nft")
    assert nft_tables(ns) == []

    kernel.apply(rs.ipv4, rs.ipv6, ns, "nft")
    run(ns, "iptables-nft", "-A", "INPUT", "-s", "198.51.100.9", "-j", "DROP")  # another tool, after ctkit
    kernel.remove(rs.prefix, ns, "nft")
    assert nft_tables(ns) == ["table ip filter"]
    assert "-A INPUT -s 198.51.100.9/32 -j DROP" in save(ns, "ipv4", "nft")


def test_auto_variant_follows_the_namespace_and_both_variants_are_reported(ns):
    """--iptables-variant auto followed the host's iptables (nft here) even in a namespace whose rules are
    legacy's, so apply put ctkit's chains beside them in the other variant and the audit never saw them."""
    policy = str(ROOT / "examples" / "server-baseline.json")
    assert kernel.host_variant() == "nft"  # this machine's iptables is iptables-nft: the case that went wrong
    run(ns, "iptables-legacy", "-A", "INPUT", "-s", "198.51.100.9", "-j", "DROP")
    r = ctkit("apply", policy, "-n", ns, "-b", "iptables")
    assert r.returncode == 0, r.stderr
    assert "-A INPUT -j CTKIT-INPUT" in save(ns, "ipv4", "legacy")
    assert "CTKIT-" not in save(ns, "ipv4", "nft")
    r = ctkit("audit", policy, "-n", ns, "-b", "iptables", "--json")
    assert "foreign.other-iptables-variant" not in r.stdout, r.stdout
    run(ns, "iptables-nft", "-A", "INPUT", "-s", "198.51.100.10", "-j", "DROP")  # now both hold rules
    r = ctkit("audit", policy, "-n", ns, "-b", "iptables", "--json")
    ids = [f["id"] for f in json.loads(r.stdout)["findings"]]
    assert "foreign.other-iptables-variant" in ids, r.stdout
    r = ctkit("apply", policy, "-n", ns, "-b", "iptables")  # ctkit's record still says legacy: unchanged
    assert r.returncode == 0 and "iptables-legacy chains CTKIT-* unchanged" in r.stdout, r.stdout + r.stderr
    assert "CTKIT-" not in save(ns, "ipv4", "nft")
    assert ctkit("remove", "-n", ns, "-b", "iptables").returncode == 0
    assert "CTKIT-" not in save(ns, "ipv4", "legacy") and "198.51.100.9" in save(ns, "ipv4", "legacy")


@pytest.mark.parametrize("variant", VARIANTS)
def test_an_apply_with_the_other_backend_stops_or_migrates(ns, variant):
    """ctkit's nft table and its iptables chains would both see every packet: an apply with one backend
    while the other's rules are live stops (exit 3) unless --migrate, which removes the other's rules once
    the apply has succeeded. Both directions; read back from nft and iptables-save."""
    policy = str(ROOT / "examples" / "server-baseline.json")
    ipt = ["-b", "iptables", "--iptables-variant", variant]
    assert ctkit("apply", policy, "-n", ns).returncode == 0
    r = ctkit("apply", policy, "-n", ns, *ipt)
    assert r.returncode == 3 and "table inet ctkit" in r.stderr and "--migrate" in r.stderr, r.stderr
    assert "CTKIT-" not in save(ns, "ipv4", variant)  # refused before anything was written
    r = ctkit("apply", policy, "-n", ns, *ipt, "--migrate")
    assert r.returncode == 0 and "migrated: removed table inet ctkit" in r.stdout, r.stdout + r.stderr
    assert "table inet ctkit" not in nft_tables(ns)
    assert "-A INPUT -j CTKIT-INPUT" in save(ns, "ipv4", variant)
    r = ctkit("apply", policy, "-n", ns)
    assert r.returncode == 3 and "chains CTKIT-*" in r.stderr, r.stderr
    r = ctkit("apply", policy, "-n", ns, "--migrate", "--iptables-variant", variant)
    assert r.returncode == 0 and "migrated: removed chains CTKIT-*" in r.stdout, r.stdout + r.stderr
    assert "CTKIT-" not in save(ns, "ipv4", variant) and "CTKIT-" not in save(ns, "ipv6", variant)
    assert "table inet ctkit" in nft_tables(ns)
    assert ctkit("remove", "-n", ns).returncode == 0


@pytest.mark.parametrize("variant", VARIANTS)
def test_dry_run_changes_nothing(ns, variant):
    r = ctkit("apply", str(ROOT / "examples" / "dns-server.json"), "-b", "iptables", "--iptables-variant", variant,
              "-n", ns, "--dry-run")
    assert r.returncode == 0, r.stderr
    assert "checked (nothing changed)" in r.stdout
    for family in FAMILIES:
        assert content(save(ns, family, variant)) == []


@pytest.mark.parametrize("variant", VARIANTS)
def test_a_refused_apply_changes_nothing(ns, variant):
    rs = ruleset(ROOT / "examples" / "dns-server.json")
    kernel.apply(rs.ipv4, rs.ipv6, ns, variant)
    before = {f: save(ns, f, variant) for f in FAMILIES}
    bad = backend.Document("ipv6", "CTKIT-", (backend.Table("filter", (
        backend.Chain("CTKIT-INPUT", ("-p tcp -j NO-SUCH-TARGET",), "INPUT"),)),))
    with pytest.raises(KernelError, match="NO-SUCH-TARGET"):
        kernel.apply(rs.ipv4.__class__("ipv4", "CTKIT-", ()), bad, ns, variant)
    after = {f: save(ns, f, variant) for f in FAMILIES}
    assert {f: sorted(content(t)) for f, t in after.items()} == {f: sorted(content(t)) for f, t in before.items()}
    check_owned_is_generated(ns, variant, rs)


@pytest.mark.parametrize("variant", VARIANTS)
def test_show_reports_chains_jumps_and_counters(ns, variant):
    path = ROOT / "examples" / "dns-server.json"
    assert ctkit("apply", str(path), "-b", "iptables", "--iptables-variant", variant, "-n", ns).returncode == 0
    assert not tcp_connect(ns, "127.0.0.1", 9)  # refused with RST: the SYN went through lo
    r = ctkit("show", "-b", "iptables", "--iptables-variant", variant, "-n", ns, "--json")
    assert r.returncode == 0, r.stderr
    import json
    data = json.loads(r.stdout)
    assert data["present"] and data["variant"] == variant
    chain = data["families"]["ipv4"]["tables"]["filter"]["CTKIT-INPUT"]
    assert chain["jumped_from"] == ["INPUT"]
    loopback = [x for x in chain["rules"] if "--comment loopback" in x["spec"]]
    assert loopback and loopback[0]["packets"] >= 1  # the SYN; the RST is a reply
    text = ctkit("show", "-b", "iptables", "--iptables-variant", variant, "-n", ns)
    assert "-A INPUT -j CTKIT-INPUT" in text.stdout and "[0:0]" in text.stdout
    assert ctkit("remove", "-b", "iptables", "--iptables-variant", variant, "-n", ns).returncode == 0
    empty = ctkit("show", "-b", "iptables", "--iptables-variant", variant, "-n", ns)
    assert "ctkit owns nothing here" in empty.stdout
