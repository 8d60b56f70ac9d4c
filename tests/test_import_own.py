"""Importing a host ctkit manages (iptables): ctkit's own chains read back as the policy they came from.

The fixtures ctkit-*.v4/.v6 (and ctkit-server-baseline.return.*, ctkit's output since an accept is -j RETURN
and the accept bit's rules, ctkit/accept_mark.py) are iptables-save and ip6tables-save output captured on Linux 6.18 after
`ctkit apply --backend iptables` of examples/server-baseline.json and examples/edge-mangle.json (as they
were then): the rules ctkit split (per protocol, per family, per target) come back as one rule each, with
its name, its comment and the chain's policy.
"""
import pytest
from goldens import ROOT

from ctkit.importer import from_iptables_save, from_texts

FIX = ROOT / "tests" / "fixtures" / "import"


@pytest.mark.parametrize("capture", ["ctkit-server-baseline", "ctkit-server-baseline.return"])
def test_server_baseline_comes_back_as_written(capture):
    # .return: written since an accept is -j RETURN and, in chain web, the accept bit's rules
    r = from_iptables_save([FIX / f"{capture}.v4", FIX / f"{capture}.v6"])
    assert r.exit_code == 0 and r.left_out == ()
    d = r.document
    assert d["notrack"] == [{"name": "dns", "protocols": ["udp", "tcp"], "ports": [53]}]
    assert d["helpers"] == [{"name": "ftp-server", "helper": "ftp", "protocol": "tcp", "ports": 21,
                             "daddr": "192.0.2.10"}]
    inp = d["chains"]["input"]
    assert inp["policy"] == "drop"  # ctkit's last rule '-j DROP' "input: policy drop"
    assert inp["rules"][0] == {"ct_state": ["related", "established"], "action": "accept"}
    assert inp["rules"][1]["protocols"] == ["tcp", "udp"]  # one rule, split per protocol by ctkit
    assert {"jump": "web"} in inp["rules"]
    assert inp["rules"][-1] == {"protocols": ["icmp", "icmpv6"],
                                "comment": "neighbour discovery, and errors about untracked flows",
                                "action": "accept"}  # the IPv4 and the IPv6 rule
    assert d["chains"]["web"]["rules"] == [{"protocol": "tcp", "dport": [80, 443], "action": "accept"},
                                           {"action": "return"}]


def test_one_rule_with_several_targets_is_one_rule_again():
    r = from_iptables_save([FIX / "ctkit-edge-mangle.v4"], ipv6_paths=[FIX / "ctkit-edge-mangle.v6"])
    assert r.document["chains"]["prerouting"]["rules"][1] == {
        "name": "voip", "protocol": "udp", "dport": 5060, "mark_set": 16, "connmark": "save", "dscp": 46}
    assert [x["name"] for x in r.document["chains"]["forward"]["rules"]] == ["clamp-mss", "clamp-mss-fixed"]


def test_rules_after_ctkits_jump_keep_its_drop_a_rule():
    text = ("*filter\n:INPUT ACCEPT [0:0]\n:CTKIT-INPUT - [0:0]\n-A INPUT -j CTKIT-INPUT\n"
            "-A INPUT -p tcp -m tcp --dport 80 -j ACCEPT\n"
            '-A CTKIT-INPUT -p tcp -m tcp --dport 22 -m comment --comment "ssh: admins" -j ACCEPT\n'
            '-A CTKIT-INPUT -m comment --comment "input: policy drop" -j DROP\nCOMMIT\n')
    chain = from_texts([("t", text)]).document["chains"]["input"]
    assert "policy" not in chain  # the built-in chain's own policy is accept
    assert chain["rules"] == [{"name": "ssh", "family": "ipv4", "protocol": "tcp", "dport": 22, "comment": "admins",
                               "action": "accept"},
                              {"family": "ipv4", "comment": "input: policy drop", "action": "drop"},
                              {"family": "ipv4", "protocol": "tcp", "dport": 80, "action": "accept"}]


