"""How long `ctkit audit` takes on a policy of N rules, beside `nft -j list ruleset` on the same table.

    .venv/bin/python benchmarks/bench_audit.py [--rules 10000] [--repeat 5]

Builds a throwaway namespace, applies a generated policy with N filter rules
(ports and prefixes varied so rules differ), then times, in the same run:
`nft -j list ruleset` (the kernel read alone), `ctkit audit --json` (read,
canonicalise, compare, health), and `ctkit apply` for reference. Prints a
table of median wall times and the ratio audit / nft list. Removes the
namespace on any exit.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path


def policy(n: int) -> dict:
    rules = []
    for i in range(n):
        rules.append({
            "name": f"r{i}",
            "protocol": "tcp" if i % 2 else "udp",
            "dport": 1024 + (i % 60000),
            "saddr": f"10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}",
            "action": "accept" if i % 3 else "drop",
        })
    return {"version": 1, "chains": {"input": {"policy": "accept", "rules": rules}}}


PHASES = """
import sys, time
t0 = time.perf_counter()
from ctkit import pipeline
from ctkit.audit import run
from ctkit.audit.drift import compare
from ctkit.backends.nft.view import view
from ctkit.backends.nft import generate as nft
from ctkit.backends.nft import kernel as kernel
t1 = time.perf_counter(); c = pipeline.compile_file(sys.argv[1])
t2 = time.perf_counter(); doc = nft.generate(c.plan)
t3 = time.perf_counter(); live = kernel.list_ruleset(sys.argv[2])
t4 = time.perf_counter(); ids = {r.id for ch in c.plan.table.chains for r in ch.rules}
want, have = view(doc["nftables"], ids), view(live, ids)
t5 = time.perf_counter(); compare(want, have)
t6 = time.perf_counter(); run.read_figures(sys.argv[2])
t7 = time.perf_counter()
for name, a, b in (("imports", t0, t1), ("load + lint + lower", t1, t2), ("nft backend", t2, t3),
                   ("read ruleset (libnftables)", t3, t4), ("canonical views", t4, t5), ("compare", t5, t6),
                   ("conntrack figures", t6, t7)):
    print(f"  {name:<38} {b - a:>8.3f}")
"""


def timed(argv: list[str], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        r = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        times.append(time.perf_counter() - start)
        if r.returncode not in (0, 1):
            raise SystemExit(f"{' '.join(argv)} failed: {r.stderr}")
    return statistics.median(times)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rules", type=int, default=10000)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    ns = f"ctkit-bench-{uuid.uuid4().hex[:6]}"
    ctkit = [sys.executable, "-m", "ctkit"]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "policy.json"
        path.write_text(json.dumps(policy(args.rules)))
        subprocess.run(["ip", "netns", "add", ns], check=True)
        try:
            apply_s = timed([*ctkit, "apply", str(path), "--netns", ns], 1)
            nft_s = timed(["ip", "netns", "exec", ns, "nft", "-j", "list", "ruleset"], args.repeat)
            audit_s = timed([*ctkit, "audit", str(path), "--netns", ns, "--json"], args.repeat)
            out = subprocess.run([*ctkit, "audit", str(path), "--netns", ns, "--json"], capture_output=True,
                                 text=True)
            drift = len(json.loads(out.stdout)["drift"])
            phases = subprocess.run([sys.executable, "-c", PHASES, str(path), ns], capture_output=True,
                                    text=True, check=True).stdout
        finally:
            subprocess.run(["ip", "netns", "del", ns])
    print(f"policy: {args.rules} rules in chain input; median of {args.repeat} runs; drift found: {drift}")
    print(f"{'command':<40} {'wall s':>8} {'x nft list':>10}")
    for name, s in (("nft -j list ruleset", nft_s), ("ctkit audit --json", audit_s),
                    ("ctkit apply (once, reference)", apply_s)):
        print(f"{name:<40} {s:>8.3f} {s / nft_s:>10.2f}")
    print("where ctkit audit spends its time (in-process, one run):")
    print(phases, end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
