"""The policy as ctkit understands it: small frozen, typed objects.

build_policy() turns a schema-valid document into these objects; the checks
here are the ones about single values (addresses, port ranges). Checks that
relate several parts of a policy live in lint.py.
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Mapping, Union

from ctkit.errors import Problem
from ctkit.values import PortRange  # noqa: F401 - part of the model's vocabulary

Network = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]

BASE_CHAINS = ("prerouting", "input", "forward", "output", "postrouting")
PORT_PROTOCOLS = frozenset({"tcp", "udp", "udplite", "sctp", "dccp"})

#: policy helper name -> {control protocol: kernel helper name}
HELPER_KERNEL_NAMES: dict[str, dict[str, str]] = {
    "ftp": {"tcp": "ftp"},
    "irc": {"tcp": "irc"},
    "tftp": {"udp": "tftp"},
    "amanda": {"udp": "amanda"},
    "sip": {"udp": "sip", "tcp": "sip"},
    "h323": {"tcp": "Q.931", "udp": "RAS"},
    "pptp": {"tcp": "pptp"},
    "snmp": {"udp": "snmp"},
    "sane": {"tcp": "sane"},
    "netbios-ns": {"udp": "netbios-ns"},
}
#: helpers the kernel registers for IPv4 only
IPV4_ONLY_HELPERS = frozenset({"irc", "pptp", "snmp", "netbios-ns"})

#: policy conntrack keys -> sysctl name under net.netfilter
SETTING_SYSCTLS: dict[str, str] = {
    "max": "nf_conntrack_max",
    "buckets": "nf_conntrack_buckets",
    "expect_max": "nf_conntrack_expect_max",
    "helper_autoassign": "nf_conntrack_helper",
    "tcp_loose": "nf_conntrack_tcp_loose",
    "tcp_be_liberal": "nf_conntrack_tcp_be_liberal",
    "acct": "nf_conntrack_acct",
    "timestamp": "nf_conntrack_timestamp",
    "events": "nf_conntrack_events",
}
TIMEOUT_SYSCTLS: dict[str, str] = {
    "generic": "nf_conntrack_generic_timeout",
    "icmp": "nf_conntrack_icmp_timeout",
    "icmpv6": "nf_conntrack_icmpv6_timeout",
    "udp": "nf_conntrack_udp_timeout",
    "udp_stream": "nf_conntrack_udp_timeout_stream",
    **{f"tcp_{s}": f"nf_conntrack_tcp_timeout_{s}" for s in (
        "syn_sent", "syn_recv", "established", "fin_wait", "close_wait", "last_ack",
        "time_wait", "close", "max_retrans", "unacknowledged")},
}




@dataclass(frozen=True)
class Limit:
    """A token bucket: `rate` packets per `per`, at most `burst` at once; by: one bucket per address."""
    rate: int
    per: str = "second"
    burst: int = 5
    by: str | None = None  # saddr | daddr


@dataclass(frozen=True)
class Log:
    prefix: str | None = None
    level: str = "warn"
    limit: Limit | None = None


@dataclass(frozen=True)
class Queue:
    lo: int
    hi: int
    bypass: bool = False
    fanout: bool = False


DSCP_CLASSES = {**{f"cs{i}": 8 * i for i in range(8)},
                **{f"af{c}{d}": 8 * c + 2 * d for c in range(1, 5) for d in range(1, 4)}, "ef": 46}


@dataclass(frozen=True)
class Payload:
    """(bytes at base+offset, len(value) of them) & mask == value."""
    base: str  # nh | th
    offset: int
    value: bytes
    mask: bytes | None = None


@dataclass(frozen=True)
class Signature:
    """A byte string searched between offsets start and end of the packet."""
    pattern: bytes
    algo: str = "bm"
    start: int = 0
    end: int = 65535


@dataclass(frozen=True)
class Setting:
    """One host conntrack setting: the policy key, its sysctl and the wanted value."""

    key: str
    sysctl: str
    value: int
    pointer: str


@dataclass(frozen=True)
class Notrack:
    name: str
    pointer: str
    protocols: tuple[str, ...] = ()
    ports: tuple[PortRange, ...] = ()
    peers: tuple[Network, ...] = ()
    saddr: tuple[Network, ...] = ()
    daddr: tuple[Network, ...] = ()
    iif: str | None = None
    oif: str | None = None
    direction: str = "both"
    family: str | None = None
    counter: bool = True
    comment: str | None = None


@dataclass(frozen=True)
class Helper:
    name: str
    helper: str
    protocol: str
    ports: tuple[PortRange, ...]
    pointer: str
    saddr: tuple[Network, ...] = ()
    daddr: tuple[Network, ...] = ()
    direction: str = "in"
    family: str | None = None
    comment: str | None = None

    @property
    def kernel_name(self) -> str:
        return HELPER_KERNEL_NAMES[self.helper][self.protocol]


@dataclass(frozen=True)
class Rule:
    id: str  # the user's name, or <chain>[<index>]
    pointer: str
    chain: str
    protocols: tuple[str, ...] = ()
    family: str | None = None
    saddr: tuple[Network, ...] = ()
    daddr: tuple[Network, ...] = ()
    sport: tuple[PortRange, ...] = ()
    dport: tuple[PortRange, ...] = ()
    iif: str | None = None
    oif: str | None = None
    ct_state: tuple[str, ...] = ()
    action: str | None = None  # accept drop reject return, or None with jump/goto
    reject_with: str | None = None
    jump: str | None = None
    goto: str | None = None
    counter: bool = True
    log: Log | None = None
    comment: str | None = None
    length: tuple[PortRange, ...] = ()  # inclusive ranges of packet length
    payload: tuple[Payload, ...] = ()
    signature: Signature | None = None
    limit: Limit | None = None
    when: str | None = None  # a toggle: the rule applies only while it is on
    ct_mark_set: int | None = None
    ct_label_set: int | None = None
    saddr_set: str | None = None  # "@name" references
    daddr_set: str | None = None
    sport_set: str | None = None
    dport_set: str | None = None
    match_set: tuple[str, tuple[str, ...]] | None = None  # (set, packet fields)
    vmap: tuple[str, tuple[tuple[str, str], ...]] | None = None  # (key, ((value, verdict), ...))
    queue: Queue | None = None
    mss: int | None = None  # 0: clamp to the path MTU
    dscp: int | None = None
    mark_set: int | None = None
    connmark: str | None = None  # save | restore

    @property
    def target(self) -> str | None:
        return self.jump or self.goto


@dataclass(frozen=True)
class AddrRange:
    """An inclusive range of addresses of one family (lo == hi: one address)."""
    lo: ipaddress.IPv4Address | ipaddress.IPv6Address
    hi: ipaddress.IPv4Address | ipaddress.IPv6Address

    @property
    def family(self) -> str:
        return "ipv4" if self.lo.version == 4 else "ipv6"


@dataclass(frozen=True)
class Nat:
    """One NAT rule (policy `nat`): matches on a flow's first packet and how to rewrite it."""
    id: str
    pointer: str
    type: str  # snat | masquerade | dnat | redirect
    protocols: tuple[str, ...] = ()
    family: str | None = None
    saddr: tuple[Network, ...] = ()
    daddr: tuple[Network, ...] = ()
    sport: tuple[PortRange, ...] = ()
    dport: tuple[PortRange, ...] = ()
    iif: str | None = None
    oif: str | None = None
    to_addr: AddrRange | None = None
    to_port: PortRange | None = None
    counter: bool = True
    comment: str | None = None


