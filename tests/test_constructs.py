"""One row per construct, in the spirit of sqlglot's validate_all: a policy fragment, what nft
text it becomes, and what iptables-restore lines it becomes (or the CompileError it raises).

Each row names its rule "probe"; only the kernel rules whose comment names that rule (or a
toggle, for the toggle rows) are compared, each prefixed by its nft chain or iptables table,
so a row states literally where the construct lands and what it turns into.
"""
from __future__ import annotations

import re
from typing import NamedTuple

import pytest

from ctkit.backends.iptables import generate as iptables
from ctkit.backends.iptables import text as ipt_text
from ctkit.backends.nft import generate as nft
from ctkit.backends.nft import text as nft_text
from ctkit.compile.lower import lower
from ctkit.errors import CompileError
from ctkit.policy.lint import errors_of, lint
from ctkit.policy.load import load_document


class CannotExpress(NamedTuple):
    """The backend raises CompileError for this construct (CompileError.construct)."""

    construct: str


class Row(NamedTuple):
    id: str
    fragment: dict
    nft: list[str] | CannotExpress
    iptables: list[str] | CannotExpress  # the ipv4 document
    ip6tables: list[str] | None = None  # the ipv6 document; None: not checked by this row


# the comment of a kernel rule that belongs to the probe: "probe", "notrack/probe", "nat/probe",
# "toggle/maint", "toggle/maint: policy on"
_OURS = r'(?:[a-z]+/)?probe|toggle/[a-z0-9_]+(?:: [^"]*)?'
_NFT_COMMENT = re.compile(rf'comment "(?:{_OURS})"$')
_IPT_COMMENT = re.compile(rf'--comment (?:"(?:{_OURS})"|(?:{_OURS})(?= |$))')


def rule(**fields) -> dict:
    return {"chains": {"input": {"rules": [{"name": "probe", **fields}]}}}


def chain_rule(chain: str, **fields) -> dict:
    return {"chains": {chain: {"rules": [{"name": "probe", **fields}]}}}


