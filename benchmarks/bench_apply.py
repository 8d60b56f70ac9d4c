"""`ctkit apply` of big policies and big sets beside `nft -f` of the same ruleset, in the same run.

    sudo .venv/bin/python benchmarks/bench_apply.py [--rules 1000,10000,100000]
        [--sets 65536,1000000] [--repeat 3] [--profile 10000]

Each case is a generated policy: N filter rules in chain input (ports and source addresses
varied, so no two rules are equal), or one named set of N IPv4 addresses and a rule that drops
them. A set of up to 65,536 elements is given inline ("elements") and from a file
("elements_file", one address a line); a larger one only from a file. The nft side is
`nft -f` of `ctkit compile --format nft` of the same policy: the same table, in nft syntax.

Every run starts in a fresh namespace (`ip netns add`, deleted afterwards, also on failure),
so each apply creates the table from nothing. ctkit runs as installed: its bytecode cached
(bench_ct_dump.bytecode_env) and a cache directory of its own (XDG_CACHE_HOME, a private temporary
directory). "cold" is an apply of a policy ctkit has not compiled before (CTKIT_NO_CACHE=1: loaded,
checked, linted and lowered); "warm" one it has (`ctkit compile` of the same file ran first, so the
compiled policy is read back from ctkit/compiled_cache.py; a policy of more than 20,000 set members is
never kept, so for big sets warm is cold again). Whole-process wall time and peak RSS
(ru_maxrss from wait4: the process and the children it waited for) are taken for each run;
the table prints medians of --repeat runs and the ratios ctkit / nft. A case ctkit refuses
(an input limit, the schema) is printed as refused with the first line of its message. Each set
loaded from a file is then applied once more and audited (`ctkit audit --json`: clean or drift)
beside `nft -j list table` of it, unless --no-audit.
With --profile N, the N-rule apply runs once more under cProfile and the functions with the
most cumulative time are printed. Nothing outside the throwaway namespaces is changed.
"""
from __future__ import annotations

import argparse
import io
import json
import os
import pstats
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_ct_dump import bytecode_env  # noqa: E402  (ctkit timed as installed)

CTKIT = [sys.executable, "-m", "ctkit"]
#: the most elements a policy may give inline (the schema's maxItems)
INLINE_MAX = 65536


def address(i: int) -> str:
    return f"10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}"


def rules_policy(n: int) -> dict:
    rules = [{"name": f"r{i}", "protocol": "tcp" if i % 2 else "udp", "dport": 1024 + (i % 60000),
              "saddr": address(i), "action": "accept" if i % 3 else "drop"} for i in range(n)]
    return {"version": 1, "chains": {"input": {"policy": "accept", "rules": rules}}}


def set_policy(n: int, elements_file: str | None) -> dict:
    body: dict = {"type": "ipv4_addr"}
    if elements_file:
        body["elements_file"] = elements_file
    else:
        body["elements"] = [address(i) for i in range(n)]
    return {"version": 1, "sets": {"block": body},
            "chains": {"input": {"policy": "accept", "rules": [{"name": "block", "saddr": "@block",
                                                                "action": "drop"}]}}}


@dataclass(frozen=True)
class Run:
    wall: float
    rss_mb: float
    rc: int
    error: str


#: the environment of the timed ctkit commands (main() sets it: bytecode and ctkit's cache in temporary
#: directories of this run)
ENV: dict[str, str] = dict(os.environ)


def run(argv: list[str], env: dict[str, str] | None = None) -> Run:
    """One whole process: wall time, peak RSS of it and its children, exit status, stderr's first line."""
    with tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=err, env=env or ENV)
        _pid, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        err.seek(0)
        text = err.read().decode(errors="replace").strip()
    first = next((line.strip() for line in text.splitlines() if line.strip()), "")
    return Run(wall, usage.ru_maxrss / 1024, proc.returncode, first)


class Namespace:
    """A fresh network namespace for one run; deleted on exit."""

    def __enter__(self) -> str:
        self.name = f"ctkit-bench-{uuid.uuid4().hex[:8]}"
        subprocess.run(["ip", "netns", "add", self.name], check=True)
        return self.name

    def __exit__(self, *exc) -> None:
        subprocess.run(["ip", "netns", "del", self.name], check=False)


