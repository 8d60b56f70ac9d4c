"""Lowering and the nft backend: what each construct means in the kernel."""
import json

import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from ctkit.backends.nft import generate as nft
from ctkit.backends.nft import text as nft_text
from ctkit.compile import ir
from ctkit.compile.lower import lower
from ctkit.errors import PolicyError
from ctkit.policy.lint import errors_of, lint
from ctkit.policy.load import load_document, load_text
from ctkit.values import PortRange


def rules_of(doc, chain):
    document = nft.generate(lower(load_document(doc)))
    return [c["add"]["rule"] for c in document["nftables"] if "rule" in c.get("add", {})
            and c["add"]["rule"]["chain"] == chain]


def test_mixed_families_split_into_one_rule_per_family():
    doc = {"version": 1, "chains": {"input": {"rules": [
        {"name": "ssh", "protocol": "tcp", "dport": 22, "saddr": ["10.0.0.0/8", "fd00::/8"], "action": "accept"}]}}}
    r4, r6 = rules_of(doc, "input")
    assert r4["expr"][0]["match"]["left"] == {"payload": {"protocol": "ip", "field": "saddr"}}
    assert r6["expr"][0]["match"]["left"] == {"payload": {"protocol": "ip6", "field": "saddr"}}
    assert r4["comment"] == r6["comment"] == "ssh"


def test_notrack_is_symmetric_in_raw_prerouting_and_output():
    plan = lower(load_document({"version": 1, "notrack": [{"name": "dns", "protocols": ["udp", "tcp"], "ports": 53}]}))
    chains = {c.name: c for c in plan.table.chains}
    assert chains["notrack-pre"].hook == ir.Hook("prerouting", ir.PRIORITY_RAW)
    assert chains["notrack-out"].hook == ir.Hook("output", ir.PRIORITY_RAW)
    (rule,) = chains["notrack-pre"].rules
    assert rule.matches == (ir.L4Proto(("udp", "tcp")), ir.Port("any", (PortRange(53, 53),)))
    # nft has no "sport or dport": two kernel rules per hook
    doc = {"version": 1, "notrack": [{"name": "dns", "protocols": ["udp", "tcp"], "ports": 53}]}
    fields = [r["expr"][1]["match"]["left"]["payload"]["field"] for r in rules_of(doc, "notrack-pre")]
    assert fields == ["sport", "dport"]


def test_peers_match_source_or_destination():
    doc = {"version": 1, "notrack": [{"name": "mc", "protocol": "tcp", "ports": 11211, "peers": "192.0.2.0/24"}]}
    rules = rules_of(doc, "notrack-out")
    assert len(rules) == 4  # (saddr | daddr) x (sport | dport)


def test_direction_in_only_uses_prerouting():
    plan = lower(load_document({"version": 1, "notrack": [
        {"name": "x", "protocol": "udp", "ports": 1, "direction": "in"}]}))
    assert [c.name for c in plan.table.chains] == ["notrack-pre"]


def test_helper_object_and_assignment_after_conntrack():
    doc = {"version": 1, "helpers": [
        {"name": "h323", "helper": "h323", "protocol": "udp", "ports": 1719, "daddr": "192.0.2.1"},
        {"name": "irc", "helper": "irc", "protocol": "tcp", "ports": 6667, "daddr": "192.0.2.1"}]}
    plan = lower(load_document(doc))
    assert [(o.helper, o.protocol, o.l3proto) for o in plan.table.helpers] == [("RAS", "udp", "inet"),
                                                                              ("irc", "tcp", "ip")]
    (chain,) = plan.table.chains
    assert chain.hook.priority > -200  # after conntrack (-200), so the flow exists
    assert chain.rules[0].statements[-1] == ir.SetCtHelper("h323")


def test_reject_types_and_log():
    doc = {"version": 1, "chains": {"input": {"rules": [
        {"protocol": "tcp", "action": "reject", "reject_with": "tcp-reset"},
        {"action": "reject", "log": {"prefix": "no: ", "level": "info"}}]}}}
    a, b = rules_of(doc, "input")
    assert a["expr"][-1] == {"reject": {"type": "tcp reset"}}
    assert b["expr"][-2:] == [{"log": {"prefix": "no: ", "level": "info"}},
                              {"reject": {"type": "icmpx", "expr": "port-unreachable"}}]


