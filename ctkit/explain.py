"""`ctkit explain`: what the compiled policy does to one packet, hook by hook, the way the kernel walks it.

The walk is the audit's IR interpreter (ctkit/audit/admission.py, `run_chain`) applied to each of
ctkit's base chains a packet meets, in hook and priority order. Around it this module adds what
conntrack does between the chains: notrack before the lookup (priority -200), zones before it,
helpers and timeout policies on a flow's first packet, nat chains for the first packet of a tracked
flow only, and destination NAT rewriting the packet for the chains after it. The IR is the same for
both backends, so the path is too; the backend only names where ctkit's part lives.

`parse_packet` reads the packet description; `explain` returns a frozen `Explanation`.
"""
from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, replace
from typing import Any

from ctkit.audit.admission import UNKNOWN, Context, Event, Flow, run_chain
from ctkit.compile import ir
from ctkit.errors import UsageError

PACKET_FORM = ("PROTO SRC[:PORT] -> DST[:PORT] [iif IFACE] [oif IFACE] "
               "[state new|established|related|invalid|untracked] [len BYTES] [path input|output|forward]; "
               "e.g. 'tcp 10.0.0.5:40000 -> 10.0.0.10:22 iif eth0 state new' "
               "or 'udp [2001:db8::5]:5353 -> [2001:db8::10]:53'")
STATES = ("new", "established", "related", "invalid", "untracked")
#: the hooks a packet meets on each path through the host, in order
PATHS = {"input": ("prerouting", "input"), "output": ("output", "postrouting"),
         "forward": ("prerouting", "forward", "postrouting")}
#: where conntrack looks a packet up (NF_IP_PRI_CONNTRACK), on the hooks where it does
CONNTRACK_PRIORITY = -200
CONNTRACK_HOOKS = ("prerouting", "output")
_PROTOCOL = re.compile(r"[a-z][a-z0-9-]{0,15}")
_IFACE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.@-]{0,14}\+?")
_KEYWORDS = ("iif", "oif", "state", "len", "path")


@dataclass(frozen=True)
class Packet:
    """The packet to explain, as the user described it."""
    protocol: str
    family: str  # ipv4 | ipv6
    saddr: str
    daddr: str
    sport: int | None = None
    dport: int | None = None
    iif: str | None = None
    oif: str | None = None
    state: str = "new"  # what conntrack would say of the packet if it is tracked
    length: int | None = None
    path: str = "input"

    def describe(self) -> str:
        def end(addr: str, port: int | None) -> str:
            host = f"[{addr}]" if ":" in addr and port is not None else addr
            return host if port is None else f"{host}:{port}"
        text = f"{self.protocol} {end(self.saddr, self.sport)} -> {end(self.daddr, self.dport)}"
        for key in ("iif", "oif"):
            if getattr(self, key):
                text += f" {key} {getattr(self, key)}"
        text += f" state {self.state}" + (f" len {self.length}" if self.length is not None else "")
        return text + f" path {self.path}"

    def as_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in ("protocol", "family", "saddr", "daddr", "sport", "dport", "iif", "oif",
                                              "state", "length", "path")}


def _bad(text: str, why: str) -> UsageError:
    shown = text if len(text) <= 120 else text[:117] + "..."
    return UsageError(f"--packet {shown!r}: {why}; the form is {PACKET_FORM}")


def _endpoint(text: str, token: str) -> tuple[str, int | None]:
    m = re.fullmatch(r"\[([0-9A-Fa-f:.]+)\](?::(\d{1,5}))?", token)
    if m:
        addr, port = m.group(1), m.group(2)
    elif token.count(":") == 1:
        addr, port = token.split(":")
    else:
        addr, port = token, None
    try:
        parsed = ipaddress.ip_address(addr)
    except ValueError:
        raise _bad(text, f"{token!r} is not an address (with an optional :PORT)") from None
    if port is not None and (not port.isdigit() or not 0 <= int(port) <= 65535):
        raise _bad(text, f"{token!r}: a port is a number from 0 to 65535")
    return str(parsed), int(port) if port is not None else None


