"""Named sets at scale: members from an elements_file (block-list format), no fixed element cap, each
member once, and ipset's maxelem from the size (issue 12)."""
from __future__ import annotations

import ipaddress
import json
import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ctkit.backends.iptables import generate as iptables
from ctkit.backends.iptables import ipset
from ctkit.backends.nft import generate as nft
from ctkit.backends.nft import text as nft_text
from ctkit.compile.lower import lower
from ctkit.errors import CompileError, PolicyError
from ctkit.policy import build_sets
from ctkit.policy.load import load_file, load_text
from ctkit.policy.model import SetAddress


def write(tmp: Path, sets: dict, name: str = "policy.json") -> Path:
    path = tmp / name
    path.write_text(json.dumps({"version": 1, "sets": sets, "chains": {"input": {"policy": "accept", "rules": [
        {"name": f"block-{s}", "saddr" if body["type"] != "inet_service" else "dport": f"@{s}",
         **({"protocol": "tcp"} if body["type"] == "inet_service" else {}), "action": "drop"}
        for s, body in sets.items()]}}}))
    return path


def texts(policy, name: str) -> list[str]:
    s = next(s for s in lower(policy).table.sets if s.name == name)
    return [" . ".join(m.parts) for m in s.members]


def problems(path: Path) -> list:
    with pytest.raises(PolicyError) as info:
        load_file(path)
    return info.value.problems


BLOCKLIST = """\
#
# firehol_level1 (a block list as people download it)
#
10.0.0.1
10.0.0.2   # a comment after a member
\t10.1.0.0/16\t

192.0.2.0/24
10.0.0.1
"""


def test_members_come_from_a_file_next_to_the_policy(tmp_path, monkeypatch):
    (tmp_path / "lists").mkdir()
    (tmp_path / "lists" / "block.netset").write_text(BLOCKLIST)
    path = write(tmp_path, {"block": {"type": "ipv4_addr", "interval": True, "elements": ["203.0.113.9", "10.0.0.2"],
                                      "elements_file": "lists/block.netset"}})
    elsewhere = tmp_path / "other"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # relative to the policy file, not to the current directory
    policy = load_file(path)
    # inline first, then the file's, each once (nft refuses an element given twice)
    assert texts(policy, "block") == ["203.0.113.9", "10.0.0.2", "10.0.0.1", "10.1.0.0/16", "192.0.2.0/24"]
    assert policy.sets[0].elements_file == str(tmp_path / "lists" / "block.netset")
    text = nft_text.render(nft.generate(lower(policy)))
    assert 'elements = { 203.0.113.9 comment "policy", 10.0.0.2 comment "policy", 10.0.0.1 comment "policy", ' \
           '10.1.0.0/16 comment "policy", 192.0.2.0/24 comment "policy" }' in text


def test_the_forms_downloaded_lists_come_in(tmp_path):
    """Spamhaus DROP's ; comments, Windows line ends and a byte order mark."""
    (tmp_path / "drop.txt").write_bytes("\ufeff; Spamhaus DROP List\r\n1.10.16.0/20 ; SBL256894\r\n"
                                        "2.56.192.0/22 ; SBL459831\r\n10.0.0.1\r\n".encode())
    path = write(tmp_path, {"drop": {"type": "ipv4_addr", "interval": True, "elements_file": "drop.txt"}})
    assert texts(load_file(path), "drop") == ["1.10.16.0/20", "2.56.192.0/22", "10.0.0.1"]


def test_an_absolute_path_and_ipv6_and_ports(tmp_path):
    (tmp_path / "v6.txt").write_text("2001:db8::1\n2001:db8:1::/48 # net\n")
    (tmp_path / "ports.txt").write_text("22\n8000-8100\n")
    path = write(tmp_path, {"v6": {"type": "ipv6_addr", "interval": True, "elements_file": str(tmp_path / "v6.txt")},
                            "ports": {"type": "inet_service", "interval": True, "elements_file": "ports.txt"}})
    policy = load_file(path)
    assert texts(policy, "v6") == ["2001:db8::1", "2001:db8:1::/48"]
    assert texts(policy, "ports") == ["22", "8000-8100"]


