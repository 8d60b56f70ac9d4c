"""Paths a root tool writes to: only a regular file or a new name, never through a link."""
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
