"""Set members parsed by the set's own type (ctkit/members.py): addresses and ports, never names."""
from __future__ import annotations

import ipaddress
import socket

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ctkit import members as m
from ctkit.errors import UsageError

V4 = m.SetType((m.IPV4,), False, "allow")
V4_INTERVAL = m.SetType((m.IPV4,), True, "blocklist")
V6_INTERVAL = m.SetType((m.IPV6,), True, "blocklist6")
PORTS = m.SetType((m.SERVICE,), False, "web_ports")
PORTS_INTERVAL = m.SetType((m.SERVICE,), True, "ranges")
CONCAT = m.SetType((m.IPV4, m.SERVICE), False, "svc")
ALL = [V4, V4_INTERVAL, V6_INTERVAL, PORTS, PORTS_INTERVAL, CONCAT,
       m.SetType((m.IPV6, m.SERVICE), True, "svc6")]


@pytest.fixture(autouse=True)
def no_lookups(monkeypatch):
    """Parsing never resolves a name: any lookup fails the test."""
    def refuse(*args, **kwargs):
        raise AssertionError(f"name lookup attempted: {args}")
    for fn in ("getaddrinfo", "gethostbyname", "gethostbyname_ex", "gethostbyaddr", "getservbyname"):
        monkeypatch.setattr(socket, fn, refuse)


@pytest.mark.parametrize("text,set_type,nft", [
    ("192.0.2.1", V4, "192.0.2.1"),
    (" 192.0.2.1 ", V4, "192.0.2.1"),
    ("192.0.2.1/32", V4, "192.0.2.1"),
    ("198.51.100.0/24", V4_INTERVAL, {"prefix": {"addr": "198.51.100.0", "len": 24}}),
    ("192.0.2.1-192.0.2.9", V4_INTERVAL, {"range": ["192.0.2.1", "192.0.2.9"]}),
    ("2001:DB8::1", V6_INTERVAL, "2001:db8::1"),
    ("2001:db8:bad::/48", V6_INTERVAL, {"prefix": {"addr": "2001:db8:bad::", "len": 48}}),
    ("80", PORTS, 80),
    ("65535", PORTS, 65535),
    ("1000-2000", PORTS_INTERVAL, {"range": [1000, 2000]}),
    ("192.0.2.1 . 53", CONCAT, {"concat": ["192.0.2.1", 53]}),
])
def test_valid(text, set_type, nft):
    assert m.parse(text, set_type).nft() == nft


@pytest.mark.parametrize("text,set_type,why", [
    ("80", V4_INTERVAL, "not an IPv4 address"),
    ("999.1.1.1", V4_INTERVAL, "not an IPv4 address"),
    ("localhost", V4_INTERVAL, "host names are not resolved"),
    ("example.com", V4, "host names are not resolved"),
    ("ip6-localhost", V6_INTERVAL, "host names are not resolved"),
    ("01.2.3.4", V4, "not an IPv4 address"),
    ("2001:db8::1", V4, "IPv6 address in a set of ipv4_addr"),
    ("192.0.2.1", V6_INTERVAL, "IPv4 address in a set of ipv6_addr"),
    ("fe80::1%eth0", V6_INTERVAL, "scope"),
    ("10.0.0.0/8", V4, "no interval flag"),
    ("10.0.0.1/8", V4_INTERVAL, "host bits set: the network is 10.0.0.0/8"),
    ("10.0.0.0/255.0.0.0", V4_INTERVAL, "prefix length is a number"),
    ("10.0.0.0/33", V4_INTERVAL, "at most 32"),
    ("192.0.2.9-192.0.2.1", V4_INTERVAL, "above its last"),
    ("192.0.2.1-192.0.2.9", V4, "no interval flag"),
    ("http", PORTS, "not a port number"),
    ("65536", PORTS, "1-65535"),
    ("0", PORTS, "1-65535"),
    ("-1", PORTS, "not a port number"),
    ("8_0", PORTS, "not a port number"),
    ("\u0668\u0660", PORTS, "non-ASCII"),
    ("1000-2000", PORTS, "no interval flag"),
    ("192.0.2.1", CONCAT, "2 parts"),
    ("192.0.2.1 . http", CONCAT, "not a port number"),
    ("", V4, "empty"),
])
def test_refused(text, set_type, why):
    with pytest.raises(UsageError) as exc:
        m.parse(text, set_type)
    message = str(exc.value)
    assert why in message
    assert repr(text) in message and set_type.name in message  # names the value and the set
    assert "valid members look like" in message


def test_the_message_names_the_type_and_examples():
    with pytest.raises(UsageError) as exc:
        m.parse("80", V4_INTERVAL)
    assert "type ipv4_addr, interval" in str(exc.value)
    assert "192.0.2.1, 198.51.100.0/24" in str(exc.value)


