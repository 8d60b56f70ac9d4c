"""Lower the policy model into the IR: one place that decides what each policy
construct means in netfilter terms, before any backend is involved."""
from __future__ import annotations

from typing import Iterable

from ctkit.bulk import without_cycle_collection
from ctkit.compile import ir
from ctkit.netfilter import FAMILY_ONLY_PROTOCOLS
from ctkit.policy import model
from ctkit.policy.model import set_family

NOTRACK_CHAINS = {"in": ("notrack-pre", "prerouting"), "out": ("notrack-out", "output")}
ZONE_CHAINS = {"in": ("zone-pre", "prerouting"), "out": ("zone-out", "output")}
#: after raw (notrack), before conntrack (-200): a zone must be known before the lookup
PRIORITY_ZONE = -250
#: nft attaches a timeout policy to a new flow after conntrack made it, before it is confirmed
#: (nft_ct_timeout_obj_eval skips templates); iptables sets it on the raw-table template instead
TIMEOUT_CHAINS = {"in": ("timeout-pre", "prerouting"), "out": ("timeout-out", "output")}
HELPER_CHAINS = {"in": ("helper-pre", "prerouting"), "out": ("helper-out", "output")}
#: nat type -> (IR chain, hook, priority): destination NAT before routing, source NAT after
NAT_CHAINS = {"dnat": ("nat-pre", "prerouting", ir.PRIORITY_DSTNAT),
              "redirect": ("nat-pre", "prerouting", ir.PRIORITY_DSTNAT),
              "snat": ("nat-post", "postrouting", ir.PRIORITY_SRCNAT),
              "masquerade": ("nat-post", "postrouting", ir.PRIORITY_SRCNAT)}


def _nets(nets: Iterable[model.Network], version: int) -> tuple[str, ...]:
    out = []
    for n in nets:
        if n.version == version:
            out.append(str(n.network_address) if n.prefixlen == n.max_prefixlen else str(n))
    return tuple(out)


def _family_parts(family: str | None, addrs: dict[str, tuple[model.Network, ...]],
                  negated: frozenset[str] = frozenset()) -> list[tuple[str | None, tuple[ir.Match, ...]]]:
    """Split by address family: nft and iptables match one family's addresses per rule.

    Returns (family, address matches) for each family the rule can match; a rule
    without addresses yields one part with the given family (None = both). A list in
    `negated` ({"not": ...}) excludes its networks: in a family it has none of, it excludes
    nothing (that part has no match for it, and the caller pins the family). "any" negated
    (notrack peers) is neither the source nor the destination: two matches.
    """
    given = {k: v for k, v in addrs.items() if v}
    if not given:
        return [(family, ())]
    parts = []
    for fam, version in (("ipv4", 4), ("ipv6", 6)):
        if family and family != fam:
            continue
        matches: list[ir.Match] = []
        for key, nets in given.items():
            texts = _nets(nets, version)
            if ("peers" if key == "any" else key) not in negated:
                if not texts:
                    break  # no address of this family can match
                matches.append(ir.Addr(key, fam, texts))
            elif texts:
                matches += [ir.Addr(f, fam, texts, negated=True) for f in _FIELDS[key]]
        else:
            parts.append((fam, tuple(matches)))
    return parts


#: a policy's address or port key -> the packet fields a negated list of it excludes
_FIELDS = {"saddr": ("saddr",), "daddr": ("daddr",), "any": ("saddr", "daddr"),
           "sport": ("sport",), "dport": ("dport",), "ports": ("sport", "dport")}


def _ports(key: str, ranges: tuple, negated: frozenset[str]) -> list[ir.Match]:
    """A port list as matches: `ports` (source or destination) is one match, negated two."""
    if not ranges:
        return []
    if key not in negated:
        return [ir.Port({"ports": "any"}.get(key, key), ranges)]
    return [ir.Port(f, ranges, negated=True) for f in _FIELDS[key]]


