"""The packet matrix: for every example policy, which side gets it and which real
packets to send. Written once as data; test_differential.py runs it against each
backend and compares what the kernel did.

A probe goes from one namespace of the lab pair to the other:
  to="policy": the other side opens towards the host that has the policy (incoming);
  to="peer":   the host with the policy opens towards the other side (outgoing).
net picks the addresses: doc4 (192.0.2.x), lan4 (10.0.0.x) or v6 (2001:db8::x).

What each probe observes (Outcome):
  result   tcp: open | refused | timeout; udp: reply | request-only | none;
           icmp: reply | none; ftp: "<control>/<data>" for a passive FTP exchange
  tracked  the policy host's conntrack table has an entry for the flow
  helper   that entry carries helper=ftp
`expect` holds absolute expectations (what the policy means), so the test can
fail when both backends agree on the wrong thing.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

#: net -> (server address, client address)
NETS = {
    "doc4": ("192.0.2.10", "192.0.2.20"),
    "lan4": ("10.0.0.10", "10.0.0.20"),
    "v6": ("2001:db8::10", "2001:db8::20"),
}


@dataclass(frozen=True)
class Probe:
    kind: str  # tcp | udp | icmp | ftp
    to: str  # policy | peer
    net: str  # doc4 | lan4 | v6
    port: int | None = None
    expect: dict[str, Any] = field(default_factory=dict, hash=False)
    note: str = ""
    payload: bytes | None = None  # udp: the datagram to send (default b"ping")

    @property
    def name(self) -> str:
        arrow = "->" if self.to == "policy" else "<-"
        size = f" {len(self.payload)}B" if self.payload is not None else ""
        return f"{self.kind}{'/' + str(self.port) if self.port else ''}{size} {arrow} {self.net}"


@dataclass(frozen=True)
class Case:
    policy: str  # file name under examples/
    side: str  # server | client: the namespace that gets the policy
    probes: tuple[Probe, ...]


@dataclass(frozen=True)
class Outcome:
    result: str
    tracked: bool
    helper: bool = False


def P(kind: str, to: str, net: str, port: int | None = None, note: str = "", payload: bytes | None = None,
      **expect: Any) -> Probe:
    return Probe(kind, to, net, port, dict(expect), note, payload)


OPEN_UNTRACKED = {"result": "open", "tracked": False}
OPEN_TRACKED = {"result": "open", "tracked": True}
DROPPED = {"result": "timeout", "tracked": False}

#: UDP payload sizes that make IPv4 packets of a given length (20 bytes IP + 8 bytes UDP)
def _udp4(length: int, head: bytes = b"") -> bytes:
    return head + b"x" * (length - 28 - len(head))


A2S_INFO = b"\xff\xff\xff\xffTSource Engine Query\x00"

CASES: tuple[Case, ...] = (
    Case("dns-server.json", "server", (
        P("udp", "policy", "doc4", 53, "DNS query: answered, never tracked", result="reply", tracked=False),
        P("udp", "policy", "v6", 53, result="reply", tracked=False),
        P("tcp", "policy", "doc4", 53, **OPEN_UNTRACKED),
        P("tcp", "policy", "v6", 53, **OPEN_UNTRACKED),
        P("tcp", "policy", "lan4", 22, "ssh from the LAN", **OPEN_TRACKED),
        P("tcp", "policy", "doc4", 22, "ssh from outside the LAN", **DROPPED),
        P("tcp", "policy", "v6", 22, "2001:db8::20 is not in fd00::/8", **DROPPED),
        P("tcp", "policy", "doc4", 8080, **DROPPED),
        P("udp", "policy", "doc4", 5353, result="none", tracked=False),
        P("icmp", "policy", "doc4", result="reply", tracked=True),
        P("icmp", "policy", "v6", result="reply", tracked=True),
        P("tcp", "peer", "doc4", 8080, "the server's own connections: replies are established", **OPEN_TRACKED),
        P("udp", "peer", "doc4", 53, "the server's own DNS query: its untracked answer is accepted (dns-client-replies)",
          result="reply", tracked=False),
        P("tcp", "peer", "v6", 53, **OPEN_UNTRACKED),
    )),
    Case("web-server-notrack.json", "server", (
        P("tcp", "policy", "doc4", 80, **OPEN_UNTRACKED),
        P("tcp", "policy", "v6", 80, **OPEN_UNTRACKED),
        P("tcp", "policy", "doc4", 443, **OPEN_TRACKED),
        P("tcp", "policy", "v6", 443, **OPEN_TRACKED),
        P("tcp", "policy", "lan4", 22, **OPEN_TRACKED),
        P("tcp", "policy", "doc4", 22, "rule refuse: tcp reset", result="refused", tracked=False),
        P("tcp", "policy", "doc4", 8080, result="refused", tracked=False),
        P("tcp", "policy", "v6", 8080, result="refused", tracked=False),
        P("udp", "policy", "doc4", 5353, result="none", tracked=False),
        P("icmp", "policy", "doc4", result="reply"),
        P("tcp", "peer", "doc4", 8080, **OPEN_TRACKED),
        P("tcp", "peer", "doc4", 80, "the server's own HTTP connection: untracked, replies accepted", **OPEN_UNTRACKED),
        P("tcp", "peer", "v6", 80, **OPEN_UNTRACKED),
    )),
    Case("ftp-helper.json", "server", (
        P("ftp", "policy", "doc4", 21, "passive data connection admitted only as related",
          result="open/open", tracked=True, helper=True),
        P("tcp", "policy", "doc4", 40021, "the data port without a PASV: not related", **DROPPED),
        P("ftp", "policy", "lan4", 21, "control accepted only for 192.0.2.10", result="timeout/timeout",
          tracked=False, helper=False),
        P("tcp", "policy", "v6", 21, **DROPPED),
        P("icmp", "policy", "doc4", result="reply", tracked=True),
        P("icmp", "policy", "v6", "ICMPv6 is accepted: neighbour discovery", result="reply", tracked=True),
        P("tcp", "peer", "doc4", 8080, **OPEN_TRACKED),
    )),
    Case("server-baseline.json", "server", (
        P("udp", "policy", "doc4", 53, result="reply", tracked=False),
        P("tcp", "policy", "doc4", 53, **OPEN_UNTRACKED),
        P("tcp", "policy", "doc4", 80, "accepted in chain web", **OPEN_TRACKED),
        P("tcp", "policy", "doc4", 443, **OPEN_TRACKED),
        P("tcp", "policy", "doc4", 8080, "web returns: input's policy drop", **DROPPED),
        P("tcp", "policy", "lan4", 22, **OPEN_TRACKED),
        P("tcp", "policy", "doc4", 22, **DROPPED),
        P("ftp", "policy", "doc4", 21, "a helper but no accept rule for port 21", result="timeout/timeout",
          helper=False),
        P("icmp", "policy", "doc4", result="reply", tracked=True),
        P("tcp", "policy", "v6", 80),
        P("udp", "policy", "v6", 53),
        P("tcp", "peer", "doc4", 8080, **OPEN_TRACKED),
        P("udp", "peer", "doc4", 53, "the host's own DNS query: the untracked answer is accepted", result="reply",
          tracked=False),
    )),
    Case("stateful-client.json", "client", (
        P("tcp", "peer", "doc4", 8080, "the client opens: allowed", **OPEN_TRACKED),
        P("tcp", "peer", "v6", 8080, **OPEN_TRACKED),
        P("udp", "peer", "doc4", 5353, result="reply", tracked=True),
        P("udp", "peer", "v6", 5353, result="reply", tracked=True),
        P("icmp", "peer", "doc4", result="reply", tracked=True),
        P("icmp", "peer", "v6", result="reply", tracked=True),
        P("tcp", "policy", "doc4", 8080, "nobody opens to the client", **DROPPED),
        P("tcp", "policy", "v6", 8080, **DROPPED),
        P("udp", "policy", "doc4", 5353, result="none", tracked=False),
        P("udp", "policy", "v6", 5353, result="none", tracked=False),
        P("icmp", "policy", "doc4", result="none", tracked=False),
        P("icmp", "policy", "v6", note="icmpv6 is accepted for neighbour discovery, echo included",
          result="reply"),
    )),
    Case("memcached-notrack.yaml", "server", (
        P("tcp", "policy", "doc4", 11211, "whitelisted client", **OPEN_UNTRACKED),
        P("udp", "policy", "doc4", 11211, result="reply", tracked=False),
        P("tcp", "policy", "v6", 11211, **OPEN_UNTRACKED),
        P("udp", "policy", "v6", 11211, result="reply", tracked=False),
        P("tcp", "policy", "lan4", 11211, "10.0.0.20 is not whitelisted", **DROPPED),
        P("udp", "policy", "lan4", 11211, result="none", tracked=False),
        P("tcp", "policy", "doc4", 8080, **DROPPED),
        P("icmp", "policy", "doc4", result="reply"),
        P("tcp", "peer", "doc4", 8080, **OPEN_TRACKED),
        P("udp", "peer", "doc4", 5353, result="reply", tracked=True),
    )),
    Case("game-server-flood.json", "server", (
        P("udp", "policy", "doc4", 27015, "an ordinary game datagram", payload=_udp4(60), result="reply", tracked=True),
        P("udp", "policy", "doc4", 27015, "0-32 bytes: dropped", payload=b"", result="none", tracked=False),
        P("udp", "policy", "doc4", 27015, "32 bytes: dropped", payload=_udp4(32), result="none", tracked=False),
        P("udp", "policy", "doc4", 27015, "33 bytes: passes", payload=_udp4(33), result="reply", tracked=True),
        P("udp", "policy", "doc4", 27020, "exactly 222 bytes: dropped", payload=_udp4(222), result="none",
          tracked=False),
        P("udp", "policy", "doc4", 27020, "223 bytes: passes", payload=_udp4(223), result="reply", tracked=True),
        P("udp", "policy", "doc4", 27015, "the A2S_INFO signature: dropped", payload=A2S_INFO, result="none",
          tracked=False),
        P("udp", "policy", "doc4", 27015, "ffffffff then another byte: passes", payload=b"\xff\xff\xff\xffUxyz",
          result="reply", tracked=True),
        P("udp", "policy", "v6", 27015, "IPv6 headers are 40 bytes: 48 bytes pass", payload=b"", result="reply",
          tracked=True),
        P("udp", "policy", "v6", 27015, "222 bytes of IPv6: dropped", payload=b"x" * 174, result="none",
          tracked=False),
        P("udp", "policy", "v6", 27015, "the signature rule is IPv4 only", payload=A2S_INFO, result="reply",
          tracked=True),
        P("udp", "policy", "doc4", 27031, "outside the game ports", payload=b"", result="none", tracked=False),
        P("tcp", "policy", "doc4", 27015, **OPEN_TRACKED),
        P("tcp", "policy", "v6", 27030, **OPEN_TRACKED),
        P("tcp", "policy", "doc4", 8080, **DROPPED),
    )),
    Case("maintenance-toggle.json", "server", (
        P("tcp", "policy", "doc4", 80, "maintenance is off: the web is open", **OPEN_TRACKED),
        P("tcp", "policy", "v6", 443, **OPEN_TRACKED),
        P("tcp", "policy", "lan4", 22, **OPEN_TRACKED),
        P("tcp", "policy", "doc4", 22, **DROPPED),
        P("tcp", "policy", "doc4", 8080, **DROPPED),
        P("icmp", "policy", "v6", result="reply"),
    )),
    Case("dns-short-timeouts.json", "server", (
        P("udp", "policy", "doc4", 53, "tracked, with the short timeout policy", result="reply", tracked=True),
        P("udp", "policy", "v6", 53, result="reply", tracked=True),
        P("tcp", "policy", "doc4", 53, **OPEN_TRACKED),
        P("tcp", "policy", "lan4", 22, **OPEN_TRACKED),
        P("tcp", "policy", "doc4", 22, **DROPPED),
        P("udp", "policy", "doc4", 5353, result="none", tracked=False),
        P("icmp", "policy", "v6", result="reply", tracked=True),
    )),
    Case("blocklist-set.json", "server", (
        P("tcp", "policy", "doc4", 80, "web port from the set", **OPEN_TRACKED),
        P("tcp", "policy", "v6", 443, **OPEN_TRACKED),
        P("tcp", "policy", "lan4", 22, "dispatched by the verdict map to chain ssh", **OPEN_TRACKED),
        P("tcp", "policy", "doc4", 22, "chain ssh accepts only 10.0.0.0/8", **DROPPED),
        P("tcp", "policy", "lan4", 2222, "the map's second key", **OPEN_TRACKED),
        P("tcp", "policy", "doc4", 8080, **DROPPED),
        P("icmp", "policy", "doc4", result="reply", tracked=True),
    )),
)
