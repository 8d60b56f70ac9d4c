"""Making a million small objects at once (the members of a big named set), in every stage that does.

Python's cycle collector runs after every few hundred new container objects and then walks all the
objects made so far: for a set of a million members it took a third of building the model and as
much again in each later stage. Set members hold no reference cycles, so nothing is lost by pausing
it while they are made; reference counting still frees whatever is dropped.
"""
from __future__ import annotations

import gc
from contextlib import contextmanager
from typing import Iterator


@contextmanager
def without_cycle_collection() -> Iterator[None]:
    """The cycle collector paused for the block (restored as it was, also on an exception)."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()
