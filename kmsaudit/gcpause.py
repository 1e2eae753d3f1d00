"""The cyclic garbage collector, paused around pure work that allocates much and makes no cycles."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def gc_paused() -> Iterator[None]:
    """Pause the cyclic collector for the block, and leave it as it was found after.

    Evaluating an estate or judging its findings allocates hundreds of thousands of small
    containers that live until the work ends and make no reference cycles: the collector would
    only rescan them, again and again (a third of bench/evaluator.py's run). Reference counting
    still frees everything as usual.
    """
    paused = gc.isenabled()
    if paused:
        gc.disable()
    try:
        yield
    finally:
        if paused:
            gc.enable()
