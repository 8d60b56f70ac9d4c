"""iptables and ip6tables through iptables-restore --noflush, inside a namespace.

ctkit owns the chains it created (named with its prefix, CTKIT-...) and the
jumps from built-in chains to them; nothing else. A name is not proof of
ownership: another program (or an administrator) may create CTKIT-foo too.
So ctkit keeps an ownership record (see "The ownership record" below) and a
chain or ipset with ctkit's prefix that the record does not list is FOREIGN:
apply, show, remove and toggle leave it, its rules and the jumps to it alone
and report it; when ctkit needs that very name for a chain or set of its own,
it refuses and names the foreign object. Every change is one
`iptables-restore --noflush` run per family, built from what iptables-save
shows right now:

  * ctkit's chains are declared (`:CTKIT-X - [0:0]`: created, or flushed when
    they exist) and refilled; chains ctkit no longer needs are flushed and
    deleted; jumps to them are deleted by their exact spec;
  * a jump is inserted (at the top of the built-in chain) only when none
    exists; extra copies of a jump are deleted, so re-applying never
    duplicates one and leaves iptables-save output identical;
  * foreign rules are never addressed by position and never rewritten, so they
    keep their place and order.

Each table is committed as a whole (COMMIT), so the kernel sees ctkit's old
chains or the new ones, never a mix. IPv4 and IPv6 are two tools and two
transactions: both are checked with --test first; if one is refused anyway
(iptables-nft's --test does not consult the kernel, and tables commit one by
one), what ctkit had before is put back in both families.

Both variants of iptables 1.8 work: iptables-nft (nf_tables API) and
iptables-legacy (x_tables); `auto` takes the one the host's `iptables`
command is. Subprocesses run inside the target namespace because they are
started from a thread that has entered it (ctkit.kernel.netns.entered).

The ownership record
--------------------
/run/ctkit/<netns id>/iptables-<prefix>.json (CTKIT_STATE_DIR replaces
/run/ctkit), one file per namespace and prefix, lists per iptables variant
the (family, table, chain) triples and the ipset names ctkit created there.
The netns id is the namespace's cookie (SO_NETNS_COOKIE of a socket made
inside it: 64 bits, never reused while the machine is up), or the device and
inode of /proc/thread-self/ns/net where the kernel has no cookie; the file
also holds the boot id and is ignored after a reboot (the kernel's rules are
gone then as well). A state file was chosen over a marker rule in each chain
because a rule can be copied by accident (iptables-save | sed | iptables-restore
of someone else's chains would copy the marker with them) and because an
empty chain has no rule to carry it; the file survives restarts of ctkit and
cannot come into being without ctkit writing it. It is written before a change
(old entries plus what the change is about to create, so an interrupted run
never leaves ctkit's chains unrecorded) and again after it (exactly what ctkit
holds then), under an flock so two ctkit runs do not interleave. Losing the
file fails safe: ctkit then treats its own chains as foreign and refuses to
reuse their names, it never deletes anything unlisted.

iptables-save output is read as bytes, decoded with surrogateescape and split
on "\n" only: a foreign comment holding \r, \f, U+0085 or bytes that are not
UTF-8 is data, not a line break or an error.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shlex
import shutil
import subprocess
from dataclasses import dataclass, field
from typing import Iterator

from ctkit import names
from ctkit.backends.iptables import ipset
from ctkit.backends.iptables.document import FAMILIES, TABLE_ORDER, Chain, Document, Table, jump_spec
from ctkit.backends.iptables.generate import toggle_switch_spec
from ctkit.errors import KernelError, UsageError
from ctkit.kernel import cttimeout
from ctkit.kernel.netns import entered, netns_id
from ctkit.kernel.procfs import boot_id
from ctkit.ownership import check_prefix

VARIANTS = ("auto", "nft", "legacy")
TIMEOUT = 60  # seconds for one iptables tool run
_TOOL = {"ipv4": "iptables", "ipv6": "ip6tables"}
_INSTALL = "install the Debian package iptables (apt-get install iptables)"


# -------------------------------------------------------------- the tools

def resolve_variant(variant: str, netns: str | None = None, prefix: str | None = None) -> str:
    """nft or legacy. auto decides per namespace from what is there: the variant ctkit's ownership
    record (under `prefix`) holds chains in; else the one variant whose tables hold rules; else (none,
    or both: see holding_rules) the host's `iptables -V`. Reads only; changes nothing."""
    if variant not in VARIANTS:
        raise UsageError(f"unknown iptables variant {variant!r} (valid: {', '.join(VARIANTS)})")
    if variant != "auto":
        return variant
    if prefix is not None:
        rec = load_record(netns, prefix)
        used = {v for v, fams in rec.chains.items() if any(c for tabs in fams.values() for c in tabs.values())}
        if len(used) == 1:
            return used.pop()
    held = holding_rules(netns)
    if len(held) == 1:
        return held.pop()
    return host_variant()


def holding_rules(netns: str | None) -> set[str]:
    """The variants whose tables hold at least one rule in the namespace."""
    return {v for v in ("nft", "legacy") if _holds_rules(netns, v)}


