"""`ctkit import --iptables-save`: rulesets in the style of the guides become the idiomatic policy (no root).

Each fixture under tests/fixtures/import/ is a hand-written iptables-save output; the test checks the
policy produced (not only that it loads), what is listed as not expressed (with its line) and what is
left out as another tool's.
"""
import json
import subprocess
import sys

from goldens import ROOT

from ctkit.compile.lower import lower
from ctkit.explain import explain, parse_packet
from ctkit.importer import from_iptables_save, from_texts
from ctkit.policy.load import load_file

FIX = ROOT / "tests" / "fixtures" / "import"


def imported(*names):
    return from_iptables_save([FIX / n for n in names])


def ctkit(*args):
    return subprocess.run([sys.executable, "-m", "ctkit", *args], capture_output=True, text=True, cwd=ROOT,
                          timeout=60)


def test_the_eight_rhel_notrack_rules_are_one_entry():
    r = imported("rhel-dns-notrack.v4")
    assert r.exit_code == 0 and r.not_expressed == ()
    assert r.document["notrack"] == [{"name": "dns", "family": "ipv4", "protocols": ["udp", "tcp"], "ports": [53]}]
    rules = r.document["chains"]["input"]["rules"]
    # only IPv4 rules were given: ip6tables' empty input chain let IPv6 pass, and still does
    assert rules[0] == {"family": "ipv6", "action": "accept",
                        "comment": "no ip6tables rules were imported: this family passes"}
    assert rules[3] == {"family": "ipv4", "ct_state": ["related", "established"], "action": "accept"}
    assert rules[5] == {"saddr": "10.0.0.0/8", "protocol": "tcp", "dport": 22, "comment": "ssh from lan",
                        "action": "accept"}
    assert r.document["chains"]["input"]["policy"] == "drop"


def test_imported_policy_means_what_the_rules_meant():
    plan = lower(load_file_text(imported("rhel-dns-notrack.v4").render("yaml")))
    x = explain(plan, parse_packet("udp 192.0.2.20:4000 -> 192.0.2.10:53 iif eth0"), "t")
    assert x.verdict == "accept" and not x.tracked
    assert explain(plan, parse_packet("tcp 192.0.2.20:4000 -> 192.0.2.10:22"), "t").verdict == "drop"
    assert explain(plan, parse_packet("tcp 10.0.0.20:4000 -> 10.0.0.10:22"), "t").verdict == "accept"


def load_file_text(text, tmp=None):
    import tempfile
    from pathlib import Path
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "imported.yaml"
        p.write_text(text)
        return load_file(p)


def test_ftp_helper_rule_becomes_a_helper_entry():
    r = imported("ftp-helper.v4")
    assert r.exit_code == 0
    assert r.document["helpers"] == [{"name": "ftp", "helper": "ftp", "protocol": "tcp", "ports": 21,
                                      "daddr": "192.0.2.10"}]
    log = r.document["chains"]["input"]["rules"][-1]
    assert log == {"family": "ipv4", "log": {"prefix": "ftp drop: ", "level": "info",
                                             "limit": {"rate": 5, "per": "minute", "burst": 5}}}


def test_both_families_merge_into_one_list():
    r = imported("client-ctstate.v4", "client-ctstate.v6")
    assert r.exit_code == 0
    out = r.document["chains"]["output"]["rules"]
    assert out[0] == {"protocol": "tcp", "ct_state": ["new", "established"], "action": "accept"}
    assert {"family": "ipv4", "protocol": "icmp", "action": "accept"} in out
    assert {"family": "ipv6", "protocol": "icmpv6", "action": "accept"} in out
    assert r.document["chains"]["input"]["rules"][0] == {"ct_state": ["related", "established"], "action": "accept"}


def test_game_server_length_string_and_hashlimit():
    rules = imported("game-flood.v4").document["chains"]["input"]["rules"][1:]
    assert rules[0]["length"] == "0-32" and rules[1]["length"] == 222
    assert rules[2]["signature"] == {"hex": "ffffffff54", "algo": "bm", "from": 28}
    assert rules[4]["limit"] == {"rate": 50, "per": "second", "burst": 100, "by": "saddr"}


