"""net.netfilter sysctls of the current network namespace (enter one with netns.entered).

Every name has a scope (SCOPE below): "namespace" (each network namespace has
its own value) or "host" (one value for the whole machine). ctkit refuses to
write a host-wide sysctl from any namespace but the initial one, even where the
kernel would let it: nf_hooks_lwtunnel is writable in every namespace but flips
a kernel-wide static key that cannot be turned off again until reboot. A name
that is not in the table is treated as host-wide. The kernel additionally shows
nf_conntrack_max, _buckets and _expect_max as mode 0444 outside the initial
namespace; writability is detected at run time, never assumed. A sysctl that
does not exist on this kernel (nf_conntrack_helper since 6.0) is reported as
absent.

`plan()` checks a whole multi-key change before anything is written and
`apply_plan()` writes it all or, when a write fails midway, restores what it
had already written.
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


def _write_raw(name: str, value: int | str) -> None:
    """One write to the kernel; errors are the kernel's, translated."""
    try:
        with open(_path(name), "w") as f:
            f.write(f"{value}\n")
    except OSError as exc:
        if exc.errno == errno.EINVAL:
            raise UsageError(f"the kernel refused {value!r} for net.netfilter.{name}") from None
        if exc.errno == errno.EBUSY and name == "nf_hooks_lwtunnel":
            raise KernelError(f"the kernel refused {value!r} for net.netfilter.{name}: "
                              f"{HOST_WIDE_WHY[name]}") from None
        raise KernelError(f"cannot write net.netfilter.{name}: {exc.strerror}") from None


def write(name: str, value: int | str) -> None:
    """Write one sysctl of the current namespace; host-wide ones only from the initial namespace."""
    current = read(name)
    if not current.exists:
        raise UsageError(f"net.netfilter.{name} does not exist on this kernel")
    if not is_per_namespace(name) and not in_initial_netns():
        raise KernelError(f"net.netfilter.{name} is {_host_wide_text(name)}: ctkit does not write it "
                          "from a network namespace (change it in the initial network namespace)")
    if not current.writable:
        if name in HOST_WIDE or os.geteuid() == 0:
            raise KernelError(f"net.netfilter.{name} is read-only here "
                              "(host-wide setting: change it in the initial network namespace)")
        raise KernelError(f"cannot write net.netfilter.{name}: permission denied (run as root)")
    _write_raw(name, value)


