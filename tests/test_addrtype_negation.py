"""Address types (daddr_type: local / {"not": "local"}) and negated lists ({"not": [...]}): how they load,
lower and lint. What the kernel does with them: integration/test_router_notrack.py."""
import pytest

from ctkit.compile import ir
from ctkit.compile.lower import lower
from ctkit.errors import PolicyError
from ctkit.policy.lint import lint
from ctkit.policy.load import load_document
from ctkit.policy.model import AddrType


def doc(**sections):
    return {"version": 1, "table": "ctkit", **sections}


def rules_of(policy, chain):
    return next(c for c in lower(policy).table.chains if c.name == chain).rules


def findings(d):
    return [(p.severity, p.pointer, p.message) for p in lint(load_document(d))]


def test_address_type_and_negations_load_into_the_model():
    p = load_document(doc(notrack=[{"name": "transit", "daddr_type": {"not": "local"}, "direction": "in"}],
                          chains={"input": {"rules": [{"protocol": "tcp", "dport": {"not": [22, "100-200"]},
                                                       "saddr": {"not": "10.0.0.0/8"}, "saddr_type": "unicast",
                                                       "action": "accept"}]}}))
    assert p.notrack[0].daddr_type == AddrType(("local",), True) and p.notrack[0].negated == frozenset()
    r = p.chains[0].rules[0]
    assert r.negated == {"dport", "saddr"} and r.saddr_type == AddrType(("unicast",), False)
    assert [str(x) for x in r.dport] == ["22", "100-200"]


def test_a_bad_value_inside_not_is_named_at_its_place():
    with pytest.raises(PolicyError) as bad:
        load_document(doc(chains={"input": {"rules": [{"saddr": {"not": ["10.0.0.1/8"]}, "action": "drop"}]}}))
    (problem,) = bad.value.problems
    assert problem.pointer == "/chains/input/rules/0/saddr/not/0"


@pytest.mark.parametrize("value", [{"not": []}, {"nor": "local"}, "loopback", {"not": "local", "x": 1}])
def test_the_schema_refuses_malformed_types(value):
    with pytest.raises(PolicyError):
        load_document(doc(notrack=[{"name": "n", "daddr_type": value}]))


def test_a_negated_list_keeps_the_other_family_whole():
    """not [10.0.0.0/8] says nothing about IPv6: the IPv6 rule has no address match, but keeps its family."""
    p = load_document(doc(chains={"input": {"rules": [{"daddr": {"not": "10.0.0.0/8"}, "action": "drop"}]}}))
    v4, v6 = rules_of(p, "input")
    assert ir.Addr("daddr", "ipv4", ("10.0.0.0/8",), negated=True) in v4.matches
    assert ir.NfProto("ipv6") in v6.matches and not any(isinstance(m, ir.Addr) for m in v6.matches)


def test_negated_peers_and_ports_are_neither_source_nor_destination():
    p = load_document(doc(notrack=[{"name": "n", "protocol": "udp", "ports": {"not": 53},
                                    "peers": {"not": "192.0.2.0/24"}, "family": "ipv4"}]))
    (r, *_) = rules_of(p, "notrack-pre")
    assert [m for m in r.matches if isinstance(m, (ir.Addr, ir.Port))] == [
        ir.Addr("saddr", "ipv4", ("192.0.2.0/24",), True), ir.Addr("daddr", "ipv4", ("192.0.2.0/24",), True),
        ir.Port("sport", r.matches[-1].ranges, True), ir.Port("dport", r.matches[-1].ranges, True)]


def test_broadcast_needs_ipv4():
    f = findings(doc(chains={"input": {"rules": [{"daddr_type": "broadcast", "action": "drop"}]}}))
    assert ("error", "/chains/input/rules/0/daddr_type", "broadcast addresses exist only in IPv4") in f
    assert not findings(doc(chains={"input": {"rules": [{"family": "ipv4", "daddr_type": "broadcast",
                                                         "action": "drop"}]}}))


ROUTER = {"name": "transit", "daddr_type": {"not": "local"}, "direction": "in", "protocols": ["tcp", "udp"]}