def _addr_types(entry) -> list[ir.Match]:
    return [ir.AddrType(f, t.types, t.negated)
            for f, t in (("saddr", entry.saddr_type), ("daddr", entry.daddr_type)) if t is not None]


def _base_matches(family: str | None, protocols: tuple[str, ...], has_addr: bool) -> list[ir.Match]:
    out: list[ir.Match] = []
    if family and not has_addr:
        out.append(ir.NfProto(family))
    if protocols:
        out.append(ir.L4Proto(tuple(protocols)))
    return out


def _limit(limit: model.Limit, family: str, name: str) -> ir.Limit:
    return ir.Limit(limit.rate, limit.per, limit.burst, limit.by, family, f"{name}v{family[-1]}")


def _payload(p: model.Payload) -> ir.Payload:
    mask = int.from_bytes(p.mask, "big") if p.mask is not None else None
    if mask == (1 << 8 * len(p.value)) - 1:
        mask = None  # all bits: a plain comparison
    return ir.Payload(p.base, p.offset, len(p.value), int.from_bytes(p.value, "big"), mask)


def _split_for_limits(parts, rule: model.Rule):
    """A limit's bucket is per address family (iptables and ip6tables cannot share one, and
    per-address buckets are keyed by one family's addresses): a rule for both families splits."""
    if not _has_limit(rule) and rule.dscp is None:  # DSCP lives in the IPv4 or the IPv6 header
        return parts
    out = []
    for family, addr_matches in parts:
        out += [(f, addr_matches) for f in ((family,) if family else ("ipv4", "ipv6")) if _has_protocol_in(rule, f)]
    return out


def _has_protocol_in(rule: model.Rule, family: str) -> bool:
    """False when every protocol of the rule exists only in the other family (icmp and IPv6): the split
    would make a rule that can never match."""
    return not rule.protocols or any(FAMILY_ONLY_PROTOCOLS.get(p, family) == family for p in rule.protocols)


def _has_limit(rule: model.Rule) -> bool:
    return rule.limit is not None or (rule.log is not None and rule.log.limit is not None)


def _set_refs(rule: model.Rule, sets: dict) -> list[ir.SetLookup]:
    out = []
    refs = [((k,), getattr(rule, k + "_set")) for k in ("saddr", "daddr", "sport", "dport")]
    if rule.match_set:
        refs.append((rule.match_set[1], rule.match_set[0]))
    for fields, name in refs:
        if name is not None:
            out.append(ir.SetLookup(name, tuple(fields), set_family(sets[name].types) if name in sets else None))
    return out


def _part_text(part) -> str:
    if isinstance(part, model.AddrRange):
        return f"{part.lo}-{part.hi}"
    return str(part)  # a SetAddress or a PortRange: its canonical text


def set_object(s: model.NamedSet) -> ir.SetObject:
    out = []
    with without_cycle_collection():
        for m in s.members:
            parts = m.parts
            if len(parts) == 1 and type(parts[0]) is model.SetAddress:  # a block list's line: its text as read
                out.append(ir.SetMember((parts[0].text,), m.timeout))
            else:
                out.append(ir.SetMember(tuple(map(_part_text, parts)), m.timeout))
        members = tuple(out)
    return ir.SetObject(s.name, s.types, s.interval, s.timeout, members, s.pointer)


def _vmap_verdict(text: str) -> ir.Verdict:
    kind, _, target = text.partition(" ")
    return ir.Verdict(kind, target=target or None)


def _rule_statements(rule: model.Rule) -> list[ir.Statement]:
    """What a filter rule does, in the order nft runs it: counter, log, marks, MSS, then the verdict."""
    statements: list[ir.Statement] = []
    if rule.counter:
        statements.append(ir.Counter())
    if rule.log is not None and rule.log.limit is None:
        statements.append(ir.Log(rule.log.prefix, rule.log.level))
    if rule.ct_mark_set is not None:
        statements.append(ir.SetCtMark(rule.ct_mark_set))
    if rule.ct_label_set is not None:
        statements.append(ir.SetCtLabel(rule.ct_label_set))
    if rule.mark_set is not None:
        statements.append(ir.SetMark(rule.mark_set))
    if rule.connmark is not None:
        statements.append(ir.Connmark(rule.connmark))
    if rule.mss is not None:
        statements.append(ir.ClampMss(rule.mss or None))
    verdict = _rule_verdict(rule)
    return statements + ([verdict] if verdict is not None else [])