def _holds_rules(netns: str | None, variant: str) -> bool:
    """Whether one variant's tables hold a rule. Legacy tables are read only where
    /proc/net/ip*_tables_names lists them (reading one with iptables-legacy-save would create it)."""
    for family, names_file in (("ipv4", "ip_tables_names"), ("ipv6", "ip6_tables_names")):
        if variant == "legacy":
            with entered(netns):
                try:
                    with open(f"/proc/thread-self/net/{names_file}", encoding="ascii") as f:
                        if not f.read().split():
                            continue
                except OSError:
                    continue
        if shutil.which(f"{_TOOL[family]}-{variant}-save") is None:
            continue
        with contextlib.suppress(KernelError, subprocess.SubprocessError, OSError):
            if "\n-A " in "\n" + save(family, variant, netns):
                return True
    return False


def mixed_variants(netns: str | None, variant: str) -> str | None:
    """A warning when the other iptables variant holds rules in the namespace too: packets pass both,
    and ctkit manages (and audits) only `variant`'s."""
    other = "legacy" if variant == "nft" else "nft"
    if not _holds_rules(netns, other):
        return None
    return (f"iptables-{other} holds rules in this namespace too: packets pass through both variants' "
            f"rules, ctkit works with iptables-{variant} and does not see the iptables-{other} ones "
            f"(list them with iptables-{other}-save; --iptables-variant chooses)")


def host_variant() -> str:
    """The variant the host's `iptables` command is (`iptables -V`)."""
    exe = shutil.which("iptables")
    if exe is None:
        raise KernelError(f"no iptables command on this host: {_INSTALL}, or choose --iptables-variant nft|legacy")
    proc = subprocess.run([exe, "-V"], capture_output=True, text=True, errors="surrogateescape", timeout=TIMEOUT)
    text = proc.stdout + proc.stderr
    if "nf_tables" in text:
        return "nft"
    if "legacy" in text:
        return "legacy"
    raise KernelError(f"cannot tell which iptables variant `{exe} -V` is ({text.strip()!r}): "
                      "choose --iptables-variant nft|legacy")


def tool(family: str, variant: str, kind: str) -> str:
    """Path of e.g. ip6tables-legacy-restore; a KernelError saying how to get it when missing."""
    name = f"{_TOOL[family]}-{variant}-{kind}"
    path = shutil.which(name)
    if path is None:
        raise KernelError(f"{name} not found: {_INSTALL} (it ships iptables-nft and iptables-legacy)")
    return path


def _decode(data: bytes | None) -> str:
    """Tool output as text: bytes that are not UTF-8 stay data (surrogateescape), never an error."""
    return (data or b"").decode("utf-8", errors="surrogateescape")


def _encode(text: str | None) -> bytes | None:
    return None if text is None else text.encode("utf-8", errors="surrogateescape")


