"""Load a policy file (JSON or YAML), validate it against the schema, build the model.

Every problem carries a JSON pointer and, where the file gives one, a line number.
All problems are collected before failing, so a user fixes them in one pass.
"""
from __future__ import annotations

import difflib
import json
import math
import re
from dataclasses import replace
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any, Mapping

import fastjsonschema
import jsonschema
import yaml

from ctkit.errors import PolicyError, Problem
from ctkit.policy.build import build_policy
from ctkit.policy.checks import (
    check_length_range,
    check_nat_address,
    check_network,
    check_port_range,
    check_queue_range,
)
from ctkit.policy.model import Policy

#: value checks the schema names with "format"; each returns None or (message, hint)
FORMATS = {"ip-network": check_network, "port-range": check_port_range, "nat-address": check_nat_address,
           "length-range": check_length_range, "queue-range": check_queue_range}


def pointer_of(path) -> str:
    """RFC 6901 JSON pointer for a sequence of keys and indexes."""
    parts = [str(p).replace("~", "~0").replace("/", "~1") for p in path]
    return "/" + "/".join(parts) if parts else ""


@lru_cache(maxsize=None)
def policy_schema() -> dict:
    text = resources.files("ctkit").joinpath("schemas/policy.schema.json").read_text()
    return json.loads(text)


@lru_cache(maxsize=None)
def _validator() -> jsonschema.Draft202012Validator:
    schema = policy_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    checker = jsonschema.FormatChecker(formats=())
    for name, check in FORMATS.items():
        checker.checks(name)(lambda value, check=check: not isinstance(value, str) or check(value) is None)
    return jsonschema.Draft202012Validator(schema, format_checker=checker)


@lru_cache(maxsize=None)
def _fast_validator():
    """A yes/no validator compiled to Python by fastjsonschema.

    jsonschema takes about 5 s on a 10,000-rule policy (benchmarks/audit.py);
    fastjsonschema about 0.4 s. It only says valid or not, so a document it
    rejects (or one it cannot judge) goes through jsonschema for the messages.
    The schema uses nothing draft-07 lacks, so it is compiled as draft-07.
    """
    schema = dict(policy_schema(), **{"$schema": "http://json-schema.org/draft-07/schema#"})
    # formats are left to the model builder, which checks every value once and names each bad one
    formats = {name: (lambda value: True) for name in FORMATS}
    return fastjsonschema.compile(schema, formats=formats)


def fast_valid(data: Any) -> bool:
    try:
        _fast_validator()(data)
    except Exception:  # noqa: BLE001 - invalid, or a value it cannot judge: jsonschema decides
        return False
    return True


# ---------------------------------------------------------------- parsing

class LineIndex(Mapping):
    """JSON pointer -> line, composed from the text only when a message needs a line.

    Composing a YAML node tree costs seconds on a 10,000-rule policy; most
    loads report nothing and never pay for it.
    """

    def __init__(self, text: str, source: str):
        self._text, self._source = text, source
        self._lines: dict[str, int] | None = None

    def _map(self) -> dict[str, int]:
        if self._lines is None:
            self._lines, _ = _line_map(self._text, self._source)
        return self._lines

    def __getitem__(self, key: str) -> int:
        return self._map()[key]

    def __iter__(self):
        return iter(self._map())

    def __len__(self) -> int:
        return len(self._map())


def _line_map(text: str, source: str) -> tuple[dict[str, int], list[Problem]]:
    """Map JSON pointers to 1-based line numbers; report duplicate keys.

    PyYAML's composer keeps node positions; JSON documents are (nearly always)
    valid YAML flow documents, so the same walk serves both formats.
    """
    lines: dict[str, int] = {}
    problems: list[Problem] = []
    try:
        root = yaml.compose(text, Loader=_YAML_LOADER)
    except yaml.YAMLError:
        return lines, problems

    def walk(node, path):
        lines[pointer_of(path)] = node.start_mark.line + 1
        if isinstance(node, yaml.MappingNode):
            seen: set = set()
            for key_node, value_node in node.value:
                key = key_node.value
                if key in seen:
                    problems.append(Problem(
                        pointer_of(path + [key]), f"duplicate key {key!r}",
                        line=key_node.start_mark.line + 1, source=source,
                        hint="each key may appear once; the second would silently replace the first"))
                seen.add(key)
                walk(value_node, path + [key])
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                walk(item, path + [i])

    if root is not None:
        walk(root, [])
    return lines, problems


