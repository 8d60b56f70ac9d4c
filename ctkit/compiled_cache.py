"""Compiled policies kept between runs: an unchanged policy file is not loaded, checked, linted and
lowered again by every apply, plan and audit.

Compiling is a function of the policy file's bytes, the path it was given as (problems name it), the
elements_files it read and ctkit's own code, and of nothing else (no clock, no kernel, no
environment). So a compiled policy is kept under a hash of the code's identity (every module and
schema file of the package: path, size, modification time; the Python and PyYAML installations), the
path and the bytes, beside the hash of each elements_file it read; it is used again only when all of
those still match. A 10,000-rule policy compiles in about 0.6-0.9 s and is read back in 0.1-0.2 s
(benchmarks/bench_apply.py); an apply or audit run from cron or a fleet push every few minutes, or a
CI job applying one policy to many namespaces, compiles it once.

Only a policy that compiled without errors is kept (its warnings with it, printed again each run):
an invalid one is checked, and reported, afresh. The entry is a pickle in ctkit's cache directory,
read only when nobody else could have written it (ctkit/cache.py): unpickling runs code. At most
KEEP entries are kept (the least recently used go first), none larger than MAX_ENTRY_BYTES.
CTKIT_NO_CACHE=1 turns it off.

A policy whose sets hold more than MAX_MEMBERS members is not kept: a member is quick to build (its
file line parsed in microseconds) but slow to pickle. A set of a million members from a file builds
in 3.4 s; pickling it took 6 s and twice the memory, and reading it back 2.2 s. Rules are the other
way round: 10,000 rules compile in 0.63 s, pickle in 0.16 s and read back in about 0.2 s.
"""
from __future__ import annotations

import copyreg
import hashlib
import importlib.util
import io
import ipaddress
import os
import pickle
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from ctkit.cache import cache_dir, read_private, trusted_dir, write_private

if TYPE_CHECKING:
    from ctkit.pipeline import Compiled

#: bump when what an entry holds changes
FORMAT = "1"
KEEP = 16
MAX_ENTRY_BYTES = 64 << 20
MAX_MEMBERS = 20_000
#: the most bytes read to key a policy file (load.py's larger limit; a file over its own limit is
#: refused by load_bytes, so it never has an entry)
MAX_POLICY_BYTES = 32 << 20
_PREFIX = "compiled-"
_SUFFIX = ".pickle"


def enabled() -> bool:
    return not os.environ.get("CTKIT_NO_CACHE")


def code_identity() -> bytes:
    """What compiling depends on besides its input: ctkit's modules and schemas, Python, PyYAML."""
    digest = hashlib.sha256(f"{FORMAT}\0{sys.version}\0{pickle.HIGHEST_PROTOCOL}\0".encode())
    package = Path(__file__).resolve().parent
    for top, dirs, files in os.walk(package, followlinks=True):  # ctkit/schemas may be a link to ../schemas
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        for name in sorted(f for f in files if f.endswith((".py", ".json"))):
            full = os.path.join(top, name)
            info = os.stat(full)
            digest.update(f"{os.path.relpath(full, package)}\0{info.st_size}\0{info.st_mtime_ns}\0".encode())
    yaml = importlib.util.find_spec("yaml")
    if yaml is not None and yaml.origin:
        info = os.stat(yaml.origin)
        digest.update(f"{yaml.origin}\0{info.st_size}\0{info.st_mtime_ns}\0".encode())
    return digest.digest()


def _network(cls: type, value: int, prefix: int) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    return cls((value, prefix))


def _reduce_network(net: ipaddress.IPv4Network | ipaddress.IPv6Network) -> tuple:
    """A network pickled as (its number, its prefix length): ipaddress pickles it as its text, which is
    parsed again when read (10,000 rules' addresses: half of reading a compiled policy back)."""
    return _network, (type(net), int(net.network_address), net.prefixlen)


def _dumps(value: object) -> bytes:
    out = io.BytesIO()
    pickler = pickle.Pickler(out, protocol=pickle.HIGHEST_PROTOCOL)
    pickler.dispatch_table = {**copyreg.dispatch_table, ipaddress.IPv4Network: _reduce_network,
                              ipaddress.IPv6Network: _reduce_network}
    pickler.dump(value)
    return out.getvalue()


def _file_digest(path: str) -> str | None:
    try:
        with open(path, "rb") as f:
            return hashlib.file_digest(f, "sha256").hexdigest()
    except OSError:
        return None


def identity(raw: bytes, compiled: Compiled, code: bytes) -> str:
    """The plan's identity (ir.Plan.identity): a digest of ctkit's code (code_identity()), the policy's
    bytes and the digests of the elements_files its build read. Not the path: the plan does not name it."""
    digest = hashlib.sha256(code + b"\0" + raw)
    for s in compiled.policy.sets:
        if s.elements_file:
            digest.update(f"\0{s.name}\0{s.elements_digest}".encode())
    return digest.hexdigest()


def _entry(path: Path, raw: bytes, code: bytes) -> tuple[Path, Path] | None:
    """(directory, entry file) for this policy, or None when there is no trusted place for it."""
    where = cache_dir()
    if where is None or not trusted_dir(where, create=True):
        return None
    key = hashlib.sha256(code + str(path).encode("utf-8", "surrogateescape") + b"\0" + raw)
    return where, where / f"{_PREFIX}{key.hexdigest()[:40]}{_SUFFIX}"


def lookup(path: Path, raw: bytes, code: bytes) -> Compiled | None:
    """The compiled policy kept for the file at `path` whose bytes are `raw`, compiled by the ctkit whose
    code_identity() is `code`, when every file it read still holds what it held; else None."""
    if not enabled():
        return None
    place = _entry(path, raw, code)
    if place is None:
        return None
    data = read_private(place[1])
    if data is None:
        return None
    try:
        fmt, deps, compiled = pickle.loads(data)  # noqa: S301 - a private file ctkit wrote (ctkit/cache.py)
    except Exception:  # noqa: BLE001 - a damaged or foreign entry: compile again
        return None
    if fmt != FORMAT or any(_file_digest(dep) != digest for dep, digest in deps):
        return None
    try:
        os.utime(place[1])  # recently used: pruned last
    except OSError:
        pass
    return compiled


def keep(path: Path, raw: bytes, compiled: Compiled, code: bytes) -> None:
    """Keep `compiled` for the file at `path` whose bytes are `raw` (nothing when it cannot be kept)."""
    if not enabled() or sum(len(s.members) for s in compiled.policy.sets) > MAX_MEMBERS:
        return
    place = _entry(path, raw, code)
    if place is None:
        return
    deps = tuple(dict.fromkeys((s.elements_file, s.elements_digest) for s in compiled.policy.sets
                               if s.elements_file))  # the digests of the bytes the build read
    data = _dumps((FORMAT, deps, compiled))
    if len(data) > MAX_ENTRY_BYTES:
        return
    where, entry = place
    if write_private(where, entry, data):
        _prune(where)


def _prune(where: Path) -> None:
    """At most KEEP entries: the least recently used removed."""
    try:
        entries = [e for e in os.scandir(where) if e.name.startswith(_PREFIX) and e.name.endswith(_SUFFIX)]
        entries.sort(key=lambda e: e.stat(follow_symlinks=False).st_mtime_ns, reverse=True)
        for old in entries[KEEP:]:
            os.unlink(old.path)
    except OSError:
        pass
