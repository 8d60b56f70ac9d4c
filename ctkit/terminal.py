"""Text made safe to print as one terminal line, and short excerpts of values of any size.

Rule text and names come back from the kernel as the kernel holds them; a rule
comment written by another tool may carry control characters or bytes that are
not UTF-8. Everything ctkit prints from the kernel goes through `printable`.
A message about a value a user gave (a policy file may hold a list of 100,000
addresses or a string of a megabyte) shows `excerpt(value)`, never the value.
`suggest` is the one did-you-mean rule; `activity` the status line of a long operation.
"""
from __future__ import annotations

import os
import reprlib
import sys
import threading
import time
from typing import Iterable, Iterator, TypeVar

T = TypeVar("T")

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


# ------------------------------------------------------------------ progress

#: seconds a long operation runs before its status line appears, so that a quick one prints nothing
#: (CTKIT_PROGRESS_DELAY overrides it; 0 shows the line at once)
PROGRESS_DELAY = 0.5
#: a counted stream updates its line every this many items
PROGRESS_EVERY = 4096


def _progress_delay() -> float:
    try:
        return max(0.0, float(os.environ.get("CTKIT_PROGRESS_DELAY", PROGRESS_DELAY)))
    except ValueError:
        return PROGRESS_DELAY


def progress_shown(streaming: bool = False) -> bool:
    """A status line goes to stderr only when stderr is a terminal (never into a log or a pipe). A
    `streaming` command writes its result while it runs: on a terminal stdout shows that itself, so the
    line is shown only when stdout goes elsewhere (`ctkit ct list > dump.txt`)."""
    if os.environ.get("TERM") == "dumb" or not _isatty(sys.stderr):
        return False
    return not (streaming and _isatty(sys.stdout))


def _isatty(stream) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


class _Line:
    """The status line: a spinner, the label, the seconds so far (rendered afresh at each refresh)."""

    def __init__(self, label: str) -> None:
        from rich.spinner import Spinner
        self.label, self.started, self.spinner = label, time.monotonic(), Spinner("dots")

    def __rich__(self):
        self.spinner.update(text=f"{self.label} ({int(time.monotonic() - self.started)} s)")
        return self.spinner


class Activity:
    """A status line on stderr while a long operation runs, when progress_shown() says so; otherwise
    nothing at all. Use as a context manager; `update(label)` changes what it says."""

    def __init__(self, label: str, shown: bool, delay: float) -> None:
        self.label, self.shown, self._delay = label, shown, delay
        self._lock = threading.Lock()
        self._live = self._timer = self._line = None
        self._closed = False

    def update(self, label: str) -> None:
        self.label = label
        if self._line is not None:
            self._line.label = label

    def _start(self) -> None:
        from rich.console import Console
        from rich.live import Live
        with self._lock:
            if self._closed:
                return
            self._line = _Line(self.label)
            self._live = Live(self._line, console=Console(stderr=True), transient=True, refresh_per_second=8,
                              redirect_stdout=False, redirect_stderr=True)
            self._live.start(refresh=True)

    def __enter__(self) -> Activity:
        if self.shown:
            if self._delay <= 0:
                self._start()
            else:
                self._timer = threading.Timer(self._delay, self._start)
                self._timer.daemon = True
                self._timer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._timer is not None:
            self._timer.cancel()
        with self._lock:
            self._closed = True
            if self._live is not None:
                self._live.stop()


def activity(label: str, streaming: bool = False) -> Activity:
    """The status line of one long operation (see progress_shown for when it shows)."""
    return Activity(label, progress_shown(streaming), _progress_delay())


def counted(items: Iterable[T], act: Activity, what: str) -> Iterable[T]:
    """`items` as they are, the line saying how many went by ("conntrack entries: 8192") when it shows;
    when it does not, `items` itself: a dump that nobody watches pays nothing."""
    if not act.shown:
        return items

    def counting() -> Iterator[T]:
        n = 0
        for item in items:
            n += 1
            if not n % PROGRESS_EVERY:
                act.update(f"{what}: {n}")
            yield item
        act.update(f"{what}: {n}")
    return counting()
