"""Confirm-or-rollback without a kernel: the state file, re-arming, confirm, and the watcher's decision.

The watcher process is not started here (subprocess.Popen is replaced); integration/test_rollback.py
runs the real one against a real lock-out.
"""
from __future__ import annotations

import os
import stat
import time

import pytest

from ctkit import lock, rollback, service
from ctkit.backends import registry


class Started:
    pid = 4242424  # no such process: SIGTERM to it fails quietly


@pytest.fixture
def state(tmp_path, monkeypatch):
    monkeypatch.setenv("CTKIT_STATE_DIR", str(tmp_path))
    monkeypatch.setattr(lock, "netns_id", lambda netns: f"test-{netns}")
    started = []
    monkeypatch.setattr(rollback.subprocess, "Popen", lambda argv, **kw: started.append(argv) or Started())
    return started


class Restoring:
    name = "fake"
    variant = "auto"

    def __init__(self):
        self.restored = []

    def restore(self, table, snapshot, netns):
        self.restored.append((table, snapshot, netns))
        return f"fake {table} as saved"


def test_arm_writes_a_private_state_file_and_starts_a_detached_watcher(state):
    armed = rollback.arm("fake", "auto", "ctkit", "lab", "BEFORE", 30)
    assert os.path.exists(armed.path) and stat.S_IMODE(os.stat(armed.path).st_mode) == 0o600
    assert rollback.load("lab", "ctkit").snapshot == "BEFORE"
    assert state[0][-2:] == [armed.path, armed.token] and state[0][1:3] == ["-m", "ctkit.rollback"]
    assert armed.watcher == Started.pid and 29 < armed.deadline - time.time() <= 30


def test_a_second_arming_keeps_the_last_confirmed_state(state):
    rollback.arm("fake", "auto", "ctkit", "lab", "CONFIRMED", 30)
    again = rollback.arm("fake", "auto", "ctkit", "lab", "UNCONFIRMED", 60)
    assert again.snapshot == "CONFIRMED" and rollback.load("lab", "ctkit").token == again.token


def test_confirm_drops_the_rollback_and_says_so_once(state):
    rollback.arm("fake", "auto", "ctkit", "lab", "BEFORE", 30)
    assert service.confirm("ctkit", "lab").done
    assert rollback.load("lab", "ctkit") is None
    second = service.confirm("ctkit", "lab")
    assert not second.done and "last:" in second.message and "confirmed" in second.message


def test_the_watcher_restores_at_the_deadline_unless_its_arming_is_gone(state, monkeypatch):
    backend = Restoring()
    monkeypatch.setitem(registry._FACTORIES, "fake", lambda variant: backend)
    old = rollback.arm("fake", "auto", "ctkit", "lab", "FIRST", 30)
    new = rollback.arm("fake", "auto", "ctkit", "lab", "ignored", 0)  # re-armed: the old watcher's token is gone
    assert rollback._watch(old.path, old.token) == 0 and backend.restored == []
    assert rollback._watch(new.path, new.token) == 0
    assert backend.restored == [("ctkit", "FIRST", "lab")]
    assert rollback.load("lab", "ctkit") is None
    assert "not confirmed in time: fake ctkit as saved" in rollback.last_event("lab", "ctkit")


def test_rollback_by_hand_uses_the_backend_that_applied(state, monkeypatch):
    backend = Restoring()
    monkeypatch.setitem(registry._FACTORIES, "fake", lambda variant: backend)
    assert not service.rollback("ctkit", "lab").done
    rollback.arm("fake", "auto", "ctkit", "lab", "BEFORE", 600)
    result = service.rollback("ctkit", "lab")
    assert result.done and result.message == "rolled back: fake ctkit as saved"
    assert backend.restored == [("ctkit", "BEFORE", "lab")]


def test_a_state_file_others_can_write_is_not_trusted(state):
    armed = rollback.arm("fake", "auto", "ctkit", "lab", "BEFORE", 30)
    os.chmod(armed.path, 0o666)
    assert rollback.load("lab", "ctkit") is None
