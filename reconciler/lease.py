"""The applier lease: one applier per state DB at a time (a lease with holder and expiry).

A holder is "host/pid/run". A lease whose holder process died on this host is taken over;
another host's lease is freed only by its expiry. While a long run goes on, `LeaseKeeper`
renews it in the background.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from reconciler.errors import LeaseHeldError

__all__ = ["LEASE", "LEASE_SECONDS", "LeaseKeeper", "LeaseStore", "holder_is_dead",
           "take_lease"]

LEASE = "apply"
LEASE_SECONDS = 300.0


class LeaseStore(Protocol):
    """The part of the state DB that keeps leases (see adapters.statedb)."""

    def acquire_lease(self, name: str, holder: str, now: float, ttl: float, *,
                      take_over: str | None = None) -> None: ...

    def release_lease(self, name: str, holder: str) -> None: ...


def take_lease(db: LeaseStore, holder: str, *,
               on_take_over: Callable[[str], None] = lambda _holder: None,
               is_dead: Callable[[str], bool] | None = None,
               clock: Callable[[], float] = time.time) -> None:
    """The applier lease; a lease whose holder process died on this host is taken over
    (`on_take_over` is told whose)."""
    dead = holder_is_dead if is_dead is None else is_dead
    try:
        db.acquire_lease(LEASE, holder, clock(), LEASE_SECONDS)
    except LeaseHeldError as exc:
        if not dead(exc.holder):
            raise
        on_take_over(exc.holder)
        db.acquire_lease(LEASE, holder, clock(), LEASE_SECONDS, take_over=exc.holder)


def holder_is_dead(holder: str) -> bool:
    """True when `holder` ("host/pid/run") names a process of this host that is not running."""
    host, _, rest = holder.partition("/")
    pid_text = rest.partition("/")[0]
    if host != socket.gethostname() or not pid_text.isdigit():
        return False  # another host's applier: only its expiry can free the lease
    try:
        os.kill(int(pid_text), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    try:  # a recycled pid now running something else
        cmdline = Path(f"/proc/{pid_text}/cmdline").read_bytes()
    except OSError:
        return False
    return b"vmkeep" not in cmdline and b"reconciler" not in cmdline


def new_holder(run_id: str) -> str:
    """This process's holder name for `run_id`."""
    return f"{socket.gethostname()}/{os.getpid()}/{run_id}"


class LeaseKeeper:
    """Renews the applier lease in the background while a long run goes on."""

    def __init__(self, db: LeaseStore, holder: str,
                 clock: Callable[[], float] = time.time) -> None:
        self._db, self._holder, self._clock = db, holder, clock
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="vmkeep-lease", daemon=True)

    def __enter__(self) -> LeaseKeeper:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _loop(self) -> None:
        while not self._stop.wait(LEASE_SECONDS / 3):
            self._db.acquire_lease(LEASE, self._holder, self._clock(), LEASE_SECONDS)
