"""Two facts of a namespace's nf_tables read straight over netlink, without libnftables: the ruleset's
generation id and the names of its tables.

The generation id is a counter the kernel raises with every committed ruleset change in a namespace
(nft and iptables-nft alike; iptables-legacy does not touch it). ctkit reads it before planning an
apply and again under the change lock: the same number means nothing changed in between, so the first
reading still holds.

Both are one request over the netfilter netlink socket of ctkit/kernel/ctnetlink.py, opened after
entering the namespace like every netlink socket here. The generation id was read with pyroute2's
NFTSocket: importing pyroute2's nfnetlink modules took about 0.2 s of every apply and audit for a
message of one attribute. The table names were `list tables` through libnftables, which fetches the
whole ruleset into its cache first (0.13 s beside one table of 10,000 rules, for a list of names).
integration/test_nft_apply.py checks both against pyroute2's and nft's readings.
"""
from __future__ import annotations

import socket

from ctkit.errors import KernelError

NFNL_SUBSYS_NFTABLES = 10
NFT_MSG_GETTABLE = 1
NFT_MSG_GETGEN = 16
NFTA_TABLE_NAME = 1
NFTA_GEN_ID = 1
#: nfgenmsg's family (NFPROTO_*) -> nft's word for it
FAMILIES = {1: "inet", 2: "ip", 3: "arp", 5: "netdev", 7: "bridge", 10: "ip6"}
_NFGEN_FAMILY = 16  # offset of nfgenmsg.nfgen_family in a message


def generation(netns: str | None = None) -> int:
    """The namespace's current nf_tables generation id."""
    from ctkit.kernel import ctnetlink as nl
    found = None
    with nl.open_in(netns) as sock:
        for chunk, length in sock.request(NFNL_SUBSYS_NFTABLES, NFT_MSG_GETGEN, socket.AF_UNSPEC, dump=False,
                                          what="reading the nf_tables generation id"):
            for off in nl.messages(chunk, length):
                value = nl.be32(chunk, nl.message_attrs(chunk, off).get(NFTA_GEN_ID))
                found = value if value is not None else found
    if found is None:
        raise KernelError("the kernel answered the nf_tables generation request without an id")
    return found


def tables(netns: str | None = None) -> list[tuple[str, str]]:
    """(family, name) of every nf_tables table in the namespace, in the kernel's order."""
    from ctkit.kernel import ctnetlink as nl
    out = []
    with nl.open_in(netns) as sock:
        for chunk, length in sock.request(NFNL_SUBSYS_NFTABLES, NFT_MSG_GETTABLE, socket.AF_UNSPEC,
                                          what="listing the nf_tables tables"):
            for off in nl.messages(chunk, length):
                loc = nl.message_attrs(chunk, off).get(NFTA_TABLE_NAME)
                if loc is None:
                    continue
                name = bytes(chunk[loc[0]:loc[0] + loc[1]]).split(b"\0", 1)[0].decode("utf-8", "replace")
                family = chunk[off + _NFGEN_FAMILY]
                out.append((FAMILIES.get(family, str(family)), name))
    return out
