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


# ------------------------------------------------- do-not-track traps (issue 13, section 3)

def messages(doc):
    return [(p.pointer, p.message, p.hint) for p in lint(load_document(doc)) if p.severity == "warning"]


WEB = {"name": "http", "protocol": "tcp", "ports": [80]}
ICMP = {"name": "icmp", "protocols": ["icmp", "icmpv6"], "action": "accept"}
SERVE_80 = {"name": "http-untracked", "ct_state": ["untracked"], "protocol": "tcp", "dport": 80, "action": "accept"}


def test_a_server_that_untracks_a_port_it_also_connects_to():
    doc = {"version": 1, "notrack": [WEB], "chains": {"input": {"policy": "drop", "rules": [SERVE_80, ICMP]}}}
    assert messages(doc) == [(
        "/notrack/0",
        "this host's own connections to port 80 are untracked by 'http' too (its ports match source and "
        "destination), and chain 'input' drops their replies (source port 80)",
        "add to chain 'input': {\"ct_state\": [\"untracked\"], \"protocol\": \"tcp\", \"sport\": 80, "
        "\"action\": \"accept\"}")]
    # the rule the hint names ends it
    replies = {"ct_state": ["untracked"], "protocol": "tcp", "sport": 80, "action": "accept"}
    doc["chains"]["input"]["rules"].insert(1, replies)
    assert messages(doc) == []


def test_no_client_warning_when_the_host_cannot_connect_to_the_port():
    doc = {"version": 1, "notrack": [WEB], "chains": {
        "input": {"policy": "drop", "rules": [SERVE_80, ICMP]},
        "output": {"policy": "drop", "rules": [
            {"name": "replies", "ct_state": ["untracked"], "protocol": "tcp", "sport": 80, "action": "accept"},
            {"name": "tracked-out", "ct_state": ["established", "related"], "action": "accept"}, ICMP]}}}
    assert messages(doc) == []
    # an untracked accept for this host's own connections to port 80: the replies need one too
    doc["chains"]["output"]["rules"].append(
        {"name": "http-out", "ct_state": ["untracked"], "protocol": "tcp", "dport": 80, "action": "accept"})
    assert [m for _p, m, _h in messages(doc)] == [
        "untracked traffic of 'http' is accepted in chain 'output' but not in chain 'input', which drops the "
        "other half of the same flows (replies from port 80)"]


def test_a_port_rule_for_the_server_is_not_an_accept_for_the_client_replies():
    # dport 80 matches requests to this host, not replies to it (their destination is an ephemeral port)
    wide = {"name": "high", "ct_state": ["untracked"], "protocol": "tcp", "dport": "1024-65535", "action": "accept"}
    doc = {"version": 1, "notrack": [WEB], "chains": {"input": {"policy": "drop", "rules": [SERVE_80, wide, ICMP]}}}
    assert messages(doc) == []  # replies from port 80 to an ephemeral port are accepted by 'high'


MEMCACHED = {"name": "memcached", "protocols": ["tcp", "udp"], "ports": [11211], "peers": ["192.0.2.0/24"]}
CLIENTS = {"name": "clients", "ct_state": ["untracked"], "protocols": ["tcp", "udp"], "dport": 11211,
           "saddr": "192.0.2.0/24", "action": "accept"}
REPLIES = {"name": "replies", "ct_state": ["untracked"], "protocols": ["tcp", "udp"], "sport": 11211,
           "daddr": "192.0.2.0/24", "action": "accept"}
OUT = {"name": "out", "ct_state": ["new", "established", "related"], "action": "accept"}


def test_peers_notrack_with_the_input_half_only():
    doc = {"version": 1, "notrack": [MEMCACHED], "chains": {
        "input": {"policy": "drop", "rules": [CLIENTS, ICMP]}, "output": {"policy": "drop", "rules": [OUT, ICMP]}}}
    assert messages(doc) == [(
        "/notrack/0",
        "untracked traffic of 'memcached' is accepted in chain 'input' but not in chain 'output', which drops the "
        "other half of the same flows (replies from port 11211)",
        "add to chain 'output': {\"ct_state\": [\"untracked\"], \"protocols\": [\"tcp\", \"udp\"], \"sport\": 11211, "
        "\"daddr\": [\"192.0.2.0/24\"], \"action\": \"accept\"}")]