def test_nat_zones_and_mangle():
    d = imported("nat-zones.v4").document
    assert d["zones"] == [{"name": "zone5", "family": "ipv4", "zone": 5, "iif": "lan0"},
                          {"name": "zone7", "family": "ipv4", "zone": 7, "protocol": "udp", "ports": 53,
                           "direction": "out"}]
    assert [n["type"] for n in d["nat"]] == ["dnat", "redirect", "snat", "masquerade"]
    assert d["nat"][0]["to_addr"] == "10.1.0.10" and d["nat"][0]["to_port"] == 80
    assert d["nat"][2]["to_port"] == "20000-20099"
    assert [list(r)[-1] for r in d["chains"]["prerouting"]["rules"]] == ["dscp", "mark_set", "connmark"]
    assert d["chains"]["forward"]["rules"] == [{"family": "ipv4", "oif": "wan0", "protocol": "tcp", "mss": "pmtu"}]


def test_docker_chains_are_left_out_and_listed():
    r = imported("docker-host.v4")
    left = {x.what for x in r.left_out}
    assert {"chain DOCKER (table filter)", "chain DOCKER-USER (table filter)", "-A FORWARD -j DOCKER-USER",
            "-A POSTROUTING -s 172.17.0.0/16 ! -o docker0 -j MASQUERADE"} <= left
    assert all(x.owner == "docker" for x in r.left_out)
    assert r.exit_code == 0  # leaving another tool's chains out is not a failure
    assert "web_in" in r.document["chains"] and r.document["chains"]["input"]["rules"][3]["jump"] == "web_in"
    assert r.document["nat"] == [{"type": "masquerade", "saddr": "10.1.0.0/24", "oif": "wan0"}]


def test_named_foreign_chain_is_imported():
    r = from_texts([("x", "*filter\n:INPUT ACCEPT [0:0]\n:DOCKER-USER - [0:0]\n-A INPUT -j DOCKER-USER\n"
                          "-A DOCKER-USER -s 192.0.2.9/32 -j DROP\nCOMMIT\n")], include=("DOCKER-USER",))
    assert r.document["chains"]["DOCKER_USER"]["rules"] == [{"saddr": "192.0.2.9", "action": "drop"}]


def test_what_cannot_be_said_is_listed_with_its_line():
    r = imported("unsupported.v4")
    assert r.exit_code == 1
    got = {(n.line, n.reason.split(":")[0]) for n in r.not_expressed}
    assert got == {(8, "-j DROP in the mangle table"), (14, "a notrack entry's ports are source or destination"),
                   (15, "CT --timeout smtp"), (21, "-m mark"), (22, "the negation '! -i eth0'"),
                   (23, "-m set blocklist"), (24, "-m icmp")}
    header = r.render("yaml")
    assert "#   " + str(FIX / "unsupported.v4") + ":21: -A INPUT -m mark --mark 0x1 -j ACCEPT" in header
    # what could be said is still there
    assert r.document["chains"]["input"]["rules"][1:] == [{"family": "ipv4", "protocol": "tcp", "dport": 22,
                                                          "action": "accept"}]


def test_every_fixture_renders_a_valid_policy():
    for path in sorted(p for p in FIX.glob("*") if not p.name.endswith(".json")):
        r = from_iptables_save([path])
        text = r.render("yaml")
        assert text.startswith("# ctkit policy written by `ctkit import` from iptables-save output: ")
        load_file_text(text)
        assert json.loads(r.render("json"))["version"] == 1


def test_cli_writes_the_policy_and_exits_by_what_was_expressed(tmp_path):
    out = tmp_path / "p.yaml"
    ok = ctkit("import", "--iptables-save", str(FIX / "rhel-dns-notrack.v4"), "--output", str(out))
    assert ok.returncode == 0, ok.stderr
    assert ctkit("validate", str(out)).returncode == 0
    bad = ctkit("import", "--iptables-save", str(FIX / "unsupported.v4"))
    assert bad.returncode == 1 and "not expressed:" in bad.stderr and "version: 1" in bad.stdout
    js = ctkit("import", "--iptables-save", str(FIX / "unsupported.v4"), "--json")
    data = json.loads(js.stdout)
    assert js.returncode == 1 and len(data["not_expressed"]) == 7 and data["policy"]["version"] == 1
    none = ctkit("import")
    assert none.returncode == 2 and "--iptables-save FILE" in none.stderr
    notsave = ctkit("import", "--iptables-save", str(ROOT / "README.md"))
    assert notsave.returncode == 2 and "not iptables-save output" in notsave.stderr
    assert "Traceback" not in notsave.stderr + none.stderr