def parse_packet(text: str) -> Packet:
    """The packet a --packet text describes; UsageError (exit 2) naming the problem and the valid form."""
    tokens = text.split()
    if len(tokens) < 4 or tokens[2] != "->":
        raise _bad(text, "expected a protocol, a source, '->' and a destination")
    protocol = tokens[0].lower()
    if not _PROTOCOL.fullmatch(protocol):
        raise _bad(text, f"{tokens[0]!r} is not a protocol name (tcp, udp, icmp, icmpv6, sctp...)")
    (saddr, sport), (daddr, dport) = _endpoint(text, tokens[1]), _endpoint(text, tokens[3])
    fam_s, fam_d = ipaddress.ip_address(saddr).version, ipaddress.ip_address(daddr).version
    if fam_s != fam_d:
        raise _bad(text, "the source and the destination must be of one address family")
    if (sport is not None or dport is not None) and protocol in ("icmp", "icmpv6"):
        raise _bad(text, f"{protocol} has no ports")
    opts: dict[str, str] = {}
    rest = tokens[4:]
    if len(rest) % 2:
        raise _bad(text, f"{rest[-1]!r} needs a value")
    for key, value in zip(rest[::2], rest[1::2], strict=True):
        if key not in _KEYWORDS:
            raise _bad(text, f"unknown word {key!r} (known: {', '.join(_KEYWORDS)})")
        if key in opts:
            raise _bad(text, f"{key} is given twice")
        opts[key] = value
    for key in ("iif", "oif"):
        if key in opts and not _IFACE.fullmatch(opts[key]):
            raise _bad(text, f"{key} {opts[key]!r} is not an interface name")
    state = opts.get("state", "new")
    if state not in STATES:
        raise _bad(text, f"state {state!r} is not one of {', '.join(STATES)}")
    length = opts.get("len")
    if length is not None and not (length.isdigit() and 20 <= int(length) <= 65535):
        raise _bad(text, f"len {length!r}: the IP packet's length is a number from 20 to 65535")
    iif, oif = opts.get("iif"), opts.get("oif")
    path = opts.get("path") or ("forward" if iif and oif else "output" if oif else "input")
    if path not in PATHS:
        raise _bad(text, f"path {path!r} is not one of {', '.join(PATHS)}")
    return Packet(protocol, "ipv4" if fam_s == 4 else "ipv6", saddr, daddr, sport, dport, iif, oif, state,
                  int(length) if length is not None else None, path)


# ------------------------------------------------------------------ result

@dataclass(frozen=True)
class Hit:
    """A rule that matched in a chain (or the end of a chain), in the terms of the kernel's trace."""
    chain: str
    rule: str | None  # the policy rule id (the kernel comment's first part); None: the chain's end
    verdict: str  # continue accept drop reject queue "jump X" "goto X" return "policy accept" undecided
    origin: str | None = None  # the rule's pointer in the policy
    comment: str | None = None
    note: str | None = None  # why undecided; what a statement did or did not do

    def as_dict(self) -> dict[str, Any]:
        return {"chain": self.chain, "rule": self.rule, "verdict": self.verdict, "origin": self.origin,
                "comment": self.comment, "note": self.note}


@dataclass(frozen=True)
class ChainStep:
    """One of ctkit's base chains the packet met: where, what matched, how it ended."""
    hook: str
    priority: int
    chain: str
    type: str  # filter | nat
    hits: tuple[Hit, ...]
    outcome: str  # accept | drop | reject | queue | unknown
    skipped: str | None = None  # why the chain did not see the packet (nat chains: not a first packet)

    def as_dict(self) -> dict[str, Any]:
        return {"hook": self.hook, "priority": self.priority, "chain": self.chain, "type": self.type,
                "hits": [h.as_dict() for h in self.hits], "outcome": self.outcome, "skipped": self.skipped}


@dataclass(frozen=True)
class Explanation:
    packet: Packet
    owner: str  # the backend's words for what ctkit owns ("table inet ctkit")
    steps: tuple[ChainStep, ...]
    verdict: str  # accept | drop | reject | queue | unknown
    decided_by: str | None  # "chain/rule" that ended the packet's walk, None when it left accepted
    tracked: bool
    zone: int | None
    helper: str | None  # "name (kernel helper)"
    timeout: str | None  # "name (state=seconds, ...)"
    nat: tuple[str, ...]
    actions: tuple[str, ...]  # marks, DSCP, MSS, logs of the matched rules
    notes: tuple[str, ...]
    leaves: str  # where the packet leaves ctkit's part of the ruleset
    certain: bool  # False: some rule could not be judged from the description

    def trace(self) -> list[tuple[str, str | None, str]]:
        """(chain, rule id, verdict) for every hit in order: what `nft monitor trace` reports for ctkit's table
        in nft's terms: the kernel's verdict for reject is drop, and the end of a jumped-to chain is not reported;
        undecided rules are left out."""
        return [(h.chain, h.rule, "drop" if h.verdict == "reject" else h.verdict)
                for s in self.steps if s.skipped is None for h in s.hits
                if h.verdict != "undecided" and not (h.rule is None and h.verdict == "return")]

    def as_dict(self) -> dict[str, Any]:
        return {"packet": self.packet.as_dict(), "owner": self.owner, "verdict": self.verdict,
                "decided_by": self.decided_by, "certain": self.certain, "tracked": self.tracked,
                "zone": self.zone, "helper": self.helper, "timeout": self.timeout, "nat": list(self.nat),
                "actions": list(self.actions), "leaves": self.leaves, "notes": list(self.notes),
                "steps": [s.as_dict() for s in self.steps]}


