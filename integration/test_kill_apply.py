"""`kill -9` of `ctkit apply` at random moments never leaves a half-applied policy, nor a stale lock.

Each test applies policy A, starts `ctkit apply B` and SIGKILLs it after a bounded, seeded random
delay (or, with iptables, at a random moment after its first real iptables-restore has started),
then reads the kernel:
  * nft: table inet ctkit is exactly A's or exactly B's (its rules in order), never a mix, never absent;
  * iptables: per family, ctkit's chains (and the jumps to them) hold exactly A's or B's rules. IPv4 and
    IPv6 are two iptables-restore runs, two commits, IPv4 first: a kill between them leaves IPv4 at B and
    IPv6 at A, the one mixed outcome allowed.
Then `ctkit apply B` must succeed at once (the change lock is an flock: the kernel drops it with the
killed process) and end at B. The next kill goes the other way (B to A), so no apply is spent resetting.

SIGKILL stops ctkit only: an iptables-restore it started goes on as an orphan and commits if it had
read its whole input. The tests wait for every process of the killed apply's session to end before
reading the kernel, so what they read is final.

`pytest -s` prints how often each outcome was seen.
"""
from __future__ import annotations

import json
import os
import random
import shlex
import signal
import statistics
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from lab import backend_args, run

SEED = 20240611  # the kill moments (as fractions of a typical apply) repeat: random.Random(f"{SEED}-{backend}")
RULES = 600  # per policy: with ctkit's start-up, an apply of a second or two, killed at many different moments
APPLY_TIMEOUT = 90.0  # seconds for one whole `ctkit apply` (the lock's own wait is 30 s)
DRAIN_TIMEOUT = 30.0  # for the orphans of a killed apply to finish
FAMILIES = ("ipv4", "ipv6")
SAVE = {"ipv4": "iptables", "ipv6": "ip6tables"}

# kills per backend: 30 over the file; CTKIT_KILL_SCALE=3 kills three times as often
_SCALE = float(os.environ.get("CTKIT_KILL_SCALE", "1"))
KILLS = {b: max(1, round(n * _SCALE)) for b, n in {"nft": 12, "iptables-nft": 10, "iptables-legacy": 8}.items()}


# ------------------------------------------------------------------ policies

def write_policy(directory: Path, tag: str, rules: int = RULES, port: int = 10000) -> Path:
    """A policy of `rules` rules named <tag>0, <tag>1, ...: three quarters in input, a quarter in output."""
    n_in = rules * 3 // 4
    doc = {"version": 1, "description": f"policy {tag}: {rules} rules", "chains": {
        "input": {"policy": "accept", "rules": [
            {"name": f"{tag}{i}", "protocol": "tcp", "dport": port + i, "action": "accept"} for i in range(n_in)]},
        "output": {"policy": "accept", "rules": [
            {"name": f"{tag}{i}", "protocol": "udp", "dport": port + i, "action": "accept"}
            for i in range(n_in, rules)]}}}
    path = directory / f"policy-{tag}.json"
    path.write_text(json.dumps(doc))
    return path


# ------------------------------------------------------------ kernel readings

def _nft_state(ns: str) -> tuple:
    """("absent",) or the rules of table inet ctkit in order: (chain, comment) each."""
    proc = run(ns, "nft", "-j", "list", "table", "inet", "ctkit", check=False)
    if proc.returncode != 0:
        assert "No such file or directory" in proc.stderr, proc.stderr
        return ("absent",)
    items = json.loads(proc.stdout)["nftables"]
    return tuple((i["rule"]["chain"], i["rule"].get("comment", "")) for i in items if "rule" in i)


def _iptables_family(ns: str, family: str, variant: str) -> tuple:
    """ctkit's part of one family's iptables-save: (table, chain, comment) of every rule in a CTKIT- chain,
    and (table, builtin chain, "-> target") of every jump into one, in iptables-save order."""
    out = run(ns, f"{SAVE[family]}-{variant}-save").stdout
    rules, table = [], None
    for line in out.split("\n"):
        if line.startswith("*"):
            table = line[1:]
        if not line.startswith("-A "):
            continue
        words = shlex.split(line)
        chain = words[1]
        target = words[words.index("-j") + 1] if "-j" in words else ""
        if chain.startswith("CTKIT-"):
            comment = words[words.index("--comment") + 1] if "--comment" in words else ""
            rules.append((table, chain, comment))
        elif target.startswith("CTKIT-"):
            rules.append((table, chain, f"-> {target}"))
    return tuple(rules)


