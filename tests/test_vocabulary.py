"""The netfilter vocabulary beyond filter rules (issue 6): schema, model, lint, IR and both
backends for each construct. Goldens for the examples live in test_golden_nft.py and
test_iptables_backend.py; this file pins each construct's meaning and its compile errors."""
from __future__ import annotations

import pytest

from ctkit import names
from ctkit.backends.iptables import generate as iptables
from ctkit.backends.nft import generate as nft
from ctkit.backends.nft import text as nft_text
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
    return [ln.strip() for ln in block.strip().splitlines() if not ln.strip().startswith("type ")]


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


# ------------------------------------------------- length, payload, signature, limits

def rule_doc(**rule):
    return {"chains": {"input": {"rules": [{"name": "r", **rule}]}}}


MATCH_VALID = [
    {"length": 222}, {"length": "0-32"}, {"length": ["0-32", 222, "1400-65535"]}, {"length": 0},
    {"payload": [{"base": "nh", "offset": 9, "hex": "11"}]},
    {"payload": [{"base": "th", "offset": 8, "hex": "ffff0000", "mask": "ffff0000"}], "family": "ipv4"},
    {"signature": {"hex": "deadbeef"}}, {"signature": {"hex": "41", "algo": "kmp", "from": 28, "to": 100}},
    {"limit": {"rate": 10}}, {"limit": {"rate": 3, "per": "minute", "burst": 1, "by": "saddr"}},
    {"log": {"prefix": "x", "limit": {"rate": 1, "per": "hour"}}, "action": "drop"},
]


@pytest.mark.parametrize("rule", MATCH_VALID)
def test_match_valid(rule):
    assert problems(**rule_doc(**rule)) == []


MATCH_INVALID = [
    ({"length": -1}, "/chains/input/rules/0/length", "less than the minimum of 0"),
    ({"length": "32-0"}, "/chains/input/rules/0/length", "runs backwards"),
    ({"length": "0-70000"}, "/chains/input/rules/0/length", "out of range"),
    ({"length": []}, "/chains/input/rules/0/length", "should be non-empty"),
    ({"payload": [{"base": "ll", "offset": 0, "hex": "00"}]}, "/chains/input/rules/0/payload/0/base", "'ll' is not allowed"),
    ({"payload": [{"base": "th", "offset": 0, "hex": "0011223344"}]}, "/chains/input/rules/0/payload/0/hex", "expected form"),
    ({"payload": [{"base": "th", "offset": 0, "hex": "abc"}]}, "/chains/input/rules/0/payload/0/hex", "expected form"),
    ({"payload": [{"base": "th", "hex": "ab"}]}, "/chains/input/rules/0/payload/0", "'offset' is a required property"),
    ({"payload": [{"base": "th", "offset": 0, "hex": "ab", "mask": "ffff"}]}, "/chains/input/rules/0/payload/0/mask", "mask has 2 bytes"),
    ({"payload": [{"base": "th", "offset": 0, "hex": "ff", "mask": "0f"}]}, "/chains/input/rules/0/payload/0/hex", "mask clears"),
    ({"signature": {"hex": ""}}, "/chains/input/rules/0/signature/hex", "expected form"),
    ({"signature": {"hex": "41", "algo": "regex"}}, "/chains/input/rules/0/signature/algo", "'regex' is not allowed"),
    ({"signature": {"hex": "41", "from": 50, "to": 10}}, "/chains/input/rules/0/signature/to", "before from"),
    ({"signature": {"hex": "41424344", "from": 10, "to": 11}}, "/chains/input/rules/0/signature", "shorter than"),
    ({"limit": {"per": "second"}}, "/chains/input/rules/0/limit", "'rate' is a required property"),
    ({"limit": {"rate": 0}}, "/chains/input/rules/0/limit/rate", "minimum"),
    ({"limit": {"rate": 1, "per": "week"}}, "/chains/input/rules/0/limit/per", "'week' is not allowed"),
    ({"limit": {"rate": 1, "by": "sport"}}, "/chains/input/rules/0/limit/by", "'sport' is not allowed"),
    ({"log": {"limit": {"rate": 1, "burst": 0}}}, "/chains/input/rules/0/log/limit/burst", "minimum"),
]


