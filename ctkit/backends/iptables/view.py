"""TableViews of ctkit's iptables chains (one per family), and foreign rules that pre-empt them.

The backend prints rules exactly as iptables-save does, and rules are keyed
by the policy rule id in their `-m comment`; the canonical form is the
rule's tokens without the comment, so a rule compares by what it does.
Chains compare by the built-in chain that jumps to them and how many jumps
there are (exactly one).
"""
from __future__ import annotations

import re
import shlex

from ctkit import names
from ctkit.audit.drift import RuleView, SetView, TableView
from ctkit.audit.findings import Finding
from ctkit.backends.iptables.document import Document
from ctkit.backends.iptables.kernel import SavedTable, jumps, owned

_DECIDING = ("ACCEPT", "DROP", "REJECT")


_TOKEN = re.compile(r'(?:"[^"]*"|[^ \t\r\n"]+)+')  # shlex's whitespace: space, tab, CR, LF


def words_of(spec: str) -> list[str]:
    """shlex.split(spec), fast for what iptables-save and the generator write. shlex is a character-
    by-character state machine: splitting the 40,000 rules of a 10,000-rule policy's plan took most of
    a no-op apply (about 5 of its 8 s on iptables-legacy). Without single quotes and backslashes a token
    is a run of double-quoted and bare pieces, and taking the quotes out of it is what shlex does; any
    other spec (and an unbalanced quote, which shlex refuses) goes to shlex."""
    if "'" in spec or "\\" in spec or spec.count('"') % 2:
        return shlex.split(spec)
    return [t.replace('"', "") for t in _TOKEN.findall(spec)]


def _split(spec: str) -> tuple[str | None, tuple[str, ...]]:
    """(comment, tokens without `-m comment --comment X`)."""
    words = words_of(spec)
    comment = None
    out: list[str] = []
    i = 0
    while i < len(words):
        if words[i:i + 3] == ["-m", "comment", "--comment"] and i + 3 < len(words):
            comment = words[i + 3]
            i += 4
            continue
        out.append(words[i])
        i += 1
    return comment, tuple(out)


_rule_id = names.rule_id


def view(doc: Document, jump_counts: dict[tuple[str, str], int] | None, known_ids: set[str]) -> TableView:
    """jump_counts None: the desired side (one jump per chain with a built-in parent)."""
    if not doc.tables:
        return TableView(False)
    chains, rules, texts, origins = {}, {}, {}, {}
    for table in doc.tables:
        for chain in table.chains:
            key = f"{table.name}/{chain.name}"
            n = (1 if chain.builtin else 0) if jump_counts is None else jump_counts.get((table.name, chain.name), 0)
            chains[key] = (chain.builtin, n)
            if chain.origin:
                origins[key] = chain.origin
            texts[key] = (f"jumped to from {chain.builtin} ({n} jump{'s' if n != 1 else ''})"
                          if chain.builtin else f"user chain ({n} jumps from built-in chains)")
            views = []
            # a toggle's switch chain holds the toggle's live state (`ctkit toggle`), not policy
            switch = names.is_switch_chain(doc.prefix, chain.name)
            for spec in () if switch else chain.rules:
                comment, canon = _split(spec)
                views.append(RuleView(key, _rule_id(comment, known_ids), canon, spec))  # text: the spec
            rules[key] = views
    return TableView(True, chains, rules, {}, texts, origins)


def live(current: dict[str, SavedTable], prefix: str, family: str, known_ids: set[str]) -> TableView:
    counts: dict[tuple[str, str], int] = {}
    for table, rule in jumps(current, prefix):
        counts[(table, rule.target)] = counts.get((table, rule.target), 0) + 1
    return view(owned(current, prefix, family), counts, known_ids)


def _around_jumps(current: dict[str, SavedTable], prefix: str):
    """(table name, saved table, built-in chain, its policy, its rules, index of ctkit's first jump) for every
    built-in chain that jumps to ctkit."""
    for name, saved in current.items():
        for chain, policy in saved.policies.items():
            if not saved.builtin(chain):
                continue
            in_chain = [r for r in saved.rules if r.chain == chain]
            first_jump = next((i for i, r in enumerate(in_chain) if (r.target or "").startswith(prefix)), None)
            if first_jump is not None:
                yield name, saved, chain, policy, in_chain, first_jump


def foreign_first(current: dict[str, SavedTable], prefix: str, family: str) -> list[Finding]:
    """Foreign rules placed before ctkit's jump in a built-in chain that decide the packet there, and
    foreign drops after it.

    In iptables an ACCEPT ends the built-in chain, so unlike nftables a foreign
    accept before ctkit's jump bypasses the policy too. ctkit's accept returns to
    the built-in chain (nft's accept ends only ctkit's base chain), so a foreign
    DROP or REJECT after the jump, or the built-in chain's policy DROP, drops
    what ctkit accepted: on nft that is foreign.later-drop, and so it is here.
    """
    out = []
    for name, saved, chain, policy, in_chain, first_jump in _around_jumps(current, prefix):
        before = [r for r in in_chain[:first_jump] if r.target in _DECIDING]
        if name == "raw":
            out += _templates_first(saved, in_chain[:first_jump], prefix, family, chain)
        if before:
            out.append(Finding(
                "foreign.earlier-rule", "warning", f"{family} {name}/{chain}",
                f"{len(before)} foreign rule(s) before ctkit's jump in {chain} accept or drop traffic "
                "before the policy sees it", "move ctkit's jump first (ctkit apply inserts it at position 1) "
                "or check that their owner means it",
                {"rules": [r.spec for r in before][:10]}))
        after = [r.spec for r in in_chain[first_jump + 1:] if r.target in ("DROP", "REJECT")]
        if policy == "DROP":
            after.append(f"(the policy of {chain}: DROP)")
        if after:
            out.append(Finding(
                "foreign.later-drop", "warning", f"{family} {name}/{chain}",
                f"{len(after)} foreign rule(s) after ctkit's jump in {chain} drop traffic: what ctkit accepts "
                "goes on to them (an accept ends only ctkit's chains, as on nft), so the policy cannot admit "
                "what they drop", "check that their owner means it (fail2ban's bans do), or give the "
                "built-in chain policy ACCEPT and let ctkit's policy drop",
                {"rules": after[:10]}))
    return out


