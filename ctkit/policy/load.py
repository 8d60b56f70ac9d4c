"""Load a policy file (JSON or YAML), validate it against the schema, build the model.

Every problem carries a JSON pointer and, where the file gives one, a line number.
All problems are collected before failing (at most MAX_PROBLEMS), so a user fixes
them in one pass.

A policy file may come from anyone: ctkit runs as root and automation feeds it files
it did not write. So what it reads is bounded before it is believed (README, "Input"):
the file's size (MAX_FILE_BYTES for JSON, MAX_YAML_BYTES otherwise; regular files only), the number
of values (MAX_NODES; YAML: MAX_YAML_NODES after aliases are expanded, of which aliases may add
MAX_ALIASED) and the
nesting depth (MAX_DEPTH). YAML is composed into PyYAML's node graph first, where an
alias is one shared node, so these are measured on the graph in time proportional to
the text, before anything is constructed; YAML 1.1 readings that a reader would not
expect (010 as 8, 1:30 as 90, yes as true, dates, binary, object tags, non-string
keys) are refused there with their line. Messages show an excerpt of a value
(ctkit.terminal.excerpt), never the value.
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import replace
from functools import lru_cache
from importlib import resources
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Iterator, Mapping

import yaml

from ctkit.errors import PolicyError, Problem, UsageError
from ctkit.ownership import check_table
from ctkit.paths import Unreadable, read_regular, too_big
from ctkit.policy.build import build_policy
from ctkit.policy.checks import (
    check_length_range,
    check_nat_address,
    check_network,
    check_port_range,
    check_queue_range,
)
from ctkit.policy.lines import LineIndex, Lines, _json_scan, pointer_of
from ctkit.policy.model import Policy
from ctkit.policy.schema_code import compile_validator
from ctkit.terminal import clip, excerpt, suggest

if TYPE_CHECKING:  # jsonschema is imported when a document is invalid: its import alone took 0.1 s
    import jsonschema

#: value checks the schema names with "format"; each returns None or (message, hint)
FORMATS = {"ip-network": check_network, "port-range": check_port_range, "nat-address": check_nat_address,
           "length-range": check_length_range, "queue-range": check_queue_range}

# ------------------------------------------------------------------ limits (README, "Input")
#: the largest policy file read: JSON (a policy of 100,000 rules is about 10-13 MB of JSON; json
#: parses about 20 MB a second here) and YAML (a policy of 10,000 rules is about 1 MB; PyYAML parses
#: about 1 MB a second, so a large YAML file would take long to refuse: big policies are JSON)
MAX_FILE_BYTES = 32 << 20
MAX_YAML_BYTES = 4 << 20
#: values in a document (scalars, lists, mappings and mapping keys); a policy of 10,000 rules holds
#: about 110,000, of 100,000 rules about 1.1 million. YAML: at most MAX_YAML_NODES, aliases expanded,
#: measured on PyYAML's node graph
MAX_NODES = 2_000_000
MAX_YAML_NODES = 500_000
#: of those, the values YAML aliases add beyond the document's own (an alias to a list of 100
#: addresses, used in 50 rules, adds 5,000)
MAX_ALIASED = 100_000
#: lists and mappings nested in each other (a policy needs 8)
MAX_DEPTH = 32
#: problems reported for one file; a file with more says how many were left out
MAX_PROBLEMS = 100


@lru_cache(maxsize=None)
def policy_schema() -> dict:
    text = resources.files("ctkit").joinpath("schemas/policy.schema.json").read_text()
    return json.loads(text)


#: an un-escaped `$`. JSON Schema patterns are ECMA-262, where `$` is the end of the text; in
#: Python's re it also matches before a final newline, so "eth0\n" would pass "^[a-z0-9]+$".
#: fastjsonschema turns every such `$` into `\Z` itself; jsonschema calls re.search as is, so
#: its pattern keyword is replaced by one that does the same (our own: jsonschema has no option).
_DOLLAR = re.compile(r"(?<!\\)\$")


@lru_cache(maxsize=None)
def _strict(pattern: str) -> re.Pattern:
    return re.compile(_DOLLAR.sub(r"\\Z", pattern))


def _pattern(validator, pattern, instance, schema):
    import jsonschema
    if validator.is_type(instance, "string") and not _strict(pattern).search(instance):
        yield jsonschema.ValidationError(f"{excerpt(instance)} does not match {pattern!r}")


def _bounded(keyword: str):
    """A keyword that skips a list longer than its schema's maxItems: maxItems reports that list, and
    judging each of 100,000 addresses where 4096 are allowed would take seconds to say nothing more."""
    import jsonschema
    base = jsonschema.Draft202012Validator.VALIDATORS[keyword]

    def check(validator, value, instance, schema):
        if validator.is_type(instance, "array") and len(instance) > schema.get("maxItems", math.inf):
            return
        yield from base(validator, value, instance, schema)
    return check


@lru_cache(maxsize=None)
def _validator() -> jsonschema.Draft202012Validator:
    import jsonschema
    schema = policy_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    checker = jsonschema.FormatChecker(formats=())
    for name, check in FORMATS.items():
        checker.checks(name)(lambda value, check=check: not isinstance(value, str) or check(value) is None)
    strict = jsonschema.validators.extend(jsonschema.Draft202012Validator, {
        "pattern": _pattern, "items": _bounded("items"), "uniqueItems": _bounded("uniqueItems")})
    return strict(schema, format_checker=checker)


def _no_remote(uri: str):
    raise ValueError(f"the policy schema refers to {uri}: ctkit never fetches a schema")


@lru_cache(maxsize=None)
def _fast_validator(ref: str | None = None, formats: bool = False):
    """A yes/no validator compiled to Python by fastjsonschema: of the whole document, or of the part of
    the schema at `ref` (a pointer such as "#/$defs/rule"); with `formats`, the value checks too.

    jsonschema takes about 5 s on a 10,000-rule policy (benchmarks/bench_audit.py);
    fastjsonschema about 0.4 s. It only says valid or not, so a document it
    rejects (or one it cannot judge) goes through jsonschema for the messages.
    The schema uses nothing draft-07 lacks, so it is compiled as draft-07; a part
    (the items of _ITEMWISE) keeps the schema's $id, so that its references resolve in
    this document (without it fastjsonschema looked the $id up on the network, which
    _no_remote refuses). The compiled code is kept on disk (ctkit/policy/schema_code.py): compiling
    it took about 0.2 s of every process that loaded a policy.
    """
    schema = dict(policy_schema(), **{"$schema": "http://json-schema.org/draft-07/schema#"})
    # without formats, values are left to the model builder, which checks every one once and names each
    # bad one; with them (items of a document that is invalid anyway), a bad address among good rules is
    # named beside the document's other problems
    checks = {name: (lambda value, check=check: not formats or check(value) is None) for name, check in FORMATS.items()}
    return compile_validator(schema, checks, {"http": _no_remote, "https": _no_remote}, ref)


def fast_valid(data: Any, ref: str | None = None) -> bool:
    try:
        _fast_validator(ref)(data)
    except Exception:  # noqa: BLE001 - invalid, or a value it cannot judge: jsonschema decides
        return False
    return True


# ---------------------------------------------------------------- YAML

_YAML = "tag:yaml.org,2002:"
#: the tags a policy's YAML may hold; anything else (binary, timestamp, set, omap, pairs, python/...,
#: local !tags) is refused before construction
_SCALARS = {_YAML + t for t in ("str", "int", "bool", "null", "float")}
_MERGE = _YAML + "merge"
#: libyaml's C parser when PyYAML was built with it (several times faster)
_BASE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class PolicyLoader(_BASE_LOADER):
    """PyYAML's safe loader that can construct only what a policy holds.

    ctkit composes the node graph (get_single_node), checks it (_check_nodes: limits, tags,
    keys, YAML 1.1 readings), then constructs it (construct_document). The constructors are
    PyYAML's own, restricted to the tags a policy uses, so a tag the check let through by
    mistake still cannot construct an object: PyYAML refuses it as undefined.
    """

    yaml_constructors = {tag: fn for tag, fn in _BASE_LOADER.yaml_constructors.items()
                         if tag in _SCALARS | {_YAML + "seq", _YAML + "map", None}}


#: how YAML 1.1 (PyYAML) reads a plain integer that is not written in decimal
_DECIMAL = re.compile(r"[-+]?(?:0|[1-9][0-9]*)", re.ASCII)
_TRUE_FALSE = {"true", "True", "TRUE", "false", "False", "FALSE"}


def _int_reading(value: str) -> str:
    text = value.replace("_", "").lstrip("+-")
    if ":" in text:
        return "a sexagesimal (base 60) number"
    if text.startswith("0b"):
        return "a binary number"
    if text.startswith("0x"):
        return "a hexadecimal number"
    if text.startswith("0") and text != "0":
        return "an octal number"
    return "a number"


_PLAIN = "policies hold text, numbers, true/false, lists and mappings, without tags"


def _scalar_problem(loader: PolicyLoader, node: yaml.ScalarNode) -> tuple[str, str] | None:
    """(message, hint) for a scalar that YAML reads as something its text does not plainly say."""
    tag, value = node.tag, node.value
    if tag == _YAML + "int":
        if _DECIMAL.fullmatch(value):
            return None if len(value) <= 20 else (f"a number of {len(value)} digits",
                                                  "no value in a policy is that large")
        if len(value) > 40:
            return f"a number of {len(value)} characters", "no value in a policy is that large"
        return (f"{excerpt(value)} is read by YAML 1.1 as {_int_reading(value)}, "
                f"{loader.construct_yaml_int(node)}", "write the number in decimal, or quote it if it is text")
    if tag == _YAML + "bool" and value not in _TRUE_FALSE:
        return (f"{excerpt(value)} is read by YAML 1.1 as {str(loader.construct_yaml_bool(node)).lower()}",
                "write true or false, or quote it if it is text")
    if tag in _SCALARS:
        return None
    if tag == _YAML + "timestamp":
        return f"{excerpt(value)} is read by YAML as a date or time", "quote it: policies hold text"
    if tag == _YAML + "binary":
        return "binary data (!!binary) is not allowed", _PLAIN
    return f"the YAML tag {excerpt(tag)} is not allowed", _PLAIN


def _key_problem(node: yaml.Node) -> tuple[str, str] | None:
    if isinstance(node, yaml.ScalarNode) and node.tag in (_YAML + "str", _MERGE):
        return None
    if not isinstance(node, yaml.ScalarNode):
        return ("a list or mapping as a mapping key", "keys are text")
    kind = {"int": "a number", "float": "a number", "bool": "true or false", "null": "null"}.get(
        node.tag[len(_YAML):] if node.tag.startswith(_YAML) else "", f"tag {excerpt(node.tag)}")
    return (f"the key {excerpt(node.value)} is read by YAML as {kind}, not as text",
            f"keys are text: quote it ({excerpt(str(node.value))})")


class _Refused(Exception):
    """The node graph breaks a limit: checking (or constructing) further would cost without bound."""

    def __init__(self, problem: Problem):
        self.problem = problem


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


def _check_nodes(root: yaml.Node, loader: PolicyLoader, source: str
                 ) -> tuple[Lines, list[Problem], list[Problem]]:
    """One walk over the composed YAML graph: (lines, duplicate keys, other problems).

    Each node is visited once, however many aliases refer to it. When no node is met twice (no
    aliases) the graph is a tree, and the walk's own count and depth are the document's; otherwise
    _measure computes the expansion. Iterative: no Python recursion on deep input.
    Raises _Refused when a limit is broken.
    """
    lines: dict[tuple[str, ...], int] = {}
    duplicates: list[Problem] = []
    problems: list[Problem] = []
    seen: set[int] = set()
    shared = False
    stack: list[tuple[yaml.Node, tuple | None]] = [(root, ())]
    while stack:
        if len(problems) + len(duplicates) > MAX_PROBLEMS:
            # the walk stops here, so the limits were not measured on the rest: nothing is constructed
            return Lines(lines), [], duplicates + problems
        node, path = stack.pop()
        if id(node) in seen:
            shared = True  # an alias
            continue
        seen.add(id(node))
        if path is None:  # a mapping key: _key_problem judged it
            continue
        line = node.start_mark.line + 1
        lines.setdefault(path, line)
        if isinstance(node, yaml.ScalarNode):
            bad = _scalar_problem(loader, node)
            if bad:
                problems.append(Problem(pointer_of(path), bad[0], line=line, hint=bad[1], source=source))
            continue
        if len(seen) > MAX_YAML_NODES:
            raise _Refused(Problem(pointer_of(path), f"more than {MAX_YAML_NODES} values; a YAML policy holds at "
                                   f"most {MAX_YAML_NODES}", line=line, source=source,
                                   hint="split the policy, use sets (elements_file) for long lists, or write it "
                                        "as JSON"))
        if len(path) >= MAX_DEPTH:
            raise _Refused(Problem(pointer_of(path), f"nested more than {MAX_DEPTH} levels deep", line=line,
                                   source=source, hint="a policy needs fewer than ten levels"))
        if node.tag != _YAML + ("map" if isinstance(node, yaml.MappingNode) else "seq"):
            problems.append(Problem(pointer_of(path), f"the YAML tag {excerpt(node.tag)} is not allowed", line=line,
                                    source=source, hint=_PLAIN))
        if isinstance(node, yaml.SequenceNode):
            stack.extend((item, path + (str(i),)) for i, item in reversed(list(enumerate(node.value))))
            continue
        names: set[str] = set()
        pairs = []
        for key_node, value_node in node.value:
            bad = _key_problem(key_node)
            name = key_node.value if isinstance(key_node, yaml.ScalarNode) else "?"
            if bad:
                problems.append(Problem(pointer_of(path), bad[0], line=key_node.start_mark.line + 1, hint=bad[1],
                                        source=source))
            elif key_node.tag != _MERGE:
                if name in names and len(duplicates) <= MAX_PROBLEMS:
                    duplicates.append(Problem(
                        pointer_of(path + (name,)), f"duplicate key {excerpt(name)}",
                        line=key_node.start_mark.line + 1, source=source,
                        hint="each key may appear once; the second would silently replace the first"))
                names.add(name)
            # the mapping a merge key (<<) brings in lies at this mapping's own place
            pairs += [(key_node, None), (value_node, path if key_node.tag == _MERGE else path + (name,))]
        stack.extend(reversed(pairs))
    if shared and not problems:
        _measure(root, source, len(seen))
    return Lines(lines), duplicates, problems


def _measure(root: yaml.Node, source: str, unique: int) -> None:
    """The size and depth of a YAML graph with aliases, as if they were expanded; _Refused beyond the limits.

    Post-order over the graph, each node once: a node's expanded size and depth are computed from
    its children's, so an alias bomb (ten anchors each referring to the previous one ten times) is
    measured in time proportional to its text, not expanded. A node that contains itself (`&a [*a]`)
    is refused: its expansion would never end. Our own: PyYAML's composer resolves an alias to the
    anchored node and has no limit on what the aliases add up to.
    """
    size: dict[int, int] = {}    # id(node) -> values in its expansion
    depth: dict[int, int] = {}   # id(node) -> lists and mappings nested in its expansion
    started: set[int] = set()
    stack: list[tuple[yaml.Node, tuple, bool]] = [(root, (), False)]

    def refuse(node: yaml.Node, path: tuple, message: str, hint: str) -> _Refused:
        return _Refused(Problem(pointer_of(path), message, line=node.start_mark.line + 1, source=source, hint=hint))

    while stack:
        node, path, leaving = stack.pop()
        key = id(node)
        if leaving:
            kids = _children(node)
            size[key] = 1 + sum(size[id(k)] for k in kids)
            depth[key] = 1 + max((depth[id(k)] for k in kids), default=0)
            if size[key] > MAX_YAML_NODES:
                raise refuse(node, path, f"YAML aliases expand this to {size[key]} values; a YAML policy holds "
                             f"at most {MAX_YAML_NODES}", "split the policy, or use sets for long lists")
            if depth[key] > MAX_DEPTH:
                raise refuse(node, path, f"YAML aliases nest this {depth[key]} levels deep; at most {MAX_DEPTH}",
                             "a policy needs fewer than ten levels")
            continue
        if key in size:
            continue  # met again through an alias: its size is known
        if key in started:
            raise refuse(node, path, "a YAML alias refers to a list or mapping that contains it",
                         "its expansion would never end")
        started.add(key)
        if isinstance(node, yaml.ScalarNode):
            size[key], depth[key] = 1, 0
            continue
        stack.append((node, path, True))
        if isinstance(node, yaml.SequenceNode):
            stack.extend((item, path + (str(i),), False) for i, item in reversed(list(enumerate(node.value))))
        else:
            stack.extend((n, path + (k.value if isinstance(k, yaml.ScalarNode) else "?",), False)
                         for k, v in reversed(node.value) for n in (v, k))
    if size[id(root)] - unique > MAX_ALIASED:
        raise refuse(root, (), f"YAML aliases expand the document from {unique} to {size[id(root)]} values",
                     f"aliases may add at most {MAX_ALIASED} values to a policy")


def _compose(text: str, source: str) -> tuple[Any, Lines, list[Problem], list[Problem]]:
    """(YAML document, its lines, duplicate keys, problems); the document is None when there are
    problems (it is then not constructed). Raises yaml.YAMLError, RecursionError or _Refused."""
    loader = PolicyLoader(text)
    try:
        root = loader.get_single_node()
        if root is None:
            return None, Lines(), [], []
        lines, duplicates, problems = _check_nodes(root, loader, source)
        if problems:
            return None, lines, duplicates, problems
        return loader.construct_document(root), lines, duplicates, []
    finally:
        loader.dispose()


# ---------------------------------------------------------------- parsing

def _duplicate(path: tuple, line: int | None, source: str) -> Problem:
    return Problem(pointer_of(path), f"duplicate key {excerpt(path[-1])}", line=line, source=source,
                   hint="each key may appear once; the second would silently replace the first")


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
        except RecursionError:
            raise PolicyError([Problem("", f"not valid JSON: nested more than {MAX_DEPTH} levels deep",
                                       source=source, hint="a policy needs fewer than ten levels")]) from None
        except ValueError as exc:  # a constant (NaN), or an integer of more than 4300 digits
            raise PolicyError([Problem("", f"not valid JSON: {clip(str(exc), 200)}", source=source)]) from None
        if duplicates:
            found, where = _json_scan(text, None)
            return data, Lines(found), [_duplicate(path, line, source) for path, line in where]
        return data, LineIndex(text), []
    try:
        data, lines, duplicates, problems = _compose(text, source)
    except _Refused as refused:
        raise PolicyError([refused.problem]) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise PolicyError([Problem(
            "", f"not valid YAML: {getattr(exc, 'problem', None) or exc}",
            line=mark.line + 1 if mark else None, source=source)]) from None
    except RecursionError:  # the pure-Python composer, when PyYAML was built without libyaml
        raise PolicyError([Problem("", f"not valid YAML: nested more than {MAX_DEPTH} levels deep",
                                   source=source)]) from None
    if problems:
        raise PolicyError(capped(duplicates + problems))
    return data, lines, duplicates


# ------------------------------------------------------------- validation

def _keys(keys: Iterable, allowed: list[str]) -> tuple[str, str | None]:
    keys = list(keys)
    shown = keys[:5]
    listed = ", ".join(excerpt(k) for k in shown) + (f" and {len(keys) - 5} more" if len(keys) > 5 else "")
    hints = []
    for key in shown:
        close = suggest(key, allowed)
        if close:
            hints.append(f"{excerpt(key)}: did you mean {close!r}?")
    hint = "; ".join(hints) or ("allowed: " + ", ".join(allowed) if allowed else None)
    return f"unknown property {listed}", hint


def _message(error: jsonschema.ValidationError) -> tuple[str, str | None]:
    """A message a user can act on, and a hint of what would be valid; values shown as excerpts."""
    v, value, instance = error.validator, error.validator_value, error.instance
    described = error.schema.get("description") if isinstance(error.schema, dict) else None
    if v == "additionalProperties":
        allowed = sorted(error.schema.get("properties", {}))
        extra = [k for k in instance if k not in allowed] if isinstance(instance, dict) else []
        return _keys(sorted(extra, key=str), allowed)
    if v == "not" and isinstance(instance, dict):
        groups = [("protocol", "protocols"), ("action", "jump"), ("action", "goto"), ("jump", "goto")]
        both = [f"{a!r} and {b!r}" for a, b in groups if a in instance and b in instance]
        return f"{' / '.join(both) or 'these properties'} exclude each other", "give only one of them"
    if v == "format" and value in FORMATS:
        return FORMATS[value](instance)
    if v == "enum":
        return f"{excerpt(instance)} is not allowed", "valid: " + ", ".join(map(repr, value))
    if v == "const":
        return f"{excerpt(instance)} is not allowed", f"must be {value!r}"
    if v == "required":
        return error.message, None  # names the schema's property, not the instance
    if v == "pattern" and "propertyNames" in error.relative_schema_path:
        return f"name {excerpt(instance)} is not allowed", f"names match {value}"
    if v == "pattern":
        return f"{excerpt(instance)} does not have the expected form", described
    if v == "type":
        return f"{excerpt(instance)} is not of type {value}", described
    if v == "minimum":
        return f"{excerpt(instance)} is less than the minimum of {value}", described
    if v == "maximum":
        return f"{excerpt(instance)} is greater than the maximum of {value}", described
    if v in ("minItems", "minProperties") and value == 1:
        return f"{excerpt(instance)} should be non-empty", described
    if v == "minItems":
        return f"{len(instance)} items; at least {value}", described
    if v == "maxItems":
        return f"{len(instance)} items; at most {value}", described
    if v == "minLength":
        return f"{excerpt(instance)} is shorter than {value} characters", described
    if v == "maxLength":
        return f"{len(instance)} characters; at most {value}", described
    if v == "uniqueItems":
        return f"{excerpt(instance)} has repeated items", "each item may appear once"
    return f"{excerpt(instance)} is not valid here ({v})", described


def _leaf(error: jsonschema.ValidationError) -> jsonschema.ValidationError:
    """For oneOf/anyOf, the branch error that says most: the deepest, and not a mere type mismatch."""
    while error.validator in ("oneOf", "anyOf") and error.context:
        error = min(error.context, key=lambda e: (-len(e.absolute_path), e.validator == "type",
                                                  e.validator in ("oneOf", "anyOf")))
    return error


#: collections whose items the fast validator judges one by one, so that jsonschema (slow, but it names
#: every problem) sees only the items that are wrong and the rest of the document without them:
#: (path, "*" for any key; pointer of the items' schema; most items, beyond which the list is left whole)
_ITEMWISE = (
    (("chains", "*", "rules"), "#/$defs/rule", None),
    (("notrack",), "#/$defs/notrack", None), (("helpers",), "#/$defs/helper", None),
    (("nat",), "#/$defs/nat", None), (("timeouts",), "#/$defs/timeout", None), (("zones",), "#/$defs/zone", None),
    (("sets", "*", "elements"), "#/$defs/set/properties/elements/items", None),
)


def _split(data: Any, formats: bool) -> tuple[Any, list[tuple[tuple, Any, str]]]:
    """(the document with the _ITEMWISE lists emptied, [(path, item, schema pointer)] of the items the
    fast validator rejects). Only the containers on the way are copied; it stops after MAX_PROBLEMS
    bad items. The lists have no constraint of their own but their items' (and a list of set elements
    longer than its maxItems stays whole), so the skeleton and the items are valid when the document is."""
    bad: list[tuple[tuple, Any, str]] = []

    def empty(node: Any, path: tuple, rest: tuple, ref: str, most: int | None) -> Any:
        if not rest:
            if not isinstance(node, list) or (most is not None and len(node) > most):
                return node
            check = _fast_validator(ref, formats)
            for i, item in enumerate(node):
                if len(bad) > MAX_PROBLEMS:
                    break
                try:
                    check(item)
                except Exception:  # noqa: BLE001 - invalid, or a value it cannot judge: jsonschema decides
                    bad.append((path + (i,), item, ref))
            return []
        if not isinstance(node, dict):
            return node
        names = list(node) if rest[0] == "*" else [rest[0]] if rest[0] in node else []
        return dict(node, **{k: empty(node[k], path + (k,), rest[1:], ref, most) for k in names})

    skeleton = data
    for where, ref, most in _ITEMWISE:
        skeleton = empty(skeleton, (), where, ref, most)
    return skeleton, bad


def schema_problems(data: Any, source: str) -> list[Problem]:
    skeleton, bad = _split(data, formats=False)
    whole = fast_valid(skeleton)
    if whole and not bad:
        return []
    skeleton, bad = _split(data, formats=True)  # invalid anyway: every bad value is named now
    validator = _validator()

    def errors() -> Iterator[tuple[tuple, jsonschema.ValidationError]]:
        if not whole:
            yield from (((), e) for e in validator.iter_errors(skeleton))
        for path, item, ref in bad:
            yield from ((path, e) for e in validator.descend(item, {"$ref": ref}))

    found = [(prefix, _leaf(e)) for prefix, e in islice(errors(), MAX_PROBLEMS + 1)]
    problems = []
    for prefix, error in sorted(found, key=lambda f: [str(p) for p in f[0] + tuple(f[1].absolute_path)]):
        path = list(prefix) + list(error.absolute_path)
        if "propertyNames" in error.relative_schema_path:
            path = path + [error.instance]
        msg, hint = _message(error)
        problems.append(Problem(pointer_of(path), msg, hint=hint, source=source))
    return capped(problems)


def capped(problems: list[Problem]) -> list[Problem]:
    """At most MAX_PROBLEMS problems, then one that says more were left out (an error if one of them was)."""
    if len(problems) <= MAX_PROBLEMS:
        return problems
    rest = problems[MAX_PROBLEMS:]
    severity = "error" if any(p.severity == "error" for p in rest) else "warning"
    return problems[:MAX_PROBLEMS] + [Problem("", f"{len(rest)} more problems not shown", severity=severity,
                                              source=problems[0].source, hint="fix these and validate again")]


def _line_for(lines: Mapping[str, int], pointer: str) -> int | None:
    while True:
        if pointer in lines:
            return lines[pointer]
        if not pointer:
            return None
        pointer = pointer.rsplit("/", 1)[0]


# ------------------------------------------------------------- entry points

def load_document(data: Any, source: str = "<policy>", lines: Mapping[str, int] | None = None,
                  earlier: list[Problem] | None = None, base: Path | None = None) -> Policy:
    """Validate an already parsed document and build the model, or raise PolicyError. `base`: the
    directory a relative elements_file is read from (load_file: the policy file's; None: the current one)."""
    lines = lines if lines is not None else {}  # never test a LineIndex for truth
    problems = list(earlier or [])
    value_problems = _value_problems(data, source)
    if value_problems:
        problems += value_problems
    else:
        problems += schema_problems(data, source)
    if not problems and isinstance(data, dict) and "table" in data:
        try:
            check_table(data["table"])
        except UsageError as exc:
            problems.append(Problem("/table", str(exc), source=source))
    if not problems:
        policy, problems = build_policy(data, source, lines, base)
    if problems:
        raise PolicyError(located(capped(problems), lines))
    return policy


def located(problems: list[Problem], lines: Mapping[str, int]) -> list[Problem]:
    """The problems with the line of each pointer (or of the nearest place that holds it), all looked
    up at once: a LineIndex finds them in one pass over the text."""
    if isinstance(lines, Lines):
        lines.prefetch(p.pointer for p in problems if p.line is None)
    return [p if p.line is not None else replace(p, line=_line_for(lines, p.pointer)) for p in problems]


#: characters that must never reach nft text, iptables-restore input or a kernel comment:
#: C0 controls (NUL, newline, CR...), DEL, C1 controls (U+0085 included) and the Unicode
#: line and paragraph separators. Python's `$` in a schema pattern matches before a trailing
#: newline, and str.splitlines() splits on several of these, so they are refused once, here.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
#: lengths the kernel and libnftables count in bytes (UTF-8), checked in bytes
MAX_BYTES = {"comment": 64, "prefix": 127}


def _value_problems(data: Any, source: str) -> list[Problem]:
    """One walk over the document, before the schema: its size and depth (limits), keys that are not
    text, integers written as floats (JSON Schema takes 7.0 and 1e3 for integers, and 7.0 would reach
    the kernel's text as "7.0"), control characters anywhere (keys and values), and byte lengths of
    free text. Iterative, and it stops at MAX_NODES values: a document built in Python may even be
    cyclic."""
    out: list[Problem] = []

    def problem(path: tuple, message: str, hint: str | None = None) -> None:
        out.append(Problem(pointer_of(path), message, source=source, hint=hint))

    stack: list[tuple[Any, tuple]] = [(data, ())]
    seen = 0
    while stack and len(out) <= MAX_PROBLEMS:
        node, path = stack.pop()
        seen += 1
        if seen > MAX_NODES:
            return [Problem("", f"more than {MAX_NODES} values; a policy holds at most {MAX_NODES}",
                            source=source, hint="split the policy, or use sets for long lists")]
        if isinstance(node, (dict, list)) and len(path) >= MAX_DEPTH:
            problem(path, f"nested more than {MAX_DEPTH} levels deep", "a policy needs fewer than ten levels")
            continue
        if isinstance(node, dict):
            for key, value in node.items():
                if not isinstance(key, str):
                    problem(path, f"the key {excerpt(key)} is not text", f"keys are text: quote it ('{key}')")
                elif _CONTROL.search(key):
                    problem(path, f"a key holds a control character ({_CONTROL.search(key).group()!r})",
                            "names and keys are printable text")
                stack.append((value, path + (key,)))
        elif isinstance(node, list):
            stack.extend((v, path + (i,)) for i, v in enumerate(node))
        elif isinstance(node, float):
            if not math.isfinite(node):
                problem(path, "numbers must be finite", "NaN and Infinity are not numbers a policy takes")
            elif node.is_integer():  # JSON Schema counts 7.0 as an integer; 1.5 the schema refuses itself
                problem(path, f"{excerpt(node)} is written as a fraction or with an exponent",
                        "integers in a policy are written as integers (7, not 7.0 or 1e3)")
        elif isinstance(node, str):
            bad = _CONTROL.search(node)
            if bad:
                problem(path, f"control character {bad.group()!r} at position {bad.start()}",
                        "text that reaches the kernel must be printable: no newline, CR, NUL, "
                        "tab or other control characters")
                continue
            limit = MAX_BYTES.get(str(path[-1])) if path else None
            if limit is not None and len(node) > limit // 4:
                size = len(node.encode("utf-8", "surrogatepass"))
                if size > limit:
                    problem(path, f"{size} bytes in UTF-8; the kernel allows at most {limit}",
                            "shorten it (a non-ASCII character takes 2 to 4 bytes)")
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


def load_text(text: str, source: str = "<policy>", fmt: str | None = None, base: Path | None = None) -> Policy:
    data, lines, problems = parse_text(text, source, fmt)
    return load_document(data, source, lines, problems, base)


def _limit(path: Path) -> int:
    return MAX_FILE_BYTES if path.suffix.lower() == ".json" else MAX_YAML_BYTES


def load_file(path: str | Path) -> Policy:
    """Load a policy file: a regular file of at most MAX_FILE_BYTES if it is .json, MAX_YAML_BYTES
    otherwise (a FIFO, a device, a directory or a larger file is refused before it is read)."""
    path = Path(path)
    try:
        raw = read_regular(path, _limit(path))
    except Unreadable as exc:
        raise PolicyError([Problem("", exc.reason, source=str(path))]) from None
    return load_bytes(raw, path)


def load_bytes(raw: bytes, path: str | Path) -> Policy:
    """The policy in `raw`, the bytes the caller read from the file at `path` (ctkit/pipeline.py, which
    keeps compiled policies by those bytes); the file's size limit holds as in load_file."""
    path = Path(path)
    source = str(path)
    if len(raw) > _limit(path):
        raise PolicyError([Problem("", too_big(len(raw), _limit(path)), source=source)])
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PolicyError([Problem("", f"not UTF-8 text (byte {exc.start})", source=source)]) from None
    suffix = path.suffix.lower()
    fmt = "json" if suffix == ".json" else "yaml" if suffix in (".yaml", ".yml") else None
    return load_text(text, source, fmt, path.parent)
