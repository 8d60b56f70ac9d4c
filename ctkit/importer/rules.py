"""One iptables rule's tokens -> the policy's words for its matches, and its target with options.

Each match the policy can say becomes a policy field (`protocol`, `saddr`, `dport`, `ct_state`, `length`,
`signature`, `limit`, `daddr_type`...; `! -s`, `! --dport`, `-m iprange !` and `-m addrtype !` as {"not": ...});
each it cannot (another negation, -m mark, an unknown option) becomes a problem naming it. The target is returned as it is written; ctkit/importer/idioms.py decides
what it means in its table and chain.
"""
from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field

#: iptables' protocol names and numbers -> the policy's
PROTOCOLS = {"tcp": "tcp", "udp": "udp", "udplite": "udplite", "sctp": "sctp", "dccp": "dccp", "icmp": "icmp",
             "icmpv6": "icmpv6", "ipv6-icmp": "icmpv6", "gre": "gre", "esp": "esp", "ah": "ah",
             "6": "tcp", "17": "udp", "1": "icmp", "58": "icmpv6", "47": "gre", "50": "esp", "51": "ah",
             "132": "sctp", "33": "dccp", "136": "udplite"}
CT_STATES = {"NEW": "new", "ESTABLISHED": "established", "RELATED": "related", "INVALID": "invalid",
             "UNTRACKED": "untracked"}
LIMIT_UNITS = {"sec": "second", "second": "second", "s": "second", "min": "minute", "minute": "minute",
               "m": "minute", "hour": "hour", "h": "hour", "day": "day", "d": "day"}
#: options of a match module that take no value
_FLAGS = {"--syn", "--icase", "--rsource", "--rdest", "--rcheck", "--update", "--set", "--remove"}
#: options that take two values
_TWO = {"--tcp-flags", "--match-set"}
#: options that may be negated, repeat (one per match: -m multiport ! --dports twice), and are read in _matches
_REPEATABLE = {"--dport": "dport", "--destination-port": "dport", "--dports": "dport", "--destination-ports": "dport",
               "--sport": "sport", "--source-port": "sport", "--sports": "sport", "--source-ports": "sport",
               "--src-range": "saddr", "--dst-range": "daddr", "--src-type": "saddr_type", "--dst-type": "daddr_type"}
#: address types iptables names that the policy names too
ADDRESS_TYPES = {"LOCAL": "local", "UNICAST": "unicast", "MULTICAST": "multicast", "BROADCAST": "broadcast"}
#: options this reader understands (anything else is a problem naming it)
_KNOWN = {"--match-set", "--u32", "--dport", "--destination-port", "--sport", "--source-port", "--dports", "--sports",
          "--destination-ports", "--source-ports", "--ports", "--tcp-flags", "--syn", "--ctstate", "--state",
          "--comment", "--length", "--string", "--hex-string", "--algo", "--from", "--to", "--limit",
          "--limit-burst", "--hashlimit-upto", "--hashlimit", "--hashlimit-burst", "--hashlimit-mode",
          "--hashlimit-name", "--hashlimit-htable-expire", "--hashlimit-htable-size", "--hashlimit-htable-max",
          "--hashlimit-htable-gcinterval", "--hashlimit-above"}
#: why the policy cannot say what a module matches
_NO_EQUIVALENT = {
    "mark": "the policy has no packet mark match",
    "connmark": "the policy has no conntrack mark match",
    "owner": "the policy has no socket owner match",
    "icmp": "the policy has no ICMP type match",
    "icmp6": "the policy has no ICMPv6 type match",
    "recent": "the policy has no recent match",
    "physdev": "the policy has no bridge port match",
    "mac": "the policy has no MAC address match",
    "time": "the policy has no time match",
    "condition": "use a toggle (`when`) instead",
    "helper": "the policy has no conntrack helper match",
    "connlimit": "the policy has no connection count match",
    "policy": "the policy has no IPsec policy match",
    "pkttype": "the policy has no packet type match",
    "dscp": "the policy has no DSCP match",
    "tos": "the policy has no TOS match",
    "ttl": "the policy has no TTL match",
    "hl": "the policy has no hop limit match",
    "statistic": "the policy has no statistic match",
    "rpfilter": "the policy has no reverse path match",
    "socket": "the policy has no socket match",
    "devgroup": "the policy has no device group match",
    "cgroup": "the policy has no cgroup match",
    "bpf": "the policy has no BPF match",
}


