"""Members of a named set, parsed by the set's own type; never a host name, never a lookup.

`ctkit set add|del NAME VALUE` used to guess a member's type from its text and hand
the text to libnftables or ipset, both of which resolve host names (a DNS query by
a root process) and read `80` as the IPv4 address 0.0.0.80. Here the set's type is
read from the kernel first (nft: `list set` JSON, "type" and "flags"; ipset: the
`ipset list -t` header) and the value is parsed against it with the ipaddress
module and plain digits: the result is a member the kernel gets as an address or
a number, or a UsageError that names the value, the set's type and valid examples.

Pure functions only; the kernel reads are the caller's (ctkit/cli/policy.py).
"""
from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Any, Union

from ctkit.errors import UsageError

IPV4, IPV6, SERVICE = "ipv4_addr", "ipv6_addr", "inet_service"
SUPPORTED = (IPV4, IPV6, SERVICE)
SET_NAME = re.compile(r"[a-z][a-z0-9_]{0,15}", re.ASCII)  # the policy schema's set names
_DIGITS = re.compile(r"[0-9]{1,5}", re.ASCII)
_PREFIX_LEN = re.compile(r"[0-9]{1,3}", re.ASCII)
_PRINTABLE = re.compile(r"[\x21-\x7e]+", re.ASCII)  # one part: no spaces, no control or non-ASCII characters

Address = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]


@dataclass(frozen=True)
class SetType:
    """What a set's members are: one type per part (more than one: a concatenation)."""

    types: tuple[str, ...]
    interval: bool = False  # prefixes and ranges allowed
    name: str | None = None  # for messages
    kind: str | None = None  # an ipset's own type (hash:ip, hash:net, bitmap:port); None for an nft set

    def describe(self) -> str:
        if self.kind is not None:  # an ipset: its type already says whether it takes ranges
            return f"{self.kind} ({self.types[0]})"
        return " . ".join(self.types) + (", interval" if self.interval else "")

    def examples(self) -> list[str]:
        per = [_examples(t, self.interval) for t in self.types]
        if len(per) == 1:
            return per[0]
        return [" . ".join(p[0] for p in per)] + ([" . ".join(p[-1] for p in per)] if self.interval else [])


def _examples(kind: str, interval: bool) -> list[str]:
    if kind == IPV4:
        return ["192.0.2.1"] + (["198.51.100.0/24", "192.0.2.1-192.0.2.9"] if interval else [])
    if kind == IPV6:
        return ["2001:db8::1"] + (["2001:db8:bad::/48", "2001:db8::1-2001:db8::9"] if interval else [])
    return ["80"] + (["1000-2000"] if interval else [])


@dataclass(frozen=True)
class Part:
    """One part of a member: an address, a prefix (addr, length), or a range (lo, hi); or a port (range)."""

    kind: str
    lo: Any  # Address or int
    hi: Any = None  # a range's upper end
    prefix: int | None = None  # a network's length (lo is its network address)

    def nft(self) -> Any:
        if self.kind == SERVICE:
            return self.lo if self.hi is None else {"range": [self.lo, self.hi]}
        if self.prefix is not None:
            return {"prefix": {"addr": str(self.lo), "len": self.prefix}}
        if self.hi is not None:
            return {"range": [str(self.lo), str(self.hi)]}
        return str(self.lo)

    def text(self) -> str:
        if self.prefix is not None:
            return f"{self.lo}/{self.prefix}"
        return str(self.lo) if self.hi is None else f"{self.lo}-{self.hi}"


@dataclass(frozen=True)
class Member:
    parts: tuple[Part, ...]

    def nft(self) -> Any:
        """The member in libnftables JSON: a literal address or number, never a name to resolve."""
        values = [p.nft() for p in self.parts]
        return values[0] if len(values) == 1 else {"concat": values}

    def text(self) -> str:
        """Canonical text (also what ipset gets): 192.0.2.1, 10.0.0.0/8, 80, 1000-2000, '192.0.2.1 . 80'."""
        return " . ".join(p.text() for p in self.parts)


class _Bad(ValueError):
    pass


def _address(kind: str, text: str) -> Address:
    if "%" in text:
        raise _Bad("an address with a scope (%zone) is not a set member")
    try:
        addr = ipaddress.ip_address(text)
    except ValueError:
        looks_like_name = re.fullmatch(r"[A-Za-z0-9.-]*[A-Za-z][A-Za-z0-9.-]*", text, re.ASCII) and ":" not in text
        raise _Bad("host names are not resolved: give an address" if looks_like_name else
                   f"not an {'IPv4' if kind == IPV4 else 'IPv6'} address") from None
    if addr.version != (4 if kind == IPV4 else 6):
        raise _Bad(f"an IPv{addr.version} address in a set of {kind}")
    return addr