#: timeout policy states per protocol (nft ct timeout / nfnetlink_cttimeout attribute order)
TIMEOUT_STATES: dict[str, tuple[str, ...]] = {
    "tcp": ("syn_sent", "syn_recv", "established", "fin_wait", "close_wait", "last_ack", "time_wait",
            "close", "syn_sent2", "retrans", "unack"),
    "udp": ("unreplied", "replied"),
}


@dataclass(frozen=True)
class Timeout:
    """A conntrack timeout policy and the flows it is attached to."""
    name: str
    pointer: str
    protocol: str
    policy: tuple[tuple[str, int], ...]  # (state, seconds) in TIMEOUT_STATES order
    ports: tuple[PortRange, ...] = ()
    saddr: tuple[Network, ...] = ()
    daddr: tuple[Network, ...] = ()
    direction: str = "in"
    family: str | None = None
    comment: str | None = None


@dataclass(frozen=True)
class Zone:
    """A conntrack zone for the flows that match."""
    name: str
    pointer: str
    zone: int
    zone_direction: str = "both"
    protocols: tuple[str, ...] = ()
    ports: tuple[PortRange, ...] = ()
    saddr: tuple[Network, ...] = ()
    daddr: tuple[Network, ...] = ()
    iif: str | None = None
    oif: str | None = None
    direction: str = "in"
    family: str | None = None
    comment: str | None = None


