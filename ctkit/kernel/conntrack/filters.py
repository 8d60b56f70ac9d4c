"""What to select from the conntrack table: `Filter`, built from user text by `Filter.parse`.

Family always, mark/mask everywhere, status since 6.1, tuple (protocol,
ports, exact original IPv4 addresses) since 5.8 and zone since 6.8 are asked
of the kernel (IPv6 addresses are not: the 6.18 kernel's IPv6 address filter
was measured to select the non-matching entries); every filter is checked
again here, so an older kernel that ignores an attribute still gives the
right answer.

Errors name the Filter field (`src`, `reply_dst`, `mark`...), never a
command-line option: a `FilterError` keeps the field apart from the rest of
its message, so the CLI can say which of its options was wrong.
"""
from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass
from typing import Callable

from ctkit.errors import UsageError
from ctkit.kernel import ctnetlink as nl
from ctkit.kernel.conntrack.columns import (
    AF_INET,
    AF_INET6,
    DCCP_STATES,
    FAMILIES,
    FAMILY_NAMES,
    PROTOCOLS,
    SCTP_STATES,
    STATUS_BITS,
    STATUS_VALUES,
    TCP_STATES,
)

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class FilterError(UsageError):
    """A filter value that cannot be used: the message is `field` followed by `detail`."""

    def __init__(self, field: str, detail: str) -> None:
        super().__init__(field + detail)
        self.field, self.detail = field, detail


