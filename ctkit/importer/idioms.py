"""iptables-save rules -> the policy's sections, written the way a person would write them.

- raw: NOTRACK / CT --notrack rules become `notrack` entries; the classic symmetric sets (the same ports as
  --sport and --dport, in PREROUTING and OUTPUT, for each protocol) become one entry with `ports`, the
  protocols and `direction: both`. CT --helper becomes `helpers`, CT --zone `zones`.
- nat: DNAT / REDIRECT in PREROUTING and SNAT / MASQUERADE in POSTROUTING become `nat` entries, in order.
- mangle: MARK, CONNMARK, DSCP and TCPMSS rules become rules of the policy's chains (they never decide).
- filter: the built-in chains become the base chains with their policy, user chains keep their rules,
  jumps and gotos; ct state, length, string, limit, hashlimit, LOG, REJECT and NFQUEUE map to the
  policy's fields.
Chains of other tools (docker, kube-proxy, firewalld, ...) and the rules that lead into them are left out
and listed, unless the caller names them. Every rule that cannot be said exactly is listed with its line
and the reason; nothing is approximated.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

from ctkit.importer.rules import Reading, address, port_range, read
from ctkit.importer.save import BUILTINS, Save, SaveRule

#: (owner, chain name pattern): chains ctkit must not own
FOREIGN = (("docker", re.compile(r"DOCKER(-.*)?$")), ("kube-proxy", re.compile(r"KUBE-.*")),
           ("firewalld", re.compile(r"(IN|OUT|FWD|FWDI|FWDO|PRE|POST)_.*|.*_(ZONES|ZONES_SOURCE|direct)$")),
           ("ctkit", re.compile(r"CTKIT-.*")), ("fail2ban", re.compile(r"f2b-.*")), ("ufw", re.compile(r"ufw6?-.*")),
           ("calico", re.compile(r"cali-.*")), ("cni", re.compile(r"CNI-.*")))
#: interfaces that belong to docker's networks
DOCKER_IFACE = re.compile(r"docker\d+$|br-[0-9a-f]{12}$")
BASE = {"PREROUTING": "prerouting", "INPUT": "input", "FORWARD": "forward", "OUTPUT": "output",
        "POSTROUTING": "postrouting"}
REJECT_WITH = {"icmp-port-unreachable": "port-unreachable", "icmp6-port-unreachable": "port-unreachable",
               "port-unreach": "port-unreachable", "icmp-host-unreachable": "host-unreachable",
               "icmp6-addr-unreachable": "host-unreachable", "icmp-net-unreachable": "net-unreachable",
               "icmp6-no-route": "net-unreachable", "icmp-admin-prohibited": "admin-prohibited",
               "icmp6-adm-prohibited": "admin-prohibited", "tcp-reset": "tcp-reset"}
LOG_LEVELS = {"0": "emerg", "1": "alert", "2": "crit", "3": "err", "4": "warn", "5": "notice", "6": "info",
              "7": "debug", "emerg": "emerg", "alert": "alert", "crit": "crit", "err": "err", "error": "err",
              "warn": "warn", "warning": "warn", "notice": "notice", "info": "info", "debug": "debug"}
#: kernel helper name (and protocol) -> the policy's helper name
HELPERS = {("ftp", "tcp"): "ftp", ("irc", "tcp"): "irc", ("tftp", "udp"): "tftp", ("amanda", "udp"): "amanda",
           ("sip", "udp"): "sip", ("sip", "tcp"): "sip", ("Q.931", "tcp"): "h323", ("RAS", "udp"): "h323",
           ("pptp", "tcp"): "pptp", ("snmp", "udp"): "snmp", ("sane", "tcp"): "sane",
           ("netbios-ns", "udp"): "netbios-ns"}
PORT_NAMES = {53: "dns", 21: "ftp", 80: "http", 443: "https", 123: "ntp", 11211: "memcached", 5060: "sip",
              69: "tftp", 161: "snmp", 22: "ssh", 25: "smtp", 6667: "irc", 1723: "pptp", 10080: "amanda"}
#: the fields each section's entries may carry from an iptables match
FLOW_FIELDS = {"protocol", "saddr", "daddr", "sport", "dport", "iif", "oif", "comment", "saddr_type", "daddr_type"}
#: the address types, carried into every entry that has them
_TYPES = (("saddr_type", "saddr_type"), ("daddr_type", "daddr_type"))
_COMMENT_BAD = re.compile(r'["\\\n]')


#: the fields that keep notrack rules apart (the rest: protocol, ports, direction, are merged)
_KEY = ("saddr", "daddr", "iif", "oif", "saddr_type", "daddr_type")


@dataclass(frozen=True)
class NotExpressed:
    source: str
    line: int
    text: str
    reason: str

    def as_dict(self) -> dict:
        return {"source": self.source, "line": self.line, "rule": self.text, "reason": self.reason}


@dataclass(frozen=True)
class LeftOut:
    """A chain (or a rule leading into one) of another tool: not imported unless named."""
    source: str
    line: int
    what: str
    owner: str

    def as_dict(self) -> dict:
        return {"source": self.source, "line": self.line, "what": self.what, "owner": self.owner}


@dataclass
class _Notrack:
    family: str
    direction: str  # in | out
    protocol: str | None
    field: str | None  # sport | dport | either | None
    ports: tuple
    key: tuple  # _KEY's fields (as text)
    comment: str | None
    rule: SaveRule
    source: str


@dataclass
class Sections:
    """What an import produced, per family, before the families are merged (ctkit/importer/document.py)."""
    notrack: list = field(default_factory=list)  # (family, entry)
    helpers: list = field(default_factory=list)
    zones: list = field(default_factory=list)
    timeouts: list = field(default_factory=list)
    nat: list = field(default_factory=list)
    helper_types: dict = field(default_factory=dict)  # nft ct helper object name -> kernel helper
    timeout_objects: dict = field(default_factory=dict)  # nft ct timeout object name -> {protocol, policy}
    sets: dict = field(default_factory=dict)  # the policy's sets section (nft named sets)
    toggles: dict = field(default_factory=dict)  # the policy's toggles section (ctkit's toggle sets, live state)
    chains: dict = field(default_factory=dict)  # family -> {name: [rule, ...]}
    policies: dict = field(default_factory=dict)  # family -> {name: accept|drop}
    mangle: dict = field(default_factory=dict)  # family -> {name: [rule, ...]} (go first in the chain)
    not_expressed: list = field(default_factory=list)
    left_out: list = field(default_factory=list)
    notes: list = field(default_factory=list)
    expressed: int = 0
    families: set = field(default_factory=set)


def foreign_owner(chain: str, include: frozenset) -> str | None:
    if chain in include:
        return None
    return next((owner for owner, pattern in FOREIGN if pattern.fullmatch(chain)), None)


def chain_name(name: str) -> str:
    """An iptables user chain's name as a policy chain name (letters, digits, _; at most 24)."""
    out = re.sub(r"[^A-Za-z0-9_]", "_", name)
    if not out[:1].isalpha():
        out = "c_" + out
    return out[:24]


