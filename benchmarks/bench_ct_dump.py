"""Benchmark: ctkit's conntrack reader beside `conntrack -L` on big tables (root).

    sudo .venv/bin/python benchmarks/bench_ct_dump.py                      # 200,000 entries, 5 runs
    sudo .venv/bin/python benchmarks/bench_ct_dump.py --million            # and 1,000,000 (3 runs)
    sudo .venv/bin/python benchmarks/bench_ct_dump.py --sizes 50000 --runs 7

For each size N it creates a throwaway namespace, loads N entries with
`conntrack -R` (mixed TCP/UDP, IPv4/IPv6, one in five marked, one-hour
timeouts) and times, on the same table, `conntrack -L`, `ctkit ct list`
(conntrack's format), `ctkit ct list --json`, `ctkit ct summary --by
proto,state,dport`, `ctkit ct count` and `ctkit ct stats` (output to
/dev/null), each run through `ip netns exec` so both tools pay the same.
The commands take turns (run 1 of each, then run 2 of each...), so a
neighbour's load falls on all of them alike, after one warm-up (Python's
bytecode cached in a temporary directory, as an installed ctkit has it).
Wall time is the median of the runs (default 5, 3 at 1M and above), the
ratio is against `conntrack -L`'s median of the same run; CPU is user +
system time (a forked reader counts too), which a neighbour's load hardly
moves; peak RSS is the largest (GNU time's, see run_measured). It also
times the library calls in-process (conntrack.count(), .stats(),
.summary()): the cost without the CLI's Python start-up. The listing rows
carry issue 12's targets.

The table-full limit is checked against the host-wide nf_conntrack_max, so
for N above it the script raises nf_conntrack_max in the initial namespace
and restores the old value in a `finally` (SIGTERM and SIGHUP end the script
through it too); the namespace is deleted in a `finally` as well.
"""
from __future__ import annotations

import argparse
import os
import platform
import shutil
import signal
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


GNU_TIME = "/usr/bin/time"


def run_measured(argv: list[str], env: dict[str, str] | None = None) -> tuple[float, int, float]:
    """(wall seconds, peak RSS KiB, CPU seconds) of one command with stdout to /dev/null.

    CPU is user + system time of the command and the processes it waited for (ctkit's reader),
    from wait4: unlike wall time it hardly moves when a neighbour loads the machine, and it is
    what a single-process tool and ctkit's two processes compete for when no CPU is free.

    The peak RSS comes from GNU time (Debian package `time`) when it is there: a process started
    by this one (fork or vfork, then exec) inherits this Python's high-water mark in its
    ru_maxrss, which made `conntrack -L` look like 19 MB instead of 2 MB. GNU time is small, so
    what it reports is the command's own (with its waited-for children: ctkit's reader process).
    Without it, wait4's figure is printed, and it includes this process's size.
    """
    timed = os.access(GNU_TIME, os.X_OK)
    with open(os.devnull, "w") as null, tempfile.NamedTemporaryFile("r", suffix=".time") as report:
        full = [GNU_TIME, "-f", "%M", "-o", report.name] + argv if timed else argv
        start = time.perf_counter()
        proc = subprocess.Popen(full, stdout=null, stderr=subprocess.PIPE, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        err = proc.stderr.read().decode() if proc.stderr else ""
        if proc.stderr:
            proc.stderr.close()
        peak = usage.ru_maxrss
        if timed and proc.returncode == 0:
            peak = int(report.read().split()[-1])
    if proc.returncode not in (0,):
        raise SystemExit(f"{' '.join(argv)} failed ({proc.returncode}): {err.strip()}")
    return wall, peak, usage.ru_utime + usage.ru_stime


def ctkit_argv() -> list[str]:
    exe = shutil.which("ctkit") or os.path.join(os.path.dirname(sys.executable), "ctkit")
    return [exe] if os.path.exists(exe) else [sys.executable, "-m", "ctkit.cli"]


# the commands of one size: (label, arguments after `ip netns exec NS`, issue 12's target ratio)
COMMANDS = [
    ("conntrack -L", ["conntrack", "-L"], None),
    ("ctkit ct list (conntrack format)", ["@ctkit", "ct", "list"], 1.0),
    ("ctkit ct list --json", ["@ctkit", "ct", "list", "--json"], 1.3),
    ("ctkit ct summary --by proto,state,dport", ["@ctkit", "ct", "summary", "--by", "proto,state,dport"], 0.5),
    ("ctkit ct count", ["@ctkit", "ct", "count"], None),
    ("ctkit ct stats", ["@ctkit", "ct", "stats"], None),
    ("conntrack -C", ["conntrack", "-C"], None),
]


def load_table(ns: str, n: int) -> None:
    with tempfile.NamedTemporaryFile("w", suffix=".ct", delete=True) as tmp:
        tmp.writelines(entry_lines(n))
        tmp.flush()
        t = time.perf_counter()
        subprocess.run(["ip", "netns", "exec", ns, "conntrack", "-R", tmp.name], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=900)
        print(f"  loaded {n} entries in {time.perf_counter() - t:.1f} s", file=sys.stderr)


def bytecode_env(cache: str) -> dict[str, str]:
    """The environment for the timed commands: Python's bytecode cached in `cache` (a temporary directory).

    An installed ctkit runs from .pyc files; under PYTHONDONTWRITEBYTECODE (set in some shells and CI)
    every start compiles ctkit from source, ~30 ms that no user pays. The cache stays out of the tree."""
    env = dict(os.environ, PYTHONPYCACHEPREFIX=cache)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def bench_size(n: int, runs: int) -> list[tuple[str, float, float, float, float, int, float | None]]:
    """(label, median wall s, x conntrack -L, median CPU s, CPU x conntrack -L, peak RSS KiB, target) per
    command, on one table of n entries."""
    from ctkit.kernel import conntrack

    ns = f"ctkbench-{uuid.uuid4().hex[:6]}"
    with open(MAX_PATH) as f:
        old_max = int(f.read())
    raised = False
    pycache = ""
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        if n + 1000 > old_max:
            with open(MAX_PATH, "w") as f:
                f.write(f"{n + 1000}\n")
            raised = True
            print(f"  nf_conntrack_max {old_max} -> {n + 1000} (restored at the end)", file=sys.stderr)
        load_table(ns, n)
        have = conntrack.count(ns).entries
        if have < n * 0.99:
            raise SystemExit(f"only {have} of {n} entries loaded")
        ck = ctkit_argv()
        argvs = [["ip", "netns", "exec", ns] + (ck + argv[1:] if argv[0] == "@ctkit" else argv)
                 for _, argv, _ in COMMANDS] + [ck + ["--help"]]
        labels = [label for label, _, _ in COMMANDS] + ["ctkit --help (start-up only)"]
        targets = [target for _, _, target in COMMANDS] + [None]
        walls: list[list[float]] = [[] for _ in argvs]
        cpus: list[list[float]] = [[] for _ in argvs]
        peaks = [0] * len(argvs)
        pycache = tempfile.mkdtemp(prefix="ctkbench-pyc-")
        env = bytecode_env(pycache)
        for warm in (argvs[-1], argvs[labels.index("ctkit ct count")]):  # write the bytecode cache
            run_measured(warm, env)
        for run in range(runs):  # round robin: each command once per round
            for i, argv in enumerate(argvs):
                wall, peak, cpu = run_measured(argv, env)
                walls[i].append(wall)
                cpus[i].append(cpu)
                peaks[i] = max(peaks[i], peak)
            print(f"  round {run + 1}/{runs}: conntrack -L {walls[0][-1]:.3f} s, ct list {walls[1][-1]:.3f} s, "
                  f"--json {walls[2][-1]:.3f} s, summary {walls[3][-1]:.3f} s", file=sys.stderr)
        rows = [(label, statistics.median(w), statistics.median(c), peak, target)
                for label, w, c, peak, target in zip(labels, walls, cpus, peaks, targets, strict=True)]
        for label, call in (("lib conntrack.count()", lambda: conntrack.count(ns)),
                            ("lib conntrack.stats()", lambda: conntrack.stats(ns)),
                            ("lib conntrack.summary(proto,state,dport)",
                             lambda: conntrack.summary(ns, ("proto", "state", "dport")))):
            lib = []
            for _ in range(runs):
                t = time.perf_counter()
                call()
                lib.append(time.perf_counter() - t)
            rows.append((label, statistics.median(lib), 0.0, 0, None))
        base, base_cpu = rows[0][1], rows[0][2]
        return [(label, wall, wall / base, cpu, cpu / base_cpu, rss, target) for label, wall, cpu, rss, target in rows]
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=False)
        if pycache:
            shutil.rmtree(pycache, ignore_errors=True)
        if raised:
            with open(MAX_PATH, "w") as f:
                f.write(f"{old_max}\n")
            print(f"  nf_conntrack_max restored to {old_max}", file=sys.stderr)


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


