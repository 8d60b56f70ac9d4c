"""iptables backend: IR -> iptables-restore documents, one for IPv4 and one for IPv6.

Where ctkit's nft table owns whole base chains, on iptables it owns only the
chains named with its prefix (``CTKIT-`` for table ``ctkit``), one per
built-in chain it extends (raw PREROUTING -> CTKIT-PREROUTING, filter INPUT ->
CTKIT-INPUT, ...) plus the policy's user-defined chains (CTKIT-web). Each is
reached by a single jump; the kernel stage (ctkit/backends/iptables/kernel.py) inserts
that jump once and replaces the chains' contents atomically per table.

How IR nodes become iptables (RENDERERS, one function per node type):

    NfProto            which document the rule goes into (ipv4 | ipv6)
    L4Proto            -p PROTO, one rule per protocol (icmp only in ipv4, icmpv6 only in ipv6)
    Addr saddr|daddr   -s NET / -d NET, one rule per network; 'any' -> one rule with -s, one with -d;
                       negated: ! -s NET, several -> one -m iprange ! --src-range LO-HI per network, one rule
    Port sport|dport   -m tcp --dport N[:M], several -> -m multiport --dports (at most 15); negated: ! --dport,
                       ! --dports, past 15 slots one -m multiport ! --dports per 15 in the one rule
    AddrType           -m addrtype [!] --src-type|--dst-type LOCAL,... (ip6tables: BROADCAST left out of a
                       negated list: IPv6 has none; the lint refuses it un-negated outside IPv4)
    Port any           -m multiport --ports (source or destination port: the shorter equivalent)
    Iface              -i NAME / -o NAME
    CtState            -m conntrack --ctstate A,B
    Length             -m length --length LO:HI, one rule per range
    Payload            -m u32 --u32 "..." (transport header: IPv4 only, u32 cannot skip IPv6 extension headers)
    Signature          -m string --string|--hex-string ... --algo bm|kmp [--from N] [--to N]
    Limit              -m limit --limit R/unit [--limit-burst B]; per address: -m hashlimit --hashlimit-upto
    Toggle             the rule moves to chain TR-<toggle>-<k>, reached through switch chain
                       TG-<toggle>-<k> that holds a jump while the toggle is on (see _Toggles)
    Counter            nothing: every iptables rule counts
    Log                its own rule, -j LOG --log-prefix (at most 29 characters) --log-level N
    Notrack            -j CT --notrack (raw table only)
    Nat                -j SNAT --to-source A[-B][:P[-Q]] | DNAT --to-destination ... | MASQUERADE
                       [--to-ports P[-Q]] | REDIRECT [--to-ports P[-Q]] (nat table; IPv6 addresses in [])
    SetCtHelper        -j CT --helper KERNEL_NAME (raw table only; the template is set before conntrack)
    SetCtTimeout       -j CT --timeout <table>-<name>-4|6 (raw; the kernel stage creates the object over
                       nfnetlink_cttimeout: Document.timeouts)
    SetCtZone          -j CT --zone|--zone-orig|--zone-reply N (raw)
    SetCtMark          -j CONNMARK --set-xmark V/0xffffffff, a rule of its own before the verdict
    SetCtLabel         -m connlabel --label N --set, a rule of its own before the verdict
    TcpSyn             --tcp-flags SYN,RST SYN (joined to -m tcp --dport when present)
    ClampMss           -j TCPMSS --set-mss N | --clamp-mss-to-pmtu, a rule of its own
    SetDscp            -j DSCP --set-dscp 0xNN (mangle table only), SetMark -j MARK --set-xmark V/0xffffffff,
    Connmark           -j CONNMARK --save-mark|--restore-mark --nfmask 0xffffffff --ctmask 0xffffffff
    SetLookup          -m set --match-set <table>-<name> src|dst (the kernel stage creates the ipset:
                       hash:ip, hash:net with interval, bitmap:port); concatenations: a named error
    VerdictMap         one rule per entry: -i/-o NAME or -m tcp --dport N, then the entry's verdict
    Queue              -j NFQUEUE --queue-num N | --queue-balance LO:HI [--queue-bypass] [--queue-cpu-fanout]
    Verdict            accept -> -j RETURN (top-level chain) | MARK + RETURN (nested, see below);
                       -j DROP|REJECT --reject-with ...|RETURN|CTKIT-x, goto -> -g CTKIT-x

Base chains. nft runs a base chain's policy when the chain ends, when it
says `return`, and when a chain reached by `goto` ends; its accept ends only
ctkit's base chain, and the packet goes on to the other base chains at the
hook (another table's, fail2ban's). On iptables ctkit's top-level chain is
itself called from the built-in chain, so the same meaning needs: accept ->
`-j RETURN` (the built-in chain goes on after ctkit's jump: a foreign rule
placed there sees what ctkit accepted, where `-j ACCEPT` would end the whole
built-in chain); policy drop -> a last rule `-j DROP`; policy accept -> no
last rule (falling off the end hands the packet back the same way); `return`
-> the policy's verdict; `goto X` under policy drop -> `-j X` followed by the
same matches `-j DROP`.

Nested accepts. An accept in a chain below the top-level one (a user chain,
a toggle's TR- chain) must leave every chain up to the built-in one. It sets
the reserved packet-mark bit (ctkit/accept_mark.py, ACCEPT_BIT) and returns;
after each jump to a chain that may do so (Accepts.marking, transitively) a
nested caller returns while the bit is set and the top-level chain goes (-g)
to <PREFIX>ACCEPT-END, which clears the bit and ends, so the packet is back in
the built-in chain with its mark as it was. The top-level chain clears the bit
first; a goto from it to such a chain becomes a jump, the test, then the
goto's end (-j DROP or -j RETURN), since -g would carry the bit out. A
toggle's switch chain holds only its jump, so the bit comes back through its
end. All of this is written only when something nested accepts (accepts_of):
other policies keep their rules as before. A policy that sets the bit itself
(mark, ct mark) is a CompileError.

IR base chains map to iptables tables: chains that set conntrack templates
(notrack, helpers) or run before conntrack go to raw; input, forward and
output at filter priority go to filter; prerouting and postrouting at filter
priority go to mangle; nat chains (type nat) go to the nat table. Rules are printed the way iptables-save prints them, so what
the kernel holds can be compared with what ctkit generated, line by line.
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Any, Callable

from ctkit import accept_mark
from ctkit import names as kname
from ctkit.backends.iptables.document import BACKEND, TABLE_ORDER, Chain, Document, IpSet, Ruleset, Table, TimeoutObject
from ctkit.backends.iptables.layout import check_name, layout
from ctkit.compile import ir
from ctkit.errors import CompileError
from ctkit.netfilter import FAMILY_ONLY_PROTOCOLS
from ctkit.values import PortRange

MAX_LOG_PREFIX = 29  # xt_LOG: 30 bytes with the terminating NUL
MAX_COMMENT = 255  # xt_comment: 256 bytes with the terminating NUL
MAX_MULTIPORT = 15  # XT_MULTI_PORTS; a range takes two slots

#: protocol name in the policy -> iptables -p name, per family (absent: never matches there)
_PROTO = {
    "ipv4": {"icmp": "icmp"},
    "ipv6": {"icmpv6": "ipv6-icmp"},
}

#: protocols with their own port match (-m tcp --dport ...); others use multiport
_PORT_MATCH = frozenset({"tcp", "udp", "sctp", "dccp"})
_MULTIPORT = frozenset({"tcp", "udp", "udplite", "sctp", "dccp"})
_CTSTATE_ORDER = ("invalid", "new", "related", "established", "untracked")
_LOG_LEVELS = {"emerg": 0, "alert": 1, "crit": 2, "err": 3, "warn": 4, "notice": 5, "info": 6, "debug": 7}
_DEFAULT_LOG_LEVEL = 4  # iptables-save leaves it out
_REJECT_WITH = {
    "ipv4": {"port-unreachable": "icmp-port-unreachable", "host-unreachable": "icmp-host-unreachable",
             "net-unreachable": "icmp-net-unreachable", "admin-prohibited": "icmp-admin-prohibited",
             "tcp-reset": "tcp-reset"},
    "ipv6": {"port-unreachable": "icmp6-port-unreachable", "host-unreachable": "icmp6-addr-unreachable",
             "net-unreachable": "icmp6-no-route", "admin-prohibited": "icmp6-adm-prohibited",
             "tcp-reset": "tcp-reset"},
}
#: where REJECT may be used (ipt_REJECT: filter table, INPUT/FORWARD/OUTPUT)
_REJECT_TABLES = frozenset({"filter"})

# order of the parts of a rule in iptables-save output
_SLOT_SRC, _SLOT_DST, _SLOT_IN, _SLOT_OUT, _SLOT_PROTO, _SLOT_MATCH, _SLOT_COMMENT, _SLOT_TARGET = range(8)


# ------------------------------------------------------------ rendering ctx

@dataclass(frozen=True)
class Objects:
    """The policy table's name and its helper and timeout objects by name (kernel names derive from both)."""
    table: str
    by_name: Any  # Mapping object name -> CtHelperObject | CtTimeoutObject