# ------------------------------------------------------------------- scope
#
# Which net.netfilter sysctls each network namespace has its own copy of, and
# which are one value for the whole machine (Linux 6.x). Sources: the kernel's
# net/netfilter/nf_conntrack_standalone.c (nf_ct_sysctl_table: every entry's
# data is per struct net except nf_conntrack_max, _buckets and _expect_max,
# which the kernel makes 0444 outside init_net; nf_hooks_lwtunnel is in that
# table too but its handler, net/netfilter/nf_hooks_lwtunnel.c, flips the
# global static key nf_hooks_lwtunnel_enabled and answers EBUSY to turning it
# off), net/netfilter/nf_log.c (nf_log_all_netns: a global int, registered in
# init_net only; the nf_log/<family> directory is per namespace) and
# net/ipv6/netfilter/nf_conntrack_reasm.c (frag6_*: per namespace).
SCOPE_NAMESPACE, SCOPE_HOST = "namespace", "host"
PER_NAMESPACE = frozenset({
    "nf_conntrack_acct", "nf_conntrack_checksum", "nf_conntrack_count", "nf_conntrack_events",
    "nf_conntrack_helper", "nf_conntrack_log_invalid", "nf_conntrack_timestamp",
    "nf_conntrack_frag6_high_thresh", "nf_conntrack_frag6_low_thresh", "nf_conntrack_frag6_timeout",
    "nf_conntrack_generic_timeout", "nf_conntrack_icmp_timeout", "nf_conntrack_icmpv6_timeout",
    "nf_conntrack_gre_timeout", "nf_conntrack_gre_timeout_stream",
    "nf_conntrack_udp_timeout", "nf_conntrack_udp_timeout_stream",
    "nf_conntrack_tcp_be_liberal", "nf_conntrack_tcp_ignore_invalid_rst", "nf_conntrack_tcp_loose",
    "nf_conntrack_tcp_max_retrans",
    "nf_conntrack_tcp_timeout_close", "nf_conntrack_tcp_timeout_close_wait",
    "nf_conntrack_tcp_timeout_established", "nf_conntrack_tcp_timeout_fin_wait",
    "nf_conntrack_tcp_timeout_last_ack", "nf_conntrack_tcp_timeout_max_retrans",
    "nf_conntrack_tcp_timeout_syn_recv", "nf_conntrack_tcp_timeout_syn_sent",
    "nf_conntrack_tcp_timeout_time_wait", "nf_conntrack_tcp_timeout_unacknowledged",
    "nf_conntrack_sctp_timeout_closed", "nf_conntrack_sctp_timeout_cookie_echoed",
    "nf_conntrack_sctp_timeout_cookie_wait", "nf_conntrack_sctp_timeout_established",
    "nf_conntrack_sctp_timeout_heartbeat_sent", "nf_conntrack_sctp_timeout_shutdown_ack_sent",
    "nf_conntrack_sctp_timeout_shutdown_recd", "nf_conntrack_sctp_timeout_shutdown_sent",
    # older 6.x kernels (DCCP conntrack) and kernels with flow tables
    "nf_conntrack_dccp_loose", "nf_conntrack_dccp_timeout_closereq", "nf_conntrack_dccp_timeout_closing",
    "nf_conntrack_dccp_timeout_open", "nf_conntrack_dccp_timeout_partopen",
    "nf_conntrack_dccp_timeout_request", "nf_conntrack_dccp_timeout_respond",
    "nf_conntrack_dccp_timeout_timewait",
    "nf_flowtable_tcp_timeout", "nf_flowtable_udp_timeout",
})
# Host-wide: one value for the machine. Written only from the initial namespace.
HOST_WIDE_WHY = {
    "nf_conntrack_max": "the conntrack table limit of the whole machine",
    "nf_conntrack_buckets": "the size of the machine's one conntrack hash table",
    "nf_conntrack_expect_max": "the expectation limit of the whole machine",
    "nf_hooks_lwtunnel": "a kernel-wide switch: once 1 it cannot be set back to 0 until reboot",
    "nf_log_all_netns": "a kernel-wide switch for LOG in every namespace (exists in the initial one only)",
}
HOST_WIDE = frozenset(HOST_WIDE_WHY)


def scope(name: str) -> str:
    """"namespace" for a sysctl known to be per namespace; "host" for everything else."""
    return SCOPE_NAMESPACE if name in PER_NAMESPACE else SCOPE_HOST


def is_per_namespace(name: str) -> bool:
    return scope(name) == SCOPE_NAMESPACE


def _host_wide_text(name: str) -> str:
    if name in HOST_WIDE_WHY:
        return f"host-wide ({HOST_WIDE_WHY[name]})"
    return "not known to be per network namespace (ctkit treats it as host-wide)"


def _ns_id(path: str) -> tuple[int, int]:
    st = os.stat(path)
    return st.st_dev, st.st_ino


_KERNEL_MARK = "/proc/sys/net/netfilter/nf_conntrack_max"  # 0444 in every namespace but the initial one