@pytest.mark.parametrize("rule,pointer,words", MATCH_INVALID, ids=[c[2] for c in MATCH_INVALID])
def test_match_invalid(rule, pointer, words):
    ok, found = has(problems(**rule_doc(**rule)), pointer, words)
    assert ok, found


def test_length_in_both_backends():
    doc = rule_doc(protocol="udp", length=["0-32", 222], action="drop")
    assert nft_rules("input", **doc) == ['meta l4proto udp meta length { 0-32, 222 } counter drop comment "r"']
    assert ipt_rules("ipv4", **doc) == [
        '-t filter -A CTKIT-INPUT -p udp -m length --length 0:32 -m comment --comment r -j DROP',
        '-t filter -A CTKIT-INPUT -p udp -m length --length 222 -m comment --comment r -j DROP']


def test_payload_in_both_backends():
    doc = rule_doc(family="ipv4", protocol="udp", payload=[
        {"base": "th", "offset": 8, "hex": "ffffffff"}, {"base": "th", "offset": 0, "hex": "6987"},
        {"base": "nh", "offset": 0, "hex": "40", "mask": "f0"}], action="drop")
    assert nft_rules("input", **doc) == [
        "meta nfproto ipv4 meta l4proto udp @th,64,32 0xffffffff @th,0,16 0x6987 @nh,0,8 & 0xf0 == 0x40 "
        'counter drop comment "r"']
    assert ipt_rules("ipv4", **doc) == [
        '-t filter -A CTKIT-INPUT -p udp -m u32 --u32 "0x0>>0x16&0x3c@0x8&0xffffffff=0xffffffff" '
        '-m u32 --u32 "0x0>>0x16&0x3c@0x0>>0x10&0xffff=0x6987" -m u32 --u32 "0x0>>0x18&0xf0=0x40" '
        '-m comment --comment r -j DROP']


def test_transport_payload_is_ipv4_only_on_iptables():
    doc = rule_doc(protocol="udp", payload=[{"base": "th", "offset": 8, "hex": "ff"}], action="drop")
    with pytest.raises(CompileError) as info:
        iptables.generate(lower(policy(**doc)))
    assert (info.value.backend, info.value.construct) == ("iptables", "payload")
    assert "IPv6 extension headers" in str(info.value)
    assert nft_rules("input", **doc)  # nft finds the transport header itself


def test_signature_is_iptables_only():
    doc = rule_doc(protocol="udp", signature={"hex": "ffffffff54", "algo": "kmp", "from": 28}, action="drop")
    with pytest.raises(CompileError) as info:
        nft.generate(lower(policy(**doc)))
    assert (info.value.backend, info.value.construct) == ("nft", "signature")
    assert "fixed offset" in str(info.value) and "payload" in str(info.value)
    assert ipt_rules("ipv6", **doc) == [
        '-t filter -A CTKIT-INPUT -p udp -m string --hex-string "|ffffffff54|" --algo kmp --from 28 '
        '-m comment --comment r -j DROP']
    printable = rule_doc(signature={"hex": "474554202f"}, action="drop")  # "GET /"
    assert '-m string --string "GET /" --algo bm' in ipt_rules("ipv4", **printable)[0]


def test_limits_in_both_backends():
    doc = rule_doc(protocol="tcp", dport=22, limit={"rate": 3, "per": "minute", "burst": 3}, action="accept")
    assert nft_rules("input", **doc) == [
        'meta nfproto ipv4 tcp dport 22 limit rate 3/minute burst 3 packets counter accept comment "r"',
        'meta nfproto ipv6 tcp dport 22 limit rate 3/minute burst 3 packets counter accept comment "r"']
    assert ipt_rules("ipv4", **doc) == [
        '-t filter -A CTKIT-INPUT -p tcp -m tcp --dport 22 -m limit --limit 3/min --limit-burst 3 '
        '-m comment --comment r -j RETURN']
    per_source = rule_doc(protocol="tcp", dport=22, limit={"rate": 10, "by": "saddr"}, action="accept")
    assert nft_rules("input", **per_source)[0] == (
        'tcp dport 22 meter ctkit_l0v4 size 65535 { ip saddr limit rate 10/second burst 5 '
        'packets } counter accept comment "r"')
    assert ipt_rules("ipv6", **per_source) == [
        '-t filter -A CTKIT-INPUT -p tcp -m tcp --dport 22 -m hashlimit --hashlimit-upto 10/sec '
        '--hashlimit-burst 5 --hashlimit-mode srcip --hashlimit-name ctkit_l0v6 -m comment --comment r -j RETURN']


