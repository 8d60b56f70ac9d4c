"""Semantic checks the schema cannot express."""
import pytest
from goldens import EXAMPLES

from ctkit.policy.lint import errors_of, lint
from ctkit.policy.load import load_document, load_file


def findings(doc):
    return [(p.severity, p.pointer, p.message) for p in lint(load_document(doc))]


def has(found, severity, pointer, words):
    return any(s == severity and p == pointer and words in m for s, p, m in found)


def chains(**chains):
    return {"version": 1, "chains": chains}


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_examples_have_no_findings(path):
    assert lint(load_file(path)) == []


def test_unknown_jump_target_suggests_a_name():
    f = lint(load_document(chains(input={"rules": [{"jump": "wbe"}]}, web={"rules": []})))
    (e,) = errors_of(f)
    assert e.pointer == "/chains/input/rules/0/jump" and "unknown chain 'wbe'" in e.message
    assert "did you mean 'web'" in e.hint


def test_jump_to_base_chain():
    assert has(findings(chains(input={"rules": [{"goto": "output"}]}, output={})),
               "error", "/chains/input/rules/0/goto", "cannot goto to base chain")


def test_jump_loop_names_the_cycle():
    doc = chains(input={"rules": [{"jump": "a"}]}, a={"rules": [{"jump": "b"}]}, b={"rules": [{"goto": "a"}]})
    (e,) = [p for p in lint(load_document(doc)) if "loop" in p.message]
    assert e.message == "jump loop: a -> b -> a"
    assert e.pointer == "/chains/b/rules/0"


def test_self_loop():
    assert has(findings(chains(input={"rules": [{"jump": "a"}]}, a={"rules": [{"jump": "a"}]})),
               "error", "/chains/a/rules/0", "jump loop: a -> a")


def test_duplicate_names():
    doc = {"version": 1,
           "notrack": [{"name": "x", "protocol": "udp", "ports": 1}, {"name": "x", "protocol": "udp", "ports": 2}],
           "chains": {"input": {"rules": [{"name": "r", "action": "accept", "protocol": "tcp"},
                                          {"name": "r", "action": "drop"}]}}}
    f = findings(doc)
    assert has(f, "error", "/notrack/0/name", "notrack name 'x' is used 2 times")
    assert has(f, "error", "/chains/input/rules/0/name", "rule name 'r' is used 2 times")


def test_user_chain_with_policy():
    assert has(findings(chains(input={"rules": [{"jump": "web"}]}, web={"policy": "drop"})),
               "error", "/chains/web/policy", "cannot have a policy")


def test_unreachable_chain_and_rule():
    f = findings(chains(input={"rules": [{"action": "drop"}, {"action": "accept", "protocol": "tcp"}]},
                        orphan={"rules": []}))
    assert has(f, "warning", "/chains/orphan", "never reached")
    assert has(f, "warning", "/chains/input/rules/1", "never reached")


def test_ports_need_a_port_protocol():
    f = findings(chains(input={"rules": [{"dport": 22, "action": "accept"},
                                         {"protocol": "icmp", "sport": 1, "action": "accept"}]}))
    assert has(f, "error", "/chains/input/rules/0/dport", "dport needs a protocol")
    assert has(f, "error", "/chains/input/rules/1/sport", "icmp has no ports")


def test_family_conflicts():
    f = findings(chains(input={"rules": [
        {"saddr": "10.0.0.0/8", "daddr": "2001:db8::1", "action": "accept"},
        {"family": "ipv6", "saddr": "10.0.0.0/8", "action": "accept"},
        {"family": "ipv6", "protocol": "icmp", "action": "accept"}]}))
    assert has(f, "error", "/chains/input/rules/0", "different address families")
    assert has(f, "error", "/chains/input/rules/1/saddr", "family is ipv6")
    assert has(f, "error", "/chains/input/rules/2/protocols", "icmp is IPv4 only")


def test_reject_with_needs_reject_and_tcp_reset_needs_tcp():
    f = findings(chains(input={"rules": [{"action": "drop", "reject_with": "admin-prohibited"},
                                         {"action": "reject", "reject_with": "tcp-reset", "protocol": "udp"}]}))
    assert has(f, "error", "/chains/input/rules/0/reject_with", "needs action reject")
    assert has(f, "error", "/chains/input/rules/1/reject_with", "tcp-reset needs protocol tcp")


def test_interfaces_that_never_match():
    f = findings(chains(output={"rules": [{"iif": "eth0", "action": "drop"}]},
                        input={"rules": [{"oif": "eth0", "action": "drop"}]}))
    assert has(f, "error", "/chains/output/rules/0/iif", "never matches in chain output")
    assert has(f, "error", "/chains/input/rules/0/oif", "never matches in chain input")


