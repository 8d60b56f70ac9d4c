"""examples/maintenance-toggle.json does what its description says, on every backend: with the switch on,
new connections to the web ports are refused (TCP reset) while a connection opened before the switch
keeps carrying data both ways until it ends; switched off, new connections open again.

The same connection is held across both flips (IPv4 to port 80, IPv6 to port 443). A copy of the
example whose maintenance rule has no ct_state (the example before issue 13) resets the held
connection on its next segment: the test tells the two apart.
"""
from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from lab import SERVER4, SERVER6, backend_args, conntrack_list, sock, tcp_listen, tcp_probe
from test_differential import BACKENDS, make_pair

ROOT = Path(__file__).resolve().parent.parent
POLICY = ROOT / "examples" / "maintenance-toggle.json"
TIMEOUT = 2.0


def ctkit(*args: str) -> None:
    proc = subprocess.run([sys.executable, "-m", "ctkit", *args], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr


class Held:
    """One TCP connection from the client namespace to the server's listener, kept open."""

    def __init__(self, client: str, server: str, addr: str, port: int) -> None:
        self.addr, self.port = addr, port
        self.listener = tcp_listen(server, addr, port)
        self.listener.settimeout(TIMEOUT)
        self.client = sock(client, socket.AF_INET6 if ":" in addr else socket.AF_INET, socket.SOCK_STREAM)
        self.client.settimeout(TIMEOUT)
        self.client.connect((addr, port))
        self.server, _ = self.listener.accept()
        self.server.settimeout(TIMEOUT)

    def exchange(self, n: int) -> bool:
        """A request and its answer on the held connection: True when both arrive (False on a reset)."""
        try:
            self.client.sendall(b"request %d\n" % n)
            if self.server.recv(64) != b"request %d\n" % n:
                return False
            self.server.sendall(b"answer %d\n" % n)
            return self.client.recv(64) == b"answer %d\n" % n
        except OSError:  # ConnectionResetError: the kernel's reject answered the segment
            return False

    def close(self) -> None:
        for s in (self.client, self.server, self.listener):
            s.close()


def new_connection(client: str, held: Held) -> str:
    """A new connection to the held connection's listener: open, refused (reset) or timeout."""
    return tcp_probe(client, held.addr, held.port, timeout=0.5)


def established(server: str, port: int, family: str) -> int:
    """ESTABLISHED entries to `port` in the server's conntrack table."""
    listing = conntrack_list(server, "-f", family, "-p", "tcp", "--dport", str(port), "--state", "ESTABLISHED")
    return len(listing.splitlines())


@pytest.mark.parametrize("backend", BACKENDS)
def test_established_connections_drain_while_new_ones_are_refused(lab, backend):
    client, server = make_pair(lab)
    args = ["--netns", server, *backend_args(backend)]
    ctkit("apply", str(POLICY), *args)
    held = [Held(client, server, SERVER4, 80), Held(client, server, SERVER6, 443)]
    try:
        assert [h.exchange(0) for h in held] == [True, True]
        assert [new_connection(client, h) for h in held] == ["open", "open"]
        ctkit("toggle", "maintenance", "on", *args)
        assert new_connection(client, held[0]) == "refused"
        assert new_connection(client, held[1]) == "refused"
        # the connections opened before the switch carry on, in both directions
        assert [h.exchange(i) for i in (1, 2) for h in held] == [True] * 4
        assert (established(server, 80, "ipv4"), established(server, 443, "ipv6")) == (1, 1)
        ctkit("toggle", "maintenance", "off", *args)
        assert [h.exchange(3) for h in held] == [True, True]
        assert new_connection(client, held[0]) == "open"
        assert new_connection(client, held[1]) == "open"
    finally:
        for h in held:
            h.close()


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_switch_without_ct_state_resets_the_held_connection(lab, tmp_path, backend):
    """The control: the example as it was (no ct_state on the maintenance rule) breaks the held connection."""
    client, server = make_pair(lab)
    doc = json.loads(POLICY.read_text())
    rule = doc["chains"]["input"]["rules"][0]
    assert rule["name"] == "maintenance" and rule.pop("ct_state") == ["new"]
    old = tmp_path / "maintenance-without-ct-state.json"
    old.write_text(json.dumps(doc))
    args = ["--netns", server, *backend_args(backend)]
    ctkit("apply", str(old), *args)
    held = Held(client, server, SERVER4, 80)
    try:
        assert held.exchange(0)
        ctkit("toggle", "maintenance", "on", *args)
        assert not held.exchange(1)
    finally:
        held.close()
