"""The iptables backend: golden iptables-restore documents for every example, and
the mapping of each IR construct (including the ones iptables cannot express)."""
from __future__ import annotations

import json

import pytest
from goldens import EXAMPLES, ROOT, golden

from ctkit import accept_mark, pipeline
from ctkit.backends.iptables import generate as iptables
from ctkit.backends.iptables import text as ipt_text
from ctkit.backends.iptables.document import FAMILIES, Ruleset
from ctkit.compile.lower import lower
from ctkit.errors import CompileError
from ctkit.policy.load import load_document

GOLDEN = ROOT / "tests" / "golden" / "iptables"
MARK_RULES = {accept_mark.CLEAR_BIT}


def _ruleset(doc: dict) -> Ruleset:
    return iptables.generate(lower(load_document({"version": 1, **doc})))


def _rules(doc: dict, family: str = "ipv4", chain: str | None = None) -> list[str]:
    """`-A CHAIN spec` lines of one family, optionally of one chain."""
    out = []
    for table in _ruleset(doc).document(family).tables:
        for c in table.chains:
            if chain is None or c.name == chain:
                out += [f"-A {c.name} {spec}" for spec in c.rules]
    return out


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_iptables_golden(path, family):
    ruleset = iptables.generate(pipeline.compile_file(path).plan)
    golden(GOLDEN / f"{path.stem}.{family}.rules", ipt_text.render(ruleset.document(family), path.name))


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_every_iptables_rule_names_its_policy_rule(path):
    compiled = pipeline.compile_file(path)
    ids = {r.id for c in compiled.plan.table.chains for r in c.rules}
    ids |= {f"{c.name}: policy drop" for c in compiled.plan.table.chains}
    ids |= {f"toggle/{t.name}" for t in compiled.plan.table.toggles}  # switch chains and their markers
    ruleset = iptables.generate(compiled.plan)
    for family in FAMILIES:
        for table in ruleset.document(family).tables:
            for chain in table.chains:
                assert chain.name.startswith("CTKIT-")
                for spec in chain.rules:
                    if spec in MARK_RULES or spec.startswith(accept_mark.TEST_BIT):
                        continue  # the accept bit's rules belong to no policy rule (ctkit/accept_mark.py)
                    comment = spec.split("--comment ", 1)[1]
                    comment = comment[1:comment.index('"', 1)] if comment.startswith('"') else comment.split()[0]
                    assert comment in ids or comment.split(": ")[0] in ids, spec


def test_dns_notrack_is_what_an_administrator_writes():
    rules = _rules({"notrack": [{"name": "dns", "protocols": ["tcp", "udp"], "ports": [53]}]})
    assert rules == [
        '-A CTKIT-PREROUTING -p tcp -m multiport --ports 53 -m comment --comment "notrack/dns" -j CT --notrack',
        '-A CTKIT-PREROUTING -p udp -m multiport --ports 53 -m comment --comment "notrack/dns" -j CT --notrack',
        '-A CTKIT-OUTPUT -p tcp -m multiport --ports 53 -m comment --comment "notrack/dns" -j CT --notrack',
        '-A CTKIT-OUTPUT -p udp -m multiport --ports 53 -m comment --comment "notrack/dns" -j CT --notrack',
    ]
    assert _rules({"notrack": [{"name": "dns", "protocols": ["tcp", "udp"], "ports": [53]}]}, "ipv6") == rules


def test_notrack_and_helper_share_raw_chain_notrack_first():
    # the first CT target a packet meets wins (xt_CT ignores a packet that already has a template)
    doc = {"notrack": [{"name": "dns", "protocol": "udp", "ports": [53]}],
           "helpers": [{"name": "f", "helper": "ftp", "protocol": "tcp", "ports": [21], "daddr": "192.0.2.10"}]}
    rules = _rules(doc, chain="CTKIT-PREROUTING")
    assert [r.split(" -j ")[-1] for r in rules] == ["CT --notrack", "CT --helper ftp"]