def test_transit_notrack_is_judged_on_forward_not_input():
    """The router's transit exemption never reaches input: no warning about input, one about forward."""
    f = findings(doc(notrack=[ROUTER], chains={
        "input": {"policy": "drop", "rules": [{"ct_state": ["established", "related"], "action": "accept"},
                                               {"protocol": "icmpv6", "action": "accept"}]},
        "forward": {"policy": "drop", "rules": [{"ct_state": ["established"], "action": "accept"}]}}))
    messages = [m for _s, _p, m in f]
    assert "untracked traffic of 'transit' is dropped by chain 'forward'" in messages
    assert not any("chain 'input'" in m for m in messages)


def test_a_stateless_forward_accept_satisfies_the_transit_lint():
    f = findings(doc(notrack=[ROUTER], chains={"forward": {"policy": "drop", "rules": [
        {"protocols": ["icmp", "icmpv6"], "action": "accept"},
        {"protocol": "tcp", "dport": 80, "action": "accept"}, {"protocol": "tcp", "sport": 80, "action": "accept"}]}}))
    assert not any("dropped by chain" in m for _s, _p, m in f)


def test_a_local_destination_is_judged_on_input():
    f = findings(doc(notrack=[{"name": "mine", "protocol": "udp", "ports": 53, "daddr_type": "local",
                               "direction": "in"}],
                     chains={"input": {"policy": "drop"}, "forward": {"policy": "drop"}}))
    messages = [m for _s, _p, m in f]
    assert "untracked traffic of 'mine' is dropped by chain 'input'" in messages
    assert not any("chain 'forward'" in m for m in messages)


def test_an_address_type_narrows_an_exemption():
    transit = {"name": "transit", "daddr_type": {"not": "local"}, "direction": "in"}
    assert not any("untracks all traffic" in m for _s, _p, m in findings(doc(notrack=[transit])))


def test_helper_and_notrack_overlap_is_exact_for_negated_ports():
    helper = {"name": "ftp", "helper": "ftp", "protocol": "tcp", "ports": 21, "daddr": "192.0.2.10"}
    clash = findings(doc(helpers=[helper], notrack=[{"name": "n", "protocol": "tcp", "ports": {"not": 22}}]))
    assert any("untracked by notrack 'n'" in m for _s, _p, m in clash)
    fine = findings(doc(helpers=[helper], notrack=[{"name": "n", "protocol": "tcp", "ports": {"not": [21]}}]))
    assert not any("untracked by notrack" in m for _s, _p, m in fine)


def test_a_helper_for_local_servers_does_not_clash_with_transit_notrack():
    helper = {"name": "ftp", "helper": "ftp", "protocol": "tcp", "ports": 21, "daddr": "192.0.2.10",
              "daddr_type": "local"}
    assert not any("untracked by notrack" in m for _s, _p, m in findings(doc(helpers=[helper], notrack=[ROUTER])))


def test_negated_addresses_of_the_other_family_are_no_conflict():
    """not [2001:db8::/32] in an IPv4 rule excludes nothing there: no "could never match" error."""
    f = findings(doc(chains={"input": {"rules": [{"family": "ipv4", "saddr": {"not": "2001:db8::/32"},
                                                  "action": "drop"}]}}))
    assert not any(s == "error" for s, _p, _m in f)


def test_the_audits_interpreter_judges_an_address_type_only_when_the_flow_says_whose_address_it_is():
    from ctkit.audit.admission import Flow, verdict
    table = lower(load_document(doc(chains={"forward": {"policy": "drop", "rules": [
        {"daddr_type": {"not": "local"}, "protocol": "tcp", "dport": {"not": 23}, "action": "accept"}]}}))).table
    flow = Flow("ipv4", "tcp", "203.0.113.20", "10.1.0.10", 40000, 80, "new")
    assert verdict(table, "forward", flow) == "unknown"  # nobody said whether 10.1.0.10 is the host's
    assert verdict(table, "forward", Flow(**{**flow.__dict__, "daddr_local": False})) == "accept"
    assert verdict(table, "forward", Flow(**{**flow.__dict__, "daddr_local": True})) == "drop"
    assert verdict(table, "forward", Flow(**{**flow.__dict__, "daddr_local": False, "dport": 23})) == "drop"
