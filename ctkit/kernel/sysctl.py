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
        if name in HOST_WIDE or os.geteuid() == 0:
            raise KernelError(f"net.netfilter.{name} is read-only here "
                              "(host-wide setting: change it in the initial network namespace)")
        raise KernelError(f"cannot write net.netfilter.{name}: permission denied (run as root)")
    try:
        with open(_path(name), "w") as f:
            f.write(f"{value}\n")
    except OSError as exc:
        if exc.errno == errno.EINVAL:
            raise UsageError(f"the kernel refused {value!r} for net.netfilter.{name}") from None
        raise KernelError(f"cannot write net.netfilter.{name}: {exc.strerror}") from None


# ------------------------------------------------- the conntrack settings
#
# Names ctkit knows about even when this kernel lacks them, with what their
# absence means. `nf_conntrack_helper` (automatic helper assignment) was
# removed in Linux 6.0 and had defaulted to off since 4.7: absent means off.
ABSENT_MEANS = {
    "nf_conntrack_helper": "removed in Linux 6.0: automatic helper assignment is off; "
                           "helpers are attached only by explicit rules",
    "nf_conntrack_acct": "per-flow byte/packet counters are not available",
    "nf_conntrack_timestamp": "flow start/stop timestamps are not available",
    "nf_conntrack_events": "conntrack events are not available",
}
# Host-wide: read-only in every namespace but the initial one.
HOST_WIDE = frozenset({"nf_conntrack_max", "nf_conntrack_buckets", "nf_conntrack_expect_max"})


@dataclass(frozen=True)
class Setting:
    """One net.netfilter.nf_conntrack_* sysctl as seen from the current namespace."""

    value: SysctlValue
    host_wide: bool
    note: str | None = None  # what an absent setting means

    def as_dict(self) -> dict:
        return {"name": f"net.netfilter.{self.value.name}", "exists": self.value.exists,
                "value": self.value.value, "writable": self.value.writable,
                "host_wide": self.host_wide, "note": self.note}


def conntrack_settings() -> list[Setting]:
    """Every nf_conntrack_* sysctl of this namespace, plus known ones this kernel lacks."""
    present = [n for n in names() if n.startswith("nf_conntrack_")]
    out = []
    for name in sorted(set(present) | set(ABSENT_MEANS)):
        value = read(name)
        note = None if value.exists else ABSENT_MEANS.get(name)
        if value.exists and name in HOST_WIDE and not value.writable:
            note = "host-wide: set it in the initial network namespace"
        out.append(Setting(value, name in HOST_WIDE, note))
    return out


def parse_assignment(text: str) -> tuple[str, str]:
    """'net.netfilter.nf_conntrack_max=1000' or 'nf_conntrack_max=1000' -> (name, value)."""
    key, sep, value = text.partition("=")
    key, value = key.strip(), value.strip()
    if not sep or not key or not value:
        raise UsageError(f"expected KEY=VALUE, not {text!r}")
    for prefix in ("net.netfilter.", "net/netfilter/"):
        if key.startswith(prefix):
            key = key[len(prefix):]
    _path(key)
    return key, value