def test_a_limit_spread_over_several_iptables_rules_shares_one_named_bucket():
    doc = rule_doc(protocols=["tcp", "udp"], dport=53, limit={"rate": 5}, action="accept")
    rules = ipt_rules("ipv4", **doc)
    assert len(rules) == 2 and all("-m hashlimit --hashlimit-upto 5/sec --hashlimit-burst 5 "
                                   "--hashlimit-name ctkit_l0v4" in r for r in rules)


def test_log_limit_is_its_own_rule_before_the_verdict():
    doc = rule_doc(protocol="udp", action="drop", log={"prefix": "flood: ", "limit": {"rate": 1, "per": "minute"}})
    assert nft_rules("input", **doc)[:2] == [
        'meta nfproto ipv4 meta l4proto udp limit rate 1/minute burst 5 packets log prefix "flood: " level warn '
        'comment "r"',
        'meta nfproto ipv4 meta l4proto udp counter drop comment "r"']
    assert ipt_rules("ipv4", **doc) == [
        '-t filter -A CTKIT-INPUT -p udp -m limit --limit 1/min -m comment --comment r -j LOG --log-prefix "flood: "',
        '-t filter -A CTKIT-INPUT -p udp -m comment --comment r -j DROP']


def test_a_rule_limit_with_log_and_verdict_is_a_named_iptables_error():
    doc = rule_doc(protocol="udp", limit={"rate": 5}, log={"prefix": "x"}, action="accept")
    assert nft_rules("input", **doc)  # nft: one rule, one bucket
    with pytest.raises(CompileError) as info:
        iptables.generate(lower(policy(**doc)))
    assert (info.value.backend, info.value.construct) == ("iptables", "limit")
    assert "log.limit" in str(info.value)


# ------------------------------------------------------------------ toggles

from ctkit.compile.toggles import LiveToggle, keep_live  # noqa: E402


def test_toggle_valid():
    assert problems(toggles={"maintenance": False, "m2": True}, chains={"input": {"rules": [
        {"when": "maintenance", "action": "drop"}, {"when": "m2", "action": "drop"}]}}) == []


TOGGLE_INVALID = [
    ({"toggles": {"Maint": False}}, "/toggles/Maint", "not allowed"),
    ({"toggles": {"a_very_long_name": False}}, "/toggles/a_very_long_name", "not allowed"),
    ({"toggles": {"m": "yes"}}, "/toggles/m", "not of type boolean"),
    ({"toggles": {"m": False}, "chains": {"input": {"rules": [{"when": "n", "action": "drop"}]}}},
     "/chains/input/rules/0/when", "unknown toggle 'n'"),
    ({"chains": {"input": {"rules": [{"when": "Bad name", "action": "drop"}]}}},
     "/chains/input/rules/0/when", "expected form"),
]


@pytest.mark.parametrize("doc,pointer,words", TOGGLE_INVALID, ids=[c[2] for c in TOGGLE_INVALID])
def test_toggle_invalid(doc, pointer, words):
    ok, found = has(problems(**doc), pointer, words)
    assert ok, found


def test_unused_toggle_is_a_warning():
    found = [(x.severity, x.pointer) for x in lint(policy(toggles={"m": False}))]
    assert found == [("warning", "/toggles/m")]


TOGGLED = {"toggles": {"m": False}, "chains": {"input": {"rules": [
    {"name": "r", "when": "m", "protocol": "tcp", "dport": 80, "action": "drop"}]}}}


