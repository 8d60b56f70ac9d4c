"""Benchmark: `ctkit ct events` beside `conntrack -E` on the same generated events (root).

    sudo .venv/bin/python benchmarks/ct_events.py [--rates 20000,50000] [--seconds 5]
                                                  [--listeners ctkit-jsonl,conntrack]

For each rate R it makes a throwaway namespace (loopback only; conntrack is
switched on there by a `ct state new` rule in output, and an input rule drops
the datagrams so that no ICMP error comes back), starts the listeners in it,
all at once, and then:

1. paced: a generator process sends N = R x --seconds UDP datagrams from one
   socket to N different (address, port) pairs on 127/8, in 2 ms steps: N new
   flows, N NEW events, at R per second;
2. burst: one ctnetlink flush removes them: N DESTROY events as fast as the
   kernel makes them (far beyond R: a burst the receive buffer has to absorb).

Listeners: `ctkit ct events --netns NS --count 2N --seconds S` in jsonl
(`ctkit-jsonl`), in conntrack -E's own line format (`ctkit-text`) and as the
refreshing summary (`ctkit-summary`: `--format summary --json`, one snapshot a
second, counted by its last snapshot's totals), the library alone (`ctkit-lib`: a process iterating a Subscription's raw events and
counting them, i.e. receiving and decoding without the CLI's formatting), and
`conntrack -E -o timestamp -b BYTES` (`conntrack`). ctkit asks for --buffer-size
(default 32M, its own default) and conntrack -E gets the same -b, but
conntrack-tools 1.4.7 sets -b on its other netlink socket: its event socket
keeps the kernel's default (rmem_default, 208 KiB), which the peak queue column
shows. Every output goes to a file and is counted per event kind afterwards.

What is measured comes from the kernel where it can: the generated events are
the `ct state new` rule's counter and the entries the flush removed; each
listener's socket is found in /proc/<pid>/net/netlink (by its inode) and
sampled every 10 ms for its queued bytes (peak queue) and its drop counter
(sk_drops: every event the kernel could not queue for it). "lost" is what the
tool itself reported lost (ctkit's `lost` records and summary; conntrack -E only
warns "ENOBUFS" without a count), "uncounted" is generated - received - lost:
events that went missing without being reported. events/s is received / (the
time the listener's queue was read empty after the phase - the phase's start),
lag the time from the phase's end to that moment. CPU is user + system time of
the listener's process during the phase (from /proc/<pid>/stat at the phase
boundaries, so ctkit's Python start-up is not in it), and "x conntrack" is its
CPU per event over conntrack -E's in the same run.

Bounded: N and the phase's time are fixed, every wait has a timeout, and the
namespace (with the listeners in it) is deleted in a `finally`. The only host
setting touched is nf_conntrack_max (host-wide): when N entries would not fit,
it is raised and restored in a `finally`.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from ct_dump import ctkit_argv, machine  # noqa: E402 - the benchmarks directory is sys.path[0]

from ctkit.kernel.netns import entered  # noqa: E402

MAX_PATH = "/proc/sys/net/netfilter/nf_conntrack_max"
RULESET = """table inet ctkbench {
    chain out {
        type filter hook output priority 0;
        ct state new counter
    }
    chain in {
        type filter hook input priority 0;
        meta l4proto udp udp dport 1024-61023 drop
    }
}
"""
LISTENERS = ("ctkit-jsonl", "ctkit-text", "ctkit-summary", "ctkit-lib", "conntrack")
CLI_LISTENERS = ("ctkit-jsonl", "ctkit-text", "ctkit-summary")
PORTS = 60000  # destination ports per address: 1024..61023
STEP = 0.002  # the generator's pacing step, seconds
SAMPLE = 0.01  # the socket sampler's period, seconds
TICK = os.sysconf("SC_CLK_TCK")
_SHOWN = re.compile(r"(\d+) events shown, (\d+) received, (\d+) lost")
_CT_SHOWN = re.compile(r"(\d+) flow events have been shown")


# ---------------------------------------------------------------- generator

def generate(ns: str, n: int, rate: float) -> None:
    """(child process) N new UDP flows at `rate` per second; prints what it did as JSON."""
    with entered(ns):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sendto, payload = s.sendto, b"x"
    chunk = max(1, int(rate * STEP))
    start_wall, start = time.time(), time.perf_counter()
    i = 0
    while i < n:
        end = min(n, i + chunk)
        for j in range(i, end):
            block = j // PORTS
            sendto(payload, (f"127.{1 + block // 250}.{1 + block % 250}.1", 1024 + j % PORTS))
        i = end
        ahead = start + i / rate - time.perf_counter()
        if ahead > 0:
            time.sleep(ahead)
    took = time.perf_counter() - start
    s.close()
    print(json.dumps({"sent": n, "start": start_wall, "end": start_wall + took, "rate": n / took}))


def listen(ns: str, count: int, seconds: float, rcvbuf: int) -> None:
    """(child process) the library without the CLI: a Subscription's raw events, counted per kind."""
    from ctkit.kernel.conntrack import events

    got = {"new": 0, "update": 0, "destroy": 0}
    with events.subscribe(ns, rcvbuf=rcvbuf) as sub:
        signal.signal(signal.SIGTERM, lambda *_: sub.stop())
        shown = 0
        for ev in sub.events(time.monotonic() + seconds, None, 0.2, raw=True):
            if ev.__class__ is events.Lost:
                continue
            got[ev[0]] += 1
            shown += 1
            if shown == count:
                break
        sub.check_losses()
        print(json.dumps({**got, "lost": sub.lost, "received": sub.received, "overruns": sub.overruns}))


