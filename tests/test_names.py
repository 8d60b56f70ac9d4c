"""ctkit.names: every name ctkit writes into the kernel parses back to what it was made from."""
from hypothesis import given
from hypothesis import strategies as st

from ctkit import names
from ctkit.ownership import check_prefix

IDENT = st.from_regex(r"[a-z][a-z0-9_]{0,10}", fullmatch=True)
TABLE = st.from_regex(r"ctkit[a-z0-9_]{0,11}", fullmatch=True)


@given(IDENT, st.one_of(st.none(), st.text(alphabet="abc :/-", min_size=1, max_size=20)))
def test_rule_comment_gives_back_its_rule_id(rule_id, comment):
    text = names.rule_comment(rule_id, comment)
    assert names.rule_id(text) == rule_id
    assert names.rule_id(text, {rule_id}) == rule_id
    assert names.rule_id(text, {rule_id + "x"}) is None


def test_rule_comment_literal():
    assert names.rule_comment("input/2", "ssh: office") == "input/2: ssh: office"
    assert names.rule_id("input/2: ssh: office") == "input/2"
    assert names.rule_id(None) is None and names.rule_id("") is None


@given(IDENT, st.booleans())
def test_toggle_marker_round_trip(name, policy_on):
    text = names.toggle_comment(name, policy_on)
    assert names.parse_toggle_comment(text) == (name, policy_on)
    assert names.toggle_marker_in(f"-m comment --comment \"{text}\"", name) is policy_on
    assert names.toggle_marker_in(f"-m comment --comment \"{text}\"", name + "x") is None


def test_toggle_marker_literal():
    assert names.toggle_comment("maint", False) == "toggle/maint: policy off"
    assert names.parse_toggle_comment("toggle/maint: policy off") == ("maint", False)
    assert names.parse_toggle_comment("toggle/maint") == ("maint", None)
    assert names.parse_toggle_comment("input/1: toggle/maint") is None


@given(TABLE, IDENT, st.integers(0, 10_000))
def test_switch_chain_round_trip(table, toggle, k):
    prefix = names.chain_prefix(table)
    assert check_prefix(prefix) == prefix
    switch, body = names.toggle_chain_names(prefix, toggle, k)
    assert names.parse_switch_chain(prefix, switch) == (toggle, k)
    assert names.is_switch_chain(prefix, switch) and not names.is_switch_chain(prefix, body)
    assert names.body_of_switch(prefix, switch) == body
    assert names.parse_switch_chain(prefix, body) is None


def test_iptables_names_literal():
    assert names.chain_prefix("ctkit_lab") == "CTKIT_LAB-"
    assert names.ipset_name("CTKIT-", "blocklist") == "ctkit-blocklist"
    assert names.toggle_chain_names("CTKIT-", "maint", 0) == ("CTKIT-TG-maint-0", "CTKIT-TR-maint-0")
    assert names.parse_switch_chain("CTKIT-", "CTKIT-TG-maint-x") is None
    # four characters: all iptables-save prints of --timeout (tests/test_vocabulary.py holds ktkx too)
    assert names.timeout_name("ctkit", "dns_udp", "ipv6") == "ktkx"
    assert names.timeout_name("ctkit", "dns_udp", "ipv4") == "kzel"
