"""The netfilter vocabulary beyond filter rules (issue 6): schema, model, lint, IR and both
backends for each construct. Goldens for the examples live in test_golden_nft.py and
test_iptables_backend.py; this file pins each construct's meaning and its compile errors."""
from __future__ import annotations

import pytest

from ctkit.backends import iptables, nft, nft_text
from ctkit.compile import ir
from ctkit.compile.lower import lower
from ctkit.errors import CompileError, PolicyError
from ctkit.policy.lint import lint
from ctkit.policy.load import load_document


def policy(**doc):
    return load_document({"version": 1, **doc})


def problems(**doc) -> list[tuple[str, str]]:
    try:
        p = policy(**doc)
    except PolicyError as exc:
        return [(x.pointer, x.message) for x in exc.problems]
    return [(x.pointer, x.message) for x in lint(p) if x.severity == "error"]


def has(found, pointer, words):
    return any(p == pointer and words in m for p, m in found), found


def nft_rules(chain: str, **doc) -> list[str]:
    document = nft.generate(lower(policy(**doc)))
    text = nft_text.render(document)
    block = text.split(f"chain {chain} {{", 1)[1].split("\n\t}", 1)[0]
    return [ln.strip() for ln in block.strip().splitlines()[1:]]


def ipt_rules(family: str = "ipv4", **doc) -> list[str]:
    rs = iptables.generate(lower(policy(**doc)))
    return [f"-t {t.name} -A {c.name} {spec}" for t in rs.document(family).tables for c in t.chains
            for spec in c.rules]


# ---------------------------------------------------------------------- nat

NAT_VALID = [
    {"type": "dnat", "protocol": "tcp", "dport": 8080, "to_addr": "10.1.0.10", "to_port": 80},
    {"type": "dnat", "protocol": "tcp", "dport": 8080, "to_addr": "2001:db8::10", "to_port": "80-90"},
    {"type": "snat", "oif": "wan0", "to_addr": "198.51.100.1-198.51.100.5"},
    {"type": "masquerade", "oif": "wan0", "saddr": ["10.0.0.0/8", "fd00::/8"]},
    {"type": "redirect", "protocol": "tcp", "dport": 80, "to_port": 3129, "name": "proxy", "comment": "squid"},
    {"type": "redirect", "protocols": ["tcp", "udp"], "dport": 53, "counter": False, "family": "ipv4"},
]


@pytest.mark.parametrize("rule", NAT_VALID)
def test_nat_valid(rule):
    assert problems(nat=[rule]) == []


NAT_INVALID = [
    ({"to_addr": "10.0.0.1"}, "/nat/0", "'type' is a required property"),
    ({"type": "nat"}, "/nat/0/type", "'nat' is not allowed"),
    ({"type": "dnat", "to_addr": "10.0.0.1/24"}, "/nat/0/to_addr", "not an IPv4 or IPv6 address"),
    ({"type": "dnat", "to_addr": "10.0.0.9-10.0.0.1"}, "/nat/0/to_addr", "runs backwards"),
    ({"type": "snat", "to_addr": "10.0.0.1-2001:db8::1"}, "/nat/0/to_addr", "mixes IPv4 and IPv6"),
    ({"type": "dnat", "protocol": "tcp", "to_port": 70000, "to_addr": "10.0.0.1"}, "/nat/0/to_port", "maximum"),
    ({"type": "dnat", "dport": 80}, "/nat/0", "dnat needs to_addr"),
    ({"type": "masquerade", "to_addr": "10.0.0.1"}, "/nat/0/to_addr", "takes no to_addr"),
    ({"type": "redirect", "to_port": 3129}, "/nat/0/to_port", "to_port needs a protocol"),
    ({"type": "redirect", "protocol": "icmp", "to_port": 3129}, "/nat/0/to_port", "icmp has no ports"),
    ({"type": "masquerade", "iif": "lan0"}, "/nat/0/iif", "no input interface"),
    ({"type": "dnat", "oif": "wan0", "to_addr": "10.0.0.1"}, "/nat/0/oif", "before the output interface"),
    ({"type": "dnat", "to_addr": "10.0.0.1", "family": "ipv6"}, "/nat/0/to_addr", "but family is ipv6"),
    ({"type": "dnat", "to_addr": "10.0.0.1", "saddr": "2001:db8::/32"}, "/nat/0/saddr", "only ipv6 addresses"),
    ({"type": "snat", "to_addr": "10.0.0.1", "frobnicate": 1}, "/nat/0", "unknown property"),
]


