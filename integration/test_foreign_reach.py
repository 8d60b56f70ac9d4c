"""The audit reports a foreign drop wherever nft can put it: behind a jump or a goto into a foreign
chain, in a verdict map, at a netdev ingress hook (issue 13, part 4). Each case on a real kernel: the
packet ctkit's policy accepts does not arrive, and the audit names the chain; without the foreign
table it arrives and the audit finds nothing foreign."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from lab import SERVER4, ftp_passive, run, tcp_listen, tcp_probe

ROOT = Path(__file__).resolve().parent.parent
PORT = 8080
POLICY = {"version": 1, "chains": {"input": {"policy": "drop", "rules": [
    {"name": "established", "ct_state": ["established", "related"], "action": "accept"},
    {"name": "web", "protocol": "tcp", "dport": PORT, "action": "accept"},
    {"name": "icmp", "protocols": ["icmp", "icmpv6"], "action": "accept"}]}}}

FOREIGN = {
    "jump": f"""table ip other {{
        chain deny {{ drop; }}
        chain in {{ type filter hook input priority -10; tcp dport {PORT} jump deny; }}
    }}""",
    "goto": f"""table ip other {{
        chain deny {{ drop; }}
        chain in {{ type filter hook input priority 10; tcp dport {PORT} goto deny; }}
    }}""",
    "vmap": f"""table ip other {{
        chain in {{ type filter hook input priority -10; tcp dport vmap {{ {PORT} : drop, 22 : accept }}; }}
    }}""",
    "named-vmap": f"""table ip other {{
        map ports {{ type inet_service : verdict; elements = {{ {PORT} : drop }}; }}
        chain in {{ type filter hook input priority -10; tcp dport vmap @ports; }}
    }}""",
    "ingress": f"""table netdev other {{
        chain in {{ type filter hook ingress device veth0 priority 0; tcp dport {PORT} drop; }}
    }}""",
}
FINDING = {"goto": "foreign.later-drop"}


def ctkit(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ctkit", *args], capture_output=True, text=True, timeout=120)


def foreign_findings(policy: str, ns: str) -> list[dict]:
    r = ctkit("audit", policy, "-n", ns, "--json", "--no-flows")
    assert r.returncode in (0, 1), r.stderr
    return [f for f in json.loads(r.stdout)["findings"] if f["id"].startswith("foreign.")]


@pytest.mark.parametrize("shape", list(FOREIGN))
def test_a_foreign_drop_out_of_sight_is_reported_and_really_drops(pair, tmp_path, shape):
    client, server = pair
    policy = tmp_path / "web.json"
    policy.write_text(json.dumps(POLICY))
    assert ctkit("apply", str(policy), "-n", server).returncode == 0
    listener = tcp_listen(server, SERVER4, PORT)
    try:
        assert tcp_probe(client, SERVER4, PORT) == "open"
        assert foreign_findings(str(policy), server) == []
        run(server, "nft", "-f", "-", input=FOREIGN[shape])
        assert tcp_probe(client, SERVER4, PORT) == "timeout"  # the harm: the policy's accept is overridden
        found = foreign_findings(str(policy), server)
        assert [f["id"] for f in found] == [FINDING.get(shape, "foreign.earlier-drop")], found
        assert "other" in found[0]["subject"], found
    finally:
        listener.close()
    assert "other" in run(server, "nft", "list", "tables").stdout  # reported, never touched


@pytest.mark.parametrize("variant", ["nft", "legacy"])
def test_a_foreign_iptables_notrack_before_ctkits_helper_is_reported_and_breaks_ftp(pair, variant):
    """iptables backend: a foreign `-j CT --notrack` in raw ahead of ctkit's jump takes the FTP control
    connection away from ctkit's helper (the first conntrack template wins): the passive data connection
    is no longer expected and input drops it. The audit said clean; it names the rule now."""
    client, server = pair
    policy = str(ROOT / "examples" / "ftp-helper.json")
    args = ["-n", server, "-b", "iptables", "--iptables-variant", variant]
    assert ctkit("apply", policy, *args).returncode == 0
    assert ftp_passive(client, server, SERVER4) == ("open", "open")
    assert not [f for f in _findings(policy, args) if f["id"] == "foreign.notrack-overrides-helper"]
    run(server, f"iptables-{variant}", "-t", "raw", "-I", "PREROUTING", "1", "-p", "tcp", "--dport", "21",
        "-j", "CT", "--notrack")
    assert ftp_passive(client, server, SERVER4)[1] == "timeout"  # the harm
    found = [f for f in _findings(policy, args) if f["id"] == "foreign.notrack-overrides-helper"]
    assert len(found) == 1 and "ftp" in found[0]["message"], found


def _findings(policy: str, args: list[str]) -> list[dict]:
    r = ctkit("audit", policy, *args, "--json", "--no-flows")
    assert r.returncode in (0, 1), r.stderr
    return json.loads(r.stdout)["findings"]


@pytest.mark.parametrize(("rule", "harms"), [
    ("tcp dport != 22 notrack", True),  # a negation that does cover the helper's port: it was missed
    ("ip daddr 192.0.2.0/24 notrack", True),
    ("udp dport 21 notrack", False),  # another protocol: it was reported
    ("ip daddr 198.51.100.1 tcp dport 21 notrack", False),  # another address: it was reported
])
def test_a_foreign_nft_notrack_is_reported_exactly_when_it_breaks_the_helper(pair, rule, harms):
    client, server = pair
    policy = str(ROOT / "examples" / "ftp-helper.json")
    assert ctkit("apply", policy, "-n", server).returncode == 0
    run(server, "nft", "-f", "-", input=f"table inet raw2 {{\n chain pre {{ type filter hook prerouting "
                                        f"priority -300; {rule}; }}\n}}")
    data = ftp_passive(client, server, SERVER4)[1]
    assert data == ("timeout" if harms else "open"), data
    found = [f for f in _findings(policy, ["-n", server]) if f["id"] == "foreign.notrack-overrides-helper"]
    assert bool(found) == harms, found