# ------------------------------------------------------------------- walk

@dataclass
class _State:
    """What changes along the walk (local to one explain call)."""
    flow: Flow
    tracked: bool
    zone: int | None = None
    helper: str | None = None
    timeout: str | None = None


def _flow(p: Packet) -> Flow:
    return Flow(p.family, p.protocol, p.saddr, p.daddr, p.sport, p.dport,
                "untracked" if p.state == "untracked" else p.state, p.iif, p.oif,
                length=p.length, syn=True if p.protocol == "tcp" and p.state == "new" else None,
                # the path says whose addresses these are: input is addressed to this host, output leaves
                # it, forward is neither (a packet from this host to itself is on input and output both)
                saddr_local={"output": True, "forward": False}.get(p.path),
                daddr_local={"input": True, "forward": False}.get(p.path))


def _chains_at(table: ir.Table, hook: str) -> list[ir.Chain]:
    at = [(c.hook.priority, i, c) for i, c in enumerate(table.chains) if c.hook is not None and c.hook.hook == hook]
    return [c for _p, _i, c in sorted(at, key=lambda x: (x[0], x[1]))]


def _helper_text(table: ir.Table, name: str) -> str:
    obj = next((h for h in table.helpers if h.name == name), None)
    return f"{name} ({obj.helper})" if obj else name


def _timeout_text(table: ir.Table, name: str) -> str:
    obj = next((t for t in table.timeouts if t.name == name), None)
    return f"{name} ({', '.join(f'{k}={v}s' for k, v in obj.policy)})" if obj else name


def _nat_text(n: ir.Nat) -> str:
    to = "" if n.addr_lo is None else (n.addr_lo if n.addr_lo == n.addr_hi else f"{n.addr_lo}-{n.addr_hi}")
    port = "" if n.ports is None else f" port {n.ports}"
    return f"{n.kind}{' to ' + to if to else ''}{port}".strip()


def _apply(st: _State, table: ir.Table, e: Event, before_ct: bool, first: bool,
           actions: list[str], notes: list[str]) -> str | None:
    """Carry out what a matched rule's statements do to the packet and its flow; a note for the hit."""
    out: list[str] = []
    for s in e.rule.statements if e.rule is not None else ():
        if isinstance(s, ir.Notrack):
            if before_ct:
                st.tracked = False
                st.flow = replace(st.flow, ct_state="untracked")
                out.append("not tracked")
        elif isinstance(s, ir.SetCtZone):
            if st.tracked and before_ct:
                st.zone = s.zone
                out.append(f"zone {s.zone}")
            else:
                out.append("zone: no effect (untracked)")
        elif isinstance(s, (ir.SetCtHelper, ir.SetCtTimeout)):
            what = "helper" if isinstance(s, ir.SetCtHelper) else "timeout policy"
            text = (_helper_text if isinstance(s, ir.SetCtHelper) else _timeout_text)(table, s.object_name)
            if not st.tracked:
                out.append(f"{what}: no effect (untracked)")
            elif not first:
                out.append(f"{what} {text}: set on the flow's first packet")
            if st.tracked:
                setattr(st, "helper" if isinstance(s, ir.SetCtHelper) else "timeout", text)
                if first:
                    out.append(f"{what} {text}")
        elif isinstance(s, ir.Nat):
            out.append(_nat_text(s))
            if s.kind == "dnat" and s.addr_lo is not None:
                st.flow = replace(st.flow, daddr=s.addr_lo,
                                  dport=s.ports.lo if s.ports is not None else st.flow.dport)
            elif s.kind == "redirect" and s.ports is not None:
                st.flow = replace(st.flow, dport=s.ports.lo)
        elif isinstance(s, ir.Log):
            actions.append(f"log{' prefix ' + repr(s.prefix) if s.prefix else ''} level {s.level}")
        elif isinstance(s, ir.SetMark):
            actions.append(f"mark set {s.value:#x}")
        elif isinstance(s, ir.SetCtMark):
            actions.append(f"ct mark set {s.value:#x}")
        elif isinstance(s, ir.SetCtLabel):
            actions.append(f"ct label set {s.bit}")
        elif isinstance(s, ir.Connmark):
            actions.append(f"connmark {s.op}")
        elif isinstance(s, ir.SetDscp):
            actions.append(f"dscp set {s.value}")
        elif isinstance(s, ir.ClampMss):
            actions.append(f"tcp mss clamped to {s.size if s.size else 'the route MTU'}")
    if any(isinstance(m, ir.Limit) for m in (e.rule.matches if e.rule else ())):
        notes.append(f"{e.rule.id}: taken to be under its rate limit (a quiet flow's packet)")
    return "; ".join(out) or None