def test_peers_notrack_with_the_output_half_only():
    doc = {"version": 1, "notrack": [MEMCACHED], "chains": {
        "input": {"policy": "drop", "rules": [ICMP]}, "output": {"policy": "drop", "rules": [REPLIES, OUT, ICMP]}}}
    assert messages(doc) == [(
        "/notrack/0",
        "untracked traffic of 'memcached' is accepted in chain 'output' but not in chain 'input', which drops the "
        "other half of the same flows (requests to port 11211)",
        "add to chain 'input': {\"ct_state\": [\"untracked\"], \"protocols\": [\"tcp\", \"udp\"], \"dport\": 11211, "
        "\"saddr\": [\"192.0.2.0/24\"], \"action\": \"accept\"}")]


def test_mirrored_peers_notrack_and_an_accepting_output_are_fine():
    mirrored = {"version": 1, "notrack": [MEMCACHED], "chains": {
        "input": {"policy": "drop", "rules": [CLIENTS, ICMP]},
        "output": {"policy": "drop", "rules": [REPLIES, OUT, ICMP]}}}
    assert messages(mirrored) == []
    open_output = {"version": 1, "notrack": [MEMCACHED], "chains": {
        "input": {"policy": "drop", "rules": [CLIENTS, ICMP]}, "output": {"policy": "accept"}}}
    # the output chain accepts the replies by its policy; this host may connect to the peers' 11211 too
    assert [m for _p, m, _h in messages(open_output)] == [
        "this host's own connections to port 11211 are untracked by 'memcached' too (its ports match source and "
        "destination), and chain 'input' drops their replies (source port 11211)"]


def test_an_accept_for_other_addresses_is_no_mirror():
    elsewhere = dict(REPLIES, daddr="198.51.100.0/24")
    doc = {"version": 1, "notrack": [MEMCACHED], "chains": {
        "input": {"policy": "drop", "rules": [CLIENTS, ICMP]},
        "output": {"policy": "drop", "rules": [elsewhere, OUT, ICMP]}}}
    assert [m for _p, m, _h in messages(doc)][0].startswith(
        "untracked traffic of 'memcached' is accepted in chain 'input' but not in chain 'output'")


def test_neighbour_discovery_dropped_by_a_default_drop_chain():
    doc = chains(input={"policy": "drop", "rules": [
        {"name": "established", "ct_state": ["established", "related"], "action": "accept"},
        {"name": "ping", "protocol": "icmpv6", "ct_state": ["new"], "action": "accept"}]},
        output={"policy": "drop", "rules": [
            {"name": "out", "ct_state": ["new", "established", "related"], "action": "accept"},
            {"name": "v6-drop", "family": "ipv6", "action": "drop"}, ICMP]})
    assert messages(doc) == [
        ("/chains/input/policy",
         "chain 'input' drops IPv6 neighbour discovery (by its policy): it is untracked, so no ct_state rule "
         "accepts it, and IPv6 stops working",
         "add: {\"name\": \"icmpv6-nd\", \"protocol\": \"icmpv6\", \"action\": \"accept\"}"),
        ("/chains/output/rules/1",
         "chain 'output' drops IPv6 neighbour discovery (rule 'v6-drop'): it is untracked, so no ct_state rule "
         "accepts it, and IPv6 stops working",
         "add before rule 'v6-drop': {\"name\": \"icmpv6-nd\", \"protocol\": \"icmpv6\", \"action\": \"accept\"}")]


@pytest.mark.parametrize("accept", [
    {"protocol": "icmpv6", "action": "accept"},
    {"protocols": ["icmp", "icmpv6"], "ct_state": ["untracked"], "action": "accept"},
    {"jump": "icmp6"},
])
def test_neighbour_discovery_accepted(accept):
    doc = chains(input={"policy": "drop", "rules": [accept]}, icmp6={"rules": [{"protocol": "icmpv6",
                                                                                "action": "accept"}]})
    assert [p for p in messages(doc) if "neighbour" in p[1]] == []