@dataclass(frozen=True)
class _Ctx:
    """What a renderer may need besides the node: the rule, where it lands, the family."""
    rule: ir.Rule
    family: str
    table: str  # iptables table
    chain: ir.Chain
    names: Any  # Mapping IR chain name -> iptables chain name
    objects: Objects  # the table's helper and timeout objects
    expanded: int = 1  # how many iptables rules the IR rule became (one per protocol, network, ...)
    accepts: Accepts | None = None  # None: no nested chain accepts (and nothing tests the mark)
    nested: bool = False  # the rule lands in a chain reached by a jump from ctkit's top-level chain

    @property
    def is_base(self) -> bool:
        """The rule lands in ctkit's top-level chain (the one the built-in chain jumps to)."""
        return self.chain.hook is not None and not self.nested

    def marks(self, chain: str) -> bool:
        """Whether IR chain `chain` may return to its caller with accept_mark.ACCEPT_BIT set."""
        return self.accepts is not None and chain in self.accepts.marking

    def after_marking_jump(self) -> Alone:
        """The rule after a jump to a chain that may have accepted: leave ctkit's chains when it did."""
        if not self.is_base:
            return Alone(accept_mark.RETURN_IF_SET)
        assert self.accepts is not None
        return Alone(accept_mark.goto_end_if_set(self.accepts.prefix))


class Alone(str):
    """A statement's rule of its own: without the IR rule's matches and comment (the mark tests)."""


@dataclass(frozen=True)
class Accepts:
    """How an accept in a nested chain ends ctkit's evaluation (ctkit/accept_mark.py)."""
    prefix: str
    marking: frozenset[str]  # user chains that may return with the bit set: they, or a chain they reach, accept


