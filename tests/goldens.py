"""Shared by the fast tests: example paths and golden-file comparison."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = sorted((ROOT / "examples").glob("*.json")) + sorted((ROOT / "examples").glob("*.yaml"))
UPDATE_GOLDEN = bool(os.environ.get("UPDATE_GOLDEN"))


def golden(path: Path, text: str) -> None:
    """Compare text with a golden file; UPDATE_GOLDEN=1 rewrites the file instead."""
    if UPDATE_GOLDEN or not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        if not UPDATE_GOLDEN:
            pytest.fail(f"golden file {path} was missing and has been written; review and commit it")
        return
    assert text == path.read_text(), f"output differs from {path} (UPDATE_GOLDEN=1 to accept)"