ROWS = [
    # ---- matches
    Row("ports", rule(protocol="udp", sport="1000-2000", dport=[53, 5353], action="drop"),
        ['input: udp sport 1000-2000 udp dport { 53, 5353 } counter drop comment "probe"'],
        ["filter: -A CTKIT-INPUT -p udp -m udp --sport 1000:2000 -m multiport --dports 53,5353 "
         "-m comment --comment probe -j DROP"]),
    Row("addresses-mixed-families", rule(saddr=["10.0.0.0/8", "fd00::/8"], action="accept"),
        ['input: ip saddr 10.0.0.0/8 counter accept comment "probe"',
         'input: ip6 saddr fd00::/8 counter accept comment "probe"'],
        ["filter: -A CTKIT-INPUT -s 10.0.0.0/8 -m comment --comment probe -j RETURN"],
        ["filter: -A CTKIT-INPUT -s fd00::/8 -m comment --comment probe -j RETURN"]),
    Row("daddr-host", rule(daddr="192.0.2.1", action="accept"),
        ['input: ip daddr 192.0.2.1 counter accept comment "probe"'],
        ["filter: -A CTKIT-INPUT -d 192.0.2.1/32 -m comment --comment probe -j RETURN"],
        []),
    Row("ct-state", rule(ct_state=["established", "related"], action="accept"),
        ['input: ct state established,related counter accept comment "probe"'],
        ["filter: -A CTKIT-INPUT -m conntrack --ctstate RELATED,ESTABLISHED -m comment --comment probe -j RETURN"]),
    Row("ct-state-no-counter", rule(ct_state=["invalid"], action="drop", counter=False),
        ['input: ct state invalid drop comment "probe"'],
        ["filter: -A CTKIT-INPUT -m conntrack --ctstate INVALID -m comment --comment probe -j DROP"]),
    Row("length", rule(length=["0-32", 222], action="drop"),
        ['input: meta length { 0-32, 222 } counter drop comment "probe"'],
        ["filter: -A CTKIT-INPUT -m length --length 0:32 -m comment --comment probe -j DROP",
         "filter: -A CTKIT-INPUT -m length --length 222 -m comment --comment probe -j DROP"]),
    Row("icmp-is-ipv4-only-in-iptables", rule(protocol="icmp", action="accept"),
        ['input: meta l4proto icmp counter accept comment "probe"'],
        ["filter: -A CTKIT-INPUT -p icmp -m comment --comment probe -j RETURN"],
        []),
    Row("limit", rule(protocol="icmp", limit={"rate": 10, "per": "second", "burst": 20}, action="accept"),
        # a limit's bucket is per family, but icmp exists only in IPv4: no IPv6 rule that never matches
        ['input: meta nfproto ipv4 meta l4proto icmp limit rate 10/second burst 20 packets counter accept '
         'comment "probe"'],
        ["filter: -A CTKIT-INPUT -p icmp -m limit --limit 10/sec --limit-burst 20 -m comment --comment probe "
         "-j RETURN"], []),
    Row("limit-per-source", rule(protocol="tcp", dport=80, ct_state=["new"],
                                 limit={"rate": 50, "burst": 100, "by": "saddr"}, action="accept"),
        ['input: tcp dport 80 ct state new meter ctkit_l0v4 size 65535 '
         '{ ip saddr limit rate 50/second burst 100 packets } counter accept comment "probe"',
         'input: tcp dport 80 ct state new meter ctkit_l0v6 size 65535 '
         '{ ip6 saddr limit rate 50/second burst 100 packets } counter accept comment "probe"'],
        ["filter: -A CTKIT-INPUT -p tcp -m tcp --dport 80 -m conntrack --ctstate NEW -m hashlimit "
         "--hashlimit-upto 50/sec --hashlimit-burst 100 --hashlimit-mode srcip --hashlimit-name ctkit_l0v4 "
         "-m comment --comment probe -j RETURN"],
        ["filter: -A CTKIT-INPUT -p tcp -m tcp --dport 80 -m conntrack --ctstate NEW -m hashlimit "
         "--hashlimit-upto 50/sec --hashlimit-burst 100 --hashlimit-mode srcip --hashlimit-name ctkit_l0v6 "
         "-m comment --comment probe -j RETURN"]),
    Row("payload-ipv4", rule(family="ipv4", protocol="udp", dport=27015,
                             payload=[{"base": "th", "offset": 8, "hex": "ffffffff"}], action="drop"),
        ['input: meta nfproto ipv4 udp dport 27015 @th,64,32 0xffffffff counter drop comment "probe"'],
        ['filter: -A CTKIT-INPUT -p udp -m udp --dport 27015 -m u32 --u32 "0x0>>0x16&0x3c@0x8&0xffffffff=0xffffffff" '
         '-m comment --comment probe -j DROP'],
        []),
    Row("payload-ipv6-transport-header", rule(family="ipv6", protocol="udp",
                                              payload=[{"base": "th", "offset": 8, "hex": "ffffffff"}], action="drop"),
        ['input: meta nfproto ipv6 meta l4proto udp @th,64,32 0xffffffff counter drop comment "probe"'],
        CannotExpress("payload")),
    Row("signature", rule(protocol="udp", signature={"hex": "deadbeef", "from": 28, "to": 64}, action="drop"),
        CannotExpress("signature"),
        ['filter: -A CTKIT-INPUT -p udp -m string --hex-string "|deadbeef|" --algo bm --from 28 --to 64 '
         '-m comment --comment probe -j DROP']),
    Row("set-lookup-address", {"sets": {"bl": {"type": "ipv4_addr", "interval": True,
                                               "elements": ["198.51.100.0/24"]}},
                               **rule(saddr="@bl", action="drop")},
        ['input: ip saddr @bl counter drop comment "probe"'],
        ["filter: -A CTKIT-INPUT -m set --match-set ctkit-bl src -m comment --comment probe -j DROP"],
        []),
    Row("set-lookup-ports", {"sets": {"wp": {"type": "inet_service", "elements": [80, 443]}},
                             **rule(protocol="tcp", dport="@wp", action="accept")},
        ['input: tcp dport @wp counter accept comment "probe"'],
        ["filter: -A CTKIT-INPUT -p tcp -m set --match-set ctkit-wp dst -m comment --comment probe -j RETURN"]),
    Row("set-concatenation", {"sets": {"svc": {"type": ["ipv4_addr", "inet_service"],
                                               "elements": [["192.0.2.1", 80]]}},
                              **rule(protocol="tcp", match_set={"name": "svc", "keys": ["daddr", "dport"]},
                                     action="accept")},
        ['input: ip daddr . tcp dport @svc counter accept comment "probe"'],
        CannotExpress("set concatenation")),
    # ---- verdicts and statements
    Row("log", rule(action="drop", log={"prefix": "dropped: ", "level": "info"}),
        ['input: counter log prefix "dropped: " level info drop comment "probe"'],
        ['filter: -A CTKIT-INPUT -m comment --comment probe -j LOG --log-prefix "dropped: " --log-level 6',
         "filter: -A CTKIT-INPUT -m comment --comment probe -j DROP"]),
    Row("log-limited-then-reject", rule(action="reject", log={"prefix": "x: ", "limit": {"rate": 5, "per": "minute"}}),
        ['input: meta nfproto ipv4 limit rate 5/minute burst 5 packets log prefix "x: " level warn comment "probe"',
         'input: meta nfproto ipv4 counter reject with icmpx type port-unreachable comment "probe"',
         'input: meta nfproto ipv6 limit rate 5/minute burst 5 packets log prefix "x: " level warn comment "probe"',
         'input: meta nfproto ipv6 counter reject with icmpx type port-unreachable comment "probe"'],
        ['filter: -A CTKIT-INPUT -m limit --limit 5/min -m comment --comment probe -j LOG --log-prefix "x: "',
         "filter: -A CTKIT-INPUT -m comment --comment probe -j REJECT --reject-with icmp-port-unreachable"],
        ['filter: -A CTKIT-INPUT -m limit --limit 5/min -m comment --comment probe -j LOG --log-prefix "x: "',
         "filter: -A CTKIT-INPUT -m comment --comment probe -j REJECT --reject-with icmp6-port-unreachable"]),
    Row("reject-tcp-reset", rule(protocol="tcp", action="reject", reject_with="tcp-reset"),
        ['input: meta l4proto tcp counter reject with tcp reset comment "probe"'],
        ["filter: -A CTKIT-INPUT -p tcp -m comment --comment probe -j REJECT --reject-with tcp-reset"]),
    Row("jump", {"chains": {"input": {"rules": [{"name": "probe", "iif": "eth0", "jump": "web"}]},
                            "web": {"rules": [{"name": "w", "action": "return"}]}}},
        ['input: iifname "eth0" counter jump web comment "probe"'],
        ["filter: -A CTKIT-INPUT -i eth0 -m comment --comment probe -j CTKIT-web"]),
    Row("goto", {"chains": {"forward": {"rules": [{"name": "probe", "oif": "eth1", "goto": "web"}]},
                            "web": {"rules": [{"name": "w", "action": "return"}]}}},
        ['forward: oifname "eth1" counter goto web comment "probe"'],
        ["filter: -A CTKIT-FORWARD -o eth1 -m comment --comment probe -g CTKIT-web"]),
    Row("verdict-map-ports", {"chains": {"input": {"rules": [
            {"name": "probe", "protocol": "tcp", "vmap": {"key": "dport", "map": {"22": "jump ssh", "80": "accept"}}}]},
            "ssh": {"rules": [{"name": "s", "action": "accept"}]}}},
        ['input: meta l4proto tcp counter tcp dport vmap { 22 : jump ssh, 80 : accept } comment "probe"'],
        ["filter: -A CTKIT-INPUT -p tcp -m tcp --dport 22 -m comment --comment probe -j CTKIT-ssh",
         "filter: -A CTKIT-INPUT -p tcp -m tcp --dport 80 -m comment --comment probe -j RETURN"]),
    Row("verdict-map-interfaces", rule(vmap={"key": "iif", "map": {"eth0": "drop", "eth1": "accept"}}),
        ['input: counter iifname vmap { "eth0" : drop, "eth1" : accept } comment "probe"'],
        ["filter: -A CTKIT-INPUT -i eth0 -m comment --comment probe -j DROP",
         "filter: -A CTKIT-INPUT -i eth1 -m comment --comment probe -j RETURN"]),
    Row("queue", rule(protocol="udp", dport=5000, action="queue", queue={"num": 4}),
        ['input: udp dport 5000 counter queue to 4 comment "probe"'],
        ["filter: -A CTKIT-INPUT -p udp -m udp --dport 5000 -m comment --comment probe -j NFQUEUE --queue-num 4"]),
    Row("queue-balanced-bypass", rule(protocol="udp", dport=5000, action="queue", queue={"num": "2-3", "bypass": True}),
        ['input: udp dport 5000 counter queue flags bypass to 2-3 comment "probe"'],
        ["filter: -A CTKIT-INPUT -p udp -m udp --dport 5000 -m comment --comment probe "
         "-j NFQUEUE --queue-balance 2:3 --queue-bypass"]),
    Row("ct-mark-and-label", rule(protocol="udp", dport=53, ct_mark_set=83, ct_label_set=5, action="accept"),
        ['input: udp dport 53 counter ct mark set 0x53 ct label set 5 accept comment "probe"'],
        ["filter: -A CTKIT-INPUT -p udp -m udp --dport 53 -m comment --comment probe -j CONNMARK "
         "--set-xmark 0x53/0xffffffff",
         'filter: -A CTKIT-INPUT -p udp -m udp --dport 53 -m comment --comment probe -m connlabel --label "5" --set',
         "filter: -A CTKIT-INPUT -p udp -m udp --dport 53 -m comment --comment probe -j RETURN"]),
    # ---- mangle
    Row("dscp", chain_rule("prerouting", protocol="udp", dport=5060, dscp="ef"),
        ['prerouting: meta nfproto ipv4 udp dport 5060 counter ip dscp set ef comment "probe"',
         'prerouting: meta nfproto ipv6 udp dport 5060 counter ip6 dscp set ef comment "probe"'],
        ["mangle: -A CTKIT-PREROUTING -p udp -m udp --dport 5060 -m comment --comment probe -j DSCP --set-dscp 0x2e"],
        ["mangle: -A CTKIT-PREROUTING -p udp -m udp --dport 5060 -m comment --comment probe -j DSCP --set-dscp 0x2e"]),
    Row("dscp-outside-mangle", rule(protocol="udp", dport=5060, dscp="ef"),
        ['input: meta nfproto ipv4 udp dport 5060 counter ip dscp set ef comment "probe"',
         'input: meta nfproto ipv6 udp dport 5060 counter ip6 dscp set ef comment "probe"'],
        CannotExpress("dscp")),
    Row("mark-and-connmark-save", chain_rule("prerouting", protocol="udp", dport=5060, mark_set=16, connmark="save"),
        ['prerouting: udp dport 5060 counter meta mark set 0x10 ct mark set meta mark comment "probe"'],
        ["mangle: -A CTKIT-PREROUTING -p udp -m udp --dport 5060 -m comment --comment probe -j MARK "
         "--set-xmark 0x10/0xffffffff",
         "mangle: -A CTKIT-PREROUTING -p udp -m udp --dport 5060 -m comment --comment probe -j CONNMARK "
         "--save-mark --nfmask 0xffffffff --ctmask 0xffffffff"]),
    Row("connmark-restore", chain_rule("prerouting", connmark="restore"),
        ['prerouting: counter meta mark set ct mark comment "probe"'],
        ["mangle: -A CTKIT-PREROUTING -m comment --comment probe -j CONNMARK --restore-mark "
         "--nfmask 0xffffffff --ctmask 0xffffffff"]),
    Row("tcp-mss-pmtu", chain_rule("forward", protocol="tcp", oif="wan0", mss="pmtu"),
        ['forward: oifname "wan0" tcp flags & (syn | rst) == syn counter tcp option maxseg size set rt mtu '
         'comment "probe"'],
        ["filter: -A CTKIT-FORWARD -o wan0 -p tcp -m tcp --tcp-flags SYN,RST SYN -m comment --comment probe "
         "-j TCPMSS --clamp-mss-to-pmtu"]),
    Row("tcp-mss-fixed", chain_rule("forward", protocol="tcp", oif="tun0", mss=1360),
        ['forward: oifname "tun0" tcp flags & (syn | rst) == syn counter tcp option maxseg size set 1360 '
         'comment "probe"'],
        ["filter: -A CTKIT-FORWARD -o tun0 -p tcp -m tcp --tcp-flags SYN,RST SYN -m comment --comment probe "
         "-j TCPMSS --set-mss 1360"]),
    # ---- conntrack templates (raw, before conntrack) and helpers (after it)
    # ---- negated lists and address types (issue 13: the router case)
    Row("addresses-negated-one", rule(saddr={"not": "10.0.0.0/8"}, action="drop"),
        ['input: ip saddr != 10.0.0.0/8 counter drop comment "probe"',
         'input: meta nfproto ipv6 counter drop comment "probe"'],
        ['filter: -A CTKIT-INPUT ! -s 10.0.0.0/8 -m comment --comment probe -j DROP'],
        ['filter: -A CTKIT-INPUT -m comment --comment probe -j DROP']),
    Row("addresses-negated-several", rule(family="ipv4", daddr={"not": ["10.0.0.0/8", "192.168.0.0/16"]}, action="accept"),
        ['input: ip daddr != { 10.0.0.0/8, 192.168.0.0/16 } counter accept comment "probe"'],
        ['filter: -A CTKIT-INPUT -m iprange ! --dst-range 10.0.0.0-10.255.255.255 -m iprange ! --dst-range 192.168.0.0-192.168.255.255 -m comment --comment probe -j RETURN'],
        []),
    Row("ports-negated", rule(protocol="tcp", dport={"not": 22}, sport={"not": [1, "1000-2000"]}, action="drop"),
        ['input: tcp sport != { 1, 1000-2000 } tcp dport != 22 counter drop comment "probe"'],
        ['filter: -A CTKIT-INPUT -p tcp -m multiport ! --sports 1,1000:2000 -m tcp ! --dport 22 -m comment --comment probe -j DROP'],
        ['filter: -A CTKIT-INPUT -p tcp -m multiport ! --sports 1,1000:2000 -m tcp ! --dport 22 -m comment --comment probe -j DROP']),
    Row("ports-negated-past-multiport", rule(protocol="udp", dport={"not": list(range(1, 18))}, action="drop"),
        ['input: udp dport != { 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17 } counter drop comment "probe"'],
        ['filter: -A CTKIT-INPUT -p udp -m multiport ! --dports 1,2,3,4,5,6,7,8,9,10,11,12,13,14,15 -m multiport ! --dports 16,17 -m comment --comment probe -j DROP'],
        ['filter: -A CTKIT-INPUT -p udp -m multiport ! --dports 1,2,3,4,5,6,7,8,9,10,11,12,13,14,15 -m multiport ! --dports 16,17 -m comment --comment probe -j DROP']),
    Row("address-type-local", rule(daddr_type="local", saddr_type={"not": ["local", "multicast"]}, action="accept"),
        ['input: fib saddr type != { local, multicast } fib daddr type local counter accept comment "probe"'],
        ['filter: -A CTKIT-INPUT -m addrtype ! --src-type LOCAL,MULTICAST -m addrtype --dst-type LOCAL -m comment --comment probe -j RETURN'],
        ['filter: -A CTKIT-INPUT -m addrtype ! --src-type LOCAL,MULTICAST -m addrtype --dst-type LOCAL -m comment --comment probe -j RETURN']),
    Row("address-type-broadcast-ipv4", rule(family="ipv4", daddr_type=["broadcast", "multicast"], action="drop"),
        ['input: meta nfproto ipv4 fib daddr type { broadcast, multicast } counter drop comment "probe"'],
        ['filter: -A CTKIT-INPUT -m addrtype --dst-type BROADCAST,MULTICAST -m comment --comment probe -j DROP'],
        []),
    Row("notrack-transit-address-type", {"notrack": [{"name": "probe", "daddr_type": {"not": "local"}, "direction": "in"}]},
        ['notrack-pre: fib daddr type != local counter notrack comment "notrack/probe"'],
        ['raw: -A CTKIT-PREROUTING -m addrtype ! --dst-type LOCAL -m comment --comment "notrack/probe" -j CT --notrack'],
        ['raw: -A CTKIT-PREROUTING -m addrtype ! --dst-type LOCAL -m comment --comment "notrack/probe" -j CT --notrack']),
    Row("notrack-peers-negated", {"notrack": [{"name": "probe", "protocol": "udp", "ports": {"not": 53}, "peers": {"not": "192.0.2.0/24"}, "family": "ipv4", "direction": "in"}]},
        ['notrack-pre: ip saddr != 192.0.2.0/24 ip daddr != 192.0.2.0/24 udp sport != 53 udp dport != 53 counter notrack comment "notrack/probe"'],
        ['raw: -A CTKIT-PREROUTING ! -s 192.0.2.0/24 ! -d 192.0.2.0/24 -p udp -m udp ! --sport 53 -m udp ! --dport 53 -m comment --comment "notrack/probe" -j CT --notrack'],
        []),
    Row("notrack", {"notrack": [{"name": "probe", "protocol": "udp", "ports": 53}]},
        ['notrack-pre: udp sport 53 counter notrack comment "notrack/probe"',
         'notrack-pre: udp dport 53 counter notrack comment "notrack/probe"',
         'notrack-out: udp sport 53 counter notrack comment "notrack/probe"',
         'notrack-out: udp dport 53 counter notrack comment "notrack/probe"'],
        ['raw: -A CTKIT-PREROUTING -p udp -m multiport --ports 53 -m comment --comment "notrack/probe" -j CT --notrack',
         'raw: -A CTKIT-OUTPUT -p udp -m multiport --ports 53 -m comment --comment "notrack/probe" -j CT --notrack']),
    Row("helper", {"helpers": [{"name": "probe", "helper": "ftp", "protocol": "tcp", "ports": 21,
                                "daddr": "192.0.2.10"}]},
        ['helper-pre: ip daddr 192.0.2.10 tcp dport 21 counter ct helper set "probe" comment "helper/probe"'],
        ['raw: -A CTKIT-PREROUTING -d 192.0.2.10/32 -p tcp -m tcp --dport 21 -m comment --comment "helper/probe" '
         '-j CT --helper ftp'],
        []),
    Row("timeout", {"timeouts": [{"name": "probe", "protocol": "udp", "ports": [53],
                                  "policy": {"unreplied": 3, "replied": 5}}]},
        ['timeout-pre: udp dport 53 counter ct timeout set "probe" comment "timeout/probe"'],
        ['raw: -A CTKIT-PREROUTING -p udp -m udp --dport 53 -m comment --comment "timeout/probe" -j CT --timeout kloy'],
        ['raw: -A CTKIT-PREROUTING -p udp -m udp --dport 53 -m comment --comment "timeout/probe" '
         '-j CT --timeout kfib']),
    Row("zone", {"zones": [{"name": "probe", "zone": 7, "iif": "eth1"}]},
        ['zone-pre: iifname "eth1" counter ct zone set 7 comment "zone/probe"'],
        ['raw: -A CTKIT-PREROUTING -i eth1 -m comment --comment "zone/probe" -j CT --zone 7']),
    # ---- nat
    Row("snat", {"nat": [{"name": "probe", "type": "snat", "oif": "wan0", "saddr": "10.1.0.0/24",
                          "to_addr": "203.0.113.1"}]},
        ['nat-post: ip saddr 10.1.0.0/24 oifname "wan0" counter snat ip to 203.0.113.1 comment "nat/probe"'],
        ['nat: -A CTKIT-POSTROUTING -s 10.1.0.0/24 -o wan0 -m comment --comment "nat/probe" '
         '-j SNAT --to-source 203.0.113.1'],
        []),
    Row("dnat", {"nat": [{"name": "probe", "type": "dnat", "iif": "wan0", "protocol": "tcp", "dport": 8080,
                          "to_addr": "10.1.0.10", "to_port": 80}]},
        ['nat-pre: meta nfproto ipv4 tcp dport 8080 iifname "wan0" counter dnat ip to 10.1.0.10:80 '
         'comment "nat/probe"'],
        ['nat: -A CTKIT-PREROUTING -i wan0 -p tcp -m tcp --dport 8080 -m comment --comment "nat/probe" '
         '-j DNAT --to-destination 10.1.0.10:80'],
        []),
    Row("masquerade", {"nat": [{"name": "probe", "type": "masquerade", "oif": "wan0", "saddr": "10.1.0.0/24"}]},
        ['nat-post: ip saddr 10.1.0.0/24 oifname "wan0" counter masquerade comment "nat/probe"'],
        ['nat: -A CTKIT-POSTROUTING -s 10.1.0.0/24 -o wan0 -m comment --comment "nat/probe" -j MASQUERADE']),
    Row("redirect", {"nat": [{"name": "probe", "type": "redirect", "iif": "lan0", "protocol": "tcp", "dport": 80,
                              "to_port": 3129}]},
        ['nat-pre: tcp dport 80 iifname "lan0" counter redirect to :3129 comment "nat/probe"'],
        ['nat: -A CTKIT-PREROUTING -i lan0 -p tcp -m tcp --dport 80 -m comment --comment "nat/probe" '
         '-j REDIRECT --to-ports 3129'],
        ['nat: -A CTKIT-PREROUTING -i lan0 -p tcp -m tcp --dport 80 -m comment --comment "nat/probe" '
         '-j REDIRECT --to-ports 3129']),
    # ---- toggles: the switch is a set (nft) or a jump into a switch chain (iptables)
    Row("toggle-on", {"toggles": {"maint": True}, **rule(when="maint", protocol="tcp", dport=80, action="drop")},
        ['toggle-state: meta nfproto @toggle_maint comment "toggle/maint: policy on"',
         'input: meta nfproto @toggle_maint tcp dport 80 counter drop comment "probe"'],
        ["filter: -A CTKIT-INPUT -m comment --comment probe -j CTKIT-TG-maint-0",
         'filter: -A CTKIT-TG-maint-0 -m comment --comment "toggle/maint" -j CTKIT-TR-maint-0',
         "filter: -A CTKIT-TR-maint-0 -p tcp -m tcp --dport 80 -m comment --comment probe -j DROP",
         'filter: -A CTKIT-TR-maint-0 -m comment --comment "toggle/maint: policy on"']),
    Row("toggle-off", {"toggles": {"maint": False}, **rule(when="maint", protocol="tcp", dport=80, action="drop")},
        ['toggle-state: meta nfproto @toggle_maint comment "toggle/maint: policy off"',
         'input: meta nfproto @toggle_maint tcp dport 80 counter drop comment "probe"'],
        ["filter: -A CTKIT-INPUT -m comment --comment probe -j CTKIT-TG-maint-0",
         "filter: -A CTKIT-TR-maint-0 -p tcp -m tcp --dport 80 -m comment --comment probe -j DROP",
         'filter: -A CTKIT-TR-maint-0 -m comment --comment "toggle/maint: policy off"']),
]


