"""Text made safe to print as one terminal line, and short excerpts of values of any size.

Rule text and names come back from the kernel as the kernel holds them; a rule
comment written by another tool may carry control characters or bytes that are
not UTF-8. Everything ctkit prints from the kernel goes through `printable`.
A message about a value a user gave (a policy file may hold a list of 100,000
addresses or a string of a megabyte) shows `excerpt(value)`, never the value.
"""
from __future__ import annotations

import reprlib

#: the most characters of a value a message shows
EXCERPT = 80


def printable(text: str) -> str:
    """Control characters and bytes that are not UTF-8 escaped; printable text unchanged."""
    raw = text.encode("utf-8", errors="surrogateescape").decode("utf-8", errors="backslashreplace")
    return "".join(c if c.isprintable() or c == " " else c.encode("unicode_escape").decode("ascii")
                   for c in raw)


class _Short(reprlib.Repr):
    """reprlib's bounded repr: it looks at only the first few items of a list or mapping and the ends
    of a long string, so an excerpt costs the same for a value of ten items or of ten million."""

    def __init__(self) -> None:
        super().__init__()
        self.maxlevel, self.maxlist, self.maxtuple, self.maxdict, self.maxset = 3, 4, 4, 3, 4
        self.maxstring, self.maxother, self.maxlong = EXCERPT, EXCERPT, 40

    def repr_str(self, x: str, level: int) -> str:
        # the same bound for strings inside a list: each shows its start and its end
        return super().repr_str(x, level) if level == self.maxlevel or len(x) <= 20 else \
            reprlib.Repr.repr_str(_INNER, x, level)


_INNER = reprlib.Repr()
_INNER.maxstring = 20
_SHORT = _Short()


def _size(value: object) -> str | None:
    if isinstance(value, str) and len(value) > EXCERPT - 2:
        return f"{len(value)} characters"
    if isinstance(value, (list, tuple)) and len(value) > _SHORT.maxlist:
        return f"{len(value)} items"
    if isinstance(value, dict) and len(value) > _SHORT.maxdict:
        return f"{len(value)} keys"
    return None


def excerpt(value: object) -> str:
    """A short, printable repr of `value` (at most about EXCERPT characters), with its size when
    it was cut: "'xxxxxx...xxx' (1000000 characters)", "['10.0.0.1', '10.0.0.2', ...] (100000 items)"."""
    text = _SHORT.repr(value)
    if len(text) > EXCERPT:  # nested values can add up: cut what reprlib left
        text = text[:EXCERPT - 3] + "..."
    size = _size(value)
    return f"{text} ({size})" if size else text


def clip(text: str, limit: int = 400) -> str:
    """Text of at most about `limit` characters: longer text keeps its start and says how long it was."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text)} characters)"


#: a suggestion is offered when the typed word is at most one edit (insert, delete, change, or swap of
#: two neighbours) per this many of its characters from a known word: 'nf_conntrack_tcp_loos' (1 edit
#: in 21) gets 'nf_conntrack_tcp_loose', 'dprot' (1 swap) 'dport'; 'action' (4 edits from 'direction')
#: gets none
CHARS_PER_EDIT = 3
#: the most characters of a word compared (a key of a megabyte costs no more than one of 40)
SUGGEST_CHARS = 40


def edits(a: str, b: str) -> int:
    """Edits (insertions, deletions, substitutions, transpositions of neighbours) from a to b."""
    prev2: list[int] = []
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        row = [i] + [0] * len(b)
        for j, cb in enumerate(b, 1):
            row[j] = min(prev[j] + 1, row[j - 1] + 1, prev[j - 1] + (ca != cb))
            if i > 1 and j > 1 and ca == b[j - 2] and a[i - 2] == cb:
                row[j] = min(row[j], prev2[j - 2] + 1)
        prev2, prev = prev, row
    return prev[-1]


def suggest(word: object, known) -> str | None:
    """The known word closest to `word` when it is close enough (CHARS_PER_EDIT), else None: the one
    rule for every did-you-mean ctkit prints."""
    typed = str(word)[:SUGGEST_CHARS]
    limit = max(1, len(typed) // CHARS_PER_EDIT)
    best: tuple[int, str] | None = None
    for candidate in known:
        text = str(candidate)
        if text == typed or abs(len(text) - len(typed)) > limit:
            continue
        distance = edits(typed, text[:SUGGEST_CHARS + limit])
        if distance <= limit and (best is None or (distance, text) < best):
            best = (distance, text)
    return None if best is None else best[1]
