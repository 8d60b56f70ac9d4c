"""How long the audit's flow check takes on a big conntrack table, beside `ctkit ct summary` of the same table.

    sudo .venv/bin/python benchmarks/bench_audit_flows.py [--entries 200000] [--repeat 3]

Issue 12's target: with 200,000 entries the flow check costs at most 1.5x a `ctkit ct summary` (both
are one pass over the dump). In a throwaway namespace: examples/server-baseline.json applied (a host's
policy, every flow judged against it), the table filled with `conntrack -R` (bench_ct_dump.py's
entries), then in the same run, taking turns: `ctkit audit` with the flow check, `ctkit audit
--no-flows`, and `ctkit ct summary --by proto,state,dport`. The flow check's cost is the difference of
the two audits. Medians; the namespace is removed on any exit.
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench_ct_dump import ctkit_argv, load_table  # noqa: E402  (the same entries as the listing rows)

POLICY = HERE.parent / "examples" / "server-baseline.json"


def once(argv: list[str]) -> float:
    start = time.perf_counter()
    r = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, timeout=900)
    wall = time.perf_counter() - start
    if r.returncode not in (0, 1):
        raise SystemExit(f"{' '.join(argv)} failed ({r.returncode}): {r.stderr.strip()}")
    return wall


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--entries", type=int, default=200_000)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    ns = f"ctkbench-{uuid.uuid4().hex[:6]}"
    ctkit = ctkit_argv()
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        subprocess.run([*ctkit, "apply", str(POLICY), "--netns", ns], check=True, capture_output=True)
        load_table(ns, args.entries)
        rows = {"ctkit audit (with the flow check)": [*ctkit, "audit", str(POLICY), "--netns", ns, "--json"],
                "ctkit audit --no-flows": [*ctkit, "audit", str(POLICY), "--netns", ns, "--json", "--no-flows"],
                "ctkit ct summary --by proto,state,dport": ["ip", "netns", "exec", ns, *ctkit, "ct", "summary",
                                                            "--by", "proto,state,dport"]}
        times: dict[str, list[float]] = {k: [] for k in rows}
        for _ in range(args.repeat):
            for name, argv in rows.items():  # taking turns: a neighbour's load falls on all alike
                times[name].append(once(argv))
    finally:
        subprocess.run(["ip", "netns", "del", ns])
    med = {k: statistics.median(v) for k, v in times.items()}
    summary = med["ctkit ct summary --by proto,state,dport"]
    flows = med["ctkit audit (with the flow check)"] - med["ctkit audit --no-flows"]
    print(f"{args.entries} conntrack entries, policy {POLICY.name}; median of {args.repeat} runs")
    print(f"{'command':<44} {'wall s':>8} {'x ct summary':>12}")
    for name, s in med.items():
        print(f"{name:<44} {s:>8.3f} {s / summary:>12.2f}")
    print(f"{'the flow check (difference of the audits)':<44} {flows:>8.3f} {flows / summary:>12.2f}   target 1.5")
    return 0


if __name__ == "__main__":
    sys.exit(main())
