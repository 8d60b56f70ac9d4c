"""`ctkit import`: an existing ruleset -> a ctkit policy that means the same.

save.py reads iptables-save text (tables, chains, rules, line numbers); rules.py turns one rule's tokens
into the policy's fields; idioms.py recognises what the rules are for (notrack, helpers, zones, nat,
mangle statements, filter chains) and lists what it cannot say; document.py merges the families and
writes the policy with a header. `from_iptables_save` is the service function: it returns a frozen
`Imported` whose document has been checked by ctkit's own loader and linter.
"""
from __future__ import annotations

from pathlib import Path

from ctkit.errors import CtkitError, PolicyError, UsageError
from ctkit.importer.document import Imported, document
from ctkit.importer.idioms import Importer
from ctkit.importer.save import looks_like_save, parse

#: the largest iptables-save file read (a host with 100,000 rules writes about 10 MiB)
MAX_BYTES = 64 << 20


class ImportBug(CtkitError):
    """The importer wrote a policy ctkit's loader refuses: a bug in the importer, not in the input."""


def from_texts(texts: list, table: str = "ctkit", include: tuple[str, ...] = (), ipset_save: str = "",
               timeouts: dict | None = None) -> Imported:
    """(source name, iptables-save text[, family]) each -> the policy they mean. Without a family, the text
    says it (ip6tables-save's first line, IPv6 addresses). `ipset_save`: `ipset save` output, for -m set."""
    from ctkit.importer import ipsets
    from ctkit.names import chain_prefix
    known, set_notes = ipsets.parse(ipset_save)
    imp = Importer(frozenset(include), chain_prefix(table), known)
    imp.s.notes.extend(set_notes)
    imp.timeouts = timeouts or {}
    for source, text, *family in texts:
        if not looks_like_save(text):
            raise UsageError(f"{source}: not iptables-save output (no '*table' ... 'COMMIT')")
        imp.add(parse(text, source, family[0] if family else None))
    result = document(imp.finish(), tuple(t[0] for t in texts), table)
    check(result)
    return result


def from_iptables_save(paths: list[Path], table: str = "ctkit", include: tuple[str, ...] = (),
                       ipv6_paths: list[Path] = ()) -> Imported:
    """iptables-save files (the family read from each) and ip6tables-save files (IPv6 whatever they say)."""
    from ctkit.paths import read_regular

    def text(p: Path) -> str:
        return read_regular(p, MAX_BYTES).decode("utf-8", errors="surrogateescape")
    texts = [(str(p), text(p)) for p in paths] + [(str(p), text(p), "ipv6") for p in ipv6_paths]
    return from_texts(texts, table, include)


def from_netns(netns: str | None, table: str = "ctkit", include: tuple[str, ...] = (),
               variant: str = "auto") -> Imported:
    """The iptables rules live in a namespace (ctkit's own chains read back as their policy)."""
    from ctkit.importer.live import ipset_text, save_texts
    texts = save_texts(netns, variant)
    if not texts:
        raise UsageError(f"no iptables or ip6tables rules in {netns or 'this namespace'}")
    from ctkit.importer.timeouts import objects
    return from_texts(texts, table, include, ipset_text(netns), objects(netns))


def from_nft_texts(texts: list[tuple[str, str]], table: str = "ctkit", include: tuple[str, ...] = ()) -> Imported:
    """`nft -j list ruleset` outputs -> the policy: ctkit's own table if it is there, else the tables of no
    other tool (ctkit/importer/nft.py)."""
    import json

    from ctkit.importer import nft
    from ctkit.importer.idioms import Sections
    s = Sections()
    s.families = {"inet"}
    for source, text in texts:
        try:
            doc = json.loads(text)
        except ValueError as exc:
            raise UsageError(f"{source}: not nft -j output ({exc})") from None
        if not isinstance(doc, dict) or not isinstance(doc.get("nftables"), list):
            raise UsageError(f"{source}: not nft -j output (no 'nftables' list)")
        nft.read(doc, table, include, source, s)
    nft.group_notrack(s)
    result = document(s, tuple(t[0] for t in texts), table, kind="nft -j list ruleset")
    check(result)
    return result


def from_nft_json(paths: list[Path], table: str = "ctkit", include: tuple[str, ...] = ()) -> Imported:
    from ctkit.paths import read_regular
    return from_nft_texts([(str(p), read_regular(p, MAX_BYTES).decode("utf-8", errors="surrogateescape"))
                           for p in paths], table, include)


def from_netns_nft(netns: str | None, table: str = "ctkit", include: tuple[str, ...] = (),
                   variant: str = "auto") -> Imported:
    """The nftables ruleset live in a namespace."""
    from ctkit.importer.live import nft_text
    return from_nft_texts([nft_text(netns)], table, include)


#: which live ruleset a backend's namespace holds: its reader
LIVE = {"nft": from_netns_nft, "iptables": from_netns}


def check(result: Imported) -> None:
    """The document must load and lint like a file a person wrote."""
    import copy

    from ctkit.policy.lint import errors_of, lint
    from ctkit.policy.load import load_document
    try:
        policy = load_document(copy.deepcopy(result.document), "<imported policy>")
    except PolicyError as exc:
        raise ImportBug("the imported policy does not load (an importer bug): "
                        + "; ".join(p.render() for p in exc.problems)) from None
    errors = errors_of(lint(policy))
    if errors:
        raise ImportBug("the imported policy does not lint (an importer bug): "
                        + "; ".join(p.render() for p in errors))