def test_neighbour_discovery_is_not_accepted_by_a_loopback_or_address_rule():
    doc = chains(input={"policy": "drop", "rules": [{"iif": "lo", "action": "accept"},
                                                    {"saddr": "2001:db8::/64", "action": "accept"}]})
    assert [m for _p, m, _h in messages(doc)] == [
        "chain 'input' drops IPv6 neighbour discovery (by its policy): it is untracked, so no ct_state rule "
        "accepts it, and IPv6 stops working"]


def test_icmp_errors_about_untracked_flows_are_invalid():
    invalid = {"name": "invalid", "ct_state": ["invalid"], "action": "drop"}
    replies = {"name": "replies", "ct_state": ["untracked"], "protocol": "tcp", "sport": 80, "action": "accept"}
    doc = {"version": 1, "notrack": [WEB], "chains": {"input": {"policy": "drop", "rules": [
        SERVE_80, replies, invalid, ICMP]}}}
    assert messages(doc) == [(
        "/notrack/0",
        "ICMP errors about the untracked flows of 'http' (unreachable, packet too big) are related to no conntrack "
        "entry: they arrive as ct_state invalid and rule 'invalid' of chain 'input' drops icmp and icmpv6 ones",
        "add before rule 'invalid', without ct_state: {\"protocols\": [\"icmp\", \"icmpv6\"], \"action\": \"accept\"}")]
    # ICMP first: the errors are accepted before the invalid drop
    doc["chains"]["input"]["rules"] = [SERVE_80, replies, ICMP, invalid]
    assert messages(doc) == []


def test_icmp_errors_dropped_by_the_policy_and_per_family():
    v4 = dict(WEB, peers="192.0.2.0/24")
    nd = {"name": "nd", "protocol": "icmpv6", "action": "accept"}
    serve = dict(SERVE_80, saddr="192.0.2.0/24")
    replies = {"name": "replies", "ct_state": ["untracked"], "protocol": "tcp", "sport": 80, "saddr": "192.0.2.0/24",
               "action": "accept"}
    doc = {"version": 1, "notrack": [v4], "chains": {"input": {"policy": "drop", "rules": [serve, replies, nd]}}}
    assert messages(doc) == [(
        "/notrack/0",
        "ICMP errors about the untracked flows of 'http' (unreachable, packet too big) are related to no conntrack "
        "entry: they arrive as ct_state invalid and chain 'input' (its policy) drops icmp ones",
        "add, without ct_state: {\"protocol\": \"icmp\", \"action\": \"accept\"}")]
    # an accept that requires a tracked state does not take invalid packets
    doc["chains"]["input"]["rules"].append({"name": "icmp4", "protocol": "icmp", "ct_state": ["related"],
                                            "action": "accept"})
    assert len(messages(doc)) == 1
    doc["chains"]["input"]["rules"][-1] = {"name": "icmp4", "protocol": "icmp", "action": "accept"}
    assert messages(doc) == []


def test_icmp_errors_dropped_in_two_places_name_both():
    invalid4 = {"name": "invalid4", "family": "ipv4", "ct_state": ["invalid"], "action": "drop"}
    replies = {"name": "replies", "ct_state": ["untracked"], "protocol": "tcp", "sport": 80, "action": "accept"}
    nd = {"name": "nd", "protocol": "icmpv6", "ct_state": ["untracked"], "action": "accept"}
    doc = {"version": 1, "notrack": [WEB], "chains": {"input": {"policy": "drop", "rules": [
        SERVE_80, replies, invalid4, nd, ICMP]}}}
    doc["chains"]["input"]["rules"][-1] = {"name": "ping", "protocol": "icmp", "action": "accept"}
    assert messages(doc) == [(
        "/notrack/0",
        "ICMP errors about the untracked flows of 'http' (unreachable, packet too big) are related to no conntrack "
        "entry: they arrive as ct_state invalid and rule 'invalid4' of chain 'input' drops icmp and chain 'input' "
        "(its policy) drops icmpv6 ones",
        "add before rule 'invalid4', without ct_state: {\"protocols\": [\"icmp\", \"icmpv6\"], \"action\": \"accept\"}")]


def test_icmp_errors_need_no_accept_when_input_accepts_by_default():
    doc = {"version": 1, "notrack": [dict(WEB, protocols=["tcp", "udp"], protocol=None)]}
    doc["notrack"][0].pop("protocol")
    assert messages(doc) == []
