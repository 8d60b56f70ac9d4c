"""What ctkit last wrote into a namespace's table, so that an apply of the same document can tell that
nothing changed without listing and comparing the table (about a second at 10,000 rules).

The record holds a name of the document ctkit generated and the nf_tables generation id
(ctkit/kernel/nf_tables.py) right after ctkit's own commit. The kernel raises that id with every
committed change to any table of the namespace, so the same id means the ruleset is still exactly
what ctkit's commit left. Any other id (another tool's change anywhere in the namespace, `ctkit set
add`, `ctkit toggle`, a rollback), another document, another boot or another namespace (the record
lives in the namespace's own state directory, named by its cookie) and the table is listed and
compared as before. The name (NftBackend._digest) is a digest of the plan's identity (ir.Plan.identity:
the policy file's and its elements_files' bytes and ctkit's code) and its toggles' states, so an audit or
apply that finds the record holding generates nothing; for a plan without an identity, the digest of
the document's nft text (text.render: what ctkit sends for it; json.dumps of the document took a
second for a set of a million members). A record is written only when ctkit's commit was the only one in between (the id
rose by exactly one), and it is trusted only when it is root's and nobody else can write it.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os

from ctkit import lock
from ctkit.kernel.procfs import boot_id

VERSION = 1


def digest(text: str) -> str:
    """The digest of a document's nft text (text.render of it): the name of a plan without an identity."""
    return hashlib.sha256(text.encode()).hexdigest()


def _path(table: str, netns: str | None) -> str:
    return os.path.join(lock.state_dir(netns), f"nft-{table}.written.json")


def holds(table: str, netns: str | None, document_digest: str, generation: int | None) -> bool:
    """True when ctkit's last commit wrote this document and nothing has been committed since."""
    if generation is None:
        return False
    path = _path(table, netns)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        st = os.fstat(fd)
        if st.st_uid != os.geteuid() or st.st_mode & 0o022 or st.st_size > 4096:
            return False
        data = json.loads(os.read(fd, 4096))
    except (OSError, ValueError):
        return False
    finally:
        os.close(fd)
    return (isinstance(data, dict) and data.get("version") == VERSION and data.get("boot_id") == boot_id()
            and data.get("digest") == document_digest and data.get("generation") == generation)


def record(table: str, netns: str | None, document_digest: str, before: int | None, after: int | None) -> None:
    """After ctkit's commit: remember the document when the id rose by exactly one (ours), else forget."""
    if before is None or after is None or after != before + 1:
        forget(table, netns)
        return
    remember(table, netns, document_digest, after)


def remember(table: str, netns: str | None, document_digest: str, generation: int) -> None:
    """The table holds this document at this generation id (read whole between two equal readings, or
    just written by ctkit's commit)."""
    path = _path(table, netns)
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    tmp = f"{path}.{os.getpid()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump({"version": VERSION, "boot_id": boot_id(), "digest": document_digest,
                   "generation": generation}, f)
    os.replace(tmp, path)


def forget(table: str, netns: str | None) -> None:
    with contextlib.suppress(OSError):
        os.unlink(_path(table, netns))
