"""The IR interpreter that decides whether a policy admits a flow."""
from ctkit.audit.admission import Flow, verdict
from ctkit.compile.lower import lower
from ctkit.policy.load import load_document

DOC = {"version": 1, "chains": {
    "input": {"policy": "drop", "rules": [
        {"ct_state": ["established", "related"], "action": "accept"},
        {"iif": "lo", "action": "accept"},
        {"protocol": "tcp", "dport": 22, "saddr": "10.0.0.0/8", "action": "accept"},
        {"jump": "web"},
        {"protocol": "udp", "dport": "5000-5010", "action": "reject"}]},
    "web": {"rules": [{"protocol": "tcp", "dport": [80, 443], "action": "accept"}, {"action": "return"}]}}}
TABLE = lower(load_document(DOC)).table


def v(**kw):
    base = dict(family="ipv4", protocol="tcp", saddr="10.1.2.3", daddr="192.0.2.10", sport=40000, dport=22,
                iif="eth0")
    base.update(kw)
    return verdict(TABLE, "input", Flow(**base))


def test_accepts_and_drops():
    assert v() == "accept"
    assert v(saddr="192.0.2.99") == "drop"
    assert v(dport=443, saddr="192.0.2.99") == "accept"  # through the jump
    assert v(protocol="udp", dport=5005) == "reject"
    assert v(family="ipv6", saddr="2001:db8::1", daddr="2001:db8::10", dport=22) == "drop"
    assert v(ct_state="established", saddr="192.0.2.99", dport=9) == "accept"


def test_unknown_interface_means_unknown():
    # the loopback rule needs the input interface, which conntrack does not keep
    assert v(iif=None, saddr="192.0.2.99", dport=9) == "unknown"
    # a decision before the unknown match stands
    assert v(iif=None, ct_state="established") == "accept"


def test_missing_chain_admits():
    assert verdict(TABLE, "forward", Flow("ipv4", "tcp", "1.1.1.1", "2.2.2.2", 1, 2)) == "accept"


def test_remote_peer_is_known_not_to_be_loopback():
    assert v(iif=None, not_ifaces=("lo",), saddr="192.0.2.99", dport=9) == "drop"
