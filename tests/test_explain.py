"""`ctkit explain` over the examples: the path, the verdict, conntrack and NAT a packet gets (no root)."""
import json
import subprocess
import sys

import pytest
from goldens import ROOT

from ctkit import pipeline
from ctkit.audit.admission import Context, Flow, run_chain
from ctkit.compile.lower import lower
from ctkit.errors import UsageError
from ctkit.explain import PACKET_FORM, explain, lines, parse_packet
from ctkit.policy.load import load_document

OWNER = "table inet ctkit"


def run(example: str, packet: str):
    return explain(pipeline.compile_file(ROOT / "examples" / example).plan, parse_packet(packet), OWNER)


def ctkit(*args):
    return subprocess.run([sys.executable, "-m", "ctkit", *args], capture_output=True, text=True, cwd=ROOT,
                          timeout=60)


# ------------------------------------------------------------------ packet text

def test_packet_forms():
    p = parse_packet("tcp 10.0.0.5:40000 -> 10.0.0.10:22 iif eth0 state established")
    assert (p.family, p.saddr, p.sport, p.daddr, p.dport, p.iif, p.state, p.path) == \
        ("ipv4", "10.0.0.5", 40000, "10.0.0.10", 22, "eth0", "established", "input")
    p6 = parse_packet("udp [2001:db8::5]:5353 -> [2001:db8::10]:53 oif eth1")
    assert (p6.family, p6.sport, p6.dport, p6.path) == ("ipv6", 5353, 53, "output")
    assert parse_packet("icmp 192.0.2.1 -> 192.0.2.2 iif a oif b").path == "forward"
    assert parse_packet("icmpv6 2001:db8::1 -> 2001:db8::2").dport is None
    assert parse_packet("udp 1.1.1.1:1 -> 2.2.2.2:3 len 100 path forward").length == 100


@pytest.mark.parametrize("text, why", [
    ("tcp 10.0.0.5:1 > 10.0.0.10:22", "expected a protocol"),
    ("tcp 10.0.0.5:1 -> 10.0.0.300:22", "is not an address"),
    ("tcp 10.0.0.5:1 -> 10.0.0.3:70000", "a port is a number"),
    ("tcp 10.0.0.5:1 -> 2001:db8::1", "one address family"),
    ("tcp 10.0.0.5:1 -> 10.0.0.3:2 state maybe", "state 'maybe' is not one of"),
    ("tcp 10.0.0.5:1 -> 10.0.0.3:2 colour red", "unknown word 'colour'"),
    ("tcp 10.0.0.5:1 -> 10.0.0.3:2 iif", "needs a value"),
    ("tcp 10.0.0.5:1 -> 10.0.0.3:2 iif a iif b", "given twice"),
    ("tcp 10.0.0.5:1 -> 10.0.0.3:2 iif a;b", "not an interface name"),
    ("icmp 10.0.0.5:1 -> 10.0.0.3", "has no ports"),
    ("TCP! 10.0.0.5:1 -> 10.0.0.3:2", "not a protocol name"),
    ("tcp 10.0.0.5:1 -> 10.0.0.3:2 path sideways", "path 'sideways'"),
])
def test_bad_packet_text_names_the_problem_and_the_form(text, why):
    with pytest.raises(UsageError) as e:
        parse_packet(text)
    assert why in str(e.value) and PACKET_FORM in str(e.value)


# --------------------------------------------------------------------- examples

def test_dns_is_untracked_both_ways():
    x = run("dns-server.json", "udp 10.0.0.20:4000 -> 10.0.0.10:53 iif eth0")
    assert x.verdict == "accept" and not x.tracked
    assert x.trace() == [("notrack-pre", "notrack/dns", "continue"), ("notrack-pre", None, "policy accept"),
                         ("input", "dns-untracked", "accept")]
    reply = run("dns-server.json", "udp 10.0.0.10:53 -> 10.0.0.20:4000 oif eth0 state established")
    assert reply.packet.path == "output"
    assert not reply.tracked and reply.trace()[0] == ("notrack-out", "notrack/dns", "continue")