def measure(argv_of, repeat: int, env: dict[str, str] | None = None) -> list[Run]:
    """argv_of(namespace) run `repeat` times, each in its own fresh namespace; stops at the first failure."""
    runs = []
    for _ in range(repeat):
        with Namespace() as ns:
            result = run(argv_of(ns), env)
        runs.append(result)
        if result.rc != 0:
            break
    return runs


@dataclass(frozen=True)
class Row:
    name: str
    ctkit: list[Run]  # warm: the policy compiled before
    nft: list[Run]
    cold: list[Run] = ()  # never compiled before (CTKIT_NO_CACHE=1)


def median(runs: list[Run], field: str) -> float:
    return statistics.median(getattr(r, field) for r in runs)


def case(name: str, policy_path: Path, repeat: int) -> Row:
    nft_file = policy_path.with_suffix(".nft")
    compiled = subprocess.run([*CTKIT, "compile", "--format", "nft", str(policy_path)], capture_output=True,
                              env=ENV)  # also what makes the warm runs warm
    if compiled.returncode != 0:
        refused = Run(0, 0, compiled.returncode, compiled.stderr.decode(errors="replace").strip().split("\n")[0])
        return Row(name, [refused], [])
    nft_file.write_bytes(compiled.stdout)
    nft_runs = measure(lambda ns: ["ip", "netns", "exec", ns, "nft", "-f", str(nft_file)], repeat)
    apply = lambda ns: [*CTKIT, "apply", str(policy_path), "--netns", ns]  # noqa: E731
    cold_runs = measure(apply, repeat, dict(ENV, CTKIT_NO_CACHE="1"))
    ctkit_runs = measure(apply, repeat)
    return Row(name, ctkit_runs, nft_runs, cold_runs)


@dataclass(frozen=True)
class Audited:
    name: str
    ctkit: Run
    status: str  # what `ctkit audit --json` said: clean, drift, ...
    nft: Run


def audited(name: str, policy_path: Path) -> Audited:
    """One apply, then one `ctkit audit --json` beside `nft -j list table` of the same table (the kernel
    read the audit cannot do without)."""
    with Namespace() as ns:
        applied = run([*CTKIT, "apply", str(policy_path), "--netns", ns])
        if applied.rc != 0:
            return Audited(name, applied, "apply failed", applied)
        nft = run(["ip", "netns", "exec", ns, "nft", "-j", "list", "table", "inet", "ctkit"])
        with tempfile.TemporaryFile() as out:
            start = time.perf_counter()
            proc = subprocess.run([*CTKIT, "audit", str(policy_path), "--netns", ns, "--json"], stdout=out, env=ENV,
                                  stderr=subprocess.DEVNULL)
            wall = time.perf_counter() - start
            out.seek(0)
            try:
                report = json.loads(out.read())
                status = f"{report['status']} ({len(report['drift'])} drift)"
            except (ValueError, KeyError):
                status = f"exit {proc.returncode}"
    return Audited(name, Run(wall, 0, proc.returncode, ""), status, nft)


def audit_table(rows: list[Audited]) -> str:
    out = ["one run each, after an apply into a fresh namespace; wall s", "",
           "| case | ctkit audit s | nft -j list table s | ratio | audit says |", "|---|---:|---:|---:|---|"]
    for row in rows:
        out.append(f"| {row.name} | {row.ctkit.wall:.3f} | {row.nft.wall:.3f} | {row.ctkit.wall / row.nft.wall:.2f} "
                   f"| {row.status} |")
    return "\n".join(out)