def _address_part(kind: str, text: str, interval: bool) -> Part:
    if "/" in text:
        addr_text, _, length = text.partition("/")
        if not _PREFIX_LEN.fullmatch(length):
            raise _Bad("a prefix length is a number (192.0.2.0/24)")
        addr = _address(kind, addr_text)
        if int(length) > addr.max_prefixlen:
            raise _Bad(f"a prefix length is at most {addr.max_prefixlen}")
        if int(length) == addr.max_prefixlen:
            return Part(kind, addr)
        if not interval:
            raise _Bad("a prefix, but the set has no interval flag: give one address")
        try:
            net = ipaddress.ip_network(f"{addr}/{int(length)}", strict=True)
        except ValueError:
            net = ipaddress.ip_network(f"{addr}/{int(length)}", strict=False)
            raise _Bad(f"host bits set: the network is {net}") from None
        return Part(kind, net.network_address, prefix=net.prefixlen)
    if "-" in text:
        lo_text, _, hi_text = text.partition("-")
        lo, hi = _address(kind, lo_text), _address(kind, hi_text)
        if not interval:
            raise _Bad("a range, but the set has no interval flag: give one address")
        if lo > hi:
            raise _Bad("a range's first address is above its last")
        return Part(kind, lo) if lo == hi else Part(kind, lo, hi)
    return Part(kind, _address(kind, text))


def _port(text: str) -> int:
    if not _DIGITS.fullmatch(text):
        raise _Bad("not a port number (service names are not looked up)")
    value = int(text)
    if not 1 <= value <= 65535:  # as in a policy file (ctkit/policy/checks.py PORTS)
        raise _Bad("a port is within 1-65535")
    return value


def _service_part(text: str, interval: bool) -> Part:
    lo_text, sep, hi_text = text.partition("-")
    lo = _port(lo_text)
    if not sep:
        return Part(SERVICE, lo)
    hi = _port(hi_text)
    if not interval:
        raise _Bad("a port range, but the set has no interval flag: give one port")
    if lo > hi:
        raise _Bad("a range's first port is above its last")
    return Part(SERVICE, lo) if lo == hi else Part(SERVICE, lo, hi)


def parse(text: str, set_type: SetType) -> Member:
    """`text` as a member of a set of `set_type`, or a UsageError naming the value, the type and examples."""
    try:
        return Member(_parse(text, set_type))
    except _Bad as exc:
        where = f"set {set_type.name}" if set_type.name else "the set"
        raise UsageError(f"{text!r} is not a member of {where} (type {set_type.describe()}): {exc}; "
                         f"valid members look like {', '.join(set_type.examples())}") from None


def _parse(text: str, set_type: SetType) -> tuple[Part, ...]:
    for kind in set_type.types:
        if kind not in SUPPORTED:
            raise _Bad(f"ctkit cannot check members of type {kind} (it knows {', '.join(SUPPORTED)})")
    raw = text.strip()
    pieces = [p.strip() for p in raw.split(" . ")] if len(set_type.types) > 1 else [raw]
    if len(pieces) != len(set_type.types):
        raise _Bad(f"{len(set_type.types)} parts separated by ' . ' expected, not {len(pieces)}")
    parts = []
    for kind, piece in zip(set_type.types, pieces, strict=True):
        if not piece:
            raise _Bad("empty")
        if not _PRINTABLE.fullmatch(piece):
            raise _Bad("spaces, control or non-ASCII characters are not part of an address or port")
        parts.append(_service_part(piece, set_type.interval) if kind == SERVICE
                     else _address_part(kind, piece, set_type.interval))
    return tuple(parts)


def check_set_name(name: str) -> str:
    if not SET_NAME.fullmatch(name):
        raise UsageError(f"not a set name: {name!r} (a lower-case letter, then up to 15 of a-z, 0-9, _)")
    return name


# ------------------------------------------------------- the kernel's view

def set_type_from_nft(items: list[dict] | dict, name: str | None = None) -> SetType:
    """From `nft -j list set inet TABLE NAME` (the "nftables" list, or one {"set": ...} item)."""
    if isinstance(items, dict):
        items = items.get("nftables", [items])
    body = next((i["set"] for i in items if isinstance(i, dict) and "set" in i), None)
    if body is None:
        raise UsageError(f"no set {name!r} in the kernel's answer")
    kind = body.get("type")
    if kind is None:  # sets declared with typeof: ctkit never makes those
        raise UsageError(f"set {body.get('name', name)!r} has no plain type (typeof {body.get('map') or '...'}): "
                         "ctkit cannot check its members")
    types = tuple(kind) if isinstance(kind, list) else (kind,)
    flags = body.get("flags", [])
    flags = [flags] if isinstance(flags, str) else list(flags)
    return SetType(types, "interval" in flags, body.get("name", name))


_IPSET_KINDS = {"hash:ip": False, "hash:net": True, "bitmap:port": True}


def set_type_from_ipset(header: str, name: str | None = None) -> SetType:
    """From `ipset list -t NAME`: 'Type: hash:net' and 'Header: family inet6 ...'.

    hash:ip takes addresses (a prefix would add every address in it: refused),
    hash:net addresses, prefixes and ranges, bitmap:port ports and port ranges.
    """
    fields = {}
    for line in header.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            fields[key.strip().lower()] = value.strip()
    kind = fields.get("type", "")
    set_name = fields.get("name", name)
    if kind not in _IPSET_KINDS:
        raise UsageError(f"ipset {set_name} is of type {kind or '(unknown)'}: ctkit checks members of "
                         f"{', '.join(_IPSET_KINDS)} only")
    if kind == "bitmap:port":
        types: tuple[str, ...] = (SERVICE,)
    else:
        words = fields.get("header", "").split()
        family = words[words.index("family") + 1] if "family" in words[:-1] else None
        if family not in ("inet", "inet6"):
            raise UsageError(f"ipset {set_name}: no family inet or inet6 in its header")
        types = (IPV4 if family == "inet" else IPV6,)
    return SetType(types, _IPSET_KINDS[kind], set_name, kind)