def test_load_text_reads_relative_to_the_base_it_is_given(tmp_path):
    (tmp_path / "b.netset").write_text("10.0.0.1\n")
    doc = json.dumps({"version": 1, "sets": {"b": {"type": "ipv4_addr", "elements_file": "b.netset"}}})
    assert texts(load_text(doc, "<api>", base=tmp_path), "b") == ["10.0.0.1"]


def test_bad_lines_are_named_by_file_and_line_and_secrets_are_not_shown(tmp_path):
    listing = tmp_path / "bad.netset"
    listing.write_text("10.0.0.1\nroot:$6$secret-hash:19000:0:99999:7:::\n1.2.3\n10.0.0.0/8\n::1\n10.0.0.1-10.0.0.9\n")
    found = problems(write(tmp_path, {"b": {"type": "ipv4_addr", "elements_file": "bad.netset"}}))
    assert [(p.source, p.line, p.pointer) for p in found] == [(str(listing), n, "/sets/b/elements_file")
                                                             for n in (2, 3, 4, 5, 6)]
    rendered = "\n".join(p.render() for p in found)
    assert "secret-hash" not in rendered and "19000" not in rendered
    assert "'1.2.3' is not an IPv4 or IPv6 address" in rendered
    assert "no interval flag" in rendered and "not of type ipv4_addr" in rendered


def test_a_file_of_many_bad_lines_reports_a_few_and_stops(tmp_path):
    (tmp_path / "bad.netset").write_text("10.0.0.1\n" + "x\n" * 100_000)
    found = problems(write(tmp_path, {"b": {"type": "ipv4_addr", "elements_file": "bad.netset"}}))
    most = build_sets.MAX_FILE_PROBLEMS
    assert len(found) == most + 1 and [p.line for p in found[:most]] == list(range(2, most + 2))
    assert found[-1].line == most + 1 and f"was not read after line {most + 1}" in found[-1].message


@pytest.mark.parametrize("make, words", [
    (lambda p: None, "No such file"),
    (lambda p: p.mkdir(), "a directory, not a regular file"),
    (lambda p: os.mkfifo(p), "a FIFO, not a regular file"),
    (lambda p: p.symlink_to("/dev/zero"), "a device, not a regular file"),
    (lambda p: p.write_bytes(b"\xff\xfe"), "not UTF-8"),
])
def test_a_file_that_cannot_be_a_list_is_refused_before_it_is_read(tmp_path, make, words):
    make(tmp_path / "list")
    (found,) = problems(write(tmp_path, {"b": {"type": "ipv4_addr", "elements_file": "list"}}))
    assert found.pointer == "/sets/b/elements_file" and words in found.message


def test_a_file_larger_than_the_limit_is_refused(tmp_path):
    with open(tmp_path / "big", "wb") as f:  # sparse: takes no disk
        f.truncate(build_sets.MAX_ELEMENTS_FILE_BYTES + 1)
    (found,) = problems(write(tmp_path, {"b": {"type": "ipv4_addr", "elements_file": "big"}}))
    assert f"ctkit reads at most {build_sets.MAX_ELEMENTS_FILE_BYTES}" in found.message


def test_a_concatenation_takes_no_file(tmp_path):
    (tmp_path / "l").write_text("10.0.0.1\n")
    path = tmp_path / "p.json"
    path.write_text(json.dumps({"version": 1, "sets": {"svc": {"type": ["ipv4_addr", "inet_service"],
                                                                "elements_file": "l"}}}))
    (found,) = problems(path)
    assert found.pointer == "/sets/svc/elements_file" and "concatenation" in found.message


def test_no_fixed_cap_on_inline_elements(tmp_path):
    """The schema capped elements at 65,536; a policy's own limit on values (2,000,000 as JSON) is the bound now."""
    n = 100_000
    path = write(tmp_path, {"b": {"type": "ipv4_addr", "elements": [f"10.{i >> 16}.{(i >> 8) & 255}.{i & 255}"
                                                                    for i in range(n)]}})
    policy = load_file(path)
    assert len(policy.sets[0].members) == n


