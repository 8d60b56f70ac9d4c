"""The conntrack timeout objects live in a namespace, with their values (what `-j CT --timeout NAME` uses).

iptables-save prints a CT rule's timeout by name only (its first four characters), so an import from a
live namespace reads the objects themselves over nfnetlink_cttimeout: a GET dump, decoded with the
netlink plumbing and the attribute numbers of ctkit/kernel/cttimeout.py. The kernel reports every state
of an object's protocol (the ones it was not given carry the kernel's defaults).
"""
from __future__ import annotations

import socket
import struct

from ctkit.kernel import ctnetlink as nl
from ctkit.kernel import cttimeout as ct

_L3 = {socket.AF_INET: "ipv4", socket.AF_INET6: "ipv6"}
_L4 = {v: k for k, v in ct.L4PROTO.items()}


def objects(netns: str | None) -> dict[str, dict]:
    """name -> {"family", "protocol", "policy": {state: seconds}} for every tcp/udp timeout object."""
    out: dict[str, dict] = {}
    with nl.open_in(netns, timeout=5) as sock:
        for buf, length in sock.request(ct.NFNL_SUBSYS_CTNETLINK_TIMEOUT, ct.MSG_GET, socket.AF_UNSPEC, b"",
                                        dump=True, what="list conntrack timeouts"):
            for off in nl.messages(buf, length):
                a = nl.message_attrs(buf, off)
                if not {ct.CTA_TIMEOUT_NAME, ct.CTA_TIMEOUT_L3PROTO, ct.CTA_TIMEOUT_L4PROTO} <= set(a):
                    continue
                p, n = a[ct.CTA_TIMEOUT_NAME]
                name = bytes(buf[p:p + n]).rstrip(b"\0").decode("utf-8", "replace")
                l3 = struct.unpack_from(">H", buf, a[ct.CTA_TIMEOUT_L3PROTO][0])[0]
                proto = _L4.get(buf[a[ct.CTA_TIMEOUT_L4PROTO][0]])
                if proto is None or l3 not in _L3:
                    continue
                states = {v: k for k, v in ct.STATE_ATTR[proto].items()}
                policy: dict[str, int] = {}
                if ct.CTA_TIMEOUT_DATA in a:
                    dp, dn = a[ct.CTA_TIMEOUT_DATA]
                    for t, vp, _vn in nl.attrs(buf, dp, dp + dn):
                        if t in states:
                            policy[states[t]] = struct.unpack_from(">I", buf, vp)[0]
                out[name] = {"family": _L3[l3], "protocol": proto,
                             "policy": {s: policy[s] for s in ct.STATE_ATTR[proto] if s in policy}}
    return out