def test_ssh_from_lan_and_from_elsewhere():
    ok = run("dns-server.json", "tcp 10.0.0.20:40000 -> 10.0.0.10:22 iif eth0")
    assert ok.verdict == "accept" and ok.tracked and ok.decided_by is None
    assert ok.trace()[-1] == ("input", "ssh-lan", "accept")
    no = run("dns-server.json", "tcp 192.0.2.20:40000 -> 192.0.2.10:22 iif eth0")
    assert no.verdict == "drop" and no.decided_by == "input (policy)"
    assert no.trace()[-1] == ("input", None, "policy drop")
    assert "drop in table inet ctkit, chain input at the input hook" in no.leaves
    est = run("dns-server.json", "tcp 192.0.2.20:40000 -> 192.0.2.10:22 iif eth0 state established")
    assert est.verdict == "accept" and est.trace()[-1] == ("input", "established", "accept")


def test_helper_on_first_packet_and_jump_return():
    x = run("server-baseline.json", "tcp 192.0.2.20:4000 -> 192.0.2.10:21 iif eth0")
    assert x.helper == "ftp-server (ftp)" and x.verdict == "drop"
    assert x.trace() == [("notrack-pre", None, "policy accept"), ("helper-pre", "helper/ftp-server", "continue"),
                         ("helper-pre", None, "policy accept"), ("input", "input[5]", "jump web"),
                         ("web", "web[1]", "return"), ("input", None, "policy drop")]
    web = run("server-baseline.json", "tcp 192.0.2.20:4000 -> 192.0.2.10:443 iif eth0")
    assert web.verdict == "accept" and web.trace()[-1] == ("web", "web[0]", "accept")
    # another server's port 21: the helper is for 192.0.2.10 only
    assert run("server-baseline.json", "tcp 192.0.2.20:4000 -> 192.0.2.11:21").helper is None


def test_timeout_policy_and_ct_mark():
    x = run("dns-short-timeouts.json", "udp 192.0.2.20:4000 -> 192.0.2.10:53")
    assert x.timeout == "dns_udp (unreplied=3s, replied=5s)" and x.tracked
    assert "ct mark set 0x53" in x.actions


def test_nat_only_on_a_first_packet():
    x = run("router-nat.json", "tcp 198.51.100.9:4000 -> 203.0.113.1:8080 iif wan0 oif lan0")
    assert x.nat == ("dnat to 10.1.0.10 port 80",)
    later = run("router-nat.json", "tcp 198.51.100.9:4000 -> 203.0.113.1:8080 iif wan0 oif lan0 state established")
    assert later.nat == () and all(s.skipped for s in later.steps)
    out = run("router-nat.json", "udp 10.1.0.5:4000 -> 9.9.9.9:53 iif lan0 oif wan0")
    assert out.nat == ("snat to 203.0.113.1 port 20000-20099",)


def test_sets_vmaps_and_toggles():
    assert run("blocklist-set.json", "tcp 198.51.100.7:4000 -> 10.0.0.10:22 iif eth0").decided_by == "input/blocked"
    ssh = run("blocklist-set.json", "tcp 10.0.0.5:4000 -> 10.0.0.10:2222 iif eth0")
    assert ssh.trace() == [("input", "dispatch", "jump ssh"), ("ssh", "ssh-lan", "accept")]
    # no entry for the key: the map lookup fails and the kernel does not report the rule
    assert run("blocklist-set.json", "tcp 192.0.2.20:4000 -> 192.0.2.10:8080 iif eth0").trace() == \
        [("input", None, "policy drop")]
    assert run("maintenance-toggle.json", "tcp 192.0.2.20:4000 -> 192.0.2.10:80").trace() == \
        [("input", "web", "accept")]  # the toggle is off in the file


