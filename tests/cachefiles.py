"""The ways a file in ctkit's cache directory (ctkit/cache.py) can be one that ctkit must not trust or
cannot read: both caches (compiled validators, compiled policies) are tested against each."""
from __future__ import annotations

import os
from pathlib import Path

SPOILS = ("group-writable file", "group-writable directory", "symlink", "damaged")


def spoil(kept: Path, directory: Path, how: str, damaged: bytes) -> None:
    """Make `kept` (a file in `directory`) one of SPOILS; `damaged`: the bytes a damaged file holds."""
    if how == "group-writable file":
        kept.chmod(0o620)
    elif how == "group-writable directory":
        directory.chmod(0o770)
    elif how == "symlink":
        other = directory.parent / "other"
        os.replace(kept, other)
        kept.symlink_to(other)
    elif how == "damaged":
        kept.write_bytes(damaged)
    else:
        raise ValueError(how)
