"""Text read from the kernel, made safe to print as one terminal line.

Rule text and names come back from the kernel as the kernel holds them; a rule
comment written by another tool may carry control characters or bytes that are
not UTF-8. Everything ctkit prints from the kernel goes through `printable`.
"""
from __future__ import annotations


def printable(text: str) -> str:
    """Control characters and bytes that are not UTF-8 escaped; printable text unchanged."""
    raw = text.encode("utf-8", errors="surrogateescape").decode("utf-8", errors="backslashreplace")
    return "".join(c if c.isprintable() or c == " " else c.encode("unicode_escape").decode("ascii")
                   for c in raw)
