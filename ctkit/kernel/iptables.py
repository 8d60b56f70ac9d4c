"""iptables and ip6tables through iptables-restore --noflush, inside a namespace.

ctkit owns the chains named with its prefix (CTKIT-...) and the jumps from
built-in chains to them; nothing else. Every change is one
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
"""
from __future__ import annotations

import shlex
import shutil
import subprocess
from dataclasses import dataclass, field

from ctkit.backends.iptables import (Chain, Document, Table, TABLE_ORDER, jump_spec, toggle_chain_names,
                                    toggle_switch_spec)
from ctkit.errors import KernelError, UsageError
from ctkit.kernel import cttimeout, ipset
from ctkit.kernel.netns import entered
from ctkit.ownership import check_prefix

VARIANTS = ("auto", "nft", "legacy")
FAMILIES = ("ipv4", "ipv6")
TIMEOUT = 60  # seconds for one iptables tool run
_TOOL = {"ipv4": "iptables", "ipv6": "ip6tables"}
_INSTALL = "install the Debian package iptables (apt-get install iptables)"


# -------------------------------------------------------------- the tools

def resolve_variant(variant: str) -> str:
    """nft or legacy; auto asks the host's `iptables -V` (prints a version, changes nothing)."""
    if variant not in VARIANTS:
        raise UsageError(f"unknown iptables variant {variant!r} (valid: {', '.join(VARIANTS)})")
    if variant != "auto":
        return variant
    exe = shutil.which("iptables")
    if exe is None:
        raise KernelError(f"no iptables command on this host: {_INSTALL}, or choose --iptables-variant nft|legacy")
    proc = subprocess.run([exe, "-V"], capture_output=True, text=True, timeout=TIMEOUT)
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


