"""Network namespaces: enter one for the duration of a block.

setns(2) moves only the calling thread, so `entered()` saves the thread's
current namespace and restores it afterwards. Sockets (netlink, libnftables
contexts) created inside the block stay bound to the target namespace for
their whole life, which is why a libnftables context must be created after
entering. ctkit keeps no global namespace stack.

setns itself is one system call: os.setns on Python >= 3.12, libc's setns
through ctypes before that. pyroute2 (used for links and addresses) is not
imported here: importing it costs about 225 ms, measured on the project's
machines, which is most of the time budget of `ctkit ct count`.
"""
from __future__ import annotations

import contextlib
import os
import socket
import struct
from typing import Iterator

from ctkit.errors import KernelError, UsageError
from ctkit.terminal import suggest

NETNS_RUN_DIR = "/run/netns"
CLONE_NEWNET = 0x40000000


def _setns(fd: int) -> None:
    if hasattr(os, "setns"):
        os.setns(fd, CLONE_NEWNET)
        return
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def known() -> list[str]:
    try:
        return sorted(os.listdir(NETNS_RUN_DIR))
    except OSError:
        return []


def netns_path(name: str) -> str:
    """Path of a namespace given by name (ip netns), path, or 'pid:N'."""
    if name.startswith("pid:"):
        return f"/proc/{name[4:]}/ns/net"
    if "/" in name:
        return name
    return os.path.join(NETNS_RUN_DIR, name)


@contextlib.contextmanager
def entered(name: str | None) -> Iterator[None]:
    """Run the block inside network namespace `name` (None: stay where we are)."""
    if name is None:
        yield
        return
    if not name.strip():
        # an unset shell variable must never mean "the host's own namespace"
        raise UsageError("the network namespace name is empty (an unset variable?): name one, or give none "
                         "to use the current namespace")
    path = netns_path(name)
    try:
        target = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        # never the list of every namespace on the host (hundreds on a container host): the closest
        # name when one is close, and the command that lists them
        if name.startswith("pid:") or "/" in name:
            raise UsageError(f"network namespace {name!r} does not exist (no {path})") from None
        close = suggest(name, known())
        raise UsageError(f"network namespace {name!r} does not exist ("
                         + (f"did you mean {close!r}? " if close else "") + "`ip netns list` shows them)") from None
    except PermissionError:
        raise KernelError(f"cannot open network namespace {name!r}: permission denied (run as root)") from None
    saved = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        try:
            _setns(target)
        except OSError as exc:
            raise KernelError(f"cannot enter network namespace {name!r}: {os.strerror(exc.errno or 1)}"
                              " (needs CAP_SYS_ADMIN: run as root)") from None
        try:
            yield
        finally:
            _setns(saved)
    finally:
        os.close(target)
        os.close(saved)


_SO_NETNS_COOKIE = getattr(socket, "SO_NETNS_COOKIE", 71)  # asm-generic value (Linux >= 5.14)


def netns_id(netns: str | None) -> str:
    """A name for the namespace that no other namespace gets while the machine is up (its cookie),
    for state ctkit keeps per namespace under /run/ctkit (locks, the iptables ownership record)."""
    with entered(netns):
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
                raw = s.getsockopt(socket.SOL_SOCKET, _SO_NETNS_COOKIE, 8)
            if len(raw) == 8:
                return f"cookie-{struct.unpack('=Q', raw)[0]}"
        except OSError:
            pass
        st = os.stat("/proc/thread-self/ns/net")
    return f"inode-{st.st_dev}-{st.st_ino}"


@contextlib.contextmanager
def scratch(prefix: str = "ctkit-scratch") -> Iterator[str]:
    """A new, empty network namespace for the block (named under /run/netns), removed afterwards
    however the block ends: where ctkit loads files to see what they would make of a kernel."""
    from pyroute2 import netns as pr_netns
    name = f"{prefix}-{os.getpid()}-{os.urandom(3).hex()}"
    try:
        pr_netns.create(name)
    except OSError as exc:
        raise KernelError(f"cannot create a scratch network namespace: {exc.strerror} (run as root)") from None
    try:
        yield name
    finally:
        with contextlib.suppress(OSError):
            pr_netns.remove(name)