SET_TYPES = ("ipv4_addr", "ipv6_addr", "inet_service")


@dataclass(frozen=True)
class SetMember:
    """One member: one value per part of the set's type (addresses as networks, ports as PortRange)."""
    parts: tuple
    timeout: int | None = None


def set_family(types: tuple[str, ...]) -> str | None:
    """ipv4 or ipv6 when a set's address parts are of one family; None without address parts."""
    fams = {{"ipv4_addr": "ipv4", "ipv6_addr": "ipv6"}[t] for t in types if t != "inet_service"}
    return fams.pop() if len(fams) == 1 else None


@dataclass(frozen=True)
class NamedSet:
    name: str
    pointer: str
    types: tuple[str, ...]
    interval: bool = False
    timeout: int | None = None
    members: tuple[SetMember, ...] = ()


@dataclass(frozen=True)
class Toggle:
    """A runtime switch and the value the policy file gives it."""
    name: str
    value: bool
    pointer: str


@dataclass(frozen=True)
class Chain:
    name: str
    pointer: str
    policy: str | None = None
    rules: tuple[Rule, ...] = ()
    comment: str | None = None

    @property
    def is_base(self) -> bool:
        return self.name in BASE_CHAINS


@dataclass(frozen=True)
class Policy:
    version: int
    table: str
    source: str = field(compare=False)
    settings: tuple[Setting, ...] = ()
    notrack: tuple[Notrack, ...] = ()
    helpers: tuple[Helper, ...] = ()
    chains: tuple[Chain, ...] = field(default=())
    nat: tuple[Nat, ...] = ()
    toggles: tuple[Toggle, ...] = ()
    timeouts: tuple[Timeout, ...] = ()
    zones: tuple[Zone, ...] = ()
    sets: tuple[NamedSet, ...] = ()
    description: str | None = None
    #: JSON pointer -> line in the source file (for messages only)
    lines: Mapping[str, int] = field(default_factory=dict, compare=False, repr=False)

    def chain(self, name: str) -> Chain | None:
        return next((c for c in self.chains if c.name == name), None)

    def line_of(self, pointer: str) -> int | None:
        while pointer not in self.lines and pointer:
            pointer = pointer.rsplit("/", 1)[0]
        return self.lines.get(pointer)


# ------------------------------------------------------------------ values

def check_network(text: str) -> tuple[str, str] | None:
    """None if text is an address or prefix; else (message, hint)."""
    try:
        ipaddress.ip_network(text, strict=True)
        return None
    except ValueError:
        pass
    try:
        loose = ipaddress.ip_network(text, strict=False)
    except ValueError:
        return (f"{text!r} is not an IPv4 or IPv6 address or prefix", "e.g. 192.0.2.10, 10.0.0.0/8, 2001:db8::/32")
    return f"{text!r} has host bits set", f"did you mean {str(loose)!r}?"


