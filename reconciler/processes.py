"""Whether a process of this host still runs: how a leftover (a restore's staging directory,
a writer's lock holder or partial export) is told from the work of a live process."""

from __future__ import annotations

import os

__all__ = ["process_running"]


def process_running(pid: int) -> bool:
    """Whether a process of this host with that id runs (one of another user counts)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