def test_one_chain_per_builtin_chain_with_a_single_jump():
    text = ipt_text.render(_ruleset({"notrack": [{"name": "d", "protocol": "udp", "ports": [53]}],
                                     "chains": {"input": {"policy": "drop"}}}).ipv4)
    assert "-I PREROUTING 1 -j CTKIT-PREROUTING" in text
    assert "-I OUTPUT 1 -j CTKIT-OUTPUT" in text
    assert "-I INPUT 1 -j CTKIT-INPUT" in text
    assert text.count("-I ") == 3
    assert "-P " not in text  # never the built-in chain's policy


def test_prefix_follows_the_policy_table():
    rules = _rules({"table": "ctkit_edge", "chains": {"input": {"policy": "drop"}}})
    assert rules == ['-A CTKIT_EDGE-INPUT -m comment --comment "input: policy drop" -j DROP']


def test_policy_accept_falls_through_and_policy_drop_is_the_last_rule():
    accept = _rules({"chains": {"input": {"rules": [{"protocol": "tcp", "action": "drop"}]}}})
    assert accept == ["-A CTKIT-INPUT -p tcp -m comment --comment \"input[0]\" -j DROP"]
    drop = _rules({"chains": {"input": {"policy": "drop", "rules": [{"protocol": "tcp", "action": "accept"}]}}})
    assert drop[-1] == '-A CTKIT-INPUT -m comment --comment "input: policy drop" -j DROP'


def test_return_in_a_base_chain_means_its_policy():
    doc = {"chains": {"input": {"policy": "drop", "rules": [{"protocol": "udp", "action": "return"}]}}}
    assert _rules(doc)[0].endswith("-j DROP")
    doc["chains"]["input"]["policy"] = "accept"
    assert _rules(doc)[0].endswith("-j RETURN")


def test_goto_from_a_drop_base_chain_drops_when_the_target_returns():
    doc = {"chains": {"input": {"policy": "drop", "rules": [{"protocol": "tcp", "goto": "web"}]},
                      "web": {"rules": [{"protocol": "tcp", "dport": 80, "action": "drop"}]}}}
    rules = _rules(doc, chain="CTKIT-INPUT")
    assert rules[:2] == ['-A CTKIT-INPUT -p tcp -m comment --comment "input[0]" -j CTKIT-web',
                         '-A CTKIT-INPUT -p tcp -m comment --comment "input[0]" -j DROP']
    doc["chains"]["input"]["policy"] = "accept"
    assert _rules(doc, chain="CTKIT-INPUT") == ['-A CTKIT-INPUT -p tcp -m comment --comment "input[0]" -g CTKIT-web']


def test_goto_from_the_top_level_chain_to_a_chain_that_accepts_tests_the_bit_on_the_way_back():
    # -g would hand the accept bit to the built-in chain: a jump, the test, then what the goto's end means
    doc = {"chains": {"input": {"policy": "drop", "rules": [{"protocol": "tcp", "goto": "web"}]},
                      "web": {"rules": [{"protocol": "tcp", "dport": 80, "action": "accept"}]}}}
    head = '-A CTKIT-INPUT -p tcp -m comment --comment "input[0]"'
    assert _rules(doc, chain="CTKIT-INPUT") == [
        "-A CTKIT-INPUT -j MARK --set-xmark 0x0/0x40000000", f"{head} -j CTKIT-web",
        "-A CTKIT-INPUT -m mark --mark 0x40000000/0x40000000 -g CTKIT-ACCEPT-END", f"{head} -j DROP",
        '-A CTKIT-INPUT -m comment --comment "input: policy drop" -j DROP']
    doc["chains"]["input"]["policy"] = "accept"
    assert _rules(doc, chain="CTKIT-INPUT")[1:] == [
        f"{head} -j CTKIT-web", "-A CTKIT-INPUT -m mark --mark 0x40000000/0x40000000 -g CTKIT-ACCEPT-END",
        f"{head} -j RETURN"]