def test_ipset_maxelem_follows_the_size(tmp_path):
    n = 100_000
    (tmp_path / "b.netset").write_text("".join(f"10.{i >> 16}.{(i >> 8) & 255}.{i & 255}\n" for i in range(n)))
    (tmp_path / "s.netset").write_text("10.0.0.1\n")
    policy = load_file(write(tmp_path, {"big": {"type": "ipv4_addr", "elements_file": "b.netset"},
                                        "small": {"type": "ipv4_addr", "elements_file": "s.netset"}}))
    big, small = iptables.ipsets(lower(policy).table, "ipv4")
    assert len(big.elements) == n
    # twice the declared members, rounded up to a power of two: room for run-time members
    assert ipset.declaration(big)[0] == "create ctkit-big hash:ip family inet hashsize 65536 maxelem 262144"
    assert ipset.declaration(small)[0] == "create ctkit-small hash:ip family inet"  # ipset's default 65536
    assert ipset.maxelem(32768) is None and ipset.maxelem(32769) == 131072 and ipset.maxelem(0) is None


@settings(max_examples=2000, deadline=None)
@given(st.one_of(
    st.text(alphabet="0123456789./ x", max_size=20),
    st.builds(lambda a, b, c, d, n: f"{a}.{b}.{c}.{d}" + (f"/{n}" if n is not None else ""),
              *[st.integers(0, 300)] * 4, st.one_of(st.none(), st.integers(0, 40)))))
def test_the_fast_ipv4_reading_agrees_with_ipaddress(text):
    """The fast path for block-list lines takes only what ipaddress takes, as the same member."""
    fast = build_sets._fast_ipv4(text)
    if fast is None:
        return  # ipaddress decides (and words the problem)
    net = ipaddress.ip_network(text, strict=True)
    assert fast == SetAddress.of(net) and str(fast) == (str(net.network_address) if not fast.is_prefix
                                                        else str(net))


@pytest.mark.parametrize("members, words", [
    (["10.0.0.0/8", "10.1.0.0/16"], "10.1.0.0/16 overlaps 10.0.0.0/8"),
    (["192.0.2.0/24", "198.51.100.7", "192.0.2.9"], "192.0.2.9 overlaps 192.0.2.0/24"),
    (["10.0.0.1-10.0.0.9", "10.0.0.0/30"], "10.0.0.1-10.0.0.9 overlaps 10.0.0.0/30"),
])
def test_overlapping_members_of_an_interval_set_are_nfts_compile_error(tmp_path, members, words):
    """nft refuses them as 'conflicting intervals specified', pointing at no line of the policy; ipset's
    hash:net takes them, so iptables compiles the same policy."""
    (tmp_path / "l.netset").write_text("\n".join(members) + "\n")
    policy = load_file(write(tmp_path, {"b": {"type": "ipv4_addr", "interval": True, "elements_file": "l.netset"}}))
    with pytest.raises(CompileError) as info:
        nft.generate(lower(policy))
    assert info.value.backend == "nft" and info.value.where == "/sets/b" and words in str(info.value)
    (ipv4,) = iptables.ipsets(lower(policy).table, "ipv4")
    assert len(ipv4.elements) == len(members)


def test_members_that_only_touch_do_not_overlap(tmp_path):
    (tmp_path / "l.netset").write_text("10.0.0.0/25\n10.0.0.128/25\n10.0.1.0\n")
    policy = load_file(write(tmp_path, {"b": {"type": "ipv4_addr", "interval": True,
                                              "elements": ["10.0.2.0/24", "10.0.3.0-10.0.3.255"],
                                              "elements_file": "l.netset"}}))
    nft.generate(lower(policy))  # accepted
    (tmp_path / "p.netset").write_text("1000-1999\n2000\n2001-2999\n")
    ports = load_file(write(tmp_path, {"p": {"type": "inet_service", "interval": True, "elements_file": "p.netset"}}))
    nft.generate(lower(ports))
    (tmp_path / "p.netset").write_text("1000-1999\n1999\n")
    with pytest.raises(CompileError, match="1999 overlaps 1000-1999"):
        nft.generate(lower(load_file(write(tmp_path, {"p": {"type": "inet_service", "interval": True,
                                                           "elements_file": "p.netset"}}))))
