"""ipset sets for the iptables backend, through `ipset restore`, inside a namespace.

The iptables backend names its sets `<table>-<name>` (ctkit-blocklist) and
describes them (ctkit/backends/iptables/generate.py: IpSet); this module makes the
kernel hold exactly those. A set's contents are replaced atomically: a
temporary set is filled, then swapped with the live one (`ipset swap`), so a
rule matching the set sees the old members or the new ones, never an empty
set. Sets ctkit no longer declares are destroyed after the rules that used
them are gone. Debian package: ipset.

A set is ctkit's only when ctkit created it: the caller passes the names its
ownership record lists (ctkit/backends/iptables/kernel.py). A set named with ctkit's
prefix that the record does not list is foreign: never flushed, swapped or
destroyed; when a policy needs that very name, sync refuses and names it.
Output is read as bytes decoded with surrogateescape and split on "\n" only.
"""
from __future__ import annotations

import ipaddress
import shutil
import subprocess

from ctkit.errors import KernelError, UsageError
from ctkit.kernel.netns import entered

TIMEOUT = 60
_INSTALL = "install the Debian package ipset (apt-get install ipset)"


def _ipset() -> str:
    exe = shutil.which("ipset")
    if exe is None:
        raise KernelError(f"the ipset command is missing: {_INSTALL}")
    return exe


def _run(args: list[str], netns: str | None, what: str, input: str | None = None, check: bool = True
         ) -> subprocess.CompletedProcess:
    with entered(netns):
        raw = subprocess.run([_ipset(), *args], input=None if input is None else input.encode(
            "utf-8", errors="surrogateescape"), capture_output=True, timeout=TIMEOUT)
    proc = subprocess.CompletedProcess(raw.args, raw.returncode,
                                       raw.stdout.decode("utf-8", errors="surrogateescape"),
                                       raw.stderr.decode("utf-8", errors="surrogateescape"))
    if check and proc.returncode != 0:
        raise KernelError(f"{what}: {proc.stderr.strip() or 'ipset failed'}")
    return proc


def names(netns: str | None) -> list[str]:
    return [n for n in _run(["list", "-n"], netns, "cannot list ipsets").stdout.split("\n") if n]


def header(name: str, netns: str | None) -> str:
    """`ipset list -t NAME`: the set's type and header, without its members."""
    proc = _run(["list", "-t", name], netns, f"cannot read ipset {name}", check=False)
    if proc.returncode != 0:
        if "does not exist" in proc.stderr:
            raise UsageError(f"no set {name} (apply a policy that declares it)")
        raise KernelError(f"cannot read ipset {name}: {proc.stderr.strip()}")
    return proc.stdout


def temporary(name: str) -> str:
    """The set sync fills before swapping it with `name`."""
    return name[:27] + "-new"


def foreign(prefix: str, owned: set[str], netns: str | None) -> list[str]:
    """Sets named with ctkit's prefix that ctkit did not create."""
    return [n for n in names(netns) if n.startswith(prefix) and n not in owned]


def check_free(sets, owned: set[str], netns: str | None) -> None:
    """Refuse when a set ctkit needs (or its temporary) exists and is not ctkit's."""
    existing = set(names(netns))
    for s in sets:
        for name in (s.name, temporary(s.name)):
            if name in existing and name not in owned:
                raise KernelError(f"ipset {name} exists but ctkit did not create it (its ownership record "
                                  f"does not list it): ctkit needs that name and will not flush, swap or "
                                  f"destroy a foreign set; rename or destroy it (ipset destroy {name}) or "
                                  "give the policy another table name")


#: ipset's own default maxelem: a hash set refuses members beyond it ("Hash is full")
DEFAULT_MAXELEM = 65536


def maxelem(members: int) -> int | None:
    """The maxelem a hash set of this many declared members is created with (None: ipset's default):
    the power of two at or above twice the count, so run-time members (`ctkit set add`) have room too."""
    want = 1 << (2 * members - 1).bit_length() if members else 0
    return want if want > DEFAULT_MAXELEM else None


def _create_line(name: str, s) -> str:
    if s.kind == "bitmap:port":
        line = f"create {name} bitmap:port range 0-65535"
    else:
        line = f"create {name} {s.kind} family {'inet' if s.family == 'ipv4' else 'inet6'}"
        most = maxelem(len(s.elements))
        if most is not None:  # a hash's size grows as it fills; only its most is fixed at creation
            line += f" hashsize {min(most // 4, 1 << 20)} maxelem {most}"
    if s.timeout is not None:
        line += f" timeout {s.timeout}"
    return line


def _add_lines(name: str, s) -> list[str]:
    return [f"add {name} {value}" + (f" timeout {t}" if t is not None else "") for value, t in s.elements]


def declaration(s) -> list:
    """What the policy file says about one set: its create line and its members (for the record)."""
    return [_create_line(s.name, s), sorted(_add_lines(s.name, s))]


def sync(sets, prefix: str, netns: str | None, owned: set[str] | None = None,
         declared: dict[str, list] | None = None) -> None:
    """Make the kernel's sets named <prefix>* the given ones (IpSet objects).

    A set that exists, is ctkit's and whose create line is the one recorded at the last apply
    (`declared`: name -> declaration()) changes only by its declared members: the ones the file added,
    or that the kernel no longer holds (deleted at run time), are added, the ones it dropped deleted, and
    members added at run time (`ctkit set add`) stay.
    Any other set is filled in a temporary set and swapped in atomically (its members become the
    declared ones). With `owned` (ctkit's record), a foreign set of a needed name is refused."""
    sets = list(sets)
    if owned is not None:
        check_free(sets, owned, netns)
    existing = set(names(netns))
    lines = sync_lines(sets, existing, owned, declared, present(sets, existing, owned, declared, netns))
    if lines:
        _run(["restore"], netns, "ipset refused the sets", input="\n".join(lines) + "\n")