def test_toggle_in_nft_is_a_set_lookup_and_a_state_rule():
    document = nft.generate(lower(policy(**TOGGLED)))
    cmds = [c["add"] for c in document["nftables"] if "add" in c]
    assert {"family": "inet", "table": "ctkit", "name": "toggle_m", "type": "nf_proto"} in [c.get("set") for c in cmds]
    assert not any("element" in c for c in cmds)  # off
    assert nft_rules("input", **TOGGLED) == ['meta nfproto @toggle_m tcp dport 80 counter drop comment "r"']
    assert nft_rules("toggle-state", **TOGGLED) == ['meta nfproto @toggle_m comment "toggle/m: policy off"']
    assert nft.toggle_element_commands("ctkit", "m", True)[1] == {
        "add": {"element": {"family": "inet", "table": "ctkit", "name": "toggle_m", "elem": ["ipv4", "ipv6"]}}}


def test_toggle_in_iptables_is_a_switch_chain():
    off = ipt_rules("ipv4", **TOGGLED)
    assert off == [
        '-t filter -A CTKIT-INPUT -m comment --comment r -j CTKIT-TG-m-0',
        '-t filter -A CTKIT-TR-m-0 -p tcp -m tcp --dport 80 -m comment --comment r -j DROP',
        '-t filter -A CTKIT-TR-m-0 -m comment --comment "toggle/m: policy off"']
    on = dict(TOGGLED, toggles={"m": True})
    assert '-t filter -A CTKIT-TG-m-0 -m comment --comment "toggle/m" -j CTKIT-TR-m-0' in ipt_rules("ipv6", **on)


def test_toggled_return_is_a_named_iptables_error():
    doc = {"toggles": {"m": False}, "chains": {"input": {"rules": [{"jump": "u"}]},
                                               "u": {"rules": [{"when": "m", "action": "return"}]}}}
    assert nft_rules("u", **doc)
    with pytest.raises(CompileError) as info:
        iptables.generate(lower(policy(**doc)))
    assert (info.value.backend, info.value.construct) == ("iptables", "when")


def test_reapply_keeps_the_live_state_unless_the_file_changed():
    plan = lower(policy(**TOGGLED))  # file: off
    state = lambda p: p.table.toggles[0].on  # noqa: E731
    assert state(keep_live(plan, {})) is False  # new toggle: the file's value
    assert state(keep_live(plan, {"m": LiveToggle("m", True, False)})) is True  # same file: live wins
    assert state(keep_live(plan, {"m": LiveToggle("m", True, True)})) is False  # the file changed: file wins
    assert state(keep_live(plan, {"m": LiveToggle("m", True, None)})) is False  # unknown: the file


# ----------------------------------------------- conntrack: timeouts, zones, marks, labels

TIMEOUT = {"name": "dns_udp", "protocol": "udp", "ports": [53], "policy": {"unreplied": 3, "replied": 5}}


def test_ct_control_valid():
    assert problems(timeouts=[TIMEOUT, {"name": "t2", "protocol": "tcp", "ports": 80, "policy": {"established": 60},
                                        "direction": "both", "family": "ipv4"}],
                    zones=[{"name": "z", "zone": 7, "protocol": "udp", "ports": 5353, "zone_direction": "original"},
                           {"name": "z2", "zone": 8, "protocol": "tcp", "ports": 5000, "iif": "lan1"}],
                    chains={"input": {"rules": [{"ct_mark_set": 83, "ct_label_set": 127, "action": "accept"}]}}) == []


