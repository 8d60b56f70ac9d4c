"""Network namespaces: enter one for the duration of a block.

setns(2) moves only the calling thread, so `entered()` saves the thread's
current namespace and restores it afterwards. Sockets (netlink, libnftables
contexts) created inside the block stay bound to the target namespace for
their whole life, which is why a libnftables context must be created after
entering. pyroute2 does the setns; ctkit keeps no global namespace stack.
"""
from __future__ import annotations

import contextlib
import os
from typing import Iterator

from pyroute2 import netns as _pr_netns

from ctkit.errors import KernelError, UsageError

NETNS_RUN_DIR = "/run/netns"


def netns_path(name: str) -> str:
    """Path of a namespace given by name (ip netns), path, or 'pid:N'."""
    if name.startswith("pid:"):
        return f"/proc/{name[4:]}/ns/net"
    if "/" in name:
        return name
    return os.path.join(NETNS_RUN_DIR, name)


def exists(name: str) -> bool:
    return os.path.exists(netns_path(name))


@contextlib.contextmanager
def entered(name: str | None) -> Iterator[None]:
    """Run the block inside network namespace `name` (None: stay where we are)."""
    if not name:
        yield
        return
    path = netns_path(name)
    try:
        target = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        known = ", ".join(sorted(_pr_netns.listnetns())) or "none"
        raise UsageError(f"network namespace {name!r} does not exist (known: {known})") from None
    except PermissionError:
        raise KernelError(f"cannot open network namespace {name!r}: permission denied (run as root)") from None
    saved = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        try:
            _pr_netns.setns(target, flags=0)
        except OSError as exc:
            raise KernelError(f"cannot enter network namespace {name!r}: {os.strerror(exc.errno or 1)}"
                              " (needs CAP_SYS_ADMIN: run as root)") from None
        try:
            yield
        finally:
            _pr_netns.setns(saved, flags=0)
    finally:
        os.close(target)
        os.close(saved)
