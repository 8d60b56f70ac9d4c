"""The README's Python API example, run as written in a throwaway namespace, then checked in the kernel."""
from __future__ import annotations

import json
import os
import re
from pathlib import Path

from lab import run

ROOT = Path(__file__).resolve().parent.parent


def test_the_readme_example_runs_and_leaves_nothing(lab, capsys):
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    example = next(b for b in blocks if "service.apply" in b)
    ns = lab.netns("api")
    code = example.replace('netns="lab"', f'netns="{ns}"')
    assert code.count(ns) >= 6  # every call runs in the lab namespace, none in the host's
    cwd = os.getcwd()
    try:
        os.chdir(ROOT)
        exec(compile(code, "README.md", "exec"), {})
    finally:
        os.chdir(cwd)
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("table inet ctkit, 1 chains, ") and "'maintenance': (False, False)" in out[0]
    assert out[1] == "0 ['toggles.switched']"
    listing = json.loads(run(ns, "nft", "-j", "list", "ruleset").stdout)["nftables"]
    assert [i for i in listing if "table" in i] == []  # service.remove took ctkit's table away
