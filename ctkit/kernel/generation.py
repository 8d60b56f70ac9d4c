"""nf_tables' ruleset generation id: a counter the kernel raises with every committed ruleset change in
a namespace (nft and iptables-nft alike; iptables-legacy does not touch it).

ctkit reads it before planning an apply and again under the change lock: the same number means
nothing changed in between, so the first reading still holds. Read with pyroute2's nfnetlink
socket (NFT_MSG_GETGEN), created after entering the namespace like every netlink socket here.
"""
from __future__ import annotations

from ctkit.errors import KernelError
from ctkit.kernel.netns import entered


def generation(netns: str | None = None) -> int:
    """The namespace's current nf_tables generation id."""
    from pyroute2.netlink import NLM_F_REQUEST
    from pyroute2.netlink.nfnetlink.nftsocket import NFT_MSG_GETGEN, NFTSocket, nft_gen_msg
    with entered(netns):
        try:
            sock = NFTSocket()
        except OSError as exc:
            raise KernelError(f"cannot open an nf_tables netlink socket: {exc.strerror}") from None
        try:
            replies = list(sock.request_get(nft_gen_msg(), NFT_MSG_GETGEN, NLM_F_REQUEST))
        except OSError as exc:
            raise KernelError(f"cannot read the nf_tables generation id: {exc.strerror}") from None
        finally:
            sock.close()
    for msg in replies:
        value = msg.get_attr("NFTA_GEN_ID")
        if value is not None:
            return int(value)
    raise KernelError("the kernel answered the nf_tables generation request without an id")
