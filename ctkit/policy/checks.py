"""Checks of single values in a policy: addresses, NAT address ranges, port, length and queue ranges.

Each check returns None for a good value, else (message, hint). load.py hands them to
the JSON Schema validator as formats; the section builders use them while building.
"""
from __future__ import annotations

import ipaddress

from ctkit.policy.model import AddrRange


def check_network(text: str) -> tuple[str, str] | None:
    """None if text is an address or prefix; else (message, hint)."""
    try:
        ipaddress.ip_network(text, strict=True)
        return None
    except ValueError:
        pass
    try:
        loose = ipaddress.ip_network(text, strict=False)
    except ValueError:
        return (f"{text!r} is not an IPv4 or IPv6 address or prefix", "e.g. 192.0.2.10, 10.0.0.0/8, 2001:db8::/32")
    return f"{text!r} has host bits set", f"did you mean {str(loose)!r}?"


def _check_range(text: str, noun: str, minimum: int, example: str, limits: str) -> tuple[str, str] | None:
    """None if text is "N" or "lo-hi" with minimum <= lo <= hi <= 65535; else (message, hint)."""
    lo_s, _, hi_s = str(text).partition("-")
    try:
        lo, hi = int(lo_s), int(hi_s or lo_s)
    except ValueError:
        return f"{text!r} is not a {noun} or {noun} range", example
    if not (minimum <= lo <= 65535 and minimum <= hi <= 65535):
        return f"{noun} {text!r} is out of range", limits
    if lo > hi:
        return f"{noun} range {text!r} runs backwards", f"did you mean '{hi}-{lo}'?"
    return None


def check_port_range(text: str) -> tuple[str, str] | None:
    return _check_range(text, "port", 1, 'e.g. 53 or "1024-65535"', "ports are 1-65535")


def check_length_range(text: str) -> tuple[str, str] | None:
    return _check_range(text, "length", 0, 'e.g. 222 or "0-32"', "IP packet lengths are 0-65535")


def check_queue_range(text: str) -> tuple[str, str] | None:
    lo_s, _, hi_s = str(text).partition("-")
    try:
        lo, hi = int(lo_s), int(hi_s or lo_s)
    except ValueError:
        return f"{text!r} is not a queue range", 'e.g. "0-3"'
    if hi > 65535:
        return f"queue {text!r} is out of range", "queues are 0-65535"
    if lo >= hi:
        return f"queue range {text!r} is not a range", "give lo-hi with lo < hi, or a single number"
    return None


def check_nat_address(text: str) -> tuple[str, str] | None:
    """None if text is an address or an inclusive range "first-last" of one family."""
    parts = text.split("-")
    if len(parts) > 2:
        return f"{text!r} is not an address or a range first-last", "e.g. 192.0.2.10 or 198.51.100.1-198.51.100.5"
    try:
        addrs = [ipaddress.ip_address(p) for p in parts]
    except ValueError:
        return (f"{text!r} is not an IPv4 or IPv6 address or range",
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
