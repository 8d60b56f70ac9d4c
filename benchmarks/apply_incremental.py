"""What an apply costs when little or nothing changed, beside the standard tools, per backend.

    sudo .venv/bin/python benchmarks/apply_incremental.py [--rules 10000] [--repeat 5]

Builds two throwaway namespaces. In the first, a generated policy of N filter rules is applied
with ctkit, then, timed as whole processes (Python start-up included), medians of --repeat:
- `ctkit apply` of the same policy again (nothing changes: one read of the kernel, no write),
  beside the read alone with the standard tool (`nft -j list table inet ctkit`; `iptables-save`);
- `ctkit apply` of the policy with one rule's port changed (ctkit deletes and inserts that one
  rule by handle on nft, rewrites the one changed chain on iptables), beside loading the whole
  changed ruleset with the standard tool, as a hand-written script does: `nft -f` of
  `ctkit compile --format nft` (which replaces the table), or `iptables-restore` of the
  iptables-save output of the changed policy (taken from the second namespace, where it was
  applied once), for the filter table.
Alternating runs flip that one rule between two ports, so every changing run changes it.
The same two applies are also timed through the Python API (service.apply) with both policies
compiled beforehand: the cost of the change itself (the plan's kernel read, the diff, the write)
without loading and compiling the policy file. Also printed: whether the counter of an unchanged rule survived the one-rule changes (ctkit
keeps it, a full reload zeroes it), read from the kernel. The namespaces are removed on any exit.
"""
from __future__ import annotations

import argparse
import json
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

CTKIT = [sys.executable, "-m", "ctkit"]
BACKENDS = {"nft": [], "iptables-nft": ["--backend", "iptables", "--iptables-variant", "nft"],
            "iptables-legacy": ["--backend", "iptables", "--iptables-variant", "legacy"]}


def policy(n: int, port: int) -> dict:
    rules = [{"name": "counted", "protocol": "udp", "dport": 7, "action": "accept", "counter": True},
             {"name": "changing", "protocol": "tcp", "dport": port, "action": "accept"}]
    for i in range(n):
        rules.append({"name": f"r{i}", "protocol": "tcp" if i % 2 else "udp", "dport": 1024 + (i % 60000),
                      "saddr": f"10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}",
                      "action": "accept" if i % 3 else "drop"})
    return {"version": 1, "chains": {"input": {"policy": "accept", "rules": rules}}}


