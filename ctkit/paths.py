"""Paths a root tool writes to (only a regular file or a new name, never through a link) and files it reads
(only a regular file, of a bounded size)."""
from __future__ import annotations

import os
import stat
from pathlib import Path

from ctkit.errors import UsageError


def check_writable_target(path: Path, label: str, writer: str) -> None:
    """Refuse a path that exists and is not a regular file: a symlink (a root tool must not replace what
    it points at, nor the link), a FIFO, a device, a directory, a socket. `label` names the path in the
    message (`--textfile out.prom`), `writer` names who refuses (`ctkit`, `ctkit export`)."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    except OSError as exc:
        raise UsageError(f"cannot use {label}: {exc.strerror}") from None
    if not stat.S_ISREG(mode):
        kind = ("a symlink" if stat.S_ISLNK(mode) else "a FIFO" if stat.S_ISFIFO(mode) else
                "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else
                "a directory" if stat.S_ISDIR(mode) else "a socket" if stat.S_ISSOCK(mode) else "not a file")
        raise UsageError(f"{label} is {kind}: {writer} writes only a regular file or a new path")


def _kind(mode: int) -> str:
    return ("a FIFO" if stat.S_ISFIFO(mode) else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else
            "a directory" if stat.S_ISDIR(mode) else "a socket" if stat.S_ISSOCK(mode) else "not a regular file")


def too_big(size: int, limit: int) -> str:
    return f"{size} bytes; ctkit reads at most {limit} ({limit >> 20} MiB)"


class Unreadable(UsageError):
    """A file ctkit refuses to read: `reason` says why, without the path (the caller names it)."""

    def __init__(self, path: Path, reason: str):
        self.path, self.reason = path, reason
        super().__init__(f"{path}: {reason}")


def read_regular(path: Path, limit: int) -> bytes:
    """The bytes of a regular file of at most `limit` bytes, or Unreadable.

    A FIFO would block the reader forever and a device (/dev/zero) never ends, so the path is
    checked to be a regular file before it is opened, opened without blocking, and checked again
    on the descriptor (it may have been swapped in between); at most limit + 1 bytes are read,
    whatever the size the file claims (files under /proc claim 0)."""
    try:
        mode = os.stat(path).st_mode
        if not stat.S_ISREG(mode):
            raise Unreadable(path, f"{_kind(mode)}, not a regular file")
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError as exc:
        raise Unreadable(path, f"cannot read file: {exc.strerror}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise Unreadable(path, f"{_kind(info.st_mode)}, not a regular file")
        if info.st_size > limit:
            raise Unreadable(path, too_big(info.st_size, limit))
        chunks, size = [], 0
        while size <= limit:
            chunk = os.read(fd, min(1 << 20, limit + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        if size > limit:
            raise Unreadable(path, f"more than {limit} bytes; ctkit reads at most {limit} ({limit >> 20} MiB)")
        return b"".join(chunks)
    except OSError as exc:
        raise Unreadable(path, f"cannot read file: {exc.strerror}") from None
    finally:
        os.close(fd)