def test_names_that_still_repeat_are_made_unique():
    text = ("*filter\n:INPUT ACCEPT [0:0]\n:CTKIT-INPUT - [0:0]\n-A INPUT -j CTKIT-INPUT\n"
            '-A CTKIT-INPUT -p tcp -m tcp --dport 22 -m comment --comment "x" -j ACCEPT\n'
            '-A CTKIT-INPUT -p udp -m udp --sport 53 -m comment --comment "x" -j DROP\nCOMMIT\n')
    r = from_texts([("t", text)])
    assert [x.get("name") for x in r.document["chains"]["input"]["rules"]] == ["x", "x-2"]


def test_ipset_members_come_from_ipset_save():
    save = ("*filter\n:INPUT ACCEPT [0:0]\n:CTKIT-INPUT - [0:0]\n-A INPUT -j CTKIT-INPUT\n"
            '-A CTKIT-INPUT -m set --match-set ctkit-blocklist src -m comment --comment blocked -j DROP\n'
            '-A CTKIT-INPUT -p tcp -m set --match-set ctkit-web_ports dst -m comment --comment web -j ACCEPT\n'
            "COMMIT\n")
    ipset = ("create ctkit-blocklist hash:net family inet hashsize 1024 maxelem 65536 timeout 86400\n"
             "add ctkit-blocklist 203.0.113.7 timeout 3599\nadd ctkit-blocklist 198.51.100.0/24 timeout 86399\n"
             "create ctkit-web_ports bitmap:port range 0-65535\nadd ctkit-web_ports 80\nadd ctkit-web_ports 443\n")
    d = from_texts([("t", save)], ipset_save=ipset).document
    assert d["sets"]["blocklist"] == {"type": "ipv4_addr", "interval": True, "timeout": 86400,
                                      "elements": [{"value": "203.0.113.7", "timeout": 3599}, "198.51.100.0/24"]}
    assert d["sets"]["web_ports"] == {"type": "inet_service", "elements": [80, 443]}
    assert [(r["saddr"] if "saddr" in r else r["dport"]) for r in d["chains"]["input"]["rules"]] == \
        ["@blocklist", "@web_ports"]
    # without ipset save (a file), the rule is listed
    r = from_texts([("t", save)])
    assert r.exit_code == 1 and "import with --netns" in r.not_expressed[0].reason


def test_ct_timeout_values_come_from_the_live_objects():
    save = ("*raw\n:PREROUTING ACCEPT [0:0]\n:CTKIT-PREROUTING - [0:0]\n-A PREROUTING -j CTKIT-PREROUTING\n"
            '-A CTKIT-PREROUTING -p udp -m udp --dport 53 -m comment --comment "timeout/dns_udp: short" '
            "-j CT --timeout kzel\nCOMMIT\n")
    objects = {"kzel": {"family": "ipv4", "protocol": "udp", "policy": {"unreplied": 3, "replied": 5}}}
    d = from_texts([("t", save)], timeouts=objects).document
    assert d["timeouts"] == [{"name": "dns_udp", "family": "ipv4", "protocol": "udp",
                              "policy": {"unreplied": 3, "replied": 5}, "ports": 53, "comment": "short"}]
    r = from_texts([("t", save)])  # a file: the values are not there
    assert r.exit_code == 1 and "import with --netns" in r.not_expressed[0].reason


_TOP = ("*filter\n:INPUT {policy} [0:0]\n:CTKIT-INPUT - [0:0]\n:CTKIT-web - [0:0]\n:CTKIT-ACCEPT-END - [0:0]\n"
        "-A INPUT -j CTKIT-INPUT\n{after}"
        "-A CTKIT-ACCEPT-END -j MARK --set-xmark 0x0/0x40000000\n"
        "-A CTKIT-INPUT -j MARK --set-xmark 0x0/0x40000000\n"
        '-A CTKIT-INPUT -p tcp -m tcp --dport 22 -m comment --comment "ssh: admins" -j RETURN\n'
        '-A CTKIT-INPUT -m comment --comment "input[1]" -j CTKIT-web\n'
        "-A CTKIT-INPUT -m mark --mark 0x40000000/0x40000000 -g CTKIT-ACCEPT-END\n"
        '-A CTKIT-web -p tcp -m tcp --dport 80 -m comment --comment "web[0]" -j MARK --set-xmark 0x40000000/0x40000000\n'
        "-A CTKIT-web -m mark --mark 0x40000000/0x40000000 -j RETURN\n"
        '-A CTKIT-web -m comment --comment "web[1]" -j RETURN\nCOMMIT\n')


