"""Builder of the `sets` section: named sets and their members (given inline, and from an elements_file),
each part parsed by the set's type."""
from __future__ import annotations

import hashlib
import re
from dataclasses import replace
from pathlib import Path
from typing import Any

from ctkit.bulk import without_cycle_collection
from ctkit.errors import Problem
from ctkit.paths import Unreadable, read_regular
from ctkit.policy.builder import Builder
from ctkit.policy.checks import PORTS, BadValue, canonical_ipv4, check_nat_address, parse_nat_address, parse_network
from ctkit.policy.model import NamedSet, SetAddress, SetMember
from ctkit.terminal import excerpt

#: the largest elements_file read (a million IPv6 prefixes take about 40 MB)
MAX_ELEMENTS_FILE_BYTES = 64 << 20
#: bad lines of one elements_file reported; reading stops after them
MAX_FILE_PROBLEMS = 20
#: what a line of an elements_file may show in a message: a root tool told to read /etc/shadow as a
#: block list must not print its lines, so only text an address could be written with is echoed
_SHOWABLE = re.compile(r"[0-9A-Fa-f:./ -]{1,81}", re.ASCII)
#: where a comment starts: # (FireHOL's .netset, ipset lists) or ; (Spamhaus DROP: "1.10.16.0/20 ; SBL256894")
_COMMENT = re.compile("[#;]")
_NOUN = {"ipv4_addr": "IPv4 address or prefix", "ipv6_addr": "IPv6 address or prefix", "inet_service": "port"}


def build_sets(b: Builder, sets: dict, base: Path | None = None) -> tuple[NamedSet, ...]:
    """`base`: the directory a relative elements_file is relative to (the policy file's; None: the
    current directory)."""
    return tuple(_named_set(b, name, body, base) for name, body in sets.items())


def _named_set(b: Builder, name: str, body: dict, base: Path | None) -> NamedSet:
    p = f"/sets/{name}"
    types = tuple(body["type"]) if isinstance(body["type"], list) else (body["type"],)
    interval = body.get("interval", False)
    members: dict[SetMember, None] = {}  # each member once (nft refuses a repeated element), first order kept
    with without_cycle_collection():
        _inline(b, p, body, types, interval, members)
    path = digest = None
    if "elements_file" in body:
        read = _elements_file(b, f"{p}/elements_file", body["elements_file"], base, types, interval, members)
        path, digest = read or (None, None)
    return NamedSet(name, p, types, interval, body.get("timeout"), tuple(members), path, digest)


def _inline(b: Builder, p: str, body: dict, types: tuple[str, ...], interval: bool, members: dict) -> None:
    for i, item in enumerate(body.get("elements", [])):
        ptr = f"{p}/elements/{i}"
        value, timeout = (item["value"], item.get("timeout")) if isinstance(item, dict) else (item, None)
        if timeout is not None and body.get("timeout") is None:
            b.problem(ptr + "/timeout", "a member timeout needs the set's timeout", "give the set a timeout")
        values = value if isinstance(value, list) else [value]
        if len(values) != len(types):
            b.problem(ptr, f"the set's type has {len(types)} part(s), this member {len(values)}")
            continue
        parts = tuple(_member_part(b, k, v, interval, ptr) for k, v in zip(types, values, strict=True))
        if all(x is not None for x in parts):
            members.setdefault(SetMember(parts, timeout))


def _elements_file(b: Builder, pointer: str, given: str, base: Path | None, types: tuple[str, ...],
                   interval: bool, members: dict) -> tuple[str, str] | None:
    """Add the members listed in an elements_file to `members`; (the path read, sha256 of its bytes), or
    None after a problem.

    One value a line; `#` or `;` starts a comment (whole lines and the rest of a line); blank lines
    and a byte order mark are skipped. Read with paths.read_regular: a regular file of at most MAX_ELEMENTS_FILE_BYTES."""
    if len(types) != 1:
        b.problem(pointer, "an elements_file holds one value a line; a concatenation's members are given "
                  "in elements", "list them in \"elements\"")
        return None
    path = Path(given)
    if not path.is_absolute():
        path = (base if base is not None else Path.cwd()) / path
    try:
        raw = read_regular(path, MAX_ELEMENTS_FILE_BYTES)
    except Unreadable as exc:
        b.problem(pointer, f"{excerpt(given)}: {exc.reason}", "one address or prefix a line; a relative path "
                  "is relative to the policy file")
        return None
    try:
        text = raw.decode("utf-8-sig")  # a byte order mark, as some editors write it, is not a member
    except UnicodeDecodeError as exc:
        b.problem(pointer, f"{excerpt(given)} is not UTF-8 text (byte {exc.start})")
        return None
    digest = hashlib.sha256(raw).hexdigest()
    del raw
    kind = types[0]
    lines = Builder(str(path))  # the problems of its lines are named by file and line
    with without_cycle_collection():
        stopped = _read_lines(b, lines, pointer, text, kind, interval, members)
    if stopped is not None:
        b.problems.append(Problem(pointer, f"{MAX_FILE_PROBLEMS} bad lines: {excerpt(str(path))} was not read "
                                  f"after line {stopped}", source=str(path), line=stopped,
                                  hint="fix these and load again"))
    return str(path), digest