def _run(argv: list[str], netns: str | None, what: str, input: str | None = None) -> str:
    try:
        with entered(netns):
            proc = subprocess.run(argv, input=_encode(input), capture_output=True, timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        raise KernelError(f"{what}: {argv[0]} did not finish within {TIMEOUT} s (xtables lock held?)") from None
    if proc.returncode != 0:
        raise KernelError(f"{what}: {_explain(_decode(proc.stderr), input)}")
    return _decode(proc.stdout)


def _explain(stderr: str, document: str | None) -> str:
    lines = [ln for ln in stderr.strip().split("\n") if ln and not ln.startswith("Try `")]
    text = "; ".join(lines) or "no message"
    for ln in lines:
        if ln.startswith("Error occurred at line: ") and document:
            try:
                n = int(ln.split(": ")[1])
                text += f" (line {n}: {document.split(chr(10))[n - 1]})"
            except (ValueError, IndexError):
                pass
    if "Permission denied" in text or "Operation not permitted" in text:
        text += " (needs CAP_NET_ADMIN: run as root)"
    return text


# ------------------------------------------------------ iptables-save text

@dataclass(frozen=True)
class SavedRule:
    chain: str
    spec: str  # everything after `-A CHAIN `
    packets: int = 0
    bytes: int = 0

    @property
    def target(self) -> str | None:
        """The chain or target of -j/-g."""
        try:
            words = shlex.split(self.spec)
        except ValueError:  # an unbalanced quote in a foreign rule: no chain name has one
            words = self.spec.split(" ")
        for flag in ("-j", "-g"):
            if flag in words:
                i = words.index(flag)
                if i + 1 < len(words):
                    return words[i + 1]
        return None


@dataclass(frozen=True)
class SavedTable:
    name: str
    policies: dict = field(default_factory=dict)  # chain -> policy; '-' for user-defined chains
    rules: tuple[SavedRule, ...] = ()

    def builtin(self, chain: str) -> bool:
        return self.policies.get(chain, "-") != "-"


def parse_save(text: str) -> dict[str, SavedTable]:
    """iptables-save [-c] output -> tables in the order printed.

    Lines end at "\n" only (iptables-save writes nothing else as a line end; str.splitlines
    would also cut a foreign comment at \r, \f, \x1c-\x1e or U+0085)."""
    tables: dict[str, SavedTable] = {}
    name, policies, rules = None, {}, []
    for line in text.split("\n"):
        if not line or line.startswith("#"):
            continue
        if line.startswith("*"):
            name, policies, rules = line[1:].strip(), {}, []
        elif line.startswith(":") and name:
            words = line[1:].split(" ")
            if len(words) >= 2:
                policies[words[0]] = words[1]
        elif line == "COMMIT" and name:
            tables[name] = SavedTable(name, dict(policies), tuple(rules))
            name = None
        elif name:
            packets = nbytes = 0
            if line.startswith("["):
                try:
                    counts, line = line[1:].split("] ", 1)
                    packets, nbytes = (int(x) for x in counts.split(":"))
                except ValueError:
                    continue
            flag, chain, spec = (line.split(" ", 2) + [""])[:3]
            if flag == "-A":
                rules.append(SavedRule(chain, spec, packets, nbytes))
    return tables


def save(family: str, variant: str, netns: str | None, counters: bool = False) -> str:
    argv = [tool(family, variant, "save")] + (["-c"] if counters else [])
    return _run(argv, netns, f"cannot read the {_TOOL[family]} ruleset")


# ---------------------------------------------------- what ctkit owns now
# `mine` is one family's part of the ownership record: {table: {chain, ...}}. The pure
# functions below also take None there, meaning "every chain with the prefix" (how a
# ruleset looks to a reader with no record, e.g. tests of a captured iptables-save); the
# operations further down always pass the record.

Mine = dict  # table -> set of chain names ctkit created


def _mine_in(saved: SavedTable, prefix: str, mine: Mine | None) -> list[str]:
    """ctkit's chains of one table, in iptables-save order."""
    listed = None if mine is None else mine.get(saved.name, set())
    return [c for c in saved.policies if c.startswith(prefix) and (listed is None or c in listed)]


def owned(current: dict[str, SavedTable], prefix: str, family: str, mine: Mine | None = None) -> Document:
    """ctkit's chains as the kernel holds them, in the backend's own shape (for show and rollback)."""
    tables = []
    for name in TABLE_ORDER + tuple(t for t in current if t not in TABLE_ORDER):
        saved = current.get(name)
        if saved is None:
            continue
        chains_ = _mine_in(saved, prefix, mine)
        if not chains_:
            continue
        jumps_ = {r.target: r.chain for r in saved.rules if saved.builtin(r.chain) and r.target in chains_}
        chains = tuple(Chain(c, tuple(r.spec for r in saved.rules if r.chain == c), jumps_.get(c)) for c in chains_)
        tables.append(Table(name, chains))
    return Document(family, prefix, tuple(tables))


def jumps(current: dict[str, SavedTable], prefix: str, mine: Mine | None = None) -> list[tuple[str, SavedRule]]:
    """(table, rule) of every rule outside ctkit's chains that sends packets into them."""
    out = []
    for name, saved in current.items():
        chains_ = set(_mine_in(saved, prefix, mine))
        for r in saved.rules:
            if r.chain not in chains_ and r.target in chains_:
                out.append((name, r))
    return out


def foreign(current: dict[str, SavedTable], prefix: str, mine: Mine | None) -> list[tuple[str, str]]:
    """(table, chain) of the chains named with ctkit's prefix that ctkit did not create."""
    out = []
    for name, saved in current.items():
        chains_ = set(_mine_in(saved, prefix, mine))
        out += [(name, c) for c in saved.policies if c.startswith(prefix) and c not in chains_]
    return out


# ------------------------------------------------------------ transaction

def transaction(desired: Document | None, current: dict[str, SavedTable], prefix: str,
                mine: Mine | None = None) -> str:
    """iptables-restore --noflush input that turns ctkit's part of `current` into `desired`
    (None: remove everything ctkit owns). Empty when there is nothing to do. Only the chains whose
    rules differ are flushed and refilled: the others, and their counters, are not touched.

    Only the chains in `mine` are ctkit's (None: all chains with the prefix). A chain
    ctkit wants whose name a foreign chain already has is refused (KernelError), never
    flushed; foreign chains, their rules and the jumps to them are not addressed."""
    wanted = {t.name: t for t in (desired.tables if desired else ())}
    names = [n for n in TABLE_ORDER if n in wanted or n in current] + \
            [n for n in current if n not in TABLE_ORDER]
    family = f" ({desired.family})" if desired else ""
    out: list[str] = []
    for name in names:
        saved = current.get(name, SavedTable(name))
        table = wanted.get(name, Table(name, ()))
        old = _mine_in(saved, prefix, mine)
        for c in table.chains:
            if c.name in saved.policies and c.name not in old:
                raise KernelError(
                    f"chain {c.name} in table {name}{family} exists but ctkit did not create it (its ownership "
                    f"record does not list it): ctkit needs that name and will not flush or reuse a foreign "
                    f"chain; rename or delete it (iptables -t {name} -F {c.name}; iptables -t {name} -X "
                    f"{c.name}) or give the policy another table name")
        if not old and not table.chains:
            continue
        new = {c.name for c in table.chains}
        stale = [c for c in old if c not in new]
        for r in saved.rules:
            if r.chain not in old and not saved.builtin(r.chain) and r.target in stale:
                raise KernelError(f"chain {r.chain} in table {name} (not ctkit's) sends packets to {r.target}, "
                                  f"which ctkit must delete: remove that rule first (-D {r.chain} {r.spec})")
        # a chain of ctkit's that holds exactly the wanted rules is not named: it keeps its counters
        same = {c.name for c in table.chains if c.name in old
                and [r.spec for r in saved.rules if r.chain == c.name] == list(c.rules)}
        lines = [f":{c.name} - [0:0]" for c in table.chains if c.name not in same]
        kept: set[tuple[str, str]] = set()
        for r in saved.rules:
            # jumps from built-in chains are ctkit's to manage; a foreign chain's rules are not
            if not saved.builtin(r.chain) or r.target not in old:
                continue
            key = (r.chain, r.target)
            wanted_jump = any(c.builtin == r.chain and c.name == r.target for c in table.chains)
            if wanted_jump and r.spec == f"-j {r.target}" and key not in kept:
                kept.add(key)
            else:
                lines.append(f"-D {r.chain} {r.spec}")
        lines += [f"-F {c}" for c in stale] + [f"-X {c}" for c in stale]
        for c in table.chains:
            if c.name not in same:
                lines += _refill(c, saved)
        lines += [f"-I {c.builtin} 1 {jump_spec(c)}" for c in table.chains
                  if c.builtin and (c.builtin, c.name) not in kept]
        if lines:
            out += [f"*{name}"] + lines + ["COMMIT"]
    return "\n".join(out) + "\n" if out else ""


def _refill(chain, saved: SavedTable) -> list[str]:
    """The -A lines of a chain that is flushed and refilled. A wanted rule that the chain already
    holds (the same spec, matched in order) is written with its kernel counters (`-c PACKETS BYTES`;
    `saved` read with iptables-save -c), so a rule an apply does not change keeps counting when
    another rule of its chain changes."""
    old: dict[str, list[SavedRule]] = {}
    for r in saved.rules:
        if r.chain == chain.name:
            old.setdefault(r.spec, []).append(r)
    lines = []
    for spec in chain.rules:
        same = old.get(spec)
        r = same.pop(0) if same else None
        counts = f"-c {r.packets} {r.bytes} " if r and (r.packets or r.bytes) else ""
        lines.append(f"-A {chain.name} {counts}{spec}")
    return lines


# ------------------------------------------------------- ownership record

STATE_DIR = os.environ.get("CTKIT_STATE_DIR", "/run/ctkit")


@dataclass
class Record:
    """What ctkit created in one namespace under one prefix."""
    path: str
    netns: str
    prefix: str
    chains: dict = field(default_factory=dict)  # variant -> family -> table -> set of chains
    ipsets: set = field(default_factory=set)
    declared: dict = field(default_factory=dict)  # ipset name -> ipset.declaration() at the last apply
    timeouts: dict = field(default_factory=dict)  # cttimeout name -> timeout_declaration() at the last apply
    #: family -> the iptables-nft tables that did not exist before ctkit's apply made them (ctkit remove
    #: deletes those it finds empty: a namespace that had no ip filter table is left without one)
    created: dict = field(default_factory=dict)

    def mine(self, variant: str, family: str) -> Mine:
        return self.chains.setdefault(variant, {}).setdefault(family, {})

    def empty(self) -> bool:
        return not self.ipsets and not any(c for fams in self.chains.values() for tabs in fams.values()
                                           for c in tabs.values())

    def as_dict(self) -> dict:
        return {"version": 1, "boot_id": boot_id(), "netns": self.netns, "prefix": self.prefix,
                "chains": {v: {f: {t: sorted(c) for t, c in tabs.items() if c} for f, tabs in fams.items()}
                           for v, fams in self.chains.items()},
                "ipsets": sorted(self.ipsets),
                "declared": {n: d for n, d in sorted(self.declared.items()) if n in self.ipsets},
                "timeouts": dict(sorted(self.timeouts.items())),
                "created": {f: sorted(t) for f, t in sorted(self.created.items()) if t}}


def record_path(netns: str | None, prefix: str) -> str:
    return os.path.join(STATE_DIR, netns_id(netns), f"iptables-{check_prefix(prefix)}.json")


def load_record(netns: str | None, prefix: str) -> Record:
    """The record, or an empty one when there is none, it is not root's, or it is from another boot."""
    path = record_path(netns, prefix)
    rec = Record(path, os.path.basename(os.path.dirname(path)), prefix)
    try:
        st = os.stat(path)
        if st.st_uid != os.geteuid() or st.st_mode & 0o022:
            return rec  # not written by ctkit (as this user): not proof of anything
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError):
        return rec
    if not isinstance(data, dict) or data.get("version") != 1 or data.get("boot_id") != boot_id() \
            or data.get("netns") != rec.netns or data.get("prefix") != prefix:
        return rec
    try:
        for variant, fams in dict(data.get("chains", {})).items():
            for family, tabs in dict(fams).items():
                for table, chains in dict(tabs).items():
                    rec.mine(str(variant), str(family))[str(table)] = {str(c) for c in chains}
        rec.ipsets = {str(n) for n in data.get("ipsets", [])}
        rec.declared = {str(n): [str(d[0]), [str(x) for x in d[1]]] for n, d in dict(data.get("declared", {})).items()}
        rec.timeouts = {str(n): str(d) for n, d in dict(data.get("timeouts", {})).items()}
        rec.created = {str(f): {str(t) for t in tabs} for f, tabs in dict(data.get("created", {})).items()
                       if f in FAMILIES}
    except (TypeError, ValueError, IndexError, KeyError):
        return Record(path, rec.netns, prefix)
    return rec


