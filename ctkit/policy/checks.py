"""Checks of single values in a policy: addresses, NAT address ranges, port, length and queue ranges.

Each check_* returns None for a good value, else (message, hint). load.py hands them to
the JSON Schema validator as formats; the section builders use them while building, and
parse_range is the one parser of numeric ranges for both.
"""
from __future__ import annotations

import ipaddress
import re
import socket
from dataclasses import dataclass

from ctkit.policy.model import AddrRange, Network
from ctkit.terminal import excerpt
from ctkit.values import PortRange

#: what an address, prefix or address range is written with. ipaddress also takes an IPv6 zone
#: ("fe80::1%eth0"), and the zone may hold any character: str() of that address, which is what the
#: backends write, would carry `" } ; -j ACCEPT` into nft text and iptables-restore input.
_ADDRESS_TEXT = re.compile(r"[0-9A-Fa-f:./-]{1,81}", re.ASCII)


def canonical_ipv4(text: str) -> bytes | None:
    """The packed address when `text` is one IPv4 address written as inet_ntoa writes it (the form
    ipaddress takes: decimal octets, no leading zeros), else None. inet_aton alone takes forms ipaddress
    refuses (1.2.3, 010.0.0.1, a trailing space), so only a text that comes back unchanged counts. Most
    addresses of a big policy or block list: read in a fraction of ipaddress's time."""
    try:
        packed = socket.inet_aton(text)
    except (OSError, ValueError):
        return None
    return packed if socket.inet_ntoa(packed) == text else None


def _address_text(text: str) -> bool:
    return isinstance(text, str) and _ADDRESS_TEXT.fullmatch(text) is not None


def check_network(text: str) -> tuple[str, str] | None:
    """None if text is an address or prefix; else (message, hint)."""
    try:
        parse_network(text)
    except BadValue as bad:
        return bad.message, bad.hint
    return None


def parse_network(text: str) -> Network:
    """The address or prefix `text` is (an address is a /32 or /128 network), parsed once, or BadValue.
    Sets of a million members from a file call this once a member: checking, then parsing again,
    doubled what building them cost."""
    packed = canonical_ipv4(text) if isinstance(text, str) else None
    if packed is not None:
        return ipaddress.IPv4Network((int.from_bytes(packed, "big"), 32))
    if not _address_text(text) or "-" in text:
        zone = "%" in str(text)
        raise BadValue(f"{excerpt(text)} is not an IPv4 or IPv6 address or prefix",
                       "an IPv6 zone (%eth0) has no meaning in a rule" if zone else
                       "e.g. 192.0.2.10, 10.0.0.0/8, 2001:db8::/32")
    try:
        return ipaddress.ip_network(text, strict=True)
    except ValueError:
        pass
    try:
        loose = ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise BadValue(f"{excerpt(text)} is not an IPv4 or IPv6 address or prefix",
                       "e.g. 192.0.2.10, 10.0.0.0/8, 2001:db8::/32") from None
    raise BadValue(f"{excerpt(text)} has host bits set", f"did you mean {str(loose)!r}?")


@dataclass(frozen=True)
class RangeKind:
    """What a "N" / "lo-hi" range counts (ports, packet lengths, queues) and how to explain a bad one."""
    noun: str
    minimum: int  # the least value (ports start at 1, lengths and queues at 0); the most is 65535
    form: str  # what a good value is, for "x is not <form>"
    example: str
    limits: str
    proper: bool = False  # a written range must have lo < hi (queues: one queue is given as a number)


PORTS = RangeKind("port", 1, "a port or port range", 'e.g. 53 or "1024-65535"', "ports are 1-65535")
LENGTHS = RangeKind("length", 0, "a length or length range", 'e.g. 222 or "0-32"', "IP packet lengths are 0-65535")
QUEUES = RangeKind("queue", 0, "a queue range", 'e.g. "0-3"', "queues are 0-65535", proper=True)

_RANGE = re.compile(r"([0-9]+)(?:-([0-9]+))?", re.ASCII)


class BadValue(ValueError):
    """A value that is not what its place takes: message and hint."""

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message, self.hint = message, hint


def parse_range(value: object, kind: RangeKind) -> PortRange:
    """ "N" or "lo-hi" (or the integer N) as an inclusive range of kind; BadValue if it is not one.

    The one parser of numeric ranges in a policy: rule and NAT ports, do-not-track, helper,
    timeout and zone ports, set members of type inet_service, packet lengths and queue ranges.
    """
    text = str(value)
    m = _RANGE.fullmatch(text) if len(text) <= 11 else None  # "65535-65535"; int() of 5000 digits fails
    if m is None:
        raise BadValue(f"{excerpt(text)} is not {kind.form}", kind.example)
    lo = int(m.group(1))
    hi = int(m.group(2)) if m.group(2) is not None else lo
    if not (kind.minimum <= lo <= 65535 and kind.minimum <= hi <= 65535):
        raise BadValue(f"{kind.noun} {text!r} is out of range", kind.limits)
    if kind.proper and lo >= hi:
        raise BadValue(f"{kind.noun} range {text!r} is not a range", "give lo-hi with lo < hi, or a single number")
    if lo > hi:
        raise BadValue(f"{kind.noun} range {text!r} runs backwards", f"did you mean '{hi}-{lo}'?")
    return PortRange(lo, hi)


def check_range(text: str, kind: RangeKind) -> tuple[str, str | None] | None:
    """None if text is a good range of kind; else (message, hint)."""
    try:
        parse_range(text, kind)
    except BadValue as bad:
        return bad.message, bad.hint
    return None


def check_port_range(text: str) -> tuple[str, str | None] | None:
    return check_range(text, PORTS)


def check_length_range(text: str) -> tuple[str, str | None] | None:
    return check_range(text, LENGTHS)


def check_queue_range(text: str) -> tuple[str, str | None] | None:
    return check_range(text, QUEUES)


def check_nat_address(text: str) -> tuple[str, str] | None:
    """None if text is an address or an inclusive range "first-last" of one family."""
    parts = text.split("-")
    if len(parts) > 2:
        return (f"{excerpt(text)} is not an address or a range first-last",
                "e.g. 192.0.2.10 or 198.51.100.1-198.51.100.5")
    try:
        if not _address_text(text):
            raise ValueError(text)
        addrs = [ipaddress.ip_address(p) for p in parts]
    except ValueError:
        return (f"{excerpt(text)} is not an IPv4 or IPv6 address or range",
                "e.g. 192.0.2.10, 2001:db8::10 or 198.51.100.1-198.51.100.5 (no prefix length)")
    if len(addrs) == 2:
        if addrs[0].version != addrs[1].version:
            return f"range {text!r} mixes IPv4 and IPv6", "both ends must be of one family"
        if addrs[0] > addrs[1]:
            return f"address range {text!r} runs backwards", f"did you mean '{parts[1]}-{parts[0]}'?"
    return None


def parse_nat_address(text: str) -> AddrRange:
    lo, _, hi = text.partition("-")
    return AddrRange(ipaddress.ip_address(lo), ipaddress.ip_address(hi or lo))