# ---------------------------------------------------------------- listeners

@dataclass
class Listener:
    name: str
    argv: list[str]
    out_path: str
    err_path: str
    proc: subprocess.Popen | None = None
    inode: int | None = None
    code: int | None = None
    cpu_total: float | None = None  # from wait4, for the record
    queue_peak: dict[str, int] = field(default_factory=dict)  # phase -> peak queued bytes
    drops: int = 0  # the kernel's drop counter for its socket, last seen
    last_busy: float = 0.0  # time.time() of the last sample that found bytes queued
    gone: bool = False

    def start(self) -> None:
        with open(self.out_path, "w") as out, open(self.err_path, "w") as err:
            self.proc = subprocess.Popen(self.argv, stdout=out, stderr=err)

    def cpu(self) -> float:
        """user + system seconds so far (the process's own, from /proc/<pid>/stat)."""
        try:
            with open(f"/proc/{self.proc.pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / TICK
        except (OSError, IndexError):
            return self.cpu_total if self.cpu_total is not None else 0.0

    def find_socket(self, ns: str) -> bool:
        """Find the process's ctnetlink socket that joined an event group (True once found)."""
        if self.inode is not None:
            return True
        pid = self.proc.pid
        try:
            inodes = set()
            for fd in os.listdir(f"/proc/{pid}/fd"):
                try:
                    link = os.readlink(f"/proc/{pid}/fd/{fd}")
                except OSError:
                    continue
                if link.startswith("socket:["):
                    inodes.add(int(link[8:-1]))
            with entered(ns):  # ctkit --netns enters in one thread: /proc/<pid>/net is not the namespace
                rows = netlink_rows()
            for row in rows:
                if row["proto"] == 12 and row["groups"] and row["inode"] in inodes:
                    self.inode = row["inode"]
                    return True
        except OSError:
            pass
        return False

    def running(self) -> bool:
        """Whether it has not exited yet (without reaping it: wait4 collects its CPU time later)."""
        return os.waitid(os.P_PID, self.proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is None

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM it if it still runs (both tools print their totals on it) and collect its exit."""
        if self.proc is None or self.code is not None:
            return
        if self.running():
            self.proc.send_signal(signal.SIGTERM)
        end = time.monotonic() + timeout
        while True:
            pid, status, usage = os.wait4(self.proc.pid, os.WNOHANG)
            if pid:
                self.code = os.waitstatus_to_exitcode(status)
                self.proc.returncode = self.code
                self.cpu_total = usage.ru_utime + usage.ru_stime
                return
            if time.monotonic() > end:
                self.proc.kill()
                end += 5
            time.sleep(0.02)


def netlink_rows() -> list[dict[str, int]]:
    """/proc/thread-self/net/netlink: the netlink sockets of the namespace this thread is in."""
    with open("/proc/thread-self/net/netlink") as f:
        lines = f.read().splitlines()[1:]
    rows = []
    for line in lines:
        p = line.split()
        rows.append({"proto": int(p[1]), "groups": int(p[3], 16), "rmem": int(p[4]), "drops": int(p[8]),
                     "inode": int(p[9])})
    return rows


class Sampler(threading.Thread):
    """Every SAMPLE seconds: each listener socket's queued bytes and drop counter."""

    def __init__(self, ns: str, listeners: list[Listener]) -> None:
        super().__init__(daemon=True)
        self.ns, self.listeners, self.phase, self.done = ns, listeners, "setup", threading.Event()
        self.lock = threading.Lock()

    def sample(self) -> dict[str, int | None]:
        """One look: each listener's queued bytes (None: its socket is not listed, or it has ended)."""
        with self.lock:
            with entered(self.ns):
                now = time.time()
                by_inode = {r["inode"]: r for r in netlink_rows()}
            queued: dict[str, int | None] = {}
            for ls in self.listeners:
                queued[ls.name] = None
                if ls.gone or ls.inode is None:
                    continue
                row = by_inode.get(ls.inode)
                if row is None:  # ended (ctkit stops at --count), or missed by this read of the table
                    ls.gone = not ls.running()
                    continue
                ls.drops = row["drops"]
                queued[ls.name] = row["rmem"]
                if row["rmem"]:
                    ls.last_busy = now
                    ls.queue_peak[self.phase] = max(ls.queue_peak.get(self.phase, 0), row["rmem"])
            return queued

    def run(self) -> None:
        while not self.done.wait(SAMPLE):
            self.sample()

    def drained(self, timeout: float) -> bool:
        """Wait until every listener's queue is empty in 5 looks in a row (or it has ended).

        The looks are this thread's own: on a loaded machine the sampler thread may not have run for a
        while, and its last look is no proof that a queue is empty now.
        """
        end, quiet = time.monotonic() + timeout, 0
        while time.monotonic() < end:
            queued = self.sample()
            quiet = quiet + 1 if all(ls.gone or queued[ls.name] == 0 for ls in self.listeners) else 0
            if quiet >= 5:
                return True
            time.sleep(SAMPLE)
        return False


# ------------------------------------------------------------------ kernel

def nft_new_packets(ns: str) -> int:
    out = subprocess.run(["ip", "netns", "exec", ns, "nft", "-j", "list", "chain", "inet", "ctkbench", "out"],
                         capture_output=True, text=True, check=True, timeout=30).stdout
    for item in json.loads(out)["nftables"]:
        for expr in item.get("rule", {}).get("expr", []):
            if "counter" in expr:
                return expr["counter"]["packets"]
    raise SystemExit("the namespace's ct state new counter is missing")


def flush(ns: str) -> float:
    """One ctnetlink flush of the namespace's table; the seconds it took in the kernel."""
    from ctkit.kernel import ctnetlink as nl

    with entered(ns):
        sock = nl.NetlinkSocket(timeout=60)
    with sock:
        start = time.perf_counter()
        for _ in sock.request(nl.NFNL_SUBSYS_CTNETLINK, nl.IPCTNL_MSG_CT_DELETE, 0, dump=False, what="flushing"):
            pass
        return time.perf_counter() - start


def entries(ns: str) -> int:
    from ctkit.kernel import conntrack

    return conntrack.count(ns).entries


def loadavg() -> str:
    """The 1-minute load average: the machine is shared, and the listeners compete for its CPUs."""
    with open("/proc/loadavg") as f:
        return f.read().split()[0]


# -------------------------------------------------------------------- run

def listener_argv(name: str, ns: str, count: int, bound: float, buf: int, ct_buf: int | None) -> list[str]:
    if name == "conntrack":
        return ["ip", "netns", "exec", ns, "conntrack", "-E", "-o", "timestamp",
                *(["-b", str(ct_buf)] if ct_buf else [])]
    if name == "ctkit-lib":
        return [sys.executable, os.path.abspath(__file__), "--listen", ns, str(count), f"{bound:g}", str(buf)]
    fmt = {"ctkit-jsonl": ["--format", "jsonl"], "ctkit-summary": ["--format", "summary", "--json"]}.get(name, [])
    return [*ctkit_argv(), "ct", "events", "--netns", ns, *fmt, "--count", str(count), "--seconds", f"{bound:g}",
            "--buffer-size", str(buf)]


def counts(ls: Listener) -> dict[str, int]:
    """new / destroy events in the listener's output, and what it said it lost."""
    got = {"new": 0, "destroy": 0, "lost": 0, "enobufs": 0}
    with open(ls.out_path) as f:
        if ls.name == "ctkit-lib":
            text = f.read()
            if not text.strip():
                raise SystemExit(f"ctkit-lib printed nothing ({ls.code})")
            got.update({k: v for k, v in json.loads(text).items() if k in got})
        elif ls.name == "ctkit-summary":  # one snapshot a second; the last one has the totals
            last = None
            for line in f:
                last = line
            if last is None:
                raise SystemExit(f"ctkit-summary printed nothing ({ls.code})")
            totals = json.loads(last)["totals"]
            got.update(new=totals["new"], destroy=totals["destroy"], lost=totals["lost"])
        elif ls.name == "ctkit-jsonl":
            for line in f:
                kind = line[10:17]  # {"event":"new" / "destroy" / "lost"
                if kind.startswith("new"):
                    got["new"] += 1
                elif kind.startswith("destroy"):
                    got["destroy"] += 1
                elif kind.startswith("lost"):
                    got["lost"] += json.loads(line)["lost"]
        else:
            for line in f:
                if "[NEW]" in line:
                    got["new"] += 1
                elif "[DESTROY]" in line:
                    got["destroy"] += 1
    with open(ls.err_path) as f:
        err = f.read()
    got["enobufs"] = err.count("ENOBUFS")
    m = _SHOWN.search(err)
    if ls.name == "ctkit-text" and m:
        got["lost"] = int(m.group(3))
    if ls.name in CLI_LISTENERS and not m:
        raise SystemExit(f"{ls.name} did not print its totals ({ls.code}): {err.strip()[-400:]}")
    return got


def bench_rate(rate: int, seconds: float, names: list[str], buf: int, ct_buf: int | None, tmp: str) -> dict:
    n = int(rate * seconds)
    ns = f"ctkevbench-{uuid.uuid4().hex[:6]}"
    with open(MAX_PATH) as f:
        old_max = int(f.read())
    raised = False
    listeners: list[Listener] = []
    sampler: Sampler | None = None
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        if n + 10000 > old_max:
            with open(MAX_PATH, "w") as f:
                f.write(f"{n + 10000}\n")
            raised = True
        subprocess.run(["ip", "-n", ns, "link", "set", "lo", "up"], check=True)
        subprocess.run(["ip", "netns", "exec", ns, "nft", "-f", "-"], input=RULESET, text=True, check=True)
        bound = seconds * 3 + 60
        for name in names:
            ls = Listener(name, listener_argv(name, ns, 2 * n, bound, buf, ct_buf),
                          os.path.join(tmp, f"{rate}-{name}.out"), os.path.join(tmp, f"{rate}-{name}.err"))
            ls.start()
            listeners.append(ls)
        end = time.monotonic() + 30
        while not all(ls.find_socket(ns) for ls in listeners):
            dead = [ls for ls in listeners if not ls.running()]
            if dead or time.monotonic() > end:
                raise SystemExit(f"listener {(dead or listeners)[0].name} did not subscribe")
            time.sleep(0.05)
        load_before = loadavg()
        sampler = Sampler(ns, listeners)
        sampler.start()
        new_before = nft_new_packets(ns)
        cpu = {"start": {ls.name: ls.cpu() for ls in listeners}}

        sampler.phase = "paced"
        gen = subprocess.run([sys.executable, os.path.abspath(__file__), "--generate", ns, str(n), str(rate)],
                             capture_output=True, text=True, timeout=seconds * 5 + 60)
        if gen.returncode:
            raise SystemExit(f"the generator failed: {gen.stderr.strip()[-400:]}")
        g = json.loads(gen.stdout)
        if not sampler.drained(60):
            print("  (paced: a listener did not catch up within 60 s)", file=sys.stderr)
        paced_drained = {ls.name: ls.last_busy for ls in listeners}
        drops_paced = {ls.name: ls.drops for ls in listeners}
        cpu["paced"] = {ls.name: ls.cpu() for ls in listeners}
        generated_new = nft_new_packets(ns) - new_before
        in_table = entries(ns)

        sampler.phase = "burst"
        burst_start = time.time()
        flush_s = flush(ns)
        if not sampler.drained(60):
            print("  (burst: a listener did not catch up within 60 s)", file=sys.stderr)
        final = sampler.sample()  # what is still queued when the listeners are told to stop: uncounted
        burst_drained = {ls.name: ls.last_busy for ls in listeners}
        cpu["burst"] = {ls.name: ls.cpu() for ls in listeners}
        drops = {ls.name: ls.drops for ls in listeners}
        sampler.done.set()
        sampler.join(5)
        for ls in listeners:
            ls.stop()
        generated_destroy = in_table - entries(ns)
        result = {"rate": rate, "n": n, "gen": g, "load": (load_before, loadavg()), "flush_s": flush_s, "generated": {
            "paced": generated_new, "burst": generated_destroy}, "listeners": {}}
        for ls in listeners:
            c = counts(ls)
            phases = {}
            for phase, kind, start, stop, drained in (
                    ("paced", "new", g["start"], g["end"], paced_drained),
                    ("burst", "destroy", burst_start, burst_start + flush_s, burst_drained)):
                done = max(drained[ls.name], stop)  # its queue was last seen holding bytes
                before = "start" if phase == "paced" else "paced"
                phases[phase] = {
                    "received": c[kind], "rate": c[kind] / max(done - start, 1e-6), "lag": done - stop,
                    "peak_queue": ls.queue_peak.get(phase, 0),
                    "drops": drops_paced[ls.name] if phase == "paced" else drops[ls.name] - drops_paced[ls.name],
                    "cpu": cpu[phase][ls.name] - cpu[before][ls.name]}
            result["listeners"][ls.name] = {"phases": phases, "lost": c["lost"], "enobufs": c["enobufs"],
                                            "drops": drops[ls.name], "code": ls.code,
                                            "queued_at_stop": final[ls.name] or 0}
        return result
    finally:
        if sampler is not None:
            sampler.done.set()
        for ls in listeners:
            try:
                ls.stop(timeout=5)
            except (OSError, ChildProcessError):
                pass
        subprocess.run(["ip", "netns", "del", ns], check=False)
        if raised:
            with open(MAX_PATH, "w") as f:
                f.write(f"{old_max}\n")


def print_tables(res: dict) -> None:
    rate, gen = res["rate"], res["gen"]
    print(f"\nR = {rate:,} events/s asked: {res['n']:,} flows sent at {gen['rate']:,.0f}/s "
          f"({gen['end'] - gen['start']:.2f} s), then flushed in {res['flush_s']:.3f} s "
          f"({res['generated']['burst'] / max(res['flush_s'], 1e-6):,.0f} destroys/s); "
          f"load average {res['load'][0]} before, {res['load'][1]} after")
    print("| phase | listener | generated | received | kernel drops | events/s | lag s | peak queue MiB "
          "| CPU s | CPU µs/event | CPU x conntrack -E |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for phase in ("paced", "burst"):
        base = res["listeners"].get("conntrack", {}).get("phases", {}).get(phase)
        base_per = base["cpu"] / base["received"] if base and base["received"] else None
        for name, ls in res["listeners"].items():
            p = ls["phases"][phase]
            per = p["cpu"] / p["received"] if p["received"] else None
            ratio = f"{per / base_per:.2f}" if per is not None and base_per else "-"
            print(f"| {phase} | {name} | {res['generated'][phase]:,} | {p['received']:,} | {p['drops']:,} "
                  f"| {p['rate']:,.0f} | {p['lag']:.2f} | {p['peak_queue'] / 2**20:.1f} | {p['cpu']:.2f} "
                  f"| {per * 1e6 if per is not None else 0:.1f} | {ratio} |")
    print("\n| listener | generated | received | received x conntrack -E | lost (counted) | kernel drops "
          "| uncounted | exit |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    total = res["generated"]["paced"] + res["generated"]["burst"]
    got_by = {name: sum(p["received"] for p in ls["phases"].values()) for name, ls in res["listeners"].items()}
    for name, ls in res["listeners"].items():
        got = got_by[name]
        ratio = f"{got / got_by['conntrack']:.2f}" if got_by.get("conntrack") else "-"
        counted = ls["lost"] if name.startswith("ctkit") else 0
        lost_text = f"{counted:,}" if name.startswith("ctkit") else f"({ls['enobufs']} ENOBUFS warnings)"
        print(f"| {name} | {total:,} | {got:,} | {ratio} | {lost_text} | {ls['drops']:,} | {total - got - counted:,} "
              f"| {ls['code']} |")
    for name, ls in res["listeners"].items():
        if ls["queued_at_stop"]:
            print(f"({name} still had {ls['queued_at_stop']:,} bytes queued when it was stopped: those events are "
                  "in 'uncounted', a fault of this run, not of the listener)")


def main() -> None:
    if len(sys.argv) == 5 and sys.argv[1] == "--generate":
        generate(sys.argv[2], int(sys.argv[3]), float(sys.argv[4]))
        return
    if len(sys.argv) == 6 and sys.argv[1] == "--listen":
        listen(sys.argv[2], int(sys.argv[3]), float(sys.argv[4]), int(sys.argv[5]))
        return
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rates", default="20000,50000", help="events per second to generate, comma separated")
    ap.add_argument("--seconds", type=float, default=5.0, help="how long each rate is held (N = rate x seconds)")
    ap.add_argument("--listeners", default="ctkit-jsonl,conntrack",
                    help=f"some of {', '.join(LISTENERS)}, all listening at once (the machine has few CPUs)")
    ap.add_argument("--buffer-size", default=str(32 << 20), help="receive buffer bytes, for every listener")
    ap.add_argument("--conntrack-buffer", default="same", help="'same' (as --buffer-size) or 'default' (no -b)")
    ap.add_argument("--json", action="store_true", help="also print the raw results as JSON")
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root (it creates a network namespace)")
    names = [n.strip() for n in args.listeners.split(",") if n.strip()]
    if not names or any(n not in LISTENERS for n in names):
        raise SystemExit(f"--listeners: some of {', '.join(LISTENERS)}")
    rates = [int(r) for r in args.rates.split(",")]
    if any(r <= 0 for r in rates) or not 0 < args.seconds <= 60 or max(rates) * args.seconds > 2_000_000:
        raise SystemExit("rates must be positive, --seconds at most 60 and rate x seconds at most 2,000,000")
    buf = int(args.buffer_size)
    ct_buf = buf if args.conntrack_buffer == "same" else None
    version = subprocess.run(["conntrack", "--version"], capture_output=True, text=True).stdout.strip()
    print(f"machine: {machine()}, {version}")
    print(f"listeners: {', '.join(names)}; receive buffer asked: {buf:,} bytes for ctkit, "
          f"{f'{ct_buf:,} bytes' if ct_buf else 'the default'} for conntrack -E")
    tmp = tempfile.mkdtemp(prefix="ctkevbench-")
    try:
        for rate in rates:
            res = bench_rate(rate, args.seconds, names, buf, ct_buf, tmp)
            print_tables(res)
            if args.json:
                print(json.dumps(res))
            sys.stdout.flush()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
