"""net.netfilter sysctls of the current network namespace (enter one with netns.entered).

Host-wide settings (nf_conntrack_max, _buckets, _expect_max) are read-only
outside the initial namespace; the kernel shows that as file mode 0444, and
writability is detected at run time, never assumed. A sysctl that does not
exist on this kernel (nf_conntrack_helper since 6.0) is reported as absent.
"""
from __future__ import annotations

import errno
import os
from dataclasses import dataclass

from ctkit.errors import KernelError, UsageError

BASE = "/proc/sys/net/netfilter"


@dataclass(frozen=True)
class SysctlValue:
    name: str  # under net.netfilter, e.g. nf_conntrack_max
    exists: bool
    value: str | None = None  # raw text, stripped
    writable: bool = False

    @property
    def int_value(self) -> int | None:
        try:
            return int(self.value) if self.value is not None else None
        except ValueError:
            return None


def _path(name: str) -> str:
    if not name or "/" in name or name.startswith("."):
        raise UsageError(f"not a net.netfilter sysctl name: {name!r}")
    return os.path.join(BASE, name)


def read(name: str) -> SysctlValue:
    path = _path(name)
    try:
        with open(path) as f:
            value = f.read().strip()
    except FileNotFoundError:
        return SysctlValue(name, exists=False)
    except PermissionError:
        raise KernelError(f"cannot read net.netfilter.{name}: permission denied") from None
    return SysctlValue(name, True, value, os.access(path, os.W_OK) and bool(os.stat(path).st_mode & 0o222))


def names() -> list[str]:
    """Every sysctl under net.netfilter that this kernel has, in this namespace."""
    try:
        return sorted(n for n in os.listdir(BASE) if os.path.isfile(os.path.join(BASE, n)))
    except FileNotFoundError:
        return []


def write(name: str, value: int | str) -> None:
    current = read(name)
    if not current.exists:
        raise UsageError(f"net.netfilter.{name} does not exist on this kernel")
    if not current.writable:
        raise KernelError(f"net.netfilter.{name} is read-only here "
                          "(host-wide setting: change it in the initial network namespace)")
    try:
        with open(_path(name), "w") as f:
            f.write(f"{value}\n")
    except OSError as exc:
        if exc.errno == errno.EINVAL:
            raise UsageError(f"the kernel refused {value!r} for net.netfilter.{name}") from None
        raise KernelError(f"cannot write net.netfilter.{name}: {exc.strerror}") from None