def _read_lines(b: Builder, lines: Builder, pointer: str, text: str, kind: str, interval: bool,
                members: dict) -> int | None:
    """Add the members of an elements_file's text, reporting its bad lines to `b`; after
    MAX_FILE_PROBLEMS of them, stop: the line it stopped at (None: it read every line)."""
    bad = 0
    for number, line in enumerate(text.split("\n"), 1):
        value = _COMMENT.split(line, 1)[0].strip() if "#" in line or ";" in line else line.strip()
        if not value:
            continue
        if bad >= MAX_FILE_PROBLEMS:
            return number - 1
        fast = _fast_ipv4(value) if kind == "ipv4_addr" else None
        if fast is not None and (interval or not fast.is_prefix):  # the common line, parsed once
            members.setdefault(SetMember((fast,)))
            continue
        before = len(lines.problems)
        if not _SHOWABLE.fullmatch(value):
            lines.problem(pointer, "not a member of this set (the line is not shown: it holds characters "
                          "no address or port is written with)", f"one {_NOUN[kind]} a line; # or ; starts a comment")
            part = None
        else:
            part = _member_part(lines, kind, value, interval, pointer)
        if part is not None and len(lines.problems) == before:
            members.setdefault(SetMember((part,)))
            continue
        bad += 1
        for problem in lines.problems[before:]:
            b.problems.append(replace(problem, line=number))
        del lines.problems[before:]
    return None


#: prefix lengths as they are written canonically ("08" is left to ipaddress)
_IPV4_LENGTHS = {str(n): n for n in range(33)}


def _fast_ipv4(text: str) -> SetAddress | None:
    """The SetAddress of an IPv4 address or prefix written canonically (checks.canonical_ipv4), else None
    (then ipaddress decides, and words the problem): a tenth of ipaddress's time, for the line most block
    lists are made of."""
    address, slash, length_text = text.partition("/")
    packed = canonical_ipv4(address)
    if packed is None:
        return None
    if not slash:
        return SetAddress(text, 4, 32)
    length = _IPV4_LENGTHS.get(length_text)
    if length is None or int.from_bytes(packed, "big") & ((1 << (32 - length)) - 1):
        return None  # not canonical, or host bits set: parse_network names it
    return SetAddress(address if length == 32 else text, 4, length)


def _member_part(b: Builder, kind: str, value: Any, interval: bool, pointer: str):
    if kind in ("ipv4_addr", "ipv6_addr"):
        text = str(value)
        if "-" in text and interval:
            bad = check_nat_address(text)
            if bad:
                b.problem(pointer, *bad)
                return None
            rng = parse_nat_address(text)
            ok = rng.family == ("ipv4" if kind == "ipv4_addr" else "ipv6")
            if not ok:
                b.problem(pointer, f"{text!r} is not of type {kind}")
                return None
            return rng
        address = _fast_ipv4(text) if kind == "ipv4_addr" else None
        if address is None:
            try:
                address = SetAddress.of(parse_network(text))
            except BadValue as bad:
                b.problem(pointer, bad.message, bad.hint)
                return None
        if (address.version == 4) != (kind == "ipv4_addr"):
            b.problem(pointer, f"{text!r} is not of type {kind}")
            return None
        if address.is_prefix and not interval:
            b.problem(pointer, f"{text!r} is a prefix but the set has no interval flag", "add \"interval\": true")
            return None
        return address
    text = str(value)
    if "-" in text and not interval:
        b.problem(pointer, f"{excerpt(text)} is a range but the set has no interval flag", "add \"interval\": true")
        return None
    return b.range(text, pointer, PORTS)
