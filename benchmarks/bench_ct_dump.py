"""Benchmark: ctkit's conntrack reader beside `conntrack -L` on big tables (root).

    sudo .venv/bin/python benchmarks/bench_ct_dump.py [--sizes 200000,1000000] [--runs 3]

For each size N it creates a throwaway namespace, loads N entries with
`conntrack -R` (mixed TCP/UDP, IPv4/IPv6, one in five marked, one-hour
timeouts) and times, on the same table, `conntrack -L`, `ctkit ct list
--json`, `ctkit ct summary --by proto,state,dport`, `ctkit ct count` and
`ctkit ct stats` (output to /dev/null), each run through `ip netns exec`
so both tools pay the same. Wall time is the median of --runs; peak RSS is
the child's ru_maxrss from wait4 (a forked reader counts too). It also
times the library calls in-process (conntrack.count(), .stats(),
.summary()), which is the cost without the CLI's Python start-up.

The table-full limit is checked against the host-wide nf_conntrack_max, so
for N above it the script raises nf_conntrack_max in the initial namespace
and restores it in a `finally`. The namespace is deleted in a `finally` too.
"""
from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

MAX_PATH = "/proc/sys/net/netfilter/nf_conntrack_max"


def entry_lines(n: int):
    """N distinct entries: 60% IPv4, 40% IPv6; TCP ESTABLISHED/ASSURED or UDP; every fifth marked."""
    for i in range(n):
        block, port = divmod(i, 60000)
        kind = i % 10
        if kind < 6:
            src, dst = f"10.{block >> 8 & 255}.{block & 255}.{i % 7 + 1}", "192.0.2.1"
        else:
            src, dst = f"2001:db8:{block:x}::{i % 7 + 1:x}", "2001:db8:ffff::1"
        if kind in (0, 1, 2, 6, 7):
            line = (f"-A -t 3600 -u SEEN_REPLY,ASSURED -s {src} -d {dst} -p tcp --sport {1024 + port} "
                    f"--dport {(80, 443, 22)[i % 3]} --state ESTABLISHED")
        else:
            line = f"-A -t 3600 -s {src} -d {dst} -p udp --sport {1024 + port} --dport {(53, 123)[i % 2]}"
        if i % 5 == 0:
            line += f" -m {i % 4 + 1}"
        yield line + "\n"


def run_measured(argv: list[str]) -> tuple[float, int, int]:
    """(wall seconds, peak RSS KiB, exit code) of one command with stdout to /dev/null."""
    with open(os.devnull, "w") as null:
        start = time.perf_counter()
        proc = subprocess.Popen(argv, stdout=null, stderr=subprocess.PIPE)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        err = proc.stderr.read().decode() if proc.stderr else ""
        if proc.stderr:
            proc.stderr.close()
    if proc.returncode not in (0,):
        raise SystemExit(f"{' '.join(argv)} failed ({proc.returncode}): {err.strip()}")
    return wall, usage.ru_maxrss, proc.returncode


def ctkit_argv() -> list[str]:
    exe = shutil.which("ctkit") or os.path.join(os.path.dirname(sys.executable), "ctkit")
    return [exe] if os.path.exists(exe) else [sys.executable, "-m", "ctkit.cli"]


def bench_size(n: int, runs: int) -> list[tuple[str, float, float, int]]:
    from ctkit.kernel import conntrack

    ns = f"ctkbench-{uuid.uuid4().hex[:6]}"
    with open(MAX_PATH) as f:
        old_max = int(f.read())
    raised = False
    rows = []
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        if n + 1000 > old_max:
            with open(MAX_PATH, "w") as f:
                f.write(f"{n + 1000}\n")
            raised = True
        with tempfile.NamedTemporaryFile("w", suffix=".ct", delete=True) as tmp:
            tmp.writelines(entry_lines(n))
            tmp.flush()
            t = time.perf_counter()
            subprocess.run(["ip", "netns", "exec", ns, "conntrack", "-R", tmp.name], check=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=600)
            print(f"  loaded {n} entries in {time.perf_counter() - t:.1f} s", file=sys.stderr)
        have = conntrack.count(ns).entries
        if have < n * 0.99:
            raise SystemExit(f"only {have} of {n} entries loaded")
        exec_ns = ["ip", "netns", "exec", ns]
        ck = ctkit_argv()
        commands = [
            ("conntrack -L", exec_ns + ["conntrack", "-L"]),
            ("ctkit ct list --json", exec_ns + ck + ["ct", "list", "--json"]),
            ("ctkit ct list (conntrack format)", exec_ns + ck + ["ct", "list"]),
            ("ctkit ct summary --by proto,state,dport", exec_ns + ck + ["ct", "summary", "--by", "proto,state,dport"]),
            ("ctkit ct count", exec_ns + ck + ["ct", "count"]),
            ("ctkit ct stats", exec_ns + ck + ["ct", "stats"]),
            ("conntrack -C", exec_ns + ["conntrack", "-C"]),
            ("ctkit --help (start-up only)", ck + ["--help"]),
        ]
        for label, argv in commands:
            walls, rss = [], 0
            for _ in range(runs):
                wall, peak, _ = run_measured(argv)
                walls.append(wall)
                rss = max(rss, peak)
            rows.append((label, statistics.median(walls), 0.0, rss))
            print(f"  {label}: {statistics.median(walls):.3f} s", file=sys.stderr)
        for label, call in (("lib conntrack.count()", lambda: conntrack.count(ns)),
                            ("lib conntrack.stats()", lambda: conntrack.stats(ns)),
                            ("lib conntrack.summary(proto,state,dport)",
                             lambda: conntrack.summary(ns, ("proto", "state", "dport")))):
            walls = []
            for _ in range(runs):
                t = time.perf_counter()
                call()
                walls.append(time.perf_counter() - t)
            rows.append((label, statistics.median(walls), 0.0, 0))
        base = rows[0][1]
        return [(label, wall, wall / base, rss) for label, wall, _, rss in rows]
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=False)
        if raised:
            with open(MAX_PATH, "w") as f:
                f.write(f"{old_max}\n")


def machine() -> str:
    cpu = "unknown cpu"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return (f"{cpu}, {os.cpu_count()} CPUs, {mem:.0f} GiB RAM, Linux {platform.release()}, "
            f"Python {platform.python_version()}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="200000,1000000")
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root (it creates a network namespace)")
    print(f"machine: {machine()}")
    for n in (int(s) for s in args.sizes.split(",")):
        print(f"\nN = {n:,} entries (median of {args.runs} runs)", flush=True)
        rows = bench_size(n, args.runs)
        print(f"| {'command':<42} | {'wall s':>7} | {'x conntrack -L':>14} | {'peak RSS MB':>11} |")
        print(f"|{'-' * 44}|{'-' * 9}|{'-' * 16}|{'-' * 13}|")
        for label, wall, ratio, rss in rows:
            rss_text = f"{rss / 1024:.0f}" if rss else "-"
            print(f"| {label:<42} | {wall:>7.3f} | {ratio:>14.2f} | {rss_text:>11} |", flush=True)


if __name__ == "__main__":
    main()
