"""The repository lock: writers share it, GC excludes them; readers need no lock.

Many processes on many hosts may export into one repository at once (proxies writing to one
NFS mount): each takes `locks/writer` shared (`flock(LOCK_SH)`); garbage collection takes
it exclusive (`LOCK_EX`), so GC never runs while any export is in flight and no export
starts while GC decides what is garbage. Linux maps `flock` to POSIX byte-range locks on
NFS, so this works on NFSv4 and on NFSv3 with lockd. The kernel drops a lock when its
holder dies, so a crashed writer never blocks the next one — no stale lock outlives its
process, and a dead NFS client's lock goes with its lease.

Holder files name the holders (host, pid, purpose, since) and carry a lease that a
heartbeat thread renews: `locks/writer.json` for the exclusive holder, one
`locks/writers/<host>-<pid>.json` per sharing process. They serve the people reading
errors:
- lock busy → `RepositoryLockedError` naming the holders and how fresh their heartbeats are
  ("no heartbeat for 600 s: it may be hung"), so nobody has to guess;
- holder file present but the lock free → the previous holder died without releasing
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
from reconciler.processes import process_running

from .format import fsync_dir

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
    """A re-entrant (per object) lock, shared by writers and exclusive for GC, with holder
    information and a renewed lease. Within one object the mode of the first `acquire`
    holds until the last `release`."""

    def __init__(self, lock_dir: Path, *, lease_seconds: float = 60.0) -> None:
        self.path = lock_dir / "writer"
        self.lock_dir = lock_dir
        self.exclusive_holder_path = lock_dir / "writer.json"
        self.holder_path = self.exclusive_holder_path
        self.lease_seconds = lease_seconds
        self.shared = False
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

    def holders(self) -> list[Holder]:
        """Who holds the lock now, as their holder files say (exclusive first)."""
        found = [Holder.from_file(self.exclusive_holder_path)]
        shared_dir = self.lock_dir / "writers"
        if shared_dir.is_dir():
            found.extend(Holder.from_file(p) for p in sorted(shared_dir.glob("*.json")))
        return [h for h in found if h is not None]

    def acquire(self, purpose: str, timeout: float = 0.0, *, shared: bool = False) -> None:
        """Take the lock, waiting up to `timeout` seconds; re-entrant within this object.

        `shared`: a writer (many at once); otherwise exclusive (GC)."""
        with self._mutex:
            if self._fd is not None:
                if shared and not self.shared:
                    raise RepositoryLockedError(
                        f"repository {str(self.path.parent.parent)!r}: this process holds "
                        "the lock for garbage collection; export when it has finished")
                self._count += 1
                return
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            deadline = time.monotonic() + timeout
            while True:
                try:
                    fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        os.close(fd)
                        now = time.time()
                        who = "; ".join(h.describe(now) for h in self.holders()) \
                            or "another process"
                        raise RepositoryLockedError(
                            f"repository {str(self.path.parent.parent)!r} is locked by {who}; "
                            "wait for it to finish (readers are not blocked)"
                        ) from None
                    time.sleep(min(0.2, max(0.0, deadline - time.monotonic())))
            self._fd = fd
            self._count = 1
            self.shared = shared
            if shared:
                shared_dir = self.lock_dir / "writers"
                if not shared_dir.is_dir():
                    shared_dir.mkdir(exist_ok=True)
                    fsync_dir(self.lock_dir)
                self.holder_path = shared_dir / f"{socket.gethostname()}-{os.getpid()}.json"
                self.stale_holder = _clear_dead_holders(shared_dir)
            else:
                self.holder_path = self.exclusive_holder_path
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
            if not self.shared:  # writers that died holding it shared: the lock is ours now
                shared_dir = self.lock_dir / "writers"
                for stale in shared_dir.glob("*.json") if shared_dir.is_dir() else ():
                    stale.unlink(missing_ok=True)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def _write_holder(self) -> None:
        """Replace the holder file; only its holder writes it, so one fixed temp name does.
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


def _clear_dead_holders(shared_dir: Path) -> Holder | None:
    """Remove the holder files of writers of this host that are gone; the newest of them."""
    host = socket.gethostname()
    dead: list[Holder] = []
    for path in shared_dir.glob(f"{host}-*.json"):
        holder = Holder.from_file(path)
        if holder is None or holder.host != host or process_running(holder.pid):
            continue
        path.unlink(missing_ok=True)
        dead.append(holder)
    return max(dead, key=lambda h: h.heartbeat) if dead else None
