"""Rate limits on real packets, for every backend: a rule-wide bucket, per-source buckets,
and a rate-limited log that leaves the verdict on every packet.

Slow rates (per minute) make the counts exact: within the test no token refills,
so exactly `burst` packets pass. The per-second test asserts only a loose band.
"""
from __future__ import annotations

import json
import socket
import time

import pytest
from lab import CLIENT4, CLIENT_LAN4, SERVER4, sock, udp_server
from test_differential import BACKENDS, apply, make_pair

PORT = 9999


def policy(tmp_path, rule: dict) -> str:
    doc = {"version": 1, "chains": {"input": {"policy": "drop", "rules": [
        {"name": "limited", "protocol": "udp", "dport": PORT, "action": "accept", **rule}]}}}
    path = tmp_path / "limit.json"
    path.write_text(json.dumps(doc))
    return path


def blast(client: str, server_sock: socket.socket, count: int, src: str, interval: float = 0.0) -> int:
    """Send `count` datagrams from src (bounded), return how many arrived."""
    c = sock(client, socket.AF_INET, socket.SOCK_DGRAM)
    try:
        c.bind((src, 0))
        for i in range(count):
            c.sendto(b"%d" % i, (SERVER4, PORT))
            if interval:
                time.sleep(interval)
    finally:
        c.close()
    got = 0
    server_sock.settimeout(0.3)
    for _ in range(count):
        try:
            server_sock.recvfrom(64)
        except OSError:
            break
        got += 1
    return got


@pytest.mark.parametrize("backend", BACKENDS)
def test_one_bucket_for_the_rule(lab, tmp_path, backend):
    client, server = make_pair(lab)
    apply(backend, policy(tmp_path, {"limit": {"rate": 1, "per": "minute", "burst": 3}}), server)
    srv = udp_server(server, SERVER4, PORT)
    try:
        assert blast(client, srv, 10, CLIENT4) == 3
        assert blast(client, srv, 10, CLIENT_LAN4) == 0  # the same bucket, already empty
    finally:
        srv.close()


@pytest.mark.parametrize("backend", BACKENDS)
def test_one_bucket_per_source(lab, tmp_path, backend):
    client, server = make_pair(lab)
    apply(backend, policy(tmp_path, {"limit": {"rate": 1, "per": "minute", "burst": 3, "by": "saddr"}}), server)
    srv = udp_server(server, SERVER4, PORT)
    try:
        assert blast(client, srv, 10, CLIENT4) == 3
        assert blast(client, srv, 10, CLIENT_LAN4) == 3  # another source, its own bucket
        assert blast(client, srv, 10, CLIENT4) == 0
    finally:
        srv.close()


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_limited_log_still_decides_every_packet(lab, tmp_path, backend):
    client, server = make_pair(lab)
    rule = {"action": "drop", "log": {"prefix": "ctkit test: ", "limit": {"rate": 1, "per": "minute", "burst": 2}}}
    apply(backend, policy(tmp_path, rule), server)
    srv = udp_server(server, SERVER4, PORT)
    try:
        assert blast(client, srv, 10, CLIENT4) == 0
    finally:
        srv.close()


@pytest.mark.parametrize("backend", BACKENDS)
def test_rate_lets_through_about_the_configured_rate(lab, tmp_path, backend):
    """20/second, burst 5, offered 100/second for about a second: about 25 pass (loose band)."""
    client, server = make_pair(lab)
    apply(backend, policy(tmp_path, {"limit": {"rate": 20, "per": "second", "burst": 5}}), server)
    srv = udp_server(server, SERVER4, PORT)
    try:
        start = time.monotonic()
        got = blast(client, srv, 100, CLIENT4, interval=0.01)
        elapsed = time.monotonic() - start
        expected = 5 + 20 * elapsed
        print(f"{backend}: {got} of 100 in {elapsed:.2f} s (about {expected:.0f} expected)")
        assert expected * 0.5 <= got <= expected * 1.5 + 5, (got, elapsed)
    finally:
        srv.close()