def _l4(spec: str) -> tuple[str | None, list[tuple[int, int]] | None]:
    """(protocol, destination port ranges) a rule matches; None: any."""
    words = words_of(spec)
    proto = words[words.index("-p") + 1] if "-p" in words and words.index("-p") + 1 < len(words) else None
    if "!" in words:
        return proto, None  # a negated match: judged as covering every port (never missed)
    ports: list[tuple[int, int]] = []
    for flag in ("--dport", "--dports", "--ports", "--destination-port", "--destination-ports"):
        if flag in words and words.index(flag) + 1 < len(words):
            for part in words[words.index(flag) + 1].split(","):
                lo, _, hi = part.partition(":")
                if lo.isdigit() and (not hi or hi.isdigit()):
                    ports.append((int(lo), int(hi or lo)))
    return proto, ports or None


def _overlap(a: tuple, b: tuple) -> bool:
    (pa, ra), (pb, rb) = a, b
    if pa and pb and pa != pb:
        return False
    return ra is None or rb is None or any(lo <= h2 and lo2 <= hi for lo, hi in ra for lo2, h2 in rb)


def _templates_first(saved: SavedTable, before: list, prefix: str, family: str, chain: str) -> list[Finding]:
    """Foreign CT/NOTRACK rules in raw before ctkit's jump: the first conntrack template a packet gets is
    the one it keeps (xt_CT leaves a packet that already has one alone), so a foreign notrack there takes
    the flows it covers away from ctkit's helpers, zones and timeouts."""
    helpers = []  # (helper name, its rule's protocol and ports) of ctkit's CT --helper rules
    for m in saved.rules:
        if m.chain.startswith(prefix) and m.target == "CT" and "--helper" in m.spec:
            words = words_of(m.spec)
            helpers.append((words[words.index("--helper") + 1], _l4(m.spec)))
    out = []
    for r in before:
        if r.target not in ("CT", "NOTRACK"):
            continue
        hit = sorted({name for name, flows in helpers if _overlap(_l4(r.spec), flows)})
        if hit and (r.target == "NOTRACK" or "--notrack" in r.spec):
            out.append(Finding(
                "foreign.notrack-overrides-helper", "warning", f"{family} raw/{chain}",
                f"a foreign notrack before ctkit's jump in raw {chain} untracks flows that ctkit's helper(s) "
                f"{', '.join(hit)} should handle: untracked flows get no helper (their data connections fail)",
                "narrow the foreign rule so it spares the helper's ports, or move ctkit's jump first",
                {"rule": r.spec, "helpers": hit}))
    return out


def rule_hits(current_by_family: dict[str, dict[str, SavedTable]], prefix: str) -> dict[str, tuple[int, int]]:
    """(packets, bytes) per policy rule id over ctkit's chains, from `iptables-save -c` of each family."""
    hits: dict[str, tuple[int, int]] = {}
    for current in current_by_family.values():
        for saved in current.values():
            for r in saved.rules:
                if not r.chain.startswith(prefix):
                    continue
                comment, _ = _split(r.spec)
                rid = names.rule_id(comment)
                if rid:
                    p, b = hits.get(rid, (0, 0))
                    hits[rid] = (p + r.packets, b + r.bytes)
    return hits


def set_views(sets, live: dict[str, tuple[str, set[str]]], owned: set[str], declared: dict[str, list],
              prefix: str) -> tuple[dict[str, SetView], dict[str, SetView]]:
    """(compiled, live) views of ctkit's ipsets for the audit. `sets`: the policy's IpSets; `live`: name ->
    (create line, members) of ctkit's sets in the kernel (ipset.saved); `owned`, `declared`: the ownership
    record's sets and the declaration of each at the last apply. ipset keeps no mark on a member, so a live
    member is the policy's when it is declared now or was at the last apply (the record); the others were
    added at run time and are not the policy's."""
    from ctkit.backends.iptables import ipset
    want, have = {}, {}
    for s in sets:
        create = ipset._create_line(s.name, s)
        want[s.name] = SetView(ipset.kind_of(create), create, {v: v for v, _t in s.elements})
    for name, (create, members) in live.items():
        if name not in want and name not in owned:
            continue  # not ctkit's: never compared
        kind = ipset.kind_of(create)[0]
        wanted = list(want[name].declared) if name in want else []
        before = [line.split()[2] for line in declared.get(name, [None, []])[1]]
        held = {v: v for v in dict.fromkeys(wanted + before) if ipset._held(v, kind, members)}
        have[name] = SetView(ipset.kind_of(create), create, held)
    ours = prefix.lower()  # keyed by the policy's set names (names.ipset_name), as the drift names them

    def policy_names(views: dict[str, SetView]) -> dict[str, SetView]:
        return {n[len(ours):] if n.startswith(ours) else n: v for n, v in views.items()}
    return policy_names(want), policy_names(have)
