"""Where a value of a policy document is in its text: the line of each JSON pointer.

A policy (model.Policy.lines) keeps this to name the line of a problem found after loading (lint, the
audit); a compiled policy is kept with it (ctkit/compiled_cache.py), so it lives apart from the loader,
which a policy read back from the cache does not import.
"""
from __future__ import annotations

import json
import re
from typing import Iterable, Mapping


def pointer_of(path) -> str:
    """RFC 6901 JSON pointer for a sequence of keys and indexes."""
    parts = [str(p).replace("~", "~0").replace("/", "~1") for p in path]
    return "/" + "/".join(parts) if parts else ""


def _parts(pointer: str) -> tuple[str, ...]:
    """The keys and indexes (as text) of a JSON pointer."""
    if not pointer:
        return ()
    return tuple(p.replace("~1", "/").replace("~0", "~") for p in pointer[1:].split("/"))


class Lines(Mapping):
    """JSON pointer -> 1-based line, kept by path (a tuple of keys and indexes as text): the walks
    that find lines build no pointer string for the values nobody asks about."""

    def __init__(self, by_path: dict[tuple[str, ...], int] | None = None):
        self._by_path = by_path if by_path is not None else {}

    def prefetch(self, pointers: Iterable[str]) -> None:
        """Make the lines of these pointers (and of the places that hold them) known at once."""

    def __getitem__(self, pointer: str) -> int:
        return self._by_path[_parts(pointer)]

    def __contains__(self, pointer: object) -> bool:
        return isinstance(pointer, str) and _parts(pointer) in self._by_path

    def __iter__(self):
        return (pointer_of(path) for path in self._by_path)

    def __len__(self) -> int:
        return len(self._by_path)


class LineIndex(Lines):
    """The lines of a JSON text, found only for the pointers a message needs.

    Most loads report nothing and never pay for it; a load that reports problems asks
    for all their pointers at once (prefetch), which is one pass over the text's tokens
    that descends only into the lists and mappings on the way to them.
    """

    def __init__(self, text: str):
        super().__init__()
        self._text = text
        self._asked: set[tuple[str, ...]] = set()

    def prefetch(self, pointers: Iterable[str]) -> None:
        wanted = {_parts(p) for p in pointers} - self._asked
        wanted = {w[:i] for w in wanted for i in range(len(w) + 1)} - self._asked
        if wanted:
            self._by_path.update(_json_scan(self._text, wanted)[0])
            self._asked |= wanted

    def __getitem__(self, pointer: str) -> int:
        self.prefetch([pointer])
        return super().__getitem__(pointer)

    def __contains__(self, pointer: object) -> bool:
        if isinstance(pointer, str):
            self.prefetch([pointer])
        return super().__contains__(pointer)


#: JSON's tokens: a string, a punctuation mark, or a number or literal (the text has been parsed: it is valid)
_JSON_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"|[{}\[\],:]|[^\s{}\[\],:"]+')


def _json_scan(text: str, wanted: set[tuple[str, ...]] | None
               ) -> tuple[dict[tuple[str, ...], int], list[tuple[tuple[str, ...], int]]]:
    """One pass over the tokens of a valid JSON text: (path -> line of the value there, for the paths in
    `wanted`; [(path, line)] of duplicate keys, when wanted is None: then every path is walked).

    Iterative, and it skips a list or mapping no wanted path goes through by counting brackets.
    Our own: json reports no positions, and composing the text as YAML to find them took seconds.
    """
    found: dict[tuple[str, ...], int] = {}
    duplicates: list[tuple[tuple[str, ...], int]] = []
    every = wanted is None
    line, last = 1, 0
    stack: list[list] = []  # [is_object, path, index or key, keys seen]
    expect: tuple[str, ...] | None = ()  # the path of the next value, if a value comes next
    skip = 0
    for m in _JSON_TOKEN.finditer(text):
        tok = m.group()
        if skip:
            if tok == "{" or tok == "[":
                skip += 1
            elif tok == "}" or tok == "]":
                skip -= 1
            continue
        if expect is not None and tok != "]":
            path, expect = expect, None
            if every or path in wanted:
                line += text.count("\n", last, m.start())
                last = m.start()
                found[path] = line
            if tok == "{" or tok == "[":
                if not every and path not in wanted:
                    skip = 1
                elif tok == "{":
                    stack.append([True, path, None, set()])
                else:
                    stack.append([False, path, 0, None])
                    expect = path + ("0",)
            continue
        expect = None
        frame = stack[-1]
        if tok == "}" or tok == "]":
            stack.pop()
        elif tok == ",":
            if not frame[0]:
                frame[2] += 1
                expect = frame[1] + (str(frame[2]),)
        elif tok == ":":
            expect = frame[1] + (frame[2],)
        else:  # a key
            key = json.loads(tok)
            if every and key in frame[3]:
                line += text.count("\n", last, m.start())
                last = m.start()
                duplicates.append((frame[1] + (key,), line))
            frame[2] = key
            if every:
                frame[3].add(key)
    return found, duplicates
