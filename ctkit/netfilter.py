"""Netfilter's own vocabulary, stated once for every stage that needs it.

These are facts of the kernel and of nft's language, not choices of ctkit:
the policy model accepts them, the backends write them, the kernel readers
decode them. Each stage imports them from here instead of keeping a copy.
"""
from __future__ import annotations

#: the netfilter hooks a policy's base chains attach to, in packet order
BASE_CHAINS = ("prerouting", "input", "forward", "output", "postrouting")

#: conntrack timeout policy states per protocol, in the kernel's attribute order:
#: state k is CTA_TIMEOUT_<PROTO>_<STATE> = k + 1 (include/uapi/linux/netfilter/nfnetlink_cttimeout.h),
#: and the names are nft's (`ct timeout ... policy = { established: 300 }`)
TIMEOUT_STATES: dict[str, tuple[str, ...]] = {
    "tcp": ("syn_sent", "syn_recv", "established", "fin_wait", "close_wait", "last_ack", "time_wait",
            "close", "syn_sent2", "retrans", "unack"),
    "udp": ("unreplied", "replied"),
}

#: protocols that exist in one address family only
FAMILY_ONLY_PROTOCOLS: dict[str, str] = {"icmp": "ipv4", "icmpv6": "ipv6"}

#: DSCP class names (RFC 2474 class selectors, RFC 2597 assured forwarding, RFC 3246 expedited
#: forwarding) -> codepoint; nft lists a codepoint by its name when it has one
DSCP_CLASSES: dict[str, int] = {**{f"cs{i}": 8 * i for i in range(8)},
                                **{f"af{c}{d}": 8 * c + 2 * d for c in range(1, 5) for d in range(1, 4)},
                                "ef": 46}
DSCP_NAMES: dict[int, str] = {v: k for k, v in DSCP_CLASSES.items()}
