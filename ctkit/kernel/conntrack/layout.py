"""Rows of raw values read as columns: `Layout` (compiled converters) and `Entry` (one entry, converted lazily)."""
from __future__ import annotations

import json
import socket
from dataclasses import dataclass
from typing import Callable, Iterable

from ctkit.kernel.conntrack.columns import AF_INET, AF_INET6, Column, address, column, same


@dataclass(frozen=True, slots=True)
class Layout:
    """Where each column's raw values sit in a raw row, and compiled row converters.

    `convert` and `to_json` are generated once per layout (like
    collections.namedtuple does): one flat expression per row instead of a
    loop over columns, which is most of the cost of listing a big table.
    """

    columns: tuple[Column, ...]
    raws: tuple[str, ...]
    slices: tuple[tuple[int, ...], ...]
    convert: Callable[[tuple], tuple]
    to_json: Callable[[tuple], str]

    @classmethod
    def of(cls, names: Iterable[str]) -> "Layout":
        cols = tuple(column(n) for n in names)
        raws: list[str] = []
        for c in cols:
            for r in c.raws:
                if r not in raws:
                    raws.append(r)
        slices = tuple(tuple(raws.index(r) for r in c.raws) for c in cols)
        convert, to_json = _compile(cols, slices)
        return cls(cols, tuple(raws), slices, convert, to_json)


def _memo(fn: Callable[..., str], limit: int = 4096) -> Callable[..., str]:
    """Cache JSON text of small value domains (status bits, protocol, state); bounded."""
    cache: dict = {}

    def text(*key):
        try:
            return cache[key]
        except KeyError:
            value = fn(*key)
            if len(cache) < limit:
                cache[key] = value
            return value
    return text


def _json_text(value: object) -> str:
    # "None" inside a string is written as \u004eone so that the row-wide
    # None -> null replacement below can never touch it
    return json.dumps(value, separators=(",", ":")).replace("None", "\\u004eone")


def _generic(convert: Callable[..., object]) -> Callable[..., str | None]:
    def text(*raw):
        value = convert(*raw)
        return None if value is None else _json_text(value)  # None prints as null
    return text


def _addr_json(raw: bytes | None) -> str | None:
    if raw is None:
        return None
    return '"' + socket.inet_ntop(AF_INET if len(raw) == 4 else AF_INET6, raw) + '"'


_MEMO_COLUMNS = {"family", "proto", "state", "status"}


def _compile(cols: tuple[Column, ...], slices: tuple[tuple[int, ...], ...]
             ) -> tuple[Callable[[tuple], tuple], Callable[[tuple], str]]:
    env: dict[str, object] = {}
    conv_parts, json_parts, keys = [], [], []
    for k, (c, idx) in enumerate(zip(cols, slices, strict=True)):
        args = ", ".join(f"r[{i}]" for i in idx)
        if c.convert is same:
            conv_parts.append(f"r[{idx[0]}]")
            json_parts.append(f"r[{idx[0]}]")  # an int or None, printed by %s; None becomes null
        else:
            env[f"c{k}"] = c.convert
            conv_parts.append(f"c{k}({args})")
            if c.convert is address:
                env[f"j{k}"] = _addr_json
            elif c.name in _MEMO_COLUMNS:
                env[f"j{k}"] = _memo(lambda *v, f=c.convert: _json_text(f(*v)))
            elif c.name in ("mark", "zone"):
                env[f"j{k}"] = c.convert
            else:
                env[f"j{k}"] = _generic(c.convert)
            json_parts.append(f"j{k}({args})")
        keys.append(json.dumps(c.name) + ":%s")
    env["TEMPLATE"] = "{" + ",".join(k.replace("%", "%%").replace("%%s", "%s") for k in keys) + "}"
    comma = "," if len(cols) == 1 else ""
    src = (f"def convert(r):\n    return ({', '.join(conv_parts)}{comma})\n"
           f"def to_json(r):\n    return (TEMPLATE % ({', '.join(json_parts)}{comma})).replace('None', 'null')\n")
    exec(compile(src, "<ctkit.conntrack.Layout>", "exec"), env)  # noqa: S102 - generated from the column table
    return env["convert"], env["to_json"]  # type: ignore[return-value]


@dataclass(frozen=True, slots=True)
class Entry:
    """One conntrack entry. Fields are converted from raw netlink values when read."""

    raw: tuple
    layout: Layout

    def get(self, name: str) -> object:
        for c, idx in zip(self.layout.columns, self.layout.slices, strict=True):
            if c.name == name:
                return c.convert(*[self.raw[i] for i in idx])
        raise KeyError(f"field {name!r} was not requested from the dump")

    def __getattr__(self, name: str) -> object:
        if name.startswith("__"):
            raise AttributeError(name)
        try:
            return self.get(name)
        except KeyError as exc:
            raise AttributeError(str(exc)) from None

    def as_dict(self) -> dict[str, object]:
        return dict(zip((c.name for c in self.layout.columns), self.layout.convert(self.raw), strict=True))
