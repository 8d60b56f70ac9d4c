"""Making many small objects at once: the members of a big named set, and a whole policy's rules.

Python's cycle collector runs after every few hundred new container objects and then walks all the
objects made so far: for a set of a million members it took a third of building the model and as
much again in each later stage; for a 10,000-rule policy, a quarter of an apply (load, lint, lower,
generate, plan; benchmarks/bench_apply.py). The model, the IR and the backend documents hold no
reference cycles, so nothing is lost by pausing it while they are made; reference counting still
frees whatever is dropped, and what a cycle holds is collected once the collector runs again.
"""
from __future__ import annotations

import functools
import gc
from contextlib import contextmanager
from typing import Callable, Iterator, TypeVar

F = TypeVar("F", bound=Callable)


@contextmanager
def without_cycle_collection() -> Iterator[None]:
    """The cycle collector paused for the block (restored as it was, also on an exception).

    What the block made is then moved to the oldest generation (freeze, then unfreeze) rather than
    collected as young objects on the first allocation after it: that pass over a 10,000-rule policy's
    objects took 50 ms of every apply and audit, just before the process ended. A later full collection
    walks them like everything else."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.freeze()
            gc.unfreeze()
            gc.enable()


def paused(fn: F) -> F:
    """`fn` run with the cycle collector paused (without_cycle_collection): for the stages that turn a
    whole policy into objects. Never for a command that runs until stopped (ct events, the exporter)."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with without_cycle_collection():
            return fn(*args, **kwargs)
    return wrapper  # type: ignore[return-value]
