"""`ctkit import --nft-json`: ctkit's own nft table read back as the policy it came from (no root).

The fixtures ctkit-*.nft.json are `nft -j list ruleset` output captured on Linux 6.18 (nftables 1.0.6)
after `ctkit apply` of examples/server-baseline.json, dns-short-timeouts.json and game-server-flood.json
(as they were then).
"""
import json

from goldens import ROOT

from ctkit.importer import from_nft_json, from_nft_texts

FIX = ROOT / "tests" / "fixtures" / "import"


def doc(name):
    return from_nft_json([FIX / f"ctkit-{name}.nft.json"])


def test_sections_and_chains_come_back():
    r = doc("server-baseline")
    assert r.exit_code == 0
    d = r.document
    assert d["notrack"] == [{"name": "dns", "protocols": ["tcp", "udp"], "ports": [53]}]  # 4 rules: sport/dport, pre/out
    assert d["helpers"] == [{"name": "ftp-server", "helper": "ftp", "protocol": "tcp", "ports": 21,
                             "daddr": "192.0.2.10"}]
    assert d["chains"]["input"]["policy"] == "drop"
    assert {"jump": "web"} in d["chains"]["input"]["rules"]
    assert d["chains"]["web"]["rules"][-1] == {"action": "return"}


def test_timeout_policies_come_from_their_objects():
    d = doc("dns-short-timeouts").document
    assert d["timeouts"][0] == {"name": "dns_udp", "protocol": "udp", "policy": {"unreplied": 3, "replied": 5},
                                "ports": 53, "comment": "short-lived DNS queries"}
    assert {"name": "dns", "protocols": ["tcp", "udp"], "dport": 53, "ct_mark_set": 83, "action": "accept"} \
        in d["chains"]["input"]["rules"]


def test_payload_limits_and_the_log_rule_merge_back():
    rules = doc("game-server-flood").document["chains"]["input"]["rules"]
    assert rules[0]["name"] == "flood-length" and "family" not in rules[0]
    assert rules[0]["log"]["limit"] == {"rate": 5, "per": "minute", "burst": 5}
    assert rules[1]["payload"] == [{"base": "th", "offset": 8, "hex": "ffffffff"}, {"base": "th", "offset": 12, "hex": "54"}]
    assert [r["name"] for r in rules] == ["flood-length", "flood-signature", "established", "game", "icmp"]


def test_other_tables_are_left_out_and_what_cannot_be_said_is_listed():
    text = json.dumps({"nftables": [
        {"table": {"family": "inet", "name": "firewalld", "handle": 1}},
        {"table": {"family": "inet", "name": "mine", "handle": 2}},
        {"chain": {"family": "inet", "table": "mine", "name": "input", "handle": 1, "type": "filter",
                   "hook": "input", "prio": 0, "policy": "drop"}},
        {"rule": {"family": "inet", "table": "mine", "chain": "input", "handle": 3, "expr": [
            {"match": {"op": "==", "left": {"payload": {"protocol": "tcp", "field": "dport"}}, "right": 22}},
            {"accept": None}]}},
        {"rule": {"family": "inet", "table": "mine", "chain": "input", "handle": 4, "expr": [
            {"match": {"op": "<", "left": {"payload": {"protocol": "tcp", "field": "dport"}}, "right": 1024}},
            {"drop": None}]}}]})
    r = from_nft_texts([("rules.json", text)])
    assert [(x.what, x.owner) for x in r.left_out] == [("table inet firewalld", "firewalld")]
    assert r.document["chains"]["input"] == {"policy": "drop", "rules": [{"protocol": "tcp", "dport": 22,
                                                                            "action": "accept"}]}
    assert r.exit_code == 1 and r.not_expressed[0].line == 4 and "'<'" in r.not_expressed[0].reason


def _rule(*expr):
    return {"rule": {"family": "inet", "table": "mine", "chain": "input", "handle": 9, "expr": [*expr, {"drop": None}]}}


def _imported_rules(*rules):
    text = json.dumps({"nftables": [
        {"table": {"family": "inet", "name": "mine", "handle": 2}},
        {"chain": {"family": "inet", "table": "mine", "name": "input", "handle": 1, "type": "filter",
                   "hook": "input", "prio": 0, "policy": "accept"}}, *rules]})
    r = from_nft_texts([("rules.json", text)])
    assert r.exit_code == 0, r.not_expressed
    return r.document["chains"]["input"]["rules"]


def test_negations_and_address_types_come_back():
    """`!=` on addresses and ports is {"not": ...}; `ip saddr !=` keeps its family (the policy's not alone
    would take every IPv6 packet); fib daddr type is daddr_type."""
    (rule,) = _imported_rules(_rule(
        {"match": {"op": "!=", "left": {"payload": {"protocol": "ip", "field": "saddr"}},
                   "right": {"set": [{"prefix": {"addr": "10.0.0.0", "len": 8}}, "192.0.2.1"]}}},
        {"match": {"op": "!=", "left": {"fib": {"result": "type", "flags": ["daddr"]}}, "right": "local"}},
        {"match": {"op": "!=", "left": {"payload": {"protocol": "tcp", "field": "dport"}},
                   "right": {"set": [22, {"range": [1000, 2000]}]}}}))
    assert rule == {"saddr": {"not": ["10.0.0.0/8", "192.0.2.1"]}, "family": "ipv4", "daddr_type": {"not": "local"},
                    "protocol": "tcp", "dport": {"not": [22, "1000-2000"]}, "action": "drop"}


def test_named_sets_and_lookups_come_back():
    d = doc("blocklist-set").document
    assert d["sets"]["blocklist"] == {"type": "ipv4_addr", "interval": True, "timeout": 86400,
                                      "elements": ["198.51.100.0/24", {"value": "203.0.113.7", "timeout": 3600}]}
    assert d["sets"]["web_ports"]["elements"] == [80, 443]
    rules = {r.get("name"): r for r in d["chains"]["input"]["rules"]}
    assert rules["blocked"]["saddr"] == "@blocklist" and rules["web"]["dport"] == "@web_ports"
    assert rules["dispatch"]["vmap"] == {"key": "dport", "map": {"22": "jump ssh", "2222": "jump ssh"}}


def test_toggles_keep_their_live_state():
    text = json.dumps({"nftables": [
        {"table": {"family": "inet", "name": "ctkit", "handle": 1}},
        {"set": {"family": "inet", "name": "toggle_maint", "table": "ctkit", "type": "nf_proto", "handle": 2,
                 "elem": ["ipv4", "ipv6"]}},
        {"chain": {"family": "inet", "table": "ctkit", "name": "input", "handle": 3, "type": "filter",
                   "hook": "input", "prio": 0, "policy": "accept"}},
        {"rule": {"family": "inet", "table": "ctkit", "chain": "input", "handle": 4, "comment": "maint", "expr": [
            {"match": {"op": "==", "left": {"meta": {"key": "nfproto"}}, "right": "@toggle_maint"}},
            {"match": {"op": "==", "left": {"payload": {"protocol": "tcp", "field": "dport"}}, "right": 80}},
            {"drop": None}]}}]})
    d = from_nft_texts([("t", text)]).document
    assert d["toggles"] == {"maint": True}  # on now, whatever the policy file said
    assert d["chains"]["input"]["rules"] == [{"name": "maint", "when": "maint", "protocol": "tcp", "dport": 80,
                                              "action": "drop"}]
