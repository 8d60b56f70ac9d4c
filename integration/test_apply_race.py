"""Two `ctkit apply` of different policies started at once: one whole policy ends in the kernel, never a mix.

Each round starts from a namespace that holds a third policy and runs the two others' applies as
simultaneous subprocesses. Both read their plan from the same kernel; the change lock lets one write,
and the other, reading again under the lock, sees that ctkit's part changed and stops with exit 3
("... changed while this apply waited for it ...", ctkit/service.py ConcurrentChange), writing nothing.
Checked per round:
  * the kernel holds exactly one of the two policies (nft: the table's rules in order; iptables: both
    families' CTKIT- chains and jumps);
  * every apply that failed exited 3 and says it lost the race;
  * when one failed, the kernel holds the other's policy; when both succeeded (the second read its plan
    only after the first had written), it holds the policy of the one that finished last.
The three policies rotate: the policy a round ends with is the starting state of the next one, so no
apply is spent resetting. `pytest -s` prints how many rounds had a loser.
"""
from __future__ import annotations

import os
import random
import threading
import time
from collections import Counter

import pytest
from test_kill_apply import (
    SEED,
    apply_ok,
    capture,
    kernel_state,
    start_apply,
    state_env,
    stop_session,
    which_policy,
    write_policy,
)

# 20 rounds in all: 10 per backend keeps the file near a minute on a busy 2-core machine; set
# CTKIT_RACE_ROUNDS for more
ROUNDS = int(os.environ.get("CTKIT_RACE_ROUNDS", "10"))
RULES = 250  # both start at once, so their plans overlap whatever the size; small keeps rounds short
ROUND_TIMEOUT = 90.0  # seconds for both applies of a round
LOST = "changed while this apply waited"


def race(ns: str, policies: dict, names: list[str], backend: str, env: dict) -> dict[str, tuple[int, str, float]]:
    """Start both applies at once; {policy: (exit code, stderr, when it ended)}."""
    procs = {n: start_apply(ns, policies[n], backend, env) for n in names}
    ended: dict[str, tuple[int, str, float]] = {}

    def wait(name: str) -> None:
        _out, err = procs[name].communicate(timeout=ROUND_TIMEOUT)
        ended[name] = (procs[name].returncode, err, time.monotonic())

    threads = [threading.Thread(target=wait, args=(n,), daemon=True) for n in names]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(ROUND_TIMEOUT + 5)
    finally:
        for p in procs.values():
            stop_session(p)
    assert set(ended) == set(names), f"an apply did not finish within {ROUND_TIMEOUT:g} s"
    return ended


@pytest.mark.parametrize("backend", ["nft", "iptables-nft"])
def test_two_simultaneous_applies_leave_one_policy(lab, tmp_path, backend):
    ns = lab.netns("race")
    env = state_env(tmp_path)
    tags = {"A": ("a", 10000), "B": ("b", 20000), "C": ("c", 30000)}
    policies = {n: write_policy(tmp_path, tag, RULES, port) for n, (tag, port) in tags.items()}
    known = {}
    for name in ("B", "C", "A"):  # each captured from the kernel; A is the first round's start
        apply_ok(ns, policies[name], backend, env)
        known[name] = capture(ns, backend, policies[name], tags[name][0], RULES)
    rng = random.Random(f"{SEED}-race-{backend}")
    current = "A"
    rounds: Counter[str] = Counter()
    for round_ in range(ROUNDS):
        names = [n for n in known if n != current]
        rng.shuffle(names)  # which of the two is started first
        ended = race(ns, policies, names, backend, env)
        held = set(which_policy(kernel_state(ns, backend), known).values())
        assert len(held) == 1, f"round {round_}: the families hold different policies: {held}"
        (holds,) = held
        where = f"round {round_} (from {current}, racing {names}: {ended})"
        assert holds in names, f"{where}: the kernel holds {holds}"
        failed = [n for n, (rc, _err, _t) in ended.items() if rc != 0]
        for n in failed:
            rc, err, _t = ended[n]
            assert rc == 3 and LOST in err, f"{where}: apply {n} failed without losing the race"
        if failed:
            assert len(failed) == 1, f"{where}: both applies failed"
            assert holds != failed[0], f"{where}: the loser's policy is in the kernel"
            rounds["one lost"] += 1
        else:
            last = max(names, key=lambda n: ended[n][2])
            assert holds == last, f"{where}: both succeeded, {last} finished last, the kernel holds {holds}"
            rounds["both applied"] += 1
        current = holds
    print(f"\n[race {backend}] {ROUNDS} rounds: {rounds['one lost']} with a loser (exit 3), "
          f"{rounds['both applied']} where both applied one after the other")