def _run(argv: list[str], netns: str | None, what: str, input: str | None = None) -> str:
    try:
        with entered(netns):
            proc = subprocess.run(argv, input=input, capture_output=True, text=True, timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        raise KernelError(f"{what}: {argv[0]} did not finish within {TIMEOUT} s (xtables lock held?)") from None
    if proc.returncode != 0:
        raise KernelError(f"{what}: {_explain(proc.stderr, input)}")
    return proc.stdout


def _explain(stderr: str, document: str | None) -> str:
    lines = [ln for ln in stderr.strip().splitlines() if ln and not ln.startswith("Try `")]
    text = "; ".join(lines) or "no message"
    for ln in lines:
        if ln.startswith("Error occurred at line: ") and document:
            try:
                n = int(ln.split(": ")[1])
                text += f" (line {n}: {document.splitlines()[n - 1]})"
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
        words = shlex.split(self.spec)
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
    """iptables-save [-c] output -> tables in the order printed."""
    tables: dict[str, SavedTable] = {}
    name, policies, rules = None, {}, []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        if line.startswith("*"):
            name, policies, rules = line[1:].strip(), {}, []
        elif line.startswith(":") and name:
            chain, policy = line[1:].split()[:2]
            policies[chain] = policy
        elif line == "COMMIT" and name:
            tables[name] = SavedTable(name, dict(policies), tuple(rules))
            name = None
        elif name:
            packets = nbytes = 0
            if line.startswith("["):
                counts, line = line[1:].split("] ", 1)
                packets, nbytes = (int(x) for x in counts.split(":"))
            flag, chain, spec = (line.split(" ", 2) + [""])[:3]
            if flag == "-A":
                rules.append(SavedRule(chain, spec, packets, nbytes))
    return tables


def save(family: str, variant: str, netns: str | None, counters: bool = False) -> str:
    argv = [tool(family, variant, "save")] + (["-c"] if counters else [])
    return _run(argv, netns, f"cannot read the {_TOOL[family]} ruleset")


# ---------------------------------------------------- what ctkit owns now

def owned(current: dict[str, SavedTable], prefix: str, family: str) -> Document:
    """ctkit's chains as the kernel holds them, in the backend's own shape (for show and rollback)."""
    tables = []
    for name in TABLE_ORDER + tuple(t for t in current if t not in TABLE_ORDER):
        saved = current.get(name)
        if saved is None:
            continue
        mine = [c for c in saved.policies if c.startswith(prefix)]
        if not mine:
            continue
        jumps = {r.target: r.chain for r in saved.rules if saved.builtin(r.chain) and r.target in mine}
        chains = tuple(Chain(c, tuple(r.spec for r in saved.rules if r.chain == c), jumps.get(c)) for c in mine)
        tables.append(Table(name, chains))
    return Document(family, prefix, tuple(tables))


def jumps(current: dict[str, SavedTable], prefix: str) -> list[tuple[str, SavedRule]]:
    """(table, rule) of every rule outside ctkit's chains that sends packets into them."""
    out = []
    for name, saved in current.items():
        for r in saved.rules:
            if not r.chain.startswith(prefix) and (r.target or "").startswith(prefix) and r.target in saved.policies:
                out.append((name, r))
    return out


# ------------------------------------------------------------ transaction

def transaction(desired: Document | None, current: dict[str, SavedTable], prefix: str) -> str:
    """iptables-restore --noflush input that turns ctkit's part of `current` into `desired`
    (None: remove everything ctkit owns). Empty when there is nothing to do."""
    wanted = {t.name: t for t in (desired.tables if desired else ())}
    names = [n for n in TABLE_ORDER if n in wanted or n in current] + \
            [n for n in current if n not in TABLE_ORDER]
    out: list[str] = []
    for name in names:
        saved = current.get(name, SavedTable(name))
        table = wanted.get(name, Table(name, ()))
        old = [c for c in saved.policies if c.startswith(prefix)]
        if not old and not table.chains:
            continue
        new = {c.name for c in table.chains}
        stale = [c for c in old if c not in new]
        for r in saved.rules:
            if not r.chain.startswith(prefix) and not saved.builtin(r.chain) and r.target in stale:
                raise KernelError(f"chain {r.chain} in table {name} (not ctkit's) sends packets to {r.target}, "
                                  f"which ctkit must delete: remove that rule first (-D {r.chain} {r.spec})")
        lines = [f":{c.name} - [0:0]" for c in table.chains]
        kept: set[tuple[str, str]] = set()
        for r in saved.rules:
            if r.chain.startswith(prefix) or not (r.target or "").startswith(prefix) or r.target not in old:
                continue
            key = (r.chain, r.target)
            wanted_jump = any(c.builtin == r.chain and c.name == r.target for c in table.chains)
            if wanted_jump and r.spec == f"-j {r.target}" and key not in kept:
                kept.add(key)
            else:
                lines.append(f"-D {r.chain} {r.spec}")
        lines += [f"-F {c}" for c in stale] + [f"-X {c}" for c in stale]
        for c in table.chains:
            lines += [f"-A {c.name} {spec}" for spec in c.rules]
        lines += [f"-I {c.builtin} 1 {jump_spec(c)}" for c in table.chains
                  if c.builtin and (c.builtin, c.name) not in kept]
        out += [f"*{name}"] + lines + ["COMMIT"]
    return "\n".join(out) + "\n" if out else ""


# ------------------------------------------------------------ operations

@dataclass(frozen=True)
class Change:
    family: str
    tool: str
    document: str  # what was (or would be) sent; empty: nothing to do


def _restore(family: str, variant: str, netns: str | None, text: str, test: bool) -> None:
    argv = [tool(family, variant, "restore"), "--noflush", "--wait", "10"] + (["--test"] if test else [])
    _run(argv, netns, f"{_TOOL[family]}-restore refused the {'check' if test else 'change'}", input=text)


def _reconcile(docs: dict[str, Document | None], prefix: str, variant: str, netns: str | None,
               dry_run: bool) -> list[Change]:
    before = {f: parse_save(save(f, variant, netns)) for f in docs}
    plan = {f: transaction(docs[f], before[f], prefix) for f in docs}
    for f, text in plan.items():
        if text:
            _restore(f, variant, netns, text, test=True)
    changes = [Change(f, f"{_TOOL[f]}-{variant}", plan[f]) for f in docs]
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
                    undo = transaction(owned(before[g], prefix, g), now, prefix)
                    if undo:
                        _restore(g, variant, netns, undo, test=False)
                except KernelError as again:
                    raise KernelError(f"{exc}; putting back the previous {_TOOL[g]} chains failed too: "
                                      f"{again}") from None
            raise
        done.append(f)
    return changes


def apply(v4: Document, v6: Document, netns: str | None = None, variant: str = "auto",
          dry_run: bool = False) -> tuple[str, list[Change]]:
    """Make ctkit's chains in both families what the documents say. Returns (variant, changes)."""
    check_prefix(v4.prefix)
    variant = resolve_variant(variant)
    used = set() if dry_run else _timeouts_used(prefix=v4.prefix, variant=variant, netns=netns)
    sets = {s.name: s for doc in (v4, v6) for s in doc.ipsets}
    if not dry_run and sets:  # -m set rules name sets that must exist first
        ipset.sync(sets.values(), v4.prefix.lower(), netns)
    if not dry_run:  # CT --timeout rules name objects that must exist first
        for doc in (v4, v6):
            for t in doc.timeouts:
                cttimeout.put(t.name, doc.family, t.protocol, t.policy, netns)
    changes = _reconcile({"ipv4": v4, "ipv6": v6}, v4.prefix, variant, netns, dry_run)
    if not dry_run:
        _drop_timeouts(used - {t.name for doc in (v4, v6) for t in doc.timeouts}, netns)
        if sets or _has_ipset():
            ipset.destroy_stale(set(sets), v4.prefix.lower(), netns)
    return variant, changes


def _has_ipset() -> bool:
    return shutil.which("ipset") is not None


def _timeouts_used(prefix: str, variant: str, netns: str | None) -> set[str]:
    """cttimeout objects that ctkit's chains name now (ctkit owns exactly those)."""
    out = set()
    for family in FAMILIES:
        for saved in parse_save(save(family, variant, netns)).values():
            for r in saved.rules:
                if r.chain.startswith(prefix) and " --timeout " in r.spec:
                    out.add(r.spec.split(" --timeout ", 1)[1].split()[0])
    return out


def _drop_timeouts(names: set[str], netns: str | None) -> None:
    """Delete cttimeout objects ctkit's chains no longer use; one a live flow still uses
    stays until that flow ends (the kernel refuses, nothing breaks)."""
    for name in sorted(names):
        cttimeout.delete(name, netns)


def remove(prefix: str, netns: str | None = None, variant: str = "auto") -> tuple[str, list[Change]]:
    check_prefix(prefix)
    """Delete every chain with ctkit's prefix and every jump to one, in both families."""
    variant = resolve_variant(variant)
    used = _timeouts_used(prefix, variant, netns)
    changes = _reconcile({"ipv4": None, "ipv6": None}, prefix, variant, netns, dry_run=False)
    _drop_timeouts(used, netns)
    if _has_ipset():
        ipset.destroy_stale(set(), prefix.lower(), netns)
    return variant, changes


@dataclass(frozen=True)
class Live:
    """What ctkit owns in one family, with the jumps and counters the kernel reports."""
    family: str
    tool: str
    document: Document
    jumps: tuple[tuple[str, SavedRule], ...]
    counters: dict  # (table, chain, index) -> (packets, bytes)


def show(prefix: str, netns: str | None = None, variant: str = "auto") -> tuple[str, list[Live]]:
    variant = resolve_variant(variant)
    out = []
    for family in FAMILIES:
        current = parse_save(save(family, variant, netns, counters=True))
        counters = {}
        for name, saved in current.items():
            index: dict[str, int] = {}
            for r in saved.rules:
                if r.chain.startswith(prefix):
                    i = index[r.chain] = index.get(r.chain, -1) + 1
                    counters[(name, r.chain, i)] = (r.packets, r.bytes)
        out.append(Live(family, f"{_TOOL[family]}-{variant}", owned(current, prefix, family),
                        tuple(jumps(current, prefix)), counters))
    return variant, out


# ----------------------------------------------------------------- toggles
# A rule guarded by a toggle lives in chain <prefix>TR-<toggle>-<k>, reached through
# switch chain <prefix>TG-<toggle>-<k> that holds `-j <TR chain>` while the toggle is
# on (ctkit/backends/iptables.py). The TR chain's last rule keeps the policy file's
# value in its comment ("toggle/NAME: policy on|off").

def _toggle_chains(current: dict[str, SavedTable], prefix: str) -> dict[str, list[tuple[str, str]]]:
    """{toggle: [(iptables table, switch chain)]} from one family's iptables-save."""
    out: dict[str, list[tuple[str, str]]] = {}
    head = prefix + "TG-"
    for name, saved in current.items():
        for chain in saved.policies:
            if chain.startswith(head):
                toggle, _, k = chain[len(head):].rpartition("-")
                if toggle and k.isdigit():
                    out.setdefault(toggle, []).append((name, chain))
    return out


def toggle_states(prefix: str, netns: str | None = None, variant: str = "auto"
                  ) -> tuple[str, dict[str, tuple[bool, bool | None]]]:
    """(variant, {toggle: (on now, the policy file's value at the last apply)}), both families."""
    check_prefix(prefix)
    variant = resolve_variant(variant)
    out: dict[str, tuple[bool, bool | None]] = {}
    for family in FAMILIES:
        current = parse_save(save(family, variant, netns))
        for toggle, chains in _toggle_chains(current, prefix).items():
            on = any(r.chain == c for t, c in chains for r in current[t].rules)
            policy = None
            marker = f"toggle/{toggle}: policy "
            for t, c in chains:
                body = prefix + "TR-" + c[len(prefix + "TG-"):]
                for r in current[t].rules:
                    if r.chain == body and marker in r.spec:
                        policy = r.spec.split(marker, 1)[1].startswith("on")
            prev_on, prev_policy = out.get(toggle, (False, None))
            out[toggle] = (prev_on or on, policy if policy is not None else prev_policy)
    return variant, out


#: tables a toggled rule can be in: those of ctkit's filter-priority chains
_TOGGLE_TABLES = ("mangle", "filter")
_MAX_TOGGLED_RULES = 10_000  # a bound on the probing loop


def _chain_exists(family: str, variant: str, netns: str | None, table: str, chain: str) -> bool:
    exe = shutil.which(f"{_TOOL[family]}-{variant}")
    if exe is None:
        raise KernelError(f"{_TOOL[family]}-{variant} not found: {_INSTALL}")
    argv = [exe, "-w", "10", "-t", table, "-S", chain]
    with entered(netns):
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=TIMEOUT)
    return proc.returncode == 0


def set_toggle(prefix: str, name: str, on: bool, netns: str | None = None, variant: str = "auto") -> str:
    """Flip one toggle: refill its switch chains, one iptables-restore --noflush per family.

    Finds the switch chains by name (TG-<name>-0, -1, ... in mangle and filter, one
    `iptables -S CHAIN` each) instead of reading the whole ruleset with iptables-save,
    which takes longer than the update itself on a big ruleset.
    """
    check_prefix(prefix)
    variant = resolve_variant(variant)
    texts = {}
    for family in FAMILIES:
        lines: list[str] = []
        for table in _TOGGLE_TABLES:
            switches = []
            for k in range(_MAX_TOGGLED_RULES):
                switch, body = toggle_chain_names(prefix, name, k)
                if not _chain_exists(family, variant, netns, table, switch):
                    break
                switches.append((switch, body))
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
