"""Whole-process wall time of ctkit's quick commands beside the standard tool doing the same, in a
throwaway namespace (issue 12: each within 120 ms).

    sudo .venv/bin/python benchmarks/bench_startup.py [--repeat 15]

A namespace gets a small policy with a set `block` and a toggle `maint` (nft backend); then, medians of
--repeat: `ctkit set add|del` beside `nft add|delete element`, `ctkit toggle` beside `nft add element`
on the toggle's set, `ctkit ct count` beside `conntrack -C`, `ctkit ct stats` beside `conntrack -S`,
`ctkit sysctl show` beside `sysctl net.netfilter`, and `python -c pass` for the interpreter alone.
ctkit runs with its bytecode cached (bench_ct_dump.bytecode_env, after a warm-up run of each command),
as an installed ctkit does: under PYTHONDONTWRITEBYTECODE every start would compile it from source.
The namespace is removed on any exit.
"""
from __future__ import annotations

import argparse
import json
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_ct_dump import bytecode_env  # noqa: E402  (one way to time ctkit as installed)

POLICY = {"version": 1, "toggles": {"maint": False},
          "sets": {"block": {"type": "ipv4_addr", "elements": ["192.0.2.1"]}},
          "chains": {"input": {"policy": "accept", "rules": [
              {"name": "block", "saddr": "@block", "action": "drop"},
              {"name": "maint", "when": "maint", "protocol": "tcp", "dport": 80, "action": "drop"}]}}}


def timed(argv: list[str], env: dict[str, str] | None = None) -> float:
    start = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    return time.perf_counter() - start


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=15)
    args = ap.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    ns = f"ctkit-bench-{uuid.uuid4().hex[:6]}"
    ctkit = [sys.executable, "-m", "ctkit"]
    inns = ["ip", "netns", "exec", ns]
    rows = []
    subprocess.run(["ip", "netns", "add", ns], check=True)
    cache = tempfile.TemporaryDirectory(prefix="ctkit-pyc-")
    env = bytecode_env(cache.name)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "quick.json"
            path.write_text(json.dumps(POLICY))
            subprocess.run(ctkit + ["apply", str(path), "-n", ns], check=True, stdout=subprocess.DEVNULL)
        pairs = [
            ("set add / del", lambda i: ctkit + ["set", "add" if i % 2 == 0 else "del", "block", "198.51.100.7",
                                                 "-n", ns],
             lambda i: inns + ["nft", "add" if i % 2 == 0 else "delete", "element", "inet", "ctkit", "block",
                               "{ 198.51.100.8 }"]),
            ("toggle on / off", lambda i: ctkit + ["toggle", "maint", "on" if i % 2 == 0 else "off", "-n", ns],
             lambda i: inns + ["nft", "add" if i % 2 == 0 else "delete", "element", "inet", "ctkit", "block",
                               "{ 198.51.100.9 }"]),
            ("ct count", lambda i: ctkit + ["ct", "count", "-n", ns], lambda i: inns + ["conntrack", "-C"]),
            ("ct stats", lambda i: ctkit + ["ct", "stats", "-n", ns], lambda i: inns + ["conntrack", "-S"]),
            ("sysctl show", lambda i: ctkit + ["sysctl", "show", "-n", ns],
             lambda i: inns + ["sysctl", "net.netfilter"]),
            ("python -c pass", lambda i: [sys.executable, "-c", "pass"], lambda i: ["true"]),
        ]
        for name, mine, theirs in pairs:
            timed(mine(0), env), timed(mine(1), env)  # warm-up: the bytecode cache filled
            a = [timed(mine(i), env) for i in range(args.repeat)]
            b = [timed(theirs(i)) for i in range(args.repeat)]
            rows.append((name, statistics.median(a), statistics.median(b)))
    finally:
        subprocess.run(["ip", "netns", "del", ns], stderr=subprocess.DEVNULL)
        cache.cleanup()
    print(f"quick commands, whole-process wall ms, medians of {args.repeat} (target: ctkit within 120 ms)")
    print("| command          | ctkit ms | standard tool ms | ratio |")
    print("|------------------|---------:|-----------------:|------:|")
    for name, a, b in rows:
        print(f"| {name:<16} | {a * 1000:8.0f} | {b * 1000:16.0f} | {a / b:5.1f}x |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