_DEFAULT_ID = re.compile(r"^[A-Za-z][A-Za-z0-9_]*\[\d+\]$")
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]{0,31}$")
ENTRY_KINDS = ("notrack", "helper", "zone", "timeout", "nat")
#: a rule's key while it is built: the id of the policy rule ctkit wrote it for (document.py removes it)
MERGE_KEY = "_ctkit_rule"


def own_comment(text: str | None) -> tuple[str | None, str | None]:
    """A comment ctkit wrote ('<rule id>: <text>') -> (the policy's name for the rule or entry, the text).
    Default ids (input[3], nat[0]) give no name."""
    if not text:
        return None, None
    if re.fullmatch(r"(prerouting|input|forward|output|postrouting): policy (drop|accept)", text):
        return None, text  # the rule that stands for a chain's policy
    rid, sep, rest = text.partition(": ")
    kind, slash, name = rid.partition("/")
    if slash and kind in ENTRY_KINDS:
        rid = name
    if _DEFAULT_ID.match(rid) or not _NAME.match(rid):
        return None, text if not _DEFAULT_ID.match(rid) else (rest or None)
    return rid, rest or None


def clean_comment(text: str, notes: list, where: str) -> str | None:
    if not text:
        return None
    out = _COMMENT_BAD.sub("'", text)
    if len(out) > 64:
        notes.append(f"{where}: comment clipped to 64 characters (the policy's limit)")
        out = out[:64]
    elif out != text:
        notes.append(f"{where}: quotes and backslashes in the comment became '")
    return out