def _rule_verdict(rule: model.Rule) -> ir.Statement | None:
    if rule.jump:
        return ir.Verdict("jump", target=rule.jump)
    if rule.goto:
        return ir.Verdict("goto", target=rule.goto)
    if rule.vmap is not None:
        return ir.VerdictMap(rule.vmap[0], tuple((k, _vmap_verdict(v)) for k, v in rule.vmap[1]))
    if rule.action == "queue" and rule.queue is not None:
        q = rule.queue
        return ir.Queue(q.lo, q.hi, q.bypass, q.fanout)
    if rule.action:
        return ir.Verdict(rule.action, reject_with=rule.reject_with)
    return None


def _ports_and_ifaces(entry: model.Rule | model.Nat) -> list[ir.Match]:
    """address types, sport, dport, iif, oif in this order: shared by filter and NAT rules."""
    out: list[ir.Match] = _addr_types(entry)
    out += _ports("sport", entry.sport, entry.negated)
    out += _ports("dport", entry.dport, entry.negated)
    if entry.iif:
        out.append(ir.Iface("in", entry.iif))
    if entry.oif:
        out.append(ir.Iface("out", entry.oif))
    return out


def _rule_matches(rule: model.Rule, family: str | None, addr_matches: list, lookups: list) -> list[ir.Match]:
    """What a filter rule matches in one family, in one fixed order (the goldens depend on it)."""
    matches: list[ir.Match] = [ir.Toggle(rule.when)] if rule.when else []
    matches += _base_matches(family, rule.protocols, bool(addr_matches))
    matches += addr_matches
    matches += _ports_and_ifaces(rule)
    if rule.ct_state:
        matches.append(ir.CtState(rule.ct_state))
    matches += lookups
    if rule.length:
        matches.append(ir.Length(rule.length))
    matches += [_payload(p) for p in rule.payload]
    if rule.signature is not None:
        s = rule.signature
        matches.append(ir.Signature(s.pattern, s.algo, s.start, s.end))
    return matches


def _base_priority(hook: str) -> int:
    """A policy base chain's priority. prerouting runs before destination NAT (mangle priority, -150), so
    it sees the address a packet arrived with on both backends: iptables has no filter PREROUTING, and its
    mangle PREROUTING runs before the nat table; at nft's filter priority it ran after DNAT instead."""
    return ir.PRIORITY_MANGLE if hook == "prerouting" else ir.PRIORITY_FILTER


def lower_rule(rule: model.Rule, limit_name: str = "limit", sets: dict | None = None) -> list[ir.Rule]:
    """A filter rule. limit_name: the name of its limits' buckets (unique in the policy).

    A log with its own limit becomes a rule of its own just before the rule
    (same matches, the log's limit, the log), so the verdict still applies to
    every packet while the log is rate-limited.
    """
    statements = _rule_statements(rule)
    out = []
    lookups = _set_refs(rule, sets or {})
    family = next((x.family for x in lookups if x.family), rule.family)  # a set of addresses has one family
    parts = _family_parts(family, {"saddr": rule.saddr, "daddr": rule.daddr}, rule.negated)
    for family, addr_matches in _split_for_limits(parts, rule):
        matches = _rule_matches(rule, family, addr_matches, lookups)
        if rule.log is not None and rule.log.limit is not None:
            log_limit = _limit(rule.log.limit, family, limit_name + "g")
            out.append(ir.Rule(rule.id, rule.pointer, tuple(matches) + (log_limit,),
                               (ir.Log(rule.log.prefix, rule.log.level),), rule.comment))
        if rule.limit is not None:
            matches.append(_limit(rule.limit, family, limit_name))
        if rule.mss is not None:
            matches.append(ir.TcpSyn())
        stmts = list(statements)
        if rule.dscp is not None:
            stmts.insert(len(stmts) - (1 if stmts and isinstance(stmts[-1], (ir.Verdict, ir.Queue)) else 0),
                         ir.SetDscp(rule.dscp, family))
        out.append(ir.Rule(rule.id, rule.pointer, tuple(matches), tuple(stmts), rule.comment))
    return out