def test_settings_plan():
    plan = lower(load_document({"version": 1, "conntrack": {"max": 1000, "helper_autoassign": False,
                                                             "timeouts": {"udp": 10}}}))
    assert [(s.sysctl, s.value, s.absent_ok) for s in plan.settings] == [
        ("nf_conntrack_max", 1000, False), ("nf_conntrack_helper", 0, True), ("nf_conntrack_udp_timeout", 10, False)]


# ---- any valid rule compiles, and its kernel rules carry its name

addresses = st.sampled_from(["192.0.2.1", "10.0.0.0/8", "2001:db8::/32", "fd00::1"])
ports = st.one_of(st.integers(1, 65535), st.sampled_from(["1000-2000", "53"]))
rule = st.fixed_dictionaries({}, optional={
    "protocols": st.lists(st.sampled_from(["tcp", "udp", "sctp"]), min_size=1, max_size=3, unique=True),
    "saddr": st.lists(addresses, min_size=1, max_size=3, unique=True),
    "dport": st.lists(ports, min_size=1, max_size=3),
    "sport": ports,
    "iif": st.sampled_from(["lo", "eth0"]),
    "ct_state": st.lists(st.sampled_from(["new", "established", "related", "invalid", "untracked"]),
                         min_size=1, max_size=5, unique=True),
    "action": st.sampled_from(["accept", "drop", "reject", "return"]),
    "counter": st.booleans(),
    "log": st.fixed_dictionaries({"prefix": st.sampled_from(["x: ", "drop "])}),
    "comment": st.sampled_from(["a comment", "x"]),
})


@settings(max_examples=200, deadline=None)
@given(st.lists(rule, min_size=1, max_size=6))
def test_any_valid_rule_compiles(rules):
    for r in rules:
        if ("dport" in r or "sport" in r) and "protocols" not in r:
            r["protocols"] = ["tcp"]
    doc = {"version": 1, "chains": {"input": {"policy": "drop", "rules": rules}}}
    policy = load_document(doc)
    if errors_of(lint(policy)):
        return
    document = nft.generate(lower(policy))
    text = nft_text.render(document)
    kernel_rules = [c["add"]["rule"] for c in document["nftables"] if "rule" in c.get("add", {})]
    assert {r["comment"].split(":")[0] for r in kernel_rules} <= {f"input[{i}]" for i in range(len(rules))}
    assert text.count("comment ") == len(kernel_rules)


def test_every_reject_type_has_an_nft_form():
    for kind, nft_code in (("port-unreachable", "port-unreachable"), ("host-unreachable", "host-unreachable"),
                           ("net-unreachable", "no-route"), ("admin-prohibited", "admin-prohibited")):
        doc = {"version": 1, "chains": {"input": {"rules": [{"action": "reject", "reject_with": kind}]}}}
        (rule,) = rules_of(doc, "input")
        assert rule["expr"][-1] == {"reject": {"type": "icmpx", "expr": nft_code}}


# ---- text: what `nft -f` is given, written out literally

