"""Conntrack timeout objects over nfnetlink_cttimeout (what `nfct add timeout` does).

iptables' `-j CT --timeout NAME` names an object that must exist in the
namespace before the rule is added; nft keeps its own `ct timeout` objects in
its table and needs none of this. Debian's nftables and conntrack packages do
not ship the `nfct` tool, so ctkit sends the three messages itself: NEW (with
NLM_F_REPLACE: an existing object of the same protocol is updated in place),
GET (dump) and DELETE. The kernel refuses to delete an object that a rule or a
live flow still uses (EBUSY); delete() reports that instead of failing. The
netlink plumbing (socket, packing, errors) is ctkit/kernel/ctnetlink.py's.
"""
from __future__ import annotations

import errno
import os
import socket

from ctkit.errors import KernelError
from ctkit.kernel import ctnetlink as nl
from ctkit.netfilter import TIMEOUT_STATES

NFNL_SUBSYS_CTNETLINK_TIMEOUT = 8
MSG_NEW, MSG_GET, MSG_DELETE = 0, 1, 2
CTA_TIMEOUT_NAME, CTA_TIMEOUT_L3PROTO, CTA_TIMEOUT_L4PROTO, CTA_TIMEOUT_DATA = 1, 2, 3, 4
L4PROTO = {"tcp": socket.IPPROTO_TCP, "udp": socket.IPPROTO_UDP}
#: policy state -> CTA_TIMEOUT_<PROTO>_<STATE> (include/uapi/linux/netfilter/nfnetlink_cttimeout.h)
STATE_ATTR = {proto: {s: i + 1 for i, s in enumerate(states)} for proto, states in TIMEOUT_STATES.items()}
L3 = {"ipv4": socket.AF_INET, "ipv6": socket.AF_INET6}


def _talk(netns: str | None, msg: int, what: str, payload: bytes = b"", dump: bool = False, flags: int = 0
          ) -> list[dict[int, bytes]]:
    """Send one request; return the attributes of the answers (a dump's objects).

    A refusal by the kernel raises OSError(errno, "<what>: <reason>"), which the callers word.
    """
    try:
        with nl.open_in(netns, timeout=5) as sock:
            return [{t: bytes(buf[p:p + n]) for t, (p, n) in nl.message_attrs(buf, off).items()}
                    for buf, length in sock.request(NFNL_SUBSYS_CTNETLINK_TIMEOUT, msg, socket.AF_UNSPEC, payload,
                                                    dump=dump, what=what, flags=flags)
                    for off in nl.messages(buf, length)]
    except KernelError as exc:
        code = getattr(exc, "errno", None)
        if code is None:
            raise
        raise OSError(code, f"{what}: {os.strerror(code)}") from None


def put(name: str, family: str, protocol: str, policy: tuple[tuple[str, int], ...], netns: str | None) -> None:
    """Create the object, or update it in place when it exists with the same protocols."""
    payload = (nl.attr(CTA_TIMEOUT_NAME, name.encode() + b"\0") + nl.u16(CTA_TIMEOUT_L3PROTO, L3[family])
               + nl.u8(CTA_TIMEOUT_L4PROTO, L4PROTO[protocol])
               + nl.nest(CTA_TIMEOUT_DATA, *(nl.u32(STATE_ATTR[protocol][k], v) for k, v in policy)))
    try:
        _talk(netns, MSG_NEW, f"timeout {name}", payload, flags=nl.NLM_F_CREATE | nl.NLM_F_REPLACE)
    except OSError as exc:
        hint = " (an object of that name exists for another protocol: remove the rules using it first)" \
            if exc.errno == errno.EINVAL else ""
        raise KernelError(f"cannot create conntrack timeout {name}: {exc.strerror}{hint}") from None


def names(netns: str | None) -> list[str]:
    """Every cttimeout object in the namespace."""
    try:
        answers = _talk(netns, MSG_GET, "list timeouts", dump=True)
    except OSError as exc:
        raise KernelError(f"cannot list conntrack timeouts: {exc.strerror}") from None
    return [a[CTA_TIMEOUT_NAME].rstrip(b"\0").decode() for a in answers if CTA_TIMEOUT_NAME in a]


def delete(name: str, netns: str | None) -> bool:
    """Delete one object; False when a rule or a live flow still uses it (the kernel says EBUSY)."""
    try:
        _talk(netns, MSG_DELETE, f"delete timeout {name}", nl.attr(CTA_TIMEOUT_NAME, name.encode() + b"\0"))
    except OSError as exc:
        if exc.errno in (errno.EBUSY, errno.ENOENT):
            return False
        raise KernelError(f"cannot delete conntrack timeout {name}: {exc.strerror}") from None
    return True