def _store(rec: Record) -> None:
    if rec.empty():
        with contextlib.suppress(FileNotFoundError):
            os.unlink(rec.path)
        return
    tmp = rec.path + ".tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(rec.as_dict(), f, indent=1)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, rec.path)


@contextlib.contextmanager
def _locked(netns: str | None, prefix: str) -> Iterator[Record]:
    """The record, held under an exclusive lock for a read-modify-write."""
    path = record_path(netns, prefix)
    try:
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        fd = os.open(path + ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise KernelError(f"cannot write ctkit's ownership record {path}: {exc.strerror} "
                          f"(run as root, or set CTKIT_STATE_DIR)") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield load_record(netns, prefix)
    finally:
        os.close(fd)


def _prune(rec: Record, variant: str, current: dict[str, dict[str, SavedTable]]) -> None:
    """Forget chains that are gone (deleted by hand): their names are nobody's now."""
    for family, tables in current.items():
        mine = rec.mine(variant, family)
        for table in list(mine):
            mine[table] = mine[table] & set(tables[table].policies) if table in tables else set()


def _note_foreign(findings: list | None, current: dict[str, dict[str, SavedTable]], prefix: str,
                  rec: Record, variant: str, netns: str | None) -> None:
    if findings is None:
        return
    mixed = mixed_variants(netns, variant)
    if mixed:
        findings.append(mixed)
    for family, tables in current.items():
        for table, chain in foreign(tables, prefix, rec.mine(variant, family)):
            findings.append(f"chain {chain} in {_TOOL[family]}-{variant} table {table} is not ctkit's "
                            "(ctkit did not create it): left alone with its rules and the jumps to it")
    if _has_ipset():
        for name in ipset.foreign(prefix.lower(), rec.ipsets, netns):
            findings.append(f"ipset {name} is not ctkit's (ctkit did not create it): left alone")


def _note_dropping_builtins(findings: list | None, current: dict[str, dict[str, SavedTable]],
                            docs: dict[str, Document], variant: str) -> None:
    """A built-in chain with policy DROP that ctkit's chain returns to drops what ctkit accepts (an accept
    ends only ctkit's chains, as on nft, where another table's policy drop does the same)."""
    if findings is None:
        return
    for family, doc in docs.items():
        for t in doc.tables:
            saved = current[family].get(t.name)
            for c in t.chains:
                if c.builtin and saved is not None and saved.policies.get(c.builtin) == "DROP":
                    findings.append(f"{_TOOL[family]}-{variant} table {t.name}: built-in chain {c.builtin} has "
                                    f"policy DROP, so it drops what {c.name} accepts (an accept ends only ctkit's "
                                    "chains, as on nft): give it policy ACCEPT and let the policy's chain drop")


def _copy(mine: Mine) -> Mine:
    return {t: set(c) for t, c in mine.items()}


# ------------------------------------------------------------ operations

@dataclass(frozen=True)
class Change:
    family: str
    tool: str
    document: str  # what was (or would be) sent; empty: nothing to do


def _restore(family: str, variant: str, netns: str | None, text: str, test: bool) -> None:
    argv = [tool(family, variant, "restore"), "--noflush", "--wait", "10"] + (["--test"] if test else [])
    _run(argv, netns, f"{_TOOL[family]}-restore refused the {'check' if test else 'change'}", input=text)


def restore_noflush(family: str, variant: str, netns: str | None, text: str) -> None:
    """`iptables-restore --noflush < text`, as a boot unit loads ctkit's boot file."""
    _restore(family, variant, netns, text, test=False)


def _reconcile(plan: dict[str, str], before: dict[str, dict[str, SavedTable]], prefix: str, variant: str,
               netns: str | None, dry_run: bool, mine_old: dict[str, Mine], mine_now: dict[str, Mine]
               ) -> list[Change]:
    """Send `plan`; when a family is refused, put back what ctkit had (mine_old, as `before` shows it)
    in that family and the one done before it, deleting what ctkit had meanwhile created (mine_now)."""
    for f, text in plan.items():
        if text:
            _restore(f, variant, netns, text, test=True)
    changes = [Change(f, f"{_TOOL[f]}-{variant}", plan[f]) for f in plan]
    if dry_run:
        return changes
    done: list[str] = []
    for f, text in plan.items():
        if not text:
            continue
        try:
            _restore(f, variant, netns, text, test=False)
        except KernelError as exc:
            # tables are committed one by one, and --test of iptables-nft does not ask the
            # kernel: put back what ctkit had in this family (tables committed before the
            # refused one) and in the family done before it
            for g in done + [f]:
                try:
                    now = parse_save(save(g, variant, netns))
                    undo = transaction(owned(before[g], prefix, g, mine_old[g]), now, prefix, mine_now[g])
                    if undo:
                        _restore(g, variant, netns, undo, test=False)
                except KernelError as again:
                    raise KernelError(f"{exc}; putting back the previous {_TOOL[g]} chains failed too: "
                                      f"{again}") from None
            raise
        done.append(f)
    return changes


def _settle(rec: Record, variant: str, netns: str | None) -> None:
    """After a failed change: keep in the record only what exists now (best effort)."""
    try:
        _prune(rec, variant, {f: parse_save(save(f, variant, netns)) for f in FAMILIES})
        if _has_ipset():
            rec.ipsets &= set(ipset.names(netns))
        _store(rec)
    except (KernelError, OSError):
        pass  # the record written before the change stays: a superset, never a foreign name


def apply(v4: Document, v6: Document, netns: str | None = None, variant: str = "auto",
          dry_run: bool = False, findings: list | None = None) -> tuple[str, list[Change]]:
    """Make ctkit's chains in both families what the documents say. Returns (variant, changes).
    Foreign chains and ipsets with ctkit's prefix are appended to `findings` as messages."""
    prefix = check_prefix(v4.prefix)
    variant = resolve_variant(variant, netns, prefix)
    docs = {"ipv4": v4, "ipv6": v6}
    sets = {s.name: s for doc in (v4, v6) for s in doc.ipsets}
    lock = contextlib.nullcontext(load_record(netns, prefix)) if dry_run else _locked(netns, prefix)
    with lock as rec:
        before = {f: parse_save(save(f, variant, netns, counters=True)) for f in docs}  # counters: _refill
        _prune(rec, variant, before)
        if _has_ipset():
            rec.ipsets &= set(ipset.names(netns))
        _note_foreign(findings, before, prefix, rec, variant, netns)
        _note_dropping_builtins(findings, before, docs, variant)
        mine_old = {f: _copy(rec.mine(variant, f)) for f in docs}
        plan = {f: transaction(docs[f], before[f], prefix, mine_old[f]) for f in docs}  # refuses collisions
        if sets:
            ipset.check_free(sets.values(), rec.ipsets, netns)
        if dry_run:
            return variant, _reconcile(plan, before, prefix, variant, netns, True, mine_old, mine_old)
        used = _timeouts_used(before, prefix, mine_old)
        if variant == "nft":  # iptables-nft-save prints only the tables that exist
            for f, doc in docs.items():
                rec.created.setdefault(f, set()).update(t.name for t in doc.tables if t.name not in before[f])
        # written ahead: an interrupted run leaves nothing of ctkit's unrecorded
        for f, doc in docs.items():
            for t in doc.tables:
                rec.mine(variant, f).setdefault(t.name, set()).update(c.name for c in t.chains)
        rec.ipsets |= set(sets) | {ipset.temporary(n) for n in sets}
        _store(rec)
        mine_now = {f: _copy(rec.mine(variant, f)) for f in docs}
        ok = False
        try:
            if sets:  # -m set rules name sets that must exist first
                ipset.sync(sets.values(), prefix.lower(), netns, owned=rec.ipsets, declared=rec.declared)
                rec.declared = {n: ipset.declaration(s) for n, s in sets.items()}
            for doc in (v4, v6):  # CT --timeout rules name objects that must exist first
                for t in doc.timeouts:
                    cttimeout.put(t.name, doc.family, t.protocol, t.policy, netns)
            rec.timeouts = timeout_declarations(v4, v6)
            changes = _reconcile(plan, before, prefix, variant, netns, False, mine_old, mine_now)
            ok = True
        finally:
            if not ok:
                _settle(rec, variant, netns)
        for f, doc in docs.items():
            rec.chains[variant][f] = {t.name: {c.name for c in t.chains} for t in doc.tables if t.chains}
        rec.ipsets -= {ipset.temporary(n) for n in sets} - set(sets)
        _store(rec)
        _drop_timeouts(used - {t.name for doc in (v4, v6) for t in doc.timeouts}, netns)
        if sets or _has_ipset():
            rec.ipsets = set(sets) | ipset.destroy_stale(set(sets), rec.ipsets, netns)
            _store(rec)
    return variant, changes


def timeout_declarations(v4: Document, v6: Document) -> dict[str, str]:
    """What the documents say about each cttimeout object (the record keeps it: the kernel's policy is
    not read back, and a changed policy keeps its object's name)."""
    return {t.name: json.dumps([doc.family, t.protocol, list(map(list, t.policy))])
            for doc in (v4, v6) for t in doc.timeouts}


@dataclass(frozen=True)
class Preview:
    """What apply would send, from one reading (no lock, no write): for `ctkit plan`."""
    variant: str
    texts: dict  # family -> iptables-restore --noflush input ("" : nothing to do)
    sets: tuple[str, ...]  # the `ipset restore` lines
    timeouts: tuple[str, ...]  # cttimeout objects whose policy is new or differs from the last apply's
    current: dict  # family -> {table: SavedTable}, as read
    mine: dict  # family -> ctkit's chains per table, from the record
    fingerprint: str  # ctkit's chains (without toggle switches and counters) and set declarations


def preview(v4: Document, v6: Document, netns: str | None = None, variant: str = "auto") -> Preview:
    prefix = check_prefix(v4.prefix)
    variant = resolve_variant(variant, netns, prefix)
    docs = {"ipv4": v4, "ipv6": v6}
    rec = load_record(netns, prefix)
    current = {f: parse_save(save(f, variant, netns)) for f in docs}
    _prune(rec, variant, current)
    mine = {f: _copy(rec.mine(variant, f)) for f in docs}
    texts = {f: transaction(docs[f], current[f], prefix, mine[f]) for f in docs}
    sets = list({s.name: s for doc in (v4, v6) for s in doc.ipsets}.values())
    existing = set(ipset.names(netns)) if sets and _has_ipset() else set()
    held = ipset.present(sets, existing, rec.ipsets, rec.declared, netns) if sets else {}
    lines = ipset.sync_lines(sets, existing, rec.ipsets, rec.declared, held) if sets else []
    owned_now = {f: owned(current[f], prefix, f, mine[f]) for f in docs}
    data = {f: [(t.name, c.name, c.builtin, [] if names.is_switch_chain(prefix, c.name) else list(c.rules))
                for t in d.tables for c in t.chains] for f, d in owned_now.items()}
    data["declared"] = {n: d for n, d in sorted(rec.declared.items()) if n in existing}
    data["timeouts"] = rec.timeouts
    print_ = hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()
    wanted = timeout_declarations(v4, v6)
    timeouts = tuple(n for n, d in sorted(wanted.items()) if rec.timeouts.get(n) != d)
    return Preview(variant, texts, tuple(lines), timeouts, current, mine, print_)


def _has_ipset() -> bool:
    return shutil.which("ipset") is not None


def _timeouts_used(current: dict[str, dict[str, SavedTable]], prefix: str, mine: dict[str, Mine]) -> set[str]:
    """cttimeout objects that ctkit's chains name now (ctkit owns exactly those)."""
    out = set()
    for family, tables in current.items():
        for saved in tables.values():
            chains_ = set(_mine_in(saved, prefix, mine[family]))
            for r in saved.rules:
                if r.chain in chains_ and " --timeout " in r.spec:
                    out.add(r.spec.split(" --timeout ", 1)[1].split()[0])
    return out


def _drop_timeouts(names: set[str], netns: str | None) -> None:
    """Delete cttimeout objects ctkit's chains no longer use; one a live flow still uses
    stays until that flow ends (the kernel refuses, nothing breaks)."""
    for name in sorted(names):
        cttimeout.delete(name, netns)


def remove(prefix: str, netns: str | None = None, variant: str = "auto",
           findings: list | None = None) -> tuple[str, list[Change]]:
    """Delete every chain ctkit created under this prefix and every jump to one, in both families,
    and the ipsets it created; foreign chains and sets with the prefix stay (noted in `findings`)."""
    check_prefix(prefix)
    variant = resolve_variant(variant, netns, prefix)
    with _locked(netns, prefix) as rec:
        before = {f: parse_save(save(f, variant, netns)) for f in FAMILIES}
        _prune(rec, variant, before)
        if _has_ipset():
            rec.ipsets &= set(ipset.names(netns))
        _note_foreign(findings, before, prefix, rec, variant, netns)
        mine = {f: _copy(rec.mine(variant, f)) for f in FAMILIES}
        plan = {f: transaction(None, before[f], prefix, mine[f]) for f in FAMILIES}
        used = _timeouts_used(before, prefix, mine)
        ok = False
        try:
            changes = _reconcile(plan, before, prefix, variant, netns, False, mine, mine)
            ok = True
        finally:
            if not ok:
                _settle(rec, variant, netns)
        rec.chains[variant] = {}
        if variant == "nft":
            _drop_created(rec, netns)
        _store(rec)
        _drop_timeouts(used, netns)
        if _has_ipset():
            rec.ipsets = ipset.destroy_stale(set(), rec.ipsets, netns)
        _store(rec)
    return variant, changes


_NFT_FAMILY = {"ipv4": "ip", "ipv6": "ip6"}


def _drop_created(rec: Record, netns: str | None) -> None:
    """After a remove (iptables-nft): delete the tables ctkit's apply created that hold nothing now (no
    rule, no chain but the built-in ones, every policy ACCEPT), so a namespace that had no ip/ip6 raw or
    filter table does not keep empty ones. A table that holds anything else (another tool's rules since)
    stays. The check and the delete are two steps: a rule added in between would go with the table, the
    same window iptables-nft itself leaves between its read and its write."""
    nft = shutil.which("nft")
    commands = []
    for family, made in rec.created.items():
        if not made:
            continue
        current = parse_save(save(family, "nft", netns))
        for name in sorted(made):
            t = current.get(name)
            if t is not None and not t.rules and all(p == "ACCEPT" for p in t.policies.values()):
                commands.append(f"delete table {_NFT_FAMILY[family]} {name}")
    rec.created = {}
    if not commands or nft is None:
        return
    with entered(netns):
        subprocess.run([nft, "-f", "-"], input="\n".join(commands) + "\n", text=True, capture_output=True,
                       timeout=TIMEOUT)  # best effort: an empty table left behind changes no packet


@dataclass(frozen=True)
class Live:
    """What ctkit owns in one family, with the jumps and counters the kernel reports."""
    family: str
    tool: str
    document: Document
    jumps: tuple[tuple[str, SavedRule], ...]
    counters: dict  # (table, chain, index) -> (packets, bytes)


def show(prefix: str, netns: str | None = None, variant: str = "auto",
         findings: list | None = None) -> tuple[str, list[Live]]:
    check_prefix(prefix)
    variant = resolve_variant(variant, netns, prefix)
    rec = load_record(netns, prefix)
    current = {f: parse_save(save(f, variant, netns, counters=True)) for f in FAMILIES}
    _prune(rec, variant, current)
    _note_foreign(findings, current, prefix, rec, variant, netns)
    out = []
    for family in FAMILIES:
        mine = rec.mine(variant, family)
        counters = {}
        for name, saved in current[family].items():
            chains_ = set(_mine_in(saved, prefix, mine))
            index: dict[str, int] = {}
            for r in saved.rules:
                if r.chain in chains_:
                    i = index[r.chain] = index.get(r.chain, -1) + 1
                    counters[(name, r.chain, i)] = (r.packets, r.bytes)
        out.append(Live(family, f"{_TOOL[family]}-{variant}", owned(current[family], prefix, family, mine),
                        tuple(jumps(current[family], prefix, mine)), counters))
    return variant, out


# ----------------------------------------------------------------- toggles
# A rule guarded by a toggle lives in chain <prefix>TR-<toggle>-<k>, reached through
# switch chain <prefix>TG-<toggle>-<k> that holds `-j <TR chain>` while the toggle is
# on (ctkit/backends/iptables/generate.py). The TR chain's last rule keeps the policy file's
# value in its comment ("toggle/NAME: policy on|off").

def _toggle_chains(current: dict[str, SavedTable], prefix: str, mine: Mine | None = None
                   ) -> dict[str, list[tuple[str, str]]]:
    """{toggle: [(iptables table, switch chain)]} from one family's iptables-save (ctkit's chains only)."""
    out: dict[str, list[tuple[str, str]]] = {}
    for name, saved in current.items():
        for chain in _mine_in(saved, prefix, mine):
            parsed = names.parse_switch_chain(prefix, chain)
            if parsed is not None:
                out.setdefault(parsed[0], []).append((name, chain))
    return out


def toggle_states(prefix: str, netns: str | None = None, variant: str = "auto"
                  ) -> tuple[str, dict[str, tuple[bool, bool | None]]]:
    """(variant, {toggle: (on now, the policy file's value at the last apply)}), both families."""
    check_prefix(prefix)
    variant = resolve_variant(variant, netns, prefix)
    rec = load_record(netns, prefix)
    current = {f: parse_save(save(f, variant, netns)) for f in FAMILIES}
    return variant, states_in(current, prefix, {f: rec.mine(variant, f) for f in FAMILIES})


def states_in(saved: dict[str, dict[str, SavedTable]], prefix: str, mine_by_family: dict
              ) -> dict[str, tuple[bool, bool | None]]:
    """{toggle: (on now, the policy file's value at the last apply)} from one reading of both families
    (family -> iptables-save tables) and ctkit's chains in them (family -> the record's chains)."""
    out: dict[str, tuple[bool, bool | None]] = {}
    for family in FAMILIES:
        current = saved.get(family, {})
        mine = mine_by_family.get(family) or {}
        for toggle, chains in _toggle_chains(current, prefix, mine).items():
            on = any(r.chain == c for t, c in chains for r in current[t].rules)
            policy = None
            for t, c in chains:
                body = names.body_of_switch(prefix, c)
                if body not in mine.get(t, ()):
                    continue
                for r in current[t].rules:
                    marked = names.toggle_marker_in(r.spec, toggle) if r.chain == body else None
                    if marked is not None:
                        policy = marked
            prev_on, prev_policy = out.get(toggle, (False, None))
            out[toggle] = (prev_on or on, policy if policy is not None else prev_policy)
    return out


#: tables a toggled rule can be in: those of ctkit's filter-priority chains
_TOGGLE_TABLES = ("mangle", "filter")
_MAX_TOGGLED_RULES = 10_000  # a bound on the probing loop


def _chain_exists(family: str, variant: str, netns: str | None, table: str, chain: str) -> bool:
    exe = shutil.which(f"{_TOOL[family]}-{variant}")
    if exe is None:
        raise KernelError(f"{_TOOL[family]}-{variant} not found: {_INSTALL}")
    argv = [exe, "-w", "10", "-t", table, "-S", chain]
    with entered(netns):
        proc = subprocess.run(argv, capture_output=True, timeout=TIMEOUT)
    return proc.returncode == 0


def set_toggle(prefix: str, name: str, on: bool, netns: str | None = None, variant: str = "auto") -> str:
    """Flip one toggle: refill its switch chains, one iptables-restore --noflush per family.

    Finds the switch chains by name (TG-<name>-0, -1, ... in mangle and filter, one
    `iptables -S CHAIN` each) instead of reading the whole ruleset with iptables-save,
    which takes longer than the update itself on a big ruleset.
    """
    check_prefix(prefix)
    variant = resolve_variant(variant, netns, prefix)
    texts = {}
    rec = load_record(netns, prefix)
    for family in FAMILIES:
        mine = rec.mine(variant, family)
        lines: list[str] = []
        for table in _TOGGLE_TABLES:
            switches = []
            for k in range(_MAX_TOGGLED_RULES):
                switch, body = names.toggle_chain_names(prefix, name, k)
                if not _chain_exists(family, variant, netns, table, switch):
                    break
                if switch in mine.get(table, ()) and body in mine.get(table, ()):
                    switches.append((switch, body))  # a foreign chain of that name is not flipped
            if not switches:
                continue
            lines.append(f"*{table}")
            for switch, body in switches:
                lines.append(f":{switch} - [0:0]")  # declared: flushed
                if on:
                    lines.append(f"-A {switch} {toggle_switch_spec(name, body)}")
            lines.append("COMMIT")
        texts[family] = "\n".join(lines) + "\n" if lines else ""
    if not any(texts.values()):
        raise UsageError(f"no toggle {name!r} in chains {prefix}* (apply a policy that declares it and "
                         "guards a rule with it)")
    for family, text in texts.items():
        if text:
            _restore(family, variant, netns, text, test=False)
    return variant
