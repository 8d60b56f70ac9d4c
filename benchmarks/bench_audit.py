"""How long `ctkit audit` takes on a policy of N rules, beside `nft -j list ruleset` on the same table.

    .venv/bin/python benchmarks/bench_audit.py [--rules 10000] [--repeat 5]

Builds a throwaway namespace, applies a generated policy with N filter rules
(ports and prefixes varied so rules differ), then times, in the same run:
`nft -j list ruleset` (the kernel read alone), `ctkit audit --json` (read,
canonicalise, compare, health), and `ctkit apply` for reference. Prints a
table of median wall times and the ratio audit / nft list. Removes the
namespace on any exit.

ctkit runs as installed (bytecode cached, bench_ct_dump.bytecode_env) with a cache directory of its
own. The audit is timed three ways: cold (CTKIT_NO_CACHE=1: the policy loaded, linted and lowered),
warm (the compiled policy read back from ctkit/compiled_cache.py) and warm after another tool's
commit in the namespace (a table added with nft: the generation id moved, so ctkit's table is listed
and compared in full instead of trusted from ctkit's own last commit, backends/nft/written.py).
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

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_ct_dump import bytecode_env  # noqa: E402  (ctkit timed as installed)


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


def timed(argv: list[str], repeat: int, env: dict[str, str] | None = None) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        r = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
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
        private = Path(tmp) / "xdg"
        private.mkdir(mode=0o700)
        env = dict(bytecode_env(str(Path(tmp) / "pycache")), XDG_CACHE_HOME=str(private))
        cold_env = dict(env, CTKIT_NO_CACHE="1")
        audit = [*ctkit, "audit", str(path), "--netns", ns, "--json"]
        subprocess.run(["ip", "netns", "add", ns], check=True)
        try:
            apply_s = timed([*ctkit, "apply", str(path), "--netns", ns], 1, env)  # also fills the cache
            nft_s = timed(["ip", "netns", "exec", ns, "nft", "-j", "list", "ruleset"], args.repeat)
            cold_s = timed(audit, args.repeat, cold_env)
            warm_s = timed(audit, args.repeat, env)
            out = subprocess.run(audit, capture_output=True, text=True, env=env)
            drift = len(json.loads(out.stdout)["drift"])
            subprocess.run(["ip", "netns", "exec", ns, "nft", "add", "table", "ip", "bench_other"], check=True)
            nft_other_s = timed(["ip", "netns", "exec", ns, "nft", "-j", "list", "ruleset"], args.repeat)
            other_s = timed(audit, args.repeat, env)
            phases = subprocess.run([sys.executable, "-c", PHASES, str(path), ns], capture_output=True,
                                    text=True, check=True, env=cold_env).stdout
        finally:
            subprocess.run(["ip", "netns", "del", ns])
    print(f"policy: {args.rules} rules in chain input; median of {args.repeat} runs; drift found: {drift}")
    print(f"{'command':<52} {'wall s':>8} {'x nft list':>10}")
    for name, s, base in (("nft -j list ruleset", nft_s, nft_s),
                          ("ctkit audit --json, cold (policy compiled)", cold_s, nft_s),
                          ("ctkit audit --json, warm (compiled policy kept)", warm_s, nft_s),
                          ("ctkit audit --json, warm, after another commit", other_s, nft_other_s),
                          ("ctkit apply (once, reference)", apply_s, nft_s)):
        print(f"{name:<52} {s:>8.3f} {s / base:>10.2f}")
    print("where ctkit audit spends its time (in-process, one run):")
    print(phases, end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
