"""Pausing CPython's cyclic garbage collector around bulk conversions.

Reading a 10,000-VM state (about 500,000 small acyclic values) or writing a plan's JSON
document (about 1.5 million dicts and lists) makes the collector walk the whole, growing heap
again and again: half of the conversion's time in profiles. Nothing these conversions build
holds a reference cycle, so reference counting frees everything; the pause only skips
useless walks. The pure core never switches it (process-wide state; `test_layering` checks):
its callers do — the plan and status commands, the reconcile service and the engine's plan
activity around planning, `load_state` around reading a state file — and so does the vSphere
inventory reader. A base module (no imports of vmkeep's own), so adapters may use it too.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["collector_paused"]


@contextmanager
def collector_paused() -> Iterator[None]:
    """Disable the cyclic collector inside the block (re-enabled after, if it was on)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()
