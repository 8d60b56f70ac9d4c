"""Connection-tracker health: fill, drops, helpers, expectations, untracked traffic.

Each check is a pure function of figures the kernel reader supplied, so it
can be tested without a kernel and the audit reads the kernel only once.
"""
from __future__ import annotations

from dataclasses import dataclass

from ctkit.audit.findings import Finding
from ctkit.policy.model import Policy

FILL_WARNING, FILL_CRITICAL = 0.75, 0.90
BUCKET_BYTES = 8  # one hlist_nulls_head per bucket on 64-bit kernels
EXTENSION_BYTES = 128  # ct extensions (acct, timestamp, helper, labels...) come from one kmalloc-128 block
FALLBACK_ENTRY_BYTES = 380  # 256-byte nf_conn slab object + extensions, as measured on Linux 6.18
EXPECT_WARNING = 0.75

#: stat -> (severity when it rose, what it means, what to do)
DROP_STATS = {
    "drop": ("critical", "new flows were dropped because the conntrack table was full",
             "raise nf_conntrack_max (see the sizing finding) or stop tracking bulk traffic with notrack"),
    "early_drop": ("warning", "entries were evicted early to make room (the table was full)",
                   "raise nf_conntrack_max or untrack bulk traffic"),
    "insert_failed": ("warning", "entries could not be inserted (clashes between racing packets)",
                      "usually UDP races (DNS over parallel sockets); look at clash_resolve"),
    "invalid": ("info", "packets conntrack could not classify (out of window, bad state)",
                "drop ct state invalid early; check asymmetric routing or nf_conntrack_tcp_be_liberal"),
    "search_restart": ("info", "lookups restarted because the hash table changed under them",
                       "benign unless it grows with load; size buckets to the table"),
    "clash_resolve": ("info", "clashing entries were resolved by merging",
                      "benign; frequent with parallel UDP queries"),
}


@dataclass(frozen=True)
class Sizing:
    entry_bytes: int
    source: str


def entry_size(slabinfo: str | None) -> Sizing:
    """Bytes one conntrack entry costs, from /proc/slabinfo when readable."""
    for line in (slabinfo or "").splitlines():
        fields = line.split()
        if fields and fields[0] == "nf_conntrack" and len(fields) > 3 and fields[3].isdigit():
            size = int(fields[3]) + EXTENSION_BYTES
            return Sizing(size, f"/proc/slabinfo nf_conntrack object size {fields[3]} + {EXTENSION_BYTES} "
                                "bytes of extensions")
    return Sizing(FALLBACK_ENTRY_BYTES, "estimate for Linux 6.x (256-byte nf_conn + extensions); "
                                        "/proc/slabinfo was not readable")


def _pow2(n: int) -> int:
    return 1 << max(0, (n - 1).bit_length())


def fill(count: int, maximum: int, buckets: int | None, peak: int, sizing: Sizing,
         max_writable: bool) -> list[Finding]:
    if maximum <= 0:
        return []
    ratio = count / maximum
    peak = max(peak, count)
    new_max = max(_pow2(peak * 2), maximum)
    evidence = {"count": count, "max": maximum, "buckets": buckets, "fill": round(ratio, 4), "peak": peak,
                "suggested_max": new_max, "suggested_buckets": new_max,
                "memory_bytes": new_max * sizing.entry_bytes + new_max * BUCKET_BYTES,
                "entry_bytes": sizing.entry_bytes, "entry_bytes_source": sizing.source}
    if ratio < FILL_WARNING:
        return []
    severity = "critical" if ratio >= FILL_CRITICAL else "warning"
    mib = evidence["memory_bytes"] / 2**20
    where = "" if max_writable else " (host-wide: set it in the initial namespace)"
    return [Finding(
        "conntrack.table-fill", severity, "net.netfilter.nf_conntrack_max",
        f"the conntrack table is {ratio:.0%} full ({count} of {maximum})",
        f"set nf_conntrack_max={new_max} and nf_conntrack_buckets={new_max}{where}: room for twice the "
        f"observed peak of {peak}, costing about {mib:.0f} MiB ({sizing.entry_bytes} bytes per entry + "
        f"{BUCKET_BYTES} per bucket); or untrack bulk traffic with notrack",
        evidence)]


#: Without a baseline (no --state, or its first audit), a counter's total is all the audit knows: it
#: may have risen once, long ago. Its average rate over the host's uptime decides: at least this many
#: per minute keeps the stat's severity; fewer is reported as info, saying there is no baseline. The
#: counters of a namespace start when it is made, so over the host's uptime their rate is a lower bound.
SINCE_BOOT_PER_MINUTE = 1.0
UPTIME = "/proc/uptime"