class Importer:
    """Reads the rules of one or more iptables-save outputs into Sections (state local to one import)."""

    def __init__(self, include: frozenset = frozenset(), prefix: str = "CTKIT-", ipsets: dict | None = None):
        self.include = include
        self.prefix = prefix
        self.ipsets = ipsets or {}  # ipset name -> ctkit.importer.ipsets.IpSet (from `ipset save`)
        self.timeouts: dict = {}  # cttimeout object name -> {family, protocol, policy} (live imports)
        self.s = Sections()
        self._notrack: list[_Notrack] = []

    # -------------------------------------------------------------- entry
    def add(self, save: Save) -> None:
        from ctkit.importer.own import inline
        save = inline(save, self.prefix, self.include)
        s = self.s
        s.families.add(save.family)
        for p in save.problems:
            s.not_expressed.append(NotExpressed(save.source, p.line, p.text, p.reason))
        user = {(c.table, c.name) for c in save.chains if c.policy is None}
        for c in save.chains:
            owner = foreign_owner(c.name, self.include) if c.policy is None else None
            if owner:
                s.left_out.append(LeftOut(save.source, c.line, f"chain {c.name} (table {c.table})", owner))
            elif c.policy is not None and c.table not in BUILTINS:
                continue
            elif c.policy is not None and c.table == "filter":
                s.policies.setdefault(save.family, {})[BASE[c.name]] = c.policy.lower()
            elif c.policy is not None and c.policy != "ACCEPT":
                s.not_expressed.append(NotExpressed(save.source, c.line, f":{c.name} {c.policy}",
                                                    f"the {c.table} table's {c.name} has policy {c.policy}: "
                                                    "only filter chains take a policy in ctkit"))
            if c.policy is None and not owner and c.table == "filter":
                s.chains.setdefault(save.family, {}).setdefault(chain_name(c.name), [])
        for rule in save.rules:
            self._rule(save, rule, user)
        for c in save.chains:  # a built-in filter chain without rules still has its policy
            if c.table == "filter" and c.policy is not None and c.name in BASE:
                s.chains.setdefault(save.family, {}).setdefault(BASE[c.name], [])

    def finish(self) -> Sections:
        self._group_notrack()
        return self.s

    # -------------------------------------------------------------- rules
    def _no(self, save: Save, rule: SaveRule, reason: str) -> None:
        self.s.not_expressed.append(NotExpressed(save.source, rule.line, rule.text, reason))

    def _rule(self, save: Save, rule: SaveRule, user: set) -> None:
        s = self.s
        owner = foreign_owner(rule.chain, self.include) if (rule.table, rule.chain) in user else None
        if owner:
            return  # listed with its chain
        r = read(rule.tokens)
        target_owner = foreign_owner(r.target, self.include) if r.target and (rule.table, r.target) in user else None
        iface_owner = "docker" if any(DOCKER_IFACE.match(t) for t in rule.tokens) else None
        if target_owner or (iface_owner and "docker" not in self.include):
            s.left_out.append(LeftOut(save.source, rule.line, rule.text, target_owner or iface_owner or ""))
            return
        if rule.table not in ("raw", "mangle", "nat", "filter"):
            return self._no(save, rule, f"the {rule.table} table: ctkit has no equivalent")
        if r.match_set is not None:
            why = self._match_set(r)
            if why:
                r.problems.append(why)
        if r.problems:
            return self._no(save, rule, "; ".join(dict.fromkeys(r.problems)))
        handler = {"raw": self._raw, "mangle": self._mangle, "nat": self._nat, "filter": self._filter}[rule.table]
        reason = handler(save, rule, r, user)
        if reason:
            self._no(save, rule, reason)
        else:
            s.expressed += 1

    def _match_set(self, r: Reading) -> str | None:
        """-m set --match-set NAME src|dst -> saddr/daddr/sport/dport "@set", with the set from `ipset save`."""
        name, dirs = r.match_set
        s = self.ipsets.get(name)
        if s is None:
            return (f"-m set {name}: its members are not in iptables-save output (import with --netns, which "
                    "reads ipset save)")
        if dirs not in ("src", "dst"):
            return f"-m set {name} {dirs}: the policy looks one field up in a set"
        own = self.prefix.lower()
        policy_name = chain_name(name[len(own):] if name.startswith(own) else name)
        if s.type == "inet_service":
            key = "sport" if dirs == "src" else "dport"
        else:
            key = "saddr" if dirs == "src" else "daddr"
        r.fields[key] = f"@{policy_name}"
        entry: dict = {"type": s.type}
        if s.interval:
            entry["interval"] = True
        if s.timeout is not None:
            entry["timeout"] = s.timeout
        entry["elements"] = list(s.elements)
        self.s.sets[policy_name] = entry
        return None

    def _extra(self, r: Reading, allowed: set) -> str | None:
        extra = sorted(k for k in r.fields if k not in allowed)
        if extra:
            return f"{', '.join(extra)}: not part of this kind of entry"
        return None

    # raw: notrack, helpers, zones
    def _raw(self, save: Save, rule: SaveRule, r: Reading, user: set) -> str | None:
        if rule.chain not in ("PREROUTING", "OUTPUT"):
            return "a rule in a user chain of the raw table: ctkit writes raw rules from notrack, helpers and zones"
        direction = "in" if rule.chain == "PREROUTING" else "out"
        if r.target == "NOTRACK" or (r.target == "CT" and list(r.options) == ["--notrack"]):
            return self._notrack_rule(save, rule, r, direction)
        if r.target != "CT":
            return f"-j {r.target} in the raw table: ctkit's raw rules only exempt from tracking or set " \
                   "helpers, zones and timeouts"
        keys = [k for k in r.options if k in ("--notrack", "--helper", "--zone", "--zone-orig", "--zone-reply",
                                                "--timeout")]
        other = [k for k in r.options if k not in keys]
        if other:
            return f"CT {' '.join(other)}: no policy equivalent"
        if len(keys) != 1:
            return f"CT {' '.join(keys)}: one CT rule sets one thing in ctkit (a notrack, helper, zone or timeout)"
        if "--timeout" in r.options:
            return self._timeout(save, rule, r, direction)
        if "--helper" in r.options:
            return self._helper(save, rule, r, direction)
        return self._zone(save, rule, r, direction, keys[0])

    def _notrack_rule(self, save, rule, r, direction) -> str | None:
        bad = self._extra(r, FLOW_FIELDS)
        if bad:
            return bad
        f = r.fields
        neither = isinstance(f.get("sport"), dict) and f.get("sport") == f.get("dport")
        if "sport" in f and "dport" in f and not neither:
            return "a notrack entry matches its ports as source or destination: --sport and --dport together " \
                   "cannot be said"
        if direction == "in" and "oif" in f or direction == "out" and "iif" in f:
            return "an interface the hook does not have"
        fld, ports = None, ()
        if r.either_ports is not None:
            fld, ports = "either", tuple(r.either_ports)
        elif neither:  # ctkit's negated ports: ! --sports X ! --dports X in one rule, neither port
            ports = (f["dport"],)
        elif "sport" in f or "dport" in f:
            fld = "sport" if "sport" in f else "dport"
            v = f[fld]
            ports = tuple(v) if isinstance(v, list) else (v,)
        if ports and f.get("protocol") not in ("tcp", "udp", "udplite", "sctp", "dccp"):
            return "ports without a protocol that has them"
        key = tuple(json.dumps(f.get(k)) for k in _KEY)  # hashable, lists too
        self._notrack.append(_Notrack(save.family, direction, f.get("protocol"), fld, ports, key,
                                      f.get("comment"), rule, save.source))
        return None

    def _helper(self, save, rule, r, direction) -> str | None:
        bad = self._extra(r, FLOW_FIELDS - {"sport", "iif", "oif"})
        if bad:
            return bad
        f = r.fields
        kernel = str(r.options["--helper"])
        name = HELPERS.get((kernel, f.get("protocol")))
        if name is None:
            return f"helper {kernel!r} over {f.get('protocol') or 'any protocol'}: not a helper ctkit assigns " \
                   f"({', '.join(sorted({h for h in HELPERS.values()}))})"
        if "dport" not in f:
            return "a helper entry names the control connection's destination ports (--dport)"
        entry = {"name": name, "helper": name, "protocol": f["protocol"], "ports": f["dport"]}
        for k in ("saddr", "daddr", "saddr_type", "daddr_type"):
            if k in f:
                entry[k] = f[k]
        if direction == "out":
            entry["direction"] = "out"
        self._comment(entry, f, save, rule)
        self.s.helpers.append((save.family, entry))
        return None

    def _timeout(self, save, rule, r, direction) -> str | None:
        printed = str(r.options["--timeout"])  # iptables-save prints the name's first four characters
        found = [o for name, o in self.timeouts.items() if name.startswith(printed)]
        if len(found) != 1:
            return (f"CT --timeout {printed}: the timeout policy's values are not in iptables-save output "
                    "(import with --netns, which reads the objects)" if not found else
                    f"CT --timeout {printed}: {len(found)} timeout objects start with that name")
        bad = self._extra(r, FLOW_FIELDS - {"sport", "iif", "oif"})
        if bad:
            return bad
        obj, f = found[0], r.fields
        if f.get("protocol") not in (None, obj["protocol"]):
            return f"CT --timeout {printed}: a {obj['protocol']} policy on {f['protocol']} flows"
        entry: dict = {"name": printed, "protocol": obj["protocol"], "policy": dict(obj["policy"])}
        for k, name in (("dport", "ports"), ("saddr", "saddr"), ("daddr", "daddr"), *_TYPES):
            if k in f:
                entry[name] = f[k]
        if direction == "out":
            entry["direction"] = "out"
        self._comment(entry, f, save, rule)
        self.s.timeouts.append((save.family, entry))
        return None

    def _zone(self, save, rule, r, direction, key) -> str | None:
        bad = self._extra(r, FLOW_FIELDS - {"sport"})
        if bad:
            return bad
        f = r.fields
        value = str(r.options[key])
        if not value.isdigit() or not 1 <= int(value) <= 65535:
            return f"CT {key} {value}: ctkit's zones are numbers 1-65535"
        if "dport" in f and "protocol" not in f:
            return "ports without a protocol"
        entry: dict = {"name": f"zone{value}", "zone": int(value)}
        if key != "--zone":
            entry["zone_direction"] = "original" if key == "--zone-orig" else "reply"
        for k, name in (("protocol", "protocol"), ("dport", "ports"), ("saddr", "saddr"), ("daddr", "daddr"),
                        ("iif", "iif"), ("oif", "oif"), *_TYPES):
            if k in f:
                entry[name] = f[k]
        if direction == "out":
            entry["direction"] = "out"
        self._comment(entry, f, save, rule)
        self.s.zones.append((save.family, entry))
        return None

    def _comment(self, entry: dict, f: dict, save: Save, rule: SaveRule) -> None:
        text = f.get("comment", "")
        if rule.own:
            name, text = own_comment(text)
            if name:
                items = [(k, v) for k, v in entry.items() if k != "name"]
                entry.clear()
                entry.update([("name", name)] + items)
        c = clean_comment(text or "", self.s.notes, f"{save.source}:{rule.line}")
        if c:
            entry["comment"] = c

    # nat
    def _nat(self, save: Save, rule: SaveRule, r: Reading, user: set) -> str | None:
        kinds = {"PREROUTING": {"DNAT": "dnat", "REDIRECT": "redirect"},
                 "POSTROUTING": {"SNAT": "snat", "MASQUERADE": "masquerade"}}
        kind = kinds.get(rule.chain, {}).get(r.target or "")
        if kind is None:
            return f"-j {r.target} in nat {rule.chain}: ctkit's nat is DNAT and REDIRECT in PREROUTING, " \
                   "SNAT and MASQUERADE in POSTROUTING"
        if r.either_ports is not None:
            return "multiport --ports (source or destination port): a nat entry matches sport and dport apart"
        bad = self._extra(r, FLOW_FIELDS)
        if bad:
            return bad
        extra = [k for k in r.options if k not in ("--to-destination", "--to-source", "--to-ports")]
        if extra:
            return f"{r.target} {' '.join(extra)}: no policy equivalent"
        f = r.fields
        entry: dict = {"type": kind}
        for k in ("protocol", "saddr", "daddr", "saddr_type", "daddr_type", "sport", "dport", "iif", "oif"):
            if k in f:
                entry[k] = f[k]
        to = r.options.get("--to-destination", r.options.get("--to-source"))
        if kind in ("dnat", "snat"):
            if not isinstance(to, str):
                return f"{r.target} without an address"
            got = _nat_to(to)
            if got is None:
                return f"{r.target} to {to!r}: not an address (range) with an optional port (range)"
            entry["to_addr"], port = got
            if port is not None:
                entry["to_port"] = port
        elif isinstance(r.options.get("--to-ports"), str):
            entry["to_port"] = port_range(str(r.options["--to-ports"]).replace("-", ":"))
        if "to_port" in entry and "protocol" not in entry:
            return "a translated port needs a protocol"
        self._comment(entry, f, save, rule)
        self.s.nat.append((save.family, entry))
        return None

    # mangle and filter
    def _statements(self, r: Reading, rule: dict) -> str | None:
        """MARK, CONNMARK, DSCP, TCPMSS: non-terminal statements of a rule."""
        t, o = r.target, r.options
        if t == "MARK":
            value = o.get("--set-xmark", o.get("--set-mark"))
            num, _, mask = str(value).partition("/")
            if mask and int(mask, 0) != 0xFFFFFFFF:
                return f"MARK {value}: the policy sets the whole mark"
            rule["mark_set"] = int(num, 0)
        elif t == "CONNMARK":
            if "--save-mark" in o or "--restore-mark" in o:
                masks = [o.get("--nfmask", "0xffffffff"), o.get("--ctmask", "0xffffffff"), o.get("--mask", "0xffffffff")]
                if any(int(str(m), 0) != 0xFFFFFFFF for m in masks):
                    return "CONNMARK with a mask: the policy copies the whole mark"
                rule["connmark"] = "save" if "--save-mark" in o else "restore"
            else:
                value = o.get("--set-xmark", o.get("--set-mark"))
                num, _, mask = str(value).partition("/")
                if value is None or mask and int(mask, 0) != 0xFFFFFFFF:
                    return f"CONNMARK {' '.join(o)}: no policy equivalent"
                rule["ct_mark_set"] = int(num, 0)
        elif t == "DSCP":
            value = o.get("--set-dscp")
            if value is None:
                return "DSCP --set-dscp-class: iptables-save writes the class as --set-dscp"
            rule["dscp"] = int(str(value), 0)
        elif t == "TCPMSS":
            if not r.tcp_syn or r.fields.get("protocol") != "tcp":
                return "TCPMSS without -p tcp --tcp-flags SYN,RST SYN: the policy clamps the MSS of SYNs only"
            rule["mss"] = "pmtu" if "--clamp-mss-to-pmtu" in o else int(str(o.get("--set-mss")))
        elif t == "LOG":
            log: dict = {}
            prefix = o.get("--log-prefix")
            if isinstance(prefix, str):
                if re.search(r'["\\\n$]', prefix):
                    return "a log prefix with a quote, backslash or $: the policy refuses it"
                log["prefix"] = prefix
            level = LOG_LEVELS.get(str(o.get("--log-level", "4")))
            if level is None:
                return f"--log-level {o.get('--log-level')}: not a syslog level"
            log["level"] = level
            extra = [k for k in o if k not in ("--log-prefix", "--log-level")]
            if extra:
                return f"LOG {' '.join(extra)}: no policy equivalent"
            if "limit" in rule:
                log["limit"] = rule.pop("limit")
            rule["log"] = log
        else:
            return None
        if t != "LOG" and r.tcp_syn and t != "TCPMSS":
            return "--tcp-flags: the policy matches TCP flags only for MSS clamping"
        return None

    def _base_rule(self, r: Reading, save: Save, rule: SaveRule) -> tuple[dict | None, str | None]:
        if r.either_ports is not None:
            return None, "multiport --ports (source or destination port): the policy's rules match sport " \
                         "and dport apart"
        out = dict(r.fields)
        text = out.pop("comment", None)
        if rule.own:
            raw_id = (text or "").partition(": ")[0]
            name, text = own_comment(text)
            if name:
                out = {"name": name, **out}
            if raw_id:
                out[MERGE_KEY] = raw_id  # rules ctkit split from one policy rule are merged back
        if text:
            c = clean_comment(text, self.s.notes, f"{save.source}:{rule.line}")
            if c:
                out["comment"] = c
        return out, None

    def _mangle(self, save: Save, rule: SaveRule, r: Reading, user: set) -> str | None:
        if rule.chain not in BASE:
            return "a user chain of the mangle table: ctkit's mangle rules live in its base chains"
        if r.target not in ("MARK", "CONNMARK", "DSCP", "TCPMSS", "LOG", None):
            return f"-j {r.target} in the mangle table: a decision there is not the filter's decision, and " \
                   "ctkit's chains make one decision per hook"
        out, why = self._base_rule(r, save, rule)
        if why or out is None:
            return why
        why = self._statements(r, out)
        if why:
            return why
        if r.tcp_syn and r.target != "TCPMSS":
            return "--tcp-flags: the policy matches TCP flags only for MSS clamping"
        self.s.mangle.setdefault(save.family, {}).setdefault(BASE[rule.chain], []).append(out)
        return None

    def _filter(self, save: Save, rule: SaveRule, r: Reading, user: set) -> str | None:
        name = BASE.get(rule.chain) if (rule.table, rule.chain) not in user else chain_name(rule.chain)
        if name is None:
            return f"chain {rule.chain} is not defined"
        out, why = self._base_rule(r, save, rule)
        if why or out is None:
            return why
        t = r.target
        if t in ("ACCEPT", "DROP", "RETURN"):
            out["action"] = t.lower()
        elif t == "REJECT":
            out["action"] = "reject"
            with_ = REJECT_WITH.get(str(r.options.get("--reject-with", "icmp-port-unreachable")))
            if with_ is None:
                return f"REJECT --reject-with {r.options.get('--reject-with')}: no policy equivalent"
            if with_ != "port-unreachable":
                out["reject_with"] = with_
        elif t == "NFQUEUE":
            o = r.options
            queue: dict = {}
            if "--queue-balance" in o:
                lo, _, hi = str(o["--queue-balance"]).partition(":")
                queue["num"] = f"{lo}-{hi}"
            else:
                queue["num"] = int(str(o.get("--queue-num", 0)))
            if "--queue-bypass" in o:
                queue["bypass"] = True
            if "--queue-cpu-fanout" in o:
                queue["fanout"] = True
            out["action"] = "queue"
            out["queue"] = queue
        elif t in ("MARK", "CONNMARK", "DSCP", "TCPMSS", "LOG"):
            why = self._statements(r, out)
            if why:
                return why
        elif t is None:
            if r.tcp_syn:
                return "--tcp-flags: the policy matches TCP flags only for MSS clamping"
            out.setdefault("counter", True)
        elif (rule.table, t) in user:
            out["goto" if r.goto else "jump"] = chain_name(t)
        else:
            return f"-j {t}: not a target ctkit's filter rules have"
        if r.tcp_syn and t != "TCPMSS":
            return "--tcp-flags: the policy matches TCP flags only for MSS clamping"
        self.s.chains.setdefault(save.family, {}).setdefault(name, []).append(out)
        return None

    # -------------------------------------------------------------- notrack
    def _group_notrack(self) -> None:
        """Group NOTRACK rules into entries: by addresses, interfaces and ports; an entry needs the same
        protocols for every direction and port field it covers (a notrack entry's ports are either)."""
        groups: dict[tuple, list[_Notrack]] = {}
        for n in self._notrack:
            groups.setdefault((n.family, n.key, tuple(sorted(map(str, n.ports)))), []).append(n)
        for (family, key, _p), rules in groups.items():
            per_dir: dict[str, list[_Notrack]] = {}
            for n in rules:
                per_dir.setdefault(n.direction, []).append(n)
            made: dict[str, tuple] = {}
            for direction, rs in per_dir.items():
                protos = self._notrack_protocols(rs)
                if protos is None:
                    for n in rs:
                        self.s.not_expressed.append(NotExpressed(
                            n.source, n.rule.line, n.rule.text,
                            "a notrack entry's ports are source or destination: a rule for --dport needs its "
                            "--sport twin (and the other way round) for the same protocols, or it cannot be said"))
                        self.s.expressed -= 1
                    continue
                made[direction] = protos
            dirs = sorted(made)
            if len(dirs) == 2 and made["in"] == made["out"]:
                self._notrack_entry(family, key, rules, "both", made["in"])
            else:
                for d in dirs:
                    self._notrack_entry(family, key, [n for n in rules if n.direction == d], d, made[d])

    @staticmethod
    def _notrack_protocols(rs: list[_Notrack]) -> tuple | None:
        fields: dict[str | None, set] = {}
        for n in rs:
            for f in (("sport", "dport") if n.field == "either" else (n.field,)):
                fields.setdefault(f, set()).add(n.protocol)
        if None in fields:
            return tuple(sorted(fields[None], key=str)) if len(fields) == 1 else None
        if set(fields) != {"sport", "dport"} or fields["sport"] != fields["dport"]:
            return None
        return tuple(sorted(fields["sport"], key=str))

    def _notrack_entry(self, family, key, rules, direction, protos) -> None:
        ports = rules[0].ports
        own = next((own_comment(n.comment) for n in rules if n.rule.own and n.comment), (None, None))
        entry: dict = {"name": own[0] or _notrack_name(ports)}
        if None not in protos:
            if len(protos) == 1:
                entry["protocol"] = protos[0]
            else:
                order = {"udp": 0, "tcp": 1}
                entry["protocols"] = sorted(protos, key=lambda p: (order.get(p, 9), p))
        if ports:
            entry["ports"] = ports[0] if isinstance(ports[0], dict) else list(ports)  # {"not": ...}: as it is
        for k, v in zip(_KEY, key, strict=True):
            if json.loads(v) is not None:
                entry[k] = json.loads(v)
        if direction != "both":
            entry["direction"] = direction
        comment = own[1] if own[0] else next((n.comment for n in rules if n.comment), None)
        if comment:
            c = clean_comment(comment, self.s.notes, f"{rules[0].source}:{rules[0].rule.line}")
            if c:
                entry["comment"] = c
        self.s.notrack.append((family, entry))


