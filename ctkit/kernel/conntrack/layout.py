"""Rows of raw values read as columns: `Layout` (compiled converters) and `Entry` (one entry, converted lazily)."""
from __future__ import annotations

import json
import socket
from dataclasses import dataclass
from typing import Callable, Iterable

from ctkit.kernel import ctnetlink as nl
from ctkit.kernel.conntrack.columns import AF_INET, AF_INET6, Column, Memo, address, column, same


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


def _json_converter(c: Column) -> Callable[..., str | None] | None:
    """How `to_json` turns column `c`'s raw values into JSON text (None: its one raw value prints as it is
    through %s, None as null)."""
    if c.convert is same:
        return None
    if c.convert is address:
        return _addr_json
    if c.name in _MEMO_COLUMNS:
        return _memo(lambda *v, f=c.convert: _json_text(f(*v)))
    if c.name in ("mark", "zone"):
        return c.convert
    return _generic(c.convert)


def _compile(cols: tuple[Column, ...], slices: tuple[tuple[int, ...], ...]
             ) -> tuple[Callable[[tuple], tuple], Callable[[tuple], str]]:
    env: dict[str, object] = {}
    conv_parts, json_parts, keys = [], [], []
    for k, (c, idx) in enumerate(zip(cols, slices, strict=True)):
        args = ", ".join(f"r[{i}]" for i in idx)
        to_text = _json_converter(c)
        if to_text is None:
            conv_parts.append(f"r[{idx[0]}]")
            json_parts.append(f"r[{idx[0]}]")  # an int or None, printed by %s; None becomes null
        else:
            env[f"c{k}"], env[f"j{k}"] = c.convert, to_text
            conv_parts.append(f"c{k}({args})")
            json_parts.append(f"j{k}({args})")
        keys.append(json.dumps(c.name) + ":%s")
    env["TEMPLATE"] = "{" + ",".join(k.replace("%", "%%").replace("%%s", "%s") for k in keys) + "}"
    comma = "," if len(cols) == 1 else ""
    src = (f"def convert(r):\n    return ({', '.join(conv_parts)}{comma})\n"
           f"def to_json(r):\n    return (TEMPLATE % ({', '.join(json_parts)}{comma})).replace('None', 'null')\n")
    exec(compile(src, "<ctkit.conntrack.Layout>", "exec"), env)  # noqa: S102 - generated from the column table
    return env["convert"], env["to_json"]  # type: ignore[return-value]


def _null(value: object) -> str:
    """JSON text as to_json writes it: None is null (to_json's replace of None, done once per value)."""
    return "null" if value is None else "%s" % (value,)


class JsonFormat:
    """A `Decoder` finish factory: each entry as the object `Layout.of(columns).to_json` makes of it.

    Compiled once per shape into one %-template: a column whose raw fields the shape lacks, or
    holds as a key (family, protocol: the same in every entry of the shape), is written into
    the template as text; a present one is a hole filled from the raw value, through a `Memo`
    of its JSON text when it has a converter (addresses, states, status words, marks repeat).
    The generated function unpacks a shape's values into variables named after the raw fields.
    """

    keys = ("family", "proto")

    def __init__(self, columns: Iterable[str]) -> None:
        self.columns = tuple(column(n) for n in columns)
        self.raws = tuple(dict.fromkeys(["family", "proto"] + [r for c in self.columns for r in c.raws]))
        self.made: dict[tuple, Callable[[tuple], str]] = {}

    def __call__(self, fields: nl.ShapeFields) -> Callable[[tuple], str]:
        signature = (tuple(fields.at.items()), tuple(fields.keys.items()))
        out = self.made.get(signature)
        if out is None:
            out = self._compile(fields)
            if len(self.made) < nl.SHAPE_CACHE_MAX:
                self.made[signature] = out
        return out

    def _compile(self, fields: nl.ShapeFields) -> Callable[[tuple], str]:
        at, known = fields.at, fields.keys
        env: dict[str, object] = {}
        template, holes = [], []
        for k, c in enumerate(self.columns):
            to_text = _json_converter(c)
            key = json.dumps(c.name).replace("%", "%%") + ":"
            present = [r for r in c.raws if r in at and r not in known]
            fixed = [known.get(r) for r in c.raws]
            if not present:  # the same in every entry of the shape: text in the template
                template.append(key + _null(fixed[0] if to_text is None else to_text(*fixed)).replace("%", "%%"))
                continue
            template.append(key + "%s")
            if to_text is None:  # an int, printed by %s
                holes.append(c.raws[0])
            elif len(present) == 1:  # one raw value varies: its JSON text memoised, the others fixed
                slot = c.raws.index(present[0])
                env[f"j{k}"] = Memo(lambda raw, f=to_text, fixed=fixed, slot=slot:
                                    _null(f(*fixed[:slot], raw, *fixed[slot + 1:])))
                holes.append(f"j{k}[{present[0]}]")
            else:
                env[f"j{k}"] = lambda *raw, f=to_text: _null(f(*raw))
                args = ", ".join(r if r in present else repr(known.get(r)) for r in c.raws)
                holes.append(f"j{k}({args})")
        env["T"] = "{" + ",".join(template) + "}"
        # e.g. def to_json(v):
        #          src, dst, sport, ..., id, = v
        #          return T % (id, timeout, j6[src], j7[dst], sport, dport, ..., j20[status], j21[mark], use, )
        src = (f"def to_json(v):\n    {''.join(f'{raw}, ' for raw in at)}= v\n"
               f"    return T % ({''.join(f'{h}, ' for h in holes)})\n")
        exec(compile(src, "<ctkit.conntrack.JsonFormat>", "exec"), env)  # noqa: S102 - generated from the columns
        return env["to_json"]  # type: ignore[return-value]


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
