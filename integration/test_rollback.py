"""Confirm-or-rollback on a real lock-out: a client namespace holds a TCP control connection to a
server namespace, and a policy that drops it is applied with --confirm-within.

Killing the applying process (kill -9, as a dropped SSH session or an OOM kill would) must not stop
the rollback: the watcher is detached. Without `ctkit confirm` the old policy is back within the
timeout plus a margin (new connections succeed, the held one carries data again); with it, the new
policy stays. Both backends. Assertions are on packets, not on what ctkit prints.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from lab import CLIENT4, SERVER4, accept_peer, tcp_connect, tcp_listen, tcp_session

from ctkit import rollback

PORT = 2222
BACKENDS = (("nft",), ("iptables", "--iptables-variant", "nft"))
CONFIRM = 5  # seconds
MARGIN = 12  # seconds: start-up of the watcher's ctkit, the lock, a loaded 2-core machine


def _policy(tmp_path, name: str, control_open: bool) -> str:
    rules = [{"name": "lo", "iif": "lo", "action": "accept"}]
    if control_open:
        rules = [{"name": "established", "ct_state": ["established", "related"], "action": "accept"},
                 {"name": "control", "protocol": "tcp", "dport": PORT, "action": "accept"}] + rules
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps({"version": 1, "table": "ctkit", "chains": {"input": {"policy": "drop", "rules": rules}}}))
    return str(path)


def _ctkit(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ctkit", *args], capture_output=True, text=True, timeout=timeout)


def _open(client: str) -> bool:
    return tcp_connect(client, SERVER4, PORT, timeout=0.5, src=CLIENT4)


def _wait(cond, seconds: float) -> float | None:
    """Seconds until cond() holds, or None when it did not within `seconds`."""
    start = time.monotonic()
    while time.monotonic() - start < seconds:
        if cond():
            return time.monotonic() - start
        time.sleep(0.2)
    return None


@pytest.fixture
def lockout(pair, tmp_path):
    """(client, server, backend args, policy A (control open), policy B (control dropped), held connection)."""
    client, server = pair
    listener = tcp_listen(server, SERVER4, PORT)
    held = None
    try:
        yield client, server, listener, _policy(tmp_path, "open", True), _policy(tmp_path, "locked", False)
    finally:
        _ctkit("rollback", "-n", server)  # never leave a watcher behind
        armed = rollback.load(server, "ctkit")
        if armed and armed.watcher:
            os.kill(armed.watcher, signal.SIGKILL)
        listener.close()
        if held:
            held.close()


def _hold(client: str, listener):
    conn = tcp_session(client, SERVER4, PORT, timeout=2, src=CLIENT4)
    assert conn is not None, "policy A must let the control connection in"
    peer = accept_peer(listener, timeout=2)
    assert peer is not None
    conn.sendall(b"1")
    assert peer[0].recv(1) == b"1"
    return conn, peer[0]


def _carries(conn, peer, byte: bytes, seconds: float) -> bool:
    conn.sendall(byte)
    peer.settimeout(seconds)
    try:
        return peer.recv(1) == byte
    except OSError:
        return False


@pytest.mark.parametrize("backend", BACKENDS, ids=lambda b: "-".join(b[::2]))
def test_a_killed_apply_still_rolls_back_the_lockout(lockout, backend):
    client, server, listener, open_, locked = lockout
    assert _ctkit("apply", open_, "-n", server, "--backend", *backend).returncode == 0
    conn, peer = _hold(client, listener)
    proc = subprocess.Popen([sys.executable, "-m", "ctkit", "apply", locked, "-n", server, "--backend", *backend,
                             "--confirm-within", str(CONFIRM)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        assert _wait(lambda: not _open(client), 30) is not None, "policy B never took effect"
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the applying command and anything it started in its session
        proc.wait(10)
    assert rollback.load(server, "ctkit") is not None, "the rollback must be armed before the change"
    took = _wait(lambda: _open(client), CONFIRM + MARGIN)
    assert took is not None, f"not rolled back within {CONFIRM + MARGIN} s of the lock-out"
    assert _carries(conn, peer, b"2", 10), "the held control connection must carry data again"
    assert rollback.load(server, "ctkit") is None
    conn.close()
    peer.close()


@pytest.mark.parametrize("backend", BACKENDS, ids=lambda b: "-".join(b[::2]))
def test_confirm_keeps_the_new_policy(lockout, backend):
    client, server, listener, open_, locked = lockout
    assert _ctkit("apply", open_, "-n", server, "--backend", *backend).returncode == 0
    r = _ctkit("apply", locked, "-n", server, "--backend", *backend, "--confirm-within", str(CONFIRM))
    assert r.returncode == 0, r.stderr
    r = _ctkit("confirm", "-n", server)
    assert r.returncode == 0, r.stdout + r.stderr
    assert _wait(lambda: _open(client), CONFIRM + 3) is None, "confirmed: policy B must stay"
    assert _ctkit("confirm", "-n", server).returncode == 1  # nothing armed any more


@pytest.mark.parametrize("backend", BACKENDS, ids=lambda b: "-".join(b[::2]))
def test_rollback_now(lockout, backend):
    client, server, listener, open_, locked = lockout
    assert _ctkit("apply", open_, "-n", server, "--backend", *backend).returncode == 0
    r = _ctkit("apply", locked, "-n", server, "--backend", *backend, "--confirm-within", "600")
    assert r.returncode == 0, r.stderr
    assert not _open(client)
    watcher = rollback.load(server, "ctkit").watcher
    r = _ctkit("rollback", "-n", server)
    assert r.returncode == 0, r.stdout + r.stderr
    assert _open(client), "rolled back: the control port is open again"
    assert _wait(lambda: not os.path.exists(f"/proc/{watcher}"), 5) is not None, "the watcher must exit"
    assert _ctkit("rollback", "-n", server).returncode == 1