def test_an_accept_in_the_top_level_chain_returns_to_the_built_in_chain():
    # nft: an accept ends ctkit's base chain and the packet goes on to the next one at the hook; on iptables
    # the built-in chain goes on after ctkit's jump. Nothing nested accepts: no mark rules at all.
    doc = {"chains": {"input": {"policy": "drop", "rules": [
        {"protocol": "tcp", "dport": 22, "action": "accept"}, {"jump": "bad"}]},
        "bad": {"rules": [{"saddr": "192.0.2.0/24", "action": "drop"}, {"action": "return"}]}}}
    rules = _rules(doc)
    assert rules == [
        '-A CTKIT-INPUT -p tcp -m tcp --dport 22 -m comment --comment "input[0]" -j RETURN',
        '-A CTKIT-INPUT -m comment --comment "input[1]" -j CTKIT-bad',
        '-A CTKIT-INPUT -m comment --comment "input: policy drop" -j DROP',
        '-A CTKIT-bad -s 192.0.2.0/24 -m comment --comment "bad[0]" -j DROP',
        '-A CTKIT-bad -m comment --comment "bad[1]" -j RETURN']


def test_an_accept_in_a_nested_chain_sets_the_bit_and_every_caller_leaves():
    doc = {"chains": {"input": {"policy": "drop", "rules": [{"jump": "a"}, {"protocol": "udp", "action": "accept"}]},
                      "a": {"rules": [{"jump": "b"}, {"protocol": "tcp", "dport": 81, "action": "accept"}]},
                      "b": {"rules": [{"protocol": "tcp", "dport": 80, "action": "accept", "log": {}}]}}}
    assert _rules(doc) == [
        "-A CTKIT-INPUT -j MARK --set-xmark 0x0/0x40000000",
        '-A CTKIT-INPUT -m comment --comment "input[0]" -j CTKIT-a',
        "-A CTKIT-INPUT -m mark --mark 0x40000000/0x40000000 -g CTKIT-ACCEPT-END",
        '-A CTKIT-INPUT -p udp -m comment --comment "input[1]" -j RETURN',
        '-A CTKIT-INPUT -m comment --comment "input: policy drop" -j DROP',
        '-A CTKIT-a -m comment --comment "a[0]" -j CTKIT-b',
        "-A CTKIT-a -m mark --mark 0x40000000/0x40000000 -j RETURN",
        '-A CTKIT-a -p tcp -m tcp --dport 81 -m comment --comment "a[1]" -j MARK --set-xmark 0x40000000/0x40000000',
        "-A CTKIT-a -m mark --mark 0x40000000/0x40000000 -j RETURN",
        '-A CTKIT-b -p tcp -m tcp --dport 80 -m comment --comment "b[0]" -j LOG',
        '-A CTKIT-b -p tcp -m tcp --dport 80 -m comment --comment "b[0]" -j MARK --set-xmark 0x40000000/0x40000000',
        "-A CTKIT-b -m mark --mark 0x40000000/0x40000000 -j RETURN",
        "-A CTKIT-ACCEPT-END -j MARK --set-xmark 0x0/0x40000000"]


def test_a_goto_in_a_nested_chain_needs_no_test_its_callers_caller_tests():
    doc = {"chains": {"input": {"policy": "drop", "rules": [{"jump": "a"}]},
                      "a": {"rules": [{"goto": "b"}]}, "b": {"rules": [{"action": "accept"}]}}}
    assert _rules(doc, chain="CTKIT-a") == ['-A CTKIT-a -m comment --comment "a[0]" -g CTKIT-b']
    assert "-A CTKIT-INPUT -m mark --mark 0x40000000/0x40000000 -g CTKIT-ACCEPT-END" in _rules(doc)