def host_uptime() -> float | None:
    """Seconds since the host booted (/proc/uptime), None when it cannot be read."""
    try:
        with open(UPTIME) as f:
            return float(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def duration(seconds: float) -> str:
    """'3 d 4 h', '2 h 5 min', '12 min', '40 s'."""
    s = int(seconds)
    if s >= 86400:
        return f"{s // 86400} d {s % 86400 // 3600} h"
    if s >= 3600:
        return f"{s // 3600} h {s % 3600 // 60} min"
    return f"{s // 60} min" if s >= 60 else f"{s} s"


_LOWER = {"critical": "warning", "warning": "info", "info": "info"}
_NO_BASELINE = "audit with --state FILE: each later audit judges only what rose since the one before"


def drops(totals: dict[str, int], previous: dict[str, int] | None, seconds: float | None,
          uptime: float | None = None) -> list[Finding]:
    """Findings for drop counters. With a previous state only what rose since then counts. Without
    one, the total since the counters started is judged by its rate over the host's uptime
    (`uptime`: seconds, default read from /proc/uptime): see SINCE_BOOT_PER_MINUTE."""
    out = []
    if previous is None and uptime is None and any(totals.get(n, 0) > 0 for n in DROP_STATS):
        uptime = host_uptime()
    for name, (severity, meaning, remedy) in DROP_STATS.items():
        if name not in totals:
            continue
        total = totals[name]
        if previous is None:
            if total > 0:
                out.append(_since_boot(name, total, severity, meaning, remedy, uptime))
            continue
        delta = total - previous.get(name, 0)
        if delta < 0:  # counters reset (reboot): count from zero
            delta = total
        if delta <= 0:
            continue
        evidence = {"stat": name, "total": total, "since_last_audit": delta}
        if seconds:
            evidence["per_second"] = round(delta / seconds, 3)
        out.append(Finding(f"conntrack.{name}", severity, f"conntrack stat {name}",
                           f"{name} rose by {delta} since the last audit: {meaning}", remedy, evidence))
    return out


def _since_boot(name: str, total: int, severity: str, meaning: str, remedy: str,
                uptime: float | None) -> Finding:
    """A counter seen without a baseline: its severity stands only when its rate over the uptime is high."""
    evidence = {"stat": name, "total": total, "baseline": False}
    if uptime is None or uptime <= 0:
        return Finding(f"conntrack.{name}", _LOWER[severity], f"conntrack stat {name}",
                       f"{name} is {total} since the counters started; the host's uptime is unknown and no "
                       f"baseline from an earlier audit tells when they rose: {meaning}",
                       f"{_NO_BASELINE}; {remedy}", evidence)
    per_minute = total / (uptime / 60)
    evidence.update(uptime_seconds=round(uptime), per_minute_since_boot=round(per_minute, 4))
    shown = f"{per_minute:.3g}" if per_minute >= 0.01 else "under 0.01"
    rate = f"{shown} per minute on average over the host's uptime of {duration(uptime)}"
    if per_minute >= SINCE_BOOT_PER_MINUTE:
        return Finding(f"conntrack.{name}", severity, f"conntrack stat {name}",
                       f"{name} is {total} since the counters started, {rate} (no baseline from an earlier "
                       f"audit): {meaning}", f"{remedy}; {_NO_BASELINE}", evidence)
    return Finding(f"conntrack.{name}", "info", f"conntrack stat {name}",
                   f"{name} is {total} since the counters started, {rate}: too few to say it still happens, "
                   f"and no baseline from an earlier audit tells when they rose: {meaning}",
                   f"{_NO_BASELINE}; {remedy}", evidence)


def autoassign(helper_sysctl: str | None) -> list[Finding]:
    if helper_sysctl is None or helper_sysctl.strip() == "0":
        return []
    return [Finding(
        "helpers.autoassign", "critical", "net.netfilter.nf_conntrack_helper",
        "automatic helper assignment is on: every flow on a helper's well-known port gets the helper, "
        "which lets remote peers open related flows",
        "set net.netfilter.nf_conntrack_helper=0 and assign helpers explicitly in the policy's helpers",
        {"nf_conntrack_helper": helper_sysctl})]


def expectations(count: int, expect_max: int | None) -> list[Finding]:
    if not expect_max or count < expect_max * EXPECT_WARNING:
        return []
    return [Finding(
        "helpers.expectations", "warning" if count < expect_max else "critical", "net.netfilter.nf_conntrack_expect_max",
        f"{count} expectations are pending, {count / expect_max:.0%} of nf_conntrack_expect_max={expect_max}",
        "look for a helper assigned too widely or a client opening many control connections; "
        "raise nf_conntrack_expect_max in the initial namespace if the load is legitimate",
        {"expectations": count, "expect_max": expect_max})]


def untracked_icmp(policy: Policy) -> list[Finding]:
    """Untracked flows get no RELATED ICMP errors: a default-drop input needs them admitted explicitly."""
    if not policy.notrack:
        return []
    inp = policy.chain("input")
    if inp is None or inp.policy != "drop":
        return []
    admits_icmp = any(set(r.protocols) & {"icmp", "icmpv6"} and r.action == "accept" and not r.ct_state
                      for r in inp.rules)
    if admits_icmp:
        return []
    return [Finding(
        "notrack.icmp-errors", "warning", "chain input",
        "untracked flows get no related ICMP errors, and chain input drops by default without an ICMP accept",
        "accept icmp types destination-unreachable (fragmentation-needed), time-exceeded and parameter-problem, "
        "and icmpv6 packet-too-big, destination-unreachable, time-exceeded, parameter-problem, "
        "so path MTU discovery keeps working for untracked flows",
        {"notrack": [n.name for n in policy.notrack]})]
