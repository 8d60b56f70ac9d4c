"""How long flipping a toggle takes on a policy of N rules, per backend.

    /tmp/tv/bin/python benchmarks/toggle.py [--rules 10000] [--repeat 20]

Builds a throwaway namespace, applies a generated policy of N filter rules
(different addresses and ports) plus one rule guarded by toggle `maintenance`,
then times `ctkit toggle` in-process (ctkit.kernel.*.set_toggle: the kernel
update alone, no CLI start-up) and as a command (`ctkit toggle`, with Python
and CLI start-up), for nft, iptables-nft and iptables-legacy. Prints medians
and maxima in milliseconds. Target: under 50 ms for the kernel update. The
namespace is removed on any exit.
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
    rules = [{"name": "maintenance", "when": "maintenance", "protocol": "tcp", "dport": [80, 443],
              "action": "reject", "reject_with": "tcp-reset"}]
    for i in range(n):
        rules.append({"name": f"r{i}", "protocol": "tcp" if i % 2 else "udp", "dport": 1024 + (i % 60000),
                      "saddr": f"10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}",
                      "action": "accept" if i % 3 else "drop"})
    return {"version": 1, "toggles": {"maintenance": False},
            "chains": {"input": {"policy": "accept", "rules": rules}}}


BACKENDS = {"nft": [], "iptables-nft": ["--backend", "iptables", "--iptables-variant", "nft"],
            "iptables-legacy": ["--backend", "iptables", "--iptables-variant", "legacy"]}


def ms(values: list[float]) -> str:
    return f"{statistics.median(values) * 1000:8.1f} {max(values) * 1000:8.1f}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rules", type=int, default=10000)
    ap.add_argument("--repeat", type=int, default=20)
    args = ap.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from ctkit.backends.iptables import kernel as ipt_kernel
    from ctkit.backends.nft import kernel as nft_kernel

    ns = f"ctkit-bench-{uuid.uuid4().hex[:6]}"
    ctkit = [sys.executable, "-m", "ctkit"]
    rows = []
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "toggle-bench.json"
            path.write_text(json.dumps(policy(args.rules)))
            for name, extra in BACKENDS.items():
                start = time.perf_counter()
                subprocess.run(ctkit + ["apply", str(path), "--netns", ns] + extra, check=True,
                               stdout=subprocess.DEVNULL)
                apply_s = time.perf_counter() - start
                inproc, cli = [], []
                for i in range(args.repeat):
                    on = i % 2 == 0
                    start = time.perf_counter()
                    if name == "nft":
                        nft_kernel.set_toggle("ctkit", "maintenance", on, ns)
                    else:
                        ipt_kernel.set_toggle("CTKIT-", "maintenance", on, ns, name.split("-", 1)[1])
                    inproc.append(time.perf_counter() - start)
                for i in range(max(3, args.repeat // 4)):
                    start = time.perf_counter()
                    subprocess.run(ctkit + ["toggle", "maintenance", "on" if i % 2 else "off", "--netns", ns]
                                   + extra, check=True, stdout=subprocess.DEVNULL)
                    cli.append(time.perf_counter() - start)
                rows.append((name, apply_s, inproc, cli))
                subprocess.run(ctkit + ["remove", "--netns", ns] + extra, check=True, stdout=subprocess.DEVNULL)
    finally:
        subprocess.run(["ip", "netns", "del", ns])
    print(f"toggle on a policy of {args.rules} rules + 1 toggled rule; ms (median, max)")
    print(f"{'backend':<16} {'apply s':>8} {'kernel update':>17} {'ctkit toggle (CLI)':>19}")
    for name, apply_s, inproc, cli in rows:
        print(f"{name:<16} {apply_s:>8.2f} {ms(inproc):>17} {ms(cli):>19}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