def plan_of(fragment: dict):
    policy = load_document({"version": 1, **fragment})
    assert not errors_of(lint(policy)), [p.render() for p in errors_of(lint(policy))]
    return lower(policy)


def nft_lines(plan) -> list[str]:
    """`chain: rule` for every rule of the nft text that belongs to the probe."""
    out, chain = [], None
    for line in nft_text.render(nft.generate(plan)).splitlines():
        if m := re.fullmatch(r"\tchain (\S+) \{", line):
            chain = m.group(1)
        elif line.startswith("\t\t") and _NFT_COMMENT.search(line):
            out.append(f"{chain}: {line.strip()}")
    return out


def iptables_lines(plan, family: str) -> list[str]:
    """`table: -A ...` for every iptables-restore line that belongs to the probe."""
    out, table = [], None
    for line in ipt_text.render(iptables.generate(plan).document(family)).splitlines():
        if line.startswith("*"):
            table = line[1:]
        elif line.startswith("-A ") and _IPT_COMMENT.search(line):
            out.append(f"{table}: {line}")
    return out


def _expect(expected, produce):
    if isinstance(expected, CannotExpress):
        with pytest.raises(CompileError) as exc:
            produce()
        assert exc.value.construct == expected.construct, str(exc.value)
        assert exc.value.where == "/chains/input/rules/0"
    else:
        assert produce() == expected


