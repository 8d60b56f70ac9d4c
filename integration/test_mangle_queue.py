"""Queue and mangle on real packets: NFQUEUE with and without bypass when nobody listens,
the TCP MSS of a real SYN clamped on its way through a router, DSCP as the receiver sees it,
and the packet mark saved into the conntrack entry."""
from __future__ import annotations

import json
import socket
import subprocess
import sys

import pytest
from lab import (
    LAN_SERVER4,
    SERVER4,
    WAN_ROUTER4,
    accept_peer,
    conntrack_list,
    router_lab,
    run,
    sock,
    tcp_listen,
    tcp_session,
    udp_exchange,
    udp_server,
)
from test_differential import BACKENDS, apply, make_pair

from ctkit.errors import KernelError


def write(tmp_path, doc: dict):
    path = tmp_path / "policy.json"
    path.write_text(json.dumps({"version": 1, **doc}))
    return path


def nft_has_queue(lab) -> bool:
    """CONFIG_NFT_QUEUE is a kernel option of its own; this test machine's 6.18 lacks it."""
    from lab import run
    ns = lab.netns("q")
    return run(ns, "nft", "add table inet q; add chain inet q c; add rule inet q c queue num 0 bypass",
               check=False).returncode == 0


@pytest.mark.parametrize("backend", BACKENDS)
def test_queue_without_listener_bypass_passes_and_no_bypass_drops(lab, tmp_path, backend):
    client, server = make_pair(lab)
    policy = write(tmp_path, {"chains": {"input": {"rules": [
        {"name": "bypass", "protocol": "udp", "dport": 6000, "action": "queue", "queue": {"num": 3, "bypass": True}},
        {"name": "strict", "protocol": "udp", "dport": 6001, "action": "queue", "queue": {"num": 4}},
        {"name": "balanced", "protocol": "udp", "dport": 6002, "action": "queue",
         "queue": {"num": "5-7", "bypass": True}}]}}})
    if backend == "nft" and not nft_has_queue(lab):
        with pytest.raises(KernelError):
            apply(backend, policy, server)  # the kernel says no; nothing half-applied
        pytest.skip("this kernel has no nft queue support (CONFIG_NFT_QUEUE); iptables' NFQUEUE is tested")
    apply(backend, policy, server)
    results = {}
    for port in (6000, 6001, 6002):
        srv = udp_server(server, SERVER4, port)
        try:
            results[port] = udp_exchange(client, srv, SERVER4, port, timeout=0.5)[0]
        finally:
            srv.close()
    assert results == {6000: True, 6001: False, 6002: True}


@pytest.mark.parametrize("backend", BACKENDS)
def test_mss_is_clamped_on_a_real_syn(lab, tmp_path, backend):
    r = router_lab(lab)
    policy = write(tmp_path, {
        "nat": [{"name": "fwd", "type": "dnat", "iif": "wan0", "protocol": "tcp", "dport": 8080,
                 "to_addr": LAN_SERVER4, "to_port": 80}],
        "chains": {"forward": {"rules": [{"name": "clamp", "protocol": "tcp", "mss": 1000}]}}})
    apply(backend, policy, r.router)
    listener = tcp_listen(r.server, LAN_SERVER4, 80)
    try:
        conn = tcp_session(r.client, WAN_ROUTER4, 8080)
        assert conn is not None
        with conn:
            accepted = accept_peer(listener)
            assert accepted is not None
            with accepted[0] as s:
                # the server sends segments no larger than the MSS the client's SYN announced, as clamped
                mss = s.getsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG)
        assert 0 < mss <= 1000, mss  # unclamped it would be 1460 (veth MTU 1500)
    finally:
        listener.close()


def _received_tos(server: str, client: str, port: int) -> int | None:
    srv = udp_server(server, SERVER4, port)
    try:
        srv.setsockopt(socket.IPPROTO_IP, socket.IP_RECVTOS, 1)
        c = sock(client, socket.AF_INET, socket.SOCK_DGRAM)
        try:
            c.sendto(b"voice", (SERVER4, port))
        finally:
            c.close()
        try:
            _data, ancdata, _flags, _addr = srv.recvmsg(64, socket.CMSG_SPACE(4))
        except OSError:
            return None
        for level, kind, data in ancdata:
            if level == socket.IPPROTO_IP and kind == socket.IP_TOS:
                return data[0]
        return None
    finally:
        srv.close()


@pytest.mark.parametrize("backend", BACKENDS)
def test_dscp_and_mark_reach_the_receiver_and_the_entry(lab, tmp_path, backend):
    client, server = make_pair(lab)
    policy = write(tmp_path, {"chains": {"prerouting": {"rules": [
        {"name": "voice", "protocol": "udp", "dport": 5060, "dscp": "ef", "mark_set": 16, "connmark": "save"}]}}})
    apply(backend, policy, server)
    assert _received_tos(server, client, 5060) == 46 << 2  # EF in the upper six bits
    assert _received_tos(server, client, 5061) == 0  # other ports untouched
    assert "mark=16" in conntrack_list(server, "-p", "udp", "--dport", "5060")


def test_a_kernel_refusal_names_the_rule(lab, tmp_path):
    """On a kernel without nft queue the refusal named no rule (libnftables prints the buffer's first
    line under the error): now the apply says which policy rule, fresh and as an incremental change."""
    if nft_has_queue(lab):
        pytest.skip("this kernel has nft queue support: nothing to refuse")
    ns = lab.netns("qref")
    first = write(tmp_path, {"chains": {"input": {"rules": [
        {"name": "ssh", "protocol": "tcp", "dport": 22, "action": "accept"}]}}})
    queued = tmp_path / "queued.json"
    queued.write_text(json.dumps({"version": 1, "chains": {"input": {"rules": [
        {"name": "ssh", "protocol": "tcp", "dport": 22, "action": "accept"},
        {"name": "ids", "protocol": "udp", "dport": 5000, "action": "queue", "queue": {"num": 3}}]}}}))

    def apply_cli(path) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "ctkit", "apply", str(path), "-n", ns], capture_output=True,
                              text=True, timeout=120)
    fresh = apply_cli(queued)
    assert fresh.returncode == 3 and "refused by the kernel at rule ids" in fresh.stderr, fresh.stderr
    assert "table inet ctkit" not in run(ns, "nft", "list", "tables").stdout  # nothing half-applied
    assert apply_cli(first).returncode == 0
    incremental = apply_cli(queued)
    assert incremental.returncode == 3 and "at rule ids" in incremental.stderr, incremental.stderr
    assert "ssh" in run(ns, "nft", "list", "table", "inet", "ctkit").stdout