def _kept(s, existing: set[str], owned: set[str] | None, declared: dict[str, list]) -> bool:
    """Whether sync changes this set by its declared members only (it exists, is ctkit's, and was created
    with the same line), instead of filling a new one and swapping it in."""
    old = declared.get(s.name)
    return bool(s.name in existing and (owned is None or s.name in owned) and old and old[0] == _create_line(s.name, s))


def present(sets, existing: set[str], owned: set[str] | None, declared: dict[str, list] | None,
            netns: str | None) -> dict[str, set[str]]:
    """The members the kernel holds now, for each set sync keeps (`ipset save NAME`): a declared member
    deleted at run time (`ctkit set del`) is missing there, and sync puts it back, as nft's apply does."""
    out = {}
    for s in sets:
        if _kept(s, existing, owned, declared or {}):
            out[s.name] = saved(s.name, netns)[1]
    return out


def saved(name: str, netns: str | None) -> tuple[str, set[str]]:
    """`ipset save NAME`: its create line and its members."""
    text = _run(["save", name], netns, f"cannot read ipset {name}").stdout
    lines = text.split("\n")
    create = next((line for line in lines if line.startswith(f"create {name} ")), "")
    return create, {line.split()[2] for line in lines if line.startswith(f"add {name} ")}


def kind_of(create_line: str) -> tuple[str, str | None, str | None]:
    """(type, family, timeout) of a create line, without the sizes the kernel grows (hashsize, maxelem)."""
    words = create_line.split()

    def after(word: str) -> str | None:
        return words[words.index(word) + 1] if word in words[:-1] else None
    return (words[2] if len(words) > 2 else "", after("family"), after("timeout"))


def _held(value: str, kind: str, members: set[str]) -> bool:
    """Whether the kernel holds declared member `value`: ipset stores an address range of a hash:net as
    the prefixes that cover it, and a port range of a bitmap as its ports."""
    if "-" not in value:
        return value in members
    lo, hi = value.split("-", 1)
    if kind == "bitmap:port":
        return all(str(p) in members for p in range(int(lo), int(hi) + 1))
    nets = ipaddress.summarize_address_range(ipaddress.ip_address(lo), ipaddress.ip_address(hi))
    return all((str(n.network_address) if n.prefixlen == n.max_prefixlen else str(n)) in members for n in nets)


def sync_lines(sets, existing: set[str], owned: set[str] | None, declared: dict[str, list] | None,
               held: dict[str, set[str]] | None = None) -> list[str]:
    """The `ipset restore` input of sync (empty: nothing to change). `held`: the kernel's members of the
    sets kept (present()); without it, only the members the file added since the last apply are added."""
    declared = declared or {}
    lines: list[str] = []
    for s in sets:
        old = declared.get(s.name)
        if _kept(s, existing, owned, declared):
            before, now = set(old[1]), set(_add_lines(s.name, s))
            lines += [line.replace("add ", "del ", 1).split(" timeout ")[0] + " -exist" for line in sorted(before - now)]
            members = (held or {}).get(s.name)
            missing = {line for line in now & before if members is not None
                       and not _held(line.split()[2], s.kind, members)}
            lines += [line + " -exist" for line in sorted((now - before) | missing)]
            continue
        tmp = temporary(s.name)
        lines.append(_create_line(tmp, s) + " -exist")
        lines.append(f"flush {tmp}")
        lines += _add_lines(tmp, s)
        if s.name not in existing:
            lines.append(_create_line(s.name, s))
        lines.append(f"swap {tmp} {s.name}")
        lines.append(f"destroy {tmp}")
    return lines


def destroy_stale(keep: set[str], owned: set[str], netns: str | None) -> set[str]:
    """Destroy the sets ctkit created (`owned`) that it no longer declares (`keep`); a set a rule
    still uses stays. Returns the owned sets, not kept, that still exist."""
    left = set()
    for name in names(netns):
        if name in owned and name not in keep:
            proc = _run(["destroy", name], netns, f"cannot destroy ipset {name}", check=False)
            if proc.returncode != 0:
                left.add(name)
    return left


def add(name: str, value: str, timeout: int | None, netns: str | None) -> None:
    args = ["add", name, value, "-exist"] + (["timeout", str(timeout)] if timeout is not None else [])
    proc = _run(args, netns, f"cannot add {value} to {name}", check=False)
    if proc.returncode != 0:
        if "does not exist" in proc.stderr:
            raise UsageError(f"no set {name} (apply a policy that declares it)")
        raise KernelError(f"cannot add {value} to {name}: {proc.stderr.strip()}")


def delete(name: str, value: str, netns: str | None) -> None:
    proc = _run(["del", name, value, "-exist"], netns, f"cannot delete {value} from {name}", check=False)
    if proc.returncode != 0:
        if "does not exist" in proc.stderr:
            raise UsageError(f"no set {name} (apply a policy that declares it)")
        raise KernelError(f"cannot delete {value} from {name}: {proc.stderr.strip()}")