def kernel_state(ns: str, backend: str) -> dict[str, tuple]:
    """What ctkit owns in the kernel, per unit that commits on its own: {"inet": ...} or {"ipv4", "ipv6"}."""
    if backend == "nft":
        return {"inet": _nft_state(ns)}
    variant = backend.partition("-")[2]
    return {f: _iptables_family(ns, f, variant) for f in FAMILIES}


def which_policy(state: dict[str, tuple], known: dict[str, dict[str, tuple]]) -> dict[str, str]:
    """Per unit, the name of the policy it holds exactly; an AssertionError for anything else."""
    out = {}
    for unit, rules in state.items():
        names = [name for name, st in known.items() if st[unit] == rules]
        assert len(names) == 1, (
            f"{unit}: ctkit's rules are none of the policies' ({len(rules)} rules; first "
            f"{list(rules[:3])}, last {list(rules[-3:])}; "
            + "; ".join(f"{n}: {len(st[unit])} rules, {_overlap(rules, st[unit])} in common" for n, st in known.items())
            + ")")
        out[unit] = names[0]
    return out


def _overlap(a: tuple, b: tuple) -> int:
    return len(set(a) & set(b))


def capture(ns: str, backend: str, policy: Path, tag: str, rules: int) -> dict[str, tuple]:
    """The kernel state right after a whole apply of `policy`, checked against the policy's rule names."""
    state = kernel_state(ns, backend)
    for unit, listing in state.items():
        ids = [r[-1].split(":")[0] for r in listing if not r[-1].startswith("-> ")]
        assert ids == [f"{tag}{i}" for i in range(rules)], f"{unit} after applying {policy.name}: {listing[:5]}"
    return state


# --------------------------------------------------------------- processes

def state_env(tmp_path: Path) -> dict[str, str]:
    """ctkit's lock and ownership record under tmp_path (CTKIT_STATE_DIR), not under the host's /run/ctkit."""
    return {**os.environ, "CTKIT_STATE_DIR": str(tmp_path / "state")}