def test_u32_in_ctkits_form_reads_back_as_the_same_payload(tmp_path):
    """Payload matches compiled to u32 by the iptables backend, read back by the importer, compiled again:
    the same u32 programs."""
    import re as _re

    from ctkit.importer.rules import u32_payload
    payloads = [{"base": "th", "offset": 8, "hex": "ffffffff"}, {"base": "th", "offset": 12, "hex": "54"},
                {"base": "nh", "offset": 0, "hex": "45"}, {"base": "nh", "offset": 9, "hex": "11"},
                {"base": "th", "offset": 2, "hex": "0035"}, {"base": "nh", "offset": 1, "hex": "b8", "mask": "fc"},
                {"base": "th", "offset": 13, "hex": "02", "mask": "12"}]

    def programs(entries):
        p = tmp_path / "p.json"
        p.write_text(json.dumps({"version": 1, "chains": {"input": {"rules": [
            {"family": "ipv4", "protocol": "udp", "payload": [e], "action": "drop"} for e in entries]}}}))
        out = ctkit("compile", str(p), "--backend", "iptables")
        assert out.returncode == 0, out.stderr
        return _re.findall(r'--u32 "([^"]+)"', out.stdout)

    first = programs(payloads)
    assert len(first) == len(payloads)
    back = [u32_payload(t) for t in first]
    assert None not in back
    assert programs(back) == first
    assert u32_payload("0x0>>0x16&0x3c@0x4&0xffff=0x1:0x5") is None  # a range: not ctkit's form


ROUTER_SAVE = """*raw
:PREROUTING ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
-A PREROUTING -m addrtype ! --dst-type LOCAL -j CT --notrack
COMMIT
*filter
:INPUT DROP [0:0]
:FORWARD DROP [0:0]
:OUTPUT ACCEPT [0:0]
-A INPUT -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A INPUT ! -s 192.0.2.0/24 -p tcp -m addrtype --dst-type LOCAL,BROADCAST -m tcp ! --dport 22 -j DROP
-A FORWARD -p tcp -m iprange ! --dst-range 10.0.0.0-10.255.255.255 -m iprange ! --dst-range 192.168.0.0-192.168.0.255 -m multiport ! --sports 1,2,3,4,5,6,7,8,9,10,11,12,13,14,15 -m multiport ! --sports 16:20 -j DROP
-A FORWARD -m iprange --src-range 10.0.0.1-10.0.0.9 -j ACCEPT
COMMIT
"""


def test_negations_and_address_types_of_iptables_come_back():
    """! -s, ! --dport, one -m iprange ! and one -m multiport ! per chunk (as ctkit writes them and as a guide
    would), -m addrtype: the router's transit exemption and the excluded lists are said in the policy."""
    r = from_texts([("rules.v4", ROUTER_SAVE)])
    d = r.document
    assert d["notrack"] == [{"name": "notrack", "family": "ipv4", "daddr_type": {"not": "local"}, "direction": "in"}]
    drop = d["chains"]["input"]["rules"][2]
    assert drop["saddr"] == {"not": "192.0.2.0/24"} and drop["dport"] == {"not": 22}
    assert drop["daddr_type"] == ["local", "broadcast"]
    fwd = d["chains"]["forward"]["rules"][1]
    assert fwd["daddr"] == {"not": ["10.0.0.0/8", "192.168.0.0/24"]}
    assert fwd["sport"] == {"not": list(range(1, 16)) + ["16-20"]}
    # a positive range has no policy word: listed, with its line
    assert [(n.line, n.reason.split(":")[0]) for n in r.not_expressed] == [(13, "-m iprange 10.0.0.1-10.0.0.9")]