def _fail(ctx: _Ctx, construct: str, detail: str) -> CompileError:
    return CompileError(BACKEND, construct, ctx.rule.origin, detail)


def quote(value: str) -> str:
    """Quote a string the way iptables-save does (xtables_save_string: a backslash before each \\, " and
    '), so that a spec ctkit writes is the spec iptables-save prints back and an unchanged chain is seen
    as unchanged (with ' left bare, a comment holding one made every apply refill its chain)."""
    safe = set("_-0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
    if value and all(c in safe for c in value):
        return value
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("'", "\\'") + '"'


def _proto_of(ctx: _Ctx) -> str | None:
    return next((m.protocols[0] for m in ctx.rule.matches if isinstance(m, ir.L4Proto)), None)


# ------------------------------------------------------------------ matches
# each renderer returns (slot, text) parts; slots put them in iptables-save order

Part = tuple[int, str]


def _nfproto(m: ir.NfProto, ctx: _Ctx) -> list[Part]:
    return []  # chose the document already


def _l4proto(m: ir.L4Proto, ctx: _Ctx) -> list[Part]:
    (proto,) = m.protocols  # _expand leaves one per rule
    return [(_SLOT_PROTO, "-p " + _PROTO[ctx.family].get(proto, proto))]


def _addr(m: ir.Addr, ctx: _Ctx) -> list[Part]:
    flag, slot = ("-s", _SLOT_SRC) if m.field == "saddr" else ("-d", _SLOT_DST)
    if m.negated and len(m.networks) > 1:
        # `! -s` takes one network; one iprange match per network, all in the one rule, excludes them all
        option = "--src-range" if m.field == "saddr" else "--dst-range"
        return [(_SLOT_MATCH, f"-m iprange ! {option} {n.network_address}-{n.broadcast_address}")
                for n in map(ipaddress.ip_network, m.networks)]
    (net,) = m.networks  # _one_each leaves one per rule
    text = str(ipaddress.ip_network(net))
    return [(slot, f"{'! ' if m.negated else ''}{flag} {text}")]


def _port_text(r) -> str:
    return str(r.lo) if r.lo == r.hi else f"{r.lo}:{r.hi}"


def _port(m: ir.Port, ctx: _Ctx) -> list[Part]:
    proto = _proto_of(ctx)
    if proto not in _MULTIPORT:
        raise _fail(ctx, "Port", f"ports need one of {', '.join(sorted(_MULTIPORT))} (got {proto or 'none'})")
    single = len(m.ranges) == 1
    neg = "! " if m.negated else ""
    if m.field != "any" and single and proto in _PORT_MATCH:
        return [(_SLOT_MATCH, f"-m {proto} {neg}--{m.field} {_port_text(m.ranges[0])}")]
    option = {"sport": "--sports", "dport": "--dports", "any": "--ports"}[m.field]
    chunks = _multiport_chunks(m.ranges)
    if len(chunks) > 1 and not m.negated:
        slots = sum(1 if r.lo == r.hi else 2 for r in m.ranges)
        raise _fail(ctx, "Port", f"{slots} port slots; iptables multiport takes at most {MAX_MULTIPORT} "
                                 "(a range counts as two): use ranges or split the rule")
    # negated: one multiport match per chunk, all in the rule, excludes every chunk's ports
    return [(_SLOT_MATCH, f"-m multiport {neg}{option} " + ",".join(map(_port_text, c))) for c in chunks]


def _multiport_chunks(ranges) -> list[list]:
    """The ranges in groups that fit one multiport match (a range takes two of its slots)."""
    chunks: list[list] = [[]]
    used = 0
    for r in ranges:
        need = 1 if r.lo == r.hi else 2
        if used + need > MAX_MULTIPORT:
            chunks.append([])
            used = 0
        chunks[-1].append(r)
        used += need
    return chunks


#: address types iptables' addrtype match knows under ctkit's names, in its bit order (iptables-save
#: prints a list in that order); ip6tables has no BROADCAST
_ADDRTYPES = {"unicast": "UNICAST", "local": "LOCAL", "broadcast": "BROADCAST", "multicast": "MULTICAST"}


def _addr_type(m: ir.AddrType, ctx: _Ctx) -> list[Part]:
    types = [t for t in _ADDRTYPES if t in m.types and not (t == "broadcast" and ctx.family == "ipv6")]
    if not types:  # only broadcast, negated (the lint refuses it positive outside IPv4): true for every packet
        return []
    option = "--src-type" if m.field == "saddr" else "--dst-type"
    return [(_SLOT_MATCH, f"-m addrtype {'! ' if m.negated else ''}{option} " + ",".join(_ADDRTYPES[t] for t in types))]


def _iface(m: ir.Iface, ctx: _Ctx) -> list[Part]:
    return [(_SLOT_IN, f"-i {m.name}")] if m.direction == "in" else [(_SLOT_OUT, f"-o {m.name}")]


def _ctstate(m: ir.CtState, ctx: _Ctx) -> list[Part]:
    states = [s.upper() for s in _CTSTATE_ORDER if s in m.states]
    return [(_SLOT_MATCH, "-m conntrack --ctstate " + ",".join(states))]


def _length(m: ir.Length, ctx: _Ctx) -> list[Part]:
    (r,) = m.ranges  # _expand leaves one per rule
    return [(_SLOT_MATCH, f"-m length --length {_port_text(r)}")]


def _u32(m: ir.Payload, ctx: _Ctx) -> str:
    """The u32 test for m, spelled as iptables-save prints it.

    u32 reads 4 bytes at a time. The window ends where the wanted bytes end, so it
    needs exactly the bytes nft's payload load needs; only a match within the
    first 4 bytes of the base reads from the base on (every IP and transport
    header has 4 bytes or more).
    """
    start = m.offset + m.size - 4
    shift = 0
    if start < 0:
        start, shift = 0, 8 * (4 - m.offset - m.size)
    mask = m.mask if m.mask is not None else (1 << 8 * m.size) - 1
    test = f"{hex(start)}" + (f">>{hex(shift)}" if shift else "") + f"&{hex(mask)}={hex(m.value)}"
    if m.base == "nh":
        return test
    if ctx.family == "ipv6":
        raise _fail(ctx, "payload", "iptables u32 cannot find the transport header behind IPv6 extension "
                                    "headers; give the rule family ipv4, or use base nh, or the nft backend")
    return "0x0>>0x16&0x3c@" + test  # skip the IPv4 header: IHL * 4


def _payload(m: ir.Payload, ctx: _Ctx) -> list[Part]:
    return [(_SLOT_MATCH, f'-m u32 --u32 "{_u32(m, ctx)}"')]


def _signature(m: ir.Signature, ctx: _Ctx) -> list[Part]:
    # iptables-save prints a printable pattern as --string, anything else as --hex-string
    printable = all(32 <= b < 127 for b in m.pattern) and not m.pattern.endswith(b"\\")
    escaped = m.pattern.decode().replace("\\", "\\\\").replace('"', '\\"') if printable else ""
    text = (f'--string "{escaped}"' if printable
            else f'--hex-string "|{m.pattern.hex()}|"')
    text = f"-m string {text} --algo {m.algo}"
    if m.start:
        text += f" --from {m.start}"
    if m.end != 65535:
        text += f" --to {m.end}"
    return [(_SLOT_MATCH, text)]


_UNITS = {"second": "sec", "minute": "min", "hour": "hour", "day": "day"}
_DEFAULT_BURST = 5  # iptables-save leaves --limit-burst 5 out




def _limit(m: ir.Limit, ctx: _Ctx) -> list[Part]:
    """One bucket per IR rule: -m limit when the rule stays one iptables rule; when it
    expands to several, a named hashlimit, whose table all of them share."""
    rate = f"{m.rate}/{_UNITS[m.per]}"
    if m.by is None and ctx.expanded == 1:
        burst = f" --limit-burst {m.burst}" if m.burst != _DEFAULT_BURST else ""
        return [(_SLOT_MATCH, f"-m limit --limit {rate}{burst}")]
    if len(m.name) > 15:
        raise _fail(ctx, "limit", f"hashlimit name {m.name!r} is longer than 15 characters")
    text = f"-m hashlimit --hashlimit-upto {rate} --hashlimit-burst {m.burst}"
    if m.by is not None:
        text += " --hashlimit-mode " + ("srcip" if m.by == "saddr" else "dstip")
    text += f" --hashlimit-name {m.name}"
    # hashlimit forgets an idle entry after htable-expire and restarts it with a full bucket,
    # where nft keeps it; iptables' default expiry is the time a bucket takes to refill
    # (5/min burst 5: 60 s; iptables-save leaves it out), so forgetting changes nothing.
    return [(_SLOT_MATCH, text)]


# --------------------------------------------------------------- statements
# a statement renders to the target of one iptables rule, or to nothing

def _counter(s: ir.Counter, ctx: _Ctx) -> list[str]:
    return []  # every iptables rule has packet and byte counters


def _log(s: ir.Log, ctx: _Ctx) -> list[str]:
    text = "-j LOG"
    if s.prefix is not None:
        if len(s.prefix.encode()) > MAX_LOG_PREFIX:
            raise _fail(ctx, "log prefix", f"{s.prefix!r} is {len(s.prefix.encode())} characters; "
                                           f"iptables LOG allows at most {MAX_LOG_PREFIX}")
        text += " --log-prefix " + quote(s.prefix)
    level = _LOG_LEVELS.get(s.level)
    if level is None:
        raise _fail(ctx, "log level", f"{s.level!r} has no iptables LOG level")
    if level != _DEFAULT_LOG_LEVEL:
        text += f" --log-level {level}"
    return [text]


def _need_raw(ctx: _Ctx, construct: str) -> None:
    if ctx.table != "raw":
        raise _fail(ctx, construct, f"the CT target works only in the raw table, not in {ctx.table}")


def _notrack(s: ir.Notrack, ctx: _Ctx) -> list[str]:
    _need_raw(ctx, "notrack")
    return ["-j CT --notrack"]


def _set_helper(s: ir.SetCtHelper, ctx: _Ctx) -> list[str]:
    _need_raw(ctx, "ct helper")
    obj = ctx.objects.by_name.get(s.object_name)
    if obj is None:
        raise _fail(ctx, "ct helper", f"no helper object named {s.object_name!r}")
    if obj.protocol != _proto_of(ctx):
        raise _fail(ctx, "ct helper", f"helper {obj.helper} needs -p {obj.protocol} in the same rule")
    return [f"-j CT --helper {obj.helper}"]


_NAT_TARGET = {"snat": ("SNAT", "--to-source"), "dnat": ("DNAT", "--to-destination"),
               "masquerade": ("MASQUERADE", "--to-ports"), "redirect": ("REDIRECT", "--to-ports")}


def _nat(s: ir.Nat, ctx: _Ctx) -> list[str]:
    if ctx.table != "nat":
        raise _fail(ctx, s.kind, f"NAT targets work only in the nat table, not in {ctx.table}")
    target, option = _NAT_TARGET[s.kind]
    ports = None if s.ports is None else (str(s.ports.lo) if s.ports.lo == s.ports.hi
                                          else f"{s.ports.lo}-{s.ports.hi}")
    if s.family is None:  # masquerade, redirect: only ports
        return [f"-j {target}" + (f" {option} {ports}" if ports else "")]
    addr = s.addr_lo if s.addr_lo == s.addr_hi else f"{s.addr_lo}-{s.addr_hi}"
    if s.family == "ipv6" and ports:
        addr = f"[{s.addr_lo}]" if s.addr_lo == s.addr_hi else f"[{s.addr_lo}]-[{s.addr_hi}]"
    return [f"-j {target} {option} {addr}" + (f":{ports}" if ports else "")]


MAX_IPSET_NAME = 31  # IPSET_MAXNAMELEN with the terminating NUL


def _set_lookup(m: ir.SetLookup, ctx: _Ctx) -> list[Part]:
    if len(m.fields) > 1:
        raise _fail(ctx, "set concatenation", f"set {m.name!r} has members of several parts; ipset's hash:ip,port "
                                              "stores a protocol in every member where nft's inet_service has "
                                              "none, so it cannot hold them: use the nft backend, or one set "
                                              "per field")
    prefix = next(iter(ctx.names.values()), "CTKIT-").split("-", 1)[0] + "-"
    name = kname.ipset_name(prefix, m.name)
    if len(name) > MAX_IPSET_NAME:
        raise _fail(ctx, "set", f"ipset name {name!r} is longer than {MAX_IPSET_NAME} characters")
    direction = "src" if m.fields[0] in ("saddr", "sport") else "dst"
    return [(_SLOT_MATCH, f"-m set --match-set {name} {direction}")]


def ipsets(table: ir.Table, family: str) -> tuple[IpSet, ...]:
    """The ipsets one family's rules can use: its address sets and every port set."""
    out = []
    prefix = kname.chain_prefix(table.name)
    for s in table.sets:
        if len(s.types) != 1:
            continue  # concatenations: a named error where a rule uses one (_set_lookup)
        kind = s.types[0]
        if kind == "inet_service":
            out.append(IpSet(kname.ipset_name(prefix, s.name), "bitmap:port", None, s.timeout,
                             tuple((m.parts[0], m.timeout) for m in s.members)))
        elif (kind == "ipv4_addr") == (family == "ipv4"):
            out.append(IpSet(kname.ipset_name(prefix, s.name), "hash:net" if s.interval else "hash:ip", family,
                             s.timeout, tuple((m.parts[0], m.timeout) for m in s.members)))
    return tuple(out)


def _unmap(rule: ir.Rule) -> list[ir.Rule]:
    """A verdict map becomes one rule per entry (the keys are distinct, so at most one matches)."""
    vmap = next((s for s in rule.statements if isinstance(s, ir.VerdictMap)), None)
    if vmap is None:
        return [rule]
    rest = tuple(s for s in rule.statements if s is not vmap)
    out = []
    for value, verdict in vmap.entries:
        if vmap.key in ("iif", "oif"):
            key: ir.Match = ir.Iface("in" if vmap.key == "iif" else "out", value)
        else:
            key = ir.Port(vmap.key, (PortRange(int(value), int(value)),))
        out.append(ir.Rule(rule.id, rule.origin, rule.matches + (key,), rest + (verdict,), rule.comment))
    return out


def _tcp_syn(m: ir.TcpSyn, ctx: _Ctx) -> list[Part]:
    # joins the rule's `-m tcp --dport N` when there is one, as iptables-save prints it
    joined = any(isinstance(x, ir.Port) and x.field != "any" and len(x.ranges) == 1 for x in ctx.rule.matches)
    return [(_SLOT_MATCH, ("" if joined else "-m tcp ") + "--tcp-flags SYN,RST SYN")]


def _clamp_mss(s: ir.ClampMss, ctx: _Ctx) -> list[str]:
    return ["-j TCPMSS " + ("--clamp-mss-to-pmtu" if s.size is None else f"--set-mss {s.size}")]


def _set_dscp(s: ir.SetDscp, ctx: _Ctx) -> list[str]:
    if ctx.table != "mangle":
        raise _fail(ctx, "dscp", f"the DSCP target works only in the mangle table, and this chain is in "
                                 f"{ctx.table}: set dscp in chain prerouting or postrouting")
    return [f"-j DSCP --set-dscp {hex(s.value)}"]


def _reserved_bit(value: int, ctx: _Ctx, construct: str) -> None:
    if value & accept_mark.ACCEPT_BIT:
        raise _fail(ctx, construct, f"{hex(value)} sets bit {hex(accept_mark.ACCEPT_BIT)}, which ctkit's iptables "
                                    "chains reserve to carry an accept out of a nested chain: use a value "
                                    f"without it (value & {hex(accept_mark.ACCEPT_BIT)} == 0), or the nft backend")


def _set_mark(s: ir.SetMark, ctx: _Ctx) -> list[str]:
    _reserved_bit(s.value, ctx, "mark")
    return [f"-j MARK --set-xmark {hex(s.value)}/0xffffffff"]


def _connmark(s: ir.Connmark, ctx: _Ctx) -> list[str]:
    return [f"-j CONNMARK --{s.op}-mark --nfmask 0xffffffff --ctmask 0xffffffff"]


def _queue(s: ir.Queue, ctx: _Ctx) -> list[str]:
    text = f"-j NFQUEUE --queue-num {s.lo}" if s.lo == s.hi else f"-j NFQUEUE --queue-balance {s.lo}:{s.hi}"
    if s.bypass:
        text += " --queue-bypass"
    if s.fanout:
        text += " --queue-cpu-fanout"
    return [text]


def _set_timeout(s: ir.SetCtTimeout, ctx: _Ctx) -> list[str]:
    _need_raw(ctx, "ct timeout")
    obj = ctx.objects.by_name.get(s.object_name)
    if not isinstance(obj, ir.CtTimeoutObject):
        raise _fail(ctx, "ct timeout", f"no timeout object named {s.object_name!r}")
    if obj.protocol != _proto_of(ctx):
        raise _fail(ctx, "ct timeout", f"timeout {obj.name} needs -p {obj.protocol} in the same rule")
    return [f"-j CT --timeout {kname.timeout_name(ctx.objects.table, obj.name, ctx.family)}"]


def _set_zone(s: ir.SetCtZone, ctx: _Ctx) -> list[str]:
    _need_raw(ctx, "ct zone")
    option = {"both": "--zone", "original": "--zone-orig", "reply": "--zone-reply"}[s.direction]
    return [f"-j CT {option} {s.zone}"]


def _set_ct_mark(s: ir.SetCtMark, ctx: _Ctx) -> list[str]:
    _reserved_bit(s.value, ctx, "ct mark")  # connmark restore would bring it back into the packet mark
    return [f"-j CONNMARK --set-xmark {hex(s.value)}/0xffffffff"]


def _set_label(s: ir.SetCtLabel, ctx: _Ctx) -> list[str]:
    return [f'-m connlabel --label "{s.bit}" --set']  # a match that sets the bit: a rule of its own


def _verdict(s: ir.Verdict, ctx: _Ctx) -> list[str]:
    policy = (ctx.chain.policy or "accept") if ctx.is_base else None
    if s.kind in ("jump", "goto"):
        target = ctx.names.get(s.target)
        if target is None:
            raise _fail(ctx, s.kind, f"unknown chain {s.target!r}")
        marks = ctx.marks(s.target)
        if s.kind == "goto" and policy is not None and (marks or policy == "drop"):
            # after the goto'd chain ends, nft runs the base chain's policy; a jump tests the mark on the way
            return [f"-j {target}"] + ([ctx.after_marking_jump()] if marks else []) + \
                ["-j DROP" if policy == "drop" else "-j RETURN"]
        if s.kind == "jump" and marks:
            return [f"-j {target}", ctx.after_marking_jump()]
        return [f"-{s.kind[0]} {target}"]
    if s.kind == "accept":
        if ctx.is_base:
            return ["-j RETURN"]  # back to the built-in chain, after ctkit's jump: nft's next base chain
        return [accept_mark.SET_BIT, Alone(accept_mark.RETURN_IF_SET)]
    if s.kind == "return" and policy is not None:
        return ["-j DROP" if policy == "drop" else "-j RETURN"]
    if s.kind == "reject":
        if ctx.table not in _REJECT_TABLES:
            raise _fail(ctx, "reject", f"REJECT works only in the filter table (INPUT, FORWARD, OUTPUT), "
                                       f"this chain is in {ctx.table}")
        how = s.reject_with or "port-unreachable"
        if how == "tcp-reset" and _proto_of(ctx) != "tcp":
            raise _fail(ctx, "reject", "tcp-reset needs protocol tcp in the same rule")
        return [f"-j REJECT --reject-with {_REJECT_WITH[ctx.family][how]}"]
    if s.kind in ("drop", "return"):
        return ["-j " + s.kind.upper()]
    raise _fail(ctx, "verdict", f"{s.kind!r} has no iptables target")


MATCH_RENDERERS: dict[type, Callable[[Any, _Ctx], list[Part]]] = {
    ir.NfProto: _nfproto, ir.L4Proto: _l4proto, ir.Addr: _addr, ir.Port: _port, ir.AddrType: _addr_type,
    ir.Iface: _iface, ir.CtState: _ctstate, ir.Length: _length, ir.Payload: _payload,
    ir.Signature: _signature, ir.Limit: _limit, ir.TcpSyn: _tcp_syn, ir.SetLookup: _set_lookup,
}
STATEMENT_RENDERERS: dict[type, Callable[[Any, _Ctx], list[str]]] = {
    ir.Counter: _counter, ir.Log: _log, ir.Notrack: _notrack, ir.SetCtHelper: _set_helper,
    ir.SetCtTimeout: _set_timeout, ir.SetCtZone: _set_zone, ir.SetCtMark: _set_ct_mark, ir.SetCtLabel: _set_label,
    ir.ClampMss: _clamp_mss, ir.SetDscp: _set_dscp, ir.SetMark: _set_mark, ir.Connmark: _connmark,
    ir.Queue: _queue, ir.Nat: _nat, ir.Verdict: _verdict,
}


# ------------------------------------------------------------------- rules

def _in_family(rule: ir.Rule, family: str) -> ir.Rule | None:
    """The rule as seen by one family, or None when it can never match there."""
    matches = []
    for m in rule.matches:
        if isinstance(m, ir.NfProto) and m.family != family:
            return None
        if isinstance(m, ir.Addr) and m.family != family:
            return None
        if isinstance(m, ir.L4Proto):
            protos = tuple(p for p in m.protocols if FAMILY_ONLY_PROTOCOLS.get(p, family) == family)
            if not protos:
                return None
            m = ir.L4Proto(protos)
        matches.append(m)
    return ir.Rule(rule.id, rule.origin, tuple(matches), rule.statements, rule.comment)


def _one_each(m: ir.Match) -> list[ir.Match]:
    """iptables matches one protocol, one length range and one network per rule: the alternatives."""
    if isinstance(m, ir.L4Proto):
        return [ir.L4Proto((p,)) for p in m.protocols]
    if isinstance(m, ir.Length):
        return [ir.Length((r,)) for r in m.ranges]
    if isinstance(m, ir.Addr):
        fields = ("saddr", "daddr") if m.field == "any" else (m.field,)
        nets = [str(n) for n in ipaddress.collapse_addresses(ipaddress.ip_network(x) for x in m.networks)]
        if m.negated:  # outside all of them: one match (_addr), not one rule per network
            return [ir.Addr(m.field, m.family, tuple(nets), negated=True)]
        return [ir.Addr(f, m.family, (n,)) for f in fields for n in nets]
    return [m]


def _render_rule(rule: ir.Rule, ctx: _Ctx) -> list[str]:
    parts: list[Part] = []
    for m in rule.matches:
        fn = MATCH_RENDERERS.get(type(m))
        if fn is None:
            raise _fail(ctx, type(m).__name__, "no iptables match for it")
        parts += fn(m, ctx)
    comment = kname.rule_comment(rule.id, rule.comment)
    if "\n" in comment or len(comment.encode()) > MAX_COMMENT:
        raise _fail(ctx, "comment", f"iptables comments are one line of at most {MAX_COMMENT} bytes")
    parts.append((_SLOT_COMMENT, "-m comment --comment " + quote(comment)))
    head = " ".join(text for _slot, text in sorted(parts, key=lambda p: p[0]))
    targets: list[str] = []
    for s in rule.statements:
        fn = STATEMENT_RENDERERS.get(type(s))
        if fn is None:
            raise _fail(ctx, type(s).__name__, "no iptables target for it")
        targets += fn(s, ctx)
    if not targets:
        return [head]  # counts only
    if sum(not isinstance(t, Alone) for t in targets) > 1 and any(isinstance(m, ir.Limit) for m in rule.matches):
        raise _fail(ctx, "limit", "this rule becomes several iptables rules (LOG is a rule of its own) and "
                                  "each would keep its own bucket; give the log its own limit (log.limit) "
                                  "or split the rule")
    return [str(t) if isinstance(t, Alone) else f"{head} {t}" for t in targets]


@dataclass
class _Toggles:
    """The toggle chains one family's document needs, collected while rules are rendered.

    A rule with `when` stays in its chain as `-j <G>`; G (the switch) holds `-j <W>`
    while the toggle is on and nothing while it is off; W holds the rule itself and
    a last no-op rule whose comment keeps the policy file's value. `ctkit toggle`
    refills only the G chains: one small iptables-restore per table and family.
    """
    prefix: str
    objects: dict  # toggle name -> ir.ToggleObject
    count: dict = field(default_factory=dict)
    chains: dict = field(default_factory=dict)  # iptables table -> [Chain]


def toggle_switch_spec(name: str, body: str) -> str:
    """The one rule of a switch chain while its toggle is on."""
    return "-m comment --comment " + quote(kname.toggle_switch_comment(name)) + f" -j {body}"


def toggle_marker(name: str, policy_on: bool) -> str:
    return "-m comment --comment " + quote(kname.toggle_comment(name, policy_on))


def _verdicts(rule: ir.Rule) -> list[ir.Verdict]:
    """The verdicts a rule can reach: its own and its verdict map's."""
    out: list[ir.Verdict] = []
    for s in rule.statements:
        if isinstance(s, ir.Verdict):
            out.append(s)
        elif isinstance(s, ir.VerdictMap):
            out += [v for _key, v in s.entries]
    return out


def _may_accept(rule: ir.Rule, marking: frozenset[str]) -> bool:
    """Whether the rule, run in a nested chain, may leave it with the accept bit set."""
    return any(v.kind == "accept" or (v.kind in ("jump", "goto") and v.target in marking) for v in _verdicts(rule))


def accepts_of(table: ir.Table) -> Accepts | None:
    """The user chains that may return with the accept bit set (an accept in them, in a toggled rule of
    theirs, or in a chain they jump or go to), and the toggled rules' chains count as nested too; None
    when nothing nested accepts, so that such a policy's rules are written as they always were."""
    users = [c for c in table.chains if c.hook is None]
    marking: frozenset[str] = frozenset()
    while True:
        more = frozenset(c.name for c in users if any(_may_accept(r, marking) for r in c.rules))
        if more == marking:
            break
        marking = more
    toggled = any(isinstance(m, ir.Toggle) for c in table.chains for r in c.rules for m in r.matches
                  if _may_accept(r, marking))
    if not marking and not toggled:
        return None
    return Accepts(kname.chain_prefix(table.name), marking)


def _toggled_rule(rule: ir.Rule, toggle: ir.Toggle, family: str, table: str, chain: ir.Chain, names: dict,
                  objects: Objects, toggles: _Toggles, accepts: Accepts | None = None) -> list[str]:
    obj = toggles.objects.get(toggle.name)
    ctx = _Ctx(rule, family, table, chain, names, objects, accepts=accepts)
    if obj is None:
        raise _fail(ctx, "when", f"no toggle named {toggle.name!r}")
    for s in rule.statements:
        if isinstance(s, ir.Verdict) and s.kind in ("return", "goto"):
            raise _fail(ctx, "when", f"a toggled rule runs in a chain of its own on iptables, where {s.kind} "
                                     "would leave only that chain; use accept, drop, reject or jump")
    bare = ir.Rule(rule.id, rule.origin, tuple(m for m in rule.matches if m is not toggle), rule.statements,
                   rule.comment)
    k = toggles.count.get(toggle.name, 0)
    toggles.count[toggle.name] = k + 1
    switch, body = (check_name(n, rule.origin) for n in kname.toggle_chain_names(toggles.prefix, toggle.name, k))
    concretes = bare.split(_one_each)
    # the rule runs in chain `body`, nested below the chain it is written in
    specs = [spec for c in concretes
             for spec in _render_rule(c, _Ctx(c, family, table, chain, names, objects, len(concretes), accepts,
                                              nested=True))]
    specs.append(toggle_marker(obj.name, obj.policy_on))
    toggles.chains.setdefault(table, []).extend([
        Chain(switch, (toggle_switch_spec(obj.name, body),) if obj.on else ()), Chain(body, tuple(specs))])
    out = ["-m comment --comment " + quote(kname.rule_comment(rule.id, rule.comment)) + f" -j {switch}"]
    if accepts is not None and _may_accept(bare, accepts.marking):
        out.append(str(ctx.after_marking_jump()))  # the switch's one rule is its last: the bit comes back with it
    return out


def _chain_rules(chain: ir.Chain, family: str, table: str, names: dict, objects: Objects,
                 toggles: _Toggles | None = None, accepts: Accepts | None = None) -> list[str]:
    out = []
    for rule in chain.rules:
        seen = _in_family(rule, family)
        if seen is None:
            continue
        toggle = next((m for m in seen.matches if isinstance(m, ir.Toggle)), None)
        if toggle is not None and toggles is not None:
            out += _toggled_rule(seen, toggle, family, table, chain, names, objects, toggles, accepts)
            continue
        for unmapped in _unmap(seen):
            concretes = unmapped.split(_one_each)
            for concrete in concretes:
                out += _render_rule(concrete, _Ctx(concrete, family, table, chain, names, objects, len(concretes),
                                                   accepts))
    if chain.hook is not None and chain.policy == "drop":
        out.append("-m comment --comment " + quote(f"{chain.name}: policy drop") + " -j DROP")
    return out


def generate_family(plan: ir.Plan, family: str) -> Document:
    table = plan.table
    prefix = kname.chain_prefix(table.name)
    names, groups, user_tables = layout(table)
    objects = Objects(table.name, {o.name: o for o in table.helpers + table.timeouts})
    toggles = _Toggles(prefix, {t.name: t for t in table.toggles})
    accepts = accepts_of(table)
    end = accept_mark.goto_end_if_set(prefix)
    ending: list[str] = []  # the iptables tables whose top-level chains go to ACCEPT-END
    by_table: dict[str, list[Chain]] = {}
    for (tbl, builtin), members in groups.items():
        rules = [r for c in members for r in _chain_rules(c, family, tbl, names, objects, toggles, accepts)]
        if not rules and all(c.policy != "drop" for c in members) and all(c.kind == "section" for c in members):
            continue  # an internal chain with nothing for this family
        if end in rules:
            rules.insert(0, accept_mark.CLEAR_BIT)  # a bit set before ctkit's chain is not an accept
            if tbl not in ending:
                ending.append(tbl)
        origin = next((c.origin for c in members if c.origin), None)
        by_table.setdefault(tbl, []).append(Chain(prefix + builtin, tuple(rules), builtin, origin))
    for c in table.chains:
        if c.hook is not None:
            continue
        for tbl in user_tables[c.name]:
            by_table.setdefault(tbl, []).append(Chain(
                names[c.name], tuple(_chain_rules(c, family, tbl, names, objects, toggles, accepts)), None, c.origin))
    for tbl, chains in toggles.chains.items():
        by_table.setdefault(tbl, []).extend(chains)
    for tbl in ending:
        name = check_name(accept_mark.accept_end(prefix), "/chains")
        by_table[tbl].append(Chain(name, (accept_mark.CLEAR_BIT,), None))
    tables = tuple(Table(t, tuple(by_table[t])) for t in TABLE_ORDER if t in by_table)
    l3 = {"ipv4": ("inet", "ip"), "ipv6": ("inet", "ip6")}[family]
    timeouts = tuple(TimeoutObject(kname.timeout_name(table.name, o.name, family), o.protocol, o.policy)
                     for o in table.timeouts if o.l3proto in l3)
    if len({t.name for t in timeouts}) != len(timeouts):
        raise CompileError(BACKEND, "ct timeout", "/timeouts", "two timeout names hash to the same 4-character "
                                                             "kernel name: rename one")
    return Document(family, prefix, tables, timeouts, ipsets(table, family))


def generate(plan: ir.Plan) -> Ruleset:
    """ctkit's chains for IPv4 and IPv6."""
    return Ruleset(kname.chain_prefix(plan.table.name), generate_family(plan, "ipv4"), generate_family(plan, "ipv6"))
