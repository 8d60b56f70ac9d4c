"""The fastjsonschema validators of the policy schema, compiled once per schema and kept on disk.

Generating a validator's Python code from the schema and compiling that code takes about 0.2 s
(the whole schema is 550 kB of generated code), and every ctkit process that loads a policy
paid it. The compiled code object depends only on the schema's text, the parts asked for, the
fastjsonschema version and the Python version, so it is kept as a marshal file named by a hash
of all of them, in ctkit's cache directory (`$XDG_CACHE_HOME/ctkit`, else `~/.cache/ctkit`).
An edited schema gets a new name: nothing needs regenerating by hand, and nothing generated is
kept in the source tree.

ctkit runs as root and executes that code, so the cache is used only where nobody else could
have written it: the directory, the one above it and the file belong to this user (or root),
none is writable by group or others, and neither the directory nor the file is a symlink.
Anything else (no home, a read-only home, HOME pointing at another user's directory under sudo,
a damaged file) falls back to compiling in memory, as before: slower, never wrong.
"""
from __future__ import annotations

import hashlib
import json
import marshal
import os
import stat
import sys
import tempfile
from functools import partial
from pathlib import Path
from typing import Any, Callable, Mapping

import fastjsonschema
from fastjsonschema.ref_resolver import RefResolver

#: bump when the way code is produced here changes
_FORMAT = "1"


def cache_dir() -> Path | None:
    """Where compiled validators are kept (XDG: a relative XDG_CACHE_HOME is ignored), or None
    when there is no home to keep them in."""
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    if os.path.isabs(xdg):
        return Path(xdg) / "ctkit"
    home = os.path.expanduser("~")
    return Path(home) / ".cache" / "ctkit" if os.path.isabs(home) else None


def _private(info: os.stat_result, kind: Callable[[int], bool]) -> bool:
    """Of this kind (not a symlink: lstat/fstat), owned by this user or root, written by nobody else."""
    return (kind(info.st_mode) and info.st_uid in (os.geteuid(), 0)
            and not info.st_mode & (stat.S_IWGRP | stat.S_IWOTH))


def _trusted_dir(where: Path, create: bool) -> bool:
    try:
        if not _private(os.lstat(where.parent), stat.S_ISDIR):
            return False
        if create and not os.path.lexists(where):
            os.mkdir(where, 0o700)
        return _private(os.lstat(where), stat.S_ISDIR)
    except OSError:
        return False


def _key(schema: Mapping, ref: str | None, formats: tuple[str, ...]) -> str:
    text = json.dumps([_FORMAT, fastjsonschema.VERSION, sys.version, schema, ref, formats], sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def _read(path: Path) -> Any | None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        if not _private(os.fstat(fd), stat.S_ISREG):
            return None
        with os.fdopen(fd, "rb", closefd=False) as f:
            return marshal.loads(f.read())
    except (OSError, EOFError, ValueError, TypeError):
        return None
    finally:
        os.close(fd)


def _write(where: Path, path: Path, code: Any) -> None:
    try:
        fd, tmp = tempfile.mkstemp(dir=where, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(marshal.dumps(code))
            os.replace(tmp, path)
        except BaseException:
            os.unlink(tmp)
            raise
    except OSError:
        pass  # a cache that cannot be written only costs the next process the compile


def _pairs(node: Any) -> list[list[str]] | None:
    """[[a, b], ...] when `node` (the value of a "not") is {"required": [a, b]} or an anyOf of those."""
    if not isinstance(node, dict):
        return None
    alternatives = node["anyOf"] if set(node) == {"anyOf"} else [node]
    if all(isinstance(a, dict) and set(a) == {"required"} and len(a["required"]) == 2 for a in alternatives):
        return [a["required"] for a in alternatives]
    return None


def exclusive_pairs(schema: Any) -> Any:
    """The schema with each "not" of required pairs ("protocol and protocols exclude each other") said
    as "dependencies": {a: {"properties": {b: false}}}, which holds for the same documents. fastjsonschema
    checks a "not" by running the inner schema and catching the exception it raises when it fails, so
    the rule's four excluded pairs cost four raised and caught exceptions for every valid rule (a quarter
    of validating a 10,000-rule policy); the dependencies raise nothing unless a pair is there."""
    if isinstance(schema, list):
        return [exclusive_pairs(v) for v in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: exclusive_pairs(v) for k, v in schema.items()}
    pairs = _pairs(out.get("not"))
    if pairs and "dependencies" not in out:
        del out["not"]
        deps: dict[str, dict] = {}
        for a, b in pairs:
            deps.setdefault(a, {"properties": {}})["properties"][b] = False
        out["dependencies"] = deps
    return out


def compile_validator(schema: dict, formats: Mapping[str, Callable[[Any], bool]], handlers: Mapping,
                      ref: str | None = None, where: Path | None = None) -> Callable[[Any], Any]:
    """fastjsonschema.compile(schema with $ref = ref, formats, handlers), the compiled code taken from
    and kept in `where` (default: cache_dir()) when that place is trusted. The format checks are
    passed at call time (fastjsonschema's custom_formats), so they are not part of the cached code.
    The schema is compiled as exclusive_pairs() says it (the same documents valid, faster)."""
    schema = exclusive_pairs(schema)
    if ref is not None:
        schema = dict(schema, **{"$ref": ref})  # draft-07: beside $ref, the root's own keywords are ignored
    where = where if where is not None else cache_dir()
    code = None
    path = None
    if where is not None and _trusted_dir(where, create=True):
        path = where / f"policy-validator-{_key(schema, ref, tuple(sorted(formats)))}.marshal"
        code = _read(path)
    if code is None:
        text = fastjsonschema.compile_to_code(schema, handlers=dict(handlers), formats=dict(formats))
        code = compile(text, "<ctkit policy schema validator>", "exec")
        if path is not None:
            _write(where, path, code)
    namespace: dict[str, Any] = {}
    exec(code, namespace)  # noqa: S102 - code fastjsonschema generated from ctkit's own schema
    func = namespace[RefResolver.from_schema(schema, handlers=dict(handlers), store={}).get_scope_name()]
    return partial(func, custom_formats=dict(formats))