def test_a_toggled_accept_is_nested_and_a_verdict_map_tests_after_each_jump():
    doc = {"toggles": {"open": True},
           "chains": {"input": {"policy": "drop", "rules": [
               {"protocol": "tcp", "dport": 80, "when": "open", "action": "accept"},
               {"protocol": "tcp", "vmap": {"key": "dport", "map": {"22": "jump ssh", "23": "drop"}}}]},
               "ssh": {"rules": [{"saddr": "10.0.0.0/8", "action": "accept"}]}}}
    rules = _rules(doc)
    check = "-m mark --mark 0x40000000/0x40000000"
    assert rules[:6] == [
        "-A CTKIT-INPUT -j MARK --set-xmark 0x0/0x40000000",
        '-A CTKIT-INPUT -m comment --comment "input[0]" -j CTKIT-TG-open-0',
        f"-A CTKIT-INPUT {check} -g CTKIT-ACCEPT-END",
        '-A CTKIT-INPUT -p tcp -m tcp --dport 22 -m comment --comment "input[1]" -j CTKIT-ssh',
        f"-A CTKIT-INPUT {check} -g CTKIT-ACCEPT-END",
        '-A CTKIT-INPUT -p tcp -m tcp --dport 23 -m comment --comment "input[1]" -j DROP']
    assert '-A CTKIT-TR-open-0 -p tcp -m tcp --dport 80 -m comment --comment "input[0]" -j MARK --set-xmark ' \
           "0x40000000/0x40000000" in rules
    assert f"-A CTKIT-TR-open-0 {check} -j RETURN" in rules
    # the switch chain holds only the jump (`ctkit toggle` refills it): the bit comes back through its end
    assert [r for r in rules if r.startswith("-A CTKIT-TG-")] == [
        '-A CTKIT-TG-open-0 -m comment --comment "toggle/open" -j CTKIT-TR-open-0']


def test_a_mark_that_sets_the_reserved_bit_is_a_compile_error():
    for field, construct in (("mark_set", "mark"), ("ct_mark_set", "ct mark")):
        doc = {"chains": {"input": {"rules": [{"protocol": "tcp", field: 0x40000001}]}}}
        with pytest.raises(CompileError) as exc:
            _ruleset(doc)
        assert exc.value.construct == construct and "0x40000000" in str(exc.value)
        assert "/chains/input/rules/0" in str(exc.value)
        doc["chains"]["input"]["rules"][0][field] = 0x1
        _ruleset(doc)  # any other bit is the policy's


def test_goto_in_a_user_chain_is_native():
    doc = {"chains": {"input": {"policy": "drop", "rules": [{"jump": "a"}]},
                      "a": {"rules": [{"goto": "b"}]}, "b": {"rules": [{"action": "accept"}]}}}
    assert _rules(doc, chain="CTKIT-a") == ['-A CTKIT-a -m comment --comment "a[0]" -g CTKIT-b']


def test_log_with_verdict_becomes_two_rules_and_levels_are_numbers():
    doc = {"chains": {"input": {"rules": [{"protocol": "tcp", "dport": 23, "action": "drop",
                                           "log": {"prefix": "telnet: ", "level": "info"}}]}}}
    assert _rules(doc) == [
        '-A CTKIT-INPUT -p tcp -m tcp --dport 23 -m comment --comment "input[0]" -j LOG --log-prefix "telnet: " '
        "--log-level 6",
        '-A CTKIT-INPUT -p tcp -m tcp --dport 23 -m comment --comment "input[0]" -j DROP']
    # warn is LOG's default: iptables-save leaves it out, so ctkit does too
    doc["chains"]["input"]["rules"][0]["log"] = {"level": "warn"}
    assert _rules(doc)[0].endswith("-j LOG")


def test_log_prefix_over_29_characters_is_a_compile_error():
    doc = {"chains": {"input": {"rules": [{"action": "drop", "log": {"prefix": "x" * 30}}]}}}
    with pytest.raises(CompileError) as exc:
        _ruleset(doc)
    assert exc.value.backend == "iptables" and exc.value.construct == "log prefix"
    assert "/chains/input/rules/0" in str(exc.value) and "at most 29" in str(exc.value)
    doc["chains"]["input"]["rules"][0]["log"]["prefix"] = "x" * 29
    _ruleset(doc)


def test_ports_single_range_and_lists():
    doc = {"chains": {"input": {"rules": [
        {"protocol": "tcp", "dport": "1024-65535", "action": "accept"},
        {"protocol": "udp", "sport": [53, 123, "5000-5010"], "action": "accept"},
        {"protocol": "udplite", "dport": 9, "action": "accept"},
        {"protocol": "sctp", "sport": 1, "dport": 2, "action": "accept"}]}}}
    specs = [r.split(" -m comment")[0] for r in _rules(doc)]
    assert specs == ["-A CTKIT-INPUT -p tcp -m tcp --dport 1024:65535",
                     "-A CTKIT-INPUT -p udp -m multiport --sports 53,123,5000:5010",
                     "-A CTKIT-INPUT -p udplite -m multiport --dports 9",
                     "-A CTKIT-INPUT -p sctp -m sctp --sport 1 -m sctp --dport 2"]