def _check_range(text: str, noun: str, minimum: int, example: str, limits: str) -> tuple[str, str] | None:
    """None if text is "N" or "lo-hi" with minimum <= lo <= hi <= 65535; else (message, hint)."""
    lo_s, _, hi_s = str(text).partition("-")
    try:
        lo, hi = int(lo_s), int(hi_s or lo_s)
    except ValueError:
        return f"{text!r} is not a {noun} or {noun} range", example
    if not (minimum <= lo <= 65535 and minimum <= hi <= 65535):
        return f"{noun} {text!r} is out of range", limits
    if lo > hi:
        return f"{noun} range {text!r} runs backwards", f"did you mean '{hi}-{lo}'?"
    return None


def check_port_range(text: str) -> tuple[str, str] | None:
    return _check_range(text, "port", 1, 'e.g. 53 or "1024-65535"', "ports are 1-65535")


def check_length_range(text: str) -> tuple[str, str] | None:
    return _check_range(text, "length", 0, 'e.g. 222 or "0-32"', "IP packet lengths are 0-65535")


def check_queue_range(text: str) -> tuple[str, str] | None:
    lo_s, _, hi_s = str(text).partition("-")
    try:
        lo, hi = int(lo_s), int(hi_s or lo_s)
    except ValueError:
        return f"{text!r} is not a queue range", 'e.g. "0-3"'
    if hi > 65535:
        return f"queue {text!r} is out of range", "queues are 0-65535"
    if lo >= hi:
        return f"queue range {text!r} is not a range", "give lo-hi with lo < hi, or a single number"
    return None


def _queue(value: dict | None, b, pointer: str):
    if value is None:
        return None
    num = value["num"]
    if isinstance(num, str):
        bad = check_queue_range(num)
        if bad:
            b.problem(pointer + "/num", *bad)
            return None
        lo, hi = (int(x) for x in num.split("-"))
    else:
        lo = hi = num
    return Queue(lo, hi, value.get("bypass", False), value.get("fanout", False))


def check_nat_address(text: str) -> tuple[str, str] | None:
    """None if text is an address or an inclusive range "first-last" of one family."""
    parts = text.split("-")
    if len(parts) > 2:
        return f"{text!r} is not an address or a range first-last", "e.g. 192.0.2.10 or 198.51.100.1-198.51.100.5"
    try:
        addrs = [ipaddress.ip_address(p) for p in parts]
    except ValueError:
        return (f"{text!r} is not an IPv4 or IPv6 address or range",
                "e.g. 192.0.2.10, 2001:db8::10 or 198.51.100.1-198.51.100.5 (no prefix length)")
    if len(addrs) == 2:
        if addrs[0].version != addrs[1].version:
            return f"range {text!r} mixes IPv4 and IPv6", "both ends must be of one family"
        if addrs[0] > addrs[1]:
            return f"address range {text!r} runs backwards", f"did you mean '{parts[1]}-{parts[0]}'?"
    return None


def parse_nat_address(text: str) -> AddrRange:
    lo, _, hi = text.partition("-")
    return AddrRange(ipaddress.ip_address(lo), ipaddress.ip_address(hi or lo))


# ------------------------------------------------------------------ building

class _Builder:
    """Collects problems while converting values; never raises for bad input."""

    def __init__(self, source: str):
        self.source = source
        self.problems: list[Problem] = []

    def problem(self, pointer: str, message: str, hint: str | None = None) -> None:
        self.problems.append(Problem(pointer, message, hint=hint, source=self.source))

    def networks(self, value: Any, pointer: str) -> tuple[Network, ...]:
        if value is None:
            return ()
        items = value if isinstance(value, list) else [value]
        out = []
        for i, text in enumerate(items):
            ptr = f"{pointer}/{i}" if isinstance(value, list) else pointer
            try:
                out.append(ipaddress.ip_network(text))
            except (ValueError, TypeError):
                self.problem(ptr, *(check_network(text) or (f"{text!r} is not an address", None)))
        return tuple(dict.fromkeys(out))

    def lengths(self, value: Any, pointer: str) -> tuple[PortRange, ...]:
        return self.ranges(value, pointer, check_length_range)

    def ports(self, value: Any, pointer: str) -> tuple[PortRange, ...]:
        return self.ranges(value, pointer, check_port_range)

    def ranges(self, value: Any, pointer: str, check) -> tuple[PortRange, ...]:
        """One value or a list of "N" / "lo-hi" values, each checked; problems named by pointer."""
        if value is None:
            return ()
        items = value if isinstance(value, list) else [value]
        out = []
        for i, item in enumerate(items):
            bad = check(str(item))
            if bad:
                self.problem(f"{pointer}/{i}" if isinstance(value, list) else pointer, *bad)
                continue
            lo_s, _, hi_s = str(item).partition("-")
            out.append(PortRange(int(lo_s), int(hi_s or lo_s)))
        return tuple(dict.fromkeys(out))