def _flow_rules(rule_id: str, entry, statements: tuple, family: str | None, protocols: tuple[str, ...],
                addrs: dict, ports: tuple[str, tuple], direction: str | None = None) -> list[ir.Rule]:
    """The rules of a per-flow conntrack entry (notrack, helper, timeout, zone): one per address family.

    Matches come in one order: family, protocols, addresses, address types, ports (the entry's
    key and ranges), then the interface of the half that `direction` ("in": prerouting, "out":
    output) covers.
    """
    out = []
    for fam, addr_matches in _family_parts(family, addrs, entry.negated):
        matches = _base_matches(fam, protocols, bool(addr_matches)) + list(addr_matches)
        matches += _addr_types(entry) + _ports(*ports, entry.negated)
        if direction == "in" and getattr(entry, "iif", None):
            matches.append(ir.Iface("in", entry.iif))
        if direction == "out" and getattr(entry, "oif", None):
            matches.append(ir.Iface("out", entry.oif))
        out.append(ir.Rule(rule_id, entry.pointer, tuple(matches), statements, entry.comment))
    return out


def lower_notrack(entry: model.Notrack, direction: str) -> list[ir.Rule]:
    statements = ((ir.Counter(),) if entry.counter else ()) + (ir.Notrack(),)
    return _flow_rules(f"notrack/{entry.name}", entry, statements, entry.family, entry.protocols,
                       {"saddr": entry.saddr, "daddr": entry.daddr, "any": entry.peers},
                       ("ports", entry.ports), direction)


def lower_helper(entry: model.Helper) -> list[ir.Rule]:
    family = entry.family or ("ipv4" if entry.helper in model.IPV4_ONLY_HELPERS else None)
    return _flow_rules(f"helper/{entry.name}", entry, (ir.Counter(), ir.SetCtHelper(entry.name)), family,
                       (entry.protocol,), {"saddr": entry.saddr, "daddr": entry.daddr},
                       ("dport", entry.ports))


def helper_object(entry: model.Helper) -> ir.CtHelperObject:
    if entry.helper in model.IPV4_ONLY_HELPERS or entry.family == "ipv4":
        l3 = "ip"
    elif entry.family == "ipv6":
        l3 = "ip6"
    else:
        l3 = "inet"
    return ir.CtHelperObject(entry.name, entry.kernel_name, entry.protocol, l3, entry.pointer)


def lower_timeout(entry: model.Timeout) -> list[ir.Rule]:
    return _flow_rules(f"timeout/{entry.name}", entry, (ir.Counter(), ir.SetCtTimeout(entry.name)), entry.family,
                       (entry.protocol,), {"saddr": entry.saddr, "daddr": entry.daddr},
                       ("dport", entry.ports))


def timeout_object(entry: model.Timeout) -> ir.CtTimeoutObject:
    l3 = {"ipv4": "ip", "ipv6": "ip6"}.get(entry.family or "", "inet")
    return ir.CtTimeoutObject(entry.name, entry.protocol, l3, entry.policy, entry.pointer)


def lower_zone(entry: model.Zone, direction: str) -> list[ir.Rule]:
    return _flow_rules(f"zone/{entry.name}", entry, (ir.Counter(), ir.SetCtZone(entry.zone, entry.zone_direction)),
                       entry.family, entry.protocols, {"saddr": entry.saddr, "daddr": entry.daddr},
                       ("dport", entry.ports), direction)