def start_apply(ns: str, policy: Path, backend: str, env: dict[str, str]) -> subprocess.Popen:
    """`ctkit apply` in its own session: its session id names everything it starts, orphans too."""
    return subprocess.Popen([sys.executable, "-m", "ctkit", "apply", str(policy), "--netns", ns,
                             *backend_args(backend)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env, start_new_session=True)


def apply_ok(ns: str, policy: Path, backend: str, env: dict[str, str]) -> float:
    """Run `ctkit apply` to its end; it must succeed. Returns how long it took."""
    t0 = time.monotonic()
    proc = start_apply(ns, policy, backend, env)
    try:
        _out, err = proc.communicate(timeout=APPLY_TIMEOUT)
    finally:
        stop_session(proc)
    took = time.monotonic() - t0
    assert proc.returncode == 0, f"ctkit apply {policy.name} exited {proc.returncode}: {err}"
    return took


def session_members(sid: int) -> list[int]:
    """Pids of the processes whose session is `sid` (ctkit and whatever it started)."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[3]) == sid:  # state ppid pgrp session ...
            pids.append(int(entry))
    return pids


def drain_session(sid: int, timeout: float = DRAIN_TIMEOUT) -> None:
    """Wait until every process of the session has ended (bounded)."""
    deadline = time.monotonic() + timeout
    while members := session_members(sid):
        if time.monotonic() > deadline:
            raise AssertionError(f"processes of the killed apply still run after {timeout:g} s: {members}")
        time.sleep(0.01)


def stop_session(proc: subprocess.Popen) -> None:
    """Cleanup: SIGKILL this apply and each process of its session, by pid, and reap it."""
    if proc.poll() is None:
        proc.kill()
    for pid in session_members(proc.pid):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    try:
        proc.communicate(timeout=10)
    except (subprocess.TimeoutExpired, ValueError):
        pass


def children(pid: int) -> list[int]:
    """Direct children of every thread of `pid` (ctkit starts its tools from a thread inside the netns)."""
    out: list[int] = []
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                out += [int(c) for c in f.read().split()]
        except OSError:
            pass
    return out


def argv_of(pid: int) -> list[str]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
    except OSError:
        return []


def wait_for_restore(proc: subprocess.Popen, timeout: float) -> bool:
    """Poll until `proc` runs an iptables-restore that is not a --test; False when it ended first."""
    deadline = time.monotonic() + timeout
    while proc.poll() is None and time.monotonic() < deadline:
        for child in children(proc.pid):
            argv = argv_of(child)
            if argv and argv[0].endswith("-restore") and "--test" not in argv:
                return True
        time.sleep(0.002)
    return False


def kill9(proc: subprocess.Popen) -> bool:
    """SIGKILL the apply (only it: its children go on as orphans). True when it was still running."""
    if proc.poll() is not None:
        return False
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=APPLY_TIMEOUT)
    return proc.returncode == -signal.SIGKILL


# --------------------------------------------------------------------- test

def describe(held: dict[str, str], old: str, new: str) -> str:
    """An outcome in words: "old", "new", or per family ("ipv4 new, ipv6 old")."""
    role = {old: "old", new: "new"}
    values = set(held.values())
    if len(values) == 1:
        return role[values.pop()]
    return ", ".join(f"{unit} {role[name]}" for unit, name in held.items())


ALLOWED = {"nft": {"old", "new"}, "iptables": {"old", "new", "ipv4 new, ipv6 old"}}


@pytest.mark.parametrize("backend", list(KILLS))
def test_kill_9_during_apply_leaves_one_whole_policy(lab, tmp_path, backend):
    ns = lab.netns("kill")
    env = state_env(tmp_path)
    policies = {"A": write_policy(tmp_path, "a", port=10000), "B": write_policy(tmp_path, "b", port=20000)}
    known: dict[str, dict[str, tuple]] = {}
    durations = []
    for name in ("B", "A"):  # both captured from the kernel; A is applied last
        durations.append(apply_ok(ns, policies[name], backend, env))
        known[name] = capture(ns, backend, policies[name], name.lower(), RULES)
    allowed = ALLOWED[backend.partition("-")[0]]
    rng = random.Random(f"{SEED}-{backend}")
    want = KILLS[backend]
    outcomes: Counter[str] = Counter()
    modes: Counter[str] = Counter()
    finished_first = 0
    current = "A"
    for attempt in range(3 * want):
        if sum(outcomes.values()) >= want:
            break
        target = "B" if current == "A" else "A"
        # timed: 45-95 % of a typical apply (the kernel is written near its end); restore: a
        # random moment after the first real iptables-restore started (around the IPv4 and IPv6 commits)
        mode = "timed" if backend == "nft" or rng.random() < 0.5 else "restore"
        typical = statistics.median(durations)
        delay = rng.uniform(0.45, 0.95) * typical if mode == "timed" else rng.uniform(0.0, 0.15)
        proc = start_apply(ns, policies[target], backend, env)
        try:
            if mode == "restore":
                wait_for_restore(proc, APPLY_TIMEOUT)
            try:
                proc.wait(timeout=delay)
            except subprocess.TimeoutExpired:
                pass
            killed = kill9(proc)
            _out, err = proc.communicate(timeout=APPLY_TIMEOUT)
            drain_session(proc.pid)
        finally:
            stop_session(proc)
        held = which_policy(kernel_state(ns, backend), known)
        outcome = describe(held, current, target)
        if killed:
            assert outcome in allowed, f"kill {attempt} ({mode}, {delay:.3f} s): the kernel holds {held}"
            outcomes[outcome] += 1
            modes[mode] += 1
        else:  # it finished before the signal: a whole apply, nothing to recover from
            assert proc.returncode == 0, err
            assert outcome == "new", held
            finished_first += 1
            current = target
            continue
        # a later apply of the killed one's policy is not held up by a stale lock and ends there
        took = apply_ok(ns, policies[target], backend, env)
        assert took < 25.0, f"ctkit apply after a kill took {took:.1f} s: waiting for a stale lock?"
        assert which_policy(kernel_state(ns, backend), known) == {u: target for u in held}
        durations.append(took)
        current = target
    kills = sum(outcomes.values())
    print(f"\n[kill -9 {backend}] {kills} kills ({dict(modes)}), outcomes {dict(outcomes)}; "
          f"{finished_first} applies finished before their kill; median apply {statistics.median(durations):.2f} s")
    assert kills >= want, f"only {kills} of {want} kills landed while ctkit apply ran"