#: libyaml's C parser when PyYAML was built with it (several times faster)
_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _reject_constant(name: str):
    raise ValueError(f"{name} is not valid JSON")


def _pairs(duplicates: list):
    def hook(pairs):
        keys = [k for k, _ in pairs]
        if len(keys) != len(set(keys)):
            duplicates.append(True)
        return dict(pairs)
    return hook


def parse_text(text: str, source: str, fmt: str | None = None) -> tuple[Any, Mapping[str, int], list[Problem]]:
    """Parse JSON or YAML text. fmt: 'json', 'yaml' or None (guess from the content)."""
    if fmt is None:
        fmt = "json" if text.lstrip().startswith(("{", "[")) else "yaml"
    if fmt == "json":
        try:
            duplicates: list = []
            data = json.loads(text, parse_constant=_reject_constant, object_pairs_hook=_pairs(duplicates))
        except json.JSONDecodeError as exc:
            raise PolicyError([Problem("", f"not valid JSON: {exc.msg} (column {exc.colno})",
                                       line=exc.lineno, source=source)]) from None
        except (ValueError, RecursionError) as exc:
            raise PolicyError([Problem("", f"not valid JSON: {exc}", source=source)]) from None
    else:
        try:
            duplicates = [True]  # YAML: only the composed tree shows duplicate keys
            data = yaml.load(text, Loader=_YAML_LOADER)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            raise PolicyError([Problem(
                "", f"not valid YAML: {getattr(exc, 'problem', None) or exc}",
                line=mark.line + 1 if mark else None, source=source)]) from None
        except RecursionError:
            raise PolicyError([Problem("", "not valid YAML: nested too deeply", source=source)]) from None
    if duplicates:
        lines, problems = _line_map(text, source)
        return data, lines, problems
    return data, LineIndex(text, source), []


# ------------------------------------------------------------- validation

def _message(error: jsonschema.ValidationError) -> tuple[str, str | None]:
    """A message a user can act on, and a hint of what would be valid."""
    v = error.validator
    if v == "additionalProperties":
        allowed = sorted(error.schema.get("properties", {}))
        extra = sorted(set(error.instance) - set(allowed), key=str) if isinstance(error.instance, dict) else []
        hints = []
        for key in extra:
            close = difflib.get_close_matches(str(key), allowed, n=1)
            if close:
                hints.append(f"{key!r}: did you mean {close[0]!r}?")
        hint = "; ".join(hints) or ("allowed: " + ", ".join(allowed) if allowed else None)
        return f"unknown property {', '.join(repr(k) for k in extra)}", hint
    if v == "not" and isinstance(error.instance, dict):
        groups = [("protocol", "protocols"), ("action", "jump"), ("action", "goto"), ("jump", "goto")]
        both = [f"{a!r} and {b!r}" for a, b in groups if a in error.instance and b in error.instance]
        return f"{' / '.join(both) or 'these properties'} exclude each other", "give only one of them"
    if v == "format" and error.validator_value in FORMATS:
        return FORMATS[error.validator_value](error.instance)
    if v == "enum":
        return f"{error.instance!r} is not allowed", "valid: " + ", ".join(map(repr, error.validator_value))
    if v == "const":
        return f"{error.instance!r} is not allowed", f"must be {error.validator_value!r}"
    if v == "required":
        return error.message, None
    if v == "pattern" and "propertyNames" in error.relative_schema_path:
        return f"name {error.instance!r} is not allowed", f"names match {error.validator_value}"
    if v == "pattern":
        return f"{error.instance!r} does not have the expected form", error.schema.get("description")
    if v == "type":
        return f"{error.instance!r} is not of type {error.validator_value}", error.schema.get("description")
    return error.message, error.schema.get("description")


def _leaf(error: jsonschema.ValidationError) -> jsonschema.ValidationError:
    """For oneOf/anyOf, the branch error that says most: the deepest, and not a mere type mismatch."""
    while error.validator in ("oneOf", "anyOf") and error.context:
        error = min(error.context, key=lambda e: (-len(e.absolute_path), e.validator == "type",
                                                  e.validator in ("oneOf", "anyOf")))
    return error