def in_initial_netns() -> bool:
    """Is the calling thread in the initial network namespace (the one of pid 1)?

    ctkit enters namespaces per thread (setns), so the thread's own namespace is
    compared, never the process's. Where pid 1's namespace cannot be read (no
    ptrace access to pid 1, e.g. fewer capabilities than init), the kernel's own
    mark decides: nf_conntrack_max is writable only in the initial namespace.
    Without either answer the answer is no, and host-wide writes are refused.
    """
    try:
        here = _ns_id("/proc/thread-self/ns/net")
    except OSError:
        return False
    try:
        return here == _ns_id("/proc/1/ns/net")
    except OSError:
        pass
    try:
        return bool(os.stat(_KERNEL_MARK).st_mode & 0o222)
    except OSError:
        return False


# ------------------------------------------- all-or-nothing multi-key writes

@dataclass(frozen=True)
class Change:
    name: str
    value: str  # what will be written
    before: str  # the value now, restored if a later write fails


def _is_int(text: str) -> bool:
    body = text[1:] if text[:1] == "-" else text
    return body.isascii() and body.isdigit()


def plan(pairs: list[tuple[str, str]], initial: bool | None = None) -> list[Change]:
    """Check every KEY=VALUE before any is written; every problem is reported at once.

    Checks: the name is known to this kernel, it is writable here, its scope allows
    a write from this namespace (host-wide only from the initial one), the value is
    an integer when the current value is one. `initial`: None asks the kernel.
    """
    if initial is None:
        initial = in_initial_netns()
    problems: list[str] = []
    changes: list[Change] = []
    seen: set[str] = set()
    denied = 0
    for name, value in pairs:
        if name in seen:
            problems.append(f"net.netfilter.{name} is given more than once")
            continue
        seen.add(name)
        current = read(name)
        if not current.exists:
            problems.append(f"net.netfilter.{name} does not exist on this kernel"
                            + (f" ({ABSENT_MEANS[name]})" if name in ABSENT_MEANS else ""))
            continue
        if not initial and not is_per_namespace(name):
            problems.append(f"net.netfilter.{name} is {_host_wide_text(name)}: refused in a network "
                            "namespace (set it in the initial network namespace)")
            continue
        path = _path(name)
        if not os.stat(path).st_mode & 0o222:
            problems.append(f"net.netfilter.{name} is read-only")
            continue
        if not os.access(path, os.W_OK):
            problems.append(f"cannot write net.netfilter.{name}: permission denied (run as root)")
            denied += 1
            continue
        if "\n" in value or "\x00" in value:
            problems.append(f"net.netfilter.{name}: {value!r} is not a value")
            continue
        if _is_int(current.value or "") and not _is_int(value):
            problems.append(f"net.netfilter.{name} takes an integer, not {value!r} "
                            f"(now {current.value})")
            continue
        changes.append(Change(name, value, current.value or ""))
    if problems:
        text = "nothing was changed: " + "; ".join(problems)
        if denied == len(problems):  # only the missing permission: exit 3 like any kernel refusal
            raise KernelError(text)
        raise UsageError(text)
    return changes


def apply_plan(changes: list[Change]) -> list[SysctlValue]:
    """Write every change, in order; if one fails, put back the ones already written and raise."""
    done: list[Change] = []
    for change in changes:
        try:
            _write_raw(change.name, change.value)
        except (UsageError, KernelError) as exc:
            restored, stuck = [], []
            for prev in reversed(done):
                try:
                    _write_raw(prev.name, prev.before)
                    restored.append(f"net.netfilter.{prev.name}={prev.before}")
                except (UsageError, KernelError) as again:
                    stuck.append(f"net.netfilter.{prev.name} (left at {prev.value}: {again})")
            text = str(exc)
            if not done:
                text += "; nothing had been written"
            elif restored:
                text += f"; restored {', '.join(restored)}"
            if stuck:
                text += f"; could NOT restore {', '.join(stuck)}"
            raise KernelError(text) if stuck else type(exc)(text) from None
        done.append(change)
    return [read(c.name) for c in changes]


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
        host_wide = not is_per_namespace(name)
        if value.exists and host_wide and not value.writable:
            note = "host-wide: set it in the initial network namespace"
        out.append(Setting(value, host_wide, note))
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