CT_INVALID = [
    ({"timeouts": [dict(TIMEOUT, name="a-b")]}, "/timeouts/0/name", "expected form"),
    ({"timeouts": [dict(TIMEOUT, name="x" * 13)]}, "/timeouts/0/name", "expected form"),
    ({"timeouts": [dict(TIMEOUT, protocol="icmp")]}, "/timeouts/0/protocol", "'icmp' is not allowed"),
    ({"timeouts": [dict(TIMEOUT, policy={})]}, "/timeouts/0/policy", "should be non-empty"),
    ({"timeouts": [dict(TIMEOUT, policy={"established": 5})]}, "/timeouts/0/policy/established", "not a udp state"),
    ({"timeouts": [dict(TIMEOUT, policy={"replied": 0})]}, "/timeouts/0/policy/replied", "minimum"),
    ({"timeouts": [TIMEOUT, TIMEOUT]}, "/timeouts/0/name", "used 2 times"),
    ({"zones": [{"name": "z"}]}, "/zones/0", "'zone' is a required property"),
    ({"zones": [{"name": "z", "zone": 0}]}, "/zones/0/zone", "minimum"),
    ({"zones": [{"name": "z", "zone": 1, "zone_direction": "up"}]}, "/zones/0/zone_direction", "'up' is not allowed"),
    ({"zones": [{"name": "z", "zone": 1, "ports": [53]}]}, "/zones/0/ports", "needs a protocol"),
    ({"zones": [{"name": "z", "zone": 1, "oif": "eth0"}]}, "/zones/0/oif", "never matches arriving"),
    ({"zones": [{"name": "z", "zone": 1, "protocol": "udp", "ports": 53}], "timeouts": [TIMEOUT]},
     "/zones/0", "may match the same flows as timeout 'dns_udp'"),
    ({"chains": {"input": {"rules": [{"ct_mark_set": -1}]}}}, "/chains/input/rules/0/ct_mark_set", "minimum"),
    ({"chains": {"input": {"rules": [{"ct_label_set": 128}]}}}, "/chains/input/rules/0/ct_label_set", "maximum"),
]


@pytest.mark.parametrize("doc,pointer,words", CT_INVALID, ids=[c[2] for c in CT_INVALID])
def test_ct_control_invalid(doc, pointer, words):
    ok, found = has(problems(**doc), pointer, words)
    assert ok, found


def test_timeout_in_both_backends():
    doc = {"timeouts": [TIMEOUT]}
    document = nft.generate(lower(policy(**doc)))
    (obj,) = [c["add"]["ct timeout"] for c in document["nftables"] if "ct timeout" in c.get("add", {})]
    assert obj == {"family": "inet", "table": "ctkit", "name": "dns_udp", "protocol": "udp", "l3proto": "inet",
                   "policy": {"unreplied": 3, "replied": 5}}  # the form `nft -j list ruleset` prints
    assert nft_rules("timeout-pre", **doc) == ['udp dport 53 counter ct timeout set "dns_udp" comment "timeout/dns_udp"']
    assert ipt_rules("ipv6", **doc) == [
        '-t raw -A CTKIT-PREROUTING -p udp -m udp --dport 53 -m comment --comment "timeout/dns_udp" '
        '-j CT --timeout ktkx']  # 4 characters: iptables-save prints no more (timeout_name)
    rs = iptables.generate(lower(policy(**doc)))
    assert [t.name for t in rs.ipv4.timeouts] == [names.timeout_name("ctkit", "dns_udp", "ipv4")]
    assert len({t.name for t in rs.ipv4.timeouts + rs.ipv6.timeouts}) == 2
    assert rs.ipv6.timeouts[0].policy == (("unreplied", 3), ("replied", 5))


def test_zone_mark_and_label_in_both_backends():
    doc = {"zones": [{"name": "z", "zone": 7, "iif": "lan1", "zone_direction": "original"}],
           "chains": {"input": {"rules": [{"name": "r", "ct_mark_set": 83, "ct_label_set": 3, "action": "accept"}]}}}
    assert nft_rules("zone-pre", **doc) == ['iifname "lan1" counter ct original zone set 7 comment "zone/z"']
    assert nft_rules("input", **doc) == ['counter ct mark set 0x53 ct label set 3 accept comment "r"']
    assert ipt_rules("ipv4", **doc) == [
        '-t raw -A CTKIT-PREROUTING -i lan1 -m comment --comment "zone/z" -j CT --zone-orig 7',
        '-t filter -A CTKIT-INPUT -m comment --comment r -j CONNMARK --set-xmark 0x53/0xffffffff',
        '-t filter -A CTKIT-INPUT -m comment --comment r -m connlabel --label "3" --set',
        '-t filter -A CTKIT-INPUT -m comment --comment r -j RETURN']


# ---------------------------------------------------------- queue and mangle

