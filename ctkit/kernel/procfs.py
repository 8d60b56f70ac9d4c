"""Parsers for /proc/net/nf_conntrack and /proc/net/stat/nf_conntrack, and the boot id.

For hosts and captures where ctnetlink is not available, and for saved
snapshots. Both parsers take text, so tests feed them recorded files;
`read_stat` reads the live stat file of the caller's network namespace.

/proc/net/stat/nf_conntrack has one line per CPU under a header whose column
names changed across kernels (searched -> clashres in 5.10, delete_list ->
chainlength in 5.15), so columns are matched by header name, never by
position. Values are hex. `entries` repeats the table size on every line:
it is reported once, never summed.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Iterator

from ctkit.errors import KernelError

# /proc/net is /proc/self/net: the namespace of the process's main thread. A thread
# that entered another namespace (the exporter's HTTP thread) must read its own.
PROC_STAT = "/proc/thread-self/net/stat/nf_conntrack"

# Header names that mean the same counter under a newer name.
STAT_ALIASES = {"icmp_error": "error", "clashres": "clash_resolve", "chainlength": "chaintoolong"}


@dataclass(frozen=True)
class StatRow:
    cpu: int  # position of the line: the file skips no possible CPU
    counters: dict[str, int]


@dataclass(frozen=True)
class StatFile:
    columns: tuple[str, ...]  # as written in the header
    rows: tuple[StatRow, ...]
    entries: int  # the table size (the `entries` column of the first line)

    def total(self, name: str) -> int:
        return sum(r.counters.get(name, 0) for r in self.rows)


def parse_stat(text: str) -> StatFile:
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if not lines:
        raise ValueError("empty nf_conntrack stat file")
    header = tuple(lines[0].split())
    if "entries" not in header:
        raise ValueError(f"not an nf_conntrack stat header: {lines[0]!r}")
    names = [STAT_ALIASES.get(h, h) for h in header]
    rows = []
    for cpu, line in enumerate(lines[1:]):
        fields = line.split()
        if len(fields) != len(header):
            raise ValueError(f"line {cpu + 2}: {len(fields)} values for {len(header)} columns")
        try:
            values = [int(f, 16) for f in fields]
        except ValueError:
            raise ValueError(f"line {cpu + 2}: not hexadecimal: {line!r}") from None
        rows.append(StatRow(cpu, {n: v for n, v in zip(names, values, strict=True) if n != "entries"}))
    entries = int(lines[1].split()[header.index("entries")], 16) if len(lines) > 1 else 0
    return StatFile(header, tuple(rows), entries)


def read_stat(path: str = PROC_STAT) -> StatFile | None:
    """The stat file of the current namespace, or None where the kernel has none."""
    try:
        with open(path) as f:
            return parse_stat(f.read())
    except FileNotFoundError:
        return None
    except PermissionError:
        raise KernelError(f"cannot read {path}: permission denied") from None


# ---------------------------------------------------------- nf_conntrack

DIRECTION_KEYS = ("src", "dst", "sport", "dport", "type", "code", "id", "packets", "bytes", "zone-orig",
                  "zone-reply")


@dataclass(frozen=True)
class ProcEntry:
    """One line of /proc/net/nf_conntrack."""

    family: str  # ipv4 | ipv6
    proto: str
    protonum: int
    timeout: int
    state: str | None
    orig: dict[str, str]
    reply: dict[str, str]
    flags: frozenset[str]  # UNREPLIED, ASSURED, OFFLOAD, HW_OFFLOAD
    extra: dict[str, str]  # mark, secctx, zone, use, delta-time, labels (ct_label=...), helper

    @property
    def mark(self) -> int:
        return int(self.extra.get("mark", "0"))

    @property
    def zone(self) -> int:
        return int(self.extra.get("zone", "0"))

    @property
    def use(self) -> int | None:
        return int(self.extra["use"]) if "use" in self.extra else None


def parse_conntrack_line(line: str) -> ProcEntry:
    words = line.split()
    if len(words) < 5:
        raise ValueError(f"too short for a conntrack line: {line!r}")
    family, _l3num, proto, protonum, timeout = words[:5]
    state = None
    i = 5
    if i < len(words) and "=" not in words[i] and not words[i].startswith("["):
        state = words[i]
        i += 1
    orig: dict[str, str] = {}
    reply: dict[str, str] = {}
    extra: dict[str, str] = {}
    flags: set[str] = set()
    current = orig
    for word in words[i:]:
        if word.startswith("[") and word.endswith("]"):
            flags.add(word[1:-1])
            continue
        key, sep, value = word.partition("=")
        if not sep:
            raise ValueError(f"unexpected word {word!r} in {line!r}")
        if key == "src" and "src" in orig and current is orig:
            current = reply
        if key in DIRECTION_KEYS and current is not None and key not in current:
            current[key] = value
        else:
            current = None  # past the tuples: the rest is per entry
            extra[key] = value
    try:
        return ProcEntry(family, proto, int(protonum), int(timeout), state, orig, reply, frozenset(flags), extra)
    except ValueError:
        raise ValueError(f"bad number in {line!r}") from None


def parse_conntrack(lines: Iterable[str]) -> Iterator[ProcEntry]:
    for number, line in enumerate(lines, 1):
        if line.strip():
            try:
                yield parse_conntrack_line(line)
            except ValueError as exc:
                raise ValueError(f"line {number}: {exc}") from None


def boot_id() -> str:
    """This boot's id (/proc/sys/kernel/random/boot_id), "" when unreadable: state kept under /run is
    believed only by the boot that wrote it."""
    try:
        with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as f:
            return f.read().strip()
    except OSError:
        return ""
