"""Progress on a real kernel: `ct list` of a namespace with 20,000 conntrack entries and an audit
that judges every tracked flow show their status line on stderr under a pty, and write nothing to
stderr without one; stdout is the same both ways, and a dump holds every entry the kernel has."""
from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path

from lab import run
from ptyrun import run_in_pty

ROOT = Path(__file__).resolve().parent.parent
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
ENTRIES = 20_000


def ctkit(*args: str, stderr_tty: bool) -> tuple[int, str, str]:
    env = dict(os.environ, CTKIT_PROGRESS_DELAY="0", TERM="xterm-256color")
    return run_in_pty([sys.executable, "-m", "ctkit", *args], env, ROOT, stderr_tty=stderr_tty, timeout=300)


def entries(listing: str) -> list[str]:
    """The lines of a dump without their timeout (it counts down between two dumps)."""
    return sorted(re.sub(r"^(\S+\s+\d+) \d+ ", r"\1 ", line) for line in listing.splitlines())


def fill(ns: str, tmp_path: Path) -> None:
    path = tmp_path / "entries"
    path.write_text("".join(f"-A -t 600 -u ASSURED -s 10.1.{i >> 8 & 255}.{i & 255} -d 10.255.0.1 -p udp "
                            f"--sport {1000 + i % 50000} --dport 53\n" for i in range(ENTRIES)))
    run(ns, "conntrack", "-R", str(path), check=False, timeout=120)
    assert int(run(ns, "conntrack", "-C").stdout) == ENTRIES


def test_ct_list_and_audit_show_progress_only_on_a_terminal(lab, tmp_path):
    ns = lab.netns("prog")
    fill(ns, tmp_path)
    code, out, err = ctkit("ct", "list", "-n", ns, stderr_tty=True)
    assert code == 0 and len(out.splitlines()) == ENTRIES
    assert f"conntrack entries: {ENTRIES}" in ANSI.sub("", err)
    code, plain, err = ctkit("ct", "list", "-n", ns, stderr_tty=False)
    assert code == 0 and err == "" and entries(plain) == entries(out)

    code, out, err = ctkit("ct", "summary", "-n", ns, "--by", "dport", stderr_tty=True)
    assert code == 0 and f"total {ENTRIES} entries" in out and "counting conntrack entries" in ANSI.sub("", err)

    policy = str(ROOT / "examples" / "dns-server.json")
    assert ctkit("apply", policy, "-n", ns, stderr_tty=False)[0] == 0
    code, out, err = ctkit("audit", policy, "-n", ns, "--json", stderr_tty=True)
    assert code in (0, 1) and "auditing: reading the kernel, judging every tracked flow" in ANSI.sub("", err)
    report = json.loads(out)
    assert report["conntrack"]["count"] == ENTRIES
    code, out, err = ctkit("audit", policy, "-n", ns, "--json", stderr_tty=False)
    assert code in (0, 1) and err == "" and json.loads(out)["conntrack"]["count"] == ENTRIES