@dataclass(frozen=True)
class Filter:
    """What to select. None means any. Build one with `Filter.parse` from user text."""

    family: int | None = None
    proto: int | None = None
    src: Network | None = None
    dst: Network | None = None
    reply_src: Network | None = None
    reply_dst: Network | None = None
    sport: int | None = None
    dport: int | None = None
    states: frozenset[str] | None = None
    status: int = 0  # bits that must be set
    status_clear: int = 0  # bits that must be clear
    mark: int | None = None
    mark_mask: int = 0xFFFFFFFF
    zone: int | None = None
    helper: str | None = None

    @classmethod
    def parse(cls, *, family: str | None = None, proto: str | None = None, src: str | None = None,
              dst: str | None = None, reply_src: str | None = None, reply_dst: str | None = None,
              sport: int | None = None, dport: int | None = None, state: str | None = None,
              status: str | None = None, mark: str | None = None, zone: int | None = None,
              helper: str | None = None) -> "Filter":
        fam = None
        if family:
            if family.lower() not in FAMILIES:
                raise UsageError(f"unknown family {family!r} (use ipv4 or ipv6)")
            fam = FAMILIES[family.lower()]
        nets = {}
        for key, text in (("src", src), ("dst", dst), ("reply_src", reply_src), ("reply_dst", reply_dst)):
            if text:
                try:
                    net = ipaddress.ip_network(text, strict=False)
                except ValueError:
                    raise FilterError(key, f": not an address or CIDR: {text!r}") from None
                want = AF_INET if net.version == 4 else AF_INET6
                if fam is not None and fam != want:
                    raise FilterError(key, f" {text} is not an {FAMILY_NAMES[fam]} address")
                fam = want
                nets[key] = net
        protonum = None
        if proto:
            protonum = PROTOCOLS.get(proto.lower())
            if protonum is None:
                if not proto.isdigit() or not 0 <= int(proto) <= 255:
                    raise UsageError(f"unknown protocol {proto!r} (known: {', '.join(PROTOCOLS)} or 0-255)")
                protonum = int(proto)
        for name, port in (("sport", sport), ("dport", dport)):
            if port is not None and not 0 <= port <= 65535:
                raise FilterError(name, f" must be 0-65535, not {port}")
        states = None
        if state:
            states = frozenset(s.strip().upper() for s in state.split(",") if s.strip())
            bad = sorted(states - set(TCP_STATES))
            other = [s for s in bad if s in SCTP_STATES or s in DCCP_STATES]
            if other:  # the filter reads the TCP state only: an SCTP or DCCP state would select nothing
                raise UsageError(f"state {', '.join(other)} is an SCTP or DCCP state; the state filter selects "
                                 f"TCP states only (known: {', '.join(TCP_STATES)})")
            if bad:
                raise UsageError(f"unknown state {', '.join(bad)} (known: {', '.join(TCP_STATES)})")
        set_bits = clear_bits = 0
        if status:
            for word in status.split(","):
                word = word.strip().upper()
                neg = word.startswith("!")
                word = word.lstrip("!")
                if word == "UNREPLIED":  # what conntrack -L shows for !SEEN_REPLY
                    word, neg = "SEEN_REPLY", not neg
                if word not in STATUS_VALUES:
                    raise UsageError(f"unknown status flag {word!r} (known: {', '.join(STATUS_BITS)}, UNREPLIED)")
                if neg:
                    clear_bits |= STATUS_VALUES[word]
                else:
                    set_bits |= STATUS_VALUES[word]
        mark_value, mark_mask = None, 0xFFFFFFFF
        if mark:
            text, _, mask = mark.partition("/")
            try:
                mark_value = int(text, 0)
                mark_mask = int(mask, 0) if mask else 0xFFFFFFFF
            except ValueError:
                raise FilterError("mark", f" must be VALUE or VALUE/MASK (decimal or 0x hex), not {mark!r}") from None
            if not (0 <= mark_value <= 0xFFFFFFFF and 0 <= mark_mask <= 0xFFFFFFFF):
                raise FilterError("mark", " value and mask must fit in 32 bits")
            if mark_value & ~mark_mask:  # the kernel compares (mark & mask) == value: never true
                raise FilterError("mark", f" {mark_value:#x} has bits outside its mask {mark_mask:#x}, so it "
                                          f"can never match (did you mean {mark_value & mark_mask:#x}/{mark_mask:#x}?)")
        if zone is not None and not 0 <= zone <= 65535:
            raise FilterError("zone", f" must be 0-65535, not {zone}")
        return cls(family=fam, proto=protonum, sport=sport, dport=dport, states=states, status=set_bits,
                   status_clear=clear_bits, mark=mark_value, mark_mask=mark_mask, zone=zone,
                   helper=helper, **nets)

    # -- what the kernel can do -----------------------------------------

    def request(self, kernel: tuple[int, int]) -> bytes:
        """Dump request attributes for the filters this kernel applies itself."""
        parts = []
        if self.mark is not None:
            parts += [nl.u32(nl.CTA_MARK, self.mark), nl.u32(nl.CTA_MARK_MASK, self.mark_mask)]
        if self.status and kernel >= (6, 1):  # the kernel matches (status & mask) == value
            parts += [nl.u32(nl.CTA_STATUS, self.status),
                      nl.u32(nl.CTA_STATUS_MASK, self.status | self.status_clear)]
        elif self.status_clear and kernel >= (6, 1):
            parts += [nl.u32(nl.CTA_STATUS, 0), nl.u32(nl.CTA_STATUS_MASK, self.status_clear)]
        if self.zone is not None and kernel >= (6, 8):
            parts.append(nl.u16(nl.CTA_ZONE, self.zone))
        if kernel >= (5, 8) and self.family is not None:
            parts.append(self._tuple_filter())
        return b"".join(parts)

    def _tuple_filter(self) -> bytes:
        flags, ip, proto = 0, [], []
        # Exact IPv4 addresses only: CIDRs are not expressible, and on Linux 6.18 the
        # IPv6 address filter was measured to match every address *but* the one given.
        for net, kind, bit in ((self.src, nl.CTA_IP_V4_SRC, nl.FILTER_IP_SRC),
                               (self.dst, nl.CTA_IP_V4_DST, nl.FILTER_IP_DST)):
            if net is not None and net.version == 4 and net.prefixlen == 32:
                ip.append(nl.attr(kind, net.network_address.packed))
                flags |= bit
        if self.proto is not None:
            proto.append(nl.u8(nl.CTA_PROTO_NUM, self.proto))
            flags |= nl.FILTER_PROTO_NUM
            if self.proto in (6, 17, 33, 132, 136):
                if self.sport is not None:
                    proto.append(nl.u16(nl.CTA_PROTO_SRC_PORT, self.sport))
                    flags |= nl.FILTER_SRC_PORT
                if self.dport is not None:
                    proto.append(nl.u16(nl.CTA_PROTO_DST_PORT, self.dport))
                    flags |= nl.FILTER_DST_PORT
        if not flags:
            return b""
        tup = []
        if ip:
            tup.append(nl.nest(nl.CTA_TUPLE_IP, *ip))
        if proto:
            tup.append(nl.nest(nl.CTA_TUPLE_PROTO, *proto))
        return (nl.nest(nl.CTA_TUPLE_ORIG, *tup)
                # the filter flags are NLA_U32 in host order, unlike the conntrack values
                + nl.nest(nl.CTA_FILTER, nl.attr(nl.CTA_FILTER_ORIG_FLAGS, struct.pack("=I", flags)),
                          nl.attr(nl.CTA_FILTER_REPLY_FLAGS, struct.pack("=I", 0))))

    # -- what ctkit checks on every entry --------------------------------

    def checks(self) -> list[tuple[str, Callable[[object], bool]]]:
        """(raw field, predicate on its raw value) for every filter that is set."""
        out: list[tuple[str, Callable[[object], bool]]] = []
        if self.family is not None:
            out.append(("family", lambda v, f=self.family: v == f))
        if self.proto is not None:
            out.append(("proto", lambda v, p=self.proto: v == p))
        for key in ("src", "dst", "reply_src", "reply_dst"):
            net = getattr(self, key)
            if net is not None:
                base, mask, width = int(net.network_address), int(net.netmask), net.max_prefixlen // 8
                out.append((key, lambda v, b=base, m=mask, w=width:
                            v is not None and len(v) == w and int.from_bytes(v, "big") & m == b))
        if self.sport is not None:
            out.append(("sport", lambda v, p=self.sport: v == p))
        if self.dport is not None:
            out.append(("dport", lambda v, p=self.dport: v == p))
        if self.states is not None:
            names = self.states
            out.append(("tcp_state", lambda v, n=names: v is not None and v < len(TCP_STATES)
                        and TCP_STATES[v] in n))
        if self.status or self.status_clear:
            out.append(("status", lambda v, s=self.status, c=self.status_clear:
                        v is not None and v & s == s and not v & c))
        if self.mark is not None:
            out.append(("mark", lambda v, m=self.mark, k=self.mark_mask: (v or 0) & k == m & k))
        if self.zone is not None:
            out.append(("zone", lambda v, z=self.zone: (v or 0) == z))
        if self.helper is not None:
            out.append(("helper", lambda v, h=self.helper.encode(): v is not None and v.split(b"\0", 1)[0] == h))
        return out
