"""The writer lock: one writing process per repository, readers need no lock.

Mutual exclusion comes from the kernel: `flock` on `locks/writer` (Linux maps it to POSIX
byte-range locks on NFS, so it works on NFSv4 and on NFSv3 with lockd). The kernel drops
the lock when its holder dies, so a crashed writer never blocks the next one — no stale
lock can outlive its process, and a dead NFS client's lock goes with its lease.

Next to it `locks/writer.json` names the holder (host, pid, purpose, since) and carries a
lease that a heartbeat thread renews. It serves the people reading errors:
- lock busy → `RepositoryLockedError` naming the holder and how fresh its heartbeat is
  ("no heartbeat for 600 s: it may be hung"), so nobody has to guess;
- holder file present but the lock free → the previous writer died without releasing
  (a stale lock); the new holder takes over and reports it in `stale_holder`.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from reconciler.errors import RepositoryLockedError

__all__ = ["Holder", "WriterLock"]


@dataclass(frozen=True)
class Holder:
    host: str
    pid: int
    purpose: str
    since: float
    heartbeat: float
    lease_seconds: float

    def describe(self, now: float) -> str:
        age = max(0.0, now - self.heartbeat)
        text = f"pid {self.pid} on {self.host} ({self.purpose}, since {time.ctime(self.since)})"
        if age > self.lease_seconds:
            text += f"; no heartbeat for {age:.0f} s: it may be hung"
        return text

    def to_json(self) -> bytes:
        return json.dumps(self.__dict__).encode()

    @classmethod
    def from_file(cls, path: Path) -> Holder | None:
        try:
            body = json.loads(path.read_bytes())
            return cls(**body)
        except (OSError, ValueError, TypeError):
            return None


class WriterLock:
    """A re-entrant (per object) writer lock with holder information and a renewed lease."""

    def __init__(self, lock_dir: Path, *, lease_seconds: float = 60.0) -> None:
        self.path = lock_dir / "writer"
        self.holder_path = lock_dir / "writer.json"
        self.lease_seconds = lease_seconds
        self.stale_holder: Holder | None = None
        self._fd: int | None = None
        self._count = 0
        self._mutex = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._holder: Holder | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self, purpose: str, timeout: float = 0.0) -> None:
        """Take the lock, waiting up to `timeout` seconds; re-entrant within this object."""
        with self._mutex:
            if self._fd is not None:
                self._count += 1
                return
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            deadline = time.monotonic() + timeout
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        os.close(fd)
                        holder = Holder.from_file(self.holder_path)
                        who = holder.describe(time.time()) if holder else "another process"
                        raise RepositoryLockedError(
                            f"repository {str(self.path.parent.parent)!r} is locked by {who}; "
                            "wait for it to finish (readers are not blocked)"
                        ) from None
                    time.sleep(min(0.2, max(0.0, deadline - time.monotonic())))
            self._fd = fd
            self._count = 1
            self.stale_holder = Holder.from_file(self.holder_path)
            now = time.time()
            self._holder = Holder(
                socket.gethostname(), os.getpid(), purpose, now, now, self.lease_seconds
            )
            self._write_holder()
            self._stop.clear()
            self._thread = threading.Thread(
                target=self._heartbeat, name="vmkeep-lock-heartbeat", daemon=True
            )
            self._thread.start()

    def release(self) -> None:
        with self._mutex:
            if self._fd is None:
                return
            self._count -= 1
            if self._count > 0:
                return
            self._stop.set()
            if self._thread is not None:
                self._thread.join()
                self._thread = None
            self.holder_path.unlink(missing_ok=True)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def _write_holder(self) -> None:
        """Replace the holder file; only the lock holder writes, so one fixed temp name does.
        It is information for people, so it is not fsynced."""
        assert self._holder is not None
        tmp = self.holder_path.with_suffix(".tmp")
        tmp.write_bytes(self._holder.to_json())
        os.replace(tmp, self.holder_path)

    def _heartbeat(self) -> None:
        interval = max(0.05, self.lease_seconds / 3)
        while not self._stop.wait(interval):
            holder = self._holder
            if holder is None:
                return
            self._holder = Holder(
                holder.host,
                holder.pid,
                holder.purpose,
                holder.since,
                time.time(),
                holder.lease_seconds,
            )
            # the flock is what excludes; a missed renewal only ages the lease
            with contextlib.suppress(OSError):
                self._write_holder()