@dataclass
class Reading:
    """What one rule says: policy fields for its matches, the target and its options, and what cannot be said."""
    fields: dict = field(default_factory=dict)
    target: str | None = None  # ACCEPT, DROP, CT, DNAT, a chain name ... None: no target
    goto: bool = False
    options: dict = field(default_factory=dict)  # target options: --to-destination -> value, flags -> True
    problems: list = field(default_factory=list)
    tcp_syn: bool = False  # --tcp-flags SYN,RST SYN (what TCPMSS needs)
    either_ports: tuple | None = None  # multiport --ports: source or destination port
    match_set: tuple | None = None  # -m set --match-set NAME src|dst (idioms.py resolves it)


def address(text: str) -> str:
    """An iptables-save address as the policy writes it: /32 and /128 dropped."""
    net = ipaddress.ip_network(text, strict=False)
    return str(net.network_address) if net.prefixlen == net.max_prefixlen else str(net)


def port_range(text: str, floor: int = 1) -> str | int:
    """80 -> 80, 1024:65535 -> '1024-65535' (iptables' : is the policy's -); ports start at 1."""
    lo, sep, hi = text.partition(":")
    lo_n = max(int(lo) if lo else 0, floor)
    if not sep:
        return lo_n
    hi_n = int(hi) if hi else 65535
    return lo_n if lo_n == hi_n else f"{lo_n}-{hi_n}"


def ports(text: str) -> list:
    return [port_range(p) for p in text.split(",")]


def _one_or_list(values: list):
    return values[0] if len(values) == 1 else values


def rate(text: str) -> tuple[int, str] | None:
    n, _, unit = text.partition("/")
    if not n.isdigit() or LIMIT_UNITS.get(unit or "sec") is None:
        return None
    return int(n), LIMIT_UNITS[unit or "sec"]


def hex_of_string(text: str) -> str:
    """-m string's pattern (with |hex| parts, as --hex-string writes them) as hex digits."""
    out, in_hex = [], False
    for i, part in enumerate(text.split("|")):
        in_hex = i % 2 == 1
        if in_hex:
            out.append("".join(part.split()).lower())
        else:
            out.append(part.encode("utf-8", errors="surrogateescape").hex())
    return "".join(out)


def _targets(tokens: tuple[str, ...], i: int, r: Reading) -> None:
    """The target's options, after -j NAME: --opt value or --opt alone."""
    while i < len(tokens):
        t = tokens[i]
        if not t.startswith("--"):
            r.problems.append(f"target {r.target}: unexpected {t!r}")
            i += 1
            continue
        if i + 1 < len(tokens) and not tokens[i + 1].startswith("--"):
            r.options[t] = tokens[i + 1]
            i += 2
        else:
            r.options[t] = True
            i += 1