def test_queue_and_mangle_valid():
    assert problems(chains={"input": {"rules": [
        {"protocol": "udp", "action": "queue", "queue": {"num": 3}},
        {"protocol": "udp", "action": "queue", "queue": {"num": "3-5", "bypass": True, "fanout": True}},
        {"mark_set": 1, "connmark": "save"}]},
        "forward": {"rules": [{"protocol": "tcp", "mss": "pmtu"}, {"protocol": "tcp", "mss": 1200}]},
        "prerouting": {"rules": [{"dscp": "af41"}, {"dscp": 0}]}}) == []


MANGLE_INVALID = [
    ({"action": "queue"}, "/chains/input/rules/0/queue", "action queue needs queue"),
    ({"queue": {"num": 1}}, "/chains/input/rules/0/queue", "queue needs action queue"),
    ({"action": "queue", "queue": {"num": "5-3"}}, "/chains/input/rules/0/queue/num", "not a range"),
    ({"action": "queue", "queue": {"num": 70000}}, "/chains/input/rules/0/queue/num", "maximum"),
    ({"action": "queue", "queue": {"num": 1, "fanout": True}}, "/chains/input/rules/0/queue/fanout", "needs a range"),
    ({"mss": 1200}, "/chains/input/rules/0/mss", "needs protocol tcp"),
    ({"protocol": "tcp", "mss": 100}, "/chains/input/rules/0/mss", "not allowed"),
    ({"protocol": "tcp", "mss": "pmtu"}, "/chains/input/rules/0/mss", "path MTU needs a route"),
    ({"dscp": 64}, "/chains/input/rules/0/dscp", "maximum of 63"),
    ({"dscp": "gold"}, "/chains/input/rules/0/dscp", "'gold' is not allowed"),
    ({"connmark": "copy"}, "/chains/input/rules/0/connmark", "'copy' is not allowed"),
]


@pytest.mark.parametrize("rule,pointer,words", MANGLE_INVALID, ids=[c[2] for c in MANGLE_INVALID])
def test_mangle_invalid(rule, pointer, words):
    ok, found = has(problems(**rule_doc(**rule)), pointer, words)
    assert ok, found


def test_queue_in_both_backends():
    doc = rule_doc(protocol="udp", dport=6000, action="queue", queue={"num": "3-5", "bypass": True})
    assert nft_rules("input", **doc) == ['udp dport 6000 counter queue flags bypass to 3-5 comment "r"']
    assert ipt_rules("ipv4", **doc) == [
        '-t filter -A CTKIT-INPUT -p udp -m udp --dport 6000 -m comment --comment r '
        '-j NFQUEUE --queue-balance 3:5 --queue-bypass']


def test_mss_dscp_mark_in_both_backends():
    doc = {"chains": {"forward": {"rules": [{"name": "m", "protocol": "tcp", "dport": 80, "mss": "pmtu"}]},
                      "prerouting": {"rules": [{"name": "d", "dscp": "ef", "mark_set": 16, "connmark": "save"}]}}}
    assert nft_rules("forward", **doc) == [
        'tcp dport 80 tcp flags & (syn | rst) == syn counter tcp option maxseg size set rt mtu comment "m"']
    assert nft_rules("prerouting", **doc) == [
        'meta nfproto ipv4 counter meta mark set 0x10 ct mark set meta mark ip dscp set ef comment "d"',
        'meta nfproto ipv6 counter meta mark set 0x10 ct mark set meta mark ip6 dscp set ef comment "d"']
    assert ipt_rules("ipv6", **doc) == [
        '-t mangle -A CTKIT-PREROUTING -m comment --comment d -j MARK --set-xmark 0x10/0xffffffff',
        '-t mangle -A CTKIT-PREROUTING -m comment --comment d -j CONNMARK --save-mark --nfmask 0xffffffff '
        '--ctmask 0xffffffff',
        '-t mangle -A CTKIT-PREROUTING -m comment --comment d -j DSCP --set-dscp 0x2e',
        '-t filter -A CTKIT-FORWARD -p tcp -m tcp --dport 80 --tcp-flags SYN,RST SYN -m comment --comment m '
        '-j TCPMSS --clamp-mss-to-pmtu']


