"""Semantic checks of a document that failed its schema, where it can still be read.

`ctkit validate` reports every problem of a file in one run: when each schema (or value) error
lies inside one entry of a list of entries (a rule, a notrack, helper, nat, timeout or zone entry,
a set element), those entries are set aside and the rest is built and linted as usual. The
problems found then are named by the pointers of the file as written (an entry set aside does
not renumber the ones after it). An error anywhere else (a chain's policy, the document's
version, YAML that does not parse) leaves nothing safe to judge: the semantic checks wait.

What the rest is judged without is said: a rule set aside may have been the only jump to a
chain, so a warning about the rest can come from the entries set aside.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

from ctkit.errors import PolicyError, Problem

if TYPE_CHECKING:
    from ctkit.policy.model import Policy

#: the lists whose entries can be set aside, as pointer patterns of one entry
_ENTRY = re.compile(r"^(/chains/[^/]+/rules|/(?:notrack|helpers|nat|timeouts|zones)|/sets/[^/]+/elements)"
                    r"/(\d+)(?:/|$)")


@dataclass(frozen=True)
class Partial:
    """What the semantic checks of the readable rest found."""
    problems: tuple[Problem, ...]  # build and lint problems of the rest, at the file's own pointers
    set_aside: tuple[str, ...]  # pointers of the entries left out
    linted: bool  # the rest built, and lint ran over it


def _unescape(part: str) -> str:
    return part.replace("~1", "/").replace("~0", "~")


def entry_of(pointer: str) -> tuple[str, int] | None:
    """(the list's pointer, the entry's index) when `pointer` lies inside an entry that can be set aside."""
    found = _ENTRY.match(pointer)
    return (found.group(1), int(found.group(2))) if found else None


def _walk(data: Any, pointer: str) -> Any:
    node = data
    for part in pointer[1:].split("/"):
        key = _unescape(part)
        if isinstance(node, dict) and key in node:
            node = node[key]
        else:
            return None
    return node


def _without(data: Any, removed: dict[str, set[int]]) -> Any:
    """A copy of `data` whose listed entries are left out (only the containers on the way are copied)."""
    def put(node: Any, parts: list[str], keep: Any) -> Any:
        if not parts:
            return keep
        key = parts[0]
        return dict(node, **{key: put(node[key], parts[1:], keep)})

    out = data
    for where, indexes in removed.items():
        items = _walk(out, where)
        out = put(out, [_unescape(p) for p in where[1:].split("/")],
                  [item for i, item in enumerate(items) if i not in indexes])
    return out


def _original(pointer: str, removed: dict[str, set[int]]) -> str:
    """The pointer in the file as written of a pointer into the document without the removed entries."""
    for where, indexes in removed.items():
        if pointer.startswith(where + "/"):
            index, sep, tail = pointer[len(where) + 1:].partition("/")
            if index.isdigit():
                kept, i = -1, -1
                while kept < int(index):
                    i += 1
                    kept += i not in indexes
                return f"{where}/{i}{sep}{tail}"
    return pointer


#: rounds of setting aside: the model builder checks values the schema does not (a set element's
#: address), so a first rest can fail to build on other entries, which are set aside in turn
ROUNDS = 3


def _entries(problems, data: Any) -> dict[str, set[int]] | None:
    """{list pointer: entry indexes} holding the errors among `problems`; None if one lies elsewhere."""
    out: dict[str, set[int]] = {}
    for p in problems:
        if p.severity != "error":
            continue
        entry = entry_of(p.pointer)
        if entry is None or not isinstance(_walk(data, entry[0]), list):
            return None
        out.setdefault(entry[0], set()).add(entry[1])
    return out


def semantic(data: Any, problems: tuple[Problem, ...], source: str, lines: Mapping[str, int],
             base: Path | None = None) -> Partial | None:
    """The build and lint problems of `data` without the entries that hold `problems` (the schema's);
    None when one of those errors is outside every entry that can be set aside. `base`: the directory a
    set's elements_file is read from, as for load_document."""
    from ctkit.policy.build import build_policy
    from ctkit.policy.lint import lint
    from ctkit.policy.load import located, schema_problems
    removed = _entries(problems, data)
    if not removed or not isinstance(data, dict):
        return None
    known = {(p.pointer, p.message) for p in problems}
    out: list[Problem] = []
    linted = False
    for _ in range(ROUNDS):
        # the value checks of the first pass (which come before the schema, and stop it) saw the whole
        # document: the rest has no such problem left. The schema is asked again: a document with a
        # value problem was not judged by it
        rest = _without(data, removed)
        found = schema_problems(rest, source)
        if not found:
            policy, found = build_policy(rest, source, {}, base)
            if policy is not None:
                found, linted = lint(policy), True
        moved = [replace(p, pointer=_original(p.pointer, removed), line=None) for p in found]
        out += [p for p in moved if (p.pointer, p.message) not in known]
        known |= {(p.pointer, p.message) for p in moved}
        more = None if linted else _entries(moved, data)
        if not more:
            break
        for where, indexes in more.items():
            removed.setdefault(where, set()).update(indexes)
    set_aside = tuple(f"{w}/{i}" for w in sorted(removed) for i in sorted(removed[w]))
    return Partial(tuple(located(out, lines)), set_aside, linted)


#: what Checked.semantic says
ALL, PARTIAL, WAITING = "all", "partial", "waiting"


@dataclass(frozen=True)
class Checked:
    """Every problem `ctkit validate` finds in one file, in one run."""
    source: str
    policy: Policy | None  # None: invalid
    problems: tuple[Problem, ...]  # errors and warnings: the schema's first, then the semantic checks'
    semantic: str  # ALL: linted whole; PARTIAL: the rest, without set_aside; WAITING: not until the errors go
    set_aside: tuple[str, ...] = ()

    @property
    def valid(self) -> bool:
        return self.policy is not None and not any(p.severity == "error" for p in self.problems)


def _document(path: Path) -> tuple[Any, Mapping[str, int]] | None:
    """The document and its lines, read as load.load_file reads it (it did a moment ago); None if it
    no longer reads the same way."""
    from ctkit.paths import Unreadable, read_regular
    from ctkit.policy import load
    try:
        text = read_regular(path, load.MAX_FILE_BYTES).decode("utf-8")
        suffix = path.suffix.lower()
        fmt = "json" if suffix == ".json" else "yaml" if suffix in (".yaml", ".yml") else None
        data, lines, _earlier = load.parse_text(text, str(path), fmt)
    except (Unreadable, UnicodeDecodeError, PolicyError):
        return None
    return data, lines


def check_file(path: str | Path) -> Checked:
    """Load and lint; when the schema refuses entries of the document, lint the rest too."""
    from ctkit.policy.lint import errors_of, lint
    from ctkit.policy.load import load_file
    path = Path(path)
    try:
        policy = load_file(path)
    except PolicyError as exc:
        problems = tuple(exc.problems)
        readable = all(entry_of(p.pointer) for p in problems if p.severity == "error")
        read = _document(path) if readable else None
        part = semantic(read[0], problems, str(path), read[1], path.parent) if read is not None else None
        if part is None:
            return Checked(str(path), None, problems, WAITING)
        # the builder's problems of the rest are reported even when it never got as far as lint
        return Checked(str(path), None, problems + part.problems, PARTIAL if part.linted else WAITING,
                       part.set_aside)
    findings = tuple(lint(policy))
    return Checked(str(path), None if errors_of(findings) else policy, findings, ALL)


def with_lines(path: str | Path, problems: tuple[Problem, ...]) -> tuple[Problem, ...]:
    """The problems with the lines of their pointers in `path` (found by reading it once more)."""
    from ctkit.policy.load import located
    read = _document(Path(path))
    return tuple(located(list(problems), read[1])) if read is not None else problems