def test_more_than_15_multiport_slots_is_a_compile_error():
    ports = list(range(1000, 1016))
    with pytest.raises(CompileError, match="at most 15"):
        _ruleset({"chains": {"input": {"rules": [{"protocol": "tcp", "dport": ports, "action": "accept"}]}}})
    _ruleset({"chains": {"input": {"rules": [{"protocol": "tcp", "dport": ports[:15], "action": "accept"}]}}})


def test_addresses_split_by_family_and_collapse():
    doc = {"chains": {"input": {"rules": [
        {"saddr": ["10.0.0.0/8", "10.1.0.0/16", "192.0.2.1", "fd00::/8"], "action": "accept"}]}}}
    assert [r.split(" -m")[0] for r in _rules(doc)] == ["-A CTKIT-INPUT -s 10.0.0.0/8",
                                                        "-A CTKIT-INPUT -s 192.0.2.1/32"]
    assert [r.split(" -m")[0] for r in _rules(doc, "ipv6")] == ["-A CTKIT-INPUT -s fd00::/8"]


def test_notrack_peers_match_source_or_destination():
    doc = {"notrack": [{"name": "mc", "protocol": "tcp", "ports": [11211], "peers": ["10.0.0.20"]}]}
    pre = [r.split(" -m comment")[0] for r in _rules(doc, chain="CTKIT-PREROUTING")]
    assert pre == ["-A CTKIT-PREROUTING -s 10.0.0.20/32 -p tcp -m multiport --ports 11211",
                   "-A CTKIT-PREROUTING -d 10.0.0.20/32 -p tcp -m multiport --ports 11211"]
    assert _rules(doc, "ipv6") == []
    assert _ruleset(doc).ipv6.tables == ()


def test_icmp_protocols_belong_to_their_family():
    doc = {"chains": {"input": {"rules": [{"protocols": ["icmp", "icmpv6"], "action": "accept"},
                                          {"protocol": "icmpv6", "action": "drop"}]}}}
    assert [r.split(" -m")[0] for r in _rules(doc)] == ["-A CTKIT-INPUT -p icmp"]
    assert [r.split(" -m")[0] for r in _rules(doc, "ipv6")] == ["-A CTKIT-INPUT -p ipv6-icmp"] * 2


@pytest.mark.parametrize("how,v4,v6", [
    (None, "icmp-port-unreachable", "icmp6-port-unreachable"),
    ("host-unreachable", "icmp-host-unreachable", "icmp6-addr-unreachable"),
    ("net-unreachable", "icmp-net-unreachable", "icmp6-no-route"),
    ("admin-prohibited", "icmp-admin-prohibited", "icmp6-adm-prohibited"),
])
def test_reject_with_per_family(how, v4, v6):
    rule = {"protocol": "udp", "action": "reject", **({"reject_with": how} if how else {})}
    doc = {"chains": {"input": {"rules": [rule]}}}
    assert _rules(doc)[0].endswith(f"-j REJECT --reject-with {v4}")
    assert _rules(doc, "ipv6")[0].endswith(f"-j REJECT --reject-with {v6}")


def test_reject_outside_the_filter_table_is_a_compile_error():
    doc = {"chains": {"prerouting": {"rules": [{"protocol": "tcp", "action": "reject"}]}}}
    with pytest.raises(CompileError) as exc:
        _ruleset(doc)
    assert exc.value.construct == "reject" and "filter table" in str(exc.value)


def test_prerouting_policy_chain_lands_in_mangle():
    doc = {"chains": {"prerouting": {"policy": "drop", "rules": [{"iif": "lo", "action": "accept"}]}}}
    tables = _ruleset(doc).ipv4.tables
    assert [(t.name, [c.name for c in t.chains]) for t in tables] == [("mangle", ["CTKIT-PREROUTING"])]