def timed(argv: list[str], stdin: str | None = None) -> float:
    start = time.perf_counter()
    subprocess.run(argv, check=True, input=stdin, text=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def ns_exec(ns: str, argv: list[str]) -> list[str]:
    return ["ip", "netns", "exec", ns] + argv


def ping_counted_rule(ns: str) -> None:
    """Send three UDP datagrams to port 7 on the namespace's loopback: the `counted` rule's counter."""
    code = ("import socket\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n"
            "[s.sendto(b'x',('127.0.0.1',7)) for _ in range(3)]")
    subprocess.run(ns_exec(ns, [sys.executable, "-c", code]), check=True)


def counted_packets(ns: str, backend: str) -> int:
    if backend == "nft":
        out = subprocess.run(ns_exec(ns, ["nft", "-j", "list", "table", "inet", "ctkit"]),
                             check=True, capture_output=True, text=True).stdout
        for item in json.loads(out)["nftables"]:
            rule = item.get("rule")
            if rule and str(rule.get("comment", "")).startswith("counted"):
                for expr in rule["expr"]:
                    if "counter" in expr:
                        return int(expr["counter"]["packets"])
        raise SystemExit("the counted rule has no counter in the kernel")
    tool = "iptables-nft-save" if backend == "iptables-nft" else "iptables-legacy-save"
    out = subprocess.run(ns_exec(ns, [tool, "-c", "-t", "filter"]), check=True, capture_output=True,
                         text=True).stdout
    for line in out.splitlines():
        if re.search(r'--comment "?counted', line) and line.startswith("["):
            return int(line[1:].split(":", 1)[0])
    raise SystemExit("the counted rule is not in iptables-save -c")


def bench(backend: str, extra: list[str], a: str, b: str, tmp: Path, n: int, repeat: int) -> dict:
    paths = {}
    for port in (8000, 8001):
        paths[port] = tmp / f"policy-{port}.json"
        paths[port].write_text(json.dumps(policy(n, port)))
    subprocess.run(CTKIT + ["apply", str(paths[8000]), "--netns", a] + extra, check=True,
                   stdout=subprocess.DEVNULL)
    if backend == "nft":
        read = ns_exec(a, ["nft", "-j", "list", "table", "inet", "ctkit"])
        full = {}
        for port in (8000, 8001):
            full[port] = subprocess.run(CTKIT + ["compile", str(paths[port]), "--format", "nft"], check=True,
                                        capture_output=True, text=True).stdout
        load = {port: (ns_exec(a, ["nft", "-f", "-"]), full[port]) for port in full}
    else:
        variant = backend.split("-", 1)[1]
        read = ns_exec(a, [f"iptables-{variant}-save"])
        load = {}
        for port in (8000, 8001):
            subprocess.run(CTKIT + ["apply", str(paths[port]), "--netns", b] + extra, check=True,
                           stdout=subprocess.DEVNULL)
            saved = subprocess.run(ns_exec(b, [f"iptables-{variant}-save", "-t", "filter"]), check=True,
                                   capture_output=True, text=True).stdout
            load[port] = (ns_exec(a, [f"iptables-{variant}-restore", "-T", "filter"]), saved)
        subprocess.run(CTKIT + ["remove", "--netns", b] + extra, check=True, stdout=subprocess.DEVNULL)

    row: dict = {"noop": [], "read": [], "change": [], "reload": [], "noop_api": [], "change_api": []}
    for _ in range(repeat):
        row["noop"].append(timed(CTKIT + ["apply", str(paths[8000]), "--netns", a] + extra))
        row["read"].append(timed(read))
    # the same through the Python API with the policies compiled once: what the apply itself costs
    # (plan read, diff, kernel write) without loading and compiling the policy file
    from ctkit import pipeline, service
    from ctkit.backends import registry
    api = registry.get("nft") if backend == "nft" else registry.get("iptables", backend.split("-", 1)[1])
    compiled = {port: pipeline.compile_file(paths[port]) for port in paths}
    for _ in range(repeat):
        start = time.perf_counter()
        assert not service.apply(compiled[8000], api, netns=a).changed
        row["noop_api"].append(time.perf_counter() - start)
    for i in range(repeat):
        start = time.perf_counter()
        assert service.apply(compiled[8001 if i % 2 == 0 else 8000], api, netns=a).changed
        row["change_api"].append(time.perf_counter() - start)
    if repeat % 2:
        service.apply(compiled[8000], api, netns=a)
    ping_counted_rule(a)
    before = counted_packets(a, backend)
    for i in range(repeat):
        port = 8001 if i % 2 == 0 else 8000
        row["change"].append(timed(CTKIT + ["apply", str(paths[port]), "--netns", a] + extra))
    row["kept"] = counted_packets(a, backend) == before > 0
    if repeat % 2:  # back to the 8000 policy, which the reloads below flip away from
        subprocess.run(CTKIT + ["apply", str(paths[8000]), "--netns", a] + extra, check=True,
                       stdout=subprocess.DEVNULL)
    for i in range(repeat):
        argv, text = load[8001 if i % 2 == 0 else 8000]
        row["reload"].append(timed(argv, text))
    ping_counted_rule(a)
    subprocess.run(CTKIT + ["remove", "--netns", a] + extra, check=True, stdout=subprocess.DEVNULL)
    return row


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rules", type=int, default=10000)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--backend", choices=list(BACKENDS), action="append",
                    help="only these backends (repeatable; default: all three)")
    args = ap.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # a killed run still removes its namespaces
    tag = uuid.uuid4().hex[:6]
    a, b = f"ctkit-bench-a-{tag}", f"ctkit-bench-b-{tag}"
    rows = {}
    try:
        for ns in (a, b):
            subprocess.run(["ip", "netns", "add", ns], check=True)
            subprocess.run(ns_exec(ns, ["ip", "link", "set", "lo", "up"]), check=True)
        with tempfile.TemporaryDirectory() as tmp:
            for name in args.backend or list(BACKENDS):
                rows[name] = bench(name, BACKENDS[name], a, b, Path(tmp), args.rules, args.repeat)
    finally:
        for ns in (a, b):
            subprocess.run(["ip", "netns", "del", ns], stderr=subprocess.DEVNULL)
    med = statistics.median
    print(f"apply with little or nothing changed, a policy of {args.rules + 2} rules; "
          f"whole-process seconds, medians of {args.repeat}")
    print("CLI: `ctkit apply` as a command; API: service.apply of the policy compiled beforehand")
    head = ("backend        ", "read (std)", "no-op CLI", "ratio", "no-op API", "ratio",
            "reload (std)", "1-rule CLI", "ratio", "1-rule API", "ratio", "counters kept")
    print("| " + " | ".join(head) + " |")
    print("|" + "|".join("-" * (len(h) + 2) for h in head) + "|")
    for name, r in rows.items():
        noop, read, change, reload, noop_api, change_api = (
            med(r[k]) for k in ("noop", "read", "change", "reload", "noop_api", "change_api"))
        cells = (name, f"{read:.3f}", f"{noop:.2f}", f"{noop / read:.1f}x", f"{noop_api:.3f}",
                 f"{noop_api / read:.1f}x", f"{reload:.3f}", f"{change:.2f}", f"{change / reload:.1f}x",
                 f"{change_api:.3f}", f"{change_api / reload:.2f}x", "yes" if r["kept"] else "NO")
        print("| " + " | ".join(c.ljust(len(h)) if h.strip() == "backend" else c.rjust(len(h))
                                 for c, h in zip(cells, head, strict=True)) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