def _hit(e: Event, note: str | None) -> Hit:
    r = e.rule
    return Hit(e.chain, r.id if r else None, e.verdict, r.origin if r else None, r.comment if r else None,
               e.reason if e.verdict == "undecided" else note)


def _context(table: ir.Table) -> Context:
    return Context(toggles={t.name: t.on for t in table.toggles}, sets={s.name: s for s in table.sets})


def explain(plan: ir.Plan, packet: Packet, owner: str) -> Explanation:
    """Walk `packet` through the compiled policy's base chains, hook by hook, in priority order."""
    table = plan.table
    ctx = _context(table)
    st = _State(_flow(packet), tracked=packet.state != "untracked")
    first = packet.state in ("new", "related")
    steps: list[ChainStep] = []
    nat: list[str] = []
    actions: list[str] = []
    notes: list[str] = []
    verdict, decided_by, certain = "accept", None, True
    for hook in PATHS[packet.path]:
        chains = _chains_at(table, hook)
        for chain in chains:
            hook_ = chain.hook
            assert hook_ is not None
            before_ct = hook in CONNTRACK_HOOKS and hook_.priority < CONNTRACK_PRIORITY
            if hook_.type == "nat" and not (st.tracked and first):
                why = "untracked: no NAT" if not st.tracked else "nat chains see only a flow's first packet"
                steps.append(ChainStep(hook, hook_.priority, chain.name, hook_.type, (), "accept", why))
                continue
            run = run_chain(table, chain.name, st.flow, ctx)
            hits = []
            for e in run.events:
                note = None
                if e.verdict != "undecided":
                    note = _apply(st, table, e, before_ct, first, actions, notes)
                    if hook_.type == "nat" and e.rule is not None:
                        nat += [_nat_text(s) for s in e.rule.statements if isinstance(s, ir.Nat)]
                else:
                    certain = False
                hits.append(_hit(e, note))
            outcome = run.outcome
            if outcome is None:
                outcome = chain.policy or "accept"
                hits.append(Hit(chain.name, None, f"policy {outcome}"))
            if outcome == UNKNOWN:
                certain = False
            steps.append(ChainStep(hook, hook_.priority, chain.name, hook_.type, tuple(hits), outcome))
            if outcome != "accept":
                verdict = outcome
                last = next((h for h in reversed(hits) if h.verdict != "undecided"), None)
                decided_by = f"{chain.name}/{last.rule}" if last and last.rule else f"{chain.name} (policy)"
                break
        if verdict != "accept":
            break
        if not chains:
            notes.append(f"no chain of ctkit's at the {hook} hook")
    if certain is False:
        notes.append("some rules could not be judged from the packet description (see 'undecided'); "
                     "the walk went on as if they did not match")
    leaves = _leaves(packet, verdict, decided_by, owner, steps)
    return Explanation(packet, owner, tuple(steps), verdict, decided_by, st.tracked, st.zone if st.tracked else None,
                       st.helper if st.tracked else None, st.timeout if st.tracked else None, tuple(nat),
                       tuple(actions), tuple(notes), leaves, certain)


def _leaves(packet: Packet, verdict: str, decided_by: str | None, owner: str, steps: list[ChainStep]) -> str:
    if verdict == "accept":
        last = PATHS[packet.path][-1]
        where = {"input": "to a local socket", "output": "out of the host", "forward": "on to the next hop"}
        return (f"accepted by every chain of ctkit's it meets ({owner}; last hook: {last}); it goes {where[packet.path]} "
                "unless a chain of another table at these hooks drops it")
    step = steps[-1]
    return f"{verdict} in {owner}, chain {step.chain} at the {step.hook} hook (priority {step.priority}): " \
           f"{decided_by}"