def table(rows: list[Row], repeat: int) -> str:
    out = [f"medians of {repeat} runs, each into a fresh namespace; wall s, peak RSS MB (cold / warm)", "",
           "| case | ctkit cold s | ctkit warm s | nft -f s | cold ratio | warm ratio | ctkit RSS MB | nft RSS MB "
           "| RSS ratio |",
           "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for row in rows:
        bad = next((r for r in list(row.cold) + row.ctkit + row.nft if r.rc != 0), None)
        if bad is not None:
            out.append(f"| {row.name} | refused (exit {bad.rc}): {bad.error[:160]} | | | | | | | |")
            continue
        cold, warm, nw = median(list(row.cold), "wall"), median(row.ctkit, "wall"), median(row.nft, "wall")
        cm, wm, nm = median(list(row.cold), "rss_mb"), median(row.ctkit, "rss_mb"), median(row.nft, "rss_mb")
        out.append(f"| {row.name} | {cold:.3f} | {warm:.3f} | {nw:.3f} | {cold / nw:.2f} | {warm / nw:.2f} "
                   f"| {cm:.0f} / {wm:.0f} | {nm:.0f} | {cm / nm:.2f} / {wm / nm:.2f} |")
    return "\n".join(out)


def profile(policy_path: Path, top: int) -> str:
    """The apply of policy_path as `python -m cProfile -m ctkit apply`, into a fresh namespace."""
    with tempfile.TemporaryDirectory() as tmp, Namespace() as ns:
        out = Path(tmp) / "apply.prof"
        subprocess.run([sys.executable, "-m", "cProfile", "-o", str(out), "-m", "ctkit", "apply", str(policy_path),
                        "--netns", ns], stdout=subprocess.DEVNULL, check=True, env=dict(ENV, CTKIT_NO_CACHE="1"))
        buf = io.StringIO()
        pstats.Stats(str(out), stream=buf).sort_stats("cumulative").print_stats(top)
        return buf.getvalue()


def sizes(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rules", type=sizes, default=[1000, 10000, 100000], help="rule counts (comma separated)")
    ap.add_argument("--sets", type=sizes, default=[65536, 1000000], help="set sizes (comma separated)")
    ap.add_argument("--repeat", type=int, default=3, help="runs per command (the table shows medians)")
    ap.add_argument("--profile", type=int, default=0, help="profile the apply of this many rules (0: no)")
    ap.add_argument("--top", type=int, default=30, help="functions shown in the profile")
    ap.add_argument("--no-audit", action="store_true", help="skip auditing the applied sets")
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("bench_apply.py creates network namespaces: run it as root")
    rows = []
    audits = []
    global ENV
    with tempfile.TemporaryDirectory(prefix="ctkit-bench-") as tmp:
        private = Path(tmp) / "xdg"
        private.mkdir(mode=0o700)
        ENV = dict(bytecode_env(str(Path(tmp) / "pycache")), XDG_CACHE_HOME=str(private))
        for n in args.rules:
            path = Path(tmp) / f"rules-{n}.json"
            path.write_text(json.dumps(rules_policy(n)))
            rows.append(case(f"{n:,} rules", path, args.repeat))
            print(rows[-1].name, "done", file=sys.stderr)
        for n in args.sets:
            if n <= INLINE_MAX:
                path = Path(tmp) / f"set-{n}.json"
                path.write_text(json.dumps(set_policy(n, None)))
                rows.append(case(f"set of {n:,} (inline)", path, args.repeat))
            listing = Path(tmp) / f"set-{n}.netset"
            listing.write_text("# generated by benchmarks/bench_apply.py\n"
                               + "".join(address(i) + "\n" for i in range(n)))
            path = Path(tmp) / f"set-{n}-file.json"
            path.write_text(json.dumps(set_policy(n, listing.name)))
            rows.append(case(f"set of {n:,} (elements_file)", path, args.repeat))
            if not args.no_audit:
                audits.append(audited(rows[-1].name, path))
            print(rows[-1].name, "done", file=sys.stderr)
        print(table(rows, args.repeat))
        if audits:
            print("\naudit of the applied sets (is what the kernel holds the policy?):\n")
            print(audit_table(audits))
        if args.profile:
            path = Path(tmp) / f"rules-{args.profile}.json"
            path.write_text(json.dumps(rules_policy(args.profile)))
            print(f"\nprofile of the {args.profile:,}-rule apply (cProfile, one run; times are inflated by it):")
            print(profile(path, args.top))
    return 0


if __name__ == "__main__":
    sys.exit(main())