@pytest.mark.parametrize("rule,pointer,words", NAT_INVALID, ids=[c[2] for c in NAT_INVALID])
def test_nat_invalid(rule, pointer, words):
    ok, found = has(problems(nat=[rule]), pointer, words)
    assert ok, found


def test_nat_names_are_unique_with_rule_names():
    found = problems(nat=[{"name": "a", "type": "masquerade"}, {"name": "a", "type": "masquerade"}])
    assert any("is used 2 times" in m for _p, m in found)


def test_nat_chains_hook_at_dstnat_and_srcnat():
    plan = lower(policy(nat=[{"type": "masquerade"}, {"type": "redirect"}]))
    hooks = {c.name: c.hook for c in plan.table.chains}
    assert hooks == {"nat-pre": ir.Hook("prerouting", ir.PRIORITY_DSTNAT, "nat"),
                     "nat-post": ir.Hook("postrouting", ir.PRIORITY_SRCNAT, "nat")}


def test_dnat_family_follows_its_address():
    doc = {"nat": [{"type": "dnat", "protocol": "tcp", "dport": 8080, "to_addr": "2001:db8::10", "to_port": 80,
                    "saddr": ["192.0.2.0/24", "2001:db8:1::/48"]}]}
    assert nft_rules("nat-pre", **doc) == [
        'ip6 saddr 2001:db8:1::/48 tcp dport 8080 counter dnat ip6 to [2001:db8::10]:80 comment "nat[0]"']
    assert ipt_rules("ipv4", **doc) == []
    assert ipt_rules("ipv6", **doc) == [
        '-t nat -A CTKIT-PREROUTING -s 2001:db8:1::/48 -p tcp -m tcp --dport 8080 -m comment --comment "nat[0]" '
        '-j DNAT --to-destination [2001:db8::10]:80']


def test_nat_forms_in_both_backends():
    doc = {"nat": [
        {"type": "snat", "protocol": "udp", "to_addr": "198.51.100.1-198.51.100.5", "to_port": "1024-2047"},
        {"type": "masquerade", "oif": "wan0", "protocols": ["tcp", "udp"], "to_port": "20000-29999"},
        {"type": "redirect", "protocol": "tcp", "dport": 80, "to_port": 3129},
    ]}
    assert nft_rules("nat-post", **doc) == [
        'meta nfproto ipv4 meta l4proto udp counter snat ip to 198.51.100.1-198.51.100.5:1024-2047 comment "nat[0]"',
        'meta l4proto { tcp, udp } oifname "wan0" counter masquerade to :20000-29999 comment "nat[1]"']
    assert nft_rules("nat-pre", **doc) == ['tcp dport 80 counter redirect to :3129 comment "nat[2]"']
    assert ipt_rules("ipv4", **doc) == [
        '-t nat -A CTKIT-PREROUTING -p tcp -m tcp --dport 80 -m comment --comment "nat[2]" -j REDIRECT --to-ports 3129',
        '-t nat -A CTKIT-POSTROUTING -p udp -m comment --comment "nat[0]" '
        '-j SNAT --to-source 198.51.100.1-198.51.100.5:1024-2047',
        '-t nat -A CTKIT-POSTROUTING -o wan0 -p tcp -m comment --comment "nat[1]" -j MASQUERADE --to-ports 20000-29999',
        '-t nat -A CTKIT-POSTROUTING -o wan0 -p udp -m comment --comment "nat[1]" -j MASQUERADE --to-ports 20000-29999',
    ]


def test_nat_statement_outside_the_nat_table_is_a_named_iptables_error():
    chain = ir.Chain("input", (ir.Rule("r", "/x", (), (ir.Nat("masquerade"),)),), ir.Hook("input", 0), "accept")
    with pytest.raises(CompileError) as info:
        iptables.generate(ir.Plan(ir.Table("ctkit", (chain,))))
    assert info.value.backend == "iptables" and info.value.construct == "masquerade"