def test_helper_port_untracked_is_an_error():
    doc = {"version": 1,
           "notrack": [{"name": "all-tcp-low", "protocol": "tcp", "ports": "1-1024"}],
           "helpers": [{"name": "ftp", "helper": "ftp", "protocol": "tcp", "ports": [21], "daddr": "192.0.2.10"}]}
    assert has(findings(doc), "error", "/helpers/0/ports", "untracked by notrack 'all-tcp-low'")


def test_helper_port_untracked_elsewhere_is_fine():
    doc = {"version": 1,
           "notrack": [{"name": "dns", "protocols": ["tcp", "udp"], "ports": [53], "peers": "198.51.100.0/24"}],
           "helpers": [{"name": "ftp", "helper": "ftp", "protocol": "tcp", "ports": [21], "daddr": "192.0.2.10"}]}
    assert not errors_of(lint(load_document(doc)))


def test_helper_without_servers_is_a_warning_and_ipv4_only_helpers():
    doc = {"version": 1, "helpers": [
        {"name": "ftp", "helper": "ftp", "protocol": "tcp", "ports": [21]},
        {"name": "irc", "helper": "irc", "protocol": "tcp", "ports": [6667], "daddr": "2001:db8::1"}]}
    f = findings(doc)
    assert has(f, "warning", "/helpers/0", "assigned for every destination address")
    assert has(f, "error", "/helpers/1/daddr", "IPv4 only")


def test_notrack_dropped_by_default_drop_input():
    doc = {"version": 1, "notrack": [{"name": "dns", "protocols": ["udp"], "ports": [53], "direction": "in"}],
           "chains": {"input": {"policy": "drop", "rules": [{"ct_state": ["established"], "action": "accept"}]}}}
    assert has(findings(doc), "warning", "/notrack/0", "untracked traffic of 'dns' is dropped by chain 'input'")
    doc["chains"]["input"]["rules"].append(
        {"ct_state": ["untracked"], "protocol": "udp", "dport": 53, "action": "accept"})
    assert not [f for f in findings(doc) if "dropped" in f[2]]


def test_notrack_accept_found_through_a_jump():
    doc = {"version": 1, "notrack": [{"name": "dns", "protocols": ["udp"], "ports": [53], "direction": "in"}],
           "chains": {"input": {"policy": "drop", "rules": [{"jump": "dns"}]},
                      "dns": {"rules": [{"ct_state": ["untracked"], "action": "accept"}]}}}
    assert not [f for f in findings(doc) if "dropped" in f[2]]


def test_asymmetric_notrack_warnings():
    doc = {"version": 1, "notrack": [
        {"name": "a", "protocol": "udp", "ports": 53, "saddr": "192.0.2.0/24"},
        {"name": "b", "protocol": "udp", "ports": 53, "iif": "eth0"},
        {"name": "c"}]}
    f = findings(doc)
    assert has(f, "warning", "/notrack/0/saddr", "not symmetric")
    assert has(f, "warning", "/notrack/1/iif", "narrows only one direction")
    assert has(f, "warning", "/notrack/2", "untracks all traffic")


def test_autoassign_on_is_a_warning():
    assert has(findings({"version": 1, "conntrack": {"helper_autoassign": True}}),
               "warning", "/conntrack/helper_autoassign", "unsafe")


def test_findings_carry_lines():
    from ctkit.policy.load import load_text
    text = '{"version": 1,\n "chains": {"input": {"rules": [\n  {"jump": "nowhere"}\n ]}}}'
    (p,) = lint(load_text(text, "p.json", "json"))
    assert (p.line, p.source) == (3, "p.json")


@pytest.mark.parametrize("key", ["\u00b2", "0", "65536", "80-90"])
def test_a_vmap_port_key_is_checked_by_the_one_port_parser(key):
    doc = chains(input={"rules": [{"protocol": "tcp", "vmap": {"key": "dport", "map": {key: "accept"}}}]})
    assert has(findings(doc), "error", f"/chains/input/rules/0/vmap/map/{key}", "is not a port")


def test_addresses_of_a_family_the_other_side_lacks_are_a_warning():
    doc = chains(input={"rules": [{"saddr": ["10.0.0.0/8", "fd00::/8"], "daddr": "192.0.2.1", "action": "accept"}]})
    assert has(findings(doc), "warning", "/chains/input/rules/0/saddr",
               "the ipv6 addresses in saddr never match: daddr has no ipv6 address")
    both = chains(input={"rules": [{"saddr": ["10.0.0.0/8", "fd00::/8"], "daddr": ["192.0.2.1", "2001:db8::1"],
                                    "action": "accept"}]})
    assert findings(both) == []