# ----------------------------------------------------------------- output

def lines(x: Explanation) -> list[str]:
    """The human report: the packet, each chain it met with the rules that matched, and the outcome."""
    out = [f"packet: {x.packet.describe()}", f"ctkit's part: {x.owner}"]
    for s in x.steps:
        head = f"  {s.hook:<11} prio {s.priority:>4}  {s.chain} ({s.type})"
        if s.skipped:
            out.append(f"{head}: skipped, {s.skipped}")
            continue
        out.append(f"{head}: {s.outcome}")
        for h in s.hits:
            if h.rule is None:
                out.append(f"      {h.verdict}" + (f" (in {h.chain})" if h.chain != s.chain else ""))
                continue
            text = f"      rule {h.rule}" + (f" [{h.chain}]" if h.chain != s.chain else "") + f" -> {h.verdict}"
            if h.comment:
                text += f"  # {h.comment}"
            if h.note:
                text += f"  ({h.note})"
            out.append(text)
    out.append(f"verdict: {x.verdict}" + ("" if x.certain else " (not certain)"))
    out.append(f"conntrack: {'tracked' if x.tracked else 'untracked'}"
               + (f", zone {x.zone}" if x.zone is not None else "")
               + (f", helper {x.helper}" if x.helper else "")
               + (f", timeout policy {x.timeout}" if x.timeout else ""))
    if x.nat:
        out.append(f"nat: {', '.join(x.nat)}")
    for a in x.actions:
        out.append(f"action: {a}")
    out.append(f"leaves: {x.leaves}")
    for n in x.notes:
        out.append(f"note: {n}")
    return out


# ------------------------------------------------------------------- live

@dataclass(frozen=True)
class LiveExplanation:
    """explain against the ruleset live in a namespace (read back by ctkit import), and, when a policy file
    is given too, against the file: drift is where the two paths differ."""
    netns: str
    live: Explanation
    unread: tuple[str, ...]  # live rules the import could not say: explain does not see them
    left_out: tuple[str, ...]  # other tools' tables and chains
    policy: Explanation | None
    drift: bool

    @property
    def exit_code(self) -> int:
        return 1 if self.drift else 0

    def as_dict(self) -> dict[str, Any]:
        return {"netns": self.netns, "live": self.live.as_dict(), "unread": list(self.unread),
                "left_out": list(self.left_out), "policy": self.policy.as_dict() if self.policy else None,
                "drift": self.drift}


def explain_live(netns: str, reader, packet: Packet, owner: str, table: str = "ctkit",
                 plan: ir.Plan | None = None) -> LiveExplanation:
    """`reader` is the importer's live reader for the backend (ctkit.importer.LIVE[name])."""
    import copy

    from ctkit.compile.lower import lower
    from ctkit.policy.load import load_document
    imported = reader(netns, table)
    live_plan = lower(load_document(copy.deepcopy(imported.document), f"<live ruleset of {netns}>"))
    live = explain(live_plan, packet, owner)
    unread = tuple(f"{n.source}:{n.line}: {n.text} ({n.reason})" for n in imported.not_expressed)
    left = tuple(f"{x.owner}: {x.what}" for x in imported.left_out)
    file_x = explain(plan, packet, owner) if plan is not None else None
    drift = file_x is not None and (file_x.trace() != live.trace() or file_x.verdict != live.verdict)
    return LiveExplanation(netns, live, unread, left, file_x, drift)


def live_lines(x: LiveExplanation) -> list[str]:
    out = [f"live ruleset of {x.netns}:"] + lines(x.live)
    for u in x.unread:
        out.append(f"note: a live rule explain cannot read (the path may differ there): {u}")
    for left in x.left_out:
        out.append(f"note: not ctkit's, not walked: {left}")
    if x.policy is not None:
        if x.drift:
            out.append(f"drift: the policy file's path differs: verdict {x.policy.verdict}"
                       + (f" by {x.policy.decided_by}" if x.policy.decided_by else "")
                       + f"; its rules: {', '.join(f'{c}/{r or v}' for c, r, v in x.policy.trace())}")
        else:
            out.append("no drift: the policy file gives this packet the same path")
    return out