def read(tokens: tuple[str, ...]) -> Reading:
    r = Reading()
    opts: dict[str, object] = {}
    repeated: dict[str, list[tuple[str, bool]]] = {}  # policy key -> (value, negated) per occurrence
    modules: list[str] = []
    i, negate = 0, False
    while i < len(tokens):
        t = tokens[i]
        if t == "!":
            negate = True
            i += 1
            continue
        value = tokens[i + 1] if i + 1 < len(tokens) else ""
        if t in _REPEATABLE:
            repeated.setdefault(_REPEATABLE[t], []).append((value, negate))
            negate = False
            i += 2
            continue
        if negate and t in ("-s", "--source", "-d", "--destination"):
            key = "saddr" if t in ("-s", "--source") else "daddr"
            try:
                r.fields[key] = {"not": _one_or_list([address(a) for a in value.split(",")])}
            except ValueError:
                r.problems.append(f"{t} {value!r} is not an address")
            negate = False
            i += 2
            continue
        if negate and t not in ("-m", "--match"):
            r.problems.append(f"the negation '! {t} {value}': the policy negates only addresses, ports and "
                              "address types")
            negate = False
            i += 1 if t in _FLAGS else 3 if t in _TWO else 2
            continue
        if t in ("-p", "--protocol"):
            if value.lower() in ("all", "0"):
                pass
            elif value.lower() in PROTOCOLS:
                r.fields["protocol"] = PROTOCOLS[value.lower()]
            else:
                r.problems.append(f"protocol {value!r} has no policy name")
            i += 2
        elif t in ("-s", "--source", "-d", "--destination"):
            key = "saddr" if t in ("-s", "--source") else "daddr"
            try:
                r.fields[key] = _one_or_list([address(a) for a in value.split(",")])
            except ValueError:
                r.problems.append(f"{t} {value!r} is not an address")
            i += 2
        elif t in ("-i", "--in-interface", "-o", "--out-interface"):
            r.fields["iif" if t in ("-i", "--in-interface") else "oif"] = value
            i += 2
        elif t in ("-m", "--match"):
            modules.append(value)
            if value in _NO_EQUIVALENT:
                r.problems.append(f"-m {value}: {_NO_EQUIVALENT[value]}")
            i += 2
        elif t in ("-j", "--jump", "-g", "--goto"):
            r.target, r.goto = value, t in ("-g", "--goto")
            _targets(tokens, i + 2, r)
            break
        elif t in ("-f", "--fragment"):
            r.problems.append("-f (fragments): the policy has no fragment match")
            i += 1
        elif t.startswith("--"):
            if t in _FLAGS:
                opts[t] = True
                i += 1
            elif t in _TWO:
                opts[t] = (value, tokens[i + 2] if i + 2 < len(tokens) else "")
                i += 3
            elif t == "--u32":
                opts.setdefault(t, []).append(value)  # one per -m u32: a rule may have several
                i += 2
            else:
                opts[t] = value
                i += 2
            if t not in _KNOWN and not any(m in _NO_EQUIVALENT for m in modules):
                r.problems.append(f"option {t}: no policy equivalent")
        else:
            r.problems.append(f"unexpected {t!r}")
            i += 1
        negate = False
    _matches(opts, r)
    _repeated(repeated, r)
    return r


def _negatable(values: list, negated: bool):
    return {"not": _one_or_list(values)} if negated else _one_or_list(values)


def _repeated(repeated: dict[str, list[tuple[str, bool]]], r: Reading) -> None:
    """Ports, address ranges and address types: each may be negated, and a negated one may repeat (ctkit
    writes one -m multiport ! --dports per 15 ports, one -m iprange ! per network); their union is excluded."""
    f = r.fields
    for key, items in repeated.items():
        negs = {n for _v, n in items}
        if len(negs) > 1 or (len(items) > 1 and False in negs):
            r.problems.append(f"{key}: several {key} matches that are not all exclusions (their intersection)")
            continue
        negated = negs == {True}
        if key in ("sport", "dport"):
            f[key] = _negatable([p for v, _n in items for p in ports(v)], negated)
        elif key in ("saddr", "daddr"):
            if not negated:
                r.problems.append(f"-m iprange {items[0][0]}: the policy has no address range match (only an "
                                  "excluded range, ! --src-range / ! --dst-range)")
                continue
            nets = []
            for v, _n in items:
                lo, _, hi = v.partition("-")
                try:
                    nets += [address(str(n)) for n in ipaddress.summarize_address_range(
                        ipaddress.ip_address(lo), ipaddress.ip_address(hi or lo))]
                except (ValueError, TypeError):
                    r.problems.append(f"-m iprange {v!r} is not an address range")
            have = f.get(key)
            if isinstance(have, dict):  # ! -s NET and ! --src-range beside it: outside all of them
                nets = (have["not"] if isinstance(have["not"], list) else [have["not"]]) + nets
            elif have is not None:
                r.problems.append(f"{key}: an address and an excluded range in one rule")
                continue
            f[key] = {"not": _one_or_list(nets)}
        else:
            types = [ADDRESS_TYPES.get(t) for v, _n in items for t in v.split(",")]
            if None in types:
                r.problems.append(f"-m addrtype {items[0][0]}: the policy's address types are "
                                  f"{', '.join(ADDRESS_TYPES)}")
                continue
            f[key] = _negatable(types, negated)