def _notrack_name(ports: tuple) -> str:
    if len(ports) == 1 and isinstance(ports[0], int) and ports[0] in PORT_NAMES:
        return PORT_NAMES[ports[0]]
    if ports and isinstance(ports[0], dict):
        return "other-ports"  # {"not": ...}
    if ports:
        return "ports-" + "-".join(str(p) for p in ports[:3])
    return "notrack"


def _nat_to(text: str) -> tuple[str, str | int | None] | None:
    """DNAT/SNAT --to: 'A', 'A:P', 'A-B:P-Q', '[A6]:P', 'A6' -> (address text, port or None)."""
    m = re.fullmatch(r"\[([0-9a-fA-F:.]+)(?:\]-\[([0-9a-fA-F:.]+))?\](?::(\d+(?:-\d+)?))?", text)
    if m:
        lo, hi, port = m.groups()
    elif text.count(":") <= 1:
        addrs, _, port = text.partition(":")
        lo, _, hi = addrs.partition("-")
        port = port or None
    else:
        lo, _, hi = text.partition("-")
        port = None
    try:
        lo = address(lo)
        hi = address(hi) if hi else None
    except ValueError:
        return None
    to = lo if hi is None or hi == lo else f"{lo}-{hi}"
    return to, port_range(port.replace("-", ":")) if port else None