def _limit(value: dict | None) -> Limit | None:
    if value is None:
        return None
    return Limit(value["rate"], value.get("per", "second"), value.get("burst", 5), value.get("by"))


def _payload(value: dict) -> Payload:
    mask = bytes.fromhex(value["mask"]) if "mask" in value else None
    return Payload(value["base"], value["offset"], bytes.fromhex(value["hex"]), mask)


def _signature(value: dict | None) -> Signature | None:
    if value is None:
        return None
    return Signature(bytes.fromhex(value["hex"]), value.get("algo", "bm"), value.get("from", 0),
                     value.get("to", 65535))


def _ref(value: Any) -> str | None:
    return value[1:] if isinstance(value, str) and value.startswith("@") else None


def _plain(value: Any) -> Any:
    return None if _ref(value) else value


def _member_part(b: "_Builder", kind: str, value: Any, interval: bool, pointer: str):
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
        bad = check_network(text)
        if bad:
            b.problem(pointer, *bad)
            return None
        net = ipaddress.ip_network(text)
        if (net.version == 4) != (kind == "ipv4_addr"):
            b.problem(pointer, f"{text!r} is not of type {kind}")
            return None
        if net.prefixlen != net.max_prefixlen and not interval:
            b.problem(pointer, f"{text!r} is a prefix but the set has no interval flag", "add \"interval\": true")
            return None
        return net
    text = str(value)
    if "-" in text and not interval:
        b.problem(pointer, f"{text!r} is a range but the set has no interval flag", "add \"interval\": true")
        return None
    lo_s, _, hi_s = text.partition("-")
    try:
        lo, hi = int(lo_s), int(hi_s or lo_s)
    except ValueError:
        b.problem(pointer, f"{text!r} is not a port or port range")
        return None
    if not (0 <= lo <= hi <= 65535):
        b.problem(pointer, f"{text!r} is not a port range within 0-65535")
        return None
    return PortRange(lo, hi)


def _named_set(b: "_Builder", name: str, body: dict) -> NamedSet:
    p = f"/sets/{name}"
    types = tuple(body["type"]) if isinstance(body["type"], list) else (body["type"],)
    interval = body.get("interval", False)
    members = []
    for i, item in enumerate(body.get("elements", [])):
        ptr = f"{p}/elements/{i}"
        value, timeout = (item["value"], item.get("timeout")) if isinstance(item, dict) else (item, None)
        if timeout is not None and body.get("timeout") is None:
            b.problem(ptr + "/timeout", "a member timeout needs the set's timeout", "give the set a timeout")
        values = value if isinstance(value, list) else [value]
        if len(values) != len(types):
            b.problem(ptr, f"the set's type has {len(types)} part(s), this member {len(values)}")
            continue
        parts = tuple(_member_part(b, k, v, interval, ptr) for k, v in zip(types, values))
        if all(x is not None for x in parts):
            members.append(SetMember(parts, timeout))
    return NamedSet(name, p, types, interval, body.get("timeout"), tuple(members))


def _protocols(item: dict) -> tuple[str, ...]:
    if "protocol" in item:
        return (item["protocol"],)
    return tuple(item.get("protocols", ()))


