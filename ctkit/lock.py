"""One ctkit change at a time per namespace and table.

An apply reads the live toggle states (and, with iptables, the ownership record), builds the
new ruleset and writes it; a `ctkit toggle` or `ctkit set add` that lands in between would be
overwritten by the apply's older reading. So every change through ctkit/service.py holds an
exclusive flock on /run/ctkit/<namespace cookie>/<table>.lock (CTKIT_STATE_DIR moves it) for
the whole read-modify-write. A process that waits longer than the timeout stops with exit 3
and names the holder (its pid and command, written into the lock file). The kernel drops the
lock when the holder exits, however it exits: a killed ctkit never leaves a stale lock.

What this guarantees: ctkit commands on one host never lose each other's changes. What it does
not: a change made by something other than ctkit (nft, iptables, firewalld) is not serialised.
"""
from __future__ import annotations

import contextlib
import fcntl
import os
import time
from typing import Iterator

from ctkit.errors import KernelError
from ctkit.kernel.netns import netns_id

DEFAULT_TIMEOUT = 30.0  # seconds; an apply of a 10,000-rule policy takes well under that
_POLL = 0.05


def state_dir(netns: str | None) -> str:
    """Where ctkit keeps what it knows about one namespace: /run/ctkit/<netns cookie>/."""
    return os.path.join(os.environ.get("CTKIT_STATE_DIR", "/run/ctkit"), netns_id(netns))


def lock_path(netns: str | None, table: str) -> str:
    return os.path.join(state_dir(netns), f"{table}.lock")


def _holder(fd: int) -> str:
    try:
        return os.pread(fd, 200, 0).decode("utf-8", "replace").strip() or "unknown"
    except OSError:
        return "unknown"


@contextlib.contextmanager
def change(netns: str | None, table: str, what: str, timeout: float = DEFAULT_TIMEOUT) -> Iterator[None]:
    """Hold the change lock of `table` in `netns` while the block runs; `what` says who holds it."""
    path = lock_path(netns, table)
    try:
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
    except OSError as exc:
        raise KernelError(f"cannot open ctkit's lock {path}: {exc.strerror} (run as root, or set "
                          "CTKIT_STATE_DIR)") from None
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise KernelError(f"another ctkit change to table {table} is still running after "
                                      f"{timeout:g} s ({_holder(fd)}; lock {path}); try again when it "
                                      "has finished") from None
                time.sleep(_POLL)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()}: ctkit {what}\n".encode(), 0)
        yield
    finally:
        os.close(fd)