def test_dscp_outside_mangle_is_a_named_iptables_error():
    doc = rule_doc(dscp=46)
    assert nft_rules("input", **doc)
    with pytest.raises(CompileError) as info:
        iptables.generate(lower(policy(**doc)))
    assert (info.value.backend, info.value.construct) == ("iptables", "dscp") and "mangle" in str(info.value)


# --------------------------------------------------------- named sets and maps

SETS = {"bl": {"type": "ipv4_addr", "interval": True, "timeout": 60,
               "elements": ["10.0.0.0/8", {"value": "192.0.2.1", "timeout": 5}, "198.51.100.1-198.51.100.9"]},
        "ports": {"type": "inet_service", "elements": [80, 443]},
        "svc": {"type": ["ipv4_addr", "inet_service"], "elements": [["192.0.2.10", 80]]}}


def test_sets_valid():
    assert problems(sets=SETS, chains={"input": {"rules": [
        {"saddr": "@bl", "action": "drop"}, {"protocol": "tcp", "dport": "@ports", "action": "accept"},
        {"protocol": "tcp", "match_set": {"name": "svc", "keys": ["daddr", "dport"]}, "action": "accept"},
        {"vmap": {"key": "iif", "map": {"eth0": "jump lan", "eth1": "drop"}}}]}, "lan": {"rules": []}}) == []


SET_INVALID = [
    ({"sets": {"Bad": {"type": "ipv4_addr"}}}, "/sets/Bad", "not allowed"),
    ({"sets": {"s": {"type": "mac_addr"}}}, "/sets/s/type", "'mac_addr' is not allowed"),
    ({"sets": {"s": {"type": "ipv4_addr", "elements": ["10.0.0.0/8"]}}}, "/sets/s/elements/0", "no interval flag"),
    ({"sets": {"s": {"type": "ipv4_addr", "elements": ["2001:db8::1"]}}}, "/sets/s/elements/0", "not of type ipv4_addr"),
    ({"sets": {"s": {"type": "inet_service", "elements": ["1-9"]}}}, "/sets/s/elements/0", "no interval flag"),
    ({"sets": {"s": {"type": "ipv4_addr", "elements": [{"value": "10.0.0.1", "timeout": 5}]}}},
     "/sets/s/elements/0/timeout", "needs the set's timeout"),
    ({"sets": {"s": {"type": ["ipv4_addr", "inet_service"], "elements": ["10.0.0.1"]}}}, "/sets/s/elements/0",
     "2 part(s), this member 1"),
    ({"sets": {"s": {"type": ["ipv4_addr", "ipv6_addr"]}}}, "/sets/s/type", "IPv4 and IPv6"),
    ({"chains": {"input": {"rules": [{"saddr": "@nope", "action": "drop"}]}}}, "/chains/input/rules/0/saddr",
     "unknown set 'nope'"),
    ({"sets": {"p": {"type": "inet_service"}}, "chains": {"input": {"rules": [{"saddr": "@p"}]}}},
     "/chains/input/rules/0/saddr", "cannot be looked up"),
    ({"sets": {"p": {"type": "inet_service"}}, "chains": {"input": {"rules": [{"dport": "@p"}]}}},
     "/chains/input/rules/0/dport", "needs a protocol"),
    ({"sets": {"a": {"type": "ipv6_addr"}}, "chains": {"input": {"rules": [{"saddr": "@a", "family": "ipv4"}]}}},
     "/chains/input/rules/0/saddr", "holds ipv6 addresses"),
    ({"chains": {"input": {"rules": [{"vmap": {"key": "iif", "map": {"eth0": "jump nowhere"}}}]}}},
     "/chains/input/rules/0/vmap/map/eth0", "no user-defined chain"),
    ({"chains": {"input": {"rules": [{"vmap": {"key": "iif", "map": {"eth0": "reject"}}}]}}},
     "/chains/input/rules/0/vmap/map/eth0", "expected form"),
    ({"chains": {"input": {"rules": [{"action": "drop", "vmap": {"key": "iif", "map": {"eth0": "accept"}}}]}}},
     "/chains/input/rules/0/vmap", "excludes action"),
    ({"chains": {"input": {"rules": [{"protocol": "tcp", "vmap": {"key": "dport", "map": {"ssh": "accept"}}}]}}},
     "/chains/input/rules/0/vmap/map/ssh", "is not a port"),
]