def test_nft_text_of_a_literal_document():
    """The renderer alone: a hand-written libnftables JSON document and the nft text it must become."""
    document = {"nftables": [
        {"add": {"table": {"family": "inet", "name": "ctkit"}}},
        {"add": {"set": {"family": "inet", "table": "ctkit", "name": "bl", "type": "ipv4_addr",
                         "flags": ["interval"], "timeout": 60}}},
        {"add": {"element": {"family": "inet", "table": "ctkit", "name": "bl",
                             "elem": [{"prefix": {"addr": "198.51.100.0", "len": 24}}]}}},
        {"add": {"chain": {"family": "inet", "table": "ctkit", "name": "input", "type": "filter",
                           "hook": "input", "prio": 0, "policy": "drop"}}},
        {"add": {"rule": {"family": "inet", "table": "ctkit", "chain": "input", "comment": "blocked", "expr": [
            {"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "saddr"}}, "right": "@bl"}},
            {"counter": None}, {"drop": None}]}}},
        {"add": {"rule": {"family": "inet", "table": "ctkit", "chain": "input", "comment": "web", "expr": [
            {"match": {"op": "==", "left": {"payload": {"protocol": "tcp", "field": "dport"}},
                       "right": {"set": [80, 443]}}},
            {"match": {"op": "in", "left": {"ct": {"key": "state"}}, "right": "new"}},
            {"counter": None}, {"accept": None}]}}},
    ]}
    assert nft_text.render(document) == (
        "# ctkit: table inet ctkit; `nft -f` this file replaces the table atomically\n"
        "add table inet ctkit\n"
        "delete table inet ctkit\n"
        "\n"
        "table inet ctkit {\n"
        "\tset bl {\n"
        "\t\ttype ipv4_addr\n"
        "\t\tflags interval\n"
        "\t\ttimeout 60s\n"
        "\t\telements = { 198.51.100.0/24 }\n"
        "\t}\n"
        "\n"
        "\tchain input {\n"
        "\t\ttype filter hook input priority 0; policy drop;\n"
        "\t\tip saddr @bl counter drop comment \"blocked\"\n"
        "\t\ttcp dport { 80, 443 } ct state new counter accept comment \"web\"\n"
        "\t}\n"
        "}\n")


def test_policy_to_nft_text():
    """The whole path for one small policy, from policy JSON text to the nft text, written out."""
    text = json.dumps({"version": 1, "notrack": [{"name": "dns", "protocol": "udp", "ports": 53, "direction": "in"}],
                       "chains": {"input": {"policy": "drop", "rules": [
                           {"name": "ssh", "protocol": "tcp", "dport": 22, "saddr": ["10.0.0.0/8", "fd00::/8"],
                            "action": "accept"}]}}})
    document = nft.generate(lower(load_text(text, "p.json", "json")))
    assert json.loads(json.dumps(document)) == document  # plain JSON: what libnftables is handed
    assert nft_text.render(document) == (
        "# ctkit: table inet ctkit; `nft -f` this file replaces the table atomically\n"
        "add table inet ctkit\n"
        "delete table inet ctkit\n"
        "\n"
        "table inet ctkit {\n"
        "\tchain notrack-pre {\n"
        "\t\ttype filter hook prerouting priority -300; policy accept;\n"
        "\t\tudp sport 53 counter notrack comment \"notrack/dns\"\n"
        "\t\tudp dport 53 counter notrack comment \"notrack/dns\"\n"
        "\t}\n"
        "\n"
        "\tchain input {\n"
        "\t\ttype filter hook input priority 0; policy drop;\n"
        "\t\tip saddr 10.0.0.0/8 tcp dport 22 counter accept comment \"ssh\"\n"
        "\t\tip6 saddr fd00::/8 tcp dport 22 counter accept comment \"ssh\"\n"
        "\t}\n"
        "}\n")


# ---- policy text round trip: a document written as JSON or YAML text loads to the same model

def _outcome(load):
    try:
        return load()
    except PolicyError as exc:
        return [(p.pointer, p.message) for p in exc.problems]


@settings(max_examples=100, deadline=None)
@given(st.lists(rule, min_size=1, max_size=4))
def test_policy_json_and_yaml_text_round_trip(rules):
    doc = {"version": 1, "chains": {"input": {"policy": "drop", "rules": rules}}}
    direct = _outcome(lambda: load_document(doc, "p"))
    assert _outcome(lambda: load_text(json.dumps(doc), "p", "json")) == direct
    assert _outcome(lambda: load_text(yaml.safe_dump(doc), "p", "yaml")) == direct


def test_policy_text_round_trip_keeps_values():
    text = '{"version": 1, "chains": {"input": {"rules": [{"protocol": "tcp", "dport": [22, "1000-2000"]}]}}}'
    (chain,) = load_text(text, "p.json", "json").chains
    (r,) = chain.rules
    assert (r.id, r.protocols, r.dport) == ("input[0]", ("tcp",), (PortRange(22, 22), PortRange(1000, 2000)))
