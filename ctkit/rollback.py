"""Confirm-or-rollback: an apply that undoes itself unless the operator confirms it in time.

`ctkit apply POLICY --confirm-within N` saves what ctkit owns now (Backend.snapshot: ctkit's own
table or chains, never the whole ruleset) in /run/ctkit/<netns cookie>/rollback-<table>.json, starts
a watcher and only then applies. The watcher is a detached process (its own session: a dropped SSH
session's SIGHUP and a kill -9 of the apply do not reach it) that sleeps until the deadline, then
takes the change lock and restores the saved state, unless `ctkit confirm` removed the file first.
`ctkit rollback` restores it at once. What happened is appended to rollback-<table>.log beside it.

While a rollback is armed, a second `apply --confirm-within` keeps the saved state (the last
confirmed one) and moves the deadline; a plain apply confirms it. The saved state lives under /run:
a reboot forgets it, as it forgets the ruleset itself.
"""
from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Any

from ctkit.errors import KernelError
from ctkit.lock import state_dir as _dir


def state_path(netns: str | None, table: str) -> str:
    return os.path.join(_dir(netns), f"rollback-{table}.json")


@dataclass(frozen=True)
class Armed:
    """A pending rollback, as its state file holds it."""
    path: str
    backend: str
    variant: str
    table: str
    netns: str | None
    deadline: float  # time.time() at which the watcher restores
    token: str  # names this arming: a watcher whose token is gone has nothing to do
    snapshot: str  # Backend.snapshot's text
    watcher: int | None = None  # its pid

    def as_dict(self) -> dict[str, Any]:
        return {"backend": self.backend, "variant": self.variant, "table": self.table, "netns": self.netns,
                "deadline": self.deadline, "token": self.token, "snapshot": self.snapshot, "watcher": self.watcher}


def _write(path: str, data: dict) -> None:
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    tmp = f"{path}.{os.getpid()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(data, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def load(netns: str | None, table: str) -> Armed | None:
    return _read(state_path(netns, table))


def _read(path: str) -> Armed | None:
    try:
        st = os.stat(path)
        if st.st_uid != os.geteuid() or st.st_mode & 0o022:
            return None  # not written by ctkit as this user
        with open(path, encoding="utf-8") as f:
            d = json.load(f)
        return Armed(path, str(d["backend"]), str(d["variant"]), str(d["table"]), d["netns"], float(d["deadline"]),
                     str(d["token"]), str(d["snapshot"]), d.get("watcher"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise KernelError(f"ctkit's rollback state {path} is unreadable ({exc}): remove it to go on") from None


def log(netns: str | None, table: str, text: str) -> None:
    path = os.path.join(_dir(netns), f"rollback-{table}.log")
    with contextlib.suppress(OSError):
        with open(path, "a", encoding="utf-8") as f:
            f.write(f"{time.strftime('%Y-%m-%dT%H:%M:%S%z')} {text}\n")


def last_event(netns: str | None, table: str) -> str | None:
    try:
        with open(os.path.join(_dir(netns), f"rollback-{table}.log"), encoding="utf-8") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    return lines[-1] if lines else None


def arm(backend: str, variant: str, table: str, netns: str | None, snapshot: str, seconds: float) -> Armed:
    """Save `snapshot` (unless a rollback is armed already: its state is the last confirmed one) and
    start the watcher. Call under the change lock, before the change."""
    path = state_path(netns, table)
    old = _read(path)
    if old is not None:
        snapshot = old.snapshot
        _stop(old)
    armed = Armed(path, backend, variant, table, netns, time.time() + seconds, secrets.token_hex(8), snapshot)
    _write(path, armed.as_dict())
    try:
        proc = subprocess.Popen([sys.executable, "-m", "ctkit.rollback", path, armed.token],
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                start_new_session=True, close_fds=True, cwd="/")
    except OSError as exc:
        os.unlink(path)
        raise KernelError(f"cannot start the rollback watcher: {exc.strerror}; nothing was applied") from None
    armed = Armed(**{**armed.__dict__, "watcher": proc.pid})
    _write(path, armed.as_dict())
    log(netns, table, f"armed: rollback at {time.strftime('%H:%M:%S', time.localtime(armed.deadline))} "
                      f"unless confirmed (watcher pid {proc.pid})")
    return armed


def _stop(armed: Armed) -> None:
    if armed.watcher and armed.watcher != os.getpid():  # the watcher itself rolls back: it just exits
        with contextlib.suppress(OSError):
            os.kill(armed.watcher, signal.SIGTERM)


def disarm(netns: str | None, table: str, why: str) -> Armed | None:
    """Forget the armed rollback (confirmed); returns it, or None when none was armed."""
    armed = load(netns, table)
    if armed is None:
        return None
    with contextlib.suppress(FileNotFoundError):
        os.unlink(armed.path)
    log(netns, table, why)
    _stop(armed)
    return armed


def start_clock(armed: Armed, seconds: float) -> Armed:
    """The change is in: the confirmation time counts from now (until now, from arm(), so that a
    killed apply still rolls back)."""
    current = _read(armed.path)
    if current is None or current.token != armed.token:
        return armed
    armed = Armed(**{**current.__dict__, "deadline": time.time() + seconds})
    _write(armed.path, armed.as_dict())
    return armed


def _watch(path: str, token: str) -> int:
    """The watcher: wait for the deadline, then restore unless confirmed (the file is gone or re-armed)."""
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    while True:
        try:
            armed = _read(path)
        except KernelError:
            return 1
        if armed is None or armed.token != token:
            return 0  # confirmed, rolled back by hand, or re-armed with a new watcher
        left = armed.deadline - time.time()
        if left <= 0:
            break
        time.sleep(min(left, 0.5))
    from ctkit import service
    from ctkit.backends import registry
    try:
        service.rollback(armed.table, armed.netns, registry.get(armed.backend, armed.variant), token=token,
                         why="not confirmed in time")
    except Exception as exc:  # noqa: BLE001 - a detached process: the log is where the operator looks
        log(armed.netns, armed.table, f"rollback failed: {type(exc).__name__}: {exc}")
        return 3
    return 0


if __name__ == "__main__":  # the watcher, started by arm()
    sys.exit(_watch(sys.argv[1], sys.argv[2]))
