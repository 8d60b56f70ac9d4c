"""What ctkit owns in iptables, saved and put back: the state a confirm-or-rollback returns to.

A snapshot is JSON text: per family, ctkit's chains (the record's, as iptables-save shows them),
their rules and the built-in chain that jumps to each, and `ipset save` of ctkit's ipsets. Restore
makes the ipsets exist again (`ipset restore -exist`, listed in the ownership record first, so they
stay ctkit's) and applies the chains with kernel.apply, as one more apply: both families, foreign
rules untouched. cttimeout objects are not saved (the kernel has no way to read their policy back
through ctkit's netlink code): a rollback to chains that name a timeout object the newer policy
deleted is refused by iptables-restore, and says so.
"""
from __future__ import annotations

import json

from ctkit.backends.iptables import ipset, kernel
from ctkit.backends.iptables.document import FAMILIES, Chain, Document, Table
from ctkit.errors import KernelError


def take(prefix: str, netns: str | None, variant: str) -> str:
    variant, lives = kernel.show(prefix, netns, variant)
    rec = kernel.load_record(netns, prefix)
    families = {live.family: [[t.name, [[c.name, c.builtin, list(c.rules)] for c in t.chains]]
                              for t in live.document.tables] for live in lives}
    sets = sorted(n for n in rec.ipsets if n in set(ipset.names(netns))) if kernel._has_ipset() else []
    saved = "".join(ipset._run(["save", n], netns, f"cannot save ipset {n}").stdout for n in sets)
    return json.dumps({"variant": variant, "prefix": prefix, "families": families, "ipsets": saved,
                       "declared": {n: d for n, d in rec.declared.items() if n in sets}})


def restore(prefix: str, text: str, netns: str | None, variant: str) -> str:
    try:
        data = json.loads(text)
        docs = {f: Document(f, prefix, tuple(Table(t, tuple(Chain(c, tuple(rules), builtin)
                                                            for c, builtin, rules in chains))
                                             for t, chains in data["families"].get(f, [])))
                for f in FAMILIES}
        sets, declared = str(data.get("ipsets", "")), dict(data.get("declared", {}))
        variant = str(data.get("variant", variant))
    except (ValueError, KeyError, TypeError) as exc:
        raise KernelError(f"the saved iptables state is unreadable ({exc})") from None
    if sets:
        names = [line.split(" ")[1] for line in sets.split("\n") if line.startswith("create ")]
        with kernel._locked(netns, prefix) as rec:  # theirs again before they exist: never foreign
            rec.ipsets |= set(names)
            rec.declared.update(declared)
            kernel._store(rec)
        ipset._run(["restore", "-exist"], netns, "ipset refused the saved sets", input=sets)
    variant, _changes = kernel.apply(docs["ipv4"], docs["ipv6"], netns, variant)
    rules = sum(len(c.rules) for d in docs.values() for t in d.tables for c in t.chains)
    return f"chains {prefix}* as saved ({rules} rules, iptables-{variant})" if rules else \
        f"chains {prefix}* removed, as saved (there were none; iptables-{variant})"