def test_a_return_with_nothing_after_the_jump_is_the_built_in_chains_policy():
    d = from_texts([("t", _TOP.format(policy="ACCEPT", after=""))]).document
    assert d["chains"]["input"]["rules"] == [
        {"name": "ssh", "family": "ipv4", "protocol": "tcp", "dport": 22, "comment": "admins", "action": "accept"},
        {"family": "ipv4", "jump": "web"}]
    assert d["chains"]["web"]["rules"] == [{"family": "ipv4", "protocol": "tcp", "dport": 80, "action": "accept"},
                                           {"family": "ipv4", "action": "return"}]
    assert "ACCEPT_END" not in d["chains"] and "ACCEPT-END" not in d["chains"]
    # a built-in chain that drops: what ctkit's chain returns is dropped there
    d = from_texts([("t", _TOP.format(policy="DROP", after=""))]).document
    assert d["chains"]["input"]["policy"] == "drop"
    assert [x.get("action") for x in d["chains"]["input"]["rules"] if x["family"] == "ipv4"] == ["drop", None]
    assert d["chains"]["web"]["rules"][0]["action"] == "drop"


def test_rules_after_the_jump_keep_ctkits_top_level_chain_a_chain_of_its_own():
    # ctkit's RETURN goes on to the rule after the jump: inlined, it could not; the nested accept's bit
    # cannot be said (the policy has no mark match): listed, not approximated
    r = from_texts([("t", _TOP.format(policy="ACCEPT", after="-A INPUT -p tcp -m tcp --dport 80 -j DROP\n"))])
    d = r.document
    assert d["chains"]["input"]["rules"] == [{"family": "ipv4", "jump": "ctkit_input"},
                                             {"family": "ipv4", "protocol": "tcp", "dport": 80, "action": "drop"}]
    assert d["chains"]["ctkit_input"]["rules"][0]["action"] == "return"
    assert r.exit_code == 1 and any("mark" in n.reason for n in r.not_expressed)


def test_a_jump_into_fail2ban_after_ctkits_is_left_out_and_ctkits_chain_still_folds_back():
    after = "-A INPUT -p tcp -m multiport --dports 22 -j f2b-sshd\n"
    text = _TOP.format(policy="ACCEPT", after=after).replace(":CTKIT-INPUT - [0:0]\n",
                                                            ":CTKIT-INPUT - [0:0]\n:f2b-sshd - [0:0]\n")
    r = from_texts([("t", text)])
    assert [x.owner for x in r.left_out] == ["fail2ban", "fail2ban"]  # the chain and the jump into it
    assert [x.get("action", x.get("jump")) for x in r.document["chains"]["input"]["rules"]
            if x["family"] == "ipv4"] == ["accept", "web"]
    assert r.document["chains"]["web"]["rules"][0]["action"] == "accept" and r.exit_code == 0


def test_a_fail2ban_chain_imported_with_include_is_a_rule_after_ctkits_jump():
    """--include f2b-sshd keeps the jump into it: ctkit's chain no longer ends the built-in one, so it stays a
    chain of its own instead of folding back (and the jump after it is imported)."""
    after = "-A INPUT -p tcp -m multiport --dports 22 -j f2b-sshd\n"
    text = _TOP.format(policy="ACCEPT", after=after).replace(":CTKIT-INPUT - [0:0]\n",
                                                            ":CTKIT-INPUT - [0:0]\n:f2b-sshd - [0:0]\n")
    left_out = from_texts([("t", text)])
    kept = from_texts([("t", text)], include=("f2b-sshd",))
    assert not kept.left_out and left_out.left_out
    jumps = [x.get("jump") for x in kept.document["chains"]["input"]["rules"]]
    assert jumps == ["ctkit_input", "f2b_sshd"] and "ctkit_input" not in left_out.document["chains"]
