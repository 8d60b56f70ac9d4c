"""Text of the iptables backend: iptables-restore input from a Document, and `ctkit show`'s listing.

Kept apart from generate.py (IR -> Document) as nft's text.py is kept apart
from its generate.py: what the user reads is written here.
"""
from __future__ import annotations

from ctkit.backends.iptables.document import Document, jump_spec
from ctkit.terminal import printable


def render(doc: Document, source: str | None = None) -> str:
    """The document as iptables-restore --noflush input that creates ctkit's chains and jumps.

    Run once on a host without ctkit's chains; `ctkit apply --backend iptables`
    replaces them in place and never duplicates a jump.
    """
    tool = "iptables-restore" if doc.family == "ipv4" else "ip6tables-restore"
    lines = [f"# ctkit: chains {doc.prefix}* ({doc.family}){' from ' + source if source else ''}",
             f"# {tool} --noflush < this file (once; ctkit apply --backend iptables re-applies safely)"]
    for table in doc.tables:
        lines.append(f"*{table.name}")
        lines += [f":{c.name} - [0:0]" for c in table.chains]
        for c in table.chains:
            lines += [f"-A {c.name} {spec}" for spec in c.rules]
        lines += [f"-I {c.builtin} 1 {jump_spec(c)}" for c in table.chains if c.builtin]
        lines.append("COMMIT")
    return "\n".join(lines) + "\n"


def listing(lives) -> str:
    """ctkit's chains with counters as `ctkit show` prints them: the jumps into them first, then each
    chain's rules, every line as iptables-save -c writes it ([packets:bytes] -A CHAIN SPEC)."""
    lines = []
    for live in lives:
        if not live.document.tables:
            continue
        lines.append(f"# {live.tool}: {live.family}; [packets:bytes]")
        for t in live.document.tables:
            lines.append(f"*{t.name}")
            for _name, rule in ((n, r) for n, r in live.jumps if n == t.name):
                lines.append(f"[{rule.packets}:{rule.bytes}] -A {rule.chain} {printable(rule.spec)}")
            for chain in t.chains:
                for i, spec in enumerate(chain.rules):
                    packets, nbytes = live.counters.get((t.name, chain.name, i), (0, 0))
                    lines.append(f"[{packets}:{nbytes}] -A {chain.name} {printable(spec)}")
    return "".join(line + "\n" for line in lines)