def build_policy(doc: dict, source: str, lines: Mapping[str, int] | None = None
                 ) -> tuple[Policy | None, list[Problem]]:
    """Build the model from a schema-valid document. Returns (policy, problems)."""
    b = _Builder(source)
    settings = []
    ct = doc.get("conntrack", {})
    for key, sysctl in SETTING_SYSCTLS.items():
        if key in ct:
            settings.append(Setting(key, sysctl, int(ct[key]), f"/conntrack/{key}"))
    for key, sysctl in TIMEOUT_SYSCTLS.items():
        if key in ct.get("timeouts", {}):
            settings.append(Setting(f"timeouts.{key}", sysctl, int(ct["timeouts"][key]),
                                    f"/conntrack/timeouts/{key}"))

    notrack = []
    for i, item in enumerate(doc.get("notrack", [])):
        p = f"/notrack/{i}"
        notrack.append(Notrack(
            name=item["name"], pointer=p, protocols=_protocols(item),
            ports=b.ports(item.get("ports"), p + "/ports"),
            peers=b.networks(item.get("peers"), p + "/peers"),
            saddr=b.networks(item.get("saddr"), p + "/saddr"),
            daddr=b.networks(item.get("daddr"), p + "/daddr"),
            iif=item.get("iif"), oif=item.get("oif"),
            direction=item.get("direction", "both"), family=item.get("family"),
            counter=item.get("counter", True), comment=item.get("comment")))

    helpers = []
    for i, item in enumerate(doc.get("helpers", [])):
        p = f"/helpers/{i}"
        if item["protocol"] not in HELPER_KERNEL_NAMES[item["helper"]]:
            valid = ", ".join(HELPER_KERNEL_NAMES[item["helper"]])
            b.problem(p + "/protocol", f"helper {item['helper']!r} does not work over {item['protocol']}",
                      f"valid: {valid}")
            continue
        helpers.append(Helper(
            name=item["name"], helper=item["helper"], protocol=item["protocol"],
            ports=b.ports(item["ports"], p + "/ports"), pointer=p,
            saddr=b.networks(item.get("saddr"), p + "/saddr"),
            daddr=b.networks(item.get("daddr"), p + "/daddr"),
            direction=item.get("direction", "in"), family=item.get("family"),
            comment=item.get("comment")))

    chains = []
    for name, body in doc.get("chains", {}).items():
        cp = f"/chains/{name}"
        rules = []
        for i, r in enumerate(body.get("rules", [])):
            p = f"{cp}/rules/{i}"
            log = r.get("log")
            rules.append(Rule(
                id=r.get("name", f"{name}[{i}]"), pointer=p, chain=name,
                protocols=_protocols(r), family=r.get("family"),
                saddr=b.networks(_plain(r.get("saddr")), p + "/saddr"),
                daddr=b.networks(_plain(r.get("daddr")), p + "/daddr"),
                sport=b.ports(_plain(r.get("sport")), p + "/sport"),
                dport=b.ports(_plain(r.get("dport")), p + "/dport"),
                saddr_set=_ref(r.get("saddr")), daddr_set=_ref(r.get("daddr")),
                sport_set=_ref(r.get("sport")), dport_set=_ref(r.get("dport")),
                match_set=(r["match_set"]["name"], tuple(r["match_set"]["keys"])) if "match_set" in r else None,
                vmap=(r["vmap"]["key"], tuple(r["vmap"]["map"].items())) if "vmap" in r else None,
                iif=r.get("iif"), oif=r.get("oif"), ct_state=tuple(r.get("ct_state", ())),
                action=r.get("action"), reject_with=r.get("reject_with"),
                jump=r.get("jump"), goto=r.get("goto"), counter=r.get("counter", True),
                log=Log(log.get("prefix"), log.get("level", "warn"), _limit(log.get("limit")))
                if log is not None else None,
                comment=r.get("comment"), length=b.lengths(r.get("length"), p + "/length"),
                payload=tuple(_payload(x) for x in r.get("payload", ())),
                signature=_signature(r.get("signature")), limit=_limit(r.get("limit")), when=r.get("when"),
                ct_mark_set=r.get("ct_mark_set"), ct_label_set=r.get("ct_label_set"),
                queue=_queue(r.get("queue"), b, p + "/queue"),
                mss=(0 if r["mss"] == "pmtu" else r["mss"]) if "mss" in r else None,
                dscp=DSCP_CLASSES.get(r["dscp"], r["dscp"]) if "dscp" in r else None,
                mark_set=r.get("mark_set"), connmark=r.get("connmark")))
        chains.append(Chain(name=name, pointer=cp, policy=body.get("policy"),
                            rules=tuple(rules), comment=body.get("comment")))

    nat = []
    for i, r in enumerate(doc.get("nat", [])):
        p = f"/nat/{i}"
        bad = check_nat_address(r["to_addr"]) if "to_addr" in r else None
        if bad:
            b.problem(p + "/to_addr", *bad)
        to_port = b.ports(r.get("to_port"), p + "/to_port")
        nat.append(Nat(
            id="nat/" + r["name"] if "name" in r else f"nat[{i}]", pointer=p, type=r["type"], protocols=_protocols(r),
            family=r.get("family"),
            saddr=b.networks(r.get("saddr"), p + "/saddr"), daddr=b.networks(r.get("daddr"), p + "/daddr"),
            sport=b.ports(r.get("sport"), p + "/sport"), dport=b.ports(r.get("dport"), p + "/dport"),
            iif=r.get("iif"), oif=r.get("oif"),
            to_addr=parse_nat_address(r["to_addr"]) if "to_addr" in r and not bad else None,
            to_port=to_port[0] if to_port else None,
            counter=r.get("counter", True), comment=r.get("comment")))

    timeouts = []
    for i, t in enumerate(doc.get("timeouts", [])):
        p = f"/timeouts/{i}"
        states = TIMEOUT_STATES[t["protocol"]]
        for key in t["policy"]:
            if key not in states:
                b.problem(f"{p}/policy/{key}", f"{key!r} is not a {t['protocol']} state", "valid: " + ", ".join(states))
        timeouts.append(Timeout(
            name=t["name"], pointer=p, protocol=t["protocol"],
            policy=tuple((k, int(t["policy"][k])) for k in states if k in t["policy"]),
            ports=b.ports(t.get("ports"), p + "/ports"), saddr=b.networks(t.get("saddr"), p + "/saddr"),
            daddr=b.networks(t.get("daddr"), p + "/daddr"), direction=t.get("direction", "in"),
            family=t.get("family"), comment=t.get("comment")))
    zones = []
    for i, z in enumerate(doc.get("zones", [])):
        p = f"/zones/{i}"
        zones.append(Zone(
            name=z["name"], pointer=p, zone=z["zone"], zone_direction=z.get("zone_direction", "both"),
            protocols=_protocols(z), ports=b.ports(z.get("ports"), p + "/ports"),
            saddr=b.networks(z.get("saddr"), p + "/saddr"), daddr=b.networks(z.get("daddr"), p + "/daddr"),
            iif=z.get("iif"), oif=z.get("oif"), direction=z.get("direction", "in"), family=z.get("family"),
            comment=z.get("comment")))

    named_sets = tuple(_named_set(b, k, v) for k, v in doc.get("sets", {}).items())

    if b.problems:
        return None, b.problems
    return Policy(version=doc["version"], table=doc.get("table", "ctkit"), source=source,
                  settings=tuple(settings), notrack=tuple(notrack), helpers=tuple(helpers),
                  chains=tuple(chains), nat=tuple(nat),
                  toggles=tuple(Toggle(k, v, f"/toggles/{k}") for k, v in doc.get("toggles", {}).items()),
                  timeouts=tuple(timeouts), zones=tuple(zones), sets=named_sets,
                  description=doc.get("description"),
                  lines=lines if lines is not None else MappingProxyType({})), []
