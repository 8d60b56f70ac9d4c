"""The fastjsonschema validators of the policy schema, compiled once per schema and kept on disk.

Generating a validator's Python code from the schema and compiling that code takes about 0.2 s
(the whole schema is 550 kB of generated code), and every ctkit process that loads a policy
paid it. The compiled code object depends only on the schema's text, the parts asked for, the
fastjsonschema version and the Python version, so it is kept as a marshal file named by a hash
of all of them, in ctkit's cache directory (`$XDG_CACHE_HOME/ctkit`, else `~/.cache/ctkit`).
An edited schema gets a new name: nothing needs regenerating by hand, and nothing generated is
kept in the source tree.

ctkit runs as root and executes that code, so it is read only from a file nobody else could have
written (ctkit/cache.py); anything else falls back to compiling in memory: slower, never wrong.
"""
from __future__ import annotations

import hashlib
import json
import marshal
import sys
from functools import partial
from pathlib import Path
from typing import Any, Callable, Mapping

import fastjsonschema
from fastjsonschema.ref_resolver import RefResolver

from ctkit.cache import cache_dir, read_private, trusted_dir, write_private

#: bump when the way code is produced here changes
_FORMAT = "1"


def _key(schema: Mapping, ref: str | None, formats: tuple[str, ...]) -> str:
    text = json.dumps([_FORMAT, fastjsonschema.VERSION, sys.version, schema, ref, formats], sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def _read(path: Path) -> Any | None:
    raw = read_private(path)
    if raw is None:
        return None
    try:
        return marshal.loads(raw)
    except (EOFError, ValueError, TypeError):
        return None


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
    if where is not None and trusted_dir(where, create=True):
        path = where / f"policy-validator-{_key(schema, ref, tuple(sorted(formats)))}.marshal"
        code = _read(path)
    if code is None:
        text = fastjsonschema.compile_to_code(schema, handlers=dict(handlers), formats=dict(formats))
        code = compile(text, "<ctkit policy schema validator>", "exec")
        if path is not None:
            write_private(where, path, marshal.dumps(code))
    namespace: dict[str, Any] = {}
    exec(code, namespace)  # noqa: S102 - code fastjsonschema generated from ctkit's own schema
    func = namespace[RefResolver.from_schema(schema, handlers=dict(handlers), store={}).get_scope_name()]
    return partial(func, custom_formats=dict(formats))