def _terminated(signum: int, _frame: object) -> None:
    raise SystemExit(f"stopped by signal {signum}")  # unwinds through bench_size's finally


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="200000", help="comma-separated table sizes (default 200000)")
    ap.add_argument("--million", action="store_true", help="also 1,000,000 entries (raises nf_conntrack_max "
                    "host-wide for the run, restored afterwards)")
    ap.add_argument("--runs", type=int, default=None, help="runs per command (default 5, 3 from 1M entries)")
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root (it creates a network namespace)")
    signal.signal(signal.SIGTERM, _terminated)
    signal.signal(signal.SIGHUP, _terminated)
    sizes = [int(s) for s in args.sizes.split(",")] + ([1_000_000] if args.million else [])
    print(f"machine: {machine()}")
    for n in sizes:
        runs = args.runs or (3 if n >= 1_000_000 else 5)
        print(f"\nN = {n:,} entries (median of {runs} runs)", flush=True)
        rows = bench_size(n, runs)
        print(f"load average {os.getloadavg()[0]:.2f} after the runs (other processes share the CPUs)")
        print(f"| {'command':<42} | {'wall s':>7} | {'x conntrack -L':>14} | {'target':>6} | {'cpu s':>6} | "
              f"{'cpu x':>5} | {'peak RSS MB':>11} |")
        print(f"|{'-' * 44}|{'-' * 8}:|{'-' * 15}:|{'-' * 7}:|{'-' * 7}:|{'-' * 6}:|{'-' * 12}:|")
        for label, wall, ratio, cpu, cpu_ratio, rss, target in rows:
            rss_text = f"{rss / 1024:.0f}" if rss else "-"
            target_text = f"{target:.1f}x" if target else ""
            cpu_text, cpu_x = (f"{cpu:.3f}", f"{cpu_ratio:.2f}") if cpu else ("-", "-")
            print(f"| {label:<42} | {wall:>7.3f} | {ratio:>14.2f} | {target_text:>6} | {cpu_text:>6} | {cpu_x:>5} | "
                  f"{rss_text:>11} |", flush=True)


if __name__ == "__main__":
    main()
