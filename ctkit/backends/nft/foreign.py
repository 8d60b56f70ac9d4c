"""Foreign rules that change what the policy means. Reported, never touched.

In nftables every base chain at a hook sees the packet in priority order; a
drop anywhere is final, while an accept only ends that one chain. So a
foreign chain at the same hook that drops (or rejects, or has policy drop)
overrides ctkit at any priority: before ctkit it decides first, after ctkit
it drops what ctkit accepted. Its accepts do not bypass ctkit. A foreign
notrack before conntrack (priority < -200) takes flows away from ctkit's
helpers.
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from ctkit.audit.findings import Finding
from ctkit.compile import ir
from ctkit.netfilter import BASE_CHAINS

CONNTRACK_PRIORITY = -200
_FAMILIES = ("ip", "ip6", "inet")


_VERDICTS = ("drop", "reject", "notrack", "accept", "queue")


def _verdicts(rule: dict) -> set[str]:
    return {k for e in rule.get("expr", []) for k in e if k in _VERDICTS}


class _Reach:
    """The verdicts a foreign base chain's rules can reach: their own, those of the chains they jump or go
    to in the same table, and those of the verdict maps they look up (anonymous or named): a drop written
    in a chain behind a jump or in a vmap drops as surely as one written directly."""

    def __init__(self, ruleset: list[dict]) -> None:
        self.rules: dict[tuple, list[dict]] = {}
        self.maps: dict[tuple, list] = {}
        for item in ruleset:
            if "rule" in item:
                r = item["rule"]
                self.rules.setdefault((r["family"], r["table"], r["chain"]), []).append(r)
            elif "map" in item and item["map"].get("map") == "verdict":
                m = item["map"]
                self.maps[(m["family"], m["table"], m["name"])] = m.get("elem", [])

    def of_rule(self, rule: dict, seen: frozenset = frozenset()) -> set[str]:
        out = _verdicts(rule)
        where = (rule["family"], rule["table"])
        for e in rule.get("expr", []):
            for kind in ("jump", "goto"):
                if kind in e and isinstance(e[kind], dict):
                    out |= self.of_chain((*where, e[kind].get("target")), seen)
            if "vmap" in e:
                data = e["vmap"].get("data")
                entries = data.get("set", []) if isinstance(data, dict) else (
                    self.maps.get((*where, data[1:]), []) if isinstance(data, str) and data.startswith("@") else [])
                for entry in entries:
                    verdict = entry[1] if isinstance(entry, list) and len(entry) == 2 else None
                    if isinstance(verdict, dict):
                        out |= {k for k in verdict if k in _VERDICTS}
                        for kind in ("jump", "goto"):
                            if isinstance(verdict.get(kind), dict):
                                out |= self.of_chain((*where, verdict[kind].get("target")), seen)
        return out

    def drops(self, key: tuple) -> list[dict]:
        """The rules of base chain `key` that drop or reject, directly or through what they reach."""
        return [r for r in self.rules.get(key, []) if self.of_rule(r, frozenset({key})) & {"drop", "reject"}]

    def of_chain(self, key: tuple, seen: frozenset) -> set[str]:
        if key in seen or len(seen) > 64:  # a loop (the kernel refuses one) or an absurd depth
            return set()
        return {v for r in self.rules.get(key, []) for v in self.of_rule(r, seen | {key})}


#: link-layer families: their hooks run outside the ip/ip6/inet ones ctkit's chains are at
_LINK_FAMILIES = ("netdev", "bridge")
#: link-layer hooks that see a packet before any ip hook does
_EARLY_LINK_HOOKS = {"netdev": ("ingress",), "bridge": ("prerouting", "input")}


def _link_drop(c: dict, key: tuple, reach: _Reach) -> Finding | None:
    """A foreign netdev or bridge chain that drops: at ingress (or a bridge's prerouting/input) before every
    chain of ctkit's sees the packet, at egress after them."""
    family, tname, cname = key
    drops = reach.drops(key)
    if not drops and c.get("policy") != "drop":
        return None
    device = c.get("dev") or c.get("device")
    on = f" on {device if isinstance(device, str) else ', '.join(device)}" if device else ""
    early = c["hook"] in _EARLY_LINK_HOOKS[family]
    where = f"table {family} {tname} chain {cname} (hook {c['hook']}{on}, priority {c.get('prio')})"
    what = ("bridged frames and, through the bridge, packets for this host" if family == "bridge"
            else "every packet of the device")
    return Finding(
        "foreign.earlier-drop" if early else "foreign.later-drop", "warning", where,
        f"a foreign {family} chain at hook {c['hook']}{on} drops traffic {'before' if early else 'after'} any of "
        f"ctkit's ip/ip6/inet chains see it ({what}): the policy cannot admit what it drops",
        "check that this chain's owner means to drop there; ctkit never changes foreign tables",
        {"drop_rules": len(drops), "policy": c.get("policy"), "family": family})


@dataclass(frozen=True)
class _Flows:
    """The packets one of ctkit's helper rules assigns its helper to (None: any)."""
    protocols: frozenset | None
    ports: tuple[tuple[int, int], ...] | None  # destination ports
    daddrs: tuple | None  # ipaddress networks


def _helper_flows(table: ir.Table) -> dict[str, list[_Flows]]:
    out: dict[str, list[_Flows]] = {}
    for chain in table.chains:
        for rule in chain.rules:
            helper = next((s.object_name for s in rule.statements if isinstance(s, ir.SetCtHelper)), None)
            if not helper:
                continue
            protocols = ports = daddrs = None
            for m in rule.matches:
                if isinstance(m, ir.L4Proto):
                    protocols = frozenset(m.protocols)
                elif isinstance(m, ir.Port) and m.field in ("dport", "any") and not m.negated:
                    ports = tuple((r.lo, r.hi) for r in m.ranges)
                elif isinstance(m, ir.Addr) and m.field in ("daddr", "any") and not m.negated:  # negated: any
                    daddrs = tuple(ipaddress.ip_network(n, strict=False) for n in m.networks)
            out.setdefault(helper, []).append(_Flows(protocols, ports, daddrs))
    return out


def _values(right) -> list | None:
    """The values of a match's right side: numbers, (lo, hi) ranges, address networks; None: unknown."""
    items = right["set"] if isinstance(right, dict) and "set" in right else (
        right if isinstance(right, list) else [right])
    out = []
    for v in items:
        if isinstance(v, bool):
            return None
        if isinstance(v, int):
            out.append((v, v))
        elif isinstance(v, dict) and "range" in v and all(isinstance(x, int) for x in v["range"]):
            out.append(tuple(v["range"]))
        elif isinstance(v, dict) and "prefix" in v:
            out.append(ipaddress.ip_network(f"{v['prefix']['addr']}/{v['prefix']['len']}", strict=False))
        elif isinstance(v, str):
            try:
                out.append(ipaddress.ip_network(v, strict=False))
            except ValueError:
                out.append(v)  # a name (a protocol) or a set reference
        else:
            return None
    return out


def _ports_meet(flows: tuple[tuple[int, int], ...] | None, values: list, negated: bool) -> bool:
    ranges = [v for v in values if isinstance(v, tuple)]
    if len(ranges) != len(values):
        return True  # not only ports: cannot tell, so it may
    wanted = flows or ((0, 65535),)
    if not negated:
        return any(lo <= h2 and lo2 <= hi for lo, hi in wanted for lo2, h2 in ranges)
    # `!= values`: it meets the flows unless the values cover every one of their ports
    for lo, hi in wanted:
        at = lo
        for lo2, h2 in sorted(ranges):
            if lo2 > at:
                return True  # port `at` is left uncovered
            at = max(at, h2 + 1)
            if at > hi:
                break
        if at <= hi:
            return True
    return False


def _addrs_meet(flows: tuple | None, values: list, negated: bool) -> bool:
    nets = [v for v in values if isinstance(v, (ipaddress.IPv4Network, ipaddress.IPv6Network))]
    if len(nets) != len(values) or flows is None:
        return True
    if not negated:
        return any(a.version == b.version and a.overlaps(b) for a in flows for b in nets)
    return any(not any(a.version == b.version and a.subnet_of(b) for b in nets) for a in flows)


def _may_touch(rule: dict, flows: _Flows) -> bool:
    """Whether some packet of `flows` can match every match of a foreign rule: its protocol, destination
    ports and destination addresses, with `!=` read as a negation; anything else is taken to match."""
    for e in rule.get("expr", []):
        m = e.get("match")
        if not m or m.get("op") not in ("==", "!=", "in"):
            continue
        negated, left, values = m["op"] == "!=", m.get("left"), _values(m.get("right"))
        if values is None or not isinstance(left, dict):
            continue
        payload, meta = left.get("payload"), left.get("meta")
        if meta and meta.get("key") == "l4proto" and flows.protocols:
            names = {v for v in values if isinstance(v, str)}
            if len(names) == len(values):
                left_over = flows.protocols <= names if negated else not names & flows.protocols
                if left_over:
                    return False  # none of the flows' protocols passes this match
        if not payload:
            continue
        proto, field = payload.get("protocol"), payload.get("field")
        if proto in ("tcp", "udp", "sctp", "dccp", "udplite") and flows.protocols and proto not in flows.protocols:
            return False  # a port match of another protocol: it matches only that protocol
        if field == "dport" and not _ports_meet(flows.ports, values, negated):
            return False
        if proto in ("ip", "ip6") and field == "daddr" and not _addrs_meet(flows.daddrs, values, negated):
            return False
    return True


def interference(ruleset: list[dict], table: ir.Table) -> list[Finding]:
    ours = {c.hook.hook: c.hook.priority for c in table.chains if c.hook and c.kind == "base" and
            c.name in BASE_CHAINS}
    helper_flows = _helper_flows(table)
    chains = {(i["chain"]["family"], i["chain"]["table"], i["chain"]["name"]): i["chain"]
              for i in ruleset if "chain" in i}
    reach = _Reach(ruleset)
    findings = []
    for key, c in chains.items():
        family, tname, cname = key
        if family in _LINK_FAMILIES and "hook" in c and ours:
            finding = _link_drop(c, key, reach)
            if finding is not None:
                findings.append(finding)
            continue
        if family not in _FAMILIES or "hook" not in c or (family == "inet" and tname == table.name):
            continue
        where = f"table {family} {tname} chain {cname} (hook {c['hook']}, priority {c['prio']})"
        hook, prio = c["hook"], c["prio"]
        if hook in ours:
            drops = reach.drops(key)
            if drops or c.get("policy") == "drop":
                # at equal priority the kernel's order is that of registration, which no number states
                when = "before" if prio < ours[hook] else "after" if prio > ours[hook] else "same"
                runs = (f"runs {when} ctkit's {hook} chain (priority {ours[hook]})" if when != "same" else
                        f"has the same priority as ctkit's {hook} chain ({prio}: which of them runs first is "
                        "not defined by the priority, only by the order they were registered in)")
                findings.append(Finding(
                    "foreign.later-drop" if when == "after" else "foreign.earlier-drop", "warning", where,
                    f"a foreign chain {runs} and drops traffic: "
                    "in nftables a drop is final, so the policy cannot admit what it drops",
                    "check that this chain's owner (docker, firewalld, an admin) means to drop before ctkit; "
                    "ctkit never changes foreign tables",
                    {"drop_rules": len(drops), "policy": c.get("policy"), "ctkit_priority": ours[hook]}))
        if hook in ("prerouting", "output") and prio < CONNTRACK_PRIORITY and helper_flows:
            for r in reach.rules.get(key, []):
                if "notrack" not in _verdicts(r):
                    continue
                hit = [h for h, flows in helper_flows.items() if any(_may_touch(r, f) for f in flows)]
                if hit:
                    findings.append(Finding(
                        "foreign.notrack-overrides-helper", "warning", where,
                        f"a foreign notrack before conntrack untracks flows that ctkit's helper(s) "
                        f"{', '.join(sorted(hit))} should handle: untracked flows get no helper",
                        "narrow the foreign notrack rule so it spares the helper's ports",
                        {"rule_handle": r.get("handle"), "helpers": sorted(hit)}))
    return findings