def test_unsupported_types_are_refused():
    with pytest.raises(UsageError, match="cannot check members of type ether_addr"):
        m.parse("00:11:22:33:44:55", m.SetType(("ether_addr",), False, "macs"))


@settings(max_examples=400, deadline=None)
@given(st.text(max_size=60), st.sampled_from(ALL))
def test_arbitrary_text_is_a_member_or_a_usage_error(text, set_type):
    try:
        member = m.parse(text, set_type)
    except UsageError:
        return
    # what was accepted is canonical and parses to itself
    assert m.parse(member.text(), set_type) == member
    for part, kind in zip(member.parts, set_type.types, strict=True):
        assert part.kind == kind


_label = st.from_regex(r"[a-z][a-z0-9-]{0,10}", fullmatch=True)


@settings(max_examples=200, deadline=None)
@given(st.lists(_label, min_size=1, max_size=4).map(".".join), st.sampled_from(ALL))
def test_host_names_are_refused(name, set_type):
    text = name if len(set_type.types) == 1 else " . ".join([name] * len(set_type.types))
    with pytest.raises(UsageError):
        m.parse(text, set_type)


@settings(max_examples=200, deadline=None)
@given(st.ip_addresses(v=4))
def test_every_ipv4_address_is_accepted_as_itself(addr):
    assert m.parse(str(addr), V4).nft() == str(addr)
    with pytest.raises(UsageError):
        m.parse(str(addr), V6_INTERVAL)


@settings(max_examples=200, deadline=None)
@given(st.ip_addresses(v=6))
def test_every_ipv6_address_is_accepted_as_itself(addr):
    assert ipaddress.ip_address(m.parse(str(addr), V6_INTERVAL).nft()) == addr


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 65535), st.integers(1, 65535))
def test_port_ranges(a, b):
    lo, hi = min(a, b), max(a, b)
    value = m.parse(f"{lo}-{hi}", PORTS_INTERVAL).nft()
    assert value == (lo if lo == hi else {"range": [lo, hi]})


# ------------------------------------------------------- the kernel's view

def test_set_type_from_nft_listing():
    listing = {"nftables": [{"metainfo": {"version": "1.1.1"}},
                            {"set": {"family": "inet", "name": "blocklist", "table": "ctkit", "type": "ipv4_addr",
                                     "handle": 3, "flags": ["interval", "timeout"], "timeout": 86400}}]}
    assert m.set_type_from_nft(listing) == m.SetType((m.IPV4,), True, "blocklist")
    concat = [{"set": {"name": "svc", "type": ["ipv4_addr", "inet_service"]}}]
    assert m.set_type_from_nft(concat) == m.SetType((m.IPV4, m.SERVICE), False, "svc")
    assert m.set_type_from_nft([{"set": {"name": "p", "type": "inet_service", "flags": "interval"}}]).interval


IPSET_NET6 = """Name: ctkit-blocklist6
Type: hash:net
Revision: 7
Header: family inet6 hashsize 1024 maxelem 65536 bucketsize 12 initval 0x5ad2bd0b
Size in memory: 1240
References: 1
Number of entries: 1
"""
IPSET_IP = IPSET_NET6.replace("hash:net", "hash:ip").replace("inet6", "inet")
IPSET_PORTS = """Name: ctkit-web_ports
Type: bitmap:port
Revision: 3
Header: range 0-65535
Size in memory: 8296
References: 2
Number of entries: 2
"""


def test_set_type_from_ipset_header():
    assert m.set_type_from_ipset(IPSET_NET6).types == (m.IPV6,) and m.set_type_from_ipset(IPSET_NET6).interval
    ip = m.set_type_from_ipset(IPSET_IP)
    assert ip.types == (m.IPV4,) and not ip.interval
    with pytest.raises(UsageError, match=r"hash:ip \(ipv4_addr\).*no interval flag"):
        m.parse("10.0.0.0/8", ip)  # hash:ip would add every address of the prefix
    ports = m.set_type_from_ipset(IPSET_PORTS)
    assert ports.types == (m.SERVICE,) and m.parse("1000-2000", ports).text() == "1000-2000"
    with pytest.raises(UsageError, match="hash:ip,port"):
        m.set_type_from_ipset(IPSET_IP.replace("hash:ip", "hash:ip,port"))


@pytest.mark.parametrize("name", ["blocklist", "web_ports", "a"])
def test_set_names(name):
    assert m.check_set_name(name) == name


@pytest.mark.parametrize("name", ["", "Blocklist", "x; flush ruleset", "a" * 17, "1x", "x y"])
def test_bad_set_names(name):
    with pytest.raises(UsageError):
        m.check_set_name(name)
