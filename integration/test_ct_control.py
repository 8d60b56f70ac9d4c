"""Conntrack control on real flows, for every backend: a timeout policy shows its shorter
timeout in the conntrack entry, the zone and the mark are visible in it, a label bit is set,
and the iptables stage creates and removes its nfnetlink_cttimeout objects."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from lab import SERVER4, SERVER6, accept_peer, conntrack_list, tcp_listen, tcp_session, udp_exchange, udp_server
from test_differential import BACKENDS, apply, make_pair

from ctkit.kernel import conntrack as ct
from ctkit.kernel import cttimeout

ROOT = Path(__file__).resolve().parent.parent
DNS = ROOT / "examples" / "dns-short-timeouts.json"


def entry_timeout(line: str) -> int:
    """Seconds left, the third field of `conntrack -L`: 'udp 17 4 src=...'."""
    return int(line.split()[2])


@pytest.mark.parametrize("backend", BACKENDS)
def test_timeout_policy_shortens_the_entry_and_mark_is_set(lab, backend):
    client, server = make_pair(lab)
    apply(backend, DNS, server)
    for addr, family in ((SERVER4, []), (SERVER6, ["-f", "ipv6"])):
        srv = udp_server(server, addr, 53)
        try:
            assert udp_exchange(client, srv, addr, 53) == (True, True)
        finally:
            srv.close()
        (line,) = conntrack_list(server, *family, "-p", "udp", "--dport", "53").strip().splitlines()
        assert 0 < entry_timeout(line) <= 5, line  # replied: 5 s (the host's default is 120 for a stream)
        assert "mark=83" in line, line
    listener = tcp_listen(server, SERVER4, 53)
    try:
        conn = tcp_session(client, SERVER4, 53)
        assert conn is not None
        with conn:
            accepted = accept_peer(listener)
            assert accepted is not None
            with accepted[0]:  # held open: the flow stays ESTABLISHED
                line = conntrack_list(server, "-p", "tcp", "--dport", "53").strip().splitlines()[0]
                assert "ESTABLISHED" in line and 0 < entry_timeout(line) <= 30, line  # not 432000
    finally:
        listener.close()


@pytest.mark.parametrize("backend", BACKENDS)
def test_zone_and_label_are_visible_in_the_entry(lab, tmp_path, backend):
    client, server = make_pair(lab)
    doc = {"version": 1, "zones": [{"name": "mdns", "zone": 7, "protocol": "udp", "ports": [5353]}],
           "chains": {"input": {"rules": [{"name": "label", "protocol": "udp", "dport": 5353, "ct_label_set": 3,
                                           "action": "accept"}]}}}
    path = tmp_path / "zone.json"
    path.write_text(json.dumps(doc))
    apply(backend, path, server)
    srv = udp_server(server, SERVER4, 5353)
    try:
        assert udp_exchange(client, srv, SERVER4, 5353) == (True, True)
    finally:
        srv.close()
    out = conntrack_list(server, "-p", "udp", "--dport", "5353", "-w", "7")
    assert "zone=7" in out, out
    # conntrack -L prints labels only by the names of /etc/xtables/connlabel.conf: read the bits
    labels = [labels for dport, zone, labels in ct.rows(server, columns=("dport", "zone", "labels"))
              if dport == 5353 and zone == 7]
    assert labels and 3 in labels[0], labels


@pytest.mark.parametrize("variant", ("nft", "legacy"))
def test_iptables_timeout_objects_follow_the_policy(lab, variant):
    from ctkit import pipeline
    from ctkit.backends.iptables import generate as ipt_backend
    from ctkit.backends.iptables import kernel as ipt_kernel
    _client, server = make_pair(lab)
    foreign = "other"  # another program's object: never touched
    cttimeout.put(foreign, "ipv4", "udp", (("unreplied", 9),), server)
    rs = ipt_backend.generate(pipeline.compile_file(DNS).plan)
    wanted = {t.name for doc in (rs.ipv4, rs.ipv6) for t in doc.timeouts}
    assert len(wanted) == 4
    apply(f"iptables-{variant}", DNS, server)
    assert set(cttimeout.names(server)) == wanted | {foreign}
    ipt_kernel.remove("CTKIT-", server, variant)
    assert cttimeout.names(server) == [foreign]