def lower_nat(entry: model.Nat) -> list[ir.Rule]:
    """A nat rule: the matches, then the translation (which ends the nat chain for the packet)."""
    to = entry.to_addr
    families = to.family if to is not None else entry.family  # a NAT address decides the family
    nat = ir.Nat(entry.type, to.family if to is not None else None,
                 str(to.lo) if to is not None else None, str(to.hi) if to is not None else None,
                 entry.to_port)
    statements = ((ir.Counter(),) if entry.counter else ()) + (nat,)
    out = []
    for family, addr_matches in _family_parts(families, {"saddr": entry.saddr, "daddr": entry.daddr}, entry.negated):
        matches = _base_matches(family, entry.protocols, bool(addr_matches)) + list(addr_matches)
        matches += _ports_and_ifaces(entry)
        out.append(ir.Rule(entry.id, entry.pointer, tuple(matches), statements, entry.comment))
    return out


def _directions(direction: str) -> tuple[str, ...]:
    return ("in", "out") if direction == "both" else (direction,)


def lower(policy: model.Policy) -> ir.Plan:
    chains: list[ir.Chain] = []
    for direction, (name, hook) in NOTRACK_CHAINS.items():
        rules = [r for n in policy.notrack if direction in _directions(n.direction)
                 for r in lower_notrack(n, direction)]
        if rules:
            chains.append(ir.Chain(name, tuple(rules), ir.Hook(hook, ir.PRIORITY_RAW), "accept"))
    for direction, (name, hook) in ZONE_CHAINS.items():
        rules = [r for z in policy.zones if direction in _directions(z.direction) for r in lower_zone(z, direction)]
        if rules:
            chains.append(ir.Chain(name, tuple(rules), ir.Hook(hook, PRIORITY_ZONE), "accept"))
    for direction, (name, hook) in TIMEOUT_CHAINS.items():
        rules = [r for t in policy.timeouts if direction in _directions(t.direction) for r in lower_timeout(t)]
        if rules:
            chains.append(ir.Chain(name, tuple(rules), ir.Hook(hook, ir.PRIORITY_FILTER), "accept"))
    for direction, (name, hook) in HELPER_CHAINS.items():
        rules = [r for h in policy.helpers if direction in _directions(h.direction) for r in lower_helper(h)]
        if rules:
            chains.append(ir.Chain(name, tuple(rules), ir.Hook(hook, ir.PRIORITY_FILTER), "accept"))
    for name, hook, priority in dict.fromkeys(NAT_CHAINS.values()):
        rules = [r for n in policy.nat if NAT_CHAINS[n.type][0] == name for r in lower_nat(n)]
        if rules:
            chains.append(ir.Chain(name, tuple(rules), ir.Hook(hook, priority, "nat"), "accept"))
    sets = {s.name: s for s in policy.sets}
    limited = [r for c in policy.chains for r in c.rules if _has_limit(r)]
    # names of the buckets: short (iptables hashlimit allows 15 characters) and prefixed
    # with the table, because hashlimit names are shared by the whole namespace
    limit_names = {r.id: f"{policy.table[:6]}_l{i}" for i, r in enumerate(limited)}
    for chain in policy.chains:
        rules = tuple(r for rule in chain.rules for r in lower_rule(rule, limit_names.get(rule.id, ""), sets))
        hook = ir.Hook(chain.name, _base_priority(chain.name)) if chain.is_base else None
        chains.append(ir.Chain(chain.name, rules, hook, (chain.policy or "accept") if hook else None,
                               chain.pointer, "base" if hook else "user"))
    settings = tuple(
        ir.SysctlSetting(s.key, s.sysctl, s.value, s.pointer,
                         absent_ok=(s.key == "helper_autoassign" and s.value == 0))
        for s in policy.settings)
    toggles = tuple(ir.ToggleObject(t.name, t.value, t.value, t.pointer) for t in policy.toggles)
    return ir.Plan(ir.Table(policy.table, tuple(chains),
                            helpers=tuple(helper_object(h) for h in policy.helpers),
                            timeouts=tuple(timeout_object(t) for t in policy.timeouts),
                            toggles=toggles, sets=tuple(set_object(s) for s in policy.sets)), settings)
