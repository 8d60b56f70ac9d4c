"""`ipset save` text -> the policy's named sets (the members iptables-save does not print).

hash:net and hash:ip sets of one family become ipv4_addr / ipv6_addr sets (hash:net: interval), bitmap:port
and hash:port inet_service sets. A member's timeout in `ipset save` is the time it has left: a member
within two seconds of the set's default is written without one, the others with the time left.
"""
from __future__ import annotations

import shlex
from dataclasses import dataclass, field

_TYPES = {("hash:net", "inet"): ("ipv4_addr", True), ("hash:ip", "inet"): ("ipv4_addr", False),
          ("hash:net", "inet6"): ("ipv6_addr", True), ("hash:ip", "inet6"): ("ipv6_addr", False),
          ("bitmap:port", None): ("inet_service", False), ("hash:port", None): ("inet_service", False)}


@dataclass
class IpSet:
    name: str
    type: str  # ipv4_addr | ipv6_addr | inet_service
    interval: bool
    timeout: int | None
    elements: list = field(default_factory=list)


def parse(text: str) -> tuple[dict[str, IpSet], list[str]]:
    """(sets by ipset name, notes on the sets the policy cannot declare)."""
    sets: dict[str, IpSet] = {}
    notes: list[str] = []
    for line in text.split("\n"):
        try:
            tokens = shlex.split(line)
        except ValueError:
            continue
        if len(tokens) >= 3 and tokens[0] == "create":
            name, kind = tokens[1], tokens[2]
            opts = dict(zip(tokens[3::2], tokens[4::2], strict=False))
            family = opts.get("family") if kind.startswith("hash:") and kind != "hash:port" else None
            got = _TYPES.get((kind, family))
            if got is None:
                notes.append(f"ipset {name} ({kind}): not a set the policy declares")
                continue
            timeout = int(opts["timeout"]) if opts.get("timeout", "").isdigit() else None
            sets[name] = IpSet(name, got[0], got[1], timeout)
        elif len(tokens) >= 3 and tokens[0] == "add" and tokens[1] in sets:
            s = sets[tokens[1]]
            value: object = int(tokens[2]) if s.type == "inet_service" and tokens[2].isdigit() else tokens[2]
            if s.type == "inet_service" and isinstance(value, str):
                value = value.replace(":", "-")
            left = int(tokens[4]) if len(tokens) >= 5 and tokens[3] == "timeout" and tokens[4].isdigit() else None
            if left is not None and not (s.timeout is not None and abs(s.timeout - left) <= 2):
                value = {"value": value, "timeout": left}
            s.elements.append(value)
    return sets, notes