@pytest.mark.parametrize("row", ROWS, ids=[r.id for r in ROWS])
def test_nft(row):
    _expect(row.nft, lambda: nft_lines(plan_of(row.fragment)))


@pytest.mark.parametrize("row", ROWS, ids=[r.id for r in ROWS])
def test_iptables(row):
    _expect(row.iptables, lambda: iptables_lines(plan_of(row.fragment), "ipv4"))


@pytest.mark.parametrize("row", [r for r in ROWS if r.ip6tables is not None],
                         ids=[r.id for r in ROWS if r.ip6tables is not None])
def test_ip6tables(row):
    assert iptables_lines(plan_of(row.fragment), "ipv6") == row.ip6tables


def test_rows_cover_the_vocabulary():
    assert len({r.id for r in ROWS}) == len(ROWS)
    assert sum(isinstance(r.iptables, CannotExpress) for r in ROWS) >= 2
    words = " ".join(r.id for r in ROWS)
    for construct in ("ports", "addresses", "ct-state", "limit", "log", "notrack", "helper", "timeout", "zone",
                      "snat", "dnat", "masquerade", "set-lookup", "verdict-map", "queue", "dscp", "mark",
                      "connmark", "tcp-mss", "payload", "signature", "toggle"):
        assert construct in words, construct
