"""nf_tables' ruleset generation id: a counter the kernel raises with every committed ruleset change in
a namespace (nft and iptables-nft alike; iptables-legacy does not touch it).

ctkit reads it before planning an apply and again under the change lock: the same number means
nothing changed in between, so the first reading still holds. One NFT_MSG_GETGEN request over the
netfilter netlink socket of ctkit/kernel/ctnetlink.py, opened after entering the namespace like every
netlink socket here. This was pyroute2's NFTSocket; importing pyroute2's nfnetlink modules took about
0.2 s of every apply and audit for a message of one attribute (benchmarks/bench_apply.py's profile),
so the request is written here; integration/test_nft_apply.py checks it against pyroute2's reading.
"""
from __future__ import annotations

import socket

from ctkit.errors import KernelError

NFNL_SUBSYS_NFTABLES = 10
NFT_MSG_GETGEN = 16
NFTA_GEN_ID = 1


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