def schema_problems(data: Any, source: str, lines: Mapping[str, int]) -> list[Problem]:
    if fast_valid(data):
        return []
    problems = []
    errors = sorted((_leaf(e) for e in _validator().iter_errors(data)),
                    key=lambda e: [str(p) for p in e.absolute_path])
    for error in errors:
        path = list(error.absolute_path)
        if "propertyNames" in error.relative_schema_path:
            path = path + [error.instance]
        ptr = pointer_of(path)
        msg, hint = _message(error)
        problems.append(Problem(ptr, msg, line=_line_for(lines, ptr), hint=hint, source=source))
    return problems


def _line_for(lines: Mapping[str, int], pointer: str) -> int | None:
    while True:
        if pointer in lines:
            return lines[pointer]
        if not pointer:
            return None
        pointer = pointer.rsplit("/", 1)[0]


# ------------------------------------------------------------- entry points

def load_document(data: Any, source: str = "<policy>", lines: Mapping[str, int] | None = None,
                  earlier: list[Problem] | None = None) -> Policy:
    """Validate an already parsed document and build the model, or raise PolicyError."""
    lines = lines if lines is not None else {}  # never test a LineIndex for truth: that composes it
    problems = list(earlier or [])
    text_problems = _text_problems(data, source, lines)
    if _has_bad_float(data):
        problems.append(Problem("", "numbers must be finite", source=source))
    elif text_problems:
        problems += text_problems
    else:
        problems += schema_problems(data, source, lines)
    if problems:
        raise PolicyError(problems)
    policy, problems = build_policy(data, source, lines)
    if problems:
        raise PolicyError([replace(p, line=_line_for(lines, p.pointer)) for p in problems])
    return policy


#: characters that must never reach nft text, iptables-restore input or a kernel comment:
#: C0 controls (NUL, newline, CR...), DEL, C1 controls (U+0085 included) and the Unicode
#: line and paragraph separators. Python's `$` in a schema pattern matches before a trailing
#: newline, and str.splitlines() splits on several of these, so they are refused once, here.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
#: lengths the kernel and libnftables count in bytes (UTF-8), checked in bytes
MAX_BYTES = {"comment": 64, "prefix": 127}


def _text_problems(data: Any, source: str, lines: Mapping[str, int]) -> list[Problem]:
    """Control characters anywhere (keys and values), and byte lengths of free text."""
    out: list[Problem] = []
    stack: list[tuple[Any, tuple]] = [(data, ())]
    while stack and len(out) < 50:
        node, path = stack.pop()
        if isinstance(node, dict):
            for key, value in node.items():
                if isinstance(key, str) and _CONTROL.search(key):
                    ptr = pointer_of(path)
                    out.append(Problem(ptr, f"a key holds a control character ({_CONTROL.search(key).group()!r})",
                                       line=_line_for(lines, ptr), source=source,
                                       hint="names and keys are printable text"))
                stack.append((value, path + (key,)))
        elif isinstance(node, list):
            stack.extend((v, path + (i,)) for i, v in enumerate(node))
        elif isinstance(node, str):
            ptr = pointer_of(path)
            bad = _CONTROL.search(node)
            if bad:
                out.append(Problem(ptr, f"control character {bad.group()!r} at position {bad.start()}",
                                   line=_line_for(lines, ptr), source=source,
                                   hint="text that reaches the kernel must be printable: no newline, CR, NUL, "
                                        "tab or other control characters"))
                continue
            limit = MAX_BYTES.get(str(path[-1])) if path else None
            size = len(node.encode("utf-8", "surrogatepass"))
            if limit is not None and size > limit:
                out.append(Problem(ptr, f"{size} bytes in UTF-8; the kernel allows at most {limit}",
                                   line=_line_for(lines, ptr), source=source,
                                   hint="shorten it (a non-ASCII character takes 2 to 4 bytes)"))
    return sorted(out, key=lambda p: p.pointer)


def _has_bad_float(data: Any) -> bool:
    stack = [data]
    while stack:
        item = stack.pop()
        if isinstance(item, float) and not math.isfinite(item):
            return True
        if isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


def load_text(text: str, source: str = "<policy>", fmt: str | None = None) -> Policy:
    data, lines, problems = parse_text(text, source, fmt)
    return load_document(data, source, lines, problems)


def load_file(path: str | Path) -> Policy:
    path = Path(path)
    source = str(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise PolicyError([Problem("", f"cannot read file: {exc.strerror}", source=source)]) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PolicyError([Problem("", f"not UTF-8 text (byte {exc.start})", source=source)]) from None
    suffix = path.suffix.lower()
    fmt = "json" if suffix == ".json" else "yaml" if suffix in (".yaml", ".yml") else None
    return load_text(text, source, fmt)