def test_payload_is_undecided_not_guessed():
    x = run("game-server-flood.json", "udp 192.0.2.20:4000 -> 192.0.2.10:27015 iif eth0 len 100")
    assert not x.certain and any(h.verdict == "undecided" for s in x.steps for h in s.hits)
    short = run("game-server-flood.json", "udp 192.0.2.20:4000 -> 192.0.2.10:27015 iif eth0 len 30")
    assert short.verdict == "drop" and short.decided_by == "input/flood-length"


def test_every_example_explains():
    for path in sorted((ROOT / "examples").glob("*")):
        plan = pipeline.compile_file(path).plan
        for text in ("tcp 192.0.2.20:4000 -> 192.0.2.10:80 iif eth0", "udp 10.0.0.10:53 -> 10.0.0.20:9 oif eth0",
                     "icmpv6 2001:db8::1 -> 2001:db8::2 iif eth0 oif eth1"):
            x = explain(plan, parse_packet(text), OWNER)
            assert x.verdict in ("accept", "drop", "reject", "queue", "unknown")
            assert lines(x)[0].startswith("packet: ")
            json.dumps(x.as_dict())


# ------------------------------------------------------------------ interpreter

def test_context_judges_what_the_audit_leaves_unknown():
    table = lower(load_document({"version": 1, "toggles": {"t": True}, "chains": {"input": {"rules": [
        {"when": "t", "protocol": "tcp", "dport": 1, "action": "drop"}]}}})).table
    flow = Flow("ipv4", "tcp", "1.1.1.1", "2.2.2.2", 5, 1)
    assert run_chain(table, "input", flow).outcome == "unknown"  # the audit's view: unchanged
    ctx = Context(toggles={"t": True})
    r = run_chain(table, "input", flow, ctx)
    assert r.outcome == "drop" and r.events[0].verdict == "drop"


# --------------------------------------------------------------------------- CLI

def test_cli_text_json_and_exit_codes():
    r = ctkit("explain", "examples/dns-server.json", "--packet", "tcp 10.0.0.20:40000 -> 10.0.0.10:22 iif eth0")
    assert r.returncode == 0, r.stderr
    assert "rule ssh-lan -> accept" in r.stdout and "verdict: accept" in r.stdout
    j = ctkit("explain", "examples/dns-server.json", "--json", "-b", "iptables",
              "--packet", "udp 10.0.0.20:4000 -> 10.0.0.10:53")
    data = json.loads(j.stdout)
    assert data["tracked"] is False and data["owner"].startswith("chains CTKIT-")
    bad = ctkit("explain", "examples/dns-server.json", "--packet", "tcp 10.0.0.5 to 10.0.0.10")
    assert bad.returncode == 2 and "the form is PROTO SRC[:PORT] -> DST[:PORT]" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_cli_needs_a_policy_or_a_namespace():
    r = ctkit("explain", "--packet", "tcp 10.0.0.5:1 -> 10.0.0.10:22")
    assert r.returncode == 2 and "--netns NS" in r.stderr and "Traceback" not in r.stderr


def test_live_drift_is_where_the_paths_differ():
    import copy

    from ctkit.explain import explain_live
    from ctkit.importer import from_nft_json
    fixture = ROOT / "tests/fixtures/import/ctkit-server-baseline.nft.json"
    reader = lambda ns, t: from_nft_json([fixture], t)  # noqa: E731
    plan = lower(load_document(copy.deepcopy(reader("lab", "ctkit").document)))  # the file that was applied
    same = explain_live("lab", reader, parse_packet("tcp 192.0.2.20:4000 -> 192.0.2.10:443 iif eth0"), OWNER,
                        plan=plan)
    assert not same.drift and same.exit_code == 0 and same.live.trace() == same.policy.trace()
    other = lower(load_document({"version": 1, "chains": {"input": {"policy": "drop"}}}))
    x = explain_live("lab", reader, parse_packet("tcp 192.0.2.20:4000 -> 192.0.2.10:443 iif eth0"), OWNER,
                     plan=other)
    assert x.drift and x.exit_code == 1 and x.live.verdict == "accept" and x.policy.verdict == "drop"
