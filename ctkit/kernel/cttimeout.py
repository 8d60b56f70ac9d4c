"""Conntrack timeout objects over nfnetlink_cttimeout (what `nfct add timeout` does).

iptables' `-j CT --timeout NAME` names an object that must exist in the
namespace before the rule is added; nft keeps its own `ct timeout` objects in
its table and needs none of this. Debian's nftables and conntrack packages do
not ship the `nfct` tool, so ctkit sends the three messages itself: NEW (with
NLM_F_REPLACE: an existing object of the same protocol is updated in place),
GET (dump) and DELETE. The kernel refuses to delete an object that a rule or a
live flow still uses (EBUSY); delete() reports that instead of failing.
"""
from __future__ import annotations

import errno
import os
import socket
import struct

from ctkit.errors import KernelError
from ctkit.kernel.netns import entered
from ctkit.netfilter import TIMEOUT_STATES

NETLINK_NETFILTER = 12
NFNL_SUBSYS_CTNETLINK_TIMEOUT = 8
MSG_NEW, MSG_GET, MSG_DELETE = 0, 1, 2
NLM_F_REQUEST, NLM_F_ACK, NLM_F_DUMP, NLM_F_REPLACE, NLM_F_CREATE = 0x1, 0x4, 0x300, 0x100, 0x400
NLMSG_ERROR, NLMSG_DONE = 2, 3
NLA_F_NESTED = 0x8000
CTA_TIMEOUT_NAME, CTA_TIMEOUT_L3PROTO, CTA_TIMEOUT_L4PROTO, CTA_TIMEOUT_DATA = 1, 2, 3, 4
L4PROTO = {"tcp": socket.IPPROTO_TCP, "udp": socket.IPPROTO_UDP}
#: policy state -> CTA_TIMEOUT_<PROTO>_<STATE> (include/uapi/linux/netfilter/nfnetlink_cttimeout.h)
STATE_ATTR = {proto: {s: i + 1 for i, s in enumerate(states)} for proto, states in TIMEOUT_STATES.items()}
L3 = {"ipv4": socket.AF_INET, "ipv6": socket.AF_INET6}


def _attr(kind: int, data: bytes) -> bytes:
    length = 4 + len(data)
    return struct.pack("=HH", length, kind) + data + b"\0" * (-length % 4)


def _message(kind: int, flags: int, payload: bytes, family: int = socket.AF_UNSPEC, seq: int = 1) -> bytes:
    body = struct.pack("=BBH", family, 0, 0) + payload
    return struct.pack("=IHHII", 16 + len(body), (NFNL_SUBSYS_CTNETLINK_TIMEOUT << 8) | kind, flags, seq, 0) + body


def _attrs(data: bytes) -> dict[int, bytes]:
    out, i = {}, 0
    while i + 4 <= len(data):
        length, kind = struct.unpack_from("=HH", data, i)
        if length < 4:
            break
        out[kind & ~NLA_F_NESTED] = data[i + 4:i + length]
        i += (length + 3) & ~3
    return out


def _talk(netns: str | None, message: bytes, what: str) -> list[bytes]:
    """Send one request; return the payloads of the answers (a dump's objects), raise on error."""
    with entered(netns):
        s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
    try:
        s.settimeout(5)
        s.bind((0, 0))
        s.send(message)
        out = []
        while True:
            data = s.recv(1 << 16)
            i = 0
            while i + 16 <= len(data):
                length, kind, _flags, _seq, _pid = struct.unpack_from("=IHHII", data, i)
                if kind == NLMSG_ERROR:
                    (code,) = struct.unpack_from("=i", data, i + 16)
                    if code:
                        raise OSError(-code, f"{what}: {os.strerror(-code)}")
                    return out
                if kind == NLMSG_DONE:
                    return out
                out.append(data[i + 20:i + length])  # after nlmsghdr and nfgenmsg
                i += (length + 3) & ~3
    except socket.timeout:
        raise KernelError(f"{what}: no answer from nfnetlink_cttimeout") from None
    finally:
        s.close()


def put(name: str, family: str, protocol: str, policy: tuple[tuple[str, int], ...], netns: str | None) -> None:
    """Create the object, or update it in place when it exists with the same protocols."""
    data = b"".join(_attr(STATE_ATTR[protocol][k], struct.pack("!I", v)) for k, v in policy)
    payload = (_attr(CTA_TIMEOUT_NAME, name.encode() + b"\0") + _attr(CTA_TIMEOUT_L3PROTO, struct.pack("!H", L3[family]))
               + _attr(CTA_TIMEOUT_L4PROTO, struct.pack("B", L4PROTO[protocol]))
               + _attr(CTA_TIMEOUT_DATA | NLA_F_NESTED, data))
    try:
        _talk(netns, _message(MSG_NEW, NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE, payload),
              f"timeout {name}")
    except OSError as exc:
        hint = " (an object of that name exists for another protocol: remove the rules using it first)" \
            if exc.errno == errno.EINVAL else ""
        raise KernelError(f"cannot create conntrack timeout {name}: {exc.strerror}{hint}") from None


def names(netns: str | None) -> list[str]:
    """Every cttimeout object in the namespace."""
    try:
        answers = _talk(netns, _message(MSG_GET, NLM_F_REQUEST | NLM_F_DUMP, b""), "list timeouts")
    except OSError as exc:
        raise KernelError(f"cannot list conntrack timeouts: {exc.strerror}") from None
    return [_attrs(a)[CTA_TIMEOUT_NAME].rstrip(b"\0").decode() for a in answers if CTA_TIMEOUT_NAME in _attrs(a)]


def delete(name: str, netns: str | None) -> bool:
    """Delete one object; False when a rule or a live flow still uses it (the kernel says EBUSY)."""
    try:
        _talk(netns, _message(MSG_DELETE, NLM_F_REQUEST | NLM_F_ACK, _attr(CTA_TIMEOUT_NAME, name.encode() + b"\0")),
              f"delete timeout {name}")
    except OSError as exc:
        if exc.errno in (errno.EBUSY, errno.ENOENT):
            return False
        raise KernelError(f"cannot delete conntrack timeout {name}: {exc.strerror}") from None
    return True