@pytest.mark.parametrize("doc,pointer,words", SET_INVALID, ids=[c[2] for c in SET_INVALID])
def test_sets_invalid(doc, pointer, words):
    ok, found = has(problems(**doc), pointer, words)
    assert ok, found


def test_sets_in_nft():
    doc = {"sets": SETS, "chains": {"input": {"rules": [
        {"name": "a", "saddr": "@bl", "action": "drop"},
        {"name": "b", "protocol": "tcp", "match_set": {"name": "svc", "keys": ["daddr", "dport"]}, "action": "accept"},
        {"name": "c", "protocol": "tcp", "vmap": {"key": "dport", "map": {"22": "jump lan", "23": "drop"}}}]},
        "lan": {"rules": []}}}
    document = nft.generate(lower(policy(**doc)))
    cmds = [c["add"] for c in document["nftables"] if "add" in c]
    assert {"family": "inet", "table": "ctkit", "name": "bl", "type": "ipv4_addr", "flags": ["interval", "timeout"],
            "timeout": 60} in [c.get("set") for c in cmds]
    elems = {c["element"]["name"]: c["element"]["elem"] for c in cmds if "element" in c}
    P = {"comment": "policy"}  # declared by the policy file (names.NFT_DECLARED_ELEMENT)
    assert elems["bl"] == [{"elem": {"val": {"prefix": {"addr": "10.0.0.0", "len": 8}}, **P}},
                           {"elem": {"val": "192.0.2.1", "timeout": 5, **P}},
                           {"elem": {"val": {"range": ["198.51.100.1", "198.51.100.9"]}, **P}}]
    assert elems["svc"] == [{"elem": {"val": {"concat": ["192.0.2.10", 80]}, **P}}]
    assert nft_rules("input", **doc) == [
        'ip saddr @bl counter drop comment "a"',
        'ip daddr . tcp dport @svc counter accept comment "b"',
        'meta l4proto tcp counter tcp dport vmap { 22 : jump lan, 23 : drop } comment "c"']


def test_sets_in_iptables():
    doc = {"sets": SETS, "chains": {"input": {"rules": [
        {"name": "a", "saddr": "@bl", "action": "drop"}, {"name": "b", "protocol": "udp", "sport": "@ports"},
        {"name": "c", "vmap": {"key": "iif", "map": {"eth0": "accept", "eth1": "drop"}}}]}}}
    assert ipt_rules("ipv4", **doc) == [
        '-t filter -A CTKIT-INPUT -m set --match-set ctkit-bl src -m comment --comment a -j DROP',
        '-t filter -A CTKIT-INPUT -p udp -m set --match-set ctkit-ports src -m comment --comment b',
        '-t filter -A CTKIT-INPUT -i eth0 -m comment --comment c -j RETURN',
        '-t filter -A CTKIT-INPUT -i eth1 -m comment --comment c -j DROP']
    rs = iptables.generate(lower(policy(**doc)))
    sets4 = {s.name: s for s in rs.ipv4.ipsets}
    assert sets4["ctkit-bl"] == iptables.IpSet("ctkit-bl", "hash:net", "ipv4", 60, (
        ("10.0.0.0/8", None), ("192.0.2.1", 5), ("198.51.100.1-198.51.100.9", None)))
    assert sets4["ctkit-ports"].kind == "bitmap:port"
    assert "ctkit-bl" not in {s.name for s in rs.ipv6.ipsets}  # an IPv4 set lives in the IPv4 document


def test_concatenated_set_is_a_named_iptables_error():
    doc = {"sets": SETS, "chains": {"input": {"rules": [
        {"protocol": "tcp", "match_set": {"name": "svc", "keys": ["daddr", "dport"]}, "action": "accept"}]}}}
    with pytest.raises(CompileError) as info:
        iptables.generate(lower(policy(**doc)))
    assert (info.value.backend, info.value.construct) == ("iptables", "set concatenation")
