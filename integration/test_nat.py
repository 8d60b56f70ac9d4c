"""NAT on real packets: client -> router -> server in three namespaces, for every backend.

examples/router-nat.json is applied on the router with nft, iptables-nft and
iptables-legacy in turn (a fresh lab each time); the same probes run and must
give the same observations, which must also be what the policy means:
port forwarding (v4 and v6), masquerade and snat seen by the outside client and
in the router's conntrack table, redirect to a local port, and the first packet
deciding a flow's mapping (a rule changed mid-flow leaves the flow alone).
"""
from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
from lab import (
    LAN_SERVER4,
    LAN_SERVER6,
    WAN_CLIENT4,
    WAN_CLIENT6,
    WAN_ROUTER4,
    WAN_ROUTER6,
    accept_peer,
    conntrack_list,
    router_lab,
    sock,
    tcp_listen,
    tcp_session,
    udp_server,
)
from test_differential import BACKENDS, apply

ROOT = Path(__file__).resolve().parent.parent
POLICY = ROOT / "examples" / "router-nat.json"
TIMEOUT = 1.0


def forwarded(listen_ns, listen_addr, listen_port, dial_ns, dial_addr, dial_port, src=None):
    """Dial through the router; (connected, peer address the listener saw) or (False, None)."""
    listener = tcp_listen(listen_ns, listen_addr, listen_port)
    try:
        conn = tcp_session(dial_ns, dial_addr, dial_port, TIMEOUT, src)
        if conn is None:
            return False, None
        with conn:
            got = accept_peer(listener, TIMEOUT)
            if got is None:
                return False, None
            got[0].close()
            return True, got[1][0]
    finally:
        listener.close()


def observe(r) -> dict:
    out = {}
    out["dnat4"] = forwarded(r.server, LAN_SERVER4, 80, r.client, WAN_ROUTER4, 8080)
    out["dnat6"] = forwarded(r.server, LAN_SERVER6, 80, r.client, WAN_ROUTER6, 8080)
    out["no-forward-9090"] = forwarded(r.server, LAN_SERVER4, 9090, r.client, WAN_ROUTER4, 9090)
    out["masquerade4"] = forwarded(r.client, WAN_CLIENT4, 9000, r.server, WAN_CLIENT4, 9000)
    out["masquerade6"] = forwarded(r.client, WAN_CLIENT6, 9000, r.server, WAN_CLIENT6, 9000)
    out["redirect"] = forwarded(r.router, "0.0.0.0", 3129, r.server, WAN_CLIENT4, 80)
    # snat of DNS to a fixed port range: the outside sees the router's address and such a port
    srv = udp_server(r.client, WAN_CLIENT4, 53)
    try:
        c = sock(r.server, socket.AF_INET, socket.SOCK_DGRAM)
        try:
            c.sendto(b"query", (WAN_CLIENT4, 53))
            try:
                _data, peer = srv.recvfrom(512)
                out["snat-dns"] = (peer[0], 20000 <= peer[1] <= 20099)
            except OSError:
                out["snat-dns"] = (None, False)
        finally:
            c.close()
    finally:
        srv.close()
    entries = conntrack_list(r.router, "-p", "tcp", "--dport", "9000")
    out["conntrack-masquerade"] = f"src={LAN_SERVER4}" in entries and f"dst={WAN_ROUTER4}" in entries
    return out


EXPECTED = {
    "dnat4": (True, WAN_CLIENT4),  # the server sees the real client: dnat only
    "dnat6": (True, WAN_CLIENT6),
    "no-forward-9090": (False, None),  # the client has no route to the LAN
    "masquerade4": (True, WAN_ROUTER4),  # the outside sees the router, not 10.1.0.10
    "masquerade6": (True, WAN_ROUTER6),
    "redirect": (True, LAN_SERVER4),  # the router's local port got the connection to "client:80"
    "snat-dns": (WAN_ROUTER4, True),
    "conntrack-masquerade": True,
}


@pytest.mark.parametrize("backend", BACKENDS)
def test_router_nat_on_real_packets(lab, backend):
    r = router_lab(lab)
    apply(backend, POLICY, r.router)
    got = observe(r)
    assert got == EXPECTED, json.dumps(got, indent=1)


def test_masquerade_is_a_natted_conntrack_entry(lab):
    r = router_lab(lab)
    apply("nft", POLICY, r.router)
    listener = tcp_listen(r.client, WAN_CLIENT4, 9000)
    try:
        conn = tcp_session(r.server, WAN_CLIENT4, 9000, TIMEOUT)
        assert conn is not None
        with conn:
            accepted = accept_peer(listener, TIMEOUT)
            assert accepted is not None
            accepted[0].close()
            # original direction from the server, reply direction to the router's wan address
            line = conntrack_list(r.router, "-p", "tcp", "--dport", "9000", "--src-nat").strip()
            assert f"src={LAN_SERVER4} dst={WAN_CLIENT4}" in line, line
            assert f"src={WAN_CLIENT4} dst={WAN_ROUTER4}" in line, line
    finally:
        listener.close()


@pytest.mark.parametrize("backend", BACKENDS)
def test_only_the_first_packet_is_natted(lab, backend, tmp_path):
    """Change the forwarding target mid-flow: the open connection keeps its mapping, new ones take the new rule."""
    r = router_lab(lab)
    apply(backend, POLICY, r.router)
    old = tcp_listen(r.server, LAN_SERVER4, 80)
    new = tcp_listen(r.server, LAN_SERVER4, 81)
    try:
        conn = tcp_session(r.client, WAN_ROUTER4, 8080, TIMEOUT)
        assert conn is not None
        with conn:
            got = accept_peer(old, TIMEOUT)
            assert got is not None
            server_side = got[0]
            with server_side:
                conn.sendall(b"before")
                assert server_side.recv(64) == b"before"
                doc = json.loads(POLICY.read_text())
                doc["nat"][0]["to_port"] = 81
                changed = tmp_path / "router-nat-81.json"
                changed.write_text(json.dumps(doc))
                apply(backend, changed, r.router)
                # the established flow still reaches port 80, both ways
                conn.sendall(b"after")
                assert server_side.recv(64) == b"after"
                server_side.sendall(b"reply")
                assert conn.recv(64) == b"reply"
        # a new flow follows the new rule
        conn2 = tcp_session(r.client, WAN_ROUTER4, 8080, TIMEOUT)
        assert conn2 is not None
        with conn2:
            assert accept_peer(new, TIMEOUT) is not None
            assert accept_peer(old, 0.2) is None
    finally:
        old.close()
        new.close()


def test_without_the_policy_nothing_is_translated(lab):
    """The control: the same probes on the bare router fail, so the test above proves NAT."""
    got = observe(router_lab(lab))
    assert got["dnat4"] == (False, None) and got["masquerade4"] == (False, None)
    assert got["redirect"] == (False, None) and got["snat-dns"][0] == LAN_SERVER4  # one way, untranslated
