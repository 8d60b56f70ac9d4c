"""iptables-save text -> tables, chains and rules with their line numbers (no meaning yet).

Counters (`[p:b] -A ...` from `iptables-save -c`) are dropped. Quoting follows iptables-save's own
(double quotes, backslash escapes), which shlex reads in POSIX mode. A line that is not iptables-save
syntax is a problem with its line number, never skipped silently.
"""
from __future__ import annotations

import re
import shlex
from dataclasses import dataclass

#: the built-in chains of each iptables table
BUILTINS = {
    "raw": ("PREROUTING", "OUTPUT"),
    "mangle": ("PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"),
    "nat": ("PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"),
    "filter": ("INPUT", "FORWARD", "OUTPUT"),
    "security": ("INPUT", "FORWARD", "OUTPUT"),
}
_COUNTERS = re.compile(r"^\[\d+:\d+\]\s+")


@dataclass(frozen=True)
class SaveChain:
    table: str
    name: str
    policy: str | None  # ACCEPT | DROP for a built-in chain; None for a user chain
    line: int


@dataclass(frozen=True)
class SaveRule:
    table: str
    chain: str
    tokens: tuple[str, ...]  # after "-A CHAIN"
    line: int
    text: str  # the line as written (without counters)
    own: bool = False  # written by ctkit (its comment is "<rule id>: <text>", ctkit.names.rule_comment)


@dataclass(frozen=True)
class SaveProblem:
    line: int
    text: str
    reason: str


@dataclass(frozen=True)
class Save:
    """One iptables-save output: its family (from the header or the addresses) and its content."""
    source: str
    family: str  # ipv4 | ipv6
    chains: tuple[SaveChain, ...]
    rules: tuple[SaveRule, ...]
    problems: tuple[SaveProblem, ...]


def _family(text: str, rules: list[SaveRule]) -> str:
    """ip6tables-save says so in its first line; without it, IPv6 addresses or ICMPv6 tell."""
    if "ip6tables" in "\n".join(text.split("\n", 2)[:2]):
        return "ipv6"
    for r in rules:
        for i, t in enumerate(r.tokens[:-1]):
            value = r.tokens[i + 1]
            if t in ("-s", "-d", "--source", "--destination") and ":" in value:
                return "ipv6"
            if (t == "--reject-with" and value.startswith("icmp6")) or (t == "-p" and value in ("ipv6-icmp", "icmpv6")):
                return "ipv6"
    return "ipv4"


def looks_like_save(text: str) -> bool:
    return any(line.startswith("*") for line in text.splitlines()) and "COMMIT" in text


def parse(text: str, source: str, family: str | None = None) -> Save:
    """family: ipv4 | ipv6 when the caller knows it (--ip6tables-save); else read from the text."""
    chains: list[SaveChain] = []
    rules: list[SaveRule] = []
    problems: list[SaveProblem] = []
    table: str | None = None
    for n, raw in enumerate(text.split("\n"), start=1):
        line = raw.rstrip("\r")
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if line.startswith("*"):
            table = line[1:].strip()
            continue
        if line.strip() == "COMMIT":
            table = None
            continue
        if table is None:
            problems.append(SaveProblem(n, line, "outside a table (*filter ... COMMIT)"))
            continue
        if line.startswith(":"):
            parts = line[1:].split()
            if len(parts) < 2:
                problems.append(SaveProblem(n, line, "a chain line is ':NAME POLICY [packets:bytes]'"))
                continue
            chains.append(SaveChain(table, parts[0], None if parts[1] == "-" else parts[1], n))
            continue
        body = _COUNTERS.sub("", line)
        try:
            tokens = shlex.split(body, posix=True)
        except ValueError as exc:
            problems.append(SaveProblem(n, line, f"cannot be read: {exc}"))
            continue
        tokens = [t.replace("\\'", "'") for t in tokens]  # iptables-save escapes ' inside double quotes
        if len(tokens) < 2 or tokens[0] not in ("-A", "--append"):
            problems.append(SaveProblem(n, line, "not an iptables-save rule ('-A CHAIN ...')"))
            continue
        rules.append(SaveRule(table, tokens[1], tuple(tokens[2:]), n, body))
    return Save(source, family or _family(text, rules), tuple(chains), tuple(rules), tuple(problems))