def test_user_chain_exists_in_every_table_that_reaches_it():
    doc = {"chains": {"prerouting": {"rules": [{"jump": "common"}]},
                      "input": {"rules": [{"jump": "common"}]},
                      "common": {"rules": [{"protocol": "tcp", "dport": 7, "action": "drop"}]}}}
    tables = {t.name: [c.name for c in t.chains] for t in _ruleset(doc).ipv4.tables}
    assert tables == {"mangle": ["CTKIT-PREROUTING", "CTKIT-common"], "filter": ["CTKIT-INPUT", "CTKIT-common"]}


def test_long_chain_names_are_a_compile_error():
    doc = {"table": "ctkit_longname", "chains": {"input": {"rules": [{"jump": "a" * 20}]}, "a" * 20: {}}}
    with pytest.raises(CompileError) as exc:
        _ruleset(doc)
    assert exc.value.construct == "chain name" and "28" in str(exc.value)


def test_user_chain_named_like_a_builtin_collides():
    doc = {"chains": {"input": {"rules": [{"jump": "INPUT"}]}, "INPUT": {"rules": []}}}
    with pytest.raises(CompileError, match="rename 'INPUT'"):
        _ruleset(doc)


def test_comments_are_quoted_like_iptables_save():
    assert iptables.quote("input_0-x") == "input_0-x"
    assert iptables.quote("ssh from lan") == '"ssh from lan"'
    assert iptables.quote('say "hi" \\o/') == '"say \\"hi\\" \\\\o/"'
    doc = {"chains": {"input": {"rules": [{"name": "x", "comment": "a b", "action": "accept"}]}}}
    assert _rules(doc) == ['-A CTKIT-INPUT -m comment --comment "x: a b" -j RETURN']


def test_counter_false_still_renders_the_rule():
    doc = {"chains": {"input": {"rules": [{"protocol": "tcp", "counter": False, "action": "accept"}]}}}
    assert _rules(doc) == ['-A CTKIT-INPUT -p tcp -m comment --comment "input[0]" -j RETURN']


def test_counter_only_rule_has_no_target():
    doc = {"chains": {"input": {"rules": [{"protocol": "tcp", "counter": True}]}}}
    assert _rules(doc) == ['-A CTKIT-INPUT -p tcp -m comment --comment "input[0]"']


def test_unknown_ir_node_is_a_named_compile_error():
    from dataclasses import dataclass

    from ctkit.compile import ir

    @dataclass(frozen=True)
    class Mark:
        value: int

    rule = ir.Rule("r", "/chains/input/rules/0", (Mark(1),), (ir.Verdict("accept"),))
    plan = ir.Plan(ir.Table("ctkit", (ir.Chain("input", (rule,), ir.Hook("input", 0), "accept"),)))
    with pytest.raises(CompileError) as exc:
        iptables.generate(plan)
    assert exc.value.construct == "Mark" and exc.value.backend == "iptables"


def test_render_is_json_free_text_and_documents_compare():
    ruleset = _ruleset({"chains": {"input": {"policy": "drop"}}})
    assert ruleset == _ruleset({"chains": {"input": {"policy": "drop"}}})
    json.dumps(ruleset.ipv4.rule_count)
    assert ipt_text.render(ruleset.ipv4).endswith("COMMIT\n")


def test_a_limited_nested_accept_keeps_one_bucket():
    # the accept bit's test is a rule of its own without the rule's matches: the limit stays on one rule
    doc = {"chains": {"input": {"policy": "drop", "rules": [{"jump": "icmp"}]},
                      "icmp": {"rules": [{"protocol": "icmp", "limit": {"rate": 10, "per": "second"},
                                          "action": "accept"}]}}}
    rules = _rules(doc, chain="CTKIT-icmp")
    assert [r for r in rules if "-m limit" in r] == [
        '-A CTKIT-icmp -p icmp -m limit --limit 10/sec -m comment --comment "icmp[0]" -j MARK --set-xmark '
        "0x40000000/0x40000000"]
    assert rules[1] == "-A CTKIT-icmp -m mark --mark 0x40000000/0x40000000 -j RETURN"