def _matches(opts: dict, r: Reading) -> None:
    f = r.fields
    for test in opts.get("--u32", []):
        got = u32_payload(str(test))
        if got is None:
            r.problems.append(f"-m u32 {test!r}: the policy's payload matches one field at a fixed offset of the "
                              "IP or the IPv4 transport header")
        else:
            f.setdefault("payload", []).append(got)
    if "--match-set" in opts:
        r.match_set = tuple(opts["--match-set"])
    if "--ports" in opts:
        r.either_ports = tuple(ports(str(opts["--ports"])))
    if "--tcp-flags" in opts:
        mask, comp = opts["--tcp-flags"]
        if set(mask.split(",")) == {"SYN", "RST"} and comp == "SYN":
            r.tcp_syn = True
        else:
            r.problems.append(f"--tcp-flags {mask} {comp}: the policy matches TCP flags only for MSS clamping")
    if "--syn" in opts:
        r.problems.append("--syn: the policy matches TCP flags only for MSS clamping")
    for k in ("--ctstate", "--state"):
        if k in opts:
            states = str(opts[k]).split(",")
            bad = [s for s in states if s not in CT_STATES]
            if bad:
                r.problems.append(f"{k} {','.join(bad)}: the policy's states are {', '.join(CT_STATES)}")
            f["ct_state"] = [CT_STATES[s] for s in states if s in CT_STATES]
    if "--comment" in opts:
        f["comment"] = str(opts["--comment"])
    if "--length" in opts:
        f["length"] = _one_or_list([port_range(x, floor=0) for x in str(opts["--length"]).split(",")])
    if "--string" in opts or "--hex-string" in opts:
        sig = {"hex": hex_of_string(str(opts.get("--hex-string", opts.get("--string"))))}
        if opts.get("--algo") in ("bm", "kmp"):
            sig["algo"] = opts["--algo"]
        for k, name in (("--from", "from"), ("--to", "to")):
            if k in opts and str(opts[k]).isdigit() and not (name == "to" and int(opts[k]) == 65535) \
                    and not (name == "from" and int(opts[k]) == 0):
                sig[name] = int(opts[k])
        if "--icase" in opts:
            r.problems.append("--icase: the policy's signatures are case-sensitive")
        f["signature"] = sig
    if "--limit" in opts:
        got = rate(str(opts["--limit"]))
        if got is None:
            r.problems.append(f"--limit {opts['--limit']}: not a rate N/sec|min|hour|day")
        else:
            f["limit"] = {"rate": got[0], "per": got[1], "burst": int(opts.get("--limit-burst", 5))}
    upto = opts.get("--hashlimit-upto", opts.get("--hashlimit"))
    if upto is not None:
        got = rate(str(upto))
        mode = str(opts.get("--hashlimit-mode", ""))
        by = {"srcip": "saddr", "dstip": "daddr", "": None}.get(mode, "?")
        if got is None or by == "?":
            r.problems.append(f"hashlimit {upto} by {mode}: the policy limits per source or destination "
                              "address (srcip or dstip) or with one bucket (no mode)")
        else:
            f["limit"] = {"rate": got[0], "per": got[1], "burst": int(opts.get("--hashlimit-burst", 5))}
            if by is not None:
                f["limit"]["by"] = by
    if "--hashlimit-above" in opts:
        r.problems.append("--hashlimit-above: the policy's limits match below the rate")


_U32 = re.compile(r"^(0x0>>0x16&0x3c@)?(0x[0-9a-f]+|\d+)(?:>>(0x[0-9a-f]+|\d+))?&(0x[0-9a-f]+|\d+)=(0x[0-9a-f]+|\d+)$")


def u32_payload(test: str) -> dict | None:
    """A u32 test in the form ctkit writes (ctkit/backends/iptables/generate.py `_u32`): the bytes it reads
    -> the policy's payload entry {base, offset, hex[, mask]}; None for any other u32 program."""
    m = _U32.match(test.strip().lower())
    if not m:
        return None
    th, start, shift, mask, value = m.groups()
    start_n, shift_n, mask_n, value_n = (int(x, 0) if x else 0 for x in (start, shift, mask, value))
    if shift_n % 8 or mask_n == 0 or value_n & ~mask_n:
        return None
    size = (mask_n.bit_length() + 7) // 8
    end = start_n + 4 - shift_n // 8
    offset = end - size
    if offset < 0 or (shift_n and start_n):
        return None
    entry = {"base": "th" if th else "nh", "offset": offset, "hex": f"{value_n:0{2 * size}x}"}
    if mask_n != (1 << 8 * size) - 1:
        entry["mask"] = f"{mask_n:0{2 * size}x}"
    return entry
